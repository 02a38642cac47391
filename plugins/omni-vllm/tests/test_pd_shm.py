"""Prefill and decode vLLM engines in separate processes, KV over SharedMemoryConnector (one host).

One prefill engine (kv_producer) and one decode engine serve every test of the module, in order; the
decode engine is ``kv_both``, so it saves what it computes too.  Its greedy tokens must equal those
of a plain engine (the ``reference``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import vllm_prompts as P
from vllm_engines import BLOCK_SIZE, Engine, close_engines, generate_counted, llm_args, omni_kv_config, start_engines

from omni_core import ConnectorSpec, OmniConnectorFactory

HITS = "vllm:external_prefix_cache_hits"
LOCAL_HITS = "vllm:prefix_cache_hits"


@pytest.fixture(scope="module")
def engines(shm_namespace: str, reference: object) -> Iterator[dict[str, Engine]]:
    connector = {"name": "SharedMemoryConnector", "extra": {"namespace": shm_namespace}}
    prefill, decode = start_engines(
        # prefill in chunks of 128 tokens: a prompt's save is planned when its last chunk runs
        lambda: Engine(llm_args(omni_kv_config("kv_producer", connector), max_num_batched_tokens=128)),
        lambda: Engine(llm_args(omni_kv_config("kv_both", connector))),
    )
    pair = {"prefill": prefill, "decode": decode}
    yield pair
    close_engines(*pair.values())


@pytest.fixture
def shm(shm_namespace: str) -> Iterator[object]:
    """A SharedMemoryConnector of the engines' namespace, in the test process."""
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector",
                                                                    {"namespace": shm_namespace}))  # fmt: skip
    yield connector
    connector.close()


def test_decode_loads_what_prefill_saved_and_matches_a_plain_engine(engines, reference):
    """A batch of 4: long, shared-prefix, shorter than a block, block-aligned. Hits cover whole blocks."""
    prefill, decode = engines["prefill"], engines["decode"]
    prefill.generate(P.BATCH, max_tokens=1)
    outputs, grew = generate_counted(decode, P.BATCH)
    expected = [P.loadable_tokens(p) for p in P.BATCH]
    assert expected == [9 * BLOCK_SIZE, 5 * BLOCK_SIZE, 0, 7 * BLOCK_SIZE]
    assert [out["num_cached_tokens"] for out in outputs] == expected
    assert grew(HITS) == sum(expected)  # vLLM's own counter: tokens loaded through us
    assert grew("vllm:omni_kv_tokens_loaded") == sum(expected)
    assert grew("vllm:omni_kv_loads") == 3
    assert grew("vllm:omni_kv_load_failures") == 0
    assert grew("vllm:omni_kv_saves") == 3  # kv_both: the prompts with a whole block
    for prompt, out in zip(P.BATCH, outputs, strict=True):
        assert out["tokens"] == reference.tokens(prompt)


def test_decode_loads_only_what_its_own_cache_lacks_and_whole_blocks_of_a_shorter_save(engines, reference):
    """SHARED_Y's first two blocks are cached locally (from SHARED_X); EXTENDED loads PREFILLED's blocks."""
    prefill, decode = engines["prefill"], engines["decode"]
    prefill.generate([P.SHARED_Y, P.PREFILLED], max_tokens=1)
    outputs, grew = generate_counted(decode, [P.SHARED_Y, P.EXTENDED])
    shared_y = P.loadable_tokens(P.SHARED_Y)
    extended = P.loadable_tokens(P.EXTENDED, saved_tokens=len(P.PREFILLED))
    assert extended == 6 * BLOCK_SIZE < P.loadable_tokens(P.EXTENDED)
    assert [out["num_cached_tokens"] for out in outputs] == [shared_y, extended]
    assert grew(LOCAL_HITS) == len(P.SHARED)
    assert grew(HITS) == shared_y - len(P.SHARED) + extended
    assert [out["tokens"] for out in outputs] == [reference.tokens(P.SHARED_Y), reference.tokens(P.EXTENDED)]


def test_corrupt_and_truncated_payloads_are_detected_counted_and_recomputed(engines, reference, shm):
    """The proxy flow (kv_transfer_params): ROUTED loads; FLIPPED and TRUNCATED fail their check."""
    prefill, decode = engines["prefill"], engines["decode"]
    prompts = [P.ROUTED, P.FLIPPED, P.TRUNCATED]
    params = [out["kv_transfer_params"] for out in
              prefill.generate(prompts, max_tokens=1, params=[{"do_remote_decode": True}] * 3)]  # fmt: skip
    assert all(p["do_remote_prefill"] and p["remote_omni_blocks"] > 0 for p in params)
    _rewrite(shm, f"{params[1]['remote_omni_name']}-1", lambda t: _flip_byte(t, t.numel() // 2))
    _rewrite(shm, f"{params[2]['remote_omni_name']}-0", lambda t: t[:-100].clone())
    outputs, grew = generate_counted(decode, prompts, params)
    assert grew("vllm:omni_kv_corrupt_payloads") == 2
    assert grew("vllm:omni_kv_load_failures") == 2
    assert grew("vllm:omni_kv_tokens_loaded") == P.loadable_tokens(P.ROUTED)
    for prompt, out in zip(prompts, outputs, strict=True):
        assert out["tokens"] == reference.tokens(prompt)


def test_producer_gone_before_decode_means_recompute(engines, reference, shm_namespace):
    """The prefill engine shuts down (its connector withdraws what nobody read); decode recomputes."""
    prefill, decode = engines["prefill"], engines["decode"]
    prefill.generate([P.GONE], max_tokens=1)
    engines.pop("prefill")
    close_engines(prefill)
    [out], grew = generate_counted(decode, [P.GONE])
    assert grew("vllm:omni_kv_lookups") == 1
    assert grew(HITS) == 0
    assert out["num_cached_tokens"] == 0
    assert out["tokens"] == reference.tokens(P.GONE)


def _rewrite(shm: object, key: str, change: object) -> None:
    """Take the payload under ``key`` (consuming it) and publish ``change(payload)`` in its place."""
    got = shm.get("0", "1", key)
    assert got is not None, f"no payload under {key!r}"
    ok, _, _ = shm.put("0", "1", key, change(got[0]))
    assert ok


def _flip_byte(payload: torch.Tensor, index: int) -> torch.Tensor:
    payload = payload.clone()
    payload[index] ^= 0xFF
    return payload
