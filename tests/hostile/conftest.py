"""The ingest service under attack: a provisioned program on the real NATS, in process or as the
real `python -m gamify.ingest` process (uvicorn), with a real API key.

The helpers of the ingest integration tests (program, events, stream reading) are reused, not
copied: these tests only add inputs those tests do not try.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import nats
import pytest
from bench.common import wait_http_ready

from gamify.credentials import hash_api_key
from gamify.ingest.app import create_app
from gamify.naming import ProgramNames
from gamify.program import Program, dump_program
from gamify.provisioning.nats import delete_stream, ensure_stream
from tests.conftest import free_port
from tests.integration.test_ingest import AUTH, KEY, make_program, running

__all__ = ["AUTH", "KEY", "IngestProcess", "ingest_process", "stream_count"]


async def _provision(nats_url: str, program: Program) -> None:
    nc = await nats.connect(nats_url)
    try:
        await ensure_stream(nc.jetstream(), ProgramNames(program.name), max_age=timedelta(days=1))
    finally:
        await nc.close()


async def _deprovision(nats_url: str, program: Program) -> None:
    nc = await nats.connect(nats_url)
    try:
        await delete_stream(nc.jetstream(), ProgramNames(program.name))
    finally:
        await nc.close()


async def stream_count(nats_url: str, program: Program) -> int:
    """Messages in the program's stream: what was really persisted."""
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().stream_info(ProgramNames(program.name).stream)
        return int(info.state.messages)
    finally:
        await nc.close()


@pytest.fixture
async def hostile_client(nats_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The app in process (its lifespan running, connected to NATS) with a provisioned program."""
    program = make_program()
    await _provision(nats_url, program)
    app = create_app(program, nats_url, [hash_api_key(KEY)])
    try:
        async with running(app) as http:
            http.program = program  # type: ignore[attr-defined]
            http.nats_url = nats_url  # type: ignore[attr-defined]
            yield http
    finally:
        await _deprovision(nats_url, program)


@dataclass
class IngestProcess:
    """A running `python -m gamify.ingest` for one provisioned program."""

    program: Program
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def alive(self) -> bool:
        return self.process.poll() is None


READY_SECONDS = 20  # the real process serves /readyz within a second or two


@contextmanager
def ingest_process(
    nats_url: str, tmp_path: Path, program: Program | None = None, env: dict[str, str] | None = None
) -> Iterator[IngestProcess]:
    """Provision a program's stream, serve it with the real process, stop and clean up after."""
    program = program or make_program(rate=100_000, burst=100_000)
    asyncio.run(_provision(nats_url, program))
    program_file = tmp_path / f"{program.name}.yaml"
    program_file.write_text(dump_program(program))
    port = free_port()
    log_path = tmp_path / f"{program.name}.log"
    full_env = {
        **os.environ,
        "GAMIFY_PROGRAM_FILE": str(program_file),
        "GAMIFY_NATS_URL": nats_url,
        "GAMIFY_API_KEY_HASHES": hash_api_key(KEY),
        "GAMIFY_INGEST_HOST": "127.0.0.1",
        "GAMIFY_INGEST_PORT": str(port),
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gamify.ingest"], env=full_env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_http_ready(f"http://127.0.0.1:{port}", process, log_path, timeout=READY_SECONDS)
        yield IngestProcess(program, port, process, log_path)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        asyncio.run(_deprovision(nats_url, program))
