"""StageKVPipe: one stage's KV blocks to the next (thinker -> talker), FIFO, over a real connector."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest
import torch
from conftest import SESSION

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.testing import require
from omni_vllm import StageKVPipe
from omni_vllm.payload import CorruptPayload

SHAPE = (8, 2, 32, 128)  # a CPU paged KV cache layer: [blocks, kv heads, block size, 2 * head size]

#: The thinker: a separate process with its own KV cache (seeded), sending three items in order.
THINKER = """
import json, sys, torch
from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_vllm import StageKVPipe
spec = json.loads(sys.argv[1])
torch.manual_seed(0)
layers = [torch.randn(*spec["shape"]).to(torch.bfloat16) for _ in range(3)]
connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": spec["ns"]}))
pipe = StageKVPipe(connector, "0", "1", owns_connector=True)
pipe.send(layers, [5, 2])   # request A: two blocks
pipe.send(layers, None)     # request B: no KV
pipe.send(layers, [7])      # request C: one block
sys.stdin.read()            # keep the connector (and its payloads) until the talker is done
pipe.close()
"""


@pytest.fixture
def namespace(request) -> str:
    return f"{SESSION}_stage_{request.node.name[-12:].replace('[', '').replace(']', '')}"


def test_thinker_to_talker_in_another_process(namespace):
    torch.manual_seed(0)
    expected = [torch.randn(*SHAPE).to(torch.bfloat16) for _ in range(3)]  # what the thinker's cache holds
    thinker = subprocess.Popen([sys.executable, "-c", THINKER, json.dumps({"ns": namespace, "shape": SHAPE})],
                               stdin=subprocess.PIPE, text=True)  # fmt: skip
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": namespace}))
    try:
        with StageKVPipe(connector, "0", "1", recv_timeout=60) as pipe:
            talker = [torch.zeros(*SHAPE, dtype=torch.bfloat16) for _ in range(3)]
            assert pipe.recv_into(talker, [0, 3])  # A's blocks land in the talker's blocks 0 and 3
            for got, want in zip(talker, expected, strict=True):
                assert torch.equal(got[[0, 3]], want[[5, 2]])
                assert not got[[1, 2, 4]].any()
            assert pipe.recv(talker, 1) is None  # B: an empty item, in order
            [c0, c1, c2] = pipe.recv(talker, 1)  # C
            assert torch.equal(torch.stack([c0, c1, c2]), torch.stack([layer[[7]] for layer in expected]))
    finally:
        thinker.communicate("", timeout=60)
        connector.close()
    assert thinker.returncode == 0


def test_a_corrupt_item_is_refused_and_the_next_one_still_arrives(namespace):
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": namespace}))
    layers = [torch.randn(*SHAPE).to(torch.bfloat16)]
    try:
        sender = StageKVPipe(connector, "0", "1", name="kvx")
        sender.send(layers, [1, 2])
        payload, _ = connector.get("0", "1", "kvx_0-1_0")  # item 0 (ConnectorKVPipe's key), damaged in transit
        payload[payload.numel() // 3] ^= 0x10
        assert connector.put("0", "1", "kvx_0-1_0", payload)[0]
        sender.send(layers, [6])
        with StageKVPipe(connector, "0", "1", name="kvx") as receiver:
            with pytest.raises(CorruptPayload, match="checksum"):
                receiver.recv(layers, 2)
            [block] = receiver.recv(layers, 1)
            assert torch.equal(block, layers[0][[6]])
    finally:
        connector.close()


def test_mooncake_transfer_engine_raw_path():
    """On a raw-data connector an item is one bare uint8 buffer and comes back intact (one pull)."""
    require(importlib.util.find_spec("mooncake") is not None, "needs omni-mooncake[cpu] (mooncake.engine)")
    base = {"protocol": "tcp", "host": "127.0.0.1", "memory_pool_size": 16 << 20}
    sender = OmniConnectorFactory.create_connector(
        ConnectorSpec("MooncakeTransferEngineConnector", {**base, "role": "sender", "zmq_port": 0}))
    receiver = OmniConnectorFactory.create_connector(ConnectorSpec(
        "MooncakeTransferEngineConnector",
        {**base, "role": "receiver", "sender_host": "127.0.0.1", "sender_zmq_port": sender.zmq_port}))
    layers = [torch.randn(*SHAPE).to(torch.bfloat16) for _ in range(2)]
    try:
        StageKVPipe(sender, "0", "1").send(layers, [3, 4])
        got = StageKVPipe(receiver, "0", "1", recv_timeout=30).recv(layers, 2)
        assert all(torch.equal(g, layer[[3, 4]]) for g, layer in zip(got, layers, strict=True))
    finally:
        receiver.close()
        sender.close()
