"""/docs (Swagger UI) and /redoc with their scripts served from the package (service/docs_static,
versions in its VERSIONS.txt), not from a CDN: the documentation works on a machine without internet.

The two large bundles are stored gzip-compressed (`*.js.gz`, 458 and 327 KB instead of 1.7 and 1.1 MB,
so no committed file is over 1 MB) and served as they are with `Content-Encoding: gzip`, which every
browser accepts; a client that does not say it accepts gzip gets them decompressed.

    app = FastAPI(docs_url=None, redoc_url=None, ...)
    install_docs(app)
"""

from __future__ import annotations

import gzip
from functools import cache
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

FOLDER = Path(__file__).parent / "docs_static"
ASSETS = "/docs/assets"  # open without a token, like /docs itself (service/ui/session.py OPEN_PREFIXES)
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


COMPRESSED = {path.name.removesuffix(".gz"): path for path in FOLDER.glob("*.js.gz")}


@cache
def _compressed_bytes(name: str) -> bytes:
    return COMPRESSED[name].read_bytes()


def _accepts_gzip(request: Request) -> bool:
    return any(
        part.split(";")[0].strip() in ("gzip", "*")
        for part in request.headers.get("accept-encoding", "").split(",")
    )


def install_docs(app: FastAPI) -> None:
    # Registered before the mount, which would otherwise answer every path under ASSETS.
    @app.get(ASSETS + "/{name}.js", include_in_schema=False)
    async def compressed_script(name: str, request: Request) -> Response:
        filename = f"{name}.js"
        if filename not in COMPRESSED:
            raise HTTPException(status_code=404, detail="Not Found")
        body = _compressed_bytes(filename)
        headers = {"Cache-Control": "public, max-age=86400", "Vary": "Accept-Encoding"}
        if _accepts_gzip(request):
            headers["Content-Encoding"] = "gzip"
        else:
            body = gzip.decompress(body)
        return Response(body, media_type="text/javascript", headers=headers)

    app.mount(ASSETS, StaticFiles(directory=FOLDER), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=root + OAUTH2_REDIRECT,
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from validator.swagger.io
        )

    @app.get(OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
            with_google_fonts=False,
        )
