"""``OmniKVConnector``: a vLLM ``KVConnectorBase_V1`` that moves KV blocks over any Omni connector.

vLLM builds one instance in the scheduler (role SCHEDULER, see :mod:`.scheduler`) and one in each
worker (role WORKER, see :mod:`.worker`); this class only wires vLLM's calls to them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm.distributed.kv_transfer.kv_connector.v1.base import (
    KVConnectorBase_V1,
    KVConnectorHandshakeMetadata,
    KVConnectorMetadata,
    KVConnectorRole,
)
from vllm.v1.metrics.cache_hit_source import CacheHitSource

from omni_core import ConfigError, OmniConnectorFactory

from .config import KVSettings, check_role, parse_settings
from .endpoint import open_connector, sender_source
from .keys import BlockKeys
from .plan import StepPlan
from .scheduler import KVScheduler
from .stats import OmniKVPromMetrics, OmniKVStats
from .worker import KVWorker

if TYPE_CHECKING:
    import torch
    from vllm.config import VllmConfig
    from vllm.v1.core.kv_cache_manager import KVCacheBlocks
    from vllm.v1.kv_cache_interface import KVCacheConfig
    from vllm.v1.request import Request

logger = logging.getLogger("omni.vllm")


@dataclass
class OmniKVMetadata(KVConnectorMetadata):
    """Scheduler -> worker: this step's saves and loads."""

    plan: StepPlan = field(default_factory=StepPlan)


@dataclass
class OmniKVHandshake(KVConnectorHandshakeMetadata):
    """Worker -> scheduler at start-up: how decode engines reach this worker's sender (None: by key)."""

    source: dict[str, Any] | None = None


