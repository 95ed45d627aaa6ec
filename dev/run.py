"""`make run`: the whole stack on this machine, without Docker. Starts a local catcher for
emails and webhooks (dev.mailcatcher), the API and one worker as child processes against
the PostgreSQL and Redis in your settings (.env or environment), prints where everything is,
and stops them all on Ctrl-C.

The catcher listens on loopback, where webhooks may not go by default: unless you set
WEBHOOK_ALLOWED_HOSTS yourself, the API and the worker get the catcher's host in it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from workflow_core.destinations import AllowedHosts
from workflow_core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
CATCHER_ADDRESS = "127.0.0.1"


def main() -> None:
    settings = load_settings()
    mail_dir = ROOT / ".mail"
    children = {
        "mail": [
            sys.executable,
            "-m",
            "dev.mailcatcher",
            "--host",
            settings.smtp_host,
            "--port",
            str(settings.smtp_port),
            "--http-port",
            os.environ.get("CATCHER_HTTP_PORT", "8025"),
            "--dir",
            str(mail_dir),
        ],
        "api": [sys.executable, "-m", "services.api"],
        "worker": [sys.executable, "-m", "services.worker"],
    }
    allowed = settings.webhook_allowed_hosts or catcher_hosts(settings)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "LOG_FORMAT": os.environ.get("LOG_FORMAT", "console"),
        "WEBHOOK_ALLOWED_HOSTS": allowed,
    }
    processes = {
        name: subprocess.Popen(command, cwd=ROOT, env=env) for name, command in children.items()
    }
    catcher_http = f"http://{CATCHER_ADDRESS}:{os.environ.get('CATCHER_HTTP_PORT', '8025')}/"
    print(
        f"""
Flowline is starting:
  API          http://{settings.api_host}:{settings.api_port}  (docs: /docs, health: /readyz)
  catcher      smtp://{settings.smtp_host}:{settings.smtp_port} for emails, and
               {catcher_http} for webhooks (GET it to list what was caught);
               both printed here and saved in {mail_dir}/
  webhooks     may call these internal hosts: {allowed} (WEBHOOK_ALLOWED_HOSTS)
  PostgreSQL   {settings.database_url}
  Redis        {settings.redis_host}:{settings.redis_port} stream {settings.redis_stream_name!r}
Press Ctrl-C to stop.
""",
        flush=True,
    )
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    while not stopping and all(p.poll() is None for p in processes.values()):
        time.sleep(0.2)
    for name, process in processes.items():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        elif not stopping:
            print(f"{name} exited with {process.returncode}; stopping the others", flush=True)
    for process in processes.values():
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def catcher_hosts(settings: Settings) -> str:
    """The catcher's HTTP side as webhooks name it: the host it listens on (SMTP_HOST) and
    127.0.0.1, the address printed for it."""
    hosts = [CATCHER_ADDRESS]
    with contextlib.suppress(ValueError):  # a host the setting cannot name: 127.0.0.1 only
        AllowedHosts.parse(settings.smtp_host)
        hosts.insert(0, settings.smtp_host)
    return ",".join(dict.fromkeys(hosts))


if __name__ == "__main__":
    main()
