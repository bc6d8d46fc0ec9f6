"""How the ledger speaks EPCIS 2.0: one table, read both ways.

Deriving (ledger_service.epcis.derive): a ledger event of kind K (part_events.kind, or a lot's recall) becomes an
EPCIS event of LEDGER_STEPS[K]'s type, action, bizStep and disposition. Capturing (ledger_service.epcis.capture):
`operation_for(event)` and `containment_operation_for(event)` read the same table backwards, so that a lot's history
exported as EPCIS and captured into a fresh deployment gives the same ledger state.

| ledger | EPCIS ObjectEvent (action, bizStep, disposition) | what else |
| --- | --- | --- |
| register | ADD, commissioning, active | ilmd cbvmda:lotNumber (or the lot of an LGTIN class) |
| ship | OBSERVE, shipping, in_transit | destinationList owning_party: the recipient |
| receive | OBSERVE, receiving, in_progress | sourceList owning_party: the sender |
| cancel | OBSERVE, void_shipping, active | |
| sell | OBSERVE, retail_selling, retail_sold | |
| install | OBSERVE, installing, active | the VIN: private field partledger:vin (clear) or partledger:vinHash |
| remove | OBSERVE, removing, active | |
| quarantine | OBSERVE, holding, non_conformant | |
| release | OBSERVE, inspecting, conformant | |
| scrap | OBSERVE, destroying, destroyed | |
| recycle | OBSERVE, destroying, disposed | |
| recall | OBSERVE, holding, recalled | quantityList: the lot as an LGTIN class per GTIN; partledger:noticeHash |

Containment and remanufacturing (issue 15) as AggregationEvents and TransformationEvents. A logistic unit is named by
its SSCC (`https://id.gs1.org/00/{sscc}` or `urn:epc:id:sscc:…`), a part by its SGTIN; children may be parts or units.

| ledger | derived as | captured from |
| --- | --- | --- |
| pack | AggregationEvent ADD, packing; parentID the SSCC, childEPCs | AggregationEvent ADD, parentID an SSCC (any bizStep, or none) |
| unpack | AggregationEvent DELETE, unpacking | AggregationEvent DELETE, parentID an SSCC; no childEPCs (or an empty list): everything directly inside, as the mirror has it (the standard's DELETE of all children) |
| assemble | AggregationEvent ADD, assembling; parentID the assembly's SGTIN | the same; or a TransformationEvent, assembling: inputEPCList the children, outputEPCList the one assembly |
| disassemble | AggregationEvent DELETE, disassembling | the same (no childEPCs: every child); or a TransformationEvent, disassembling: inputEPCList the one assembly, outputEPCList the children |
| remanufacture | TransformationEvent, repairing, active: inputEPCList the original, outputEPCList the new part, ilmd cbvmda:lotNumber its lot | a TransformationEvent, bizStep repairing or commissioning (REMANUFACTURE_STEPS), one input SGTIN the ledger knows, one output SGTIN it does not, the lot from ilmd |

CBV 2.0 has no word for remanufacturing: `repairing` says what happens to the object (a returned part restored to a
new one's specification), and a TransformationEvent from one instance to another says that a new serialised part
comes out of it; `commissioning` (the output's identifier assigned) is accepted too. Any other AggregationEvent or
TransformationEvent (OBSERVE, other bizSteps, class-level quantities only) is consortium data, as are those naming no
part or unit the ledger knows.

A trade document named by a ledger event (doc hash) is a bizTransaction `urn:partledger:doc:0x…`; parties and
locations are GS1 identities (ledger_service.epcis.identities) or, for a member without one, `urn:partledger:org:N`
and `urn:partledger:site:N:<site>`. Fields outside the standard use the `partledger` prefix (PARTLEDGER_NS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EPCIS_CONTEXT = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
PARTLEDGER_NS = "https://partledger.org/ns/epcis/"
CONTEXT: list[Any] = [EPCIS_CONTEXT, {"partledger": PARTLEDGER_NS}]
SCHEMA_VERSION = "2.0"

ORG_URN = "urn:partledger:org:"
SITE_URN = "urn:partledger:site:"
DOC_URN = "urn:partledger:doc:"
DOC_TYPE = "urn:partledger:btt:ledger_document"  # the bizTransaction type of a document hash a ledger event carries

# private fields: kept sealed (Vault) by the service, never on chain, shown to the capturing organisation and to
# auditors and regulators only
PRIVATE_FIELDS = ("partledger:vin",)


@dataclass(frozen=True)
class Step:
    action: str | None  # None: a TransformationEvent, which has no action
    biz_step: str
    disposition: str | None
    event_type: str = "ObjectEvent"


LEDGER_STEPS: dict[str, Step] = {
    "register": Step("ADD", "commissioning", "active"),
    "ship": Step("OBSERVE", "shipping", "in_transit"),
    "receive": Step("OBSERVE", "receiving", "in_progress"),
    "cancel": Step("OBSERVE", "void_shipping", "active"),
    "sell": Step("OBSERVE", "retail_selling", "retail_sold"),
    "install": Step("OBSERVE", "installing", "active"),
    "remove": Step("OBSERVE", "removing", "active"),
    "quarantine": Step("OBSERVE", "holding", "non_conformant"),
    "release": Step("OBSERVE", "inspecting", "conformant"),
    "scrap": Step("OBSERVE", "destroying", "destroyed"),
    "recycle": Step("OBSERVE", "destroying", "disposed"),
    "recall": Step("OBSERVE", "holding", "recalled"),
    "pack": Step("ADD", "packing", None, "AggregationEvent"),
    "unpack": Step("DELETE", "unpacking", None, "AggregationEvent"),
    "assemble": Step("ADD", "assembling", None, "AggregationEvent"),
    "disassemble": Step("DELETE", "disassembling", None, "AggregationEvent"),
    "remanufacture": Step(None, "repairing", "active", "TransformationEvent"),
}
CONTAINMENT_OPERATIONS = frozenset({"pack", "unpack", "assemble", "disassemble"})
REMANUFACTURE_STEPS = frozenset({"repairing", "commissioning"})

# capture: (bizStep, disposition or None for any) -> ledger operation; checked in this order
_CAPTURE_RULES: tuple[tuple[str, str | None, str], ...] = (
    ("shipping", None, "ship"),
    ("receiving", None, "receive"),
    ("void_shipping", None, "cancel"),
    ("retail_selling", None, "sell"),
    ("installing", None, "install"),
    ("removing", None, "remove"),
    ("holding", "non_conformant", "quarantine"),
    ("inspecting", "conformant", "release"),
    ("destroying", "disposed", "recycle"),
    ("destroying", None, "scrap"),
)


def operation_for(*, event_type: str, action: str | None, biz_step: str | None, disposition: str | None) -> str | None:
    """The ledger operation an ObjectEvent maps to (bare CBV words given), or None: consortium data only.
    A recall is any ObjectEvent whose disposition is `recalled`; a registration an ADD with bizStep commissioning."""
    if event_type != "ObjectEvent":
        return None
    if disposition == "recalled":
        return "recall"
    if biz_step == "commissioning":
        return "register" if action == "ADD" else None
    if action == "ADD":
        return None  # an ADD names new objects: only commissioning creates parts
    for step, wanted, operation in _CAPTURE_RULES:
        if biz_step == step and (wanted is None or disposition == wanted):
            return operation
    return None


def containment_operation_for(
    *, event_type: str, action: str | None, biz_step: str | None, parent: str | None, inputs: list[str], outputs: list[str],
) -> str | None:  # fmt: skip
    """The containment or remanufacturing operation an AggregationEvent or TransformationEvent maps to, from its shape
    alone (the EPC kinds of partledger.epcis.identifiers: its parentID's, its inputs' and outputs'), or None:
    consortium data. Whether the ledger knows what it names is capture's question (ledger_service.epcis.capture)."""
    if event_type == "AggregationEvent":
        if parent == "sscc":
            return {"ADD": "pack", "DELETE": "unpack"}.get(action or "")
        if parent == "sgtin":
            return {("ADD", "assembling"): "assemble", ("DELETE", "disassembling"): "disassemble"}.get((action or "", biz_step or ""))
        return None
    if event_type != "TransformationEvent" or not inputs or not outputs or any(kind != "sgtin" for kind in inputs + outputs):
        return None
    if biz_step == "assembling" and len(outputs) == 1:
        return "assemble"
    if biz_step == "disassembling" and len(inputs) == 1:
        return "disassemble"
    if biz_step in REMANUFACTURE_STEPS and len(inputs) == 1 and len(outputs) == 1:
        return "remanufacture"
    return None


def org_urn(org_id: int) -> str:
    return f"{ORG_URN}{org_id}"


def site_urn(org_id: int, site: str) -> str:
    return f"{SITE_URN}{org_id}:{site}"


def doc_urn(doc_hash: bytes) -> str:
    return f"{DOC_URN}0x{doc_hash.hex()}"


def parse_doc_urn(value: str) -> bytes | None:
    """The 32-byte document hash of a `urn:partledger:doc:0x…` bizTransaction, or None for anything else."""
    if not value.startswith(DOC_URN):
        return None
    digits = value[len(DOC_URN) :].removeprefix("0x")
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None
