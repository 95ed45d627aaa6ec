"""Every operation of the API's own OpenAPI description, fuzzed by schemathesis against a real
API process (its own database and stream, real PostgreSQL and Redis): requests that fit the
description and requests that break it may get any 2xx or 4xx, never a 5xx.

Bounded and repeatable: a few examples per operation (about a minute in all), derandomized so
that every run sends the same requests, nothing kept between runs. Every 5xx found is listed
with a curl command that repeats it, rather than stopping at the first."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from tests.conftest import Stack, module_stack
from tests.support.examples import EXAMPLE_WORKFLOW
from tests.support.services import Servers

EXAMPLES_PER_OPERATION = 70

CONFIG = SchemathesisConfig.from_dict(
    {"generation": {"deterministic": True}, "request-timeout": 30, "warnings": False}
)


@pytest.fixture(scope="module")
def api_schema(shared_api: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{shared_api.base_url}/openapi.json", config=CONFIG)


def _fuzz(
    operation: Any,
    session: requests.Session,
    *,
    examples: int = EXAMPLES_PER_OPERATION,
    headers: dict[str, str] | None = None,
    never_shown: tuple[str, ...] = (),
) -> list[str]:
    """The 5xx answers the operation gave to `examples` requests (sent with `headers`), and
    the answers that showed any of `never_shown`."""
    found: list[str] = []
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: schemathesis.Case) -> None:
        if headers:
            case.headers = {**(case.headers or {}), **headers}
        try:
            response = case.call(session=session)
            case.validate_response(response, checks=[not_a_server_error])
        except (Exception, FailureGroup) as failure:  # a group is a BaseException
            found.append(f"{failure}\n  {case.as_curl_command()}")
            return
        shown = [secret for secret in never_shown if secret in response.text]
        if shown:
            found.append(f"showed {shown}\n  {case.as_curl_command()}")

    send()
    return found


@pytest.mark.timeout(300)
def test_no_request_makes_the_api_answer_5xx(api_schema: Any) -> None:
    failures: list[str] = []
    operations = 0
    with requests.Session() as session:
        for result in api_schema.get_all_operations():
            operation = result.ok()
            operations += 1
            failures += _fuzz(operation, session)
    assert operations >= 20  # the whole API was described, and so fuzzed
    assert not failures, "\n".join(failures)


ADMIN = "fl_admin_" + "f" * 40
MARK = "another-organisations-secret-mark"


@pytest.fixture(scope="module")
async def keyed_api(
    servers: Servers, template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Stack, dict[str, str]]]:
    """An API with an operator's key, organisation A's data (with MARK in it), and a key of
    organisation B."""
    async with module_stack(
        servers, template_database, tmp_path_factory.mktemp("logs"), api_admin_key=ADMIN
    ) as stack:
        stack.start_api()
        operator = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=10) as client:
            a_workflow = {**EXAMPLE_WORKFLOW, "name": MARK, "org_id": "org_a"}
            assert (await client.post("/workflows", json=a_workflow, headers=operator)).is_success
            form = {"template_id": MARK, "data": {"mark": MARK}, "org_id": "org_a"}
            assert (await client.post("/submit", json=form, headers=operator)).is_success
            made = await client.post(
                "/api-keys", json={"org_id": "org_b", "scopes": ["admin"]}, headers=operator
            )
        yield stack, {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("who", ["another organisation's key", "no key"])
def test_neither_another_organisation_nor_a_stranger_gets_a_5xx_or_a_data(
    keyed_api: tuple[Stack, dict[str, str]], who: str
) -> None:
    stack, b_key = keyed_api
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/openapi.json", config=CONFIG)
    headers = b_key if who != "no key" else {}
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            failures += _fuzz(
                result.ok(), session, examples=15, headers=headers, never_shown=(MARK,)
            )
    assert not failures, "\n".join(failures)
