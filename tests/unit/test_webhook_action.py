"""The webhook action without a network: its config as a definition validates it, the request
it previews, and the request it hands to the HTTP client (signature, ids, timeout, result)."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import orjson
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.unit.factories import example_context, example_definition
from workflow_core import actions
from workflow_core.actions import webhook
from workflow_core.actions.base import ActionCall, ActionDeps, HttpResponse
from workflow_core.actions.webhook import WebhookConfig, execute, preview
from workflow_core.destinations import AllowedHosts
from workflow_core.errors import PermanentActionError, RetryableActionError
from workflow_core.ids import derived_id
from workflow_core.validation import validate_definition

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
RUN_ID = UUID("00000000-0000-4000-8000-0000000000a1")
KEY = f"{RUN_ID}/1/0"
NOW = datetime.now(UTC)


def config(**fields: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"url": "https://hooks.example.com/in", **fields})


def definition_with(webhook_config: dict[str, Any]) -> dict[str, Any]:
    definition = example_definition()
    definition["steps"][0]["actions"] = [{"type": "webhook", "config": webhook_config}]
    return definition


def problems(webhook_config: dict[str, Any]) -> dict[str, str]:
    result = validate_definition(definition_with(webhook_config))
    return {problem.path: problem.msg for problem in result.errors}


def call(key: str = KEY, attempt: int = 1, **data: Any) -> ActionCall:
    return ActionCall(
        run_id=RUN_ID,
        workflow_id=UUID("00000000-0000-4000-8000-0000000000f1"),
        org_id="org_123",
        submission_id=UUID("00000000-0000-4000-8000-00000000005b"),
        step_id="notify",
        step_seq=1,
        index=0,
        attempt=attempt,
        key=key,
        context=example_context(**data),
    )


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    timeout: float


@dataclass
class FakeHttp:
    """An HttpClient that records each request and answers from a script."""

    answer: HttpResponse | Exception = field(
        default_factory=lambda: HttpResponse(200, {"content-type": "text/plain"}, "ok")
    )
    sent: list[Sent] = field(default_factory=list)

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        content: bytes | None,
        timeout: float,
    ) -> HttpResponse:
        self.sent.append(Sent(method, url, dict(headers), content, timeout))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def deps(http: FakeHttp, now: datetime | None = None, **settings: Any) -> ActionDeps:
    """`now` defaults to the real time of the call: a signature made with a clock read when
    the module was imported is "too old" to verify once the suite has run for 5 minutes."""
    at = now or datetime.now(UTC)
    unused = cast(Any, None)
    return ActionDeps(
        mailer=unused,
        http=http,
        records=unused,
        ledger=unused,
        from_email="flowline@example.com",
        now=lambda: at,
        settings={"webhook_timeout_seconds": 7.5, **settings},
    )


async def send(
    webhook: WebhookConfig, action_call: ActionCall | None = None, **kwargs: Any
) -> tuple[Sent, dict[str, Any]]:
    http = FakeHttp(**kwargs)
    result = await execute(action_call or call(), webhook, deps(http))
    [sent] = http.sent
    return sent, result


# config, as part of a definition


def test_the_webhook_action_type_is_registered() -> None:
    registered = actions.get("webhook")
    assert registered is not None
    assert registered.config is WebhookConfig


def test_a_full_config_is_accepted() -> None:
    result = validate_definition(
        definition_with(
            {
                "url": "https://hooks.example.com/{org_id}",
                "method": "put",
                "headers": {"Authorization": "Bearer abc", "X-Name": "{data.name}"},
                "body": {"who": "{data.name}", "n": 3, "tags": ["a", None]},
                "timeout": 2.5,
                "secret": SECRET,
            }
        )
    )
    assert result.errors == []
    assert result.ok


@pytest.mark.parametrize(
    ("webhook_config", "path", "says"),
    [
        ({"url": "https://x.example/", "method": "FETCH"}, "method", "'GET', 'POST'"),
        ({"url": "ftp://x.example/in"}, "url", "http:// or https://"),
        ({"url": "{data.callback}"}, "url", "http:// or https://"),
        ({"url": "https:///nohost"}, "url", "no host"),
        ({"url": "https://x.example/a b"}, "url", "spaces"),
        ({}, "url", "required"),
        ({"url": "https://x.example/", "secret": "c2VjcmV0"}, "secret", "whsec_<base64>"),
        ({"url": "https://x.example/", "secret": "whsec_not*base64!"}, "secret", "not base64"),
        ({"url": "https://x.example/", "secret": "whsec_c2hvcnQ="}, "secret", "5 bytes"),
        ({"url": "https://x.example/", "colour": "blue"}, "colour", "Extra inputs"),
        ({"url": "https://x.example/", "timeout": 0}, "timeout", "greater than 0"),
        ({"url": "https://x.example/", "headers": {"X Bad": "1"}}, "headers", "not an HTTP token"),
        ({"url": "https://x.example/", "headers": {"X-A:": "1"}}, "headers", "not an HTTP token"),
        (
            {"url": "https://x.example/", "headers": {"Webhook-Signature": "v1,forged"}},
            "headers",
            "set by Flowline",
        ),
        ({"url": "https://x.example/", "headers": {"Host": "evil"}}, "headers", "set by Flowline"),
        ({"url": "https://x.example/", "headers": {"X-A": "1", "x-a": "2"}}, "headers", "twice"),
    ],
)
def test_a_bad_config_is_refused_at_its_json_path(
    webhook_config: dict[str, Any], path: str, says: str
) -> None:
    found = problems(webhook_config)
    assert list(found) == [f"steps[0].actions[0].config.{path}"]
    assert says in found[f"steps[0].actions[0].config.{path}"]


LOOPBACK_ALLOWED = AllowedHosts.parse("127.0.0.1")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://2852039166/latest", "2852039166 is 169.254.169.254, a link-local address"),
        ("http://0xa9fea9fe/", "0xa9fea9fe is 169.254.169.254"),
        ("http://0251.0376.0251.0376/", "0251.0376.0251.0376 is 169.254.169.254"),
        ("http://[::ffff:169.254.169.254]/", "an IPv4-mapped IPv6 address"),
        ("https://10.0.0.5:8443/in", "10.0.0.5 is a private address (RFC 1918)"),
        ("http://192.168.1.1/", "a private address (RFC 1918)"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fd00::1]/", "a unique local address"),
        ("http://[fe80::1]/", "a link-local address"),
        ("http://0.0.0.0:5432/", "the unspecified address"),
        ("http://127.0.0.2:6379/", "127.0.0.2 is a loopback address"),
        ("http://0x7f.0.0.2:8000/workflows", "0x7f.0.0.2 is 127.0.0.2, a loopback address"),
        ("http://[::1]:8000/", "::1 is a loopback address"),
        ("http://224.0.0.1/", "a multicast address"),
    ],
)
def test_a_url_written_as_an_internal_address_is_refused_unless_allowed(
    url: str, says: str
) -> None:
    result = validate_definition(definition_with({"url": url}), allowed_hosts=LOOPBACK_ALLOWED)
    [problem] = result.errors
    assert problem.path == "steps[0].actions[0].config.url"
    assert says in problem.msg
    assert "WEBHOOK_ALLOWED_HOSTS" in problem.msg
    assert not result.ok


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8025/hooks",  # listed
        "http://[::ffff:127.0.0.1]:8025/",  # stands for a listed address
        "http://127.1:8025/",
        "https://hooks.example.com/in",  # a name: checked when it is resolved, at run time
        "http://localhost:8000/",
        "http://{data.host}/in",  # known only at run time
        "http://10.0.0.{data.n}/in",
        "https://8.8.8.8/in",  # global
    ],
)
def test_a_listed_address_a_name_or_a_template_passes_validation(url: str) -> None:
    result = validate_definition(definition_with({"url": url}), allowed_hosts=LOOPBACK_ALLOWED)
    assert result.errors == []


def test_without_the_deployments_allowed_hosts_addresses_are_left_to_run_time() -> None:
    """The worker's catalog reads stored definitions without them: a workflow stored before
    the setting changed still runs, and its call is refused with the reason."""
    assert problems({"url": "http://169.254.169.254/"}) == {}


def test_the_method_is_case_insensitive_and_post_by_default() -> None:
    assert config().method == "POST"
    assert config(method="patch").method == "PATCH"


def test_an_unpadded_secret_is_accepted_as_the_verifier_reads_it() -> None:
    unpadded = SECRET.rstrip("=")
    assert unpadded != SECRET
    assert config(secret=unpadded).secret == unpadded


def test_the_secret_is_not_in_the_configs_repr() -> None:
    assert SECRET not in repr(config(secret=SECRET))


# preview


def test_preview_renders_url_headers_and_body_from_the_context() -> None:
    shown = preview(
        config(
            url="https://hooks.example.com/forms/{template_id}?who={data.name}",
            headers={"X-Submission": "{submission_id}", "Authorization": "Bearer t0k3n"},
            body={"name": "{data.name}", "id": "{submission_id}", "n": 3, "list": ["{org_id}"]},
            secret=SECRET,
        ),
        example_context(),
    )
    assert shown == {
        "method": "POST",
        "url": "https://hooks.example.com/forms/form_submitted?who=John%20Doe",
        "headers": {
            "user-agent": shown["headers"]["user-agent"],
            "content-type": "application/json",
            "x-submission": "5f0c2d7e-0000-4000-8000-000000000001",
            "authorization": "Bearer t0k3n",
        },
        "body": {
            "name": "John Doe",
            "id": "5f0c2d7e-0000-4000-8000-000000000001",
            "n": 3,
            "list": ["org_123"],
        },
        "response": webhook.RESPONSE_SHAPE,
    }
    assert shown["headers"]["user-agent"].startswith("Flowline")


def test_form_data_cannot_leave_its_part_of_the_url() -> None:
    shown = preview(
        config(url="https://{data.tenant}.hooks.example.com/u/{data.id}?q={data.q}"),
        example_context(tenant="evil.com/x#", id="../../admin", q="a&admin=1"),
    )
    assert shown["url"] == (
        "https://evil.com%2Fx%23.hooks.example.com/u/..%2F..%2Fadmin?q=a%26admin%3D1"
    )


def test_an_unknown_url_placeholder_stays_as_written() -> None:
    shown = preview(config(url="https://x.example/{data.nope}"), example_context())
    assert shown["url"] == "https://x.example/{data.nope}"


def test_header_values_carry_no_line_breaks_or_control_characters() -> None:
    shown = preview(
        config(headers={"X-Name": "{data.name}", "X-Note": "{data.note}"}),
        example_context(name="Ada\r\nX-Injected: 1\n\nbody", note="a\x00b\x7fc\td"),
    )
    assert shown["headers"]["x-name"] == "Ada X-Injected: 1 body"
    assert "\r" not in shown["headers"]["x-name"] and "\n" not in shown["headers"]["x-name"]
    assert shown["headers"]["x-note"] == "a b c d"
    assert "x-injected" not in shown["headers"]


def test_header_values_outside_ascii_are_percent_encoded() -> None:
    shown = preview(config(headers={"X-Name": "{data.name}"}), example_context(name="José"))
    assert shown["headers"]["x-name"] == "Jos%C3%A9"


def test_without_a_body_the_whole_context_is_sent() -> None:
    context = example_context()
    assert preview(config(), context)["body"] == context


def test_get_sends_no_body_unless_one_is_configured() -> None:
    shown = preview(config(method="GET"), example_context())
    assert shown["body"] is None
    assert "content-type" not in shown["headers"]
    assert preview(config(method="GET", body={"a": 1}), example_context())["body"] == {"a": 1}


def test_a_configured_header_replaces_a_default_one() -> None:
    shown = preview(config(headers={"Content-Type": "application/cloudevents+json"}), {})
    assert shown["headers"]["content-type"] == "application/cloudevents+json"


# the request handed to the HTTP client


async def test_the_request_is_json_with_standard_webhooks_headers_and_a_valid_signature() -> None:
    before = int(datetime.now(UTC).timestamp())
    sent, _ = await send(config(body={"hello": "{data.name}"}, secret=SECRET))
    after = int(datetime.now(UTC).timestamp())

    assert (sent.method, sent.url) == ("POST", "https://hooks.example.com/in")
    assert sent.content is not None
    assert orjson.loads(sent.content) == {"hello": "John Doe"}
    assert sent.headers["content-type"] == "application/json"
    assert before <= int(sent.headers["webhook-timestamp"]) <= after
    assert Webhook(SECRET).verify(sent.content, sent.headers) == {"hello": "John Doe"}


async def test_a_changed_body_or_another_secret_does_not_verify() -> None:
    sent, _ = await send(config(body={"amount": 1}, secret=SECRET))
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(b'{"amount":1000}', sent.headers)
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(cast(bytes, sent.content), sent.headers)


async def test_the_default_body_is_the_whole_context_signed() -> None:
    sent, _ = await send(config(secret=SECRET))
    assert sent.content is not None
    assert orjson.loads(sent.content) == example_context()
    Webhook(SECRET).verify(sent.content, sent.headers)


async def test_a_get_without_body_is_signed_over_the_empty_body() -> None:
    sent, _ = await send(config(method="GET", secret=SECRET))
    assert sent.content is None
    assert Webhook(SECRET).verify(b"", sent.headers, json_parse=False) is None


async def test_without_a_secret_there_is_no_signature_header() -> None:
    sent, _ = await send(config())
    assert "webhook-signature" not in sent.headers
    assert sent.headers["webhook-id"].startswith("msg_")


async def test_the_webhook_id_is_the_same_on_every_attempt_of_one_key() -> None:
    http = FakeHttp()
    webhook = config(secret=SECRET)
    await execute(call(attempt=1), webhook, deps(http))
    await execute(call(attempt=2), webhook, deps(http, now=NOW + timedelta(minutes=1)))
    await execute(call(key=f"{RUN_ID}/2/0"), webhook, deps(http))
    first, retry, other_visit = (sent.headers["webhook-id"] for sent in http.sent)

    assert first == retry == f"msg_{derived_id(KEY).hex}"
    assert other_visit != first
    assert http.sent[0].headers["webhook-timestamp"] != http.sent[1].headers["webhook-timestamp"]


async def test_the_timeout_comes_from_the_settings_unless_configured() -> None:
    default, _ = await send(config())
    own, _ = await send(config(timeout=1.5))
    assert (default.timeout, own.timeout) == (7.5, 1.5)


async def test_the_result_names_status_id_url_and_a_bounded_excerpt() -> None:
    answer = HttpResponse(202, {}, "é" * 2000)
    _, result = await send(config(url="https://x.example/{org_id}"), answer=answer)

    assert result == {
        "status": 202,
        "webhook_id": f"msg_{derived_id(KEY).hex}",
        "url": "https://x.example/org_123",
        "response_excerpt": "é" * 512,
        "response": {"status": 202, "headers": {}, "body_excerpt": "é" * 512},
    }


async def test_the_adapters_errors_pass_through_unchanged() -> None:
    retryable = RetryableActionError("POST https://x answered 503: busy", retry_after=3.0)
    with pytest.raises(RetryableActionError) as caught:
        await send(config(), answer=retryable)
    assert caught.value is retryable

    with pytest.raises(PermanentActionError, match="answered 404"):
        await send(config(), answer=PermanentActionError("POST https://x answered 404: gone"))


async def test_a_redirect_fails_permanently_naming_where_it_points() -> None:
    moved = HttpResponse(301, {"Location": "https://new.example.com/in"}, "moved")
    with pytest.raises(PermanentActionError, match=r"301 \(redirects are not followed"):
        await send(config(), answer=moved)
    with pytest.raises(
        PermanentActionError, match=re.escape("Location: https://new.example.com/in")
    ):
        await send(config(), answer=moved)


# the answer as data (steps.<id>.response)


def json_answer(
    body: bytes, content_type: str = "application/json", **headers: str
) -> HttpResponse:
    sent = {"Content-Type": content_type, **headers}
    return HttpResponse(200, sent, body.decode(errors="replace")[:2048], body)


async def test_a_json_answer_lands_parsed_with_its_status_and_chosen_headers() -> None:
    answer = json_answer(
        b'{"approved": true, "score": 7}',
        ETag='"v1"',
        Location="https://x.example/items/7",
        **{"Set-Cookie": "session=secret", "X-Request-ID": "r-1"},
    )
    _, result = await send(config(), answer=answer)

    assert result["response"] == {
        "status": 200,
        "headers": {
            "content-type": "application/json",
            "location": "https://x.example/items/7",
            "etag": '"v1"',
            "x-request-id": "r-1",
        },
        "json": {"approved": True, "score": 7},
    }
    assert result["response_excerpt"] == '{"approved": true, "score": 7}'  # as before


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (HttpResponse(200, {"content-type": "text/plain"}, "ok"), "not JSON by its type"),
        (json_answer(b"{not json"), "does not parse"),
        (json_answer(b'"' + b"x" * 100 + b'"'), "larger than the cap"),
        (HttpResponse(200, {"content-type": "application/json"}, "[1, 2"), "not read whole"),
        (json_answer(b'{"a": "nul \\u0000 inside"}'), "NUL: JSONB cannot keep it"),
        (json_answer(b"[" * 70 + b"]" * 70), "nested too deep"),
    ],
)
def test_other_answers_keep_the_excerpt(answer: HttpResponse, why: str) -> None:
    shaped = webhook.shape_response(answer, max_bytes=64)
    assert "json" not in shaped, why
    assert shaped["body_excerpt"] == answer.body_excerpt[:1024]


def test_json_types_and_the_history_summary() -> None:
    problem = json_answer(b'{"title": "x"}', "application/problem+json; charset=utf-8")
    assert webhook.shape_response(problem, 64)["json"] == {"title": "x"}
    assert webhook.shape_response(json_answer(b"null"), 64)["json"] is None  # JSON null is JSON
    result = {"status": 200, "response": webhook.shape_response(problem, 64)}
    assert webhook.history_of(result) == {
        "status": 200,
        "response": {"status": 200, "headers": {"content-type": problem.headers["Content-Type"]}},
    }
    assert webhook.history_of({"status": 200}) == {"status": 200}


async def test_the_cap_comes_from_the_settings() -> None:
    http = FakeHttp(answer=json_answer(b'{"n": 1}'))
    result = await execute(call(), config(), deps(http, webhook_response_max_bytes=4))
    assert "json" not in result["response"]


def test_the_dry_run_preview_shows_the_answers_shape() -> None:
    shown = webhook.preview(config(), {"data": {}})
    assert set(shown["response"]) == {"status", "headers", "json"}
