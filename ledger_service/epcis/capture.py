"""EPCIS 2.0 capture: documents in, ledger commands and anchored consortium data out.

POST /capture (ledger_service.epcis.routes) checks the document's shape, stores it as a capture job and answers 202:
from then on the job survives any crash. The capture worker (a thread of the service, resumed at start) runs each job:

1. every event: the GS1 JSON Schema and CBV 2.0 words (partledger.epcis.schema), its canonical hash
   (partledger.epcis.hashing; computed over the event without its private fields), eventID (given, or the hash),
   idempotency (an eventID captured before with the same hash is skipped; with another hash it is an error), parties
   and locations (ledger_service.epcis.identities: an unknown one is an error), EPCs (partledger.epcis.identifiers),
   and the ledger operation it maps to (ledger_service.epcis.mapping);
2. mapped events are checked against the mirror in order, each seeing the effect of the ones before it (an overlay
   of parts, logistic units and what is inside what), with the rules the outbox's pre-checks and
   ledger_service.containment_checks apply. An event naming no part or unit the ledger knows is consortium data only;
3. with captureErrorBehaviour "rollback" (the default) any error captures nothing; with "proceed" the events without
   errors are captured;
4. events go in as commands, grouped (one command per operation, signer and shared arguments) into stages: an event
   that touches a part an earlier command of this job moves waits until that command is final and mirrored;
5. the job ends when every command is final. An event whose command the chain refused becomes a per-event error
   (with the contract's error) and is taken out again.

Every captured event then waits for its organisation's next EPCIS batch: a StandardMerkleTree of (event hash,
eventID, organisation, seq) whose root the organisation's site key anchors (anchor_batch, kind "epcis"), so that each
captured event, mapped or not, has a proof bundle (GET /events/{eventID}/proof).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection

from indexer.tables import Containment, LogisticUnit, Lot, Organisation, Part
from ledger_service.auth import Principal
from ledger_service.deps import Services
from ledger_service.epcis import mapping
from ledger_service.epcis.identities import Directory, Place, UnknownParty
from ledger_service.epcis.tables import EpcisBatch, EpcisCapture, EpcisCommand, EpcisEvent, EpcisEventEpc
from ledger_service.operations import OPERATIONS
from partledger.db import one_of
from partledger.epcis.hashing import event_hash, hash_digest
from partledger.epcis.identifiers import ID_GS1, Epc, epc_key, parse_epc
from partledger.epcis.vocabulary import bare_word
from partledger.errors import ValidationError
from partledger.ids import is_valid_serial, logistic_unit_id, normalize_vin, part_id, validate_lot, validate_serial
from partledger.model import PartStatus, Role

log = logging.getLogger("partledger.service.epcis")

T_JOB, T_EVENT, T_EPC = EpcisCapture.__table__, EpcisEvent.__table__, EpcisEventEpc.__table__
T_ECMD, T_EBATCH = EpcisCommand.__table__, EpcisBatch.__table__
T_PART, T_LOT, T_ORG = Part.__table__, Lot.__table__, Organisation.__table__
T_UNIT, T_CONTAIN = LogisticUnit.__table__, Containment.__table__
UNIT_KEY = f"{ID_GS1}/00/"  # how an SSCC's canonical key starts (partledger.epcis.identifiers.epc_key)
UNIT_OPERATIONS = frozenset({"ship", "receive", "cancel"})  # the ObjectEvent operations a logistic unit takes part in
RECALL_BLOCKED = frozenset({"ship", "sell", "install"})  # a container holding a recalled part is held back from these

CAPTURE_LIMIT = 20_000  # events per document (GS1-EPCIS-Capture-Limit)
BEHAVIOURS = ("rollback", "proceed")
BATCH_KIND = "epcis"
BATCH_TYPES = ("bytes32", "string", "uint32", "uint64")  # event hash, eventID, organisation, seq
BATCH_SIZE = 4_096
INSERT_CHUNK = 2_000
WORKERS = 2
S = PartStatus

# What an operation leaves a part as: (status, custodian is the recipient?) per the contract's rules
_RESULT: dict[str, PartStatus] = {
    "ship": S.IN_TRANSIT, "receive": S.IN_STOCK, "cancel": S.IN_STOCK, "sell": S.SOLD, "install": S.INSTALLED,
    "remove": S.IN_STOCK, "quarantine": S.QUARANTINED, "release": S.IN_STOCK, "scrap": S.SCRAPPED, "recycle": S.RECYCLED,
}  # fmt: skip


class EventError(Exception):
    """A per-event error: a stable code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- the job's record ----------------------------------------------------------------------------------------


def create_job(services: Services, principal: Principal, *, raw: bytes, event_count: int, behaviour: str, state: str = "queued") -> str:
    """Stores a capture job (the document as received) and returns its id: once this returns, the job survives."""
    job_id = str(uuid.uuid4())
    with services.service_engine.begin() as conn:
        conn.execute(insert(T_JOB).values(
            id=job_id, org_id=principal.org_id, api_key_id=principal.key_id[:16], actor=principal.actor[:80], roles=int(principal.roles),
            sites=json.dumps(list(principal.sites)) if principal.sites is not None else None, behaviour=behaviour, state=state,
            event_count=event_count, document=zlib.compress(raw, 1), received_at=time.time(),
        ))  # fmt: skip
    return job_id


