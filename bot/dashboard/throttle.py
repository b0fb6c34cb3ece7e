"""Throttling of the dashboard's login: wrong tokens from one client, counted in Redis.

The token is long (bot/config.py refuses one under 16 characters), so guessing it is hopeless
already; the throttle keeps it so when an operator picked a weak one anyway, and keeps a
scanner from costing a worker per guess. Failures are counted per client address in a fixed
window shared by every gunicorn worker (Redis, not process memory: each worker would otherwise
grant its own allowance). Once a client reached the limit, its login answers 429 without
looking at the token, so a blocked guesser learns nothing from a right guess either.

Behind a reverse proxy every client arrives from the proxy's address, and one guesser would
lock everybody out of signing in (sessions already issued keep working): COALMINE_DASHBOARD_PROXY_HOPS
names how many proxies the operator runs in front, and the client is then read from
X-Forwarded-For that many entries from the right, the part those proxies wrote. Entries further
left are the client's own claim and are never used. An IPv6 client counts by its /64 (see
`_counted`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from redis import Redis

from bot import keys

MAX_FAILURES = 10
WINDOW_S = 15 * 60


@dataclass(frozen=True)
class LoginThrottle:
    redis: Redis
    max_failures: int = MAX_FAILURES
    window_s: int = WINDOW_S

    def blocked_for(self, client: str) -> int:
        """Seconds until `client` may try again; 0 when it may try now."""
        key = keys.login_failures(client)
        count, ttl = self.redis.pipeline().get(key).ttl(key).execute()
        if count is None or int(count) < self.max_failures:
            return 0
        return max(int(ttl), 1)

    def failed(self, client: str) -> None:
        """Count a wrong token; the window starts with the first failure."""
        key = keys.login_failures(client)
        self.redis.pipeline().set(key, 0, ex=self.window_s, nx=True).incr(key).execute()

    def succeeded(self, client: str) -> None:
        """A right token clears the client's count (a typo or two is not held against it)."""
        self.redis.delete(keys.login_failures(client))


def client_address(remote_addr: str | None, forwarded_for: str | None, proxy_hops: int) -> str:
    """The address the throttle counts: the peer, or with `proxy_hops` proxies in front the
    entry they appended to X-Forwarded-For (never one the client could have written itself)."""
    if proxy_hops > 0 and forwarded_for:
        entries = [e.strip() for e in forwarded_for.split(",") if e.strip()]
        if len(entries) >= proxy_hops:
            return _counted(entries[-proxy_hops][:64])
    return _counted(remote_addr or "unknown")


def _counted(address: str) -> str:
    """An IPv6 client is counted by its /64: one subscriber or host is routed a whole /64
    and may pick a fresh address for every guess. IPv4 (mapped too) and anything that is
    no address stay as they are."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)
