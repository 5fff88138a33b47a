#!/usr/bin/env bash
# Start a real single-node Kubernetes control plane on loopback: etcd, kube-apiserver (RBAC)
# and kube-controller-manager. No kubelet, no scheduler, no kube-proxy: pods stay Pending,
# everything else (namespaces, garbage collection, Jobs/CronJobs, ServiceAccounts, RBAC,
# CRDs, admission, watches) is the real thing.
#
#   scripts/controlplane/up.sh            # start (or just confirm it is running); prints the kubeconfig path
#   scripts/controlplane/up.sh --quiet    # same, prints only the kubeconfig path
#   eval "$(scripts/controlplane/env.sh)" # KUBECONFIG + kubectl/helm on PATH
#   scripts/controlplane/down.sh [--wipe] # stop (and delete the state)
#
# State (certificates, etcd data, logs, pid files, kubeconfigs): ${GAMIFY_HOME:-.gamify}/controlplane/.
# Binaries: built by scripts/controlplane/build.sh; this script fails (never builds) when one is missing.
set -euo pipefail
# shellcheck source=scripts/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

QUIET=0
for arg in "$@"; do
  case "$arg" in
    -q | --quiet) QUIET=1 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) cp_die "unknown option $arg" ;;
  esac
done
: "${GAMIFY_CP_TIMEOUT:=120}"  # seconds to wait for each component

for c in etcd kube-apiserver kube-controller-manager kubectl; do
  cp_is_built "$c" || cp_die "$c $(cp_version "$c") is not built at $(cp_bin "$c"): run scripts/controlplane/build.sh (make cluster-build)"
done
command -v openssl >/dev/null || cp_die "openssl is required (apt-get install openssl)"
command -v curl >/dev/null || cp_die "curl is required (apt-get install curl)"

mkdir -p "$CP_PKI" "$CP_LOGS" "$CP_RUN"
chmod 700 "$CP_STATE" "$CP_PKI"
API="https://127.0.0.1:$GAMIFY_CP_APISERVER_PORT"

# One `up` at a time (the pytest fixture and a developer may race).
exec 8>"$CP_RUN/up.lock"
flock 8

# --- helpers --------------------------------------------------------------------------------
pid_alive() {  # component -> 0 when its pid file names a live process running our binary
  local f="$CP_RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(cp_bin "$1")"
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

api_get() {  # path -> body (admin client certificate)
  curl -fsS --max-time 5 --cacert "$CP_PKI/ca.crt" --cert "$CP_PKI/admin.crt" --key "$CP_PKI/admin.key" "$API$1"
}

wait_for() {  # description, timeout, command... ; fails with the component's log tail
  local what="$1" timeout="$2" log="$3"; shift 3
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      [ -f "$log" ] && tail -40 "$log" >&2
      cp_die "timed out after ${timeout}s waiting for $what (log: $log)"
    fi
    sleep 0.5
  done
}

start() {  # component, args... : detached from this shell, logs to logs/<component>.log
  local c="$1"; shift
  if port_busy "$(start_port "$c")"; then
    cp_die "port $(start_port "$c") (for $c) is already in use by another process; stop it or set GAMIFY_CP_*_PORT"
  fi
  cp_log "starting $c $(cp_version "$c") (log $CP_LOGS/$c.log)"
  printf '\n==== %s %s\n' "$(date -u +%FT%TZ)" "$c" >>"$CP_LOGS/$c.log"
  # (fd 8 is the up.lock: the daemons must not inherit it, or they would hold the lock forever)
  setsid "$(cp_bin "$c")" "$@" >>"$CP_LOGS/$c.log" 2>&1 </dev/null 8>&- &
  echo $! >"$CP_RUN/$c.pid"
}

start_port() {
  case "$1" in
    etcd) echo "$GAMIFY_CP_ETCD_PORT" ;;
    kube-apiserver) echo "$GAMIFY_CP_APISERVER_PORT" ;;
    kube-controller-manager) echo "$GAMIFY_CP_KCM_PORT" ;;
  esac
}

# --- certificates ---------------------------------------------------------------------------
first_service_ip() {  # 10.96.0.0/16 -> 10.96.0.1
  local net="${GAMIFY_CP_SERVICE_CIDR%/*}"
  echo "${net%.*}.$((${net##*.} + 1))"
}

issue() {  # name, subject, extendedKeyUsage, [subjectAltName]
  local name="$1" subj="$2" eku="$3" san="${4:-}"
  [ -f "$CP_PKI/$name.crt" ] && return
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CP_PKI/$name.key" 2>/dev/null
  openssl req -new -key "$CP_PKI/$name.key" -subj "$subj" -out "$CP_PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$CP_PKI/$name.ext"
  openssl x509 -req -in "$CP_PKI/$name.csr" -CA "$CP_PKI/ca.crt" -CAkey "$CP_PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile "$CP_PKI/$name.ext" -out "$CP_PKI/$name.crt" 2>/dev/null
  rm -f "$CP_PKI/$name.csr" "$CP_PKI/$name.ext"
}

