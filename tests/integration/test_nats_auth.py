"""Per-program NATS users: each program's workloads reach only that program's subjects.

Every test runs against a PRIVATE nats-server started here with the shipped configuration
(scripts/nats-server.conf + the generated users.conf), so users can be added, removed and the
config reloaded without touching the shared server. Both paths are tested: what a workload
must be able to do works, and every attempt to cross into another program fails with the
server's permission violation while nothing lands on the other side.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import nats.errors
import pytest
import yaml
from nats.aio.client import Client
from nats.js.errors import Error as JetStreamError

from gamify import local
from gamify.events import StreamEvent
from gamify.ingest.publisher import EventPublisher
from gamify.naming import ProgramNames
from gamify.nats_login import ENV_PASSWORD, ENV_USER, INGEST, SCORING, NatsLogin
from gamify.provisioning import nats as stream
from gamify.provisioning.nats_auth import (
    ADMIN_PASSWORD_FILE,
    LocalNatsAuth,
    ProgramNatsCredentials,
    wait_until_accepted,
)
from gamify.provisioning.nats_auth import main as nats_auth_main
from gamify.settings import Servers, without_login
from tests.conftest import free_port, unique_program_id
from tests.programs import program_document

ROOT = Path(__file__).resolve().parents[2]
NATS_SERVER = ROOT / ".venv" / "bin" / "nats-server"
SHIPPED_CONFIG = ROOT / "scripts" / "nats-server.conf"
DENIED_WAIT = 1.0  # a denied request gets no answer: how long to wait before calling it denied


@dataclass
class PrivateNats:
    """A nats-server of this test module, run exactly as scripts/servers.sh runs it."""

    directory: Path
    url: str
    monitor_url: str
    process: subprocess.Popen[bytes]

    @property
    def auth(self) -> LocalNatsAuth:
        return LocalNatsAuth(self.directory)

    @property
    def admin_url(self) -> str:
        host = self.url.removeprefix("nats://")
        return f"nats://admin:{self.auth.admin_password()}@{host}"

    def log(self) -> str:
        return (self.directory / "nats.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def private_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    assert NATS_SERVER.exists(), f"no nats-server at {NATS_SERVER}: run `make venv`"
    directory = tmp_path_factory.mktemp("nats")
    shutil.copy(SHIPPED_CONFIG, directory / "nats-server.conf")
    assert nats_auth_main(["init", str(directory)]) == 0
    port, monitor_port = free_port(), free_port()
    log = open(directory / "nats.log", "wb")  # noqa: SIM115 - the server writes it
    process = subprocess.Popen(
        [str(NATS_SERVER), "-c", str(directory / "nats-server.conf"), "-js", "-a", "127.0.0.1",
         "-p", str(port), "-m", str(monitor_port), "-sd", str(directory)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    (directory / "server.pid").write_text(str(process.pid))
    server = PrivateNats(directory, f"nats://127.0.0.1:{port}", f"http://127.0.0.1:{monitor_port}", process)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, f"nats-server exited:\n{server.log()}"
            assert time.monotonic() < deadline, f"nats-server not up:\n{server.log()}"
            time.sleep(0.1)
    try:
        yield server
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


@dataclass
class Program:
    names: ProgramNames
    credentials: ProgramNatsCredentials

    def login(self, workload: str) -> NatsLogin:
        return self.credentials.login(workload)


@asynccontextmanager
async def connected(
    url: str, login: NatsLogin | None = None, *, retry: bool = True, **options: Any
) -> AsyncIterator[Client]:
    """A connection; with `retry`, a connect that meets a config reload is tried again (the
    server may refuse connects that arrive while it reloads; real clients retry too)."""
    reconnect = {"max_reconnect_attempts": 5, "reconnect_time_wait": 0.2} if retry else {}
    connection = await nats.connect(
        url,
        allow_reconnect=retry,
        connect_timeout=3,
        **reconnect,
        **(login.connect_options() if login else {}),
        **options,
    )
    try:
        yield connection
    finally:
        await connection.close()


async def provision_program(server: PrivateNats, prefix: str) -> Program:
    """Stream and consumer as the admin, then the program's users (reload), as provisioning does."""
    names = ProgramNames(unique_program_id(prefix))
    async with connected(server.admin_url) as admin:
        js = admin.jetstream()
        await stream.ensure_stream(js, names, timedelta(days=1))
        await stream.ensure_consumer(js, names)
    credentials = ProgramNatsCredentials.generate(names.program)
    assert await asyncio.to_thread(server.auth.set_program, credentials)
    for workload in (INGEST, SCORING):
        await wait_until_accepted(server.url, credentials.login(workload))
    return Program(names, credentials)


