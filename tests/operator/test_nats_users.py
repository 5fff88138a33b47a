"""Per-program NATS users in the operator (issue 5): the program Secrets, the pods, the users Secret.

First the pure parts (configuration, builders), then a real operator process on the real API
server with `GAMIFY_NATS_USERS_SECRET` set, reading back what it wrote:
- each program's `<program>-nats` Secret holds both users, their passwords and bcrypt hashes,
  and a NATS URL without any login; the passwords survive reconciles and an operator restart
  (SIGKILL), and a restarted operator rewrites nothing;
- ingest and scoring get GAMIFY_NATS_USER / GAMIFY_NATS_PASSWORD by `secretKeyRef` only;
- the NATS server's users Secret (written at start-up, with the admin alone) lists both
  programs' users with hashes only, never a plain password; deleting a program drops its users;
- concurrent writers (several operators) converge on the full content (409 and retry).
The NATS server accepting these users is the end-to-end test's part (tests/e2e).
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import bcrypt
import pytest
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException

from gamify.naming import ProgramNames
from gamify.program import parse_program
from gamify.provisioning.nats_auth import ProgramNatsCredentials, hash_password, wait_until_accepted
from gamify.settings import Servers
from gamify_operator import crd
from gamify_operator.builders import ProgramSecrets, build_all
from gamify_operator.builders.labels import ChildNames
from gamify_operator.builders.nats_users import (
    ADMIN_HASH_KEY,
    USERS_KEY,
    admin_hash,
    program_hashes,
    users_secret,
)
from gamify_operator.builders.secrets import LABEL_NATS_USERS, nats_secret
from gamify_operator.config import ConfigError, OperatorConfig, SecretRef
from gamify_operator.kube import Kube, KubeError
from gamify_operator.nats_users import NatsUsers
from gamify_operator.reconcile import nats_users_of
from tests.cluster import get_object, wait_until
from tests.conftest import unique_program_id
from tests.operator.harness import (
    RUN_LABEL,
    OperatorProcess,
    labelled_namespace,
    new_run,
    operator_env,
    program_document,
    read_program,
    running_operator,
)
from tests.operator.private_nats import PrivateNats

RUN = new_run("natsusers")
USERS_SECRET = "gamify-nats-users"
NATS_KEYS = {
    "url",
    "ingest-user",
    "ingest-password",
    "ingest-password-hash",
    "scoring-user",
    "scoring-password",
    "scoring-password-hash",
}
Doc = dict[str, Any]


def decoded(data: dict[str, str] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def users_in(include: str) -> dict[str, Doc]:
    """The `authorization { users: [...] }` include, parsed: {user: entry}."""
    body = "\n".join(line for line in include.splitlines() if not line.startswith("#"))
    assert body.startswith("authorization "), include[:200]
    return {entry["user"]: entry for entry in json.loads(body.removeprefix("authorization "))["users"]}


# --- pure: configuration and builders -----------------------------------------------------------------


def test_config_reads_the_users_secret_and_needs_the_admin_login() -> None:
    env = {"GAMIFY_NATS_URL": "nats://op:s3cret@nats.nats:4222", "GAMIFY_NATS_USERS_SECRET": "nats/users"}
    config = OperatorConfig.from_env(env)
    assert config.nats_users_secret == SecretRef("nats", "users")
    assert (config.nats_admin().user, config.nats_admin().password) == ("op", "s3cret")
    # The pods get the URL without any login; the operator keeps its own.
    assert config.workload_nats_url_for_pods == "nats://nats.nats:4222"
    assert "s3cret" not in repr(config.nats_admin())

    off = OperatorConfig.from_env({"GAMIFY_NATS_URL": "nats://op:s3cret@nats.nats:4222"})
    assert off.nats_users_secret is None and not off.nats_users_enabled
    assert off.workload_nats_url_for_pods == "nats://op:s3cret@nats.nats:4222"  # as before

    with pytest.raises(ConfigError, match="GAMIFY_NATS_URL") as refused:
        OperatorConfig.from_env({"GAMIFY_NATS_URL": "nats://op@nats:4222", "GAMIFY_NATS_USERS_SECRET": "n/u"})
    assert "op@" not in str(refused.value)
    for bad in ("users", "nats/", "/users", "Nats/users", "nats/users/x"):
        with pytest.raises(ConfigError, match="GAMIFY_NATS_USERS_SECRET"):
            OperatorConfig.from_env({"GAMIFY_NATS_URL": "nats://a:b@n:4222", "GAMIFY_NATS_USERS_SECRET": bad})


def test_program_passwords_are_kept_and_hashes_follow_them() -> None:
    credentials, hashes, generated = nats_users_of("acme", None)
    assert generated
    data = nats_secret(_program("acme"), "nats://n:4222", credentials, hashes)["data"]
    again, again_hashes, generated_again = nats_users_of("acme", data)
    assert not generated_again
    assert (again.ingest_password, again.scoring_password) == (
        credentials.ingest_password,
        credentials.scoring_password,
    )
    assert again_hashes == hashes  # same salt: the users Secret does not change
    # A password replaced by hand gets a new hash; the other stays as it was.
    edited = {**data, "ingest-password": base64.b64encode(b"by-hand-0123456789").decode()}
    third, third_hashes, _ = nats_users_of("acme", edited)
    assert third.ingest_password == "by-hand-0123456789"
    assert bcrypt.checkpw(b"by-hand-0123456789", third_hashes["ingest"].encode())
    assert third_hashes["scoring"] == hashes["scoring"]


def _program(name: str) -> Any:
    return parse_program(program_document(name, RUN))


def test_users_secret_has_hashes_only_and_ignores_secrets_out_of_place() -> None:
    secrets_ = []
    for name in ("prog-a", "prog-b"):
        credentials, hashes, _ = nats_users_of(name, None)
        secrets_.append(nats_secret(_program(name), "nats://n:4222", credentials, hashes))
    # A labelled copy of prog-b's Secret in another namespace, and one under another name.
    elsewhere = json.loads(json.dumps(secrets_[1]))
    elsewhere["metadata"]["namespace"] = "intruder"
    renamed = json.loads(json.dumps(secrets_[0]))
    renamed["metadata"]["name"] = "other"
    renamed["metadata"]["labels"]["gamification.io/program"] = "prog-c"
    found = program_hashes([*secrets_, elsewhere, renamed])
    assert sorted(found) == ["prog-a", "prog-b"]

    admin = hash_password("admin-pw")
    secret = users_secret(USERS_SECRET, "nats", "operator", admin, found)
    users = users_in(decoded(secret["data"])[USERS_KEY])
    assert sorted(users) == [
        "gamify.prog-a.ingest",
        "gamify.prog-a.scoring",
        "gamify.prog-b.ingest",
        "gamify.prog-b.scoring",
        "operator",
    ]
    assert all(entry["password"].startswith("$2") for entry in users.values())
    assert users["gamify.prog-a.ingest"]["permissions"]["publish"]["allow"][0] == "gamify.prog-a.events.>"
    text = json.dumps(secret)
    for program_secret in secrets_:
        for key in ("ingest-password", "scoring-password"):
            plain = decoded(program_secret["data"])[key]
            assert plain not in text and base64.b64encode(plain.encode()).decode() not in text
    # The admin's hash is kept while it matches; a changed password gets a new one.
    assert admin_hash("admin-pw", secret["data"]) == admin
    assert admin_hash("changed", secret["data"]) != admin
    assert decoded(secret["data"])[ADMIN_HASH_KEY] == admin


def test_pods_read_their_own_user_by_secret_key_ref() -> None:
    config = OperatorConfig(
        nats_url="nats://op:pw@n:4222",
        workload_nats_url="nats://op:pw@n:4222",
        nats_users_secret=SecretRef("nats", USERS_SECRET),
    )
    program = _program("prog-a")
    credentials, hashes, _ = nats_users_of("prog-a", None)
    values = ProgramSecrets(
        api_keys=["gk_x"],
        database_url="mysql+pymysql://u:p@h:3306/d",
        nats_url=config.workload_nats_url_for_pods,
        nats_credentials=credentials,
        nats_password_hashes=hashes,
    )
    objects = build_all(program, config, values)
    nats = next(o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == "prog-a-nats")
    assert set(nats["data"]) == NATS_KEYS
    assert nats["metadata"]["labels"][LABEL_NATS_USERS] == "true"
    assert decoded(nats["data"])["url"] == "nats://n:4222"
    for workload in ("ingest", "scoring"):
        deployment = next(
            o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == workload
        )
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for variable, key in (
            ("GAMIFY_NATS_USER", f"{workload}-user"),
            ("GAMIFY_NATS_PASSWORD", f"{workload}-password"),
            ("GAMIFY_NATS_URL", "url"),
        ):
            assert env[variable] == {
                "name": variable,
                "valueFrom": {"secretKeyRef": {"name": "prog-a-nats", "key": key}},
            }
    # Without NATS users nothing changes for the pods.
    plain = OperatorConfig()
    deployment = next(o for o in build_all(program, plain, values) if o["kind"] == "Deployment")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "GAMIFY_NATS_USER" not in names and "GAMIFY_NATS_PASSWORD" not in names


# --- on the real API server -------------------------------------------------------------------------


class Admin:
    user = "opadmin"
    password = f"adm{secrets.token_hex(12)}"


@pytest.fixture(scope="module")
def users_namespace(kube_api: client.ApiClient) -> Iterator[str]:
    """Where the NATS server (and so its users Secret) lives: this module's own namespace."""
    with labelled_namespace(kube_api, "nats", RUN) as name:
        yield name


