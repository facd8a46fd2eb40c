"""Value types shared by the subcommands' arguments (``type=`` of argparse).

Each parses one string or raises argparse.ArgumentTypeError, which lockd.cli.main's parser prints as one line
and exit 2, like every usage error.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A whole number of at least 1 (a count, a size, a limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value
