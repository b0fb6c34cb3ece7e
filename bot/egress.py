"""Where metric providers may connect: the server's egress allow list, enforced per request.

Analysis templates come from repositories, so the URL a `web` metric or a Prometheus `address`
names is chosen by whoever can merge. Without a fence that is a server-side request forgery: a
template pointed at a metadata endpoint on loopback or link-local got a token back and the PR
comment printed it. The operator therefore lists the destinations Coalmine may reach:

    egress:
      allow: ["prometheus.monitoring.svc", "*.example.com", "10.0.0.0/8", "http://127.0.0.1:9090"]

plus `COALMINE_EGRESS_ALLOW` (comma separated, same forms). Nothing else is reachable. An entry is
an exact host, a `*.domain` glob (one or more labels in front of `domain`), an IP address or a
CIDR, each optionally with `scheme://` and `:port` to narrow it further.

Every address a name resolves to must be allowed, not just one of them. Loopback, link-local
(cloud metadata lives at 169.254.169.254), unspecified and multicast addresses, and Coalmine's own
services (Redis), are refused unless an entry names them explicitly: an exact host, or an IP/CIDR
inside that special range. A `*` glob or a wide CIDR such as 0.0.0.0/0 never vouches for them.

DNS rebinding is defeated by connecting to the address that was checked: the request goes to the
IP, with the original Host header and TLS server name, so a second, different DNS answer is never
asked for. Redirects are not followed by the HTTP client; each target is checked again here.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

ENV_VARIABLE = "COALMINE_EGRESS_ALLOW"
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379}
HINT = "allow it under egress.allow"

# Addresses nobody should reach by accident; each needs an entry that names it.
SPECIAL_RANGES: tuple[tuple[str, IPNetwork], ...] = tuple(
    (name, ipaddress.ip_network(cidr))
    for name, cidr in (
        ("loopback", "127.0.0.0/8"),
        ("loopback", "::1/128"),
        ("link-local", "169.254.0.0/16"),
        ("link-local", "fe80::/10"),
        ("unspecified", "0.0.0.0/8"),
        ("unspecified", "::/128"),
        ("multicast", "224.0.0.0/4"),
        ("multicast", "ff00::/8"),
    )
)

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?:/(?P<prefix>\d{1,3}))?(?::(?P<port>\d{1,5}))?$")
_PLAIN = re.compile(r"^(?P<host>[^/:\[\]]+)(?:/(?P<prefix>\d{1,3}))?(?::(?P<port>\d{1,5}))?$")
_FORMS = (
    "expected a host, *.domain, IP address or CIDR, optionally with scheme:// and :port "
    "([IPv6]:port), and no path, query or credentials"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


class EgressRefused(Exception):
    """A request the policy does not allow (or a redirect chain too long); the message names
    the destination and the reason, and is fit for a PR comment."""


@dataclass(frozen=True)
class AllowEntry:
    """One `egress.allow` entry; exactly one of host, suffix and network is set."""

    text: str
    scheme: str | None = None
    port: int | None = None
    host: str | None = None  # an exact DNS name
    suffix: str | None = None  # "*.example.com" is kept as ".example.com"
    network: IPNetwork | None = None

    def admits(self, scheme: str, port: int) -> bool:
        """Whether the entry's optional scheme and port allow this connection."""
        return self.scheme in (None, scheme) and self.port in (None, port)

    def names_host(self, host: str) -> bool:
        if self.host is not None:
            return host == self.host
        return self.suffix is not None and host.endswith(self.suffix) and host != self.suffix[1:]

    def contains(self, address: IPAddress) -> bool:
        return self.network is not None and address in self.network

    def vouches_for(self, address: IPAddress, special: IPNetwork) -> bool:
        """An IP/CIDR entry names a special address only when it lies inside that special
        range: `127.0.0.1` or `169.254.169.254/32` do, `0.0.0.0/0` does not."""
        return (
            self.network is not None
            and address in self.network
            and self.network.version == special.version
            and self.network.subnet_of(special)  # type: ignore[arg-type]
        )

    def is_single_address(self, address: IPAddress) -> bool:
        return (
            self.network is not None and self.network.num_addresses == 1 and address in self.network
        )


