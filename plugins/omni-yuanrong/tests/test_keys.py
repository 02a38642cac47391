"""Connector keys map onto the worker's key alphabet: legal, bounded, distinct, upstream-compatible."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omni_yuanrong.keys import MAX_STORE_KEY_LENGTH, store_key

WORKER_KEY = re.compile(r"^[a-zA-Z0-9\-_!@#%\^\*\(\)\+\=\:;]*$")  # from the worker's error message

keys = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), min_size=1, max_size=60)
stages = st.one_of(st.integers(0, 20).map(str), st.text(st.characters(blacklist_categories=("Cs",)), max_size=8))


def test_plain_keys_keep_upstreams_layout() -> None:
    assert store_key("req1", "0", "1") == "req1:0_1"
    assert store_key("req-7_chunk:3", "2", "10") == "req-7_chunk:3:2_10"


@pytest.mark.parametrize(
    ("key", "expected"),
    [("req.1", "req%2E1:0_1"), ("a b", "a%20b:0_1"), ("50%", "50%25:0_1"), ("é", "%C3%A9:0_1")],
)
def test_characters_outside_the_alphabet_are_percent_encoded(key: str, expected: str) -> None:
    assert store_key(key, "0", "1") == expected


@given(keys, stages, stages)
def test_every_key_is_legal_for_the_worker(key: str, from_stage: str, to_stage: str) -> None:
    try:
        encoded = store_key(key, from_stage, to_stage)
    except ValueError as exc:
        assert "at most 255" in str(exc)
        return
    assert WORKER_KEY.match(encoded) and 0 < len(encoded) <= MAX_STORE_KEY_LENGTH


@given(st.tuples(keys, stages, stages), st.tuples(keys, stages, stages))
def test_distinct_keys_and_edges_never_share_a_worker_key(a: tuple[str, str, str], b: tuple[str, str, str]) -> None:
    try:
        same = store_key(*a) == store_key(*b)
    except ValueError:
        return
    assert same == (a == b)


def test_stage_ids_that_look_like_separators_stay_distinct() -> None:
    assert store_key("k", "1_2", "3") != store_key("k", "1", "2_3")
    assert store_key("k:1_2", "3", "4") != store_key("k", "1_2:3", "4")


@pytest.mark.parametrize("bad", ["", "a/b", "nul\x00", "k" * 201])
def test_keys_every_connector_rejects_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="key"):
        store_key(bad, "0", "1")


def test_a_key_too_long_once_encoded_is_rejected_naming_the_limit() -> None:
    with pytest.raises(ValueError, match="255"):
        store_key("." * 100, "0", "1")
