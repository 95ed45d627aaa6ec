"""Structured logging (structlog): every line is one JSON object (or a readable console line),
carrying fields such as run_id, event_id and action rather than prose.

Flowline's own lines go straight through structlog. Lines of libraries that use the standard
`logging` module (uvicorn, httpx, asyncio, alembic, warnings) go through the same processors
(`structlog.stdlib.ProcessorFormatter`), so under LOG_FORMAT=json every line on stderr is JSON.
`logging_config` is the one configuration of the standard module; the API hands it to uvicorn
too, which would otherwise install its own plain-text handlers.

Context variables (`bound(...)`) put ids on every line of a piece of work: the worker binds an
event's `event_id` / `submission_id` and each run's `run_id`, the API a submission's ids.
With OTEL_ENABLED, a line logged inside a span carries its `trace_id` and `span_id` too
(workflow_core/tracing.py).
"""

from __future__ import annotations

import logging
import logging.config
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from structlog.contextvars import bound_contextvars
from structlog.types import Processor

from workflow_core.tracing import add_trace_id

bound = bound_contextvars
"""`with bound(run_id=...):` every line logged inside carries the ids (this task only)."""

# Libraries whose INFO lines are noise rather than news.
_QUIET_LIBRARIES = {"alembic": "WARNING", "uvicorn.access": "WARNING", "asyncio": "WARNING"}


def _dumps(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    return orjson.dumps(value, default=default).decode()


def _renderer(fmt: str) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(serializer=_dumps)
    return structlog.dev.ConsoleRenderer(colors=False)


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_trace_id,  # a no-op unless OTEL_ENABLED
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def logging_config(level: str = "INFO", fmt: str = "json") -> dict[str, Any]:
    """The standard library's logging, rendered by structlog: for `logging.config.dictConfig`
    and uvicorn's `log_config`."""
    formatter = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [*_shared(), structlog.stdlib.add_logger_name],
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            _renderer(fmt),
        ],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"flowline": formatter},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "flowline",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's own handlers would print plain text: its lines go to the root's.
            "uvicorn": {"level": level, "handlers": [], "propagate": True},
            "uvicorn.error": {"level": level, "handlers": [], "propagate": True},
            **{
                name: {"level": max(quiet, level, key=logging.getLevelName), "propagate": True}
                for name, quiet in _QUIET_LIBRARIES.items()
            },
        },
    }


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    structlog.configure(
        processors=[*_shared(), structlog.processors.format_exc_info, _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(logging_config(level, fmt))
    logging.captureWarnings(True)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
