"""One fuzz target under atheris (coverage-guided libFuzzer), in a process of its own.

``python -m reliability.fuzz.atheris_main TARGET [libFuzzer flags] CORPUS_DIR``: the decoders are imported
with coverage instrumentation, and every input goes through :func:`runner.examine` (minus its hang guard:
libFuzzer's ``-timeout`` owns SIGALRM), so a finding is raised as an uncaught exception and libFuzzer writes
the input out and stops.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["omni_core", "omni_coordinator", "omni_yuanrong", "omni_mooncake", "yaml"]):
    from .runner import examine
    from .targets import Finding, all_targets


def main() -> None:
    target = all_targets()[sys.argv[1]]
    for data in target.seeds():  # warm up lazy imports before libFuzzer watches memory
        examine(target, data, hang_guard=False)

    def one_input(data: bytes) -> None:
        outcome = examine(target, data, hang_guard=False)
        if isinstance(outcome, str):
            raise Finding(outcome)

    atheris.Setup([sys.argv[0], *sys.argv[2:]], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
