"""Everything a program owns outside Kubernetes: stream, consumer, schema, user, bucket prefix.

The one-machine CLI (`gamify local up`) and the operator call this same code. `provision` is
idempotent (a second call changes nothing); `deprovision` removes data only when asked to
(`retention.onDelete: Delete`). Failures raise `ProvisioningError` naming the component, so
the operator can put the message in a status condition.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

# Only names, never the bare `nats` module: the sibling submodule `nats` owns that name here.
from nats import connect as connect_nats
from nats.js import JetStreamContext
from sqlalchemy.exc import DBAPIError

from gamify.logs import get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import WORKLOADS
from gamify.program import Program, parse_duration
from gamify.provisioning import bucket as bucket_prefix
from gamify.provisioning import mysql as schema
from gamify.provisioning import nats as stream
from gamify.provisioning.nats_auth import LocalNatsAuth, ProgramNatsCredentials, wait_until_accepted
from gamify.settings import Servers

log = get_logger(__name__)

NATS_CONNECT_TIMEOUT = 3.0
NATS_REQUEST_TIMEOUT = 10.0

T = TypeVar("T")


class ProvisioningError(RuntimeError):
    """One component could not be provisioned; `component` is stream, consumer, schema or bucket."""

    def __init__(self, component: str, reason: str) -> None:
        super().__init__(f"{component}: {reason}")
        self.component = component
        self.reason = reason


@dataclass(frozen=True)
class ProvisionResult:
    program: str
    stream: str
    consumer: str
    database: str
    # Holds the program user's password: kept out of repr so it never reaches a log line.
    database_url: str = field(repr=False)
    snapshot_url: str


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        # The driver's own message (code and text), without SQLAlchemy's statement/parameters.
        return f"{type(exc.orig).__name__}{exc.orig.args}"
    return str(exc) or type(exc).__name__


async def _step(component: str, work: Awaitable[T]) -> T:
    try:
        return await work
    except ProvisioningError:
        raise
    except Exception as exc:
        raise ProvisioningError(component, _reason(exc)) from exc


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


@asynccontextmanager
async def _jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """A short-lived connection: fail fast with a clear message instead of reconnecting forever."""
    errors: list[Exception] = []

    async def remember(error: Exception) -> None:
        # Reported by the client while it tries; the last one says why connecting failed.
        errors.append(error)

    try:
        # One retry, shortly after; allow_reconnect=False makes nats-py retry without end.
        connection = await asyncio.wait_for(
            connect_nats(
                nats_url,
                connect_timeout=NATS_CONNECT_TIMEOUT,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                error_cb=remember,
            ),
            timeout=NATS_CONNECT_TIMEOUT * 3,
        )
    except Exception as exc:
        reason = _reason(errors[-1] if errors else exc)
        raise ProvisioningError(
            "stream", f"cannot connect to NATS at {_without_credentials(nats_url)}: {reason}"
        ) from exc
    try:
        yield connection.jetstream(timeout=NATS_REQUEST_TIMEOUT)
    finally:
        await connection.close()


async def _ensure_nats_users(servers: Servers, credentials: ProgramNatsCredentials) -> bool:
    """Give the program its own NATS users on a local server that has users; False when the
    server has none (anyone may connect, so there is nothing to add)."""
    if servers.nats_auth_dir is None:
        return False
    auth = LocalNatsAuth(servers.nats_auth_dir)
    # bcrypt and the file lock are blocking: off the event loop.
    if await asyncio.to_thread(auth.set_program, credentials):
        # The workloads start right after: wait until the reloaded server knows their users.
        url = _without_credentials(servers.nats_url)
        for workload in WORKLOADS:
            await wait_until_accepted(url, credentials.login(workload))
    return True


async def _remove_nats_users(servers: Servers, program_name: str) -> None:
    if servers.nats_auth_dir is not None:
        await asyncio.to_thread(LocalNatsAuth(servers.nats_auth_dir).remove_program, program_name)


def snapshot_bucket(program: Program, servers: Servers) -> str:
    """The bucket base URL of a program: its own `spec.snapshots.bucket`, else the platform's."""
    return program.spec.snapshots.bucket or servers.bucket


