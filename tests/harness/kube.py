"""A fake Kubernetes API server that the official Python client and the real kubectl accept.

It keeps objects in memory, speaks the REST paths, discovery documents, patch flavours and
Status errors of a real API server, and runs a tiny "controller" that makes workloads become
ready after `ready_delay` seconds, so rollout logic can be exercised over real sockets. Tests
steer it with `block(...)` (a pod template that never becomes ready), `fail_next(...)`,
`delay_next(...)` and `intercept_next(...)` (a concurrent change at a chosen moment), and read
back `requests`, `writes` and the stored objects.

Impersonation: a request's `Impersonate-User` / `Impersonate-Group` headers are honoured the
way the real API server does for a credential allowed to impersonate. The fake trusts the
bot's own credential with that right and, like kubectl over plain http which sends no token,
any caller when `require_token` is off: impersonation is never refused here, because what is
under test is that Coalmine sends the headers and that the impersonated user's rights decide.
Every write (create, update, patch, apply, delete, scale) is recorded in `writes` with the
user and groups it was made as. `restrict(user, namespaces=...)` is a minimal RBAC: that
impersonated user may write only in those namespaces (and cluster-scoped objects only when
allowed); anything else answers 403 Forbidden with the real server's Status body. Reads are
not restricted. DELETE honours `preconditions` (uid, resourceVersion) with a 409 Conflict.

Jobs (batch/v1) are run by the same controller: on creation the server defaults the selector
and the pod labels as a real one does (`batch.kubernetes.io/controller-uid`, `job-name`); after
`ready_delay` a pod exists and the Job finishes with the real conditions, `Complete` (after
`SuccessCriteriaMet`) unless `job_outcome(image, ...)` says its image fails (`Failed` with
`BackoffLimitExceeded`, after `FailureTarget`), cannot be pulled (the pod waits in
ImagePullBackOff, the Job stays active) or runs until deleted. Deleting a Job deletes its pods.

Applying a CustomResourceDefinition serves its kind at every served version, preferred version
first in discovery as a real server orders them; `install_router_crds()` installs the traffic
routers' CRDs kept in tests/harness/crds/ (the `router_crds` fixture does it for a test).

Dry-run: a server-side apply with `dryRun=All` runs every check and answers what would be
stored, storing nothing (its write is recorded with `dry_run=True`); `fieldValidation=Strict`
refuses fields the fake's small schema (STRICT_FIELDS: the workload, pod and container fields,
ConfigMaps, Secrets, Services) does not know, with the real server's 400 "strict decoding error".
Other verbs refuse `dryRun`.

Deliberate simplifications: no watch history beyond a polling stream, no field
conflicts on server-side apply (every apply behaves as if forced), no garbage collection by
owner references, no admission beyond a few validations that real servers also enforce.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, urlsplit

import yaml

Obj = dict[str, Any]
TemplatePredicate = Callable[[Obj], bool]

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4-fake",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# CustomResourceDefinitions of the traffic routers' kinds (Istio, Gateway API, SMI), as the
# routers' own installs create them; NGINX needs none (networking.k8s.io Ingress is built in).
ROUTER_CRDS_DIR = Path(__file__).parent / "crds"
NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class ResourceType:
    """One REST resource of one group version, as discovery announces it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`deployments.apps` or `configmaps`, the way Status messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _t(api_version: str, kind: str, plural: str, namespaced: bool = True, short=(), sub=()):
    group, _, version = api_version.rpartition("/")
    return ResourceType(group, version, kind, plural, namespaced, tuple(short), tuple(sub))


