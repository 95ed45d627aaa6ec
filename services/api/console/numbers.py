"""The live numbers: the same gauges /metrics exposes (stream lag and pending entries per
group, the outbox backlog, dead letters, runs by status), read from this process's registry,
which the sampler refreshes every METRICS_SAMPLE_SECONDS. The page refreshes its table every
5 seconds with a little script; without it, it is a static page (reload for new numbers)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import APIRouter, Response
from prometheus_client import Gauge

from services.api.console.identity import Looker, Viewer
from services.api.console.web import ConsoleRoute, render
from workflow_core import metrics

router = APIRouter(prefix="/console/metrics", route_class=ConsoleRoute, include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Number:
    label: str
    value: float
    series: str


def _samples(gauge: Gauge, label: str, name: str) -> list[Number]:
    found = []
    for family in gauge.collect():
        for sample in family.samples:
            which = sample.labels.get(name, "") if name else ""
            shown = f"{label} ({which})" if which else label
            series = f'{family.name}{{{name}="{which}"}}' if which else family.name
            found.append(Number(shown, sample.value, series))
    return found


def live_numbers() -> list[Number]:
    return [
        *_samples(metrics.STREAM_LAG, "Stream lag", "group"),
        *_samples(metrics.STREAM_PENDING, "Pending entries", "group"),
        *_samples(metrics.OUTBOX_UNPUBLISHED, "Outbox backlog", ""),
        *_samples(metrics.DEAD_LETTERS, "Dead letters", ""),
        *_samples(metrics.RUNS, "Runs", "status"),
    ]


def _sampled_ago() -> float | None:
    at = next(iter(metrics.SAMPLE_AGE.collect())).samples[0].value
    return round(time.time() - at, 1) if at else None


def _numbers(template: str, viewer: Viewer) -> Response:
    return render(
        template,
        viewer,
        numbers=live_numbers(),
        sampled_ago=_sampled_ago(),
        read_at=datetime.now(UTC),
    )


@router.get("")
async def numbers_page(viewer: Looker) -> Response:
    return _numbers("metrics.html", viewer)


@router.get("/table")
async def numbers_table(viewer: Looker) -> Response:
    """The table alone, for the page's 5-second refresh."""
    return _numbers("_numbers.html", viewer)
