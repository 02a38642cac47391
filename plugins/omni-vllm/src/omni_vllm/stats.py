"""The connector's counters in vLLM's KV connector stats and Prometheus metrics (``vllm:omni_kv_*``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.config import VllmConfig
from vllm.distributed.kv_transfer.kv_connector.v1.metrics import (
    KVConnectorPromMetrics,
    KVConnectorStats,
    PromMetric,
    PromMetricT,
)
from vllm.v1.metrics.utils import create_metric_per_engine

from .counters import SCHEDULER_COUNTERS, WORKER_COUNTERS

PREFIX = "vllm:omni_kv_"


@dataclass
class OmniKVStats(KVConnectorStats):
    """Counter increments of one interval (``data``: name -> amount), summed across workers and steps."""

    def reset(self) -> None:
        self.data = {}

    def aggregate(self, other: KVConnectorStats) -> OmniKVStats:
        for name, amount in other.data.items():
            self.data[name] = self.data.get(name, 0) + amount
        return self

    def reduce(self) -> dict[str, int | float]:
        return dict(self.data)

    def is_empty(self) -> bool:
        return not any(self.data.values())


class OmniKVPromMetrics(KVConnectorPromMetrics):
    """One Prometheus counter ``vllm:omni_kv_<name>`` per connector counter, per engine."""

    def __init__(
        self,
        vllm_config: VllmConfig,
        metric_types: dict[type[PromMetric], type[PromMetricT]],
        labelnames: list[str],
        per_engine_labelvalues: dict[int, list[object]],
    ) -> None:
        super().__init__(vllm_config, metric_types, labelnames, per_engine_labelvalues)
        self.counters: dict[str, dict[int, Any]] = {}
        for name, help_text in {**WORKER_COUNTERS, **SCHEDULER_COUNTERS}.items():
            metric = self._counter_cls(name=PREFIX + name, documentation=f"OmniKVConnector: {help_text}",
                                       labelnames=labelnames)  # fmt: skip
            self.counters[name] = create_metric_per_engine(metric, per_engine_labelvalues)

    def observe(self, transfer_stats_data: dict[str, Any], engine_idx: int = 0) -> None:
        for name, amount in transfer_stats_data.items():
            per_engine = self.counters.get(name)
            if per_engine is not None and amount:
                per_engine[engine_idx].inc(amount)
