"""Reading a /metrics page the way Prometheus does (prometheus-client's own parser)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one scrape: `value(name, **labels)` sums the samples of that name whose
    labels include the given ones (None when there is none)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    @property
    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}

    def value(self, name: str, **labels: str) -> float | None:
        found = [
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        ]
        return sum(found) if found else None

    def label_values(self) -> set[str]:
        return {value for _, labels, _ in self.samples for value in labels.values()}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient(timeout=5) as client:
        answer = await client.get(url)
    answer.raise_for_status()
    assert answer.headers["content-type"].startswith("text/plain"), answer.headers
    return Scrape(answer.text)


async def scrape_when_up(url: str) -> Scrape | None:
    """`scrape`, or None while nothing listens there yet (a process still starting)."""
    try:
        return await scrape(url)
    except httpx.ConnectError:
        return None
