"""Failpoints: named places where a test can make the process die on purpose, to prove crash safety.

PARTLEDGER_FAILPOINTS="submitter.after_sign=0.1,submitter.after_send=0.1" makes the process SIGKILL itself at
those points with those probabilities; PARTLEDGER_FAILPOINTS_SEED seeds the draws, so that a red test run can be
replayed with the same choices. Unset (always, outside tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import random
import signal

_ACTIVE: dict[str, float] = {}
for _entry in filter(None, os.environ.get("PARTLEDGER_FAILPOINTS", "").split(",")):
    _name, _, _probability = _entry.partition("=")
    _ACTIVE[_name.strip()] = float(_probability or 1.0)
_DRAWS = random.Random(os.environ.get("PARTLEDGER_FAILPOINTS_SEED") or None)


def failpoint(name: str) -> None:
    """Dies here (SIGKILL, no cleanup, as a power cut or the OOM killer would) when the failpoint is armed."""
    probability = _ACTIVE.get(name)
    if probability is not None and _DRAWS.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
