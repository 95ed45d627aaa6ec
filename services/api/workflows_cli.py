"""`python -m services.api workflows ...`: workflow definitions kept as files (in git) and
applied to the database, as a CI step would. The operator's tool, like `keys`: it talks to the
database (DATABASE_URL) directly.

    python -m services.api workflows apply DIR|FILE... [--dry-run]
    python -m services.api workflows diff DIR|FILE... [--exit-code]
    python -m services.api workflows export DIR [--org ORG]

`apply` creates the workflows whose key is new (in its organisation) and stores a new version
of those whose name or definition changed; the others are left alone. A deactivated workflow
is activated again. Every file is checked first: one problem anywhere and nothing is applied
(exit 1, one `file: json.path: message` line per problem). `diff` (or `apply --dry-run`)
prints what `apply` would change as a unified diff of the normalized JSON; with `--exit-code`
it exits 2 when there is something to apply (for a CI check). `export` writes one
YAML file per active workflow (secrets never), giving a key to each workflow that has none.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from services.api import secrets
from services.api.workflow_files import (
    FileProblems,
    WorkflowFile,
    expand,
    exported,
    key_for,
    load_all,
    normalized,
    unified_diff,
)
from workflow_core.persistence import workflows
from workflow_core.persistence.migrate import migrate_at_start
from workflow_core.persistence.pool import Connection, create_pool
from workflow_core.settings import Settings, load_settings


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="python -m services.api workflows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = top.add_subparsers(dest="command", required=True)
    apply = commands.add_parser("apply", help="create or update workflows from files")
    apply.add_argument("paths", nargs="+", metavar="DIR|FILE")
    apply.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    diff = commands.add_parser("diff", help="what apply would change, as a unified diff")
    diff.add_argument("paths", nargs="+", metavar="DIR|FILE")
    diff.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 2 when apply would change something, 0 when nothing (1: a problem)",
    )
    export = commands.add_parser("export", help="write one YAML file per active workflow")
    export.add_argument("directory", metavar="DIR")
    export.add_argument("--org", help="only this organisation's workflows")
    return top


def main(argv: list[str]) -> None:
    arguments = parser().parse_args(argv)
    settings = load_settings()
    try:
        changes = asyncio.run(_run(arguments, settings))
    except FileProblems as problems:
        print("\n".join(problems.lines), file=sys.stderr)
        raise SystemExit(1) from None
    if changes and getattr(arguments, "exit_code", False):
        raise SystemExit(2)


async def _run(arguments: argparse.Namespace, settings: Settings) -> int:
    """Runs the command; for `diff`, how many workflows apply would change."""
    files = []
    changes = 0
    if arguments.command != "export":
        files = load_all(expand(arguments.paths), settings.allowed_webhook_hosts)
    await migrate_at_start(settings)
    pool = await create_pool(settings, application_name="flowline-workflows", size=1)
    try:
        async with pool.acquire() as conn, conn.transaction():
            if arguments.command == "export":
                await _export(conn, Path(arguments.directory), arguments.org)
            elif arguments.command == "diff" or arguments.dry_run:
                for item in files:
                    changes += await _diff(conn, item)
            else:
                for item in files:
                    await _apply(conn, item, settings)
    finally:
        await pool.close()
    return changes


async def _diff(conn: Connection, item: WorkflowFile) -> bool:
    """Prints what apply would do with one file; whether it would change anything."""
    current = await workflows.by_key(conn, item.org_id, item.key)
    after = normalized(item.name, item.definition)
    if current is None:
        print(unified_diff(None, after, old_label="", new_label=str(item.path)), end="")
        return True
    before = normalized(current.name, current.definition)
    label = f"{item.key} (version {current.version}{'' if current.active else ', inactive'})"
    text = unified_diff(before, after, old_label=label, new_label=str(item.path))
    secret_differs = secrets.carried_over(item.definition, current.definition) != current.definition
    if text:
        print(text, end="")
    elif secret_differs:
        print(f"# {item.path}: {item.key}: a secret differs (secrets are never shown)")
    else:
        print(f"# {item.path}: {item.key} unchanged")
    if not current.active:
        print(f"# {item.path}: {item.key} would be activated again")
    return bool(text) or secret_differs or not current.active


async def _apply(conn: Connection, item: WorkflowFile, settings: Settings) -> None:
    current = await workflows.by_key(conn, item.org_id, item.key)
    if current is None:
        await _room_for_one(conn, item, settings)
        made = await workflows.create(
            conn, name=item.name, org_id=item.org_id, definition=item.definition, key=item.key
        )
        print(f"{item.path}: created {item.key} ({made.id})")
        return
    definition = secrets.carried_over(item.definition, current.definition)
    if definition != current.definition or item.name != current.name:
        record = await workflows.add_version(
            conn, current.id, name=item.name, definition=definition
        )
        assert record is not None
        print(f"{item.path}: updated {item.key} to version {record.version}")
    else:
        print(f"{item.path}: {item.key} unchanged")
    if not current.active:
        await _room_for_one(conn, item, settings)
        await workflows.activate(conn, current.id)
        print(f"{item.path}: activated {item.key} again")


async def _room_for_one(conn: Connection, item: WorkflowFile, settings: Settings) -> None:
    active = await workflows.count_active_of(conn, item.org_id)
    if active >= settings.max_workflows_per_org:
        raise FileProblems(
            [
                f"{item.path}: org_id: there are {active} active workflows of "
                f"{item.org_id or 'every organisation'}, as many as MAX_WORKFLOWS_PER_ORG "
                "allows: nothing was applied"
            ]
        )


async def _export(conn: Connection, directory: Path, org_id: str | None) -> None:
    records = await workflows.list_workflows(conn, org_id=org_id, limit=1_000_000)
    for record in sorted(records, key=lambda r: (r.org_id or "", r.key or "", str(r.id))):
        key = record.key
        if key is None:
            key = key_for(record.name, record.id)
            await workflows.set_key(conn, record.id, key)
        folder = directory if org_id else directory / (record.org_id or "all-organisations")
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{key}.yaml"
        target.write_text(exported(key, record.name, record.org_id, record.definition))
        print(f"{target}: {key} (version {record.version})")
