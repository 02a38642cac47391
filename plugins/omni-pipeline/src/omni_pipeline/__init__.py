"""omni-pipeline: the pipeline runner built on the Omni Connectors contract.

``omni run`` drives a pipeline config through real stage replicas (started by a launcher plugin: ``local``
here, ``ray`` from omni-ray), ``omni bench`` measures connectors between two processes, ``omni services``
starts local backends.  Names load on first access, so the entry point (``omni_pipeline.hooks``) imports
nothing heavy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "Run": "orchestrator",
    "RunFailed": "router",
    "Workload": "workload",
    "LocalLauncher": "local_launcher",
    "LocalReplica": "local_launcher",
    "run_bench": "bench",
}

__all__ = ["LocalLauncher", "LocalReplica", "Run", "RunFailed", "Workload", "__version__", "run_bench"]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)


if TYPE_CHECKING:
    from .bench import run_bench
    from .local_launcher import LocalLauncher, LocalReplica
    from .orchestrator import Run
    from .router import RunFailed
    from .workload import Workload