@dataclass(frozen=True)
class OwnService:
    """One of Coalmine's own services (Redis): refused unless an entry names host and port."""

    host: str
    port: int | None  # None: every port of the host

    @property
    def display(self) -> str:
        return self.host if self.port is None else _display(self.host, self.port)


@dataclass(frozen=True)
class Destination:
    """A checked destination: connect only to `addresses`, every one of which was allowed."""

    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def display(self) -> str:
        return _display(self.host, self.port)

    @property
    def host_is_address(self) -> bool:
        return _as_address(self.host) is not None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to for a TCP connection, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class Egress:
    """The parsed policy. `check` says whether a URL may be requested; `request` makes the
    request the way the check assumed (pinned address, redirects re-checked)."""

    allow: tuple[AllowEntry, ...] = ()
    own: tuple[OwnService, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False, repr=False)

    def check(self, url: str) -> str | None:
        """None when `url` may be requested, else the sentence saying why not."""
        try:
            self.admit(url)
        except EgressRefused as refusal:
            return str(refusal)
        return None

    def admit(self, url: str) -> Destination:
        """The destination of `url` with its checked addresses; raises EgressRefused."""
        scheme, host, port = _origin(url)
        shown = _display(host, port)
        if not self._could_admit(scheme, host, port):
            raise EgressRefused(_refusal(shown, "not listed"))
        destination = Destination(scheme, host, port, self._resolve(host, port, shown))
        for address in destination.addresses:
            reason = self._address_refusal(destination, address)
            if reason:
                raise EgressRefused(_refusal(shown, reason))
        return destination

    def trusting(self, url: str) -> Egress:
        """This policy plus `url`'s exact destination: for addresses the operator configured
        (PROMETHEUS_URL), which are as trusted as the allow list itself."""
        scheme, host, port = _origin(url)
        address = _as_address(host)
        entry = AllowEntry(
            url, scheme=scheme, port=port,
            host=None if address else host,
            network=ipaddress.ip_network(address) if address else None,
        )
        return Egress(self.allow + (entry,), self.own, self.resolver)

    def request(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send one request through `client` (which must not follow redirects), following up to
        MAX_REDIRECTS redirects, each checked again. Raises EgressRefused or httpx errors."""
        headers = dict(headers or {})
        if any(name.lower() == "host" for name in headers):
            raise EgressRefused(
                "a metric cannot set the Host header: the destination is the URL's host"
            )
        first = url
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send_pinned(client, method, url, headers, content)
            if not response.has_redirect_location:
                return response
            response.close()
            target = str(httpx.URL(url).join(response.headers["Location"]))
            if _origin(target) != _origin(url):
                headers = {}  # credentials in template headers were meant for the first origin
            method, content = _method_after_redirect(response.status_code, method, content)
            url = target
        raise EgressRefused(f"more than {MAX_REDIRECTS} redirects from {_origin_text(first)}")

    # -- internals --------------------------------------------------------------------------

    def _could_admit(self, scheme: str, host: str, port: int) -> bool:
        """Whether any entry might allow this destination, decided before any DNS lookup so
        that names nobody listed are never resolved."""
        return any(
            entry.admits(scheme, port) and (entry.network is not None or entry.names_host(host))
            for entry in self.allow
        )

    def _resolve(self, host: str, port: int, shown: str) -> tuple[IPAddress, ...]:
        literal = _as_address(host)
        if literal is not None:
            return (literal,)
        try:
            found = [_as_address(text) for text in self.resolver(host, port)]
        except (OSError, UnicodeError):
            found = []
        addresses = tuple(dict.fromkeys(a for a in found if a is not None))
        if not addresses:
            raise EgressRefused(f"destination {shown}: cannot resolve {host}")
        return addresses

    def _address_refusal(self, destination: Destination, address: IPAddress) -> str | None:
        scheme, host, port = destination.scheme, destination.host, destination.port
        entries = [e for e in self.allow if e.admits(scheme, port)]
        named = [e for e in entries if e.names_host(host)]
        where = "" if destination.host_is_address else f"{host} resolves to {address}, "
        own = self._own_service(host, port, address)
        if own is not None:
            if any(e.port is not None and (e.host == host or e.is_single_address(address))
                   for e in entries):
                return None
            return f"{where}Coalmine's own service ({own.display})"
        special = _special_range(address)
        if special is not None:
            name, network = special
            if any(e.host == host for e in named) or any(e.vouches_for(address, network)
                                                         for e in entries):
                return None
            return f"{where}{name}" if where else name
        if named or any(e.contains(address) for e in entries):
            return None
        return f"{where}not listed" if where else "not listed"

    def _own_service(self, host: str, port: int, address: IPAddress) -> OwnService | None:
        for own in self.own:
            if own.port not in (None, port):
                continue
            if own.host == host or address in self._own_addresses(own):
                return own
        return None

    def _own_addresses(self, own: OwnService) -> set[IPAddress]:
        literal = _as_address(own.host)
        if literal is not None:
            return {literal}
        try:
            found = self.resolver(own.host, own.port or 0)
        except (OSError, UnicodeError):
            return set()  # an own service that does not resolve cannot be reached through DNS
        return {a for a in map(_as_address, found) if a is not None}

    def _send_pinned(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes | None,
    ) -> httpx.Response:
        """The request sent to a checked address, trying them in the resolver's order."""
        destination = self.admit(url)
        target = httpx.URL(url)
        extensions = {} if destination.host_is_address else {"sni_hostname": destination.host}
        pinned_headers = {"Host": _host_header(target), **headers}
        last_error: httpx.ConnectError | None = None
        for address in destination.addresses:
            try:
                return client.request(
                    method, target.copy_with(host=str(address)), headers=pinned_headers,
                    content=content, extensions=extensions,
                )
            except httpx.ConnectError as error:
                last_error = error
        assert last_error is not None  # admit() returns at least one address
        raise last_error


DENY_ALL = Egress()  # what a caller without a policy gets: nothing beyond its own Prometheus


def parse_egress(
    raw: Any, source: str, env: Mapping[str, str], own_hosts: Iterable[str] = ()
) -> Egress:
    """The `egress:` key of the server config plus COALMINE_EGRESS_ALLOW.

    `own_hosts` are Coalmine's own services (e.g. the Redis URL; `host`, `host:port` or a URL,
    whose credentials are ignored). Raises ConfigError naming the source, key and reason.
    """
    entries: list[AllowEntry] = []
    if raw is not None:
        if not isinstance(raw, Mapping):
            raise ConfigError(source, "egress", "must be a mapping with an `allow` list")
        for key in raw:
            if key != "allow":
                raise ConfigError(source, f"egress.{key}", "unknown key (expected `allow`)")
        allow = raw.get("allow") or []
        if not isinstance(allow, list):
            raise ConfigError(
                source, "egress.allow", "must be a list of hosts, *.domain globs, CIDRs or URLs"
            )
        for index, text in enumerate(allow):
            entries.append(_parse_entry_or_fail(text, source, f"egress.allow[{index}]"))
    for text in (env.get(ENV_VARIABLE) or "").split(","):
        if text.strip():
            entries.append(_parse_entry_or_fail(text, ENV_VARIABLE, text.strip()))
    return Egress(tuple(entries), tuple(_parse_own(text) for text in own_hosts if text))


def parse_entry(text: str) -> AllowEntry:
    """One allow entry; ValueError with the reason when it is not one of the accepted forms."""
    rest = text.strip()
    scheme = None
    match = _SCHEME.match(rest)
    if match:
        scheme = match["scheme"].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme {scheme!r} is not http or https")
        rest = rest[match.end():].removesuffix("/")
    if not rest or any(c in rest for c in "@?#") or rest.count("/") > 1:
        raise ValueError(_FORMS)
    if ":" in rest and rest.count(":") > 1 and not rest.startswith("["):
        host, prefix, port = rest.partition("/")[0], rest.partition("/")[2] or None, None
    else:
        shape = _BRACKETED.match(rest) or _PLAIN.match(rest)
        if shape is None:
            raise ValueError(_FORMS)
        host, prefix, port = shape["host"], shape["prefix"], shape["port"]
    number = _port(port) if port else None
    address = _as_address(host)
    if address is not None:
        try:
            network = ipaddress.ip_network(f"{address}/{prefix or address.max_prefixlen}")
        except ValueError as error:
            raise ValueError(f"not a network: {error}") from None
        return AllowEntry(text, scheme=scheme, port=number, network=network)
    if prefix is not None:
        raise ValueError("a /prefix needs an IP address in front of it")
    name = _normal_host(host)
    if name.startswith("*."):
        _check_dns_name(name[2:])
        return AllowEntry(text, scheme=scheme, port=number, suffix=name[1:])
    _check_dns_name(name)
    return AllowEntry(text, scheme=scheme, port=number, host=name)


# --- helpers ------------------------------------------------------------------------------------


def _parse_entry_or_fail(text: Any, source: str, key: str) -> AllowEntry:
    if not isinstance(text, str):
        raise ConfigError(source, key, "must be a string such as prometheus.monitoring.svc")
    try:
        return parse_entry(text)
    except ValueError as error:
        raise ConfigError(source, key, str(error)) from None


def _parse_own(text: str) -> OwnService:
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme)
    return OwnService(_normal_host(parts.hostname or text), port)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; EgressRefused when it has none."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise EgressRefused("the URL cannot be parsed") from None
    scheme = parsed.scheme
    if scheme not in ("http", "https") or not parsed.raw_host:
        raise EgressRefused(f"only http(s) URLs with a host can be requested, not {scheme}://")
    host = _normal_host(parsed.raw_host.decode("ascii"))
    return scheme, host, parsed.port or DEFAULT_PORTS[scheme]


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{_bracketed(host)}:{port}"