# A job's columns but its document: a client following a job asks several times a second, and reading a 20,000-event
# document back (1-2 MB compressed) each time took the service a tenth of a capture's time.
_VIEWED = [column for column in T_JOB.c if column.name != "document"]


def job_view(services: Services, principal: Principal, job_id: str) -> dict[str, Any] | None:
    """A capture job as GET /capture/{captureID} answers it (the standard's fields, then ours); None if not the
    caller's organisation's (auditors and regulators see every job)."""
    with services.service_engine.connect() as conn:
        row = conn.execute(select(*_VIEWED).where(T_JOB.c.id == job_id)).first()
    if row is None or (row.org_id != principal.org_id and not principal.sees_everything):
        return None
    return _view(row)


def list_jobs(services: Services, principal: Principal, *, limit: int = 50) -> list[dict[str, Any]]:
    with services.service_engine.connect() as conn:
        rows = conn.execute(
            select(*_VIEWED).where(T_JOB.c.org_id == principal.org_id).order_by(T_JOB.c.received_at.desc()).limit(limit)
        ).all()
    return [_view(row) for row in rows]


def _view(row: Any) -> dict[str, Any]:
    errors = json.loads(row.errors)
    return {
        "captureID": row.id,
        "createdAt": _iso(row.received_at),
        "finishedAt": _iso(row.finished_at) if row.finished_at else None,
        "running": row.state != "done",
        "success": bool(row.success) if row.state == "done" else None,
        "captureErrorBehaviour": row.behaviour,
        "errors": [
            {"type": "epcisException:CaptureLimitExceededException" if error["code"] == "capture_limit" else "epcisException:ValidationException",
             "title": error["message"], "status": 409 if error["code"] in _CONFLICTS else 400, **error}
            for error in errors
        ],
        "state": row.state,
        "eventCount": row.event_count,
        "capturedCount": row.captured_count,
        "errorCount": row.error_count,
    }  # fmt: skip


_CONFLICTS = {
    "invalid_state", "already_registered", "event_id_reused", "lot_recalled", "chain_refused", "part_contained", "not_in_container",
    "containment_cycle", "container_not_empty", "contains_recalled",
}  # fmt: skip


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(seconds * 1000) % 1000:03d}Z"


# --- one event, prepared -------------------------------------------------------------------------------------


@dataclass
class Prepared:
    """An event after its first pass (prepare_event), which may run in the preparing process: what comes back from
    there is pickled, so it carries what the service needs and no more (the stored JSON as text, and of the event's
    fields only those the ledger checks read)."""

    index: int
    event: dict[str, Any]  # the fields the ledger checks read (CHECKED_FIELDS); the whole event is `body`
    body: str  # the event as stored: private fields out, eventID in
    private: dict[str, Any] | None
    event_id: str
    ni: str
    digest: bytes
    event_type: str
    action: str | None
    biz_step: str | None
    disposition: str | None
    biz_location: str | None
    read_point: str | None
    event_time_ms: int
    epcs: list[tuple[str, str, bytes | None]]  # (key, role, part id; for an SSCC the logistic unit's id)
    operation: str | None = None
    # A commissioning's registration as far as it needs no ledger state (_register_plan): (gtin, lot, serials, part
    # ids); or the error it gives, raised only where check_ledger comes to it; None when it commissions no SGTIN.
    register: tuple[str, str, list[str], list[bytes]] | tuple[str, str] | None = None
    place: Place | None = None
    parts: list[bytes] = field(default_factory=list)  # what the command names (a containment's contents)
    args: dict[str, Any] = field(default_factory=dict)
    touches: set[bytes] = field(default_factory=set)  # every id whose state it reads or changes (containers up to the outermost)


# What a repository sets itself: an event captured again (a lot's history exported from one deployment into another)
# is stored and hashed without them.
SERVER_FIELDS = frozenset({"recordTime", "partledger:eventHash"})
# The event's fields that check_ledger and the checks under it read.
CHECKED_FIELDS = (
    "bizTransactionList", "epcList", "ilmd", "destinationList", "childQuantityList", "inputQuantityList", "outputQuantityList",
    "partledger:vinHash", "partledger:noticeHash",
)  # fmt: skip
_EPC_ROLES = (("epcList", "epc"), ("childEPCs", "child"), ("inputEPCList", "input"), ("outputEPCList", "output"))
_CLASS_LISTS = (("quantityList", "quantity"), ("childQuantityList", "quantity"), ("inputQuantityList", "input"), ("outputQuantityList", "output"))


