"""Hand-made hostile bodies against the ingest app on the real NATS.

tests/integration/test_ingest.py already covers a 1 GiB gzip bomb, broken gzip, `\\xff` bytes, a
5,000-deep array, 501 events and a few nasty values; these add what it does not: bombs at and
around the limit (and in many members), a bomb against the real process with its memory
measured, 10,000-level `properties`, huge and very long values, bad UTF-8 forms, NaN/Infinity,
timestamps at the edges of time, unit overflow, and duplicates inside one batch. Every answer is
checked for its status, a message naming the field, and that the stream holds exactly what the
answers claimed accepted.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import time
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gamify.ingest.body import MAX_DECODED_BYTES
from gamify.program import Program
from tests.hostile.conftest import AUTH, ingest_process, stream_count
from tests.integration.test_ingest import event

JSON = {**AUTH, "Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}


async def post(http: httpx.AsyncClient, content: bytes, headers: dict[str, str] = JSON) -> httpx.Response:
    return await http.post("/v1/events", content=content, headers=headers)


def program_of(http: httpx.AsyncClient) -> Program:
    return http.program  # type: ignore[attr-defined,no-any-return]


def only_rejection(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"]) == (0, 0), body
    [rejected] = body["rejected"]
    return rejected  # type: ignore[no-any-return]


def zeros_gzip(size: int, members: int = 1) -> bytes:
    """`members` gzip members whose output is `size` bytes of JSON whitespace in all."""
    out = io.BytesIO()
    per_member = size // members
    for _ in range(members):
        out.write(gzip.compress(b" " * per_member, compresslevel=9))
    return out.getvalue()


# -- gzip bombs ------------------------------------------------------------------------------------


async def test_gzip_exactly_at_the_limit_is_read_and_one_byte_more_is_413(
    hostile_client: httpx.AsyncClient,
) -> None:
    document = orjson.dumps(event("gz-limit"))
    padded = document + b" " * (MAX_DECODED_BYTES - len(document))
    assert len(padded) == MAX_DECODED_BYTES
    at_limit = await post(hostile_client, gzip.compress(padded), GZIP)
    assert at_limit.status_code == 202 and at_limit.json()["accepted"] == 1, at_limit.text
    over = await post(hostile_client, gzip.compress(padded + b" "), GZIP)
    assert over.status_code == 413 and over.json()["error"] == "too_large"
    assert "decompressed" in over.json()["message"]


async def test_gzip_bomb_in_many_small_members_is_413(hostile_client: httpx.AsyncClient) -> None:
    # 200 members of 1 MiB each: every member is small, their sum is 50x the limit.
    bomb = zeros_gzip(200 * 1024 * 1024, members=200)
    assert len(bomb) < 1024 * 1024
    started = time.perf_counter()
    response = await post(hostile_client, bomb, GZIP)
    assert response.status_code == 413 and response.json()["error"] == "too_large"
    assert time.perf_counter() - started < 1.0


async def test_gzip_inside_gzip_is_not_inflated_twice(hostile_client: httpx.AsyncClient) -> None:
    inner = gzip.compress(b" " * (50 * 1024 * 1024))
    response = await post(hostile_client, gzip.compress(inner), GZIP)
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


async def test_raw_deflate_and_trailing_garbage_are_400(hostile_client: httpx.AsyncClient) -> None:
    document = orjson.dumps(event("gz-raw"))
    deflater = zlib.compressobj(wbits=-15)
    raw_deflate = deflater.compress(document) + deflater.flush()
    for payload in (raw_deflate, gzip.compress(document) + b"garbage"):
        response = await post(hostile_client, payload, GZIP)
        assert response.status_code == 400 and response.json()["error"] == "bad_gzip", response.text
    assert await stream_count_of(hostile_client) == 0


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


def test_gzip_bombs_keep_the_real_process_memory_bounded(nats_url: str, tmp_path: Path) -> None:
    # ~1 GiB of zeros in under 1 MiB, sent 10 times to the real process: each is refused after
    # inflating at most the 4 MiB limit, so the peak memory grows by a few MiB, not by a GiB.
    bomb = io.BytesIO()
    with gzip.GzipFile(fileobj=bomb, mode="wb", compresslevel=9) as gz:
        for _ in range(1000):
            gz.write(b"\0" * (1 << 20))
    payload = bomb.getvalue()
    with ingest_process(nats_url, tmp_path) as ingest, httpx.Client(base_url=ingest.base_url) as http:
        pid = ingest.process.pid
        peak_before = _rss_kib(pid, "VmHWM")
        started = time.perf_counter()
        for _ in range(10):
            response = http.post("/v1/events", content=payload, headers=GZIP, timeout=10)
            assert response.status_code == 413, response.text
        elapsed = time.perf_counter() - started
        peak_after = _rss_kib(pid, "VmHWM")
        assert ingest.alive()
    assert elapsed < 10, elapsed
    assert peak_after - peak_before < 64 * 1024, (peak_before, peak_after)


# -- deep and huge properties ------------------------------------------------------------------------


def with_raw_properties(event_id: str, raw: str) -> bytes:
    occurred = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    return (
        f'{{"id":"{event_id}","type":"activity.steps","user":"u-1","occurredAt":"{occurred}",'
        f'"properties":{raw}}}'
    ).encode()


@pytest.mark.parametrize(
    "raw",
    [
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        '{"a":' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"a":' + '{"b":[' * 5_000 + "]}" * 5_000 + "}",
    ],
    ids=["10000-objects", "10000-arrays", "10000-mixed"],
)
async def test_10000_levels_of_properties_are_a_clear_400(
    hostile_client: httpx.AsyncClient, raw: str
) -> None:
    response = await post(hostile_client, with_raw_properties("deep-1", raw))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_json" and "depth" in body["message"]
    assert await stream_count_of(hostile_client) == 0


@pytest.mark.parametrize("levels", [5, 50, 1000])
async def test_nesting_under_the_parser_limit_is_rejected_per_event(
    hostile_client: httpx.AsyncClient, levels: int
) -> None:
    raw = '{"a":' * levels + "1" + "}" * levels
    rejected = only_rejection(await post(hostile_client, with_raw_properties("deep-2", raw)))
    assert rejected["id"] == "deep-2"
    assert rejected["reason"].startswith("properties:") and "nested deeper" in rejected["reason"]


@pytest.mark.parametrize(
    "properties",
    [
        {"s": "x" * 900_000},
        {f"k{i}": i for i in range(40_000)},
        {"list": list(range(100_000))},
        {"k" * 500_000: 1},
    ],
    ids=["900k-string", "40k-keys", "100k-list", "500k-key"],
)
async def test_huge_properties_are_rejected_naming_the_field(
    hostile_client: httpx.AsyncClient, properties: dict[str, Any]
) -> None:
    rejected = only_rejection(
        await post(hostile_client, orjson.dumps(event("huge-1", properties=properties)))
    )
    assert rejected["id"] == "huge-1" and rejected["reason"].startswith("properties:"), rejected


# -- long ids, bad text ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field", "echoed_id"),
    [
        ({"id": "e" * 129}, "id", None),
        ({"id": "e" * 900_000}, "id", None),
        ({"user": "u" * 129}, "user", "long-1"),
        ({"user": "u" * 900_000}, "user", "long-1"),
        ({"type": "a." * 40 + "b"}, "type", "long-1"),
        ({"source": "s" * 65}, "source", "long-1"),
    ],
    ids=["id-129", "id-900k", "user-129", "user-900k", "type-81", "source-65"],
)
async def test_very_long_values_are_rejected_naming_the_field(
    hostile_client: httpx.AsyncClient, overrides: dict[str, str], field: str, echoed_id: str | None
) -> None:
    response = await post(hostile_client, orjson.dumps(event("long-1", **overrides)))
    rejected = only_rejection(response)
    assert rejected["reason"].startswith(f"{field}:"), rejected
    # A hostile id is never echoed back (nor a 900 kB one into the answer).
    assert rejected["id"] == echoed_id
    assert len(response.content) < 2_000


async def test_the_longest_allowed_ids_are_accepted_and_stored(hostile_client: httpx.AsyncClient) -> None:
    body = orjson.dumps(event("i" * 128, user="u" * 128))
    response = await post(hostile_client, body)
    assert response.status_code == 202 and response.json()["accepted"] == 1
    assert await stream_count_of(hostile_client) == 1


@pytest.mark.parametrize(
    "content",
    [
        b'{"id":"bad-1","type":"activity.steps","user":"u-\xc3\x28","occurredAt":"2027-01-01T00:00:00Z"}',
        b'{"id":"bad-2","type":"activity.steps","user":"u-\xed\xa0\x80","occurredAt":"2027-01-01T00:00:00Z"}',
        b'{"id":"bad-3","type":"activity.steps","user":"u-\xf8\x88\x80\x80\x80","occurredAt":"2027"}',
        b'{"id":"bad-4","type":"activity.steps","user":"u-\\ud800","occurredAt":"2027-01-01T00:00:00Z"}',
        b'\xef\xbb\xbf{"id":"bad-5","type":"activity.steps","user":"u","occurredAt":"2027-01-01T00:00:00Z"}',
        '{"id":"bad-6","user":"é"}'.encode("latin-1"),
        '{"id":"bad-7"}'.encode("utf-16"),
    ],
    ids=[
        "invalid-2-byte",
        "surrogate-bytes",
        "5-byte-form",
        "lone-surrogate-escape",
        "bom",
        "latin-1",
        "utf-16",
    ],
)
async def test_non_utf8_bodies_are_400(hostile_client: httpx.AsyncClient, content: bytes) -> None:
    response = await post(hostile_client, content)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "invalid_json" and "UTF-8 JSON" in body["message"]


async def test_utf8_charset_other_than_utf8_is_415(hostile_client: httpx.AsyncClient) -> None:
    headers = {**AUTH, "Content-Type": "application/json; charset=latin-1"}
    response = await post(hostile_client, orjson.dumps(event("cs-1")), headers)
    assert response.status_code == 415 and "charset" in response.json()["message"]


# -- numbers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400])
async def test_non_finite_numbers_are_400_never_stored(
    hostile_client: httpx.AsyncClient, literal: str
) -> None:
    response = await post(hostile_client, with_raw_properties("num-1", f'{{"steps":{literal}}}'))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_json"
    assert await stream_count_of(hostile_client) == 0


@pytest.mark.parametrize("steps", [10**30, -(10**30), 10**15 + 1, 1e300, 2**63, -(2**63) - 1], ids=str)
async def test_unit_overflow_is_rejected_naming_properties(
    hostile_client: httpx.AsyncClient, steps: Any
) -> None:
    # 10**30 steps at 10 points per 1,000 would be 10**28 points: refused before any arithmetic.
    # (json, not orjson: orjson refuses to write integers beyond 64 bits.)
    body = json.dumps(event("ovf-1", properties={"steps": steps})).encode()
    rejected = only_rejection(await post(hostile_client, body))
    assert rejected["id"] == "ovf-1" and rejected["reason"].startswith("properties:")
    assert "1e+15" in rejected["reason"]


async def test_largest_allowed_unit_value_is_accepted(hostile_client: httpx.AsyncClient) -> None:
    response = await post(hostile_client, orjson.dumps(event("ovf-ok", properties={"steps": 10**15})))
    assert response.status_code == 202 and response.json()["accepted"] == 1


# -- timestamps --------------------------------------------------------------------------------------


IN_SIX_MINUTES = "<now + 6 minutes>"


@pytest.mark.parametrize(
    ("occurred_at", "words"),
    [
        ("0001-01-01T00:00:00Z", "year out of range"),
        ("0001-01-01T00:00:00-14:00", "year out of range"),
        ("9999-12-31T23:59:59Z", "year out of range"),
        ("9999-12-31T23:59:59+14:00", "year out of range"),
        ("1970-01-01T00:00:00Z", "year out of range"),
        ("10000-01-01T00:00:00Z", "RFC 3339"),
        ("-0001-01-01T00:00:00Z", "RFC 3339"),
        ("2027-13-01T00:00:00Z", "month"),
        ("2027-02-30T00:00:00Z", "day"),
        ("2027-01-01T25:00:00Z", ""),
        ("2027-01-01T00:00:00+24:00", ""),
        ("2199-01-01T00:00:00Z", "after the program end"),
        (IN_SIX_MINUTES, "future"),
        ("2001-01-01T00:00:00Z", "before the program start"),
        ("1700000000", "RFC 3339"),
    ],
)
async def test_timestamps_far_away_or_impossible_are_rejected_naming_occurred_at(
    hostile_client: httpx.AsyncClient, occurred_at: str, words: str
) -> None:
    if occurred_at == IN_SIX_MINUTES:  # from when the test runs, not when it was collected
        occurred_at = (datetime.now(UTC) + timedelta(minutes=6)).isoformat()
    rejected = only_rejection(await post(hostile_client, orjson.dumps(event("ts-1", occurredAt=occurred_at))))
    assert rejected["id"] == "ts-1" and rejected["reason"].startswith("occurredAt:"), rejected
    assert words in rejected["reason"]


async def test_extreme_offsets_are_normalised_not_crashed(hostile_client: httpx.AsyncClient) -> None:
    now = datetime.now(UTC)
    # The same instant written with the widest offsets RFC 3339 allows: accepted, stored in UTC.
    east = (now - timedelta(minutes=1)).astimezone(_offset(23, 59)).isoformat()
    west = (now - timedelta(minutes=2)).astimezone(_offset(-23, -59)).isoformat()
    body = {"events": [event("off-east", occurredAt=east), event("off-west", occurredAt=west)]}
    response = await post(hostile_client, orjson.dumps(body))
    assert response.status_code == 202 and response.json()["accepted"] == 2, response.text


def _offset(hours: int, minutes: int) -> Any:
    from datetime import timezone

    return timezone(timedelta(hours=hours, minutes=minutes))


# -- duplicates inside one batch ---------------------------------------------------------------------


async def test_duplicate_ids_inside_one_batch_are_stored_once(hostile_client: httpx.AsyncClient) -> None:
    batch = {
        "events": [
            event("dup-a"),
            event("dup-a", user="someone-else"),  # same id, other content: the first one wins
            event("dup-b", user="bad user"),  # invalid: rejected, does not claim the id
            event("dup-b"),
            event("dup-a"),
            *[event("dup-c") for _ in range(100)],
        ]
    }
    response = await post(hostile_client, orjson.dumps(batch))
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (3, 101, 1)
    assert body["rejected"][0]["index"] == 2 and body["rejected"][0]["reason"].startswith("user:")
    assert await stream_count_of(hostile_client) == 3


async def test_500_copies_of_one_event_are_one_stored_event(hostile_client: httpx.AsyncClient) -> None:
    response = await post(hostile_client, orjson.dumps({"events": [event("dup-500")] * 500}))
    assert response.status_code == 202
    assert (response.json()["accepted"], response.json()["duplicates"]) == (1, 499)
    assert await stream_count_of(hostile_client) == 1


# -- accepted means persisted ------------------------------------------------------------------------


async def stream_count_of(http: httpx.AsyncClient) -> int:
    """Messages in the program's stream: what was really persisted."""
    return await stream_count(http.nats_url, program_of(http))  # type: ignore[attr-defined]


async def test_a_mixed_hostile_batch_claims_exactly_what_is_stored(hostile_client: httpx.AsyncClient) -> None:
    valid = [event(f"mix-{i}") for i in range(20)]
    hostile: list[Any] = [
        event("mix-h1", properties={"a": {"b": {"c": {"d": {"e": 1}}}}}),
        event("mix-h2", properties={"steps": 10**30}),
        event("mix-h3", occurredAt="9999-12-31T23:59:59Z"),
        event("mix-h4", user="u" * 1000),
        event("x" * 1000),
        None,
        [],
        "event",
        {"events": []},
        event("mix-0"),
    ]
    batch = {"events": valid[:10] + hostile + valid[10:]}
    response = await post(hostile_client, json.dumps(batch).encode())
    assert response.status_code == 202
    body = response.json()
    assert (body["accepted"], body["duplicates"], len(body["rejected"])) == (20, 1, 9)
    assert all(r["reason"] for r in body["rejected"])
    await asyncio.sleep(0)  # nothing pending: PubAcks were awaited before answering
    assert await stream_count_of(hostile_client) == 20
