"""Gas per operation, measured on a fresh Anvil: `make gas`. The last line printed is one JSON object.

Bulk figures are a whole transaction's gasUsed divided by the parts it carried (BULK_PARTS per transaction), so
the 21,000 base cost and the calldata are included. Floors for comparison: a cold SSTORE to a new slot costs
22,100; a log 375 + 375 per topic + 8 per byte.

Relayed figures are an executeBatch transaction's gasUsed divided by its RELAY_BATCH requests, each signed by a
different site key of its own organisation (RELAY_BATCH organisations), each a one-part transition: the forwarder's
signature check (ecrecover 3,000), the signer's nonce (a slot rewrite, 5,000 cold: a site's very first relayed
request writes a new slot, 22,100, 17,100 more), the call, its event and ExecutedForwardRequest, and the calldata
of the request (its 65-byte signature included).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from web3.logs import DISCARD

from benchmarks import stop_cleanly_on_sigterm
from partledger.anvil import AnvilConfig, AnvilNode, free_port
from partledger.artifacts import FORWARDER, load_artifact
from partledger.chain import connect
from partledger.eip712 import Attestation, ForwardRequest, attestation_typed_data, forward_request_typed_data, read_domain
from partledger.ids import ascii32, gtin_check_digit, normalize_sscc, part_id_unchecked
from partledger.model import DocType, Role
from tests.chainkit import GTIN_A, Ledger, build_ledger

BULK_PARTS = 200
RELAY_BATCH = 100
RELAYED_CALL_GAS = 300_000  # what each relayed request offers its call (a limit: only what is used is paid)


def measure_gas(ledger: Ledger) -> dict[str, int]:
    """Runs each operation once on `ledger` and returns gas per operation (per part for bulk ones)."""
    parts = ledger.parts.functions
    maker, warehouse, workshop = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["workshop"]
    serials = [ascii32(f"GAS{index:06d}") for index in range(BULK_PARTS + 1)]
    ids = [part_id_unchecked(int(GTIN_A), serial) for serial in serials]
    bulk, single = ids[:BULK_PARTS], ids[BULK_PARTS:]
    no_doc = bytes(32)

    def gas(sender: str, call: Any) -> int:
        return ledger.act(sender, call)["gasUsed"]

    # The lot is opened by a first registration so that the bulk figure is the steady state of a shift.
    gas(maker.key, parts.registerParts(int(GTIN_A), ascii32("LOT-GAS"), serials[BULK_PARTS:]))
    register = gas(maker.key, parts.registerParts(int(GTIN_A), ascii32("LOT-GAS"), serials[:BULK_PARTS]))
    ship = gas(maker.key, parts.shipParts(bulk, warehouse.id, no_doc))
    receive = gas(warehouse.key, parts.receiveParts(bulk, no_doc))
    gas(warehouse.key, parts.shipParts(bulk, workshop.id, no_doc))
    gas(workshop.key, parts.receiveParts(bulk, no_doc))
    vins = [secrets.token_bytes(32) for _ in bulk]
    install = gas(workshop.key, parts.installParts(bulk, vins, no_doc))
    single_ship = gas(maker.key, parts.shipParts(single, warehouse.id, no_doc))
    containment = _containment_gas(ledger, gas)
    return {
        "register_per_part": register // BULK_PARTS,
        "ship_per_part": ship // BULK_PARTS,
        "receive_per_part": receive // BULK_PARTS,
        "install_per_part": install // BULK_PARTS,
        "single_transition_tx": single_ship,
        "evidence_anchor": _anchor_document_gas(ledger),
        "batch_root_anchor": gas(maker.key, ledger.evidence.functions.anchorBatch(secrets.token_bytes(32), 1_000_000, ascii32("scan"))),
        **containment,
        **_relayed_gas(ledger),
    }


def _containment_gas(ledger: Ledger, gas: Any) -> dict[str, int]:
    """Per contained part: packing BULK_PARTS parts into a new pallet (its creation included), shipping and receiving
    the pallet, unpacking it, and fitting BULK_PARTS children into an assembly and taking them out again."""
    parts = ledger.parts.functions
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    serials = [ascii32(f"GASC{index:06d}") for index in range(BULK_PARTS + 1)]
    gas(maker.key, parts.registerParts(int(GTIN_A), ascii32("LOT-GAS"), serials))
    ids = [part_id_unchecked(int(GTIN_A), serial) for serial in serials]
    parent, children = ids[0], ids[1:]
    sscc = int(normalize_sscc("00345678901234567" + str(gtin_check_digit("00345678901234567"))))
    pallet = bytes(parts.logisticUnitId(sscc).call())
    no_doc = bytes(32)
    assemble = gas(maker.key, parts.assembleParts(parent, children))
    disassemble = gas(maker.key, parts.disassembleParts(parent, children))
    pack = gas(maker.key, parts.packParts(sscc, children))
    ship = gas(maker.key, parts.shipParts([pallet], warehouse.id, no_doc))
    receive = gas(warehouse.key, parts.receiveParts([pallet], no_doc))
    unpack = gas(warehouse.key, parts.unpackParts(sscc, children))
    return {
        "pack_per_part": pack // BULK_PARTS,
        "unpack_per_part": unpack // BULK_PARTS,
        "assemble_per_part": assemble // BULK_PARTS,
        "disassemble_per_part": disassemble // BULK_PARTS,
        "ship_container_per_part": ship // BULK_PARTS,
        "receive_container_per_part": receive // BULK_PARTS,
    }


def _relayed_gas(ledger: Ledger) -> dict[str, int]:
    """Per request of an executeBatch of RELAY_BATCH requests from as many sites, each of its own manufacturer, each
    shipping one part to the warehouse. Each site has relayed a request before (the registration of that part), so
    that its nonce slot exists: the steady state."""
    parts = ledger.parts.functions
    warehouse = ledger.orgs["warehouse"]
    forwarder = ledger.w3.eth.contract(address=ledger.manifest.forwarder, abi=load_artifact(FORWARDER).abi)
    domain = read_domain(forwarder)
    sites = [Account.create() for _ in range(RELAY_BATCH)]
    for index, site in enumerate(sites):
        receipt = ledger.act(ledger.operator, ledger.registry.functions.registerOrganisation(int(Role.MANUFACTURER), f"relay-gas-{index}"))
        org_id = ledger.events(receipt, ledger.registry, "OrganisationRegistered")[0]["args"]["orgId"]
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(org_id, site.address, ascii32("relay-gas")))
    serials = [ascii32(f"RLYGAS{index:04d}") for index in range(RELAY_BATCH)]
    ids = [part_id_unchecked(int(GTIN_A), serial) for serial in serials]

    def relay_batch(calls: list[Any]) -> int:
        """Each site signs its call; the operator's account, which has no role in the ledgers, relays them all."""
        batch = []
        for site, call in zip(sites, calls):
            request = ForwardRequest(
                sender=site.address, to=call.address, value=0, gas=RELAYED_CALL_GAS, nonce=forwarder.functions.nonces(site.address).call(),
                deadline=int(time.time()) + 3600, data=bytes.fromhex(call._encode_transaction_data()[2:]),
            )  # fmt: skip
            signature = site.sign_message(encode_typed_data(full_message=forward_request_typed_data(domain, request))).signature
            batch.append(request.as_call_data(bytes(signature)))
        receipt = ledger.act(ledger.operator, forwarder.functions.executeBatch(batch, ledger.operator))
        executed = forwarder.events.ExecutedForwardRequest().process_receipt(receipt, errors=DISCARD)
        outcomes = [event["args"]["success"] for event in executed]
        assert outcomes == [True] * RELAY_BATCH, f"relayed requests failed: {outcomes}"
        return receipt["gasUsed"] // RELAY_BATCH

    relay_batch([parts.registerParts(int(GTIN_A), ascii32("LOT-RELAY"), [serial]) for serial in serials])
    return {"relayed_transition_per_request": relay_batch([parts.shipParts([pid], warehouse.id, bytes(32)) for pid in ids])}


def _anchor_document_gas(ledger: Ledger) -> int:
    """Anchors one invoice signed by fresh site keys of the maker and the warehouse."""
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    signers = {org.id: Account.create() for org in (maker, warehouse)}
    for org_id, account in signers.items():
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(org_id, account.address, ascii32("gas-signer")))
    attestation = Attestation(
        docHash=secrets.token_bytes(32),
        docType=int(DocType.INVOICE),
        issuer=maker.id,
        counterparty=warehouse.id,
        previous=bytes(32),
        partsRoot=secrets.token_bytes(32),
        nonce=secrets.token_bytes(32),
        deadline=int(time.time()) + 3600,
    )
    typed = attestation_typed_data(read_domain(ledger.evidence), attestation)
    signatures = [signers[org.id].sign_message(encode_typed_data(full_message=typed)).signature for org in (maker, warehouse)]
    call = ledger.evidence.functions.anchorDocument(attestation.as_tuple(), *signatures)
    return ledger.act(maker.key, call)["gasUsed"]


def main() -> int:
    stop_cleanly_on_sigterm()
    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=40))
    try:
        figures = measure_gas(build_ledger(connect(node.url)))
    finally:
        node.stop()
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {value:>9,}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
