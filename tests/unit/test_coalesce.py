"""Coalescing calls made in the same event-loop iteration into one batch."""

from __future__ import annotations

import asyncio

import pytest

from workflow_core.runtime.coalesce import Coalescer


class Recorder:
    def __init__(self, bad: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.singles: list[int] = []
        self.bad = bad

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await asyncio.sleep(0)
        if self.bad in items:
            raise ValueError("one bad item spoils the statement")
        return [item * 10 if item >= 0 else KeyError(item) for item in items]

    async def single(self, item: int) -> int:
        self.singles.append(item)
        if item == self.bad:
            raise ValueError(f"bad {item}")
        if item < 0:
            raise KeyError(item)
        return item * 10


async def test_calls_made_together_share_one_batch_and_get_their_own_results() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, recorder.single)
    results = await asyncio.gather(*(coalescer(n) for n in range(5)))
    assert results == [0, 10, 20, 30, 40]
    assert recorder.batches == [[0, 1, 2, 3, 4]] and recorder.singles == []


async def test_calls_made_later_make_a_new_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, recorder.single)
    await asyncio.gather(coalescer(1), coalescer(2))
    await asyncio.gather(coalescer(3), coalescer(4))
    assert recorder.batches == [[1, 2], [3, 4]]


async def test_a_lone_call_goes_straight_to_single() -> None:
    recorder = Recorder()
    assert await Coalescer(recorder.flush, recorder.single)(7) == 70
    assert recorder.batches == [] and recorder.singles == [7]


async def test_a_batch_is_cut_at_max_batch() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, recorder.single, max_batch=3)
    await asyncio.gather(*(coalescer(n) for n in range(7)))
    assert [len(batch) for batch in recorder.batches] == [3, 3] and recorder.singles == [6]


async def test_a_failed_batch_is_retried_one_by_one_so_only_the_bad_item_fails() -> None:
    recorder = Recorder(bad=2)
    coalescer = Coalescer(recorder.flush, recorder.single)
    results = await asyncio.gather(*(coalescer(n) for n in range(4)), return_exceptions=True)
    assert results[:2] == [0, 10] and results[3] == 30
    assert isinstance(results[2], ValueError)
    assert sorted(recorder.singles) == [0, 1, 2, 3]


async def test_an_exception_returned_for_one_item_is_raised_to_its_caller_only() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, recorder.single)
    ok, failed = await asyncio.gather(coalescer(1), coalescer(-1), return_exceptions=True)
    assert ok == 10 and isinstance(failed, KeyError)


async def test_a_cancelled_caller_does_not_hurt_the_others() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.flush, recorder.single)
    doomed = asyncio.ensure_future(coalescer(1))
    kept = asyncio.ensure_future(coalescer(2))
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await doomed


async def test_with_one_batch_in_flight_the_calls_made_meanwhile_go_together_next() -> None:
    release = asyncio.Event()
    batches: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        return items

    async def single(item: int) -> int:
        batches.append([item])
        await release.wait()
        return item

    coalescer = Coalescer(flush, single, max_in_flight=1)
    first = asyncio.ensure_future(coalescer(0))
    await asyncio.sleep(0.01)  # the first is in flight
    later = [asyncio.ensure_future(coalescer(n)) for n in (1, 2)]
    await asyncio.sleep(0.01)
    later.append(asyncio.ensure_future(coalescer(3)))
    await asyncio.sleep(0.01)
    assert batches == [[0]]  # nothing else started while it was in flight
    release.set()
    assert await asyncio.gather(first, *later) == [0, 1, 2, 3]
    assert batches == [[0], [1, 2, 3]]
