"""TEMPORARY stand-in for the traffic-router package being built on branch `routers`; replaced
by it at merge. Only the types the model needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StringMatch:
    exact: str | None = None
    regex: str | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class HeaderMatch:
    name: str
    value: StringMatch


@dataclass(frozen=True)
class HeaderRoute:
    name: str
    matches: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class MirrorMatch:
    method: StringMatch | None = None
    path: StringMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class MirrorRoute:
    name: str
    matches: tuple[MirrorMatch, ...] = ()
    percentage: int | None = None


@dataclass(frozen=True)
class RouteState:
    weight: int
    header_routes: tuple[HeaderRoute, ...] = ()
    mirror_routes: tuple[MirrorRoute, ...] = ()


@dataclass(frozen=True)
class TrafficRouting:
    router: Any
    managed_routes: tuple[str, ...] = ()
    max_traffic_weight: int | None = None

    @property
    def name(self) -> str:
        return "stub"


ALL_CLASSES: tuple[type, ...] = (StringMatch, HeaderMatch, HeaderRoute, MirrorMatch,
                                 MirrorRoute, RouteState, TrafficRouting)


def parse_header_route(raw: Any, at: Any, managed_routes: tuple[str, ...]) -> HeaderRoute:
    return HeaderRoute(name=raw["name"])


def parse_mirror_route(raw: Any, at: Any, managed_routes: tuple[str, ...]) -> MirrorRoute:
    return MirrorRoute(name=raw["name"])


def parse_traffic_routing(raw: Any, at: Any, *, canary_service: str | None,
                          stable_service: str | None) -> TrafficRouting:
    return TrafficRouting(router=None, managed_routes=tuple(
        r["name"] for r in raw.get("managedRoutes") or []))


class RouterError(ValueError):
    pass


@dataclass(frozen=True)
class ObjectKey:
    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class RouterContext:
    rollout: str
    namespace: str
    canary_service: str
    stable_service: str


def reads(routing: Any, ctx: Any) -> tuple[ObjectKey, ...]:
    return ()


def desired(routing: Any, ctx: Any, live: Any, state: Any) -> list[dict[str, Any]]:
    return []


def describe(routing: Any, ctx: Any, live: Any) -> list[Any]:
    return []


def keep_live_traffic(routing: Any, ctx: Any, git_obj: Any, live_obj: Any) -> Any:
    return None
