"""Exception types of omni-core.  All config faults are ValueErrors."""

from __future__ import annotations


class ConfigError(ValueError):
    """A pipeline or connector config is invalid; the message names the field at fault."""


class EnvVarExpansionError(ConfigError):
    """A ``${VAR}`` reference could not be expanded (the variable is unset)."""


class PortCollisionError(ConfigError):
    """Two uses resolved to the same ZMQ port; the message names both."""


class PluginError(RuntimeError):
    """A plugin could not be loaded or conflicts with another plugin."""


class SerializationError(ValueError):
    """Bytes could not be decoded into an object (truncated, hostile or unsupported)."""
