"""Nothing unpickles: no distribution imports a pickling module or evaluates code, and bytes that are a
pickle are refused by every decoder."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("omni_core", "omni_shm", "omni_mooncake", "omni_yuanrong", "omni_coordinator", "omni_pipeline", "omni_vllm")
#: Modules that unpickle (or let a peer run code) when used to read data.
FORBIDDEN_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "joblib",
                     "multiprocessing", "copyreg"}
FORBIDDEN_CALLS = {"eval", "exec", "__import__"}
#: Attribute calls that unpickle: torch.load, numpy.load(allow_pickle=...), yaml.load/unsafe_load/full_load.
FORBIDDEN_ATTRIBUTES = {("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"),
                        ("np", "load"), ("numpy", "load")}


def _sources() -> list[Path]:
    """Every module of every distribution in this repository (shipped code, not tests)."""
    roots = [ROOT / "core" / "src", *sorted((ROOT / "plugins").glob("*/src"))]
    packages = [root / name for root in roots for name in PACKAGES if (root / name).is_dir()]
    assert {p.name for p in packages} == set(PACKAGES)
    return sorted(path for package in packages for path in package.rglob("*.py"))


def _violations(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_MODULES:
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                found.append(f"{func.id}(...)")
            elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                if (func.value.id, func.attr) in FORBIDDEN_ATTRIBUTES:
                    found.append(f"{func.value.id}.{func.attr}(...)")
    return [f"{path}:{v}" for v in found]


def test_no_distribution_imports_a_pickling_module_or_evaluates_code() -> None:
    sources = _sources()
    assert len(sources) > 50, "every distribution's sources were scanned"
    violations = [v for path in sources for v in _violations(path)]
    assert not violations, violations


def test_no_module_in_the_repository_imports_a_pickling_module() -> None:
    """Tests, benchmarks and the reliability campaign included: the pickles fed to decoders are written out."""
    sources = [path for path in ROOT.rglob("*.py") if not {".nox", ".venv", ".git"} & set(path.parts)]
    assert len(sources) > 150, "the whole repository was scanned"
    imports = [v for path in sources for v in _violations(path) if v.rsplit(":", 1)[1].startswith(("import", "from"))]
    assert not imports, imports


def test_the_scanner_sees_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import pickle\nfrom multiprocessing import Pool\nimport torch\ntorch.load('x')\neval('1')\n")
    assert len(_violations(sample)) == 4


#: ``pickle.dumps({"request_id": "k", "payload": X}, protocol=N)`` where unpickling X calls
#: ``print("unpickled!")``: written out, so that no test module imports pickle either.
PICKLES = {
    0: b"(dp0\nVrequest_id\np1\nVk\np2\nsVpayload\np3\nc__builtin__\nprint\np4\n(Vunpickled!\np5\ntp6\nRp7\ns.",
    2: b"\x80\x02}q\x00(X\n\x00\x00\x00request_idq\x01X\x01\x00\x00\x00kq\x02X\x07\x00\x00\x00payloadq\x03"
    b"c__builtin__\nprint\nq\x04X\n\x00\x00\x00unpickled!q\x05\x85q\x06Rq\x07u.",
    5: b"\x80\x05\x95F\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\nrequest_id\x94\x8c\x01k\x94\x8c\x07payload\x94"
    b"\x8c\x08builtins\x94\x8c\x05print\x94\x93\x94\x8c\nunpickled!\x94\x85\x94R\x94u.",
}


@pytest.mark.parametrize("protocol", sorted(PICKLES))
def test_a_pickle_is_refused_by_every_decoder(protocol: int) -> None:
    from omni_coordinator.messages import MalformedMessage, decode_event
    from omni_core.errors import SerializationError
    from omni_core.serialization import OmniSerializer
    from omni_yuanrong.te_control import ControlProtocolError, decode_info, decode_request

    data = PICKLES[protocol]
    with pytest.raises(SerializationError, match="bad magic"):
        OmniSerializer.deserialize(data)
    with pytest.raises(MalformedMessage):
        decode_event(data)
    with pytest.raises(ControlProtocolError):
        decode_request(data)
    with pytest.raises(ControlProtocolError):
        decode_info(data, "k")
