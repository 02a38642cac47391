"""One side of a benchmark pair, in its own process, driven by JSON lines on stdin (see bench_mooncake.py).

    python bench_worker.py ROLE '<json options>'

Each command names an operation and an iteration; the answer carries the seconds the timed call took,
measured in this process around that call only.  Roles: ``store-holder`` (owns the store segment),
``raw-store`` / ``connector-store`` (writer or reader), ``raw-te`` / ``connector-te`` (sender or receiver).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import numpy as np
import torch

os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
torch.set_num_threads(1)  # OpenMP workers spinning after each copy starve the peer process on small hosts


def pattern(nbytes: int, seed: int) -> torch.Tensor:
    """A deterministic uint8 tensor: the payload of iteration ``seed``.

    Its memory comes from numpy, like the raw reference's buffers (numpy asks for transparent huge pages,
    torch does not, and page size alone changes loopback TCP throughput).
    """
    tensor = torch.from_numpy(np.empty(nbytes, dtype=np.uint8))
    tensor.view(torch.int64).copy_(torch.arange(nbytes // 8, dtype=torch.int64).add_(seed))
    return tensor


def timed(call: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call(*args)
    return time.perf_counter() - start, result


class StoreHolder:
    """The process whose segment holds every object: writers and readers both reach it over TCP."""

    def __init__(self, options: dict[str, Any]) -> None:
        from mooncake.store import MooncakeDistributedStore

        self.store = MooncakeDistributedStore()
        rc = self.store.setup("127.0.0.1", "P2PHANDSHAKE", options["segment"], 0, "tcp", "", options["master"])
        if rc != 0:
            raise RuntimeError(f"holder setup failed: {rc}")

    def close(self) -> None:
        self.store.close()


class RawStore:
    """``put_from`` / ``get_into`` with registered buffers and known sizes (the reference)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from mooncake.store import MooncakeDistributedStore

        self.store = MooncakeDistributedStore()
        rc = self.store.setup("127.0.0.1", "P2PHANDSHAKE", 0, 0, "tcp", "", options["master"])
        if rc != 0:
            raise RuntimeError(f"store setup failed: {rc}")
        self.buffer = np.zeros(options["max_bytes"], dtype=np.uint8)
        self.buffer[:] = 1  # fault the pages in, as a long-lived registered buffer is
        self.store.register_buffer(self.buffer.ctypes.data, self.buffer.size)

    def put(self, key: str, nbytes: int) -> dict[str, Any]:
        seconds, rc = timed(self.store.put_from, key, self.buffer.ctypes.data, nbytes)
        return {"seconds": seconds, "ok": rc == 0, "metadata": None}

    def get(self, key: str, nbytes: int, metadata: None = None) -> dict[str, Any]:
        seconds, rc = timed(self.store.get_into, key, self.buffer.ctypes.data, nbytes)
        return {"seconds": seconds, "ok": rc == nbytes}

    def remove(self, key: str) -> dict[str, Any]:
        return {"ok": self.store.remove(key, True) == 0}

    def close(self) -> None:
        self.store.unregister_buffer(self.buffer.ctypes.data)
        self.store.close()


