"""The egress allow list as the operator writes it: `egress.allow` and COALMINE_EGRESS_ALLOW.

    egress:
      allow: ["prometheus.monitoring.svc", "*.example.com", "10.0.0.0/8", "http://127.0.0.1:9090"]

plus `COALMINE_EGRESS_ALLOW` (comma separated, same forms). An entry is an exact host, a
`*.domain` glob (one or more labels in front of `domain`), an IP address or a CIDR, each
optionally with `scheme://` and `:port` to narrow it further. Coalmine's own services (Redis)
are listed too, so that the check can refuse them unless an entry names them.

This module only reads entries and says what each one names; bot.egress decides, when a
provider connects, whether the destination's addresses are allowed. A mistake is a ConfigError
naming the source and key, or the variable and entry.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bot.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ENV_VARIABLE = "COALMINE_EGRESS_ALLOW"
DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379}

_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_BRACKETED = re.compile(r"^\[(?P<host>[^\]]+)\](?:/(?P<prefix>\d{1,3}))?(?::(?P<port>\d{1,5}))?$")
_PLAIN = re.compile(r"^(?P<host>[^/:\[\]]+)(?:/(?P<prefix>\d{1,3}))?(?::(?P<port>\d{1,5}))?$")
_FORMS = (
    "expected a host, *.domain, IP address or CIDR, optionally with scheme:// and :port "
    "([IPv6]:port), and no path, query or credentials"
)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


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
        return self.host if self.port is None else display(self.host, self.port)


def parse_allow_list(raw: Any, source: str, env: Mapping[str, str]) -> tuple[AllowEntry, ...]:
    """The entries of the `egress:` key of the server config, then of COALMINE_EGRESS_ALLOW."""
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
    return tuple(entries)


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
    address = as_address(host)
    if address is not None:
        try:
            network = ipaddress.ip_network(f"{address}/{prefix or address.max_prefixlen}")
        except ValueError as error:
            raise ValueError(f"not a network: {error}") from None
        return AllowEntry(text, scheme=scheme, port=number, network=network)
    if prefix is not None:
        raise ValueError("a /prefix needs an IP address in front of it")
    name = normal_host(host)
    if name.startswith("*."):
        _check_dns_name(name[2:])
        return AllowEntry(text, scheme=scheme, port=number, suffix=name[1:])
    _check_dns_name(name)
    return AllowEntry(text, scheme=scheme, port=number, host=name)


def parse_own(text: str) -> OwnService:
    """One of Coalmine's own services: `host`, `host:port` or a URL (credentials ignored)."""
    parts = urlsplit(text if "://" in text else f"//{text}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = DEFAULT_PORTS.get(parts.scheme)
    return OwnService(normal_host(parts.hostname or text), port)


def as_address(text: str) -> IPAddress | None:
    """The IP address `text` spells (IPv4-mapped IPv6 as IPv4), or None for a name."""
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normal_host(host: str) -> str:
    return host.strip().lower().rstrip(".")


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def display(host: str, port: int) -> str:
    """`host:port` as people write it, IPv6 in brackets; never credentials or paths."""
    return f"{bracketed(host)}:{port}"


def _parse_entry_or_fail(text: Any, source: str, key: str) -> AllowEntry:
    if not isinstance(text, str):
        raise ConfigError(source, key, "must be a string such as prometheus.monitoring.svc")
    try:
        return parse_entry(text)
    except ValueError as error:
        raise ConfigError(source, key, str(error)) from None


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
