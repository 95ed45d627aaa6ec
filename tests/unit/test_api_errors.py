"""The API's last-resort error handler: a value PostgreSQL refused is the request's fault (422
with the reason), anything else a JSON 500."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from services.api.errors import _data_error, _unexpected

REFUSED = asyncpg.exceptions.CharacterNotInRepertoireError(
    'invalid byte sequence for encoding "UTF8": 0x00'
)


def _request() -> Request:
    return Request({"type": "http", "method": "GET", "path": "/tasks", "headers": []})


def test_a_data_error_is_found_however_it_was_wrapped() -> None:
    wrapped = DBAPIError("SELECT 1", None, Exception("adapter"))
    wrapped.orig = Exception("adapter")
    wrapped.orig.__cause__ = REFUSED
    assert _data_error(REFUSED) is REFUSED
    assert _data_error(wrapped) is REFUSED
    assert _data_error(RuntimeError("boom")) is None


def test_a_refused_value_is_422_with_postgresqls_reason_and_a_bug_is_a_json_500() -> None:
    refused = asyncio.run(_unexpected(_request(), REFUSED))
    failed = asyncio.run(_unexpected(_request(), RuntimeError("boom")))

    assert refused.status_code == 422
    [problem] = orjson.loads(refused.body)["detail"]
    assert problem["msg"] == 'invalid byte sequence for encoding "UTF8": 0x00'
    assert failed.status_code == 500
    assert "internal error" in orjson.loads(failed.body)["detail"]
    assert "boom" not in failed.body.decode()  # no internals leak to the client
