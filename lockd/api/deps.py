"""Annotated dependencies, so a handler's signature lists what it needs: the backend, admin rights, a valid name.

Dependencies are ``async`` because they do no I/O: sync ones would each cost a thread-pool hop per request.

Admin rights: every mutation needs ``Authorization: Bearer <token>`` (401 without, 403 wrong; compared in
constant time), whatever the bind address: a loopback bind does not mean only trusted callers, since any page
in a browser on this host can send requests to 127.0.0.1. `lockd serve` always has a token (it makes one in
its state directory when none is configured, lockd.admin_token); an app built without one refuses every
mutation (403).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from lockd.api.backend import Backend
from lockd.config import Settings
from lockd.lock import validate_name

_bearer = HTTPBearer(auto_error=False, description="the admin token of `lockd serve`")


async def get_backend(request: Request) -> Backend:
    return request.app.state.backend


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


BackendDep = Annotated[Backend, Depends(get_backend)]


async def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Who is asking (for the audit record), once allowed to mutate. Raises HTTPException 401/403."""
    client = request.client.host if request.client else "unknown"
    if settings.admin_token is None:
        raise HTTPException(403, "mutations are disabled: this server has no admin token")
    if credentials is None:
        raise HTTPException(
            401, "an admin token is required: Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
        )
    given = credentials.credentials.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, settings.admin_token.encode("utf-8")):
        raise HTTPException(403, "the admin token is wrong")
    return f"{client} (admin token)"


AdminDep = Annotated[str, Depends(require_admin)]


async def lock_name(
    name: Annotated[str, Path(description="the lock name, URL-encoded (1..512 printable ASCII)")],
) -> str:
    """The path's lock name, validated (UsageError -> 422 in the app's handler)."""
    return validate_name(name)


LockName = Annotated[str, Depends(lock_name)]
