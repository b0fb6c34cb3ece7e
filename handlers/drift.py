"""Drift detection: does the cluster still hold what the last deployed commit says?

Every complete deploy of a branch is remembered (`remember`, called by the merge). On a
schedule (the worker sweep `sweep`, every COALMINE_DRIFT_INTERVAL seconds, one worker at a
time), on `/status`, or when an operator asks (`check_repo`), each remembered commit is
checked out again from the mirror and rendered exactly as the deploy rendered it (the router's
weights and the Services' track selectors kept from live, as `handlers.deploy.keep_traffic`
does, so what a running or finished rollout owns is never drift). Each object is sent to the
cluster as a server-side dry-run apply with Coalmine's field manager: the answer is what
re-applying the commit would store, so only the fields Coalmine applies can differ from live;
fields other managers added are kept by the apply and never show. The fields the app's
`ignoreDifferences` lists (JSON pointers, managers) are removed from both sides first
(bot.drift.ignore), and the rest is diffed field by field (bot.preview.diff; a Secret by key).

An app whose rollout is running is not checked, and after an aborted rollout its workload is
left out (the stable version runs on purpose until the revert PR merges). Drift is told where
people look: `coalmine/drift` on the deployed commit, `coalmine_drift_objects{repo,app}`, and
one sticky comment on the PR of the deploy (bot.drift.report), edited in place. With
`selfHeal: true` the commit is applied again, with a growing delay between heals of an app
that keeps drifting (5 s, doubling, at most 3 minutes), and the comment says so.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from redis import Redis

from bot import keys, services, tenancy
from bot.cluster.model import ClusterError
from bot.config import REPO_CONFIG_FILE, AppConfig, ConfigError, parse_repo_config
from bot.drift.ignore import IgnoreRule, without_ignored
from bot.drift.report import MARKER, AppDrift, render, status_line
from bot.errors import ManifestError
from bot.events import MergedPullRequest
from bot.forge.base import ForgeError
from bot.gitrepo import GitError, repo_key
from bot.logs import job_context
from bot.manifests import render_sourced
from bot.policy import Policy
from bot.preview.diff import hide_secret_values, object_change
from bot.preview.model import ObjectChange
from bot.refs import RepoRef
from bot.report import comment, status
from bot.rollout import traffic
from bot.rollout.plan import split
from bot.rollout.store import RolloutStore, rollout_key
from bot.rollout.strategy import StrategyError
from handlers import outbox, rollout
from handlers.deploy import keep_traffic, owner_of

log = logging.getLogger(__name__)
STATUS_CONTEXT = status.context("drift")
HEAL_FIRST_DELAY_S = 5.0
HEAL_MAX_DELAY_S = 180.0
Obj = dict[str, Any]


# --------------------------------------------------------------------------- what is watched


def _field(forge: str, repo_id: int, branch: str) -> str:
    return f"{forge}:{repo_id}:{branch}"


def remember(redis: Redis, event: MergedPullRequest, repo_id: int, branch: str) -> None:
    """The branch's newest completely deployed merge: what drift checks compare with."""
    record = {"event": dataclasses.asdict(event), "repo_id": repo_id, "branch": branch}
    redis.hset(keys.DRIFT_WATCH, _field(event.repo.forge, repo_id, branch),
               json.dumps(record, sort_keys=True))


def _watched(raw: str | bytes) -> tuple[MergedPullRequest, int, str]:
    data = json.loads(raw)
    event = dict(data["event"])
    event["repo"] = RepoRef(**event["repo"])
    return MergedPullRequest(**event), int(data["repo_id"]), data["branch"]


def drift_counts(redis: Redis) -> dict[tuple[str, str], int]:
    """(repository, app) → drifted objects at the last check, for the metrics' collector."""
    out = {}
    for field, count in redis.hgetall(keys.DRIFT_COUNTS).items():
        text = field.decode() if isinstance(field, bytes) else field
        repo, _, app = text.partition("\n")
        out[(repo, app)] = int(count)
    return out


# --------------------------------------------------------------------------- entry points


