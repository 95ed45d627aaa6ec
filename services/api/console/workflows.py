"""Workflows with their versions, and a viewer of each version's definition (without its
secrets: the JSON routes' view of a workflow)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import orjson
from fastapi import APIRouter, Query, Response

from services.api.console.identity import Looker
from services.api.console.web import ConsoleRoute, render
from services.api.deps import Db
from services.api.routes import workflows as workflow_routes
from services.api.schemas.documents import MAX_INT4

router = APIRouter(prefix="/console/workflows", route_class=ConsoleRoute, include_in_schema=False)


@router.get("")
async def workflow_list(viewer: Looker, db: Db, active: bool = True) -> Response:
    shown = await workflow_routes.list_workflows(
        db, viewer.principal, limit=200, offset=0, org_id=None, active=active
    )
    return render("workflows.html", viewer, workflows=shown, active=active)


@router.get("/{workflow_id}")
async def workflow_page(
    workflow_id: UUID,
    viewer: Looker,
    db: Db,
    version: Annotated[int | None, Query(ge=1, le=MAX_INT4)] = None,
) -> Response:
    current = await workflow_routes.get_workflow(workflow_id, db, viewer.principal)
    versions = await workflow_routes.list_workflow_versions(workflow_id, db, viewer.principal)
    shown = (
        await workflow_routes.get_workflow_version(workflow_id, version, db, viewer.principal)
        if version is not None
        else current
    )
    definition = orjson.dumps(shown["definition"], option=orjson.OPT_INDENT_2).decode()
    return render(
        "workflow.html",
        viewer,
        workflow=current,
        shown=shown,
        versions=versions,
        definition=definition,
    )
