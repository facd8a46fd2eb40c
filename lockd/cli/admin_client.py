"""The HTTP side of the admin commands (`lockd locks`, `break`, `status`, `deadlocks`, `profile`, `history`):
one request to the sidecar's admin API.

urllib from the stdlib, and never through an HTTP proxy: the sidecar is normally on this host.
Errors become the CLI's exit codes: a refused or failed request is a runtime failure (exit 1, one line);
a 422 is the caller's bad input (exit 2).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lockd.errors import LockdError, UsageError

Answer = TypeVar("Answer", bound=BaseModel)

DEFAULT_URL = "http://127.0.0.1:7170"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AdminError(LockdError):
    """The sidecar answered with an error or could not be reached (exit 1)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def add_url_argument(parser: Any) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("LOCKD_URL", DEFAULT_URL),
        help=f"the sidecar's admin API (default $LOCKD_URL or {DEFAULT_URL})",
    )


def quote(part: str) -> str:
    """A path segment: every reserved character escaped, '/' included (lock names may contain it)."""
    return urllib.parse.quote(part, safe="")


def request(
    base_url: str,
    method: str,
    path: str,
    body: object = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """Send one request; returns (status, decoded JSON or None) for 2xx.

    Raises:
        UsageError: the server says 422 (bad name or input), or the URL is not http(s).
        AdminError: any other error status (its detail in the message), or the server cannot be reached.
    """
    if not base_url.startswith(("http://", "https://")):
        raise UsageError(f"--url {base_url!r} must start with http:// or https://")
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base_url.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with _OPENER.open(req, timeout=timeout) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        detail = _detail(exc)
        if exc.code == 422:
            raise UsageError(detail) from None
        raise AdminError(detail, exc.code) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminError(f"cannot reach the lockd admin API at {base_url}: {reason}") from None


def get_answer(base_url: str, path: str, model: type[Answer]) -> Answer:
    """GET ``path`` and validate the answer against the API's own answer model (lockd.api.models), so a command
    shows exactly what the API says, and a server that answers in another shape fails loudly.

    Raises:
        UsageError, AdminError: as ``request``.
        AdminError: the answer is not of ``model``'s shape (exit 1).
    """
    _, answer = request(base_url, "GET", path)
    try:
        return model.model_validate(answer)
    except ValidationError as exc:
        what = path.split("?", 1)[0]
        raise AdminError(
            f"{base_url.rstrip('/')}{what} answered something else than {model.__name__} ({exc.error_count()} errors)"
        ) from None


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read() or b"{}")
    except ValueError:
        payload = {}
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list):  # FastAPI's validation errors: a list of {loc, msg}
        detail = "; ".join(str(item.get("msg", item)) for item in detail if isinstance(item, dict))
    return f"{detail or exc.reason} (HTTP {exc.code})"
