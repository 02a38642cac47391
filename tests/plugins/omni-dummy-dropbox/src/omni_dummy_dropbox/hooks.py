"""Entry-point hooks: one connector, registered lazily by target string."""

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, hookimpl


@hookimpl
def omni_register_connectors() -> list[ConnectorRegistration]:
    return [
        ConnectorRegistration(
            name="DropboxConnector",
            target="omni_dummy_dropbox.connector:DropboxConnector",
            capabilities=Capabilities(),
            config_keys=(ConfigKey("root", str, "/tmp/omni-dropbox", "directory the payload files live in"),),
            install_hint="pip install omni-dummy-dropbox",
        )
    ]
