"""Prometheus text exposition of the app's own registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Locks held, waiters, members, breaks, lease losses, etcd errors and request counts."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
