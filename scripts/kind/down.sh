#!/usr/bin/env bash
# `make kind-down`: delete the kind cluster (every program, NATS, MySQL and the emulator with it).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind_require_tools docker kind
kind_require_docker_engine

if kind get clusters 2>/dev/null | grep -qx "$GAMIFY_KIND_CLUSTER"; then
  kind delete cluster --name "$GAMIFY_KIND_CLUSTER"
  kind_log "deleted kind cluster $GAMIFY_KIND_CLUSTER"
else
  kind_log "no kind cluster named $GAMIFY_KIND_CLUSTER: nothing to delete"
fi
