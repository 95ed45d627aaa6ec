"""Release hygiene: the version is written once (pyproject.toml) and read from there; the
changelog's newest release is that version."""

from __future__ import annotations

import re
import tomllib
from datetime import date
from importlib import metadata
from pathlib import Path

import pytest

from workflow_core import version as version_module
from workflow_core.version import UNKNOWN, version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
RELEASE = re.compile(r"^## \[(?P<version>[^\]]+)\](?: - (?P<date>\d{4}-\d{2}-\d{2}))?$", re.M)


def test_the_version_is_the_one_in_pyproject() -> None:
    assert version() == PYPROJECT_VERSION


def test_a_source_checkout_that_was_never_installed_reads_pyproject(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", not_installed)
    version.cache_clear()
    try:
        assert version() == PYPROJECT_VERSION
    finally:
        version.cache_clear()


@pytest.mark.parametrize(
    "text",
    ["", "not toml = = =", '[project]\nname = "someone-else"\nversion = "9.9.9"\n', "[tool.x]\n"],
)
def test_without_a_readable_pyproject_the_version_is_unknown(tmp_path: Path, text: str) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(text)
    assert version_module._from_pyproject(path) == UNKNOWN
    assert version_module._from_pyproject(tmp_path / "missing.toml") == UNKNOWN


def test_no_other_file_writes_the_version() -> None:
    """The version lives in pyproject.toml alone (and uv.lock, which uv derives from it)."""
    written = re.compile(rf"""version\s*[=:]\s*["']{re.escape(PYPROJECT_VERSION)}["']""")
    allowed = {"pyproject.toml"}
    offenders = [
        path.relative_to(ROOT).as_posix()
        for folder in ("libs", "services", "dev", "deploy")
        for path in (ROOT / folder).rglob("*")
        if path.suffix in {".py", ".yaml", ".yml", ".toml", ".json"}
        and path.relative_to(ROOT).as_posix() not in allowed
        and written.search(path.read_text(errors="replace"))
    ]
    assert not offenders


def changelog() -> str:
    return (ROOT / "CHANGELOG.md").read_text()


def test_the_changelog_keeps_an_unreleased_section_first() -> None:
    headings = RELEASE.findall(changelog())
    assert headings, "CHANGELOG.md has no release headings"
    assert headings[0] == ("Unreleased", "")


def test_the_newest_release_in_the_changelog_is_the_version() -> None:
    releases = [(v, d) for v, d in RELEASE.findall(changelog()) if v != "Unreleased"]
    assert releases, "CHANGELOG.md has no release"
    newest, day = releases[0]
    assert newest == PYPROJECT_VERSION, "release it in CHANGELOG.md, or set pyproject's version"
    assert date.fromisoformat(day)
    dates = [date.fromisoformat(d) for _, d in releases]
    assert dates == sorted(dates, reverse=True), "releases are listed newest first"