def _refusal(shown: str, reason: str) -> str:
    return f"destination {shown} refused by the egress policy: {reason}; {HINT}"


def _special_range(address: IPAddress) -> tuple[str, IPNetwork] | None:
    for name, network in SPECIAL_RANGES:
        if address.version == network.version and address in network:
            return name, network
    return None


def _as_address(text: str) -> IPAddress | None:
    """The IP address `text` spells (IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def _check_dns_name(name: str) -> None:
    labels = name.split(".")
    if not name or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{name!r} is not a host name (a wildcard is allowed only as `*.` in front, as in "
            "*.example.com)"
        )


def _port(text: str) -> int:
    number = int(text)
    if not 0 < number < 65536:
        raise ValueError(f"port {number} is not between 1 and 65535")
    return number


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _display(host: str, port: int) -> str:
    """`host:port` as people write it, IPv6 in brackets; never credentials or paths."""
    return f"{_bracketed(host)}:{port}"


def _host_header(url: httpx.URL) -> str:
    """What httpx would send as Host for the original URL (port only when not the default)."""
    host = _bracketed(url.raw_host.decode("ascii"))
    return host if url.port is None else f"{host}:{url.port}"


def _method_after_redirect(status: int, method: str, content: bytes | None) -> tuple[str, Any]:
    """303 turns into GET, and 301/302 turn a POST into GET, as browsers and httpx do; 307 and
    308 repeat the request as it was."""
    if status == 303 and method != "HEAD":
        return "GET", None
    if status in (301, 302) and method == "POST":
        return "GET", None
    return method, content
