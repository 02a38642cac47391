"""No ``print`` from library code: it logs through the ``omni`` loggers; only the commands print their output."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "core" / "src", *sorted((ROOT / "plugins").glob("*/src"))]

#: Where printing is the job, and why: a module (every function in it) or ``module:function``.
PRINTING_ALLOWED = {
    "omni_core/cli/": "the `omni` command's own output: tables, JSON documents, progress lines",
    "omni_coordinator/cli.py": "`omni coordinator serve` prints its addresses; `keygen` the certificates",
    "omni_vllm/cli.py": "`omni vllm-kv` prints its check's result",
    "omni_pipeline/orchestrator.py:main": "the body of `omni run`: its results as one JSON document",
    "omni_pipeline/orchestrator.py:_failure": "`omni run --json`'s failure document",
    "omni_pipeline/orchestrator.py:Run.report": "`omni run`'s tables and closing line",
    "omni_pipeline/bench.py:run_bench": "the body of `omni bench`: its table and where it wrote the results",
    "omni_pipeline/services.py:up": "the body of `omni services up`: what runs and how to use it",
    "omni_pipeline/services.py:down": "the body of `omni services down`: what it stopped",
}


def _prints(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, qualified name of the enclosing function, or '') of every call of the builtin ``print``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(child, f"{scope}.{child.name}" if scope else child.name)
                continue
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Name) and child.func.id == "print":
                found.append((child.lineno, scope))
            visit(child, scope)

    visit(tree, "")
    return found


def _rules_for(module: str, scope: str) -> set[str]:
    """The entries of :data:`PRINTING_ALLOWED` that cover a print in ``scope`` of ``module``."""
    return {rule for rule in PRINTING_ALLOWED
            if (module.startswith(rule) if rule.endswith("/") else rule in (module, f"{module}:{scope}"))}


def _scan() -> list[tuple[str, set[str]]]:
    """Per print call in core and the plugins: ``path:line (scope)`` and the entries allowing it."""
    calls = []
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            module = path.relative_to(src).as_posix()
            for line, scope in _prints(ast.parse(path.read_text(), str(path))):
                where = f"{path.relative_to(ROOT)}:{line} ({scope or 'module level'})"
                calls.append((where, _rules_for(module, scope)))
    return calls


def test_library_code_never_prints() -> None:
    calls = _scan()
    assert len(calls) > 10  # core and the plugins were read
    offenders = [where for where, rules in calls if not rules]
    assert offenders == [], f"print() in library code (log through logging.getLogger('omni.<area>')): {offenders}"


def test_every_allowed_place_still_prints() -> None:
    """An entry that no longer prints is stale: remove it, so the list stays the truth."""
    assert set().union(*(rules for _, rules in _scan())) == set(PRINTING_ALLOWED)


def test_the_scan_finds_a_print_in_a_function_and_ignores_the_word_in_strings() -> None:
    tree = ast.parse("class C:\n    def f(self):\n        print('x')\ncode = 'print(1)'\nconsole.print('y')\n")
    assert _prints(tree) == [(3, "C.f")]
