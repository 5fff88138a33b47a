"""The one-machine mode: a program's ingest, scoring and snapshot processes on this machine.

`gamify local up -f program.yaml` provisions the program with the operator's own provisioning
code, then starts the same commands the operator puts in its Deployments and CronJob, as local
background processes configured through the same environment variables. State lives in
`.gamify/programs/<program>/`: the program file, credentials (mode 0600, generated once and
never overwritten), process ids and logs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from gamify.credentials import generate_api_key, generate_password, hash_api_key
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, SCORING
from gamify.program import Program, dump_program, load_program
from gamify.provisioning import provision
from gamify.provisioning.nats_auth import ProgramNatsCredentials
from gamify.settings import Servers, home, without_login

# The three long-running processes of a program, by the module that runs each.
PROCESSES = {
    "ingest": "gamify.ingest",
    "scoring": "gamify.scoring",
    "snapshots": "gamify.snapshots",
}
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


class LocalError(RuntimeError):
    pass


@dataclass
class LocalState:
    program: str
    tenant: str
    api_key: str
    db_password: str
    database_url: str = ""
    snapshot_url: str = ""
    bucket: str = ""
    port: int = 0
    pids: dict[str, int] = field(default_factory=dict)
    # The program's NATS users (ingest, scoring); empty in state files older than them.
    nats_ingest_password: str = ""
    nats_scoring_password: str = ""

    def nats_credentials(self) -> ProgramNatsCredentials:
        """The program's NATS passwords, made once (the first time they are asked for)."""
        if not (self.nats_ingest_password and self.nats_scoring_password):
            made = ProgramNatsCredentials.generate(self.program)
            self.nats_ingest_password = made.ingest_password
            self.nats_scoring_password = made.scoring_password
        return ProgramNatsCredentials(self.program, self.nats_ingest_password, self.nats_scoring_password)

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def public(self) -> dict[str, str]:
        """What `local up --json` prints (DESIGN.md contract)."""
        return {
            "program": self.program,
            "ingestURL": self.ingest_url,
            "apiKey": self.api_key,
            "snapshotURL": self.snapshot_url,
        }


def program_dir(program: str) -> Path:
    return home() / "programs" / program


def _state_file(program: str) -> Path:
    return program_dir(program) / "state.json"


def load_state(program: str) -> LocalState:
    path = _state_file(program)
    if not path.exists():
        raise LocalError(f"program {program!r} is not set up here; run `gamify local up -f FILE`")
    return LocalState(**json.loads(path.read_text()))


def save_state(state: LocalState) -> None:
    path = _state_file(state.program)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Credentials inside: readable by this user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out, indent=2)
    os.replace(tmp, path)


def known_programs() -> list[str]:
    root = home() / "programs"
    return sorted(p.name for p in root.iterdir() if (p / "state.json").exists()) if root.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie child still answers kill(0); treat it as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_env(state: LocalState, servers: Servers, process: str | None = None) -> dict[str, str]:
    """The environment the operator would give each container, for local processes.

    The NATS URL carries no credentials: `ingest` and `scoring` sign in as the program's own
    users for that workload; other processes get none.
    """
    directory = program_dir(state.program)
    nats_login = state.nats_credentials().login(process).environment() if process in (INGEST, SCORING) else {}
    return {
        **os.environ,
        **nats_login,
        "GAMIFY_PROGRAM_FILE": str(directory / "program.yaml"),
        "GAMIFY_NATS_URL": without_login(servers.nats_url),
        "GAMIFY_DATABASE_URL": state.database_url,
        "GAMIFY_BUCKET": state.bucket,
        "GAMIFY_API_KEY_HASHES": hash_api_key(state.api_key),
        "GAMIFY_INGEST_HOST": "127.0.0.1",
        "GAMIFY_INGEST_PORT": str(state.port),
        "GAMIFY_SNAPSHOT_INTERVAL": os.environ.get("GAMIFY_SNAPSHOT_INTERVAL", "60"),
    }


