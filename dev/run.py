"""`make run`: the whole stack on this machine, without Docker. Starts the API, one worker and
(unless told not to) a local catcher for emails and webhooks (dev.mailcatcher) as child
processes against the PostgreSQL and Redis in your settings (.env or environment), waits until
each of them is up, prints where everything is, and stops them all on Ctrl-C.

It exits 0 after Ctrl-C (or SIGTERM), and 1 when the stack does not come up or a process of it
dies: `make run` fails then, instead of leaving half a stack behind.

Variables of its own (not Flowline settings):
  CATCHER=0             no catcher (it is off anyway when SMTP_HOST is not this machine)
  CATCHER_HTTP_PORT     the catcher's page and webhook port (default 8025)
  CATCHER_DIR           where the catcher keeps its copies (default .mail/)
  RUN_START_TIMEOUT     seconds the stack has to come up (default 60)
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from workflow_core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
ADMIN_KEY_PREFIX = "fl_admin_"
_OFF = {"0", "false", "no", "off"}


def catcher_address(smtp_host: str, flag: str | None) -> str | None:
    """Where the catcher listens, or None when it is not to run: off when asked (CATCHER=0),
    and off when SMTP_HOST is not this machine (the emails go to a real server then). It only
    ever listens on a loopback address."""
    if flag is not None and flag.strip().lower() in _OFF:
        return None
    if smtp_host.strip().lower() in ("localhost", "localhost.localdomain", ""):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(smtp_host.strip("[]"))
    except ValueError:
        return None  # a host name: a real server
    return str(address) if address.is_loopback else None


def with_allowed_host(existing: str, host: str) -> str:
    """WEBHOOK_ALLOWED_HOSTS with `host` added (once)."""
    hosts = [part.strip() for part in existing.split(",") if part.strip()]
    return ",".join(hosts if host in hosts else [*hosts, host])


def new_admin_key() -> str:
    """A development admin key: `fl_admin_` and 43 URL-safe characters (32 random bytes)."""
    return ADMIN_KEY_PREFIX + secrets.token_urlsafe(32)


def port_variable(name: str, default: int, upper: int = 65535) -> int:
    """A whole number from 1 to `upper` (a port, by default) from the environment, or stop
    with one line naming the variable."""
    value = os.environ.get(name) or str(default)
    if not value.isdigit() or not 1 <= int(value) <= upper:
        sys.exit(f"make run: invalid {name}={value!r}: must be a whole number from 1 to {upper}")
    return int(value)


def _configured(name: str) -> str:
    """A variable from the environment, else from .env, as Flowline's settings read them."""
    if name in os.environ:
        return os.environ[name]
    values = dotenv_values(".env") if Path(".env").is_file() else {}
    return values.get(name) or ""


@dataclass
class Child:
    name: str
    command: list[str]
    ready: Callable[[], bool]
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(self.command, cwd=ROOT, env=env)

    @property
    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    return check


