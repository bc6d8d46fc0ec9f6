"""`make bench` (and `make bench-quick`): every benchmark in one run, side by side with its floor or baseline.

Scenarios, one after the other (each on its own node and databases; `--only` picks some):
- gas: benchmarks.gas on a fresh Anvil;
- e2e and raw: benchmarks.e2e (the write path through API, submitter, chain and indexer, and the node's floor);
- indexer: benchmarks.indexer_bench's workload, its fetch-and-decode floor and the indexer into SQLite and PostgreSQL;
- verify: benchmarks.verify_bench (the JSON verify endpoint beside a bare uvicorn endpoint; needs wrk);
- scaling: benchmarks.scaling (history and verify latency at 10^4, 10^5, 10^6 parts);
- console: benchmarks.console_bench (server time of every member-console page with 10^5 parts in the mirror, an
  organisation holding 10^4 of them; issue 14);
- epcis: benchmarks.epcis_bench (EPCIS capture of commissioning events into the ledger beside the JSON API's
  registrations, capture-only observations, and a lot's 10^4 events queried back; issue 16);
- recall_impact: benchmarks.recall_impact_bench (a lot of 10^4 parts three containment levels down in a mirror of 10^6
  parts: the recall impact answers, SQLite and PostgreSQL; issue 15);
- relay: benchmarks.relay_bench (one-part receipts signed by 100 sites' own keys, posted by edge agents at fixed
  arrival rates through POST /v1/relay, relayed in executeBatch transactions, until in the mirror; beside the same
  batches pushed raw to the node; issue 17).
Prints tables, then as the last line one JSON object with every figure of issue 7, the machine, `targets` (met or
not per target) and, for each target missed, a `bottlenecks` note (with --profile, from a py-spy profile of the
service and the indexer under load when py-spy is installed, and a cProfile of the indexer). A scenario that fails
leaves its figures null and its error under `errors`; the JSON line is printed whatever happens. Results are also
written to benchmarks/results/ (gitignored). `--quick` uses small sizes and short durations (about two minutes in all).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import importlib.metadata
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from benchmarks import stop_cleanly_on_sigterm
from benchmarks.e2e import E2eConfig, py_spy, run_e2e
from benchmarks.e2e import TARGETS as E2E_TARGETS
from benchmarks.scaling import QUICK_SIZES, SIZES, run_scaling
from partledger.anvil import AnvilConfig, AnvilNode, anvil_binary, free_port
from partledger.artifacts import REPO_ROOT
from partledger.chain import connect

RESULTS = REPO_ROOT / "benchmarks" / "results"
SCENARIOS = ("gas", "e2e", "e2e_pg", "indexer", "verify", "scaling", "console", "epcis", "recall_impact", "relay")
PACKAGES = ("web3", "eth-account", "eth-abi", "coincurve", "fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "sqlmodel", "psycopg", "httpx", "orjson")
# name: (comparison, threshold). Gas targets are the ones README's gas table and tests/test_gas.py hold.
TARGETS: dict[str, tuple[str, float]] = {
    **{name: (">=", value) for name, value in E2E_TARGETS.items()},
    "e2e_pg_bulk_transitions_per_s": (">=", 10_000),  # issue 18: the multi-process PostgreSQL set-up
    "e2e_pg_vs_raw_ratio": (">=", 0.5),
    "indexer_sqlite_events_per_s": (">=", 30_000),
    "indexer_postgres_events_per_s": (">=", 20_000),
    "indexer_vs_floor_ratio": (">=", 0.67),
    "verify_rps": (">=", 5_000),
    "verify_p99_ms": ("<=", 10),
    "verify_vs_bare_ratio": (">=", 0.6),
    "scaling_history_latency_ratio": ("<=", 1.5),
    "scaling_verify_latency_ratio": ("<=", 1.5),
    "console_worst_p95_ms": ("<=", 50),
    "epcis_capture_events_per_s": (">=", 5_000),
    "epcis_lot_query_p95_ms": ("<=", 200),
    "recall_impact_sqlite_p95_ms": ("<=", 200),
    "recall_impact_postgres_p95_ms": ("<=", 200),
    "relay_transitions_per_s": (">=", 1_000),
    "relay_p99_confirm_ms_at_500": ("<=", 3_000),
    "gas.register_per_part": ("<=", 26_000),
    "gas.ship_per_part": ("<=", 9_000),
    "gas.receive_per_part": ("<=", 9_000),
    "gas.install_per_part": ("<=", 9_000),
    "gas.single_transition_tx": ("<=", 50_000),
    "gas.batch_root_anchor": ("<=", 60_000),
}
KEYS = (
    "e2e_register_parts_per_s", "e2e_bulk_transitions_per_s", "e2e_single_tx_per_s", "raw_node_bulk_transitions_per_s", "e2e_vs_raw_ratio", "e2e_open_loop",
    "e2e_pg_bulk_transitions_per_s", "e2e_pg_raw_node_per_s", "e2e_pg_vs_raw_ratio", "e2e_pg_cores_busy",
    "e2e_pg_node_pinned_bulk_transitions_per_s", "e2e_pg_node_pinned_raw_node_per_s", "e2e_pg_node_pinned_cores_busy",
    "indexer_sqlite_events_per_s", "indexer_postgres_events_per_s", "fetch_decode_floor_events_per_s", "indexer_vs_floor_ratio",
    "verify_rps", "verify_p50_ms", "verify_p99_ms", "bare_uvicorn_rps", "verify_vs_bare_ratio",
    "scaling_history_latency_ratio", "scaling_verify_latency_ratio",
    "console_worst_p95_ms", "console_pages_met", "console_pages",
    "epcis_capture_events_per_s", "epcis_capture_only_events_per_s", "epcis_api_register_parts_per_s", "epcis_capture_vs_api_ratio",
    "epcis_lot_query_p95_ms", "epcis_part_query_p95_ms",
    "recall_impact_sqlite_p95_ms", "recall_impact_postgres_p95_ms",
    "relay_transitions_per_s", "relay_p99_confirm_ms_at_500", "relay_raw_floor_per_s", "relay_vs_raw_ratio",
)  # fmt: skip


# --- scenarios --------------------------------------------------------------------------------------------------------


def scenario_gas(quick: bool, profile: bool) -> dict[str, Any]:
    from benchmarks.gas import measure_gas
    from tests.chainkit import build_ledger

    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=40))
    try:
        return {"gas": measure_gas(build_ledger(connect(node.url)))}
    finally:
        node.stop()


def scenario_e2e(quick: bool, profile: bool) -> dict[str, Any]:
    return run_e2e(E2eConfig.quick() if quick else E2eConfig(), log=log, profile=profile)


def scenario_e2e_pg(quick: bool, profile: bool) -> dict[str, Any]:
    """Bulk transitions with both databases on PostgreSQL, `serve --workers 2` and two `partledger submit` processes
    (issue 18), and the raw node's floor in the same run; the cores each process tree kept busy meanwhile and the
    statements that took PostgreSQL's time. Then the same with the node alone on one CPU and the rest of the stack on
    the other: what the service alone drives against a node on the other core."""
    base = E2eConfig.quick() if quick else E2eConfig()
    config = replace(base, postgres=True, api_workers=2, submitters=2, scenarios=("bulk",))
    figures = run_e2e(config, log=log, profile=profile)
    bulk = figures["e2e_details"]["bulk"]
    log("e2e_pg: again with the node alone on one CPU and everything else on the other")
    pinned = run_e2e(replace(config, pin_node=True), log=log, profile=False)
    alone = pinned["e2e_details"]["bulk"]
    return {
        "e2e_pg_bulk_transitions_per_s": figures["e2e_bulk_transitions_per_s"], "e2e_pg_raw_node_per_s": figures["raw_node_bulk_transitions_per_s"],
        "e2e_pg_vs_raw_ratio": figures["e2e_vs_raw_ratio"], "e2e_pg_cores_busy": _window_cores(bulk), "e2e_pg_details": bulk,
        "e2e_pg_node_pinned_bulk_transitions_per_s": pinned["e2e_bulk_transitions_per_s"],
        "e2e_pg_node_pinned_raw_node_per_s": pinned["raw_node_bulk_transitions_per_s"],
        "e2e_pg_node_pinned_cores_busy": _window_cores(alone), "e2e_pg_node_pinned_details": alone,
    }  # fmt: skip


def _window_cores(scenario: dict[str, Any]) -> dict[str, float] | None:
    """Cores each process tree (and the load generator) kept busy during the scenario's measured seconds, and their
    total against the cores there are: where each core's time went (issue 18)."""
    window = scenario.get("cpu_window")
    if not window:
        return None
    return window["cores"] | {"total": window["cores_busy_total"], "of": window["cores_available"]}


