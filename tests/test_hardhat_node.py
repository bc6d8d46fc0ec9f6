"""The core flow on a second node implementation: Hardhat's node (npm `hardhat`, its chain run by EDR) instead of
Anvil. The contracts are deployed, the service and the indexer run, and the flow goes through the API as on Anvil:
register, ship, receive, install, races only the contract sees, a burst of one key, a trade document proposed,
countersigned and anchored; then proof bundles of that chain (from `partledger proof get` and from the service),
checked by `partledger proof verify --rpc` against the node.

The production code (service, submitter, indexer, proof builder, verifier) reaches the node through a recording hop;
the test harness (deployment of the consortium's dev keys, unlocked accounts) talks to the node directly. Every method
the hop saw must be a standard one: this is what shows that the production path needs no Anvil. What differs between
the two nodes is written down in docs/nodes.md.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_utils import keccak
from fastapi.testclient import TestClient
from typer.testing import CliRunner
from web3 import Web3

from ledger_service.app import load_signers
from ledger_service.submitter import Submitter, SubmitterConfig
from partledger.chain import ESTIMATE_HEADROOM, GasSizer, connect
from partledger.documents import new_salt, salted_document_hash
from partledger.ids import ascii32, part_id
from partledger.manifest import Manifest, save_manifest
from partledger.model import PartStatus
from partledger.proofs import verifier as v
from partledger.proofs.builder import dump_bundle
from partledger_cli.main import app as cli_app
from tests.chainkit import GTIN_A, Ledger, build_ledger
from tests.hardhatkit import HardhatConfig, HardhatNode, RpcRecorder
from tests.ports import free_port
from tests.servicekit import Stack, prepare_stack, running_service, wait_command

STANDARD_NAMESPACES = ("eth_", "net_", "web3_")
VIN = "WVWZZZ1JZXW000001"
INVOICE = b"%PDF-1.7\n% invoice 2026-0042 over Hardhat's node, 3 brake discs\n%%EOF\n"
SERIALS = ["HH-1", "HH-2", "HH-3"]
BATCH_ROOT = "0x" + keccak(text="scans over Hardhat's node").hex()
BURST_ROOTS = ["0x" + keccak(text=f"burst {index}").hex() for index in range(8)]  # the submitter's default in-flight limit per key


def hexid(raw: bytes) -> str:
    return "0x" + bytes(raw).hex()


class SubmitterThread:
    """The service's submitter, run beside a service started with submitter=False, so that the flow can hold it back
    while it sets up a race (commands accepted while nothing is sent)."""

    def __init__(self, client: TestClient) -> None:
        services = client.app.state.services  # type: ignore[attr-defined]
        self.submitter = Submitter(
            engine=services.service_engine,
            w3=Web3(Web3.HTTPProvider(services.manifest.rpc_url)),
            signers=load_signers(services.settings, services.manifest),
            manifest=services.manifest,
            config=SubmitterConfig(interval=0.02),
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.submitter.run, args=(self._stop,), daemon=True)

    def __enter__(self) -> SubmitterThread:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Flow:
    """What the module's tests look at: the views of each command, the mirror's answers, the bundles and the
    verdicts of `partledger proof verify`, and the methods the production code called."""

    node: HardhatNode
    ledger: Ledger
    recorder: RpcRecorder
    stack: Stack
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    race: list[dict[str, Any]] = field(default_factory=list)
    batch_race: list[dict[str, Any]] = field(default_factory=list)
    burst: list[dict[str, Any]] = field(default_factory=list)
    part: dict[str, Any] = field(default_factory=dict)
    documents: list[dict[str, Any]] = field(default_factory=list)
    doc_hash: str = ""
    document_bundle: dict[str, Any] = field(default_factory=dict)
    event_bundle: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, Any] = field(default_factory=dict)


def post(stack: Stack, org: str, path: str, body: dict[str, Any]) -> str:
    assert stack.client is not None
    response = stack.client.post(path, headers=stack.headers(org), json=body)
    assert response.status_code in (201, 202), response.text
    return response.json()["command_id"] if response.status_code == 202 else response.json()["proposal_id"]


def confirmed(stack: Stack, org: str, command_id: str) -> dict[str, Any]:
    view = wait_command(stack, org, command_id)
    assert view["status"] == "confirmed", view
    return view


def cli(*args: str) -> Any:
    return CliRunner().invoke(cli_app, list(args), catch_exceptions=False)


def run_flow(flow: Flow, workdir: Path) -> None:
    stack, ledger = flow.stack, flow.ledger
    orgs = ledger.orgs
    ids = [hexid(part_id(GTIN_A, serial)) for serial in SERIALS]
    with running_service(stack, submitter=False) as client:
        # Accepted while nothing is sent: one serial in two registrations of different lots. Both pass the pre-check
        # (the mirror has neither); the submitter simulates the second once the first is in the node, and the
        # contract refuses it.
        register = post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-HH", "serials": SERIALS})
        race = [post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": lot, "serials": ["HH-TWICE"]}) for lot in ("L-HH-A", "L-HH-B")]
        # The same batch root twice: nothing tells the submitter they conflict, so both are sent at once and the
        # second reverts on chain (its error then read by replaying it with eth_call).
        batches = [post(stack, "warehouse", "/v1/batches", {"root": BATCH_ROOT, "record_count": 3, "kind": "scan"}) for _ in range(2)]
        # A burst of one key: its transactions go out in one JSON-RPC batch, which Hardhat's node runs concurrently.
        burst = [post(stack, "distributor", "/v1/batches", {"root": root, "record_count": 1, "kind": "scan"}) for root in BURST_ROOTS]
        with SubmitterThread(client):
            flow.views["register"] = confirmed(stack, "maker", register)
            flow.race = [wait_command(stack, "maker", command) for command in race]
            flow.batch_race = [wait_command(stack, "warehouse", command) for command in batches]
            flow.burst = [wait_command(stack, "distributor", command) for command in burst]
            flow.views["ship"] = confirmed(stack, "maker", post(stack, "maker", "/v1/parts/ship", {"part_ids": ids, "to_org": orgs["warehouse"].id}))
            flow.views["receive"] = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/receive", {"part_ids": ids}))
            flow.views["forward"] = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/ship", {"part_ids": ids, "to_org": orgs["workshop"].id}))
            flow.views["receive_workshop"] = confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/receive", {"part_ids": ids}))
            flow.views["install"] = confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": ids[0], "vin": VIN}]}))
            salt = new_salt()
            flow.doc_hash = hexid(salted_document_hash(INVOICE, salt))
            proposal = post(stack, "maker", "/v1/documents/proposals", {"doc_hash": flow.doc_hash, "doc_type": "invoice", "counterparty": orgs["distributor"].id})
            countersigned = post(stack, "distributor", f"/v1/documents/proposals/{proposal}/countersign", {})
            flow.views["document"] = confirmed(stack, "distributor", countersigned)
        flow.part = client.get(f"/v1/parts/{ids[0]}", headers=stack.headers("workshop")).json()["part"]
        flow.documents = client.get("/v1/evidence", headers=stack.headers("auditor"), params={"doc_hash": flow.doc_hash}).json()["items"]
        install_tx = flow.views["install"]["transactions"][0]["tx_hash"]
        receipt = ledger.w3.eth.get_transaction_receipt(install_tx)
        log_index = next(log["logIndex"] for log in receipt["logs"] if log["address"] == ledger.parts.address)
        response = client.get(f"/v1/proofs/events/{install_tx}/{log_index}", headers=stack.headers("workshop"))
        assert response.status_code == 200, response.text
        flow.event_bundle = response.json()

    # The auditor's side: a bundle built by the CLI from the node, then verified against the node.
    pdf, document_path, event_path = workdir / "invoice.pdf", workdir / "document.json", workdir / "event.json"
    pdf.write_bytes(INVOICE)
    got = cli("proof", "get", "--doc-hash", flow.doc_hash, "--salt", hexid(salt), "--document", str(pdf), "--manifest", str(stack.manifest_path),
              "--rpc", flow.recorder.url, "--out", str(document_path))  # fmt: skip
    assert got.exit_code == 0, got.output
    flow.document_bundle = json.loads(document_path.read_text())
    event_path.write_text(dump_bundle(flow.event_bundle))
    for name, path, extra in (("document", document_path, ["--document", str(pdf)]), ("event", event_path, [])):
        verified = cli("proof", "verify", str(path), *extra, "--rpc", flow.recorder.url, "--json")
        flow.verdicts[name] = (verified.exit_code, json.loads(verified.output))
    tampered = forged_block(flow.document_bundle)
    (workdir / "tampered.json").write_text(dump_bundle(tampered))
    verified = cli("proof", "verify", str(workdir / "tampered.json"), "--document", str(pdf), "--rpc", flow.recorder.url, "--json")
    flow.verdicts["tampered"] = (verified.exit_code, json.loads(verified.output))


def forged_block(bundle: dict[str, Any]) -> dict[str, Any]:
    """The bundle with a header of the same number that the node never made (its extraData changed, its hash and
    fields recomputed): consistent in itself, so that only the node can tell."""
    forged = copy.deepcopy(bundle)
    items = rlp.decode(bytes.fromhex(bundle["block"]["header"][2:]))
    items[12] = b"not hardhat's block"  # extraData
    header = rlp.encode(items)
    forged["block"] |= {"header": hexid(header), "hash": hexid(keccak(header)), "fields": v.render_header(v.decode_header(header))}
    return forged


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    workdir = tmp_path_factory.mktemp("hardhat")
    node = HardhatNode.start(HardhatConfig(port=free_port(), accounts=20), log_path=workdir / "hardhat-node.log")
    try:
        ledger = build_ledger(connect(node.url))  # deployed with signed raw transactions, as `partledger deploy` does
        with RpcRecorder(node.url) as recorder:
            stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
            # From here on, the service, the indexer and the CLI reach the node only through the recorder.
            save_manifest(Manifest(**{**ledger.manifest.__dict__, "rpc_url": recorder.url}), stack.manifest_path)
            stack.ledger = copy.copy(ledger)
            stack.ledger.w3 = connect(recorder.url)
            recorder.methods.clear()
            flow = Flow(node, ledger, recorder, stack)
            run_flow(flow, workdir)
            yield flow
    finally:
        node.stop()


# --- the flow ------------------------------------------------------------------------------------------------------


def test_the_node_is_hardhats_edr_with_free_gas(flow: Flow):
    w3 = flow.ledger.w3
    assert w3.client_version.startswith("HardhatNetwork/") and "edr" in w3.client_version
    assert w3.eth.chain_id == flow.ledger.manifest.chain_id == 31337 and flow.ledger.manifest.dev_chain
    latest = w3.eth.get_block("latest")
    assert latest["baseFeePerGas"] == 0 and latest["gasLimit"] == 1_000_000_000


def test_register_ship_receive_install_land_through_the_api(flow: Flow):
    views, orgs = flow.views, flow.ledger.orgs
    assert [views[name]["status"] for name in ("register", "ship", "receive", "forward", "receive_workshop", "install")] == ["confirmed"] * 6
    blocks = [views[name]["block"] for name in ("register", "ship", "receive", "forward", "receive_workshop", "install")]
    assert blocks == sorted(blocks) and len(set(blocks)) == 6
    for serial in SERIALS:
        status, custodian, recipient, *_ = flow.ledger.status(part_id(GTIN_A, serial))
        expected = PartStatus.INSTALLED if serial == SERIALS[0] else PartStatus.IN_STOCK
        assert (PartStatus(status), custodian, recipient) == (expected, orgs["workshop"].id, 0)
    assert flow.part["status"] == "installed" and flow.part["custodian"]["id"] == orgs["workshop"].id and flow.part["vin_hash"]


def test_a_race_only_the_contract_sees_lands_once_and_the_other_is_rejected_with_the_contracts_error(flow: Flow):
    """Hardhat's node reports a revert in its own error format (docs/nodes.md); the service decodes it the same: the
    register's simulation fails, the second batch root reverts once mined."""
    for views, name, args in (
        (flow.race, "PartLedgerPartAlreadyRegistered", [hexid(part_id(GTIN_A, "HH-TWICE"))]),
        (flow.batch_race, "EvidenceLedgerBatchAlreadyAnchored", [BATCH_ROOT]),
    ):
        assert sorted(view["status"] for view in views) == ["confirmed", "rejected"], views
        [rejected] = [view for view in views if view["status"] == "rejected"]
        [error] = rejected["errors"]
        assert (error["error"], error["args"]) == (name, args)
    registered = flow.ledger.parts.events.PartsRegistered.get_logs(from_block=flow.ledger.manifest.deployment_block)
    assert sum(b"HH-TWICE".ljust(32, b"\0") in log["args"]["serials"] for log in registered) == 1
    anchored = flow.ledger.evidence.events.BatchAnchored.get_logs(from_block=flow.ledger.manifest.deployment_block)
    assert [hexid(log["args"]["root"]) for log in anchored].count(BATCH_ROOT) == 1


