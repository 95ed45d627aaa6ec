"""A local file as the third place for the fact that an email was sent, after PostgreSQL and
Redis: for the seconds both are away at once (a 250 read during a PostgreSQL cut while Redis
restarts empty) and the worker is killed before either comes back.

Each worker process appends to a file of its own, `<dir>/<owner>.jsonl`, and holds an
exclusive lock (flock) on it for its life: a file nobody holds belongs to a process that is
gone. A worker starting records the lines of such files done in PostgreSQL and deletes them,
so a restarted container (which keeps its file system, /tmp included) settles what its
previous life sent before another worker may take those emails over. A worker taking a dead
owner's reservation over also reads every file of the directory: workers of one host share it.

Lines are written with one `write` each on an O_APPEND descriptor: a killed process loses
none (the kernel has them), and a reader sees whole lines. Only a crash of the host itself
could lose a line, as it could lose the file system's /tmp.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from workflow_core.log import get_logger

log = get_logger(__name__)

SUFFIX = ".jsonl"

# (key, run id, result) of one email sent
Entry = tuple[str, str, dict[str, Any]]


def directory_for(root: str | Path, database: str, stream: str) -> Path:
    """The spool of one deployment (one database name and stream) under `root`: tests and
    several deployments on one host never read each other's lines. Not the whole URL: workers
    of one deployment may reach the database by different routes (a proxy, a pooler)."""
    digest = hashlib.sha256(f"{database}|{stream}".encode()).hexdigest()[:16]
    return Path(root) / digest


class SentSpool:
    """The spool file of one owner (a worker process) in `directory`."""

    def __init__(self, directory: Path, owner: str) -> None:
        self._directory = directory
        self._path = directory / f"{quote(owner, safe='')}{SUFFIX}"
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    def note(self, key: str, run_id: str, result: Mapping[str, Any]) -> None:
        line = orjson.dumps({"key": key, "run_id": run_id, "result": dict(result)}) + b"\n"
        os.write(self._open(), line)

    def _open(self) -> int:
        if self._fd is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours for as long as this process lives
            self._fd = fd
        return self._fd

    def recall(self, key: str) -> dict[str, Any] | None:
        """The result noted for `key` in any file of the directory (held or not)."""
        for path in _files(self._directory):
            for entry in _read(path):
                if entry[0] == key:
                    return entry[2]
        return None

    async def settle_orphans(self, record: Callable[[list[Entry]], Awaitable[None]]) -> int:
        """Record (with `record`) the lines of every file whose process is gone, then delete
        the file. Returns how many lines were recorded; `record`'s errors go to the caller,
        and the file stays for the next try."""
        settled = 0
        for path in _files(self._directory):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:  # settled by another worker meanwhile
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # its process is alive
                    continue
                entries = list(_read(path))
                if entries:
                    await record(entries)
                    settled += len(entries)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return settled

    def close(self, *, remove: bool) -> None:
        """Let the file go; `remove` once everything it holds is recorded in PostgreSQL."""
        if self._fd is None:
            return
        if remove:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def _files(directory: Path) -> list[Path]:
    try:
        return sorted(directory.glob(f"*{SUFFIX}"))
    except OSError:
        return []


def _read(path: Path) -> Iterator[Entry]:
    try:
        data = path.read_bytes()
    except OSError:
        return
    for line in data.splitlines():
        try:
            item = orjson.loads(line)
            yield str(item["key"]), str(item["run_id"]), dict(item["result"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("sent_spool_line_unreadable", path=str(path))
