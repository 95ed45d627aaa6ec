"""This worker's heartbeat in PostgreSQL: the proof, for every other process, that the owner of
its email reservations and the driver of its runs is alive (persistence/workers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from workflow_core.log import get_logger
from workflow_core.persistence import workers
from workflow_core.persistence.effects import DbEffectLedger
from workflow_core.persistence.pool import Pool, translate_errors
from workflow_core.runtime.pacing import sleep_unless

log = get_logger(__name__)


class LivenessFile:
    """A file touched at every turn of the heartbeat loop (WORKER_HEALTH_FILE): for a container
    runtime, proof that this process's event loop turns. It says nothing of PostgreSQL: a
    database outage is no reason to restart a worker."""

    def __init__(self, path: str) -> None:
        self._path = Path(path) if path else None

    def touch(self) -> None:
        if self._path is None:
            return
        try:
            self._path.touch()  # an existing file gets a new modification time
        except OSError as error:  # said at each turn; the worker itself goes on
            log.warning("health_file_not_touched", path=str(self._path), error=str(error))

    def remove(self) -> None:
        if self._path is not None:
            with contextlib.suppress(OSError):
                self._path.unlink()


class Heartbeat:
    def __init__(
        self,
        pool: Pool,
        ledger: DbEffectLedger,
        *,
        consumer: str,
        interval: float,
        liveness: LivenessFile | None = None,
    ) -> None:
        self._pool, self._ledger = pool, ledger
        self._consumer, self._interval = consumer, interval
        self._liveness = liveness or LivenessFile("")

    async def beat(self) -> None:
        """Say this worker is alive (at start this must succeed before anything is taken)."""
        async with translate_errors():
            await workers.beat(self._pool, self._ledger.owner, self._consumer)
        self._ledger.heartbeat(True)

    async def run(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            if await sleep_unless(stop, self._interval):
                return
            self._liveness.touch()
            try:
                async with asyncio.timeout(self._interval):
                    await self.beat()
            except Exception as error:
                self._ledger.heartbeat(False)
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning(
                        "heartbeat_failed",
                        owner=self._ledger.owner,
                        failures=failures,
                        error=f"{type(error).__name__}: {error}",
                    )
                continue
            if failures:
                log.info("heartbeat_resumed", owner=self._ledger.owner, after_failures=failures)
                failures = 0
            try:
                async with asyncio.timeout(self._interval):
                    await self._ledger.settle_pending()
                    # a worker of this host that died (its local notes of sent emails)
                    await self._ledger.settle_spooled()
            except Exception as error:  # the next beat tries again
                log.warning("ledger_not_settled", error=f"{type(error).__name__}: {error}")

    async def retire(self, settle_within: float = 5.0) -> None:
        """Stopping in order: first the emails it sent but could not record, and the
        reservations it could not give up (the database was away), are settled, for a few
        seconds at most; then what this owner still holds is taken over at once."""
        deadline = time.monotonic() + settle_within
        while True:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                    await self._ledger.settle_pending()
                break
            except Exception as error:
                if time.monotonic() >= deadline:
                    log.warning("ledger_not_settled_at_exit", error=f"{type(error).__name__}")
                    break
                await asyncio.sleep(0.5)
        try:
            async with translate_errors(), asyncio.timeout(2.0):
                await workers.retire(self._pool, self._ledger.owner)
        except Exception as error:  # the heartbeat goes stale by itself soon enough
            log.warning("heartbeat_not_retired", owner=self._ledger.owner, error=str(error))
