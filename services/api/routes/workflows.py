"""Workflow definitions: create, read, list, new versions, deactivate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response

from services.api import secrets
from services.api.access import Caller, acting_for, needs, operator_only
from services.api.deps import AppSettings, Db, Filter, Limit, Offset
from services.api.keys import Principal
from services.api.schemas.documents import MAX_INT4
from services.api.schemas.submissions import EventPost, SubmitRequest
from services.api.schemas.workflows import (
    DryRunRequest,
    TaskOutcome,
    ValidateRequest,
    WorkflowCreate,
    WorkflowOut,
    WorkflowUpdate,
    WorkflowVersionOut,
)
from workflow_core.definitions import WorkflowDefinition
from workflow_core.dryrun import dry_run
from workflow_core.dryrun.sample import schedule_preview
from workflow_core.errors import Conflict, DefinitionInvalid, NotFound
from workflow_core.ids import DRY_RUN_ID
from workflow_core.persistence import workflows
from workflow_core.persistence.pool import Connection
from workflow_core.persistence.workflows import WorkflowRecord
from workflow_core.settings import Settings
from workflow_core.validation import validate_definition
from workflow_core.validation.problems import ValidationResult

router = APIRouter(prefix="/workflows", tags=["workflows"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such workflow"}}


def checked(definition: dict[str, Any], settings: Settings) -> ValidationResult:
    """The validation result, or a 422 naming every problem by its JSON path. Webhook URLs
    written as internal addresses are checked against this deployment's
    WEBHOOK_ALLOWED_HOSTS: the workers read the same setting and would refuse every call."""
    result = validate_definition(definition, allowed_hosts=settings.allowed_webhook_hosts)
    if not result.ok:
        raise DefinitionInvalid([p.as_dict(("body", "definition")) for p in result.errors])
    return result


def view(record: WorkflowRecord, result: ValidationResult | None = None) -> dict[str, Any]:
    """The workflow as answers show it: its secrets are write-only (CONTRACT §7), so the
    definition comes without them and `secrets` says where one is set."""
    warnings = [p.as_dict(("body", "definition")) for p in result.warnings] if result else []
    shown, hidden = secrets.without_secrets(record.definition)
    return {
        "id": record.id,
        "key": record.key,
        "name": record.name,
        "org_id": record.org_id,
        "all_organisations": record.org_id is None,
        "active": record.active,
        "version": record.version,
        "definition": shown,
        "secrets": hidden,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "warnings": warnings,
    }


async def _visible(conn: Connection, principal: Principal, workflow_id: UUID) -> WorkflowRecord:
    """The workflow, if the caller may see it (its organisation's, or one of every
    organisation); else a 404 as for an id that does not exist."""
    missing = f"no workflow with id {workflow_id}"
    record = await workflows.get(conn, workflow_id)
    if record is None or (record.org_id is not None and not principal.sees(record.org_id)):
        raise NotFound(missing)
    return record


def _may_change(principal: Principal, record: WorkflowRecord) -> None:
    if record.org_id is None:
        operator_only(principal, "change a workflow of every organisation")


@router.post(
    "",
    status_code=201,
    response_model=WorkflowOut,
    responses={
        422: {"description": "the definition is invalid; each problem names its JSON path"},
        409: {
            "description": "the organisation has MAX_WORKFLOWS_PER_ORG active workflows, or "
            "a workflow with this key"
        },
    },
)
async def create_workflow(
    body: WorkflowCreate, db: Db, settings: AppSettings, principal: Caller
) -> dict[str, Any]:
    """A workflow of the key's organisation; one of every organisation (no `org_id`) only with
    the operator's key."""
    needs(principal, "admin")
    org_id = acting_for(principal, body.org_id)
    result = checked(body.definition, settings)
    async with db.transaction() as conn:
        active = await workflows.count_active_of(conn, org_id)
        if active >= settings.max_workflows_per_org:
            raise Conflict(
                f"there are {active} active workflows {_whose(org_id)}, as many as "
                f"MAX_WORKFLOWS_PER_ORG ({settings.max_workflows_per_org}) allows: "
                "delete one first"
            )
        # The lock count_active_of took serializes creations in the organisation: no race.
        if body.key is not None and await workflows.by_key(conn, org_id, body.key):
            raise Conflict(f"a workflow {_whose(org_id)} already has key {body.key!r}")
        record = await workflows.create(
            conn, name=body.name, org_id=org_id, definition=body.definition, key=body.key
        )
    return view(record, result)


