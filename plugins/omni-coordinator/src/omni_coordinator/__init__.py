"""omni-coordinator: Stage replica coordinator, clients and load balancers."""

__version__ = "0.1.0"
