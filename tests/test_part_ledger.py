"""PartLedger on a live Anvil: every allowed transition, and every forbidden one with its exact custom error."""

from __future__ import annotations

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from partledger.errors import ValidationError
from partledger.ids import ascii32, part_id_unchecked
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, reverts
from tests.relaykit import on_both_paths  # noqa: F401 - every test runs direct and relayed through the forwarder

NO_DOC = bytes(32)
DOC = keccak(text="delivery-note-1")
VIN_HASH = keccak(text="salted vin")


def view(ledger, pid):
    status, custodian, recipient, lot, vin_tag, recalled = ledger.status(pid)
    return PartStatus(status), custodian, recipient, lot, vin_tag, recalled


def deliver(ledger, ids, source, target):
    """Ships `ids` from org `source` to org `target` and receives them there."""
    p = ledger.parts.functions
    ledger.act(source.key, p.shipParts(ids, target.id, NO_DOC))
    ledger.act(target.key, p.receiveParts(ids, NO_DOC))


# --- registration ----------------------------------------------------------------------------------------------


@given(st.integers(0, 2**64 - 1), st.binary(min_size=32, max_size=32))
def test_part_id_is_the_keccak_of_abi_encode_of_gtin_and_serial(gtin, serial):
    assert part_id_unchecked(gtin, serial) == keccak(abi_encode(["uint64", "bytes32"], [gtin, serial]))


@pytest.mark.parametrize(("gtin", "serial"), [(2**64, bytes(32)), (-1, bytes(32)), (1, bytes(31)), (1, bytes(33))])
def test_part_id_refuses_what_abi_encode_would(gtin, serial):
    with pytest.raises(ValidationError):
        part_id_unchecked(gtin, serial)


def test_register_puts_parts_in_stock_at_manufacturer_and_opens_lot(ledger):
    maker = ledger.orgs["maker"]
    serials = [ascii32(s) for s in ("S-1", "S-2", "S-3")]
    receipt = ledger.act(maker.keys[1], ledger.parts.functions.registerParts(int(GTIN_A), ascii32("L1"), serials))
    lot = ledger.lot_number(maker, "L1")
    assert lot > 0
    opened = ledger.events(receipt, ledger.parts, "LotOpened")
    assert [(e["args"]["lot"], e["args"]["manufacturer"], e["args"]["lotCode"]) for e in opened] == [(lot, maker.id, ascii32("L1"))]
    (registered,) = ledger.events(receipt, ledger.parts, "PartsRegistered")
    assert registered["args"]["siteKey"] == maker.keys[1]
    assert registered["args"]["gtin"] == int(GTIN_A)
    assert list(registered["args"]["serials"]) == serials
    from partledger.ids import part_id

    for serial in ("S-1", "S-2", "S-3"):
        assert view(ledger, part_id(GTIN_A, serial)) == (PartStatus.IN_STOCK, maker.id, 0, lot, bytes(15), False)
    assert ledger.parts.functions.lot(lot).call() == [maker.id, False]


def test_register_reuses_lot_number_for_same_lot_code(ledger):
    maker = ledger.orgs["maker"]
    ledger.register(maker, ["A"], lot="L1")
    receipt = ledger.act(maker.key, ledger.parts.functions.registerParts(int(GTIN_B), ascii32("L1"), [ascii32("B")]))
    assert ledger.events(receipt, ledger.parts, "LotOpened") == []


def test_register_fails_when_part_already_registered(ledger):
    maker = ledger.orgs["maker"]
    (pid,) = ledger.register(maker, ["DUP"])
    with reverts("PartLedgerPartAlreadyRegistered", pid):
        ledger.register(maker, ["X", "DUP"])


def test_register_fails_when_serial_repeated_in_one_batch(ledger):
    from partledger.ids import part_id

    with reverts("PartLedgerPartAlreadyRegistered", part_id(GTIN_A, "TWICE")):
        ledger.register(ledger.orgs["maker"], ["TWICE", "TWICE"])


