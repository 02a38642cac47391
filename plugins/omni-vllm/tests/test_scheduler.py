"""The scheduler side without an engine: what is saved when, what a lookup claims, the proxy flow's params.

Requests and scheduler outputs are plain records with the fields vLLM's have; the connector is real
shared memory, and the manifests are put as a prefill worker puts them.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import SESSION

from omni_core import OmniConnectorFactory
from omni_vllm.config import parse_settings
from omni_vllm.keys import BlockKeys, manifest_key
from omni_vllm.plan import make_manifest
from omni_vllm.scheduler import PARAM_NAME, KVScheduler

BLOCK = 4
LAYERS = 2


def request(req_id: str, tokens: list[int], params: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(request_id=req_id, prompt_token_ids=tokens, num_prompt_tokens=len(tokens),
                           kv_transfer_params=params, lora_request=None, mm_features=[], cache_salt=None)  # fmt: skip


def step(new: dict[str, tuple[int, int]], cached: dict[str, tuple[int, int]] = {}) -> SimpleNamespace:  # noqa: B006
    """A scheduler output: request id -> (tokens computed before the step, tokens scheduled in it)."""
    cached_reqs = SimpleNamespace(req_ids=list(cached), num_computed_tokens=[c for c, _ in cached.values()])
    return SimpleNamespace(
        scheduled_new_reqs=[SimpleNamespace(req_id=r, num_computed_tokens=c) for r, (c, _) in new.items()],
        scheduled_cached_reqs=cached_reqs,
        num_scheduled_tokens={r: n for r, (_, n) in {**new, **cached}.items()},
    )


@pytest.fixture
def sides():
    shm = {"name": "SharedMemoryConnector", "extra": {"namespace": f"{SESSION}_s"}}
    settings = parse_settings({"omni_connector": shm})
    made = []

    def scheduler(*, saves: bool = False, loads: bool = False) -> KVScheduler:
        side = KVScheduler(
            settings, BlockKeys("omni", ("tiny",), BLOCK), LAYERS, saves=saves, loads=loads, engine_id="e1",
            open_receiver=lambda: OmniConnectorFactory.create_connector(settings.connector),
        )  # fmt: skip
        made.append(side)
        return side

    producer = OmniConnectorFactory.create_connector(settings.connector)
    yield scheduler, producer
    producer.close()
    for side in made:
        side.close()


def test_a_prompt_is_saved_once_when_its_last_chunk_runs(sides):
    scheduler, _ = sides
    prefill = scheduler(saves=True)
    tokens = list(range(10, 21))  # 11 tokens: 2 whole blocks
    for req_id in ("a", "b"):  # the same prompt twice
        prefill.on_new_request(request(req_id, tokens))
    blocks = {"a": [7, 3, 9], "b": [1, 2, 5]}
    assert prefill.plan(step({"a": (0, 8), "b": (0, 8)}), blocks.get).saves == []  # first chunk: not yet
    plan = prefill.plan(step({}, {"a": (8, 3), "b": (8, 3)}), blocks.get)
    assert [(s.req_id, s.block_ids) for s in plan.saves] == [("a", [7, 3])]  # whole blocks, one save per name
    assert prefill.plan(step({}, {"a": (11, 1)}), blocks.get).saves == []  # decoding: nothing more


def test_lookup_claims_the_longest_save_and_loads_whole_blocks_past_the_local_cache(sides):
    scheduler, producer = sides
    decode = scheduler(loads=True)
    keys = decode.keys
    prompt = list(range(100, 122))  # 22 tokens: 5 whole blocks, 5 loadable (the last token is computed)
    name = keys.save_name(keys.chain(prompt, 3)[-1])  # a save of the first 3 blocks only
    assert producer.put("0", "1", manifest_key(name), make_manifest(3, [None] * LAYERS))[0]
    req = request("r", prompt)
    assert decode.matched_tokens(req, 4) == 2 * BLOCK  # blocks 1 and 2; block 0 is cached locally
    assert decode.matched_tokens(req, 4) == 2 * BLOCK  # asked again: the same claim, nothing probed twice
    assert decode.counters.totals()["probes"] == 3  # blocks 5, 4, then 3 (the hit)
    decode.after_alloc(req, [20, 21, 22, 23, 24, 25], 2 * BLOCK)
    [load] = decode.plan(step({"r": (12, 10)}), lambda _: []).loads
    assert (load.name, load.payload_blocks, load.first_block, load.block_ids) == (name, 3, 1, [21, 22])
    assert decode.matched_tokens(req, 0) == 0  # the save is consumed: a preempted request recomputes


def test_a_miss_and_a_prompt_shorter_than_a_block(sides):
    scheduler, _ = sides
    decode = scheduler(loads=True)
    assert decode.matched_tokens(request("short", [5, 6, 7]), 0) == 0
    assert decode.matched_tokens(request("miss", list(range(30))), 0) == 0
    assert decode.counters.totals()["lookups"] == 1  # the short prompt had nothing to look up


def test_proxy_flow_params_name_a_save_of_the_request_s_own(sides):
    scheduler, producer = sides
    prefill = scheduler(saves=True)
    tokens = list(range(40, 50))
    routed, plain = request("p", tokens, {"do_remote_decode": True}), request("q", tokens)
    for req in (routed, plain):
        prefill.on_new_request(req)
    plan = prefill.plan(step({"p": (0, 10), "q": (0, 10)}), lambda _: [1, 2, 3])
    assert len({s.name for s in plan.saves}) == 2  # same tokens, but the routed request has its own keys
    params = prefill.finished(routed)
    assert prefill.finished(plain) is None
    assert params["do_remote_prefill"] and params["remote_omni_blocks"] == 2 and params[PARAM_NAME] in {
        s.name for s in plan.saves}  # fmt: skip
    decode = scheduler(loads=True)
    assert producer.put("0", "1", manifest_key(params[PARAM_NAME]), make_manifest(2, [None] * LAYERS))[0]
    assert decode.matched_tokens(request("d", tokens, params), 0) == 2 * BLOCK
    assert decode.counters.totals()["probes"] == 1
