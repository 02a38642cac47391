"""Logging: one ``omni`` logger hierarchy on stderr at ``OMNI_LOG_LEVEL``, prefixed in stage processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from omni_core import ConfigError, configure_logging


@pytest.fixture
def omni_logger():
    """The ``omni`` logger, restored (handlers, level, propagation) after the test."""
    logger = logging.getLogger("omni")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OMNI_LOG_LEVEL"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**clean, **env})


def _omni(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _python(f"from omni_core.cli.main import main; raise SystemExit(main({list(args)!r}))", **env)


def test_calling_twice_keeps_one_handler_and_leaves_the_root_logger_alone(omni_logger, monkeypatch) -> None:
    monkeypatch.delenv("OMNI_LOG_LEVEL", raising=False)
    root = (list(logging.getLogger().handlers), logging.getLogger().level)
    configure_logging()
    handlers = list(omni_logger.handlers)
    assert omni_logger.level == logging.WARNING  # the default
    configure_logging("debug", prefix="stage 1 replica 0")
    assert omni_logger.handlers == handlers
    assert len([h for h in handlers if getattr(h, "stream", None) is sys.stderr]) == 1
    assert omni_logger.level == logging.DEBUG and omni_logger.propagate is False
    assert (list(logging.getLogger().handlers), logging.getLogger().level) == root


@pytest.mark.parametrize("value", ["LOUD", "", "10", "critical"])
def test_a_bad_level_names_the_variable_and_the_valid_values(omni_logger, monkeypatch, value) -> None:
    monkeypatch.setenv("OMNI_LOG_LEVEL", value or " ")
    with pytest.raises(ConfigError) as err:
        configure_logging()
    assert str(err.value) == (f"OMNI_LOG_LEVEL={value or ' '!r} is not a log level; "
                              "use one of DEBUG, INFO, WARNING, ERROR")


def test_importing_the_library_adds_no_handler() -> None:
    code = ("import logging, omni_core; from omni_core.plugins import get_plugin_registry; get_plugin_registry(); "
            "print(len(logging.getLogger('omni').handlers), len(logging.getLogger().handlers))")
    done = _python(code, OMNI_LOG_LEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]


def test_lines_carry_the_prefix_go_to_stderr_only_and_honour_the_level() -> None:
    code = ("import logging; from omni_core import configure_logging\n"
            "configure_logging(prefix='stage 1 replica 0')\n"
            "logging.getLogger('omni.shm').warning('slab %s is gone', 'x')\n"
            "logging.getLogger('omni.shm').info('not shown at WARNING')\n"
            "logging.getLogger('elsewhere').warning('not ours')\n")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["[stage 1 replica 0] WARNING omni.shm: slab x is gone", "not ours"]
    shown = _python(code, OMNI_LOG_LEVEL="info")
    assert shown.stderr.splitlines()[:2] == ["[stage 1 replica 0] WARNING omni.shm: slab x is gone",
                                             "[stage 1 replica 0] INFO omni.shm: not shown at WARNING"]


def test_omni_at_debug_shows_what_it_did_on_stderr() -> None:
    done = _omni("plugins", "--json", OMNI_LOG_LEVEL="DEBUG")
    assert done.returncode in (0, 1), done.stderr  # 1: a broken plugin installed; the log is what is checked
    assert "DEBUG omni.core.plugins: plugins from entry point group 'omni': " in done.stderr
    assert done.stdout.lstrip().startswith("{")  # stdout holds the JSON document alone
    quiet = _omni("plugins", "--json")
    assert "DEBUG" not in quiet.stderr


def test_omni_with_a_bad_level_exits_2_naming_it() -> None:
    done = _omni("plugins", OMNI_LOG_LEVEL="chatty")
    assert done.returncode == 2
    assert done.stderr.strip() == ("omni: OMNI_LOG_LEVEL='chatty' is not a log level; "
                                   "use one of DEBUG, INFO, WARNING, ERROR")