def test_a_burst_of_one_key_lands_exactly_once_though_the_node_takes_no_nonce_gap(flow: Flow):
    """Hardhat's automine refuses a transaction whose nonce is ahead of the key's next ("Nonce too high"), and runs
    a JSON-RPC batch's calls concurrently: the submitter sends the refused ones again, the same bytes, in order."""
    assert [view["status"] for view in flow.burst] == ["confirmed"] * len(BURST_ROOTS)
    assert len({view["transactions"][0]["tx_hash"] for view in flow.burst}) == len(BURST_ROOTS)
    anchored = flow.ledger.evidence.events.BatchAnchored.get_logs(from_block=flow.ledger.manifest.deployment_block)
    assert sorted(hexid(log["args"]["root"]) for log in anchored if hexid(log["args"]["root"]) in BURST_ROOTS) == sorted(BURST_ROOTS)
    assert flow.ledger.w3.eth.get_transaction_count(flow.stack.site_keys["distributor"]) == len(BURST_ROOTS) + 1  # and the document


def test_a_document_proposed_and_countersigned_is_anchored(flow: Flow):
    orgs = flow.ledger.orgs
    assert flow.views["document"]["status"] == "confirmed"
    [document] = flow.documents
    assert document["doc_type"] == "invoice" and document["issuer"]["id"] == orgs["maker"].id
    assert document["counterparty_signer"] == flow.stack.site_keys["distributor"]


