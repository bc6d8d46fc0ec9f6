"""The sizes the acceptance of each hard test names, held where `make test` runs them: a faster suite must not come
from smaller tests. Each figure is read from the test module as `make test` imports it (environment overrides
included), so lowering one there, or in the Makefile's environment, fails here."""

from __future__ import annotations

import re

from hypothesis import settings

from partledger.artifacts import REPO_ROOT


def test_write_path_crash_test_kills_twenty_times_at_each_failpoint_on_both_databases() -> None:
    from tests import test_write_crash as crash

    assert crash.KILLS_PER_FAILPOINT >= 20
    assert set(crash.FAILPOINTS) >= {"api.before_commit", "api.after_commit", "submitter.after_sign", "submitter.after_send", "submitter.before_receipt"}
    assert crash.STREAM_PARTS >= 2_000
    assert set(crash.SERVICE_DATABASES) == {"sqlite", "postgresql"}


def test_relay_crash_test_kills_the_service_twenty_times_over_the_relays_five_failpoints() -> None:
    from tests import test_relay_crash as crash

    assert set(crash.FAILPOINTS) >= {"relay.before_commit", "relay.after_commit", "relayer.after_sign", "relayer.after_send", "relayer.before_receipt"}
    assert crash.KILLS_PER_FAILPOINT >= 4 and crash.KILLS_PER_FAILPOINT * len(crash.FAILPOINTS) >= 20
    assert len(crash.SITES) >= 2


def test_indexer_crash_test_kills_fifty_times_per_database() -> None:
    from tests import test_indexer_crash as crash

    assert crash.KILLS >= 50
    assert crash.PART_EVENTS >= 50_000


def test_reorg_test_plays_a_hundred_interleavings_per_database() -> None:
    from tests import test_indexer_reorg as reorg

    assert reorg.EXAMPLES == {"sqlite": 100, "postgresql": 100} or min(reorg.EXAMPLES.values()) >= 100


def test_lifecycle_state_machine_runs_two_hundred_sequences() -> None:
    from tests import test_lifecycle_stateful as lifecycle

    assert settings.get_current_profile_name() == "ci"
    assert settings.default.max_examples >= 200
    assert lifecycle.STEPS >= 20


def test_api_fuzz_runs_every_operation_as_member_and_stranger() -> None:
    from tests import test_api_fuzz as fuzz

    assert fuzz.EXAMPLES >= 10
    assert {"test_fuzzing_as_a_member_finds_no_5xx_and_no_schema_violation", "test_fuzzing_without_a_key_finds_no_5xx_and_no_schema_violation"} <= set(vars(fuzz))


def test_make_test_sets_no_smaller_size() -> None:
    """Nothing on the way from `.ci/run` to pytest picks a smaller profile or size."""
    recipe = (REPO_ROOT / "Makefile").read_text() + (REPO_ROOT / ".ci" / "run").read_text()
    for variable in ("HYPOTHESIS_PROFILE", "PARTLEDGER_CRASH_KILLS", "PARTLEDGER_FUZZ_EXAMPLES", "PARTLEDGER_WORKLOAD_SEED"):
        assert not re.search(rf"\b{variable}\b", recipe), f"{variable} is set on the way to pytest"
