#!/usr/bin/env bash
# `make kind-up`: a kind cluster named $GAMIFY_KIND_CLUSTER (default gamify) from
# scripts/kind/cluster.yaml; reused when it exists. Needs a Docker engine (docs/kind.md).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind_require_tools docker kind kubectl
kind_require_docker_engine

if kind get clusters 2>/dev/null | grep -qx "$GAMIFY_KIND_CLUSTER"; then
  kind_log "kind cluster $GAMIFY_KIND_CLUSTER exists: reusing it"
else
  create=(kind create cluster --name "$GAMIFY_KIND_CLUSTER" --config "$KIND_DIR/cluster.yaml" --wait 5m)
  if [ -n "$GAMIFY_KIND_NODE_IMAGE" ]; then
    create+=(--image "$GAMIFY_KIND_NODE_IMAGE")
  fi
  kind_log "creating kind cluster $GAMIFY_KIND_CLUSTER"
  "${create[@]}"
fi

kctl wait --for=condition=Ready node --all --timeout=5m >/dev/null
kind_log "cluster ready (kubectl context $KIND_CONTEXT); next: make images && make deploy"
