"""Flowline's version. It is written in one place, `version` in pyproject.toml; an installed
Flowline (the image, a wheel, `uv sync`) reads it from the package metadata, and a source
checkout that was never installed reads pyproject.toml itself.

Every process says it: `python -m services.api --version`, `python -m services.worker
--version`, and the API's `GET /healthz`."""

from __future__ import annotations

import argparse
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

DISTRIBUTION = "flowline"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
UNKNOWN = "0+unknown"


@cache
def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return _from_pyproject(PYPROJECT)


def _from_pyproject(path: Path) -> str:
    try:
        project = tomllib.loads(path.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return UNKNOWN
    if project.get("name") != DISTRIBUTION:
        return UNKNOWN
    return str(project.get("version") or UNKNOWN)


def command_line(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every Flowline entry point takes (settings come from the environment)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"{description} Settings come from the environment or .env (see README).",
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {version()}")
    return parser
