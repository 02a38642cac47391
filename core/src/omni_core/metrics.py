"""Prometheus metrics of live connectors: calls, bytes, errors and latency per connector, edge and stage.

Recording is off until :func:`start_metrics_server` (or :func:`record_calls`) turns it on; until then a
connector call pays one flag check.  Every ``put``, ``get`` and ``get_with_deadline`` of every connector
class (third-party ones too: :class:`~omni_core.OmniConnectorBase` wraps them) is then counted with its
edge (``from -> to`` of the call) and timed.  Numbers live in plain Python objects; ``prometheus-client``
(``pip install omni-core[metrics]``) is imported only by the exporter, which reads them at scrape time.

Other processes (a pipeline's stages) send :func:`snapshot` to the process that serves the metrics, which
shows them with :func:`merge_remote` (``omni run --metrics-port`` does this over its stage channel).
"""

from __future__ import annotations

import bisect
import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

#: Latency histogram bucket bounds, seconds (Prometheus ``le``; +Inf is implied).
BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: A snapshot from another process is dropped when it has not been refreshed for this long.
REMOTE_STALE_S = 300.0

_recording = False
_RAISED = object()  # what a call that raised "returned"
_inside = threading.local()  # a wrapped call in progress on this thread (nested calls are not counted twice)


@dataclass
class _Latency:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total_s: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total_s += seconds


@dataclass
class _EdgeCalls:
    """One connector's calls on one edge."""

    puts: int = 0
    gets: int = 0
    misses: int = 0
    errors: int = 0
    put_bytes: int = 0
    get_bytes: int = 0
    put_latency: _Latency = field(default_factory=_Latency)
    get_latency: _Latency = field(default_factory=_Latency)


