"""No secret ever leaves the place it is kept: not in a log line, an error body or CLI output.

The real processes run with DEBUG logging, configured the way the platform runs them, with
every secret present: the program's API key, its database password, a MySQL admin password
and a NATS URL that carries a password (as the `<program>-nats` Secret may). Their whole
output is then searched for each secret, on the happy path and on the error paths: wrong
database password, NATS down, requests with wrong keys and bad bodies. The only place a
secret may appear is the `apiKey` field of `gamify local up --json` (DESIGN.md contract).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gamify import local
from gamify.credentials import generate_api_key, generate_password, hash_api_key
from gamify.logs import configure_logging, get_logger
from gamify.naming import ProgramNames
from gamify.provisioning import deprovision
from gamify.provisioning import mysql as mysql_provisioning
from gamify.settings import Servers
from tests.conftest import free_port, unique_program_id
from tests.programs import program_document

LOCAL_UP_FIELDS = {"program", "ingestURL", "apiKey", "snapshotURL"}
PROCESS_TIMEOUT = 90


# --- secrets to hunt for --------------------------------------------------------------------------


@contextmanager
def admin_with_password(mysql_admin_url: str) -> Iterator[tuple[str, str]]:
    """A MySQL admin account of its own, with a password: (its URL, its password).

    The shared server's root has no password, so without this an admin password could never
    be caught leaking. Dropped afterwards.
    """
    user, password = f"gleak_{secrets.token_hex(4)}", generate_password()
    root = create_engine(mysql_admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with root.connect() as connection:
            connection.execute(text("CREATE USER :u@'%' IDENTIFIED BY :p"), {"u": user, "p": password})
            connection.execute(text("GRANT ALL PRIVILEGES ON *.* TO :u@'%' WITH GRANT OPTION"), {"u": user})
        url = make_url(mysql_admin_url).set(username=user, password=password)
        yield url.render_as_string(hide_password=False), password
    finally:
        with root.connect() as connection:
            connection.execute(text("DROP USER IF EXISTS :u@'%'"), {"u": user})
        root.dispose()


def with_password(url: str, user: str, password: str) -> str:
    """`url` with `user:password@` in it (nats://... or mysql+pymysql://...)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def signed_in(url: str, user: str, made_up_password: str) -> tuple[str, str]:
    """(a NATS URL that signs in, its password). On a server with users (the one-machine mode
    since per-program NATS users) that is the admin URL the fixtures give, whose password is then
    the secret to hunt; on one without, any user and password get in, so a made-up one is used."""
    password = urlsplit(url).password
    if password:
        return url, password
    return with_password(url, user, made_up_password), made_up_password


def assert_clean(what: str, text_: str, *secret_values: str) -> None:
    for value in secret_values:
        assert value, "an empty secret proves nothing"
        assert value not in text_, f"a secret ({value[:4]}…) leaked into {what}:\n{text_[-3000:]}"


def visit(event_id: str) -> dict[str, Any]:
    occurred = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return {"id": event_id, "type": "app.visit", "user": "emp-1", "occurredAt": occurred}


@dataclass
class Setting:
    env: dict[str, str]
    home: Path
    program: str
    program_file: Path
    nats_password: str
    admin_password: str


@pytest.fixture
def setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str, mysql_admin_url: str, gcs_bucket: str
) -> Iterator[Setting]:
    signed_in_nats_url, nats_password = signed_in(nats_url, "leaker", f"natspw{secrets.token_hex(12)}")
    with admin_with_password(mysql_admin_url) as (admin_url, admin_password):
        program = unique_program_id("leak")
        program_file = tmp_path / f"{program}.yaml"
        program_file.write_text(
            yaml.safe_dump(
                program_document(
                    program, mode="both", rewards=[{"id": "mug", "name": "Mug", "cost": 10, "stock": 1}]
                )
            )
        )
        values = {
            "GAMIFY_HOME": str(tmp_path / "home"),
            "GAMIFY_NATS_URL": signed_in_nats_url,
            "GAMIFY_MYSQL_URL": admin_url,
            "GAMIFY_BUCKET": f"gs://{gcs_bucket}",
            "GAMIFY_LOG_LEVEL": "DEBUG",
            "GAMIFY_SNAPSHOT_INTERVAL": "1",
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        for name, value in values.items():
            monkeypatch.setenv(name, value)
        yield Setting({**os.environ}, tmp_path / "home", program, program_file, nats_password, admin_password)
        if (tmp_path / "home" / "programs" / program / "state.json").exists():
            local.down(program)
        servers = Servers(nats_url=nats_url, mysql_admin_url=mysql_admin_url, bucket=f"gs://{gcs_bucket}")
        asyncio.run(deprovision(program, servers, servers.bucket, delete_data=True))


def gamify(setting: Setting, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gamify.cli", *args],
        env=setting.env,
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )


# --- the happy path, and bad requests, through the real CLI and processes ---------------------------


def test_cli_processes_and_responses_never_carry_a_secret(setting: Setting) -> None:
    up = gamify(setting, "local", "up", "-f", str(setting.program_file), "--json")
    assert up.returncode == 0, up.stderr
    info = json.loads(up.stdout)
    assert set(info) == LOCAL_UP_FIELDS  # the contract: nothing more
    state_file = setting.home / "programs" / setting.program / "state.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    state = local.load_state(setting.program)
    api_key, db_password = state.api_key, state.db_password
    assert info["apiKey"] == api_key
    hidden = [db_password, setting.nats_password, setting.admin_password]
    # `--json` carries the API key in `apiKey` only; no other secret anywhere in its output.
    assert_clean("local up --json", json.dumps({k: v for k, v in info.items() if k != "apiKey"}), api_key)
    assert_clean("local up --json", up.stdout + up.stderr, *hidden)
    assert_clean("local up (stderr)", up.stderr, api_key)

    ingest = info["ingestURL"]
    responses: list[httpx.Response] = []

    def send(path: str = "/v1/events", **kwargs: Any) -> httpx.Response:
        response = httpx.post(f"{ingest}{path}", timeout=30, **kwargs)
        responses.append(response)
        return response

    bearer = {"Authorization": f"Bearer {api_key}"}
    assert send(json={"events": [visit("e-1"), visit("e-2")]}, headers=bearer).status_code == 202
    # Wrong keys, wrong schemes: 401, and neither the presented nor the real key comes back.
    other_key = generate_api_key(setting.program)
    for header in (
        f"Bearer {other_key}",
        f"Basic {api_key}",
        f"Bearer {api_key}x",
        f"Bearer {hash_api_key(api_key)}",
        f"Token {api_key}",
        api_key,
    ):
        refused = send(json=visit("e-3"), headers={"Authorization": header})
        assert refused.status_code == 401, header
    # Bad requests that carry the good key: every error is 4xx and says nothing of the key.
    as_json = {**bearer, "Content-Type": "application/json"}
    assert send(content=b"{not json", headers=as_json).status_code == 400
    assert send(content=b"x", headers={**bearer, "Content-Type": "text/plain"}).status_code == 415
    assert send(json={"events": []}, headers=bearer).status_code == 422
    assert send(json={"events": [{"id": "x"}]}, headers=bearer).status_code == 202  # rejected inside
    assert send(f"/v1/events/{api_key}", json=visit("e-4"), headers=bearer).status_code in (404, 405)
    assert send(f"/{api_key}?api_key={api_key}", json=visit("e-5"), headers=bearer).status_code in (404, 405)
    # A client that puts its own key in X-Request-Id gets it back (its own input); the logs,
    # which name every request id, must still not show it.
    misused = {**bearer, "X-Request-Id": api_key}
    assert (
        httpx.post(f"{ingest}/v1/events", json=visit("e-6"), headers=misused, timeout=30).status_code == 202
    )
    for response in responses:
        assert_clean(f"a {response.status_code} response", response.text + str(response.headers), api_key)
        assert_clean(f"a {response.status_code} response", response.text, other_key, *hidden)

    local.wait_scored(setting.program)
    outputs = {
        "snapshot run": gamify(setting, "snapshot", "run", setting.program),
        "leaderboard": gamify(setting, "leaderboard", setting.program),
        "user": gamify(setting, "user", setting.program, "emp-1"),
        "local status": gamify(setting, "local", "status"),
        "local down": gamify(setting, "local", "down", setting.program),
    }
    for name, result in outputs.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
        assert_clean(f"gamify {name}", result.stdout + result.stderr, api_key, other_key, *hidden)

    logs = {
        path.name: path.read_text() for path in (setting.home / "programs" / setting.program).glob("*.log")
    }
    assert set(logs) == {"ingest.log", "scoring.log", "snapshots.log"}
    for name, content in logs.items():
        assert '"level":"DEBUG"' in content, f"{name}: DEBUG logging was not on"
        assert_clean(name, content, api_key, other_key, *hidden)
    assert "e-1" in logs["ingest.log"] and "e-1" in logs["scoring.log"]  # the logs are the real ones


# --- error paths, process by process -----------------------------------------------------------------


def run_for(argv: list[str], env: dict[str, str], seconds: float) -> tuple[int | None, str]:
    """Run a service for `seconds` (or until it exits); SIGTERM it; return (exit code, output)."""
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        output, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    return process.returncode, output.decode(errors="replace")


def closed_port() -> int:
    return free_port()  # nothing listens there once the probe socket is closed


def test_error_paths_log_no_secret(setting: Setting, nats_url: str, mysql_admin_url: str) -> None:
    names = ProgramNames(setting.program)
    right_password, wrong_password = generate_password(), f"wrongpw{secrets.token_hex(12)}"
    database_url = mysql_provisioning.ensure_schema(mysql_admin_url, names, right_password)
    wrong_url = make_url(database_url).set(password=wrong_password).render_as_string(hide_password=False)
    nats_down = with_password(f"nats://127.0.0.1:{closed_port()}", "leaker", setting.nats_password)
    api_key = generate_api_key(setting.program)
    base = {
        **setting.env,
        "GAMIFY_PROGRAM_FILE": str(setting.program_file),
        "GAMIFY_RETRY_DELAY": "0.2",
    }
    hidden = (right_password, wrong_password, setting.nats_password, setting.admin_password, api_key)
    python = sys.executable

    # Scoring with a wrong database password: it retries, and says why without the password.
    code, output = run_for([python, "-m", "gamify.scoring"], {**base, "GAMIFY_DATABASE_URL": wrong_url}, 4)
    assert "1045" in output or "Access denied" in output, output[-2000:]
    assert_clean("scoring (wrong database password)", output, *hidden)

    # The snapshot job with a wrong password fails (exit 1) with a clean message.
    code, output = run_for(
        [python, "-m", "gamify.snapshots", "--once"], {**base, "GAMIFY_DATABASE_URL": wrong_url}, 60
    )
    assert code == 1 and "Access denied" in output, output[-2000:]
    assert_clean("snapshots --once (wrong database password)", output, *hidden)

    # Scoring with NATS down (a URL with a password in it), the database fine.
    code, output = run_for(
        [python, "-m", "gamify.scoring"],
        {**base, "GAMIFY_DATABASE_URL": database_url, "GAMIFY_NATS_URL": nats_down},
        6,
    )
    assert "NATS" in output or "nats" in output, output[-2000:]
    assert_clean("scoring (NATS down)", output, *hidden)

    # Ingest with NATS down: requests with the key get 503, and nothing says the key or password.
    port = free_port()
    ingest_env = {
        **base,
        "GAMIFY_NATS_URL": nats_down,
        "GAMIFY_API_KEY_HASHES": hash_api_key(api_key),
        "GAMIFY_INGEST_HOST": "127.0.0.1",
        "GAMIFY_INGEST_PORT": str(port),
    }
    process = subprocess.Popen(
        [python, "-m", "gamify.ingest"], env=ingest_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    bodies = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "ingest did not start"
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {api_key}"}
        down = httpx.post(
            f"http://127.0.0.1:{port}/v1/events", json=visit("d-1"), headers=headers, timeout=30
        )
        assert down.status_code == 503 and down.headers.get("Retry-After")
        bodies.append(down.text)
        readiness = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert readiness.status_code == 503
        bodies.append(readiness.text)
        time.sleep(2)  # a few reconnect attempts, each logged
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=30)[0].decode(errors="replace")
    assert '"level":"DEBUG"' in output or '"level":"WARNING"' in output, output[-2000:]
    assert_clean("ingest (NATS down)", output, *hidden)
    for body in bodies:
        assert_clean("an ingest error body (NATS down)", body, *hidden)

    # `gamify local up` with a wrong admin password: a failure that names no password.
    bad_admin = make_url(setting.env["GAMIFY_MYSQL_URL"]).set(password=wrong_password)
    failed = subprocess.run(
        [python, "-m", "gamify.cli", "local", "up", "-f", str(setting.program_file), "--json"],
        env={**setting.env, "GAMIFY_MYSQL_URL": bad_admin.render_as_string(hide_password=False)},
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
    )
    assert failed.returncode != 0
    assert "Access denied" in failed.stdout + failed.stderr
    assert_clean("local up (wrong admin password)", failed.stdout + failed.stderr, *hidden)


def test_log_lines_mask_url_passwords_whoever_logs_them() -> None:
    # The safety net under every process: a URL with a password, logged as a field, in the
    # message or in an exception, comes out masked (the committed ingest once logged its
    # NATS URL as-is on connecting).
    password = f"pw{secrets.token_hex(8)}"
    urls = [
        f"nats://gamify.p.ingest:{password}@nats:4222",
        f"mysql+pymysql://gamify_p:{password}@db:3306/gamify_p",
    ]
    stream = io.StringIO()
    configure_logging("DEBUG", service="test", stream=stream)
    try:
        log = get_logger("tests.leak")
        for url in urls:
            log.info(f"connecting to {url}", nats_url=url, detail={"url": url})
            try:
                raise ConnectionError(f"cannot reach {url}")
            except ConnectionError:
                log.exception("failed", error=f"at {url}")
    finally:
        configure_logging("INFO", service="gamify")
    output = stream.getvalue()
    assert output.count("[redacted]") >= 10 and "@nats:4222" in output and "@db:3306" in output
    assert_clean("log lines", output, password)
