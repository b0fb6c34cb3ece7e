"""Where metric providers may connect: the server's egress allow list, enforced per request.

Analysis templates come from repositories, so the URL a `web` metric or a Prometheus `address`
names is chosen by whoever can merge. Without a fence that is a server-side request forgery: a
template pointed at a metadata endpoint on loopback or link-local got a token back and the PR
comment printed it. The operator therefore lists the destinations Coalmine may reach (`egress.allow`
and COALMINE_EGRESS_ALLOW, read by bot.egress_allowlist), and nothing else is reachable. This
module is the check made when a provider connects.

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
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.egress_allowlist import (
    DEFAULT_PORTS,
    AllowEntry,
    IPAddress,
    IPNetwork,
    OwnService,
    as_address,
    bracketed,
    display,
    normal_host,
    parse_allow_list,
    parse_own,
)

Resolver = Callable[[str, int], Sequence[str]]

MAX_REDIRECTS = 5
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


class EgressRefused(Exception):
    """A request the policy does not allow (or a redirect chain too long); the message names
    the destination and the reason, and is fit for a PR comment."""


@dataclass(frozen=True)
class Destination:
    """A checked destination: connect only to `addresses`, every one of which was allowed."""

    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]

    @property
    def display(self) -> str:
        return display(self.host, self.port)

    @property
    def host_is_address(self) -> bool:
        return as_address(self.host) is not None


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
        shown = display(host, port)
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
        address = as_address(host)
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
        literal = as_address(host)
        if literal is not None:
            return (literal,)
        try:
            found = [as_address(text) for text in self.resolver(host, port)]
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
        literal = as_address(own.host)
        if literal is not None:
            return {literal}
        try:
            found = self.resolver(own.host, own.port or 0)
        except (OSError, UnicodeError):
            return set()  # an own service that does not resolve cannot be reached through DNS
        return {a for a in map(as_address, found) if a is not None}

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
    own = tuple(parse_own(text) for text in own_hosts if text)
    return Egress(parse_allow_list(raw, source, env), own)


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; EgressRefused when it has none."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise EgressRefused("the URL cannot be parsed") from None
    scheme = parsed.scheme
    if scheme not in ("http", "https") or not parsed.raw_host:
        raise EgressRefused(f"only http(s) URLs with a host can be requested, not {scheme}://")
    host = normal_host(parsed.raw_host.decode("ascii"))
    return scheme, host, parsed.port or DEFAULT_PORTS[scheme]


def _origin_text(url: str) -> str:
    scheme, host, port = _origin(url)
    return f"{scheme}://{bracketed(host)}:{port}"


def _refusal(shown: str, reason: str) -> str:
    return f"destination {shown} refused by the egress policy: {reason}; {HINT}"


def _special_range(address: IPAddress) -> tuple[str, IPNetwork] | None:
    for name, network in SPECIAL_RANGES:
        if address.version == network.version and address in network:
            return name, network
    return None


def _host_header(url: httpx.URL) -> str:
    """What httpx would send as Host for the original URL (port only when not the default)."""
    host = bracketed(url.raw_host.decode("ascii"))
    return host if url.port is None else f"{host}:{url.port}"


def _method_after_redirect(status: int, method: str, content: bytes | None) -> tuple[str, Any]:
    """303 turns into GET, and 301/302 turn a POST into GET, as browsers and httpx do; 307 and
    308 repeat the request as it was."""
    if status == 303 and method != "HEAD":
        return "GET", None
    if status in (301, 302) and method == "POST":
        return "GET", None
    return method, content
