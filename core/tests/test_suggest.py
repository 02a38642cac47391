"""Typo hints: the closest valid name, case-insensitively, and nothing when nothing is close."""

from omni_core import did_you_mean


def test_closest_name_is_suggested() -> None:
    names = ["SharedMemoryConnector", "MooncakeStoreConnector", "YuanrongConnector"]
    assert did_you_mean("SharedMemoryConectr", names) == " (did you mean 'SharedMemoryConnector'?)"
    assert did_you_mean("yuanrongconnector", names) == " (did you mean 'YuanrongConnector'?)"


def test_nothing_close_suggests_nothing() -> None:
    assert did_you_mean("xyz", ["SharedMemoryConnector"]) == ""
    assert did_you_mean("anything", []) == ""
