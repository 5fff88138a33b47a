"""The kind path (scripts/kind/, docs/kind.md) on a machine without Docker: what can be proved here.

- every script parses (`bash -n`) and is shellcheck-clean;
- `make images`, `kind-up`, `deploy` and `kind-down` fail at once with a helpful message when a
  tool is missing (PATH without it) or when the docker CLI finds no engine (a stub `docker`);
- the operator values deploy.sh passes to helm (`kind_operator_helm_args`) pass the chart's
  schema and `helm lint --strict` with the REAL helm (control-plane cache; missing: FAIL), and
  render an operator that uses the loaded image and the emulator, with names matching the
  manifests deploy.sh applies (NATS release, MySQL and fake-gcs Services, the bucket);
- program.py turns the example into a document whose dates include today.

Not proved here: that a kind cluster comes up and the program's pods run (needs Docker).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "scripts" / "kind"
CHART = ROOT / "charts" / "gamification-operator"
SCRIPTS = sorted(KIND.glob("*.sh"))
ENTRY_SCRIPTS = ["images.sh", "up.sh", "deploy.sh", "down.sh"]
HIDDEN_TOOLS = {"docker", "kind", "kubectl", "helm"}


Completed = subprocess.CompletedProcess[str]


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env, check=False
    )


def lib(expression: str, env: dict[str, str] | None = None) -> str:
    """What `expression` prints with scripts/kind/lib.sh sourced."""
    result = run("bash", "-c", f'source "{KIND}/lib.sh" && {expression}', env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_there_are_scripts() -> None:
    assert {path.name for path in SCRIPTS} >= {*ENTRY_SCRIPTS, "lib.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_bash_syntax(script: Path) -> None:
    result = run("bash", "-n", str(script))
    assert result.returncode == 0, result.stderr


def test_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck is not installed (apt-get install shellcheck)")
    result = run(shellcheck, "-x", *map(str, SCRIPTS))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_are_strict_and_executable(script: str) -> None:
    path = KIND / script
    assert os.access(path, os.X_OK)
    assert "set -euo pipefail" in path.read_text()


@pytest.fixture(scope="module")
def path_without_tools(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with the machine's usual commands but none of docker, kind, kubectl, helm."""
    bin_dir = tmp_path_factory.mktemp("bin-without-tools")
    for directory in ("/usr/local/bin", "/usr/bin", "/bin"):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            target = bin_dir / name
            if name in HIDDEN_TOOLS or target.exists():
                continue
            target.symlink_to(os.path.join(directory, name))
    return str(bin_dir)


def env_with(path: str, **extra: str) -> dict[str, str]:
    return {"PATH": path, "HOME": os.environ.get("HOME", "/tmp"), **extra}


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_missing_tools_fail_fast_with_help(script: str, path_without_tools: str) -> None:
    result = run("bash", str(KIND / script), env=env_with(path_without_tools), timeout=20)
    assert result.returncode != 0
    assert "missing tools: docker" in result.stderr
    assert "https://docs.docker.com/engine/install/" in result.stderr
    assert "docs/kind.md" in result.stderr
    if script != "images.sh":  # images.sh needs docker only
        assert "kind" in result.stderr.split("missing tools:")[1].splitlines()[0]
        assert "https://kind.sigs.k8s.io/" in result.stderr


def test_make_images_without_docker_says_so(path_without_tools: str) -> None:
    make = shutil.which("make")
    assert make is not None
    result = run(make, "images", env=env_with(path_without_tools), timeout=30)
    assert result.returncode != 0
    assert "missing tools: docker" in result.stderr


