"""The deployment files agree with the code: docker-compose.yml, Dockerfile, .dockerignore and
.env.example are checked against the settings and entry points they name.

Pure: the files are parsed, nothing is built, started or fetched (there is no Docker engine
here). docker-compose.yml is validated against the Compose Specification's JSON schema,
vendored in deploy/schemas/ (from check-jsonschema 0.39.0 on PyPI; deploy/schemas/README.md
cites it), then checked against what Flowline reads and runs. A typo in a setting name, a
service that is waited for but has no healthcheck, a port open beyond this machine, an API or a
worker that cannot be scaled or an image that would not run a command fails here instead of at
`docker compose up`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator

from tests.support.deployment import KNOWN_SETTINGS, command_problems
from workflow_core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = {name.upper() for name in Settings.model_fields}
KNOWN = KNOWN_SETTINGS
APP_SERVICES = {"api": "services.api", "worker": "services.worker"}
INFRASTRUCTURE = ("postgres", "redis", "catcher")
IMAGE = "flowline:local"
# What only this stack can set: its own services' addresses, the ports inside the containers,
# the health file, and the grace period that stop_grace_period must outlast. Everything else
# is the user's, from .env.
STACK_BOUND = {
    "DATABASE_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "SMTP_HOST",
    "SMTP_PORT",
    "API_HOST",
    "API_PORT",
    "WORKER_HEALTH_FILE",
    "WORKER_SHUTDOWN_GRACE_SECONDS",
}
# Values for the variables compose requires (${NAME:?message}) when a test interpolates.
REQUIRED_SAMPLES = {"API_ADMIN_KEY": "fl_admin_" + "x" * 43, "TASK_LINK_SECRET": "s" * 43}

# --- docker-compose.yml


@cache
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict), "docker-compose.yml is not a mapping"
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return dict(services[name])


def environment(name: str) -> dict[str, str]:
    """A service's environment in either compose syntax (mapping or list of NAME=value)."""
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def interpolated(value: str) -> str:
    """The value compose uses when none of the referenced variables is set (a required one
    takes its sample)."""

    def substitute(match: re.Match[str]) -> str:
        if match["op"] and match["op"].endswith("?"):
            return REQUIRED_SAMPLES[match["name"]]
        return match["arg"] or ""

    return _VARIABLE.sub(substitute, value)


def variables_in(value: str) -> dict[str, str]:
    """name -> operator (`:-`, `:?`, ... or empty) of each ${...} in a value."""
    return {match["name"]: match["op"] or "" for match in _VARIABLE.finditer(value)}


def as_list(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def published_ports(name: str) -> dict[int, str]:
    """Container port -> host port, for the ports a service publishes (short or long syntax)."""
    published: dict[int, str] = {}
    for port in service(name).get("ports") or []:
        if isinstance(port, dict):
            published[int(port["target"])] = str(port.get("published", ""))
        else:
            *host, container = str(port).split(":")
            published[int(container.split("/")[0])] = host[-1] if host else ""
    return published


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(us|ms|s|m|h)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def seconds(duration: str) -> float:
    assert re.fullmatch(f"(?:{_DURATION.pattern})+", duration), f"not a duration: {duration!r}"
    return sum(float(amount) * _UNITS[unit] for amount, unit in _DURATION.findall(duration))


SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"


def test_the_vendored_schema_is_the_one_cited() -> None:
    cited = (ROOT / "deploy" / "schemas" / "README.md").read_text()
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() in cited
    assert "check-jsonschema 0.39.0" in cited and "check-jsonschema 0.39.0" in (__doc__ or "")


def test_the_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in Draft202012Validator(schema).iter_errors(compose())
    ]
    assert not problems, "\n".join(problems)


