"""The pace of warnings that must not flood the log."""

from __future__ import annotations

import pytest

from workflow_core.runtime.pacing import Every


def test_every_lets_one_through_per_period_and_counts_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("workflow_core.runtime.pacing.time.monotonic", lambda: clock[0])
    every = Every(60.0)
    assert every.ready() and every.take_held_back() == 0
    assert not every.ready() and not every.ready()
    clock[0] += 59.9
    assert not every.ready()
    clock[0] += 0.2
    assert every.ready()
    assert every.take_held_back() == 3
    assert every.take_held_back() == 0
