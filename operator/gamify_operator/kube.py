"""The few Kubernetes API calls the reconciler makes, on the official client's dynamic API.

Children are written with server-side apply (one request creates or updates; fields the
operator stops setting are removed; `force` takes fields back from anyone who edited them by
hand). The client is blocking, so every call runs in a worker thread, off Kopf's event loop.

Errors become `KubeError`, whose message is safe for status conditions and events: for Secrets
the API server's own message is left out, because it may quote the data being written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.config.config_exception import ConfigException

from gamify.program import API_GROUP, API_VERSION, KIND

FIELD_MANAGER = "gamify-operator"
PROGRAM_API_VERSION = f"{API_GROUP}/{API_VERSION}"

# Every kind `builders.build_all` produces (the namespaced ones are also checked for leftovers).
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "Namespace"),
    ("v1", "ResourceQuota"),
    ("v1", "LimitRange"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ServiceAccount"),
    ("v1", "Secret"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("batch/v1", "CronJob"),
)
NAMESPACED_CHILD_KINDS = tuple(kind for kind in CHILD_KINDS if kind[1] != "Namespace")


@dataclass
class KubeError(Exception):
    """A request the API server refused (or could not answer)."""

    kind: str
    name: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.message}"

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """Someone else wrote first (a stale resourceVersion, or created it meanwhile)."""
        return self.status == 409


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or "request failed")


def _error(exc: ApiException, kind: str, name: str) -> KubeError:
    status = int(exc.status or 0)
    if kind == "Secret":
        return KubeError(kind, name, status, f"HTTP {status} {exc.reason or ''}".strip())
    return KubeError(kind, name, status, f"HTTP {status}: {_api_message(exc)}")


def new_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """In a pod: the ServiceAccount; elsewhere: `kubeconfig`, `KUBECONFIG` or ~/.kube/config."""
    if kubeconfig is None:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except ConfigException:
            pass
    return config.new_client_from_config(config_file=kubeconfig)


class Kube:
    """Blocking dynamic client behind async methods; kinds are resolved once, at `prepare`."""

    def __init__(self, api: client.ApiClient, field_manager: str = FIELD_MANAGER):
        self.api = api
        self.field_manager = field_manager
        self._dynamic = dynamic.DynamicClient(api)
        self._resources: dict[tuple[str, str], Any] = {}

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self._dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    async def prepare(self) -> None:
        """Discover every kind up front (discovery is not safe to run from several threads)."""

        def discover() -> None:
            for api_version, kind in (*CHILD_KINDS, (PROGRAM_API_VERSION, KIND)):
                self._resource(api_version, kind)

        await asyncio.to_thread(discover)

    # --- blocking bodies ---------------------------------------------------------------------

    def _apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        resource = self._resource(obj["apiVersion"], obj["kind"])
        try:
            result = self._dynamic.server_side_apply(
                resource,
                body=dict(obj),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=self.field_manager,
                force_conflicts=True,
            )
        except ApiException as exc:
            raise _error(exc, obj["kind"], meta["name"]) from None
        return dict(result.to_dict())

    def _get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict[str, Any] | None:
        try:
            result = self._dynamic.get(self._resource(api_version, kind), name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise _error(exc, kind, name) from None
        return dict(result.to_dict())

    def _list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            result = self._dynamic.get(
                self._resource(api_version, kind), namespace=namespace, label_selector=selector
            )
        except ApiException as exc:
            if exc.status == 404:  # the namespace is not there (yet, or any more)
                return []
            raise _error(exc, kind, selector) from None
        return [dict(item) for item in result.to_dict().get("items", [])]

    def _list_all(self, api_version: str, kind: str, selector: str) -> list[dict[str, Any]]:
        try:
            result = self._dynamic.get(self._resource(api_version, kind), label_selector=selector)
        except ApiException as exc:
            raise _error(exc, kind, selector) from None
        return [dict(item) for item in result.to_dict().get("items", [])]

    def _create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        try:
            result = self._dynamic.create(
                self._resource(obj["apiVersion"], obj["kind"]),
                body=dict(obj),
                namespace=meta.get("namespace"),
                field_manager=self.field_manager,
            )
        except ApiException as exc:
            raise _error(exc, obj["kind"], meta["name"]) from None
        return dict(result.to_dict())

    def _delete(self, api_version: str, kind: str, name: str, namespace: str | None) -> bool:
        try:
            self._dynamic.delete(
                self._resource(api_version, kind),
                name=name,
                namespace=namespace,
                propagation_policy="Background",
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise _error(exc, kind, name) from None
        return True

    def _patch_program(self, name: str, body: Mapping[str, Any], status: bool) -> None:
        resource = self._resource(PROGRAM_API_VERSION, KIND)
        try:
            self._dynamic.patch(
                resource.status if status else resource,
                body=dict(body),
                name=name,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            raise _error(exc, KIND, name) from None

    # --- async API -----------------------------------------------------------------------------

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update `obj` (server-side apply); returns the object as stored."""
        return await asyncio.to_thread(self._apply, obj)

    async def get(
        self, api_version: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        return await asyncio.to_thread(self._get, api_version, kind, name, namespace)

    async def list_all(self, api_version: str, kind: str, selector: str) -> list[dict[str, Any]]:
        """Every object of a kind matching `selector`, in all namespaces."""
        return await asyncio.to_thread(self._list_all, api_version, kind, selector)

    async def list(self, api_version: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._list, api_version, kind, namespace, selector)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Create `obj`; a KubeError with status 409 when it already exists."""
        return await asyncio.to_thread(self._create, obj)

    async def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object (dependents in the background); False if it was already gone."""
        return await asyncio.to_thread(self._delete, api_version, kind, name, namespace)

    async def patch_program_status(self, name: str, status: Mapping[str, Any]) -> None:
        """Merge-patch a program's status outside a Kopf handler's own patch (e.g. progress)."""
        await asyncio.to_thread(self._patch_program, name, {"status": dict(status)}, True)
