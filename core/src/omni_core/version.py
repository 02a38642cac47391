"""Version of omni-core and of the connector API that plugins target."""

__version__ = "0.1.0"

#: The connector API version this omni-core implements.  A plugin registration
#: names the version it targets; registrations outside SUPPORTED_API_VERSIONS
#: are refused with a message naming the versions that fit.
CONNECTOR_API_VERSION = 1
SUPPORTED_API_VERSIONS: frozenset[int] = frozenset({1})
