"""Logging: under LOG_FORMAT=json every line on stderr is one JSON object, the standard
library's (uvicorn, httpx, asyncio, warnings) included, with the bound ids on it. Run in a
child process: configuring logging is global to a process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import orjson

from tests.support.processes import ROOT

SCRIPT = textwrap.dedent(
    """
    import asyncio, logging, warnings
    from workflow_core.log import bound, configure_logging, get_logger

    configure_logging("INFO", "json")
    with bound(run_id="r-1", event_id="e-1"):
        get_logger("flowline").info("ours", n=1)
        logging.getLogger("httpx").info('HTTP Request: POST %s "%s"', "http://x/hook", "200 OK")
    logging.getLogger("uvicorn.error").info("Started server process [%d]", 42)
    logging.getLogger("uvicorn.access").info("quiet: below WARNING")
    logging.getLogger("alembic.runtime").info("quiet: below WARNING")
    warnings.warn("a warning")
    try:
        1 / 0
    except ZeroDivisionError:
        logging.getLogger("some.library").exception("it broke")
    """
)


def run() -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, timeout=60, check=True
    )
    assert done.stdout == b""
    return [orjson.loads(line) for line in done.stderr.splitlines() if line.strip()]


def test_every_line_is_json_with_its_ids() -> None:
    lines = run()
    events = [line["event"] for line in lines]
    assert events[:3] == [
        "ours",
        'HTTP Request: POST http://x/hook "200 OK"',
        "Started server process [42]",
    ]
    assert len(lines) == 5, events  # the quiet loggers said nothing
    ours, call, started, warned, broke = lines
    assert ours["run_id"] == call["run_id"] == "r-1" and call["event_id"] == "e-1"
    assert "run_id" not in started  # the ids were bound for the block only
    assert call["logger"] == "httpx" and started["logger"] == "uvicorn.error"
    assert warned["logger"] == "py.warnings" and "a warning" in str(warned["event"])
    assert broke["level"] == "error" and "ZeroDivisionError" in str(broke["exception"])
    assert all({"level", "timestamp"} <= line.keys() for line in lines)