_calls: weakref.WeakKeyDictionary[Any, dict[str, _EdgeCalls]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_remote: dict[str, tuple[float, dict[str, Any]]] = {}
_wired_stage: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # set by the stage wiring


def wired_for_stage(connector: Any, stage: str) -> None:
    """Label ``connector``'s series with ``stage``, the stage ``create_connectors_from_config`` made it for."""
    with _lock:
        _wired_stage[connector] = stage


def record_calls(on: bool = True) -> None:
    """Count and time connector calls in this process from now on (``on=False`` stops)."""
    global _recording
    _recording = on


def recording() -> bool:
    """Whether connector calls are being recorded in this process."""
    return _recording


def timed_call(method: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``method`` (a connector's ``put``, ``get`` or ``get_with_deadline``), recorded while recording is on."""

    @functools.wraps(method)
    def wrapper(self: Any, from_stage: Any, to_stage: Any, *args: Any, **kwargs: Any) -> Any:
        if not _recording or getattr(_inside, "active", False):
            return method(self, from_stage, to_stage, *args, **kwargs)
        _inside.active = True
        started = time.perf_counter()
        result: Any = _RAISED
        try:
            result = method(self, from_stage, to_stage, *args, **kwargs)
            return result
        finally:
            _inside.active = False
            _observe(self, f"{from_stage}->{to_stage}", kind, time.perf_counter() - started, result)

    wrapper._omni_timed = True  # type: ignore[attr-defined]
    return wrapper


def _observe(connector: Any, edge: str, kind: str, seconds: float, result: Any) -> None:
    with _lock:
        calls = _calls.setdefault(connector, {}).setdefault(edge, _EdgeCalls())
        if result is _RAISED:
            calls.errors += 1
        elif kind == "put":
            if result is not None and result[0]:
                calls.puts += 1
                calls.put_bytes += int(result[1])
                calls.put_latency.observe(seconds)
            else:
                calls.errors += 1
        elif result is not None:
            calls.gets += 1
            calls.get_bytes += int(result[1])
            calls.get_latency.observe(seconds)
        else:
            calls.misses += 1


def snapshot(*, stage: str | None = None, replica: str | None = None) -> dict[str, Any]:
    """This process's figures as plain JSON: ``{"series": [...]}``, one entry per connector instance and edge.

    ``stage`` and ``replica`` label them; by default ``stage`` is the stage a connector was created for by
    ``create_connectors_from_config`` (its ``caller_stage_id``), else ``OMNI_STAGE_ID``, and ``replica`` is
    ``OMNI_REPLICA_ID``; empty when unknown.
    """
    default_stage = os.environ.get("OMNI_STAGE_ID", "")
    replica = os.environ.get("OMNI_REPLICA_ID", "") if replica is None else replica
    series = []
    with _lock:
        items = [(connector, dict(edges), _wired_stage.get(connector, default_stage)) for connector, edges in
                 _calls.items()]  # fmt: skip
    for connector, edges, wired in items:
        pool = _pool_used_bytes(connector)
        labels = {"stage": wired if stage is None else stage, "replica": replica}
        for edge, c in edges.items():
            series.append({
                **labels, "connector": type(connector).__name__, "edge": edge, "instance": f"{id(connector):x}",
                "puts": c.puts, "gets": c.gets, "misses": c.misses, "errors": c.errors,
                "put_bytes": c.put_bytes, "get_bytes": c.get_bytes, "pool_used_bytes": pool,
                "put_latency": [c.put_latency.counts, c.put_latency.total_s],
                "get_latency": [c.get_latency.counts, c.get_latency.total_s],
            })  # fmt: skip
    return {"series": series}


def _pool_used_bytes(connector: Any) -> int | None:
    """The connector's :meth:`~omni_core.OmniConnectorBase.pool_used_bytes` (closed, or no pool: None)."""
    if getattr(connector, "closed", False):
        return None
    try:
        value = connector.pool_used_bytes()
    except Exception:  # a scrape never fails because one connector does
        return None
    return int(value) if isinstance(value, int) else None


def merge_remote(source: str, figures: dict[str, Any]) -> None:
    """Show ``figures`` (another process's :func:`snapshot`) as ``source``'s, replacing its previous ones."""
    series = figures.get("series") if isinstance(figures, dict) else None
    if not isinstance(series, list):
        raise ValueError(f"metrics snapshot from {source} has no 'series' list")
    with _lock:
        _remote[source] = (time.monotonic(), figures)


def _all_series() -> Iterator[dict[str, Any]]:
    yield from snapshot()["series"]
    now = time.monotonic()
    with _lock:
        for source in [s for s, (at, _) in _remote.items() if now - at > REMOTE_STALE_S]:
            del _remote[source]
        remote = [figures for _, figures in _remote.values()]
    for figures in remote:
        yield from figures["series"]


class OmniCollector:
    """A ``prometheus_client`` collector over every live connector of this process and the merged snapshots."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        names = ["connector", "edge", "stage", "replica"]
        puts = CounterMetricFamily("omni_connector_puts", "Successful puts", labels=names)
        gets = CounterMetricFamily("omni_connector_gets", "Gets that returned a payload", labels=names)
        misses = CounterMetricFamily("omni_connector_get_misses", "Gets that returned nothing (yet)", labels=names)
        errors = CounterMetricFamily("omni_connector_errors", "Puts that failed and calls that raised", labels=names)
        moved = CounterMetricFamily("omni_connector_bytes", "Payload bytes put and got", labels=[*names, "direction"])
        pool = GaugeMetricFamily("omni_connector_pool_used_bytes", "Bytes of the connector's pool in use",
                                 labels=["connector", "stage", "replica", "instance"])  # fmt: skip
        put_s = HistogramMetricFamily("omni_connector_put_seconds", "Latency of successful puts", labels=names)
        get_s = HistogramMetricFamily("omni_connector_get_seconds", "Latency of gets that returned", labels=names)
        pools: dict[tuple[str, ...], int] = {}
        for values, s in _summed(_all_series()).items():
            puts.add_metric(list(values), s["puts"])
            gets.add_metric(list(values), s["gets"])
            misses.add_metric(list(values), s["misses"])
            errors.add_metric(list(values), s["errors"])
            moved.add_metric([*values, "put"], s["put_bytes"])
            moved.add_metric([*values, "get"], s["get_bytes"])
            for family, (counts, total) in ((put_s, s["put_latency"]), (get_s, s["get_latency"])):
                family.add_metric(list(values), _buckets(counts), total)
            for (connector, stage, replica, instance), used in s["pools"].items():
                pools[(connector, stage, replica, instance)] = used
        for key, used in pools.items():
            pool.add_metric(list(key), used)
        yield from (puts, gets, misses, errors, moved, put_s, get_s, pool)


_COUNTS = ("puts", "gets", "misses", "errors", "put_bytes", "get_bytes")


def _summed(series: Iterator[dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """The series summed per label set (connector, edge, stage, replica): instances alike are added up."""
    out: dict[tuple[str, ...], dict[str, Any]] = {}
    for s in series:
        key = (s["connector"], s["edge"], s["stage"], s["replica"])
        into = out.setdefault(key, {**dict.fromkeys(_COUNTS, 0), "pools": {},
                                    "put_latency": [[0] * (len(BUCKETS) + 1), 0.0],
                                    "get_latency": [[0] * (len(BUCKETS) + 1), 0.0]})  # fmt: skip
        for name in _COUNTS:
            into[name] += s[name]
        for name in ("put_latency", "get_latency"):
            counts, total = s[name]
            into[name] = [[a + b for a, b in zip(into[name][0], counts, strict=True)], into[name][1] + total]
        if s["pool_used_bytes"] is not None:
            into["pools"][(s["connector"], s["stage"], s["replica"], s["instance"])] = s["pool_used_bytes"]
    return out


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    cumulative = 0
    out: list[tuple[str, float]] = []
    for bound, count in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
        cumulative += count
        out.append((bound, cumulative))
    return out


def start_metrics_server(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve this process's connector metrics at ``http://addr:port/metrics`` and start recording calls.

    For an inference engine or any process holding connectors; ``port`` 0 takes a free port.  Returns the
    HTTP server (its ``server_address`` names the port; ``shutdown()`` then ``server_close()`` stop it).
    Needs ``pip install omni-core[metrics]``.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError as exc:
        raise ImportError("metrics need prometheus-client: pip install 'omni-core[metrics]'") from exc
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OmniCollector())
    server, _ = start_http_server(port, addr, registry=registry)
    record_calls()
    return server
