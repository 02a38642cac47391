"""Run one fuzz target for N inputs in this process, with a hang guard, a memory ceiling and reproducers.

``python -m reliability.fuzz.runner TARGET --inputs N --seed S --out DIR`` prints one JSON line: inputs
tried, accepted, cleanly rejected, findings (deduplicated, each with the file holding its input), the slowest
input and the peak RSS.  The parent runs each target in its own process, so a memory ceiling
(``RLIMIT_AS``) and the peak RSS belong to that target alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import resource
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import mutate
from .targets import Finding, Target, all_targets, check, cleanup_config_dir

#: An input that takes longer than this is a hang.
HANG_S = 10.0
#: Address space an input may add on top of what the process had after warming up.
MEMORY_BUDGET = 2 << 30
#: An input may raise the peak RSS by at most this many times its own size (beyond a 64 MiB allowance).
MAX_AMPLIFICATION = 40
_RSS_ALLOWANCE = 64 << 20


class Hang(BaseException):
    """Raised in the target by the hang guard's timer (a BaseException, so no ``except Exception`` eats it)."""


@dataclass
class FuzzResult:
    """What one engine's run over one target found."""

    target: str
    engine: str
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest_input: str | None = None
    peak_rss_mib: float = 0.0
    seconds: float = 0.0


def run(name: str, target: Target, count: int, seed: int, out: Path | None, progress: bool = False) -> FuzzResult:
    """Feed ``count`` seeded inputs to ``target``; every bad outcome becomes a finding."""
    warm_up(target)
    result = FuzzResult(target=name, engine="mutation")
    seen: set[str] = set()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    started = time.monotonic()
    step = max(1, count // 10)
    for i, data in enumerate(mutate.inputs(target.seeds(), target.tokens, seed, count, target.regressions())):
        began = time.monotonic()
        outcome = examine(target, data)
        if outcome is True:
            result.accepted += 1
        elif outcome is False:
            result.rejected += 1
        else:
            _record(result, outcome, data, seen, out)
        took = time.monotonic() - began
        if took > result.slowest_s:
            result.slowest_s = took
            result.slowest_input = _save(out, f"{name}-slowest.bin", data)
        result.inputs += 1
        if progress and (i + 1) % step == 0:
            print(f"  {name}: {i + 1}/{count} inputs, {len(result.findings)} finding(s)", file=sys.stderr, flush=True)
    signal.signal(signal.SIGALRM, previous)
    result.seconds = time.monotonic() - started
    result.peak_rss_mib = _peak_rss() / (1 << 20)
    return result


def warm_up(target: Target) -> None:
    """Decode every seed once, so lazy imports and caches are not counted as the inputs' memory (the seeds are
    fuzzed again as the first inputs: what they raise here does not matter)."""
    for data in target.seeds():
        with contextlib.suppress(Exception):
            target.decode(data)


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def examine(target: Target, data: bytes, hang_guard: bool = True) -> bool | str:
    """True (accepted), False (cleanly rejected), or what went wrong: a finding, a hang, a memory blow-up."""
    peak = _peak_rss()
    if hang_guard:
        signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        outcome: bool | str = check(target, data)
    except Finding as exc:
        outcome = str(exc)
    except Hang:
        outcome = f"hang: no answer within {HANG_S} s"
    except MemoryError:
        outcome = f"memory: an input needed more than {MEMORY_BUDGET >> 20} MiB"
    finally:
        if hang_guard:
            signal.setitimer(signal.ITIMER_REAL, 0)
    grown = _peak_rss() - peak
    if not isinstance(outcome, str) and grown > _RSS_ALLOWANCE + MAX_AMPLIFICATION * len(data):
        outcome = f"memory: an input of {len(data)} bytes raised the peak RSS by {grown >> 20} MiB"
    return outcome


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang


def _record(result: FuzzResult, problem: str, data: bytes, seen: set[str], out: Path | None) -> None:
    """Keep the first input of every distinct problem (numbers stripped to tell problems apart)."""
    signature = re.sub(r"\d+", "N", problem)[:120]
    if signature in seen:
        return
    seen.add(signature)
    reproducer = _save(out, f"{result.target}-{len(seen)}.bin", data)
    result.findings.append({"problem": problem, "input_bytes": len(data), "reproducer": reproducer})


def _save(out: Path | None, name: str, data: bytes) -> str | None:
    """Write ``data`` to ``out/name``; return the path (None without an output directory)."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_bytes(data)
    return str(out / name)


def limit_memory(budget: int = MEMORY_BUDGET) -> None:
    """Cap this process's address space at what it maps now plus ``budget``."""
    with open("/proc/self/status") as status:
        vm = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = vm + budget
    resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reliability.fuzz.runner")
    parser.add_argument("target")
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="directory for reproducers of findings")
    args = parser.parse_args(argv)
    target = all_targets()[args.target]
    warm_up(target)
    limit_memory()
    try:
        result = run(args.target, target, args.inputs, args.seed, args.out, progress=True)
    finally:
        cleanup_config_dir()
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
