"""A third-party connector written only against ``omni_core.__all__`` (test fixture)."""
