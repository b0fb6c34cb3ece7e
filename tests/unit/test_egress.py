"""The egress policy: parsing `egress.allow` / COALMINE_EGRESS_ALLOW, and which destinations it
allows. Name resolution is the one thing injected (a table instead of DNS), so that names can
resolve to metadata, loopback or several addresses; the system resolver is used where it can be."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bot.egress import Egress, parse_egress
from bot.errors import ConfigError

HINT = "allow it under egress.allow"


class Table:
    """A resolver answering from a dict, counting lookups."""

    def __init__(self, answers: Mapping[str, list[str]]) -> None:
        self.answers = answers
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.answers:
            raise OSError("no such host")
        return self.answers[host]


DNS = Table(
    {
        "prometheus.monitoring.svc": ["10.20.0.7"],
        "a.example.com": ["203.0.113.10"],
        "a.b.example.com": ["203.0.113.11"],
        "example.com": ["203.0.113.1"],
        "badexample.com": ["203.0.113.66"],
        "metadata.example.com": ["169.254.169.254"],
        "rebind.example.com": ["203.0.113.12", "127.0.0.1"],
        "split.internal": ["10.1.2.3", "192.168.1.1"],
        "metrics.internal": ["10.1.2.4"],
        "redis.internal": ["10.0.0.5"],
        "localhost6.example.com": ["::1"],
        "mapped.example.com": ["::ffff:127.0.0.1"],
    }
)


def policy(*allow: str, own: tuple[str, ...] = (), env: str = "") -> Egress:
    egress = parse_egress(
        {"allow": list(allow)}, "server.yaml", {"COALMINE_EGRESS_ALLOW": env}, own_hosts=own
    )
    return Egress(egress.allow, egress.own, resolver=DNS)


# --- parsing ------------------------------------------------------------------------------------


def test_entries_from_the_file_and_the_environment_are_combined() -> None:
    egress = parse_egress(
        {"allow": ["prometheus.monitoring.svc", "*.example.com"]},
        "server.yaml",
        {"COALMINE_EGRESS_ALLOW": " 10.0.0.0/8, ,http://127.0.0.1:9090/ "},
    )
    assert [e.text.strip() for e in egress.allow] == [
        "prometheus.monitoring.svc", "*.example.com", "10.0.0.0/8", "http://127.0.0.1:9090/",
    ]
    local = egress.allow[3]
    assert (local.scheme, local.port, str(local.network)) == ("http", 9090, "127.0.0.1/32")


def test_no_egress_key_and_no_variable_allows_nothing() -> None:
    egress = parse_egress(None, "server.yaml", {})
    assert egress.allow == ()
    assert "not listed" in (egress.check("https://prometheus.example.com") or "")


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ("example.com", "egress", "must be a mapping"),
        ({"allowHosts": ["x"]}, "egress.allowHosts", "unknown key"),
        ({"allow": "example.com"}, "egress.allow", "must be a list"),
        ({"allow": ["ok.example", 42]}, "egress.allow[1]", "must be a string"),
        ({"allow": ["ftp://files.example.com"]}, "egress.allow[0]", "not http or https"),
        ({"allow": ["http://example.com/metrics"]}, "egress.allow[0]", "no path"),
        ({"allow": ["user:pw@example.com"]}, "egress.allow[0]", "no path, query or credentials"),
        ({"allow": ["a.*.example.com"]}, "egress.allow[0]", "wildcard"),
        ({"allow": ["*"]}, "egress.allow[0]", "wildcard"),
        ({"allow": ["*example.com"]}, "egress.allow[0]", "wildcard"),
        ({"allow": ["10.0.0.1/8"]}, "egress.allow[0]", "host bits set"),
        ({"allow": ["example.com/8"]}, "egress.allow[0]", "needs an IP address"),
        ({"allow": ["example.com:70000"]}, "egress.allow[0]", "between 1 and 65535"),
        ({"allow": [""]}, "egress.allow[0]", "expected a host"),
    ],
)
def test_config_mistakes_name_the_source_key_and_reason(raw, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_egress(raw, "server.yaml", {})
    assert (caught.value.source, caught.value.key) == ("server.yaml", key)
    assert fragment in caught.value.reason


def test_a_bad_environment_entry_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_egress(None, "server.yaml", {"COALMINE_EGRESS_ALLOW": "ok.example,gopher://x"})
    assert (caught.value.source, caught.value.key) == ("COALMINE_EGRESS_ALLOW", "gopher://x")


@pytest.mark.parametrize(
    "text",
    ["[::1]:9090", "fd00::/8", "::1", "https://[fe80::1]", "10.0.0.0/8:9090", "Host.Example."],
)
def test_accepted_forms(text: str) -> None:
    assert parse_egress({"allow": [text]}, "server.yaml", {}).allow


# --- which destinations ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://a.example.com/x", True),
        ("https://a.b.example.com:8443/x", True),  # one or more labels
        ("https://example.com/", False),  # the glob needs at least one label in front
        ("https://badexample.com/", False),
        ("http://prometheus.monitoring.svc:9090/", True),
        ("http://metrics.internal/", True),  # 10.1.2.4 is inside 10.0.0.0/8
        ("http://split.internal/", False),  # 192.168.1.1 is not: every address must be allowed
    ],
)
def test_hosts_globs_and_cidrs(url: str, allowed: bool) -> None:
    egress = policy("*.example.com", "prometheus.monitoring.svc", "10.0.0.0/8")
    reason = egress.check(url)
    assert (reason is None) == allowed, reason


def test_split_answer_names_the_address_refused() -> None:
    reason = policy("10.0.0.0/8").check("http://split.internal/")
    assert reason == (
        "destination split.internal:80 refused by the egress policy: split.internal resolves "
        f"to 192.168.1.1, not listed; {HINT}"
    )


def test_port_and_scheme_narrow_an_entry() -> None:
    egress = policy("https://a.example.com:8443", "prometheus.monitoring.svc:9090")
    assert egress.check("https://a.example.com:8443/") is None
    assert egress.check("http://a.example.com:8443/") is not None
    assert egress.check("https://a.example.com/") is not None
    assert egress.check("http://prometheus.monitoring.svc:9090/") is None
    assert egress.check("http://prometheus.monitoring.svc:9091/") is not None


def test_names_nobody_listed_are_never_resolved() -> None:
    DNS.lookups.clear()
    assert policy("*.example.com").check("http://exfiltrate.attacker.test/") is not None
    assert DNS.lookups == []


def test_loopback_literal_is_refused_with_the_sentence_the_pr_sees() -> None:
    reason = policy("*.example.com").check("http://127.0.0.1:8080/computeMetadata/v1/token")
    assert reason == (
        f"destination 127.0.0.1:8080 refused by the egress policy: not listed; {HINT}"
    )
    reason = policy("0.0.0.0/0").check("http://127.0.0.1:8080/computeMetadata/v1/token")
    assert reason == f"destination 127.0.0.1:8080 refused by the egress policy: loopback; {HINT}"


@pytest.mark.parametrize(
    ("url", "category"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://metadata.example.com/", "link-local"),  # a listed name resolving there
        ("http://rebind.example.com/", "loopback"),  # one of its answers is loopback
        ("http://[::1]:9090/", "loopback"),
        ("http://localhost6.example.com/", "loopback"),
        ("http://mapped.example.com/", "loopback"),  # ::ffff:127.0.0.1 is 127.0.0.1
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://[::]:8080/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
def test_special_addresses_are_refused_by_globs_and_wide_cidrs(url: str, category: str) -> None:
    egress = policy("*.example.com", "0.0.0.0/0", "::/0")
    reason = egress.check(url) or ""
    assert f"{category}; {HINT}" in reason


@pytest.mark.parametrize(
    ("entry", "url"),
    [
        ("169.254.169.254", "http://169.254.169.254/latest/meta-data/"),
        ("169.254.0.0/16", "http://169.254.169.254/latest/meta-data/"),
        ("metadata.example.com", "http://metadata.example.com/"),  # an exact host names it
        ("http://127.0.0.1:9090", "http://127.0.0.1:9090/api/v1/query"),
        ("[::1]:9090", "http://[::1]:9090/"),
        ("127.0.0.0/8", "http://[::ffff:127.0.0.1]/"),
    ],
)
def test_special_addresses_named_explicitly_are_allowed(entry: str, url: str) -> None:
    assert policy(entry).check(url) is None


def test_decimal_spelling_of_loopback_is_still_loopback() -> None:
    """getaddrinfo turns 2130706433 into 127.0.0.1; the check is on what it resolved to."""
    reason = parse_egress({"allow": ["10.0.0.0/8"]}, "s", {}).check("http://2130706433:8080/")
    assert reason is not None and "127.0.0.1" in reason and "loopback" in reason


def test_own_services_are_refused_unless_named_with_their_port() -> None:
    own = ("redis://:s3cret@redis.internal:6379/0",)
    wide = policy("*.internal", "10.0.0.0/8", own=own)
    assert "Coalmine's own service (redis.internal:6379)" in (
        wide.check("http://redis.internal:6379/") or ""
    )
    assert "own service" in (wide.check("http://10.0.0.5:6379/") or "")  # by its address
    assert wide.check("http://10.0.0.5:8080/") is None  # another port of that host is not it
    assert policy("http://10.0.0.5:6379", own=own).check("http://10.0.0.5:6379/") is None
    assert "s3cret" not in repr(wide)


def test_unresolvable_names_are_refused() -> None:
    reason = policy("*.example.com").check("http://missing.example.com/")
    assert reason == "destination missing.example.com:80: cannot resolve missing.example.com"


@pytest.mark.parametrize("url", ["ftp://a.example.com/", "http:///nohost", "not a url"])
def test_non_http_urls_are_refused(url: str) -> None:
    assert policy("*.example.com").check(url) is not None


def test_trusting_adds_exactly_one_destination() -> None:
    egress = policy().trusting("http://127.0.0.1:9090")
    assert egress.check("http://127.0.0.1:9090/api/v1/query") is None
    assert egress.check("http://127.0.0.1:9091/") is not None
    assert egress.check("https://127.0.0.1:9090/") is not None
