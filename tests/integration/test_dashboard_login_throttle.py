"""The dashboard's login throttle, through the production app over a real Redis.

Wrong tokens are counted per client address in Redis, so every gunicorn worker sees the same
count; the real app is driven by Flask's test client with the peer address it would see.
"""

from __future__ import annotations

import pytest

from bot.dashboard.throttle import MAX_FAILURES
from bot.errors import ConfigError
from tests.integration.test_dashboard_pages import LIST, TOKEN, make_app

LOGIN = "/dashboard/login"


def post(client, token: str, addr: str = "203.0.113.7", forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post(LOGIN, data={"token": token}, headers=headers,
                       environ_base={"REMOTE_ADDR": addr})


def test_a_guesser_is_refused_after_the_limit_even_with_the_right_token(redis_url):
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()
    for attempt in range(MAX_FAILURES):
        assert post(client, f"guess-{attempt:02d}-0123456789").status_code == 401
    resp = post(client, TOKEN)
    assert resp.status_code == 429
    assert 0 < int(resp.headers["Retry-After"]) <= 15 * 60
    assert "Too many wrong tokens" in resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers
    assert client.get(LIST).status_code == 303  # still signed out

    # Another address is not held to the guesser's count, and a second app (another
    # gunicorn worker) shares the count through Redis.
    assert post(client, TOKEN, addr="198.51.100.9").status_code == 303
    other_worker = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()
    assert post(other_worker, TOKEN).status_code == 429


def test_a_right_token_clears_earlier_typos(redis_url):
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()
    for _ in range(MAX_FAILURES - 1):
        assert post(client, "typo-0123456789abcdef").status_code == 401
    assert post(client, TOKEN).status_code == 303
    for _ in range(MAX_FAILURES - 1):
        assert post(client, "typo-0123456789abcdef").status_code == 401
    assert post(client, TOKEN).status_code == 303


def test_behind_a_proxy_the_client_is_the_entry_the_proxy_wrote(redis_url):
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN,
                      COALMINE_DASHBOARD_PROXY_HOPS="1").test_client()
    proxy = "10.0.0.2"
    # The guesser writes a fresh address of its own each time; the proxy appends the real one.
    for attempt in range(MAX_FAILURES):
        resp = post(client, "wrong-0123456789abcdef", addr=proxy,
                    forwarded=f"192.0.2.{attempt}, 203.0.113.66")
        assert resp.status_code == 401
    assert post(client, TOKEN, addr=proxy, forwarded="203.0.113.66").status_code == 429
    # Someone else behind the same proxy still signs in.
    assert post(client, TOKEN, addr=proxy, forwarded="203.0.113.80").status_code == 303


def test_without_proxy_hops_a_forwarded_header_is_ignored(redis_url):
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()
    for attempt in range(MAX_FAILURES):
        post(client, "wrong-0123456789abcdef", forwarded=f"192.0.2.{attempt}")
    assert post(client, TOKEN, forwarded="192.0.2.200").status_code == 429


def test_an_ipv6_guesser_is_counted_by_its_64_whatever_address_it_picks(redis_url):
    """Attack: a host routed a /64 takes a fresh source address for every guess, so counted
    per address it never reached the limit."""
    client = make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN).test_client()
    for attempt in range(MAX_FAILURES):
        resp = post(client, "wrong-0123456789abcdef", addr=f"2001:db8:1:2::{attempt + 1:x}")
        assert resp.status_code == 401
    assert post(client, TOKEN, addr="2001:db8:1:2:ffff::9").status_code == 429
    # Another /64 is another client; an IPv4-mapped peer counts as its IPv4 address.
    assert post(client, TOKEN, addr="2001:db8:1:3::1").status_code == 303
    for _ in range(MAX_FAILURES):
        post(client, "wrong-0123456789abcdef", addr="::ffff:192.0.2.55")
    assert post(client, TOKEN, addr="192.0.2.55").status_code == 429


@pytest.mark.parametrize("raw", ["-1", "two", "11"])
def test_a_bad_proxy_hop_count_is_a_config_error(redis_url, raw):
    with pytest.raises(ConfigError, match="COALMINE_DASHBOARD_PROXY_HOPS"):
        make_app(redis_url, COALMINE_DASHBOARD_TOKEN=TOKEN, COALMINE_DASHBOARD_PROXY_HOPS=raw)
