#!/usr/bin/env bash
# Sets up everything and runs the whole test suite (lint, unit, integration and fault tests on real etcd,
# SQL store tests on the local MariaDB and PostgreSQL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
extras="sql,test,bench,embedded"
# The network-fault tests' delayer builds against libnetfilter_queue (installed above when root).
[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ] && extras="$extras,netfault"
bash scripts/setup-venv.sh "$extras"
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
