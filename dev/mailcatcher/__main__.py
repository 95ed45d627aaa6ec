"""`python -m dev.mailcatcher`: a local catcher for development and the Compose stack.

An SMTP server (aiosmtpd) that takes every email, and an HTTP server that takes every webhook
call: any method (GET and HEAD included) on any path, except GET and HEAD of `/` (the page)
and of `/api/...` (JSON). Each email is kept as an `.eml` file and each call, with its headers
and its raw body (base64, so a signature can be checked), in `webhooks.jsonl` in `--dir`.
`GET /` is a page listing both, newest first; `GET /api/messages` and `GET /api/webhooks`
are the same as JSON.

    python -m dev.mailcatcher [--host 127.0.0.1] [--port 1025] [--http-port 8025] [--dir .mail]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiosmtpd.controller import Controller

from dev.mailcatcher import advertise_pipelining
from dev.mailcatcher.catch import Catch
from dev.mailcatcher.page import render

MAX_BODY_BYTES = 16 * 1024 * 1024
_UI_PATHS = ("/", "/api/messages", "/api/webhooks")


class SmtpHandler:
    def __init__(self, catch: Catch) -> None:
        self.catch = catch

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        return advertise_pipelining(session, hostname, responses)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        item = self.catch.email(str(envelope.mail_from or ""), list(envelope.rcpt_tos), content)
        print(f"mail to {', '.join(item['to'])}: {item['subject']} ({item['file']})", flush=True)
        return "250 Message accepted for delivery"


class _TooLarge(Exception):
    pass


def read_body(headers: Any, stream: Any) -> bytes:
    """The request's body as sent: by content-length, or chunked."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _read_chunked(stream)
    length = int(headers.get("content-length") or 0)
    if length < 0:
        raise ValueError("negative content-length")
    if length > MAX_BODY_BYTES:
        raise _TooLarge
    return bytes(stream.read(length))


def _read_chunked(stream: Any) -> bytes:
    body = bytearray()
    while size := int(stream.readline(1024).split(b";")[0].strip() or b"0", 16):
        if len(body) + size > MAX_BODY_BYTES:
            raise _TooLarge
        body += stream.read(size)
        stream.readline(8)  # the chunk's CRLF
    while stream.readline(8192).strip():  # trailers, up to the empty line
        pass
    return bytes(body)


class CatcherHandler(BaseHTTPRequestHandler):
    """Every method on every path is a webhook call, but GET and HEAD of the page's paths."""

    server_version = "FlowlineCatcher/1"
    catch: Catch
    where: str

    def __getattr__(self, name: str) -> Any:
        # http.server looks up do_<METHOD>: every method is handled, any name it has.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        path = urlsplit(self.path).path
        if self.command in ("GET", "HEAD") and path in _UI_PATHS:
            self._show(path)
        else:
            self._catch()

    def _show(self, path: str) -> None:
        if path == "/":
            page = render(self.catch.emails(), self.catch.webhooks(), self.where)
            self._answer(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/api/messages":
            self._json(200, {"emails": self.catch.emails()})
        else:
            self._json(200, {"webhooks": self.catch.webhooks()})

    def _catch(self) -> None:
        try:
            body = read_body(self.headers, self.rfile)
        except _TooLarge:
            self._json(413, {"error": f"bodies over {MAX_BODY_BYTES} bytes are refused"})
            return
        except ValueError as error:
            self._json(400, {"error": f"unreadable body: {error}"})
            return
        item = self.catch.webhook(self.command, self.path, list(self.headers.items()), body)
        print(
            f"webhook {item['method']} {item['path']} ({item['size']} bytes, "
            f"id {self.headers.get('webhook-id', '-')})",
            flush=True,
        )
        self._json(200, {"ok": True, "id": item["id"]})

    def _json(self, status: int, value: Any) -> None:
        self._answer(status, json.dumps(value, indent=2).encode(), "application/json")

    def _answer(self, status: int, data: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.send_header("cache-control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, *_: Any) -> None:  # one line per webhook is printed above
        pass


def http_handler(catch: Catch, where: str) -> type[CatcherHandler]:
    return type("Handler", (CatcherHandler,), {"catch": catch, "where": where})


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dev.mailcatcher", description="Flowline's catcher for emails and webhooks"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address of both servers")
    parser.add_argument("--port", type=int, default=1025, help="SMTP port")
    parser.add_argument("--http-port", type=int, default=8025, help="webhooks and the page")
    parser.add_argument("--dir", type=Path, default=Path(".mail"), help="copies of everything")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    args.dir.mkdir(parents=True, exist_ok=True)
    catch = Catch(args.dir)
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    shown = f"[{shown}]" if ":" in shown else shown
    where = (
        f"SMTP on {args.host}:{args.port}; webhooks to http://{shown}:{args.http_port}/<any path>;"
        f" copies in {args.dir}/."
    )
    try:
        web = ThreadingHTTPServer((args.host, args.http_port), http_handler(catch, where))
        controller = Controller(
            SmtpHandler(catch), hostname=args.host, port=args.port, decode_data=False
        )
        controller.start()
    except (OSError, RuntimeError) as error:
        sys.exit(
            f"catcher: cannot listen on {args.host} (SMTP {args.port}, HTTP "
            f"{args.http_port}): {type(error).__name__}: {error}"
        )
    threading.Thread(target=web.serve_forever, daemon=True).start()
    print(
        f"catcher: smtp://{args.host}:{args.port}, webhooks and the page at "
        f"http://{shown}:{args.http_port}/, copies in {args.dir}/",
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
