"""The JSON bodies the service answers with, as pydantic models, for the OpenAPI schema alone.

Routes name them in `responses={200: {"model": ...}}`, which documents a body without touching it: the handlers keep
building their answers (ledger_service.read, outbox, evidence, audit, scans, verify, partledger.proofs.builder) and
nothing re-validates or filters them at runtime. The schema fuzz test (tests/test_api_fuzz.py) holds every answer to
these models, so they say exactly which keys an answer has: every model is closed (no key beyond its fields), a
field that may be null is Optional, and a key that may be missing altogether is `Omittable`. Objects stay open only
where the answer genuinely varies (a command's summary, a flag's detail, an event's decoded arguments).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, Optional, TypeVar, Union

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from ledger_service.verify import Verdict

T = TypeVar("T")
Omittable = Union[T, SkipJsonSchema[None]]  # a key that is absent when it does not apply (never null)

Hex = Annotated[str, Field(pattern=r"^0x(?:[0-9a-f]{2})*$", description="bytes: 0x + lower-case hex")]
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{64}$", description="32 bytes: 0x + 64 lower-case hex digits")]
Hex16 = Annotated[str, Field(pattern=r"^0x[0-9a-f]{32}$", description="16 bytes: 0x + 32 lower-case hex digits")]
Signature = Annotated[str, Field(pattern=r"^0x[0-9a-f]{130}$", description="65-byte ECDSA signature (r, s, v)")]
Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", description="an EVM address, EIP-55 checksummed")]
Uint = Annotated[int, Field(ge=0)]
# partledger.model.PartStatus and Role by name, lower case, as the answers give them (no registered part is NONE)
PartStatusName = Literal["in_stock", "in_transit", "sold", "installed", "quarantined", "scrapped", "recycled", "remanufactured"]
RoleName = Literal["manufacturer", "logistics", "distributor", "workshop", "recycler", "auditor", "regulator"]


class Exact(BaseModel):
    """A JSON object with exactly these keys."""

    model_config = ConfigDict(extra="forbid")


class Page(Exact, Generic[T]):
    """One page of a keyset-paginated list: pass next_cursor as `cursor` for the next (null on the last page)."""

    items: list[T]
    next_cursor: Optional[str]


class MirrorPage(Page[T], Generic[T]):
    """A page read from the chain mirror, with the block it reflects."""

    block: int


# --- parts ------------------------------------------------------------------------------------------------------


class OrganisationRef(Exact):
    id: int
    name: Optional[str] = Field(description="null when the mirror does not know the organisation")


class PublicPart(Exact):
    """What anyone may know of a part."""

    part_id: Hex32
    gtin: str
    serial: str
    manufacturer: OrganisationRef
    status: PartStatusName
    recalled: bool


class LotRef(Exact):
    number: int
    code: Optional[str]


class ConsortiumPart(PublicPart):
    """A part as the organisations involved with it (and auditors, regulators) see it."""

    lot: LotRef
    custodian: OrganisationRef
    recipient: Optional[OrganisationRef] = Field(description="the organisation it is shipped to, while in transit")
    site_key: Address
    registered_block: int
    updated_block: int


class ConsortiumPartRecord(ConsortiumPart):
    vin_hash: Optional[Hex32] = Field(description="salted VIN hash of its vehicle: for its custodian, auditors and regulators")


class PartEventView(Exact):
    kind: str
    block: int
    tx_hash: Hex32
    log_index: int
    organisation: OrganisationRef
    site_key: Address
    counterparty: Optional[OrganisationRef]
    doc_hash: Optional[Hex32]
    vin_hash: Optional[Hex32] = Field(description="for the acting organisation, auditors and regulators")
    related_id: Optional[Hex32] = Field(
        description="packed, unpacked, assembled, disassembled: the container; remanufactured: the new part; any other kind: "
        "null, or the container the event named when the part moved inside it"
    )


class ContainerRef(Exact):
    """A container: an assembly (a part: its GTIN and serial) or a logistic unit (its SSCC)."""

    id: Hex32
    kind: Literal["assembly", "unit"]
    gtin: Optional[str]
    serial: Optional[str]
    sscc: Optional[str]


class ContentsNode(Exact):
    """Something inside a container: a part (GTIN, serial) or a logistic unit (SSCC), and what is inside it."""

    id: Hex32
    kind: Literal["part", "unit"]
    gtin: Optional[str]
    serial: Optional[str]
    sscc: Optional[str]
    status: Optional[PartStatusName]
    recalled: bool = Field(description="its own lot is recalled")
    children: list[ContentsNode]


class ContainmentView(Exact):
    container: Optional[ContainerRef] = Field(description="what it is directly inside; null when loose")
    outermost_container: Optional[ContainerRef] = Field(description="the container whose state it shares (the direct one at one level)")
    children: list[ContentsNode] = Field(description="what is inside it, at any depth (an assembly's bill of materials, a unit's contents)")
    children_truncated: bool = Field(description="the tree was cut at 1,000 nodes")


class LineagePart(Exact):
    part_id: Hex32
    gtin: Optional[str]
    serial: Optional[str]


class LineageInto(LineagePart):
    block: int


class LineageView(Exact):
    remanufactured_from: list[LineagePart] = Field(description="the part it was remanufactured from, then that part's own origin, back to the first")
    remanufactured_into: Optional[LineageInto] = Field(description="the part it was remanufactured into (it is then consumed)")


class PublicPartDetail(Exact):
    """A part seen by an organisation not involved with it."""

    block: int
    part: PublicPart
    classification: Literal["public"]
    history: None
    lineage: LineageView
    containment: None


class ConsortiumPartDetail(Exact):
    """A part and its history, for the organisations involved with it, auditors and regulators."""

    block: int
    part: ConsortiumPartRecord
    classification: Literal["consortium"]
    history: list[PartEventView]
    lineage: LineageView
    containment: ContainmentView


PartDetail = Annotated[Union[PublicPartDetail, ConsortiumPartDetail], Field(discriminator="classification")]


class InventorySite(Exact):
    site_key: Address
    site: Optional[str]
    counts: dict[str, int] = Field(description="parts held, by lifecycle status")


class Inventory(Exact):
    block: int
    org_id: int
    sites: list[InventorySite]
    inbound_in_transit: int


class RecallImpactItem(Exact):
    part_id: Hex32
    serial: str
    status: PartStatusName
    custodian: OrganisationRef
    recipient: Optional[OrganisationRef]
    site_key: Address
    vehicle_vin_hash: Optional[Hex32] = Field(description="salted VIN hash of the vehicle it is installed in, itself or inside an assembly")
    outermost_container: Optional[ContainerRef] = Field(description="the outermost assembly or logistic unit it is inside, whose state it shares")


class RecalledLot(Exact):
    number: int
    code: str
    manufacturer: OrganisationRef
    recalled: bool


class NoticeTextView(Exact):
    zh: str
    en: str


class RecallNoticeView(Exact):
    """A recall notice people can act on (ledger_service.recall_notices), each text in Chinese and English."""

    title: NoticeTextView
    reason: NoticeTextView = Field(description="what is wrong")
    risk: NoticeTextView = Field(description="what can happen")
    remedy: NoticeTextView = Field(description="what the manufacturer does about it")
    action: NoticeTextView = Field(description="what to do now")
    contact: NoticeTextView


class CanonicalRecallNotice(RecallNoticeView):
    """A recall notice's canonical JSON (RFC 8785; ledger_service.recall_notices): its texts and the schema marker."""

    schema_: Literal["partledger/recall-notice/1"] = Field(alias="schema")