def scenario_indexer(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.indexer_bench's measurement: its `run_indexer_bench(parts=N)` when it has one, else its parts."""
    from benchmarks import indexer_bench

    parts = 4_000 if quick else 100_000
    runner = getattr(indexer_bench, "run_indexer_bench", None)
    if runner is not None:
        figures = dict(runner(parts=parts))
    else:
        figures = _indexer_figures(indexer_bench, parts, profile=profile)
    return figures


def _indexer_figures(indexer_bench: Any, parts: int, *, profile: bool) -> dict[str, Any]:
    from tests.chainkit import build_ledger
    from tests.pgcluster import PostgresCluster

    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=40))
    cluster = PostgresCluster()
    try:
        with tempfile.TemporaryDirectory(prefix="partledger-bench-indexer-") as temporary:
            ledger = build_ledger(connect(node.url))
            started = time.perf_counter()
            events, _ = indexer_bench.make_workload(ledger, parts)
            log(f"indexer: {events:,} part events on chain in {time.perf_counter() - started:.1f} s")
            floor_s = indexer_bench.measure_floor(ledger, node.url)
            sqlite_s, sqlite_sql_s, _ = indexer_bench.measure_indexer(ledger, node.url, f"sqlite:///{Path(temporary) / 'index.db'}")
            postgres_s, _, _ = indexer_bench.measure_indexer(ledger, node.url, cluster.create_database("bench"))
            figures: dict[str, Any] = indexer_bench.indexer_figures(events, floor_s=floor_s, sqlite_s=sqlite_s, postgres_s=postgres_s, sqlite_sql_s=sqlite_sql_s)
            if profile:
                figures["indexer_profile"] = _cprofile(lambda: indexer_bench.measure_indexer(ledger, node.url, f"sqlite:///{Path(temporary) / 'profiled.db'}"))
            return figures
    finally:
        cluster.destroy()
        node.stop()


