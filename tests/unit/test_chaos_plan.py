"""The chaos soak's fault plan (chaos/faults.py): seeded, every kind at least once, spread over
the first 80% of the load, faults on one thing never planned on top of each other, and one
SIGKILL inside the first slow-SMTP window."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from chaos.faults import KINDS, SPREAD, Fault, Kind, group_of, plan

WORKERS = ("chaos-w1", "chaos-w2")


def a_plan(seed: int, minutes: float = 1.0, kinds: Sequence[Kind] = KINDS) -> list[Fault]:
    return plan(random.Random(seed), minutes * 60, WORKERS, kinds)


@pytest.mark.parametrize("seed", range(20))
def test_a_one_minute_plan_has_every_kind_and_ends_before_the_load_does(seed: int) -> None:
    faults = a_plan(seed)
    assert {f.kind for f in faults} == set(KINDS)
    assert all(f.at + f.duration <= SPREAD * 60 + 8.0 for f in faults)  # the extra kill: +8 s
    assert [f.at for f in faults] == sorted(f.at for f in faults)


@pytest.mark.parametrize("seed", range(20))
def test_one_sigkill_falls_inside_the_first_slow_dot_window(seed: int) -> None:
    faults = a_plan(seed, minutes=3)
    slow = min((f for f in faults if f.kind == "smtp_slow_dot"), key=lambda f: f.at)
    assert any(
        f.kind == "worker_sigkill" and slow.at < f.at < slow.at + slow.duration for f in faults
    )


@pytest.mark.parametrize("seed", range(20))
def test_faults_on_one_thing_are_planned_one_after_the_other(seed: int) -> None:
    stratified = [f for f in a_plan(seed, minutes=10) if f.kind != "worker_sigkill"]
    by_group: dict[str, list[Fault]] = {}
    for fault in stratified:
        by_group.setdefault(group_of(fault), []).append(fault)
    for faults in by_group.values():
        for before, after in itertools.pairwise(faults):
            assert before.at + before.duration <= after.at + 0.1


def test_more_minutes_more_faults_and_the_same_seed_the_same_plan() -> None:
    assert len(a_plan(1, minutes=10)) > 3 * len(a_plan(1, minutes=1))
    assert a_plan(42, minutes=3) == a_plan(42, minutes=3)


def test_only_the_kinds_asked_for_and_none_for_a_control_run() -> None:
    assert {f.kind for f in a_plan(3, kinds=("pg_cut",))} == {"pg_cut"}
    assert a_plan(3, kinds=()) == []
