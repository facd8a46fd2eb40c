"""``create_app(settings)``: the admin API's FastAPI app, its lifespan, and the one error -> HTTP mapping.

Nothing is built at import time: tests and `lockd serve` each call ``create_app`` with their own settings.
The lifespan opens the backend (lock view watch, member session) and closes it on shutdown; etcd being
down at startup is not fatal (``/readyz`` says 503 until it answers).

Errors -> HTTP, in one place: UsageError 422, not held / not found 404, TransitionConflict 409,
BackendError 503, anything else 500 with no detail (logged here). Bad input never reaches a 5xx.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lockd.api import api_docs
from lockd.api.backend import Backend, NotFound, NotHeld
from lockd.api.browser_guard import BrowserGuard
from lockd.api.routers import audit, health, history, locks, members, metrics, profile, status, waits
from lockd.config import Settings
from lockd.errors import BackendError, TransitionConflict, UsageError
from lockd.metrics import Metrics

LOG = logging.getLogger(__name__)

VERSION = "0.1.0"


def create_app(settings: Settings) -> FastAPI:
    """The admin API for ``settings`` (its ``backend_url`` must be a lockd+etcd3 URL)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(settings, app.state.metrics)
        await run_in_threadpool(backend.open)
        app.state.backend = backend
        try:
            yield
        finally:
            await run_in_threadpool(backend.close)

    app = FastAPI(
        title="lockd admin API",
        version=VERSION,
        description="Who holds which lock, force-release of stale locks, resource statuses. "
        "Mutations always need `Authorization: Bearer <admin token>` (`lockd serve` makes one in its state "
        "directory when none is configured). Requests whose Host header is not one this server answers for "
        "get a 400.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's pages load their viewers from a CDN: lockd.api.api_docs serves its own
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    for module in (health, locks, members, status, audit, waits, history, profile, metrics):
        app.include_router(module.router)
    from lockd.console import pages  # here, not at the top: the console's routes use lockd.api's dependencies

    app.include_router(pages.router)
    app.mount("/ui/static", StaticFiles(directory=pages.STATIC_DIR), name="console-static")
    api_docs.install(app)
    _install_error_mapping(app)
    app.add_middleware(BrowserGuard, settings=settings)  # before any route; refusals are still counted below
    app.add_middleware(_CountRequests, metrics=app.state.metrics)
    if settings.admin_token is None:
        LOG.warning("the admin API has no admin token: force-break and status transitions are refused")
    return app


def _error(status: int, detail: str, **extra: object) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _install_error_mapping(app: FastAPI) -> None:
    @app.exception_handler(UsageError)
    async def usage(request: Request, exc: UsageError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(NotHeld)
    async def not_held(request: Request, exc: NotHeld) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(TransitionConflict)
    async def conflict(request: Request, exc: TransitionConflict) -> JSONResponse:
        return _error(409, str(exc), current=exc.current)

    @app.exception_handler(BackendError)
    async def backend_down(request: Request, exc: BackendError) -> JSONResponse:
        return _error(503, f"backend unavailable: {exc}")

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        LOG.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal error (logged by the server)")


class _CountRequests:
    """Pure ASGI middleware counting requests by method, route template and status (cheaper than
    BaseHTTPMiddleware, which copies each body through a stream)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counting)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
