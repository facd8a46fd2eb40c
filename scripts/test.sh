#!/usr/bin/env bash
# Sets up everything and runs the whole test suite (lint, unit, integration and fault tests on real etcd,
# SQL store tests on the local MariaDB and PostgreSQL). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
bash scripts/setup-venv.sh "sql,test,bench,embedded"
.venv/bin/ruff check .
.venv/bin/python -m pytest -p no:cacheprovider "$@"
