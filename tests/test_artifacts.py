"""The committed contract artifacts are exactly what the committed sources compile to with the pinned solc-js."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from web3 import Web3

from ledger_service.operations import OPERATIONS, contract_arguments

from partledger.artifacts import CONTRACT_NAMES, REPO_ROOT, calldata, load_artifact

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


HEX32 = st.binary(min_size=32, max_size=32).map(lambda raw: "0x" + raw.hex())
SERIAL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=20)


@st.composite
def payloads(draw: st.DrawFn, kind: str) -> list[dict]:
    """One to three items of a command of `kind`, as the outbox stores them."""
    first: dict = {"parts": [], "doc_hash": draw(st.one_of(st.none(), HEX32)), "to": draw(st.integers(1, 2**32 - 1))}
    first |= {"gtin": "04012345000016", "lot": draw(SERIAL), "notice_hash": draw(HEX32), "root": draw(HEX32), "record_count": draw(st.integers(0, 2**32 - 1)), "batch_kind": "scans"}
    first |= {"lot": draw(st.integers(1, 2**64 - 1))} if kind == "recall" else {}
    first |= {"sscc": str(draw(st.integers(1, 10**18 - 1))), "parent": draw(HEX32), "original": draw(HEX32), "serial": draw(SERIAL)}
    first |= {
        "attestation": {"docHash": draw(HEX32), "docType": draw(st.integers(0, 255)), "issuer": draw(st.integers(1, 2**32 - 1)), "counterparty": draw(st.integers(1, 2**32 - 1)),
                        "previous": draw(HEX32), "partsRoot": draw(HEX32), "nonce": draw(HEX32), "deadline": draw(st.integers(0, 2**64 - 1))},
        "issuer_signature": "0x" + draw(st.binary(min_size=65, max_size=65)).hex(), "counterparty_signature": "0x" + draw(st.binary(min_size=65, max_size=65)).hex(),
    }  # fmt: skip
    items = []
    for _ in range(draw(st.integers(1, 3))):
        parts = draw(st.lists(HEX32, min_size=1, max_size=5))
        items.append(first | {"parts": parts, "vin_hashes": draw(st.lists(HEX32, min_size=len(parts), max_size=len(parts))), "serials": draw(st.lists(SERIAL, min_size=1, max_size=5))})
    return items


@given(st.sampled_from(sorted(OPERATIONS)).flatmap(lambda kind: st.tuples(st.just(kind), payloads(kind))))
def test_calldata_by_eth_abi_is_what_web3_encodes(case):
    """The submitter encodes calls with eth_abi directly (partledger.artifacts.calldata), for every operation."""
    kind, items = case
    contract_name, function, arguments = contract_arguments(kind, items)
    contract = Web3().eth.contract(abi=load_artifact(contract_name).abi)
    assert calldata(contract_name, function, arguments) == contract.encode_abi(function, args=arguments)