def _whose(org_id: str | None) -> str:
    return f"of organisation {org_id!r}" if org_id else "without an organisation"


TOO_LARGE: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "the request is invalid, or the dry run would render a field larger "
        "than MAX_RENDERED_BYTES or an answer larger than MAX_DRY_RUN_BYTES"
    }
}


@router.post("/validate", responses=TOO_LARGE)
async def validate_workflow(
    body: ValidateRequest, settings: AppSettings, principal: Caller
) -> dict[str, Any]:
    """Check a definition without saving it: its errors and warnings (each naming its JSON
    path), a schedule trigger's `next_fire_times` and, with a sample `form` or `event`, a dry
    run of what it would do. 200 whether the definition
    is valid or not; 422 when the dry run would render more than the limits allow."""
    needs(principal, "admin")
    acting_for(principal, body.org_id)
    sample = body.form or body.event
    if sample is not None:
        acting_for(principal, sample.org_id)
    result = validate_definition(body.definition, allowed_hosts=settings.allowed_webhook_hosts)
    answer: dict[str, Any] = {
        "valid": result.ok,
        "errors": [p.as_dict(("body", "definition")) for p in result.errors],
        "warnings": [p.as_dict(("body", "definition")) for p in result.warnings],
    }
    if result.definition is not None:
        answer.update(schedule_preview(result.definition, datetime.now(UTC)))
    if result.definition is not None and sample is not None:
        answer["dry_run"] = walk(
            result.definition, sample, body.task_outcomes, body.org_id, settings
        )
    return answer


@router.post("/{workflow_id}/test", responses={**NOT_FOUND, **TOO_LARGE})
async def test_workflow(
    workflow_id: UUID, body: DryRunRequest, db: Db, settings: AppSettings, principal: Caller
) -> dict[str, Any]:
    """A dry run of a saved workflow for a sample form: whether the trigger matches (and why
    not), the path taken, and every email, webhook request, ticket and task it would create,
    rendered. Nothing is sent or stored. A workflow triggered by another event type takes a
    sample `event` (`type`, `data`) instead of the form."""
    needs(principal, "admin")
    sample = body.form or body.event
    assert sample is not None  # DryRunRequest asks for one
    acting_for(principal, sample.org_id)
    async with db.reading() as conn:
        await _visible(conn, principal, workflow_id)
        record = (
            await workflows.get_version(conn, workflow_id, body.version)
            if body.version
            else await workflows.get(conn, workflow_id)
        )
    if record is None:
        raise NotFound(
            f"no workflow with id {workflow_id}"
            + (f" and version {body.version}" if body.version else "")
        )
    definition = checked(record.definition, settings).definition
    assert definition is not None
    report = walk(
        definition,
        sample,
        body.task_outcomes,
        record.org_id,
        settings,
        workflow_id=str(record.id),
    )
    return {"workflow_id": record.id, "version": record.version, **report}


def walk(
    definition: WorkflowDefinition,
    sample: SubmitRequest | EventPost,
    outcomes: dict[str, TaskOutcome],
    org_id: str | None,
    settings: AppSettings,
    workflow_id: str = DRY_RUN_ID,
) -> dict[str, Any]:
    """The dry run of `definition` for a sample form or event (from the workflow's
    organisation when the sample names none)."""
    given = {**sample.model_dump(), "org_id": sample.org_id or org_id or ""}
    return dry_run(
        definition,
        form=given if isinstance(sample, SubmitRequest) else None,
        posted=given if isinstance(sample, EventPost) else None,
        workflow_org_id=org_id,
        workflow_id=workflow_id,
        task_outcomes={step: o.model_dump() for step, o in outcomes.items()},
        now=datetime.now(UTC),
        step_budget=settings.run_step_budget,
        limits=settings.limits,
    )


