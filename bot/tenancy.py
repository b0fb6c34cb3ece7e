"""Which served repository an event belongs to, pinned to the forge's stable repository id.

Names change (a rename, a transfer) and can be taken over (a deleted repository's name
re-created by someone else), ids do not. So the first time a served repository is seen through
the forge API, its id is pinned to the `repos:` entry that named it:

- a renamed repository keeps its entry's policy (its id is pinned), even when its new name
  matches no entry or a broader one;
- a different repository that later carries an exact entry's name is refused, until an
  operator removes the pin (`coalmine unpin-repo`), because a name alone proves nothing.

`served` is the webhook edge's cheap check on the payload (the name, or a pinned id); `resolve`
is the job's check on facts read from the forge API, and is the one that counts.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from bot import keys
from bot.config import Settings
from bot.policy import Policy
from bot.refs import RepoRef


def _pins_key(forge: str) -> str:
    return keys.repo_pins(forge)


def _names_key(forge: str) -> str:
    return keys.repo_names(forge)


@dataclass(frozen=True)
class Tenant:
    """A served repository as the forge API describes it, with the policy it deploys under."""

    forge: str
    repo_id: int
    full_name: str
    entry: str
    policy: Policy


def not_served_reason(forge: str, full_name: str) -> str:
    return (f"{forge} repository {full_name} is not served by this Coalmine "
            "(list it under repos: in the server config)")


def served(settings: Settings, redis: Redis, repo: RepoRef) -> tuple[bool, str]:
    """The edge's check: does an entry name the repository, or is its id pinned to one?"""
    if settings.entry_for(repo.forge, repo.full_name) is not None:
        return True, ""
    if repo.repo_id is not None:
        pinned = redis.hget(_pins_key(repo.forge), str(repo.repo_id))
        if pinned is not None and _text(pinned) in settings.repos:
            return True, ""
    return False, not_served_reason(repo.forge, repo.full_name)


def resolve(settings: Settings, redis: Redis, forge: str, repo_id: int,
            full_name: str) -> Tenant | str:
    """The tenant for a repository the forge API answered for, or why it is refused."""
    pins, names = _pins_key(forge), _names_key(forge)
    pinned = redis.hget(pins, str(repo_id))
    if pinned is not None and _text(pinned) in settings.repos:
        entry = _text(pinned)
        return Tenant(forge, repo_id, full_name, entry, settings.repos[entry])
    found = settings.entry_for(forge, full_name)
    if found is None:
        return not_served_reason(forge, full_name)
    if found.exact:
        holder = redis.hget(names, found.pattern)
        if holder is not None and _text(holder) != str(repo_id) and \
                _text(redis.hget(pins, _text(holder)) or b"") == found.key:
            return (f"{forge} repository {full_name} has id {repo_id}, but the entry "
                    f"{found.key!r} was first served to repository id {_text(holder)}: a "
                    "name alone does not carry a policy over (if the repository was re-created "
                    f"on purpose, run `coalmine unpin-repo {forge} {_text(holder)}`)")
        redis.hsetnx(names, found.pattern, str(repo_id))
    redis.hset(pins, str(repo_id), found.key)
    return Tenant(forge, repo_id, full_name, found.key, found.policy)


def unpin(redis: Redis, forge: str, repo_id: int) -> bool:
    """Forget a repository id's pin (an operator's decision); True when one was removed."""
    pinned = redis.hget(_pins_key(forge), str(repo_id))
    removed = bool(redis.hdel(_pins_key(forge), str(repo_id)))
    if pinned is not None:
        for name, holder in redis.hgetall(_names_key(forge)).items():
            if _text(holder) == str(repo_id):
                redis.hdel(_names_key(forge), _text(name))
    return removed


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
