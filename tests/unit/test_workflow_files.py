"""Workflow files: reading and checking them (problems named `file: json.path: message`), the
normalized documents a diff compares, and what an export writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from services.api.workflow_files import (
    FileProblems,
    expand,
    exported,
    key_for,
    load_all,
    normalized,
    parse,
    unified_diff,
)

README = Path(__file__).resolve().parents[2] / "README.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def definition(**trigger: object) -> dict[str, object]:
    return {
        "trigger": {"type": "schedule", "cron": "0 9 * * *", **trigger},
        "initial_step_id": "a",
        "steps": [
            {
                "id": "a",
                "type": "auto_action",
                "actions": [
                    {
                        "type": "webhook",
                        "config": {"url": "https://hooks.example.com/x", "secret": SECRET},
                    }
                ],
            }
        ],
    }


def as_yaml(name: str, document: object) -> tuple[Path, str]:
    return Path(name), yaml.safe_dump(document)


def problems(path: Path, text: str) -> list[str]:
    with pytest.raises(FileProblems) as raised:
        parse(path, text)
    return raised.value.lines


def test_the_readme_example_file_loads() -> None:
    pattern = r"```yaml\n(# flows/weekday-report.yaml\n.*?)```"
    [block] = re.findall(pattern, README.read_text(), re.S)
    loaded = parse(Path("flows/weekday-report.yaml"), block)
    assert (loaded.key, loaded.name, loaded.org_id) == (
        "weekday-report",
        "Weekday report",
        "org_123",
    )
    assert loaded.definition["trigger"]["timezone"] == "Europe/Berlin"


def test_a_file_gives_key_name_organisation_and_definition() -> None:
    loaded = parse(*as_yaml("a.yaml", {"key": "daily", "definition": definition()}))
    assert (loaded.key, loaded.name, loaded.org_id) == ("daily", "daily", None)
    assert loaded.definition == definition()


def test_json_files_are_read_as_json() -> None:
    path, text = Path("a.json"), '{"key": "k", "definition": {"trigger": {"type": "x"}}}'
    assert problems(path, text) == [f"{path}: definition.initial_step_id: Field required",
                              f"{path}: definition.steps: Field required"]  # fmt: skip


def test_problems_point_into_the_file() -> None:
    broken = definition(cron="0 9 * *", timezone="Nowhere/Land")
    path, text = as_yaml("a.yaml", {"key": "k", "definition": broken, "colour": "red"})
    assert problems(path, text) == [f"{path}: colour: unknown field; a workflow file has "
                              "definition, key, name, org_id"]  # fmt: skip
    lines = problems(*as_yaml("b.yaml", {"key": "k", "definition": broken}))
    assert [line.split(": ")[1] for line in lines] == [
        "definition.trigger.cron",
        "definition.trigger.timezone",
    ]


@pytest.mark.parametrize(
    "text",
    ["key: [unclosed\n", "- a list\n", "key: 'has space'\ndefinition: {}\n", "definition: 3\n"],
)
def test_unusable_files_are_refused_with_a_line_each(text: str) -> None:
    lines = problems(Path("bad.yaml"), text)
    assert lines and all(line.startswith("bad.yaml: ") for line in lines)


def test_a_key_used_twice_in_one_organisation_is_refused(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.yaml", tmp_path / "b.yml", tmp_path / "c.yml"
    for path, org in ((first, "o"), (second, "o"), (other, "p")):
        path.write_text(yaml.safe_dump({"key": "k", "org_id": org, "definition": definition()}))
    with pytest.raises(FileProblems) as raised:
        load_all([first, second, other])
    assert raised.value.lines == [f"{second}: key: 'k' is also the key of {first}"]


def test_folders_are_expanded_to_their_workflow_files(tmp_path: Path) -> None:
    (tmp_path / "nested").mkdir()
    for name in ("b.yaml", "a.json", "nested/c.yml", "README.md"):
        (tmp_path / name).write_text("")
    assert [p.relative_to(tmp_path).as_posix() for p in expand([str(tmp_path)])] == [
        "a.json",
        "b.yaml",
        "nested/c.yml",
    ]


def test_the_diff_shows_changes_and_never_a_secret() -> None:
    before = normalized("n", definition())
    after = normalized("n", definition(cron="30 8 * * *"))
    assert unified_diff(before, before, old_label="k", new_label="f") == ""
    diff = unified_diff(before, after, old_label="k (version 1)", new_label="f.yaml")
    assert diff.startswith("--- k (version 1)\n+++ f.yaml\n")
    assert '-      "cron": "0 9 * * *",\n' in diff and '+      "cron": "30 8 * * *",\n' in diff
    assert SECRET not in before and SECRET not in unified_diff(None, after, old_label="",
                                                                 new_label="f")  # fmt: skip


def test_an_export_leaves_secrets_out_and_says_where() -> None:
    text = exported("k", "Name", "org_1", definition())
    assert SECRET not in text
    assert text.startswith("# steps[0].actions[0].config.secret is set and not exported")
    loaded = parse(Path("k.yaml"), text)
    assert (loaded.key, loaded.name, loaded.org_id) == ("k", "Name", "org_1")


def test_a_workflow_without_key_gets_one_from_its_name() -> None:
    assert key_for("Weekday report!", "1a2b3c4d-0000") == "weekday-report-1a2b3c4d"
    assert key_for("???", "1a2b3c4d-0000") == "workflow-1a2b3c4d"
