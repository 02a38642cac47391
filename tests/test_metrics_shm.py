"""Prometheus metrics of a real SharedMemoryConnector: calls, bytes, latency and its pool, scraped over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from omni_core import ConnectorSpec, create_connectors_from_config
from omni_core.testing import metrics_endpoint, scrape_metrics

EDGE = ("0", "1")


@pytest.fixture
def url() -> Iterator[str]:
    with metrics_endpoint() as endpoint:
        yield endpoint


def test_shared_memory_puts_gets_bytes_and_pool_by_stage(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMNI_STAGE_ID", raising=False)
    monkeypatch.delenv("OMNI_REPLICA_ID", raising=False)
    spec = {EDGE: ConnectorSpec("SharedMemoryConnector", {"namespace": f"metrics{uuid.uuid4().hex[:8]}"})}
    producer = create_connectors_from_config(spec, caller_stage_id=0)[EDGE]
    consumer = create_connectors_from_config(spec, caller_stage_id=1)[EDGE]
    try:
        sizes = [producer.put(*EDGE, f"req-{i}", b"p" * (4096 << i))[1] for i in range(3)]
        assert all(sizes)
        mid = scrape_metrics(url)
        pool = {("connector", "SharedMemoryConnector"), ("stage", "0"), ("replica", ""),
                ("instance", f"{id(producer):x}")}
        assert mid[("omni_connector_pool_used_bytes", frozenset(pool))] >= sum(sizes)  # published, unread
        got = [consumer.get(*EDGE, f"req-{i}") for i in range(3)]
        assert [g[1] for g in got if g is not None] == sizes
        assert consumer.get(*EDGE, "req-0") is None  # consumed once
        producer.reap_consumed()
        after = scrape_metrics(url)
    finally:
        producer.close()
        consumer.close()
    sent = frozenset({"connector": "SharedMemoryConnector", "edge": "0->1", "stage": "0", "replica": ""}.items())
    received = frozenset({"connector": "SharedMemoryConnector", "edge": "0->1", "stage": "1", "replica": ""}.items())
    assert after[("omni_connector_puts_total", sent)] == 3
    assert after[("omni_connector_bytes_total", sent | {("direction", "put")})] == sum(sizes)
    assert after[("omni_connector_put_seconds_count", sent)] == 3
    assert after[("omni_connector_gets_total", received)] == 3
    assert after[("omni_connector_get_misses_total", received)] == 1
    assert after[("omni_connector_bytes_total", received | {("direction", "get")})] == sum(sizes)
    assert after[("omni_connector_get_seconds_bucket", received | {("le", "+Inf")})] == 3
    assert after[("omni_connector_errors_total", sent)] == after[("omni_connector_errors_total", received)] == 0
    assert after[("omni_connector_pool_used_bytes", frozenset(pool))] == 0  # every region read and reclaimed
