"""The operator keeps secrets in Secrets: never in Events, status, its log, ConfigMaps or pod env.

A real operator process (DEBUG logging) on a real API server provisions programs with every
secret in play: the program's API keys and database password (generated into its Secrets), a
MySQL admin password, and NATS URLs carrying passwords (the operator's own and the one its
workloads get). Everything a user or another workload can read is then searched for each
secret, raw and base64-encoded: the GamificationProgram (status and annotations), the Events,
the operator's log, every ConfigMap and every other object in the program's namespace; pods get
secrets only through `secretKeyRef`/Secret volumes, and never the plain API keys. The error path
too: a provisioning failure (wrong admin password) reported in status and Events names no secret.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from gamify.naming import ProgramNames
from gamify.settings import Servers
from gamify_operator import crd
from gamify_operator.kube import NAMESPACED_CHILD_KINDS
from tests.cluster import wait_until
from tests.conftest import unique_program_id
from tests.integration.test_secrets_never_leak import admin_with_password, signed_in, with_password
from tests.operator.harness import (
    OperatorProcess,
    new_run,
    operator_env,
    program_document,
    read_program,
    running_operator,
)

RUN = new_run("leak")
Doc = dict[str, Any]
# Env a pod may only get from a Secret (secretKeyRef), never as a literal value.
SECRET_ENV = {"GAMIFY_DATABASE_URL", "GAMIFY_NATS_URL", "GAMIFY_API_KEY_HASHES"}
# Keys of `<program>-api-keys` that hold plain keys: for the program manager, never for a pod.
PLAIN_KEY_ENTRIES = {"api-key", "api-keys"}


# --- fixtures ------------------------------------------------------------------------------------------


class Passwords:
    def __init__(self) -> None:
        self.operator_nats = f"opnats{secrets.token_hex(12)}"
        self.workload_nats = f"wlnats{secrets.token_hex(12)}"
        self.admin = ""


@pytest.fixture(scope="module")
def passwords() -> Passwords:
    return Passwords()


@pytest.fixture(scope="module")
def admin_url(mysql_admin_url: str, passwords: Passwords) -> Iterator[str]:
    with admin_with_password(mysql_admin_url) as (url, password):
        passwords.admin = password
        yield url


CREATED: list[str] = []


@pytest.fixture(scope="module")
def operator(
    kubeconfig: str,
    programs: client.CustomObjectsApi,
    nats_url: str,
    mysql_admin_url: str,
    admin_url: str,
    bucket: str,
    passwords: Passwords,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    home = tmp_path_factory.mktemp("leak-operator")
    operator_nats_url, passwords.operator_nats = signed_in(nats_url, "operator", passwords.operator_nats)
    env = operator_env(
        kubeconfig,
        RUN,
        nats_url=operator_nats_url,
        mysql_url=admin_url,
        bucket=bucket,
        log_level="DEBUG",
        extra={
            "GAMIFY_HOME": str(home / "home"),
            "GAMIFY_WORKLOAD_NATS_URL": with_password(nats_url, "workload", passwords.workload_nats),
        },
    )
    servers = Servers(nats_url=nats_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{bucket}")
    with running_operator(env, home / "operator.log", programs, RUN, servers, CREATED) as process:
        yield process


# --- helpers ---------------------------------------------------------------------------------------------


def create(programs: client.CustomObjectsApi, prefix: str) -> str:
    name = unique_program_id(prefix)
    CREATED.append(name)
    document = program_document(name, RUN, retention={"onDelete": "Delete"})
    programs.create_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, document)
    return name


def wait_for(programs: client.CustomObjectsApi, name: str, check: Callable[[Doc], bool], what: str) -> Doc:
    def probe() -> Doc | None:
        body = read_program(programs, name)
        return body if check(body) else None

    found: Doc = wait_until(f"{name}: {what}", probe, timeout=90, interval=0.3)
    return found


def is_active(body: Doc) -> bool:
    state = body.get("status") or {}
    return bool(
        state.get("phase") == "Active" and state.get("observedGeneration") == body["metadata"]["generation"]
    )


def database_failed(body: Doc) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Database" and c["status"] == "False" for c in conditions)


def events_of(kube_api: client.ApiClient, name: str) -> list[Doc]:
    """Every Event about the program, or in its namespace (wherever the operator posted it)."""
    core = client.CoreV1Api(kube_api)
    about = core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={name}").items
    try:
        inside = core.list_namespaced_event(ProgramNames(name).namespace).items
    except ApiException:
        inside = []
    return [kube_api.sanitize_for_serialization(event) for event in [*about, *inside]]


def namespace_objects(dyn: dynamic.DynamicClient, name: str) -> dict[str, list[Doc]]:
    """Every object of the program's kinds (and Pods, Jobs) in its namespace, by kind."""
    namespace = ProgramNames(name).namespace
    found: dict[str, list[Doc]] = {}
    for api_version, kind in (*NAMESPACED_CHILD_KINDS, ("v1", "Pod"), ("batch/v1", "Job")):
        resource = dyn.resources.get(api_version=api_version, kind=kind)
        found[kind] = list(dyn.get(resource, namespace=namespace).to_dict()["items"])
    return found