BUILTIN_TYPES = [
    _t("v1", "Namespace", "namespaces", False, ["ns"], ["status"]),
    _t("v1", "Service", "services", True, ["svc"], ["status"]),
    _t("v1", "ConfigMap", "configmaps", True, ["cm"]),
    _t("v1", "Secret", "secrets"),
    _t("v1", "Pod", "pods", True, ["po"], ["status"]),
    _t("v1", "ServiceAccount", "serviceaccounts", True, ["sa"]),
    _t("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True, ["pvc"], ["status"]),
    _t("v1", "Event", "events", True, ["ev"]),
    _t("apps/v1", "Deployment", "deployments", True, ["deploy"], ["status", "scale"]),
    _t("apps/v1", "StatefulSet", "statefulsets", True, ["sts"], ["status", "scale"]),
    _t("apps/v1", "DaemonSet", "daemonsets", True, ["ds"], ["status"]),
    _t("apps/v1", "ReplicaSet", "replicasets", True, ["rs"], ["status", "scale"]),
    _t(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        False,
        ["crd", "crds"],
        ["status"],
    ),
    _t("networking.k8s.io/v1", "Ingress", "ingresses", True, ["ing"], ["status"]),
    _t("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True, ["netpol"]),
    _t("rbac.authorization.k8s.io/v1", "Role", "roles"),
    _t("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    _t("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    _t("rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False),
    _t("batch/v1", "Job", "jobs", True, (), ["status"]),
    _t("batch/v1", "CronJob", "cronjobs", True, ["cj"], ["status"]),
    _t("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ["pdb"], ["status"]),
    _t(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        True,
        ["hpa"],
        ["status"],
    ),
]


class ApiError(Exception):
    """Carries a Kubernetes `Status` error to the HTTP layer."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def _not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{rt.qualified} "{name}" not found',
        {"name": name, "group": rt.group, "kind": rt.plural},
    )


def _invalid(rt: ResourceType, name: str, causes: list[str]) -> ApiError:
    """422 Invalid; each cause reads "<field>: <what is wrong>" and is also listed in
    `details.causes`, which is what kubectl prints."""
    listed = []
    for cause in causes:
        field_path, _, message = cause.partition(": ")
        reason = "FieldValueRequired" if message.startswith("Required") else "FieldValueInvalid"
        listed.append({"reason": reason, "message": message, "field": field_path})
    return ApiError(
        422,
        "Invalid",
        f'{rt.kind}.{rt.group or "core"} "{name}" is invalid: ' + ", ".join(causes),
        {"name": name, "group": rt.group, "kind": rt.kind, "causes": listed},
    )


_KUBE_VERSION = re.compile(r"^v([1-9][0-9]*)(?:(alpha|beta)([1-9][0-9]*))?$")
_STAGES = {"alpha": 2, "beta": 1, None: 0}


def version_priority(version: str) -> tuple[int, int, int, int, str]:
    """Sort key putting API versions in the order discovery lists them: GA before beta before
    alpha, higher numbers first, then anything not shaped like a Kubernetes version by name
    (v2, v1, v2beta1, v1beta2, v1beta1, v1alpha1, foo). The first one is the preferred version."""
    match = _KUBE_VERSION.match(version)
    if match is None:
        return (1, 0, 0, 0, version)
    major, stage, minor = match.groups()
    return (0, _STAGES[stage], -int(major), -int(minor or 0), "")


def _validate_crd(rt: ResourceType, name: str, spec: Obj) -> None:
    """Two of the API server's CRD rules: the name is `<plural>.<group>`, and exactly one
    version is the storage version."""
    causes = []
    plural, group = (spec.get("names") or {}).get("plural", ""), spec.get("group", "")
    if name != f"{plural}.{group}":
        causes.append(f'metadata.name: Invalid value: "{name}": must be '
                      'spec.names.plural+"."+spec.group')
    versions = spec.get("versions") or []
    if sum(1 for v in versions if v.get("storage")) != 1:
        causes.append(f"spec.versions: Invalid value: {json.dumps(versions)[:80]}: must have "
                      "exactly one version marked as storage version")
    if causes:
        raise _invalid(rt, name, causes)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- label selectors --------------------------------------------------------------------------

_SET_RE = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    """Evaluates a label selector string (equality- and set-based) against a label map."""
    for requirement in _split_selector(selector):
        if match := _SET_RE.match(requirement):
            key, op, values = match.groups()
            allowed = {value.strip() for value in values.split(",") if value.strip()}
            if op == "in" and labels.get(key) not in allowed:
                return False
            if op == "notin" and key in labels and labels[key] in allowed:
                return False
        elif "!=" in requirement:
            key, value = (part.strip() for part in requirement.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in requirement:
            key, value = (part.strip() for part in re.split("==?", requirement, maxsplit=1))
            if labels.get(key) != value:
                return False
        elif requirement.startswith("!"):
            if requirement[1:].strip() in labels:
                return False
        elif requirement not in labels:
            return False
    return True


def _field_selector_matches(selector: str, obj: Obj) -> bool:
    meta = obj.get("metadata", {})
    fields = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace", "")}
    for requirement in _split_selector(selector):
        negate = "!=" in requirement
        key, value = (p.strip() for p in re.split("!=|==?", requirement, maxsplit=1))
        if key not in fields:
            raise ApiError(400, "BadRequest", f'field label not supported: "{key}"')
        if (fields[key] == value) == negate:
            return False
    return True


# --- merging and patching ---------------------------------------------------------------------


def _is_keyed_list(*lists: Any) -> bool:
    """Lists of objects carrying `name` merge item by item (containers, env, ports, volumes)."""
    return all(
        isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)
        for items in lists
    ) and any(lists)


def _merge_keyed(live: list, patch: list, merge_item: Callable[[Any, Any], Any]) -> list:
    result = [copy.deepcopy(item) for item in live]
    index = {item["name"]: pos for pos, item in enumerate(result)}
    for item in patch:
        if item["name"] in index:
            result[index[item["name"]]] = merge_item(result[index[item["name"]]], item)
        else:
            result.append(copy.deepcopy(item))
    return result


def apply_merge(live: Any, applied: Any) -> Any:
    """Server-side apply approximation: the applied config deep-merged over the live object."""
    if isinstance(live, dict) and isinstance(applied, dict):
        merged = copy.deepcopy(live)
        for key, value in applied.items():
            merged[key] = apply_merge(live[key], value) if key in live else copy.deepcopy(value)
        return merged
    if _is_keyed_list(live, applied):
        return _merge_keyed(live, applied, apply_merge)
    return copy.deepcopy(applied)


def merge_patch(live: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def strategic_merge_patch(live: Any, patch: Any) -> Any:
    """Strategic merge, approximated: maps merge, null deletes, `name`-keyed lists merge."""
    if isinstance(live, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(live)
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = strategic_merge_patch(merged[key], value)
            else:
                merged[key] = strategic_merge_patch(None, value)
        return merged
    if isinstance(patch, dict):
        return {k: v for k, v in copy.deepcopy(patch).items() if v is not None}
    if _is_keyed_list(live, patch):
        return _merge_keyed(live, patch, strategic_merge_patch)
    return copy.deepcopy(patch)


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(live: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902 JSON patch: add, remove, replace, test, copy, move."""
    doc = copy.deepcopy(live)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def read(path: str) -> Any:
        node, key = parent(path)
        return node[int(key)] if isinstance(node, list) else node[key]

    def remove(path: str) -> Any:
        node, key = parent(path)
        return node.pop(int(key)) if isinstance(node, list) else node.pop(key)

    def add(path: str, value: Any) -> None:
        node, key = parent(path)
        if isinstance(node, list):
            node.insert(len(node) if key == "-" else int(key), value)
        else:
            node[key] = value

    try:
        for op in operations:
            kind, path = op["op"], op["path"]
            if kind == "add":
                add(path, copy.deepcopy(op["value"]))
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                remove(path)
                add(path, copy.deepcopy(op["value"]))
            elif kind == "test" and read(path) != op["value"]:
                raise ApiError(422, "Invalid", f"the test operation on {path} failed")
            elif kind == "copy":
                add(path, copy.deepcopy(read(op["from"])))
            elif kind == "move":
                add(path, remove(op["from"]))
    except (KeyError, IndexError, ValueError, TypeError) as err:
        raise ApiError(422, "Invalid", f"the JSON patch could not be applied: {err!r}") from err
    return doc


# --- managed fields (fieldsV1) ----------------------------------------------------------------

FieldSet = dict[str, Any]
_SYSTEM_META = {
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
}


def _item_key(item: Obj) -> str:
    return "k:" + json.dumps({"name": item["name"]}, separators=(",", ":"))


def field_set(value: Any) -> FieldSet:
    """The fields a config sets, in fieldsV1 notation; `name`-keyed lists are associative."""
    if isinstance(value, dict):
        return {f"f:{key}": field_set(child) for key, child in value.items()}
    if _is_keyed_list(value):
        return {_item_key(item): {".": {}, **field_set(item)} for item in value}
    return {}


def _applied_fields(config: Obj) -> FieldSet:
    fields = field_set({k: v for k, v in config.items() if k not in ("apiVersion", "kind")})
    meta = fields.get("f:metadata", {})
    for name in ("name", "namespace", *_SYSTEM_META):
        meta.pop(f"f:{name}", None)
    if not meta:
        fields.pop("f:metadata", None)
    return fields


def changed_fields(old: Any, new: Any) -> FieldSet:
    """The fields an update changed, so the updating manager can be recorded as their owner."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = {}
        for key, value in new.items():
            if key not in old:
                changed[f"f:{key}"] = field_set(value)
            elif old[key] != value:
                changed[f"f:{key}"] = changed_fields(old[key], value)
        return changed
    if _is_keyed_list(old, new):
        before = {item["name"]: item for item in old}
        return {
            _item_key(item): {".": {}, **changed_fields(before.get(item["name"], {}), item)}
            for item in new
            if before.get(item["name"]) != item
        }
    return {}


def _subtract(owned: FieldSet, taken: FieldSet) -> FieldSet:
    result = {}
    for key, child in owned.items():
        if key not in taken or (child and not taken[key]):
            result[key] = child  # owning an emptied field does not take its old children
        elif child:
            rest = _subtract(child, taken[key])
            if rest:
                result[key] = rest
    return result


def _union(a: FieldSet, b: FieldSet) -> FieldSet:
    result = copy.deepcopy(a)
    for key, child in b.items():
        result[key] = _union(result[key], child) if key in result else copy.deepcopy(child)
    return result


def _locate(container: Any, key: str) -> tuple[Any, Any] | None:
    """Finds the live child a fieldsV1 key names: (handle for removal, value) or None."""
    if key.startswith("f:") and isinstance(container, dict) and key[2:] in container:
        return key[2:], container[key[2:]]
    if key.startswith("k:") and isinstance(container, list):
        wanted = json.loads(key[2:])
        for pos, item in enumerate(container):
            if isinstance(item, dict) and all(item.get(k) == v for k, v in wanted.items()):
                return pos, item
    return None


def remove_released(live: Any, released: FieldSet, kept: FieldSet) -> None:
    """Deletes from `live` the fields a manager stopped applying that nobody else owns.

    Owned list items and leaves go at once; a map goes only when nothing is left in it, so
    server defaults and other managers' fields under it survive.
    """
    for key, children in released.items():
        found = _locate(live, key) if key != "." else None
        if found is None:
            continue
        handle, value = found
        if key in kept:
            if children:
                remove_released(value, children, kept[key])
        elif key.startswith("k:") or not children:
            del live[handle]
        else:
            remove_released(value, children, {})
            if not value:
                del live[handle]


# --- the server -------------------------------------------------------------------------------


class Request(NamedTuple):
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    user: str | None = None  # the impersonated user, None for the credential's own identity
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Write:
    """One write that reached the API (allowed or not), and whom it was made as."""

    verb: str  # create, update, patch, delete, deletecollection (RBAC's verbs)
    resource: str  # "configmaps", "deployments/scale", as RBAC names it
    namespace: str | None
    name: str | None
    user: str | None  # the impersonated user; None when the request impersonated no one
    groups: tuple[str, ...]
    allowed: bool
    dry_run: bool = False  # dryRun=All: checked and answered, never stored

    @property
    def target(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource} {where}{self.name or '*'}"


@dataclass(frozen=True)
class _Grant:
    """What one restricted user may write: `namespaces`, and cluster-scoped objects or not."""

    namespaces: frozenset[str]
    cluster_scoped: bool

    def allows(self, namespaced: bool, namespace: str | None) -> bool:
        return namespace in self.namespaces if namespaced else self.cluster_scoped


@dataclass
class _Fault:
    remaining: int
    method: str | None
    path_contains: str | None
    status: int = 500
    delay_s: float = 0.0
    action: Callable[[], None] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.method is None or self.method.upper() == method)
            and (self.path_contains is None or self.path_contains in path)
        )


@dataclass
class _Progress:
    """Controller bookkeeping for one workload: when its spec last changed."""

    generation: int
    changed_at: float
    template_hash: str
    previous_hash: str | None = None


@dataclass
class _Route:
    rt: ResourceType
    namespace: str | None
    name: str | None = None
    subresource: str | None = None


class FakeKube:
    """In-memory Kubernetes API server on 127.0.0.1 with a simulated workload controller."""

    def __init__(
        self,
        ready_delay: float = 0.2,
        daemonset_nodes: int = 2,
        token: str | None = None,
        require_token: bool = False,
    ):
        """`require_token` answers 401 to requests without the bearer token; kubectl never
        sends a token over plain http, so only Python-client tests can turn it on."""
        self.ready_delay = ready_delay
        self.require_token = require_token
        self.daemonset_nodes = daemonset_nodes
        self.token = token or f"fake-{uuid.uuid4().hex}"
        self.requests: list[Request] = []
        self.writes: list[Write] = []
        self.stored: list[Obj] = []  # every version an object was stored with, oldest first
        self._grants: dict[str, _Grant] = {}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._store: dict[tuple[str, str, str, str], Obj] = {}
        self._progress: dict[tuple[str, str, str, str], _Progress] = {}
        self._blocks: list[TemplatePredicate] = []
        self._job_outcomes: dict[str, str] = {}  # image → Failed | ImagePullBackOff | Running
        self._faults: list[_Fault] = []
        self._rv = itertools.count(1)
        self._last_rv = 0
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        for rt in BUILTIN_TYPES:
            self._types[(rt.group, rt.version, rt.plural)] = rt
        namespaces = self._type("", "v1", "namespaces")
        with self._lock:
            for name in SYSTEM_NAMESPACES:
                self._write(
                    namespaces, None, {"metadata": {"name": name}}, None, ("Update", "fake")
                )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._threads = [
            threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="fake-kube-http",
                daemon=True,
            ),
            threading.Thread(target=self._control_loop, name="fake-kube-controller", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._changed.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path = Path(path)
        path.write_text(yaml.safe_dump(config))
        return path

    # -- test controls -----------------------------------------------------------------------

    def block(self, predicate: TemplatePredicate) -> None:
        """Pod templates for which `predicate(template)` is true never become ready."""
        with self._lock:
            self._blocks.append(predicate)

    def block_image(self, image: str) -> None:
        def uses_image(template: Obj) -> bool:
            spec = template.get("spec", {})
            containers = spec.get("containers", []) + spec.get("initContainers", [])
            return any(container.get("image") == image for container in containers)

        self.block(uses_image)

    def job_outcome(self, image: str, outcome: str) -> None:
        """Jobs running `image` end `Failed`, wait in `ImagePullBackOff`, or stay `Running`
        (any other Job completes)."""
        assert outcome in ("Failed", "ImagePullBackOff", "Running", "Complete"), outcome
        with self._lock:
            self._job_outcomes[image] = outcome

    def unblock_all(self) -> None:
        with self._lock:
            self._blocks.clear()

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next `n` matching requests are answered with a Status error of code `status`."""
        with self._lock:
            self._faults.append(_Fault(n, method, path_contains, status=status))

    def delay_next(
        self,
        n: int = 1,
        seconds: float = 1.0,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """The next `n` matching requests are answered only after `seconds`."""
        with self._lock:
            self._faults.append(_Fault(n, method, path_contains, status=0, delay_s=seconds))

    def intercept_next(
        self,
        action: Callable[[], None],
        n: int = 1,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Runs `action()` just before each of the next `n` matching requests is answered, as
        if another client had acted at that moment (e.g. between a list and a delete)."""
        with self._lock:
            self._faults.append(_Fault(n, method, path_contains, status=0, action=action))

    def restrict(
        self, user: str, namespaces: set[str] | frozenset[str], cluster_scoped: bool = False
    ) -> None:
        """Minimal RBAC: writes impersonating `user` are allowed only in `namespaces` (and on
        cluster-scoped objects only with `cluster_scoped`); others answer 403 Forbidden."""
        with self._lock:
            self._grants[user] = _Grant(frozenset(namespaces), cluster_scoped)

    def versions(self, kind: str, namespace: str | None, name: str) -> list[Obj]:
        """Every version the object was stored with (spec changes, not status), oldest first."""
        with self._lock:
            return [copy.deepcopy(obj) for obj in self.stored if obj["kind"] == kind
                    and obj["metadata"].get("namespace") == namespace
                    and obj["metadata"]["name"] == name]

    def writes_by(self, user: str | None) -> list[Write]:
        with self._lock:
            return [write for write in self.writes if write.user == user]

    def objects(self, kind: str | None = None, namespace: str | None = None) -> list[Obj]:
        with self._lock:
            return [
                copy.deepcopy(obj)
                for obj in self._store.values()
                if (kind is None or obj["kind"] == kind)
                and (namespace is None or obj["metadata"].get("namespace") == namespace)
            ]

    def get_object(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        with self._lock:
            rt = self._type_for_kind(api_version, kind)
            obj = self._store.get(self._key(rt, namespace, name)) if rt else None
            return copy.deepcopy(obj) if obj else None

    def install_router_crds(self) -> list[str]:
        """Creates the CRDs of `ROUTER_CRDS_DIR` as a cluster with those routers installed has
        them; returns their names. Their kinds are served from then on, at every version."""
        crds = [doc for path in sorted(ROUTER_CRDS_DIR.glob("*.yaml"))
                for doc in yaml.safe_load_all(path.read_text()) if doc]
        return [self.put_object(crd)["metadata"]["name"] for crd in crds]

    def put_object(self, obj: Obj) -> Obj:
        """Stores `obj` directly (test setup), as a create or an update without preconditions."""
        with self._lock:
            rt = self._type_for_kind(obj["apiVersion"], obj["kind"])
            if rt is None:
                raise KeyError(f"unknown kind {obj['apiVersion']} {obj['kind']}")
            meta = obj["metadata"]
            key = self._key(rt, meta.get("namespace"), meta["name"])
            return copy.deepcopy(
                self._write(rt, self._store.get(key), obj, None, ("Update", "test"))
            )

    def set_status(
        self, api_version: str, kind: str, namespace: str | None, name: str, status: Obj
    ):
        """Replaces an object's status, as a controller outside the fake would."""
        with self._lock:
            rt = self._type_for_kind(api_version, kind)
            key = self._key(rt, namespace, name)
            if key not in self._store:
                raise KeyError(f"{kind} {namespace}/{name} does not exist")
            self._write_status(rt, key, status)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Blocks until `predicate()` (evaluated under the store lock) holds or time runs out."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    # -- resource types ----------------------------------------------------------------------

    def _type(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self._types.get((group, version, plural))
        if rt is None:
            gv = f"{group}/{version}" if group else version
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource ({gv} {plural})"
            )
        return rt

    def _type_for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        return next(
            (
                rt
                for rt in self._types.values()
                if rt.api_version == api_version and rt.kind == kind
            ),
            None,
        )

    def _group_versions(self) -> dict[str, list[str]]:
        """Each group's served versions, preferred first (Kubernetes' version priority)."""
        groups: dict[str, list[str]] = {}
        for rt in self._types.values():
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return {group: sorted(versions, key=version_priority) for group, versions in groups.items()}

    def _register_crd(self, crd: Obj) -> None:
        spec = crd.get("spec", {})
        names, group = spec.get("names", {}), spec.get("group", "")
        self._unregister_group_kind(group, names.get("plural", ""))
        for version in spec.get("versions", []):
            if not version.get("served", True):
                continue
            subresources = tuple(sorted(version.get("subresources", {}) or {}))
            rt = ResourceType(
                group,
                version["name"],
                names.get("kind", ""),
                names.get("plural", ""),
                spec.get("scope", "Namespaced") == "Namespaced",
                tuple(names.get("shortNames", [])),
                subresources,
            )
            self._types[(rt.group, rt.version, rt.plural)] = rt

    def _unregister_group_kind(self, group: str, plural: str) -> None:
        for key in [k for k in self._types if k[0] == group and k[2] == plural]:
            del self._types[key]

    # -- storage -----------------------------------------------------------------------------

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (rt.group, rt.plural, (namespace or "") if rt.namespaced else "", name)

    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _view(self, rt: ResourceType, obj: Obj) -> Obj:
        """The stored object as served at the requested version."""
        view = copy.deepcopy(obj)
        view["apiVersion"] = rt.api_version
        return view

    def _write(
        self,
        rt: ResourceType,
        old: Obj | None,
        new: Obj,
        namespace: str | None,
        manager: tuple[str, str],
        *,
        applied: Obj | None = None,
        status_write: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """Validates, fills system metadata and stores `new`; a no-op keeps the old version.
        `dry_run` answers what would be stored and stores nothing."""
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = rt.api_version, rt.kind
        meta = new.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName") and old is None:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name", "")
        if rt.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        self._validate(rt, old, new)
        if old is not None:
            for system in ("uid", "creationTimestamp", "generation", "resourceVersion"):
                meta[system] = old["metadata"].get(system)
            if "status" in rt.subresources and not status_write:
                new.pop("status", None)
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
            if self._spec_of(old) != self._spec_of(new):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        else:
            if rt.namespaced and not self._store.get(("", "namespaces", "", meta["namespace"])):
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{meta["namespace"]}" not found',
                    {"name": meta["namespace"], "kind": "namespaces"},
                )
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            if "status" in rt.subresources and not status_write:
                new.pop("status", None)
        self._default(rt, new)
        meta["managedFields"] = self._managed_fields(rt, old, new, manager, applied, status_write)
        if old is not None and _without_times(old) == _without_times(new):
            return old
        if dry_run:
            return new  # resourceVersion stays the live one's (none for a create)
        meta["resourceVersion"] = self._next_rv()
        key = self._key(rt, meta.get("namespace"), name)
        self._store[key] = new
        self.stored.append(copy.deepcopy(new))
        if rt.kind in WORKLOAD_KINDS or rt.kind == "Job":
            self._note_progress(key, new)
        if rt.kind == "CustomResourceDefinition":
            self._register_crd(new)
        self._changed.notify_all()
        return new

    @staticmethod
    def _spec_of(obj: Obj) -> Obj:
        return {
            k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")
        }

    def _validate(self, rt: ResourceType, old: Obj | None, new: Obj) -> None:
        name = new["metadata"].get("name", "")
        if not name:
            raise _invalid(
                rt, name, ["metadata.name: Required value: name or generateName is required"]
            )
        if len(name) > 253 or not NAME_RE.match(name):
            cause = (
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain '
                "must consist of lower case alphanumeric characters, '-' or '.'"
            )
            raise _invalid(rt, name, [cause])
        if rt.kind in WORKLOAD_KINDS and rt.group == "apps":
            spec = new.get("spec", {})
            selector = spec.get("selector", {}).get("matchLabels")
            labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
            if not selector:
                raise _invalid(rt, name, ["spec.selector: Required value"])
            if any(labels.get(k) != v for k, v in selector.items()):
                cause = (
                    f"spec.template.metadata.labels: Invalid value: {json.dumps(labels)}: "
                    "`selector` does not match template `labels`"
                )
                raise _invalid(rt, name, [cause])
            if old is not None and old.get("spec", {}).get("selector") != spec.get("selector"):
                raise _invalid(rt, name, ["spec.selector: Invalid value: field is immutable"])
        if rt.kind == "CustomResourceDefinition":
            _validate_crd(rt, name, new.get("spec") or {})

    def _default(self, rt: ResourceType, obj: Obj) -> None:
        """Server-side defaults, filled on every write like the real API server does."""
        spec = obj.setdefault("spec", {}) if rt.kind in (*WORKLOAD_KINDS, "Namespace") else None
        if rt.kind == "Namespace":
            spec.setdefault("finalizers", ["kubernetes"])
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
            obj["status"] = {"phase": "Active"}
        elif rt.kind == "Deployment":
            spec.setdefault("replicas", 1)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("revisionHistoryLimit", 10)
        elif rt.kind == "StatefulSet":
            spec.setdefault("replicas", 1)
            spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        elif rt.kind == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
        elif rt.kind == "Job":
            self._default_job(obj)
        elif rt.kind == "CustomResourceDefinition":
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [
                    v["name"] for v in obj["spec"].get("versions", []) if v.get("storage")
                ],
                "conditions": [
                    {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                    {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
                ],
            }

    def _managed_fields(
        self,
        rt: ResourceType,
        old: Obj | None,
        new: Obj,
        manager: tuple[str, str],
        applied: Obj | None,
        status_write: bool,
    ) -> list[Obj]:
        operation, name = manager
        entries = [
            copy.deepcopy(e) for e in (old or {}).get("metadata", {}).get("managedFields", [])
        ]
        if applied is not None:
            taken = _applied_fields(applied)
        else:
            before = {k: v for k, v in (old or {}).items() if k != "metadata"}
            after = {k: v for k, v in new.items() if k != "metadata"}
            taken = changed_fields(before, after)
            labels_changed = changed_fields(
                {k: v for k, v in (old or {}).get("metadata", {}).items() if k not in _SYSTEM_META},
                {k: v for k, v in new["metadata"].items() if k not in _SYSTEM_META},
            )
            for system in ("name", "namespace", "generateName"):
                labels_changed.pop(f"f:{system}", None)
            if labels_changed:
                taken["f:metadata"] = labels_changed
            taken.pop("f:apiVersion", None)
            taken.pop("f:kind", None)
        subresource = "status" if status_write else None
        mine = next(
            (
                e
                for e in entries
                if e["manager"] == name
                and e["operation"] == operation
                and e.get("subresource") == subresource
            ),
            None,
        )
        for entry in entries:
            if entry is not mine:
                entry["fieldsV1"] = _subtract(entry.get("fieldsV1", {}), taken)
        if mine is None and not taken:
            return [e for e in entries if e.get("fieldsV1")]
        if mine is None:
            mine = {
                "manager": name,
                "operation": operation,
                "apiVersion": rt.api_version,
                "fieldsType": "FieldsV1",
            }
            if subresource:
                mine["subresource"] = subresource
            entries.append(mine)
        previous = mine.get("fieldsV1", {})
        mine["fieldsV1"] = taken if applied is not None else _union(previous, taken)
        if mine["fieldsV1"] != previous:
            mine["time"] = _now()
        mine.setdefault("time", _now())
        return [e for e in entries if e.get("fieldsV1")]

    def _delete(self, rt: ResourceType, key: tuple[str, str, str, str]) -> Obj:
        obj = self._store.pop(key)
        self._progress.pop(key, None)
        if rt.kind == "Job":  # the garbage collector's part: the Job's pods go with it
            for other in [k for k in self._store if k[:3] == ("", "pods", key[2])
                          and self._store[k]["metadata"].get("labels", {}).get(
                              "batch.kubernetes.io/job-name") == key[3]]:
                self._store.pop(other)
        if rt.kind == "Namespace":
            for other in [
                k for k, o in self._store.items() if o["metadata"].get("namespace") == key[3]
            ]:
                self._store.pop(other)
                self._progress.pop(other, None)
        if rt.kind == "CustomResourceDefinition":
            spec = obj.get("spec", {})
            group, plural = spec.get("group", ""), spec.get("names", {}).get("plural", "")
            self._unregister_group_kind(group, plural)
            for other in [k for k in self._store if k[0] == group and k[1] == plural]:
                self._store.pop(other)
        self._next_rv()
        self._changed.notify_all()
        return obj

    # -- REST verbs --------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        content_type: str,
        body: bytes,
        *,
        user: str | None = None,
        groups: tuple[str, ...] = (),
    ) -> tuple[int, Obj]:
        """Answers one API request as `user` (impersonated); the HTTP handler only moves bytes."""
        with self._lock:
            if (document := self._discovery(path)) is not None:
                return 200, document
            route = self._route(path)
            rt = route.rt
            dry_run = query.get("dryRun") == "All"
            self._authorize_write(method, route, user, groups, dry_run)
            if dry_run and not (
                method == "PATCH" and content_type.startswith("application/apply-patch")
            ):
                raise ApiError(400, "BadRequest", "the fake supports dryRun only on apply")
            if route.name is None:
                if method == "GET":
                    return 200, self._list(route, query)
                if method == "POST":
                    obj = self._parse(body, content_type)
                    manager = ("Update", query.get("fieldManager", "unknown"))
                    meta = obj.get("metadata", {})
                    self._check_body_namespace(route, meta)
                    key = self._key(
                        rt, route.namespace or meta.get("namespace"), meta.get("name", "")
                    )
                    if meta.get("name") and key in self._store:
                        raise ApiError(
                            409,
                            "AlreadyExists",
                            f'{rt.qualified} "{meta["name"]}" already exists',
                            {"name": meta["name"], "group": rt.group, "kind": rt.plural},
                        )
                    return 201, self._view(rt, self._write(rt, None, obj, route.namespace, manager))
                if method == "DELETE":
                    return 200, self._delete_collection(route, query)
                raise ApiError(
                    405, "MethodNotAllowed", f"{method} is not supported on a collection"
                )
            key = self._key(rt, route.namespace, route.name)
            live = self._store.get(key)
            if route.subresource == "scale":
                return self._scale(route, key, live, method, content_type, body)
            if method == "GET":
                if live is None:
                    raise _not_found(rt, route.name)
                return 200, self._view(rt, live)
            if method == "DELETE":
                if live is None:
                    raise _not_found(rt, route.name)
                self._check_delete_preconditions(rt, route.name, live, body)
                deleted = self._delete(rt, key)
                return 200, {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": route.name,
                        "group": rt.group,
                        "kind": rt.plural,
                        "uid": deleted["metadata"]["uid"],
                    },
                }
            status_write = route.subresource == "status"
            if method == "PUT":
                return self._replace(
                    route, key, live, self._parse(body, content_type), query, status_write
                )
            if method == "PATCH":
                return self._patch(route, key, live, content_type, body, query, status_write)
            raise ApiError(405, "MethodNotAllowed", f"{method} is not supported")

    def _authorize_write(
        self,
        method: str,
        route: _Route,
        user: str | None,
        groups: tuple[str, ...],
        dry_run: bool = False,
    ) -> None:
        """Records a write and answers 403 like the real RBAC authorizer when `user` (as
        impersonated) has no grant for where it writes. Reads are not recorded."""
        verb = WRITE_VERBS.get(method)
        if verb is None:
            return
        if verb == "delete" and route.name is None:
            verb = "deletecollection"
        rt = route.rt
        resource = f"{rt.plural}/{route.subresource}" if route.subresource else rt.plural
        namespace = route.namespace if rt.namespaced else None
        grant = self._grants.get(user) if user is not None else None
        allowed = grant is None or grant.allows(rt.namespaced, namespace)
        self.writes.append(
            Write(verb, resource, namespace, route.name, user, groups, allowed, dry_run)
        )
        if allowed:
            return
        subject = f'{rt.qualified} "{route.name}"' if route.name else rt.qualified
        scope = f'in the namespace "{namespace}"' if rt.namespaced else "at the cluster scope"
        details: Obj = {"kind": rt.plural}
        if route.name:
            details["name"] = route.name
        if rt.group:
            details["group"] = rt.group
        raise ApiError(
            403,
            "Forbidden",
            f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{rt.group}" {scope}',
            details,
        )

    @staticmethod
    def _check_delete_preconditions(rt: ResourceType, name: str, live: Obj, body: bytes) -> None:
        """DeleteOptions.preconditions: delete only the very object (and version) named."""
        try:
            options = json.loads(body.decode() or "{}")
        except ValueError as err:
            raise ApiError(
                400, "BadRequest", f"the request body could not be decoded: {err}"
            ) from err
        wanted = options.get("preconditions") if isinstance(options, dict) else None
        wanted = wanted if isinstance(wanted, dict) else {}
        meta = live["metadata"]
        for field_name, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
            expected = wanted.get(key)
            if expected and expected != meta.get(key):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {rt.qualified} "{name}": Precondition '
                    f"failed: {field_name} in precondition: {expected}, {field_name} in object "
                    f"meta: {meta.get(key)}",
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )

    def _check_body_namespace(self, route: _Route, meta: Obj) -> None:
        body_ns = meta.get("namespace")
        if route.rt.namespaced and route.namespace and body_ns and body_ns != route.namespace:
            raise ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the "
                "request",
            )

    def _check_identity(self, route: _Route, obj: Obj) -> None:
        name = obj.get("metadata", {}).get("name")
        if name and name != route.name:
            raise ApiError(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        self._check_body_namespace(route, obj.get("metadata", {}))
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if (kind and kind != route.rt.kind) or (
            api_version and api_version != route.rt.api_version
        ):
            raise ApiError(
                400,
                "BadRequest",
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({route.rt.api_version}) or kind {kind} is not {route.rt.kind}",
            )

    def _replace(self, route, key, live, obj, query, status_write) -> tuple[int, Obj]:
        rt = route.rt
        if live is None:
            raise _not_found(rt, route.name)
        self._check_identity(route, obj)
        rv = obj.get("metadata", {}).get("resourceVersion")
        if not rv:
            raise _invalid(
                rt,
                route.name,
                ["metadata.resourceVersion: Invalid value: 0: must be specified for an update"],
            )
        self._check_precondition(rt, route.name, live, rv)
        if status_write:
            obj = {**copy.deepcopy(live), "status": obj.get("status", {})}
        manager = ("Update", query.get("fieldManager", "unknown"))
        stored = self._write(rt, live, obj, route.namespace, manager, status_write=status_write)
        return 200, self._view(rt, stored)

    @staticmethod
    def _check_precondition(rt: ResourceType, name: str, live: Obj, rv: str | None) -> None:
        if rv and rv != live["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                {"name": name, "group": rt.group, "kind": rt.plural},
            )

    def _patch(self, route, key, live, content_type, body, query, status_write) -> tuple[int, Obj]:
        rt = route.rt
        flavour = content_type.split(";")[0].strip()
        if flavour == "application/apply-patch+yaml":
            applied = self._parse(body, "yaml")
            if not isinstance(applied, dict):
                raise ApiError(400, "BadRequest", "apply patch must be an object")
            self._check_identity(route, applied)
            if not applied.get("apiVersion") or not applied.get("kind"):
                raise ApiError(
                    400, "BadRequest", "apiVersion and kind must be set in an apply patch"
                )
            manager_name = query.get("fieldManager")
            if not manager_name:
                raise ApiError(
                    422, "Invalid", "PATCH requests with an apply patch require a fieldManager"
                )
            if query.get("fieldValidation") == "Strict":
                _strict_check(rt, applied)
            dry_run = query.get("dryRun") == "All"
            config = copy.deepcopy(applied)
            config.setdefault("metadata", {})["name"] = route.name
            if live is None:
                stored = self._write(
                    rt,
                    None,
                    config,
                    route.namespace,
                    ("Apply", manager_name),
                    applied=applied,
                    status_write=status_write,
                    dry_run=dry_run,
                )
                return 201, self._view(rt, stored)
            self._check_precondition(
                rt, route.name, live, applied.get("metadata", {}).get("resourceVersion")
            )
            merged = self._reapply(live, applied, manager_name, status_write)
            stored = self._write(
                rt,
                live,
                merged,
                route.namespace,
                ("Apply", manager_name),
                applied=applied,
                status_write=status_write,
                dry_run=dry_run,
            )
            return 200, self._view(rt, stored)
        if live is None:
            raise _not_found(rt, route.name)
        patch = self._parse(body, "json")
        if flavour == "application/merge-patch+json":
            result = merge_patch(live, patch)
        elif flavour == "application/strategic-merge-patch+json":
            if rt not in BUILTIN_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources",
                )
            result = strategic_merge_patch(live, patch)
        elif flavour == "application/json-patch+json":
            result = json_patch(live, patch)
        else:
            raise ApiError(
                415, "UnsupportedMediaType", f"the media type {flavour!r} is not supported"
            )
        self._check_precondition(
            rt, route.name, live, result.get("metadata", {}).get("resourceVersion")
        )
        if status_write:
            result = {**copy.deepcopy(live), "status": result.get("status", {})}
        manager = ("Update", query.get("fieldManager", "unknown"))
        stored = self._write(rt, live, result, route.namespace, manager, status_write=status_write)
        return 200, self._view(rt, stored)

    def _reapply(self, live: Obj, applied: Obj, manager: str, status_write: bool) -> Obj:
        """Drops fields this manager applied before but no longer does, then merges the config."""
        entries = live.get("metadata", {}).get("managedFields", [])
        subresource = "status" if status_write else None
        previous: FieldSet = {}
        others: FieldSet = {}
        for entry in entries:
            same = (
                entry["manager"] == manager
                and entry["operation"] == "Apply"
                and entry.get("subresource") == subresource
            )
            if same:
                previous = entry.get("fieldsV1", {})
            else:
                others = _union(others, entry.get("fieldsV1", {}))
        released = _subtract(previous, _applied_fields(applied))
        base = copy.deepcopy(live)
        remove_released(base, released, _union(others, _applied_fields(applied)))
        if status_write:
            return {
                **base,
                "status": apply_merge(base.get("status", {}), applied.get("status", {})),
            }
        config = {k: v for k, v in applied.items() if k != "status"}
        return apply_merge(base, config)

    def _scale(self, route, key, live, method, content_type, body) -> tuple[int, Obj]:
        rt = route.rt
        if live is None:
            raise _not_found(rt, route.name)
        if method in ("PUT", "PATCH"):
            current = self._scale_view(live)
            if method == "PUT":
                wanted = self._parse(body, content_type)
            elif content_type.startswith("application/json-patch+json"):
                wanted = json_patch(current, self._parse(body, "json"))
            else:
                wanted = merge_patch(current, self._parse(body, "json"))
            replicas = wanted.get("spec", {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise _invalid(rt, route.name, [f"spec.replicas: Invalid value: {replicas!r}"])
            updated = copy.deepcopy(live)
            updated["spec"]["replicas"] = replicas
            live = self._write(rt, live, updated, route.namespace, ("Update", "scale"))
        return 200, self._scale_view(live)

    @staticmethod
    def _scale_view(obj: Obj) -> Obj:
        meta = obj["metadata"]
        labels = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            },
        }

    def _matching(self, route: _Route, query: dict[str, str]) -> Iterator[tuple[tuple, Obj]]:
        rt = route.rt
        for key, obj in sorted(self._store.items()):
            if key[:2] != (rt.group, rt.plural):
                continue
            if route.namespace and obj["metadata"].get("namespace") != route.namespace:
                continue
            labels = obj["metadata"].get("labels", {}) or {}
            if "labelSelector" in query and not selector_matches(query["labelSelector"], labels):
                continue
            if "fieldSelector" in query and not _field_selector_matches(
                query["fieldSelector"], obj
            ):
                continue
            yield key, obj

    def _list(self, route: _Route, query: dict[str, str]) -> Obj:
        items = [self._view(route.rt, obj) for _, obj in self._matching(route, query)]
        return {
            "kind": f"{route.rt.kind}List",
            "apiVersion": route.rt.api_version,
            "metadata": {"resourceVersion": str(self._last_rv)},
            "items": items,
        }

    def _delete_collection(self, route: _Route, query: dict[str, str]) -> Obj:
        doomed = list(self._matching(route, query))
        for key, _ in doomed:
            self._delete(route.rt, key)
        listing = self._list(route, {"fieldSelector": "metadata.name=\0"})
        listing["items"] = [self._view(route.rt, obj) for _, obj in doomed]
        return listing

    def _write_status(self, rt: ResourceType, key: tuple, status: Obj) -> None:
        live = self._store[key]
        if live.get("status") == status:
            return
        updated = {**copy.deepcopy(live), "status": copy.deepcopy(status)}
        updated["metadata"]["resourceVersion"] = self._next_rv()
        self._store[key] = updated
        self._changed.notify_all()

    # -- parsing and routing -----------------------------------------------------------------

    @staticmethod
    def _parse(body: bytes, content_type: str) -> Any:
        if "protobuf" in content_type:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - "
                "accepted media types include: application/json, application/yaml",
            )
        try:
            if "yaml" in content_type:
                return yaml.safe_load(body.decode() or "{}")
            return json.loads(body.decode() or "{}")
        except (ValueError, yaml.YAMLError) as err:
            raise ApiError(
                400, "BadRequest", f"the request body could not be decoded: {err}"
            ) from err

    def _discovery(self, path: str) -> Obj | None:
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return dict(SERVER_VERSION)
        if parts[:2] == ["openapi", "v3"]:
            return self._openapi_v3(parts[2:])
        if parts == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.split("//", 1)[1]}
                ],
            }
        if parts == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    self._group_doc(g, vs) for g, vs in sorted(self._group_versions().items())
                ],
            }
        if len(parts) == 2 and parts[0] == "apis":
            versions = self._group_versions().get(parts[1])
            if versions is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return {"apiVersion": "v1", **self._group_doc(parts[1], versions)}
        if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            return self._resource_list(group, version)
        return None

    @staticmethod
    def _group_doc(group: str, versions: list[str]) -> Obj:
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def _openapi_v3(self, gv_parts: list[str]) -> Obj:
        """Just enough OpenAPI v3 for kubectl to see that PATCH takes `fieldValidation`.

        With that, kubectl leaves validation to the server instead of downloading full schemas.
        """
        group_versions = {("", "v1")} | {(rt.group, rt.version) for rt in self._types.values()}
        if not gv_parts:
            paths = {}
            for group, version in sorted(group_versions):
                gv_path = f"apis/{group}/{version}" if group else f"api/{version}"
                paths[gv_path] = {
                    "serverRelativeURL": f"/openapi/v3/{gv_path}?hash={self._last_rv}"
                }
            return {"paths": paths}
        group, version = ("", gv_parts[1]) if gv_parts[0] == "api" else tuple(gv_parts[1:3])
        if (group, version) not in group_versions:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
        paths = {}
        for rt in self._types.values():
            if (rt.group, rt.version) != (group, version):
                continue
            scope = "/namespaces/{namespace}" if rt.namespaced else ""
            paths[f"{prefix}{scope}/{rt.plural}/{{name}}"] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {
                        "group": rt.group,
                        "version": rt.version,
                        "kind": rt.kind,
                    },
                    "parameters": [
                        {"name": param, "in": "query", "schema": {"type": "string"}}
                        for param in ("dryRun", "fieldManager", "fieldValidation", "force")
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.32.4"},
            "paths": paths,
        }

    def _resource_list(self, group: str, version: str) -> Obj:
        types = [rt for rt in self._types.values() if (rt.group, rt.version) == (group, version)]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources = []
        for rt in sorted(types, key=lambda t: t.plural):
            resources.append(
                {
                    "name": rt.plural,
                    "singularName": rt.kind.lower(),
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ALL_VERBS,
                    **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
                }
            )
            for sub in rt.subresources:
                kind = "Scale" if sub == "scale" else rt.kind
                sub_doc = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    sub_doc.update(group="autoscaling", version="v1")
                resources.append(sub_doc)
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    def _route(self, path: str) -> _Route:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        known = {plural for (g, v, plural) in self._types if (g, v) == (group, version)}
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in known:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = self._type(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource and subresource not in rt.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return _Route(rt, namespace, name, subresource)

    # -- simulated controller ----------------------------------------------------------------

    def _note_progress(self, key: tuple, obj: Obj) -> None:
        generation = obj["metadata"]["generation"]
        template_hash = _hash(obj.get("spec", {}).get("template", {}))
        progress = self._progress.get(key)
        if progress is None:
            self._progress[key] = _Progress(generation, time.monotonic(), template_hash)
        elif progress.generation != generation:
            previous = (
                progress.previous_hash
                if progress.template_hash == template_hash
                else progress.template_hash
            )
            self._progress[key] = _Progress(generation, time.monotonic(), template_hash, previous)

    def _control_loop(self) -> None:
        interval = max(0.01, min(0.05, self.ready_delay / 4))
        while not self._stopping.wait(interval):
            with self._lock:
                for key, progress in list(self._progress.items()):
                    obj = self._store.get(key)
                    if obj is None or time.monotonic() - progress.changed_at < self.ready_delay:
                        continue
                    rt = self._type_for_kind(obj["apiVersion"], obj["kind"])
                    blocked = any(
                        block(obj.get("spec", {}).get("template", {})) for block in self._blocks
                    )
                    status = _STATUS_MAKERS[obj["kind"]](self, obj, progress, blocked)
                    self._write_status(rt, key, status)

    def _deployment_status(self, obj: Obj, progress: _Progress, blocked: bool) -> Obj:
        spec, old = obj.get("spec", {}), obj.get("status", {})
        desired = int(spec.get("replicas", 1))
        now, previous_conditions = _now(), {c["type"]: c for c in old.get("conditions", [])}
        replica_set = f"{obj['metadata']['name']}-{progress.template_hash}"
        if spec.get("paused"):
            return {**old, "observedGeneration": progress.generation}
        if blocked and desired > 0:
            updated = 1
            available = min(int(old.get("availableReplicas", 0)), desired)
            deadline = int(spec.get("progressDeadlineSeconds", 600))
            exceeded = time.monotonic() - progress.changed_at >= deadline
            progressing = (
                (
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{replica_set}" has timed out progressing.',
                )
                if exceeded
                else ("True", "ReplicaSetUpdated", f'ReplicaSet "{replica_set}" is progressing.')
            )
        else:
            updated = available = desired
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{replica_set}" has successfully progressed.',
            )
        replicas = available + updated if blocked and desired > 0 else desired
        conditions = [
            _condition(
                previous_conditions,
                "Available",
                *(
                    ("True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
                    if available >= desired
                    else (
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    )
                ),
                now,
            ),
            _condition(previous_conditions, "Progressing", *progressing, now),
        ]
        status = {
            "observedGeneration": progress.generation,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": available,
            "availableReplicas": available,
            "conditions": conditions,
        }
        if replicas - available:
            status["unavailableReplicas"] = replicas - available
        return {k: v for k, v in status.items() if v != 0 or k == "observedGeneration"}

    @staticmethod
    def _default_job(obj: Obj) -> None:
        """What the API server fills in a new Job: its selector on the controller uid and the
        pod labels that match it; backoffLimit, completions and parallelism."""
        meta, spec = obj["metadata"], obj.setdefault("spec", {})
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        uid = meta.get("uid")
        if uid and not spec.get("selector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault(
                "labels", {})
            labels.update({"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid,
                           "batch.kubernetes.io/job-name": meta["name"],
                           "job-name": meta["name"]})

    def _job_status(self, obj: Obj, progress: _Progress, blocked: bool) -> Obj:
        """A Job `ready_delay` after creation: its pod exists, and it is over (or not) as
        `job_outcome` says for its image."""
        spec, old = obj.get("spec", {}), obj.get("status", {})
        if any(c.get("type") in ("Complete", "Failed") for c in old.get("conditions", [])):
            return old
        containers = spec.get("template", {}).get("spec", {}).get("containers", [])
        outcome = next((self._job_outcomes[c.get("image")] for c in containers
                        if c.get("image") in self._job_outcomes), "Complete")
        now = _now()
        self._job_pod(obj, outcome)
        status: Obj = {"startTime": old.get("startTime", now), "ready": 0, "terminating": 0,
                       "uncountedTerminatedPods": {}}
        if outcome in ("Running", "ImagePullBackOff"):
            return {**status, "active": 1}
        if outcome == "Complete":
            reason, message = "CompletionsReached", "Reached expected number of succeeded pods"
            return {**status, "succeeded": 1, "completionTime": now,
                    "conditions": [_job_condition("SuccessCriteriaMet", reason, message, now),
                                   _job_condition("Complete", reason, message, now)]}
        reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        return {**status, "failed": int(spec.get("backoffLimit", 6)) + 1,
                "conditions": [_job_condition("FailureTarget", reason, message, now),
                               _job_condition("Failed", reason, message, now)]}

    def _job_pod(self, job: Obj, outcome: str) -> None:
        """The Job's one pod, in the state its outcome implies."""
        meta = job["metadata"]
        name = f"{meta['name']}-{_hash(meta['uid'])[:5]}"
        key = ("", "pods", meta["namespace"], name)
        if key in self._store:
            return
        containers = job["spec"]["template"].get("spec", {}).get("containers", [])
        if outcome == "ImagePullBackOff":
            states = [{"name": c.get("name"), "ready": False, "image": c.get("image"),
                       "state": {"waiting": {"reason": "ImagePullBackOff", "message":
                                 f'Back-off pulling image "{c.get("image")}"'}}}
                      for c in containers]
            phase = "Pending"
        else:
            code = 1 if outcome == "Failed" else 0
            running = {"running": {"startedAt": _now()}}
            finished = {"terminated": {"exitCode": code, "reason": "Error" if code else
                                       "Completed"}}
            states = [{"name": c.get("name"), "ready": outcome == "Running",
                       "image": c.get("image"),
                       "state": running if outcome == "Running" else finished}
                      for c in containers]
            phase = {"Running": "Running", "Failed": "Failed"}.get(outcome, "Succeeded")
        self._store[key] = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": meta["namespace"], "uid": str(uuid.uuid4()),
                         "resourceVersion": self._next_rv(), "creationTimestamp": _now(),
                         "labels": dict(job["spec"]["template"].get("metadata", {}).get(
                             "labels", {}))},
            "spec": copy.deepcopy(job["spec"]["template"].get("spec", {})),
            "status": {"phase": phase, "containerStatuses": states},
        }

    def _statefulset_status(self, obj: Obj, progress: _Progress, blocked: bool) -> Obj:
        desired = int(obj.get("spec", {}).get("replicas", 1))
        name = obj["metadata"]["name"]
        update_revision = f"{name}-{progress.template_hash}"
        if blocked and desired > 0:
            current = (
                f"{name}-{progress.previous_hash}" if progress.previous_hash else update_revision
            )
            ready = max(desired - 1, 0) if progress.previous_hash else 0
            updated = 0
        else:
            current, ready, updated = update_revision, desired, desired
        return {
            "observedGeneration": progress.generation,
            "replicas": desired,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": desired - updated,
            "updatedReplicas": updated,
            "currentRevision": current,
            "updateRevision": update_revision,
        }

    def _daemonset_status(self, obj: Obj, progress: _Progress, blocked: bool) -> Obj:
        nodes = self.daemonset_nodes
        updated = 0 if blocked else nodes
        ready = nodes - 1 if blocked and progress.previous_hash else (0 if blocked else nodes)
        return {
            "observedGeneration": progress.generation,
            "currentNumberScheduled": nodes,
            "desiredNumberScheduled": nodes,
            "numberMisscheduled": 0,
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": nodes - ready,
            "updatedNumberScheduled": updated,
        }


