"""Run a container of a pod the operator wrote as a local process: a kubelet stand-in for tests.

The test control plane has no kubelet, so pods never run. This module does, for one container,
what the kubelet would do before starting it, reading the Secrets and ConfigMaps from the API
server, and returns a `LocalCommand` (argv, env, cwd) that `subprocess` can run:

- argv: `command` + `args`, with Kubernetes' `$(VAR)` expansion; `argv[0]` is looked up on the
  stand-in image's PATH (`.venv/bin` first, so `gamify` is the project's console script);
- env: the stand-in image's own environment (PATH, HOME, LANG only: nothing leaks in from the
  test process, so the manifest alone must carry every setting), then `envFrom`, then `env`
  (later entries win, as in Kubernetes), with `value`, `secretKeyRef` and `configMapKeyRef`;
- volumes the container mounts: `configMap` and `secret` (their keys or `items` written as
  files, read-only when the mount is) and `emptyDir`, materialised in a temporary folder.

Two rewrites, and only these, because one machine is not a pod:
- mount paths: an env value, argument or `workingDir` that starts with a `mountPath` is
  rewritten to the folder that stands in for that mount (`/etc/gamify/program.yaml` →
  `<tmp>/volumes/program/program.yaml`);
- ports: every pod has its own network namespace, the processes here share one, so each
  declared `containerPort` is moved to a free local port, and a literal env value equal to a
  declared port (the port the process binds, e.g. `GAMIFY_INGEST_PORT=8080`) is rewritten to
  it. `LocalCommand.ports` maps container ports to local ones (probes use it).

Anything it cannot resolve fails loudly with `PodSpecError`: an unknown `valueFrom` kind
(`fieldRef`, `resourceFieldRef`), a missing Secret, ConfigMap or key (unless `optional`), a
mount of a volume the pod does not declare, a volume kind other than the three above, a
`$(VAR)` that names no earlier variable (Kubernetes would leave it verbatim; here it is a bug),
a container without `command` (the image's entrypoint is unknown here), a declared port no env
var sets (it could not be moved), and a `workingDir` inside the image.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = ROOT / ".venv" / "bin"
IMAGE_PATH = f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
Doc = dict[str, Any]

# $(NAME) is replaced, $$(NAME) is the literal text $(NAME) (Kubernetes' escaping).
_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class PodSpecError(Exception):
    """Something in the pod spec this stand-in cannot resolve (see the module docstring)."""


@dataclass(frozen=True)
class LocalCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    ports: Mapping[int, int] = field(default_factory=dict)  # containerPort -> local port
    port_names: Mapping[str, int] = field(default_factory=dict)  # port name -> containerPort

    def local_port(self, port: int | str) -> int:
        """The local port of a container port, given by number or name (as probes do)."""
        number = self.port_names.get(port) if isinstance(port, str) else port
        if number is None or number not in self.ports:
            raise PodSpecError(f"port {port!r} is not declared by the container")
        return self.ports[number]

    def probe_url(self, probe: Mapping[str, Any]) -> str:
        """The URL of an `httpGet` probe, on the local port."""
        get = probe.get("httpGet")
        if get is None:
            raise PodSpecError(f"only httpGet probes are supported, not {sorted(probe)}")
        scheme = get.get("scheme", "HTTP").lower()
        return f"{scheme}://127.0.0.1:{self.local_port(get['port'])}{get.get('path', '/')}"

    def start(self, log_path: Path) -> subprocess.Popen[bytes]:
        """Start the process in the background, stdout and stderr to `log_path`."""
        with log_path.open("ab") as log:
            return subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )


def resolve_container(
    pod_spec: Mapping[str, Any],
    container: str,
    namespace: str,
    core_api: client.CoreV1Api,
    *,
    root: Path | None = None,
) -> LocalCommand:
    """What the kubelet would run for `container` (a name in `pod_spec.containers`).

    `pod_spec` is the API's JSON shape (camelCase), e.g. a Deployment's `spec.template.spec`.
    Volumes and the working directory go under `root` (a new temporary folder by default).
    """
    spec = _container(pod_spec, container)
    root = root or Path(tempfile.mkdtemp(prefix=f"pod-{container}-"))
    objects = _Objects(core_api, namespace)
    mounts = _materialise_mounts(pod_spec, spec, objects, root / "volumes")
    ports, port_names = _free_ports(spec)

    # $(VAR) sees only what the manifest defines (not the image's env), as in Kubernetes.
    env = {name: _rewrite_mounts(value, mounts) for name, value in _env_from(spec, objects).items()}
    for item in spec.get("env", []):
        value = _env_value(item, env, objects)
        if value is None:
            continue
        value = _rewrite_mounts(value, mounts)
        env[item["name"]] = value if "valueFrom" in item else _remap_port(value, ports)
    _check_ports_reached(env, ports)

    if not spec.get("command"):
        raise PodSpecError(f"container {container!r} has no command: the image's entrypoint is unknown here")
    argv = [_rewrite_mounts(_expand(part, env), mounts) for part in [*spec["command"], *spec.get("args", [])]]
    # The image's own environment comes first; the container's env overrides it.
    env = {"PATH": IMAGE_PATH, "HOME": str(_mkdir(root / "home")), "LANG": "C.UTF-8", **env}
    executable = shutil.which(argv[0], path=env["PATH"])
    if executable is None:
        raise PodSpecError(f"{argv[0]!r} is not on the image's PATH ({env['PATH']})")
    argv[0] = executable
    cwd = _working_dir(spec, mounts, root)
    return LocalCommand(argv=argv, env=env, cwd=cwd, ports=ports, port_names=port_names)


# --- containers, Secrets and ConfigMaps --------------------------------------------------------------


def _container(pod_spec: Mapping[str, Any], name: str) -> Doc:
    for spec in pod_spec.get("containers", []):
        if spec["name"] == name:
            return dict(spec)
    names = [c["name"] for c in pod_spec.get("containers", [])]
    raise PodSpecError(f"no container {name!r} in the pod (containers: {names})")


class _Objects:
    """Secrets and ConfigMaps of the namespace as plain {key: text}, read once each."""

    def __init__(self, core_api: client.CoreV1Api, namespace: str):
        self.core_api = core_api
        self.namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    def data(self, kind: str, name: str, optional: bool = False) -> dict[str, str] | None:
        """`kind` is "Secret" or "ConfigMap"; None when missing and `optional`."""
        if (kind, name) not in self._cache:
            self._cache[(kind, name)] = self._read(kind, name)
        found = self._cache[(kind, name)]
        if found is None and not optional:
            raise PodSpecError(f"{kind} {self.namespace}/{name} does not exist")
        return found

    def value(self, kind: str, name: str, key: str, optional: bool = False) -> str | None:
        data = self.data(kind, name, optional)
        if data is None:
            return None
        if key not in data:
            if optional:
                return None
            raise PodSpecError(f"{kind} {self.namespace}/{name} has no key {key!r} (keys: {sorted(data)})")
        return data[key]

    def _read(self, kind: str, name: str) -> dict[str, str] | None:
        try:
            if kind == "Secret":
                secret = self.core_api.read_namespaced_secret(name, self.namespace)
                return _decoded(secret.data)
            config_map = self.core_api.read_namespaced_config_map(name, self.namespace)
            return {**(config_map.data or {}), **_decoded(config_map.binary_data)}
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise


def _decoded(data: Mapping[str, str | bytes] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode("utf-8") for key, value in (data or {}).items()}


# --- environment ---------------------------------------------------------------------------------


def _env_from(spec: Mapping[str, Any], objects: _Objects) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            ref, kind = source["secretRef"], "Secret"
        elif "configMapRef" in source:
            ref, kind = source["configMapRef"], "ConfigMap"
        else:
            raise PodSpecError(f"unknown envFrom source {sorted(source)}")
        data = objects.data(kind, ref["name"], bool(ref.get("optional")))
        env.update({prefix + key: value for key, value in (data or {}).items()})
    return env


def _env_value(item: Mapping[str, Any], earlier: Mapping[str, str], objects: _Objects) -> str | None:
    """The value of one `env` entry; None when an optional reference is missing (not set)."""
    if "valueFrom" not in item:
        return _expand(item.get("value", ""), earlier)
    source = item["valueFrom"]
    if set(source) == {"secretKeyRef"}:
        ref, kind = source["secretKeyRef"], "Secret"
    elif set(source) == {"configMapKeyRef"}:
        ref, kind = source["configMapKeyRef"], "ConfigMap"
    else:
        raise PodSpecError(f"env {item['name']}: cannot resolve valueFrom {sorted(source)} without a kubelet")
    # Values from Secrets and ConfigMaps are never $(VAR)-expanded (only literal values are).
    return objects.value(kind, ref["name"], ref["key"], bool(ref.get("optional")))


def _expand(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        if name not in env:
            raise PodSpecError(f"$({name}) in {text!r} names no variable defined before it")
        return env[name]

    return _REFERENCE.sub(replace, text)


# --- volumes -------------------------------------------------------------------------------------


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _materialise_mounts(
    pod_spec: Mapping[str, Any], spec: Mapping[str, Any], objects: _Objects, base: Path
) -> list[tuple[str, Path]]:
    """Write every volume the container mounts; return (mountPath, local path), longest first."""
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    mounts = []
    for mount in spec.get("volumeMounts", []):
        volume = volumes.get(mount["name"])
        if volume is None:
            raise PodSpecError(f"volumeMount {mount['mountPath']!r} names no volume {mount['name']!r}")
        if "subPathExpr" in mount:
            raise PodSpecError(f"volumeMount {mount['mountPath']!r}: subPathExpr is not supported")
        folder = base / volume["name"]
        if not folder.exists():
            _write_volume(volume, objects, _mkdir(folder))
        local = folder / mount["subPath"] if mount.get("subPath") else folder
        if mount.get("readOnly"):
            for path in folder.rglob("*"):
                if path.is_file():
                    path.chmod(0o444)
        mounts.append((mount["mountPath"].rstrip("/") or "/", local))
    return sorted(mounts, key=lambda pair: len(pair[0]), reverse=True)


def _write_volume(volume: Mapping[str, Any], objects: _Objects, folder: Path) -> None:
    if "emptyDir" in volume:
        return
    if "configMap" in volume:
        source, kind, name = volume["configMap"], "ConfigMap", volume["configMap"]["name"]
    elif "secret" in volume:
        source, kind, name = volume["secret"], "Secret", volume["secret"]["secretName"]
    else:
        kinds = sorted(set(volume) - {"name"})
        raise PodSpecError(f"volume {volume['name']!r}: kind {kinds} is not supported here")
    optional = bool(source.get("optional"))
    data = objects.data(kind, name, optional)
    if data is None:
        return  # optional and missing: an empty folder, as the kubelet mounts it
    items = source.get("items") or [{"key": key, "path": key} for key in data]
    for item in items:
        if item["key"] not in data:
            raise PodSpecError(f"volume {volume['name']!r}: {kind} {name} has no key {item['key']!r}")
        target = (folder / item["path"]).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise PodSpecError(f"volume {volume['name']!r}: item path {item['path']!r} leaves the volume")
        _mkdir(target.parent).joinpath(target.name).write_text(data[item["key"]])


def _rewrite_mounts(value: str, mounts: list[tuple[str, Path]]) -> str:
    for mount_path, local in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return str(local) + value[len(mount_path) :]
    return value


def _working_dir(spec: Mapping[str, Any], mounts: list[tuple[str, Path]], root: Path) -> Path:
    wanted = spec.get("workingDir")
    if not wanted:
        return _mkdir(root / "workdir")  # the image's WORKDIR stand-in
    local = _rewrite_mounts(wanted, mounts)
    if local == wanted:
        raise PodSpecError(f"workingDir {wanted!r} is inside the image, not in a mounted volume")
    return Path(local)


# --- ports ---------------------------------------------------------------------------------------


def _free_ports(spec: Mapping[str, Any]) -> tuple[dict[int, int], dict[str, int]]:
    declared = spec.get("ports", [])
    ports = {int(port["containerPort"]): free_port() for port in declared}
    names = {port["name"]: int(port["containerPort"]) for port in declared if port.get("name")}
    return ports, names


def _remap_port(value: str, ports: Mapping[int, int]) -> str:
    return str(ports[int(value)]) if value.isdigit() and int(value) in ports else value


def _check_ports_reached(env: Mapping[str, str], ports: Mapping[int, int]) -> None:
    for container_port, local in ports.items():
        if str(local) not in env.values():
            raise PodSpecError(
                f"containerPort {container_port} is set by no env var: it cannot be moved to a free port"
            )


def pod_spec_of(workload: Mapping[str, Any]) -> Doc:
    """The pod spec of a Deployment or a CronJob (API JSON shape)."""
    kind = workload.get("kind")
    if kind == "Deployment":
        return dict(workload["spec"]["template"]["spec"])
    if kind == "CronJob":
        return dict(workload["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    raise PodSpecError(f"no pod template in a {kind}")
