"""The admin token `lockd serve` makes for itself when none is configured, and how the CLI on its host finds it.

Why: mutating calls (force-break, status transitions) always need a bearer token. Before, a loopback bind with
no token left them open, and "only this host can connect" is not true of a browser on this host: any web page
it shows can send requests to 127.0.0.1 (DNS rebinding gets around the same-origin rule for reads too). So an
unconfigured `lockd serve` creates a random token once, in ``<state dir>/admin_token`` with mode 0600, and
reuses it on every start (as Jupyter does with its runtime files). The CLI, talking to a sidecar on this host
with no token given, reads the same file: whoever can read the file could have read a configured token too.

The file is created complete or not at all (written to a private temporary file, then hard-linked into place),
so two sidecars starting at once on one state directory agree on one token.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import stat
import tempfile
import urllib.parse
from pathlib import Path

from lockd.errors import UsageError

LOG = logging.getLogger(__name__)

TOKEN_FILE = "admin_token"


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE


def ensure_token(state_dir: Path) -> tuple[str, bool]:
    """The token in ``state_dir``'s token file, created first if missing; returns (token, created).

    Raises:
        UsageError: the state directory cannot be written or the file cannot be read (one line for the CLI).
    """
    path = token_path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        created = _create(path)
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            LOG.warning("admin token file %s was readable by others; made it 0600", path)
            path.chmod(0o600)
        token = _read(path)
    except OSError as exc:
        raise UsageError(f"cannot create the admin token file {path}: {exc.strerror or exc}") from None
    if token is None:
        raise UsageError(f"admin token file {path} is empty; delete it and lockd serve makes a new one")
    return token, created


def _create(path: Path) -> bool:
    """Make ``path`` hold a fresh token unless it exists; True if this call made it."""
    if path.exists():
        return False
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".admin_token-")  # mode 0600 by construction
    try:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False  # another sidecar on this state directory made it first: use theirs
        return True
    finally:
        os.unlink(temporary)


def _read(path: Path) -> str | None:
    lines = path.read_text().splitlines()
    return lines[0].strip() if lines and lines[0].strip() else None


def local_token(url: str, state_dir: Path) -> str | None:
    """The token a sidecar on this host made, when ``url`` points at this host and the file can be read.

    A sidecar elsewhere never gets this host's token sent to it. None when there is nothing to use (the caller
    then sends no token and the server's 401 says one is needed).
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            return None
    try:
        return _read(token_path(state_dir))
    except (OSError, UnicodeDecodeError):
        return None