@pytest.fixture
def stub_tools(tmp_path: Path, path_without_tools: str) -> str:
    """docker/kind/kubectl/helm that exist but reach nothing: `docker info` fails like a CLI
    without a daemon; every call is recorded, so nothing past the engine check runs."""
    calls = tmp_path / "calls"
    for tool in sorted(HIDDEN_TOOLS):
        stub = tmp_path / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n[ "$1" = info ] && exit 1\nexit 0\n')
        stub.chmod(0o755)
    return f"{tmp_path}:{path_without_tools}"


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_no_docker_engine_fails_fast_with_help(script: str, stub_tools: str) -> None:
    result = run("bash", str(KIND / script), env=env_with(stub_tools), timeout=20)
    assert result.returncode != 0
    assert "no Docker engine" in result.stderr
    assert "docs/kind.md" in result.stderr
    calls = (Path(stub_tools.split(":")[0]) / "calls").read_text().splitlines()
    assert calls == ["docker info"], "nothing may run before the engine check"


# --- the operator values deploy.sh gives helm --------------------------------------------------


@pytest.fixture(scope="module")
def helm_binary() -> str:
    result = run("bash", "-c", f'source "{ROOT}/scripts/controlplane/lib.sh" && cp_bin helm')
    path = result.stdout.strip()
    if result.returncode != 0 or not os.access(path, os.X_OK):
        pytest.fail(f"helm is missing at {path!r}: build it with `make cluster-build`")
    return path


@pytest.fixture(scope="module")
def helm_args() -> list[str]:
    return lib("kind_operator_helm_args").splitlines()


