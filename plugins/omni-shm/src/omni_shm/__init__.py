"""omni-shm: Shared-memory connector for one host (the embedded default)."""

__version__ = "0.1.0"