class OmniKVConnector(KVConnectorBase_V1):
    """vLLM KV connector over an Omni connector (``kv_connector_extra_config["omni_connector"]``).

    ``kv_producer`` engines save the whole blocks of every prompt when its prefill ends, layer by layer;
    ``kv_consumer`` engines look each new request up and load what they find, layer by layer, while the
    forward pass runs; ``kv_both`` does both.  See the package README for the configuration.
    """

    def __init__(self, vllm_config: VllmConfig, role: KVConnectorRole, kv_cache_config: KVCacheConfig) -> None:
        super().__init__(vllm_config=vllm_config, role=role, kv_cache_config=kv_cache_config)
        transfer = self._kv_transfer_config
        settings = parse_settings(transfer.kv_connector_extra_config)
        kv_role = check_role(transfer.kv_role)
        _check_supported(vllm_config, kv_cache_config)
        saves = kv_role in ("kv_producer", "kv_both")
        loads = kv_role in ("kv_consumer", "kv_both")
        block_size = vllm_config.cache_config.block_size
        replica = vllm_config.parallel_config.data_parallel_rank
        capabilities = OmniConnectorFactory.capabilities(settings.connector.name)
        self._cache_hit_source = CacheHitSource.P2P if capabilities.cross_host else CacheHitSource.HOST
        self._settings = settings
        self._scheduler: KVScheduler | None = None
        self._worker: KVWorker | None = None
        if role == KVConnectorRole.SCHEDULER:
            if loads and transfer.kv_load_failure_policy != "recompute":
                logger.warning(
                    "OmniKVConnector: kv_load_failure_policy=%r fails a request whose KV cannot be loaded after "
                    "its lookup (producer gone, corrupt payload); set it to 'recompute' to recompute instead",
                    transfer.kv_load_failure_policy,
                )
            keys = BlockKeys(settings.namespace, _fingerprint(vllm_config, kv_cache_config), block_size)
            self._scheduler = KVScheduler(
                settings, keys, len(kv_cache_config.kv_cache_groups[0].layer_names),
                saves=saves, loads=loads, engine_id=str(transfer.engine_id), endpoint=capabilities.needs_endpoint,
                open_receiver=lambda: open_connector(settings, sender=False, replica=replica),
            )  # fmt: skip
        else:
            self._worker = KVWorker(settings, open_connector(settings, sender=saves, replica=replica), block_size)
            self._expected_blocks = kv_cache_config.num_blocks

    @property
    def settings(self) -> KVSettings:
        return self._settings

    # -- worker side ---------------------------------------------------------------------------------
    def register_kv_caches(self, kv_caches: dict[str, torch.Tensor]) -> None:
        for name, layer in kv_caches.items():
            if layer.shape[0] != self._expected_blocks:
                raise ConfigError(
                    f"OmniKVConnector: the KV cache of {name} has {layer.shape[0]} blocks along dim 0, "
                    f"vLLM allocated {self._expected_blocks}: this attention backend's layout is not supported"
                )
        self._worker_side().register(kv_caches)

    def start_load_kv(self, forward_context: Any, **kwargs: Any) -> None:
        self._worker_side().start_load(self._plan())

    def wait_for_layer_load(self, layer_name: str) -> None:
        self._worker_side().wait_layer(layer_name)

    def save_kv_layer(self, layer_name: str, kv_layer: torch.Tensor, attn_metadata: Any, **kwargs: Any) -> None:
        plan = self._plan()
        if plan.saves:
            self._worker_side().save_layer(plan, layer_name, kv_layer)

    def wait_for_save(self) -> None:
        self._worker_side().finish_step(self._plan())

    def get_block_ids_with_load_errors(self) -> set[int]:
        return self._worker_side().take_invalid_blocks()

    def get_handshake_metadata(self) -> OmniKVHandshake | None:
        source = sender_source(self._worker_side().connector)
        return None if source is None else OmniKVHandshake(source)

    def shutdown(self) -> None:
        for side in (self._worker, self._scheduler):
            if side is not None:
                side.close()

    # -- scheduler side ------------------------------------------------------------------------------
    def get_num_new_matched_tokens(self, request: Request, num_computed_tokens: int) -> tuple[int | None, bool]:
        return self._scheduler_side().matched_tokens(request, num_computed_tokens), False

    def update_state_after_alloc(self, request: Request, blocks: KVCacheBlocks, num_external_tokens: int) -> None:
        self._scheduler_side().after_alloc(request, blocks.get_block_ids()[0], num_external_tokens)

    def build_connector_meta(self, scheduler_output: Any) -> OmniKVMetadata:
        manager = self._kv_cache_manager
        assert manager is not None, "vLLM binds the KV cache manager before scheduling"
        plan = self._scheduler_side().plan(scheduler_output, lambda req_id: manager.get_block_ids(req_id)[0])
        return OmniKVMetadata(plan)

    def on_new_request(self, request: Request) -> None:
        self._scheduler_side().on_new_request(request)

    def request_finished(self, request: Request, block_ids: list[int]) -> tuple[bool, dict[str, Any] | None]:
        return False, self._scheduler_side().finished(request)  # saves are complete when the step ends

    def set_xfer_handshake_metadata(self, metadata: dict[int, KVConnectorHandshakeMetadata]) -> None:
        first = metadata.get(0)
        if isinstance(first, OmniKVHandshake):
            self._scheduler_side().source = first.source

    # -- both ----------------------------------------------------------------------------------------
    def get_kv_connector_stats(self) -> OmniKVStats | None:
        side = self._worker or self._scheduler
        taken = side.counters.take() if side is not None else {}
        return OmniKVStats(data=dict(taken)) if taken else None

    @classmethod
    def build_kv_connector_stats(cls, data: dict[str, Any] | None = None) -> OmniKVStats:
        return OmniKVStats(data=dict(data or {}))

    @classmethod
    def build_prom_metrics(
        cls, vllm_config: Any, metric_types: Any, labelnames: list[str], per_engine_labelvalues: Any
    ) -> OmniKVPromMetrics:
        return OmniKVPromMetrics(vllm_config, metric_types, labelnames, per_engine_labelvalues)

    @classmethod
    def requires_piecewise_for_cudagraph(cls, extra_config: dict[str, Any]) -> bool:
        return True  # layer-by-layer loads and saves run between the graph's pieces

    @property
    def requires_kv_delivery(self) -> bool:
        return False  # a save that never happens is a cache miss on the decode side: it recomputes

    def health(self) -> dict[str, Any]:
        """Counters of this side (worker: saves and loads; scheduler: lookups) and the Omni connector's health."""
        side = self._worker if self._worker is not None else self._scheduler_side()
        return side.health()

    # -- internals -----------------------------------------------------------------------------------
    def _plan(self) -> StepPlan:
        if not self.has_connector_metadata():
            return StepPlan()
        metadata = self._get_connector_metadata()
        assert isinstance(metadata, OmniKVMetadata)
        return metadata.plan

    def _worker_side(self) -> KVWorker:
        if self._worker is None:
            raise RuntimeError("OmniKVConnector: a worker-side method was called on the scheduler-side instance")
        return self._worker

    def _scheduler_side(self) -> KVScheduler:
        if self._scheduler is None:
            raise RuntimeError("OmniKVConnector: a scheduler-side method was called on a worker-side instance")
        return self._scheduler


def _check_supported(vllm_config: VllmConfig, kv_cache_config: KVCacheConfig) -> None:
    parallel = vllm_config.parallel_config
    if parallel.tensor_parallel_size != 1 or parallel.pipeline_parallel_size != 1:
        raise ConfigError(
            "OmniKVConnector supports tensor_parallel_size=1 and pipeline_parallel_size=1 "
            f"(got {parallel.tensor_parallel_size} and {parallel.pipeline_parallel_size})"
        )
    if len(kv_cache_config.kv_cache_groups) != 1:
        raise ConfigError(
            f"OmniKVConnector supports models with one KV cache group, this one has "
            f"{len(kv_cache_config.kv_cache_groups)} (hybrid attention)"
        )


def _fingerprint(vllm_config: VllmConfig, kv_cache_config: KVCacheConfig) -> tuple[object, ...]:
    """What makes two engines' KV of the same tokens interchangeable.

    The served model name (set it alike on both sides when their model paths differ), revision, dtypes,
    block size and the attention layout.
    """
    model = vllm_config.model_config
    served = model.served_model_name
    group = kv_cache_config.kv_cache_groups[0]
    spec = group.kv_cache_spec
    cache = vllm_config.cache_config
    return (
        served[0] if isinstance(served, (list, tuple)) else served, model.revision, str(model.dtype),
        cache.cache_dtype, cache.block_size, type(spec).__name__, getattr(spec, "num_kv_heads", None),
        getattr(spec, "head_size", None), str(getattr(spec, "dtype", "")), len(group.layer_names),
    )  # fmt: skip
