"""Test matrix, lint, demo, benchmarks and the reliability campaign.

`nox -s tests` runs every distribution's suite, each in its own virtualenv that
holds only that distribution's dependencies (plus the test tools), so a missing
dependency declaration fails here.  torch is always installed first and pinned:
any other spelling pulls a multi-GB CUDA build.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

TORCH = "torch==2.13.0"
TEST_TOOLS = ["pytest>=8", "hypothesis>=6", "pytest-timeout>=2"]
CORE = "./core"
PLUGIN_DIR = {
    "shm": "./plugins/omni-shm",
    "mooncake": "./plugins/omni-mooncake",
    "yuanrong": "./plugins/omni-yuanrong",
    "coordinator": "./plugins/omni-coordinator",
}
DUMMY_PLUGINS = ["./tests/plugins/omni-dummy-dropbox", "./tests/plugins/omni-dummy-broken"]
#: Debian packages each distribution's backend needs, by shared library.
SYSTEM_LIBS = {"mooncake": {"libibverbs.so.1": "libibverbs1", "libnuma.so.1": "libnuma1"}}
PACKAGES = ["core", "shm", "mooncake", "yuanrong", "coordinator", "cross"]


def _ensure_system_libs(session: nox.Session, package: str) -> None:
    needed = SYSTEM_LIBS.get(package, {})
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if needed else ""
    missing = sorted({deb for lib, deb in needed.items() if lib not in cache})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        session.error(f"{package} needs Debian packages {missing}; run as root: apt-get update && {' '.join(command)}")
    session.run("apt-get", "update", "-qq", external=True)
    session.run(*command, external=True)


def _install(session: nox.Session, package: str) -> list[str]:
    """Install one distribution (and torch first); return the test paths."""
    session.install(TORCH)
    session.install(*TEST_TOOLS)
    if package == "core":
        session.install("numpy", CORE)
        return ["core/tests"]
    if package == "cross":
        _ensure_system_libs(session, "mooncake")
        plugins = [path + ("[cpu]" if name == "mooncake" else "") for name, path in PLUGIN_DIR.items()]
        session.install("numpy", "matplotlib", CORE, *plugins, *DUMMY_PLUGINS)
        return ["tests"]
    _ensure_system_libs(session, package)
    target = PLUGIN_DIR[package] + ("[cpu]" if package == "mooncake" else "")
    session.install("numpy", CORE, target)  # numpy: the kit's ndarray payloads
    return [PLUGIN_DIR[package].removeprefix("./") + "/tests"]


@nox.session(python="3.11")
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Run one distribution's tests in a venv holding only its dependencies."""
    paths = _install(session, package)
    session.run(
        "python",
        "-m",
        "pytest",
        *paths,
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff on everything, mypy on core."""
    session.install("ruff>=0.6", "mypy>=1.10", "types-PyYAML", CORE)
    session.run("ruff", "check", ".")
    session.run("mypy", "core/src/omni_core")


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The main job: a thinker -> talker -> vocoder pipeline over shared memory (no servers)."""
    session.install(TORCH)
    session.install(CORE, PLUGIN_DIR["shm"])
    session.run("omni", "run", "examples/thinker_talker_vocoder.yaml", *session.posargs)


@nox.session(python="3.11")
def reliability(session: nox.Session) -> None:
    """Fault injection against real backends, fuzzing and resource limits; writes RELIABILITY.md.

    `nox -s reliability -- --seed N` replays a campaign; raw results and fuzz findings go to reliability-results/.
    """
    _ensure_system_libs(session, "mooncake")
    session.install(TORCH)
    plugins = [path + ("[cpu]" if name == "mooncake" else "") for name, path in PLUGIN_DIR.items()]
    session.install("numpy", "hypothesis>=6", "atheris", CORE, *plugins)
    session.run("python", "-m", "reliability", "--out", ".", *session.posargs)


@dataclass(frozen=True)
class BenchTarget:
    """One `nox -s bench` target: what it installs and the script that benchmarks it.

    The script takes ``--out DIR`` and writes ``DIR/summary.json`` (see ``benchmarks/summarize.py``);
    ``quick`` are its arguments for the short run profiled with py-spy (None: not profiled).
    Requirements in a ``requirements.txt`` beside the script are installed first.
    """

    install: tuple[str, ...]
    script: str
    quick: tuple[str, ...] | None = ("--quick",)
    system_libs: str = ""


#: `nox -s bench -- NAME ...` runs these (all by default); a package benchmarks itself with one entry.
BENCH_TARGETS = {
    "core": BenchTarget((CORE,), "core/benchmarks/bench_serializer.py"),
    "shm": BenchTarget((CORE, PLUGIN_DIR["shm"]), "plugins/omni-shm/benchmarks/bench_shm.py"),
    "mooncake": BenchTarget(
        (CORE, PLUGIN_DIR["mooncake"] + "[cpu]"),
        "plugins/omni-mooncake/benchmarks/bench_mooncake.py",
        system_libs="mooncake",
    ),
    "yuanrong": BenchTarget((CORE, PLUGIN_DIR["yuanrong"]), "plugins/omni-yuanrong/benchmarks/bench_yuanrong.py"),
    "coordinator": BenchTarget(
        (CORE, PLUGIN_DIR["coordinator"]), "plugins/omni-coordinator/benchmarks/bench_coordinator.py", quick=None
    ),
}


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): every target, or `nox -s bench -- shm mooncake`; writes bench-results/.

    Each target writes its tables and raw timings to bench-results/<target>/ and, from a second short run
    under py-spy, bench-results/<target>/profile.speedscope.json; then bench-results/summary.md and one
    PNG per connector summarize every target that ran.
    """
    names = session.posargs or list(BENCH_TARGETS)
    unknown = sorted(set(names) - set(BENCH_TARGETS))
    if unknown:
        session.error(f"unknown bench target(s) {unknown}; known: {sorted(BENCH_TARGETS)}")
    session.install(TORCH)
    session.install("matplotlib", "numpy", "py-spy")
    for name in names:
        target = BENCH_TARGETS[name]
        if target.system_libs:
            _ensure_system_libs(session, target.system_libs)
        requirements = Path(target.script).with_name("requirements.txt")
        if requirements.exists():
            session.install("-r", str(requirements))
        session.install(*target.install)
    for name in names:
        target = BENCH_TARGETS[name]
        out = f"bench-results/{name}"
        session.run("python", target.script, "--out", out)
        if target.quick is not None:
            command = ["python", target.script, "--out", f"{out}/profiled-run", *target.quick]
            # a profile that cannot be taken (no ptrace permission) must not fail the benchmark: it says why
            session.run(
                "py-spy", "record", "--subprocesses", "--rate", "200", "--format", "speedscope",
                "-o", f"{out}/profile.speedscope.json", "--", *command, success_codes=range(256),
            )  # fmt: skip
    session.run("python", "benchmarks/summarize.py", "bench-results", *names)
