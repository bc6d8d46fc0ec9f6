"""The run's seed: one number per test run that feeds hypothesis, the failpoints of the processes the tests kill, and
the order of the tests. PARTLEDGER_TEST_SEED replays a run; unset, the controlling process draws one and hands it to
its workers through the environment."""

from __future__ import annotations

import os
import random

SEED_VARIABLE = "PARTLEDGER_TEST_SEED"


def run_seed() -> int:
    if not os.environ.get(SEED_VARIABLE, "").strip():
        os.environ[SEED_VARIABLE] = str(random.SystemRandom().randrange(1, 2**32))
    return int(os.environ[SEED_VARIABLE])