async def remove_program(server: PrivateNats, program: Program) -> None:
    await asyncio.to_thread(server.auth.remove_program, program.names.program)
    async with connected(server.admin_url) as admin:
        await stream.delete_stream(admin.jetstream(), program.names)


@pytest.fixture
async def two_programs(private_nats: PrivateNats) -> AsyncIterator[tuple[Program, Program]]:
    a = await provision_program(private_nats, "na")
    b = await provision_program(private_nats, "nb")
    try:
        yield a, b
    finally:
        for program in (a, b):
            await remove_program(private_nats, program)


class Violations:
    """Collects the errors the server reports asynchronously (permission violations)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    async def record(self, error: Exception) -> None:
        self.errors.append(str(error))

    async def wait_for(self, fragment: str, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for error in self.errors:
                if "permissions violation" in error and fragment.lower() in error.lower():
                    return error
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permission violation for {fragment!r}; errors: {self.errors}")


async def stream_messages(server: PrivateNats, program: Program) -> int:
    async with connected(server.admin_url) as admin:
        info = await admin.jetstream().stream_info(program.names.stream)
        return int(info.state.messages)


async def consumer_delivered(server: PrivateNats, program: Program) -> int:
    async with connected(server.admin_url) as admin:
        info = await admin.jetstream().consumer_info(program.names.stream, program.names.durable)
        return int(info.delivered.stream_seq or 0)


def event(event_id: str) -> StreamEvent:
    now = datetime.now(UTC).isoformat()
    return StreamEvent.model_validate(
        {"id": event_id, "type": "app.visit", "user": "u1", "occurredAt": now, "receivedAt": now}
    )


# -- the configuration -------------------------------------------------------------------------


def test_users_file_holds_only_bcrypt_hashes(private_nats: PrivateNats) -> None:
    credentials = ProgramNatsCredentials.generate(unique_program_id("cfg"))
    try:
        private_nats.auth.set_program(credentials)
        text = private_nats.auth.users_file.read_text()
        assert credentials.ingest_password not in text and credentials.scoring_password not in text
        assert private_nats.auth.admin_password() not in text
        names = ProgramNames(credentials.program)
        assert f'"{names.nats_workload_user(INGEST)}"' in text
        assert (private_nats.directory / "users.conf").stat().st_mode & 0o077 == 0
        assert (private_nats.directory / ADMIN_PASSWORD_FILE).stat().st_mode & 0o077 == 0
        # The same passwords again change nothing (no reload for nothing).
        assert private_nats.auth.set_program(credentials) is False
        assert credentials.program in private_nats.auth.programs()
    finally:
        assert private_nats.auth.remove_program(credentials.program)
    assert credentials.program not in private_nats.auth.users_file.read_text()


def test_servers_from_env_signs_in_as_admin(
    private_nats: PrivateNats, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GAMIFY_NATS_URL", private_nats.url)
    monkeypatch.setenv("GAMIFY_NATS_AUTH_DIR", str(private_nats.directory))
    servers = Servers.from_env()
    assert servers.nats_auth_dir == str(private_nats.directory)
    assert without_login(servers.nats_url) == private_nats.url
    assert private_nats.auth.admin_password() in servers.nats_url
    assert private_nats.auth.admin_password() not in repr(servers)

    async def admin_can_list_streams() -> None:
        async with connected(servers.nats_url) as admin:
            await admin.jetstream().streams_info()

    asyncio.run(admin_can_list_streams())
    # A URL with its own user is left alone; a folder without an admin password means no users.
    monkeypatch.setenv("GAMIFY_NATS_URL", "nats://someone:secret@127.0.0.1:1")
    assert Servers.from_env().nats_url == "nats://someone:secret@127.0.0.1:1"
    monkeypatch.setenv("GAMIFY_NATS_AUTH_DIR", str(private_nats.directory / "absent"))
    assert Servers.from_env().nats_auth_dir is None


# -- who may connect -------------------------------------------------------------------------


async def test_anonymous_and_wrong_passwords_are_refused(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, b = two_programs
    attempts: dict[str, dict[str, Any]] = {
        "anonymous": {},
        "wrong password": {"user": a.names.nats_workload_user(INGEST), "password": "not-it"},
        "B's password for A's user": {
            "user": a.names.nats_workload_user(INGEST),
            "password": b.credentials.ingest_password,
        },
        "admin with a program's password": {"user": "admin", "password": a.credentials.ingest_password},
    }
    for what, options in attempts.items():
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            async with connected(private_nats.url, retry=False, **options):
                pass
        assert what  # named for the failure message above


# -- ingest ------------------------------------------------------------------------------------


async def test_ingest_publishes_on_its_program_only(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, b = two_programs
    violations = Violations()
    async with connected(private_nats.url, a.login(INGEST), error_cb=violations.record) as conn:
        js = conn.jetstream(timeout=DENIED_WAIT)
        ack = await js.publish(a.names.event_subject("app.visit"), b"{}", stream=a.names.stream)
        assert ack.stream == a.names.stream and ack.seq == 1
        assert (await js.stream_info(a.names.stream)).state.messages == 1  # its readiness check

        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(b.names.event_subject("app.visit"), b"{}")
        await violations.wait_for(f'publish to "{b.names.event_subject("app.visit")}"')
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info(b.names.stream)
        await violations.wait_for(f"$JS.API.STREAM.INFO.{b.names.stream}")
        # Nor outside its events (dead letters are scoring's), nor any other JetStream API.
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(a.names.dead_letter_subject("app.visit"), b"{}")
        await violations.wait_for(f'publish to "{a.names.dead_letter_subject("app.visit")}"')
        with pytest.raises(nats.errors.TimeoutError):
            await js.delete_stream(a.names.stream)
        await violations.wait_for(f"$JS.API.STREAM.DELETE.{a.names.stream}")
        assert conn.is_connected  # violations are refused, the connection stays
    assert await stream_messages(private_nats, b) == 0
    assert await stream_messages(private_nats, a) == 1


async def test_event_publisher_signs_in_with_its_login(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, b = two_programs
    publisher = EventPublisher(private_nats.url, a.names, login=a.login(INGEST))
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while not await publisher.stream_exists():
            assert time.monotonic() < deadline, "the publisher never got ready"
            await asyncio.sleep(0.1)
        published = await publisher.publish([event("e1"), event("e2"), event("e1")])
        assert [p.duplicate for p in published] == [False, False, True]
        # Its replies come back under its own inbox prefix.
        assert publisher._nc is not None
        assert publisher._nc.new_inbox().startswith(a.names.nats_inbox_prefix(INGEST) + ".")
    finally:
        await publisher.close()
    # B's ingest login on A's stream: the publisher cannot even see the stream.
    wrong = EventPublisher(private_nats.url, a.names, login=b.login(INGEST))
    wrong.start()
    try:
        deadline = time.monotonic() + 10
        while not wrong.connected:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert not await wrong.stream_exists()
    finally:
        await wrong.close()
    assert await stream_messages(private_nats, a) == 2


# -- scoring -----------------------------------------------------------------------------------


async def test_scoring_uses_its_durable_only(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, b = two_programs
    async with connected(private_nats.admin_url) as admin:
        js = admin.jetstream()
        for program in (a, b):
            for n in range(3):
                await js.publish(program.names.event_subject("app.visit"), f"{n}".encode())
    violations = Violations()
    async with connected(private_nats.url, a.login(SCORING), error_cb=violations.record) as conn:
        js = conn.jetstream(timeout=DENIED_WAIT)
        # Allowed: what the worker does (info, bind, fetch, ack/nak/in-progress/term, dead letter).
        assert (await js.consumer_info(a.names.stream, a.names.durable)).num_pending == 3
        await js.stream_info(a.names.stream)
        subscription = await js.pull_subscribe_bind(durable=a.names.durable, stream=a.names.stream)
        messages = await subscription.fetch(3, timeout=3)
        assert len(messages) == 3
        await messages[0].in_progress()
        await messages[0].ack()
        await messages[1].term()
        await messages[2].nak()
        dead = await js.publish(a.names.dead_letter_subject("app.visit"), b"x")
        assert dead.stream == a.names.stream
        await conn.flush()

        # Denied: B's durable, B's stream, creating consumers, reading A's stream directly.
        with pytest.raises(nats.errors.TimeoutError):
            await js.consumer_info(b.names.stream, b.names.durable)
        await violations.wait_for(f"$JS.API.CONSUMER.INFO.{b.names.stream}.{b.names.durable}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info(b.names.stream)
        await violations.wait_for(f"$JS.API.STREAM.INFO.{b.names.stream}")
        stolen = await js.pull_subscribe_bind(durable=b.names.durable, stream=b.names.stream)
        with pytest.raises(nats.errors.TimeoutError):
            await stolen.fetch(3, timeout=DENIED_WAIT)
        await violations.wait_for(f"$JS.API.CONSUMER.MSG.NEXT.{b.names.stream}.{b.names.durable}")
        with pytest.raises((nats.errors.TimeoutError, JetStreamError)):
            await js.pull_subscribe(a.names.events_subject_filter, durable="other", stream=a.names.stream)
        with pytest.raises(nats.errors.TimeoutError):
            await js.get_msg(a.names.stream, 1)
        # Nor publish events (that is ingest's job), on A or on B.
        for subject in (a.names.event_subject("app.visit"), b.names.event_subject("app.visit")):
            with pytest.raises(nats.errors.TimeoutError):
                await js.publish(subject, b"{}")
            await violations.wait_for(f'publish to "{subject}"')
    assert await consumer_delivered(private_nats, b) == 0
    assert await stream_messages(private_nats, b) == 3
    assert await stream_messages(private_nats, a) == 4  # 3 events + 1 dead letter


# -- subscriptions -----------------------------------------------------------------------------


async def test_no_subscriptions_outside_its_own_inbox(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, b = two_programs
    forbidden = [
        b.names.nats_inbox_prefix(INGEST) + ".>",
        b.names.nats_inbox_prefix(SCORING) + ".>",
        a.names.nats_inbox_prefix(SCORING) + ".>",  # not even the other workload of A
        "_INBOX.>",
        b.names.events_subject_filter,
        b.names.subjects,
        a.names.events_subject_filter,  # events are read through the durable, not by subscribing
        ">",
    ]
    for workload in (INGEST, SCORING):
        violations = Violations()
        async with connected(private_nats.url, a.login(workload), error_cb=violations.record) as conn:
            own = await conn.subscribe(a.names.nats_inbox_prefix(workload) + ".x")
            for subject in forbidden:
                if subject.startswith(a.names.nats_inbox_prefix(workload)):
                    continue
                await conn.subscribe(subject)
                await conn.flush()
                await violations.wait_for(f'subscription to "{subject}"')
            # Its own inbox works: a message published there by the admin arrives.
            async with connected(private_nats.admin_url) as admin:
                await admin.publish(a.names.nats_inbox_prefix(workload) + ".x", b"reply")
                await admin.flush()
            assert (await own.next_msg(timeout=3)).data == b"reply"


async def test_b_never_receives_a_replies(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    """Even a subscription B tries on A's inbox prefix gets nothing while A publishes."""
    a, b = two_programs
    violations = Violations()
    async with (
        connected(private_nats.url, b.login(INGEST), error_cb=violations.record) as spy,
        connected(private_nats.url, a.login(INGEST)) as victim,
    ):
        spied = await spy.subscribe(a.names.nats_inbox_prefix(INGEST) + ".>")
        await spy.flush()
        await violations.wait_for("subscription to")
        js = victim.jetstream()
        for n in range(5):
            await js.publish(a.names.event_subject("app.visit"), b"{}", headers={"Nats-Msg-Id": f"r{n}"})
        with pytest.raises(nats.errors.TimeoutError):
            await spied.next_msg(timeout=0.5)


