"""The printed table and the JSON file."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from bench.stack import unclean_exits
from workflow_core.settings import Settings

# CPU rows in the order printed, with a note; the remaining labels (worker-N ...) follow "api".
CPU_ROWS = [
    ("api", "API process"),
    ("@workers", ""),
    ("api+workers", "API + worker(s): the cost of Flowline itself"),
    ("postgres (bench db)", "backends serving this run's database"),
    ("postgres (server)", "postmaster, WAL writer, checkpointer (shared)"),
    ("redis-server", "shared with every other Redis user"),
    ("sink", "SMTP sink (aiosmtpd)"),
    ("loadgen (send loop)", "load generator, first send to last response"),
    ("harness", "this process: psutil polling, sink following"),
    ("postgres (other dbs)", "other users' databases: not Flowline's"),
    ("untracked processes", "anything else busy on the machine"),
    ("machine (all processes)", "all CPUs, busy time over the run"),
]


def machine() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def command() -> dict[str, str]:
    args = shlex.join(sys.argv[1:])
    python = f"{os.path.relpath(sys.executable)} -m bench {args}".strip()
    found = {"python": python}
    if os.environ.get("MAKELEVEL"):
        found["make"] = f'make bench ARGS="{args}"' if args else "make bench"
    return found


def servers(settings: Settings) -> dict[str, str]:
    url = make_url(settings.database_url)
    return {
        "postgresql": f"{url.username or ''}@{url.host or 'localhost'}:{url.port or 5432}",
        "redis": f"{settings.redis_host}:{settings.redis_port}/{settings.redis_db}",
    }


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _line(label: str, value: str, note: str = "") -> str:
    return f"  {label:<28}{value:>14}   {note}".rstrip()


def _latency_row(label: str, figures: dict[str, Any]) -> str:
    cells = "".join(f"{_n(figures.get(k), 1):>10}" for k in ("p50", "p95", "p99", "max"))
    return f"  {label:<28}{cells}  ms"


def _header(doc: dict[str, Any]) -> list[str]:
    opts, box = doc["options"], doc["machine"]
    if opts["rate"] is None:
        load = f"burst of {opts['n']:,} forms over {opts['conc']} keep-alive connections"
    else:
        load = f"{opts['n']:,} forms open-loop at {opts['rate']:g}/s (at most {opts['conc']} conn.)"
    workers = f"{opts['workers']} worker process(es) x WORKER_CONCURRENCY={opts['concurrency']}" + (
        "; worker started only after the load (--api-only)" if opts["api_only"] else ""
    )
    cmd = doc["command"]
    lines = [
        "",
        f"Flowline benchmark: {load}; {workers}",
        f"  command  {cmd.get('make', cmd['python'])}"
        + (f"   (= {cmd['python']})" if "make" in cmd else ""),
        f"  machine  {box['cpus']} CPUs, {box['cpu_model']}; {box['platform']}; "
        f"Python {box['python']}; {box['date']}",
        f"  servers  PostgreSQL {doc['servers']['postgresql']}, Redis {doc['servers']['redis']};"
        " fresh database and stream per run",
    ]
    if len(doc["runs"]) > 1:
        lines.append(f"  runs     {len(doc['runs'])}: every figure below is the median")
    return lines


def _throughput(s: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    api, mail = s["api"], s["emails"]
    lines = [
        "",
        "Throughput",
        _line(
            "API accepted",
            f"{_n(api['accepted_per_s'])} /s",
            f"{_n(api['accepted'])} x 202 in {_n(api['load_seconds'], 3)} s"
            " (first send -> last response)",
        ),
        _line(
            "emails delivered (e2e)",
            f"{_n(mail['delivered_per_s'])} /s",
            f"{_n(mail['delivered'])} in {_n(mail['e2e_seconds'], 3)} s (first send -> last email)",
        ),
    ]
    if opts["api_only"]:
        lines.append(
            _line(
                "worker drain",
                f"{_n(mail['drain_per_s'])} /s",
                "emails / (last email - workers reading)",
            )
        )
    if opts["rate"] is not None:
        lag = api["send_lag_ms"]
        lines.append(
            _line(
                "offered / achieved rate",
                f"{opts['rate']:g} / {_n(api.get('sent_per_s'))}",
                f"forms/s; send lag behind schedule p99 {_n(lag['p99'], 2)} ms,"
                f" max {_n(lag['max'], 2)} ms",
            )
        )
    return lines


def _latency(s: dict[str, Any]) -> list[str]:
    head = "".join(f"{k:>10}" for k in ("p50", "p95", "p99", "max"))
    return [
        "",
        f"{'Latency':<30}{head}",
        _latency_row("submit -> email arrival", s["emails"]["latency_ms"]),
        _latency_row("API response (202)", s["api"]["response_ms"]),
    ]


def _correctness(s: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    api, mail, end = s["api"], s["emails"], s.get("end_state", {})
    kinds = ", ".join(f"{k}: {v}" for k, v in (api.get("errors_by_kind") or {}).items())
    sink = mail.get("sink_summary", {})
    runs = end.get("runs_by_status")
    runs_text = ", ".join(f"{k} {v}" for k, v in runs.items()) if isinstance(runs, dict) else "-"
    return [
        "",
        "Correctness",
        _line("errors (non-202)", _n(api["errors"]), kinds),
        _line(
            "lost",
            _n(mail["lost"]),
            f"accepted, no email after {opts['timeout']:g} s without progress",
        ),
        _line(
            "duplicate emails",
            _n(mail["duplicates_by_message_id"]),
            f"same Message-ID; same submission id: {_n(mail['duplicates_by_submission'])};"
            f" sink's own count: {_n(sink.get('duplicates'))}",
        ),
        _line("emails for unknown ids", _n(mail["unexpected"])),
        _line(
            "end state",
            "",
            f"runs: {runs_text}; redelivered runs {_n(end.get('runs_redelivered'))};"
            f" dead letters {_n(end.get('dead_letters'))}; pending {_n(end.get('pending'))};"
            f" outbox unpublished {_n(end.get('outbox_unpublished'))}",
        ),
        *_database_work(end.get("pg_stat_database") or {}, api["accepted"]),
    ]


def _database_work(stats: dict[str, Any], accepted: int) -> list[str]:
    if "xact_commit" not in stats or not accepted:
        return []
    per = {k: v / accepted for k, v in stats.items() if isinstance(v, int | float)}
    return [
        _line(
            "PostgreSQL work per form",
            f"{per['xact_commit'] + per['xact_rollback']:.1f} tx",
            f"({per['xact_rollback']:.2f} rolled back); rows inserted {per['tup_inserted']:.1f},"
            f" updated {per['tup_updated']:.1f}, deleted {per['tup_deleted']:.1f},"
            f" fetched {per['tup_fetched']:.1f} (whole run, migration included)",
        )
    ]


def _cpu(s: dict[str, Any], opts: dict[str, Any]) -> list[str]:
    seconds, per_form, rss = s["cpu_seconds"], s["cpu_ms_per_form"], s["peak_rss_mib"]
    workers = sorted(k for k in seconds if k.startswith("worker-"))
    title = "CPU (load + drain)" if opts["api_only"] else "CPU (start of load -> end)"
    lines = ["", f"{title:<30}{'seconds':>10}{'ms/form':>10}{'peak RSS':>11}"]
    for label, note in CPU_ROWS:
        for row in workers if label == "@workers" else [label]:
            if row not in seconds:
                continue
            memory = f"{rss[row]:.0f} MiB" if row in rss else ""
            text = note or "worker process"
            lines.append(
                f"  {row:<28}{seconds[row]:>10.2f}{per_form[row]:>10.3f}{memory:>11}   {text}"
            )
    timings = s.get("timings", {})
    share = timings.get("untracked_share", 0.0)
    if share > 0.05:
        lines.append(
            f"  ! other processes kept {share:.0%} of the machine's CPU busy during the run"
            f" ({_n(timings.get('processes_forked'))} processes started meanwhile):"
            " figures are noisy. Busiest of those still running:"
        )
        for other in s.get("busiest_other_processes", [])[:3]:
            lines.append(
                f"    {other['cpu_seconds']:>6.2f} s  pid {other['pid']}  {other['command']}"
            )
    phases = s.get("phases") or {}
    if opts["api_only"] and phases:
        lines.append(
            f"  API alone during the load: {phases['api_during_load_ms_per_form']:.3f} ms/form;"
            f" worker(s) during the drain: {phases['workers_during_drain_ms_per_form']:.3f}"
            f" ms/form (their start-up, {phases['workers_start_up_s']:.2f} s, not counted)"
        )
    per_worker = s.get("emails_per_worker") or {}
    if len(workers) > 1 and per_worker:
        share = ", ".join(f"{k} {v}" for k, v in sorted(per_worker.items()))
        lines.append(f"  emails per worker (by SMTP connection): {share}")
    return lines


def _findings(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["", "Log findings (WARNING and above, all runs)"]
    merged: dict[tuple[str, str, str], int] = {}
    for run in runs:
        for f in run.get("log_findings", []):
            key = (f["process"], f["level"], f["event"])
            merged[key] = merged.get(key, 0) + f["count"]
    if not merged:
        lines.append("  none")
    for (process, level, event), count in sorted(merged.items(), key=lambda kv: -kv[1])[:15]:
        lines.append(f"  {count:>6} x {process} {level}: {event}")
    for run in runs:
        if run.get("logs"):
            lines.append(f"  run {run['run']} logs kept in {run['logs']}")
        for problem in run.get("cleanup_problems", []):
            lines.append(f"  run {run['run']} clean-up: {problem}")
        bad = unclean_exits(run.get("exit_codes", {}))
        if bad:
            lines.append(f"  run {run['run']} exit codes: {bad}")
    return lines


def _per_run(runs: list[dict[str, Any]]) -> list[str]:
    if len(runs) < 2:
        return []
    lines = ["", "Per run"]
    for run in runs:
        lines.append(
            f"  run {run['run']}: API {_n(run['api']['accepted_per_s'])}/s, emails"
            f" {_n(run['emails']['delivered_per_s'])}/s, e2e p50/p99"
            f" {_n(run['emails']['latency_ms']['p50'])}/{_n(run['emails']['latency_ms']['p99'])}"
            f" ms, API+workers {run['cpu_ms_per_form']['api+workers']:.3f} ms/form, errors"
            f" {run['api']['errors']}, lost {run['emails']['lost']},"
            f" duplicates {run['emails']['duplicates_by_message_id']}"
        )
    return lines


def table(doc: dict[str, Any]) -> str:
    summary, opts = doc["summary"], doc["options"]
    lines = _header(doc)
    lines += _throughput(summary, opts)
    lines += _latency(summary)
    lines += _correctness(summary, opts)
    lines += _cpu(summary, opts)
    lines += _per_run(doc["runs"])
    lines += _findings(doc["runs"])
    lines.append(f"\n  raw figures: {doc['json_path']}")
    return "\n".join(lines) + "\n"


def write_json(doc: dict[str, Any], results: Path) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    opts = doc["options"]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    mode = "burst" if opts["rate"] is None else f"rate{opts['rate']:g}"
    path = results / f"{stamp}-{mode}-{opts['n']}{'-api-only' if opts['api_only'] else ''}.json"
    doc["json_path"] = os.path.relpath(path)
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return path