make_pki() {
  umask 077
  if [ ! -f "$CP_PKI/ca.crt" ]; then
    cp_log "generating certificates in $CP_PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$CP_PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$CP_PKI/ca.key" -subj "/CN=gamify-controlplane-ca" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$CP_PKI/ca.crt" 2>/dev/null
  fi
  issue apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:$(first_service_ip),DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  issue admin "/O=system:masters/CN=gamify-admin" clientAuth
  issue kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  # Front proxy (request-header authentication): lets the apiserver proxy to aggregated API
  # servers and gives delegating components (the controller-manager) a complete
  # extension-apiserver-authentication ConfigMap.
  issue front-proxy-client "/CN=front-proxy-client" clientAuth
  # Service-account token signing key pair (RSA: RS256 is what every client expects).
  if [ ! -f "$CP_PKI/sa.key" ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$CP_PKI/sa.key" 2>/dev/null
    openssl pkey -in "$CP_PKI/sa.key" -pubout -out "$CP_PKI/sa.pub" 2>/dev/null
  fi
  umask 022
}

kubeconfig() {  # file, user, cert name — rewritten each time (the port may have changed), atomically
  local file="$1" user="$2" name="$3"
  (umask 077 && cat >"$file.tmp") <<EOF
apiVersion: v1
kind: Config
clusters:
- name: gamify
  cluster:
    server: $API
    certificate-authority-data: $(base64 -w0 <"$CP_PKI/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 <"$CP_PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$CP_PKI/$name.key")
contexts:
- name: gamify
  context:
    cluster: gamify
    user: $user
current-context: gamify
EOF
  mv -f "$file.tmp" "$file"
}

# --- already up? ----------------------------------------------------------------------------
if pid_alive etcd && pid_alive kube-apiserver && pid_alive kube-controller-manager &&
  [ -f "$CP_KUBECONFIG" ] && [ "$(api_get /readyz 2>/dev/null)" = ok ]; then
  [ "$QUIET" = 1 ] || cp_log "already running: $API"
  echo "$CP_KUBECONFIG"
  exit 0
fi

T0=$(date +%s)
make_pki
kubeconfig "$CP_KUBECONFIG" gamify-admin admin
kubeconfig "$CP_STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager

# --- etcd -----------------------------------------------------------------------------------
if ! pid_alive etcd; then
  mkdir -p "$CP_STATE/etcd"
  chmod 700 "$CP_STATE/etcd"
  start etcd \
    --name gamify \
    --data-dir "$CP_STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$GAMIFY_CP_ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$GAMIFY_CP_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$GAMIFY_CP_ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$GAMIFY_CP_ETCD_PEER_PORT" \
    --initial-cluster "gamify=http://127.0.0.1:$GAMIFY_CP_ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --auto-compaction-mode periodic --auto-compaction-retention 5m \
    --log-level warn
fi
wait_for "etcd /health" "$GAMIFY_CP_TIMEOUT" "$CP_LOGS/etcd.log" \
  sh -c "curl -fsS --max-time 2 http://127.0.0.1:$GAMIFY_CP_ETCD_PORT/health | grep -q '\"health\":\"true\"'"

# --- kube-apiserver -------------------------------------------------------------------------
if ! pid_alive kube-apiserver; then
  start kube-apiserver \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$GAMIFY_CP_APISERVER_PORT" \
    --cert-dir="$CP_STATE/apiserver-certs" \
    --etcd-servers="http://127.0.0.1:$GAMIFY_CP_ETCD_PORT" \
    --client-ca-file="$CP_PKI/ca.crt" \
    --tls-cert-file="$CP_PKI/apiserver.crt" \
    --tls-private-key-file="$CP_PKI/apiserver.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$CP_PKI/sa.pub" \
    --service-account-signing-key-file="$CP_PKI/sa.key" \
    --service-cluster-ip-range="$GAMIFY_CP_SERVICE_CIDR" \
    --authorization-mode=Node,RBAC \
    --requestheader-client-ca-file="$CP_PKI/ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$CP_PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$CP_PKI/front-proxy-client.key" \
    --endpoint-reconciler-type=none \
    --allow-privileged=true \
    --profiling=false \
    --v=1
fi
wait_for "kube-apiserver /readyz" "$GAMIFY_CP_TIMEOUT" "$CP_LOGS/kube-apiserver.log" \
  sh -c "[ \"\$(curl -fsS --max-time 5 --cacert '$CP_PKI/ca.crt' --cert '$CP_PKI/admin.crt' --key '$CP_PKI/admin.key' '$API/readyz')\" = ok ]"

# --- kube-controller-manager ----------------------------------------------------------------
if ! pid_alive kube-controller-manager; then
  start kube-controller-manager \
    --kubeconfig="$CP_STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CP_STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CP_STATE/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$GAMIFY_CP_KCM_PORT" \
    --cert-dir="$CP_STATE/kcm-certs" \
    --leader-elect=false \
    --controllers='*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$CP_PKI/sa.key" \
    --root-ca-file="$CP_PKI/ca.crt" \
    --cluster-signing-cert-file="$CP_PKI/ca.crt" \
    --cluster-signing-key-file="$CP_PKI/ca.key" \
    --service-cluster-ip-range="$GAMIFY_CP_SERVICE_CIDR" \
    --allocate-node-cidrs=false \
    --v=1
fi
wait_for "kube-controller-manager /healthz" "$GAMIFY_CP_TIMEOUT" "$CP_LOGS/kube-controller-manager.log" \
  sh -c "[ \"\$(curl -ksS --max-time 2 https://127.0.0.1:$GAMIFY_CP_KCM_PORT/healthz)\" = ok ]"

# The cluster is usable once the default namespace and its `default` ServiceAccount exist
# (the serviceaccount controller creates the latter; pods are refused until then).
wait_for "namespace default" "$GAMIFY_CP_TIMEOUT" "$CP_LOGS/kube-apiserver.log" api_get /api/v1/namespaces/default
wait_for "serviceaccount default/default" "$GAMIFY_CP_TIMEOUT" "$CP_LOGS/kube-controller-manager.log" \
  api_get /api/v1/namespaces/default/serviceaccounts/default

[ "$QUIET" = 1 ] || cp_log "control plane up in $(($(date +%s) - T0))s: $API (kubeconfig below; eval \"\$(scripts/controlplane/env.sh)\")"
echo "$CP_KUBECONFIG"
