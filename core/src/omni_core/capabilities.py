"""What a connector can do, declared instead of hard-coded connector-name sets."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Delivery(str, Enum):
    """How many readers may consume one key."""

    CONSUME_ONCE = "consume-once"  #: the first successful get consumes the payload
    BROADCAST = "broadcast"  #: several readers may each get the payload once
    PERSISTENT = "persistent"  #: the payload stays until cleanup (store-backed)


@dataclass(frozen=True)
class Capabilities:
    """Capability flags that orchestration code branches on.

    raw_data: moves bytes / tensors without the object serializer.
    needs_endpoint: needs a role (sender/receiver) and ZMQ ports resolved by core.
    delivery: consume-once, broadcast or persistent reads.
    cross_host: can move data between hosts.
    device_memory: can hold payloads in accelerator memory.
    """

    raw_data: bool = False
    needs_endpoint: bool = False
    delivery: Delivery = Delivery.CONSUME_ONCE
    cross_host: bool = False
    device_memory: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "raw_data": self.raw_data,
            "needs_endpoint": self.needs_endpoint,
            "delivery": self.delivery.value,
            "cross_host": self.cross_host,
            "device_memory": self.device_memory,
        }

    def summary(self) -> str:
        """Short human-readable form, e.g. ``consume-once,raw,endpoint``."""
        flags = [self.delivery.value]
        for attr, label in (
            ("raw_data", "raw"),
            ("needs_endpoint", "endpoint"),
            ("cross_host", "cross-host"),
            ("device_memory", "device"),
        ):
            if getattr(self, attr):
                flags.append(label)
        return ",".join(flags)
