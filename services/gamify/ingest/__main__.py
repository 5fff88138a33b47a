"""`python -m gamify.ingest`: serve one program's ingest API, configured from the environment.

GAMIFY_PROGRAM_FILE     the program YAML (required)
GAMIFY_NATS_URL         default nats://127.0.0.1:4222
GAMIFY_NATS_USER        the program's ingest NATS user (unset: anonymous, for servers without users)
GAMIFY_NATS_PASSWORD    its password
GAMIFY_API_KEY_HASHES   comma-separated sha256 hex of the active API keys
GAMIFY_INGEST_HOST      default 0.0.0.0
GAMIFY_INGEST_PORT      default 8080
GAMIFY_INGEST_HEADERS_TIMEOUT  seconds for a request's headers to arrive (default 10)
GAMIFY_INGEST_BODY_TIMEOUT     seconds for its body to arrive (default 60); slower clients are cut off
GAMIFY_LOG_LEVEL        default INFO

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish (their
publishes included), then the app drains its NATS connection.
"""

from __future__ import annotations

import os
import sys

import uvicorn

from gamify.credentials import parse_key_hashes
from gamify.ingest.app import BODY_READ_TIMEOUT, create_app
from gamify.ingest.server import HEADERS_TIMEOUT, deadline_protocol
from gamify.logs import configure_logging, get_logger
from gamify.naming import ProgramNames
from gamify.nats_login import INGEST, NatsLogin
from gamify.program import ProgramError, load_program
from gamify.settings import DEFAULT_NATS_URL

GRACEFUL_SHUTDOWN_SECONDS = 20


def main() -> None:
    configure_logging(os.environ.get("GAMIFY_LOG_LEVEL", "INFO"), service="ingest")
    log = get_logger("gamify.ingest")
    program_file = os.environ.get("GAMIFY_PROGRAM_FILE")
    if not program_file:
        log.error("GAMIFY_PROGRAM_FILE is not set: point it at the program YAML")
        sys.exit(2)
    try:
        headers_timeout = float(os.environ.get("GAMIFY_INGEST_HEADERS_TIMEOUT", HEADERS_TIMEOUT))
        body_timeout = float(os.environ.get("GAMIFY_INGEST_BODY_TIMEOUT", BODY_READ_TIMEOUT))
        program = load_program(program_file)
        app = create_app(
            program,
            nats_url=os.environ.get("GAMIFY_NATS_URL", DEFAULT_NATS_URL),
            key_hashes=parse_key_hashes(os.environ.get("GAMIFY_API_KEY_HASHES", "")),
            body_timeout=body_timeout,
            nats_login=NatsLogin.from_env(ProgramNames(program.name), INGEST),
        )
        port = int(os.environ.get("GAMIFY_INGEST_PORT", "8080"))
    except (OSError, ProgramError, ValueError) as exc:
        log.error("cannot start ingest", error=str(exc), program_file=program_file)
        sys.exit(2)
    config = uvicorn.Config(
        app,
        host=os.environ.get("GAMIFY_INGEST_HOST", "0.0.0.0"),
        port=port,
        http=deadline_protocol(headers_timeout, body_timeout),  # slow clients are cut off
        log_config=None,  # keep the JSON logging configured above
        access_log=False,  # the app logs each request itself, with its request id
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
