"""Run every fuzz target under each engine, each target in a process of its own, and collect the results."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..stage import child_env
from .runner import FuzzResult
from .targets import all_targets

#: libFuzzer ignores dictionary entries longer than this.
_MAX_TOKEN = 64


def atheris_available() -> bool:
    """True when atheris (from PyPI) is importable here."""
    return importlib.util.find_spec("atheris") is not None


def run_mutation(name: str, inputs: int, seed: int, out: Path, timeout: float) -> FuzzResult:
    """The seeded mutation engine over one target, in a child process."""
    command = [sys.executable, "-m", "reliability.fuzz.runner", name, "--inputs", str(inputs), "--seed", str(seed),
               "--out", str(out)]
    started = time.monotonic()
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, env=child_env())
    except subprocess.TimeoutExpired:
        return FuzzResult(name, "mutation", findings=[{"problem": f"run did not finish within {timeout:.0f} s"}])
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        problem = f"fuzz process exited with {done.returncode}"
        return FuzzResult(name, "mutation", findings=[{"problem": problem}], seconds=time.monotonic() - started)
    return FuzzResult(**json.loads(lines[-1]))


def run_atheris(name: str, runs: int, seed: int, out: Path, timeout: float) -> FuzzResult:
    """atheris over one target for ``runs`` inputs, seeded with the target's seeds and dictionary."""
    target = all_targets()[name]
    result = FuzzResult(name, "atheris")
    artifacts = out / "atheris"
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"omni-atheris-{name}-") as scratch:
        corpus = Path(scratch) / "corpus"
        corpus.mkdir()
        for i, data in enumerate(target.seeds()):
            (corpus / f"seed-{i}").write_bytes(data)
        dictionary = Path(scratch) / "tokens.dict"
        dictionary.write_text("".join(f'"{_escape(t)}"\n' for t in target.tokens if len(t) <= _MAX_TOKEN))
        command = [sys.executable, "-m", "reliability.fuzz.atheris_main", name, f"-runs={runs}", f"-seed={seed}",
                   "-max_len=65536", "-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1",
                   f"-dict={dictionary}", f"-artifact_prefix={artifacts}/{name}-", str(corpus)]
        started = time.monotonic()
        try:
            done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=timeout, env=child_env())
        except subprocess.TimeoutExpired:
            result.findings.append({"problem": f"run did not finish within {timeout:.0f} s"})
            return result
        result.seconds = time.monotonic() - started
    log = done.stdout
    (artifacts / f"{name}.log").write_text(log[-200_000:])
    result.inputs = _stat(log, "number_of_executed_units")
    result.peak_rss_mib = float(_stat(log, "peak_rss_mb"))
    if done.returncode != 0:
        crash = re.search(r"Test unit written to (\S+)", log)
        cause = re.search(r"^(?:reliability\.fuzz\.targets\.)?Finding: (.*)$|ERROR: libFuzzer: (.*)$", log, re.M)
        problem = next(g for g in cause.groups() if g) if cause else f"atheris exited with {done.returncode}"
        result.findings.append({"problem": problem.strip()[:400], "reproducer": crash.group(1) if crash else None})
    return result


def _stat(log: str, name: str) -> int:
    match = re.search(rf"stat::{name}:\s*(\d+)", log)
    return int(match.group(1)) if match else 0


def _escape(token: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\x{b:02x}" for b in token)


