#!/usr/bin/env bash
# Stop the control plane started by up.sh (only the processes named in its pid files).
#
#   scripts/controlplane/down.sh          # stop; certificates and etcd data are kept (next up is fast)
#   scripts/controlplane/down.sh --wipe   # stop and delete ${GAMIFY_HOME:-.gamify}/controlplane/
set -euo pipefail
# shellcheck source=scripts/controlplane/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WIPE=0
for arg in "$@"; do
  case "$arg" in
    --wipe) WIPE=1 ;;
    -h | --help) sed -n '2,5p' "$0"; exit 0 ;;
    *) cp_die "unknown option $arg" ;;
  esac
done

# Controller-manager first, etcd last.
for c in kube-controller-manager kube-apiserver etcd; do
  f="$CP_RUN/$c.pid"
  [ -f "$f" ] || continue
  pid="$(cat "$f")"
  # Only a live process that runs our binary: a stale pid may have been reused by someone else.
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(cp_bin "$c")"; then
    cp_log "stopping $c (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      [ -d "/proc/$pid" ] || break
      sleep 0.1
    done
    if [ -d "/proc/$pid" ]; then
      cp_log "$c (pid $pid) did not stop in 10s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
done

if [ "$WIPE" = 1 ] && [ -d "$CP_STATE" ]; then
  cp_log "wiping $CP_STATE"
  rm -rf "$CP_STATE"
fi
cp_log "control plane stopped"
