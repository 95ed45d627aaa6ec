"""The pages an assignee's email links to (`/t/{token}`): decide a human task without an API
key. The signed token (workflow_core/task_links.py) is the credential, like the key in the
form endpoint's path: it names one task and, for an outcome's link, one outcome.

- `GET` changes nothing (mail scanners follow links): it shows the task, and a button that
  posts the decision, with room for a comment; a task already settled shows what was decided,
  by whom and when.
- `POST` decides, once: the run goes on as after `POST /tasks/{id}/complete`, with
  `task.data.comment` and `completed_by` "<assignee> (via email link)". It is protected by the
  token itself, and a request from another web page (an `Origin` that is not this API's) is
  refused. Then it sends the browser back to the page (303), which shows the decision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID

from fastapi import APIRouter, Form, Path, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from services.api.deps import Database
from services.api.pages.render import page
from services.api.schemas.tasks import COMMENT_LIMIT, TaskDecision
from workflow_core import task_links
from workflow_core.errors import Conflict, Unprocessable
from workflow_core.persistence import records
from workflow_core.settings import Settings
from workflow_core.statuses import TaskStatus
from workflow_core.task_links import BadLink, TaskLink

router = APIRouter(tags=["task pages"])

Token = Annotated[str, Path(min_length=1, max_length=400, description="the signed link's token")]
_PAGE: dict[str, Any] = {"content": {"text/html": {}}}
_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {**_PAGE, "description": "not a link Flowline made, or its task is gone"},
    410: {**_PAGE, "description": "the link has expired (the task is still open)"},
}


@router.get(
    "/t/{token}",
    response_class=HTMLResponse,
    summary="The task's page (from its email)",
    responses={
        200: {**_PAGE, "description": "the task and its buttons, or its decision"},
        **_ANSWERS,
    },
)
async def task_page(token: Token, request: Request) -> Response:
    """Show the task with a button that decides it (nothing changes until it is pressed);
    a settled task shows what was decided, by whom and when."""
    try:
        link, task = await _open(request, token)
    except _Refused as refused:
        return refused.page
    if task["status"] != TaskStatus.PENDING:
        return _decided(task)
    return page(
        "task.html",
        task=task,
        shown=_shown(task),
        outcome=link.outcome,
        outcomes=(task["fields"] or {}).get("outcomes") or [],
        expires=link.expires,
        comment_limit=COMMENT_LIMIT,
    )


@router.post(
    "/t/{token}",
    response_class=HTMLResponse,
    summary="Decide the task (the page's button)",
    responses={
        303: {"description": "decided; back to the page, which shows the decision"},
        403: {**_PAGE, "description": "posted from another web site"},
        409: {**_PAGE, "description": "decided already (the page shows by whom), or its run "
              "has finished"},
        422: {**_PAGE, "description": "an outcome the task does not take, or a comment too "
              "long"},
        **_ANSWERS,
    },
)  # fmt: skip
async def decide(
    token: Token,
    request: Request,
    form: Annotated[TaskDecision, Form()],
) -> Response:
    """Complete the task with the link's outcome (or, from the task's page, the one pressed)
    and the comment, once."""
    if not _same_site(request):
        return _problem(403, "Refused", "This form can only be sent from its own page.")
    try:
        link, task = await _open(request, token)
    except _Refused as refused:
        return refused.page
    if task["status"] != TaskStatus.PENDING:
        return _decided(task, status_code=409)
    outcome, comment = form.outcome, form.comment
    if link.outcome is not None and outcome not in (None, link.outcome):
        return _problem(422, "Not this answer", f"This link answers {link.outcome!r} only.")
    database: Database = request.app.state.database
    try:
        async with database.transaction() as conn:
            await records.complete_task(
                conn,
                task["id"],
                outcome=link.outcome or (outcome or "").strip() or None,
                data={"comment": comment.strip()} if comment and comment.strip() else None,
                completed_by=f"{_assignee(task)} (via email link)",
            )
    except Conflict as error:
        settled = await _task(request, task["id"])
        if settled is not None and settled["status"] != TaskStatus.PENDING:
            return _decided(settled, status_code=409)
        return _problem(409, "Cannot be decided", str(error))
    except Unprocessable as error:
        return _problem(422, "Not this answer", error.reason)
    # Relative, so that it holds behind a proxy that serves the API under a path.
    return RedirectResponse(token, status_code=303)


class _Refused(Exception):
    def __init__(self, answer: HTMLResponse) -> None:
        self.page = answer


async def _open(request: Request, token: str) -> tuple[TaskLink, dict[str, Any]]:
    """The link and its task. A settled task is shown even after its link expired."""
    settings: Settings = request.app.state.settings
    key = settings.task_link_key
    if key is None:  # links are off (TASK_LINK_SECRET unset): none is valid
        raise _Refused(_not_found())
    try:
        link = task_links.read(key, token)
    except BadLink:
        raise _Refused(_not_found()) from None
    task = await _task(request, link.task_id)
    if task is None:
        raise _Refused(_not_found())
    if task["status"] == TaskStatus.PENDING and link.expired(datetime.now(UTC)):
        message = f"This link expired on {link.expires:%Y-%m-%d at %H:%M} UTC."
        raise _Refused(_problem(410, "This link has expired", message))
    return link, task


async def _task(request: Request, task_id: UUID) -> dict[str, Any] | None:
    database: Database = request.app.state.database
    async with database.reading() as conn:
        return await records.get_task(conn, task_id)


def _same_site(request: Request) -> bool:
    """No `Origin` (an old browser, a script) is let through: the token is what counts. One
    that is sent must be this API's own, by PUBLIC_BASE_URL or by the address it was
    reached at."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    settings: Settings = request.app.state.settings
    public = urlsplit(settings.base_url)
    reached = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin in {f"{public.scheme}://{public.netloc}", reached}


def _assignee(task: dict[str, Any]) -> str:
    fields = task["fields"] or {}
    return str(fields.get("assignee_email") or task["assignee"] or "the assignee")


def _shown(task: dict[str, Any]) -> list[tuple[str, str]]:
    shown = (task["fields"] or {}).get("shown") or []
    return [(item["name"], item["value"]) for item in shown]


def _decided(task: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return page("decided.html", status_code, task=task, shown=_shown(task))


def _not_found() -> HTMLResponse:
    return _problem(404, "Link not found", "This is not a link Flowline made, or its task is gone.")


def _problem(status_code: int, heading: str, message: str) -> HTMLResponse:
    return page("problem.html", status_code, heading=heading, message=message)