def test_register_fails_when_scrapped_serial_registered_again(ledger):
    maker = ledger.orgs["maker"]
    (pid,) = ledger.register(maker, ["GONE"])
    ledger.act(maker.key, ledger.parts.functions.scrapParts([pid], NO_DOC))
    with reverts("PartLedgerPartAlreadyRegistered", pid):
        ledger.register(maker, ["GONE"], lot="LOT-2")


def test_register_fails_when_another_manufacturer_registers_same_serial(ledger):
    (pid,) = ledger.register(ledger.orgs["maker"], ["CLONE"])
    with reverts("PartLedgerPartAlreadyRegistered", pid):
        ledger.register(ledger.orgs["maker2"], ["CLONE"])


@pytest.mark.parametrize("org", ["warehouse", "distributor", "workshop", "recycler", "auditor", "regulator"])
def test_register_fails_without_manufacturer_role(ledger, org):
    member = ledger.orgs[org]
    with reverts("ConsortiumRegistryMissingRole", member.id, 1):
        ledger.register(member, ["NOPE"])


def test_register_fails_for_unknown_key(ledger):
    stranger = ledger.spare_keys[0]
    with reverts("ConsortiumRegistryUnknownKey", stranger):
        ledger.register(ledger.orgs["maker"], ["NOPE"], key=stranger)


@pytest.mark.parametrize("gtin", [0, 4012345000017, 10**14, 2**64 - 1])
def test_register_fails_on_invalid_gtin(ledger, gtin):
    with reverts("PartLedgerInvalidGtin", gtin):
        ledger.act(ledger.orgs["maker"].key, ledger.parts.functions.registerParts(gtin, ascii32("L"), [ascii32("S")]))


def test_register_fails_on_empty_batch_serial_or_lot(ledger):
    key, p = ledger.orgs["maker"].key, ledger.parts.functions
    with reverts("PartLedgerEmptyBatch"):
        ledger.act(key, p.registerParts(int(GTIN_A), ascii32("L"), []))
    with reverts("PartLedgerEmptySerial", 1):
        ledger.act(key, p.registerParts(int(GTIN_A), ascii32("L"), [ascii32("S"), bytes(32)]))
    with reverts("PartLedgerEmptyLotCode"):
        ledger.act(key, p.registerParts(int(GTIN_A), bytes(32), [ascii32("S")]))


# --- custody hand-over -----------------------------------------------------------------------------------------


def test_ship_then_receive_moves_custody_to_named_recipient(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["H1", "H2"])
    lot = ledger.lot_number(maker, "LOT-1")
    receipt = ledger.act(maker.key, ledger.parts.functions.shipParts(ids, warehouse.id, DOC))
    (shipped,) = ledger.events(receipt, ledger.parts, "PartsShipped")
    assert (shipped["args"]["from"], shipped["args"]["to"], shipped["args"]["docHash"]) == (maker.id, warehouse.id, DOC)
    assert list(shipped["args"]["partIds"]) == ids
    assert view(ledger, ids[0]) == (PartStatus.IN_TRANSIT, maker.id, warehouse.id, lot, bytes(15), False)
    receipt = ledger.act(warehouse.key, ledger.parts.functions.receiveParts(ids, DOC))
    (received,) = ledger.events(receipt, ledger.parts, "PartsReceived")
    assert received["args"]["orgId"] == warehouse.id and list(received["args"]["partIds"]) == ids
    assert view(ledger, ids[1]) == (PartStatus.IN_STOCK, warehouse.id, 0, lot, bytes(15), False)


def test_cancel_returns_shipment_to_shipper_stock(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["C1"])
    ledger.act(maker.key, ledger.parts.functions.shipParts(ids, warehouse.id, NO_DOC))
    receipt = ledger.act(maker.key, ledger.parts.functions.cancelShipments(ids, NO_DOC))
    assert len(ledger.events(receipt, ledger.parts, "ShipmentsCancelled")) == 1
    assert view(ledger, ids[0])[:3] == (PartStatus.IN_STOCK, maker.id, 0)


