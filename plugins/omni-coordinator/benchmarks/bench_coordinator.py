"""Coordinator benchmark: ours vs vllm-omni 0.30.0's, same run, same simulated replicas.

For each replica count, each coordinator runs in its own process; simulated
replicas (many DEALER sockets in a few processes) register and heartbeat at
1 Hz, a tenth of heartbeats carrying a new queue length.  The driver process
holds a raw SUB "hub" and a few replicas of its own:

* hub update latency: a probe replica sends an ``update`` with a fresh queue
  length every ~0.2 s; latency = when the hub has decoded a list showing it
  minus when it was sent;
* failure detection: victim replicas stop heartbeating (no goodbye, as after
  SIGKILL); delay = when the hub's list no longer holds one minus its last
  heartbeat;
* coordinator CPU share: CPU seconds of the coordinator process over the
  measurement window, as a percentage of one core.

vllm-omni is installed ``--no-deps`` into a scratch venv (plus pyzmq).  Its
coordinator modules need one name from vLLM, ``vllm.utils.network_utils
.get_open_ports_list`` (imported by ``runtime.py``): a stub module provides it.
The ``vllm_omni`` and ``vllm_omni.distributed`` package ``__init__`` files are
bypassed (they import vLLM, transformers and the connectors, none of which the
coordinator uses); ``vllm_omni.distributed.omni_coordinator`` itself imports
unmodified.

    python bench_coordinator.py --out DIR [--scales 100,1000,5000] [--timeout 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import zmq

HERE = Path(__file__).resolve()
DEFAULT_WHEEL = "/tmp/vo/vllm_omni-0.30.0-py3-none-any.whl"
UPSTREAM = "vllm-omni 0.30.0"
OURS = "omni-coordinator"
PROBES = 4
VICTIMS = 10
REPLICAS_PER_PROCESS = 2500


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def event(addr: str, event_type: str, queue_length: int) -> bytes:
    return json.dumps({"input_addr": addr, "output_addr": addr + "/out", "stage_id": 0, "event_type": event_type,
                       "status": "up", "queue_length": queue_length}).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


# -- role: simulated replicas ------------------------------------------------------


def stop_on_sigterm() -> list[int]:
    """A list that gets the signal number on SIGTERM (no locks in the handler: Event.set could deadlock)."""
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    return received


def run_replicas(router: str, count: int, offset: int, change_probability: float) -> None:
    """``count`` DEALERs: register, then heartbeat each at 1 Hz (phases spread), until SIGTERM."""
    raise_fd_limit()
    stopped = stop_on_sigterm()
    ctx = zmq.Context(io_threads=1)
    ctx.max_sockets = count + 16
    rnd = random.Random(offset)
    addrs = [f"tcp://sim-{offset + i}:1" for i in range(count)]
    sockets, payloads = [], []
    for addr in addrs:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(router)
        sock.send(event(addr, "update", 0))
        sockets.append(sock)
        payloads.append(event(addr, "heartbeat", 0))
    start = time.monotonic()
    beat = 0
    while not stopped:
        for i, sock in enumerate(sockets):
            delay = start + beat + i / count - time.monotonic()
            if delay > 0.001:
                time.sleep(delay)
            if stopped:
                break
            if rnd.random() < change_probability:
                payloads[i] = event(addrs[i], "heartbeat", rnd.randrange(64))
            sock.send(payloads[i], zmq.NOBLOCK)
        beat += 1
    ctx.destroy(linger=0)


# -- role: the upstream coordinator -------------------------------------------------


def run_upstream(timeout: float) -> None:
    """Import vllm-omni's coordinator past its package ``__init__`` files and serve until SIGTERM."""
    import importlib.util
    import types

    raise_fd_limit()
    root = Path(importlib.util.find_spec("vllm_omni").submodule_search_locations[0])  # type: ignore[union-attr,index]
    for name, path in (("vllm_omni", root), ("vllm_omni.distributed", root / "distributed")):
        package = types.ModuleType(name)
        package.__path__ = [str(path)]
        sys.modules[name] = package
    from vllm_omni.distributed.omni_coordinator import OmniCoordinator

    coordinator = OmniCoordinator("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", heartbeat_timeout=timeout)
    stopped = stop_on_sigterm()
    print(f"router: {coordinator.router_zmq_addr}\npub: {coordinator.pub_zmq_addr}", flush=True)
    while not stopped:
        time.sleep(0.2)
    coordinator.close()