class NoticeRecall(Exact):
    block: int
    by: Optional[str] = Field(description="the recalling organisation's name")


class RecallNoticeAnswer(Exact):
    """A recall notice with its canonical bytes: SHA-256 of `canonical` (UTF-8) is notice_hash, which the recalls
    listed put on chain."""

    notice_hash: Hex32
    hash_algorithm: Literal["sha-256"]
    canonical_form: str
    canonical: str = Field(description="the canonical JSON (RFC 8785) that is hashed, as a string; its bytes alone: .../canonical.json")
    notice: RecallNoticeView
    recalls: list[NoticeRecall] = Field(description="the recalls on chain naming this notice, oldest first")


class RecallRecord(Exact):
    block: int
    tx_hash: Hex32
    notice_hash: Hex32
    by: OrganisationRef
    notice: Optional[RecallNoticeView] = Field(description="the notice's text; null when this service holds none for the hash")


class ImpactContainers(Exact):
    assemblies: int = Field(description="assemblies holding its parts at any depth")
    units: int = Field(description="logistic units holding its parts at any depth")
    contained_parts: int = Field(description="its parts inside an assembly or unit")
    levels: int = Field(description="containment levels above its parts, at most")


class ImpactCustodian(Exact):
    organisation: OrganisationRef
    parts: int
    counts: dict[str, int] = Field(description="by lifecycle status")


