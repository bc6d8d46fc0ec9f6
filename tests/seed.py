"""The run's seed: one number per test run that feeds hypothesis, the failpoints of the processes the tests kill, and
the order of the tests. PARTLEDGER_TEST_SEED replays a run; unset, the controlling process draws one and hands it to
its workers through the environment."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

SEED_VARIABLE = "PARTLEDGER_TEST_SEED"


def run_seed() -> int:
    if not os.environ.get(SEED_VARIABLE, "").strip():
        os.environ[SEED_VARIABLE] = str(random.SystemRandom().randrange(1, 2**32))
    return int(os.environ[SEED_VARIABLE])


def run_in_rounds(machine: Any, settings: Any, *, rounds: int, reached: Callable[[], bool]) -> int:
    """Runs a hypothesis state machine (its settings' max_examples sequences) up to `rounds` times, until `reached()`
    says the round reached the corners the test needs; each round has a seed derived from the run's, so that a run
    still replays. Returns the number of rounds run; every check of every round holds throughout."""
    from hypothesis import core as hypothesis_core
    from hypothesis.stateful import run_state_machine_as_test

    forced = hypothesis_core.global_force_seed
    try:
        for round_number in range(1, rounds + 1):
            if forced is not None:
                hypothesis_core.global_force_seed = forced + round_number - 1
            run_state_machine_as_test(machine, settings=settings)
            if reached():
                break
    finally:
        hypothesis_core.global_force_seed = forced
    return round_number
