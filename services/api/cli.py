"""`python -m services.api keys ...`: the operator's door to API keys without the HTTP API
(for the first key of an organisation, or when the operator's key is not at hand).

    python -m services.api keys create --org org_123 --scope admin [--scope tasks]
                                       [--name NAME] [--origin https://www.example.com]
    python -m services.api keys list [--org org_123]
    python -m services.api keys revoke KEY_ID

`revoke` also tells the running API processes (Redis pub/sub), so the key is refused within a
second everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from uuid import UUID

import orjson

from services.api import keys
from workflow_core.adapters import streams
from workflow_core.adapters.streams import StreamKeys
from workflow_core.persistence import api_keys
from workflow_core.persistence.migrate import migrate_at_start
from workflow_core.persistence.pool import create_pool
from workflow_core.settings import Settings, load_settings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m services.api keys", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; its text is printed once")
    create.add_argument("--org", required=True, help="the organisation the key belongs to")
    create.add_argument(
        "--scope", action="append", required=True, choices=keys.SCOPES, dest="scopes"
    )
    create.add_argument("--name", help="what the key is for")
    create.add_argument(
        "--origin", action="append", default=[], dest="origins", help="allowed web origin"
    )
    listing = commands.add_parser("list", help="keys without their text")
    listing.add_argument("--org", help="one organisation's keys")
    revoke = commands.add_parser("revoke", help="revoke a key (by its id)")
    revoke.add_argument("key_id", type=UUID)
    return top


def main(argv: list[str]) -> None:
    arguments = parser().parse_args(argv)
    settings = load_settings()
    asyncio.run(_run(arguments, settings))


async def _run(arguments: argparse.Namespace, settings: Settings) -> None:
    await migrate_at_start(settings)
    pool = await create_pool(settings, application_name="flowline-keys", size=1)
    try:
        if arguments.command == "create":
            text = keys.new_key()
            made = await api_keys.create(
                pool,
                org_id=arguments.org,
                scopes=sorted(set(arguments.scopes)),
                name=arguments.name,
                allowed_origins=arguments.origins,
                prefix=keys.shown_prefix(text),
                digest=keys.digest(text),
            )
            _say({"id": made.id, "org_id": made.org_id, "scopes": made.scopes, "key": text})
            print("# the key is shown this once: keep it now", file=sys.stderr)
        elif arguments.command == "list":
            for key in await api_keys.listing(pool, org_id=arguments.org, limit=10_000, offset=0):
                _say(key)
        else:
            if not await api_keys.revoke(pool, arguments.key_id):
                raise SystemExit(f"flowline: no API key {arguments.key_id} to revoke")
            redis = streams.client(settings)
            try:
                ring = keys.KeyRing(pool, redis, StreamKeys.from_settings(settings), admin_key="")
                await ring.revoked(arguments.key_id)
            finally:
                await redis.aclose()
            _say({"id": arguments.key_id, "revoked": True})
    finally:
        await pool.close()


def _say(value: object) -> None:
    print(orjson.dumps(value, default=str).decode())
