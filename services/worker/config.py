"""What the consumer side of a worker is told (from the settings), and what it counts."""

from __future__ import annotations

from dataclasses import dataclass

from workflow_core.settings import Settings


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    consumer: str
    concurrency: int = 32
    batch_size: int = 64
    block_ms: int = 2000
    claim_idle_seconds: float = 30.0
    claim_interval_seconds: float = 5.0
    delivery_limit: int = 5
    dead_letter_max_length: int = 10_000
    grace_seconds: float = 20.0
    housekeeping_interval_seconds: float = 60.0
    stream_retention_seconds: float = 3600.0
    consumer_gc_seconds: float = 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerConfig:
        return cls(
            consumer=settings.consumer_name,
            concurrency=settings.worker_concurrency,
            batch_size=settings.worker_batch_size,
            block_ms=settings.worker_block_ms,
            claim_idle_seconds=settings.claim_idle_seconds,
            claim_interval_seconds=min(
                settings.claim_interval_seconds, settings.claim_idle_seconds
            ),
            delivery_limit=settings.delivery_limit,
            dead_letter_max_length=settings.dead_letter_max_length,
            grace_seconds=settings.worker_shutdown_grace_seconds,
            housekeeping_interval_seconds=settings.housekeeping_interval_seconds,
            stream_retention_seconds=settings.stream_retention_seconds,
            consumer_gc_seconds=settings.consumer_gc_seconds,
        )


@dataclass(slots=True)
class WorkerStats:
    handled: int = 0
    failed: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