_STATUS_MAKERS = {
    "Deployment": FakeKube._deployment_status,
    "StatefulSet": FakeKube._statefulset_status,
    "DaemonSet": FakeKube._daemonset_status,
    "Job": FakeKube._job_status,
}


_POD_FIELDS = frozenset(
    [
        "volumes", "initContainers", "containers", "ephemeralContainers",
        "restartPolicy", "terminationGracePeriodSeconds", "activeDeadlineSeconds",
        "dnsPolicy", "nodeSelector", "serviceAccountName", "serviceAccount",
        "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID", "hostIPC",
        "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
        "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases",
        "priorityClassName", "priority", "dnsConfig", "readinessGates",
        "runtimeClassName", "enableServiceLinks", "preemptionPolicy", "overhead",
        "topologySpreadConstraints", "setHostnameAsFQDN", "os", "hostUsers",
        "schedulingGates", "resourceClaims", "resources"
    ]
)
_CONTAINER_FIELDS = frozenset(
    [
        "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
        "resources", "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices",
        "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
        "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
        "securityContext", "stdin", "stdinOnce", "tty"
    ]
)
_OBJECT = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
# kind → {dotted path ("" the object, "[]" each item of a list) → the fields allowed there}
STRICT_FIELDS: dict[str, dict[str, frozenset[str]]] = {
    "Deployment": {
        "": _OBJECT,
        "spec": frozenset(
            [
                "replicas", "selector", "template", "strategy",
                "minReadySeconds", "revisionHistoryLimit", "paused",
                "progressDeadlineSeconds"
            ]
        ),
        "spec.template": frozenset({"metadata", "spec"}),
        "spec.template.spec": _POD_FIELDS,
        "spec.template.spec.containers[]": _CONTAINER_FIELDS,
        "spec.template.spec.initContainers[]": _CONTAINER_FIELDS,
    },
    "ConfigMap": {"": frozenset({"apiVersion", "kind", "metadata", "data", "binaryData",
                                 "immutable"})},
    "Secret": {"": frozenset({"apiVersion", "kind", "metadata", "data", "stringData", "type",
                              "immutable"})},
    "Service": {"": _OBJECT},
}


