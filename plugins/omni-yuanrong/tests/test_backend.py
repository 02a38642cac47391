"""Reading the bindings' errors and finding the bindings."""

from __future__ import annotations

import sys

import pytest

from omni_yuanrong.backend import KEY_NOT_FOUND, RPC_UNAVAILABLE, import_datasystem, status_code


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("code: [Key not found], msg: [Cannot get objects from worker]", KEY_NOT_FOUND),
        ("code: [RPC unavailable], msg: [SOCK_CONN_WAIT_TIMEOUT]", RPC_UNAVAILABLE),
        ("something else", None),
    ],
)
def test_status_codes_are_read_from_the_message(message: str, code: str | None) -> None:
    assert status_code(RuntimeError(message)) == code


def test_the_pypi_bindings_are_found() -> None:
    assert import_datasystem(names=("KVClient", "WriteMode", "TransferEngine")).__name__ == "yr.datasystem"


def test_a_plain_datasystem_module_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    import yr.datasystem

    monkeypatch.setitem(sys.modules, "yr.datasystem", None)
    monkeypatch.setitem(sys.modules, "datasystem", yr.datasystem)
    assert import_datasystem(names=("KVClient",)) is yr.datasystem


def test_bindings_without_the_needed_names_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasystem", None)
    with pytest.raises(ImportError, match="NoSuchClient.*pip install omni-yuanrong"):
        import_datasystem(names=("NoSuchClient",))
