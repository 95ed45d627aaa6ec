"""The API's description (`/openapi.json`) as a validator reads it, and its documentation pages
(`/docs`: Swagger UI, `/redoc`: ReDoc) served from the app itself, without any CDN.

FastAPI's own document is mended in two ways:
- pydantic writes the models nested in a body's schema (a workflow definition's steps, actions,
  retry policy) as `$defs` inside that schema, referenced as `#/$defs/...`, which resolves
  nowhere in an OpenAPI document: they are hoisted into `components/schemas`;
- a bearer security scheme (`Authorization: Bearer <key>`) is declared and required
  everywhere, except on the probes, /metrics and the form endpoint (`/f/...`), which say
  `security: []` (the docs pages and the document are not operations).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from services.api.auth import OPEN_PATHS, OPEN_PREFIXES

STATIC_DIR = Path(__file__).resolve().parent / "static"
ASSETS = "/docs/assets"
SCHEME = "bearerAuth"

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS}/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS}/swagger-ui/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS}/swagger-ui/favicon-32x32.png",
        swagger_ui_parameters={"persistAuthorization": True},
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS}/redoc/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS}/swagger-ui/favicon-32x32.png",
        with_google_fonts=False,
    )


def install(app: FastAPI) -> None:
    """Serve the pages and the mended document (`observe.Unguarded` serves their assets). The
    app must be made with `docs_url=None, redoc_url=None` (these pages replace FastAPI's, which
    load from a CDN)."""
    app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = mend(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    summary=app.summary,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def mend(document: dict[str, Any]) -> dict[str, Any]:
    hoist_defs(document)
    require_bearer(document)
    return document


def hoist_defs(document: dict[str, Any]) -> None:
    """Move every nested `$defs` into `components/schemas` and point its references there."""
    hoisted: dict[str, Any] = {}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for name, schema in (node.pop("$defs", None) or {}).items():
                visit(schema)
                _add(hoisted, name, schema)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                node["$ref"] = "#/components/schemas/" + ref.removeprefix("#/$defs/")
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(document.get("paths"))
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    visit(schemas)
    for name, schema in hoisted.items():
        _add(schemas, name, schema)


def _add(schemas: dict[str, Any], name: str, schema: Any) -> None:
    if schemas.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are both named {name!r}")


def require_bearer(document: dict[str, Any]) -> None:
    components = document.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer <key>`",
    }
    document["security"] = [{SCHEME: []}]
    for path, item in document.get("paths", {}).items():
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            for operation in item.values():
                if isinstance(operation, dict):
                    operation["security"] = []
