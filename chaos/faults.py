"""The faults: a plan drawn from the seeded RNG before the load starts (so a seed replays the
same schedule), and the injector that carries it out against the live system.

Faults on the same thing (one worker, the SMTP sink, the webhook receiver, Redis, the proxy)
run one after the other; faults on different things overlap freely. Each group's faults are
spread over the first 80% of the load (stratified: one per equal slice, at a random moment in
it), so the system has time to recover before the load ends. One more SIGKILL is always placed
inside the first slow-SMTP window, on the worker least disturbed around then: a worker dying
while the server sits on the final dot is the hardest case for "an email is never lost"
(CONTRACT §5)."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from chaos.processes import WORKER, Flowline
from chaos.proxy import TcpProxy
from chaos.receiver import WebhookReceiver
from chaos.redis_server import Mode, RedisServer
from chaos.sink import SmtpSink

Kind = Literal[
    "worker_sigkill",
    "worker_sigterm",
    "redis_restart_empty",
    "smtp_slow_dot",
    "smtp_drop_mid_data",
    "pg_cut",
    "webhook_503",
    "webhook_hang",
]
# (faults per minute of load, the service it acts on (worker faults: the worker drawn), its
# duration range in seconds: how long the fault lasts, or how long the process stays down)
SPEC: dict[Kind, tuple[float, str, tuple[float, float]]] = {
    "worker_sigkill": (1.3, "workers", (1.0, 3.0)),
    "worker_sigterm": (0.7, "workers", (1.0, 3.0)),
    "redis_restart_empty": (0.7, "redis", (1.0, 3.0)),
    "smtp_slow_dot": (0.7, "smtp", (15.0, 20.0)),
    "smtp_drop_mid_data": (0.7, "smtp", (5.0, 10.0)),
    "pg_cut": (0.7, "postgres", (5.0, 5.0)),
    "webhook_503": (0.7, "webhook", (8.0, 15.0)),
    "webhook_hang": (0.7, "webhook", (8.0, 15.0)),
}
KINDS: tuple[Kind, ...] = tuple(SPEC)
SLOW_DOT_SECONDS = (5.0, 20.0)  # the sink's delay before answering the final dot
FIRST_AT = 5.0
SPREAD = 0.8  # faults end within this share of the load period


@dataclass(frozen=True, slots=True)
class Fault:
    kind: Kind
    at: float
    """Seconds after the load started."""
    duration: float
    target: str = ""


def plan(
    rng: random.Random,
    load_seconds: float,
    workers: Sequence[str],
    kinds: Sequence[Kind] = KINDS,
) -> list[Fault]:
    """The schedule of one soak: every kind of `kinds` at least once, more with a longer
    load."""
    minutes = load_seconds / 60
    by_group: dict[str, list[Fault]] = {}
    for kind, (per_minute, _, (low, high)) in SPEC.items():
        if kind not in kinds:
            continue
        for _ in range(max(1, round(per_minute * minutes))):
            target = rng.choice(workers) if kind.startswith("worker_") else ""
            fault = Fault(kind, 0.0, round(rng.uniform(low, high), 1), target)
            by_group.setdefault(group_of(fault), []).append(fault)
    end = max(FIRST_AT + 1, SPREAD * load_seconds)
    faults: list[Fault] = []
    for members in by_group.values():
        rng.shuffle(members)
        slice_ = (end - FIRST_AT) / len(members)
        for i, fault in enumerate(members):
            at = FIRST_AT + i * slice_ + rng.uniform(0, max(0.0, slice_ - fault.duration))
            faults.append(replace(fault, at=round(at, 1)))
    if "worker_sigkill" in kinds and "smtp_slow_dot" in kinds:
        faults.append(_kill_during_slow_dot(rng, faults, workers))
    return sorted(faults, key=lambda f: f.at)


def _kill_during_slow_dot(rng: random.Random, faults: list[Fault], workers: Sequence[str]) -> Fault:
    slow = min((f for f in faults if f.kind == "smtp_slow_dot"), key=lambda f: f.at)
    at = round(slow.at + rng.uniform(4.0, 8.0), 1)

    def disturbances(worker: str) -> int:  # its own faults around then (a SIGTERM takes long)
        return sum(1 for f in faults if f.target == worker and at - 25 <= f.at <= at + 5)

    target = min(workers, key=lambda w: (disturbances(w), rng.random()))
    return Fault("worker_sigkill", at, round(rng.uniform(*SPEC["worker_sigkill"][2]), 1), target)


def group_of(fault: Fault) -> str:
    """Faults of one group run one after the other: one per worker, one per service."""
    return f"worker {fault.target}" if fault.target else SPEC[fault.kind][1]


@dataclass(frozen=True, slots=True)
class Injected:
    fault: Fault
    started: float
    """Seconds after the load started (later than planned when its group was busy)."""
    ended: float
    detail: str
    death: tuple[float, float] | None = None
    """For a worker stopped by a signal: when the signal was sent and when the process was
    gone (seconds after the load started)."""


class Injector:
    """Carries out a plan against the live system; `heal()` undoes whatever is still broken."""

    def __init__(
        self,
        *,
        flowline: Flowline,
        redis: RedisServer,
        redis_policy: Literal["aof", "memory", "alternate"],
        sink: SmtpSink,
        receiver: WebhookReceiver,
        proxy: TcpProxy,
        workers: Sequence[str],
        grace_seconds: float,
        say: Callable[[str], None],
    ) -> None:
        self._flowline, self._redis, self._redis_policy = flowline, redis, redis_policy
        self._sink, self._receiver, self._proxy = sink, receiver, proxy
        self._workers, self._grace = tuple(workers), grace_seconds
        self._say = say
        self._t0 = 0.0
        self.injected: list[Injected] = []
        self._deaths: dict[int, tuple[float, float]] = {}

    def counts(self) -> Counter[str]:
        return Counter(item.fault.kind for item in self.injected)

    def next_redis_mode(self) -> Mode:
        if self._redis_policy == "alternate":
            return "memory" if self._redis.mode == "aof" else "aof"
        return self._redis_policy

    async def run(self, faults: Sequence[Fault], t0: float) -> None:
        """Inject `faults` (times relative to `t0`, a time.monotonic())."""
        self._t0 = t0
        groups: dict[str, list[Fault]] = {}
        for fault in faults:
            groups.setdefault(group_of(fault), []).append(fault)
        await asyncio.gather(*(self._run_group(group) for group in groups.values()))

    async def _run_group(self, faults: list[Fault]) -> None:
        for fault in faults:
            await asyncio.sleep(max(0.0, self._t0 + fault.at - time.monotonic()))
            started = time.monotonic() - self._t0
            self._say(f"[{started:6.1f}s] fault {fault.kind} {fault.target} for {fault.duration}s")
            detail = await self._inject(fault)
            ended = time.monotonic() - self._t0
            death = self._deaths.pop(id(fault), None)
            self.injected.append(Injected(fault, started, ended, detail, death))

    async def _inject(self, fault: Fault) -> str:
        kind, duration = fault.kind, fault.duration
        if kind in ("worker_sigkill", "worker_sigterm"):
            return await self._bounce_worker(fault)
        if kind == "redis_restart_empty":
            mode = self.next_redis_mode()
            await self._redis.restart_empty(mode, duration)
            return f"back empty, mode {mode}"
        if kind == "smtp_slow_dot":
            await self._sink.set_mode("slow {} {}".format(*SLOW_DOT_SECONDS))
            await asyncio.sleep(duration)
            await self._sink.set_mode("ok")
            return "final dot answered after {}-{} s".format(*SLOW_DOT_SECONDS)
        if kind == "smtp_drop_mid_data":
            await self._sink.set_mode("drop")
            await asyncio.sleep(duration)
            await self._sink.set_mode("ok")
            return "connections reset after the content, no reply"
        if kind == "pg_cut":
            self._proxy.cut()
            await asyncio.sleep(duration)
            self._proxy.restore()
            return "connections reset, new ones black-holed"
        self._receiver.set_mode("503" if kind == "webhook_503" else "hang")
        await asyncio.sleep(duration)
        self._receiver.set_mode("ok")
        return ""

    async def _bounce_worker(self, fault: Fault) -> str:
        name = fault.target
        life = self._flowline.current.get(name)
        if life is None or not life.running:
            await self._flowline.start(name, WORKER)
            return "was not running; started"
        signum = signal.SIGKILL if fault.kind == "worker_sigkill" else signal.SIGTERM
        started = time.monotonic()
        code = await self._flowline.stop(name, signum, self._grace + 15)
        took = time.monotonic() - started
        self._deaths[id(fault)] = (started - self._t0, started + took - self._t0)
        await asyncio.sleep(fault.duration)
        await self._flowline.start(name, WORKER)
        # The next fault on this worker hits a worker that works, not one still starting.
        ready = await self._flowline.wait_log(name, "worker_started", timeout=60)
        return f"{life.label} exit {code} after {took:.1f} s; restarted" + (
            "" if ready else ", not reading after 60 s"
        )

    async def heal(self) -> list[str]:
        """Every fault undone: what had to be done."""
        healed = []
        if self._sink.mode != "ok":
            await self._sink.set_mode("ok")
            healed.append("smtp back to ok")
        if self._receiver.mode != "ok":
            self._receiver.set_mode("ok")
            healed.append("webhook receiver back to ok")
        if self._proxy.cut_off:
            self._proxy.restore()
            healed.append("postgres proxy restored")
        if not self._redis.running:
            await self._redis.start(self.next_redis_mode())
            healed.append("redis started")
        for name in self._workers:
            life = self._flowline.current.get(name)
            if life is None or not life.running:
                await self._flowline.start(name, WORKER)
                healed.append(f"{name} started")
        return healed
