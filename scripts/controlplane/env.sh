#!/usr/bin/env bash
# Print shell exports for the control plane started by up.sh:
#   eval "$(scripts/controlplane/env.sh)"
# sets KUBECONFIG and puts the pinned kubectl and helm first on PATH.
set -euo pipefail
# shellcheck source=scripts/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
echo "export KUBECONFIG='$CP_KUBECONFIG'"
echo "export PATH='$(dirname "$(cp_bin kubectl)"):$(dirname "$(cp_bin helm)")':\"\$PATH\""
