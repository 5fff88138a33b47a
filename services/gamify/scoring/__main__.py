"""`python -m gamify.scoring`: one scoring worker of one program, configured by environment.

GAMIFY_PROGRAM_FILE   the program YAML (the same file a user would `kubectl apply`)
GAMIFY_NATS_URL       NATS with JetStream (default nats://127.0.0.1:4222)
GAMIFY_NATS_USER      the program's scoring NATS user (unset: anonymous, for servers without users)
GAMIFY_NATS_PASSWORD  its password
GAMIFY_DATABASE_URL   the program user's database URL (mysql+pymysql://...)
GAMIFY_SCORING_BATCH  messages per fetch (default 500), split between the lanes
GAMIFY_SCORING_LANES  lane processes, each scoring its share in its own transaction (default 2)
GAMIFY_MAX_DELIVER    deliveries before a failing message is dead-lettered (default 5)
GAMIFY_RETRY_DELAY    seconds before a failed message is redelivered (default 2)
GAMIFY_METRICS_PORT   serve Prometheus metrics on this port (off when unset)
GAMIFY_LOG_LEVEL      DEBUG logs every scoring decision (default INFO)

SIGTERM or SIGINT: stop fetching, commit and ack the batch in hand, exit 0.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from prometheus_client import start_http_server

from gamify.logs import configure_logging, get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import SCORING, NatsLogin
from gamify.program import ProgramError, load_program
from gamify.scoring.lanes import tune_gc
from gamify.scoring.worker import DEFAULT_BATCH_SIZE, run_worker
from gamify.settings import DEFAULT_NATS_URL

log = get_logger("gamify.scoring")


async def _serve(program_file: str, nats_url: str, database_url: str, batch_size: int) -> None:
    program = load_program(program_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    login = NatsLogin.from_env(ProgramNames(program.name), SCORING)
    await run_worker(program, nats_url, database_url, batch_size, stop, login=login)


def main() -> None:
    configure_logging(os.environ.get("GAMIFY_LOG_LEVEL", "INFO"), service="scoring")
    program_file = os.environ.get("GAMIFY_PROGRAM_FILE")
    database_url = os.environ.get("GAMIFY_DATABASE_URL")
    if not program_file or not database_url:
        log.error("GAMIFY_PROGRAM_FILE and GAMIFY_DATABASE_URL are required")
        sys.exit(2)
    nats_url = os.environ.get("GAMIFY_NATS_URL", DEFAULT_NATS_URL)
    batch_size = int(os.environ.get("GAMIFY_SCORING_BATCH", DEFAULT_BATCH_SIZE))
    tune_gc()
    metrics_port = os.environ.get("GAMIFY_METRICS_PORT")
    if metrics_port:
        start_http_server(int(metrics_port))
    try:
        asyncio.run(_serve(program_file, nats_url, database_url, batch_size))
    except ProgramError as exc:
        log.error("invalid program file", error=str(exc))
        sys.exit(2)
    except Exception:
        log.exception("scoring worker failed")
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
