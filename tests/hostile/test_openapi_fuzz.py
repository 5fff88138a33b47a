"""schemathesis against the ingest service's OWN OpenAPI, served by the real process on the real NATS.

Every generated request is sent to `python -m gamify.ingest` (uvicorn) and its answer is checked:
no server error (a 5xx other than the documented 503), and status code, content type, headers
and body as `/openapi.json` documents them. Most requests carry a valid API key (otherwise every
answer is a 401); some carry none or a wrong one. At the end, the events the service claimed
accepted are exactly the messages in the program's stream.

GAMIFY_FUZZ_CASES   how many generated cases (default 300; the long run uses 5000 or more)
GAMIFY_FUZZ_REPORT  when set, a JSON summary is written there (cases, statuses, errors, seconds)

Not checked: schemathesis's `negative_data_rejection`. A JSON object that is not a valid event is,
by contract (DESIGN.md, "Ingest HTTP API"), answered 202 with the event listed in `rejected` and
its reason: one bad event never sinks its batch. Instead, each 202 is checked to account for
every event sent (accepted + duplicates + rejected).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CheckFunction
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.hostile.conftest import KEY, IngestProcess, ingest_process, stream_count
from tests.integration.test_ingest import OTHER_KEY

CASES = int(os.environ.get("GAMIFY_FUZZ_CASES", "300"))
REPORT = os.environ.get("GAMIFY_FUZZ_REPORT")

# Share of the budget per kind of case: most go to the events endpoint, valid and invalid.
POSITIVE_SHARE, NEGATIVE_SHARE = 0.6, 0.35
CHECKS: list[CheckFunction] = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH_CHOICES = ["valid"] * 18 + ["missing", "wrong"]  # 90% of the requests are given a valid key


@dataclass
class Tally:
    """What the run saw; becomes the JSON report."""

    cases: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    by_operation: Counter[str] = field(default_factory=Counter)
    by_auth: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    schema_violations: list[str] = field(default_factory=list)
    miscounted: list[str] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def report(self, seconds: float, persisted: int) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_operation": dict(self.by_operation),
            "by_auth": dict(self.by_auth),
            "server_errors": len(self.server_errors),
            "schema_violations": len(self.schema_violations),
            "miscounted_answers": len(self.miscounted),
            "events_accepted": self.accepted,
            "events_duplicates": self.duplicates,
            "events_rejected": self.rejected,
            "events_persisted": persisted,
            "seconds": round(seconds, 1),
            "examples": (self.server_errors + self.schema_violations + self.miscounted)[:10],
        }


def _with_recent_times(body: Any, offsets: list[int]) -> Any:
    """Put `occurredAt` of each event at now minus a few seconds, so some events are accepted.

    Generated times are almost never inside the program's window; without this, the accepting
    path (publish, PubAck, duplicates) would hardly be exercised.
    """
    now = datetime.now(UTC)

    def fix(event: Any, offset: int) -> None:
        if isinstance(event, dict) and "occurredAt" in event:
            event["occurredAt"] = (now - timedelta(seconds=offset)).isoformat()

    if isinstance(body, dict) and isinstance(body.get("events"), list):
        for index, event in enumerate(body["events"]):
            fix(event, offsets[index % len(offsets)])
    else:
        fix(body, offsets[0])
    return body


def _events_sent(body: Any) -> int | None:
    """How many events a 202 must account for (None when the body is not an object)."""
    if not isinstance(body, dict):
        return None
    events = body.get("events")
    return len(events) if "events" in body and isinstance(events, list) else 1


class Fuzzer:
    def __init__(self, ingest: IngestProcess):
        self.base_url = ingest.base_url
        self.schema = schemathesis.openapi.from_url(f"{ingest.base_url}/openapi.json", timeout=10)
        self.session = requests.Session()
        self.tally = Tally()

    def headers(self, auth: str) -> dict[str, str]:
        if auth == "valid":
            return {"Authorization": f"Bearer {KEY}"}
        if auth == "wrong":
            return {"Authorization": f"Bearer {OTHER_KEY}"}
        return {}

    @staticmethod
    def auth_sent(header: str | None) -> str:
        if header == f"Bearer {KEY}":
            return "valid"
        return "missing" if header is None else "wrong"

    def send(self, case: schemathesis.Case, auth: str) -> None:
        label = f"{case.method} {case.path}"
        headers = self.headers(auth)
        response = case.call(base_url=self.base_url, session=self.session, headers=headers, timeout=30)
        tally = self.tally
        tally.cases += 1
        tally.by_status[response.status_code] += 1
        tally.by_operation[label] += 1
        # What was really sent: negative cases may also drop the header (a missing-auth case).
        sent_auth = self.auth_sent(response.request.headers.get("Authorization"))
        tally.by_auth[sent_auth] += 1
        sent = str(case.body)[:300]
        where = f"{label} -> {response.status_code}: {response.text[:300]} (body sent: {sent})"
        if response.status_code >= 500 and not self._documented_503(response):
            tally.server_errors.append(where)
        if label == "POST /v1/events" and (sent_auth == "valid") == (response.status_code == 401):
            tally.miscounted.append(f"key {sent_auth}, answered {response.status_code}: {where}")
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as failures:
            tally.schema_violations.append(f"{where}\n{failures}")
        if label == "POST /v1/events" and response.status_code == 202:
            self._count_events(case.body, response.json(), where)

    @staticmethod
    def _documented_503(response: requests.Response | Any) -> bool:
        if response.status_code != 503:
            return False
        body = response.json()
        return "Retry-After" in response.headers and body.get("error") in ("stream_unavailable", "not_ready")

    def _count_events(self, body: Any, answer: dict[str, Any], where: str) -> None:
        accepted, duplicates, rejected = answer["accepted"], answer["duplicates"], len(answer["rejected"])
        self.tally.accepted += accepted
        self.tally.duplicates += duplicates
        self.tally.rejected += rejected
        sent = _events_sent(body)
        counted = accepted + duplicates + rejected
        if sent is not None and counted != sent:
            self.tally.miscounted.append(f"{sent} events sent, the answer counts {counted}: {where}")

    def run(self, operation: str, method: str, mode: schemathesis.GenerationMode, budget: int) -> None:
        """Up to `budget` generated cases of one operation (fewer when hypothesis exhausts it)."""
        if budget <= 0:
            return
        strategy = self.schema[operation][method].as_strategy(generation_mode=mode)
        positive_events = operation == "/v1/events" and mode == schemathesis.GenerationMode.POSITIVE

        @settings(
            max_examples=budget,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=strategy,
            auth=st.sampled_from(AUTH_CHOICES),
            recent=st.booleans(),
            offsets=st.lists(st.integers(0, 3600), min_size=1, max_size=5),
        )
        def fuzz(case: schemathesis.Case, auth: str, recent: bool, offsets: list[int]) -> None:
            if positive_events and recent:
                case.body = _with_recent_times(case.body, offsets)
            self.send(case, auth)

        fuzz()


def test_ingest_api_conforms_to_its_openapi_under_fuzzing(nats_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    with ingest_process(nats_url, tmp_path) as ingest:
        fuzzer = Fuzzer(ingest)
        positive = int(CASES * POSITIVE_SHARE)
        negative = int(CASES * NEGATIVE_SHARE)
        others = max(CASES - positive - negative, 3)
        fuzzer.run("/v1/events", "POST", schemathesis.GenerationMode.POSITIVE, positive)
        fuzzer.run("/v1/events", "POST", schemathesis.GenerationMode.NEGATIVE, negative)
        for path in ("/healthz", "/readyz", "/metrics"):
            fuzzer.run(path, "GET", schemathesis.GenerationMode.POSITIVE, others // 3)
        # Events endpoint again until the budget is spent (the GET endpoints have few distinct cases).
        missing = CASES - fuzzer.tally.cases
        fuzzer.run("/v1/events", "POST", schemathesis.GenerationMode.POSITIVE, missing)
        persisted = asyncio.run(stream_count(nats_url, ingest.program))
        unhandled = [line for line in ingest.log_lines() if "unhandled error" in line or "Traceback" in line]
        alive = ingest.alive()
    seconds = time.monotonic() - started
    tally = fuzzer.tally
    summary = tally.report(seconds, persisted)
    if REPORT:
        Path(REPORT).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "examples"}))

    assert alive, "the ingest process died during the run"
    assert tally.cases >= CASES, f"only {tally.cases} of {CASES} cases ran"
    assert not tally.server_errors, "\n\n".join(tally.server_errors[:5])
    assert not unhandled, "\n".join(unhandled[:5])
    assert not tally.schema_violations, "\n\n".join(tally.schema_violations[:5])
    assert not tally.miscounted, "\n\n".join(tally.miscounted[:5])
    # Every event claimed accepted is in the stream, and nothing else is.
    assert persisted == tally.accepted, (persisted, tally.accepted)
    # The run exercised what it is meant to: the accepting path, rejections, and the 401s.
    assert tally.accepted > 0 and tally.rejected > 0, summary
    assert tally.by_status[401] > 0 and tally.by_auth["valid"] > tally.cases * 0.75, summary
