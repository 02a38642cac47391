"""One fuzz target under atheris (coverage-guided libFuzzer), in a process of its own.

``python -m reliability.fuzz.atheris_main TARGET [libFuzzer flags] CORPUS_DIR``: the target is built and its
seeds decoded once while atheris instruments imports, so every omni module the decoder reaches -- lazily
imported ones included -- reports coverage (PyYAML is left uninstrumented: it would triple the config run).
Every input goes through :func:`runner.examine` (minus its hang guard: libFuzzer's ``-timeout`` owns
SIGALRM), so a finding is raised as an uncaught exception and libFuzzer writes the input out and stops.
"""

from __future__ import annotations

import sys

import atheris

_INSTRUMENTED = ["omni_core", "omni_coordinator", "omni_yuanrong", "omni_mooncake"]


def main() -> None:
    with atheris.instrument_imports(include=_INSTRUMENTED):
        from .runner import examine, warm_up
        from .targets import Finding, all_targets

        target = all_targets()[sys.argv[1]]
        warm_up(target)  # lazy imports happen here, instrumented, and before libFuzzer watches memory

    def one_input(data: bytes) -> None:
        outcome = examine(target, data, hang_guard=False)
        if isinstance(outcome, str):
            raise Finding(outcome)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