class ImpactContainer(Exact):
    """An assembly or logistic unit holding parts of the lot, with its effective state."""

    id: Hex32
    kind: Literal["assembly", "unit"]
    gtin: Optional[str]
    serial: Optional[str]
    sscc: Optional[str]
    status: Optional[PartStatusName]
    custodian: Optional[OrganisationRef]
    recipient: Optional[OrganisationRef]
    vehicle_vin_hash: Optional[Hex32]
    container: Optional[Hex32] = Field(description="what it is directly inside")
    levels_above_lot: int = Field(description="1: it holds a part of the lot directly")
    lot_parts_inside: int = Field(description="parts of the lot inside it, at any depth")


class ImpactContainerPage(MirrorPage[ImpactContainer]):
    lot: int
    total: Optional[int] = Field(description="on the first page: how many containers in all")


class ImpactVehicle(Exact):
    vin_hash: Hex32
    lot_parts: int
    installed_by: OrganisationRef


class ImpactVehicles(MirrorPage[ImpactVehicle]):
    lot: int


class LogisticUnitRecord(Exact):
    unit_id: Hex32
    sscc: str
    status: PartStatusName
    custodian: OrganisationRef
    recipient: Optional[OrganisationRef]
    site_key: Address
    created_by: OrganisationRef
    created_block: int
    updated_block: int


class LogisticUnitDetail(Exact):
    """A logistic unit (GS1 SSCC), what is inside it and its history: for the organisations involved with it,
    auditors and regulators."""

    block: int
    unit: LogisticUnitRecord
    containment: ContainmentView
    history: list[PartEventView]


class RecallImpact(MirrorPage[RecallImpactItem]):
    """A lot, its recall, and a page of its parts with where they are."""

    lot: RecalledLot
    recall: Optional[RecallRecord]
    counts: dict[str, int] = Field(description="the lot's parts, by lifecycle status")
    installed_vehicles: int = Field(description="vehicles its parts are installed in, directly or inside assemblies")
    containers: ImpactContainers
    custodians: list[ImpactCustodian] = Field(description="who holds its parts now (inside containers: the outermost's custodian), most first")


# --- organisations, documents, health ---------------------------------------------------------------------------


class SiteKeyView(Exact):
    address: Address
    site: str
    added_block: int
    revoked_block: Optional[int]


class OrganisationView(Exact):
    id: int
    name: str
    roles: list[RoleName]
    suspended: bool
    site_keys: list[SiteKeyView]


class Organisations(Exact):
    block: int
    items: list[OrganisationView]


class AnchoredDocument(Exact):
    doc_hash: Hex32
    doc_type: Union[str, int] = Field(description="the type's name; its number when this service does not know it")
    issuer: OrganisationRef
    counterparty: OrganisationRef
    previous: Optional[Hex32]
    parts_root: Optional[Hex32]
    issuer_signer: Address
    counterparty_signer: Address
    issuer_signature: Signature
    counterparty_signature: Signature
    block: int
    block_time: int
    tx_hash: Hex32


class ReplicaHealth(Exact):
    """The verify tier's read replica of the mirror (PARTLEDGER_INDEX_REPLICA_URL), as this process sees it."""

    configured: bool
    reachable: Optional[bool] = Field(description="whether it answered its last check; null when not configured or not checked yet")
    serving: bool = Field(description="the verify tier reads it now; false: it reads the primary")
    lag_seconds: Optional[float] = Field(description="how far it was behind the primary at its last check (an upper bound)")
    max_lag_seconds: Optional[float] = Field(description="beyond this lag the verify tier reads the primary")
    checked_at: Optional[float] = Field(description="unix time of its last check")
    message: str = Field(description="why it is not read now (down, lagging, a failed read); empty while it is")


