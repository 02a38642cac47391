"""Scheduler side: find saved KV for new requests (decode), choose what to save (prefill), plan each step.

A decode engine looks a request up in one of two ways:

- **content-addressed** (the default): the prompt's whole blocks are hashed (see :mod:`.keys`) and the
  manifests of saves ending at those blocks are asked for, longest first, until one is there; no proxy
  is needed between a prefill run and a decode run;
- **proxy flow**: the request's ``kv_transfer_params`` name the save (``remote_omni_name``, returned by
  the prefill engine for requests sent with ``{"do_remote_decode": true}``, as vLLM's NIXL proxy does).

Getting the manifest claims the save: on consume-once connectors nobody else loads it.  A miss, or a
manifest that does not fit, means recompute; a load that fails later is reported as invalid blocks and
vLLM recomputes them (``kv_load_failure_policy="recompute"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_core import OmniConnectorBase

from .config import KVSettings
from .counters import SCHEDULER_COUNTERS, Counters
from .keys import BlockKeys, manifest_key
from .plan import LoadSpec, SaveSpec, StepPlan, read_manifest

logger = logging.getLogger("omni.vllm")

#: kv_transfer_params a prefill engine returns for ``do_remote_decode`` requests (and a decode engine reads).
PARAM_NAME = "remote_omni_name"
PARAM_BLOCKS = "remote_omni_blocks"
PARAM_SOURCE = "remote_omni_source"


@dataclass
class _Claim:
    """What a decode request found: a save (``name`` None for a miss) and how much of it to load."""

    name: str | None = None
    blocks: int = 0
    layer_metadata: list[Any] = field(default_factory=list)
    local_tokens: int = 0
    used: bool = False


class KVScheduler:
    """Scheduler-side state of one engine; ``loads``/``saves`` say which directions its role has."""

    def __init__(
        self,
        settings: KVSettings,
        keys: BlockKeys,
        num_layers: int,
        *,
        saves: bool,
        loads: bool,
        engine_id: str,
        open_receiver: Callable[[], OmniConnectorBase],
        endpoint: bool = False,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.block_size = keys.block_size
        self.num_layers = num_layers
        self.saves = saves
        self.loads = loads
        self.engine_id = engine_id
        self.counters = Counters(SCHEDULER_COUNTERS)
        self.source: dict[str, Any] | None = None  # how decode engines reach our worker (set by the handshake)
        self.endpoint = endpoint  # the connector asks a sender over the network (vs. a local, definitive answer)
        self._connector = open_receiver() if loads else None
        self._suspended_until = 0.0
        self._claims: dict[str, _Claim] = {}
        self._loads: list[LoadSpec] = []
        self._unsaved: dict[str, Any] = {}  # prefill: request id -> Request whose prompt is not saved yet
        self._saved: dict[str, tuple[str, int]] = {}  # prefill: request id -> (save name, blocks)

    # -- decode side -------------------------------------------------------------------------------
    def matched_tokens(self, request: Any, num_computed_tokens: int) -> int:
        """Tokens beyond ``num_computed_tokens`` (block-aligned) this engine can load for ``request``."""
        if not self.loads or request.prompt_token_ids is None:
            return 0
        usable = (request.num_prompt_tokens - 1) // self.block_size  # vLLM computes at least the last token
        claim = self._claims.get(request.request_id)
        if claim is None:
            claim = self._lookup(request, min_blocks=num_computed_tokens // self.block_size + 1, max_blocks=usable)
            self._claims[request.request_id] = claim
        if claim.name is None or claim.used:
            return 0
        claim.local_tokens = num_computed_tokens
        return max(min(claim.blocks, usable) * self.block_size - num_computed_tokens, 0)

    def after_alloc(self, request: Any, block_ids: list[int], num_external_tokens: int) -> None:
        """Plan the load of ``num_external_tokens`` tokens into the request's newly allocated blocks."""
        claim = self._claims.get(request.request_id)
        if num_external_tokens <= 0 or claim is None or claim.name is None:
            return
        first = claim.local_tokens // self.block_size
        count = num_external_tokens // self.block_size
        self._loads.append(
            LoadSpec(
                req_id=request.request_id,
                name=claim.name,
                payload_blocks=claim.blocks,
                first_block=first,
                block_ids=list(block_ids[first : first + count]),
                layer_metadata=claim.layer_metadata,
            )
        )
        claim.used = True  # the worker consumes the payloads: a preempted request recomputes instead
        self.counters.add("hit_tokens", num_external_tokens)

    def _lookup(self, request: Any, *, min_blocks: int, max_blocks: int) -> _Claim:
        """Claim the save this request can load from (the longest), or a miss."""
        if max_blocks < min_blocks:
            return _Claim()  # nothing to gain beyond the local prefix cache: claim nothing
        if time.monotonic() < self._suspended_until:
            self.counters.add("skipped_lookups")
            return _Claim()
        self.counters.add("lookups")
        params = request.kv_transfer_params or {}
        if params.get("do_remote_prefill") and isinstance(params.get(PARAM_NAME), str):
            candidates = [(params[PARAM_NAME], params.get(PARAM_SOURCE))]
        else:
            total = request.num_prompt_tokens // self.block_size  # a longer save still serves the usable blocks
            digests = self.keys.chain(request.prompt_token_ids, total, _salt(request))
            candidates = [(self.keys.save_name(d), None) for d in reversed(digests[min_blocks - 1 :])]
        deadline = time.monotonic() + self.settings.lookup_budget_s
        for name, source in candidates:
            claim = self._probe(name, source)
            if claim is not None:
                self.counters.add("lookup_hits")
                return claim
            if time.monotonic() >= deadline:
                break
        return _Claim()

    def _probe(self, name: str, source: dict[str, Any] | None) -> _Claim | None:
        """One attempt at the manifest of save ``name``, without waiting for it to appear.

        Key-addressed connectors (shared memory, Mooncake Store) answer from here, at once.  Endpoint
        connectors (Mooncake TE) ask the sender: a plain ``get`` is one query, answered in a round trip,
        bounded by the connector's own query timeout.  A probe slower than ``lookup_budget_s`` (the sender
        is gone) suspends lookups for ``lookup_backoff_s``, so the scheduler does not stall on every request.
        """
        assert self._connector is not None
        self.counters.add("probes")
        s = self.settings
        started = time.monotonic()
        try:
            if self.endpoint:
                result = self._connector.get(s.from_stage, s.to_stage, manifest_key(name), source)
            else:
                result = self._connector.get_with_deadline(
                    s.from_stage, s.to_stage, manifest_key(name), source, deadline=started
                )
        except Exception as exc:  # a transport that cannot look the key up is a miss, never a failed request
            logger.warning("OmniKVConnector: lookup of %r failed (%s); recomputing", name, exc)
            result = None
        if time.monotonic() - started > s.lookup_budget_s:
            self._suspended_until = time.monotonic() + s.lookup_backoff_s
            logger.warning("OmniKVConnector: a lookup took %.1f s; computing new requests without lookups for %.0f s",
                           time.monotonic() - started, s.lookup_backoff_s)
        if result is None:
            return None
        manifest = read_manifest(result[0], self.num_layers)
        if manifest is None:
            logger.warning("OmniKVConnector: manifest of %r does not describe %d layers; recomputing", name,
                           self.num_layers)
            return None
        blocks, layer_metadata = manifest
        if source is not None:  # proxy flow: layers without their own metadata are asked for at the same sender
            layer_metadata = [meta if meta is not None else source for meta in layer_metadata]
        return _Claim(name=name, blocks=blocks, layer_metadata=layer_metadata)

    # -- prefill side ------------------------------------------------------------------------------
    def on_new_request(self, request: Any) -> None:
        if self.saves and request.prompt_token_ids is not None:
            self._unsaved[request.request_id] = request

    def plan(self, scheduler_output: Any, block_ids_of: Callable[[str], list[int]]) -> StepPlan:
        """This step's loads (planned in :meth:`after_alloc`) and saves (prompts whose prefill ends now)."""
        plan = StepPlan(loads=self._loads)
        self._loads = []
        if not self.saves:
            return plan
        scheduled = scheduler_output.num_scheduled_tokens
        computed = {new.req_id: new.num_computed_tokens for new in scheduler_output.scheduled_new_reqs}
        cached = scheduler_output.scheduled_cached_reqs
        computed.update(zip(cached.req_ids, cached.num_computed_tokens, strict=True))
        for req_id, before in computed.items():
            request = self._unsaved.get(req_id)
            if request is None or before + scheduled.get(req_id, 0) < request.num_prompt_tokens:
                continue
            del self._unsaved[req_id]
            blocks = request.num_prompt_tokens // self.block_size
            if blocks == 0:
                continue
            salt = _salt(request)
            if (request.kv_transfer_params or {}).get("do_remote_decode"):
                salt.append(f"request:{self.engine_id}:{req_id}")  # its own save: never shared, never raced
            name = self.keys.save_name(self.keys.chain(request.prompt_token_ids, blocks, salt)[-1])
            self._saved[req_id] = (name, blocks)
            if all(save.name != name for save in plan.saves):  # the same prompt twice in a step: saved once
                plan.saves.append(SaveSpec(req_id, name, block_ids_of(req_id)[:blocks]))
        return plan

    def finished(self, request: Any) -> dict[str, Any] | None:
        """Forget the request; for a ``do_remote_decode`` prefill, the kv_transfer_params for its decode."""
        req_id = request.request_id
        self._claims.pop(req_id, None)
        self._unsaved.pop(req_id, None)
        saved = self._saved.pop(req_id, None)
        if saved is None or not (request.kv_transfer_params or {}).get("do_remote_decode"):
            return None
        name, blocks = saved
        return {"do_remote_prefill": True, "do_remote_decode": False, PARAM_NAME: name, PARAM_BLOCKS: blocks,
                PARAM_SOURCE: self.source}  # fmt: skip

    def health(self) -> dict[str, Any]:
        """Lookup counters and, on the decode side, the health of the connector lookups go through."""
        if self._connector is None:
            return {"status": "healthy", **self.counters.totals()}
        inner = self._connector.health()
        return {"status": inner.get("status", "unhealthy"), **self.counters.totals(), "connector": inner}

    def close(self) -> None:
        if self._connector is not None:
            self._connector.close()


def _salt(request: Any) -> list[str]:
    """What changes the KV of the same tokens: LoRA adapter, multimodal inputs, cache salt."""
    salt = []
    if request.lora_request is not None:
        salt.append(f"lora:{request.lora_request.lora_name}")
    salt.extend(f"mm:{feature.identifier}" for feature in request.mm_features or ())
    if getattr(request, "cache_salt", None):
        salt.append(f"salt:{request.cache_salt}")
    return salt
