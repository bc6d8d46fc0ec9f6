"""What each write does: its roles, the part states it starts from, how its items pack into one contract call.

The table here mirrors PartLedger.sol's rules so that the service refuses an obviously invalid command at once,
with the reason; the contract stays the final judge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from partledger.ids import ascii32
from partledger.model import CUSTODY_ROLES, PartStatus, Role


@dataclass(frozen=True)
class Operation:
    kind: str
    function: str
    contract: str
    roles: Role  # the organisation must hold one of these
    from_statuses: frozenset[PartStatus] = frozenset()  # for part operations
    holder: str = "custodian"  # who must hold the part: custodian | recipient
    blocked_by_recall: bool = False
    # Arguments equal across the items of one transaction. "capture": an EPCIS capture job's items travel only with
    # each other, so that a ledger event derived from their transaction is the job's captured event.
    pack_args: tuple[str, ...] = ()
    per_part: bool = True  # takes a list of part ids
    registers: bool = False  # creates its parts: none of them may exist yet


S = PartStatus
OPERATIONS: dict[str, Operation] = {
    op.kind: op
    for op in (
        Operation("register", "registerParts", "PartLedger", Role.MANUFACTURER, pack_args=("gtin", "lot", "capture"), registers=True),
        Operation("ship", "shipParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_STOCK}), pack_args=("to", "doc_hash", "capture")),
        Operation("receive", "receiveParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_TRANSIT}), holder="recipient", pack_args=("doc_hash", "capture")),
        Operation("cancel", "cancelShipments", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_TRANSIT}), pack_args=("doc_hash", "capture")),
        Operation("sell", "sellParts", "PartLedger", Role.DISTRIBUTOR | Role.WORKSHOP, frozenset({S.IN_STOCK}), blocked_by_recall=True, pack_args=("doc_hash", "capture")),
        Operation("install", "installParts", "PartLedger", Role.WORKSHOP, frozenset({S.IN_STOCK}), blocked_by_recall=True, pack_args=("doc_hash", "capture")),
        Operation("remove", "removeParts", "PartLedger", Role.WORKSHOP, frozenset({S.INSTALLED}), pack_args=("doc_hash", "capture")),
        Operation("quarantine", "quarantineParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_STOCK}), pack_args=("doc_hash", "capture")),
        Operation("release", "releaseParts", "PartLedger", CUSTODY_ROLES, frozenset({S.QUARANTINED}), pack_args=("doc_hash", "capture")),
        Operation("scrap", "scrapParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_STOCK, S.QUARANTINED}), pack_args=("doc_hash", "capture")),
        Operation("recycle", "recycleParts", "PartLedger", Role.RECYCLER, frozenset({S.IN_STOCK, S.QUARANTINED}), pack_args=("doc_hash", "capture")),
        Operation("pack", "packParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_STOCK}), pack_args=("sscc", "capture")),
        Operation("unpack", "unpackParts", "PartLedger", CUSTODY_ROLES, frozenset({S.IN_STOCK}), pack_args=("sscc", "capture")),
        Operation("assemble", "assembleParts", "PartLedger", Role.MANUFACTURER | Role.WORKSHOP, frozenset({S.IN_STOCK}), pack_args=("parent", "capture")),
        Operation("disassemble", "disassembleParts", "PartLedger", Role.MANUFACTURER | Role.WORKSHOP, frozenset({S.IN_STOCK}), pack_args=("parent", "capture")),
        Operation("remanufacture", "remanufacturePart", "PartLedger", Role.MANUFACTURER, frozenset({S.IN_STOCK}), per_part=False, pack_args=("unique",), registers=True),
        Operation("recall", "recallLot", "PartLedger", Role.MANUFACTURER | Role.REGULATOR, per_part=False, pack_args=("lot", "notice_hash", "unique")),
        Operation("anchor_document", "anchorDocument", "EvidenceLedger", Role(0), per_part=False, pack_args=("unique",)),
        # Any member but an auditor: the contract lets every active organisation anchor, but an auditor only reads.
        Operation("anchor_batch", "anchorBatch", "EvidenceLedger", CUSTODY_ROLES | Role.REGULATOR, per_part=False, pack_args=("unique",)),
    )
}  # fmt: skip


def contract_arguments(kind: str, payloads: list[dict[str, Any]]) -> tuple[str, str, list[Any]]:
    """(contract, function, arguments) of one transaction carrying the items whose payloads are given, in order.
    Packed items share their pack arguments, so the first item's stand for all."""
    op = OPERATIONS[kind]
    first = payloads[0]
    if kind == "register":
        serials = [ascii32(serial) for payload in payloads for serial in payload["serials"]]
        return op.contract, op.function, [int(first["gtin"]), ascii32(first["lot"]), serials]
    if kind == "recall":
        return op.contract, op.function, [first["lot"], _b32(first["notice_hash"])]
    if kind == "anchor_document":
        attestation = first["attestation"]
        return op.contract, op.function, [
            (_b32(attestation["docHash"]), attestation["docType"], attestation["issuer"], attestation["counterparty"],
             _b32(attestation["previous"]), _b32(attestation["partsRoot"]), _b32(attestation["nonce"]), attestation["deadline"]),
            bytes.fromhex(first["issuer_signature"][2:]), bytes.fromhex(first["counterparty_signature"][2:]),
        ]  # fmt: skip
    if kind == "remanufacture":
        return op.contract, op.function, [_b32(first["original"]), int(first["gtin"]), ascii32(first["lot"]), ascii32(first["serial"])]
    if kind == "anchor_batch":
        return op.contract, op.function, [_b32(first["root"]), first["record_count"], ascii32(first["batch_kind"])]
    parts = [_b32(part) for payload in payloads for part in payload["parts"]]
    doc = _b32(first.get("doc_hash"))
    if kind == "ship":
        return op.contract, op.function, [parts, first["to"], doc]
    if kind in ("pack", "unpack"):
        return op.contract, op.function, [int(first["sscc"]), parts]
    if kind in ("assemble", "disassemble"):
        return op.contract, op.function, [_b32(first["parent"]), parts]
    if kind == "install":
        vins = [_b32(vin) for payload in payloads for vin in payload["vin_hashes"]]
        return op.contract, op.function, [parts, vins, doc]
    return op.contract, op.function, [parts, doc]


def _b32(value: str | None) -> bytes:
    return bytes(32) if not value else bytes.fromhex(value.removeprefix("0x"))
