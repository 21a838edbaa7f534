"""Garbage collection after start-up (service/collector.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.collector import settle_after_start_up
from service.config import ServiceSettings


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_collector")
def test_start_up_objects_are_frozen_and_young_collections_follow_the_setting() -> None:
    _, older, oldest = gc.get_threshold()
    gc.unfreeze()
    settle_after_start_up(ServiceSettings(gc_young_threshold=12_345).gc_young_threshold)
    assert gc.get_threshold() == (12_345, older, oldest)
    assert gc.get_freeze_count() > 0


def test_a_threshold_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="gc_young_threshold"):
        ServiceSettings(gc_young_threshold=0)
