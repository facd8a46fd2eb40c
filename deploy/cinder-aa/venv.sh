#!/usr/bin/env bash
# Cinder 29's own virtualenv for the demo and the Pacemaker tests, with lockd installed into it from this checkout.
#
#   deploy/cinder-aa/venv.sh [VENV]      (default $LOCKD_AA_VENV, else <repo>/.cinder-aa/venv)
#
# Cinder pins many libraries, so it gets a virtualenv of its own; made on first use (PyPI). lockd is installed
# (editable) again whenever the checkout or its packaging files (pyproject.toml, setup.py, the .pth hook) changed
# since the last install: a stamp in the virtualenv records them (a reinstall costs about 5 s, and the tests run
# this script four times). Prints the virtualenv's path.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${1:-${LOCKD_AA_VENV:-$repo/.cinder-aa/venv}}
if [ ! -x "$venv/bin/cinder-volume" ]; then
    echo "cinder-aa: installing Cinder 29 into $venv (its own virtualenv)" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q 'cinder==29.*' PyMySQL
fi
stamp="$venv/.lockd-install"
want="$repo $(cat "$repo/pyproject.toml" "$repo/setup.py" "$repo/lockd_lockutils_patch.pth" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    rm -f "$stamp"
    "$venv/bin/python" -m pip install -q -e "$repo" >/dev/null 2>&1 || "$venv/bin/python" -m pip install -q -e "$repo" >&2
    echo "$want" >"$stamp"
fi
echo "$venv"
