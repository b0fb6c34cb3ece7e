"""The CI gate: which checks must be green on a merge commit before Coalmine deploys it.

A repository asks for it in `.coalmine.yaml` (`gate: {require: [ci/build, "test (3.11)"] | all,
timeoutSeconds: 1800}`) and the server config may set a default that is also a minimum: the
two are combined (`tighten`), never replaced, so a repository can add checks to wait for but
cannot drop one the server requires, nor turn the server's "all" into a list.

`judge` reads the forge's results for the commit and says what to do: deploy (every required
check passed), wait (some are pending or have not reported yet, and the deadline is not
reached), stop (one failed; it is named with its link), or time out. Coalmine's own
`coalmine/*` statuses never count, as required or as part of "all". Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bot.errors import ConfigError

OWN_PREFIX = "coalmine/"
DEFAULT_TIMEOUT_S = 1800.0
ALL = "all"


@dataclass(frozen=True)
class GateSpec:
    """What must be green: every named check, or (`all`) every check present (at least one)."""

    require: tuple[str, ...] = ()
    all: bool = False
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def active(self) -> bool:
        return self.all or bool(self.require)

    def describe(self) -> str:
        if self.all:
            return "all checks"
        return ", ".join(self.require)


NO_GATE = GateSpec()
CheckState = Literal["pending", "success", "failure"]


@dataclass(frozen=True)
class CheckResult:
    """One CI result on a commit, as the forge reports it: a commit status, a check run, a
    pipeline or a pipeline's job. `state` is normalised by the adapter (GitHub's neutral and
    skipped check runs, and GitLab jobs allowed to fail, are success, as the forges count them
    for merges)."""

    name: str  # the status context, check run name or job name ("pipeline" for GitLab's own)
    state: CheckState
    url: str = ""
    kind: str = "status"  # "status", "check run", "pipeline", "job"
    detail: str = ""  # the forge's own word (failure, timed_out, canceled…)


def parse_gate(raw: Any, source: str, key: str = "gate") -> GateSpec:
    """`{require: [names] | "all", timeoutSeconds: N}`; ConfigError names the key at fault."""
    if raw is None:
        return NO_GATE
    if not isinstance(raw, dict):
        raise ConfigError(source, key, "must be a mapping with `require` (a list of check "
                                       "names, or all) and optionally `timeoutSeconds`")
    unknown = set(raw) - {"require", "timeoutSeconds"}
    if unknown:
        raise ConfigError(source, f"{key}.{min(unknown, key=str)}",
                          "unknown key (allowed: require, timeoutSeconds)")
    require = raw.get("require")
    names: tuple[str, ...] = ()
    every = False
    if require == ALL:
        every = True
    elif isinstance(require, list) and require:
        for i, name in enumerate(require):
            if not isinstance(name, str) or not name.strip():
                raise ConfigError(source, f"{key}.require[{i}]", "must be a check name")
            if name.strip().startswith(OWN_PREFIX):
                raise ConfigError(source, f"{key}.require[{i}]",
                                  f"{name!r} is Coalmine's own status; it never counts")
        names = tuple(dict.fromkeys(n.strip() for n in require))
    else:
        raise ConfigError(source, f"{key}.require", "must be a non-empty list of check names, "
                                                    "or all")
    timeout = raw.get("timeoutSeconds", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(source, f"{key}.timeoutSeconds", "must be a positive number")
    return GateSpec(names, every, float(timeout))


def tighten(server: GateSpec, repo: GateSpec) -> GateSpec:
    """The repository's gate added to the server's: names united, "all" kept by either; the
    repository's timeout when it sets a gate, else the server's."""
    if not repo.active:
        return server
    if not server.active:
        return repo
    return GateSpec(tuple(dict.fromkeys(server.require + repo.require)),
                    server.all or repo.all, repo.timeout_s)


Verdict = Literal["pass", "wait", "fail", "timeout"]


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    waiting_for: tuple[str, ...] = ()  # pending, or not reported yet
    failed: tuple[CheckResult, ...] = ()
    passed: tuple[str, ...] = field(default=())

    def summary(self, spec: GateSpec) -> str:
        """The status line (the caller clips it)."""
        if self.verdict == "pass":
            return f"CI gate passed: {', '.join(self.passed) or spec.describe()}"
        if self.verdict == "fail":
            names = ", ".join(f"{c.name} ({c.detail or c.state})" for c in self.failed)
            return f"CI gate failed: {names}; nothing deployed"
        waiting = ", ".join(self.waiting_for) or "the first CI check"
        if self.verdict == "timeout":
            return (f"CI gate timed out after {spec.timeout_s:.0f}s waiting for {waiting}; "
                    "nothing deployed")
        return f"waiting for CI: {waiting}"


def judge(spec: GateSpec, checks: list[CheckResult], *, waited_s: float) -> Judgement:
    """What to do with the merge given the forge's `checks` (the latest per name) after
    waiting `waited_s` seconds. A failure stops at once, even while others are pending."""
    theirs = {c.name: c for c in checks if not c.name.startswith(OWN_PREFIX)}
    wanted = list(theirs) if spec.all else list(spec.require)
    failed = tuple(theirs[n] for n in wanted if n in theirs and theirs[n].state == "failure")
    if failed:
        return Judgement("fail", failed=failed)
    waiting = tuple(n for n in wanted if n not in theirs or theirs[n].state != "success")
    if waiting or not wanted:  # `all` with nothing reported yet waits for the first check
        verdict: Verdict = "timeout" if waited_s >= spec.timeout_s else "wait"
        return Judgement(verdict, waiting_for=waiting)
    return Judgement("pass", passed=tuple(wanted))


def check_lines(judgement: Judgement, checks: list[CheckResult], spec: GateSpec) -> list[str]:
    """One line per check that matters, for the PR comment (plain text; the caller escapes)."""
    theirs = {c.name: c for c in checks if not c.name.startswith(OWN_PREFIX)}
    names = list(theirs) if spec.all else list(spec.require)
    lines = []
    for name in names:
        found = theirs.get(name)
        if found is None:
            lines.append(f"{name}: not reported yet")
        else:
            where = f" ({found.url})" if found.url else ""
            lines.append(f"{name}: {found.detail or found.state} [{found.kind}]{where}")
    return lines
