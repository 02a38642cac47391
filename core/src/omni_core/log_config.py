"""The ``omni`` logger hierarchy's one stderr handler, at the level ``OMNI_LOG_LEVEL`` names.

Every module of core and of the plugins logs through ``logging.getLogger("omni.<area>")``.  Importing a
library adds no handler; an entry point (the ``omni`` command, a stage process, an engine embedding the
connectors) calls :func:`configure_logging` once.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

from .errors import ConfigError

#: The root of the hierarchy every omni module logs under.
LOGGER_NAME = "omni"
LEVEL_ENV = "OMNI_LOG_LEVEL"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
DEFAULT_LEVEL = "WARNING"


class _OmniHandler(logging.StreamHandler):
    """The handler :func:`configure_logging` installs: it writes to ``sys.stderr`` as it is at each record (as
    logging's last-resort handler does), so a redirected or captured stderr gets the lines."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def configure_logging(level: str | None = None, prefix: str | None = None) -> logging.Logger:
    """Send the ``omni`` logger's records at ``level`` and above to stderr through one handler; return the logger.

    ``level`` defaults to ``OMNI_LOG_LEVEL``, else WARNING; one of DEBUG, INFO, WARNING, ERROR (any case), else
    a :class:`ConfigError` naming ``OMNI_LOG_LEVEL`` and those values.  Lines read ``LEVEL omni.area: message``,
    or ``[PREFIX] LEVEL omni.area: message`` (a stage process passes ``stage S replica R``).  Calling again
    replaces the level and format, never adds a handler.  The root logger is left alone: omni's records stop
    at this handler (the ``omni`` logger no longer propagates).
    """
    raw = level if level is not None else os.environ.get(LEVEL_ENV) or DEFAULT_LEVEL
    name = raw.strip().upper()
    if name not in LEVELS:
        raise ConfigError(f"{LEVEL_ENV}={raw!r} is not a log level; use one of {', '.join(LEVELS)}")
    logger = logging.getLogger(LOGGER_NAME)
    handler = next((h for h in logger.handlers if isinstance(h, _OmniHandler)), None)
    if handler is None:
        handler = _OmniHandler()
        logger.addHandler(handler)
    head = f"[{prefix}] " if prefix else ""
    handler.setFormatter(logging.Formatter(head.replace("%", "%%") + "%(levelname)s %(name)s: %(message)s"))
    logger.setLevel(name)
    logger.propagate = False
    return logger
