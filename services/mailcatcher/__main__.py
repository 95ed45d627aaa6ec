"""`python -m services.mailcatcher`: a local SMTP server for development (aiosmtpd) that
prints a line for every email it receives and keeps each one as an .eml file.

    python -m services.mailcatcher [--host 127.0.0.1] [--port 1025] [--dir .mail]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class SaveAndPrint:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        content = envelope.original_content or envelope.content
        path = self.directory / f"{time.time_ns()}-{self.count}.eml"
        path.write_bytes(content)
        message = message_from_bytes(content, policy=policy.default)
        print(
            f"mail #{self.count} to {', '.join(envelope.rcpt_tos)}: "
            f"{message['Subject']!s} ({path})",
            flush=True,
        )
        return "250 Message accepted for delivery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, default=Path(".mail"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    controller = Controller(
        SaveAndPrint(args.dir), hostname=args.host, port=args.port, decode_data=False
    )
    controller.start()
    print(f"mail catcher: smtp://{args.host}:{args.port}, emails saved in {args.dir}/", flush=True)

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(wait())
    controller.stop()


if __name__ == "__main__":
    main()
