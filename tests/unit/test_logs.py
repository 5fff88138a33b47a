"""JSON log lines: fields, one object per line, secrets masked."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from gamify.logs import REDACTED, JsonFormatter, configure_logging, get_logger, log_with


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    previous = root.level
    configure_logging("DEBUG", service="test", stream=stream)
    yield stream
    for handler in list(root.handlers):
        if isinstance(handler.formatter, JsonFormatter):
            root.removeHandler(handler)
    root.setLevel(previous)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_fields(output: io.StringIO) -> None:
    log = get_logger("gamify.test", program="acme-2027").bind(request_id="r-1")
    log.info("event %s", "accepted", event_id="e-1", seq=3)
    log_with(logging.getLogger("plain"), "warning", "from a plain logger", event_id="e-2")
    first, second = lines(output)
    assert first["msg"] == "event accepted"
    assert (first["level"], first["logger"], first["service"]) == ("INFO", "gamify.test", "test")
    assert (first["program"], first["request_id"], first["event_id"], first["seq"]) == (
        "acme-2027",
        "r-1",
        "e-1",
        3,
    )
    assert str(first["ts"]).endswith("+00:00")
    assert (second["event_id"], second["level"]) == ("e-2", "WARNING")


def test_secrets_are_masked(output: io.StringIO) -> None:
    key = "gk_" + "A" * 43
    log = get_logger("gamify.test")
    log.info(f"header was Bearer {key}", authorization=f"Bearer {key}", password="hunter2")
    log.info("headers", headers={"Authorization": "Bearer x", "Accept": "*/*"}, note=f"key {key}")
    text = output.getvalue()
    assert key not in text and "hunter2" not in text
    first, second = lines(output)
    assert first["authorization"] == REDACTED and first["password"] == REDACTED
    assert second["headers"] == {"Authorization": REDACTED, "Accept": "*/*"}


def test_reserved_names_do_not_crash(output: io.StringIO) -> None:
    get_logger("gamify.test").info("x", name="n", module="m")
    [line] = lines(output)
    assert (line["name_"], line["module_"], line["msg"]) == ("n", "m", "x")


def test_exceptions_are_one_line(output: io.StringIO) -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("gamify.test").exception("failed", event_id="e-3")
    [line] = lines(output)
    assert "RuntimeError: boom" in str(line["exc"]) and line["event_id"] == "e-3"
