"""`python -m gamify_operator` (or `gamify-operator`): run the Kopf operator.

    python -m gamify_operator --standalone                 # one replica, no peering
    python -m gamify_operator --liveness http://0.0.0.0:8080/healthz

Without `--standalone`, replicas coordinate through Kopf peering: `--peering NAME` (env
GAMIFY_OPERATOR_PEERING) makes it mandatory and needs Kopf's `ClusterKopfPeering` CRD with an
object of that name; with neither flag Kopf looks for its `default` peering object and, when
there is none, runs standalone with a warning. The
cluster comes from the pod's ServiceAccount, else `KUBECONFIG` / `~/.kube/config`; the servers
and everything else from the environment (`gamify_operator.config`, `gamify_operator.handlers`).
Logs are JSON lines on stderr (`gamify.logs`).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
from collections.abc import Sequence

import kopf

from gamify.logs import JsonFormatter, configure_logging

SERVICE = "operator"
DEFAULT_PEERING = "gamify-operator"
# Attributes Kopf puts on its per-object log records; the settings object is noise in a log line.
_KOPF_RECORD_ATTRS = ("settings", "k8s_skip", "k8s_ref")


class QuietTimers(logging.Filter):
    """Drop Kopf's line for every successful timer run: one per program every interval says
    nothing; failures, and the reconciles a timer starts, are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            record.levelno <= logging.INFO
            and message.startswith("Timer ")
            and message.endswith(" succeeded.")
        )


class OperatorJsonFormatter(JsonFormatter):
    """`gamify.logs` JSON lines, with Kopf's object reference reduced to `program`."""

    def format(self, record: logging.LogRecord) -> str:
        if any(hasattr(record, attr) for attr in _KOPF_RECORD_ATTRS):
            record = copy.copy(record)  # other handlers (Kopf's event poster) read the original
            ref = record.__dict__.pop("k8s_ref", None)
            for attr in _KOPF_RECORD_ATTRS:
                record.__dict__.pop(attr, None)
            if isinstance(ref, dict) and ref.get("name") and not hasattr(record, "program"):
                record.program = ref["name"]
        return super().format(record)


def setup_logging(level: str) -> None:
    configure_logging(level, service=SERVICE)
    for handler in logging.getLogger().handlers:
        if handler.get_name() == "gamify-json":
            handler.setFormatter(OperatorJsonFormatter(SERVICE))
            handler.addFilter(QuietTimers())
    # The API client logs every request at DEBUG; ours and Kopf's lines are enough.
    for noisy in ("kubernetes", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLogger().level))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gamify-operator", description="Reconcile GamificationProgram resources (Kopf)."
    )
    parser.add_argument(
        "--standalone", action="store_true", help="run alone: no peering with other operator replicas"
    )
    parser.add_argument(
        "--peering",
        default=os.environ.get("GAMIFY_OPERATOR_PEERING") or None,
        metavar="NAME",
        help=f"peering object to coordinate replicas through, e.g. {DEFAULT_PEERING} (mandatory when set)",
    )
    parser.add_argument("--priority", type=int, default=0, help="peering priority (the highest one runs)")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("GAMIFY_OPERATOR_LIVENESS") or None,
        metavar="URL",
        help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz (env GAMIFY_OPERATOR_LIVENESS)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("GAMIFY_LOG_LEVEL", "INFO"),
        help="INFO (default, env GAMIFY_LOG_LEVEL), DEBUG, WARNING",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    # Importing the module registers the handlers with Kopf's default registry.
    from gamify_operator import handlers  # noqa: F401

    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        clusterwide=True,  # GamificationProgram is cluster-scoped
        liveness_endpoint=args.liveness,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
