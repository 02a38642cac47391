"""omni-yuanrong: openYuanrong datasystem and TransferEngine connectors."""

__version__ = "0.1.0"
