"""Worker side: save KV layer by layer during prefill, load it layer by layer on decode.

Saving: each attention layer's whole blocks of a finished prompt go out as one payload (one ``put``
per layer per request, see :mod:`.payload`); once every layer is out, the manifest is put, and only
then can a decode engine find the save.  Loading: ``start_load`` starts a thread that gets each
layer's payload in layer order and checks it while the forward pass runs; ``wait_layer`` holds an
attention layer until its payload is there and copies its blocks into the paged KV cache.  A payload
that is missing or fails its check fails the request's load: its blocks are reported to vLLM, which
recomputes them.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from omni_core import ManagedBuffer, OmniConnectorBase

from .config import KVSettings
from .counters import WORKER_COUNTERS, Counters
from .keys import layer_key, manifest_key
from .payload import pack_blocks, unpack_blocks
from .plan import LoadSpec, SaveSpec, StepPlan, make_manifest

if TYPE_CHECKING:
    import torch

logger = logging.getLogger("omni.vllm")


class KVWorker:
    """Worker-side state of one engine worker over ``connector``."""

    def __init__(self, settings: KVSettings, connector: OmniConnectorBase, block_size: int) -> None:
        self.settings = settings
        self.connector = connector
        self.block_size = block_size
        self.counters = Counters(WORKER_COUNTERS)
        self._layers: list[tuple[str, torch.Tensor]] = []
        self._index: dict[str, int] = {}
        self._loader: _Loader | None = None
        self._save_metadata: dict[str, list[Any]] = {}  # save name -> each layer's put metadata so far
        self._failed_saves: set[str] = set()
        self._invalid_blocks: set[int] = set()

    def register(self, kv_caches: dict[str, torch.Tensor]) -> None:
        """The paged KV cache, one tensor per attention layer with blocks along dim 0, in model order."""
        self._layers = list(kv_caches.items())
        self._index = {name: index for index, (name, _) in enumerate(self._layers)}

    # -- load ----------------------------------------------------------------------------------------
    def start_load(self, plan: StepPlan) -> None:
        self._finish_load()  # a step's loads end with it; never two loaders at once
        if plan.loads:
            self._loader = _Loader(self, plan.loads)

    def wait_layer(self, layer_name: str) -> None:
        if self._loader is not None and layer_name in self._index:
            self._loader.wait(self._index[layer_name])

    def _finish_load(self) -> None:
        if self._loader is not None:
            self._invalid_blocks |= self._loader.join()
            self._loader = None

    def take_invalid_blocks(self) -> set[int]:
        """Blocks whose load failed since the last call (vLLM recomputes them)."""
        self._finish_load()
        invalid, self._invalid_blocks = self._invalid_blocks, set()
        return invalid

    # -- save ----------------------------------------------------------------------------------------
    def save_layer(self, plan: StepPlan, layer_name: str, kv_layer: torch.Tensor) -> None:
        index = self._index.get(layer_name)
        if index is None:
            return
        s = self.settings
        for save in plan.saves:
            if save.name in self._failed_saves:
                continue
            try:
                ok, size, metadata = self.connector.put(
                    s.from_stage, s.to_stage, layer_key(save.name, index), pack_blocks([kv_layer], save.block_ids)
                )
            except Exception as exc:  # a save that fails is a future cache miss, never a failed prefill
                logger.warning("OmniKVConnector: put of layer %d of request %s raised %s", index, save.req_id, exc)
                ok = False
            if not ok:
                logger.warning("OmniKVConnector: put of layer %d of request %s failed", index, save.req_id)
                self._failed_saves.add(save.name)
                continue
            self._save_metadata.setdefault(save.name, []).append(metadata)
            self.counters.add("bytes_saved", size)

    def finish_step(self, plan: StepPlan) -> None:
        """End of the step: the loads are done; complete saves get their manifest, failed ones are withdrawn."""
        self._finish_load()
        for save in plan.saves:
            self._finish_save(save)
        self._save_metadata.clear()
        self._failed_saves.clear()

    def _finish_save(self, save: SaveSpec) -> None:
        s = self.settings
        metadata = self._save_metadata.get(save.name, [])
        try:
            if save.name not in self._failed_saves and len(metadata) == len(self._layers):
                ok, _, _ = self.connector.put(
                    s.from_stage, s.to_stage, manifest_key(save.name), make_manifest(len(save.block_ids), metadata)
                )
                if ok:
                    self.counters.add("saves")
                    self.counters.add("blocks_saved", len(save.block_ids))
                    return
            self.counters.add("save_failures")
            for index in range(len(metadata)):  # nobody will find them without the manifest: free them now
                self.connector.cleanup(layer_key(save.name, index))
        except Exception as exc:
            logger.warning("OmniKVConnector: completing the save of request %s raised %s", save.req_id, exc)

    # -- status --------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        inner = self.connector.health()
        return {"status": inner.get("status", "unhealthy"), **self.counters.totals(), "connector": inner}

    def close(self) -> None:
        self._finish_load()
        self.connector.close()


class _Fetched:
    """One layer's payload of one load, checked, waiting to be copied into the cache."""

    def __init__(self, load: LoadSpec, blocks: torch.Tensor, size: int, holder: Any) -> None:
        self.load = load
        self.blocks = blocks  # the blocks to copy: a view into the payload
        self.size = size
        self.holder = holder  # what the connector returned; a raw buffer is released once copied

    def release(self) -> None:
        if isinstance(self.holder, ManagedBuffer):
            self.holder.release()


