"""The worker's catalog against a real database: each (workflow, version) is parsed once, a
refresh fetches only what it has not seen, and events that match nothing reload the list at
most once a second, while a change announced by NOTIFY is picked up at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.worker import catalog as catalog_module
from services.worker.catalog import Catalog
from tests.support.examples import EXAMPLE_WORKFLOW
from workflow_core.persistence import workflows
from workflow_core.persistence.listen import Channel
from workflow_core.persistence.pool import Pool

DEFINITION = EXAMPLE_WORKFLOW["definition"]
EVENT = {"event_type": "form_submitted", "template_id": "form_submitted", "org_id": "org_1"}
ELSEWHERE = {**EVENT, "template_id": "nobody_wants_this"}


class Counted:
    """Counts calls of a function of a module, and lets them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> None:
        self.calls = 0
        real = getattr(owner, name)

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, counting)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def create(pool: Pool, definition: dict[str, Any] = DEFINITION) -> workflows.WorkflowRecord:
    async with pool.acquire() as conn, conn.transaction():
        return await workflows.create(conn, name="w", org_id=None, definition=definition)


async def test_each_version_is_parsed_once(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    parses = Counted(monkeypatch, catalog_module, "validate_definition")
    first, second = await create(pool), await create(pool)
    catalog = Catalog(pool, Channel("test"))
    await catalog.refresh()
    assert parses.calls == 2
    await catalog.refresh()
    await catalog.refresh()
    assert parses.calls == 2, "nothing changed: nothing parsed again"

    async with pool.acquire() as conn, conn.transaction():
        changed = {**DEFINITION, "initial_step_id": "step1"}
        await workflows.add_version(conn, first.id, name="w", definition=changed)
        await workflows.deactivate(conn, second.id)
    await catalog.refresh()
    assert parses.calls == 3, "only the new version"
    assert [(w.id, w.version) for w in await catalog.matching(EVENT)] == [(first.id, 2)]
    assert (await catalog.definition(first.id, 1)).initial_step_id == "step1"
    assert parses.calls == 3, "the first version is still cached for runs started on it"


async def test_an_invalid_stored_version_is_parsed_once_and_left_out(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    parses = Counted(monkeypatch, catalog_module, "validate_definition")
    good = await create(pool)
    await create(pool, {**DEFINITION, "initial_step_id": "ghost"})
    catalog = Catalog(pool, Channel("test"))
    await catalog.refresh()
    await catalog.refresh()
    assert parses.calls == 2
    assert [w.id for w in await catalog.matching(EVENT)] == [good.id]


async def test_events_that_match_nothing_reload_at_most_once_a_second(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(pool)
    clock = Clock()
    changes = Channel("test")
    changes.listening = True  # changes are announced: misses may rely on that
    catalog = Catalog(pool, changes, clock=clock)
    await catalog.refresh()
    reloads = Counted(monkeypatch, workflows, "active_heads")
    clock.now += 0.1
    for _ in range(50):
        assert await catalog.matching(ELSEWHERE) == []
    assert reloads.calls == 1, "one reload for fifty misses"
    clock.now += 1.0
    assert await catalog.matching(ELSEWHERE) == []
    assert reloads.calls == 2, "a second later, a miss reloads again"

    # A workflow created in between is announced: the next event finds it at once.
    created = await create(pool, {**DEFINITION, "trigger": {"type": "form_submitted"}})
    changes.notify()
    clock.now += 0.1
    assert [w.id for w in await catalog.matching(ELSEWHERE)] == [created.id]
    assert reloads.calls == 3


async def test_a_miss_reload_finds_a_workflow_not_announced_yet(pool: Pool) -> None:
    clock = Clock()
    changes = Channel("test")
    changes.listening = True
    catalog = Catalog(pool, changes, clock=clock)
    await catalog.refresh()
    created = await create(pool)  # its NOTIFY has not reached this catalog
    clock.now += 0.1
    assert [w.id for w in await catalog.matching(EVENT)] == [created.id]


async def test_while_changes_cannot_be_announced_every_miss_reloads(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before LISTEN is in place (a worker's first moments) or after its connection broke, a
    workflow created now would go unannounced: misses do not wait for the next second."""
    clock = Clock()
    changes = Channel("test")  # not listening
    catalog = Catalog(pool, changes, clock=clock)
    await catalog.refresh()
    clock.now += 0.1
    assert await catalog.matching(ELSEWHERE) == []
    created = await create(pool, {**DEFINITION, "trigger": {"type": "form_submitted"}})
    clock.now += 0.1
    assert [w.id for w in await catalog.matching(ELSEWHERE)] == [created.id]


async def test_an_event_during_a_reload_waits_for_it_rather_than_miss(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One event's miss reload is under way when a workflow is created and the next event
    comes: that event waits for the reload (which sees the workflow) instead of matching the
    old list, and no reload of its own is allowed so soon."""
    clock = Clock()
    changes = Channel("test")
    changes.listening = True
    catalog = Catalog(pool, changes, clock=clock)
    await catalog.refresh()
    clock.now += 0.1
    gate = asyncio.Event()
    real = workflows.active_heads

    async def held(db: Any) -> list[workflows.Head]:
        await gate.wait()
        return await real(db)

    monkeypatch.setattr(workflows, "active_heads", held)
    missing = asyncio.create_task(catalog.matching(ELSEWHERE))
    await asyncio.sleep(0)  # its miss reload is out (held)
    created = await create(pool)
    clock.now += 0.1
    matching = asyncio.create_task(catalog.matching(EVENT))
    await asyncio.sleep(0)
    gate.set()
    assert [w.id for w in await matching] == [created.id]
    assert await missing == []
