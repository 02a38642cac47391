"""Prefill on one test host, decode on another, KV over Mooncake's TransferEngine (TCP between hosts).

The hosts are network namespaces on a bridge (``omni_core.testing.hosts``; root needed, else skipped,
failed under CI=true); each engine runs on its host with its own address.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest
import vllm_prompts as P
from vllm_engines import Engine, close_engines, generate_counted, llm_args, omni_kv_config, start_engines

from omni_core.testing import require
from omni_core.testing.hosts import NamespaceHosts

HITS = "vllm:external_prefix_cache_hits"
ZMQ_BASE = 52000  # the prefill worker's side channel listens on ZMQ_BASE + 100 (core's KV-transfer offset)
POOL = 64 << 20


@pytest.fixture(scope="module")
def engines(reference: object) -> Iterator[dict[str, Engine]]:
    require(importlib.util.find_spec("mooncake") is not None, "Mooncake is not installed ('omni-mooncake[cpu]')")
    with NamespaceHosts.for_test(2) as hosts:
        prefill_host, decode_host = hosts.host(1), hosts.host(2)
        te = {"protocol": "tcp", "zmq_port": ZMQ_BASE, "memory_pool_size": POOL}
        producer = {"name": "MooncakeTransferEngineConnector", "extra": {**te, "host": prefill_host.address}}
        consumer = {"name": "MooncakeTransferEngineConnector",
                    "extra": {**te, "host": decode_host.address, "sender_host": prefill_host.address}}  # fmt: skip
        prefill, decode = start_engines(
            lambda: Engine(llm_args(omni_kv_config("kv_producer", producer)), prefix=prefill_host.exec_prefix),
            lambda: Engine(llm_args(omni_kv_config("kv_consumer", consumer)), prefix=decode_host.exec_prefix),
        )
        pair = {"prefill": prefill, "decode": decode, "prefill_address": prefill_host.address}
        yield pair
        close_engines(pair.get("prefill"), decode)


def test_decode_on_another_host_loads_what_prefill_saved(engines, reference):
    prefill, decode = engines["prefill"], engines["decode"]
    prefill.generate(P.TE_BATCH, max_tokens=1)
    outputs, grew = generate_counted(decode, P.TE_BATCH)
    expected = [P.loadable_tokens(p) for p in P.TE_BATCH]
    assert expected[1] == 0  # shorter than a block
    # The last two prompts share two blocks in one batch: whether vLLM takes them from the first one's
    # load or loads them twice, every whole block is there and the tokens add up.
    assert [out["num_cached_tokens"] for out in outputs] == expected
    assert grew(HITS) + grew("vllm:prefix_cache_hits") == sum(expected)
    assert grew(HITS) == grew("vllm:omni_kv_tokens_loaded") > 0
    assert grew("vllm:omni_kv_load_failures") == 0
    for prompt, out in zip(P.TE_BATCH, outputs, strict=True):
        assert out["tokens"] == reference.tokens(prompt)


def test_proxy_flow_names_the_prefill_host(engines, reference):
    prefill, decode = engines["prefill"], engines["decode"]
    [routed] = prefill.generate([P.TE_ROUTED], max_tokens=1, params=[{"do_remote_decode": True}])
    params = routed["kv_transfer_params"]
    assert params["remote_omni_source"]["source_host"] == engines["prefill_address"]
    [out], grew = generate_counted(decode, [P.TE_ROUTED], [params])
    # (num_cached_tokens of a remote-prefill request reports the prefill engine's cache, not the load)
    assert grew(HITS) == grew("vllm:omni_kv_tokens_loaded")
    assert grew(HITS) == P.loadable_tokens(P.TE_ROUTED)
    assert out["tokens"] == reference.tokens(P.TE_ROUTED)


def test_prefill_host_killed_before_decode_means_recompute(engines, reference):
    """SIGKILL the prefill engine: its TransferEngine held the KV.  The first lookup waits out the query
    timeout, then lookups are suspended (lookup_backoff_s): the second request is computed without one."""
    prefill, decode = engines["prefill"], engines["decode"]
    prefill.generate(P.TE_GONE, max_tokens=1)
    engines.pop("prefill").kill()
    outputs, grew = generate_counted(decode, P.TE_GONE)
    assert (grew("vllm:omni_kv_lookups"), grew("vllm:omni_kv_skipped_lookups")) == (1, 1)
    assert grew(HITS) == 0
    assert [out["tokens"] for out in outputs] == [reference.tokens(p) for p in P.TE_GONE]