def sweep(svc: services.Services) -> int:
    """Worker sweep: every drift interval, one worker (whoever claims it) queues a check of
    each watched branch; returns how many were queued."""
    claimed = svc.redis.set(keys.DRIFT_SWEEP, "1", nx=True,
                            ex=max(1, int(svc.settings.drift_interval_s)))
    if not claimed:
        return 0
    fields = [f.decode() if isinstance(f, bytes) else f
              for f in svc.redis.hkeys(keys.DRIFT_WATCH)]
    for field in fields:
        forge, repo_id, branch = field.split(":", 2)
        svc.queue.enqueue(check, forge, int(repo_id), branch)
    return len(fields)


@job_context(lambda forge, repo_id, branch: {"forge": forge})
def check(forge: str, repo_id: int, branch: str) -> list[AppDrift]:
    """RQ job: compare the branch's last deployed commit with the cluster and report."""
    svc = services.current()
    raw = svc.redis.hget(keys.DRIFT_WATCH, _field(forge, repo_id, branch))
    if raw is None:
        return []
    event, repo_id, _branch = _watched(raw)
    found = detect(svc, event, repo_id)
    if found:
        publish(svc, event, found)
    return found


def check_repo(svc: services.Services, repo: RepoRef) -> list[AppDrift]:
    """Check every watched branch of `repo` now and report (`/status`, the command line)."""
    found: list[AppDrift] = []
    for raw in svc.redis.hvals(keys.DRIFT_WATCH):
        event, repo_id, branch = _watched(raw)
        if event.repo.forge == repo.forge and event.repo.full_name == repo.full_name:
            found += check(repo.forge, repo_id, branch)
    return found


# --------------------------------------------------------------------------- detection


def detect(svc: services.Services, event: MergedPullRequest, repo_id: int) -> list[AppDrift]:
    """Each app of the deployed commit against the cluster; heals where `selfHeal` says."""
    tenant = tenancy.resolve(svc.settings, svc.redis, event.repo.forge, repo_id,
                             event.repo.full_name)
    if isinstance(tenant, str):
        log.warning("drift check of %s skipped: %s", event.repo.full_name, tenant)
        return []
    try:
        clone_url = svc.forge(event.repo).authenticated_clone_url(event.repo)
        with svc.mirrors.checkout(repo_key(event.repo), clone_url, event.merge_sha) as tree:
            config_file = Path(tree) / REPO_CONFIG_FILE
            if config_file.is_symlink() or not config_file.is_file():
                return []
            config = parse_repo_config(config_file.read_text(errors="replace"), svc.settings)
            return [_detect_app(svc, event, app, Path(tree), tenant.policy)
                    for app in config.apps]
    except (ConfigError, GitError, ForgeError) as exc:
        log.warning("drift check of %s@%s failed: %s", event.repo.full_name,
                    event.merge_sha[:7], exc)
        return []


def _detect_app(svc: services.Services, event: MergedPullRequest, app: AppConfig, tree: Path,
                policy: Policy) -> AppDrift:
    sha = event.merge_sha
    base = AppDrift(app.name, sha, self_heal=app.self_heal)
    running = rollout.running_rollout(svc, event.repo, app.name)
    if running is not None:
        return dataclasses.replace(base, skipped=f"a rollout of "
                                   f"{running.state.revision[:7]} is running")
    owner = owner_of(event, app.name)
    try:
        sourced = render_sourced(tree, app.path)
        objects, plan = split([o for o, _ in sourced], app, [f for _, f in sourced])
        cluster = svc.cluster(app.cluster, impersonate=policy.impersonate_user)
        notes: tuple[str, ...] = ()
        desired = objects
        if plan is not None:  # as the deploy applies them (handlers.deploy.deploy_app)
            desired = keep_traffic(cluster, plan, objects)
            last = RolloutStore(svc.redis).load(rollout_key(event.repo.forge,
                                                            event.repo.full_name, app.name))
            if last is not None and last.state.phase == "Aborted" and \
                    last.state.revision == sha:
                notes = ((f"{plan.name} runs the stable version after the aborted rollout of "
                         "this commit; it is not compared until the revert PR merges."),)
            else:
                desired = [*desired, traffic.as_stable(plan.deployment,
                                                       plan.strategy.stable_metadata)]
        results = cluster.dry_run(desired, revision=sha, default_namespace=app.namespace,
                                  owner=owner, adopt=policy.adopt)
    except (ManifestError, StrategyError, ClusterError) as exc:
        return dataclasses.replace(base, error=" ".join(str(exc).split())[:300])
    changes = tuple(c for c in (_compare(r, obj, app.ignore_differences)
                                for r, obj in zip(results, desired, strict=True))
                    if c.action != "unchanged")
    found = dataclasses.replace(base, changes=changes, notes=notes)
    if app.self_heal:
        found = _heal(svc, found, cluster, desired, app, owner, policy)
    return found


