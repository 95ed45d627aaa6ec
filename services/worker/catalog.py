"""The worker's cache of workflow definitions: the active ones (to match events against) and
any version a running run was started on. Refreshed when PostgreSQL announces a change
(NOTIFY flowline_workflows) and every `max_age` seconds as a backstop.

A definition is parsed and validated once per (workflow id, version): a refresh reads the
active list (ids, versions, organisations: no definitions) and fetches and parses only the
versions it has not seen. An event that matches nothing reloads the list too, in case a
workflow created a moment ago is not announced yet, but at most once every
`miss_reload_seconds`: a stream of forms no workflow wants costs no reload each. A workflow
created meanwhile is announced (NOTIFY), and its announcement reaches this process before a
form sent after its creation does. While the announcements cannot reach us (LISTEN not in
place yet, or its connection lost) every miss reloads, as a miss needs. Reloads are shared: an
event that comes while one is under way waits for it rather than look at the list it
replaces.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
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


Key = tuple[UUID, int]


class Catalog:
    def __init__(
        self,
        pool: Pool,
        changes: Channel,
        *,
        max_age: float = 30.0,
        versions_kept: int = 1024,
        miss_reload_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`changes`: the LISTEN channel on which PostgreSQL announces changed workflows."""
        self._pool, self._changes = pool, changes
        self._max_age, self._miss_reload_seconds, self._clock = max_age, miss_reload_seconds, clock
        self._active: list[ActiveWorkflow] = []
        self._loaded_at = -max_age - 1.0  # never
        self._load_started = float("-inf")
        """When the reload that made the list began: the list holds every change before."""
        self._missed_at = -miss_reload_seconds - 1.0
        self._versions: OrderedDict[Key, WorkflowDefinition] = OrderedDict()
        self._versions_kept = versions_kept
        self._invalid: set[Key] = set()
        """Stored versions that failed validation: said once in the log, not parsed again."""
        self._reloading: asyncio.Future[None] | None = None

    async def refresh(self) -> None:
        """Reload the list of active workflows; callers meanwhile share the same reload."""
        if self._reloading is None:
            self._reloading = asyncio.ensure_future(self._reload())
        await asyncio.shield(self._reloading)

    async def _reload(self) -> None:
        try:
            await self._load()
        finally:
            self._reloading = None

    async def _load(self) -> None:
        self._load_started = self._clock()
        self._changes.consume()
        known = {(w.id, w.version): w.definition for w in self._active}
        async with translate_errors():
            heads = await workflows.active_heads(self._pool)
            unseen = [
                (head.id, head.version)
                for head in heads
                if (head.id, head.version) not in known
                and (head.id, head.version) not in self._versions
                and (head.id, head.version) not in self._invalid
            ]
            records = await workflows.versions(self._pool, unseen)
        for record in records:
            definition = parse(record)
            if definition is None:
                self._invalid.add((record.id, record.version))
            else:
                known[(record.id, record.version)] = definition
        active = []
        for head in heads:
            key = (head.id, head.version)
            definition = known.get(key) or self._versions.get(key)
            if definition is not None:
                active.append(ActiveWorkflow(head.id, head.version, head.org_id, definition))
                self._remember(head.id, head.version, definition)
        self._active = active
        self._loaded_at = self._clock()

    def _stale(self) -> bool:
        return self._changes.pending() or self._clock() - self._loaded_at > self._max_age

    async def matching(self, event: Mapping[str, Any]) -> list[ActiveWorkflow]:
        """The active workflows whose trigger matches `event`. When none does, the list is
        reloaded first (at most once every `miss_reload_seconds`), in case a workflow created
        a moment ago is not announced yet (every time while announcements cannot reach us)."""
        asked = self._clock()
        if self._reloading is not None:  # the list is being replaced: wait for the new one
            await asyncio.shield(self._reloading)
        if self._stale():
            await self.refresh()
        found = self._matching(event)
        if (
            not found
            and self._load_started < asked
            and (
                not self._changes.listening or asked - self._missed_at >= self._miss_reload_seconds
            )
        ):
            self._missed_at = asked
            while self._load_started < asked:  # one begun before we were asked may miss it
                await self.refresh()
            found = self._matching(event)
        return found

    def _matching(self, event: Mapping[str, Any]) -> list[ActiveWorkflow]:
        return [w for w in self._active if matches_trigger(w.definition, w.org_id, event, w.id)]

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
