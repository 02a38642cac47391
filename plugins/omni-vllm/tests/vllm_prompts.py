"""The prompts of the engine tests (token ids), and what a decode engine may load for each.

Every prompt is distinct across tests: on consume-once connectors a save is loaded once.
"""

from __future__ import annotations

import random

from vllm_engines import BLOCK_SIZE

_rng = random.Random(20261203)


def tokens(count: int) -> list[int]:
    """``count`` token ids drawn from the tiny model's vocabulary (ids 0-2 are special)."""
    return [_rng.randrange(3, 1000) for _ in range(count)]


def loadable_tokens(prompt: list[int], saved_tokens: int | None = None) -> int:
    """Tokens of ``prompt`` a decode engine can take from a save of its first ``saved_tokens`` tokens.

    Whole blocks only, and never the prompt's last token (vLLM computes at least one).
    """
    saved = len(prompt) if saved_tokens is None else saved_tokens
    return min((len(prompt) - 1) // BLOCK_SIZE, saved // BLOCK_SIZE) * BLOCK_SIZE


# -- shared memory, one host ------------------------------------------------------------------------------
SHARED = tokens(2 * BLOCK_SIZE)
LONG = tokens(300)  # 9 whole blocks and a partial one
SHARED_X = SHARED + tokens(120)
SHORT = tokens(20)  # shorter than one block: nothing to load
ALIGNED = tokens(8 * BLOCK_SIZE)  # a whole number of blocks: the last one is computed again
BATCH = [LONG, SHARED_X, SHORT, ALIGNED]

SHARED_Y = SHARED + tokens(100)  # its first two blocks are in the decode engine's own cache by then
PREFILLED = tokens(200)
EXTENDED = PREFILLED + tokens(60)  # a longer prompt than was prefilled: loads the prefilled whole blocks

ROUTED = tokens(170)  # the proxy flow: kv_transfer_params from the prefill response
FLIPPED = tokens(150)  # a byte of one layer's payload flipped
TRUNCATED = tokens(160)  # one layer's payload cut short
GONE = tokens(180)  # prefilled by an engine that is shut down before the decode

# -- Mooncake TransferEngine, two hosts ------------------------------------------------------------------
TE_SHARED = tokens(2 * BLOCK_SIZE)
TE_BATCH = [tokens(280), tokens(25), TE_SHARED + tokens(90), TE_SHARED + tokens(70)]
TE_ROUTED = tokens(210)
TE_GONE = [tokens(190), tokens(230)]

ALL = [*BATCH, SHARED_Y, PREFILLED, EXTENDED, ROUTED, FLIPPED, TRUNCATED, GONE, *TE_BATCH, TE_ROUTED, *TE_GONE]