# -- reloads -----------------------------------------------------------------------------------


async def test_provisioning_another_program_keeps_others_connected(
    private_nats: PrivateNats, two_programs: tuple[Program, Program]
) -> None:
    a, _ = two_programs
    disconnects: list[str] = []

    async def on_disconnect() -> None:
        disconnects.append("disconnected")

    async with connected(private_nats.url, a.login(INGEST), disconnected_cb=on_disconnect) as conn:
        js = conn.jetstream()
        await js.publish(a.names.event_subject("app.visit"), b"{}")
        reloads_before = private_nats.log().count("Reloaded server configuration")
        c = await provision_program(private_nats, "nc")  # rewrites users.conf + SIGHUP
        try:
            assert private_nats.log().count("Reloaded server configuration") > reloads_before
            async with connected(private_nats.url, c.login(INGEST)) as newcomer:
                await newcomer.jetstream().publish(c.names.event_subject("app.visit"), b"{}")
            ack = await js.publish(a.names.event_subject("app.visit"), b"{}")
            assert ack.seq == 2
        finally:
            await remove_program(private_nats, c)
        await js.publish(a.names.event_subject("app.visit"), b"{}")
        assert conn.is_connected and disconnects == []
        assert conn.stats["reconnects"] == 0


async def test_removing_a_program_closes_its_access(private_nats: PrivateNats) -> None:
    c = await provision_program(private_nats, "nd")
    removed = False
    try:
        async with connected(private_nats.url, c.login(INGEST)) as conn:
            await asyncio.to_thread(private_nats.auth.remove_program, c.names.program)
            removed = True
            # The server drops the connection of a user the reloaded config no longer has (and
            # refuses its reconnects).
            deadline = time.monotonic() + 10
            while conn.is_connected or conn.is_reconnecting:
                assert time.monotonic() < deadline, "the removed user is still connected"
                await asyncio.sleep(0.1)
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            async with connected(private_nats.url, c.login(INGEST), retry=False):
                pass
    finally:
        if not removed:
            private_nats.auth.remove_program(c.names.program)
        async with connected(private_nats.admin_url) as admin:
            await stream.delete_stream(admin.jetstream(), c.names)


