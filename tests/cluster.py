"""The Kubernetes control plane for tests: a REAL API server and the GamificationProgram CRD.

Loaded for every test directory as a pytest plugin (tests/conftest.py), so the control-plane,
operator, chart and end-to-end tests share one session and one cluster.

The control plane is the project's own (scripts/controlplane/, see docs/controlplane.md). A
running one is reused; otherwise `up.sh` starts it and `down.sh` stops it at the end of the
session (unless GAMIFY_CP_KEEP=1). Missing binaries make the tests FAIL, never skip: build them
with `make cluster-build`.

The CRD is applied from the committed `crds/` file (what users `kubectl apply`) with server-side
apply, so sessions running side by side converge on the same object. It is never deleted here:
deleting a CRD deletes every GamificationProgram, including other tests' ones.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, dynamic
from kubernetes.client.rest import ApiException

from gamify_operator import crd

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts" / "controlplane"
FIELD_MANAGER = "gamify-tests"


def run(*cmd: str | Path, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)


def controlplane_lib(expr: str) -> str:
    """Evaluate a shell expression after sourcing scripts/controlplane/lib.sh (versions, paths)."""
    out = run("bash", "-c", f'source "{SCRIPTS}/lib.sh" && {expr}')
    if out.returncode != 0:
        pytest.fail(f"scripts/controlplane/lib.sh: {expr!r} failed: {out.stderr}")
    return out.stdout.strip()


def wait_until(what: str, predicate: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@pytest.fixture(scope="session")
def kubeconfig() -> Iterator[str]:
    """Path of an admin kubeconfig for a running control plane (started here if needed)."""
    check = run(SCRIPTS / "build.sh", "--check")
    if check.returncode != 0:
        pytest.fail(
            "control-plane binaries are missing; build them with `make cluster-build` "
            f"(scripts/controlplane/build.sh):\n{check.stdout}{check.stderr}"
        )
    status = run(SCRIPTS / "status.sh")
    started_here = status.returncode != 0
    if started_here:
        up = run(SCRIPTS / "up.sh", "--quiet", timeout=600)
        if up.returncode != 0:
            pytest.fail(f"scripts/controlplane/up.sh failed:\n{up.stdout}\n{up.stderr}")
        path = up.stdout.strip().splitlines()[-1]
    else:
        path = status.stdout.strip()
    assert Path(path).is_file(), path
    yield path
    if started_here and not os.environ.get("GAMIFY_CP_KEEP"):
        run(SCRIPTS / "down.sh")


@pytest.fixture(scope="session")
def kube_api(kubeconfig: str) -> client.ApiClient:
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture(scope="session")
def dyn(kube_api: client.ApiClient) -> dynamic.DynamicClient:
    """A dynamic client of the test cluster (any kind by apiVersion and kind)."""
    return dynamic.DynamicClient(kube_api)


@pytest.fixture(scope="session")
def kubectl(kubeconfig: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The pinned kubectl from the control-plane cache, bound to the test cluster."""
    binary = controlplane_lib("cp_bin kubectl")

    def invoke(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run(binary, "--kubeconfig", kubeconfig, *args, timeout=timeout)

    return invoke


def _established(ext: client.ApiextensionsV1Api) -> bool:
    status = ext.read_custom_resource_definition(crd.CRD_NAME).status
    conditions = (status.conditions if status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _served(objects: client.CustomObjectsApi) -> bool:
    try:
        objects.list_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, limit=1)
    except ApiException as exc:
        if exc.status == 404:  # discovery of a new group can lag Established by a moment
            return False
        raise
    return True


@pytest.fixture(scope="session")
def gp_crd(kube_api: client.ApiClient) -> dict[str, Any]:
    """The committed CRD, applied (server-side) and Established; returns the manifest."""
    manifest = yaml.safe_load(crd.CRD_PATH.read_text())
    ext = client.ApiextensionsV1Api(kube_api)
    ext.patch_custom_resource_definition(
        crd.CRD_NAME,
        manifest,
        field_manager=FIELD_MANAGER,
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    wait_until(f"CRD {crd.CRD_NAME} Established", lambda: _established(ext), timeout=30)
    wait_until(f"{crd.PLURAL} served", lambda: _served(client.CustomObjectsApi(kube_api)), timeout=30)
    return manifest


@pytest.fixture(scope="session")
def programs(kube_api: client.ApiClient, gp_crd: dict[str, Any]) -> client.CustomObjectsApi:
    """CustomObjectsApi, once the GamificationProgram CRD is served."""
    return client.CustomObjectsApi(kube_api)


def get_object(
    dyn: Any, api_version: str, kind: str, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    """One object through the dynamic client, or None when it does not exist."""
    try:
        found = dyn.get(dyn.resources.get(api_version=api_version, kind=kind), name=name, namespace=namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found.to_dict())