def _cprofile(call: Callable[[], Any], top: int = 8) -> list[str]:
    """The functions with the most cumulative time in one call (cProfile), as 'seconds  function' lines."""
    profiler = cProfile.Profile()
    profiler.runcall(call)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    rows = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)  # type: ignore[attr-defined]
    lines = []
    for (filename, line, function), (_, _, _, cumulative, _) in rows:
        if any(part in filename for part in ("/indexer/", "sqlalchemy/engine", "/psycopg/", "eth_abi", "requests/sessions")) and "migrat" not in filename and function not in ("run", "step"):
            lines.append(f"{cumulative:7.3f} s  {Path(filename).parent.name}/{Path(filename).name}:{function}")
        if len(lines) == top:
            break
    return lines


def scenario_verify(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.verify_bench.run_verify_bench(parts, duration) -> verify_rps, verify_p50_ms, verify_p99_ms,
    bare_uvicorn_rps, verify_vs_bare_ratio (and more)."""
    verify_bench = importlib.import_module("benchmarks.verify_bench")
    runner = getattr(verify_bench, "run_verify_bench", None)
    if runner is None:
        raise RuntimeError("benchmarks.verify_bench has no run_verify_bench(parts, duration) yet")
    if quick:
        return dict(runner(verify_bench.MIN_PARTS, 2.0, warmup=1.0, service=False))
    return dict(runner(2_000, 15.0))


def scenario_scaling(quick: bool, profile: bool) -> dict[str, Any]:
    sizes = SCALING_SIZES[0] or (QUICK_SIZES if quick else SIZES)
    figures = run_scaling(sizes, samples=40 if quick else 300, log=log)
    ratios = figures["ratios_largest_vs_smallest"]
    return {"scaling_history_latency_ratio": ratios["history_p50_ms_ratio"], "scaling_verify_latency_ratio": ratios["verify_p50_ms_ratio"], "scaling": figures}


SCALING_SIZES: list[tuple[int, ...] | None] = [None]  # --scaling-sizes, when given


def scenario_console(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.console_bench: every console page's server time (p95 <= 50 ms each) and its lists paginated."""
    from benchmarks.console_bench import ConsoleConfig, run_console_bench

    figures = run_console_bench(ConsoleConfig.quick() if quick else ConsoleConfig(), log=log)
    return {key: figures[key] for key in ("console_worst_p95_ms", "console_pages_met", "console_pages")} | {"console": figures}


def scenario_epcis(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.epcis_bench: EPCIS capture into the ledger (>= 5,000 events/s) beside the JSON API's registrations,
    and a lot's 10^4 events queried back (<= 200 ms)."""
    from benchmarks.epcis_bench import EpcisConfig, run_epcis_bench

    figures = run_epcis_bench(EpcisConfig.quick() if quick else EpcisConfig(), log=log, profile=profile)
    keys = ("epcis_capture_events_per_s", "epcis_capture_only_events_per_s", "epcis_api_register_parts_per_s", "epcis_capture_vs_api_ratio",
            "epcis_lot_query_p95_ms", "epcis_part_query_p95_ms")  # fmt: skip
    return {key: figures[key] for key in keys} | {"epcis": figures}


def scenario_recall_impact(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.recall_impact_bench: recall impact through three containment levels (p95 <= 200 ms per answer)."""
    from benchmarks import recall_impact_bench as bench

    if quick:
        figures = bench.run_recall_impact_bench(parts=bench.QUICK_PARTS, lot_parts=bench.QUICK_LOT_PARTS, samples=10, log=log)
    else:
        figures = bench.run_recall_impact_bench(log=log)
    return {key: figures[key] for key in ("recall_impact_sqlite_p95_ms", "recall_impact_postgres_p95_ms")} | {"recall_impact": figures}


def scenario_relay(quick: bool, profile: bool) -> dict[str, Any]:
    """benchmarks.relay_bench: >= 1,000 relayed one-part transitions/s from >= 50 sites, open loop; at 500/s p99
    acceptance -> confirmation <= 3 s; the raw node's floor for the same batches."""
    from benchmarks.relay_bench import RelayConfig, run_relay_bench

    figures = run_relay_bench(RelayConfig.quick() if quick else RelayConfig(), log=log, profile=profile)
    keys = ("relay_transitions_per_s", "relay_p99_confirm_ms_at_500", "relay_raw_floor_per_s", "relay_vs_raw_ratio")
    return {key: figures[key] for key in keys} | {"relay": figures}


RUNNERS: dict[str, Callable[[bool, bool], dict[str, Any]]] = {
    "gas": scenario_gas, "e2e": scenario_e2e, "e2e_pg": scenario_e2e_pg, "indexer": scenario_indexer, "verify": scenario_verify, "scaling": scenario_scaling,
    "console": scenario_console, "epcis": scenario_epcis, "recall_impact": scenario_recall_impact,
    "relay": scenario_relay,
}  # fmt: skip


# --- the machine, targets and bottlenecks -------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    try:
        anvil = subprocess.run([anvil_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout.split("\n")[0].removeprefix("anvil Version: ")
    except (OSError, subprocess.SubprocessError):
        anvil = None
    compiler = json.loads((REPO_ROOT / "contracts" / "compiler.json").read_text())
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": versions,
        "anvil": anvil,
        "solc": compiler.get("solcVersion"),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def value_of(results: dict[str, Any], name: str) -> Any:
    if name.startswith("gas."):
        return (results.get("gas") or {}).get(name.removeprefix("gas."))
    return results.get(name)


def judge(results: dict[str, Any]) -> dict[str, Any]:
    targets = {}
    for name, (comparison, threshold) in TARGETS.items():
        value = value_of(results, name)
        met = None if value is None else (value >= threshold if comparison == ">=" else value <= threshold)
        targets[name] = {"value": value, "target": f"{comparison} {threshold:g}", "met": met}
    return targets


def bottlenecks(results: dict[str, Any], targets: dict[str, Any]) -> dict[str, str]:
    """A note per missed target: which stage holds it back, from the profiles taken during the run."""
    notes: dict[str, str] = {}
    details = results.get("e2e_details") or {}
    for name, scenario in (("e2e_register_parts_per_s", "register"), ("e2e_bulk_transitions_per_s", "bulk"), ("e2e_single_tx_per_s", "single")):
        if targets[name]["met"] is False:
            notes[name] = _e2e_note(scenario, details.get(scenario) or {})
    if targets["e2e_vs_raw_ratio"]["met"] is False:
        notes["e2e_vs_raw_ratio"] = (
            f"The node alone moves {results.get('raw_node_bulk_transitions_per_s')} transitions/s with the same 200-part transactions; "
            f"the service, submitter and indexer reach {results.get('e2e_bulk_transitions_per_s')}/s: see e2e_bulk_transitions_per_s for the stage that holds them back."
        )
    indexer_missed = [name for name in ("indexer_sqlite_events_per_s", "indexer_postgres_events_per_s", "indexer_vs_floor_ratio") if targets[name]["met"] is False]
    for number, name in enumerate(indexer_missed):
        profile = results.get("indexer_profile")
        if number:
            notes[name] = f"See {indexer_missed[0]}."
        else:
            notes[name] = (
                f"Indexer catch-up of {results.get('part_events')} part events, floor (fetch + decode) {results.get('fetch_decode_floor_events_per_s')}/s: the difference is the SQL writing. "
                + ("Cumulative time by function (cProfile, SQLite run): " + "; ".join(profile) if profile else "Run with --profile for a cProfile of the SQLite catch-up.")
            )
    verify = results.get("verify_details") or {}
    for name in ("verify_rps", "verify_p99_ms", "verify_vs_bare_ratio"):
        if targets[name]["met"] is False:
            notes[name] = (
                f"Verify endpoint (public tier): server CPU {verify.get('verify_server_cpu_us_per_request', 'n/a')} us per request against "
                f"{verify.get('bare_server_cpu_us_per_request', 'n/a')} us for the bare uvicorn endpoint, so the verdict's own work (signature "
                f"recovery, mirror lookups, the scan written behind) costs the difference; rps also falls with the machine's load "
                f"(load average {verify.get('load_average_1m', 'n/a')} during the run). See benchmarks/verify_bench.py."
            )
    scaling = results.get("scaling") or {}
    for name in ("scaling_history_latency_ratio", "scaling_verify_latency_ratio"):
        if targets[name]["met"] is False:
            notes[name] = f"Query plans at the largest size: {scaling.get('query_plans')}; indexes used: {scaling.get('indexes_used')}. A ratio above target with indexes used points at page-cache misses of a larger file or at noise, not at scans."
    console = results.get("console") or {}
    if targets["console_worst_p95_ms"]["met"] is False:
        slow = [f"{page['url']} as {page['user']}: p95 {page['server_p95_ms']} ms" for page in console.get("pages", []) if page.get("met") is False]
        notes["console_worst_p95_ms"] = (
            f"Console pages over 50 ms of server time at p95 (load average {console.get('load_average')}): {'; '.join(slow)}. "
            "See benchmarks/console_bench.py (--only PATH --workdir DIR keeps the databases for EXPLAIN QUERY PLAN)."
        )
    epcis = results.get("epcis") or {}
    if targets["epcis_capture_events_per_s"]["met"] is False:
        notes["epcis_capture_events_per_s"] = _epcis_capture_note(epcis)
    if targets["epcis_lot_query_p95_ms"]["met"] is False:
        notes["epcis_lot_query_p95_ms"] = _epcis_query_note(epcis)
    impact = results.get("recall_impact") or {}
    for name, backend in (("recall_impact_sqlite_p95_ms", "sqlite"), ("recall_impact_postgres_p95_ms", "postgresql")):
        if targets[name]["met"] is False:
            answers = (impact.get(backend) or {}).get("answers") or {}
            notes[name] = (
                f"Recall impact on {backend} (load average {impact.get('load_average')}): "
                + "; ".join(f"{answer} p95 {figures.get('p95_ms')} ms" for answer, figures in answers.items())
                + ". The walk up from the lot's parts is one recursive statement per answer (ledger_service.containment); see benchmarks/recall_impact_bench.py."
            )
    relay = results.get("relay") or {}
    for name in ("relay_transitions_per_s", "relay_p99_confirm_ms_at_500"):
        if targets[name]["met"] is False:
            notes[name] = (
                f"Relay path (load average {relay.get('load_average_before')} before the run): "
                + "; ".join(
                    f"at {run['rate_per_s']:.0f}/s accepted {run['accepted_per_s_in_window']}/s, mirrored {run['mirror_per_s_in_window']}/s, "
                    f"accepted->confirmed p99 {run['accepted_to_confirmed']['p99_ms']} ms, CPU s in the window {run['cpu_s_in_window']}"
                    for run in relay.get("runs") or []
                )
                + f"; raw floor {relay.get('relay_raw_floor_per_s')}/s. The service is one process: POST /v1/relay's checks, the relayer's "
                "packing and the submitter's polling share its GIL; see benchmarks/relay_bench.py --profile."
            )
    for name, target in targets.items():
        if name.startswith("gas.") and target["met"] is False:
            notes[name] = "Gas is deterministic: the contract's bulk loop for this operation (see make gas)."
    return notes


def _epcis_capture_note(epcis: dict[str, Any]) -> str:
    """Where a commissioning capture job's time goes: the service's timeline per job, and py-spy's shares when taken."""
    capture, floor, only = epcis.get("capture") or {}, epcis.get("api_floor") or {}, epcis.get("capture_only") or {}
    timeline = capture.get("timeline") or []
    accepted = [step["command_accepted_s"] for step in timeline if step.get("command_accepted_s") is not None]
    done = [step["done_s"] for step in timeline if step.get("done_s") is not None]
    note = (
        f"{capture.get('events')} commissioning events in {capture.get('documents')} documents: {capture.get('events_per_s')}/s, against "
        f"{floor.get('parts_per_s')} parts/s through POST /v1/parts/register in the same run (ratio {epcis.get('epcis_capture_vs_api_ratio')}) and "
        f"{only.get('events_per_s')}/s for observations (capture without the chain). Jobs of one organisation run one at a time and each "
        f"waits until its commands are final and mirrored, so the next document's checks do not overlap the chain's wait. "
    )
    if accepted and done:
        note += (
            f"Per job (mean seconds from its start): command accepted {sum(accepted) / len(accepted):.1f} (events prepared, checked against the "
            f"mirror, stored), done {sum(done) / len(done):.1f} (signed, sealed, mirrored). "
        )
    spied = capture.get("profile") or {}
    if spied.get("inclusive_pct"):
        note += f"Capture jobs' thread, share of wall time by function (py-spy): {spied['inclusive_pct']}; waiting in {spied.get('waiting_pct')}."
    else:
        note += "Install py-spy for the jobs' profile (benchmarks/epcis_bench.py --profile)."
    return note


def _epcis_query_note(epcis: dict[str, Any]) -> str:
    queries = epcis.get("queries") or {}
    slow = queries.get(epcis.get("epcis_lot_query") or "") or {}
    note = (
        f"{slow.get('name')}: {slow.get('events')} events ({slow.get('bytes')} bytes) p50 {slow.get('p50_ms')} ms, p95 {slow.get('p95_ms')} ms "
        f"(the first request, cold, {slow.get('cold_ms')} ms: it computes the derived events' canonical hashes). "
    )
    for found in epcis.get("profiles") or []:
        if found.get("query") == slow.get("name"):
            note += (
                f"In process: {found.get('in_process_warm_ms')} ms, of which the garbage collector {found.get('gc_ms_per_call')} ms "
                f"({found.get('in_process_without_gc_ms')} ms with it off); own time by package (cProfile) {found.get('own_time_pct')}; "
                f"most cumulative time: {'; '.join(found.get('cumulative', [])[:8])}."
            )
    return note


def _e2e_note(scenario: str, figures: dict[str, Any]) -> str:
    """Which stage holds an end-to-end scenario back, from the py-spy profiles taken while it ran."""
    profile = figures.get("profile") or {}
    service, indexer = profile.get("service") or {}, profile.get("indexer") or {}
    busy = service.get("thread_busy_pct", {})
    note = f"{scenario}: accepted {figures.get('accepted_per_s')}/s, in the mirror {figures.get('per_s')}/s, accept-to-mirror latency p50 {figures.get('latency_p50_s')} s. "
    timing = figures.get("signed_to_block") or {}
    queue = timing.get("accepted_to_signed")
    included = [f"{kind} p50 {value['p50_s']} s, max {value['max_s']} s" for kind, value in timing.items() if isinstance(value, dict) and "transactions" in value]
    if queue:
        note += f"Waiting in the outbox until signed: p50 {queue['p50_s']} s, p90 {queue['p90_s']} s; signed to block: {'; '.join(included)}. "
        held = sum(value.get("over_3s", 0) for value in timing.values() if isinstance(value, dict))
        if held:
            note += (
                f"The node held {held} of the service's transactions more than 3 s before a block took them (Anvil's interval "
                "mining leaving ready transactions in its pool; they go in when the submitter re-sends them, after 5 s). "
            )
        if queue["p50_s"] > 1.5:
            note += "Most of the time is lost before the node: the submitter does not sign as fast as the API accepts. "
    if not busy:
        return note + "No profile (pip install py-spy, and pass --profile)."
    note += (
        f"Service threads busy (% of the window): {busy}; its samples by activity: {service.get('category_pct')}; "
        f"heaviest functions: {list(service.get('top_functions_pct', {}))[:3]}. "
        f"Indexer busy {indexer.get('thread_busy_pct')}, by activity {indexer.get('category_pct')}. "
    )
    submitter = busy.get("submitter", 0.0)
    others = max(busy.get("MainThread", 0.0), indexer.get("thread_busy_pct", {}).get("MainThread", 0.0))
    if submitter >= 80:
        return note + (
            "The submitter thread is saturated: it is the bottleneck (per pass and key: pack, one JSON-RPC batch of "
            "eth_estimateGas, encode, sign, store, one batch of sends; receipts in batches)."
        )
    if submitter > others:
        return note + (
            "The submitter is the busiest stage: its round trips are batched per pass and key and its calldata encoded "
            "by eth_abi, so what is left is its SQL (one outbox database for the API and the submitter; PostgreSQL takes "
            "them in parallel) and the GIL it shares with the API's threads."
        )
    return note + "No stage is saturated: the pipeline is latency-bound (block time, the indexer's poll, the submitter's serial round trips) or starved of CPU by other processes."


# --- the run ----------------------------------------------------------------------------------------------------------


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(scenarios: tuple[str, ...], *, quick: bool, profile: bool) -> dict[str, Any]:
    results: dict[str, Any] = {key: None for key in KEYS} | {"gas": None, "peak_rss_mb": {"service": None, "indexer": None, "node": None}}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    load_before = [round(value, 2) for value in os.getloadavg()]
    for name in scenarios:
        started = time.perf_counter()
        log(f"bench: {name} ...")
        try:
            figures = RUNNERS[name](quick, profile)
        except Exception as exc:  # noqa: BLE001 - one scenario failing must not lose the others' figures
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(traceback.format_exc())
            figures = {}
        if name == "verify" and figures:
            results["verify_details"] = {k: v for k, v in figures.items() if k not in KEYS}
            figures = {k: v for k, v in figures.items() if k in KEYS}
        results.update(figures)
        seconds[name] = round(time.perf_counter() - started, 1)
        log(f"bench: {name} done in {seconds[name]} s")
    results["machine"] = machine() | {"load_average_before": load_before}
    results["targets"] = judge(results)
    results["bottlenecks"] = bottlenecks(results, results["targets"])
    results["run"] = {"quick": quick, "scenarios": list(scenarios), "seconds": seconds, "profiled": profile and py_spy() is not None, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if errors:
        results["errors"] = errors
    return results


def show(results: dict[str, Any], console: Console) -> None:
    targets = results["targets"]
    table = Table(title="PartLedger benchmarks" + (" (quick)" if results["run"]["quick"] else ""))
    for column in ("figure", "value", "target", "met"):
        table.add_column(column, justify="right" if column != "figure" else "left")
    for key in KEYS:
        if key in ("e2e_open_loop", "e2e_pg_cores_busy", "e2e_pg_node_pinned_cores_busy"):
            continue  # tables of their own, below
        target = targets.get(key, {})
        met = {True: "[green]met[/]", False: "[red]unmet[/]", None: "-"}[target.get("met")] if key in targets else ""
        table.add_row(key, _number(results.get(key)), target.get("target", ""), met)
    console.print(table)
    if results.get("gas"):
        gas = Table(title="gas (per part for bulk operations)")
        gas.add_column("operation")
        gas.add_column("gas", justify="right")
        gas.add_column("target", justify="right")
        for name, value in results["gas"].items():
            gas.add_row(name, f"{value:,}", targets.get(f"gas.{name}", {}).get("target", "-"))
        console.print(gas)
    if results.get("e2e_open_loop"):
        columns = ("rate_per_s", "accepted", "arrivals", "confirmed_p50_s", "confirmed_p99_s", "mirrored_p50_s", "mirrored_p99_s")
        open_loop = Table(title="open loop: one-part requests at fixed arrival rates, seconds from the post")
        for column in columns:
            open_loop.add_column(column, justify="right")
        for row in results["e2e_open_loop"]:
            open_loop.add_row(*(_number(row.get(column)) for column in columns))
        console.print(open_loop)
    for key, title in (("e2e_pg_cores_busy", ""), ("e2e_pg_node_pinned_cores_busy", ", the node alone on one CPU")):
        if results.get(key):
            busy = Table(title=f"e2e on PostgreSQL (2 API workers, 2 submitters{title}): cores each process tree kept busy in the bulk scenario's measured seconds")
            for name in results[key]:
                busy.add_column(name, justify="right")
            busy.add_row(*(_number(value) for value in results[key].values()))
            console.print(busy)
    rss = Table(title="peak RSS (MB, process trees)")
    for name in ("service", "indexer", "node"):
        rss.add_column(name, justify="right")
    rss.add_row(*(_number(results["peak_rss_mb"].get(name)) for name in ("service", "indexer", "node")))
    console.print(rss)
    scaling = results.get("scaling")
    if scaling:
        levels = Table(title="latency as the mirror grows (ms, one request at a time)")
        for column in ("parts", "history p50", "history p99", "verify p50", "verify p99", "index MB"):
            levels.add_column(column, justify="right")
        for level in scaling["levels"]:
            levels.add_row(f"{level['parts']:,}", *(str(level[k][s]) for k in ("history", "verify") for s in ("p50_ms", "p99_ms")), str(level["index_db_mb"]))
        console.print(levels)
        for name, steps in scaling["query_plans"].items():
            console.print(f"  plan, {name}: {' | '.join(steps)}")
    pages = (results.get("console") or {}).get("pages")
    if pages:
        table = Table(title="console pages (server ms, Server-Timing; one request at a time)")
        for column in ("page", "user", "p50", "p95", "p99", "bytes", "rows", "met"):
            table.add_column(column, justify="left" if column in ("page", "user") else "right")
        for page in pages:
            met = {True: "[green]met[/]", False: "[red]unmet[/]", None: "-"}[page["met"]]
            table.add_row(page["url"][:70], page["user"], *(str(page[k]) for k in ("server_p50_ms", "server_p95_ms", "server_p99_ms")), f"{page['bytes']:,}", str(page["rows"] or ""), met)
        console.print(table)
    epcis = results.get("epcis")
    if epcis:
        write = Table(title="EPCIS capture (issue 16): posted until final on chain and mirrored")
        for column in ("path", "items", "seconds", "per s", "POST ms", "job s"):
            write.add_column(column, justify="left" if column == "path" else "right")
        floor, capture, only = epcis["api_floor"], epcis["capture"], epcis["capture_only"]
        write.add_row("POST /v1/parts/register (floor)", f"{floor['parts']:,}", str(floor["seconds"]), f"{floor['parts_per_s']:,}", str(floor["post_ms"]), "")
        write.add_row("capture: commissioning", f"{capture['events']:,}", str(capture["seconds"]), f"{capture['events_per_s']:,}", str(capture["post_ms"]), str(capture["job_seconds"]))
        write.add_row("capture only: observations", f"{only['events']:,}", str(only["seconds"]), f"{only['events_per_s']:,}", str(only["post_ms"]), str(only["job_seconds"]))
        console.print(write)
        reads = Table(title="EPCIS queries (client ms, one request at a time)")
        for column in ("query", "events", "bytes", "cold", "p50", "p95", "max"):
            reads.add_column(column, justify="left" if column == "query" else "right")
        for query in epcis["queries"].values():
            reads.add_row(query["name"], f"{query['events']:,}", f"{query['bytes']:,}", *(str(query[k]) for k in ("cold_ms", "p50_ms", "p95_ms", "max_ms")))
        console.print(reads)
    for name, note in results["bottlenecks"].items():
        console.print(f"[yellow]bottleneck[/] {name}: {note}")
    for name, error in results.get("errors", {}).items():
        console.print(f"[red]error[/] {name}: {error}")
    machine_info = results["machine"]
    console.print(f"machine: {machine_info['cores']} cores, {machine_info['cpu']}, {machine_info['memory_gb']} GB, Python {machine_info['python']}, anvil {machine_info['anvil']}, solc {machine_info['solc']}, load {machine_info['load_average_before']} → {machine_info['load_average']}; {results['run']['seconds']}")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3f}" if isinstance(value, float) else str(value)


def save(results: dict[str, Any], directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"bench-{'quick-' if results['run']['quick'] else ''}{stamp}.json"
    text = json.dumps(results, indent=2)
    path.write_text(text)
    (directory / f"latest{'-quick' if results['run']['quick'] else ''}.json").write_text(text)
    return path


def main() -> int:
    stop_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and short durations (about two minutes)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated scenarios of {', '.join(SCENARIOS)}")
    parser.add_argument("--results", type=Path, default=RESULTS, help="directory for the JSON results")
    parser.add_argument("--scaling-sizes", help=f"comma-separated part counts for the scaling scenario (default {','.join(map(str, SIZES))}; 10^6 needs a node with about 20 GB of memory)")
    # Off unless asked: py-spy samples the processes being measured, on the same cores. The multi-process PostgreSQL
    # bulk run gave 6,767 and 6,827 transitions/s profiled (1.63-1.67 of the 2 cores busy in the measured processes)
    # and 8,827/s without, in the same hour.
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=False, help="profile the stages under load (py-spy when installed, cProfile); it costs the measured rates")
    arguments = parser.parse_args()
    if arguments.scaling_sizes:
        try:
            SCALING_SIZES[0] = tuple(sorted(int(size) for size in arguments.scaling_sizes.split(",")))
        except ValueError:
            parser.error("--scaling-sizes takes comma-separated integers, such as 10000,100000")
    scenarios = tuple(name.strip() for name in arguments.only.split(",") if name.strip())
    unknown = [name for name in scenarios if name not in RUNNERS]
    if unknown:
        print(f"bench: unknown scenario {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    results = run(scenarios, quick=arguments.quick, profile=arguments.profile)
    show(results, Console(stderr=False, width=160))
    log(f"bench: results saved to {save(results, arguments.results)}")
    print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