# --- proofs from Hardhat's chain -------------------------------------------------------------------------------------


def test_the_document_bundle_is_of_hardhats_block_and_verifies_against_the_node(flow: Flow):
    bundle = flow.document_bundle
    block = flow.ledger.w3.eth.get_block(bundle["block"]["number"])
    assert bundle["block"]["hash"] == hexid(block["hash"]) and len(bundle["block"]["fields"]) == 21  # prague's header
    code, verdict = flow.verdicts["document"]
    assert code == 0 and verdict["valid"], verdict
    names = [check["name"] for check in verdict["checks"]]
    assert names == ["format", "header", "anchor", "transaction", "receipt", "event", "signatures", "registry", "signers", "document"]
    assert f"the node at {flow.recorder.url}" in next(check["detail"] for check in verdict["checks"] if check["name"] == "anchor")


def test_the_install_event_bundle_from_the_service_verifies_against_the_node(flow: Flow):
    assert flow.event_bundle["event"]["name"] == "PartsInstalled" and flow.event_bundle["subject"] == "event"
    code, verdict = flow.verdicts["event"]
    assert code == 0 and verdict["valid"], verdict


def test_a_bundle_of_a_block_the_node_never_made_is_refused_by_the_anchor_alone(flow: Flow):
    code, verdict = flow.verdicts["tampered"]
    assert code == 1 and verdict["failed"] == ["anchor"], verdict


def test_the_production_path_called_only_standard_methods(flow: Flow):
    methods = set(flow.recorder.methods)
    assert methods and all(method.startswith(STANDARD_NAMESPACES) for method in methods), sorted(methods)
    # what the flow needs of a node, each seen at least once
    for needed in ("eth_sendRawTransaction", "eth_estimateGas", "eth_getTransactionReceipt", "eth_getLogs", "eth_getBlockByNumber", "eth_getProof", "eth_call"):
        assert needed in methods, (needed, sorted(methods))
    assert "eth_sendTransaction" not in methods  # the service signs itself: no unlocked account


def test_a_node_without_access_lists_sizes_gas_from_its_estimate(flow: Flow):
    """Hardhat's node has no eth_createAccessList (docs/nodes.md): the gas sizer asks it once, then estimates."""
    ledger = flow.ledger
    maker = ledger.orgs["maker"]
    call = ledger.parts.functions.registerParts(int(GTIN_A), ascii32("SIZER"), [ascii32("SIZER-1")])
    tx = {"from": maker.keys[0], "to": call.address, "data": call._encode_transaction_data()}
    sizer = GasSizer(ledger.w3)
    factor, extra = ESTIMATE_HEADROOM
    assert sizer.limits([tx])[0]["result"] == int(int(ledger.w3.eth.estimate_gas({**tx, "value": 0}, "pending")) * factor) + extra
    assert sizer.access_lists is False