# -- the one-machine mode, end to end --------------------------------------------------------


def test_local_up_runs_each_workload_as_its_own_user(
    private_nats: PrivateNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mysql_admin_url: str
) -> None:
    """`gamify local up` against a server with users: provisioning adds the program's users,
    ingest and scoring sign in as them (events scored), and no password reaches a log."""
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_NATS_URL", private_nats.url)
    monkeypatch.setenv("GAMIFY_NATS_AUTH_DIR", str(private_nats.directory))
    monkeypatch.setenv("GAMIFY_MYSQL_URL", mysql_admin_url)
    monkeypatch.setenv("GAMIFY_BUCKET", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("GAMIFY_SNAPSHOT_INTERVAL", "3600")
    name = unique_program_id("nl")
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program_document(name, datetime.now(UTC) - timedelta(days=2))))
    servers = Servers.from_env()
    state = local.up(path)
    try:
        names = ProgramNames(name)
        assert name in private_nats.auth.programs()
        assert state.nats_ingest_password and state.nats_scoring_password
        saved = json.loads((local.program_dir(name) / "state.json").read_text())
        assert saved["nats_ingest_password"] == state.nats_ingest_password  # kept, mode 0600
        events = [
            {"id": f"v{n}", "type": "app.visit", "user": "alice", "occurredAt": datetime.now(UTC).isoformat()}
            for n in range(5)
        ]
        answer = httpx.post(
            f"{state.ingest_url}/v1/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {state.api_key}"},
            timeout=30,
        )
        assert answer.status_code == 202 and answer.json()["accepted"] == 5, answer.text
        local.wait_scored(name, timeout=60, servers=servers)
        # The workloads really are the program's users: the server lists their connections.
        users = connected_users(private_nats)
        assert {names.nats_workload_user(INGEST), names.nats_workload_user(SCORING)} <= users
        # Up again: same passwords, nothing changes.
        assert local.up(path).nats_ingest_password == state.nats_ingest_password
    finally:
        local.down(name)
        asyncio.run(_deprovision(name, servers))
    secrets = [state.nats_ingest_password, state.nats_scoring_password, private_nats.auth.admin_password()]
    for log in local.program_dir(name).glob("*.log"):
        text = log.read_text(errors="replace")
        assert not any(secret in text for secret in secrets), f"a NATS password in {log.name}"
    assert name not in private_nats.auth.programs()


def connected_users(server: PrivateNats) -> set[str]:
    """The users the server's client connections signed in as (monitoring endpoint)."""
    connz = httpx.get(f"{server.monitor_url}/connz", params={"auth": "true", "limit": 1000}, timeout=5)
    return {c.get("authorized_user", "") for c in connz.json().get("connections") or []}


async def _deprovision(name: str, servers: Servers) -> None:
    from gamify.provisioning import deprovision

    await deprovision(name, servers, servers.bucket, delete_data=True)


def test_login_from_env() -> None:
    names = ProgramNames("acme-2027")
    login = NatsLogin.from_env(names, SCORING, {ENV_USER: "gamify.acme-2027.scoring", ENV_PASSWORD: "pw"})
    assert login.connect_options() == {
        "inbox_prefix": "_INBOX.gamify.acme-2027.scoring",
        "user": "gamify.acme-2027.scoring",
        "password": "pw",
    }
    assert "pw" not in repr(login)
    assert NatsLogin.from_env(names, INGEST, {}).connect_options() == {
        "inbox_prefix": "_INBOX.gamify.acme-2027.ingest"
    }
    with pytest.raises(ValueError, match="set together"):
        NatsLogin.from_env(names, INGEST, {ENV_USER: "x"})
