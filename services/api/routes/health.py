"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.deps import Db, Redis
from workflow_core.version import version

router = APIRouter(tags=["health"])


# HEAD too: some load balancers and uptime checkers probe with it. One route per method, so
# that each has an operation id of its own in the OpenAPI document.
@router.get("/healthz")
@router.head("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up, and which Flowline it runs."""
    return {"status": "ok", "version": version()}


async def _check(name: str, probe: Any) -> tuple[str, str | None]:
    try:
        async with asyncio.timeout(1.0):
            await probe()
    except Exception as error:
        return name, f"{type(error).__name__}: {error}".strip() or type(error).__name__
    return name, None


_READY_ANSWERS: dict[int | str, dict[str, object]] = {
    503: {"description": "a dependency does not answer"}
}


@router.get("/readyz", responses=_READY_ANSWERS)
@router.head("/readyz", responses=_READY_ANSWERS)
async def readyz(db: Db, redis: Redis) -> JSONResponse:
    """PostgreSQL and Redis answer (each within a second)."""

    async def database() -> None:
        async with db.reading() as conn:
            await conn.fetchval("SELECT 1")

    results = dict(await asyncio.gather(_check("database", database), _check("redis", redis.ping)))
    checks = {
        name: ("ok" if error is None else f"down: {error}") for name, error in results.items()
    }
    ready = all(error is None for error in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
