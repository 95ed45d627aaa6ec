"""`make bench ARGS="..."` (`python -m bench ...`): throughput, latency and cost of Flowline.

Every run starts the whole system as users do (an SMTP sink, `python -m services.api`,
`python -m services.worker`) against the PostgreSQL and Redis named by DATABASE_URL and
REDIS_* (environment or .env), in a database and a stream of its own, creates the original
design's example workflow, submits forms, and waits for every email. Then it stops everything,
drops that database and deletes that stream's keys.

    python -m bench                         burst of 5000 forms over 32 connections
    python -m bench --burst 200             quick smoke run
    python -m bench --rate 100 --n 1000     open-loop at 100 forms/s: latency
    python -m bench --api-only              the API alone, then the worker drains the backlog
    python -m bench --workers 2 --concurrency 16 --repeat 3

Prints one table and writes every raw figure to bench/results/<date>-<mode>-<n>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from sqlalchemy.engine import make_url

from bench import loop, metrics, report
from bench.run import RESULTS, Options, Run, say
from bench.stack import StackError, admin_dsn, redis_client
from workflow_core.settings import Settings, load_settings


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", type=int, metavar="N", help="send N forms at once (default 5000)")
    mode.add_argument("--rate", type=float, metavar="R", help="open-loop at R forms/s")
    parser.add_argument("--n", type=int, metavar="N", help="forms sent with --rate (default 1000)")
    parser.add_argument(
        "--conc",
        type=int,
        metavar="C",
        help="HTTP keep-alive connections: C for a burst (32); with --rate at most C, opened"
        " as needed (256), so that a slow answer does not hold back the next form",
    )
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="worker processes (1)")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="WORKER_CONCURRENCY of each worker (32)"
    )
    parser.add_argument(
        "--api-only",
        action="store_true",
        help="start the worker(s) only after the load: the API measured alone, then the drain",
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="R", help="runs; medians shown")
    parser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds without a new email after which the missing ones count as lost (60)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=2.0,
        help="seconds to keep listening for duplicates once every email arrived (2)",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs under bench/results/"
    )
    args = parser.parse_args(argv)
    if args.n is not None and args.rate is None:
        parser.error("--n goes with --rate; use --burst N for a burst")
    n = (args.n or 1000) if args.rate is not None else (args.burst or 5000)
    conc = args.conc or (32 if args.rate is None else 256)
    for name, value in (
        ("--burst/--n", n),
        ("--conc", conc),
        ("--workers", args.workers),
        ("--concurrency", args.concurrency),
        ("--repeat", args.repeat),
    ):
        if value < 1:
            parser.error(f"{name} must be at least 1")
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be positive")
    return Options(
        n=n,
        conc=conc,
        rate=args.rate,
        workers=args.workers,
        concurrency=args.concurrency,
        api_only=args.api_only,
        repeat=args.repeat,
        timeout=args.timeout,
        settle=args.settle,
        keep_logs=args.keep_logs,
    )


async def preflight(settings: Settings) -> str | None:
    """None when PostgreSQL and Redis answer; else one line saying what to start."""
    try:
        connection = await asyncpg.connect(admin_dsn(settings), timeout=5)
        await connection.close()
    except (OSError, asyncpg.PostgresError) as error:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
        return f"PostgreSQL at {where} does not answer ({error}); start it"
    client: aioredis.Redis = redis_client(settings)
    try:
        await client.ping()
    except (OSError, RedisError) as error:
        return (
            f"Redis at {settings.redis_host}:{settings.redis_port} does not answer ({error});"
            " start it"
        )
    finally:
        await client.aclose()
    return None


async def bench(options: Options, settings: Settings) -> list[dict[str, Any]]:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    problem = await preflight(settings)
    if problem:
        raise StackError(problem)
    runs = []
    for index in range(options.repeat):
        say(f"run {index + 1}/{options.repeat}")
        runs.append(await Run(options, settings, index).execute())
    return runs


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    settings = load_settings()
    try:
        runs = loop.run(bench(options, settings))
    except StackError as error:
        sys.exit(f"bench: {error}")
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit("bench: interrupted; processes stopped, database and stream keys removed")
    summary = metrics.median_tree([{k: v for k, v in r.items() if k != "samples"} for r in runs])
    doc: dict[str, Any] = {
        "command": report.command(),
        "machine": report.machine(),
        "servers": report.servers(settings),
        "options": {
            "n": options.n,
            "conc": options.conc,
            "rate": options.rate,
            "workers": options.workers,
            "concurrency": options.concurrency,
            "api_only": options.api_only,
            "repeat": options.repeat,
            "timeout": options.timeout,
            "settle": options.settle,
        },
        "summary": summary,
        "runs": runs,
    }
    report.write_json(doc, RESULTS)
    print(report.table(doc), end="", flush=True)


if __name__ == "__main__":
    main()
