"""One program, reconciled: what the Kopf handlers call (`handlers.py` only wires them up).

A reconcile, in order (every step is idempotent, so a reconcile killed anywhere and run again
converges to the same state, with no duplicate objects and no lost Secret):

1. validate the spec with the model (`gamify.program.parse_program`): the CRD schema cannot
   check everything (e.g. unknown time zones); a bad spec is phase Failed, permanently;
2. the namespace, then the Secrets. Keys and the database password are generated only when
   the live Secret has none, and written before they are used anywhere: a crash later never
   loses them, and a second run reads them back instead of generating new ones;
3. everything outside Kubernetes (`gamify.provisioning.provision`: stream and consumer, schema,
   user, grants, migrations, bucket prefix) with the stored password;
4. once the program is closed (past `end + gracePeriod`) and scoring has drained: one final
   snapshot (`gamify.snapshots.writer.run_snapshot`, in a worker thread of the operator);
5. every child from `builders.build_all`, server-side applied and owned by the program (so the
   garbage collector removes them with it); children no longer wanted are deleted;
6. the status: phase, one condition per component, observedGeneration, names and URLs.

Nothing secret reaches the status, an event or a log line: Secrets are read and written only
through `kube.Kube`, and error messages about them are reduced to their HTTP status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import bcrypt
import kopf
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from sqlalchemy.exc import DBAPIError

from gamify import stream_scan
from gamify.credentials import generate_api_key, generate_password, hash_api_key, parse_key_hashes
from gamify.logs import get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import WORKLOADS as NATS_WORKLOADS
from gamify.program import KIND, OnDelete, Program, ProgramError, parse_program
from gamify.provisioning import ProvisioningError, ProvisionResult, deprovision, provision
from gamify.provisioning.mysql import program_url, render_url
from gamify.provisioning.nats_auth import ProgramNatsCredentials, hash_password
from gamify.snapshots.writer import SnapshotBusy, run_snapshot, snapshot_base
from gamify_operator import lifecycle, status
from gamify_operator.builders import (
    ProgramSecrets,
    api_keys_secret,
    build_all,
    database_secret,
    merge_secret,
    namespace,
    nats_secret,
    owned,
    read_secret,
)
from gamify_operator.builders.labels import (
    INGEST,
    LABEL_MANAGED_BY,
    LABEL_PROGRAM,
    LABEL_TENANT,
    MANAGED_BY,
    ChildNames,
)
from gamify_operator.builders.secrets import (
    API_KEY,
    API_KEY_HASHES,
    API_KEYS,
    DATABASE_PASSWORD,
    nats_password_hash_key,
    nats_password_key,
)
from gamify_operator.config import OperatorConfig
from gamify_operator.kube import NAMESPACED_CHILD_KINDS, PROGRAM_API_VERSION, Kube, KubeError
from gamify_operator.lifecycle import Lifecycle, Phase
from gamify_operator.nats_users import NatsUsers, NatsUsersError
from gamify_operator.status import Condition

log = get_logger(__name__)

# (type, reason, message): posted as a Kubernetes Event on the program.
EventPoster = Callable[[str, str, str], None]
NORMAL = "Normal"
WARNING = "Warning"

MAX_BACKOFF_SECONDS = 300.0
SNAPSHOT_BUSY_RETRY_SECONDS = 30.0
# Which condition a provisioning failure belongs to (ProvisioningError.component).
PROVISIONING_CONDITIONS = {
    "stream": status.STREAM,
    "consumer": status.STREAM,
    "schema": status.DATABASE,
    "bucket": status.BUCKET,
}
PROVISIONING_ORDER = (status.STREAM, status.DATABASE, status.BUCKET)
NAMESPACE_KINDS = {"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy"}
LIFECYCLE_PHASES = {Phase.scheduled, Phase.active, Phase.ended, Phase.suspended}


@dataclass(frozen=True)
class ReconcileOptions:
    """Operator behaviour that is not about where the servers are (`OperatorConfig` is)."""

    # How long after `end + gracePeriod` the final snapshot waits for scoring to drain the
    # stream; past it the snapshot is taken anyway (a broken scorer must not block closing).
    drain_timeout: timedelta = timedelta(hours=1)
    backoff_seconds: float = 5.0  # first retry delay; doubles per retry up to MAX_BACKOFF_SECONDS


@dataclass
class Result:
    """What a handler writes back: the status, labels for the program, and the error to raise
    once they are written (Kopf applies the patch whether the handler succeeds or not)."""

    status: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    error: Exception | None = None


def plain(value: Any) -> Any:
    """Kopf's read-only views as plain JSON data (what pydantic and the builders take)."""
    return json.loads(json.dumps(value, default=dict))


