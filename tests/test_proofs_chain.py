"""Auditor proofs on a live Anvil (prague): bundles of a trade document, a lifecycle event and a batched record,
verified by the CLI offline (trusted block hash, checkpoints) and against the node (--rpc); every single-field
tamper fails naming its check; a key revoked before the anchoring block is caught even when the contract let it by."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from eth_utils import keccak
from typer.testing import CliRunner

from partledger.artifacts import REPO_ROOT
from partledger.manifest import Manifest, save_manifest
from partledger.merkle import build_tree
from partledger.proofs import verifier as v
from partledger.proofs.builder import BatchRecord, JsonRpc, ProofBuilder, attach_document, dump_bundle, record_json
from partledger.proofs.checkpoints import export_checkpoints
from partledger_cli.main import app
from tests.chainkit import Ledger, revert_to, snapshot
from tests.proofkit import anchor_document, add_signer, flip_byte, leaves, set_at
from wallets.keystore import create_keystore
from wallets.signer import LocalSigner

pytestmark = pytest.mark.chain
runner = CliRunner()
RECORD_TYPES = ["bytes32", "uint64", "string", "address"]


def anchors_for(bundle: dict[str, Any]) -> v.TrustAnchors:
    return v.TrustAnchors(blocks={bundle["block"]["number"]: bytes.fromhex(bundle["block"]["hash"][2:])})


class Proofs:
    """What the module's tests share: one consortium state with a document, a shipment and a batch anchored."""

    def __init__(self, ledger: Ledger, workdir: Path) -> None:
        self.ledger = ledger
        self.manifest_path = workdir / "manifest.json"
        save_manifest(Manifest(**{**ledger.manifest.__dict__, "rpc_url": ledger.w3.provider.endpoint_uri}), self.manifest_path)
        self.builder = ProofBuilder(rpc_url=ledger.w3.provider.endpoint_uri, manifest=ledger.manifest)
        self.doc = anchor_document(ledger, ledger.orgs["maker"], ledger.orgs["distributor"])
        self.document_bundle = attach_document(self.builder.document(self.doc.doc_hash), salt=self.doc.salt, content=self.doc.content)
        maker = ledger.orgs["maker"]
        ids = ledger.register(maker, ["P-1", "P-2", "P-3"], lot="LOT-PROOF")
        self.ship = ledger.act(maker.key, ledger.parts.functions.shipParts(ids, ledger.orgs["warehouse"].id, b"\x0d" * 32))
        self.event_bundle = self.builder.event(bytes(self.ship["transactionHash"]), self.ship["logs"][0]["logIndex"])
        self.records = [(keccak(text=f"scan {i}"), 1_700_000_000 + i, f"scan {i} 仓库", maker.key) for i in range(11)]
        tree = build_tree(self.records, types=RECORD_TYPES)
        self.batch = ledger.act(maker.key, ledger.evidence.functions.anchorBatch(tree.root, len(self.records), b"scan".ljust(32, b"\0")))
        record = BatchRecord(RECORD_TYPES, record_json(RECORD_TYPES, self.records[5]), tree.proof_at(5))
        self.record_bundle = self.builder.batch(tree.root, record=record)


@pytest.fixture(scope="module")
def proofs(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proofs]:
    snapshot_id = snapshot(deployed.w3)
    yield Proofs(deployed, tmp_path_factory.mktemp("proofs"))
    revert_to(deployed.w3, snapshot_id)


