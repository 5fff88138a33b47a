"""Fixtures the operator test modules share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import fresh_bucket


@pytest.fixture(scope="module")
def bucket(gcs_client: Any) -> Iterator[str]:
    """An emulator bucket for one module's snapshots (gs://<name>), emptied and deleted after it."""
    with fresh_bucket(gcs_client, "op") as name:
        yield name
