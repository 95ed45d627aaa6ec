"""`python -m dev.mailcatcher`: a local catcher for development. It is an SMTP server
(aiosmtpd) that prints a line for every email and keeps each one as an .eml file, and an HTTP
server that accepts any webhook (any method, any path), prints it and keeps it too. GET / on
the HTTP port lists what was caught, newest first, as JSON.

    python -m dev.mailcatcher [--host 127.0.0.1] [--port 1025] [--http-port 8025] [--dir .mail]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import threading
import time
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from dev.mailcatcher import advertise_pipelining


class Catch:
    """What was caught, kept on disk and in memory (the latest 500 of each)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.emails: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def keep(self, kind: list[dict[str, Any]], item: dict[str, Any]) -> None:
        with self._lock:
            kind.append(item)
            del kind[:-500]

    def listing(self) -> dict[str, Any]:
        with self._lock:
            return {"emails": self.emails[::-1], "webhooks": self.webhooks[::-1]}


class SmtpHandler:
    def __init__(self, catch: Catch) -> None:
        self.catch = catch

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return advertise_pipelining(session, hostname, responses)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        path = self.catch.directory / f"{time.time_ns()}.eml"
        path.write_bytes(content)
        message = message_from_bytes(content, policy=policy.default)
        to = ", ".join(envelope.rcpt_tos)
        self.catch.keep(
            self.catch.emails,
            {"at": time.time(), "to": to, "subject": str(message["Subject"]), "file": str(path)},
        )
        print(f"mail to {to}: {message['Subject']!s} ({path})", flush=True)
        return "250 Message accepted for delivery"


def http_handler(catch: Catch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body, indent=2, default=str).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer(200, catch.listing())

        def _webhook(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            try:
                body: Any = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            call = {
                "at": time.time(),
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body,
            }
            catch.keep(catch.webhooks, call)
            with (catch.directory / "webhooks.jsonl").open("a") as log:
                log.write(json.dumps(call, default=str) + "\n")
            print(
                f"webhook {self.command} {self.path} ({len(raw)} bytes, "
                f"id {self.headers.get('webhook-id', '-')})",
                flush=True,
            )
            self._answer(200, {"ok": True})

        do_POST = do_PUT = do_PATCH = do_DELETE = _webhook

        def log_message(self, *_: Any) -> None:  # one line per webhook is printed above
            pass

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Flowline's development catcher")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025, help="SMTP port")
    parser.add_argument("--http-port", type=int, default=8025, help="webhooks and the listing")
    parser.add_argument("--dir", type=Path, default=Path(".mail"))
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    catch = Catch(args.dir)
    controller = Controller(
        SmtpHandler(catch), hostname=args.host, port=args.port, decode_data=False
    )
    controller.start()
    web = ThreadingHTTPServer((args.host, args.http_port), http_handler(catch))
    threading.Thread(target=web.serve_forever, daemon=True).start()
    print(
        f"catcher: smtp://{args.host}:{args.port}, webhooks and the listing at "
        f"http://{args.host}:{args.http_port}/, copies in {args.dir}/",
        flush=True,
    )

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(wait())
    web.shutdown()
    controller.stop()


if __name__ == "__main__":
    main()
