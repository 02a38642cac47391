"""Prometheus metrics of live connectors: what a scrape shows after real calls, by connector, edge and stage."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from omni_core import (
    ConnectorSpec,
    OmniConnectorBase,
    OmniConnectorFactory,
    create_connectors_from_config,
    merge_metrics,
    metrics_snapshot,
    record_calls,
)
from omni_core.testing import metrics_endpoint, scrape_metrics


class DictConnector(OmniConnectorBase):
    """A connector over a dict, with a pool to report and a key that makes put fail."""

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}

    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict | None]:
        if put_key == "refused":
            return False, 0, None
        if put_key == "raises":
            raise RuntimeError("backend gone")
        self.items[put_key] = data
        return True, len(data), None

    def get(self, from_stage: str, to_stage: str, get_key: str, metadata: dict | None = None) -> tuple[Any, int] | None:
        data = self.items.pop(get_key, None)
        return None if data is None else (data, len(data))

    def cleanup(self, request_id: str) -> None:
        self.items.pop(request_id, None)

    def health(self) -> dict[str, Any]:
        raise AssertionError("a scrape must not call health() (it may probe a backend)")

    def pool_used_bytes(self) -> int:
        return sum(map(len, self.items.values()))

    def close(self) -> None:
        self.items.clear()


@pytest.fixture
def server() -> Iterator[str]:
    with metrics_endpoint() as url:
        yield url


def labels(edge: str, stage: str = "", replica: str = "", **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"connector": "DictConnector", "edge": edge, "stage": stage, "replica": replica, **more}.items())


def test_calls_bytes_errors_and_latency_by_edge(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNI_STAGE_ID", "1")
    monkeypatch.delenv("OMNI_REPLICA_ID", raising=False)
    connector = DictConnector()
    assert connector.put("0", "1", "a", b"x" * 100)[0] and connector.put("0", "1", "b", b"y" * 50)[0]
    assert connector.put("0", "1", "refused", b"z") == (False, 0, None)
    with pytest.raises(RuntimeError):
        connector.put("1", "2", "raises", b"z")
    assert connector.get("0", "1", "a") is not None and connector.get("0", "1", "nothing") is None
    assert connector.get_with_deadline("0", "1", "b", deadline=time.monotonic() + 1) is not None  # counted once

    got = scrape_metrics(server)
    edge = labels("0->1", stage="1")
    assert got[("omni_connector_puts_total", edge)] == 2
    assert got[("omni_connector_errors_total", edge)] == 1
    assert got[("omni_connector_errors_total", labels("1->2", stage="1"))] == 1  # the call that raised
    assert got[("omni_connector_gets_total", edge)] == 2
    assert got[("omni_connector_get_misses_total", edge)] == 1
    assert got[("omni_connector_bytes_total", edge | {("direction", "put")})] == 150
    assert got[("omni_connector_bytes_total", edge | {("direction", "get")})] == 150
    assert got[("omni_connector_put_seconds_count", edge)] == 2
    assert got[("omni_connector_get_seconds_bucket", edge | {("le", "+Inf")})] == 2
    assert 0 < got[("omni_connector_get_seconds_sum", edge)] < 1
    pool = [value for (name, _), value in got.items() if name == "omni_connector_pool_used_bytes"]
    assert pool == [0]  # both payloads were read


def test_nothing_is_recorded_before_the_server_starts() -> None:
    record_calls(False)
    connector = DictConnector()
    connector.put("0", "1", "quiet", b"q")
    assert not [s for s in metrics_snapshot()["series"] if s["edge"] == "0->1" and s["puts"]]


def test_other_processes_figures_are_shown_and_instances_alike_summed(server: str) -> None:
    first, second = DictConnector(), DictConnector()
    first.put("5", "6", "k", b"abc")
    second.put("5", "6", "k", b"de")
    mine = metrics_snapshot(stage="5", replica="0")
    merge_metrics("stage 5 replica 1", metrics_snapshot(stage="5", replica="1"))
    got = scrape_metrics(server)
    assert got[("omni_connector_puts_total", labels("5->6", stage="5", replica="1"))] == 2  # both instances
    assert got[("omni_connector_bytes_total", labels("5->6", stage="5", replica="1", direction="put"))] == 5
    assert [s["puts"] for s in mine["series"] if s["edge"] == "5->6"] == [1, 1]
    with pytest.raises(ValueError, match="stage 9"):
        merge_metrics("stage 9", {"nothing": []})


def test_the_stage_a_connector_was_wired_for_labels_its_series(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine's stage wiring (``create_connectors_from_config(caller_stage_id=...)``) names the stage."""
    monkeypatch.delenv("OMNI_STAGE_ID", raising=False)
    monkeypatch.delenv("OMNI_REPLICA_ID", raising=False)
    OmniConnectorFactory.register_connector("DictConnector", lambda extra: DictConnector())
    try:
        wired = create_connectors_from_config({("7", "8"): ConnectorSpec("DictConnector")}, caller_stage_id=8)
        orchestrator = create_connectors_from_config({("7", "8"): ConnectorSpec("DictConnector")},
                                                     caller_stage_id="orchestrator")
    finally:
        OmniConnectorFactory.unregister_connector("DictConnector")
    orchestrator[("7", "8")].put("7", "8", "k", b"abcd")
    assert wired[("7", "8")].get("7", "8", "k") is None  # another instance: nothing there
    unwired = DictConnector()
    unwired.put("7", "8", "k", b"ab")
    got = scrape_metrics(server)
    assert got[("omni_connector_puts_total", labels("7->8", stage="orchestrator"))] == 1
    assert got[("omni_connector_get_misses_total", labels("7->8", stage="8"))] == 1
    assert got[("omni_connector_bytes_total", labels("7->8", direction="put"))] == 2  # no stage known


def test_core_and_recording_need_no_prometheus_client() -> None:
    """Only the exporter imports prometheus-client: core, connectors and recorded calls work without it."""
    code = ("import sys, omni_core\n"
            "class C(omni_core.OmniConnectorBase):\n"
            "    put = lambda self, *a: (True, 1, None); get = lambda self, *a, **k: None\n"
            "    cleanup = close = lambda self, *a: None; health = lambda self: {}\n"
            "omni_core.record_calls(); c = C(); c.put('0', '1', 'k', b'x')\n"
            "assert omni_core.metrics_snapshot()['series'][0]['puts'] == 1\n"
            "print('prometheus_client' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
