"""`make bench` prints, as its last line, one JSON object with every figure issue 7 names, whichever scenarios ran.

Only the shape is checked (gas alone runs, in a few seconds; the quick verify scenario in about half a minute, so
that `make bench-quick` cannot break unseen): benchmarks never assert timing in the test suite.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench import KEYS, TARGETS

ISSUE_7_KEYS = {
    "e2e_register_parts_per_s", "e2e_bulk_transitions_per_s", "e2e_single_tx_per_s", "raw_node_bulk_transitions_per_s",
    "e2e_vs_raw_ratio", "indexer_sqlite_events_per_s", "indexer_postgres_events_per_s", "fetch_decode_floor_events_per_s",
    "indexer_vs_floor_ratio", "verify_rps", "verify_p50_ms", "verify_p99_ms", "bare_uvicorn_rps", "verify_vs_bare_ratio",
    "gas", "peak_rss_mb", "machine", "targets",
}  # fmt: skip


def test_bench_last_line_has_every_issue_7_key_when_only_gas_runs(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--only", "gas", "--no-profile", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=900, check=True,
    )  # fmt: skip
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert ISSUE_7_KEYS <= set(figures)
    assert set(KEYS) <= set(figures)
    assert figures["e2e_bulk_transitions_per_s"] is None  # not run: null, never missing
    assert set(figures["peak_rss_mb"]) == {"service", "indexer", "node"}
    assert {"cores", "python", "packages", "anvil", "solc", "load_average"} <= set(figures["machine"])
    assert set(figures["targets"]) == set(TARGETS)
    assert figures["targets"]["gas.ship_per_part"]["met"] is True
    assert figures["targets"]["e2e_bulk_transitions_per_s"]["met"] is None
    assert "errors" not in figures
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert saved["gas"] == figures["gas"]



def test_bench_quick_verify_runs_every_tier(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.fail("wrk is missing: `make test` installs it (apt-get install wrk)")
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench", "--quick", "--only", "verify", "--no-profile", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert "errors" not in figures, figures.get("errors")
    assert figures["verify_rps"] > 0 and figures["bare_uvicorn_rps"] > 0 and figures["verify_vs_bare_ratio"] > 0
    details = figures["verify_details"]
    assert details["essential"]["non_2xx"] == 0 and details["verify"]["non_2xx"] == 0 and details["essential_vs_bare_ratio"] > 0