VLLM_STUB = '''"""Stub of the one vLLM name vllm_omni's coordinator package imports (bench only)."""
import socket


def get_open_ports_list(count: int = 5) -> list[int]:
    ports = []
    for _ in range(count):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports
'''


def install_upstream(wheel: str, scratch: Path) -> tuple[str, dict[str, str]]:
    """Scratch venv with vllm-omni (--no-deps) and pyzmq; returns its python and the env holding the stub."""
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "--no-warn-conflicts", wheel], check=True)
    subprocess.run([*pip, "--no-warn-conflicts", f"pyzmq=={zmq.__version__}"], check=True)
    stub = scratch / "stubs" / "vllm" / "utils"
    stub.mkdir(parents=True)
    (scratch / "stubs" / "vllm" / "__init__.py").write_text('"""vLLM stub (bench only)."""\n')
    (stub / "__init__.py").write_text("")
    (stub / "network_utils.py").write_text(VLLM_STUB)
    return python, {**os.environ, "PYTHONPATH": str(scratch / "stubs")}


# -- driver ----------------------------------------------------------------------------


class Hub(threading.Thread):
    """A raw SUB that decodes every list and timestamps probe updates and victim removals."""

    def __init__(self, pub: str) -> None:
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.size = 0
        self.pending: dict[str, list[tuple[int, float]]] = {}  # probe -> [(queue_length, sent_at)]
        self.latencies: list[float] = []
        self.killed: dict[str, float] = {}  # victim -> last heartbeat time
        self.detections: list[float] = []
        self.stop = threading.Event()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(pub)

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(100):
                continue
            replicas = json.loads(self.sock.recv())["replicas"]
            now = time.monotonic()
            queues = {r["input_addr"]: r["queue_length"] for r in replicas}
            with self.lock:
                self.size = len(replicas)
                for probe, waiting in self.pending.items():
                    seen = queues.get(probe, -1)
                    self.latencies += [now - sent for value, sent in waiting if value <= seen]
                    waiting[:] = [(value, sent) for value, sent in waiting if value > seen]
                for victim in [v for v in self.killed if v not in queues]:
                    self.detections.append(now - self.killed.pop(victim))
        self.sock.close(linger=0)
        self.ctx.term()


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        print(f"[bench] {proc.args} ignored SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait(timeout=30)


def start_coordinator(impl: str, timeout: float, upstream: tuple[str, dict[str, str]] | None) -> tuple[Any, str, str]:
    if impl == OURS:
        command = [sys.executable, "-m", "omni_coordinator.cli", "serve", "--heartbeat-timeout", str(timeout)]
        env = None
    else:
        assert upstream is not None
        command, env = [upstream[0], str(HERE), "_upstream", str(timeout)], upstream[1]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    endpoints = dict(line.strip().split(": ", 1) for line in (proc.stdout.readline(), proc.stdout.readline()))
    return proc, endpoints["router"], endpoints["pub"]


def run_case(impl: str, n: int, args: argparse.Namespace, upstream: tuple[str, dict[str, str]] | None) -> dict:
    coordinator, router, pub = start_coordinator(impl, args.timeout, upstream)
    hub = Hub(pub)
    hub.start()
    sims = []
    for offset in range(0, n, REPLICAS_PER_PROCESS):
        count = min(REPLICAS_PER_PROCESS, n - offset)
        sims.append(subprocess.Popen([sys.executable, str(HERE), "_replicas", router, str(count), str(offset),
                                      str(args.change_probability)]))
    ctx = zmq.Context()
    own: dict[str, zmq.Socket] = {}
    probes = [f"tcp://probe-{i}:1" for i in range(PROBES)]
    victims = [f"tcp://victim-{i}:1" for i in range(VICTIMS)]
    queue = dict.fromkeys(probes + victims, 0)
    for addr in probes + victims:
        own[addr] = ctx.socket(zmq.DEALER)
        own[addr].linger = 0
        own[addr].connect(router)
        own[addr].send(event(addr, "update", 0))
    live_victims, last_beat, next_beat = list(victims), dict.fromkeys(victims, 0.0), time.monotonic()

    def heartbeat_own_replicas() -> None:  # at 1 Hz, like the simulated ones
        nonlocal next_beat
        if time.monotonic() >= next_beat:
            for addr in probes + live_victims:
                own[addr].send(event(addr, "heartbeat", queue[addr]))
                last_beat[addr] = time.monotonic()
            next_beat += 1.0

    try:
        started = time.monotonic()
        while hub.size != n + PROBES + VICTIMS:
            if time.monotonic() - started > 180:
                raise RuntimeError(f"benchmark: {impl}: {n} replicas not registered within 180 s")
            heartbeat_own_replicas()
            time.sleep(0.02)
        registration_s = time.monotonic() - started
        warm_up = time.monotonic() + 2.0
        while time.monotonic() < warm_up:
            heartbeat_own_replicas()
            time.sleep(0.02)
        t0, cpu0 = time.monotonic(), cpu_seconds(coordinator.pid)
        next_probe, value, kill_at = t0, 0, [t0 + 2.0 + 0.45 * k for k in range(VICTIMS)]
        end = t0 + args.window
        while time.monotonic() < end or (hub.killed and time.monotonic() < end + args.timeout + 10):
            now = time.monotonic()
            heartbeat_own_replicas()
            if kill_at and now >= kill_at[0]:  # a victim falls silent, as after SIGKILL
                kill_at.pop(0)
                victim = live_victims.pop(0)
                own.pop(victim).close(linger=0)
                with hub.lock:
                    hub.killed[victim] = last_beat[victim]
            if now >= next_probe:
                value += 1
                probe = probes[value % PROBES]
                queue[probe] = value
                with hub.lock:
                    hub.pending.setdefault(probe, []).append((value, time.monotonic()))
                own[probe].send(event(probe, "update", value))
                next_probe = now + random.uniform(0.15, 0.25)
            time.sleep(0.005)
        window_s, cpu_s = time.monotonic() - t0, cpu_seconds(coordinator.pid) - cpu0
    finally:
        for proc in (*sims, coordinator):
            stop_process(proc)
        hub.stop.set()
        hub.join(timeout=5)
        ctx.destroy(linger=0)
    return {
        "implementation": impl, "replicas": n, "registration_s": registration_s, "window_s": window_s,
        "cpu_percent": 100.0 * cpu_s / window_s,
        "latency_ms": {"p50": 1000 * percentile(hub.latencies, 50), "p99": 1000 * percentile(hub.latencies, 99),
                       "max": 1000 * max(hub.latencies, default=math.nan), "samples": len(hub.latencies)},
        "detection_s": {"p50": percentile(hub.detections, 50), "max": max(hub.detections, default=math.nan),
                        "detected": len(hub.detections), "killed": VICTIMS},
    }


# -- report ----------------------------------------------------------------------------


def ratio(ours: float, reference: float) -> str:
    return f"{ours / reference:.2f}x" if reference and not math.isnan(reference) and not math.isnan(ours) else "n/a"


def write_table(results: list[dict], args: argparse.Namespace, path: Path) -> str:
    by = {(r["implementation"], r["replicas"]): r for r in results}
    lines = [
        f"Heartbeat timeout {args.timeout:g} s, replicas heartbeat at 1 Hz ({args.change_probability:.0%} carry a "
        f"new queue length), {args.window:g} s window, {os.cpu_count()} CPU(s). "
        f"Ratios: ours / {UPSTREAM} (lower is better).",
        "",
        "| replicas | coordinator | CPU (% of a core) | hub latency p50 (ms) | hub latency p99 (ms) "
        "| detection p50 (s) | detection max (s) | detected |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in args.scales:
        for impl in (OURS, UPSTREAM):
            r = by.get((impl, n))
            if r is None:
                continue
            lat, det = r["latency_ms"], r["detection_s"]
            lines.append(f"| {n} | {impl} | {r['cpu_percent']:.1f} | {lat['p50']:.0f} | {lat['p99']:.0f} "
                         f"| {det['p50']:.2f} | {det['max']:.2f} | {det['detected']}/{det['killed']} |")
        ours, ref = by.get((OURS, n)), by.get((UPSTREAM, n))
        if ours and ref:
            lines.append(f"| {n} | ratio | {ratio(ours['cpu_percent'], ref['cpu_percent'])} "
                         f"| {ratio(ours['latency_ms']['p50'], ref['latency_ms']['p50'])} "
                         f"| {ratio(ours['latency_ms']['p99'], ref['latency_ms']['p99'])} "
                         f"| {ratio(ours['detection_s']['p50'], ref['detection_s']['p50'])} "
                         f"| {ratio(ours['detection_s']['max'], ref['detection_s']['max'])} | |")
    table = "\n".join(lines) + "\n"
    path.write_text(table)
    return table


def summary_rows(results: list[dict]) -> list[dict]:
    """Ours over upstream per replica count, for ``benchmarks/summarize.py`` (one value: min = median)."""
    by = {(r["implementation"], r["replicas"]): r for r in results}
    metrics = {"CPU": lambda r: r["cpu_percent"], "hub latency p99": lambda r: r["latency_ms"]["p99"],
               "failure detection, worst": lambda r: r["detection_s"]["max"]}  # fmt: skip
    rows = []
    for (impl, n), ours in by.items():
        upstream = by.get((UPSTREAM, n))
        if impl != OURS or upstream is None:
            continue
        for name, value in metrics.items():
            quotient = value(ours) / value(upstream) if value(upstream) else math.nan
            rows.append({"connector": "OmniCoordinator", "path": name, "payload": f"{n} replicas", "bytes": n,
                         "size_unit": "replicas", "reference": UPSTREAM, "measure": "ours / upstream (lower is better)",
                         "min": quotient, "median": quotient, "target": ""})  # fmt: skip
    return rows


def write_plot(results: list[dict], timeout: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("coordinator CPU (% of one core)", lambda r: r["cpu_percent"], None),
              ("hub update latency p99 (ms)", lambda r: r["latency_ms"]["p99"], (200.0, "target 200 ms at 1,000")),
              ("failure detection, worst (s)", lambda r: r["detection_s"]["max"], (timeout + 1, "timeout + 1 s"))]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (title, metric, target) in zip(axes, panels, strict=True):
        for impl, style in ((OURS, "o-"), (UPSTREAM, "s--")):
            rows = sorted((r for r in results if r["implementation"] == impl), key=lambda r: r["replicas"])
            ax.plot([r["replicas"] for r in rows], [metric(r) for r in rows], style, label=impl)
        if target is not None:
            ax.axhline(target[0], color="grey", linestyle=":", label=target[1])
        ax.set_xscale("log")
        ax.set_xlabel("replicas (1 Hz heartbeats)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_replicas":
        run_replicas(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_upstream":
        run_upstream(float(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scales", default="100,1000,5000", type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--timeout", default=3.0, type=float, help="coordinator heartbeat timeout (s)")
    parser.add_argument("--window", default=15.0, type=float, help="measurement window per case (s)")
    parser.add_argument("--change-probability", default=0.1, type=float)
    parser.add_argument("--upstream-wheel", default=os.environ.get("VLLM_OMNI_WHEEL", DEFAULT_WHEEL),
                        help="vllm-omni 0.30.0 wheel or requirement (default: %(default)s)")
    args = parser.parse_args()
    if not Path(args.upstream_wheel).exists() and args.upstream_wheel == DEFAULT_WHEEL:
        args.upstream_wheel = "vllm-omni==0.30.0"
    raise_fd_limit()
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="vllm-omni-") as scratch:
        upstream = install_upstream(args.upstream_wheel, Path(scratch))
        for n in args.scales:
            for impl in (OURS, UPSTREAM):
                print(f"[bench] {impl}: {n} replicas ...", flush=True)
                results.append(run_case(impl, n, args, upstream))
                print(f"[bench]   {json.dumps(results[-1])}", flush=True)
    (args.out / "results.json").write_text(json.dumps({"config": {k: str(v) for k, v in vars(args).items()},
                                                       "results": results}, indent=2))
    print(write_table(results, args, args.out / "results.md"))
    summary = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_average": os.getloadavg(),
               "rows": summary_rows(results)}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_plot(results, args.timeout, args.out / "coordinator.png")
    print(f"[bench] wrote {args.out}/results.json, results.md, coordinator.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
