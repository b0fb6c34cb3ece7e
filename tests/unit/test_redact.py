"""Redaction: real credentials are masked, too-short values do not garble every log line."""

from bot.redact import MASK, Redactor


def test_long_secret_and_its_url_encoding_are_masked():
    r = Redactor(["ghs_abc/def+123"])
    assert r.redact("token ghs_abc/def+123 and ghs_abc%2Fdef%2B123") == f"token {MASK} and {MASK}"


def test_short_values_are_not_treated_as_secrets():
    r = Redactor(["t", "abc"])
    assert r.redact("REDIS_URL is not set: the embedded queue") == (
        "REDIS_URL is not set: the embedded queue")