def _ms(value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise EventError("invalid_time", f"{what} is a date-time string")
    try:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise EventError("invalid_time", f"{what} {value!r} is not an ISO 8601 date-time") from None


def prepare_event(index: int, raw: Any, *, context: Any, directory: Directory) -> Prepared:
    """The checks that need no ledger state: shape, hash, identifiers, parties, the operation it maps to."""
    if not isinstance(raw, dict):
        raise EventError("invalid_event", "an event is a JSON object")
    event = {name: value for name, value in raw.items() if name not in SERVER_FIELDS}
    private = {name: event.pop(name) for name in mapping.PRIVATE_FIELDS if name in event} or None
    event_type = str(event.get("type", ""))
    ni = event_hash(event, context=context)
    event_id = event.get("eventID") or ni
    if not isinstance(event_id, str) or len(event_id) > 512:
        raise EventError("invalid_event", "eventID is a URI of at most 512 characters")
    event["eventID"] = event_id
    if "@context" not in event and context is not None:
        event["@context"] = context
    named: list[tuple[Any, str]] = [(value, role) for name, role in _EPC_ROLES for value in event.get(name) or ()]
    if event.get("parentID"):
        named.append((event["parentID"], "parent"))
    for name, role in _CLASS_LISTS:
        for element in event.get(name) or ():
            if isinstance(element, dict) and isinstance(element.get("epcClass"), str):
                named.append((element["epcClass"], role))
    parsed = [_parse(value) for value, _ in named]
    epcs = [_epc(epc, role) for epc, (_, role) in zip(parsed, named)]
    biz_location = _place_id(event.get("bizLocation"))
    read_point = _place_id(event.get("readPoint"))
    place = None
    for value in (biz_location, read_point):  # a GS1 or member identifier must name a member; others (geo:) pass
        if value is not None:
            found = _lookup(directory, value)
            place = place or found
    for name, key in (("sourceList", "source"), ("destinationList", "destination")):
        for element in event.get(name) or ():
            if isinstance(element, dict) and isinstance(element.get(key), str):
                _lookup(directory, element[key])
    biz_step = bare_word(event["bizStep"]) if isinstance(event.get("bizStep"), str) else None
    disposition = bare_word(event["disposition"]) if isinstance(event.get("disposition"), str) else None
    action = event.get("action") if isinstance(event.get("action"), str) else None
    prepared = Prepared(
        index=index, event={name: event[name] for name in CHECKED_FIELDS if name in event}, body=orjson.dumps(event).decode(), private=private,
        event_id=event_id, ni=ni, digest=hash_digest(ni), event_type=event_type, action=action, biz_step=biz_step, disposition=disposition,
        biz_location=biz_location, read_point=read_point, event_time_ms=_ms(event.get("eventTime"), "eventTime"), epcs=epcs, place=place,
    )  # fmt: skip
    if event_type in ("AggregationEvent", "TransformationEvent"):
        kinds = {role: [epc.kind for epc, (_, r, _) in zip(parsed, epcs) if r == role] for role in ("parent", "input", "output")}
        prepared.operation = mapping.containment_operation_for(
            event_type=event_type, action=action, biz_step=biz_step, parent=next(iter(kinds["parent"]), None), inputs=kinds["input"], outputs=kinds["output"],
        )  # fmt: skip
    else:
        prepared.operation = mapping.operation_for(event_type=event_type, action=action, biz_step=biz_step, disposition=disposition)
    if prepared.operation == "register":
        try:
            prepared.register = _register_plan(event, parsed, epcs)
        except EventError as exc:
            prepared.register = (exc.code, str(exc))
    return prepared


def _parse(value: Any) -> Epc:
    if not isinstance(value, str):
        raise EventError("invalid_epc", f"an EPC is a URI string, not {value!r}")
    try:
        return parse_epc(value)
    except ValidationError as exc:
        raise EventError("invalid_epc", f"{value!r}: {exc}") from None


def _epc(epc: Epc, role: str) -> tuple[str, str, bytes | None]:
    if epc.kind == "sscc" and epc.sscc is not None:
        return epc.key, role, logistic_unit_id(epc.sscc)
    pid = part_id(epc.gtin, epc.serial) if epc.kind == "sgtin" and epc.gtin and epc.serial is not None and is_valid_serial(epc.serial) else None
    return epc.key, role, pid


def _place_id(value: Any) -> str | None:
    """A bizLocation's or readPoint's id, under its canonical key when it is a GS1 one (so that a query in either
    form finds it)."""
    if isinstance(value, dict):
        value = value.get("id")
    if not isinstance(value, str):
        return None
    try:
        return epc_key(value)
    except ValidationError:
        return value


def _lookup(directory: Directory, value: str) -> Place | None:
    try:
        return directory.lookup(value)
    except UnknownParty as exc:
        raise EventError("unknown_party", str(exc)) from None


def _resolve(directory: Directory, value: str) -> Place:
    try:
        return directory.resolve(value)
    except UnknownParty as exc:
        raise EventError("unknown_party", str(exc)) from None


# --- the ledger's view, event after event ---------------------------------------------------------------------


@dataclass
class PartState:
    status: PartStatus
    custodian: int
    recipient: int | None
    recalled: bool
    manufacturer: int
    lot: int
    unit: bool = False  # a logistic unit: on chain a pseudo-part of lot 0


NESTING_LIMIT = 64  # containers followed up from a part (the chain has no cycles; never loop on a corrupt mirror)


class Overlay:
    """The mirror's parts and logistic units as this job's earlier events leave them, and what is directly inside what.

    A contained part's own state is never read: what may be done to it follows its outermost container's, as on
    chain (`outermost`). Links are read from the mirror's containment table (in bulk for the ids the job names, one by
    one for the rest), then kept here as the job's events change them."""

    def __init__(self, conn: Connection, part_ids: Iterable[bytes], *, unit_ids: Iterable[bytes] = ()) -> None:
        self.conn = conn
        self.parts: dict[bytes, PartState | None] = {}
        self.recalled_lots: set[int] = set()
        self._container: dict[bytes, bytes | None] = {}  # id -> its direct container (None: loose), as far as read
        self._contents: dict[bytes, list[bytes]] = {}  # container -> what is directly inside it, as far as read
        self._holders: set[bytes] = set()  # ids read in bulk that hold something in the mirror
        self._read: set[bytes] = set()  # ids whose links were read in bulk
        self._links = conn.execute(select(T_CONTAIN.c.part_id).limit(1)).first() is not None  # any containment at all
        ids, units = list(dict.fromkeys(part_ids)), list(dict.fromkeys(unit_ids))
        self._load(ids, units=False)
        self._load([uid for uid in units if uid not in self.parts], units=True)
        if self._links:
            self._read_links([pid for pid in dict.fromkeys(ids + units) if pid in self.parts])

    def _load(self, ids: list[bytes], *, units: bool) -> None:
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            if units:
                rows = self.conn.execute(select(T_UNIT.c.unit_id, T_UNIT.c.status, T_UNIT.c.custodian, T_UNIT.c.recipient).where(one_of(self.conn, T_UNIT.c.unit_id, chunk)))
                for row in rows:
                    self.parts[bytes(row.unit_id)] = PartState(PartStatus(row.status), row.custodian, row.recipient, False, 0, 0, unit=True)
                continue
            rows = self.conn.execute(select(
                T_PART.c.part_id, T_PART.c.status, T_PART.c.custodian, T_PART.c.recipient, T_PART.c.recalled, T_PART.c.manufacturer, T_PART.c.lot,
            ).where(one_of(self.conn, T_PART.c.part_id, chunk)))  # fmt: skip
            for row in rows:
                self.parts[bytes(row.part_id)] = PartState(PartStatus(row.status), row.custodian, row.recipient, bool(row.recalled), row.manufacturer, row.lot)

    def _read_links(self, ids: list[bytes]) -> None:
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            for part, container in self.conn.execute(select(T_CONTAIN.c.part_id, T_CONTAIN.c.container_id).where(one_of(self.conn, T_CONTAIN.c.part_id, chunk))):
                self._container.setdefault(bytes(part), bytes(container))
            self._holders.update(bytes(row[0]) for row in self.conn.execute(select(T_CONTAIN.c.container_id).where(one_of(self.conn, T_CONTAIN.c.container_id, chunk)).distinct()))
            self._read.update(chunk)

    def get(self, pid: bytes) -> PartState | None:
        return self.parts.get(pid)

    def ensure(self, ids: Iterable[bytes]) -> None:
        """Reads the parts and units among `ids` not read yet (what a container holds, found on the way)."""
        missing = [pid for pid in dict.fromkeys(ids) if pid not in self.parts]
        self._load(missing, units=False)
        self._load([pid for pid in missing if pid not in self.parts], units=True)

    def container_of(self, pid: bytes) -> bytes | None:
        if pid in self._container:
            return self._container[pid]
        if not self._links or pid in self._read:
            return None
        found = self.conn.execute(select(T_CONTAIN.c.container_id).where(T_CONTAIN.c.part_id == pid)).scalar()
        self._container[pid] = bytes(found) if found is not None else None
        return self._container[pid]

    def contents_of(self, container: bytes) -> list[bytes]:
        """What is directly inside `container` now."""
        found = self._contents.get(container)
        if found is None:
            stored: list[bytes] = []
            if self._links and (container not in self._read or container in self._holders):
                stored = [bytes(row[0]) for row in self.conn.execute(select(T_CONTAIN.c.part_id).where(T_CONTAIN.c.container_id == container).order_by(T_CONTAIN.c.part_id))]
            for child in stored:
                self._container.setdefault(child, container)
            found = [child for child in stored if self._container.get(child) == container]
            found += [child for child, holder in self._container.items() if holder == container and child not in found]
            self._contents[container] = found
        return found

    def link(self, pid: bytes, container: bytes) -> None:
        self._container[pid] = container
        if container in self._contents:
            self._contents[container].append(pid)

    def unlink(self, pid: bytes, container: bytes) -> None:
        self._container[pid] = None
        if container in self._contents:
            self._contents[container].remove(pid)

    def containers(self, pid: bytes) -> list[bytes]:
        """The containers of `pid`, the direct one first and the outermost last."""
        found: list[bytes] = []
        current = self.container_of(pid)
        while current is not None and current not in found and len(found) < NESTING_LIMIT:
            found.append(current)
            current = self.container_of(current)
        return found

    def outermost(self, pid: bytes) -> bytes:
        above = self.containers(pid)
        return above[-1] if above else pid

    def inside(self, container: bytes) -> list[bytes]:
        """Everything inside `container` at any depth, read into the overlay."""
        found: list[bytes] = []
        frontier = [container]
        while frontier and len(found) < 1_000_000:
            level = [child for holder in frontier for child in self.contents_of(holder) if child not in found and child != container]
            found += level
            frontier = level
        self.ensure(found)
        return found


def _names_the_ledger(prepared: Prepared, overlay: Overlay) -> bool:
    """Whether a containment or remanufacturing event names a part or logistic unit the ledger knows."""
    return any(pid is not None and overlay.get(pid) is not None for _, role, pid in prepared.epcs if role in ("parent", "child", "input", "output"))


def _reason(state: PartState, org_id: int) -> str | None:
    """Why `state` (an outermost container's, or a loose part's) cannot be packed, unpacked or assembled by `org_id`."""
    if state.status != S.IN_STOCK:
        return f"status is {state.status.name.lower()}"
    if state.custodian != org_id:
        return f"custodian is organisation {state.custodian}"
    return None


def check_ledger(prepared: Prepared, *, org_id: int, roles: Role, overlay: Overlay, conn: Connection, directory: Directory) -> None:
    """Decides what a mapped event does to the ledger (prepared.operation, .parts, .args), or raises EventError;
    an event that names no part the ledger knows becomes consortium data only (operation None). Updates the
    overlay with the event's effect."""
    op_kind = prepared.operation
    if op_kind is None:
        return
    if op_kind in mapping.CONTAINMENT_OPERATIONS or op_kind == "remanufacture":
        keys = [key for key, role, _ in prepared.epcs if role in ("input", "output")]
        if not _names_the_ledger(prepared, overlay) or (op_kind == "remanufacture" and len(set(keys)) < 2):
            prepared.operation = None  # names nothing of the ledger (or repairs a part into itself): consortium data
            return
    event = prepared.event
    if prepared.place is not None and prepared.place.org_id != org_id:
        raise EventError("not_your_location", f"the event happened at organisation {prepared.place.org_id}'s location: only it captures what it does")
    op = OPERATIONS[op_kind]
    if op.roles and not roles & op.roles:
        raise EventError("missing_role", f"{op_kind} needs one of the roles {', '.join(r.name.lower() for r in Role if op.roles & r)}")
    doc_hashes = [mapping.parse_doc_urn(t.get("bizTransaction", "")) for t in event.get("bizTransactionList") or () if isinstance(t, dict)]
    doc = next((h for h in doc_hashes if h is not None), None)
    prepared.args["doc_hash"] = "0x" + doc.hex() if doc else None
    if op_kind == "recall":
        _check_recall(prepared, org_id=org_id, roles=roles, overlay=overlay, conn=conn)
        return
    if op_kind in mapping.CONTAINMENT_OPERATIONS:
        _check_containment(prepared, org_id=org_id, overlay=overlay)
        return
    if op_kind == "remanufacture":
        _check_remanufacture(prepared, org_id=org_id, overlay=overlay)
        return
    sgtins = [pid for key, role, pid in prepared.epcs if role == "epc"]
    if op_kind == "register":
        _check_register(prepared, org_id=org_id, overlay=overlay)
        return
    known = [pid for pid in sgtins if pid is not None and overlay.get(pid) is not None]
    if not known:
        prepared.operation = None  # names no part of the ledger: consortium data
        return
    if len(known) != len(sgtins) or len(prepared.epcs) != len(sgtins):
        raise EventError("unknown_part", f"{len(sgtins) - len(known)} of the event's EPCs are not parts of the ledger")
    if len(set(known)) != len(known):
        raise EventError("duplicate_parts", "an EPC appears twice in the event")
    units = [pid for pid in known if overlay.parts[pid].unit]  # type: ignore[union-attr]
    if units and op_kind not in UNIT_OPERATIONS:
        raise EventError("logistic_unit", f"{len(units)} of the EPCs are logistic units (SSCC), which cannot be {op_kind}: only shipped, received or cancelled")
    contained = [(pid, container) for pid in known if (container := overlay.container_of(pid)) is not None]
    if contained:
        pid, container = contained[0]
        raise EventError("part_contained", f"{len(contained)} part(s) are inside a container and move only with it, e.g. 0x{pid.hex()} inside 0x{container.hex()}")
    to = None
    if op_kind == "ship":
        to = _destination(event, directory)
        if to == org_id:
            raise EventError("shipment_to_self", "the destination's owning party is the shipper itself")
        prepared.args["to"] = to
    if op_kind == "install":
        _check_install(prepared)
    problems = []
    for pid in known:
        state = overlay.get(pid)
        assert state is not None
        holder = state.recipient if op.holder == "recipient" else state.custodian
        if state.status not in op.from_statuses:
            problems.append(f"0x{pid.hex()} is {state.status.name.lower()}")
        elif holder != org_id:
            problems.append(f"0x{pid.hex()}'s {op.holder} is organisation {holder}")
        elif op.blocked_by_recall and state.recalled:
            problems.append(f"0x{pid.hex()}'s lot is recalled")
        elif to is not None and state.recalled and to != state.manufacturer:
            problems.append(f"0x{pid.hex()}'s lot is recalled: it goes back to its manufacturer or to a recycler only")
    if problems:
        raise EventError("invalid_state", f"{len(problems)} part(s) are not in a state to {op_kind}: " + "; ".join(problems[:5]))
    if op_kind in RECALL_BLOCKED:
        _check_recalled_inside(known, op_kind=op_kind, to=to, overlay=overlay, conn=conn)
    prepared.parts = known
    prepared.touches = set(known)
    for pid in known:
        state = overlay.get(pid)
        assert state is not None
        if op_kind == "ship":
            state.recipient = to
        elif op_kind == "receive":
            state.custodian, state.recipient = org_id, None
        elif op_kind == "cancel":
            state.recipient = None
        state.status = _RESULT[op_kind]


def _check_recalled_inside(ids: list[bytes], *, op_kind: str, to: int | None, overlay: Overlay, conn: Connection) -> None:
    """Containers holding a part of a recalled lot at any depth are not sold, installed or shipped (the chain cannot
    see inside them: ledger_service.containment_checks); a shipment may take them to a recycler, or to the
    manufacturer of every recalled part inside."""
    held_back: list[tuple[bytes, bytes]] = []
    recycler: bool | None = None
    for pid in ids:
        if not overlay.contents_of(pid):
            continue
        recalled = [part for part in overlay.inside(pid) if (state := overlay.get(part)) is not None and not state.unit and (state.recalled or state.lot in overlay.recalled_lots)]
        if not recalled:
            continue
        if op_kind == "ship" and to is not None:
            if recycler is None:
                roles = conn.execute(select(T_ORG.c.roles).where(T_ORG.c.org_id == to)).scalar()
                recycler = roles is not None and bool(Role(roles) & Role.RECYCLER)
            if recycler or all(overlay.parts[part].manufacturer == to for part in recalled):  # type: ignore[union-attr]
                continue
        held_back.append((pid, recalled[0]))
    if held_back:
        pid, part = held_back[0]
        allowed = " (it may go back to the recalled parts' manufacturer or to a recycler)" if op_kind == "ship" else ""
        done = {"ship": "shipped", "sell": "sold", "install": "installed"}[op_kind]
        raise EventError("contains_recalled", f"{len(held_back)} container(s) hold a part of a recalled lot and cannot be {done}{allowed}, e.g. 0x{pid.hex()} holding 0x{part.hex()}")


def _check_containment(prepared: Prepared, *, org_id: int, overlay: Overlay) -> None:
    """A packing, unpacking, assembly or disassembly, checked as PartLedger._contain and ._release would (and
    ledger_service.containment_checks before them): the container's outermost container in stock with the capturing
    organisation; contents loose in its stock to go in (no cycle), directly inside to come out."""
    op_kind, event = prepared.operation, prepared.event
    named = {role: [(key, pid) for key, r, pid in prepared.epcs if r == role] for role in ("parent", "child", "input", "output")}
    if prepared.event_type == "AggregationEvent":
        parent, children = named["parent"][0], named["child"]
        classes = event.get("childQuantityList")
    else:
        parent, children = (named["output"][0], named["input"]) if op_kind == "assemble" else (named["input"][0], named["output"])
        classes = event.get("inputQuantityList") or event.get("outputQuantityList")
    if classes:
        raise EventError("not_serialised", "a container of the ledger holds serialised parts and logistic units, not quantities of a class")
    parent_key, container = parent
    packing, of_unit = op_kind in ("pack", "assemble"), op_kind in ("pack", "unpack")
    held = overlay.get(container) if container is not None else None
    if held is None and not (op_kind == "pack" and container is not None):
        raise EventError("unknown_unit" if of_unit else "unknown_part", f"{parent_key} is not a {'logistic unit' if of_unit else 'part'} of the ledger")
    if held is not None and not of_unit and held.unit:
        raise EventError("logistic_unit", f"{parent_key} is a logistic unit: an assembly's parent is a part")
    assert container is not None
    outermost = overlay.outermost(container)
    if held is not None:
        state = overlay.get(outermost)
        reason = _reason(state, org_id) if state is not None else "it is unknown"
        if reason:
            raise EventError("invalid_state", f"the container {parent_key} is not in stock with organisation {org_id} ({reason})")
    if children:
        unknown = [key for key, pid in children if pid is None or overlay.get(pid) is None]
        if unknown:
            raise EventError("unknown_part", f"{len(unknown)} of the event's children are not parts or logistic units of the ledger, e.g. {unknown[0]}")
        ids = [pid for _, pid in children if pid is not None]
        if len(set(ids)) != len(ids):
            raise EventError("duplicate_parts", "an EPC appears twice in the event")
    else:  # a DELETE without childEPCs: everything directly inside, as the ledger has it now
        ids = list(overlay.contents_of(container))
        if not ids:
            raise EventError("nothing_inside", f"{parent_key} holds nothing to take out")
        overlay.ensure(ids)
    if op_kind == "assemble":
        units = [pid for pid in ids if overlay.parts[pid].unit]  # type: ignore[union-attr]
        if units:
            raise EventError("logistic_unit", f"{len(units)} of the children are logistic units, which cannot be assembled into a part")
    if packing:
        cycles = [pid for pid in ids if pid in (container, outermost)]
        if cycles:
            raise EventError("containment_cycle", f"0x{cycles[0].hex()} holds {parent_key} (or is it): it cannot go inside it")
        contained = [(pid, holder) for pid in ids if (holder := overlay.container_of(pid)) is not None]
        if contained:
            pid, holder = contained[0]
            raise EventError("part_contained", f"{len(contained)} of the children are inside a container already, e.g. 0x{pid.hex()} inside 0x{holder.hex()}")
        problems = [f"0x{pid.hex()}: {reason}" for pid in ids if (reason := _reason(overlay.parts[pid], org_id))]  # type: ignore[arg-type]
        if problems:
            raise EventError("invalid_state", f"{len(problems)} part(s) are not loose in organisation {org_id}'s stock: " + "; ".join(problems[:5]))
    else:
        outside = [pid for pid in ids if overlay.container_of(pid) != container]
        if outside:
            raise EventError("not_in_container", f"{len(outside)} of the children are not directly inside {parent_key}, e.g. 0x{outside[0].hex()}")
    if of_unit:
        sscc = parse_epc(parent_key).sscc
        prepared.args.update(sscc=sscc, unit_id="0x" + container.hex())
    else:
        prepared.args["parent"] = "0x" + container.hex()
    prepared.parts = ids
    prepared.touches = set(ids) | {container} | set(overlay.containers(container))
    if packing:
        if held is None:  # the packing creates the unit
            overlay.parts[container] = PartState(S.IN_STOCK, org_id, None, False, 0, 0, unit=True)
        for pid in ids:
            overlay.link(pid, container)
    else:
        for pid in ids:
            overlay.unlink(pid, container)
            state = overlay.parts[pid]
            assert state is not None
            state.status, state.custodian, state.recipient = S.IN_STOCK, org_id, None


def _check_remanufacture(prepared: Prepared, *, org_id: int, overlay: Overlay) -> None:
    """One part the ledger knows, loose and empty in the capturing manufacturer's stock, remanufactured into a new
    serialised part (its lot from ilmd), as PartLedger.remanufacturePart checks it."""
    (in_key, original), = [(key, pid) for key, role, pid in prepared.epcs if role == "input"]
    (out_key, new), = [(key, pid) for key, role, pid in prepared.epcs if role == "output"]
    state = overlay.get(original) if original is not None else None
    if state is None:
        raise EventError("unknown_part", f"{in_key} is not a part of the ledger")
    if state.unit:
        raise EventError("logistic_unit", f"{in_key} is a logistic unit, which cannot be remanufactured")
    holder = overlay.container_of(original)  # type: ignore[arg-type]
    if holder is not None:
        raise EventError("part_contained", f"{in_key} is inside 0x{holder.hex()}: take it out first")
    reason = _reason(state, org_id)
    if reason:
        raise EventError("invalid_state", f"{in_key} is not in stock with organisation {org_id} ({reason})")
    inside = overlay.contents_of(original)  # type: ignore[arg-type]
    if inside:
        raise EventError("container_not_empty", f"{in_key} still holds {len(inside)} part(s): disassemble it first")
    output = parse_epc(out_key)
    try:
        validate_serial(output.serial or "")
    except ValidationError as exc:
        raise EventError(exc.code, f"{out_key}: {exc}") from None
    assert new is not None and original is not None
    if overlay.get(new) is not None:
        raise EventError("already_registered", f"{out_key} is registered already: a remanufactured part is a new one")
    lot = _ilmd_lot(prepared.event)
    if lot is None:
        raise EventError("missing_lot", "a remanufacturing names the new part's lot: ilmd cbvmda:lotNumber")
    try:
        validate_lot(lot)
    except ValidationError as exc:
        raise EventError(exc.code, str(exc)) from None
    prepared.parts = [new]
    prepared.args.update(original="0x" + original.hex(), gtin=output.gtin, lot=lot, serial=output.serial)
    prepared.touches = {original, new}
    state.status = S.REMANUFACTURED
    overlay.parts[new] = PartState(S.IN_STOCK, org_id, None, False, org_id, -1)


def _check_register(prepared: Prepared, *, org_id: int, overlay: Overlay) -> None:
    plan = prepared.register
    if plan is None:
        prepared.operation = None  # commissions no serialised part (a class, logistic units): consortium data
        return
    if len(plan) == 2:
        raise EventError(*plan)  # found by _register_plan
    gtin, lot, serials, pids = plan
    taken = [pid for pid in pids if overlay.get(pid) is not None]
    if taken:
        raise EventError("already_registered", f"{len(taken)} part(s) are registered already, e.g. 0x{taken[0].hex()}")
    prepared.parts = pids
    prepared.args.update(gtin=gtin, lot=lot, serials=serials)
    for pid in pids:
        overlay.parts[pid] = PartState(S.IN_STOCK, org_id, None, False, org_id, -1)


def _register_plan(event: Mapping[str, Any], parsed: list[Epc], epcs: list[tuple[str, str, bytes | None]]) -> tuple[str, str, list[str], list[bytes]] | None:
    """What a commissioning registers, as far as that needs no ledger state: (gtin, lot, serials, part ids), or None
    when it commissions no serialised part (a class, logistic units); EventError for one it cannot register. Run in
    prepare_event (in the preparing process for a large document); _check_register does the rest."""
    listed = [(epc, pid) for epc, (_, role, pid) in zip(parsed, epcs) if role == "epc"]  # epcList, in order
    if not any(epc.kind == "sgtin" for epc, _ in listed):
        return None
    serials, gtins = [], set()
    for value, (epc, _) in zip(event.get("epcList") or (), listed):
        if epc.kind != "sgtin" or epc.serial is None:
            raise EventError("invalid_epc", f"commissioning registers serialised parts (SGTIN), not {value!r}")
        try:
            validate_serial(epc.serial)
        except ValidationError as exc:
            raise EventError(exc.code, f"{value!r}: {exc}") from None
        serials.append(epc.serial)
        gtins.add(epc.gtin)
    if len(gtins) != 1:
        raise EventError("mixed_gtins", "one commissioning event registers parts of one GTIN")
    gtin = gtins.pop()
    lot = _ilmd_lot(event)
    if lot is None:
        classes = [parse_epc(key) for key, role, _ in epcs if role == "quantity"]
        lot = next((c.lot for c in classes if c.kind == "lgtin" and c.gtin == gtin), None)
    if lot is None:
        raise EventError("missing_lot", "a commissioning event names its lot: ilmd cbvmda:lotNumber, or an LGTIN class in quantityList")
    try:
        validate_lot(lot)
    except ValidationError as exc:
        raise EventError(exc.code, str(exc)) from None
    pids = [pid for _, pid in listed]  # each SGTIN's, its serial checked above
    if len(set(pids)) != len(pids):
        raise EventError("duplicate_parts", "an EPC appears twice in the event")
    return gtin, lot, serials, pids  # type: ignore[return-value]


def _ilmd_lot(event: Mapping[str, Any]) -> str | None:
    ilmd = event.get("ilmd")
    if not isinstance(ilmd, dict):
        return None
    for name in ("cbvmda:lotNumber", "lotNumber", "https://ref.gs1.org/cbv/cbvmda-lotNumber", "urn:epcglobal:cbv:mda#lotNumber"):
        if isinstance(ilmd.get(name), str):
            return ilmd[name]
    return None


def _destination(event: Mapping[str, Any], directory: Directory) -> int:
    for wanted in ("owning_party", "possessing_party", "location"):
        for element in event.get("destinationList") or ():
            if isinstance(element, dict) and bare_word(str(element.get("type", ""))) == wanted and isinstance(element.get("destination"), str):
                return _resolve(directory, element["destination"]).org_id
    raise EventError("missing_destination", "a shipment names its recipient: destinationList with an owning_party")


def _check_install(prepared: Prepared) -> None:
    private = prepared.private or {}
    vin = private.get("partledger:vin")
    hashed = prepared.event.get("partledger:vinHash")
    if vin is not None:
        try:
            prepared.args["vin"] = normalize_vin(str(vin))
        except ValidationError as exc:
            raise EventError(exc.code, str(exc)) from None
    elif isinstance(hashed, str) and len(hashed) == 66 and hashed.startswith("0x"):
        try:
            prepared.args["vin_hash"] = bytes.fromhex(hashed[2:])
        except ValueError:
            raise EventError("invalid_vin", "partledger:vinHash is 0x and 64 hex digits") from None
    else:
        raise EventError("missing_vin", "an installing event names its vehicle: the private field partledger:vin, or partledger:vinHash")


def _check_recall(prepared: Prepared, *, org_id: int, roles: Role, overlay: Overlay, conn: Connection) -> None:
    lots: set[int] = set()
    for key, role, pid in prepared.epcs:
        epc = parse_epc(key)
        if epc.kind == "lgtin" and epc.lot is not None:
            row = conn.execute(select(T_LOT.c.lot).where(T_LOT.c.manufacturer == org_id, T_LOT.c.lot_code == epc.lot)).first()
            if row is None:
                if roles & Role.REGULATOR:
                    rows = conn.execute(select(T_LOT.c.lot).where(T_LOT.c.lot_code == epc.lot)).all()
                    lots.update(r.lot for r in rows)
                    continue
                raise EventError("unknown_lot", f"organisation {org_id} made no lot {epc.lot!r}")
            lots.add(row.lot)
        elif pid is not None and not key.startswith(UNIT_KEY):
            state = overlay.get(pid)
            if state is None:
                raise EventError("unknown_part", f"{key} is not a part of the ledger")
            lots.add(state.lot)
    if not lots:
        prepared.operation = None  # a recalled disposition naming nothing of the ledger: consortium data
        return
    if len(lots) != 1:
        raise EventError("several_lots", "one recall event names one lot")
    lot = lots.pop()
    row = conn.execute(select(T_LOT.c.manufacturer, T_LOT.c.recalled).where(T_LOT.c.lot == lot)).first()
    if row is None:
        raise EventError("unknown_lot", f"no lot {lot}")
    if row.manufacturer != org_id and not roles & Role.REGULATOR:
        raise EventError("not_lot_manufacturer", "only the lot's manufacturer or a regulator may recall it")
    if row.recalled or lot in overlay.recalled_lots:
        raise EventError("lot_recalled", f"lot {lot} is recalled already")
    notice = prepared.event.get("partledger:noticeHash")
    if isinstance(notice, str) and len(notice) == 66 and notice.startswith("0x"):
        prepared.args["notice_hash"] = notice
    else:
        prepared.args["notice_hash"] = "0x" + prepared.digest.hex()  # the event is the notice
    prepared.args["lot"] = lot
    overlay.recalled_lots.add(lot)
    for state in overlay.parts.values():
        if state is not None and state.lot == lot:
            state.recalled = True

