"""The dashboard's login: one operator token, and a signed session cookie once it was given.

The token is a secret from the environment (COALMINE_DASHBOARD_TOKEN or its _FILE) and is
compared in constant time. A session is a cookie `<issued>.<nonce>.<mac>`: an HMAC-SHA256 under
a key derived from the server secret (COALMINE_DASHBOARD_SECRET) and the token, so changing
either one signs everybody out, and a cookie expires SESSION_TTL_S after it was issued. With no
secret configured the key comes from the token alone, which is why the token must be long
(bot/config.py refuses one shorter than 16 characters). Nothing is stored server-side; signing
out removes the cookie from the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

COOKIE = "coalmine_dashboard"
SESSION_TTL_S = 12 * 3600
_CLOCK_SKEW_S = 60
_LABEL = b"coalmine dashboard session v1\0"


class Gate:
    """Checks the token and issues and checks session cookies."""

    def __init__(self, token: str, secret: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not token:
            raise ValueError("the dashboard needs a token")
        self._token = token.encode("utf-8")
        self._key = hmac.new((secret or "").encode("utf-8"), _LABEL + self._token,
                             hashlib.sha256).digest()
        self._clock = clock

    def token_matches(self, given: str) -> bool:
        # surrogateescape: form fields with undecodable bytes compare unequal, never raise.
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)

    def issue(self) -> str:
        payload = f"{int(self._clock())}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, cookie: str | None) -> bool:
        if not cookie or not cookie.isascii():
            return False
        payload, _, mac = cookie.rpartition(".")
        issued, _, nonce = payload.partition(".")
        if not issued.isdigit() or not nonce:
            return False
        if not hmac.compare_digest(mac, self._mac(payload)):
            return False
        now = self._clock()
        return int(issued) - _CLOCK_SKEW_S <= now < int(issued) + SESSION_TTL_S

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).hexdigest()
