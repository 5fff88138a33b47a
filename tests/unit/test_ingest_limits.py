"""Ingest building blocks without servers: token buckets and bounded gunzip."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gamify.ingest.body import check_content_type, gunzip_limited
from gamify.ingest.errors import ApiError
from gamify.ingest.ratelimit import RateLimiter, retry_after_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_refills_per_key() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0  # another key has its own bucket
    clock.now += 0.5
    assert limiter.acquire("a") == 0
    clock.now += 100
    assert [limiter.acquire("a") for _ in range(3)] == [0, 0, 0]  # never more than burst
    assert limiter.acquire("a") > 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(1.2) == 2


def test_gunzip_within_limit_and_multi_member() -> None:
    assert gunzip_limited(gzip.compress(b"abc") + gzip.compress(b"def"), limit=10) == b"abcdef"
    assert gunzip_limited(gzip.compress(b"x" * 10), limit=10) == b"x" * 10


def test_gunzip_stops_at_the_limit() -> None:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb = compressor.compress(b"\0" * (64 << 20)) + compressor.flush()
    with pytest.raises(ApiError) as err:
        gunzip_limited(bomb, limit=1 << 20)
    assert err.value.status == 413


@pytest.mark.parametrize(
    "data", [b"", b"plain text", gzip.compress(b"abc")[:-6], gzip.compress(b"a") + b"junk"]
)
def test_gunzip_refuses_broken_input(data: bytes) -> None:
    with pytest.raises(ApiError) as err:
        gunzip_limited(data, limit=100)
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        (None, True),
        ("application/json", True),
        ("application/json; charset=UTF-8", True),
        ("application/vnd.api+json", True),
        ("application/json; charset=latin-1", False),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
    ],
)
def test_content_type(content_type: str | None, ok: bool) -> None:
    if ok:
        check_content_type(content_type)
    else:
        with pytest.raises(ApiError) as err:
            check_content_type(content_type)
        assert err.value.status == 415
