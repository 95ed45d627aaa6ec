"""One benchmark run, start to finish: stack up, load, wait for the emails, measure, clean up."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench import metrics
from bench.metrics import SinkTail
from bench.monitor import Monitor
from bench.stack import Child, Names, Stack, StackError, unclean_exits
from workflow_core.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Options:
    n: int
    conc: int
    rate: float | None
    workers: int
    concurrency: int
    api_only: bool
    repeat: int
    timeout: float
    settle: float
    keep_logs: bool


def say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


class Run:
    def __init__(self, options: Options, settings: Settings, index: int) -> None:
        self.options, self.settings, self.index = options, settings, index
        self.names = Names.fresh()
        self.log_dir = RESULTS / "logs" / self.names.database
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.stack = Stack(settings, self.names, self.log_dir, options.concurrency)
        self.monitor = Monitor(self.names.database)
        self.tail = SinkTail(self.stack.sink_records)
        self.timings: dict[str, float] = {}
        self.load: dict[str, Any] = {}
        self.end_state: dict[str, Any] = {}

    # -- phases -----------------------------------------------------------------------------------

    async def start(self) -> None:
        began = time.time()
        sink = self.stack.start_sink()
        self.monitor.sink_port = self.stack.sink_port
        self.monitor.add("harness", os.getpid())
        self.monitor.add("sink", sink.pid)
        api = self.stack.start_api()
        self.monitor.add("api", api.pid)
        self.monitor.start()
        await self.stack.wait_ready()
        self.timings["api_ready_s"] = time.time() - began
        await self.stack.create_workflow()
        if not self.options.api_only:
            await self.start_workers()
        await self.stack.settle_disk()
        say(
            f"stack up (db {self.names.database}, stream {self.names.stream}, "
            f"API :{self.stack.api_port}, sink :{self.stack.sink_port})"
        )

    async def start_workers(self) -> list[Child]:
        began = time.time()
        workers = [self.stack.start_worker() for _ in range(self.options.workers)]
        for worker in workers:
            self.monitor.add("worker", worker.pid, worker.name)
        await self.stack.wait_consumers(workers)
        self.timings["workers_ready_s"] = time.time() - began
        return workers

    async def send(self) -> None:
        options, out = self.options, self.log_dir / "loadgen.json"
        args = ["--port", str(self.stack.api_port), "--n", str(options.n)]
        args += ["--conc", str(options.conc), "--out", str(out)]
        if options.rate is not None:
            args += ["--rate", str(options.rate)]
        what = f"{options.n} forms" + (f" at {options.rate:g}/s" if options.rate else " (burst)")
        say(f"sending {what} over at most {options.conc} connections")
        with (self.log_dir / "loadgen.log").open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.loadgen", *args, stdout=log, stderr=log
            )
            self.monitor.add("loadgen", process.pid)
            try:
                code = await process.wait()
            finally:
                if process.returncode is None:  # interrupted: the load stops with us
                    process.kill()
                    await process.wait()
        if code != 0:
            raise StackError(f"the load generator failed ({code}); see {self.log_dir}")
        self.load = orjson.loads(out.read_bytes())

    async def wait_for_emails(self) -> None:
        accepted = {
            sid
            for sid, code in zip(self.load["ids"], self.load["status"], strict=True)
            if code == 202
        }
        delivered: set[str] = set()
        last_progress, last_report = time.time(), time.time()
        while len(delivered) < len(accepted):
            new = self.tail.read()
            delivered.update(e.submission_id for e in new if e.submission_id in accepted)
            now = time.time()
            if new:
                last_progress = now
            if now - last_progress > self.options.timeout:
                say(f"no email for {self.options.timeout:g} s: giving up waiting")
                break
            if not any(w.running for w in self.stack.workers):
                say("every worker has exited: giving up waiting")
                break
            if now - last_report > 5:
                say(f"emails: {len(delivered)}/{len(accepted)}")
                last_report = now
            await asyncio.sleep(0.05)
        say(f"emails: {len(delivered)}/{len(accepted)}; settling {self.options.settle:g} s")
        await asyncio.sleep(self.options.settle)
        self.tail.read()

    async def execute(self) -> dict[str, Any]:
        problems: list[str] = []
        exit_codes: dict[str, int | None] = {}
        try:
            await self.start()
            self.monitor.mark("start", time.time(), census=True)
            await self.send()
            self.monitor.mark("load_end", time.time())
            if self.options.api_only:
                say("load done; starting the worker(s) to drain the stream")
                self.monitor.mark("workers_start", time.time())
                await self.start_workers()
                self.monitor.mark("drain_start", time.time())
            await self.wait_for_emails()
            self.monitor.mark("end", time.time(), census=True)
            self.end_state = await self.stack.inspect()
        except BaseException:
            say(f"run {self.index + 1} failed; the processes' logs are in {self.log_dir}")
            raise
        finally:
            await self.monitor.stop()
            exit_codes = self.stack.stop()
            self.tail.read()
            self.end_state["pg_stat_database"] = await self.stack.database_stats()
            problems = await self.stack.clean_up()
            for problem in problems:
                say(f"clean-up: {problem}")
        result = self.figures()
        result["emails"]["sink_summary"] = self.stack.sink_report()
        result["exit_codes"] = exit_codes
        result["cleanup_problems"] = problems
        self._keep_or_remove_logs(result)
        return result

    # -- figures ----------------------------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        api = metrics.submissions(self.load)
        since = self.monitor.marks["drain_start"].at if self.options.api_only else 0.0
        mail, latencies = metrics.deliveries(self.load, self.tail.emails, since)
        accepted = max(api["accepted"], 1)
        cpu, phases = self.cpu_figures(accepted)
        workers = list(self.stack.workers)
        names = {w.pid: w.name for w in workers}
        rss = self.monitor.peak_rss()
        return {
            "run": self.index + 1,
            "database": self.names.database,
            "stream": self.names.stream,
            "timings": self.timings,
            "api": api,
            "emails": mail,
            "cpu_seconds": cpu,
            "cpu_ms_per_form": {label: s * 1000 / accepted for label, s in cpu.items()},
            "phases": phases,
            "busiest_other_processes": self.monitor.busiest_untracked("start", "end"),
            "peak_rss_mib": {label: b / 2**20 for label, b in rss.items()},
            "emails_per_worker": metrics.emails_per_worker(
                self.tail.emails, self.monitor.smtp_ports, names
            ),
            "end_state": self.end_state,
            "log_findings": [
                f for c in self.stack.children for f in metrics.log_findings(c.name, c.log_path)
            ],
            "samples": {
                "latency_ms": [round(s * 1000, 3) for s in latencies],
                "response_ms": [
                    round((r - s) * 1000, 3)
                    for s, r, code in zip(
                        self.load["sent"], self.load["received"], self.load["status"], strict=True
                    )
                    if code == 202
                ],
            },
        }

    def windows(self) -> list[tuple[str, str]]:
        """The measured stretches: start of the load to the end, less the workers' start-up
        with --api-only (their imports and migration check are no cost per form)."""
        if self.options.api_only:
            return [("start", "load_end"), ("drain_start", "end")]
        return [("start", "end")]

    def cpu_figures(self, accepted: int) -> tuple[dict[str, float], dict[str, float]]:
        monitor, workers = self.monitor, self.stack.workers
        cpu: dict[str, float] = defaultdict(float)
        machine = window = 0.0
        for first, last in self.windows():
            for label, seconds in monitor.cpu_between(first, last).items():
                cpu[label] += seconds
            machine += monitor.machine_between(first, last)
            window += monitor.marks[last].at - monitor.marks[first].at
        tracked = sum(cpu.values())
        cpu["loadgen (send loop)"] = self.load["cpu_seconds"]
        cpu["workers"] = sum(cpu.get(w.name, 0.0) for w in workers)
        cpu["api+workers"] = cpu.get("api", 0.0) + cpu["workers"]
        cpu["machine (all processes)"] = machine
        cpu["untracked processes"] = max(machine - tracked, 0.0)
        self.timings["window_s"] = window
        self.timings["processes_forked"] = monitor.forks_between("start", "end")
        self.timings["untracked_share"] = cpu["untracked processes"] / (
            window * (os.cpu_count() or 1)
        )
        phases: dict[str, float] = {}
        if self.options.api_only:
            load = monitor.cpu_between("start", "load_end")
            drain = monitor.cpu_between("drain_start", "end")
            startup = monitor.cpu_between("workers_start", "drain_start")
            phases = {
                "api_during_load_s": load.get("api", 0.0),
                "api_during_load_ms_per_form": load.get("api", 0.0) * 1000 / accepted,
                "api_during_drain_s": drain.get("api", 0.0),
                "workers_during_drain_s": sum(drain.get(w.name, 0.0) for w in workers),
                "workers_during_drain_ms_per_form": (
                    sum(drain.get(w.name, 0.0) for w in workers) * 1000 / accepted
                ),
                "workers_start_up_s": sum(startup.get(w.name, 0.0) for w in workers),
            }
        return dict(cpu), phases

    def _keep_or_remove_logs(self, result: dict[str, Any]) -> None:
        troubled = (
            result["log_findings"]
            or result["api"]["errors"]
            or result["emails"]["lost"]
            or unclean_exits(result["exit_codes"])
        )
        if troubled or self.options.keep_logs:
            result["logs"] = str(self.log_dir)
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)
