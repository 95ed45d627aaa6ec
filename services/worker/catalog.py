"""The worker's cache of workflow definitions: the active ones (to match events against) and
any version a running run was started on. Refreshed when PostgreSQL announces a change
(NOTIFY flowline_workflows) and every `max_age` seconds as a backstop."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from workflow_core.definitions import WorkflowDefinition
from workflow_core.engine.machine import matches_trigger
from workflow_core.errors import NotFound
from workflow_core.log import get_logger
from workflow_core.persistence import workflows
from workflow_core.persistence.listen import Channel
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.validation import validate_definition

log = get_logger(__name__)
CHANNEL = "flowline_workflows"


@dataclass(frozen=True, slots=True)
class ActiveWorkflow:
    id: UUID
    version: int
    org_id: str | None
    definition: WorkflowDefinition


def parse(record: workflows.WorkflowRecord) -> WorkflowDefinition | None:
    result = validate_definition(record.definition)
    if result.definition is None:
        log.error(
            "stored_definition_invalid",
            workflow_id=str(record.id),
            version=record.version,
            errors=[p.as_dict() for p in result.errors],
        )
    return result.definition


class Catalog:
    def __init__(
        self, pool: Pool, changes: Channel, *, max_age: float = 30.0, versions_kept: int = 1024
    ) -> None:
        """`changes`: the LISTEN channel on which PostgreSQL announces changed workflows."""
        self._pool, self._changes = pool, changes
        self._max_age = max_age
        self._active: list[ActiveWorkflow] = []
        self._loaded_at = 0.0  # monotonic
        self._versions: OrderedDict[tuple[UUID, int], WorkflowDefinition] = OrderedDict()
        self._versions_kept = versions_kept

    async def refresh(self) -> None:
        self._changes.consume()
        async with translate_errors():
            records = await workflows.active(self._pool)
        active = []
        for record in records:
            definition = parse(record)
            if definition is not None:
                active.append(ActiveWorkflow(record.id, record.version, record.org_id, definition))
                self._remember(record.id, record.version, definition)
        self._active = active
        self._loaded_at = time.monotonic()

    def _stale(self) -> bool:
        return self._changes.pending() or time.monotonic() - self._loaded_at > self._max_age

    async def matching(self, event: Mapping[str, Any]) -> list[ActiveWorkflow]:
        """The active workflows whose trigger matches `event`. When none does, the cache is
        reloaded once first, in case a workflow created a moment ago is not announced yet."""
        if self._stale():
            await self.refresh()
        found = [w for w in self._active if matches_trigger(w.definition, w.org_id, event)]
        if not found and time.monotonic() - self._loaded_at > 0.05:
            await self.refresh()
            found = [w for w in self._active if matches_trigger(w.definition, w.org_id, event)]
        return found

    async def definition(self, workflow_id: UUID, version: int) -> WorkflowDefinition:
        key = (workflow_id, version)
        cached = self._versions.get(key)
        if cached is not None:
            self._versions.move_to_end(key)
            return cached
        async with translate_errors():
            record = await workflows.get_version(self._pool, workflow_id, version)
        definition = parse(record) if record else None
        if definition is None:
            raise NotFound(f"workflow {workflow_id} version {version} is missing or invalid")
        self._remember(workflow_id, version, definition)
        return definition

    def _remember(self, workflow_id: UUID, version: int, definition: WorkflowDefinition) -> None:
        self._versions[(workflow_id, version)] = definition
        self._versions.move_to_end((workflow_id, version))
        while len(self._versions) > self._versions_kept:
            self._versions.popitem(last=False)
