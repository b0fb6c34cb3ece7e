"""Command parsing: start of line only, never inside code or quotes."""

import pytest

from bot.commands import Command, CommandError, parse


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("/promote", [Command("promote")]),
        ("/promote web", [Command("promote", "web")]),
        ("/promote --full web", [Command("promote", "web", full=True)]),
        ("/promote web --full", [Command("promote", "web", full=True)]),
        ("/abort\n/status", [Command("abort"), Command("status")]),
        ("LGTM\n/retry api  ", [Command("retry", "api")]),
        ("please /promote", []),
        ("> /abort", []),
        ("   > quoted /abort\n", []),
        ("```\n/abort\n```", []),
        ("~~~~\n/abort\n~~~\n~~~~\n/pause", [Command("pause")]),
        ("    /abort", []),
        ("/unknown", []),
        ("/promotex", []),
        ("/help", [Command("help")]),
    ],
    ids=lambda v: repr(v)[:40],
)
def test_parse(body, expected):
    assert parse(body) == expected


def test_malformed_known_command_is_an_error():
    (result,) = parse("/abort web api")
    assert isinstance(result, CommandError) and "at most one" in result.reason
    (result,) = parse("/status web")
    assert isinstance(result, CommandError)
    (result,) = parse("/promote --force")
    assert isinstance(result, CommandError) and "--force" in result.reason


def test_unclosed_fence_hides_the_rest():
    assert parse("```\n/abort") == []