@pytest.fixture(scope="module")
def nats(
    kube_api: client.ApiClient, users_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrivateNats]:
    """A NATS with users, following the users Secret (mount + reloader, simulated)."""
    server = PrivateNats(tmp_path_factory.mktemp("nats"), Admin.user, Admin.password)
    server.start()
    server.follow(client.CoreV1Api(kube_api), users_namespace, USERS_SECRET)
    yield server
    server.stop()


CREATED: list[str] = []


@pytest.fixture(scope="module")
def operator(
    kubeconfig: str,
    programs: client.CustomObjectsApi,
    nats: PrivateNats,
    mysql_admin_url: str,
    bucket: str,
    users_namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    home = tmp_path_factory.mktemp("nats-users-operator")
    env = operator_env(
        kubeconfig,
        RUN,
        nats_url=nats.admin_url,
        mysql_url=mysql_admin_url,
        bucket=bucket,
        log_level="DEBUG",
        extra={
            "GAMIFY_HOME": str(home / "home"),
            "GAMIFY_NATS_USERS_SECRET": f"{users_namespace}/{USERS_SECRET}",
        },
    )
    servers = Servers(nats_url=nats.admin_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{bucket}")
    with running_operator(env, home / "operator.log", programs, RUN, servers, CREATED) as process:
        yield process


def _reconciled(programs: client.CustomObjectsApi, name: str) -> bool:
    body = read_program(programs, name)
    status = body.get("status") or {}
    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
    return status.get("observedGeneration") == body["metadata"]["generation"] and ready == "True"


def wait_reconciled(programs: client.CustomObjectsApi, name: str, operator: OperatorProcess) -> None:
    try:
        wait_until(f"{name} reconciled", lambda: _reconciled(programs, name), timeout=60)
    except pytest.fail.Exception:
        status = json.dumps(read_program(programs, name).get("status"), indent=1)
        print(f"status of {name}: {status}\noperator log:\n{operator.log()[-6000:]}")
        raise


def users_secret_of(dyn: dynamic.DynamicClient, namespace: str) -> Doc | None:
    return get_object(dyn, "v1", "Secret", USERS_SECRET, namespace)


def program_nats(dyn: dynamic.DynamicClient, name: str) -> dict[str, str]:
    children = ChildNames(name)
    found = get_object(dyn, "v1", "Secret", children.nats_secret, children.namespace)
    assert found is not None, f"{children.nats_secret} missing"
    return decoded(found["data"])


def test_programs_get_their_own_nats_users(
    operator: OperatorProcess,
    nats: PrivateNats,
    programs: client.CustomObjectsApi,
    dyn: dynamic.DynamicClient,
    users_namespace: str,
) -> None:
    # Written at start-up, before any program: the NATS server can start with the admin alone.
    first = wait_until("the users Secret", lambda: users_secret_of(dyn, users_namespace), timeout=20)
    assert Admin.user in users_in(decoded(first["data"])[USERS_KEY])

    # Two programs at once: their reconciles race on the one users Secret.
    names = [unique_program_id("nu"), unique_program_id("nu")]
    for name in names:
        CREATED.append(name)
        programs.create_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, program_document(name, RUN))
    for name in names:
        wait_reconciled(programs, name, operator)

    stored = {name: program_nats(dyn, name) for name in names}
    for name, data in stored.items():
        assert set(data) == NATS_KEYS, sorted(data)
        assert data["url"] == nats.url  # no login: each pod signs in as itself
        for workload in ("ingest", "scoring"):
            assert data[f"{workload}-user"] == ProgramNames(name).nats_workload_user(workload)
            password = data[f"{workload}-password"]
            assert len(password) >= 32 and password != Admin.password
            assert bcrypt.checkpw(password.encode(), data[f"{workload}-password-hash"].encode())
        # The pods: user and password from the program's Secret, by reference only.
        for workload in ("ingest", "scoring"):
            deployment = get_object(dyn, "apps/v1", "Deployment", workload, ProgramNames(name).namespace)
            assert deployment is not None
            env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
            for variable, key in (
                ("GAMIFY_NATS_USER", f"{workload}-user"),
                ("GAMIFY_NATS_PASSWORD", f"{workload}-password"),
            ):
                assert env[variable].get("value") is None
                assert env[variable]["valueFrom"]["secretKeyRef"] == {"name": f"{name}-nats", "key": key}
            text = json.dumps(deployment)
            assert all(data[f"{w}-password"] not in text for w in ("ingest", "scoring"))

    def lists_both() -> Doc | None:
        secret = users_secret_of(dyn, users_namespace)
        users = users_in(decoded((secret or {}).get("data"))[USERS_KEY]) if secret else {}
        wanted = {ProgramNames(n).nats_workload_user(w) for n in names for w in ("ingest", "scoring")}
        return secret if wanted <= set(users) else None

    secret = wait_until("both programs' users in the users Secret", lists_both, timeout=20)
    include = decoded(secret["data"])[USERS_KEY]
    users = users_in(include)
    for name, data in stored.items():
        for workload in ("ingest", "scoring"):
            entry = users[ProgramNames(name).nats_workload_user(workload)]
            assert entry["password"] == data[f"{workload}-password-hash"]
            assert bcrypt.checkpw(data[f"{workload}-password"].encode(), entry["password"].encode())
    assert bcrypt.checkpw(Admin.password.encode(), users[Admin.user]["password"].encode())
    # Hashes only: no plain password, raw or base64, anywhere in the users Secret.
    whole = json.dumps(secret)
    for plain in [
        Admin.password,
        *(d[f"{w}-password"] for d in stored.values() for w in ("ingest", "scoring")),
    ]:
        assert plain not in whole and plain not in include
        assert base64.b64encode(plain.encode()).decode() not in whole

    # The NATS server (reloaded from the Secret) accepts each program's users.
    for name, data in stored.items():
        for workload in ("ingest", "scoring"):
            credentials = ProgramNatsCredentials(name, data["ingest-password"], data["scoring-password"])
            asyncio.run(wait_until_accepted(nats.url, credentials.login(workload), timeout=15))

    # SIGKILL and restart: the operator resumes every program; nothing is regenerated, and
    # the users Secret is not rewritten (same hashes, so the NATS server is not reloaded).
    version = secret["metadata"]["resourceVersion"]
    operator.kill()
    operator.start()
    for name in names:
        programs.patch_cluster_custom_object(
            crd.GROUP, crd.VERSION, crd.PLURAL, name, {"spec": {"displayName": "After a restart"}}
        )
    for name in names:
        wait_reconciled(programs, name, operator)
        assert program_nats(dyn, name) == stored[name]
    after = users_secret_of(dyn, users_namespace)
    assert after is not None and after["metadata"]["resourceVersion"] == version

    # Deleting one program drops its users, and only its.
    gone, kept = names
    programs.delete_cluster_custom_object(crd.GROUP, crd.VERSION, crd.PLURAL, gone)

    def dropped() -> dict[str, Doc] | None:
        users = users_in(decoded(users_secret_of(dyn, users_namespace)["data"])[USERS_KEY])  # type: ignore[index]
        return users if ProgramNames(gone).nats_workload_user("ingest") not in users else None

    users = wait_until(f"{gone}'s users dropped", dropped, timeout=30)
    assert not nats.errors, nats.errors
    assert {f"gamify.{gone}.ingest", f"gamify.{gone}.scoring"}.isdisjoint(users)
    assert {f"gamify.{kept}.ingest", f"gamify.{kept}.scoring", Admin.user} <= set(users)

    # No password of any kind in the operator's log (DEBUG).
    log = operator.log()
    for plain in [
        Admin.password,
        *(d[f"{w}-password"] for d in stored.values() for w in ("ingest", "scoring")),
    ]:
        assert plain not in log


def test_concurrent_writers_converge(
    kubeconfig: str, dyn: dynamic.DynamicClient, users_namespace: str, kube_api: client.ApiClient
) -> None:
    """Four operators' syncs at once (each its own client and lock), with program Secrets
    appearing meanwhile: every write that lost a race retries, the last one holds them all."""
    core = client.CoreV1Api(kube_api)
    secret_name = f"users-{secrets.token_hex(3)}"
    config = OperatorConfig(
        nats_url=f"nats://{Admin.user}:{Admin.password}@127.0.0.1:4222",
        nats_users_secret=SecretRef(users_namespace, secret_name),
    )
    made: list[tuple[str, str]] = []

    async def scenario() -> None:
        from gamify_operator.kube import new_api_client

        writers = [NatsUsers(config, Kube(new_api_client(kubeconfig))) for _ in range(4)]
        for writer in writers:
            await writer.kube.prepare()

        async def add_program() -> None:
            name = unique_program_id("nuc")
            namespace = ProgramNames(name).namespace
            core.create_namespace(
                client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace, labels={RUN_LABEL: RUN}))
            )
            made.append((name, namespace))
            credentials, hashes, _ = nats_users_of(name, None)
            await writers[0].kube.apply(nats_secret(_program(name), "nats://n:4222", credentials, hashes))

        await asyncio.gather(*(add_program() for _ in range(3)))
        results = await asyncio.gather(*(w.sync() for w in writers for _ in range(2)))
        assert any(r.changed for r in results)
        # A stale resourceVersion is refused, not silently applied.
        live = await writers[0].kube.get("v1", "Secret", secret_name, users_namespace)
        assert live is not None
        stale = {**live, "metadata": {**live["metadata"], "resourceVersion": "1"}}
        stale = {k: stale[k] for k in ("apiVersion", "kind", "metadata", "data")}
        stale["metadata"] = {k: stale["metadata"][k] for k in ("name", "namespace", "resourceVersion")}
        with pytest.raises(KubeError) as refused:
            await writers[1].kube.apply(stale)
        assert refused.value.conflict
        for writer in writers:
            writer.kube.api.close()

    try:
        asyncio.run(scenario())
        secret = get_object(dyn, "v1", "Secret", secret_name, users_namespace)
        assert secret is not None
        users = users_in(decoded(secret["data"])[USERS_KEY])
        for name, _ in made:
            assert {f"gamify.{name}.ingest", f"gamify.{name}.scoring"} <= set(users)
    finally:
        for _, namespace in made:
            core.delete_namespace(namespace)
        try:
            core.delete_namespaced_secret(secret_name, users_namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_operator_log_shows_no_admin_url(operator: OperatorProcess) -> None:
    log = operator.log()
    assert '"msg":"operator configured"' in log or "operator configured" in log
    assert Admin.password not in log
    assert f"{Admin.user}:" not in log  # the URL is logged without its login
