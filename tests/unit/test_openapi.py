"""The API's description validates as OpenAPI, every reference in it resolves, its operation
ids are unique, it declares the bearer scheme, every request body has an example that the API
itself accepts; a 405 names every allowed method; the docs pages load every asset from the app.

The app is built and called in this process without its lifespan: none of this touches the
database or Redis."""

from __future__ import annotations

import copy
import importlib
import pkgutil
import re
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from openapi_spec_validator import validate
from pydantic import BaseModel
from structlog.testing import capture_logs

from services.api.app import create_app
from services.api.keys import KeyRing
from services.api.observe import Observe
from services.api.openapi import hoist_defs
from workflow_core import metrics
from workflow_core.adapters.streams import StreamKeys
from workflow_core.settings import Settings, load_settings

OPEN = {"/healthz", "/readyz", "/metrics"}


def without_lifespan(settings: Settings) -> FastAPI:
    """The app as these tests use it, with no lifespan (no database): the key ring answers
    from the settings alone, as it does for an open API or for the operator's key."""
    app = create_app(settings, migrated=True)
    app.state.key_ring = KeyRing(
        cast(Any, None),
        cast(Any, None),
        StreamKeys.from_settings(settings),
        admin_key=settings.admin_key,
    )
    return app


@pytest.fixture(scope="module")
def app() -> FastAPI:
    return without_lifespan(load_settings(_env_file=None))


@pytest.fixture(scope="module")
def document(app: FastAPI) -> dict[str, Any]:
    return copy.deepcopy(app.openapi())


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        yield client


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve"
        node = node[part]
    return node


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs = [node["$ref"] for node in walk(document) if isinstance(node.get("$ref"), str)]
    assert len(refs) > 20
    for ref in refs:
        resolve(document, ref)
    assert not any("$defs" in node for node in walk(document))
    assert "RetryPolicy" in document["components"]["schemas"]


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    methods = {(path, method) for path, method, _ in operations(document)}
    assert {("/healthz", "head"), ("/healthz", "get"), ("/readyz", "head")} <= methods


def test_a_bearer_key_is_required_except_on_the_open_operations(document: dict[str, Any]) -> None:
    [(name, scheme)] = document["components"]["securitySchemes"].items()
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    assert document["security"] == [{name: []}]
    for path, _, operation in operations(document):
        if path in OPEN or path.startswith(("/f/", "/t/")):
            assert operation["security"] == [], path
        else:
            assert operation.get("security", document["security"]) != [], path


def _body_schemas(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, method, operation in operations(document):
        for media in operation.get("requestBody", {}).get("content", {}).values():
            schema = media["schema"]
            options = schema.get("anyOf", [schema])
            for option in options:
                if "$ref" in option:
                    yield f"{method} {path}", resolve(document, option["$ref"])


def _request_body_model(name: str) -> type[BaseModel]:
    """The model of that name in one of the modules of `services.api.schemas`."""
    package = importlib.import_module("services.api.schemas")
    for module in pkgutil.iter_modules(package.__path__, "services.api.schemas."):
        model = getattr(importlib.import_module(module.name), name, None)
        if model is not None:
            assert isinstance(model, type)
            return model
    raise AssertionError(f"no request body model named {name}")


def test_every_request_body_has_an_example_the_api_accepts(document: dict[str, Any]) -> None:
    bodies = list(_body_schemas(document))
    assert len(bodies) >= 6
    for where, schema in bodies:
        assert schema.get("examples"), f"{where}: {schema['title']} has no example"
        model = _request_body_model(schema["title"])
        assert issubclass(model, BaseModel)
        for example in schema["examples"]:
            model.model_validate(example)


def test_hoisting_moves_nested_definitions_and_refuses_a_clash() -> None:
    nested = {"$defs": {"A": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/A"}}}
    document: dict[str, Any] = {
        "paths": {"/x": {"post": {"requestBody": {"content": {"j": {"schema": nested}}}}}},
        "components": {"schemas": {"B": {"$defs": {"A": {"type": "string"}}}}},
    }
    hoist_defs(document)
    assert document["components"]["schemas"] == {"B": {}, "A": {"type": "string"}}
    assert nested == {"properties": {"a": {"$ref": "#/components/schemas/A"}}}
    clash = {"paths": {}, "components": {"schemas": {"A": {"type": "integer"}, "B": nested}}}
    nested["$defs"] = {"A": {"type": "string"}}
    with pytest.raises(ValueError, match="'A'"):
        hoist_defs(clash)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/submit", "POST"),
        ("PATCH", "/workflows/0b7e3d55-4c0f-4a8e-9d55-0d6f1f5b7b11", "DELETE, GET, PUT"),
        ("POST", "/healthz", "GET, HEAD"),
        ("PUT", "/workflows", "GET, POST"),
    ],
)
async def test_a_405_names_every_method_the_path_allows(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    answer = await client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["detail"]


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_a_docs_page_loads_everything_from_the_app(
    client: httpx.AsyncClient, page: str
) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    parser = _Assets()
    parser.feed(answer.text)
    assert len(parser.urls) >= 2, parser.urls
    assert not re.search(r"""["'](https?:)?//""", answer.text), "a URL off the app"
    for url in parser.urls:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 500, url
    spec = re.search(r"""(?:url|spec-url)[:=]\s*['"]([^'"]+)['"]""", answer.text)
    assert spec is not None and spec.group(1) == "/openapi.json"
    assert (await client.get(spec.group(1))).json()["openapi"].startswith("3.")


async def test_requests_are_counted_by_route_template_never_by_path(
    client: httpx.AsyncClient,
) -> None:
    before = metrics.exported_names()
    assert "flowline_http_requests_total" in before
    await client.patch("/workflows/0b7e3d55-4c0f-4a8e-9d55-0d6f1f5b7b11")
    await client.get("/no/such/thing/123")
    await client.request("BREW", "/healthz")
    page = (await client.get("/metrics")).text
    assert 'route="/workflows/{workflow_id}",status="405"' in page
    assert 'route="unmatched",status="404"' in page
    assert 'method="OTHER",route="/healthz",status="405"' in page
    assert "0b7e3d55" not in page and "/no/such" not in page


async def test_metrics_and_the_docs_assets_need_no_key_when_the_api_needs_one() -> None:
    guarded = without_lifespan(load_settings(_env_file=None, api_admin_key="t" * 32))
    transport = httpx.ASGITransport(app=guarded)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.get("/workflows")).status_code == 401
        assert (await client.get("/metrics")).status_code == 200
        for page in ("/docs", "/redoc"):
            parser = _Assets()
            parser.feed((await client.get(page)).text)
            for url in parser.urls:
                assert (await client.get(url)).status_code == 200, url
        assert (await client.get("/docs/assets/nothing.js")).status_code == 404


async def test_the_access_line_names_the_key_id_never_the_key() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["key_id"] = "key-7"  # as authentication sets it
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    observed = Observe(app, templates=lambda: ["/tasks/{task_id}"])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/tasks/123",
        "headers": [(b"authorization", b"Bearer secret-key-text")],
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_: Any) -> None:
        pass

    with capture_logs() as logs:
        await observed(scope, receive, send)
    [line] = logs
    assert line["event"] == "http_request" and line["key_id"] == "key-7"
    assert line["route"] == "/tasks/{task_id}" and line["status"] == 204
    assert "secret-key-text" not in repr(line)