def _port_open(host: str, port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    return check


def _url_host(host: str) -> str:
    """An address to reach a server listening on `host` (every interface: loopback)."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


@dataclass
class Plan:
    children: list[Child]
    env: dict[str, str]
    admin_key: str
    key_generated: bool
    catcher: str | None
    catcher_off: str
    """Why there is no catcher, when there is none."""
    catcher_http: str
    mail_dir: Path


def plan(settings: Settings) -> Plan:
    mail_dir = Path(os.environ.get("CATCHER_DIR") or ROOT / ".mail")
    health_file = settings.worker_health_file or str(ROOT / ".run" / "worker.alive")
    Path(health_file).parent.mkdir(parents=True, exist_ok=True)
    Path(health_file).unlink(missing_ok=True)  # a file left by an earlier run is no proof
    admin_key = _configured("API_ADMIN_KEY")
    key_generated = not admin_key
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        "API_ADMIN_KEY": admin_key or new_admin_key(),
        # The API and the worker share it; one made for this run suits a laptop.
        "TASK_LINK_SECRET": _configured("TASK_LINK_SECRET") or secrets.token_urlsafe(32),
        "WORKER_HEALTH_FILE": health_file,
    }
    flag = os.environ.get("CATCHER")
    catcher = catcher_address(settings.smtp_host, flag)
    catcher_off = (
        f"CATCHER={flag}"
        if catcher_address(settings.smtp_host, None) is not None
        else f"SMTP_HOST={settings.smtp_host} is not this machine"
    )
    http_port = port_variable("CATCHER_HTTP_PORT", 8025)
    catcher_http = f"http://{_url_host(catcher or '127.0.0.1')}:{http_port}/"
    api = f"http://{_url_host(settings.api_host)}:{settings.api_port}"
    children = [
        Child("api", [sys.executable, "-m", "services.api"], _http_ok(f"{api}/healthz")),
        Child("worker", [sys.executable, "-m", "services.worker"], Path(health_file).is_file),
    ]
    if catcher is not None:
        env["WEBHOOK_ALLOWED_HOSTS"] = with_allowed_host(
            _configured("WEBHOOK_ALLOWED_HOSTS"), catcher
        )
        command = [sys.executable, "-m", "dev.mailcatcher", "--host", catcher]
        command += ["--port", str(settings.smtp_port), "--http-port", str(http_port)]
        command += ["--dir", str(mail_dir)]
        ready_http = _http_ok(f"{catcher_http}api/messages")
        ready_smtp = _port_open(catcher, settings.smtp_port)
        children.insert(0, Child("catcher", command, lambda: ready_http() and ready_smtp()))
    return Plan(
        children,
        env,
        env["API_ADMIN_KEY"],
        key_generated,
        catcher,
        catcher_off,
        catcher_http,
        mail_dir,
    )


class Stopping:
    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._request)
        signal.signal(signal.SIGTERM, self._request)

    def _request(self, *_: object) -> None:
        self.requested = True


def _failed(children: list[Child]) -> Child | None:
    return next((child for child in children if child.exited is not None), None)


def start_all(the_plan: Plan, stopping: Stopping, timeout: float) -> str | None:
    """Start every child and wait until each is up: None, or why the stack did not come up."""
    for child in the_plan.children:
        child.start(the_plan.env)
    deadline = time.monotonic() + timeout
    waiting = list(the_plan.children)
    while waiting:
        if stopping.requested:
            return "stopped before it was up"
        if (dead := _failed(the_plan.children)) is not None:
            return f"{dead.name} exited with {dead.exited} while starting"
        if time.monotonic() > deadline:
            names = ", ".join(child.name for child in waiting)
            return f"not up after {timeout:g} s: {names}"
        waiting = [child for child in waiting if not child.ready()]
        time.sleep(0.2)
    return None


def stop_all(children: list[Child]) -> None:
    for child in children:
        if child.exited is None and child.process is not None:
            child.process.send_signal(signal.SIGTERM)
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def banner(settings: Settings, the_plan: Plan) -> str:
    api = f"http://{_url_host(settings.api_host)}:{settings.api_port}"
    if the_plan.catcher is None:
        catcher = (
            f"  catcher      off ({the_plan.catcher_off}): emails go to "
            f"{settings.smtp_host}:{settings.smtp_port}"
        )
    else:
        catcher = (
            f"  catcher      {the_plan.catcher_http}  (emails and webhook calls, newest first)\n"
            f"               SMTP on {the_plan.catcher}:{settings.smtp_port}; webhooks to "
            f"{the_plan.catcher_http}<any path> are allowed;\n"
            f"               copies in {the_plan.mail_dir}/"
        )
    origin = "made for this run" if the_plan.key_generated else "API_ADMIN_KEY from your settings"
    return f"""
Flowline is running.
  API          {api}  (docs: {api}/docs, health: {api}/readyz)
  worker       one process, consuming stream {settings.redis_stream_name!r}
{catcher}
  PostgreSQL   {_hide_password(settings.database_url)}
  Redis        {settings.redis_host}:{settings.redis_port}
  admin key    {the_plan.admin_key}  ({origin})

Try it:
  curl -s {api}/workflows -H "Authorization: Bearer {the_plan.admin_key}"

Press Ctrl-C to stop.
"""


def _hide_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def main() -> None:
    settings = load_settings()
    the_plan = plan(settings)
    stopping = Stopping()
    timeout = port_variable("RUN_START_TIMEOUT", 60, upper=3600)
    problem = start_all(the_plan, stopping, timeout)
    if problem is not None:
        stop_all(the_plan.children)
        if stopping.requested:
            sys.exit(0)
        sys.exit(f"make run: the stack did not start: {problem}")
    print(banner(settings, the_plan), flush=True)
    dead = None
    while not stopping.requested and dead is None:
        time.sleep(0.2)
        dead = _failed(the_plan.children)
    stop_all(the_plan.children)
    if dead is not None and not stopping.requested:
        sys.exit(f"make run: {dead.name} exited with {dead.exited}; stopped the others")
    print("Flowline stopped.", flush=True)


if __name__ == "__main__":
    main()