def program_of(body: Mapping[str, Any]) -> Program:
    """The model of a resource body; raises `ProgramError` naming each bad field."""
    document = {
        "apiVersion": PROGRAM_API_VERSION,
        "kind": KIND,
        "metadata": {"name": body["metadata"]["name"]},
        "spec": plain(body.get("spec") or {}),
    }
    return parse_program(document)


def ingest_url(program: str, config: OperatorConfig) -> str:
    host = f"{INGEST}.{ChildNames(program).namespace}.svc.cluster.local"
    return (
        f"http://{host}"
        if config.ingest_service_port == 80
        else f"http://{host}:{config.ingest_service_port}"
    )


def _split_keys(text: str | None) -> list[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def stored_api_keys(data: Mapping[str, str] | None) -> list[str]:
    """Every key the live `<program>-api-keys` Secret holds, the current one first.

    The plain keys are the truth: a key added by hand (rotation) to `api-keys` or written to
    `api-key` is kept, and its hash is added to `api-key-hashes` by the next reconcile.
    """
    current = _split_keys(read_secret(data, API_KEY))
    listed = _split_keys(read_secret(data, API_KEYS))
    return list(dict.fromkeys(current + listed))


def _redact(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def _reason(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}{exc.orig.args}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@contextlib.asynccontextmanager
async def _jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    """A short connection for one look at a program's stream (bounded in time, never hangs)."""
    connection = await asyncio.wait_for(stream_scan.connect(nats_url), timeout=10)
    try:
        yield connection.jetstream(timeout=10)
    finally:
        await connection.close()


async def pending_events(nats_url: str, program: str) -> int:
    """Events the scoring consumer has not acknowledged yet (0 when there is no consumer)."""
    names = ProgramNames(program)
    async with _jetstream(nats_url) as js:
        try:
            info = await js.consumer_info(names.stream, names.durable)
        except NotFoundError:
            return 0
        # A message nak'ed with a delay is in neither count: it shows as delivered, not acked.
        unacked = int(info.delivered.stream_seq or 0) > int(info.ack_floor.stream_seq or 0)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0) + int(unacked)


async def dead_letter_count(nats_url: str, program: str) -> int | None:
    """Messages waiting in the program's dead letters (None when it has no stream)."""
    names = ProgramNames(program)
    async with _jetstream(nats_url) as js:
        counted = await stream_scan.count_on(js, names.stream, names.dead_letter_filter)
    return None if counted is None else counted[0]


class Reconciler:
    def __init__(self, config: OperatorConfig, kube: Kube, options: ReconcileOptions | None = None):
        self.config = config
        self.kube = kube
        self.options = options or ReconcileOptions()
        # One `provision` at a time in this process: its migrations run on alembic, whose
        # `context`/`op` are process-global proxies, so two programs migrating in two threads
        # at once cross their connections ("Table ... already exists").
        self.provisioning = asyncio.Lock()
        # The NATS server's users Secret, when the platform's NATS has users.
        self.nats_users = NatsUsers(config, kube) if config.nats_users_enabled else None

    def backoff(self, retry: int) -> float:
        return min(MAX_BACKOFF_SECONDS, self.options.backoff_seconds * 2 ** max(retry, 0))

    # --- the reconcile -------------------------------------------------------------------------

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        now: datetime,
        post: EventPoster,
        extension: Mapping[str, str] | None = None,
        retry: int = 0,
    ) -> Result:
        run = _Run(self, body, now, post, retry)
        try:
            return await run.execute(extension)
        except ProgramError as exc:
            return run.invalid(exc)

    async def tick(self, body: Mapping[str, Any], *, now: datetime, post: EventPoster) -> Result | None:
        """The lifecycle timer: reconcile when the dates call for something the status does not
        show yet (a phase change, the final snapshot, the tenant label); otherwise nothing."""
        current = body.get("status") or {}
        generation = body["metadata"].get("generation")
        if not current.get("phase") or current.get("observedGeneration") != generation:
            return None  # a change handler owns this generation (running, or retrying)
        try:
            program = program_of(body)
        except ProgramError:
            return None  # Failed until the spec changes
        state = lifecycle.lifecycle(program.spec, now)
        closing = state.closed and not lifecycle.final_snapshot_done(
            program.spec, current.get("finalSnapshot")
        )
        labelled = (body["metadata"].get("labels") or {}).get(LABEL_TENANT) == program.spec.tenant
        if current.get("phase") == state.phase and not closing and labelled:
            if not await self._keys_changed(program.name):
                return None
            log.info("API keys edited: deriving hashes again", program=program.name)
        else:
            log.info(
                "lifecycle transition",
                program=program.name,
                phase=current.get("phase"),
                wanted=state.phase.value,
                closing=closing,
            )
        return await self.reconcile(body, now=now, post=post)

    async def dead_letters(self, body: Mapping[str, Any], *, post: EventPoster) -> dict[str, Any] | None:
        """`status.deadLetters` when it changed (None otherwise), with a Warning event when it
        grew: events scoring gave up on do not count for anyone until they are replayed, and
        a program manager sees it in `kubectl get gp` without access to NATS."""
        name = body["metadata"]["name"]
        current = (body.get("status") or {}).get("deadLetters")
        try:
            count = await dead_letter_count(self.config.nats_url, name)
        except stream_scan.NATS_FAILURES as exc:
            log.info("dead letters not counted", program=name, error=str(exc))
            return None
        if count is None or count == current:
            return None
        if count > (current or 0):
            post(
                "Warning",
                "DeadLetters",
                f"{count} event(s) could not be scored and wait in the dead letters: "
                f"gamify deadletters list {name}; replay them once the cause is fixed",
            )
        log.info("dead letters counted", program=name, dead_letters=count, before=current)
        return {"deadLetters": count}

    async def _keys_changed(self, program: str) -> bool:
        """Whether the API keys Secret was edited (a key added or removed by hand for rotation,
        or the Secret deleted): its hashes no longer match its keys."""
        children = ChildNames(program)
        try:
            secret = await self.kube.get("v1", "Secret", children.api_keys_secret, children.namespace)
        except KubeError:
            return False  # the next tick looks again
        data = (secret or {}).get("data") or {}
        keys = stored_api_keys(data)
        hashes = parse_key_hashes(read_secret(data, API_KEY_HASHES) or "")
        listed = _split_keys(read_secret(data, API_KEYS))
        return not keys or hashes != [hash_api_key(key) for key in keys] or listed != keys

    # --- deletion ------------------------------------------------------------------------------

    async def delete(self, body: Mapping[str, Any], *, post: EventPoster) -> None:
        """Retain (default): the stream, schema, user and snapshots stay; Delete removes them.
        The namespace goes either way (deleted here rather than waiting for the garbage
        collector). Raises `kopf.TemporaryError` to be called again when something failed."""
        name = body["metadata"]["name"]
        raw = plain(body.get("spec") or {})
        try:
            program = program_of(body)
            on_delete = program.spec.retention.on_delete.value
            bucket = snapshot_base(program, self.config.bucket)
        except ProgramError:
            on_delete = str((raw.get("retention") or {}).get("onDelete") or OnDelete.retain.value)
            bucket = (raw.get("snapshots") or {}).get("bucket") or self.config.bucket
        names = ProgramNames(name)
        await self._drop_nats_users(name, post)
        try:
            live = await self.kube.get("v1", "Namespace", names.namespace)
            if live is not None and (live["metadata"].get("labels") or {}).get(LABEL_PROGRAM) == name:
                await self.kube.delete("v1", "Namespace", names.namespace)
                post(NORMAL, "NamespaceDeleted", f"namespace {names.namespace} is being deleted")
        except KubeError as exc:
            post(WARNING, "DeleteFailed", str(exc))
            raise kopf.TemporaryError(f"deleting namespace: {exc}", delay=10) from None
        if on_delete == OnDelete.delete.value:
            try:
                await deprovision(name, self.config.servers, bucket, delete_data=True)
            except ProvisioningError as exc:
                post(WARNING, "DeprovisioningFailed", str(exc))
                raise kopf.TemporaryError(f"deprovisioning: {exc}", delay=10) from None
            post(NORMAL, "DataDeleted", f"deleted stream {names.stream}, schema and user {names.schema}")
        else:
            post(
                NORMAL,
                "DataRetained",
                f"kept stream {names.stream}, schema {names.schema} and snapshots"
                " (retention.onDelete: Retain)",
            )
        log.info("program deleted", program=name, on_delete=on_delete)

    async def _drop_nats_users(self, name: str, post: EventPoster) -> None:
        """The program's NATS users leave the server's users before anything else goes: its
        NATS Secret first (so no other program's sync adds them back), then the users Secret."""
        if self.nats_users is None:
            return
        children = ChildNames(name)
        try:
            await self.kube.delete("v1", "Secret", children.nats_secret, children.namespace)
            result = await self.nats_users.sync()
        except (KubeError, NatsUsersError) as exc:
            post(WARNING, "DeleteFailed", f"NATS users: {exc}")
            raise kopf.TemporaryError(f"removing NATS users: {exc}", delay=10) from None
        if name not in result.programs:
            post(NORMAL, "NatsUsersRemoved", f"NATS users of {name} removed from {result.secret}")


