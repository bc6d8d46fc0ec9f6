"""Containment and remanufacturing in PartLedger on a live Anvil: assemblies, logistic units (SSCC), moves of
containers, and every refusal with its exact custom error."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from partledger.errors import ValidationError
from partledger.ids import ascii32, logistic_unit_id, normalize_sscc, part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, reverts
from tests.relaykit import on_both_paths  # noqa: F401 - every test runs direct and relayed through the forwarder

NO_DOC = bytes(32)
VIN_HASH = keccak(text="salted vin")
SSCC_1 = "003456789012345670"  # a valid SSCC: extension 0, company prefix and serial reference, check digit 0
SSCC_2 = "003456789012345687"
S = PartStatus


def view(ledger, pid):
    status, custodian, recipient, lot, vin_tag, recalled = ledger.status(pid)
    return S(status), custodian, recipient, vin_tag


def container_of(ledger, pid):
    return bytes(ledger.parts.functions.containerOf(pid).call())


def pack(ledger, org, sscc, ids, *, key=None):
    return ledger.act(key or org.key, ledger.parts.functions.packParts(int(sscc), ids))


def assemble(ledger, org, parent, children):
    return ledger.act(org.key, ledger.parts.functions.assembleParts(parent, children))


def module_with_pads(ledger, maker, tag="M"):
    """A brake module (GTIN_B) holding two pads (GTIN_A) at `maker`: (module, [pad, pad])."""
    pads = ledger.register(maker, [f"{tag}-PAD-1", f"{tag}-PAD-2"], lot="PADS-1")
    (module,) = ledger.register(maker, [f"{tag}-MOD"], gtin=GTIN_B, lot="MODS-1")
    assemble(ledger, maker, module, pads)
    return module, pads


def test_sscc_normalises_and_unit_id_matches_the_contract(ledger):
    assert normalize_sscc("3456789012345670") == SSCC_1
    with pytest.raises(ValidationError):
        normalize_sscc("003456789012345671")
    expected = keccak(abi_encode(["uint64", "bytes32"], [0, int(SSCC_1).to_bytes(32, "big")]))
    assert logistic_unit_id(SSCC_1) == expected == bytes(ledger.parts.functions.logisticUnitId(int(SSCC_1)).call())


def test_pack_creates_the_unit_and_contained_parts_take_its_state(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["P-1", "P-2"])
    receipt = pack(ledger, maker, SSCC_1, ids)
    unit = logistic_unit_id(SSCC_1)
    (created,) = ledger.events(receipt, ledger.parts, "LogisticUnitCreated")
    assert (created["args"]["sscc"], bytes(created["args"]["unitId"]), created["args"]["orgId"]) == (int(SSCC_1), unit, maker.id)
    (packed,) = ledger.events(receipt, ledger.parts, "PartsPacked")
    assert (bytes(packed["args"]["unitId"]), packed["args"]["siteKey"], [bytes(p) for p in packed["args"]["partIds"]]) == (unit, maker.key, ids)
    assert view(ledger, unit) == (S.IN_STOCK, maker.id, 0, bytes(15))
    for pid in ids:
        assert view(ledger, pid) == (S.IN_STOCK, maker.id, 0, bytes(15))
        assert container_of(ledger, pid) == unit
    assert ledger.parts.functions.contentsCount(unit).call() == 2
    (more,) = ledger.register(maker, ["P-3"])
    receipt = pack(ledger, maker, SSCC_1, [more])
    assert ledger.events(receipt, ledger.parts, "LogisticUnitCreated") == []
    assert ledger.parts.functions.contentsCount(unit).call() == 3


def test_shipping_a_unit_moves_everything_inside_at_every_depth(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    module, pads = module_with_pads(ledger, maker)
    (loose,) = ledger.register(maker, ["LOOSE-1"])
    pack(ledger, maker, SSCC_2, [loose])
    pack(ledger, maker, SSCC_1, [module, logistic_unit_id(SSCC_2)])  # a module and a carton on a pallet
    pallet = logistic_unit_id(SSCC_1)
    inside = [module, *pads, loose, logistic_unit_id(SSCC_2)]
    ledger.act(maker.key, ledger.parts.functions.shipParts([pallet], warehouse.id, NO_DOC))
    for pid in [pallet, *inside]:
        assert view(ledger, pid) == (S.IN_TRANSIT, maker.id, warehouse.id, bytes(15))
    ledger.act(warehouse.key, ledger.parts.functions.receiveParts([pallet], NO_DOC))
    for pid in [pallet, *inside]:
        assert view(ledger, pid) == (S.IN_STOCK, warehouse.id, 0, bytes(15))
    ledger.act(warehouse.key, ledger.parts.functions.shipParts([pallet], maker.id, NO_DOC))
    ledger.act(warehouse.key, ledger.parts.functions.cancelShipments([pallet], NO_DOC))
    assert {view(ledger, pid) for pid in inside} == {(S.IN_STOCK, warehouse.id, 0, bytes(15))}
    # The warehouse, now custodian, unpacks and assembles the tree differently; the old packer cannot.
    with reverts("PartLedgerNotCustodian", pallet, warehouse.id, maker.id):
        ledger.act(maker.key, ledger.parts.functions.unpackParts(int(SSCC_1), [module]))
    ledger.act(warehouse.key, ledger.parts.functions.unpackParts(int(SSCC_1), [module]))
    assert container_of(ledger, module) == bytes(32) and container_of(ledger, pads[0]) == module
    assert view(ledger, module) == (S.IN_STOCK, warehouse.id, 0, bytes(15))


def test_installing_an_assembly_installs_its_children_on_the_same_vin(ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    module, pads = module_with_pads(ledger, maker)
    ledger.act(maker.key, ledger.parts.functions.shipParts([module], workshop.id, NO_DOC))
    ledger.act(workshop.key, ledger.parts.functions.receiveParts([module], NO_DOC))
    ledger.act(workshop.key, ledger.parts.functions.installParts([module], [VIN_HASH], NO_DOC))
    for pid in [module, *pads]:
        assert view(ledger, pid) == (S.INSTALLED, workshop.id, 0, VIN_HASH[:15])
    with reverts("PartLedgerPartContained", pads[0], module):
        ledger.act(workshop.key, ledger.parts.functions.removeParts([pads[0]], NO_DOC))
    ledger.act(workshop.key, ledger.parts.functions.removeParts([module], NO_DOC))
    assert {view(ledger, pid) for pid in pads} == {(S.IN_STOCK, workshop.id, 0, bytes(15))}
    receipt = ledger.act(workshop.key, ledger.parts.functions.disassembleParts(module, [pads[1]]))
    (taken,) = ledger.events(receipt, ledger.parts, "PartsDisassembled")
    assert bytes(taken["args"]["parentId"]) == module and [bytes(p) for p in taken["args"]["childIds"]] == [pads[1]]
    assert container_of(ledger, pads[1]) == bytes(32) and ledger.parts.functions.contentsCount(module).call() == 1


@pytest.mark.parametrize("operation", ["ship", "receive", "cancel", "sell", "install", "quarantine", "scrap", "pack"])
def test_a_contained_part_never_moves_alone(ledger, operation):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    module, pads = module_with_pads(ledger, maker)
    p = ledger.parts.functions
    holder = maker
    if operation in ("sell", "install"):
        ledger.act(maker.key, p.shipParts([module], distributor.id if operation == "sell" else ledger.orgs["workshop"].id, NO_DOC))
        holder = distributor if operation == "sell" else ledger.orgs["workshop"]
        ledger.act(holder.key, p.receiveParts([module], NO_DOC))
    if operation in ("receive", "cancel"):
        ledger.act(maker.key, p.shipParts([module], distributor.id, NO_DOC))
        holder = distributor if operation == "receive" else maker
    call = {
        "ship": lambda: p.shipParts([pads[0]], distributor.id, NO_DOC),
        "receive": lambda: p.receiveParts([pads[0]], NO_DOC),
        "cancel": lambda: p.cancelShipments([pads[0]], NO_DOC),
        "sell": lambda: p.sellParts([pads[0]], NO_DOC),
        "install": lambda: p.installParts([pads[0]], [VIN_HASH], NO_DOC),
        "quarantine": lambda: p.quarantineParts([pads[0]], NO_DOC),
        "scrap": lambda: p.scrapParts([pads[0]], NO_DOC),
        "pack": lambda: p.packParts(int(SSCC_1), [pads[0]]),
    }[operation]
    with reverts("PartLedgerPartContained", pads[0], module):
        ledger.act(holder.key, call())


def test_packing_someone_elses_part_or_into_someone_elses_unit_is_refused(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    (pid,) = ledger.register(maker, ["OTHER-1"])
    with reverts("PartLedgerNotCustodian", pid, maker.id, warehouse.id):
        pack(ledger, warehouse, SSCC_1, [pid])
    (mine,) = ledger.register(maker, ["OTHER-2"])
    pack(ledger, maker, SSCC_1, [mine])
    ledger.act(maker.key, ledger.parts.functions.shipParts([pid], warehouse.id, NO_DOC))
    ledger.act(warehouse.key, ledger.parts.functions.receiveParts([pid], NO_DOC))
    with reverts("PartLedgerNotCustodian", logistic_unit_id(SSCC_1), maker.id, warehouse.id):
        pack(ledger, warehouse, SSCC_1, [pid])


def test_packing_a_part_in_transit_and_unpacking_a_unit_in_transit_are_refused(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    moving, packed = ledger.register(maker, ["T-1", "T-2"])
    ledger.act(maker.key, ledger.parts.functions.shipParts([moving], warehouse.id, NO_DOC))
    with reverts("PartLedgerWrongStatus", moving, S.IN_TRANSIT):
        pack(ledger, maker, SSCC_1, [moving])
    pack(ledger, maker, SSCC_1, [packed])
    unit = logistic_unit_id(SSCC_1)
    ledger.act(maker.key, ledger.parts.functions.shipParts([unit], warehouse.id, NO_DOC))
    with reverts("PartLedgerWrongStatus", unit, S.IN_TRANSIT):
        ledger.act(maker.key, ledger.parts.functions.unpackParts(int(SSCC_1), [packed]))
    with reverts("PartLedgerWrongStatus", unit, S.IN_TRANSIT):
        ledger.act(warehouse.key, ledger.parts.functions.unpackParts(int(SSCC_1), [packed]))


def test_cycles_are_refused(ledger):
    maker = ledger.orgs["maker"]
    (pid,) = ledger.register(maker, ["CY-1"])
    pack(ledger, maker, SSCC_2, [pid])
    pallet, carton = logistic_unit_id(SSCC_1), logistic_unit_id(SSCC_2)
    with reverts("PartLedgerContainmentCycle", carton, carton):
        pack(ledger, maker, SSCC_2, [carton])
    pack(ledger, maker, SSCC_1, [carton])
    with reverts("PartLedgerContainmentCycle", pallet, carton):
        pack(ledger, maker, SSCC_2, [pallet])  # the pallet into the carton it holds
    module, pads = module_with_pads(ledger, maker, "CY")
    with reverts("PartLedgerContainmentCycle", module, pads[0]):
        assemble(ledger, maker, pads[0], [module])


def test_a_part_sits_in_one_container_and_unpack_names_its_own(ledger):
    maker = ledger.orgs["maker"]
    module, pads = module_with_pads(ledger, maker, "ONE")
    with reverts("PartLedgerPartContained", pads[0], module):
        pack(ledger, maker, SSCC_1, [pads[0]])
    with reverts("PartLedgerPartContained", pads[1], module):
        assemble(ledger, maker, module, [pads[1]])
    (loose,) = ledger.register(maker, ["ONE-LOOSE"])
    pack(ledger, maker, SSCC_1, [loose])
    with reverts("PartLedgerNotInContainer", pads[0], logistic_unit_id(SSCC_1)):
        ledger.act(maker.key, ledger.parts.functions.unpackParts(int(SSCC_1), [pads[0]]))
    with reverts("PartLedgerNotInContainer", loose, module):
        ledger.act(maker.key, ledger.parts.functions.disassembleParts(module, [loose]))
    (other,) = ledger.register(maker, ["ONE-LOOSE-2"])
    with reverts("PartLedgerPartContained", pads[0], module):
        ledger.act(maker.key, ledger.parts.functions.packParts(int(SSCC_2), [other, pads[0]]))  # all or nothing
    assert container_of(ledger, other) == bytes(32) and container_of(ledger, loose) == logistic_unit_id(SSCC_1)


def test_logistic_units_only_move_and_hold(ledger):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    (pid,) = ledger.register(maker, ["LU-1"])
    pack(ledger, maker, SSCC_1, [pid])
    unit = logistic_unit_id(SSCC_1)
    p = ledger.parts.functions
    for call in (p.quarantineParts([unit], NO_DOC), p.scrapParts([unit], NO_DOC), p.assembleParts(unit, [pid])):
        with reverts("PartLedgerLogisticUnit", unit):
            ledger.act(maker.key, call)
    ledger.act(maker.key, p.shipParts([unit], distributor.id, NO_DOC))
    ledger.act(distributor.key, p.receiveParts([unit], NO_DOC))
    with reverts("PartLedgerLogisticUnit", unit):
        ledger.act(distributor.key, p.sellParts([unit], NO_DOC))
    for sscc in (0, int(SSCC_1) + 1, 10**18):
        with reverts("PartLedgerInvalidSscc", sscc):
            ledger.act(maker.key, p.packParts(sscc, [pid]))


def test_containment_needs_its_roles(ledger):
    maker, warehouse, auditor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["auditor"]
    module, pads = module_with_pads(ledger, maker, "ROLE")
    with reverts("ConsortiumRegistryMissingRole"):
        ledger.act(warehouse.key, ledger.parts.functions.disassembleParts(module, pads))
    with reverts("ConsortiumRegistryMissingRole"):
        ledger.act(auditor.key, ledger.parts.functions.packParts(int(SSCC_1), [module]))


def test_remanufacture_consumes_the_original_and_links_the_new_part(ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    (old,) = ledger.register(maker, ["OLD-1"])
    ledger.act(maker.key, ledger.parts.functions.shipParts([old], workshop.id, NO_DOC))
    ledger.act(workshop.key, ledger.parts.functions.receiveParts([old], NO_DOC))
    p = ledger.parts.functions
    with reverts("ConsortiumRegistryMissingRole"):
        ledger.act(workshop.key, p.remanufacturePart(old, int(GTIN_A), ascii32("REMAN-1"), ascii32("NEW-1")))
    with reverts("PartLedgerNotCustodian", old, workshop.id, maker.id):
        ledger.act(maker.key, p.remanufacturePart(old, int(GTIN_A), ascii32("REMAN-1"), ascii32("NEW-1")))
    ledger.act(workshop.key, p.shipParts([old], maker.id, NO_DOC))  # returned to its manufacturer
    ledger.act(maker.key, p.receiveParts([old], NO_DOC))
    with reverts("PartLedgerPartAlreadyRegistered", old):
        ledger.act(maker.key, p.remanufacturePart(old, int(GTIN_A), ascii32("REMAN-1"), ascii32("OLD-1")))
    receipt = ledger.act(maker.key, p.remanufacturePart(old, int(GTIN_A), ascii32("REMAN-1"), ascii32("NEW-1")))
    new = part_id(GTIN_A, "NEW-1")
    (event,) = ledger.events(receipt, ledger.parts, "PartRemanufactured")
    assert (bytes(event["args"]["originalId"]), bytes(event["args"]["partId"]), event["args"]["orgId"]) == (old, new, maker.id)
    (registered,) = ledger.events(receipt, ledger.parts, "PartsRegistered")
    assert list(registered["args"]["serials"]) == [ascii32("NEW-1")]
    assert registered["args"]["lot"] == ledger.lot_number(maker, "REMAN-1")
    assert view(ledger, old)[0] is S.REMANUFACTURED and view(ledger, new) == (S.IN_STOCK, maker.id, 0, bytes(15))
    assert bytes(p.remanufacturedFrom(new).call()) == old and bytes(p.remanufacturedFrom(old).call()) == bytes(32)
    for call in (p.shipParts([old], workshop.id, NO_DOC), p.remanufacturePart(old, int(GTIN_A), ascii32("REMAN-1"), ascii32("NEW-2"))):
        with reverts("PartLedgerWrongStatus", old, S.REMANUFACTURED):
            ledger.act(maker.key, call)


def test_remanufacture_refuses_an_assembly_that_still_holds_parts(ledger):
    maker = ledger.orgs["maker"]
    module, pads = module_with_pads(ledger, maker, "FULL")
    with reverts("PartLedgerContainerNotEmpty", module, 2):
        ledger.act(maker.key, ledger.parts.functions.remanufacturePart(module, int(GTIN_B), ascii32("R"), ascii32("FULL-NEW")))
    ledger.act(maker.key, ledger.parts.functions.disassembleParts(module, pads))
    ledger.act(maker.key, ledger.parts.functions.remanufacturePart(module, int(GTIN_B), ascii32("R"), ascii32("FULL-NEW")))


def test_a_recalled_child_shows_recalled_inside_its_assembly(ledger):
    maker = ledger.orgs["maker"]
    module, pads = module_with_pads(ledger, maker, "RC")
    lot = ledger.lot_number(maker, "PADS-1")
    ledger.act(maker.key, ledger.parts.functions.recallLot(lot, keccak(text="notice")))
    assert ledger.status(pads[0])[5] is True and ledger.status(module)[5] is False
