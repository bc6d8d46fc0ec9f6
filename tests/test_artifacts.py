"""The committed contract artifacts are exactly what the committed sources compile to with the pinned solc-js."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from partledger.artifacts import CONTRACT_NAMES, REPO_ROOT, load_artifact

ARTIFACTS = REPO_ROOT / "contracts" / "artifacts"


def test_committed_artifacts_match_a_fresh_compile(tmp_path: Path):
    subprocess.run(["node", str(REPO_ROOT / "contracts" / "compile.cjs"), str(tmp_path)], check=True, capture_output=True)
    fresh = sorted(path.name for path in tmp_path.iterdir())
    committed = sorted(path.name for path in ARTIFACTS.iterdir())
    assert fresh == committed, "artifact files differ: run `make contracts` and commit"
    stale = [name for name in fresh if (tmp_path / name).read_bytes() != (ARTIFACTS / name).read_bytes()]
    assert not stale, f"committed artifacts differ from the sources: {stale}; run `make contracts` and commit"


def test_artifacts_pin_the_compiler_version_and_settings():
    pinned = json.loads((REPO_ROOT / "contracts" / "compiler.json").read_text())
    lock = json.loads((REPO_ROOT / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/solc"]["version"] == pinned["solcVersion"]
    for name in CONTRACT_NAMES:
        data = json.loads((ARTIFACTS / f"{name}.json").read_text())
        assert data["compiler"]["version"].startswith(pinned["solcVersion"] + "+commit.")
        assert data["compiler"]["settings"] == pinned["settings"]
        assert load_artifact(name).bytecode, f"{name} has no bytecode"


# Errors that OpenZeppelin's code, not ours, can raise inside our contracts.
OPENZEPPELIN_ERRORS = {
    "AccessControlBadConfirmation",
    "AccessControlUnauthorizedAccount",
    "ECDSAInvalidSignature",
    "ECDSAInvalidSignatureLength",
    "ECDSAInvalidSignatureS",
    "InvalidShortString",
    "StringTooLong",
}


def test_every_custom_error_is_named_after_its_contract():
    for name in CONTRACT_NAMES:
        errors = {entry["name"] for entry in load_artifact(name).errors} - OPENZEPPELIN_ERRORS
        assert errors, f"{name} declares no custom error"
        misnamed = sorted(error for error in errors if not error.startswith(name))
        assert not misnamed, f"{name} raises errors not named <Contract><Condition>: {misnamed}"
