"""The API's HTTP protocol: uvicorn's, with each response written to the socket at once."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from services.api.http_protocol import OneWritePerResponse


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        assert not self.closed
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b'{"status":"accepted"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _protocol() -> tuple[OneWritePerResponse, _Transport]:
    config = uvicorn.Config(_app, http=OneWritePerResponse, lifespan="off", log_level="warning")
    config.load()
    protocol = OneWritePerResponse(config, ServerState(), {}, asyncio.get_running_loop())
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_head_and_body_of_a_response_go_out_in_one_write() -> None:
    protocol, transport = _protocol()
    request = b"POST /submit HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    protocol.data_received(request)
    await _settle()
    [response] = transport.writes
    assert response.startswith(b"HTTP/1.1 202 ")
    assert response.endswith(b'\r\n\r\n{"status":"accepted"}')

    protocol.data_received(request)  # the next request on the kept-alive connection
    await _settle()
    assert len(transport.writes) == 2


async def test_what_is_pending_is_written_before_the_connection_closes() -> None:
    protocol, transport = _protocol()
    protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    await _settle()
    [response] = transport.writes
    assert response.startswith(b"HTTP/1.1 202 ") and transport.closed


async def test_a_malformed_request_gets_its_400_before_the_close() -> None:
    protocol, transport = _protocol()
    protocol.data_received(b"NOT HTTP AT ALL\r\n\r\n")
    await _settle()
    [response] = transport.writes
    assert response.startswith(b"HTTP/1.1 400 ") and transport.closed