def decoded_secret_values(objects: dict[str, list[Doc]]) -> dict[str, str]:
    """`<secret>/<key>` -> plain value, for every Secret of the program."""
    values = {}
    for secret in objects["Secret"]:
        for key, value in (secret.get("data") or {}).items():
            values[f"{secret['metadata']['name']}/{key}"] = base64.b64decode(value).decode()
    return values


def forms(value: str) -> list[str]:
    """A secret as it could appear: itself, or base64-encoded (as in a Secret's data)."""
    return [value, base64.b64encode(value.encode()).decode()]


def assert_clean(where: str, haystack: str, secret_values: dict[str, str]) -> None:
    for label, value in secret_values.items():
        assert value, f"{label}: an empty secret proves nothing"
        for form in forms(value):
            assert form not in haystack, f"{label} leaked into {where}"


def pod_specs(objects: dict[str, list[Doc]]) -> list[tuple[str, Doc]]:
    specs = [
        (f"Deployment/{d['metadata']['name']}", d["spec"]["template"]["spec"]) for d in objects["Deployment"]
    ]
    specs += [
        (f"CronJob/{c['metadata']['name']}", c["spec"]["jobTemplate"]["spec"]["template"]["spec"])
        for c in objects["CronJob"]
    ]
    specs += [(f"Job/{j['metadata']['name']}", j["spec"]["template"]["spec"]) for j in objects["Job"]]
    specs += [(f"Pod/{p['metadata']['name']}", p["spec"]) for p in objects["Pod"]]
    return specs


def program_secrets(objects: dict[str, list[Doc]], name: str, passwords: Passwords) -> dict[str, str]:
    """The values that must never show outside a Secret (hashes and host names are not secret)."""
    stored = decoded_secret_values(objects)
    wanted = {
        label: value
        for label, value in stored.items()
        if label.endswith(("/api-key", "/password", "/url", "/credentials"))
    }
    for number, key in enumerate(stored.get(f"{name}-api-keys/api-keys", "").split()):
        wanted[f"api key #{number}"] = key
    assert {f"{name}-api-keys/api-key", f"{name}-database/password", f"{name}-database/url"} <= set(wanted)
    assert passwords.workload_nats in stored.get(f"{name}-nats/url", ""), (
        "the workload NATS URL is not in its Secret"
    )
    return {
        **wanted,
        "admin password": passwords.admin,
        "operator NATS password": passwords.operator_nats,
        "workload NATS password": passwords.workload_nats,
    }


def readable_surfaces(
    kube_api: client.ApiClient, programs: client.CustomObjectsApi, operator: OperatorProcess, name: str
) -> dict[str, str]:
    body = read_program(programs, name)
    outside_spec = {key: value for key, value in body.items() if key != "spec"}
    return {
        "the GamificationProgram (metadata, status)": json.dumps(outside_spec),
        "Events": json.dumps(events_of(kube_api, name)),
        "the operator's log": operator.log(),
    }


