"""Fixtures for evaluation tests: real tasks/loader from asa.data when available, else stand-ins."""

from __future__ import annotations

import pytest

from eval_fixtures import BratsLikeTask, WmhLikeTask, fallback_load_volume


def _real_task(name: str):
    try:
        from asa.data import get_task
    except ImportError:
        return None
    return get_task(name)


@pytest.fixture
def brats_task():
    return _real_task("brats") or BratsLikeTask()


@pytest.fixture
def wmh_task():
    return _real_task("wmh") or WmhLikeTask()


@pytest.fixture
def loader():
    """None (use ``asa.data.load_volume``) when the data package provides it, else a local stand-in."""
    try:
        from asa.data import load_volume  # noqa: F401
    except ImportError:
        return fallback_load_volume
    return None
