"""The connection to one Kubernetes cluster: discovery, retries and error translation.

Everything else in `bot.cluster` goes through `Cluster`, so retries, timeouts and the wording
of errors are decided in one place. `Cluster.impersonating` gives a view whose every request
is made as another Kubernetes user (a repository's ServiceAccount), so that the cluster's own
RBAC enforces a repository's boundary as well as Coalmine's policy does.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from bot import metrics
from bot.cluster import apply as staged_apply
from bot.cluster import dryrun as dry_runs
from bot.cluster import prune as inventory_prune
from bot.cluster import wait as health_wait
from bot.cluster.model import (
    FIELD_MANAGER,
    ApplyReport,
    ClusterError,
    DryRun,
    HealthReport,
    ObjectRef,
    Owner,
)
from bot.cluster.transport import (
    CREDENTIAL_CHECK_EVERY_S,
    DEFAULT_RETRY,
    RETRYABLE_STATUS,
    RETRYABLE_WITH_PRECONDITION,
    Identity,
    ImpersonatingPool,
    MemoryDiscoverer,
    RetryPolicy,
    ThrottledCredentialHook,
    plain_json,
)

Obj = dict[str, Any]
T = TypeVar("T")

# Kubernetes user and group names as they may travel in a header: printable, no newlines.
_IMPERSONATION_NAME = re.compile(r"^[!-~][ -~]*$")


class Cluster:
    """One cluster, reached through the kubernetes client's ApiClient and DynamicClient."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        request_timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_client = api_client
        self.retry = retry
        self.request_timeout_s = request_timeout_s
        self.sleep = sleep
        self.identity: Identity | None = None  # None: the bot's own credential
        self._dynamic: DynamicClient | None = None
        # Discovery answers by (apiVersion, kind): the dynamic client searches its whole
        # resource tree on every lookup, and an apply looks each object's kind up several times.
        self._resources: dict[tuple[str, str], Resource] = {}

    @classmethod
    def from_config(
        cls,
        kubeconfig: str | None = None,
        context: str | None = None,
        *,
        credential_check_every_s: float = CREDENTIAL_CHECK_EVERY_S,
        **kwargs,
    ) -> Cluster:
        """A kubeconfig file (explicit, $KUBECONFIG or ~/.kube/config), else in-cluster config.

        The credential (an exec plugin's or in-cluster token) is checked for renewal at most
        every `credential_check_every_s` seconds, not before every request.
        """
        default_path = os.path.expanduser(k8s_config.KUBE_CONFIG_DEFAULT_LOCATION)
        configuration = k8s_client.Configuration()
        # `call` retries with backoff; urllib3's own immediate retries of a timed-out GET (3 by
        # default) would multiply every timeout by four before `call` even sees it.
        configuration.retries = False
        try:
            if kubeconfig or os.environ.get("KUBECONFIG") or os.path.exists(default_path):
                api_client = k8s_config.new_client_from_config(
                    config_file=kubeconfig,
                    context=context,
                    persist_config=False,
                    client_configuration=configuration,
                )
            else:
                k8s_config.load_incluster_config(client_configuration=configuration)
                api_client = k8s_client.ApiClient(configuration)
        except (k8s_config.ConfigException, OSError) as err:
            raise ClusterError(f"cannot load cluster configuration: {err}") from None
        ThrottledCredentialHook.install(api_client.configuration, every_s=credential_check_every_s)
        return cls(api_client, **kwargs)

    def impersonating(self, user: str, groups: tuple[str, ...] = ()) -> Cluster:
        """A view of this cluster whose every request is made as `user` (and `groups`).

        Reads, writes and discovery all carry `Impersonate-User` (and one `Impersonate-Group`
        per group), so the cluster's RBAC decides what the repository may do: the bot's
        credential needs only the right to impersonate. The view has its own ApiClient over a
        deep copy of the configuration, its own connection pool and its own discovery cache;
        it shares only the retry policy (frozen), the timeout and the sleep function. A view
        of a view impersonates `user` alone: the bot's credential always makes the request.
        """
        groups = tuple(groups)
        for name in (user, *groups):
            if not isinstance(name, str) or not _IMPERSONATION_NAME.match(name):
                raise ValueError(f"cannot impersonate {name!r}: not a printable one-line name")
        identity = Identity(user, groups)
        api_client = k8s_client.ApiClient(copy.deepcopy(self.api_client.configuration))
        api_client.rest_client.pool_manager = ImpersonatingPool(
            api_client.rest_client.pool_manager, identity
        )
        view = Cluster(
            api_client,
            retry=self.retry,
            request_timeout_s=self.request_timeout_s,
            sleep=self.sleep,
        )
        view.identity = identity
        return view

    # -- plumbing ----------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one API call with retries on transient failures; errors become ClusterError."""
        return self._call(what, RETRYABLE_STATUS, fn, *args, **kwargs)

    def _call(
        self, what: str, retry_on: frozenset[int], fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                answer = fn(*args, **kwargs)
                metrics.kubernetes_call(200)
                return answer
            except ApiException as err:
                metrics.kubernetes_call(err.status)
                if err.status not in retry_on or last:
                    raise ClusterError(
                        f"{what}: {status_message(err)}", status=err.status
                    ) from err
            except (urllib3.exceptions.HTTPError, OSError) as err:
                metrics.kubernetes_call(None)
                if last:
                    raise ClusterError(f"{what}: {type(err).__name__}: {err}") from err
            self.sleep(self.retry.delay(attempt))
        raise AssertionError("unreachable: the last attempt returns or raises")

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            cache_file = os.path.join(tempfile.gettempdir(), f"coalmine-{uuid.uuid4().hex}.json")
            self._dynamic = self.call(
                "discover the API",
                DynamicClient,
                self.api_client,
                cache_file=cache_file,
                discoverer=MemoryDiscoverer,
            )
        return self._dynamic

    def refresh_discovery(self) -> None:
        """Forget cached API resources, e.g. after CRDs were created."""
        self._resources.clear()
        self.call("refresh API discovery", self.dynamic.resources.invalidate_cache)

    def serves(self, api_version: str, kind: str) -> bool:
        """Whether discovery knows the kind; other failures (unreachable...) still raise."""
        try:
            self._discover(api_version, kind)
        except ResourceNotFoundError:
            return False
        return True

    def resource(self, api_version: str, kind: str, for_object: str | None = None) -> Resource:
        """The API resource serving `kind`; unknown kinds are a ClusterError naming the object."""
        subject = for_object or kind
        try:
            return self._discover(api_version, kind)
        except ResourceNotFoundError:
            raise ClusterError(
                f"{subject}: the cluster does not serve kind {kind!r} in {api_version!r} "
                "(is its CustomResourceDefinition installed?)"
            ) from None

    def _discover(self, api_version: str, kind: str) -> Resource:
        """Discovery's answer, remembered until `refresh_discovery`; a kind it does not know is
        not remembered, so a CRD installed meanwhile is found on the next lookup."""
        key = (api_version, kind)
        found = self._resources.get(key)
        if found is None:
            found = self.call(
                f"discover {api_version} {kind}",
                self.dynamic.resources.get,
                api_version=api_version,
                kind=kind,
            )
            self._resources[key] = found
        return found

    # -- single objects ----------------------------------------------------------------------

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Obj | None:
        """The live object, or None when it does not exist."""
        ref = ObjectRef(api_version, kind, namespace, name)
        resource = self.resource(api_version, kind, str(ref))
        try:
            found = self.call(
                f"get {ref}",
                resource.get,
                name=name,
                namespace=namespace if resource.namespaced else None,
                serializer=plain_json,
                _request_timeout=self.request_timeout_s,
            )
        except ClusterError as err:
            if _is_not_found(err):
                return None
            raise
        return found

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        """Objects of one kind, in one namespace or (namespace None) in all of them."""
        resource = self.resource(api_version, kind)
        listing = self.call(
            f"list {kind}",
            resource.get,
            namespace=namespace if resource.namespaced else None,
            label_selector=label_selector,
            serializer=plain_json,
            _request_timeout=self.request_timeout_s,
        )
        items = listing.get("items") or []
        for item in items:
            item.setdefault("apiVersion", resource.group_version)
            item.setdefault("kind", resource.kind)
        return items

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        propagation_policy: str = "Background",
        *,
        preconditions: Mapping[str, str] | None = None,
    ) -> bool:
        """Deletes the object; False when it was already gone, which is what we wanted anyway.

        `preconditions` ({"uid": ..., "resourceVersion": ...}) make the server delete only the
        very object that was looked at; when it changed since, the ClusterError has status 409
        and is not retried (the caller must look again).
        """
        ref = ObjectRef(api_version, kind, namespace, name)
        resource = self.resource(api_version, kind, str(ref))
        body: dict[str, Any] = {"propagationPolicy": propagation_policy}
        if preconditions:
            body["preconditions"] = dict(preconditions)
        retry_on = RETRYABLE_WITH_PRECONDITION if preconditions else RETRYABLE_STATUS
        try:
            self._call(
                f"delete {ref}",
                retry_on,
                resource.delete,
                name=name,
                namespace=namespace if resource.namespaced else None,
                body=body,
                _request_timeout=self.request_timeout_s,
            )
        except ClusterError as err:
            if _is_not_found(err):
                return False
            raise
        return True

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Sets a Deployment's replicas through its scale subresource."""
        resource = self.resource("apps/v1", "Deployment", f"Deployment {namespace}/{name}")
        self.call(
            f"scale Deployment {namespace}/{name} to {replicas}",
            resource.subresources["scale"].patch,
            body={"spec": {"replicas": replicas}},
            name=name,
            namespace=namespace,
            content_type="application/merge-patch+json",
            field_manager=FIELD_MANAGER,
            _request_timeout=self.request_timeout_s,
        )

    def server_side_apply(self, obj: Obj, *, field_manager: str = FIELD_MANAGER) -> Obj:
        """Server-side applies one complete object (namespace already set); returns the result.

        The body goes out as JSON text encoded here: given a dict, the client would first
        rebuild all of it to "sanitize" it, though only values JSON lacks (dates and times a
        YAML file may hold) need that; `default` hands just those to the same sanitizer.
        """
        ref = ObjectRef.of(obj)
        resource = self.resource(ref.api_version, ref.kind, str(ref))
        try:
            body = json.dumps(obj, default=self.api_client.sanitize_for_serialization)
        except (TypeError, ValueError) as err:  # bytes (YAML !!binary), sets...
            raise ClusterError(f"{ref}: cannot be sent as JSON: {err}") from None
        return self.call(
            f"apply {ref}",
            resource.server_side_apply,
            body=body,
            name=ref.name,
            namespace=ref.namespace if resource.namespaced else None,
            field_manager=field_manager,
            force_conflicts=True,
            serializer=plain_json,
            _request_timeout=self.request_timeout_s,
        )

    def dry_run_apply(self, obj: Obj, *, field_manager: str = FIELD_MANAGER) -> Obj:
        """What server-side applying `obj` (namespace already set) would store, stored nowhere.

        `dryRun=All` runs the API server's defaulting, admission and validation against the
        live object; `fieldValidation=Strict` makes a field the cluster's schema does not know
        an error, as kubectl's default does (the dynamic client cannot send that parameter,
        so the request is built here over the same ApiClient, impersonation included).
        """
        ref = ObjectRef.of(obj)
        resource = self.resource(ref.api_version, ref.kind, str(ref))
        try:
            body = json.dumps(obj, default=self.api_client.sanitize_for_serialization)
        except (TypeError, ValueError) as err:
            raise ClusterError(f"{ref}: cannot be sent as JSON: {err}") from None
        path = resource.path(name=ref.name,
                             namespace=ref.namespace if resource.namespaced else None)
        query = [("dryRun", "All"), ("fieldManager", field_manager), ("force", "true"),
                 ("fieldValidation", "Strict")]
        headers = {"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"}

        def send() -> Obj:
            request = self.api_client.param_serialize(
                "PATCH", path, query_params=query, header_params=headers, body=body,
                auth_settings=["BearerToken"])
            answer = self.api_client.call_api(*request, _request_timeout=self.request_timeout_s)
            answer.read()
            if not 200 <= answer.status <= 299:
                self.api_client.response_deserialize(answer, {})  # raises ApiException
            return json.loads(answer.data)

        return self.call(f"dry-run apply {ref}", send)

    # -- whole sets (see apply.py, prune.py, wait.py) ----------------------------------------

    def apply(
        self,
        objects: Iterable[Obj],
        *,
        app: str,
        revision: str,
        default_namespace: str,
        owner: Owner,
        adopt: bool = False,
    ) -> ApplyReport:
        """See bot.cluster.apply.apply: refuses (OwnershipConflict) before writing anything."""
        return staged_apply.apply(
            self,
            objects,
            app=app,
            revision=revision,
            default_namespace=default_namespace,
            owner=owner,
            adopt=adopt,
        )

    def prune(
        self,
        app: str,
        keep: Iterable[ObjectRef],
        *,
        owner: Owner,
        may_delete: Callable[[ObjectRef], bool],
        kinds: Iterable[tuple[str, str]] | None = None,
        namespaces: Iterable[str] | None = None,
    ) -> list[ObjectRef]:
        """See bot.cluster.prune.prune: only the owner's objects, only where `may_delete`."""
        return inventory_prune.prune(
            self, app, keep, owner=owner, may_delete=may_delete, kinds=kinds, namespaces=namespaces
        )

    def dry_run(
        self,
        objects: Iterable[Obj],
        *,
        revision: str,
        default_namespace: str,
        owner: Owner,
        adopt: bool = False,
    ) -> list[DryRun]:
        """See bot.cluster.dryrun.dry_run: what apply would do, changing nothing."""
        return dry_runs.dry_run(self, objects, owner=owner, revision=revision,
                                default_namespace=default_namespace, adopt=adopt)

    def prune_candidates(
        self,
        app: str,
        keep: Iterable[ObjectRef],
        *,
        owner: Owner,
        may_delete: Callable[[ObjectRef], bool],
        namespaces: Iterable[str] | None = None,
    ) -> list[ObjectRef]:
        """See bot.cluster.prune.candidates: what prune would delete, deleting nothing."""
        return [ObjectRef.of(live) for live in inventory_prune.candidates(
            self, app, keep, owner=owner, may_delete=may_delete, namespaces=namespaces)]

    def wait_healthy(self, refs: Iterable[ObjectRef], timeout_s: float, **kwargs) -> HealthReport:
        """See bot.cluster.wait.wait_healthy: fails fast on Degraded, else waits up to timeout."""
        return health_wait.wait_healthy(self, refs, timeout_s, **kwargs)

    # -- what this identity may do (coalmine doctor) -----------------------------------------

    def server_version(self) -> str:
        """The API server's version (GET /version): the cluster answers this credential."""
        answer = self.call("get the server version",
                           k8s_client.VersionApi(self.api_client).get_code,
                           _request_timeout=self.request_timeout_s)
        return str(answer.git_version)

    def can_i(self, verb: str, resource: str, *, group: str = "", namespace: str | None = None,
              name: str | None = None) -> tuple[bool, str]:
        """(allowed, the authorizer's reason) of a SelfSubjectAccessReview: whether this
        identity (the impersonated user in a view) may `verb` the `resource` (plural)."""
        attributes = {"verb": verb, "resource": resource, "group": group}
        if namespace is not None:
            attributes["namespace"] = namespace
        if name is not None:
            attributes["name"] = name
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes}}
        answer = self.call(f"review access to {verb} {resource}",
                           k8s_client.AuthorizationV1Api(self.api_client)
                           .create_self_subject_access_review,
                           body, _request_timeout=self.request_timeout_s)
        status = answer.status
        return bool(status.allowed), str(status.reason or status.evaluation_error or "")


def status_message(err: ApiException) -> str:
    """The API server's own explanation from a Status body, with reason and HTTP code."""
    try:
        status = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        status = {}
    message = status.get("message") if isinstance(status, dict) else None
    reason = (status.get("reason") if isinstance(status, dict) else None) or err.reason
    return f"{message or reason or 'request failed'} ({reason}, HTTP {err.status})"


def _is_not_found(err: ClusterError) -> bool:
    return err.status == 404
