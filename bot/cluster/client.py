"""The connection to one Kubernetes cluster: discovery, retries and error translation.

Everything else in `bot.cluster` goes through `Cluster`, so retries, timeouts and the wording
of errors are decided in one place.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import ResourceNotFoundError
from kubernetes.dynamic.resource import Resource

from bot.cluster.model import (
    FIELD_MANAGER,
    ApplyReport,
    ClusterError,
    HealthReport,
    ObjectRef,
)

Obj = dict[str, Any]
T = TypeVar("T")

RETRYABLE_STATUS = frozenset({409, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """Few, short attempts: a job that still fails is retried later by the queue."""

    attempts: int = 4
    first_delay_s: float = 0.2
    max_delay_s: float = 2.0

    def delay(self, attempt: int) -> float:
        return min(self.first_delay_s * 2**attempt, self.max_delay_s)


class _MemoryDiscoverer(LazyDiscoverer):
    """Keeps discovery in memory for the life of one Cluster.

    The stock discoverer shares a cache file per server URL in /tmp, which leaks stale
    resource lists between clusters (and between test servers that reuse a port).
    """

    def _write_cache(self) -> None:
        """Never persist; the in-memory cache is all we want."""


class Cluster:
    """One cluster, reached through the kubernetes client's ApiClient and DynamicClient."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: RetryPolicy = RetryPolicy(),
        request_timeout_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.api_client = api_client
        self.retry = retry
        self.request_timeout_s = request_timeout_s
        self.sleep = sleep
        self._dynamic: DynamicClient | None = None

    @classmethod
    def from_config(
        cls, kubeconfig: str | None = None, context: str | None = None, **kwargs
    ) -> Cluster:
        """A kubeconfig file (explicit, $KUBECONFIG or ~/.kube/config), else in-cluster config."""
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
        return cls(api_client, **kwargs)

    # -- plumbing ----------------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs one API call with retries on transient failures; errors become ClusterError."""
        for attempt in range(self.retry.attempts):
            last = attempt == self.retry.attempts - 1
            try:
                return fn(*args, **kwargs)
            except ApiException as err:
                if err.status not in RETRYABLE_STATUS or last:
                    raise ClusterError(f"{what}: {status_message(err)}") from err
            except (urllib3.exceptions.HTTPError, OSError) as err:
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
                discoverer=_MemoryDiscoverer,
            )
        return self._dynamic

    def refresh_discovery(self) -> None:
        """Forget cached API resources, e.g. after CRDs were created."""
        self.call("refresh API discovery", self.dynamic.resources.invalidate_cache)

    def resource(self, api_version: str, kind: str, for_object: str | None = None) -> Resource:
        """The API resource serving `kind`; unknown kinds are a ClusterError naming the object."""
        subject = for_object or kind
        try:
            return self.call(
                f"discover {api_version} {kind}",
                self.dynamic.resources.get,
                api_version=api_version,
                kind=kind,
            )
        except ResourceNotFoundError:
            raise ClusterError(
                f"{subject}: the cluster does not serve kind {kind!r} in {api_version!r} "
                "(is its CustomResourceDefinition installed?)"
            ) from None

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
                _request_timeout=self.request_timeout_s,
            )
        except ClusterError as err:
            if _is_not_found(err):
                return None
            raise
        return found.to_dict()

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
            _request_timeout=self.request_timeout_s,
        )
        items = listing.to_dict().get("items", [])
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
    ) -> bool:
        """Deletes the object; False when it was already gone, which is what we wanted anyway."""
        ref = ObjectRef(api_version, kind, namespace, name)
        resource = self.resource(api_version, kind, str(ref))
        try:
            self.call(
                f"delete {ref}",
                resource.delete,
                name=name,
                namespace=namespace if resource.namespaced else None,
                body={"propagationPolicy": propagation_policy},
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
        """Server-side applies one complete object (namespace already set); returns the result."""
        ref = ObjectRef.of(obj)
        resource = self.resource(ref.api_version, ref.kind, str(ref))
        applied = self.call(
            f"apply {ref}",
            resource.server_side_apply,
            body=obj,
            name=ref.name,
            namespace=ref.namespace if resource.namespaced else None,
            field_manager=field_manager,
            force_conflicts=True,
            _request_timeout=self.request_timeout_s,
        )
        return applied.to_dict()

    # -- whole sets (see apply.py, prune.py, wait.py) ----------------------------------------

    def apply(
        self, objects: Iterable[Obj], *, app: str, revision: str, default_namespace: str
    ) -> ApplyReport:
        from bot.cluster.apply import apply

        return apply(self, objects, app=app, revision=revision, default_namespace=default_namespace)

    def prune(
        self, app: str, keep: Iterable[ObjectRef], kinds: Iterable[tuple[str, str]] | None = None
    ) -> list[ObjectRef]:
        from bot.cluster.prune import prune

        return prune(self, app, keep, kinds)

    def wait_healthy(self, refs: Iterable[ObjectRef], timeout_s: float, **kwargs) -> HealthReport:
        from bot.cluster.wait import wait_healthy

        return wait_healthy(self, refs, timeout_s, **kwargs)


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
    return isinstance(err.__cause__, ApiException) and err.__cause__.status == 404
