"""The load: forms posted to `POST /submit` at a steady rate, open loop (form i is due at
start + i/rate whatever became of the earlier ones, as real users do not wait for each other),
and a simulated person who approves the human tasks."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Literal

import httpx

from chaos.flows import KINDS, PERSON, WEIGHTS, Form, assignee_of, make_form

Status = Literal["accepted", "rejected", "unknown"]
MAX_IN_FLIGHT = 256


@dataclass(frozen=True, slots=True)
class Outcome:
    form: Form
    status: Status
    """accepted: 202; rejected: another answer; unknown: no answer (the form may be stored)."""
    detail: str
    submission_id: str | None = None


class Load:
    def __init__(self, client: httpx.AsyncClient, rate: float, token: str, seed: int) -> None:
        self._client, self._rate, self._token = client, rate, token
        self._rng = random.Random(seed)
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.outcomes: list[Outcome] = []
        self.late = 0  # forms sent late because MAX_IN_FLIGHT were out

    async def _submit(self, form: Form) -> None:
        try:
            response = await self._client.post("/submit", json=form.body)
        except httpx.HTTPError as error:
            self.outcomes.append(Outcome(form, "unknown", type(error).__name__))
            return
        finally:
            self._slots.release()
        if response.status_code == 202:
            submission_id = str(response.json()["submission_id"])
            self.outcomes.append(Outcome(form, "accepted", "202", submission_id))
        else:
            self.outcomes.append(Outcome(form, "rejected", f"HTTP {response.status_code}"))

    async def run(self, seconds: float) -> None:
        """Submit for `seconds`, then wait for the answers still out."""
        running: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        n = 0
        while (due := start + n / self._rate) < start + seconds:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self._slots.locked():
                self.late += 1
            await self._slots.acquire()
            kind = self._rng.choices(KINDS, WEIGHTS)[0]
            task = asyncio.create_task(self._submit(make_form(n, kind, self._token, self._rng)))
            running.add(task)
            task.add_done_callback(running.discard)
            n += 1
        if running:
            await asyncio.wait(running)

    def counts(self) -> Counter[str]:
        return Counter(outcome.status for outcome in self.outcomes)


class Person:
    """Polls `GET /tasks?status=pending` and approves each task once its notice is in their
    inbox, as a person does: Flowline may rightly skip the notice of a task settled before
    it was sent, so a person who acted first would excuse a lost notice. A task whose notice
    has not come after `patience` seconds is approved all the same (counted), so one lost
    email does not hold the soak up; the checker reports the email missing. A 409 means the
    task was settled already (an earlier try whose answer was lost)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        notified: Callable[[], Set[str]],
        patience: float = 60.0,
    ) -> None:
        self._client, self._notified, self._patience = client, notified, patience
        self._first_seen: dict[str, float] = {}
        self.answers: Counter[str] = Counter()
        self._slots = asyncio.Semaphore(8)

    async def _complete(self, task_id: str, noticed: bool) -> None:
        async with self._slots:
            try:
                response = await self._client.post(
                    f"/tasks/{task_id}/complete",
                    json={"outcome": "approved", "data": {"by": PERSON}, "completed_by": PERSON},
                )
                answer = str(response.status_code)
            except httpx.HTTPError as error:
                answer = type(error).__name__
            if answer == "200" and not noticed:
                answer = f"200 with no notice after {self._patience:g}s"
            self.answers[answer] += 1

    async def round(self) -> None:
        try:
            response = await self._client.get(
                "/tasks", params={"status": "pending", "kind": "human", "limit": 500}
            )
        except httpx.HTTPError:
            return
        if response.status_code != 200:
            return
        inbox, now, due = self._notified(), time.monotonic(), []
        for task in response.json():
            task_id = str(task["id"])
            first_seen = self._first_seen.setdefault(task_id, now)
            noticed = assignee_of(str(task["title"])) in inbox
            if noticed or now - first_seen > self._patience:
                due.append(self._complete(task_id, noticed))
        await asyncio.gather(*due)

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        while not stop.is_set():
            await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
