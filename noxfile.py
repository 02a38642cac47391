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
#: Debian packages providing commands a session runs, by command (test hosts: iproute2's ip and tc).
SYSTEM_TOOLS = {"multihost": {"ip": "iproute2", "tc": "iproute2"}}
PACKAGES = ["core", "shm", "mooncake", "yuanrong", "coordinator", "cross", "multihost"]
#: Every plugin, Mooncake with its CPU wheel.
ALL_PLUGINS = [path + ("[cpu]" if name == "mooncake" else "") for name, path in PLUGIN_DIR.items()]


def _ensure_system_libs(session: nox.Session, package: str) -> None:
    needed = SYSTEM_LIBS.get(package, {})
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if needed else ""
    missing = sorted({deb for lib, deb in needed.items() if lib not in cache}
                     | {deb for tool, deb in SYSTEM_TOOLS.get(package, {}).items() if shutil.which(tool) is None})
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
        return ["tests", "--ignore=tests/multihost"]
    if package == "multihost":  # test hosts as network namespaces: needs root (fails without it under CI=true)
        _ensure_system_libs(session, "mooncake")
        _ensure_system_libs(session, "multihost")
        session.install("numpy", CORE, *ALL_PLUGINS)
        return ["tests/multihost"]
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


#: Benchmarks that span packages: name -> script (beside it, requirements.txt).
CROSS_BENCHES = {"multihost": "benchmarks/multihost/bench_multihost.py"}


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): `nox -s bench -- shm` etc.; writes JSON, a table and a PNG under bench-results/."""
    selected = session.posargs or ["shm"]
    session.install(TORCH)
    for package in selected:
        if package in CROSS_BENCHES:  # every plugin it may exercise, then the script
            _ensure_system_libs(session, "mooncake")
            script = CROSS_BENCHES[package]
            session.install("-r", f"{os.path.dirname(script)}/requirements.txt")
            session.install(CORE, *ALL_PLUGINS)
            session.run("python", script, "--out", f"bench-results/{package}")
            continue
        bench_dir = f"{PLUGIN_DIR[package]}/benchmarks"
        _ensure_system_libs(session, package)
        session.install("-r", f"{bench_dir}/requirements.txt")
        session.install(CORE, PLUGIN_DIR[package] + ("[cpu]" if package == "mooncake" else ""))
        script = f"{bench_dir}/bench_{package}.py"
        session.run("python", script, "--out", f"bench-results/{package}")
