"""Slither over contracts/src, compiled by the pinned solc-js through the shim in contracts/slither/: no high or
medium finding that contracts/slither/triage.md does not list with a reason, and no triage row left without its
finding."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from partledger.artifacts import REPO_ROOT

SLITHER_DIR = REPO_ROOT / "contracts" / "slither"
GATED_IMPACTS = {"High", "Medium"}
TRIAGE_ROW = re.compile(r"^\| (?P<check>[a-z][a-z0-9-]*) \| (?P<location>[^|]+?) \| (?P<why>.+) \|$")


def run_slither() -> dict:
    """Slither's JSON report; the shim is first on PATH because crytic-compile runs `solc --standard-json` by name."""
    env = {**os.environ, "PATH": f"{SLITHER_DIR}{os.pathsep}{os.environ['PATH']}"}
    slither = Path(sys.executable).with_name("slither")
    result = subprocess.run(
        [str(slither), "contracts/src", "--config-file", str(SLITHER_DIR / "slither.config.json"), "--json", "-"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"slither printed no JSON report (exit {result.returncode}):\n{result.stderr[-3000:]}")
    assert report["success"], f"slither failed: {report.get('error')}\n{result.stderr[-3000:]}"
    return report


def finding_key(finding: dict) -> tuple[str, str]:
    """(check, location): the location is the first name of the description, e.g. `PartLedger.shipParts(bytes32[],...)`."""
    return finding["check"], finding["description"].split()[0]


def read_triage() -> dict[tuple[str, str], str]:
    rows = {}
    for line in (SLITHER_DIR / "triage.md").read_text().splitlines():
        match = TRIAGE_ROW.match(line)
        if match and match["check"] != "check":
            rows[match["check"], match["location"].replace("\\|", "|")] = match["why"]
    return rows


@pytest.fixture(scope="session")  # slither takes seconds: once per worker, even if another module's tests interleave
def findings() -> list[dict]:
    return run_slither()["results"].get("detectors", [])


def test_slither_analyses_every_contract_source(findings):
    # A compile that silently dropped a file would also show no finding: the report must name each contract.
    names = {finding_key(finding)[1].split(".")[0] for finding in findings}
    assert {"ConsortiumRegistry", "EvidenceLedger", "PartLedger"} <= names


def test_no_high_or_medium_finding_left_unexplained(findings):
    triage = read_triage()
    gated = [finding for finding in findings if finding["impact"] in GATED_IMPACTS]
    unexplained = [f"{finding['impact']} {finding['check']}: {finding['description'].strip()}" for finding in gated if finding_key(finding) not in triage]
    assert not unexplained, "Slither findings not in contracts/slither/triage.md:\n" + "\n".join(unexplained)
    reasons = [why for key, why in triage.items() if key in {finding_key(finding) for finding in gated}]
    assert all(len(why.split()) >= 8 for why in reasons), "each triaged finding needs a written reason"


def test_triage_lists_no_finding_that_is_gone(findings):
    current = {finding_key(finding) for finding in findings if finding["impact"] in GATED_IMPACTS}
    stale = sorted(set(read_triage()) - current)
    assert not stale, f"contracts/slither/triage.md lists findings Slither no longer reports: {stale}"
