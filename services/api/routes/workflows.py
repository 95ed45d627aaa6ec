"""Workflow definitions: create, read, list, new versions, deactivate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response

from services.api.deps import AppSettings, Db, Filter, Limit, Offset
from services.api.schemas import (
    MAX_INT4,
    DryRunRequest,
    SubmitRequest,
    TaskOutcome,
    ValidateRequest,
    WorkflowCreate,
    WorkflowOut,
    WorkflowUpdate,
    WorkflowVersionOut,
)
from workflow_core.definitions import WorkflowDefinition
from workflow_core.dryrun import dry_run
from workflow_core.errors import Conflict, DefinitionInvalid, NotFound
from workflow_core.ids import DRY_RUN_ID
from workflow_core.persistence import workflows
from workflow_core.persistence.workflows import WorkflowRecord
from workflow_core.validation import ValidationResult, validate_definition

router = APIRouter(prefix="/workflows", tags=["workflows"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such workflow"}}


def checked(definition: dict[str, Any]) -> ValidationResult:
    """The validation result, or a 422 naming every problem by its JSON path."""
    result = validate_definition(definition)
    if not result.ok:
        raise DefinitionInvalid([p.as_dict(("body", "definition")) for p in result.errors])
    return result


def view(record: WorkflowRecord, result: ValidationResult | None = None) -> dict[str, Any]:
    warnings = [p.as_dict(("body", "definition")) for p in result.warnings] if result else []
    return {
        "id": record.id,
        "name": record.name,
        "org_id": record.org_id,
        "active": record.active,
        "version": record.version,
        "definition": record.definition,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "warnings": warnings,
    }


@router.post(
    "",
    status_code=201,
    response_model=WorkflowOut,
    responses={
        422: {"description": "the definition is invalid; each problem names its JSON path"},
        409: {"description": "the organisation has MAX_WORKFLOWS_PER_ORG active workflows"},
    },
)
async def create_workflow(body: WorkflowCreate, db: Db, settings: AppSettings) -> dict[str, Any]:
    result = checked(body.definition)
    async with db.transaction() as conn:
        active = await workflows.count_active_of(conn, body.org_id)
        if active >= settings.max_workflows_per_org:
            whose = f"of organisation {body.org_id!r}" if body.org_id else "without an organisation"
            raise Conflict(
                f"there are {active} active workflows {whose}, as many as "
                f"MAX_WORKFLOWS_PER_ORG ({settings.max_workflows_per_org}) allows: "
                "delete one first"
            )
        record = await workflows.create(
            conn, name=body.name, org_id=body.org_id, definition=body.definition
        )
    return view(record, result)


TOO_LARGE: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "the request is invalid, or the dry run would render a field larger "
        "than MAX_RENDERED_BYTES or an answer larger than MAX_DRY_RUN_BYTES"
    }
}


@router.post("/validate", responses=TOO_LARGE)
async def validate_workflow(body: ValidateRequest, settings: AppSettings) -> dict[str, Any]:
    """Check a definition without saving it: its errors and warnings (each naming its JSON
    path) and, with a sample `form`, a dry run of what it would do. 200 whether the definition
    is valid or not; 422 when the dry run would render more than the limits allow."""
    result = validate_definition(body.definition)
    answer: dict[str, Any] = {
        "valid": result.ok,
        "errors": [p.as_dict(("body", "definition")) for p in result.errors],
        "warnings": [p.as_dict(("body", "definition")) for p in result.warnings],
    }
    if result.definition is not None and body.form is not None:
        answer["dry_run"] = walk(
            result.definition, body.form, body.task_outcomes, body.org_id, settings
        )
    return answer


@router.post("/{workflow_id}/test", responses={**NOT_FOUND, **TOO_LARGE})
async def test_workflow(
    workflow_id: UUID, body: DryRunRequest, db: Db, settings: AppSettings
) -> dict[str, Any]:
    """A dry run of a saved workflow for a sample form: whether the trigger matches (and why
    not), the path taken, and every email, webhook request, ticket and task it would create,
    rendered. Nothing is sent or stored."""
    async with db.reading() as conn:
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
    definition = checked(record.definition).definition
    assert definition is not None
    report = walk(
        definition,
        body.form,
        body.task_outcomes,
        record.org_id,
        settings,
        workflow_id=str(record.id),
    )
    return {"workflow_id": record.id, "version": record.version, **report}


def walk(
    definition: WorkflowDefinition,
    form: SubmitRequest,
    outcomes: dict[str, TaskOutcome],
    org_id: str | None,
    settings: AppSettings,
    workflow_id: str = DRY_RUN_ID,
) -> dict[str, Any]:
    return dry_run(
        definition,
        form=form.model_dump(),
        workflow_org_id=org_id,
        workflow_id=workflow_id,
        task_outcomes={step: o.model_dump() for step, o in outcomes.items()},
        now=datetime.now(UTC),
        step_budget=settings.run_step_budget,
        limits=settings.limits,
    )


@router.get("", response_model=list[WorkflowOut])
async def list_workflows(
    db: Db, limit: Limit = 100, offset: Offset = 0, org_id: Filter = None
) -> list[dict[str, Any]]:
    """Active workflows, newest first."""
    async with db.reading() as conn:
        records = await workflows.list_workflows(conn, org_id=org_id, limit=limit, offset=offset)
    return [view(record) for record in records]


@router.get("/{workflow_id}", response_model=WorkflowOut, responses=NOT_FOUND)
async def get_workflow(workflow_id: UUID, db: Db) -> dict[str, Any]:
    async with db.reading() as conn:
        record = await workflows.get(conn, workflow_id)
    if record is None:
        raise NotFound(f"no workflow with id {workflow_id}")
    return view(record)


@router.put("/{workflow_id}", response_model=WorkflowOut, responses=NOT_FOUND)
async def update_workflow(workflow_id: UUID, body: WorkflowUpdate, db: Db) -> dict[str, Any]:
    """Store a new version; runs already started finish on the version they began with."""
    result = checked(body.definition)
    async with db.transaction() as conn:
        current = await workflows.get(conn, workflow_id)
        if current is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        record = await workflows.add_version(
            conn, workflow_id, name=body.name or current.name, definition=body.definition
        )
    assert record is not None
    return view(record, result)


@router.get("/{workflow_id}/versions", response_model=list[WorkflowVersionOut], responses=NOT_FOUND)
async def list_workflow_versions(workflow_id: UUID, db: Db) -> list[dict[str, Any]]:
    """Every version of the workflow, oldest first (each one in full at `/versions/{n}`)."""
    async with db.reading() as conn:
        if await workflows.get(conn, workflow_id) is None:
            raise NotFound(f"no workflow with id {workflow_id}")
        return await workflows.list_versions(conn, workflow_id)


@router.get("/{workflow_id}/versions/{version}", response_model=WorkflowOut, responses=NOT_FOUND)
async def get_workflow_version(workflow_id: UUID, version: int, db: Db) -> dict[str, Any]:
    record = None
    if 1 <= version <= MAX_INT4:  # beyond that no version can exist (nor be looked up)
        async with db.reading() as conn:
            record = await workflows.get_version(conn, workflow_id, version)
    if record is None:
        raise NotFound(f"workflow {workflow_id} has no version {version}")
    return view(record)


@router.delete("/{workflow_id}", status_code=204, responses=NOT_FOUND)
async def delete_workflow(workflow_id: UUID, db: Db) -> Response:
    """Deactivate: no new runs start; runs and history are kept."""
    async with db.transaction() as conn:
        if not await workflows.deactivate(conn, workflow_id):
            raise NotFound(f"no workflow with id {workflow_id}")
    return Response(status_code=204)
