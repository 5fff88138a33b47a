#!/usr/bin/env bash
# Exit 0 and print the kubeconfig path when the control plane from up.sh is running and ready;
# exit 1 (saying what is down) otherwise. Cheap: meant for scripts and test fixtures.
set -euo pipefail
# shellcheck source=scripts/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

down=()
for c in etcd kube-apiserver kube-controller-manager; do
  f="$CP_RUN/$c.pid"
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -z "$pid" ] || [ ! -d "/proc/$pid" ] ||
    ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(cp_bin "$c")"; then
    down+=("$c")
  fi
done
if [ ${#down[@]} -eq 0 ] && [ -f "$CP_KUBECONFIG" ] &&
  [ "$(curl -fsS --max-time 5 --cacert "$CP_PKI/ca.crt" --cert "$CP_PKI/admin.crt" --key "$CP_PKI/admin.key" \
    "https://127.0.0.1:$GAMIFY_CP_APISERVER_PORT/readyz" 2>/dev/null)" = ok ]; then
  echo "$CP_KUBECONFIG"
  exit 0
fi
[ ${#down[@]} -eq 0 ] && down=("kube-apiserver /readyz")
echo "control plane not ready: ${down[*]} (start it with scripts/controlplane/up.sh)" >&2
exit 1
