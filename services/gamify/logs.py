"""Structured logs: one JSON object per line, on the standard `logging` module.

Each line has `ts`, `level`, `logger`, `msg`, `service`, and every field passed along (e.g.
`program`, `event_id`, `request_id`, `tenant`). Every line about an event carries its
`event_id`, so one event can be followed from ingest through scoring to the snapshot.

    configure_logging("INFO", service="ingest")
    log = get_logger(__name__, program="acme-2027")
    log.info("event accepted", event_id="e-1", seq=42)

Secrets never reach the output: fields with secret-sounding names are replaced, and bearer
tokens, API keys and URL passwords (`nats://user:password@host`) inside messages and fields
are masked (a safety net: code must not log them at all).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson

REDACTED = "[redacted]"
_SECRET_FIELD = re.compile(r"(authorization|password|passwd|secret|token|api_?key|credential)", re.I)
_SECRET_TEXT = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+|gk_[A-Za-z0-9_-]{16,}")
# The password of a URL's userinfo (`nats://user:password@host`, `mysql+pymysql://u:p@h/db`).
_URL_PASSWORD = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^\s:/@\"']*:)[^\s@/\"']+(@)")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}
# uvicorn adds an ANSI-coloured copy of its message: noise in JSON.
_SKIPPED_FIELDS = frozenset({"color_message"})
_OWN_KWARGS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})
_HANDLER_NAME = "gamify-json"


def _mask_text(text: str) -> str:
    text = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(2), text)
    return _SECRET_TEXT.sub(lambda m: (m.group(1) or "") + REDACTED, text)


def _clean(name: str, value: Any) -> Any:
    if _SECRET_FIELD.search(name):
        return REDACTED
    if isinstance(value, str):
        return _mask_text(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v) for k, v in value.items()}
    return value


def _default(value: Any) -> Any:
    return str(value)


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": _mask_text(record.getMessage()),
            "service": self.service,
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_ATTRS and name not in _SKIPPED_FIELDS and not name.startswith("_"):
                line[name] = _clean(name, value)
        if record.exc_info:
            line["exc"] = _mask_text(self.formatException(record.exc_info))
        return orjson.dumps(line, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_logging(level: str = "INFO", service: str = "gamify", stream: IO[str] | None = None) -> None:
    """Send every log record (ours, uvicorn's, nats') as JSON lines to `stream` (stderr).

    Calling it again replaces the handler it installed before, so tests can redirect output.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter(service))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Servers' own loggers should flow to the root handler, not print their own format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "nats"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


class FieldLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that carries fields, and takes more as keyword arguments.

    `log.info("msg", event_id=...)` is the same as `extra={"event_id": ...}` merged with the
    bound fields.
    """

    def __init__(self, logger: logging.Logger, fields: Mapping[str, Any] | None = None):
        super().__init__(logger, dict(fields or {}))

    def bind(self, **fields: Any) -> FieldLogger:
        return FieldLogger(self.logger, {**(self.extra or {}), **fields})

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        fields = {key: kwargs.pop(key) for key in list(kwargs) if key not in _OWN_KWARGS}
        extra = {**(self.extra or {}), **(kwargs.get("extra") or {}), **fields}
        # Names that LogRecord owns (e.g. `name`, `msg`) cannot be set through `extra`.
        kwargs["extra"] = {(f"{k}_" if k in _RECORD_ATTRS else k): v for k, v in extra.items()}
        return msg, kwargs


def get_logger(name: str, **fields: Any) -> FieldLogger:
    """A logger for module `name`, with `fields` on every line it writes."""
    return FieldLogger(logging.getLogger(name), fields)


def log_with(logger: logging.Logger | FieldLogger, level: int | str, msg: str, **fields: Any) -> None:
    """Log `msg` with `fields`, from any logger (a plain one from `logging.getLogger` too)."""
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if isinstance(logger, FieldLogger):
        logger.log(numeric, msg, **fields)
    else:
        logger.log(numeric, msg, extra=fields)