class Health(Exact):
    block: int = Field(description="the indexed block the answer reflects; -1 before the first")
    chain_id: int
    head: Optional[int] = Field(description="the node's head; null when the node does not answer")
    indexed_block: Optional[int]
    lag: Optional[int]
    indexer_healthy: bool
    indexer_message: str
    indexer_updated_at: Optional[float]
    replica: ReplicaHealth
    status: Literal["ok", "degraded"]
    time: float


# --- commands ---------------------------------------------------------------------------------------------------


class CommandAccepted(Exact):
    """A command written to the outbox: follow it at GET /v1/commands/{command_id}."""

    command_id: str
    status: Literal["accepted"]
    kind: str
    parts: int
    idempotent_replay: Omittable[Literal[True]] = Field(default=None, description="present when this answers a repeated Idempotency-Key")


class CommandItemState(Exact):
    parts: int
    state: str = Field(description="pending, signed, sent, mined, confirmed or rejected")
    relay_request: Omittable[str] = Field(
        default=None, description="a custodial single-part item relayed in a batch: its relay request (GET /v1/relay/{id})",
    )


class CommandTransaction(Exact):
    tx_hash: Hex32
    block: Optional[int]


class CommandError(Exact):
    error: Optional[str] = Field(description="the contract's custom error")
    args: list[Any]
    message: Optional[str]


class CommandStatus(Exact):
    command_id: str
    kind: str
    status: Literal["accepted", "submitted", "confirmed", "rejected"]
    organisation: int
    site_key: Address
    re_signed_by: list[Address] = Field(description="keys that signed in site_key's stead, after it was revoked")
    parts: int
    summary: dict[str, Any] = Field(description="the request's arguments that are not per part; they vary with the kind")
    accepted_at: float
    actor: str = Field(description='who sent it: "user:<username>" (a console user) or "key:<key id>" (an API key)')
    items: list[CommandItemState]
    transactions: list[CommandTransaction]
    block: Optional[int] = Field(description="the block that confirmed it, once confirmed")
    errors: list[CommandError]


# --- trade evidence ---------------------------------------------------------------------------------------------


class AttestationMessage(Exact):
    """The EIP-712 Attestation both parties sign (EvidenceLedger)."""

    docHash: Hex32  # noqa: N815 - the Solidity struct's field names
    docType: Uint  # noqa: N815
    issuer: Uint
    counterparty: Uint
    previous: Hex32
    partsRoot: Hex32  # noqa: N815
    nonce: Hex32
    deadline: Uint


class Eip712Domain(Exact):
    name: str
    version: str
    chainId: Uint  # noqa: N815 - EIP-712 field names
    verifyingContract: Address  # noqa: N815


class Proposal(Exact):
    proposal_id: str
    attestation: AttestationMessage
    domain: Eip712Domain
    issuer_signer: Address
    issuer_signature: Signature
    counterparty_signer: Optional[Address]
    command_id: Optional[str] = Field(description="the anchoring command, once countersigned")
    status: Literal["awaiting_countersignature", "countersigned"]


class CountersignAccepted(CommandAccepted):
    proposal_id: str


class CountersignedCommand(CommandStatus):
    """The answer to a countersignature of a proposal countersigned already: its anchoring command as it stands."""

    proposal_id: str


# --- proof bundles (docs/proof-bundle.md, partledger.proofs.verifier.BUNDLE_SCHEMA) -----------------------------


class BundleContracts(Exact):
    ConsortiumRegistry: Address
    PartLedger: Address
    EvidenceLedger: Address


class BundleBlock(Exact):
    number: Uint
    hash: Hex32
    header: Hex = Field(description="the block header, RLP")
    fields: dict[str, str] = Field(description="the header decoded, as JSON-RPC writes it")


class BundleTransaction(Exact):
    index: Uint
    hash: Hex32
    type: Uint
    from_: Address = Field(alias="from")
    to: Address
    nonce: Uint
    raw: Hex
    proof: list[Hex]


class BundleReceipt(Exact):
    status: Uint
    logCount: Uint  # noqa: N815 - the bundle format's field names
    raw: Hex
    proof: list[Hex]


