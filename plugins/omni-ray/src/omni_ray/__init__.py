"""omni-ray: RayConnector over Ray's object store, the ``ray`` launcher of ``omni run``, and helpers for running
stages on a Ray cluster.

Importing this package is cheap: the connector, the helpers (and ray, numpy) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "RayConnector": "connector",
    "RayLauncher": "launcher",
    "RaySettings": "connector",
    "remove_payload_owners": "owner",
    "is_ray_initialized": "ray_utils",
    "initialize_ray_cluster": "ray_utils",
    "create_placement_group": "ray_utils",
    "remove_placement_group": "ray_utils",
    "kill_ray_actor": "ray_utils",
    "bundle_node_ips": "ray_utils",
    "get_node_ip": "ray_utils",
    "node_ips": "ray_utils",
    "stage_env": "ray_utils",
}

__all__ = [
    "RayConnector",
    "RayLauncher",
    "RaySettings",
    "__version__",
    "bundle_node_ips",
    "create_placement_group",
    "get_node_ip",
    "initialize_ray_cluster",
    "is_ray_initialized",
    "kill_ray_actor",
    "node_ips",
    "remove_payload_owners",
    "remove_placement_group",
    "stage_env",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

if TYPE_CHECKING:
    from .connector import RayConnector, RaySettings
    from .launcher import RayLauncher
    from .owner import remove_payload_owners
    from .ray_utils import (
        bundle_node_ips,
        create_placement_group,
        get_node_ip,
        initialize_ray_cluster,
        is_ray_initialized,
        kill_ray_actor,
        node_ips,
        remove_placement_group,
        stage_env,
    )
