"""Shared by the Compose and Kubernetes checks (tests/unit/test_compose.py, test_kubernetes.py):
the settings a deployment file may name, and what the image built from the Dockerfile can run,
read from the files (no Docker here): the packages its wheel installs (pyproject.toml) and the
folders its final stage copies into WORKDIR."""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import tomllib
from functools import cache
from pathlib import Path

from workflow_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = frozenset(name.upper() for name in Settings.model_fields)
# Settings other engineers are adding now (CONTRACT.md sections 7, 9, 10): the deployment files
# may name them already. Each moves to settings.py; then it drops out of this set by itself.
COMING_SETTINGS = (
    frozenset(
        {"API_ADMIN_KEY", "WEBHOOK_ALLOWED_HOSTS", "WORKER_METRICS_PORT", "WORKER_METRICS_HOST"}
    )
    - SETTINGS
)
KNOWN_SETTINGS = SETTINGS | COMING_SETTINGS


def _final_stage() -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


@cache
def image_packages() -> frozenset[str]:
    """Top-level Python packages importable in the image (from WORKDIR /app)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wheel = project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    names = {Path(package).name for package in wheel}
    for keyword, arguments in _final_stage():
        parts = shlex.split(arguments)
        if keyword == "COPY" and not any(part.startswith("--from") for part in parts):
            names |= {Path(src).name for src in parts[:-1] if (ROOT / src).is_dir()}
    return frozenset(names)


def command_problems(command: list[str]) -> list[str]:
    """Why the image could not run `command` (a container's command or a probe's), if it
    could not: `python -m X` needs X in the image with a main(); `python -c` code must
    compile."""
    if command[:1] == ["CMD"] or command[:1] == ["CMD-SHELL"]:
        command = command[1:]
    if command[:1] != ["python"]:
        return [] if command[:1] else ["an empty command"]
    if command[1:2] == ["-c"]:
        try:
            compile(command[2], "<probe>", "exec")
        except SyntaxError as error:
            return [f"python -c does not compile: {error}"]
        return []
    if command[1:2] != ["-m"] or len(command) < 3:
        return [f"not `python -m module` nor `python -c code`: {command}"]
    module = command[2]
    if module.split(".")[0] not in image_packages():
        return [f"{module} is not in the image (it has {sorted(image_packages())})"]
    spec = importlib.util.find_spec(module)
    if spec is None:
        return [f"{module} does not exist"]
    runnable = f"{module}.__main__" if spec.submodule_search_locations else module
    if importlib.util.find_spec(runnable) is None:
        return [f"{module} cannot be run with -m"]
    if not callable(getattr(importlib.import_module(runnable), "main", None)):
        return [f"{runnable} has no main()"]
    return []