class BundleEvent(Exact):
    logIndexInReceipt: Uint  # noqa: N815
    address: Address
    name: str
    signature: str
    topics: list[Hex32]
    data: Hex
    args: dict[str, Any] = Field(description="the event's arguments, ABI-decoded; they vary with the event")


class RegistryKey(Exact):
    key: Address
    orgId: Uint  # noqa: N815
    site: Hex32
    addedBlock: Uint  # noqa: N815
    revokedBlock: Uint  # noqa: N815
    recordProof: list[Hex]  # noqa: N815
    siteProof: list[Hex]  # noqa: N815


class RegistryOrganisation(Exact):
    orgId: Uint  # noqa: N815
    roles: Uint
    suspended: bool
    proof: list[Hex]


class BundleRegistry(Exact):
    address: Address
    accountProof: list[Hex]  # noqa: N815
    keys: list[RegistryKey]
    organisations: list[RegistryOrganisation]


class ProofBundleBase(Exact):
    format: Literal["partledger-proof/1"]
    chainId: Uint  # noqa: N815
    contracts: BundleContracts
    block: BundleBlock
    headerChain: list[Hex] = Field(description="RLP headers of the blocks after `block`, up to chain_to")  # noqa: N815
    transaction: BundleTransaction
    receipt: BundleReceipt
    event: BundleEvent
    registry: BundleRegistry


class TypedDataField(Exact):
    name: str
    type: str


class AttestationTypedData(Exact):
    types: dict[str, list[TypedDataField]]
    primaryType: Literal["Attestation"]  # noqa: N815
    domain: Eip712Domain
    message: AttestationMessage
    digest: Hex32


class PartySignature(Exact):
    party: Literal["issuer", "counterparty"]
    orgId: Uint  # noqa: N815
    signer: Address
    signature: Hex


class DocumentSalt(Exact):
    salt: Hex32
    contentHash: Hex32  # noqa: N815


class BatchRecordProof(Exact):
    types: list[str]
    value: list[Any] = Field(description="the record: hex for bytes, EIP-55 for addresses, numbers for integers")
    leaf: Hex32
    proof: list[Hex32]


class EventProofBundle(ProofBundleBase):
    """Proof bundle of a lifecycle event (or any PartLedger log that is no document or batch)."""

    subject: Literal["event"]


class DocumentProofBundle(ProofBundleBase):
    """Proof bundle of an anchored trade document."""

    subject: Literal["document"]
    typedData: AttestationTypedData  # noqa: N815
    signatures: list[PartySignature]


class SaltedDocumentProofBundle(DocumentProofBundle):
    """Proof bundle of an anchored trade document, with the salt and content hash of its file."""

    document: DocumentSalt


class BatchProofBundle(ProofBundleBase):
    """Proof bundle of an anchored batch root."""

    subject: Literal["batch"]


class BatchRecordProofBundle(ProofBundleBase):
    """Proof bundle of one record of an anchored batch, with its inclusion proof."""

    subject: Literal["batch-record"]
    batchRecord: BatchRecordProof  # noqa: N815


LogProofBundle = Annotated[Union[EventProofBundle, DocumentProofBundle, BatchProofBundle], Field(discriminator="subject")]


class VerifierCheck(Exact):
    name: str
    ok: bool
    detail: str


class VerifierFact(Exact):
    label: str
    value: str


class BundleVerdict(Exact):
    """The offline verifier's verdict (partledger.proofs.verifier.Verdict.to_dict)."""

    valid: bool
    failed: list[str]
    checks: list[VerifierCheck]
    facts: list[VerifierFact]


class DocumentCheck(Exact):
    doc_hash: Hex32 = Field(description="keccak256(salt || content_hash)")
    content_hash: Hex32 = Field(description="keccak256 of the file sent")
    verdict: BundleVerdict
    bundle: SaltedDocumentProofBundle


# --- the audit log ----------------------------------------------------------------------------------------------


class AuditBatchRef(Exact):
    root: Hex32
    command_id: Optional[str] = Field(description="the command anchoring it; null until handed to the outbox")


class AuditEntry(Exact):
    id: int
    org_id: int
    key_id: str
    actor: str = Field(description='who read: "user:<username>" (a console user) or "key:<key id>" (an API key)')
    method: str
    target: str = Field(description="path and query string")
    status: int
    at: float
    batch_id: Optional[int]
    batch: Optional[AuditBatchRef]


