"""omni-mooncake: Mooncake Store and TransferEngine connectors."""

__version__ = "0.1.0"
