"""`python -m services.worker.healthcheck`: exit 0 while this container's worker is alive.

The worker touches WORKER_HEALTH_FILE at every heartbeat (WORKER_HEARTBEAT_SECONDS) while it
runs, and deletes it when it stops; the check passes while the file is younger than
WORKER_DEAD_AFTER_SECONDS, the age at which other workers, too, take a worker for dead.
It imports the settings only, so a check every few seconds costs little."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from workflow_core.settings import load_settings


def verdict(path: Path, max_age: float, now: float) -> str | None:
    """None when alive, else why not."""
    try:
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        return f"{path} does not exist: the worker has not started, or has stopped"
    except OSError as error:
        return f"{path}: {error}"
    if age > max_age:
        return f"{path} was last touched {age:.0f} s ago (more than {max_age:g} s)"
    return None


def main() -> None:
    settings = load_settings()
    if not settings.worker_health_file:
        sys.exit("unhealthy: WORKER_HEALTH_FILE is not set, so the worker keeps no health file")
    path = Path(settings.worker_health_file)
    problem = verdict(path, settings.worker_dead_after_seconds, time.time())
    if problem is not None:
        sys.exit(f"unhealthy: {problem}")
    print(f"healthy: {path} is fresh")


if __name__ == "__main__":
    main()
