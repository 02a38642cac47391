"""The soak: many requests through the default pipeline (``omni run examples/thinker_talker_vocoder.yaml``),
sampling what each process holds every few seconds.

The example's graph and connectors are kept as they are; only its ``workload`` is replaced (the request count,
smaller payloads so that 100,000 requests finish in minutes on 2 cores, a namespace of the soak's own so its
``/dev/shm`` entries are told apart).  A sampler reads, every ``interval_s``, the resident memory and open file
descriptors of the orchestrator (the ``omni run`` process) and of every stage replica (its children), and the
entries and bytes the run has in ``/dev/shm``; the requests done so far come from the progress bar.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .leaks import SHM, process_alive, shm_bytes
from .stage import child_env

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "thinker_talker_vocoder.yaml"
_PROGRESS = re.compile(rb"(\d+)/(\d+) requests")
_EVENT = b"omni run: "


@dataclass(frozen=True)
class SoakSettings:
    """What the soak drives: ``requests`` through the example, each stage emitting ``tensor_bytes`` of hidden
    state and ``kv_cache_bytes`` through its KV pipe, ``in_flight`` at once; a sample every ``interval_s``."""

    requests: int = 100_000
    tensor_bytes: int = 256 << 10
    kv_cache_bytes: int = 64 << 10
    in_flight: int = 8
    interval_s: float = 10.0


@dataclass
class Sample:
    """One look at the run, ``t`` seconds after it started."""

    t: float
    requests: int
    orchestrator_rss: int
    stages_rss: int
    orchestrator_fds: int
    stages_fds: int
    stages: int
    shm_entries: int
    shm_bytes: int


@dataclass
class SoakResult:
    """The samples, how the run ended and what it left behind."""

    settings: SoakSettings
    samples: list[Sample] = field(default_factory=list)
    exit_code: int | None = None
    seconds: float = 0.0
    summary: str = ""  # the run's last lines (its verdict)
    left_processes: int = 0
    left_shm_entries: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def soak_config(settings: SoakSettings, namespace: str) -> dict[str, Any]:
    """The example's config with the soak's workload and ``namespace`` on every shared-memory connector."""
    import yaml

    config = yaml.safe_load(EXAMPLE.read_text())
    for spec in config.get("connectors", {}).values():
        if spec.get("name") == "SharedMemoryConnector":
            spec.setdefault("extra", {})["namespace"] = namespace
    config["workload"] = {**config.get("workload", {}), "requests": settings.requests,
                          "tensor_bytes": settings.tensor_bytes, "kv_cache_bytes": settings.kv_cache_bytes,
                          "in_flight": settings.in_flight}  # fmt: skip
    return config


def run_soak(settings: SoakSettings) -> SoakResult:
    """Run the soak; returns once ``omni run`` has exited and what it left was counted."""
    namespace = f"soak{uuid.uuid4().hex[:8]}"
    result = SoakResult(settings)
    with tempfile.TemporaryDirectory(prefix="omni-soak-") as workdir:
        config = Path(workdir) / "soak.json"
        config.write_text(json.dumps(soak_config(settings, namespace)))
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "omni_core.cli.main", "run", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
        )  # fmt: skip
        progress = RunOutput(process)
        stages: set[int] = set()
        try:
            while process.poll() is None:
                elapsed = time.monotonic() - started
                result.samples.append(_sample(process.pid, namespace, elapsed, progress.done, stages))
                _print_sample(result.samples[-1], settings.requests)
                deadline = time.monotonic() + settings.interval_s
                while process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.2)
        finally:
            if process.poll() is None:
                process.terminate()
            result.exit_code = process.wait()
            progress.join()
        result.seconds = time.monotonic() - started
        result.summary = "\n".join(progress.stdout.decode(errors="replace").strip().splitlines()[-1:])
        if result.exit_code != 0:
            result.summary += "\n" + progress.stderr_tail.decode(errors="replace")
    result.left_processes = sum(1 for pid in stages if process_alive(pid))
    result.left_shm_entries = sum(1 for name in _listdir(SHM) if name.startswith(f"omni-{namespace}-"))
    return result


class RunOutput:
    """Reads an ``omni run``'s stdout (its report) and stderr (the progress bar: requests done; its events, each
    ``(time.monotonic() when read, the line after "omni run: ")``) on threads."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.done = 0
        self.stdout = b""
        self.stderr_tail = b""
        self.events: list[tuple[float, str]] = []
        assert process.stdout is not None and process.stderr is not None
        self._threads = [threading.Thread(target=self._read_progress, args=(process.stderr,), daemon=True),
                         threading.Thread(target=self._read_report, args=(process.stdout,), daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_progress(self, stream: Any) -> None:
        pending = b""
        while chunk := stream.read1(1 << 16):
            self.stderr_tail = (self.stderr_tail + chunk)[-4000:]
            found = _PROGRESS.findall(chunk)
            if found:
                self.done = int(found[-1][0])
            *lines, pending = re.split(rb"[\r\n]", pending + chunk)
            self.events += [(time.monotonic(), line[len(_EVENT):].decode(errors="replace"))
                            for line in lines if line.startswith(_EVENT)]  # fmt: skip

    def _read_report(self, stream: Any) -> None:
        self.stdout = stream.read()

    def join(self) -> None:
        for thread in self._threads:
            thread.join(30)


def _sample(pid: int, namespace: str, t: float, requests: int, stages: set[int]) -> Sample:
    """The orchestrator ``pid`` and its children (the stage replicas) now, and the namespace's /dev/shm."""
    orchestrator = _measure(psutil.Process(pid))
    children = psutil.Process(pid).children(recursive=True)
    stages.update(child.pid for child in children)
    measured = [_measure(child) for child in children]
    prefix = f"omni-{namespace}-"
    return Sample(
        t=round(t, 1), requests=requests, orchestrator_rss=orchestrator[0], orchestrator_fds=orchestrator[1],
        stages_rss=sum(m[0] for m in measured), stages_fds=sum(m[1] for m in measured), stages=len(children),
        shm_entries=sum(1 for name in _listdir(SHM) if name.startswith(prefix)), shm_bytes=shm_bytes(namespace),
    )  # fmt: skip


def _measure(process: psutil.Process) -> tuple[int, int]:
    """(resident bytes, open descriptors) of ``process``; zeros once it is gone."""
    try:
        with process.oneshot():
            return process.memory_info().rss, process.num_fds()
    except psutil.Error:
        return 0, 0


def _listdir(path: Path) -> list[str]:
    try:
        return [entry.name for entry in path.iterdir()]
    except OSError:
        return []


def _print_sample(sample: Sample, total: int) -> None:
    mib = 1 << 20
    print(f"  soak {sample.t:7.0f} s: {sample.requests}/{total} requests, RSS orchestrator "
          f"{sample.orchestrator_rss / mib:.0f} MiB, stages {sample.stages_rss / mib:.0f} MiB, fds "
          f"{sample.orchestrator_fds}+{sample.stages_fds}, /dev/shm {sample.shm_entries} entries "
          f"{sample.shm_bytes / mib:.0f} MiB", file=sys.stderr, flush=True)
