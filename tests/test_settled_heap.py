"""ledger_service.deps.settled_heap: the service's heap out of the collector's reach while it runs, and the
collector's thresholds raised meanwhile; both as they were after it stops."""

from __future__ import annotations

import gc

from ledger_service.deps import SERVICE_GC_THRESHOLD, settled_heap


def test_a_running_service_freezes_its_heap_and_raises_the_thresholds_and_puts_both_back_when_it_stops():
    before = gc.get_threshold()
    assert before != SERVICE_GC_THRESHOLD
    with settled_heap():
        assert gc.get_threshold() == SERVICE_GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
