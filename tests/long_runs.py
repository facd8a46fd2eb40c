"""``LOCKD_LONG_TESTS=1`` runs the long variants of tests that CI runs short; each such test's docstring says
what the switch changes (more rounds, more sizes). CI leaves it unset."""

from __future__ import annotations

import os

LONG = os.environ.get("LOCKD_LONG_TESTS") == "1"