def test_receive_fails_when_shipment_addressed_to_another_org(ledger):
    maker, warehouse, distributor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["distributor"]
    ids = ledger.register(maker, ["R1"])
    ledger.act(maker.key, ledger.parts.functions.shipParts(ids, warehouse.id, NO_DOC))
    with reverts("PartLedgerNotRecipient", ids[0], warehouse.id, distributor.id):
        ledger.act(distributor.key, ledger.parts.functions.receiveParts(ids, NO_DOC))


def test_receive_fails_when_part_not_in_transit(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["R2"])
    with reverts("PartLedgerWrongStatus", ids[0], PartStatus.IN_STOCK):
        ledger.act(ledger.orgs["warehouse"].key, ledger.parts.functions.receiveParts(ids, NO_DOC))


def test_cancel_fails_for_recipient(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["R3"])
    ledger.act(maker.key, ledger.parts.functions.shipParts(ids, warehouse.id, NO_DOC))
    with reverts("PartLedgerNotCustodian", ids[0], maker.id, warehouse.id):
        ledger.act(warehouse.key, ledger.parts.functions.cancelShipments(ids, NO_DOC))


def test_ship_fails_when_caller_is_not_custodian(ledger):
    maker, warehouse, distributor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["distributor"]
    ids = ledger.register(maker, ["W1"])
    with reverts("PartLedgerNotCustodian", ids[0], maker.id, warehouse.id):
        ledger.act(warehouse.key, ledger.parts.functions.shipParts(ids, distributor.id, NO_DOC))


def test_ship_is_all_or_nothing(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["B1", "B2"])
    unknown = keccak(text="never registered")
    with reverts("PartLedgerUnknownPart", unknown):
        ledger.act(maker.key, ledger.parts.functions.shipParts([*ids, unknown], warehouse.id, NO_DOC))
    assert view(ledger, ids[0])[0] == PartStatus.IN_STOCK


def test_ship_fails_to_self_unknown_suspended_or_non_custody_org(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["T1"])
    p = ledger.parts.functions
    with reverts("PartLedgerShipmentToSelf", maker.id):
        ledger.act(maker.key, p.shipParts(ids, maker.id, NO_DOC))
    with reverts("ConsortiumRegistryUnknownOrganisation", 999):
        ledger.act(maker.key, p.shipParts(ids, 999, NO_DOC))
    with reverts("PartLedgerRecipientCannotHoldParts", ledger.orgs["auditor"].id):
        ledger.act(maker.key, p.shipParts(ids, ledger.orgs["auditor"].id, NO_DOC))
    warehouse = ledger.orgs["warehouse"]
    ledger.act(ledger.operator, ledger.registry.functions.suspendOrganisation(warehouse.id))
    with reverts("ConsortiumRegistryOrganisationSuspended", warehouse.id):
        ledger.act(maker.key, p.shipParts(ids, warehouse.id, NO_DOC))


@pytest.mark.parametrize("org", ["auditor", "regulator"])
def test_ship_fails_without_custody_role(ledger, org):
    member = ledger.orgs[org]
    with reverts("ConsortiumRegistryMissingRole", member.id, 0b11111):
        ledger.act(member.key, ledger.parts.functions.shipParts([keccak(text="x")], ledger.orgs["maker"].id, NO_DOC))


# --- sale, installation, removal -------------------------------------------------------------------------------


def test_distributor_sells_part(ledger):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    ids = ledger.register(maker, ["SELL"])
    deliver(ledger, ids, maker, distributor)
    receipt = ledger.act(distributor.key, ledger.parts.functions.sellParts(ids, DOC))
    assert len(ledger.events(receipt, ledger.parts, "PartsSold")) == 1
    assert view(ledger, ids[0])[:2] == (PartStatus.SOLD, distributor.id)