class _Loader:
    """One step's loads: a thread gets and checks each layer's payloads in layer order; ``wait(i)`` copies
    layer ``i``'s blocks into the cache, in the calling (forward) thread.

    Only the getting runs on the thread (a pull over the network overlaps the forward pass).  The copies
    run where the forward runs: torch ops on a second thread would start a second OpenMP team, and on a
    few cores the two teams' spinning workers slow the forward pass several times over.
    """

    def __init__(self, worker: KVWorker, loads: list[LoadSpec]) -> None:
        self.worker = worker
        self.loads = loads
        self.started = time.perf_counter()
        self.layers = [layer for _, layer in worker._layers]
        self.fetched: list[list[_Fetched]] = [[] for _ in self.layers]
        self.ready = [threading.Event() for _ in self.layers]
        self.installed = [False] * len(self.layers)
        self.failed: dict[str, str] = {}  # request id -> "missing" | "corrupt"
        self.thread = threading.Thread(target=self._run, name="omni-kv-load", daemon=True)
        self.thread.start()

    def wait(self, index: int) -> None:
        """Block until layer ``index`` is fetched, then copy its blocks in (once)."""
        self.ready[index].wait()
        if self.installed[index]:
            return
        self.installed[index] = True
        import torch

        layer = self.layers[index]
        for fetched in self.fetched[index]:
            try:
                if fetched.load.req_id not in self.failed:  # a later failure makes these blocks moot anyway
                    target = torch.as_tensor(fetched.load.block_ids, dtype=torch.long, device=layer.device)
                    layer.index_copy_(0, target, fetched.blocks.to(layer.device))
                    self.worker.counters.add("bytes_loaded", fetched.size)
            finally:
                fetched.release()
        self.fetched[index] = []

    def join(self) -> set[int]:
        """Finish (copy what no layer waited for, release everything); the blocks of failed loads."""
        self.thread.join()
        for index in range(len(self.layers)):
            self.wait(index)
        counters = self.worker.counters
        counters.add("load_ms", round((time.perf_counter() - self.started) * 1000))
        invalid: set[int] = set()
        for load in self.loads:
            reason = self.failed.get(load.req_id)
            if reason is None:
                counters.add("loads")
                counters.add("blocks_loaded", len(load.block_ids))
                counters.add("tokens_loaded", len(load.block_ids) * self.worker.block_size)
            else:
                counters.add("load_failures")
                counters.add(f"{reason}_payloads")
                invalid.update(load.block_ids)
        return invalid

    def _run(self) -> None:
        try:
            for index, layer in enumerate(self.layers):
                for load in self.loads:
                    if self.failed.get(load.req_id) != "missing":
                        self._fetch(load, index, layer)
                self.ready[index].set()
        finally:
            for event in self.ready:  # never leave an attention layer waiting
                event.set()

    def _fetch(self, load: LoadSpec, index: int, layer: torch.Tensor) -> None:
        """Get and check one layer's payload of ``load``; a failure fails the whole load.

        After a corrupt layer the load's other payloads are still got (and dropped), so the producer's
        memory is freed now rather than at its TTL.
        """
        worker, s = self.worker, self.worker.settings
        metadata = load.layer_metadata[index] if index < len(load.layer_metadata) else None
        key = layer_key(load.name, index)
        try:
            result = worker.connector.get_with_deadline(
                s.from_stage, s.to_stage, key, metadata, deadline=time.monotonic() + s.load_timeout_s
            )
        except Exception as exc:  # a broken transport fails this load, never the forward pass
            logger.warning("OmniKVConnector: get of %r failed: %s", key, exc)
            result = None
        if result is None:
            logger.warning("OmniKVConnector: %r not there within %.1f s; recomputing %s", key, s.load_timeout_s,
                           load.req_id)
            self.failed[load.req_id] = "missing"
            return
        obj, size = result
        fetched = None
        try:
            if load.req_id not in self.failed:
                payload = obj.tensor if isinstance(obj, ManagedBuffer) else obj
                blocks = unpack_blocks(payload, [layer], load.payload_blocks)[0]
                wanted = blocks[load.first_block : load.first_block + len(load.block_ids)]
                if wanted.shape[0] != len(load.block_ids):
                    last = load.first_block + len(load.block_ids)
                    raise ValueError(f"the save has {blocks.shape[0]} blocks, up to block {last} wanted")
                fetched = _Fetched(load, wanted, size, obj)
                self.fetched[index].append(fetched)
        except ValueError as exc:  # CorruptPayload, or blocks that do not fit the cache
            logger.warning("OmniKVConnector: %r is corrupt (%s); recomputing %s", key, exc, load.req_id)
            self.failed[load.req_id] = "corrupt"
        finally:
            if fetched is None and isinstance(obj, ManagedBuffer):
                obj.release()
