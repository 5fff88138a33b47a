"""Reading a request body safely: size limits, gzip, JSON, and the single-or-batch shape.

Limits are enforced while reading, never after: a huge body is refused before it is all read,
and a gzip bomb is refused as soon as its output passes the limit, without inflating the rest.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gamify.ingest.errors import ApiError
from gamify.ingest.models import MAX_BATCH

MAX_BODY_BYTES = 1024 * 1024  # on the wire (compressed or not)
MAX_DECODED_BYTES = 4 * 1024 * 1024  # after gunzip
_GZIP_MAGIC = b"\x1f\x8b"


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, "too_large", f"{what} is larger than {limit} bytes; send fewer events per request")


def check_content_type(content_type: str | None) -> None:
    """JSON only (a missing Content-Type is taken as JSON); UTF-8 only."""
    if not content_type:
        return
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise ApiError(415, "unsupported_media_type", "Content-Type charset must be utf-8")


def check_content_encoding(content_encoding: str | None) -> bool:
    """True when the body is gzip; identity or none is plain; anything else is refused."""
    coding = (content_encoding or "identity").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return True
    if coding in ("identity", ""):
        return False
    raise ApiError(415, "unsupported_encoding", "Content-Encoding must be gzip or absent")


async def read_limited(
    chunks: AsyncIterator[bytes], content_length: str | None, limit: int = MAX_BODY_BYTES
) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit`."""
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ApiError(400, "bad_request", "Content-Length is not a number") from None
        if declared > limit:
            raise _too_large("the request body", limit)
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise _too_large("the request body", limit)
    return bytes(body)


def gunzip_limited(data: bytes, limit: int = MAX_DECODED_BYTES) -> bytes:
    """Inflate a gzip body (several members allowed), never producing more than limit + 1 bytes."""
    out = bytearray()
    pending = data
    while pending:
        if not pending.startswith(_GZIP_MAGIC):
            raise ApiError(400, "bad_gzip", "the body is not valid gzip (Content-Encoding: gzip)")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            while not inflater.eof:
                # max_length caps this call's output: at most one byte past the limit is made.
                chunk = inflater.decompress(pending, limit + 1 - len(out))
                pending = inflater.unconsumed_tail
                out += chunk
                if len(out) > limit:
                    raise _too_large("the decompressed body", limit)
                if not chunk and not pending:
                    raise ApiError(400, "bad_gzip", "the gzip body is truncated")
        except zlib.error:
            raise ApiError(400, "bad_gzip", "the body is not valid gzip (Content-Encoding: gzip)") from None
        pending = inflater.unused_data
    if not data:
        raise ApiError(400, "bad_gzip", "the gzip body is empty")
    return bytes(out)


def parse_json(data: bytes) -> Any:
    if not data.strip():
        raise ApiError(400, "invalid_json", 'the body is empty: send one event or {"events": [...]}')
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # orjson's message says where (line, column) and why, including bad UTF-8.
        raise ApiError(400, "invalid_json", f"the body is not valid UTF-8 JSON: {exc}") from None


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def raw_events(document: Any) -> list[Any]:
    """One event object, or `{"events": [...]}` with 1..500 items (items are checked later, one by one)."""
    if not isinstance(document, dict):
        raise ApiError(
            422,
            "invalid_body",
            f'the body must be one event object or {{"events": [...]}}, not a JSON {_json_kind(document)}',
        )
    if "events" not in document:
        return [document]
    extra = sorted(set(document) - {"events"})
    if extra:
        raise ApiError(
            422, "invalid_body", f"a batch has only `events`; unknown field(s): {', '.join(extra)}"
        )
    events = document["events"]
    if not isinstance(events, list):
        raise ApiError(422, "invalid_body", "events: must be an array of event objects")
    if not 1 <= len(events) <= MAX_BATCH:
        raise ApiError(422, "invalid_body", f"events: must hold 1 to {MAX_BATCH} events, got {len(events)}")
    return events
