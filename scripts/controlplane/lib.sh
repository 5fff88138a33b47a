# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings for scripts/controlplane/*.sh — sourced, never run.
#
# Pinned versions, where the binaries are cached, where the state lives, which ports are used.
# Every value can be overridden from the environment (GAMIFY_*), e.g. to run two control
# planes side by side: GAMIFY_HOME=/tmp/cp2 GAMIFY_CP_APISERVER_PORT=6543 ...

# --- pinned versions -------------------------------------------------------------------------
: "${GAMIFY_K8S_VERSION:=v1.34.4}"   # kube-apiserver, kube-controller-manager, kubectl
: "${GAMIFY_ETCD_VERSION:=v3.5.36}"  # etcd server (go.etcd.io/etcd/server/v3)
: "${GAMIFY_HELM_VERSION:=v3.21.4}"  # helm v3 (helm.sh/helm/v3)

# --- where things live -----------------------------------------------------------------------
CP_SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CP_REPO_ROOT="$(cd "$CP_SCRIPT_DIR/../.." && pwd)"
# Binaries are cached OUTSIDE the repository, one directory per component and version.
: "${GAMIFY_TOOLS:=${HOME:-/root}/.cache/gamify-tools}"
# Certificates, data, logs, pid files and the kubeconfig live in the project (gitignored).
: "${GAMIFY_HOME:=$CP_REPO_ROOT/.gamify}"
case "$GAMIFY_HOME" in /*) ;; *) GAMIFY_HOME="$CP_REPO_ROOT/$GAMIFY_HOME" ;; esac
CP_STATE="$GAMIFY_HOME/controlplane"
CP_PKI="$CP_STATE/pki"
CP_LOGS="$CP_STATE/logs"
CP_RUN="$CP_STATE/run"
CP_KUBECONFIG="$CP_STATE/admin.kubeconfig"

# --- ports (all on 127.0.0.1; none of them is a Kubernetes/etcd default) ----------------------
: "${GAMIFY_CP_ETCD_PORT:=2389}"          # etcd clients
: "${GAMIFY_CP_ETCD_PEER_PORT:=2390}"     # etcd peers (single member, loopback only)
: "${GAMIFY_CP_APISERVER_PORT:=6443}"     # kube-apiserver (HTTPS)
: "${GAMIFY_CP_KCM_PORT:=10357}"          # kube-controller-manager /healthz (HTTPS)
: "${GAMIFY_CP_SERVICE_CIDR:=10.96.0.0/16}"  # virtual only: nothing is routed, no kube-proxy

CP_COMPONENTS=(etcd kube-apiserver kube-controller-manager kubectl helm)

# Go: the machine's toolchain, used as is (no toolchain download).
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  PATH="/usr/local/go/bin:$PATH"
fi
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

cp_version() {  # version pinned for a component
  case "$1" in
    etcd) echo "$GAMIFY_ETCD_VERSION" ;;
    helm) echo "$GAMIFY_HELM_VERSION" ;;
    kube-apiserver | kube-controller-manager | kubectl) echo "$GAMIFY_K8S_VERSION" ;;
    *) echo "unknown component: $1" >&2; return 1 ;;
  esac
}

cp_bin() {  # path of a component's cached binary
  echo "$GAMIFY_TOOLS/$1-$(cp_version "$1")/$1"
}

cp_reported_version() {  # what the binary itself says its version is ("" when it cannot run)
  local bin
  bin="$(cp_bin "$1")"
  [ -x "$bin" ] || return 0
  case "$1" in
    etcd) "$bin" --version 2>/dev/null | sed -n 's/^etcd Version: /v/p' ;;
    kube-apiserver | kube-controller-manager) "$bin" --version 2>/dev/null | sed -n 's/^Kubernetes //p' ;;
    kubectl) "$bin" version --client 2>/dev/null | sed -n 's/^Client Version: //p' ;;
    helm) "$bin" version --short 2>/dev/null | sed 's/+.*//' ;;
  esac
}

cp_is_built() {  # the cached binary exists and reports the pinned version
  [ "$(cp_reported_version "$1")" = "$(cp_version "$1")" ]
}

cp_log() { printf '[controlplane %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cp_die() { cp_log "ERROR: $*"; exit 1; }