class _Run:
    """One reconcile of one program: the state it collects on the way, and the status it writes."""

    def __init__(
        self, reconciler: Reconciler, body: Mapping[str, Any], now: datetime, post: EventPoster, retry: int
    ):
        self.r = reconciler
        self.config = reconciler.config
        self.kube = reconciler.kube
        self.body = body
        self.meta = plain(body["metadata"])
        self.name: str = self.meta["name"]
        self.generation = int(self.meta.get("generation") or 0)
        self.previous: dict[str, Any] = plain(body.get("status") or {})
        self.now = now
        self.post = post
        self.retry = retry
        self.names = ProgramNames(self.name)
        self.children = ChildNames(self.name)
        self.conditions: list[Condition] = []
        self.labels: dict[str, str] = {}
        self.password = ""
        self.secret_values: tuple[str, ...] = ()

    # --- outcomes ------------------------------------------------------------------------------

    def _status(self, phase: Phase, summary: Condition | None = None, **fields: Any) -> dict[str, Any]:
        conditions = status.merge(self.previous.get("conditions"), self.conditions, self.generation, self.now)
        summary = summary or status.ready(conditions)
        conditions = status.merge(conditions, [summary], self.generation, self.now)
        return {"phase": phase.value, "conditions": conditions, **fields}

    def invalid(self, exc: ProgramError) -> Result:
        message = f"invalid spec: {exc}"
        self.post(WARNING, "InvalidSpec", message)
        log.warning("invalid program spec", program=self.name, error=str(exc))
        summary = Condition.failed(status.READY, "InvalidSpec", message)
        return Result(
            status=self._status(Phase.failed, summary, observedGeneration=self.generation),
            error=kopf.PermanentError(message),
        )

    def failed(self, condition: Condition, event_reason: str, delay: float | None = None) -> Result:
        """A temporary failure: the condition names the component, Kopf retries with backoff."""
        message = _redact(condition.message, *self.secret_values)
        self.conditions.append(Condition(condition.type, condition.status, condition.reason, message))
        self.post(WARNING, event_reason, f"{condition.type}: {message}")
        log.warning(
            "reconcile failed",
            program=self.name,
            component=condition.type,
            reason=condition.reason,
            error=message,
        )
        before = self.previous.get("phase")
        phase = Phase(before) if before in LIFECYCLE_PHASES else Phase.provisioning
        return Result(
            status=self._status(phase),
            labels=self.labels,
            error=kopf.TemporaryError(
                f"{condition.type}: {message}",
                delay=self.r.backoff(self.retry) if delay is None else delay,
            ),
        )

    # --- steps ---------------------------------------------------------------------------------

    async def execute(self, extension: Mapping[str, str] | None) -> Result:
        program = program_of(self.body)
        spec = program.spec
        if (self.meta.get("labels") or {}).get(LABEL_TENANT) != spec.tenant:
            self.labels[LABEL_TENANT] = spec.tenant
        if not self.previous.get("phase"):
            # Visible at once in `kubectl get gp`; the real status follows when this run ends.
            await self._best_effort_status({"phase": Phase.provisioning.value})
        plog = log.bind(program=self.name, generation=self.generation)

        # 1. The namespace, then the Secrets (generated once, written before use).
        try:
            await self.kube.apply(owned(namespace(program), self.meta))
        except KubeError as exc:
            return self.failed(Condition.failed(status.NAMESPACE, "ApplyFailed", str(exc)), "ApplyFailed")
        try:
            secrets, existing, generated = await self._secrets(program)
            for secret in self._secret_objects(program, secrets, existing):
                await self.kube.apply(secret)
        except KubeError as exc:
            return self.failed(Condition.failed(status.SECRETS, "ApplyFailed", str(exc)), "ApplyFailed")
        users = ""
        if self.r.nats_users is not None:
            try:
                synced = await self.r.nats_users.sync()
            except NatsUsersError as exc:
                failure = Condition.failed(status.SECRETS, "NatsUsersFailed", str(exc))
                return self.failed(failure, "ApplyFailed")
            users = f"; NATS users in {synced.secret}"
        self.conditions.append(
            Condition.ok(
                status.SECRETS,
                "Stored",
                f"{_count(len(secrets.api_keys), 'active API key')} in {self.children.api_keys_secret};"
                f" credentials in {self.children.database_secret} and {self.children.nats_secret}{users}",
            )
        )
        if generated:
            what = ", ".join(generated)
            self.post(NORMAL, "SecretsCreated", f"generated {what} (stored, never regenerated)")

        # 2. Stream, consumer, schema, user, grants, migrations, bucket prefix.
        try:
            async with self.r.provisioning:
                provisioned = await provision(program, self.config.servers, self.password)
        except ProvisioningError as exc:
            kind = PROVISIONING_CONDITIONS.get(exc.component, status.STREAM)
            self.conditions += _around_failure(kind)
            return self.failed(Condition.failed(kind, "ProvisioningFailed", str(exc)), "ProvisioningFailed")
        self.conditions += [
            Condition.ok(
                status.STREAM,
                "Provisioned",
                f"stream {provisioned.stream} on {self.names.subjects},"
                f" durable consumer {provisioned.consumer}",
            ),
            Condition.ok(
                status.DATABASE,
                "Provisioned",
                f"schema and user {provisioned.database}, grants on that schema only, migrations applied",
            ),
            Condition.ok(status.BUCKET, "Provisioned", f"snapshots under {provisioned.snapshot_url}"),
        ]
        plog.info("provisioned", stream=provisioned.stream, database=provisioned.database)

        # 3. The dates: phase, and once closed the final snapshot.
        state = lifecycle.lifecycle(spec, self.now)
        final = self.previous.get("finalSnapshot")
        final_taken = lifecycle.final_snapshot_done(spec, final)
        snapshots_condition: Condition | None = None
        if state.closed and not final_taken:
            outcome = await self._final_snapshot(program, provisioned)
            if isinstance(outcome, Result):
                return outcome
            if isinstance(outcome, dict):
                final, final_taken = outcome, True
            else:
                snapshots_condition = outcome
        scale = lifecycle.scaling(state, final_taken)

        # 4. Every child, applied; leftovers deleted.
        live_ingest = await self._live_replicas()
        objects = build_all(
            program,
            self.config,
            secrets,
            existing_secrets=existing,
            scaled_to_zero=scale.ingest_to_zero,
            scoring_scaled_to_zero=scale.scoring_to_zero,
            snapshots_suspended=scale.snapshots_suspended,
            ingest_current_replicas=live_ingest,
            owner_meta=self.meta,
        )
        objects = [self._keep_autoscaled_replicas(obj, live_ingest) for obj in objects]
        try:
            for obj in objects:
                await self.kube.apply(obj)
            removed = await self._delete_leftovers(objects)
        except KubeError as exc:
            kind = status.NAMESPACE if exc.kind in NAMESPACE_KINDS else status.WORKLOADS
            if exc.kind == "CronJob":
                kind = status.SNAPSHOTS
            return self.failed(Condition.failed(kind, "ApplyFailed", str(exc)), "ApplyFailed")
        for kind, name in removed:
            self.post(NORMAL, "Removed", f"deleted {kind} {name}: no longer wanted by the spec")
        policies = sum(1 for obj in objects if obj["kind"] == "NetworkPolicy")
        self.conditions.append(
            Condition.ok(
                status.NAMESPACE,
                "Applied",
                f"{self.names.namespace} with quota, limits and {policies} network policies",
            )
        )
        self.conditions += [
            Condition.ok(status.WORKLOADS, "Applied", _workloads_message(objects, scale)),
            snapshots_condition or _snapshots_condition(program, state, final, final_taken),
        ]

        # 5. Status, and events for what changed.
        phase = state.phase
        before = self.previous.get("phase")
        history = lifecycle.with_extension(self.previous.get("extensions"), extension)
        fields: dict[str, Any] = {
            "observedGeneration": self.generation,
            "namespace": self.names.namespace,
            "ingestURL": ingest_url(self.name, self.config),
            "stream": provisioned.stream,
            "database": provisioned.database,
            "snapshotURL": provisioned.snapshot_url,
            "extensions": history,
        }
        if final:
            fields["finalSnapshot"] = final
        self._announce(state, before, extension)
        plog.info("reconciled", phase=phase.value, objects=len(objects))
        return Result(status=self._status(phase, **fields), labels=self.labels)

    def _announce(self, state: Lifecycle, before: Any, extension: Mapping[str, str] | None) -> None:
        if before in (None, Phase.provisioning.value):
            self.post(
                NORMAL,
                "Provisioned",
                f"namespace {self.names.namespace}, stream {self.names.stream}, schema {self.names.schema}",
            )
        elif self.previous.get("observedGeneration") != self.generation:
            self.post(NORMAL, "Updated", f"generation {self.generation} applied")
        if extension is not None:
            moved = f"end moved from {extension['previousEnd']} to {extension['newEnd']}"
            self.post(NORMAL, "Extended", moved)
        if before != state.phase.value:
            self.post(NORMAL, "PhaseChanged", f"{before or Phase.provisioning.value} -> {state.phase.value}")

    async def _best_effort_status(self, fields: Mapping[str, Any]) -> None:
        try:
            await self.kube.patch_program_status(self.name, fields)
        except KubeError as exc:  # only a display nicety: the handler's own patch follows
            log.info("early status not written", program=self.name, error=str(exc))

    async def _secrets(self, program: Program) -> tuple[ProgramSecrets, dict[str, dict[str, str]], list[str]]:
        """The program's secret values: read back from the live Secrets, generated if absent.

        Returns the values, the live data to keep (for `build_all`), and what was generated.
        """
        namespace_ = self.names.namespace
        keys_secret = await self.kube.get("v1", "Secret", self.children.api_keys_secret, namespace_)
        db_secret = await self.kube.get("v1", "Secret", self.children.database_secret, namespace_)
        keys_data: dict[str, str] = dict((keys_secret or {}).get("data") or {})
        generated: list[str] = []
        api_keys = stored_api_keys(keys_data)
        if not api_keys:
            api_keys = [generate_api_key(self.name)]
            generated.append("an API key")
        password = read_secret((db_secret or {}).get("data"), DATABASE_PASSWORD)
        if not password:
            password = generate_password()
            generated.append("the database password")
        url = render_url(program_url(self.config.mysql_admin_url, self.names, password))
        credentials: ProgramNatsCredentials | None = None
        hashes: dict[str, str] = {}
        if self.r.nats_users is not None:  # without NATS users nobody would sign in with them
            nats = await self.kube.get("v1", "Secret", self.children.nats_secret, namespace_)
            credentials, hashes, nats_generated = await asyncio.to_thread(
                nats_users_of, self.name, (nats or {}).get("data")
            )
            if nats_generated:
                generated.append("the NATS passwords")
        nats_passwords = (credentials.ingest_password, credentials.scoring_password) if credentials else ()
        self.password = password
        self.secret_values = (password, url, *api_keys, *nats_passwords)
        values = ProgramSecrets(
            api_keys=api_keys,
            database_url=url,
            nats_url=self.config.workload_nats_url_for_pods,
            nats_credentials=credentials,
            nats_password_hashes=hashes,
        )
        # The plain keys are the truth: hashes and the list are derived again from them.
        keep = {k: v for k, v in keys_data.items() if k not in (API_KEYS, API_KEY_HASHES)}
        existing = {self.children.api_keys_secret: keep} if keep else {}
        return values, existing, generated

    def _secret_objects(
        self, program: Program, secrets: ProgramSecrets, existing: Mapping[str, Mapping[str, str]]
    ) -> list[dict[str, Any]]:
        keys = merge_secret(
            api_keys_secret(program, secrets.api_keys), existing.get(self.children.api_keys_secret)
        )
        return [
            owned(obj, self.meta)
            for obj in (
                keys,
                database_secret(program, secrets.database_url),
                nats_secret(
                    program, secrets.nats_url, secrets.nats_credentials, secrets.nats_password_hashes
                ),
            )
        ]

    async def _live_replicas(self) -> int | None:
        live = await self.kube.get("apps/v1", "Deployment", INGEST, self.names.namespace)
        if live is None:
            return None
        replicas = (live.get("spec") or {}).get("replicas")
        return int(replicas) if replicas is not None else None

    @staticmethod
    def _keep_autoscaled_replicas(obj: dict[str, Any], live: int | None) -> dict[str, Any]:
        """With an autoscaler the builder leaves `replicas` out, so as not to undo its scaling.
        Server-side apply would instead *remove* a field the operator stops applying (back to
        the default, 1), so the live count is applied as it is."""
        if obj["kind"] != "Deployment" or obj["metadata"]["name"] != INGEST or live is None:
            return obj
        if "replicas" in obj["spec"]:
            return obj
        return {**obj, "spec": {"replicas": live, **obj["spec"]}}

    async def _delete_leftovers(self, objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Delete the program's children that `build_all` no longer returns (e.g. the autoscaler
        once the bounds are gone), found by label; what others create in the namespace stays."""
        wanted = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
        selector = f"{LABEL_PROGRAM}={self.name},{LABEL_MANAGED_BY}={MANAGED_BY}"
        removed = []
        for api_version, kind in NAMESPACED_CHILD_KINDS:
            for item in await self.kube.list(api_version, kind, self.names.namespace, selector):
                name = item["metadata"]["name"]
                if (kind, name) not in wanted:
                    await self.kube.delete(api_version, kind, name, self.names.namespace)
                    removed.append((kind, name))
        return removed

    async def _final_snapshot(
        self, program: Program, provisioned: ProvisionResult
    ) -> dict[str, Any] | Condition | Result:
        """The snapshot record once published; a condition while scoring still drains; a Result
        (temporary failure) when the snapshot could not be written."""
        spec = program.spec
        closed_at = spec.schedule.end + spec.schedule.grace
        try:
            pending = await pending_events(self.config.nats_url, self.name)
        except Exception as exc:
            return self.failed(
                Condition.failed(status.STREAM, "Unreachable", f"cannot read the consumer: {_reason(exc)}"),
                "FinalSnapshotFailed",
            )
        if pending and self.now < closed_at + self.r.options.drain_timeout:
            return Condition.unknown(
                status.SNAPSHOTS, "Draining", f"final snapshot waits for scoring: {pending} events pending"
            )
        bucket = snapshot_base(program, self.config.bucket)
        try:
            report = await asyncio.to_thread(run_snapshot, program, provisioned.database_url, bucket)
        except SnapshotBusy:
            return self.failed(
                Condition.unknown(status.SNAPSHOTS, "SnapshotBusy", "another snapshot run holds the lock"),
                "FinalSnapshotDelayed",
                delay=SNAPSHOT_BUSY_RETRY_SECONDS,
            )
        except Exception as exc:
            return self.failed(
                Condition.failed(status.SNAPSHOTS, "FinalSnapshotFailed", _reason(exc)), "FinalSnapshotFailed"
            )
        record = lifecycle.final_snapshot_record(
            spec,
            at=self.now,
            version=report.version,
            snapshot_url=report.snapshot_url,
            last_scored_position=report.last_scored_position,
        )
        self.post(
            NORMAL,
            "FinalSnapshot",
            f"version {report.version} published to {report.snapshot_url}; scaling ingest and scoring"
            " to zero, snapshot CronJob suspended",
        )
        return record


def nats_users_of(
    program: str, data: Mapping[str, str] | None
) -> tuple[ProgramNatsCredentials, dict[str, str], bool]:
    """The program's NATS passwords from its live NATS Secret, generated when absent, and their
    bcrypt hashes (kept while they match: a new salt would rewrite the server's users for
    nothing). Returns (credentials, hashes, whether passwords were generated). Blocking (bcrypt)."""
    stored = {w: read_secret(data, nats_password_key(w)) for w in NATS_WORKLOADS}
    generated = not all(stored.values())
    fresh = ProgramNatsCredentials.generate(program)
    # A password missing alone (edited by hand) is made again; the other one is kept.
    credentials = ProgramNatsCredentials(
        program,
        ingest_password=stored["ingest"] or fresh.ingest_password,
        scoring_password=stored["scoring"] or fresh.scoring_password,
    )
    hashes = {}
    for workload in NATS_WORKLOADS:
        password = credentials.password(workload)
        known = read_secret(data, nats_password_hash_key(workload)) or ""
        hashes[workload] = known if _matches(password, known) else hash_password(password)
    return credentials, hashes, generated


def _matches(password: str, hashed: str) -> bool:
    try:
        return bool(hashed) and bcrypt.checkpw(password.encode("utf-8"), hashed.encode("ascii"))
    except ValueError:  # not a bcrypt hash
        return False


def _around_failure(failed: str) -> list[Condition]:
    """`provision` works in PROVISIONING_ORDER: what came before the failed component is done,
    what comes after it has not been tried."""
    index = PROVISIONING_ORDER.index(failed)
    done = [Condition.ok(kind, "Provisioned") for kind in PROVISIONING_ORDER[:index]]
    waiting = [
        Condition.unknown(kind, "Waiting", f"waits for {failed}") for kind in PROVISIONING_ORDER[index + 1 :]
    ]
    return done + waiting


def _count(number: Any, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _workloads_message(objects: list[dict[str, Any]], scale: lifecycle.Scaling) -> str:
    replicas = {
        obj["metadata"]["name"]: obj["spec"].get("replicas") for obj in objects if obj["kind"] == "Deployment"
    }
    autoscaler = next((obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"), None)
    if autoscaler is not None:
        spec = autoscaler["spec"]
        ingest = f"ingest autoscaled {spec['minReplicas']}-{spec['maxReplicas']}"
    else:
        ingest = f"ingest {_count(replicas.get(INGEST), 'replica')}"
    text = f"{ingest}, scoring {_count(replicas.get('scoring'), 'replica')}"
    if scale.ingest_to_zero:
        text += " (ingest scaled to zero: the program takes no events)"
    return text


def _snapshots_condition(
    program: Program, state: Lifecycle, final: Mapping[str, Any] | None, taken: bool
) -> Condition:
    if state.closed and taken and final:
        return Condition.ok(
            status.SNAPSHOTS,
            "FinalSnapshotPublished",
            f"final snapshot version {final.get('version')} at {final.get('url')}; CronJob suspended",
        )
    schedule = program.spec.snapshots
    return Condition.ok(
        status.SNAPSHOTS, "Scheduled", f"CronJob `{schedule.schedule}` ({program.spec.schedule.timezone})"
    )