async def provision(
    program: Program,
    servers: Servers,
    db_password: str,
    *,
    stream_replicas: int = 1,
    nats_credentials: ProgramNatsCredentials | None = None,
) -> ProvisionResult:
    """Create or update everything `program` owns outside Kubernetes; safe to call again.

    `db_password` is the program database user's password, generated once by the caller and
    authoritative (see `gamify.provisioning.mysql`). `stream_replicas` > 1 for clustered NATS.
    `nats_credentials`: the passwords of the program's NATS users (also generated once by the
    caller), registered with a local nats-server that has users (`servers.nats_auth_dir`).
    """
    names = ProgramNames(program.name)
    plog = log.bind(program=program.name)
    max_age = parse_duration(program.spec.retention.events_max_age)
    async with _jetstream(servers.nats_url) as js:
        await _step("stream", stream.ensure_stream(js, names, max_age, replicas=stream_replicas))
        await _step("consumer", stream.ensure_consumer(js, names))
    plog.info("stream and consumer ready", stream=names.stream)
    if nats_credentials is not None and await _step(
        "nats-users", _ensure_nats_users(servers, nats_credentials)
    ):
        plog.info("NATS users ready", users=[names.nats_workload_user(w) for w in WORKLOADS])
    # MySQL and GCS clients are blocking: keep them off the operator's event loop.
    database_url = await _step(
        "schema",
        asyncio.to_thread(schema.ensure_schema, servers.mysql_admin_url, names, db_password),
    )
    plog.info("schema, user and migrations ready", database=names.schema)
    snapshot_url = await _step(
        "bucket",
        asyncio.to_thread(
            bucket_prefix.ensure_prefix, snapshot_bucket(program, servers), program.name, program.spec.tenant
        ),
    )
    plog.info("bucket prefix ready", snapshot_url=snapshot_url)
    return ProvisionResult(
        program=program.name,
        stream=names.stream,
        consumer=names.durable,
        database=names.schema,
        database_url=database_url,
        snapshot_url=snapshot_url,
    )


async def _delete_stream(nats_url: str, names: ProgramNames) -> bool:
    async with _jetstream(nats_url) as js:
        return await stream.delete_stream(js, names)


async def deprovision(program_name: str, servers: Servers, bucket_url: str, delete_data: bool) -> None:
    """Release what a deleted program owns. With `delete_data` False (`onDelete: Retain`) nothing
    is removed; with True the stream, schema, database user and bucket prefix are deleted.

    Every component is attempted even when one fails (each is idempotent, so a retry finishes
    the job); the error names every failed component and why.
    """
    names = ProgramNames(program_name)
    plog = log.bind(program=program_name)
    # Access goes with the program whatever happens to its data; re-provisioning restores it.
    await _step("nats-users", _remove_nats_users(servers, program_name))
    if not delete_data:
        plog.info("retaining stream, schema, user and snapshots")
        return
    steps: list[tuple[str, Awaitable[object]]] = [
        ("stream", _delete_stream(servers.nats_url, names)),
        ("schema", asyncio.to_thread(schema.drop_schema, servers.mysql_admin_url, names)),
        ("bucket", asyncio.to_thread(bucket_prefix.delete_prefix, bucket_url, program_name)),
    ]
    failures: list[ProvisioningError] = []
    for component, work in steps:
        try:
            await _step(component, work)
        except ProvisioningError as exc:
            failures.append(exc)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        components = ", ".join(f.component for f in failures)
        raise ProvisioningError(components, "; ".join(str(f) for f in failures))
    plog.info("deleted stream, schema, user and snapshots")