def test_the_schema_check_catches_a_mistake() -> None:
    """The validation above can fail: a misspelt key and a wrong type are reported."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose()))
    broken["services"]["worker"]["helthcheck"] = broken["services"]["worker"].pop("healthcheck")
    broken["services"]["api"]["ports"] = "8000:8000"
    messages = [error.message for error in Draft202012Validator(schema).iter_errors(broken)]
    assert any("helthcheck" in message for message in messages), messages
    assert any("is not of type 'array'" in message for message in messages), messages


def test_the_stack_has_its_services() -> None:
    assert set(compose()["services"]) >= {*INFRASTRUCTURE, "api", "worker", "proxy"}


def flowline_services() -> list[str]:
    return [name for name, s in compose()["services"].items() if s.get("image") == IMAGE]


def test_every_published_port_listens_on_loopback_only() -> None:
    for name, definition in compose()["services"].items():
        for port in definition.get("ports") or []:
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this machine"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_reads_an_optional_env_file(name: str) -> None:
    assert service(name).get("env_file") == [{"path": ".env", "required": False}]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_setting_is_reachable_from_env(name: str) -> None:
    """A variable under `environment:` wins over .env: only the stack's own addresses and
    container-side values are fixed there; any other is taken from .env or the shell."""
    for variable, value in environment(name).items():
        from_user = variables_in(value).get(variable) is not None
        assert from_user or variable in STACK_BOUND, (
            f"{name} fixes {variable}={value!r}: a user could not set it in .env"
        )


def test_the_api_needs_the_operators_key_from_env() -> None:
    value = environment("api")["API_ADMIN_KEY"]
    assert variables_in(value) == {"API_ADMIN_KEY": ":?"}, "compose must refuse to start without"
    assert len(REQUIRED_SAMPLES["API_ADMIN_KEY"]) >= 24


@pytest.mark.parametrize("name", APP_SERVICES)
def test_webhooks_may_reach_the_catcher(name: str) -> None:
    allowed = interpolated(environment(name)["WEBHOOK_ALLOWED_HOSTS"]).split(",")
    assert "catcher" in allowed
    assert "WEBHOOK_ALLOWED_HOSTS" in variables_in(environment(name)["WEBHOOK_ALLOWED_HOSTS"])


def test_the_catcher_takes_the_apps_email_and_webhooks_and_shows_them_on_loopback() -> None:
    catcher = service("catcher")
    command = as_list(catcher["command"])
    assert command[:3] == ["python", "-m", "dev.mailcatcher"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options["--host"] == "0.0.0.0"  # inside its container; published on loopback only
    for name in APP_SERVICES:
        assert environment(name)["SMTP_HOST"] == "catcher"
        assert environment(name)["SMTP_PORT"] == options["--port"]
    assert published_ports("catcher") == {int(options["--http-port"]): options["--http-port"]}
    assert catcher["image"] == IMAGE
    probe = " ".join(as_list(catcher["healthcheck"]["test"]))
    assert f"127.0.0.1:{options['--http-port']}/api/messages" in probe


def test_the_readme_sends_docker_webhooks_to_the_catcher() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "http://catcher:8025/" in readme
    assert "webhook.site" not in readme


def test_redis_keeps_an_append_only_file_flushed_before_it_answers() -> None:
    command = as_list(service("redis")["command"])
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "always"
    assert any(str(v).endswith(":/data") for v in service("redis")["volumes"])


@pytest.mark.parametrize(("name", "module"), APP_SERVICES.items())
def test_app_services_run_their_entry_point(name: str, module: str) -> None:
    assert as_list(service(name)["command"]) == ["python", "-m", module]
    assert "entrypoint" not in service(name)


def test_api_and_worker_run_the_image_built_from_the_dockerfile() -> None:
    for name in APP_SERVICES:
        build = service(name).get("build")
        assert build is not None, f"{name} is not built from the Dockerfile"
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile")
        assert (ROOT / context).resolve() == ROOT
        assert dockerfile in (None, "Dockerfile")
    assert service("api").get("image") == service("worker").get("image")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_every_variable_set_for_the_app_is_a_setting(name: str) -> None:
    unknown = sorted(set(environment(name)) - KNOWN)
    assert not unknown, f"{name} sets variables Flowline does not read: {unknown}"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_environment_is_valid(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS:
        monkeypatch.delenv(setting, raising=False)
    values = {key.lower(): interpolated(value) for key, value in environment(name).items()}
    Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_connects_to_the_compose_services(name: str) -> None:
    env = environment(name)
    database = urlsplit(env["DATABASE_URL"])
    postgres = environment("postgres")
    assert database.hostname == "postgres"
    assert (database.port or 5432) == 5432
    assert database.username == postgres.get("POSTGRES_USER", "postgres")
    assert database.password == postgres.get("POSTGRES_PASSWORD")
    assert database.path.strip("/") == postgres.get("POSTGRES_DB", database.path.strip("/"))
    assert env["REDIS_HOST"] == "redis"
    assert env.get("REDIS_PORT", "6379") == "6379"
    assert env["SMTP_HOST"] == "catcher"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_waits_for_healthy_infrastructure(name: str) -> None:
    depends_on = service(name).get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions, not a list"
    for dependency in INFRASTRUCTURE:
        assert depends_on.get(dependency, {}).get("condition") == "service_healthy", dependency


def test_the_worker_starts_after_the_api_has_migrated() -> None:
    assert service("worker")["depends_on"]["api"]["condition"] == "service_healthy"


def test_every_service_waited_for_has_a_healthcheck() -> None:
    for name, definition in compose()["services"].items():
        for dependency, condition in (definition.get("depends_on") or {}).items():
            if condition.get("condition") != "service_healthy":
                continue
            check = service(dependency).get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), (
                f"{name} waits for {dependency} to be healthy, which has no healthcheck"
            )


def test_the_api_listens_in_the_container_and_is_probed_on_readyz() -> None:
    env = environment("api")
    port = int(interpolated(env.get("API_PORT", "8000")))
    assert env.get("API_HOST") == "0.0.0.0"
    assert [str(p) for p in service("api").get("expose", [])] == [str(port)]
    probe = " ".join(as_list(service("api")["healthcheck"]["test"]))
    assert f":{port}/readyz" in probe
    assert "curl" not in probe and "wget" not in probe, "the slim image has neither"


def test_the_api_can_be_scaled_behind_the_proxy() -> None:
    api = service("api")
    assert "container_name" not in api and "hostname" not in api
    assert not api.get("ports"), "replicas cannot share a host port: the proxy publishes it"
    port = interpolated(environment("api")["API_PORT"])
    proxy = service("proxy")
    assert published_ports("proxy") == {8000: "8000"}
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    (mount,) = proxy["volumes"]
    source, target, mode = str(mount).split(":")
    assert target == "/etc/nginx/conf.d/default.conf" and mode == "ro"
    conf = (ROOT / source).read_text()
    # Docker's DNS answers with every replica; a variable makes nginx ask it again.
    assert re.search(r"^resolver 127\.0\.0\.11 valid=\d+s", conf, re.M)
    assert re.search(rf"set \$api http://api:{port};\s+proxy_pass \$api;", conf)
    assert re.search(r"^\s*listen 8000;", conf, re.M)
    assert "client_max_body_size 0;" in conf, "the API answers 413 itself, with a message"


def test_the_worker_can_be_scaled() -> None:
    worker = service("worker")
    assert "container_name" not in worker
    assert "hostname" not in worker
    assert not worker.get("ports"), "replicas cannot share a host port"
    assert "WORKER_CONSUMER_NAME" not in environment("worker"), "replicas need distinct names"
    concurrency = environment("worker")["WORKER_CONCURRENCY"]
    assert concurrency.startswith("${WORKER_CONCURRENCY"), "users set it when starting the stack"
    assert interpolated(concurrency) == "32"


def test_the_worker_has_a_healthcheck_on_its_health_file() -> None:
    worker = service("worker")
    assert environment("worker")["WORKER_HEALTH_FILE"].startswith("/tmp/")
    assert as_list(worker["healthcheck"]["test"]) == [
        "CMD",
        "python",
        "-m",
        "services.worker.healthcheck",
    ]
    dead_after = Settings.model_fields["worker_dead_after_seconds"].default
    check = worker["healthcheck"]
    assert seconds(check["interval"]) * check["retries"] >= dead_after / 2


@pytest.mark.parametrize("name", APP_SERVICES)
def test_the_app_is_restarted_and_given_time_to_shut_down(name: str) -> None:
    definition = service(name)
    grace = interpolated(environment(name).get("WORKER_SHUTDOWN_GRACE_SECONDS", ""))
    grace_seconds = float(grace or Settings.model_fields["worker_shutdown_grace_seconds"].default)
    assert definition.get("restart") == "unless-stopped"
    assert seconds(str(definition.get("stop_grace_period", "10s"))) > grace_seconds


def test_named_volumes_are_declared() -> None:
    declared = set(compose().get("volumes") or {})
    for name, definition in compose()["services"].items():
        for volume in definition.get("volumes") or []:
            source = volume["source"] if isinstance(volume, dict) else str(volume).split(":")[0]
            if not source.startswith((".", "/", "~", "$")):
                assert source in declared, f"{name} uses undeclared volume {source!r}"


# --- Dockerfile and .dockerignore


@cache
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
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
    return instructions


def final_stage() -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(dockerfile()) if keyword == "FROM")
    return dockerfile()[last_from:]


def index_of(keyword: str, *needles: str) -> int:
    for i, (instruction, arguments) in enumerate(dockerfile()):
        if instruction == keyword and all(needle in arguments for needle in needles):
            return i
    raise AssertionError(f"Dockerfile has no {keyword} with {needles}")


def copied_sources() -> list[str]:
    """What the Dockerfile copies from the build context (not from another stage)."""
    sources: list[str] = []
    for keyword, arguments in dockerfile():
        if keyword not in ("COPY", "ADD"):
            continue
        parts = shlex.split(arguments)
        if any(part.startswith("--from") for part in parts):
            continue
        sources += [part for part in parts if not part.startswith("--")][:-1]
    return sources


def test_the_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    bases = [arguments.split()[0] for keyword, arguments in dockerfile() if keyword == "FROM"]
    assert len(bases) >= 2
    assert all(base == "python:3.11-slim" for base in bases), bases


def test_the_dockerfile_installs_the_locked_dependencies_before_the_source() -> None:
    lock_files = index_of("COPY", "pyproject.toml", "uv.lock")
    first_sync = index_of("RUN", "uv sync", "--frozen", "--no-dev")
    source = min(index_of("COPY", "libs"), index_of("COPY", "services"))
    assert lock_files < first_sync < source, "the dependency layer would not be cached"
    assert "README.md" in copied_sources(), "pyproject.toml names README.md: the build needs it"


def test_the_image_runs_the_api_by_default() -> None:
    stage = final_stage()
    commands = [json.loads(arguments) for keyword, arguments in stage if keyword == "CMD"]
    assert commands[-1:] == [["python", "-m", "services.api"]], "CMD must be exec form"
    assert not [arguments for keyword, arguments in stage if keyword == "ENTRYPOINT"]
    assert ("EXPOSE", "8000") in stage
    assert ("WORKDIR", "/app") in stage


def test_the_image_environment_reaches_the_venv_and_listens_everywhere() -> None:
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(arguments))
    assert env["PATH"].startswith("/app/.venv/bin:")
    assert env["API_HOST"] == "0.0.0.0"
    python = {"PATH", "VIRTUAL_ENV", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
    assert not sorted(set(env) - python - SETTINGS), "the image sets unknown variables"


def test_the_image_runs_as_a_non_root_user() -> None:
    users = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def dockerignore() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            negated = line.startswith("!")
            rules.append((negated, glob_regex(line.lstrip("!").strip().strip("/"))))
    return rules


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    tokens = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    regex, i = "", 0
    while i < len(pattern):
        token = next((t for t in tokens if pattern.startswith(t, i)), None)
        if token:
            regex, i = regex + tokens[token], i + len(token)
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            regex, i = regex + pattern[i : end + 1], end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def ignored(path: str) -> bool:
    """Whether `docker build` leaves this path out of the context (the last rule matching the
    path or one of its parent directories wins)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negated, regex in dockerignore():
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negated
    return result


