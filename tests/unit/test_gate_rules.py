"""The CI gate's pure rules: parsing, tightening by the server, and the verdict on CI results."""

from __future__ import annotations

import pytest

from bot.errors import ConfigError
from bot.gate import CheckResult, GateSpec, judge, parse_gate, tighten

SPEC = GateSpec(("ci/build", "test (3.11)"), timeout_s=100)


def ok(name: str) -> CheckResult:
    return CheckResult(name, "success")


@pytest.mark.parametrize(("checks", "waited", "verdict", "waiting"), [
    ([ok("ci/build"), ok("test (3.11)")], 0, "pass", ()),
    ([ok("ci/build")], 0, "wait", ("test (3.11)",)),  # not reported yet
    ([ok("ci/build"), CheckResult("test (3.11)", "pending")], 50, "wait", ("test (3.11)",)),
    ([ok("ci/build")], 100, "timeout", ("test (3.11)",)),
    ([CheckResult("ci/build", "failure", detail="failure"),
      CheckResult("test (3.11)", "pending")], 0, "fail", ()),  # a failure stops at once
])
def test_named_checks(checks, waited, verdict, waiting):
    found = judge(SPEC, checks, waited_s=waited)
    assert (found.verdict, found.waiting_for) == (verdict, waiting)


def test_coalmine_statuses_never_count():
    every = GateSpec(all=True)
    assert judge(every, [CheckResult("coalmine/gate", "pending")], waited_s=0).verdict == "wait"
    assert judge(every, [CheckResult("coalmine/web", "failure"), ok("ci")],
                 waited_s=0).verdict == "pass"
    with pytest.raises(ConfigError, match="Coalmine's own"):
        parse_gate({"require": ["coalmine/web"]}, ".coalmine.yaml")


def test_all_waits_for_the_first_check_and_fails_on_any():
    every = GateSpec(all=True)
    assert judge(every, [], waited_s=0).verdict == "wait"
    assert judge(every, [ok("a"), CheckResult("b", "failure")], waited_s=0).verdict == "fail"


def test_a_repository_cannot_loosen_the_servers_gate():
    server = parse_gate({"require": ["ci/build"]}, "server.yaml")
    assert tighten(server, parse_gate({"require": ["lint"]}, "r")).require == ("ci/build", "lint")
    assert tighten(server, GateSpec()).require == ("ci/build",)
    assert tighten(GateSpec(all=True), parse_gate({"require": ["lint"]}, "r")).all


@pytest.mark.parametrize(("raw", "key"), [
    ({"require": []}, "gate.require"),
    ({"require": "some"}, "gate.require"),
    ({"require": ["a"], "timeoutSeconds": 0}, "gate.timeoutSeconds"),
    ({"require": ["a"], "wait": 1}, "gate.wait"),
])
def test_mistakes_name_their_key(raw, key):
    with pytest.raises(ConfigError) as caught:
        parse_gate(raw, ".coalmine.yaml")
    assert caught.value.key == key
