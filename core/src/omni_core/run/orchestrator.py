"""``omni run CONFIG``: start every stage as a process, drive requests through the graph, verify, report."""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..cli.table import render_table
from ..config_loader import load_config_document, load_omni_transfer_config
from ..errors import ConfigError
from .workload import Workload

Edge = tuple[str, str]


class RunFailed(RuntimeError):
    """The run could not complete; the message names the stage or edge at fault."""


@dataclass
class EdgeStats:
    sizes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def row(self, edge: Edge) -> list[str]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else 0.0
        rates = [size / t for size, t in zip(self.sizes, self.latencies, strict=True) if t > 0]
        gbps = statistics.median(rates) / 1e9 if rates else 0.0
        return [
            f"{edge[0]} -> {edge[1]}",
            str(len(self.sizes)),
            _human(sum(self.sizes)),
            f"{statistics.median(lat) * 1e3:.2f}" if lat else "-",
            f"{p99 * 1e3:.2f}",
            f"{gbps:.2f}",
        ]


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


class StageProcess:
    """A stage worker child and its JSON-lines control pipes."""

    def __init__(self, config_path: str, stage_id: str) -> None:
        self.stage_id = stage_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "omni_core.run.stage", config_path, stage_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []

    def pump(self) -> bool:
        """Read what the stage wrote into ``lines``; False once it closed its output."""
        chunk = os.read(self.fd, 1 << 16)
        self._buffer += chunk
        *complete, self._buffer = self._buffer.split(b"\n")
        self.lines.extend(json.loads(line) for line in complete if line)
        return bool(chunk)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise RunFailed(f"stage {self.stage_id} exited unexpectedly (code {self.proc.poll()})") from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"op": "stop"})
                self.proc.wait(timeout=30)
            except (RunFailed, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


class Run:
    """The orchestrator of one ``omni run``."""

    def __init__(self, config_path: str) -> None:
        self.config_path = config_path
        doc = load_config_document(config_path) or {}
        self.workload = Workload.from_config(doc.get("workload"))
        transfer = load_omni_transfer_config(config_path)
        if transfer is None or not transfer.connectors:
            raise ConfigError(f"{config_path}: no edges to drive (define stages and connectors)")
        self.edges: list[Edge] = sorted(transfer.connectors)
        stage_ids = {s for edge in self.edges for s in edge}
        self.stage_ids = sorted(stage_ids, key=int)
        self.entry = [s for s in self.stage_ids if not any(dst == s for _, dst in self.edges)]
        self.sinks = [s for s in self.stage_ids if not any(src == s for src, _ in self.edges)]
        if not self.entry or not self.sinks:
            raise ConfigError(f"{config_path}: the stage graph has a cycle (no entry or no final stage)")
        self.stages: dict[str, StageProcess] = {}
        self.stats: dict[Edge, EdgeStats] = {e: EdgeStats() for e in self.edges}
        self.expected: dict[tuple[str, Edge], dict[str, Any]] = {}
        self.deliveries: Counter[tuple[str, Edge]] = Counter()
        self.finished: Counter[str] = Counter()
        self.problems: list[str] = []

    def start(self) -> None:
        for sid in self.stage_ids:
            self.stages[sid] = StageProcess(self.config_path, sid)
        for sid, stage in self.stages.items():
            message = self._read(stage, self.workload.timeout_s + 30)
            if message.get("op") != "ready":
                raise RunFailed(f"stage {sid} failed to start: {message.get('error', message)}")

    def _read(self, stage: StageProcess, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not stage.lines:
            ready, _, _ = select.select([stage.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or not stage.pump():
                code = stage.proc.poll()
                raise RunFailed(
                    f"stage {stage.stage_id} " + ("did not answer" if code is None else f"exited with code {code}")
                )
        return stage.lines.pop(0)

    def drive(self, progress: bool = True) -> None:
        total, submitted, shown = self.workload.requests, 0, -1
        last_progress = time.monotonic()
        while len([r for r, n in self.finished.items() if n >= len(self.sinks)]) < total:
            done = sum(1 for n in self.finished.values() if n >= len(self.sinks))
            while submitted < total and submitted - done < self.workload.in_flight:
                for sid in self.entry:
                    self.stages[sid].send({"op": "input", "request_id": f"req-{submitted:06d}"})
                submitted += 1
            streams = {stage.fd: stage for stage in self.stages.values()}
            ready, _, _ = select.select(list(streams), [], [], 1.0)
            for fd in ready:
                stage = streams[fd]
                if not stage.pump():
                    raise RunFailed(f"stage {stage.stage_id} exited with code {stage.proc.wait()}")
                while stage.lines:
                    self._handle(stage, stage.lines.pop(0))
                last_progress = time.monotonic()
            if time.monotonic() - last_progress > self.workload.timeout_s:
                raise RunFailed(f"no progress for {self.workload.timeout_s:.0f} s (workload.timeout_s)")
            if self.problems:
                raise RunFailed("; ".join(self.problems))
            if progress and done != shown:
                _progress(done, total)
                shown = done
        if progress:
            _progress(total, total)
            sys.stderr.write("\n")

    def _handle(self, stage: StageProcess, message: dict[str, Any]) -> None:
        op, rid = message.get("op"), message.get("request_id", "")
        edge: Edge = tuple(message.get("edge") or ("", ""))
        if op == "sent":
            self.expected[(rid, edge)] = message
            self.stages[edge[1]].send({"op": "fetch", "request_id": rid, "edge": edge, "metadata": message["metadata"]})
        elif op == "received":
            sent = self.expected.get((rid, edge))
            self.deliveries[(rid, edge)] += 1
            if sent is None or sent["checksum"] != message["checksum"] or sent["kv_checksum"] != message["kv_checksum"]:
                self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} arrived corrupted")
            elif self.deliveries[(rid, edge)] > 1:
                self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} delivered twice")
            else:
                self.stats[edge].sizes.append(message["size"])
                self.stats[edge].latencies.append(max(0.0, message["done_at"] - sent["started_at"]))
        elif op == "done":
            self.finished[rid] += 1
        elif op in ("lost", "put_failed"):
            verb = "was lost" if op == "lost" else "could not be put"
            self.problems.append(f"edge {edge[0]}->{edge[1]} (stage {stage.stage_id}): request {rid} {verb}")
        else:
            self.problems.append(f"stage {stage.stage_id}: unexpected message {message}")

    def verify(self) -> None:
        for rid in (f"req-{i:06d}" for i in range(self.workload.requests)):
            for edge in self.edges:
                if self.deliveries[(rid, edge)] != 1:
                    raise RunFailed(
                        f"edge {edge[0]}->{edge[1]}: request {rid} delivered "
                        f"{self.deliveries[(rid, edge)]} times, expected exactly once"
                    )

    def report(self, wall: float) -> str:
        table = render_table(
            ["edge", "requests", "bytes", "p50 ms", "p99 ms", "GB/s (median)"], [self.stats[e].row(e) for e in self.edges]
        )
        return (
            f"{table}\n\n{self.workload.requests} requests through {len(self.stage_ids)} stages in {wall:.2f} s; "
            "every payload arrived intact, exactly once."
        )

    def stop(self) -> None:
        for stage in self.stages.values():
            stage.stop()


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests")
    sys.stderr.flush()


def main(config_path: str, *, progress: bool = True) -> int:
    """Run the pipeline in ``config_path``; 0 when every payload arrived intact exactly once, else 1."""
    try:
        run = Run(config_path)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"omni run: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        run.start()
        run.drive(progress=progress)
        run.verify()
    except RunFailed as exc:
        print(f"\nomni run: FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        run.stop()
    print(run.report(time.monotonic() - started))
    return 0