def _strict_check(rt: ResourceType, obj: Obj) -> None:
    """fieldValidation=Strict: a field the schema does not declare is a 400, as on a real
    server (`strict decoding error: unknown field "spec.replica"`)."""
    schema = STRICT_FIELDS.get(rt.kind)
    if schema is None or rt not in BUILTIN_TYPES:
        return
    unknown = []
    for path, allowed in schema.items():
        parts = path.replace("[]", "").split(".") if path else []
        node: Any = obj
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        items = node if path.endswith("[]") and isinstance(node, list) else [node]
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            where = path.replace("[]", f"[{index}]") if path.endswith("[]") else path
            unknown += [f"{where}.{k}" if where else k for k in item if k not in allowed]
    if unknown:
        raise ApiError(
            400,
            "BadRequest",
            "strict decoding error: " + ", ".join(f'unknown field "{u}"' for u in unknown),
        )


def _condition(
    previous: dict[str, Obj], kind: str, status: str, reason: str, message: str, now: str
) -> Obj:
    before = previous.get(kind, {})
    changed = before.get("status") != status or before.get("reason") != reason
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now if changed else before.get("lastUpdateTime", now),
        "lastTransitionTime": now
        if before.get("status") != status
        else before.get("lastTransitionTime", now),
    }


def _job_condition(kind: str, reason: str, message: str, now: str) -> Obj:
    return {"type": kind, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


def _hash(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]


def _without_times(obj: Obj) -> Obj:
    stripped = copy.deepcopy(obj)
    for entry in stripped.get("metadata", {}).get("managedFields", []):
        entry.pop("time", None)
    return stripped


def _handler_for(kube: FakeKube) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out separately; no 40 ms stalls

        def log_message(self, format: str, *args: Any) -> None:
            """Silence the per-request stderr log; tests read `kube.requests` instead."""

        def _serve(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            content_type = self.headers.get("Content-Type", "")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            user = self.headers.get("Impersonate-User")
            groups = tuple(self.headers.get_all("Impersonate-Group") or ())
            kube.requests.append(
                Request(self.command, url.path, query, content_type, user, groups)
            )
            try:
                code, document = self._answer(url.path, query, content_type, body)
            except ApiError as err:
                code, document = err.code, err.status()
            except Exception as err:  # noqa: BLE001 - a fake bug must still answer as a server
                code, document = (
                    500,
                    ApiError(500, "InternalError", f"fake kube bug: {err!r}").status(),
                )
            payload = json.dumps(document).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _answer(self, path: str, query: dict[str, str], content_type: str, body: bytes):
            authorized = self.headers.get("Authorization") == f"Bearer {kube.token}"
            if kube.require_token and not authorized:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            with kube._lock:
                fault = next((f for f in kube._faults if f.matches(self.command, path)), None)
                if fault:
                    fault.remaining -= 1
            if fault and fault.action:
                fault.action()
            elif fault and fault.delay_s:
                time.sleep(fault.delay_s)
            elif fault:
                reason = HTTPStatus(fault.status).phrase.replace(" ", "")
                raise ApiError(fault.status, reason, f"injected failure ({fault.status})")
            if query.get("watch") in ("true", "1"):
                raise ApiError(405, "MethodNotAllowed", "watch is not supported by the fake")
            return kube.handle(
                self.command,
                path,
                query,
                content_type,
                body,
                user=self.headers.get("Impersonate-User"),
                groups=tuple(self.headers.get_all("Impersonate-Group") or ()),
            )

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler
