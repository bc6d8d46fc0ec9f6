"""Auditor proofs of relayed operations: a site signed a ForwardRequest, a relayer with no role sent it through the
ERC-2771 forwarder in a batch with another site's. The bundle proves the event, the forwarder's log that ended the
request which emitted it, and who signed that request; the registry facts are the signer's, not the relayer's.
Swapping the signer, pointing at the other request's log, or claiming a relayed request for a direct transaction
(or the reverse) fails the event check; a manifest pins the forwarder."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_utils import event_abi_to_log_topic

from partledger.manifest import Manifest, save_manifest
from partledger.proofs import verifier as v
from partledger.proofs.builder import ProofBuilder, dump_bundle
from tests.chainkit import Ledger, revert_to, snapshot
from tests.relaykit import Relay

pytestmark = pytest.mark.chain


class Relayed:
    """One batch relayed for two sites: the maker ships a part, the warehouse receives another."""

    def __init__(self, ledger: Ledger) -> None:
        orgs, fn = ledger.orgs, ledger.parts.functions
        maker, warehouse = orgs["maker"], orgs["warehouse"]
        first, second = ledger.register(maker, ["RLY-1", "RLY-2"], lot="LOT-RELAYED")
        self.direct = ledger.act(maker.key, fn.shipParts([first], warehouse.id, b"\x01" * 32))  # sent by the maker's key itself
        relay = Relay(ledger)
        signed = [relay.sign(maker.key, fn.shipParts([second], warehouse.id, b"\x02" * 32)), relay.sign(warehouse.key, fn.receiveParts([first], b"\x03" * 32))]
        self.receipt = relay.execute_batch(signed)
        assert relay.outcomes(self.receipt) == [(maker.key, signed[0].request.nonce, True), (warehouse.key, signed[1].request.nonce, True)]
        self.relayer, self.maker, self.warehouse = relay.relayer.address, maker, warehouse
        self.forwarder = ledger.manifest.forwarder
        self.builder = ProofBuilder(rpc_url=ledger.w3.provider.endpoint_uri, manifest=ledger.manifest)
        logs = self.receipt["logs"]
        topic = {name: event_abi_to_log_topic(ledger.parts.events[name]().abi) for name in ("PartsShipped", "PartsReceived")}
        shipped, received = (next(log["logIndex"] for log in logs if log["address"] == ledger.parts.address and bytes(log["topics"][0]) == topic[name]) for name in topic)  # fmt: skip
        tx = bytes(self.receipt["transactionHash"])
        self.shipped = self.builder.event(tx, shipped)
        self.received = self.builder.event(tx, received)
        self.direct_bundle = self.builder.event(bytes(self.direct["transactionHash"]), self.direct["logs"][0]["logIndex"])


@pytest.fixture(scope="module")
def relayed(deployed: Ledger) -> Iterator[Relayed]:
    snapshot_id = snapshot(deployed.w3)
    yield Relayed(deployed)
    revert_to(deployed.w3, snapshot_id)


def anchors_for(bundle: dict[str, Any], **more: Any) -> v.TrustAnchors:
    return v.TrustAnchors(blocks={bundle["block"]["number"]: bytes.fromhex(bundle["block"]["hash"][2:])}, **more)


def test_each_relayed_event_proves_its_own_signer_and_not_the_relayer(relayed: Relayed):
    for bundle, signer, name in ((relayed.shipped, relayed.maker.key, "PartsShipped"), (relayed.received, relayed.warehouse.key, "PartsReceived")):
        assert bundle["event"]["name"] == name and bundle["transaction"]["from"] == relayed.relayer and bundle["transaction"]["to"] == relayed.forwarder
        assert bundle["forwarded"]["signer"] == signer and bundle["forwarded"]["forwarder"] == relayed.forwarder
        assert [key["key"] for key in bundle["registry"]["keys"]] == [signer]
        verdict = v.verify_bundle(json.loads(dump_bundle(bundle)), anchors=anchors_for(bundle))
        assert verdict.ok, verdict.checks
        assert any(fact == "relayed" and signer in text and relayed.relayer in text for fact, text in verdict.facts), verdict.facts
    assert relayed.shipped["forwarded"]["logIndexInReceipt"] < relayed.received["forwarded"]["logIndexInReceipt"]


def test_a_direct_transaction_still_proves_its_sender(relayed: Relayed):
    assert "forwarded" not in relayed.direct_bundle and relayed.direct_bundle["transaction"]["from"] == relayed.maker.key
    assert v.verify_bundle(relayed.direct_bundle, anchors=anchors_for(relayed.direct_bundle)).ok


def changed(bundle: dict[str, Any], **forwarded: Any) -> dict[str, Any]:
    copied = copy.deepcopy(bundle)
    copied["forwarded"] |= forwarded
    return copied


def test_a_forged_account_of_the_relayed_request_fails_the_event_check(relayed: Relayed):
    shipped, received = relayed.shipped, relayed.received
    no_forward = copy.deepcopy(received)
    del no_forward["forwarded"]
    claimed_on_direct = copy.deepcopy(relayed.direct_bundle) | {"forwarded": received["forwarded"]}
    forgeries = {
        "the other site as signer": changed(received, signer=relayed.maker.key),
        "the other request's log": changed(shipped, logIndexInReceipt=received["forwarded"]["logIndexInReceipt"]),
        "a log before the event": changed(received, logIndexInReceipt=shipped["forwarded"]["logIndexInReceipt"]),
        "another nonce": changed(received, nonce=received["forwarded"]["nonce"] + 1),
        "another forwarder": changed(received, forwarder=relayed.relayer),
        "a log that is not the forwarder's": changed(received, logIndexInReceipt=received["forwarded"]["logIndexInReceipt"] - 1),
        "no forwarded request": no_forward,
        "a relayed request claimed for a direct transaction": claimed_on_direct,
    }
    for what, bundle in forgeries.items():
        verdict = v.verify_bundle(bundle, anchors=anchors_for(bundle))
        assert not verdict.ok and verdict.failed[:1] == ["event"], (what, verdict.checks)


def test_the_deployment_manifest_pins_the_forwarder(relayed: Relayed, deployed: Ledger, tmp_path: Path):
    path = tmp_path / "manifest.json"
    save_manifest(Manifest(**deployed.manifest.__dict__), path)
    data = json.loads(path.read_text())
    assert v.verify_bundle(relayed.received, anchors=anchors_for(relayed.received, contracts=v.manifest_contracts(data))).ok
    data["contracts"]["PartLedgerForwarder"]["address"] = data["contracts"]["EvidenceLedger"]["address"]  # a look-alike deployment
    verdict = v.verify_bundle(relayed.received, anchors=anchors_for(relayed.received, contracts=v.manifest_contracts(data)))
    assert not verdict.ok and verdict.failed == ["anchor"], verdict.checks
