#!/usr/bin/env bash
# Installs lockd and runs `lockd serve` on its embedded default: a private etcd on loopback under the state
# directory, the admin API on http://127.0.0.1:7170. Ctrl-C stops both. Extra arguments go to `lockd serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import ensurepip" >/dev/null 2>&1 || bash scripts/install-system-deps.sh
bash scripts/setup-venv.sh "embedded,sql"
exec .venv/bin/lockd serve "$@"