class AuditLogPage(Exact):
    items: list[AuditEntry]
    record_types: list[str] = Field(description="ABI types of an entry's Merkle leaf")
    record_fields: list[str] = Field(description="what each of record_types holds")


class AuditBatchSubmitted(Exact):
    batch_id: int
    root: Hex32
    entries: int
    command_id: str


class AuditAnchoring(Exact):
    submitted: list[AuditBatchSubmitted]


# --- scans ------------------------------------------------------------------------------------------------------


class ScanView(Exact):
    """What every view of a recorded scan shows."""

    scan_id: Hex16
    part_id: Hex32
    gtin: str
    serial: str
    scanned_at: float
    verdict: str = Field(description="the verdict the scan was given (a value of Verdict when it was given)")


class ScanFlag(ScanView):
    flag: str
    detail: dict[str, Any] = Field(description="the evidence; it varies with the flag")
    location: Optional[tuple[float, float]] = Field(description="coarse latitude and longitude, when the scanner sent them")
    context: Optional[Literal["purchase", "vehicle"]]
    client: Hex16 = Field(description="the scanning client's pseudonym (keyed hash)")
    anchored_root: Optional[Hex32]


class ScanLeaf(Exact):
    types: list[str]
    value: list[Any]


class ScanAnchoring(Exact):
    block: int
    tx_hash: Hex32
    org_id: int


class ScanBatchProof(Exact):
    root: Hex32
    proof: list[Hex32]
    scans: Optional[int]
    command_id: Optional[str]
    anchored: Optional[ScanAnchoring] = Field(description="where the root is on chain, once indexed")


class ScanRecordProof(ScanView):
    flags: list[str]
    location: Optional[tuple[float, float]]
    client: Hex16
    leaf: ScanLeaf
    batch: Optional[ScanBatchProof] = Field(description="its Merkle batch and inclusion proof, once batched")


class VerdictPart(Exact):
    part_id: Hex32
    manufacturer: OrganisationRef
    status: Optional[PartStatusName]
    recalled: bool


class VerdictRecall(Exact):
    notice_hash: Hex32
    block: int
    by: Optional[str] = Field(description="the recalling organisation's name")
    notice: Optional[RecallNoticeView] = Field(description="the notice's text; null when this service holds none for the hash")


class RecalledPartRef(Exact):
    part_id: Hex32
    gtin: Optional[str]
    serial: Optional[str]


class ContainedRecallView(Exact):
    """The part of a recalled lot nearest the top of the scanned assembly, and its recall."""

    part: RecalledPartRef
    depth: int = Field(description="1: directly inside")
    count: int = Field(description="parts of recalled lots inside, in all")
    recall: Optional[VerdictRecall]


class LabelVerdict(Exact):
    """The verdict on a scanned label: public-class data only."""

    verdict: Verdict
    severity: Literal["ok", "warning", "danger"]
    suspicious: bool
    flags: list[str]
    gtin: str
    serial: str
    signature: Literal["valid", "invalid", "revoked", "missing", "unchecked"]
    block: int
    part: Omittable[VerdictPart] = Field(default=None, description="present when the part is registered")
    recall: Omittable[VerdictRecall] = Field(default=None, description="present when its lot is recalled")
    contains_recalled: Omittable[ContainedRecallView] = Field(default=None, description="present when a part of a recalled lot is inside it, at any depth")
    remanufactured_from: Omittable[RecalledPartRef] = Field(default=None, description="present when it was remanufactured: the part it was made from")
    label_warning: Omittable[Literal["unsigned", "signature_invalid", "key_revoked"]] = Field(
        default=None, description="present when the verdict (recalled comes first) is not the label's own: what is wrong with the label"
    )
    vin_match: Omittable[Optional[bool]] = Field(default=None, description="present when a VIN was checked")
    scan_id: Hex16


class Problem(Exact):
    code: str
    message: str


class DecodedLabel(Exact):
    text: str
    verdict: LabelVerdict


class UnreadableLabel(Exact):
    text: str = Field(description="the QR code's text, which is no Digital Link")
    error: Problem


class ImageScan(Exact):
    codes: list[Union[DecodedLabel, UnreadableLabel]]


