"""PartLedger's benchmarks (`make bench`): each module runs its own chain node, databases and processes."""

from __future__ import annotations

import signal
import sys
from types import FrameType


def stop_cleanly_on_sigterm() -> None:
    """SIGTERM and SIGHUP end a benchmark as Ctrl-C does: by an exception in the main thread, so that its `finally`
    blocks stop the node and the processes it started. Python's default SIGTERM ends the interpreter at once, which
    left a benchmark's Anvil and services running (and growing) after `kill` or `timeout`."""

    def stop(signum: int, _: FrameType | None) -> None:
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends it at once
        print(f"benchmark: {signal.Signals(signum).name}, stopping its node and processes", file=sys.stderr)
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