class ConnectorStore:
    """MooncakeStoreConnector put/get of a uint8 tensor (no segment: the holder stores everything)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from omni_mooncake.store_connector import MooncakeStoreConnector

        self.connector = MooncakeStoreConnector(
            {"host": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master": options["master"], "segment": 0,
             "localbuf": options["localbuf"], "proto": "tcp"}
        )  # fmt: skip
        self.payloads: dict[int, torch.Tensor] = {}

    def put(self, key: str, nbytes: int) -> dict[str, Any]:
        payload = self.payloads.setdefault(nbytes, pattern(nbytes, 0))
        seconds, (ok, _, metadata) = timed(self.connector.put, "0", "1", key, payload)
        return {"seconds": seconds, "ok": ok, "metadata": metadata}

    def get(self, key: str, nbytes: int, metadata: dict[str, Any], verify: bool = False) -> dict[str, Any]:
        seconds, result = timed(self.connector.get, "0", "1", key, metadata)
        ok = result is not None  # its size counts the frame header too when the payload was framed
        if ok and verify:
            ok = torch.equal(result[0], pattern(nbytes, 0))
        return {"seconds": seconds, "ok": ok}

    def remove(self, key: str) -> dict[str, Any]:
        self.connector.cleanup(key, "0", "1")
        return {"ok": True}

    def close(self) -> None:
        self.connector.close()


class RawTransferEngine:
    """TransferEngine sync write/read between registered buffers (the reference)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from mooncake.engine import TransferEngine

        self.engine = TransferEngine()
        if self.engine.initialize("127.0.0.1", "P2PHANDSHAKE", "tcp", "") != 0:
            raise RuntimeError("TransferEngine.initialize failed")
        self.buffer = np.ones(options["max_bytes"], dtype=np.uint8)
        if self.engine.register_memory(self.buffer.ctypes.data, self.buffer.size) != 0:
            raise RuntimeError("register_memory failed")
        self.session = f"127.0.0.1:{self.engine.get_rpc_port()}"

    def info(self) -> dict[str, Any]:
        return {"session": self.session, "address": self.buffer.ctypes.data}

    def write(self, peer: dict[str, Any], nbytes: int) -> dict[str, Any]:
        call = self.engine.transfer_sync_write
        seconds, rc = timed(call, peer["session"], self.buffer.ctypes.data, peer["address"], nbytes)
        return {"seconds": seconds, "ok": rc == 0}

    def read(self, peer: dict[str, Any], nbytes: int) -> dict[str, Any]:
        call = self.engine.transfer_sync_read
        seconds, rc = timed(call, peer["session"], self.buffer.ctypes.data, peer["address"], nbytes)
        return {"seconds": seconds, "ok": rc == 0}

    def close(self) -> None:
        self.engine.unregister_memory(self.buffer.ctypes.data)


class ConnectorTransferEngine:
    """MooncakeTransferEngineConnector: the sender puts a uint8 tensor, the receiver gets it with the metadata."""

    def __init__(self, options: dict[str, Any]) -> None:
        from omni_mooncake.te_connector import MooncakeTransferEngineConnector

        self.connector = MooncakeTransferEngineConnector(
            {"role": options["role"], "host": "127.0.0.1", "protocol": "tcp", "zmq_port": 0,
             "memory_pool_size": options["pool"]}
        )  # fmt: skip
        self.payloads: dict[int, torch.Tensor] = {}

    def info(self) -> dict[str, Any]:
        return self.connector.get_connection_info()

    def put(self, key: str, nbytes: int) -> dict[str, Any]:
        payload = self.payloads.setdefault(nbytes, pattern(nbytes, 0))
        seconds, (ok, _, metadata) = timed(self.connector.put, "0", "1", key, payload)
        return {"seconds": seconds, "ok": ok, "metadata": metadata}

    def get(self, key: str, nbytes: int, metadata: dict[str, Any], verify: bool = False) -> dict[str, Any]:
        seconds, result = timed(self.connector.get, "0", "1", key, metadata)
        ok = result is not None and result[1] == nbytes
        if ok:
            if verify:
                ok = torch.equal(result[0].payload(copy=False), pattern(nbytes, 0))
            result[0].release()
        return {"seconds": seconds, "ok": ok}

    def ping(self, peer: dict[str, Any]) -> dict[str, Any]:
        """One side-channel round trip to the sender: a get of a key it does not hold, by endpoint (one query)."""
        endpoint = {"source_host": peer["host"], "source_port": peer["zmq_port"]}
        seconds, result = timed(self.connector.get, "0", "1", "no-such-key", endpoint)
        return {"seconds": seconds, "ok": result is None}

    def close(self) -> None:
        self.connector.close()


ROLES = {
    "store-holder": StoreHolder,
    "raw-store": RawStore,
    "connector-store": ConnectorStore,
    "raw-te": RawTransferEngine,
    "connector-te": ConnectorTransferEngine,
}


def main() -> int:
    role, options = sys.argv[1], json.loads(sys.argv[2])
    endpoint = ROLES[role](options)
    info = endpoint.info() if hasattr(endpoint, "info") else {}
    print(json.dumps({"ready": True, "info": info}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command.pop("op")
        if op == "close":
            break
        print(json.dumps(getattr(endpoint, op)(**command)), flush=True)
    endpoint.close()
    print(json.dumps({"closed": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