LinkTarget = dict[str, Union[str, list[str]]]  # href, title, type, hreflang


class Linkset(Exact):
    """RFC 9264 linkset (application/linkset+json) of a part's Digital Link: per anchor, its GS1 link types and their
    targets. Without nested models, so that its JSON schema stands alone (it documents a second media type)."""

    linkset: list[dict[str, Union[str, list[LinkTarget]]]]


# --- the OpenAPI schema -----------------------------------------------------------------------------------------


def keep_documented_bodies(app: FastAPI) -> None:
    """A handler annotated `-> dict[str, Any]` gets that type as its response model (FastAPI serialises the answer
    with it), and the OpenAPI schema merges its loose description (`"type": "object", "additionalProperties": true`)
    into the model the route documents. Leaves the documented model alone in the app's schema."""
    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build_schema()
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                for response in operation.get("responses", {}).values():
                    body = response.get("content", {}).get("application/json", {}).get("schema", {})
                    documented = {"$ref", "oneOf", "anyOf"} & set(body)
                    if documented and body.get("type") == "object" and body.get("additionalProperties") is True:
                        for key in ("type", "additionalProperties", "title"):
                            body.pop(key, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# --- EPCIS 2.0 (ledger_service.epcis) ------------------------------------------------------------------------------


class EpcisEventProofBundle(BatchRecordProofBundle):
    """Proof bundle of a captured EPCIS event: its organisation's anchored EPCIS batch, the event's record (event
    hash, eventID, organisation, seq) with its inclusion proof, and the event as stored and hashed."""

    epcisEvent: dict[str, Any] = Field(description="the event, without its private fields: its EPCIS 2.0 canonical hash is the record's first value")  # noqa: N815


class CaptureAccepted(Exact):
    captureID: str  # noqa: N815
    location: str
    eventCount: int  # noqa: N815


class CaptureError(Exact):
    type: str = Field(description="the EPCIS exception type")
    title: str
    status: int = Field(description="the HTTP status this error would have alone")
    eventIndex: Optional[int]  # noqa: N815
    eventID: Optional[str]  # noqa: N815
    code: str = Field(description="stable machine-readable code")
    message: str


class CaptureJob(Exact):
    """A capture job as the EPCIS REST binding describes it (captureID, running, success, captureErrorBehaviour,
    errors), with this service's progress."""

    captureID: str  # noqa: N815
    createdAt: str  # noqa: N815
    finishedAt: Optional[str]  # noqa: N815
    running: bool
    success: Optional[bool]
    captureErrorBehaviour: Literal["rollback", "proceed"]  # noqa: N815
    errors: list[CaptureError]
    state: Literal["queued", "running", "done"]
    eventCount: int  # noqa: N815
    capturedCount: int  # noqa: N815
    errorCount: int  # noqa: N815


class EventCaptured(Exact):
    eventID: Optional[str]  # noqa: N815
    captureID: str  # noqa: N815


class Gs1LocationView(Exact):
    gln: str
    extension: Optional[str]
    site: Optional[str]
    uri: str


class Gs1Identity(Exact):
    organisation: int
    gln: Optional[str] = Field(description="the party GLN (AI 417) derived events name the organisation by")
    party_glns: list[str] = Field(description="more party GLNs it answers to")
    company_prefix: Optional[str]
    party: str = Field(description="the party identifier derived events use")
    locations: list[Gs1LocationView]


EPCIS_DOCUMENT_SCHEMA = {
    "type": "object",
    "required": ["@context", "type"],
    "properties": {"@context": {}, "type": {"type": "string"}, "schemaVersion": {"type": "string"}, "creationDate": {"type": "string"}, "epcisBody": {"type": "object"}},
    "description": "an EPCIS 2.0 document (GS1's EPCIS JSON schema)",
}
EPCIS_EVENT_SCHEMA = {
    "type": "object",
    "required": ["type", "eventTime"],
    "properties": {"@context": {}, "type": {"type": "string"}, "eventID": {"type": "string"}, "eventTime": {"type": "string"}},
    "description": "an EPCIS 2.0 event (GS1's EPCIS JSON schema)",
}


class CaptureJobs(Exact):
    items: list[CaptureJob]


class Gs1Identities(Exact):
    items: list[Gs1Identity]
