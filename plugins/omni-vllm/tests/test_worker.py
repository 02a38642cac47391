"""The worker side without an engine: layer-by-layer saves, the manifest, loads into other blocks, health()."""

from __future__ import annotations

import importlib.util
import time

import pytest
import torch
from conftest import SESSION

from omni_core import OmniConnectorFactory
from omni_core.testing import require
from omni_vllm.config import parse_settings
from omni_vllm.keys import layer_key, manifest_key
from omni_vllm.plan import LoadSpec, SaveSpec, StepPlan, read_manifest
from omni_vllm.worker import KVWorker

LAYERS = ("model.layers.0.attn", "model.layers.1.attn")
SHAPE = (12, 2, 4, 16)  # [blocks, kv heads, block size, 2 * head size]


@pytest.fixture
def pair(request):
    """``pair()`` makes a worker over shared memory (``pair(connector)``: over that connector spec)."""
    made = []

    def worker(connector: dict | None = None) -> tuple[KVWorker, dict[str, torch.Tensor]]:
        connector = connector or {"name": "SharedMemoryConnector", "extra": {"namespace": f"{SESSION}_w"}}
        settings = parse_settings({"omni_connector": connector, "load_timeout_s": 0.5})
        side = KVWorker(settings, OmniConnectorFactory.create_connector(settings.connector), block_size=4)
        caches = {name: torch.zeros(*SHAPE, dtype=torch.bfloat16) for name in LAYERS}
        side.register(caches)
        made.append(side)
        return side, caches

    yield worker
    for side in made:
        side.close()


def save(worker: KVWorker, caches: dict[str, torch.Tensor], name: str, block_ids: list[int]) -> None:
    plan = StepPlan(saves=[SaveSpec("req", name, block_ids)])
    for layer, cache in caches.items():
        worker.save_layer(plan, layer, cache)
    worker.finish_step(plan)


def load(worker: KVWorker, spec: LoadSpec) -> set[int]:
    plan = StepPlan(loads=[spec])
    worker.start_load(plan)
    for layer in LAYERS:
        worker.wait_layer(layer)  # as each attention layer does before it reads its cache
    worker.finish_step(plan)
    return worker.take_invalid_blocks()


def manifest_of(worker: KVWorker, name: str) -> tuple[int, list]:
    got = worker.connector.get("0", "1", manifest_key(name))
    assert got is not None
    parsed = read_manifest(got[0], len(LAYERS))
    assert parsed is not None
    return parsed


def test_saved_blocks_load_into_other_blocks_of_another_worker(pair):
    producer, produced = pair()
    consumer, consumed = pair()
    for cache in produced.values():
        cache.copy_(torch.randn(*SHAPE))
    save(producer, produced, "omni-a", [3, 7, 1])
    blocks, metadata = manifest_of(consumer, "omni-a")
    assert blocks == 3
    spec = LoadSpec("req", "omni-a", blocks, first_block=1, block_ids=[10, 11], layer_metadata=metadata)
    invalid = load(consumer, spec)
    assert invalid == set()
    for name in LAYERS:
        assert torch.equal(consumed[name][[10, 11]], produced[name][[7, 1]])  # the save's blocks 1 and 2
        assert not consumed[name][:10].any()
    assert producer.health()["saves"] == 1 and producer.health()["blocks_saved"] == 3
    health = consumer.health()
    assert health["status"] == "healthy"
    assert (health["loads"], health["blocks_loaded"], health["tokens_loaded"]) == (1, 2, 8)
    assert health["connector"]["gets"] == 3  # the manifest and one payload per layer


def test_a_missing_or_corrupt_layer_fails_the_load_and_reports_its_blocks(pair):
    producer, produced = pair()
    consumer, _ = pair()
    save(producer, produced, "omni-b", [0, 1])
    save(producer, produced, "omni-c", [2])
    blocks, metadata = manifest_of(consumer, "omni-b")
    payload, _ = consumer.connector.get("0", "1", layer_key("omni-b", 1))
    payload[3] ^= 0x40
    assert producer.connector.put("0", "1", layer_key("omni-b", 1), payload)[0]
    assert load(consumer, LoadSpec("req", "omni-b", blocks, 0, [4, 5], metadata)) == {4, 5}
    manifest_of(consumer, "omni-c")
    producer.connector.cleanup(layer_key("omni-c", 0))  # withdrawn before the decode side got it
    started = time.monotonic()
    assert load(consumer, LoadSpec("req", "omni-c", 1, 0, [6])) == {6}
    assert time.monotonic() - started < 5  # load_timeout_s bounds the wait; the next layer is not waited for
    health = consumer.health()
    assert (health["load_failures"], health["corrupt_payloads"], health["missing_payloads"]) == (2, 1, 1)
    assert health["loads"] == 0


def test_a_failed_save_is_counted_and_never_fails_the_prefill(pair):
    producer, produced = pair()
    consumer, _ = pair()
    plan = StepPlan(saves=[SaveSpec("req", "omni-d", [0])])
    producer.save_layer(plan, LAYERS[0], produced[LAYERS[0]])
    producer.connector.close()  # the transport goes away mid-save: the second layer's put raises
    producer.save_layer(plan, LAYERS[1], produced[LAYERS[1]])
    producer.finish_step(plan)
    assert producer.counters.totals()["save_failures"] == 1
    assert consumer.connector.get("0", "1", manifest_key("omni-d")) is None
    assert consumer.connector.get("0", "1", layer_key("omni-d", 0)) is None  # withdrawn with its connector


def test_on_a_persistent_store_every_decode_worker_loads_the_save(pair):
    """Mooncake Store keeps a save: two decode workers (two clients of a real master) both load it."""
    require(importlib.util.find_spec("mooncake") is not None, "Mooncake is not installed ('omni-mooncake[cpu]')")
    from omni_mooncake.master import MooncakeMaster

    master = MooncakeMaster().start()
    sides = []
    try:
        extra = {"host": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master": master.address,
                 "segment": 32 << 20, "localbuf": 16 << 20, "get_timeout_s": 0.3}  # fmt: skip
        store = {"name": "MooncakeStoreConnector", "extra": extra}
        producer, produced = pair(store)
        sides.append(producer)
        for cache in produced.values():
            cache.copy_(torch.randn(*SHAPE))
        save(producer, produced, "omni-e", [2, 5])
        for _ in range(2):
            consumer, consumed = pair(store)
            sides.append(consumer)
            blocks, metadata = manifest_of(consumer, "omni-e")
            assert load(consumer, LoadSpec("req", "omni-e", blocks, 0, [8, 9], metadata)) == set()
            for name in LAYERS:
                assert torch.equal(consumed[name][[8, 9]], produced[name][[2, 5]])
    finally:
        for side in sides:  # clients leave before their master
            side.close()
        master.stop()
