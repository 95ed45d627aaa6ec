"""From raw observations (the load generator's records, the sink's records) to figures."""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Email:
    arrived: float
    submission_id: str
    message_id: str
    client_port: int


class SinkTail:
    """Follows the sink's records file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.emails: list[Email] = []
        self._offset = 0
        self._partial = b""

    def read(self) -> list[Email]:
        """The emails recorded since the last call."""
        try:
            with self.path.open("rb") as records:
                records.seek(self._offset)
                chunk = records.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        new: list[Email] = []
        for line in lines:
            with contextlib.suppress(ValueError):
                arrived, submission, message_id, port = line.decode().split("\t")
                new.append(Email(float(arrived), submission, message_id, int(port)))
        self.emails.extend(new)
        return new


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list."""
    if not ordered:
        return None
    rank = max(math.ceil(q / 100 * len(ordered)), 1)
    return ordered[rank - 1]


def summary_ms(seconds: list[float]) -> dict[str, float | None]:
    ordered = sorted(s * 1000 for s in seconds)
    figures: dict[str, float | None] = {f"p{q}": percentile(ordered, q) for q in (50, 95, 99)}
    figures["max"] = ordered[-1] if ordered else None
    figures["mean"] = statistics.fmean(ordered) if ordered else None
    return figures


def rate(count: int, seconds: float) -> float | None:
    return count / seconds if seconds > 0 and count else None


def submissions(load: dict[str, Any]) -> dict[str, Any]:
    """API-side figures from the load generator's records."""
    sent, received, status = load["sent"], load["received"], load["status"]
    accepted = [i for i, code in enumerate(status) if code == 202]
    first_send = min(sent) if sent else 0.0
    last_response = max(received) if received else 0.0
    figures: dict[str, Any] = {
        "submitted": len(sent),
        "accepted": len(accepted),
        "errors": len(sent) - len(accepted),
        "errors_by_kind": load["errors"],
        "first_send": first_send,
        "last_send": max(sent) if sent else 0.0,
        "last_response": last_response,
        "load_seconds": last_response - first_send,
        "accepted_per_s": rate(len(accepted), last_response - first_send),
        "response_ms": summary_ms([received[i] - sent[i] for i in accepted]),
        "connections": load["connections"],
        "connects": load["connects"],
    }
    if load["scheduled"] is not None:
        lag = [s - due for s, due in zip(sent, load["scheduled"], strict=True)]
        figures["send_lag_ms"] = summary_ms(lag)
        span = figures["last_send"] - first_send
        figures["sent_per_s"] = rate(len(sent) - 1, span)
    return figures


def deliveries(
    load: dict[str, Any], emails: list[Email], since: float
) -> tuple[dict[str, Any], list[float]]:
    """Email-side figures: delivered, lost, duplicates, rates from `since`, latencies."""
    submitted_at = {
        sid: load["sent"][i] for i, sid in enumerate(load["ids"]) if load["status"][i] == 202
    }
    first_arrival: dict[str, float] = {}
    by_submission: Counter[str] = Counter()
    by_message: Counter[str] = Counter()
    for email in emails:
        by_submission[email.submission_id] += 1
        by_message[email.message_id] += 1
        if email.submission_id in submitted_at:
            previous = first_arrival.get(email.submission_id, email.arrived)
            first_arrival[email.submission_id] = min(previous, email.arrived)
    latencies = [first_arrival[sid] - submitted_at[sid] for sid in first_arrival]
    last_email = max(first_arrival.values(), default=0.0)
    first_send = min(submitted_at.values(), default=0.0)
    delivered = len(first_arrival)
    figures: dict[str, Any] = {
        "emails_received": len(emails),
        "delivered": delivered,
        "lost": len(submitted_at) - delivered,
        "unexpected": sum(n for sid, n in by_submission.items() if sid not in submitted_at),
        "duplicates_by_message_id": sum(n - 1 for n in by_message.values()),
        "duplicates_by_submission": sum(
            n - 1 for sid, n in by_submission.items() if sid in submitted_at
        ),
        "first_email": min(first_arrival.values(), default=0.0),
        "last_email": last_email,
        "e2e_seconds": last_email - first_send if delivered else 0.0,
        "delivered_per_s": rate(delivered, last_email - first_send),
        "drain_per_s": rate(delivered, last_email - since) if since else None,
        "latency_ms": summary_ms(latencies),
    }
    return figures, latencies


def emails_per_worker(
    emails: list[Email], smtp_ports: dict[int, int], worker_names: dict[int, str]
) -> dict[str, int]:
    if len(worker_names) == 1:
        return {next(iter(worker_names.values())): len(emails)}
    counts: Counter[str] = Counter()
    for email in emails:
        pid = smtp_ports.get(email.client_port)
        counts[worker_names.get(pid, "unattributed") if pid else "unattributed"] += 1
    return dict(counts)


def log_findings(name: str, path: Path, limit: int = 20) -> list[dict[str, Any]]:
    """Warnings, errors and tracebacks in a child's log, grouped by event."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        return []
    for line in lines:
        level, event = _classify(line)
        if level is None:
            continue
        entry = found.setdefault(
            (level, event),
            {"process": name, "level": level, "event": event, "count": 0, "example": ""},
        )
        entry["count"] += 1
        entry["example"] = entry["example"] or line.decode(errors="replace")[:400]
    return sorted(found.values(), key=lambda e: -e["count"])[:limit]


def _classify(line: bytes) -> tuple[str | None, str]:
    if line.startswith(b"{"):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None, ""
        level = str(record.get("level", "")).lower()
        if level in {"warning", "error", "critical", "exception"}:
            return level, str(record.get("event", "?"))[:120]
        return None, ""
    text = line.decode(errors="replace")
    for level in ("CRITICAL", "ERROR", "WARNING"):
        if text.startswith(level):
            return level.lower(), text[len(level) :].strip()[:120]
    if text.startswith("Traceback"):
        return "error", "Traceback"
    return None, ""


def median_tree(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every number found at the same place in all runs."""
    first = runs[0]
    merged: dict[str, Any] = {}
    for key, value in first.items():
        values = [run.get(key) for run in runs]
        if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
            merged[key] = median_tree([v for v in values if isinstance(v, dict)])
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            merged[key] = round(statistics.median([v for v in values if isinstance(v, int)]))
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = statistics.median([v for v in values if isinstance(v, int | float)])
        elif len(runs) == 1 or all(v == value for v in values):
            merged[key] = value
    return merged
