# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings of scripts/kind/*.sh (a kind cluster running the whole platform) — sourced,
# never run. Every value can be overridden from the environment (GAMIFY_KIND_*).
#
# This path needs a Docker engine; it is not exercised by the test suite (the machine the tests
# run on has none). What IS tested: tests/unit/test_kind_scripts.py (syntax, shellcheck, the
# missing-tool messages, and the operator values against the chart with the real helm).

# --- pinned versions -------------------------------------------------------------------------
# kind's node image: empty means the default image of the installed kind (kind >= v0.24 is
# needed: its kindnet enforces NetworkPolicies, which every program namespace relies on).
: "${GAMIFY_KIND_NODE_IMAGE:=}"
# NATS chart from https://nats-io.github.io/k8s/helm/charts/ (its version follows nats-server).
: "${GAMIFY_KIND_NATS_CHART_VERSION:=2.15.0}"
# The official MySQL image, LTS line (8.4); the manifests name these defaults, deploy.sh swaps
# in an override.
KIND_DEFAULT_MYSQL_IMAGE=mysql:8.4
: "${GAMIFY_KIND_MYSQL_IMAGE:=$KIND_DEFAULT_MYSQL_IMAGE}"
# The GCS emulator (the same server the tests use on this machine).
KIND_DEFAULT_FAKE_GCS_IMAGE=fsouza/fake-gcs-server:1.52.2
: "${GAMIFY_KIND_FAKE_GCS_IMAGE:=$KIND_DEFAULT_FAKE_GCS_IMAGE}"

# --- names -----------------------------------------------------------------------------------
KIND_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KIND_REPO_ROOT="$(cd "$KIND_DIR/../.." && pwd)"
: "${GAMIFY_KIND_CLUSTER:=gamify}"
KIND_CONTEXT="kind-$GAMIFY_KIND_CLUSTER"
: "${GAMIFY_KIND_IMAGE_REPOSITORY:=gamify}"
# The image tag: the package version (pyproject.toml), as `make images` builds it.
: "${GAMIFY_KIND_VERSION:=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$KIND_REPO_ROOT/pyproject.toml" | head -n 1)}"
KIND_IMAGE="$GAMIFY_KIND_IMAGE_REPOSITORY:$GAMIFY_KIND_VERSION"
KIND_OPERATOR_NAMESPACE=gamify-system
KIND_OPERATOR_RELEASE=gamify
KIND_OPERATOR_DEPLOYMENT="$KIND_OPERATOR_RELEASE-gamification-operator"
KIND_OPERATOR_VALUES="$KIND_DIR/operator-values.yaml"
KIND_CHART="$KIND_REPO_ROOT/charts/gamification-operator"
KIND_NATS_NAMESPACE=nats
KIND_MYSQL_NAMESPACE=mysql
KIND_MYSQL_HOST=mysql.mysql.svc.cluster.local
KIND_GCS_NAMESPACE=gcs
: "${GAMIFY_KIND_PROGRAM_FILE:=$KIND_REPO_ROOT/examples/ranking-launch.yaml}"
# The repository's virtualenv (`make deploy` creates it): re-bases the example's dates.
: "${GAMIFY_KIND_PYTHON:=$KIND_REPO_ROOT/.venv/bin/python}"
: "${GAMIFY_KIND_WAIT:=10m}"

kind_log() { printf '[kind %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
kind_die() { kind_log "ERROR: $*"; exit 1; }

kind_install_hint() {  # where to get a tool
  case "$1" in
    docker) echo "docker: https://docs.docker.com/engine/install/" ;;
    kind) echo "kind (>= v0.24): https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
    kubectl) echo "kubectl: https://kubernetes.io/docs/tasks/tools/" ;;
    helm) echo "helm 3: https://helm.sh/docs/intro/install/" ;;
    *) echo "$1" ;;
  esac
}

kind_require_tools() {  # fail at once, naming every missing tool and where to get it
  local tool missing=()
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  kind_log "ERROR: missing tools: ${missing[*]}"
  for tool in "${missing[@]}"; do
    kind_log "  install $(kind_install_hint "$tool")"
  done
  kind_die "this path needs a machine with a Docker engine, kind, kubectl and helm: see docs/kind.md"
}

kind_require_docker_engine() {  # the docker CLI alone is not enough: kind runs nodes as containers
  docker info >/dev/null 2>&1 \
    || kind_die "no Docker engine: \`docker info\` cannot reach a daemon (start Docker, or use a machine that has it; see docs/kind.md)"
}

kind_require_cluster() {
  kind get clusters 2>/dev/null | grep -qx "$GAMIFY_KIND_CLUSTER" \
    || kind_die "no kind cluster named $GAMIFY_KIND_CLUSTER: run \`make kind-up\` first"
}

kctl() { kubectl --context "$KIND_CONTEXT" "$@"; }
khelm() { helm --kube-context "$KIND_CONTEXT" "$@"; }

# The arguments `helm upgrade --install` gets for the operator chart, one per line (the unit
# tests render the chart with exactly these).
kind_operator_helm_args() {
  printf '%s\n' \
    --namespace "$KIND_OPERATOR_NAMESPACE" \
    --values "$KIND_OPERATOR_VALUES" \
    --set "image.repository=$GAMIFY_KIND_IMAGE_REPOSITORY" \
    --set "image.tag=$GAMIFY_KIND_VERSION"
}
