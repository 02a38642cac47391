"""omni-yuanrong: openYuanrong datasystem and TransferEngine connectors.

Importing this package imports nothing heavy; the connectors live in
``omni_yuanrong.kv_connector`` (``YuanrongConnector``) and
``omni_yuanrong.te_connector`` (``YuanrongTransferEngineConnector``) and are
created by name through ``omni_core.OmniConnectorFactory``.
"""

__version__ = "0.1.0"