def cli(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


# --- bundles verify, offline and against the node ---------------------------------------------------------------


def test_document_bundle_verifies_offline_with_the_cli_and_its_header_is_anvils_block(proofs: Proofs, tmp_path: Path):
    bundle = proofs.document_bundle
    block = proofs.ledger.w3.eth.get_block(proofs.doc.block)
    assert "0x" + bytes(block["hash"]).hex() == bundle["block"]["hash"] == "0x" + keccak(bytes.fromhex(bundle["block"]["header"][2:])).hex()
    assert len(bundle["block"]["fields"]) == 21 and bundle["block"]["fields"]["requestsHash"] == "0x" + bytes(block["requestsHash"]).hex()
    path, pdf = tmp_path / "bundle.json", tmp_path / "invoice.pdf"
    path.write_text(dump_bundle(bundle))
    pdf.write_bytes(proofs.doc.content)
    result = cli("proof", "verify", str(path), "--document", str(pdf), "--trusted-block", f"{bundle['block']['number']}:{bundle['block']['hash']}")
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and "✗" not in result.output
    for name in ("header", "anchor", "transaction", "receipt", "event", "signatures", "registry", "signers", "document"):
        assert name in result.output
    verdict = json.loads(cli("proof", "verify", str(path), "--document", str(pdf), "--trusted-block", f"{bundle['block']['number']}:{bundle['block']['hash']}", "--json").output)
    assert verdict["valid"] and [c["name"] for c in verdict["checks"]] == ["format", "header", "anchor", "transaction", "receipt", "event", "signatures", "registry", "signers", "document"]
    facts = {f["label"]: f["value"] for f in verdict["facts"]}
    assert proofs.doc.issuer_key.address in facts["issuer signer"] and "maker-signer" in facts["issuer signer"]
    assert "as the bundle declares them" in verdict["checks"][2]["detail"]


def test_the_deployment_manifest_pins_the_contract_addresses(proofs: Proofs, tmp_path: Path):
    bundle = proofs.event_bundle
    path = tmp_path / "event.json"
    path.write_text(dump_bundle(bundle))
    pinned = cli("proof", "verify", str(path), "--trusted-block", f"{bundle['block']['number']}:{bundle['block']['hash']}", "--manifest", str(proofs.manifest_path), "--json")
    assert pinned.exit_code == 0 and "contracts are the manifest's" in json.loads(pinned.output)["checks"][2]["detail"]
    other = json.loads(proofs.manifest_path.read_text())
    other["contracts"]["PartLedger"]["address"] = other["contracts"]["EvidenceLedger"]["address"]  # a look-alike deployment
    (tmp_path / "other.json").write_text(json.dumps(other))
    refused = cli("proof", "verify", str(path), "--trusted-block", f"{bundle['block']['number']}:{bundle['block']['hash']}", "--manifest", str(tmp_path / "other.json"), "--json")
    assert refused.exit_code == 1 and json.loads(refused.output)["failed"] == ["anchor"]


def test_every_kind_of_bundle_verifies_against_the_node_with_rpc(proofs: Proofs, tmp_path: Path):
    url = proofs.ledger.w3.provider.endpoint_uri
    for name, bundle in (("document", proofs.document_bundle), ("event", proofs.event_bundle), ("record", proofs.record_bundle)):
        path = tmp_path / f"{name}.json"
        path.write_text(dump_bundle(bundle))
        result = cli("proof", "verify", str(path), "--rpc", url)
        assert result.exit_code == 0, result.output
    assert proofs.event_bundle["event"]["name"] == "PartsShipped" and proofs.event_bundle["subject"] == "event"
    assert proofs.record_bundle["batchRecord"]["value"][2] == "scan 5 仓库"


def test_the_plain_verifier_runs_as_a_module_without_the_partledger_cli(proofs: Proofs, tmp_path: Path):
    bundle = proofs.record_bundle
    path = tmp_path / "record.json"
    path.write_text(dump_bundle(bundle))
    command = [sys.executable, "-m", "partledger.proofs.verifier", str(path), "--trusted-block", f"{bundle['block']['number']}:{bundle['block']['hash']}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "VALID: every check passed" in done.stdout and "[PASS] batch record" in done.stdout
    wrong = subprocess.run([*command[:-1], f"{bundle['block']['number']}:0x{'00' * 32}"], capture_output=True, text=True, cwd=REPO_ROOT)
    assert wrong.returncode == 1 and "[FAIL] anchor" in wrong.stdout


def test_proof_get_writes_a_bundle_with_the_document_salt(proofs: Proofs, tmp_path: Path):
    pdf, out = tmp_path / "invoice.pdf", tmp_path / "got.json"
    pdf.write_bytes(proofs.doc.content)
    result = cli("proof", "get", "--doc-hash", "0x" + proofs.doc.doc_hash.hex(), "--salt", "0x" + proofs.doc.salt.hex(), "--document", str(pdf),
                 "--manifest", str(proofs.manifest_path), "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == proofs.document_bundle
    other = tmp_path / "other.pdf"
    other.write_bytes(proofs.doc.content + b" ")
    verdict = v.verify_bundle(out.read_bytes(), document=other.read_bytes(), anchors=anchors_for(proofs.document_bundle))
    assert verdict.failed == ["document"]


# --- tampering ---------------------------------------------------------------------------------------------------


def tampered(bundle: dict[str, Any], path: tuple[Any, ...], position: int = 3, mask: int = 0x01) -> dict[str, Any]:
    copied = copy.deepcopy(bundle)
    value = copied
    for step in path:
        value = value[step]
    set_at(copied, path, flip_byte(value, position, mask))
    return copied


@pytest.mark.parametrize(
    ("path", "check"),
    [
        (("block", "header"), "header"),  # a byte of the header
        (("transaction", "proof", 0), "transaction"),  # a node of the transaction proof
        (("transaction", "raw"), "transaction"),
        (("receipt", "proof", 0), "receipt"),  # a node of the receipt proof
        (("event", "data"), "event"),  # the log data
        (("signatures", 0, "signature"), "signatures"),  # a signature
        (("typedData", "domain", "verifyingContract"), "signatures"),  # no longer EIP-55
        (("registry", "accountProof", 2), "registry"),
        (("registry", "keys", 1, "recordProof", 0), "registry"),
        (("document", "salt"), "document"),  # the salt
        (("document", "contentHash"), "document"),
    ],
)
def test_a_tampered_field_fails_the_check_it_belongs_to(proofs: Proofs, path: tuple[Any, ...], check: str):
    verdict = v.verify_bundle(tampered(proofs.document_bundle, path), document=proofs.doc.content, anchors=anchors_for(proofs.document_bundle))
    assert not verdict.ok and check in verdict.failed, verdict.checks


def test_a_tampered_document_or_record_fails_its_check(proofs: Proofs):
    changed = bytearray(proofs.doc.content)
    changed[10] ^= 0x20
    verdict = v.verify_bundle(proofs.document_bundle, document=bytes(changed), anchors=anchors_for(proofs.document_bundle))
    assert verdict.failed == ["document"] and "different file" in verdict.checks[-1].detail
    record = proofs.record_bundle
    for path in (("batchRecord", "proof", 1), ("batchRecord", "leaf")):
        assert "batch record" in v.verify_bundle(tampered(record, path), anchors=anchors_for(record)).failed
    edited = copy.deepcopy(record)
    edited["batchRecord"]["value"][1] += 1
    assert v.verify_bundle(edited, anchors=anchors_for(record)).failed == ["batch record"]
    # A width that is no ABI type would encode the same bytes (uint60 of a value that fits: the leaf matches), and
    # the bundle would show another type for them (a fresh-clone run found uint64 flipped to a look-alike accepted).
    assert record["batchRecord"]["types"][:2] == ["bytes32", "uint64"]
    for index, look_alike in ((1, "uint60"), (1, "uint66"), (1, "uint44"), (1, "uint0"), (1, "uint264"), (0, "bytes33"), (0, "bytes032")):
        edited = copy.deepcopy(record)
        edited["batchRecord"]["types"][index] = look_alike
        assert v.verify_bundle(edited, anchors=anchors_for(record)).failed == ["batch record"], look_alike


def mutate_scalar(value: Any, rng: random.Random) -> Any:
    """One byte of a JSON scalar changed: a byte of hex data, a bit of an integer, a character of a string."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value ^ (1 << rng.randrange(8))
    if isinstance(value, str) and value.startswith("0x") and len(value) > 2 and len(value) % 2 == 0 and all(c in "0123456789abcdef" for c in value[2:]):
        return flip_byte(value, rng.randrange((len(value) - 2) // 2), rng.randrange(1, 256))
    position = rng.randrange(len(value)) if value else 0
    if not value:
        return "x"
    return value[:position] + chr(ord(value[position]) ^ (1 << rng.randrange(5))) + value[position + 1 :]


def test_no_single_byte_mutation_of_any_field_is_accepted(proofs: Proofs):
    """Every scalar of every kind of bundle is changed at least once, then random bytes anywhere (hex data
    weighted by its length): over 1,000 mutations and not one accepted."""
    rng = random.Random(20260611)
    mutations = 0
    for bundle, document in ((proofs.document_bundle, proofs.doc.content), (proofs.event_bundle, None), (proofs.record_bundle, None)):
        anchors = anchors_for(bundle)
        assert v.verify_bundle(bundle, document=document, anchors=anchors).ok
        scalars = leaves(bundle)
        weighted = [(path, value) for path, value in scalars for _ in range(max(1, (len(value) - 2) // 2 if isinstance(value, str) else 1))]
        chosen = scalars + [weighted[rng.randrange(len(weighted))] for _ in range(400)]
        for path, value in chosen:
            mutated = copy.deepcopy(bundle)
            set_at(mutated, path, mutate_scalar(value, rng))
            verdict = v.verify_bundle(mutated, document=document, anchors=anchors)
            assert not verdict.ok, f"accepted a change of {path}"
            mutations += 1
    assert mutations >= 1_000


def test_no_random_byte_change_of_the_bundle_file_is_accepted(proofs: Proofs):
    """Raw bytes of the JSON file: a change is accepted only when the file still parses to the very same bundle
    (white space); every other one is refused."""
    rng = random.Random(11)
    text = dump_bundle(proofs.document_bundle).encode()
    anchors = anchors_for(proofs.document_bundle)
    accepted_same = 0
    for _ in range(1_000):
        raw = bytearray(text)
        position = rng.randrange(len(raw))
        raw[position] = (raw[position] + rng.randrange(1, 256)) % 256
        verdict = v.verify_bundle(bytes(raw), document=proofs.doc.content, anchors=anchors)
        if verdict.ok:
            assert json.loads(bytes(raw)) == proofs.document_bundle
            accepted_same += 1
    assert accepted_same < 20


# --- signer validity --------------------------------------------------------------------------------------------

# Runtime code standing in for the registry while one document is anchored: authorize(key, roles) and siteKey(key)
# both answer the key's organisation from the registry's own storage (slot 3) and nothing else - no revocation
# check. It simulates a contract that failed to enforce revocation; the verifier must not rely on the contract.
LENIENT_REGISTRY = "0x600435600052600360205260406000205463ffffffff16600052600060205260806000f3"


def test_a_document_signed_by_a_key_revoked_before_its_block_is_rejected(ledger: Ledger):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    revoked, countersigner = add_signer(ledger, maker), add_signer(ledger, distributor)
    revocation = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(revoked.address))
    registry = ledger.registry.address
    original = ledger.w3.eth.get_code(registry)
    ledger.w3.provider.make_request("anvil_setCode", [registry, LENIENT_REGISTRY])
    try:
        doc = anchor_document(ledger, maker, distributor, issuer_key=revoked, counterparty_key=countersigner)
        # built before the code is put back: Anvil changes the newest block's state in place
        bundle = ProofBuilder(rpc_url=ledger.w3.provider.endpoint_uri, manifest=ledger.manifest).document(doc.doc_hash)
    finally:
        ledger.w3.provider.make_request("anvil_setCode", [registry, "0x" + bytes(original).hex()])
    verdict = v.verify_bundle(bundle, anchors=anchors_for(bundle))
    assert verdict.failed == ["signers"]
    detail = next(c.detail for c in verdict.checks if c.name == "signers")
    assert f"issuer signer {revoked.address}" in detail and f"revoked in block {revocation['blockNumber']}, before block {doc.block}" in detail


def test_a_key_revoked_after_the_block_does_not_spoil_an_earlier_document(ledger: Ledger):
    doc = anchor_document(ledger, ledger.orgs["maker"], ledger.orgs["distributor"])
    ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(doc.issuer_key.address))
    builder = ProofBuilder(rpc_url=ledger.w3.provider.endpoint_uri, manifest=ledger.manifest)
    bundle = builder.document(doc.doc_hash)
    assert v.verify_bundle(bundle, anchors=anchors_for(bundle)).ok
    issuer = next(k for k in bundle["registry"]["keys"] if k["key"] == doc.issuer_key.address)
    assert issuer["revokedBlock"] == 0  # the registry as it stood at the document's block


# --- checkpoints --------------------------------------------------------------------------------------------------


def test_checkpoints_anchor_a_later_bundle_through_its_header_chain(ledger: Ledger, tmp_path: Path):
    manifest = tmp_path / "manifest.json"
    save_manifest(Manifest(**{**ledger.manifest.__dict__, "rpc_url": ledger.w3.provider.endpoint_uri}), manifest)
    keystore, secret = tmp_path / "operator.json", tmp_path / "passphrase"
    secret.write_text("operator-passphrase-for-tests\n")
    operator = create_keystore(keystore, "operator-passphrase-for-tests", light=True)
    doc = anchor_document(ledger, ledger.orgs["maker"], ledger.orgs["distributor"])
    ledger.w3.provider.make_request("anvil_mine", [hex(7)])
    checkpoints = tmp_path / "checkpoints.json"
    common = ["--manifest", str(manifest), "--keystore", str(keystore), "--passphrase-file", str(secret)]
    every = doc.block + 5  # the first checkpoint at or after the document is then 5 blocks after it, whatever its block
    result = cli("checkpoint", "export", "--every", str(every), "--out", str(checkpoints), *common)
    assert result.exit_code == 0, result.output
    exported = json.loads(checkpoints.read_text())["checkpoints"]
    numbers = [c["number"] for c in exported]
    target = next(n for n in numbers if n >= doc.block)
    assert target == doc.block + 5
    out, pdf = tmp_path / "bundle.json", tmp_path / "invoice.pdf"
    pdf.write_bytes(doc.content)
    result = cli("proof", "get", "--doc-hash", "0x" + doc.doc_hash.hex(), "--checkpoints", str(checkpoints), "--salt", "0x" + doc.salt.hex(),
                 "--document", str(pdf), "--manifest", str(manifest), "--out", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    bundle = json.loads(out.read_text())
    assert len(bundle["headerChain"]) == target - doc.block
    result = cli("proof", "verify", str(out), "--document", str(pdf), "--checkpoints", str(checkpoints), "--operator", operator.address, "--json")
    assert result.exit_code == 0, result.output
    checks = {c["name"]: c["detail"] for c in json.loads(result.output)["checks"]}
    assert f"block {target}" in checks["header chain"] and f"block {target} matches the checkpoint signed by {operator.address}" in checks["anchor"]

    def verdict(edit: Any = None, *, file_edit: Any = None, operator_address: str | None = operator.address) -> v.Verdict:
        copied, data = copy.deepcopy(bundle), json.loads(checkpoints.read_text())
        if edit:
            edit(copied)
        if file_edit:
            file_edit(data)
        return v.verify_bundle(copied, document=doc.content, anchors=v.TrustAnchors(checkpoints=data, operator=operator_address))

    assert verdict().ok
    assert "header chain" in verdict(lambda b: set_at(b, ("headerChain", 2), flip_byte(b["headerChain"][2], 40, 4))).failed
    assert verdict(lambda b: b["headerChain"].pop()).failed == ["anchor"]  # no longer reaches the checkpoint
    assert verdict(file_edit=lambda d: set_at(d, ("checkpoints", numbers.index(target), "hash"), "0x" + "ab" * 32)).failed == ["anchor"]
    assert verdict(operator_address=ledger.operator).failed == ["anchor"]  # signed by someone else than the operator trusted
    assert verdict(file_edit=lambda d: set_at(d, ("deployment", "contracts", "PartLedger"), d["operator"])).failed == ["anchor"]
    again = cli("checkpoint", "export", "--every", str(every), "--out", str(checkpoints), *common)  # extends, re-checking the old ones
    assert again.exit_code == 0, again.output
    assert json.loads(checkpoints.read_text())["checkpoints"][: len(exported)] == exported


def test_checkpoint_export_refuses_a_file_that_disagrees_with_the_chain(ledger: Ledger, tmp_path: Path):
    signer = LocalSigner(create_keystore(tmp_path / "op.json", "pw-for-tests-only", light=True))
    rpc = JsonRpc(ledger.w3.provider.endpoint_uri)
    first = export_checkpoints(rpc, ledger.manifest, signer, every=4)
    extended = export_checkpoints(rpc, ledger.manifest, signer, every=4, existing=first)
    assert extended["checkpoints"][: len(first["checkpoints"])] == first["checkpoints"]
    forged = copy.deepcopy(first)
    forged["checkpoints"][0]["hash"] = "0x" + "cd" * 32
    with pytest.raises(Exception, match="cannot be extended|not signed"):
        export_checkpoints(rpc, ledger.manifest, signer, every=4, existing=forged)
