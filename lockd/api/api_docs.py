"""``/docs``: the API's interactive page (Swagger UI), its files served from this host, never from a CDN.

Why not FastAPI's own ``/docs`` and ``/redoc``: they load their viewers from cdn.jsdelivr.net (and fonts from
Google) and start them with an inline script, in this admin API's origin, where an operator may paste the admin
token to try a force-break. A script from elsewhere running there could send the token anywhere, and the page
could not load at all on a host without the internet. So the viewer's files come from the ``fastapi-offline``
package (which ships Swagger UI 5, the first to read the OpenAPI 3.1 FastAPI writes; only its files are used,
not its app class, whose page starts the viewer with an inline script) and a script of ours starts it
(``lockd/console/static/api-docs.js``). The page then runs under the console's strict policy, but for what
Swagger UI needs: style attributes and ``data:`` images (``API_DOCS_CSP`` in lockd.api.browser_guard). ReDoc
has no such package, so ``/redoc`` is gone; ``/openapi.json`` stays for every other viewer.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
SWAGGER_UI = Path(fastapi_offline.__file__).parent / "static"  # swagger-ui-bundle.js, swagger-ui.css

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lockd admin API</title>
<link rel="icon" href="{ASSETS}/favicon.png">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="/ui/static/api-docs.js"></script>
</body>
</html>
"""

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def docs_page() -> HTMLResponse:
    return HTMLResponse(PAGE)


def install(app: FastAPI) -> None:
    """The page and Swagger UI's files; ``app`` must be made with ``docs_url=None, redoc_url=None``."""
    app.include_router(router)
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="swagger-ui")
