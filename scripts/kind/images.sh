#!/usr/bin/env bash
# `make images`: build the one image of the platform (operator and program workloads) as
# gamify:<version>, the tag scripts/kind/deploy.sh loads into the kind cluster.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind_require_tools docker
kind_require_docker_engine
kind_log "building $KIND_IMAGE from $KIND_REPO_ROOT/Dockerfile"
docker build -t "$KIND_IMAGE" "$KIND_REPO_ROOT"
kind_log "built $KIND_IMAGE; next: make kind-up && make deploy"