@pytest.fixture(scope="module")
def rendered(helm_binary: str, helm_args: list[str]) -> list[dict[str, Any]]:
    result = run(helm_binary, "template", "gamify", str(CHART), *helm_args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_helm_args_name_the_values_file_and_image(helm_args: list[str]) -> None:
    version = lib('echo "$GAMIFY_KIND_VERSION"').strip()
    assert version and version == lib('echo "$KIND_IMAGE"').strip().split(":")[1]
    assert helm_args == [
        "--namespace",
        "gamify-system",
        "--values",
        str(KIND / "operator-values.yaml"),
        "--set",
        "image.repository=gamify",
        "--set",
        f"image.tag={version}",
    ]


def test_values_pass_helm_lint_strict(helm_binary: str, helm_args: list[str]) -> None:
    result = run(helm_binary, "lint", "--strict", str(CHART), *helm_args)
    assert result.returncode == 0, result.stdout + result.stderr


def operator_env(rendered: list[dict[str, Any]]) -> dict[str, str]:
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


def test_rendered_operator_uses_loaded_image_and_emulator(rendered: list[dict[str, Any]]) -> None:
    (deployment,) = [doc for doc in rendered if doc["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == lib('echo "$KIND_OPERATOR_DEPLOYMENT"').strip()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == lib('echo "$KIND_IMAGE"').strip()
    assert container["imagePullPolicy"] == "Never"
    env = operator_env(rendered)
    assert env["GAMIFY_IMAGE_REPOSITORY"] == "gamify"
    assert env["GAMIFY_IMAGE_PULL_POLICY"] == "Never"
    assert env["STORAGE_EMULATOR_HOST"] == "http://fake-gcs.gcs.svc.cluster.local:4443"
    workload_env = json.loads(env["GAMIFY_WORKLOAD_ENV"])
    assert workload_env["STORAGE_EMULATOR_HOST"] == env["STORAGE_EMULATOR_HOST"]
    assert env["GAMIFY_STORAGE_PORT"] == "4443"
    assert env["GAMIFY_METADATA_SERVER_EGRESS"] == "false"
    assert env["GAMIFY_MYSQL_URL"] == {"secretKeyRef": {"name": "gamify-mysql-admin", "key": "url"}}


def test_values_match_the_manifests_deploy_applies(rendered: list[dict[str, Any]]) -> None:
    env = operator_env(rendered)
    services = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc
        for path in (KIND / "mysql.yaml", KIND / "fake-gcs.yaml")
        for doc in documents(path)
        if doc["kind"] == "Service"
    }
    # NATS: chart nats/nats, release `nats` in namespace `nats` -> Service nats.nats.
    assert env["GAMIFY_NATS_URL"] == "nats://nats.nats.svc.cluster.local:4222"
    assert env["GAMIFY_NATS_NAMESPACE"] == lib('echo "$KIND_NATS_NAMESPACE"').strip()
    assert ("mysql", "mysql") in services and services["mysql", "mysql"]["spec"]["ports"][0]["port"] == 3306
    assert lib('echo "$KIND_MYSQL_HOST"').strip() == "mysql.mysql.svc.cluster.local"
    assert env["GAMIFY_MYSQL_NAMESPACE"] == "mysql"
    mysql_labels = services["mysql", "mysql"]["spec"]["selector"]
    assert env["GAMIFY_MYSQL_POD_LABELS"] == ",".join(f"{k}={v}" for k, v in mysql_labels.items())
    gcs = services["gcs", "fake-gcs"]
    assert gcs["spec"]["ports"][0]["port"] == int(env["GAMIFY_STORAGE_PORT"])
    # The bucket the values name is the folder fake-gcs turns into a bucket.
    (fake_gcs,) = [doc for doc in documents(KIND / "fake-gcs.yaml") if doc["kind"] == "Deployment"]
    (init,) = fake_gcs["spec"]["template"]["spec"]["initContainers"]
    assert env["GAMIFY_BUCKET"] == "gs://gamify-snapshots"
    assert init["command"][-1] == "/data/gamify-snapshots"


def test_manifests_name_the_pinned_images() -> None:
    """deploy.sh swaps an overridden image for these defaults with sed: they must match."""
    images = {
        path.name: {
            container["image"]
            for doc in documents(path)
            if doc["kind"] in ("Deployment", "StatefulSet")
            for key in ("containers", "initContainers")
            for container in doc["spec"]["template"]["spec"].get(key, [])
        }
        for path in (KIND / "mysql.yaml", KIND / "fake-gcs.yaml")
    }
    assert images["mysql.yaml"] == {lib('echo "$KIND_DEFAULT_MYSQL_IMAGE"').strip()}
    assert images["fake-gcs.yaml"] == {lib('echo "$KIND_DEFAULT_FAKE_GCS_IMAGE"').strip()}


def test_kind_cluster_config_shape() -> None:
    (config,) = documents(KIND / "cluster.yaml")
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["name"] == lib('echo "$GAMIFY_KIND_CLUSTER"').strip()


# --- the example program deploy.sh applies -----------------------------------------------------


def program_json(path: Path) -> dict[str, Any]:
    result = run(sys.executable, str(KIND / "program.py"), str(path))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def assert_active_now(document: dict[str, Any]) -> None:
    schedule = document["spec"]["schedule"]
    now = datetime.now(UTC)
    assert datetime.fromisoformat(schedule["start"]) <= now < datetime.fromisoformat(schedule["end"])


def test_example_program_is_active_today() -> None:
    document = program_json(ROOT / "examples" / "ranking-launch.yaml")
    assert document["metadata"]["name"] == "acme-move-2027"
    assert_active_now(document)


def test_past_program_is_rebased(tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / "examples" / "ranking-launch.yaml").read_text())
    document["spec"]["schedule"].update(start="2020-01-01T00:00:00-03:00", end="2020-03-01T00:00:00-03:00")
    for boost in document["spec"]["boosts"]:
        boost.update(start="2020-01-01T00:00:00-03:00", end="2020-01-02T00:00:00-03:00")
    past = tmp_path / "past.yaml"
    past.write_text(yaml.safe_dump(document))
    rebased = program_json(past)
    assert_active_now(rebased)
    # Whole days: the time of day and the offset stay; the length stays.
    assert rebased["spec"]["schedule"]["start"].endswith("T00:00:00-03:00")
    start = datetime.fromisoformat(rebased["spec"]["schedule"]["start"])
    end = datetime.fromisoformat(rebased["spec"]["schedule"]["end"])
    assert (end - start).days == 60
