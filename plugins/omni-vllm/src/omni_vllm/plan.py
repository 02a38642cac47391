"""What the scheduler side tells the worker side each step, and the manifest a save ends with.

Plain data (lists, dicts, strings, ints) only: vLLM ships it to worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MANIFEST_VERSION = 1


@dataclass
class SaveSpec:
    """Save whole blocks ``block_ids`` of a request under save name ``name``."""

    req_id: str
    name: str
    block_ids: list[int]


@dataclass
class LoadSpec:
    """Load blocks ``first_block ..`` of save ``name`` into this engine's blocks ``block_ids``.

    ``payload_blocks`` is how many blocks each layer's payload holds; ``layer_metadata`` is the
    connector metadata each layer's ``put`` returned (None: look the key up).
    """

    req_id: str
    name: str
    payload_blocks: int
    first_block: int
    block_ids: list[int]
    layer_metadata: list[Any] = field(default_factory=list)


@dataclass
class StepPlan:
    """One step's saves and loads."""

    saves: list[SaveSpec] = field(default_factory=list)
    loads: list[LoadSpec] = field(default_factory=list)


def make_manifest(num_blocks: int, layer_metadata: list[Any]) -> dict[str, Any]:
    """The manifest of a complete save: its block count and each layer's put metadata."""
    return {"version": MANIFEST_VERSION, "blocks": num_blocks, "layers": layer_metadata}


def read_manifest(obj: Any, num_layers: int) -> tuple[int, list[Any]] | None:
    """``(blocks, layer_metadata)`` of a manifest, or None if it is not one for ``num_layers`` layers."""
    if not isinstance(obj, dict) or obj.get("version") != MANIFEST_VERSION:
        return None
    blocks, layers = obj.get("blocks"), obj.get("layers")
    if type(blocks) is not int or blocks <= 0 or not isinstance(layers, list) or len(layers) != num_layers:
        return None
    return blocks, [meta if isinstance(meta, dict) else None for meta in layers]
