"""Every operation of the API's own OpenAPI description, fuzzed by schemathesis against a real
API process (its own database and stream, real PostgreSQL and Redis): requests that fit the
description and requests that break it may get any 2xx or 4xx, never a 5xx.

Bounded and repeatable: a few examples per operation (about a minute in all), derandomized so
that every run sends the same requests, nothing kept between runs. Every 5xx found is listed
with a curl command that repeats it, rather than stopping at the first."""

from __future__ import annotations

from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode

from tests.conftest import Stack

EXAMPLES_PER_OPERATION = 150

CONFIG = SchemathesisConfig.from_dict(
    {"generation": {"deterministic": True}, "request-timeout": 30, "warnings": False}
)


@pytest.fixture(scope="module")
def api_schema(shared_api: Stack) -> Any:
    return schemathesis.openapi.from_url(f"{shared_api.base_url}/openapi.json", config=CONFIG)


def _fuzz(operation: Any, session: requests.Session) -> list[str]:
    """The 5xx answers the operation gave to EXAMPLES_PER_OPERATION requests."""
    found: list[str] = []
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def send(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(session=session, checks=[not_a_server_error])
        except (Exception, FailureGroup) as failure:  # a group is a BaseException
            found.append(f"{failure}\n  {case.as_curl_command()}")

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
