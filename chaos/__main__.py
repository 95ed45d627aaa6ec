"""`make chaos ARGS="..."` (`python -m chaos ...`): a soak of Flowline under faults that checks
"nothing lost, nothing twice" (CONTRACT §5) and prints one table and a verdict.

    python -m chaos                                 3 minutes at 40 forms/s, a random seed
    python -m chaos --minutes 10 --rate 150
    python -m chaos --minutes 1 --rate 20 --seed 7  the 1-minute soak of `make test-faults`
    python -m chaos --minutes 1 --faults none       a control run: the harness's own check
    python -m chaos --faults worker_sigkill,smtp_slow_dot     one failure mode at a time

It needs PostgreSQL (DATABASE_URL, default postgresql://postgres@127.0.0.1:5432; the soak
creates and drops a database of its own) and redis-server on the PATH (it runs a private
one). Exit status: 0 when every invariant held, 1 when one did not, 2 when the soak could not
be set up. Logs of every process are kept under .chaos/<time>-seed<seed>/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import sys

from chaos.faults import KINDS, Kind
from chaos.report import say
from chaos.soak import Options, Soak, SoakError, default_settle


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="\n\n".join((__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=3.0, help="load period (3)")
    parser.add_argument("--rate", type=float, default=40.0, help="forms per second (40)")
    parser.add_argument("--seed", type=int, help="seed of the fault plan and the load (random)")
    parser.add_argument(
        "--redis",
        choices=("aof", "memory", "alternate"),
        default="alternate",
        help="the private Redis's persistence: an append-only file fsynced always, none, or"
        " switching at every restart (alternate, the default; it starts with aof)",
    )
    parser.add_argument(
        "--faults",
        default="all",
        help="the kinds of fault to inject, comma-separated, or all (the default) or none (a"
        f" control run): {', '.join(KINDS)}",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="longest wait in seconds for the system to go quiet after the load"
        " (60 + 30 per minute of load, at most 300)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        parser.error("--minutes and --rate must be positive")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 2**31)
    settle = args.settle if args.settle is not None else default_settle(args.minutes)
    return Options(args.minutes, args.rate, seed, args.redis, settle, _kinds(parser, args.faults))


def _kinds(parser: argparse.ArgumentParser, text: str) -> tuple[Kind, ...]:
    if text == "all":
        return KINDS
    if text == "none":
        return ()
    named = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in named if name not in KINDS]
    if unknown:
        parser.error(f"unknown fault kinds {unknown}; known: {', '.join(KINDS)}")
    return tuple(kind for kind in KINDS if kind in named)


async def _main(options: Options) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    return await Soak(options).run()


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    try:
        with contextlib.suppress(ImportError):
            import uvloop

            return uvloop.run(_main(options))
        return asyncio.run(_main(options))
    except SoakError as error:
        say(f"cannot run the soak: {error} (seed {options.seed})")
        return 2
    except asyncio.CancelledError:
        say(f"interrupted; processes stopped, database dropped (seed {options.seed})")
        return 130


if __name__ == "__main__":
    sys.exit(main())
