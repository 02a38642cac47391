"""Content-addressed block keys, and the self-checking payload KV blocks travel in."""

from __future__ import annotations

import pytest
import torch

from omni_vllm.keys import BlockKeys
from omni_vllm.payload import TRAILER, CorruptPayload, pack_blocks, unpack_blocks

LAYOUT = ("tiny", None, "torch.bfloat16", "auto", 4, "FullAttentionSpec", 2, 64, "torch.bfloat16", 2)


def test_a_block_key_covers_its_whole_prefix():
    keys = BlockKeys("omni", LAYOUT, block_size=4)
    prompt = list(range(10, 22))  # 3 blocks
    chain = keys.chain(prompt, 3)
    assert keys.chain([*prompt, 7, 8, 9, 10], 4)[:3] == chain  # a longer prompt shares the prefix keys
    assert keys.chain([99, *prompt[1:]], 3)[2] != chain[2]  # one token early on changes every later key
    assert BlockKeys("omni", LAYOUT, 4).chain(prompt, 3) == chain  # another engine, same layout: same keys
    assert BlockKeys("omni", (*LAYOUT[:-1], 3), 4).chain(prompt, 3) != chain  # another layout: other keys
    assert keys.chain(prompt, 3, salt=["lora:a"]) != chain  # LoRA, multimodal inputs, cache salt
    assert keys.save_name(chain[-1]) == f"omni-{chain[-1]}"
    with pytest.raises(ValueError, match="3 blocks need 12 tokens"):
        keys.chain(prompt[:11], 3)


def test_payload_round_trip_of_chosen_blocks():
    k = torch.randn(6, 2, 4, 8).to(torch.bfloat16)  # [blocks, heads, block size, 2 * head size]
    v = torch.randn(6, 2, 4, 8).to(torch.bfloat16)
    payload = pack_blocks([k, v], [4, 1])
    assert payload.dtype == torch.uint8 and payload.dim() == 1
    assert payload.numel() == 2 * 2 * k[0].numel() * 2 + TRAILER.size
    got_k, got_v = unpack_blocks(payload, [k, v], 2)
    assert torch.equal(got_k, k[[4, 1]]) and torch.equal(got_v, v[[4, 1]])


def test_corruption_and_truncation_are_detected():
    layer = torch.randn(3, 2, 4, 8).to(torch.bfloat16)
    payload = pack_blocks([layer], [0, 2])
    flipped = payload.clone()
    flipped[5] ^= 1
    with pytest.raises(CorruptPayload, match="checksum"):
        unpack_blocks(flipped, [layer], 2)
    with pytest.raises(CorruptPayload, match="bytes, expected"):
        unpack_blocks(payload[:-1], [layer], 2)
    with pytest.raises(CorruptPayload, match="bytes, expected"):
        unpack_blocks(payload, [layer], 3)  # not the size the manifest promised
    with pytest.raises(CorruptPayload, match="flat uint8 tensor"):
        unpack_blocks({"not": "a tensor"}, [layer], 2)
    bad_trailer = payload.clone()
    bad_trailer[-16] = ord("X")
    with pytest.raises(CorruptPayload, match="bad trailer"):
        unpack_blocks(bad_trailer, [layer], 2)
