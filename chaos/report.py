"""Printing: progress lines while the soak runs, and the one table at the end."""

from __future__ import annotations

import sys
import time

from chaos.check import Findings

WIDTH = 100
EVIDENCE_SHOWN = 2
_STARTED = time.monotonic()


def say(message: str) -> None:
    print(f"chaos {time.monotonic() - _STARTED:7.1f}s  {message}", flush=True, file=sys.stdout)


def evidence_text(findings: Findings) -> str:
    return "".join(
        f"=== {reason}: {len(notes)}\n" + "".join(f"{note}\n" for note in notes) + "\n"
        for reason, notes in findings.evidence.items()
    )


def table(header: list[str], findings: Findings) -> str:
    lines = ["=" * WIDTH, *header]
    label_width = max(
        (len(label) for _, rows in findings.sections for label, _ in rows), default=20
    )
    for title, rows in findings.sections:
        lines.append(f"--- {title} ".ljust(WIDTH, "-"))
        lines += [f"  {label.ljust(label_width)}  {value}" for label, value in rows]
    if findings.evidence:
        title = f"--- evidence ({EVIDENCE_SHOWN} per reason; all in evidence.txt) "
        lines.append(title.ljust(WIDTH, "-"))
        for notes in findings.evidence.values():
            lines += [f"  {note}" for note in notes[:EVIDENCE_SHOWN]]
    lines.append("=" * WIDTH)
    lines += [f"warning: {warning}" for warning in findings.warnings]
    lines.append(verdict(findings))
    return "\n".join(lines) + "\n"


def verdict(findings: Findings) -> str:
    if findings.failures:
        return "VERDICT: FAIL - " + "; ".join(findings.failures)
    return "VERDICT: PASS - nothing lost, nothing twice, every run completed"
