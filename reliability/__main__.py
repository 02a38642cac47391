"""``python -m reliability --out DIR --seed N``: run the chaos scenarios and the fuzzers, write RELIABILITY.md.

Exits 1 when anything went wrong that is not documented as by design: an acknowledged payload lost where the
backend promises it is not, a duplicate, a corrupt payload, anything left behind, a fuzz finding, or a scenario
that could not run.

``python -m reliability soak --out DIR``: the soak (``reliability.soak``), its section of RELIABILITY.md and a PNG;
exits 1 unless the run passed, every sampled quantity stayed flat after warm-up and nothing was left behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shlex
import sys
import time
from pathlib import Path

from .chaos import ChaosRun, ScenarioResult
from .fuzz import engines
from .fuzz.runner import FuzzResult
from .netsplit import PartitionRun
from .raynode import RayNodeRun
from .report import render
from .scenarios import SCENARIOS

RUNNERS = {"kill": ChaosRun, "partition": PartitionRun, "ray-node": RayNodeRun}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reliability", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("."), help="directory RELIABILITY.md is written to")
    parser.add_argument("--seed", type=int, default=None, help="seed of kill points and fuzz inputs (default: random)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per chaos scenario")
    parser.add_argument("--kills", type=int, default=5, help="kills per chaos scenario")
    parser.add_argument("--window", type=int, default=4, help="requests put ahead of their reads")
    parser.add_argument("--fuzz-inputs", type=int, default=100_000, help="inputs per decoder and engine")
    parser.add_argument("--scenarios", default="all", help="comma-separated scenario names, 'all' or 'none'")
    parser.add_argument("--fuzz", default="all", help="comma-separated decoder names, 'all' or 'none'")
    parser.add_argument("--no-atheris", action="store_true", help="only the seeded mutation engine")
    parser.add_argument("--artifacts", type=Path, default=Path("reliability-results"),
                        help="where results.json, fuzz reproducers and backend logs go")
    return parser


def _select(spec: str, names: list[str]) -> list[str]:
    if spec == "all":
        return names
    if spec == "none":
        return []
    chosen = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        raise SystemExit(f"unknown name(s) {unknown}; valid: {', '.join(names)}")
    return chosen


def run_chaos(args: argparse.Namespace, seed: int) -> tuple[list[ScenarioResult], list[str]]:
    results, failures = [], []
    chosen = _select(args.scenarios, [s.slug for s in SCENARIOS])
    for scenario in (s for s in SCENARIOS if s.slug in chosen):
        verb = {"partition": "cutting off the", "ray-node": "killing"}.get(scenario.kind, "killing the")
        print(f"chaos: {scenario.slug} ({scenario.transport}, {verb} {scenario.target})", file=sys.stderr)
        runner = RUNNERS[scenario.kind]
        try:
            results.append(runner(scenario, seed, args.requests, args.kills, args.window).run())
        except Exception as exc:  # one broken scenario must not hide the others' figures
            failures.append(f"{scenario.slug}: {type(exc).__name__}: {exc}")
            print(f"  FAILED: {failures[-1]}", file=sys.stderr)
    return results, failures


def run_fuzz(args: argparse.Namespace, seed: int) -> list[FuzzResult]:
    from .fuzz.targets import all_targets

    results = []
    use_atheris = not args.no_atheris and engines.atheris_available()
    if not args.no_atheris and not use_atheris:
        print("fuzz: atheris is not installed; the seeded mutation engine runs alone", file=sys.stderr)
    out = args.artifacts / "fuzz"
    for name in _select(args.fuzz, list(all_targets())):
        print(f"fuzz: {name}, {args.fuzz_inputs} inputs (mutation)", file=sys.stderr)
        results.append(engines.run_mutation(name, args.fuzz_inputs, seed, out, timeout=1800))
        if use_atheris:
            print(f"fuzz: {name}, {args.fuzz_inputs} inputs (atheris)", file=sys.stderr)
            results.append(engines.run_atheris(name, args.fuzz_inputs, seed, out, timeout=1800))
    return results


def problems(chaos: list[ScenarioResult], fuzz: list[FuzzResult]) -> list[str]:
    """Everything that makes the run fail."""
    found = []
    for r in chaos:
        if r.lost and not r.loss_reason:
            found.append(f"{r.slug}: {r.lost} acknowledged payload(s) lost")
        if r.lost_in_doubt and not r.doubt_reason:
            found.append(f"{r.slug}: {r.lost_in_doubt} payload(s) lost with the reader killed while reading them")
        if r.duplicates or r.corrupt:
            found.append(f"{r.slug}: {r.duplicates} duplicate(s), {r.corrupt} corrupt payload(s)")
        if r.leaks.total:
            found.append(f"{r.slug}: left behind {', '.join(r.leaks.details) or f'{r.leaks.pool_bytes} pool bytes'}")
        for call, longest, bound in (("put", r.longest_put_s, r.put_bound_s), ("get", r.longest_get_s, r.get_bound_s)):
            if bound is not None and longest > bound:
                what = "the run went on after its kill" if r.kind == "ray-node" else f"a {call} took"
                found.append(f"{r.slug}: {what} {longest:.2f} s, past its bound of {bound:g} s (it hung)")
    found += [f"fuzz {r.target} ({r.engine}): {f['problem']}" for r in fuzz for f in r.findings]
    return found


def _soak_parser() -> argparse.ArgumentParser:
    from .soak import SoakSettings
    from .soak_report import RESULTS

    defaults = SoakSettings()
    parser = argparse.ArgumentParser(prog="python -m reliability soak", description="Many requests through the "
                                     "default pipeline, sampling memory, descriptors and /dev/shm.")
    parser.add_argument("--out", type=Path, default=Path("."), help="directory whose RELIABILITY.md gets the section")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the section (soak.md) and PNG go")
    parser.add_argument("--artifacts", type=Path, default=Path("reliability-results"), help="where soak.json goes")
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--tensor-bytes", type=int, default=defaults.tensor_bytes)
    parser.add_argument("--kv-cache-bytes", type=int, default=defaults.kv_cache_bytes)
    parser.add_argument("--in-flight", type=int, default=defaults.in_flight)
    parser.add_argument("--interval", type=float, default=defaults.interval_s, help="seconds between samples")
    return parser


def soak(argv: list[str]) -> int:
    """``python -m reliability soak``: run it, write soak.json, the section, the PNG; splice the section in."""
    from . import soak_report
    from .soak import SoakSettings, run_soak

    args = _soak_parser().parse_args(argv)
    settings = SoakSettings(args.requests, args.tensor_bytes, args.kv_cache_bytes, args.in_flight, args.interval)
    print(f"soak: {settings.requests} requests through the default pipeline", file=sys.stderr)
    result = run_soak(settings)
    for directory in (args.artifacts, args.results, args.out):
        directory.mkdir(parents=True, exist_ok=True)
    (args.artifacts / "soak.json").write_text(result.to_json())
    png = args.results / soak_report.PNG.name
    soak_report.plot(result, png)
    command = shlex.join(["python", "-m", "reliability", "soak", *argv])
    text = soak_report.section(result, command, os.path.relpath(png, args.out.resolve()))
    (args.results / soak_report.SECTION.name).write_text(text)
    soak_report.splice(args.out / "RELIABILITY.md", text)
    rows, _ = soak_report.growth(result.samples, settings.requests)
    bad = [f"omni run exited with {result.exit_code}"] if result.exit_code != 0 else []
    bad += [f"{row.label} grew after warm-up" for row in rows if not row.flat] or ([] if rows else ["too few samples"])
    bad += [f"left {result.left_processes} processes"] if result.left_processes else []
    bad += [f"left {result.left_shm_entries} /dev/shm entries"] if result.left_shm_entries else []
    for line in bad:
        print(f"soak: PROBLEM: {line}", file=sys.stderr)
    print(f"soak: wrote {args.out / 'RELIABILITY.md'} and {png} ({'problems found' if bad else 'flat'})",
          file=sys.stderr)
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:
        return soak(argv[1:])
    args = _parser().parse_args(argv)
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 31)
    print(f"reliability: seed {seed}", file=sys.stderr)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    logs = (args.artifacts / "logs").resolve()
    logs.mkdir(exist_ok=True)
    os.environ.setdefault("DATASYSTEM_CLIENT_LOG_DIR", str(logs))  # the Yuanrong client logs to ~ otherwise
    os.environ.setdefault("GLOG_log_dir", str(logs))
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")  # Mooncake logs every connection at INFO
    started = time.monotonic()
    chaos, failures = run_chaos(args, seed)
    fuzz = run_fuzz(args, seed)
    given = argv if args.seed is not None else [*argv, "--seed", str(seed)]
    command = shlex.join(["python", "-m", "reliability", *given])
    report = render(chaos, fuzz, failures, command, seed, time.monotonic() - started)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "RELIABILITY.md").write_text(report)
    raw = {"seed": seed, "chaos": [dataclasses.asdict(r) for r in chaos], "fuzz": [dataclasses.asdict(r) for r in fuzz],
           "failures": failures}
    (args.artifacts / "results.json").write_text(json.dumps(raw, indent=1))
    bad = failures + problems(chaos, fuzz)
    for line in bad:
        print(f"reliability: PROBLEM: {line}", file=sys.stderr)
    print(f"reliability: wrote {args.out / 'RELIABILITY.md'} ({'problems found' if bad else 'all clear'})",
          file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