def check_pod_spec(owner: str, spec: Doc, name: str, secret_names: set[str], hidden: dict[str, str]) -> int:
    """Assert one pod spec takes secrets by reference only; return how many it references."""
    api_keys_secret, referenced = f"{name}-api-keys", 0
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        where = f"{owner} container {container['name']}"
        assert_clean(
            f"{where} command", json.dumps([container.get("command"), container.get("args")]), hidden
        )
        for item in container.get("env", []):
            if "value" in item:
                assert item["name"] not in SECRET_ENV, f"{where}: {item['name']} is a literal value"
                assert_clean(f"{where} env {item['name']}", item["value"], hidden)
                continue
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if item["name"] in SECRET_ENV:
                assert ref is not None and ref["name"] in secret_names, (
                    f"{where}: {item['name']} not by reference"
                )
                referenced += 1
            if ref is not None:
                assert not (ref["name"] == api_keys_secret and ref["key"] in PLAIN_KEY_ENTRIES), where
        for source in container.get("envFrom", []):
            assert (source.get("secretRef") or {}).get("name") != api_keys_secret, where
    for volume in spec.get("volumes", []):
        mounted = volume.get("secret")
        if mounted is not None and mounted["secretName"] == api_keys_secret:
            keys = {item["key"] for item in mounted.get("items", [])} or PLAIN_KEY_ENTRIES
            assert not keys & PLAIN_KEY_ENTRIES, f"{owner}: the plain API keys are mounted"
    return referenced


# --- tests -----------------------------------------------------------------------------------------------


def test_no_secret_outside_secrets(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    dyn: dynamic.DynamicClient,
    passwords: Passwords,
) -> None:
    name = create(programs, "leak")
    wait_for(programs, name, is_active, "Active")
    objects = namespace_objects(dyn, name)
    hidden = program_secrets(objects, name, passwords)
    hashes = decoded_secret_values(objects)[f"{name}-api-keys/api-key-hashes"]

    surfaces = readable_surfaces(kube_api, programs, operator, name)
    assert (
        '"level": "DEBUG"' in surfaces["the operator's log"]
        or '"level":"DEBUG"' in surfaces["the operator's log"]
    )
    for kind, items in objects.items():
        if kind != "Secret":
            surfaces[f"{kind} objects"] = json.dumps(items)
    assert objects["ConfigMap"] and objects["Deployment"] and objects["CronJob"]
    for where, content in surfaces.items():
        assert_clean(where, content, hidden)

    # Pods: secrets come from Secrets only, by reference; the plain API keys never reach a pod.
    secret_names = {s["metadata"]["name"] for s in objects["Secret"]}
    checked = sum(
        check_pod_spec(owner, spec, name, secret_names, {**hidden, "key hashes": hashes})
        for owner, spec in pod_specs(objects)
    )
    assert checked >= 4, "expected ingest, scoring and snapshots to read their secrets by reference"


def test_a_provisioning_failure_reports_no_secret(
    operator: OperatorProcess,
    programs: client.CustomObjectsApi,
    kube_api: client.ApiClient,
    dyn: dynamic.DynamicClient,
    passwords: Passwords,
    admin_url: str,
    mysql_admin_url: str,
) -> None:
    # The admin's password changes under the operator: provisioning the schema fails, and the
    # failure (status condition, Warning Event, log) must name neither the old nor the new one.
    admin_user = admin_url.split("://", 1)[1].split(":", 1)[0]
    changed = f"changedpw{secrets.token_hex(12)}"
    root = create_engine(mysql_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def set_admin_password(password: str) -> None:
        with root.connect() as connection:
            connection.execute(text("ALTER USER :u@'%' IDENTIFIED BY :p"), {"u": admin_user, "p": password})

    try:
        set_admin_password(changed)
        name = create(programs, "leakfail")
        failed = wait_for(programs, name, database_failed, "Database condition False")
        message = next(c["message"] for c in failed["status"]["conditions"] if c["type"] == "Database")
        assert "Access denied" in message, message
        wait_until(
            "a ProvisioningFailed Event",
            lambda: any(e.get("reason") == "ProvisioningFailed" for e in events_of(kube_api, name)),
            timeout=30,
        )
    finally:
        set_admin_password(passwords.admin)
        root.dispose()
    # Once the password is right again, the operator recovers by itself.
    wait_for(programs, name, is_active, "Active after the admin password is restored")
    objects = namespace_objects(dyn, name)
    hidden = {**program_secrets(objects, name, passwords), "the changed admin password": changed}
    for where, content in readable_surfaces(kube_api, programs, operator, name).items():
        assert_clean(where, content, hidden)
