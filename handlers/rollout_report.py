"""Telling the PR about a rollout: its commit status and its section of the sticky comment.

Reports run after the rollout's lock is released, so two of them may overtake each other; each
carries the record's save number, and under the PR's report lock a report is only made when no
newer snapshot of the rollout was reported already.
"""

from __future__ import annotations

from bot import services
from bot.deployments import deployment_path
from bot.report import comment, status
from bot.rollout import engine
from bot.rollout import model as m
from bot.rollout.context import RolloutContext
from bot.rollout.store import RolloutRecord, RolloutStore, report_lock_key
from handlers import outbox


def report(svc: services.Services, key: str, record: RolloutRecord, post_status: bool, *,
           again: bool = False) -> None:
    """Post the snapshot's status and re-render its comment section, unless a newer snapshot of
    this rollout was reported already; the PR's report lock makes the check and the post one
    step. `again`: the sweep re-reports a final snapshot whose first report may have died
    between its claim and its post (`RolloutStore.claim_report`)."""
    ctx, state = record.context, record.state
    repo = ctx.repo
    store = RolloutStore(svc.redis)
    with store.locked(report_lock_key(repo.forge, repo.full_name, ctx.number)):
        if post_status and store.claim_report(key, state.revision, "status", record.seq,
                                                       again=again):
            posted = state.posted_status or engine.status(state)
            description = posted[1]
            if state.phase == "Superseded" and state.superseded_by:
                description = f"superseded by {ctx.superseded_by_pr or state.superseded_by[:7]}"
            outbox.post_status(svc, repo, ctx.number, state.revision,
                               status.context(ctx.app), posted[0],  # type: ignore[arg-type]
                               status.clip(description), _target_url(svc, ctx, state))
        if store.claim_report(key, state.revision, "section", record.seq, again=again):
            publish_section(svc, ctx, state)
    if engine.is_finished(state):
        # The status and comment are recorded in the outbox, which retries them on its own.
        store.mark_reported(key, state.revision, record.seq)


def _target_url(svc: services.Services, ctx: RolloutContext, state: m.RolloutState) -> str:
    return svc.settings.public_url + deployment_path(
        ctx.repo.forge, ctx.repo.full_name, state.revision, ctx.app)


def publish_section(svc: services.Services, ctx: RolloutContext, state: m.RolloutState) -> None:
    """Write the rollout into its app's section of the PR comment and re-render the comment."""
    repo, number = ctx.repo, ctx.number
    sections = comment.load_sections(svc.redis, repo, number)
    section = sections.get(ctx.app, {"app": ctx.app, "sha": state.revision})
    posted = state.posted_status or engine.status(state)
    section.update({
        "state": posted[0], "summary": posted[1], "rollout": state.to_dict(),
        "revert": ctx.revert, "traffic": ctx.traffic,
    })
    comment.save_section(svc.redis, repo, number, ctx.app, section)
    # People read the comment when the rollout waits for them or has ended: those edits go out
    # at once; progress in between is batched.
    urgent = engine.is_finished(state) or engine.waiting_on_people(state)
    outbox.post_comment(svc, repo, number, state.revision, urgent=urgent)