def test_workshop_installs_then_removes_part(ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    ids = ledger.register(maker, ["FIT"])
    deliver(ledger, ids, maker, workshop)
    receipt = ledger.act(workshop.key, ledger.parts.functions.installParts(ids, [VIN_HASH], DOC))
    (installed,) = ledger.events(receipt, ledger.parts, "PartsInstalled")
    assert list(installed["args"]["vinHashes"]) == [VIN_HASH]
    assert view(ledger, ids[0])[0] == PartStatus.INSTALLED
    assert view(ledger, ids[0])[4] == VIN_HASH[:15]
    receipt = ledger.act(workshop.key, ledger.parts.functions.removeParts(ids, DOC))
    assert len(ledger.events(receipt, ledger.parts, "PartsRemoved")) == 1
    assert view(ledger, ids[0])[:5] == (PartStatus.IN_STOCK, workshop.id, 0, ledger.lot_number(maker, "LOT-1"), bytes(15))


def test_install_fails_when_vin_hashes_do_not_pair_with_parts(ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    ids = ledger.register(maker, ["P1", "P2"])
    deliver(ledger, ids, maker, workshop)
    with reverts("PartLedgerLengthMismatch", 2, 1):
        ledger.act(workshop.key, ledger.parts.functions.installParts(ids, [VIN_HASH], NO_DOC))


def test_install_fails_for_distributor_and_sale_fails_for_warehouse(ledger):
    maker, distributor, warehouse = ledger.orgs["maker"], ledger.orgs["distributor"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["ROLE"])
    with reverts("ConsortiumRegistryMissingRole", distributor.id, 0b1000):
        ledger.act(distributor.key, ledger.parts.functions.installParts(ids, [VIN_HASH], NO_DOC))
    with reverts("ConsortiumRegistryMissingRole", warehouse.id, 0b1100):
        ledger.act(warehouse.key, ledger.parts.functions.sellParts(ids, NO_DOC))


def test_remove_fails_by_other_workshop(ledger):
    maker, workshop, other = ledger.orgs["maker"], ledger.orgs["workshop"], ledger.orgs["workshop2"]
    ids = ledger.register(maker, ["OTHER"])
    deliver(ledger, ids, maker, workshop)
    ledger.act(workshop.key, ledger.parts.functions.installParts(ids, [VIN_HASH], NO_DOC))
    with reverts("PartLedgerNotCustodian", ids[0], workshop.id, other.id):
        ledger.act(other.key, ledger.parts.functions.removeParts(ids, NO_DOC))


def test_installed_part_cannot_be_shipped_or_scrapped(ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    ids = ledger.register(maker, ["INST"])
    deliver(ledger, ids, maker, workshop)
    ledger.act(workshop.key, ledger.parts.functions.installParts(ids, [VIN_HASH], NO_DOC))
    with reverts("PartLedgerWrongStatus", ids[0], PartStatus.INSTALLED):
        ledger.act(workshop.key, ledger.parts.functions.shipParts(ids, maker.id, NO_DOC))
    with reverts("PartLedgerWrongStatus", ids[0], PartStatus.INSTALLED):
        ledger.act(workshop.key, ledger.parts.functions.scrapParts(ids, NO_DOC))


# --- quarantine, scrap, recycle --------------------------------------------------------------------------------


def test_quarantine_then_release(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["Q"])
    reason = keccak(text="QC report 17")
    receipt = ledger.act(maker.key, ledger.parts.functions.quarantineParts(ids, reason))
    (event,) = ledger.events(receipt, ledger.parts, "PartsQuarantined")
    assert event["args"]["reasonHash"] == reason
    assert view(ledger, ids[0])[0] == PartStatus.QUARANTINED
    with reverts("PartLedgerWrongStatus", ids[0], PartStatus.QUARANTINED):
        ledger.act(maker.key, ledger.parts.functions.shipParts(ids, ledger.orgs["warehouse"].id, NO_DOC))
    ledger.act(maker.key, ledger.parts.functions.releaseParts(ids, NO_DOC))
    assert view(ledger, ids[0])[0] == PartStatus.IN_STOCK


def test_scrap_from_quarantine_is_terminal(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, ["SCRAP"])
    ledger.act(maker.key, ledger.parts.functions.quarantineParts(ids, NO_DOC))
    receipt = ledger.act(maker.key, ledger.parts.functions.scrapParts(ids, DOC))
    assert len(ledger.events(receipt, ledger.parts, "PartsScrapped")) == 1
    p = ledger.parts.functions
    for call in (
        p.shipParts(ids, warehouse.id, NO_DOC),
        p.releaseParts(ids, NO_DOC),
        p.quarantineParts(ids, NO_DOC),
        p.scrapParts(ids, NO_DOC),
    ):
        with reverts("PartLedgerWrongStatus", ids[0], PartStatus.SCRAPPED):
            ledger.act(maker.key, call)


def test_recycler_recycles_received_part_and_nobody_else_may(ledger):
    maker, recycler = ledger.orgs["maker"], ledger.orgs["recycler"]
    ids = ledger.register(maker, ["RCY"])
    with reverts("ConsortiumRegistryMissingRole", maker.id, 0b10000):
        ledger.act(maker.key, ledger.parts.functions.recycleParts(ids, NO_DOC))
    deliver(ledger, ids, maker, recycler)
    receipt = ledger.act(recycler.key, ledger.parts.functions.recycleParts(ids, DOC))
    assert len(ledger.events(receipt, ledger.parts, "PartsRecycled")) == 1
    assert view(ledger, ids[0])[:2] == (PartStatus.RECYCLED, recycler.id)
    with reverts("PartLedgerWrongStatus", ids[0], PartStatus.RECYCLED):
        ledger.act(recycler.key, ledger.parts.functions.scrapParts(ids, NO_DOC))


# --- recall ----------------------------------------------------------------------------------------------------


def recalled_lot(ledger, serials, holder_name):
    """Registers `serials` at the maker, delivers them to `holder_name`, recalls their lot."""
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, serials, lot="RECALL")
    if holder_name != "maker":
        deliver(ledger, ids, maker, ledger.orgs[holder_name])
    lot = ledger.lot_number(maker, "RECALL")
    notice = keccak(text="recall notice 2026-11")
    receipt = ledger.act(maker.key, ledger.parts.functions.recallLot(lot, notice))
    (event,) = ledger.events(receipt, ledger.parts, "LotRecalled")
    assert (event["args"]["lot"], event["args"]["orgId"], event["args"]["noticeHash"]) == (lot, maker.id, notice)
    return ids, lot


def test_recall_marks_every_part_of_lot(ledger):
    ids, lot = recalled_lot(ledger, ["RC1", "RC2"], "warehouse")
    assert all(view(ledger, pid)[5] for pid in ids)
    assert ledger.parts.functions.lot(lot).call()[1] is True


def test_recalled_part_cannot_be_sold(ledger):
    ids, lot = recalled_lot(ledger, ["RS"], "distributor")
    with reverts("PartLedgerPartRecalled", ids[0], lot):
        ledger.act(ledger.orgs["distributor"].key, ledger.parts.functions.sellParts(ids, NO_DOC))


def test_recalled_part_cannot_be_installed(ledger):
    ids, lot = recalled_lot(ledger, ["RI"], "workshop")
    with reverts("PartLedgerPartRecalled", ids[0], lot):
        ledger.act(ledger.orgs["workshop"].key, ledger.parts.functions.installParts(ids, [VIN_HASH], NO_DOC))


def test_recalled_part_cannot_be_shipped_onward(ledger):
    ids, lot = recalled_lot(ledger, ["RO"], "warehouse")
    with reverts("PartLedgerPartRecalled", ids[0], lot):
        ledger.act(ledger.orgs["warehouse"].key, ledger.parts.functions.shipParts(ids, ledger.orgs["workshop"].id, NO_DOC))


def test_recalled_part_ships_back_to_manufacturer_or_to_recycler(ledger):
    ids, _ = recalled_lot(ledger, ["RB1", "RB2"], "warehouse")
    warehouse, maker, recycler = ledger.orgs["warehouse"], ledger.orgs["maker"], ledger.orgs["recycler"]
    ledger.act(warehouse.key, ledger.parts.functions.shipParts(ids[:1], maker.id, NO_DOC))
    ledger.act(warehouse.key, ledger.parts.functions.shipParts(ids[1:], recycler.id, NO_DOC))
    ledger.act(maker.key, ledger.parts.functions.receiveParts(ids[:1], NO_DOC))
    ledger.act(recycler.key, ledger.parts.functions.receiveParts(ids[1:], NO_DOC))
    ledger.act(recycler.key, ledger.parts.functions.recycleParts(ids[1:], NO_DOC))
    ledger.act(maker.key, ledger.parts.functions.scrapParts(ids[:1], NO_DOC))


def test_recalled_lot_accepts_no_new_parts_and_no_second_recall(ledger):
    _, lot = recalled_lot(ledger, ["RN"], "maker")
    maker = ledger.orgs["maker"]
    with reverts("PartLedgerLotRecalled", lot):
        ledger.register(maker, ["RN2"], lot="RECALL")
    with reverts("PartLedgerLotRecalled", lot):
        ledger.act(maker.key, ledger.parts.functions.recallLot(lot, NO_DOC))


def test_recall_by_regulator_and_refusals(ledger):
    maker, maker2, regulator = ledger.orgs["maker"], ledger.orgs["maker2"], ledger.orgs["regulator"]
    ledger.register(maker, ["REG"], lot="L-REG")
    lot = ledger.lot_number(maker, "L-REG")
    p = ledger.parts.functions
    with reverts("PartLedgerNotLotManufacturer", lot, maker.id, maker2.id):
        ledger.act(maker2.key, p.recallLot(lot, NO_DOC))
    with reverts("ConsortiumRegistryMissingRole", ledger.orgs["workshop"].id, 0b1000001):
        ledger.act(ledger.orgs["workshop"].key, p.recallLot(lot, NO_DOC))
    with reverts("PartLedgerUnknownLot", 9999):
        ledger.act(regulator.key, p.recallLot(9999, NO_DOC))
    ledger.act(regulator.key, p.recallLot(lot, NO_DOC))
    assert p.lot(lot).call() == [maker.id, True]


# --- keys ------------------------------------------------------------------------------------------------------


def test_revoked_key_changes_nothing_while_sibling_key_still_works(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["K1"])
    receipt = ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(maker.keys[0]))
    block = receipt["blockNumber"]
    p = ledger.parts.functions
    for call in (p.registerParts(int(GTIN_A), ascii32("L"), [ascii32("K2")]), p.shipParts(ids, ledger.orgs["warehouse"].id, NO_DOC), p.scrapParts(ids, NO_DOC)):
        with reverts("ConsortiumRegistryKeyRevoked", maker.keys[0], block):
            ledger.act(maker.keys[0], call)
    ledger.act(maker.keys[1], p.scrapParts(ids, NO_DOC))


def test_suspended_organisation_changes_nothing_until_reinstated(ledger):
    maker = ledger.orgs["maker"]
    ids = ledger.register(maker, ["SUS"])
    ledger.act(ledger.operator, ledger.registry.functions.suspendOrganisation(maker.id))
    with reverts("ConsortiumRegistryOrganisationSuspended", maker.id):
        ledger.act(maker.key, ledger.parts.functions.scrapParts(ids, NO_DOC))
    ledger.act(ledger.operator, ledger.registry.functions.reinstateOrganisation(maker.id))
    ledger.act(maker.key, ledger.parts.functions.scrapParts(ids, NO_DOC))


def test_unknown_part_reported_by_id(ledger):
    unknown = keccak(text="ghost")
    with reverts("PartLedgerUnknownPart", unknown):
        ledger.act(ledger.orgs["maker"].key, ledger.parts.functions.quarantineParts([unknown], NO_DOC))


def test_bulk_transition_carries_hundreds_of_parts_in_one_transaction(ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ids = ledger.register(maker, [f"BULK{index:04d}" for index in range(300)])
    receipt = ledger.act(maker.key, ledger.parts.functions.shipParts(ids, warehouse.id, NO_DOC))
    (event,) = ledger.events(receipt, ledger.parts, "PartsShipped")
    assert list(event["args"]["partIds"]) == ids
    assert view(ledger, ids[-1])[:3] == (PartStatus.IN_TRANSIT, maker.id, warehouse.id)
