"""How payloads get into and out of the TransferEngine connector's pool.

Non-empty tensors and bytes travel raw (the fast path): their bytes are copied
once into the sender's pool and read straight into the receiver's, and the
receiver gets a :class:`RawPayloadBuffer` that knows the dtype and shape.
Everything else (and empty tensors or bytes, which have no bytes to move) is
serialized into the pool as one frame and decoded by the receiver.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Mapping
from typing import Any

from omni_core import BufferAllocator, ManagedBuffer, OmniSerializer

from .te_control import ControlProtocolError
from .te_device import HOST_POOL_DEVICE, synchronize

BYTES, TENSOR = "bytes", "tensor"
MAX_NDIM = 32


class Outgoing:
    """One payload on its way into the pool: its size and whether it travels raw."""

    def __init__(self, data: Any) -> None:
        self.data = data
        self.fields = raw_fields(data)
        self.frame = None if self.fields is not None else OmniSerializer.prepare(data)
        self.nbytes = raw_nbytes(data) if self.frame is None else self.frame.nbytes

    @property
    def is_fast_path(self) -> bool:
        return self.fields is not None

    def write_into(self, buffer: ManagedBuffer) -> None:
        """Copy the payload into ``buffer`` (exactly ``nbytes`` long) and wait for the device."""
        import torch

        dest = buffer.tensor
        if self.fields is None:
            assert self.frame is not None
            if dest.device.type == HOST_POOL_DEVICE:
                self.frame.write_into(dest.numpy())
                return
            staging = bytearray(self.nbytes)
            self.frame.write_into(staging)
            dest.copy_(torch.frombuffer(staging, dtype=torch.uint8))
        elif self.fields["kind"] == TENSOR:
            buffer.as_tensor(self.data.dtype, self.data.shape).copy_(self.data.detach())
            synchronize(self.data)
        else:
            with warnings.catch_warnings():  # torch warns that bytes are read-only; they are only read here
                warnings.simplefilter("ignore", UserWarning)
                dest.copy_(torch.frombuffer(self.data, dtype=torch.uint8))
        synchronize(dest)


def raw_fields(data: Any) -> dict[str, Any] | None:
    """The description of ``data`` if it can travel raw, else None."""
    if type(data) is bytes:
        return {"kind": BYTES} if data else None
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(data, torch.Tensor) or data.numel() == 0:
        return None
    if data.layout is not torch.strided or data.is_quantized or data.is_meta or data.is_nested:
        return None
    return {"kind": TENSOR, "dtype": str(data.dtype).removeprefix("torch."), "shape": list(data.shape)}


def raw_nbytes(data: Any) -> int:
    """Bytes a raw payload occupies."""
    if type(data) is bytes:
        return len(data)
    return int(data.numel() * data.element_size())


class RawPayloadBuffer(ManagedBuffer):
    """A tensor or bytes payload received into the connector's pool.

    Like upstream's fast path the caller owns it and must ``release()`` it (or use
    ``with``).  :meth:`view` is the payload without a copy, valid until release;
    :meth:`to_payload` is a copy that outlives it.
    """

    def __init__(
        self, allocator: BufferAllocator, offset: int, size: int, pool: Any, fields: Mapping[str, Any]
    ) -> None:
        super().__init__(allocator, offset, size, pool)
        self.kind: str = fields.get("kind", BYTES)
        self.dtype: Any = fields.get("dtype")
        self.shape: tuple[int, ...] | None = fields.get("shape")

    def view(self) -> Any:
        """The payload as a tensor view into the pool (a flat uint8 tensor for bytes)."""
        if self.kind == BYTES:
            return self.tensor
        return self.as_tensor(self.dtype, self.shape or ())

    def to_payload(self) -> Any:
        """A copy of the payload: the tensor (same dtype and shape, on the pool's device) or ``bytes``."""
        return self.to_bytes() if self.kind == BYTES else self.view().clone()

    def __repr__(self) -> str:
        what = "bytes" if self.kind == BYTES else f"{self.dtype} tensor {tuple(self.shape or ())}"
        return f"RawPayloadBuffer({what}, {super().__repr__()})"


def check_raw_fields(info: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the raw-payload description in a ``query_info`` reply (a sender is not trusted)."""
    kind = info.get("kind", BYTES)
    if kind == BYTES:
        return {"kind": BYTES}
    if kind != TENSOR:
        raise ControlProtocolError(f"unknown raw payload kind {kind!r:.40}")
    import torch

    name, shape = info.get("dtype"), info.get("shape")
    dtype = getattr(torch, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not isinstance(dtype, torch.dtype):
        raise ControlProtocolError(f"unknown tensor dtype {name!r:.40}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
        raise ControlProtocolError(f"bad tensor shape {shape!r:.100}")
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize != info["data_size"]:
        raise ControlProtocolError(f"tensor {name}{shape} does not fill data_size {info['data_size']}")
    return {"kind": TENSOR, "dtype": dtype, "shape": tuple(shape)}


def decode_frame(buffer: ManagedBuffer) -> Any:
    """Deserialize the frame in ``buffer`` (copied out, so the buffer can be released)."""
    tensor = buffer.tensor
    data = tensor.numpy() if tensor.device.type == HOST_POOL_DEVICE else buffer.to_bytes()
    return OmniSerializer.deserialize(data)
