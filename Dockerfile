# syntax=docker/dockerfile:1
# One image for everything gamify runs in a cluster:
#   the operator (default):  gamify-operator --standalone --liveness http://0.0.0.0:8080/healthz
#   the program workloads:   gamify run ingest | gamify run scoring | gamify run snapshots --once
# (the operator's pod builders set `command: [gamify]` and the args).

# --- builder: a wheel of the project (and wheels of its dependencies) ------------------------
FROM python:3.11-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

# --- final: only the installed wheels, no compilers, no sources ---------------------------------
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    GAMIFY_HOME=/tmp/gamify
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gamify \
    && groupadd --system --gid 10001 gamify \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp gamify
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
# No entrypoint: Kubernetes `command` picks the program (gamify-operator or gamify).
ENTRYPOINT []
CMD ["gamify-operator", "--standalone", "--liveness", "http://0.0.0.0:8080/healthz"]
