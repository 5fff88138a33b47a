#!/usr/bin/env bash
# `make deploy`: everything on the kind cluster of `make kind-up`, then one example program.
#   1. the image gamify:<version> (`make images`) loaded onto the node (`kind load docker-image`);
#   2. NATS with JetStream (chart nats/nats), MySQL (official image, mysql.yaml), the GCS
#      emulator with the bucket gamify-snapshots (fake-gcs.yaml);
#   3. the Secret with MySQL's admin URL, then the operator chart with operator-values.yaml;
#   4. examples/ranking-launch.yaml (dates re-based to "started yesterday" when today is outside
#      them, as `gamify demo` does), waited for until its phase is Active;
#   5. how to reach its ingest (port-forward) and read its API key.
# Idempotent: run it again after `make images` to roll out a new image.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

kind_require_tools docker kind kubectl helm
kind_require_docker_engine
kind_require_cluster
[ -x "$GAMIFY_KIND_PYTHON" ] \
  || kind_die "no Python at $GAMIFY_KIND_PYTHON (it reads the example program): run \`make venv\`"

apply_namespace() { kctl create namespace "$1" --dry-run=client -o yaml | kctl apply -f - >/dev/null; }

# --- 1. the image --------------------------------------------------------------------------
docker image inspect "$KIND_IMAGE" >/dev/null 2>&1 \
  || kind_die "image $KIND_IMAGE not found in Docker: run \`make images\` first"
kind_log "loading $KIND_IMAGE into the kind node"
kind load docker-image "$KIND_IMAGE" --name "$GAMIFY_KIND_CLUSTER"

# --- 2. the servers ------------------------------------------------------------------------
for ns in "$KIND_NATS_NAMESPACE" "$KIND_MYSQL_NAMESPACE" "$KIND_GCS_NAMESPACE" "$KIND_OPERATOR_NAMESPACE"; do
  apply_namespace "$ns"
done

kind_log "NATS with JetStream (chart nats/nats $GAMIFY_KIND_NATS_CHART_VERSION)"
helm repo add nats https://nats-io.github.io/k8s/helm/charts/ --force-update >/dev/null
khelm upgrade --install nats nats/nats --version "$GAMIFY_KIND_NATS_CHART_VERSION" \
  --namespace "$KIND_NATS_NAMESPACE" \
  --set config.jetstream.enabled=true \
  --set config.jetstream.fileStore.pvc.size=2Gi \
  --wait --timeout "$GAMIFY_KIND_WAIT"

kind_log "MySQL ($GAMIFY_KIND_MYSQL_IMAGE)"
if ! kctl -n "$KIND_MYSQL_NAMESPACE" get secret mysql-root >/dev/null 2>&1; then
  # Generated once; re-runs keep it (the data on the PVC was initialised with it).
  kctl -n "$KIND_MYSQL_NAMESPACE" create secret generic mysql-root \
    --from-literal=password="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')" >/dev/null
fi
sed "s|image: $KIND_DEFAULT_MYSQL_IMAGE\$|image: $GAMIFY_KIND_MYSQL_IMAGE|" "$KIND_DIR/mysql.yaml" | kctl apply -f -
kind_log "GCS emulator ($GAMIFY_KIND_FAKE_GCS_IMAGE)"
sed "s|image: $KIND_DEFAULT_FAKE_GCS_IMAGE\$|image: $GAMIFY_KIND_FAKE_GCS_IMAGE|" "$KIND_DIR/fake-gcs.yaml" | kctl apply -f -
kctl -n "$KIND_MYSQL_NAMESPACE" rollout status statefulset/mysql --timeout "$GAMIFY_KIND_WAIT"
kctl -n "$KIND_GCS_NAMESPACE" rollout status deployment/fake-gcs --timeout "$GAMIFY_KIND_WAIT"

# --- 3. the operator -----------------------------------------------------------------------
root_password="$(kctl -n "$KIND_MYSQL_NAMESPACE" get secret mysql-root -o jsonpath='{.data.password}' | base64 -d)"
kctl -n "$KIND_OPERATOR_NAMESPACE" create secret generic gamify-mysql-admin \
  --from-literal=url="mysql+pymysql://root:${root_password}@${KIND_MYSQL_HOST}:3306/" \
  --dry-run=client -o yaml | kctl apply -f - >/dev/null
unset root_password

# Helm installs CRDs only on the first install and never upgrades them: apply them first.
kctl apply --server-side --force-conflicts -f "$KIND_CHART/crds/"
mapfile -t helm_args < <(kind_operator_helm_args)
kind_log "operator chart (image $KIND_IMAGE)"
khelm upgrade --install "$KIND_OPERATOR_RELEASE" "$KIND_CHART" "${helm_args[@]}" \
  --wait --timeout "$GAMIFY_KIND_WAIT"
# A rebuilt image keeps its tag: restart so the pod runs what was just loaded.
kctl -n "$KIND_OPERATOR_NAMESPACE" rollout restart "deployment/$KIND_OPERATOR_DEPLOYMENT" >/dev/null
kctl -n "$KIND_OPERATOR_NAMESPACE" rollout status "deployment/$KIND_OPERATOR_DEPLOYMENT" --timeout "$GAMIFY_KIND_WAIT"

# --- 4. the example program ----------------------------------------------------------------
program_json="$(mktemp)"
trap 'rm -f "$program_json"' EXIT
"$GAMIFY_KIND_PYTHON" "$KIND_DIR/program.py" "$GAMIFY_KIND_PROGRAM_FILE" >"$program_json"
program="$("$GAMIFY_KIND_PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["metadata"]["name"])' "$program_json")"
namespace="gamify-$program"

if kctl get gp "$program" >/dev/null 2>&1; then
  kind_log "program $program exists: left as it is (edit it with kubectl edit gp $program)"
else
  kctl apply -f "$program_json"
fi

kind_log "waiting for program $program to be Active"
if ! kctl wait "gp/$program" --for=jsonpath='{.status.phase}'=Active --timeout "$GAMIFY_KIND_WAIT"; then
  kctl get gp "$program" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
  kind_die "program $program is not Active: kubectl --context $KIND_CONTEXT describe gp $program (docs/operations.md, troubleshooting)"
fi
kctl -n "$namespace" rollout status deployment/ingest --timeout "$GAMIFY_KIND_WAIT"

# --- 5. how to use it ----------------------------------------------------------------------
ingest_url="$(kctl get gp "$program" -o jsonpath='{.status.ingestURL}')"
snapshot_url="$(kctl get gp "$program" -o jsonpath='{.status.snapshotURL}')"
cat <<EOT

Program $program is Active.
  ingest (in the cluster): $ingest_url
  from this machine:       kubectl --context $KIND_CONTEXT -n $namespace port-forward svc/ingest 8080:80
                           then POST http://127.0.0.1:8080/v1/events
  API key:                 kubectl --context $KIND_CONTEXT -n $namespace get secret $program-api-keys -o jsonpath='{.data.api-key}' | base64 -d
  snapshots:               $snapshot_url (GCS emulator: kubectl --context $KIND_CONTEXT -n $KIND_GCS_NAMESPACE port-forward svc/fake-gcs 4443)
  status:                  kubectl --context $KIND_CONTEXT get gp; kubectl --context $KIND_CONTEXT describe gp $program
More in docs/kind.md.
EOT