def _start(name: str, module: str, env: dict[str, str], directory: Path) -> int:
    log = open(directory / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # survives the CLI; `local down` stops it
    )
    log.close()
    return proc.pid


def _tail(path: Path, lines: int = 15) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _wait_ready(state: LocalState) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    directory = program_dir(state.program)
    while time.monotonic() < deadline:
        for name, pid in state.pids.items():
            if not alive(pid):
                raise LocalError(
                    f"{name} of {state.program} exited during start-up; its log says:\n"
                    + _tail(directory / f"{name}.log")
                )
        try:
            if httpx.get(f"{state.ingest_url}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise LocalError(
        f"ingest of {state.program} not ready after {READY_TIMEOUT:.0f}s; log:\n"
        + _tail(directory / "ingest.log")
    )


def running(state: LocalState) -> dict[str, bool]:
    return {name: alive(pid) for name, pid in state.pids.items()}


def up(path: str | Path, servers: Servers | None = None) -> LocalState:
    """Provision the program and start its processes; return once ingest is ready."""
    servers = servers or Servers.from_env()
    program: Program = load_program(path)
    directory = program_dir(program.name)
    directory.mkdir(parents=True, exist_ok=True)
    if _state_file(program.name).exists():
        state = load_state(program.name)
        if state.tenant != program.spec.tenant:
            raise LocalError(
                f"program {program.name!r} belongs to tenant {state.tenant!r}; spec.tenant is immutable"
            )
    else:  # first time here: credentials are made once and kept in the state file
        state = LocalState(
            program=program.name,
            tenant=program.spec.tenant,
            api_key=generate_api_key(program.name),
            db_password=generate_password(),
        )
    (directory / "program.yaml").write_text(dump_program(program))
    result = asyncio.run(
        provision(program, servers, state.db_password, nats_credentials=state.nats_credentials())
    )
    state.database_url = result.database_url
    state.snapshot_url = result.snapshot_url
    state.bucket = program.spec.snapshots.bucket or servers.bucket
    if state.pids and all(running(state).values()):
        save_state(state)  # already up: the processes re-read nothing, just report
        return state
    stop_processes(state)
    state.port = _free_port()
    state.pids = {
        name: _start(name, module, process_env(state, servers, name), directory)
        for name, module in PROCESSES.items()
    }
    save_state(state)
    try:
        _wait_ready(state)
    except LocalError:
        stop_processes(state)
        save_state(state)
        raise
    return state


def stop_processes(state: LocalState) -> None:
    """SIGTERM (graceful drain), then SIGKILL what is still there after STOP_TIMEOUT."""
    for pid in state.pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(alive(pid) for pid in state.pids.values()):
        time.sleep(0.1)
    for pid in state.pids.values():
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    state.pids = {}


def load_program_of(state: LocalState) -> Program:
    """The program file the processes of `state` run with."""
    return load_program(program_dir(state.program) / "program.yaml")


async def pending_events(nats_url: str, program: str) -> int:
    """Events on the stream the scoring consumer has not acknowledged yet."""
    import nats

    names = ProgramNames(program)
    connection = await nats.connect(nats_url, connect_timeout=3)
    try:
        info = await connection.jetstream().consumer_info(names.stream, names.durable)
        # A message nak'ed with a delay is in neither count: it shows as delivered, not acked.
        unacked = int(info.delivered.stream_seq or 0) > int(info.ack_floor.stream_seq or 0)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0) + int(unacked)
    finally:
        await connection.close()


def wait_scored(program: str, timeout: float = 180, servers: Servers | None = None) -> None:
    """Block until scoring has caught up with everything accepted so far."""
    nats_url = (servers or Servers.from_env()).nats_url
    deadline = time.monotonic() + timeout
    while (left := asyncio.run(pending_events(nats_url, program))) > 0:
        if time.monotonic() > deadline:
            raise LocalError(f"scoring of {program} still has {left} events pending after {timeout:.0f}s")
        time.sleep(0.2)


def down(program: str) -> LocalState:
    state = load_state(program)
    stop_processes(state)
    save_state(state)
    return state