def test_the_build_context_holds_everything_the_dockerfile_copies() -> None:
    for source in copied_sources():
        path = ROOT / source
        assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            if "__pycache__" not in relative:
                assert not ignored(relative), f".dockerignore leaves out {relative}"


@pytest.mark.parametrize("path", [".env", ".git/HEAD", ".venv/bin/python", ".mail/1.eml"])
def test_the_build_context_leaves_out_secrets_and_local_state(path: str) -> None:
    assert ignored(path)


# --- entry points and .env.example


def image_commands() -> list[tuple[str, list[str]]]:
    """(where, command) for every command a container of the image runs or probes with."""
    found = [("Dockerfile CMD", json.loads(a)) for k, a in final_stage() if k == "CMD"]
    for name in flowline_services():
        definition = service(name)
        found.append((f"{name} command", as_list(definition["command"])))
        if "healthcheck" in definition:
            found.append((f"{name} healthcheck", as_list(definition["healthcheck"]["test"])))
    return found


def test_every_command_the_image_runs_exists_in_the_image() -> None:
    commands = image_commands()
    assert {"api command", "worker command", "catcher command", "worker healthcheck"} <= {
        where for where, _ in commands
    }
    problems = [f"{where}: {p}" for where, command in commands for p in command_problems(command)]
    assert not problems, problems


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        (["python", "-m", "bench"], "bench is not in the image"),
        (["python", "-m", "services.nothing"], "services.nothing does not exist"),
        (["python", "-c", "import ("], "does not compile"),
    ],
)
def test_the_image_check_catches_what_it_could_not_run(command: list[str], problem: str) -> None:
    assert problem in " ".join(command_problems(command))


@pytest.mark.parametrize("module", APP_SERVICES.values())
def test_the_entry_modules_exist_and_expose_main(module: str) -> None:
    assert importlib.util.find_spec(f"{module}.__main__") is not None
    assert callable(importlib.import_module(f"{module}.__main__").main)


def env_example() -> list[tuple[str, str]]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return [
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in lines)
        if name.strip() and not name.lstrip().startswith("#")
    ]


def test_env_example_lists_exactly_the_settings() -> None:
    names = [name for name, _ in env_example()]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert not sorted(set(names) - SETTINGS), "listed but not read by Flowline"
    assert not sorted(SETTINGS - set(names)), "read by Flowline but not listed"


def test_env_example_values_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in SETTINGS:
        monkeypatch.delenv(setting, raising=False)
    documented = Settings(_env_file=None, **{n.lower(): v for n, v in env_example()})  # type: ignore[call-arg]
    for name, field in Settings.model_fields.items():
        assert getattr(documented, name) == field.default, f"{name.upper()} default differs"
