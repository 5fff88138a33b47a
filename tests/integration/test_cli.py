"""The `gamify` command line as users type it (DESIGN.md, "The one-machine command line")."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import nats
import pytest
import yaml
from typer.testing import CliRunner

from gamify import local
from gamify.cli import app
from gamify.naming import ProgramNames
from gamify.provisioning import nats as stream
from tests.conftest import unique_program_id
from tests.programs import program_document, visit_rule

runner = CliRunner()


def test_validate_names_each_bad_field(tmp_path: Path) -> None:
    good = runner.invoke(app, ["validate", "examples/both-badges.yaml"])
    assert good.exit_code == 0, good.output
    assert "initech-healthy-habits" in good.output and "3 rules" in good.output

    document = yaml.safe_load(Path("examples/both-badges.yaml").read_text())
    document["spec"]["rules"][0]["points"] = -5
    document["spec"]["schedule"]["timezone"] = "Mars/Olympus"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "spec.rules[0].points" in result.output
    assert "spec.schedule.timezone" in result.output


def test_local_up_json_then_leaderboard_and_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str, mysql_admin_url: str
) -> None:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_BUCKET", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("GAMIFY_SNAPSHOT_INTERVAL", "3600")
    start = datetime.now(UTC) - timedelta(days=1)
    name = unique_program_id("cli")
    program = program_document(name, start, days=9, rules=[visit_rule(3)])
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(program))

    up = runner.invoke(app, ["local", "up", "-f", str(path), "--json"])
    try:
        assert up.exit_code == 0, up.output
        info = json.loads(up.output)
        assert set(info) == {"program", "ingestURL", "apiKey", "snapshotURL"}
        assert info["program"] == name and info["snapshotURL"].endswith(f"/{name}/")
        assert httpx.get(f"{info['ingestURL']}/readyz", timeout=5).status_code == 200

        now = datetime.now(UTC).isoformat()
        events = [
            {"id": f"v{i}", "type": "app.visit", "user": f"u{i % 2}", "occurredAt": now} for i in range(3)
        ]
        answer = httpx.post(
            f"{info['ingestURL']}/v1/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {info['apiKey']}"},
            timeout=10,
        )
        assert answer.status_code == 202 and answer.json()["accepted"] == 3

        local.wait_scored(name)
        snap = runner.invoke(app, ["snapshot", "run", name])
        assert snap.exit_code == 0, snap.output
        board = runner.invoke(app, ["leaderboard", name], env={"COLUMNS": "120"})
        assert board.exit_code == 0, board.output
        rows = [line for line in board.output.splitlines() if " u0 " in line or " u1 " in line]
        assert len(rows) == 2 and "6" in rows[0] and "u0" in rows[0], board.output  # u0: 2 visits

        # An 80-column terminal: the name and the ingest URL whole, every process up.
        status = runner.invoke(app, ["local", "status"], env={"COLUMNS": "80"})
        assert name in status.output and info["ingestURL"] in status.output, status.output
        assert status.output.count(" up ") == len(local.PROCESSES), status.output
    finally:
        down = runner.invoke(app, ["local", "down", name])
    assert down.exit_code == 0 and f"stopped {name}" in down.output
    status = runner.invoke(app, ["local", "status"], env={"COLUMNS": "80"})
    assert status.output.count(" down ") == len(local.PROCESSES), status.output


def test_local_up_with_the_database_down_is_a_short_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nats_url: str
) -> None:
    monkeypatch.setenv("GAMIFY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GAMIFY_BUCKET", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("GAMIFY_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:1/")  # nothing listens
    document = yaml.safe_load(Path("examples/both-badges.yaml").read_text())
    document["metadata"]["name"] = unique_program_id("cli")
    path = tmp_path / "program.yaml"
    path.write_text(yaml.safe_dump(document))

    try:
        up = runner.invoke(app, ["local", "up", "-f", str(path)])
    finally:  # the stream was made before the schema step failed
        asyncio.run(_delete_stream(nats_url, document["metadata"]["name"]))
    assert up.exit_code == 1
    assert "could not provision the program" in up.output and "schema" in up.output, up.output
    assert "make servers-up" in up.output
    assert "Traceback" not in up.output and isinstance(up.exception, SystemExit)


async def _delete_stream(nats_url: str, program: str) -> None:
    connection = await nats.connect(nats_url, connect_timeout=3)
    try:
        await stream.delete_stream(connection.jetstream(), ProgramNames(program))
    finally:
        await connection.close()