def _compare(result: Any, obj: Obj, rules: tuple[IgnoreRule, ...]) -> ObjectChange:
    ref = str(result.ref)
    if result.refused is not None:
        return ObjectChange(ref, "refused", note=result.refused)
    if result.error is not None:
        return ObjectChange(ref, "invalid", note=hide_secret_values(result.error, obj))
    if result.answer is None:
        return ObjectChange(ref, "unchanged")  # skipped: nothing to compare
    if result.live is None:
        return ObjectChange(ref, "create")
    return object_change(ref, without_ignored(result.live, rules, result.live),
                         without_ignored(result.answer, rules, result.live))


def _heal(svc: services.Services, found: AppDrift, cluster: Any, desired: list[Obj],
          app: AppConfig, owner: Any, policy: Policy) -> AppDrift:
    """Apply the commit again when the app drifted, unless its backoff has not run out."""
    key = keys.drift_state(owner.forge, owner.full_name, app.name)
    raw = svc.redis.get(key)
    state = json.loads(raw) if raw else {"heals": 0, "next_heal_at": 0.0}
    now = time.time()
    healable = [c for c in found.changes if c.action in ("change", "create")]
    if not healable:
        svc.redis.set(key, json.dumps({"heals": 0, "next_heal_at": 0.0}))
        return found
    if now < state["next_heal_at"]:
        return dataclasses.replace(found, heal_note=(
            f"It drifted again right after a re-apply; the next one is in "
            f"{state['next_heal_at'] - now:.0f}s (backoff)."))
    try:
        cluster.apply(desired, app=app.name, revision=found.sha,
                      default_namespace=app.namespace, owner=owner, adopt=policy.adopt)
    except ClusterError as exc:
        return dataclasses.replace(found, heal_note=f"Re-applying failed: {exc}")
    heals = int(state["heals"]) + 1
    delay = min(HEAL_FIRST_DELAY_S * 2 ** (heals - 1), HEAL_MAX_DELAY_S)
    svc.redis.set(key, json.dumps({"heals": heals, "next_heal_at": now + delay}))
    log.warning("drift of %s in %s healed: re-applied %s", app.name, owner.full_name,
                found.sha[:7])
    return dataclasses.replace(found, healed=tuple(c.ref for c in healable))


# --------------------------------------------------------------------------- reporting


def publish(svc: services.Services, event: MergedPullRequest, found: list[AppDrift]) -> None:
    """`coalmine/drift` on the deployed commit, the gauge, and the drift comment (posted once
    something drifted, then kept up to date, also when it is back in line)."""
    repo = event.repo
    state, line = status_line(found)
    outbox.post_status(svc, repo, event.number, event.merge_sha, STATUS_CONTEXT, state,
                       status.clip(line), None)
    fields = {f"{repo.full_name}\n{a.app}": a.drifted for a in found}
    previously = svc.redis.hmget(keys.DRIFT_COUNTS, list(fields)) if fields else []
    if fields:
        svc.redis.hset(keys.DRIFT_COUNTS, mapping=fields)
    drifted_before = any(int(v or 0) for v in previously)
    if not (drifted_before or any(a.drifted for a in found)):
        return
    try:
        comment.publish_body(svc.redis, svc.forge(repo), repo, event.number, MARKER,
                             render(found, event.merge_sha))
    except ForgeError as exc:
        log.warning("the drift comment on %s#%s was not posted: %s", repo.full_name,
                    event.number, exc)
