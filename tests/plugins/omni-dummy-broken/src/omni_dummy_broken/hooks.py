"""Raises on import, as a plugin with a bad release would."""

raise RuntimeError("omni-dummy-broken is broken on purpose")
