"""The suite's private servers: started by scripts/servers.sh on their own ports, stoppable one
at a time, and restarted on the same state; the shared servers are never touched."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from reliability.servers import PrivateServers
from sqlalchemy import create_engine, text

pytestmark = pytest.mark.slow  # starts a MariaDB of its own (~10 s)


@pytest.fixture
def private(tmp_path: Path) -> Iterator[PrivateServers]:
    servers = PrivateServers(tmp_path / "home")
    servers.start()
    try:
        yield servers
    finally:
        servers.close()


async def stored_messages(nats_url: str, publish: bool) -> int:
    connection = await nats.connect(nats_url, connect_timeout=3, max_reconnect_attempts=1)
    try:
        js = connection.jetstream()
        if publish:
            await js.add_stream(name="RELTEST", subjects=["reltest.>"])
            await js.publish("reltest.a", b"kept")
        return int((await js.stream_info("RELTEST")).state.messages)
    finally:
        await connection.close()


def mysql_answers(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT 1")).scalar_one() == 1
    except Exception:
        return False
    finally:
        engine.dispose()


def test_servers_stop_and_restart_on_their_own_state_and_ports(private: PrivateServers, servers) -> None:  # type: ignore[no-untyped-def]
    own = private.servers
    assert own.nats_url != servers.nats_url and own.mysql_admin_url != servers.mysql_admin_url
    assert asyncio.run(stored_messages(own.nats_url, publish=True)) == 1
    assert mysql_answers(own.mysql_admin_url)

    nats_pid = private.pid("nats")
    private.stop("nats")
    assert private.pid("nats") is None
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        asyncio.run(stored_messages(own.nats_url, publish=False))
    private.stop("mariadb", signal.SIGKILL)
    assert not mysql_answers(own.mysql_admin_url)

    private.start()
    assert private.pid("nats") not in (None, nats_pid)
    assert asyncio.run(stored_messages(own.nats_url, publish=False)) == 1  # JetStream kept it
    assert mysql_answers(own.mysql_admin_url)
    # The shared servers were never touched.
    assert mysql_answers(servers.mysql_admin_url)


def test_stopping_a_server_that_is_not_running_is_an_error(private: PrivateServers) -> None:
    private.stop("nats")
    with pytest.raises(RuntimeError, match="not running"):
        private.stop("nats")
