"""The three servers every service test relies on really work (scripts/servers.sh).

Each test does the smallest real round trip the platform depends on, through the same client
libraries the services use, so a broken or misconfigured server fails here first and plainly.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import nats
import pytest
import sqlalchemy as sa
from google.api_core.exceptions import PreconditionFailed
from google.cloud import storage
from nats.js.api import StreamConfig
from sqlalchemy.engine import make_url


async def test_jetstream_dedupes_and_delivers_to_a_durable_pull_consumer(nats_url: str) -> None:
    suffix = secrets.token_hex(4)
    stream, subject = f"TEST_SERVERS_{suffix.upper()}", f"test-servers.{suffix}.events.step"
    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name=stream, subjects=[f"test-servers.{suffix}.>"], duplicate_window=60.0)
        )
        try:
            first = await js.publish(subject, b'{"n": 1}', headers={"Nats-Msg-Id": "event-1"})
            retry = await js.publish(subject, b'{"n": 1}', headers={"Nats-Msg-Id": "event-1"})
            assert (first.seq, first.duplicate) == (1, None)
            assert retry.duplicate is True

            sub = await js.pull_subscribe(subject, durable="scoring", stream=stream)
            [msg] = await sub.fetch(1, timeout=5)
            assert msg.data == b'{"n": 1}'
            assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == "event-1"
            await msg.ack_sync()

            consumer = await js.consumer_info(stream, "scoring")
            assert consumer.num_ack_pending == 0
            assert consumer.num_pending == 0
        finally:
            await js.delete_stream(stream)
    finally:
        await nc.close()


@pytest.fixture
def admin_engine(mysql_admin_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(mysql_admin_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


def test_mariadb_creates_a_schema_and_a_user_confined_to_it(
    admin_engine: sa.Engine, mysql_admin_url: str
) -> None:
    suffix = secrets.token_hex(4)
    schema, user, password = f"test_servers_{suffix}", f"test_servers_{suffix}", secrets.token_urlsafe(16)
    with admin_engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE `{schema}`")
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :password"), {"password": password})
        conn.execute(sa.text(f"GRANT ALL ON `{schema}`.* TO '{user}'@'%'"))
    user_url = make_url(mysql_admin_url).set(username=user, password=password, database=schema)
    user_engine = sa.create_engine(user_url)
    try:
        with user_engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE names (id INT PRIMARY KEY, name VARCHAR(50)) ENGINE=InnoDB")
            # Four-byte UTF-8 (emoji) must round-trip: display names come from many apps.
            conn.execute(sa.text("INSERT INTO names VALUES (1, :name)"), {"name": "Ana 🏃"})
        with user_engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT name FROM names WHERE id = 1")) == "Ana 🏃"
            # The user sees its own schema and nothing else.
            visible = set(conn.scalars(sa.text("SHOW DATABASES")))
            assert visible == {schema, "information_schema"}
    finally:
        user_engine.dispose()
        with admin_engine.begin() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{schema}`")


def test_gcs_emulator_round_trips_objects_through_the_real_client(
    gcs_client: storage.Client, gcs_bucket: str
) -> None:
    bucket = gcs_client.bucket(gcs_bucket)
    blob = bucket.blob("prefix/leaderboards/all-time.json")
    blob.cache_control = "public, max-age=30"
    blob.upload_from_string(b'{"entries": []}', content_type="application/json")

    stored = bucket.get_blob("prefix/leaderboards/all-time.json")
    assert stored is not None
    assert stored.download_as_bytes() == b'{"entries": []}'
    assert stored.content_type == "application/json"
    assert stored.cache_control == "public, max-age=30"
    assert [b.name for b in gcs_client.list_blobs(gcs_bucket, prefix="prefix/")] == [stored.name]

    # Writers rely on generation preconditions so that a stale writer never wins.
    with pytest.raises(PreconditionFailed):
        bucket.blob(stored.name).upload_from_string(b"{}", if_generation_match=0)
    bucket.blob(stored.name).upload_from_string(b"{}", if_generation_match=stored.generation)
    assert bucket.blob(stored.name).download_as_bytes() == b"{}"