@router.get("", response_model=list[WorkflowOut])
async def list_workflows(
    db: Db,
    principal: Caller,
    limit: Limit = 100,
    offset: Offset = 0,
    org_id: Filter = None,
    active: bool = True,
) -> list[dict[str, Any]]:
    """Workflows, newest first: the active ones (`?active=false`: the deactivated ones). An
    organisation's list includes the workflows of every organisation (`all_organisations`)."""
    needs(principal, "admin")
    org_id = acting_for(principal, org_id)
    async with db.reading() as conn:
        records = await workflows.list_workflows(
            conn,
            org_id=org_id,
            with_every_organisation=org_id is not None,
            active=active,
            limit=limit,
            offset=offset,
        )
    return [view(record) for record in records]


@router.get("/{workflow_id}", response_model=WorkflowOut, responses=NOT_FOUND)
async def get_workflow(workflow_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    needs(principal, "admin")
    async with db.reading() as conn:
        return view(await _visible(conn, principal, workflow_id))


@router.put("/{workflow_id}", response_model=WorkflowOut, responses=NOT_FOUND)
async def update_workflow(
    workflow_id: UUID, body: WorkflowUpdate, db: Db, settings: AppSettings, principal: Caller
) -> dict[str, Any]:
    """Store a new version; runs already started finish on the version they began with. A
    webhook `secret` left out keeps the one its action had (`"secret": null` removes it)."""
    needs(principal, "admin")
    async with db.transaction() as conn:
        current = await _visible(conn, principal, workflow_id)
        _may_change(principal, current)
        definition = secrets.carried_over(body.definition, current.definition)
        result = checked(definition, settings)
        record = await workflows.add_version(
            conn, workflow_id, name=body.name or current.name, definition=definition
        )
    assert record is not None
    return view(record, result)


@router.post("/{workflow_id}/activate", response_model=WorkflowOut, responses=NOT_FOUND)
async def activate_workflow(workflow_id: UUID, db: Db, principal: Caller) -> dict[str, Any]:
    """Bring a deactivated workflow back (at its current version): new forms start it again."""
    needs(principal, "admin")
    async with db.transaction() as conn:
        current = await _visible(conn, principal, workflow_id)
        _may_change(principal, current)
        await workflows.activate(conn, workflow_id)
        record = await workflows.get(conn, workflow_id)
    assert record is not None
    return view(record)


@router.get("/{workflow_id}/versions", response_model=list[WorkflowVersionOut], responses=NOT_FOUND)
async def list_workflow_versions(
    workflow_id: UUID, db: Db, principal: Caller
) -> list[dict[str, Any]]:
    """Every version of the workflow, oldest first (each one in full at `/versions/{n}`)."""
    needs(principal, "admin")
    async with db.reading() as conn:
        await _visible(conn, principal, workflow_id)
        return await workflows.list_versions(conn, workflow_id)


@router.get("/{workflow_id}/versions/{version}", response_model=WorkflowOut, responses=NOT_FOUND)
async def get_workflow_version(
    workflow_id: UUID, version: int, db: Db, principal: Caller
) -> dict[str, Any]:
    needs(principal, "admin")
    record = None
    async with db.reading() as conn:
        await _visible(conn, principal, workflow_id)
        if 1 <= version <= MAX_INT4:  # beyond that no version can exist (nor be looked up)
            record = await workflows.get_version(conn, workflow_id, version)
    if record is None:
        raise NotFound(f"workflow {workflow_id} has no version {version}")
    return view(record)


@router.delete("/{workflow_id}", status_code=204, responses=NOT_FOUND)
async def delete_workflow(workflow_id: UUID, db: Db, principal: Caller) -> Response:
    """Deactivate: no new runs start; runs and history are kept (`/activate` brings it back)."""
    needs(principal, "admin")
    async with db.transaction() as conn:
        current = await _visible(conn, principal, workflow_id)
        _may_change(principal, current)
        await workflows.deactivate(conn, workflow_id)
    return Response(status_code=204)
