"""Python's cyclic garbage collector paused around work that makes many objects that live until it ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused while a query builds its events (ledger_service.epcis.query), or a
    capture job's document is prepared or read back from the preparing process (ledger_service.epcis.preparing), then
    resumed (if it ran before).

    A lot's history makes some 10^5 lists and dicts that live until the answer is written. Every 700 allocations
    start a collection that walks the young ones, and every few of those an older generation's, walking them again:
    a lot of 10^4 events cost 266 collections, 240 of a call's 420 ms (benchmarks/epcis_bench.py's profile).
    ledger_service.deps.settled_heap keeps the service's own long-lived objects out of the collector's reach, not the
    ones a request makes. Nothing is lost meanwhile: reference counting frees the events, and what a query leaves in
    cycles (a few of SQLAlchemy's) is collected after; the first collection after the pause walks the answer once
    (3 ms). The pause is the process's (the collector has no other): a query that starts while another holds it runs
    under it, and the one that paused it resumes it."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
