"""Ledger events as EPCIS 2.0 events, derived from the indexer's mirror (never stored in it; the service keeps those it
derived in memory, encoded, for the next read: EncodedLogs).

Where it sits: the read side of the service, beside ledger_service.read. The query (ledger_service.epcis.query)
merges these with the events capture stored; `partledger epcis export` writes a lot's history with them.

One ledger log is one ObjectEvent: the parts of a part_events log (tx_hash, log_index), in `position` order, as
Digital Link EPCs, with the action, bizStep and disposition of mapping.LEDGER_STEPS. Two kinds of log are split, so
that an event says one thing: an install or a removal per vehicle (salted VIN hash), a receipt per sender (the
owning party of its sourceList). A lot's recall is one event naming the lot as an LGTIN class per GTIN of its parts.

Containment (issue 15): a packing, unpacking, assembly or disassembly log is one AggregationEvent (parentID the logistic
unit's SSCC or the assembly's SGTIN, childEPCs what went in or came out, parts or units); a remanufacturing is one
TransformationEvent from the original to the new part (ilmd: the new part's lot), whose registration log in the same
transaction is not derived apart. A log that moves a container (ship, receive, install, ...) names the container only:
the rows the mirror adds for what is inside it (part_events.related_id set) say where those parts went, not what the
event names. A lot's history (LedgerFilter.lot) also holds the packings and unpackings of the containers that held its
parts at any depth (`lot_related`), and the remanufacturing that made a part of it.

- eventTime (and recordTime) is the block's timestamp (UTC, milliseconds, "Z"), eventTimeZoneOffset "+00:00";
- readPoint is the site whose key signed the log; bizLocation the same, except where the objects leave it (ship,
  sell) or the event is about a whole lot (recall); parties and locations are the members' GS1 identities
  (ledger_service.epcis.identities), else `urn:partledger:org:N` / `urn:partledger:site:N:<site>`;
- extension fields (prefix `partledger`, declared by mapping.CONTEXT): txHash, logIndex, blockNumber (every event),
  docHash (when the log names a document; it is also the bizTransaction `urn:partledger:doc:0x…`), vinHash (install,
  remove), noticeHash (recall);
- eventID is the event's canonical hash (partledger.epcis.hashing), computed once per event (and remembered by content,
  so that a page read again is not hashed again);
- the private field (PRIVATE_FIELD, the salted VIN hash) is shown to the log's organisation, auditors and regulators
  only (shown_event).

A log whose transaction carries an EPCIS capture job's command (epcis_commands ⋈ command_items ⋈ chain_transactions)
is not derived: the captured event stands for it.

Events come out in the order of their sort key (block, log index, first position in the log), which is the order of
their eventTime. A derived event's identity (`LedgerKey`) is that key; `find_derived` finds one by its eventID.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Generic, NamedTuple, TypeVar

import orjson
from sqlalchemy import CompoundSelect, Select, case, func, select, tuple_, union
from sqlalchemy.engine import Connection, Engine

from indexer.tables import BlockTime, Installation, Lineage, LogisticUnit, Lot, Part, PartEvent, Recall, Shipment, SiteKey
from ledger_service.epcis.identities import Directory
from ledger_service.epcis.mapping import CONTEXT, DOC_TYPE, LEDGER_STEPS, doc_urn
from ledger_service.epcis.tables import EpcisCommand
from ledger_service.errors import Unavailable
from ledger_service.tables import ChainTransaction, CommandItem
from partledger.epcis.hashing import event_hash, hash_digest
from partledger.epcis.identifiers import lgtin_uri, sgtin_uri, sscc_uri
from partledger.errors import ValidationError

T_EVENT, T_PART, T_LOT, T_RECALL = PartEvent.__table__, Part.__table__, Lot.__table__, Recall.__table__
T_SHIP, T_INSTALL, T_KEY, T_BLOCK = Shipment.__table__, Installation.__table__, SiteKey.__table__, BlockTime.__table__
T_ECMD, T_ITEM, T_TX = EpcisCommand.__table__, CommandItem.__table__, ChainTransaction.__table__
T_UNIT, T_LINEAGE = LogisticUnit.__table__, Lineage.__table__
T = TypeVar("T")

# part_events.kind -> the ledger operation of mapping.LEDGER_STEPS
KIND_OPERATION: dict[str, str] = {
    "registered": "register", "shipped": "ship", "received": "receive", "cancelled": "cancel", "sold": "sell",
    "installed": "install", "removed": "remove", "quarantined": "quarantine", "released": "release",
    "scrapped": "scrap", "recycled": "recycle", "packed": "pack", "unpacked": "unpack", "assembled": "assemble",
    "disassembled": "disassemble", "remanufactured": "remanufacture",
}  # fmt: skip
CONTAINMENT_KINDS = frozenset({"packed", "unpacked", "assembled", "disassembled"})  # part_id: a child, related_id: the container
LINKING_KINDS = ("packed", "assembled")
REMANUFACTURED = "remanufactured"  # part_id: the original, related_id: the new part
ROLES = frozenset({"epc", "child", "parent", "input", "output"})  # where an event names an EPC (epcis_event_epcs.role)
OPERATION_KIND = {operation: kind for kind, operation in KIND_OPERATION.items()}
RECALL = "recall"
OPERATIONS = frozenset(LEDGER_STEPS)
NO_BIZ_LOCATION = frozenset({"ship", "sell", RECALL})  # the objects leave the site, or the event is about a whole lot
# The mirror keeps no log index for a recall: it sorts after the part events of its block.
RECALL_LOG_INDEX = 2**31 - 1
SQL_CHUNK = 5_000  # bound parameters per IN list (SQLite allows 32,766; PostgreSQL 65,535)
PRIVATE_FIELD = "partledger:vinHash"  # shown to the event's organisation, auditors and regulators only
READ_CAPTURED_FROM = 64  # transactions asked about at once from which the capture jobs' are read whole if fewer


class LedgerKey(NamedTuple):
    """Where a derived event comes from, and its place in the order: the block, the log index (RECALL_LOG_INDEX for
    a recall) and the first position in the log of its parts (the lot number for a recall)."""

    block: int
    log_index: int
    first: int


class Derived(NamedTuple):
    """One derived event: its key, eventTime in ms, the organisation whose log it is, and the event (eventID set).
    A tuple: ten thousand of them are made for a lot's history, and a frozen dataclass costs several times more."""

    key: LedgerKey
    time_ms: int
    org_id: int
    event: dict[str, Any]


@dataclass(frozen=True)
class EpcMatch:
    """One MATCH_ parameter as the mirror can answer it: an event matches when one of the parts or logistic units it
    names in one of `roles` (epcList, childEPCs, parentID, inputEPCList, outputEPCList: ROLES) is one of `part_ids`
    (a unit's id for an SSCC) or a part of one of `gtins` (an SGTIN pattern). Empty sets: it names nothing the ledger
    derives."""

    part_ids: frozenset[bytes] = frozenset()
    gtins: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset({"epc", "child"})  # MATCH_epc's

    @property
    def empty(self) -> bool:
        return not self.part_ids and not self.gtins


@dataclass(frozen=True)
class ClassMatch:
    """A MATCH_epcClass parameter: a recall matches when one of its classes is one of `lots` ((GTIN, lot code)) or
    of one of `gtins`."""

    lots: frozenset[tuple[str, str]] = frozenset()
    gtins: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LedgerFilter:
    """Which derived events a query wants. Every condition given must hold."""

    operations: frozenset[str] = OPERATIONS  # mapping.LEDGER_STEPS names
    first_block: int | None = None
    last_block: int | None = None  # inclusive
    epcs: tuple[EpcMatch, ...] = ()  # each must match one of the event's parts (a recall has none)
    classes: tuple[ClassMatch, ...] = ()  # each must match one of the event's classes (only a recall has any)
    read_point_keys: frozenset[str] | None = None  # site key addresses
    biz_location_keys: frozenset[str] | None = None
    lot: int | None = None  # events naming a part of this lot, and the lot's recall
    keys: frozenset[LedgerKey] | None = None  # exactly these events (eventID lookups)
    lot_extra: LotRelated | None = None  # lot_related(lot), when the caller read it already
    nothing: bool = False  # a condition no derived event can meet (e.g. MATCH_parentID)

    @property
    def part_operations(self) -> frozenset[str]:
        return self.operations - {RECALL}


# --- the pieces of an event -----------------------------------------------------------------------------------


def iso_time(seconds: int) -> str:
    """A block timestamp as EPCIS writes it: ISO 8601, UTC, milliseconds, "Z"."""
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))


def hex0x(value: bytes) -> str:
    return "0x" + bytes(value).hex()


_GTIN_PREFIXES: dict[str, str | None] = {}  # GTIN -> "https://id.gs1.org/01/{gtin}/21/", None when not a valid GTIN


def part_epc(gtin: str, serial: str, part_id: bytes) -> str:
    """A part's EPC: its Digital Link URI; `urn:partledger:part:0x…` for a serial GS1 cannot write (the chain holds
    any 32 bytes; the mirror shows those that are not printable text as 0x-hex, longer than a GS1 serial)."""
    prefix = _GTIN_PREFIXES.get(gtin, "")
    if prefix == "":
        try:
            prefix = sgtin_uri(gtin, "0").removesuffix("0")
        except ValidationError:
            prefix = None
        _GTIN_PREFIXES[gtin] = prefix
    if prefix is not None and serial.isalnum() and serial.isascii() and len(serial) <= 20:
        return prefix + serial  # the common case, as sgtin_uri writes it
    try:
        return sgtin_uri(gtin, serial)
    except ValidationError:
        return f"urn:partledger:part:{hex0x(part_id)}"


@dataclass
class Places:
    """The URIs derived events give the members and their sites, for one read."""

    directory: Directory
    sites: dict[str, tuple[int, str]]  # site key address -> (organisation, site)
    _locations: dict[str, str] = field(default_factory=dict)
    _parties: dict[int, str] = field(default_factory=dict)

    def location(self, site_key: str, org_id: int) -> str:
        found = self._locations.get(site_key)
        if found is None:
            org, site = self.sites.get(site_key, (org_id, None))
            found = self._locations[site_key] = self.directory.location(org, site)
        return found

    def party(self, org_id: int) -> str:
        found = self._parties.get(org_id)
        if found is None:
            found = self._parties[org_id] = self.directory.party(org_id)
        return found

    def site_keys_at(self, uri_key: Callable[[str], str], wanted: set[str]) -> frozenset[str]:
        """The site keys whose location URI (as derived events write it) has one of the canonical keys `wanted`."""
        return frozenset(address for address, (org, _) in self.sites.items() if uri_key(self.location(address, org)) in wanted)


def load_places(directory: Directory, conn: Connection) -> Places:
    return Places(directory, {row.address: (row.org_id, row.site) for row in conn.execute(select(T_KEY.c.address, T_KEY.c.org_id, T_KEY.c.site))})


# --- the hash, once per event ---------------------------------------------------------------------------------


class HashMemo:
    """Canonical hashes by event content (the first 16 bytes of SHA-256 of the event's orjson bytes, its eventID None
    or absent): a derived event read again (the next page, the same lot exported twice) is not hashed again. Bounded
    (about 200 bytes an entry); the oldest entries go first."""

    def __init__(self, size: int = 262_144) -> None:
        self.size = size
        # content -> hash, oldest first (read without the lock: a get is atomic). An OrderedDict: a plain dict's
        # first key, under steady eviction, is found past all the deleted entries before it (35 us, not 0.5)
        self.hashes: OrderedDict[bytes, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> str:
        """The canonical hash of `event` (its eventID, if it has one yet, is not hashed: see finish)."""
        content = hashlib.sha256(orjson.dumps(event)).digest()[:16]
        found = self.hashes.get(content)
        if found is not None:
            return found
        found = event_hash(event, context=CONTEXT)
        with self._lock:
            self.hashes[content] = found
            while len(self.hashes) > self.size:
                self.hashes.popitem(last=False)
        return found

    def clear(self) -> None:
        with self._lock:
            self.hashes.clear()


HASHES = HashMemo()


def finish(event: dict[str, Any], hasher: Callable[[dict[str, Any]], str] = HASHES) -> dict[str, Any]:
    """The event, built with `"eventID": None` as its first field, with its eventID set: the canonical hash of the rest
    of it (the canonical hash leaves eventID out). Set in place: a copy to put it first costs more than the hash memo."""
    event["eventID"] = hasher(event)
    return event


# --- logs kept encoded ----------------------------------------------------------------------------------------------

ENCODED_BYTES = 64 * 1024 * 1024  # what EncodedLogs holds at most: its events' JSON and ENTRY_BYTES an event
ENTRY_BYTES = 200


class Encoded(NamedTuple):
    """A derived event as its JSON, as it goes out: `public` without PRIVATE_FIELD, `private` with it (None: the
    event has none)."""

    public: orjson.Fragment
    private: orjson.Fragment | None


class Names(NamedTuple):
    """What one event names, for the filters _events_of_rows applies to an event of a split log (an install per
    vehicle, a receipt per sender) or of a log that moved containers: its parts' lots (and those of the parts inside
    its containers), ids and GTINs."""

    lots: frozenset[Any]
    part_ids: frozenset[bytes]
    gtins: frozenset[Any]
    split: bool  # its log has other events


class Kept(NamedTuple):
    derived: Derived  # its event an Encoded
    names: Names | None  # None: the only event of a log that moved no container (nothing to filter it by)
    size: int  # its JSON's bytes


class KeptLog(NamedTuple):
    tx_hash: bytes
    events: tuple[Kept, ...]
    size: int
    plain: bool  # False: a packing, assembly or remanufacturing, whose MATCH_ filters look at more than Names


class EncodedLogs:
    """The derived events of mirrored logs, encoded, by (block, log index): a lot's history or a GTIN's events read
    again are the same bytes, and deriving them is most of the read (the rows' SQL and building 10^4 events:
    benchmarks/epcis_bench.py). A read asks for the logs it wants by the log query alone, and takes the kept ones
    when it has them all; else it reads the rows and derives, keeping what it derives (Recorder). The capture
    worker's warm-up (query.warm_derived) keeps the logs of each block as the indexer writes it.

    What a mirrored log's events say does not change, except through the members' GS1 identities and a
    reorganisation: the fingerprint (query._kept_fingerprint: the identities and indexer_state.reorgs, read in the
    same snapshot as the rows) changing starts the memo over, and a recorder of another fingerprint keeps nothing. A
    log is also kept with its transaction's hash and found only under it (a rebuilt mirror of another chain). A
    packing, assembly or remanufacturing is kept for reads without a MATCH_ parameter only (its filters look at more
    than its rows). Bounded (ENCODED_BYTES): the first kept go first."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = ENCODED_BYTES if limit is None else limit
        self.logs: OrderedDict[tuple[int, int], KeptLog] = OrderedDict()  # first kept first (HashMemo); get without the lock
        self.held = 0
        self.fingerprint: Any = None
        self.lock = threading.Lock()

    def recorder(self, fingerprint: Any, final_block: int) -> Recorder:
        """A Recorder of the logs up to `final_block` (the mirror's head in the reader's snapshot)."""
        with self.lock:
            if fingerprint != self.fingerprint:
                self.logs, self.held, self.fingerprint = OrderedDict(), 0, fingerprint
        return Recorder(self, fingerprint, final_block)

    def kept(self, fingerprint: Any, logs: Sequence[Any], *, plain: bool) -> list[KeptLog] | None:
        """The kept logs of `logs` (rows of _log_query: block, log index, chain, transaction), in their order; None
        unless all of them are kept (and `plain`, if asked)."""
        if fingerprint != self.fingerprint:
            return None
        get, found = self.logs.get, []
        for block, log_index, _, tx_hash in logs:
            log = get((block, log_index))
            if log is None or log.tx_hash != tx_hash or (plain and not log.plain):
                return None
            found.append(log)
        return found

    def keep(self, fingerprint: Any, block: int, log_index: int, tx_hash: bytes, events: tuple[Kept, ...], *, plain: bool = True) -> None:
        size = ENTRY_BYTES * (1 + len(events)) + sum(kept.size for kept in events)
        with self.lock:
            if fingerprint != self.fingerprint:
                return  # the identities changed meanwhile
            old = self.logs.pop((block, log_index), None)
            if old is not None:
                self.held -= old.size
            self.logs[(block, log_index)] = KeptLog(bytes(tx_hash), events, size, plain)
            self.held += size
            while self.held > self.limit and self.logs:
                self.held -= self.logs.popitem(last=False)[1].size

    def __len__(self) -> int:
        return len(self.logs)


@dataclass(frozen=True)
class Recorder:
    """Keeps the logs a derivation makes of blocks up to `final_block` (_events_of_rows)."""

    memo: EncodedLogs
    fingerprint: Any
    final_block: int

    def keep(self, block: int, log_index: int, tx_hash: bytes, events: tuple[Kept, ...], *, plain: bool = True) -> None:
        self.memo.keep(self.fingerprint, block, log_index, tx_hash, events, plain=plain)


def encoded(derived: Derived, group: list[Any] | None = None, inside: list[Any] | None = None, *, split: bool = False) -> Kept:
    """`derived` (its event a dict) kept encoded; `group`: its rows, when its log has more events than it (`split`)
    or moved containers (with their contents' rows: `inside`)."""
    event = derived.event
    public = orjson.dumps(event)
    if PRIVATE_FIELD in event:
        private = public
        public = orjson.dumps({name: value for name, value in event.items() if name != PRIVATE_FIELD})
        shown, size = Encoded(orjson.Fragment(public), orjson.Fragment(private)), len(public) + len(private)
    else:
        shown, size = Encoded(orjson.Fragment(public), None), len(public)
    names = None
    if group is not None:
        lots = {row[_LOT] for row in group}
        if inside:
            containers = {bytes(row[_PART]) for row in group}
            lots.update(row[_LOT] for row in inside if bytes(row[_REL]) in containers)
        names = Names(frozenset(lots), frozenset(bytes(row[_PART]) for row in group), frozenset(row[_GTIN] for row in group), split)
    return Kept(_new(Derived, (derived.key, derived.time_ms, derived.org_id, shown)), names, size)


def shown_event(derived: Derived, may_see_private: bool) -> Any:
    """A derived event as a caller sees it: its private field only if `may_see_private`. A dict, or an
    orjson.Fragment of a kept event."""
    event = derived.event
    if type(event) is Encoded:
        return event.private if may_see_private and event.private is not None else event.public
    if PRIVATE_FIELD in event and not may_see_private:
        return {name: value for name, value in event.items() if name != PRIVATE_FIELD}
    return event


def _names_match(match: EpcMatch, names: Names) -> bool:
    """_matches, on a kept event's names."""
    return "epc" in match.roles and (not names.part_ids.isdisjoint(match.part_ids) or not names.gtins.isdisjoint(match.gtins))


def _kept_events(logs: list[KeptLog], ledger: LedgerFilter, after: LedgerKey | None) -> Iterator[Derived]:
    """The events of kept logs that `ledger` wants (as _events_of_rows filters a split log's events), after `after`."""
    matches, lot = ledger.epcs, ledger.lot
    for log in logs:
        for derived, names, _ in log.events:
            if names is not None:
                if matches and not all(_names_match(match, names) for match in matches):
                    continue
                if lot is not None and names.split and lot not in names.lots:
                    continue
            if after is not None and not derived.key > after:
                continue
            yield derived


def _may_read_kept(ledger: LedgerFilter) -> bool:
    """Whether kept logs can answer `ledger`: not an eventID lookup, and at most one MATCH_ parameter, looking at the
    parts a log moves (a single-event log's parts all match then: the log query chose it by them)."""
    matches = ledger.epcs
    return ledger.keys is None and (not matches or (len(matches) == 1 and "epc" in matches[0].roles))


class PerMirror(Generic[T]):
    """One `make()` per mirror (the engine that reads it), made when first asked for."""

    def __init__(self, make: Callable[[], T]) -> None:
        self.make = make
        self.made: weakref.WeakKeyDictionary[Engine, T] = weakref.WeakKeyDictionary()
        self.lock = threading.Lock()

    def __call__(self, engine: Engine) -> T:
        with self.lock:
            found = self.made.get(engine)
            if found is None:
                found = self.made[engine] = self.make()
            return found


encoded_logs = PerMirror(EncodedLogs)  # the EncodedLogs of a mirror


# --- reading the mirror -------------------------------------------------------------------------------------------


def block_times(conn: Connection, blocks: Iterable[int]) -> dict[int, int]:
    """The timestamps of these blocks (indexer's block_times). Unavailable (503 block_time_unknown) when the mirror has
    none yet (an old mirror whose indexer has not dated its blocks since the upgrade)."""
    wanted = sorted(set(blocks))
    times: dict[int, int] = dict(driver_rows(conn, f"SELECT number, timestamp FROM {T_BLOCK.name} WHERE number {{}}", wanted))
    missing = [block for block in wanted if block not in times]
    if missing:
        raise Unavailable(f"the mirror keeps no timestamp for block {missing[0]}: its events have no eventTime", code="block_time_unknown")
    return times


def block_bounds(conn: Connection, *, ge_ms: int | None, lt_ms: int | None) -> tuple[int | None, int | None, bool]:
    """The block range whose timestamps fall in [ge_ms, lt_ms): (first, last inclusive, empty)."""
    first = last = None
    if ge_ms is not None:
        first = conn.execute(select(func.min(T_BLOCK.c.number)).where(T_BLOCK.c.timestamp >= -(-ge_ms // 1000))).scalar()  # block times are whole seconds
        if first is None:
            return None, None, True
    if lt_ms is not None:
        last = conn.execute(select(func.max(T_BLOCK.c.number)).where(T_BLOCK.c.timestamp < -(-lt_ms // 1000))).scalar()
        if last is None:
            return None, None, True
    return first, last, first is not None and last is not None and first > last


def driver_rows(conn: Connection, sql: str, values: Sequence[Any]) -> list[Any]:
    """The rows of `sql`, whose one `{}` is the right side of an IN condition over `values` (thousands of them: a
    lot's part ids, a page's transactions), read SQL_CHUNK values at a time. The values go to the driver as they are:
    SQLAlchemy's expanding IN runs Python for each bound value (a LargeBinary one through its bind processor too), some
    milliseconds per 5,000 32-byte ids. PostgreSQL takes each chunk as one array (`= ANY(%s)`)."""
    found: list[Any] = []
    postgres = conn.dialect.name == "postgresql"
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    for start in range(0, len(values), SQL_CHUNK):
        chunk = values[start : start + SQL_CHUNK]
        if postgres:
            found += conn.exec_driver_sql(sql.format("= ANY(%s)"), (list(chunk),)).all()
        else:
            found += conn.exec_driver_sql(sql.format(f"IN ({', '.join([mark] * len(chunk))})"), tuple(chunk)).all()
    return found


_CAPTURED_TX_SQL = (
    f"SELECT t.tx_hash FROM {T_TX.name} t JOIN {T_ITEM.name} i ON i.tx_id = t.id JOIN {T_ECMD.name} c ON c.command_id = i.command_id"
    " WHERE t.tx_hash {}"
)


def captured_transactions(service_conn: Connection, tx_hashes: Iterable[bytes]) -> set[bytes]:
    """Those of `tx_hashes` that carry an EPCIS capture job's command."""
    return {bytes(row[0]) for row in driver_rows(service_conn, _CAPTURED_TX_SQL, [bytes(h) for h in set(tx_hashes)])}


# The columns of a row of _rows_query, by position: a part_events row; its part's GTIN, serial and lot (None for a
# logistic unit); for a receipt, the organisation that shipped the part (None: unknown), for a removal, the VIN hash of
# the vehicle it left; the row's related id (a containment's container, a remanufacturing's new part, or the container
# a part moved inside).
_BLOCK, _LOG, _POSITION, _TX, _KIND, _ORG, _SITE, _COUNTERPARTY, _DOC, _VIN, _PART, _GTIN, _SERIAL, _LOT, _SENDER, _REMOVED_VIN, _REL = range(17)


def _rows_query(logs: Any) -> Select[Any]:
    """Every part_events row of the logs `logs` (a subquery of _log_query), in order, with its part and what a
    receipt or a removal needs from the state tables (the columns above): in the same statement, not by an IN list of
    the rows' part ids. A part shipped and received twice in one block takes its latest shipment's sender (and a
    removal its latest installation). Block times and lot codes, a few distinct ones, are read apart."""
    sender = (
        select(T_SHIP.c.from_org)
        .where(T_SHIP.c.part_id == T_EVENT.c.part_id, T_SHIP.c.closed_block == T_EVENT.c.block_number, T_SHIP.c.outcome == "received")
        .order_by(T_SHIP.c.shipped_block.desc(), T_SHIP.c.id.desc()).limit(1).scalar_subquery()
    )  # fmt: skip
    vehicle = (
        select(T_INSTALL.c.vin_hash)
        .where(T_INSTALL.c.part_id == T_EVENT.c.part_id, T_INSTALL.c.removed_block == T_EVENT.c.block_number)
        .order_by(T_INSTALL.c.installed_block.desc(), T_INSTALL.c.id.desc()).limit(1).scalar_subquery()
    )  # fmt: skip
    return (
        select(
            T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position, T_EVENT.c.tx_hash, T_EVENT.c.kind, T_EVENT.c.org_id,
            T_EVENT.c.site_key, T_EVENT.c.counterparty, T_EVENT.c.doc_hash, T_EVENT.c.vin_hash, T_EVENT.c.part_id,
            T_PART.c.gtin, T_PART.c.serial, T_PART.c.lot,
            case((T_EVENT.c.kind == "received", sender)), case((T_EVENT.c.kind == "removed", vehicle)), T_EVENT.c.related_id,
        )
        .select_from(
            logs.join(T_EVENT, (T_EVENT.c.chain_id == logs.c.chain_id) & (T_EVENT.c.tx_hash == logs.c.tx_hash) & (T_EVENT.c.log_index == logs.c.log_index))
            .outerjoin(T_PART, T_PART.c.part_id == T_EVENT.c.part_id)  # a logistic unit is no part
        )
        .order_by(T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.position)
    )  # fmt: skip


@dataclass(frozen=True)
class LotRelated:
    """What a lot's history holds beyond the logs naming its parts: the packings, unpackings, assemblies and
    disassemblies of every container (logistic unit or assembly) that held one of its parts at any depth at some
    time, as their child (a unit packed into a pallet), and the remanufacturings that made one of its parts."""

    containers: frozenset[bytes] = frozenset()
    originals: frozenset[bytes] = frozenset()


def has_related(index: Connection) -> bool:
    """Whether the mirror holds any containment or remanufacturing (one probe of the partial index on related_id)."""
    return index.execute(select(T_EVENT.c.related_id).where(T_EVENT.c.related_id.is_not(None)).limit(1)).first() is not None


def lot_related(index: Connection, lot: int) -> LotRelated:
    """LotRelated of `lot`: the containers its parts were put into, then those these were put into, up to the top."""
    lot_parts = select(T_PART.c.part_id).where(T_PART.c.lot == lot)
    frontier = {bytes(row[0]) for row in index.execute(
        select(T_EVENT.c.related_id).where(T_EVENT.c.part_id.in_(lot_parts), T_EVENT.c.kind.in_(LINKING_KINDS)).distinct()
    )}  # fmt: skip
    containers = set(frontier)
    while frontier:
        above: set[bytes] = set()
        ids = sorted(frontier)
        for start in range(0, len(ids), SQL_CHUNK):
            chunk = ids[start : start + SQL_CHUNK]
            above.update(bytes(row[0]) for row in index.execute(select(T_EVENT.c.related_id).where(T_EVENT.c.part_id.in_(chunk), T_EVENT.c.kind.in_(LINKING_KINDS)).distinct()))
        frontier = above - containers
        containers |= frontier
    originals = {bytes(row[0]) for row in index.execute(select(T_LINEAGE.c.original_id).where(T_LINEAGE.c.part_id.in_(lot_parts)))}
    return LotRelated(frozenset(containers), frozenset(originals))


def _log_query(ledger: LedgerFilter, after: LedgerKey | None, *, related: bool = False, lot_extra: LotRelated | None = None) -> Select[Any] | CompoundSelect:
    """(block, log index, chain, transaction) of the logs that may hold a wanted event, in order (the last two find
    the log's rows by the natural key's index). `related`: whether the mirror holds any containment (else nothing
    can be a parent or an output); `lot_extra`: what a lot's history holds beyond its parts' own logs. Several ways in
    (a part's rows, a container's, a lot's related logs) are a UNION, each on its own index."""
    kinds = sorted(OPERATION_KIND[op] for op in _part_operations(ledger))
    base = select(T_EVENT.c.block_number, T_EVENT.c.log_index, T_EVENT.c.chain_id, T_EVENT.c.tx_hash)
    with_part = base.select_from(T_EVENT.join(T_PART, T_PART.c.part_id == T_EVENT.c.part_id))
    branches: list[Select[Any]] = []
    if ledger.epcs:  # the first match narrows the logs; every match is checked per event later
        match = ledger.epcs[0]
        in_lot = (T_PART.c.lot == ledger.lot,) if ledger.lot is not None else ()
        if match.roles & {"epc", "child", "input"}:  # the rows' own parts (or units)
            if match.part_ids:
                branches.append((with_part if in_lot else base).where(T_EVENT.c.part_id.in_(sorted(match.part_ids)), *in_lot))
            if match.gtins:
                branches.append(with_part.where(T_PART.c.gtin.in_(sorted(match.gtins)), *in_lot))
        if related and match.roles & {"parent", "output"} and ledger.lot is None:  # the container, or the new part
            if match.part_ids:
                branches.append(base.where(T_EVENT.c.related_id.in_(sorted(match.part_ids))))
            if match.gtins:
                named = T_PART.alias("named")
                branches.append(base.select_from(T_EVENT.join(named, named.c.part_id == T_EVENT.c.related_id)).where(named.c.gtin.in_(sorted(match.gtins))))
        if not branches:
            branches.append(base.where(T_EVENT.c.part_id.is_(None)))  # no log (part_id is never NULL)
    elif ledger.lot is not None:
        branches.append(with_part.where(T_PART.c.lot == ledger.lot))
        if lot_extra is not None and lot_extra.containers:
            branches.append(base.where(T_EVENT.c.part_id.in_(sorted(lot_extra.containers)), T_EVENT.c.kind.in_(sorted(CONTAINMENT_KINDS))))
        if lot_extra is not None and lot_extra.originals:
            branches.append(base.where(T_EVENT.c.part_id.in_(sorted(lot_extra.originals)), T_EVENT.c.kind == REMANUFACTURED))
    else:
        branches.append(base)
    common = [T_EVENT.c.kind.in_(kinds)]
    if ledger.first_block is not None:
        common.append(T_EVENT.c.block_number >= ledger.first_block)
    if ledger.last_block is not None:
        common.append(T_EVENT.c.block_number <= ledger.last_block)
    sites = _site_keys(ledger)
    if sites is not None:
        common.append(T_EVENT.c.site_key.in_(sorted(sites)))
    if ledger.keys is not None:
        common.append(tuple_(T_EVENT.c.block_number, T_EVENT.c.log_index).in_(sorted({(k.block, k.log_index) for k in ledger.keys})))
    if after is not None:
        common.append(tuple_(T_EVENT.c.block_number, T_EVENT.c.log_index) >= (after.block, after.log_index))
    if len(branches) == 1:
        return branches[0].where(*common).distinct().order_by(T_EVENT.c.block_number, T_EVENT.c.log_index)
    either = union(*(branch.where(*common) for branch in branches))
    return either.order_by(either.selected_columns.block_number, either.selected_columns.log_index)


def _part_operations(ledger: LedgerFilter) -> frozenset[str]:
    """The part operations wanted; those without a bizLocation drop out when one is asked for."""
    return ledger.part_operations - NO_BIZ_LOCATION if ledger.biz_location_keys is not None else ledger.part_operations


def _site_keys(ledger: LedgerFilter) -> frozenset[str] | None:
    if ledger.read_point_keys is None:
        return ledger.biz_location_keys
    if ledger.biz_location_keys is None:
        return ledger.read_point_keys
    return ledger.read_point_keys & ledger.biz_location_keys


def _part_events(index: Connection, service: Connection, places: Places, ledger: LedgerFilter, after: LedgerKey | None,
                 hasher: Callable[[dict[str, Any]], str], chunk: int, *, recorder: Recorder | None = None,
                 reader: Recorder | None = None) -> Iterator[Derived]:  # fmt: skip
    """`recorder`: keep the final logs derived; `reader`: also take kept logs when a chunk's are all kept (their
    events then come as Encoded, not dicts) and keep what is derived."""
    if ledger.nothing or not _part_operations(ledger) or any(match.empty for match in ledger.epcs) or ledger.classes:
        return
    if reader is not None:
        recorder = reader
        if not _may_read_kept(ledger):
            reader = None
    if recorder is not None and (ledger.keys is not None or hasher is not HASHES):
        recorder = None  # an eventID lookup derives only some of a log's events
    skip = CapturedTransactions(service)
    related = has_related(index)
    lot_extra = None
    if related and ledger.lot is not None and not ledger.epcs:
        lot_extra = ledger.lot_extra if ledger.lot_extra is not None else lot_related(index, ledger.lot)
    cursor = after
    while True:
        log_query = _log_query(ledger, cursor, related=related, lot_extra=lot_extra).limit(chunk)
        if reader is not None:
            wanted = index.execute(log_query).all()
            if not wanted:
                return
            kept = reader.memo.kept(reader.fingerprint, wanted, plain=bool(ledger.epcs))
            if kept is not None:
                yield from _kept_events(kept, ledger, after)
                if len(wanted) < chunk:
                    return
                cursor = LedgerKey(wanted[-1][0], wanted[-1][1] + 1, -1)
                continue
        rows = index.execute(_rows_query(log_query.subquery())).all()
        if not rows:
            return
        logs = [0]
        if after is None:
            yield from _events_of_rows(index, skip, places, ledger, rows, hasher, logs, related, recorder)
        else:
            for event in _events_of_rows(index, skip, places, ledger, rows, hasher, logs, related, recorder):
                if event.key > after:
                    yield event
        if logs[0] < chunk:
            return
        cursor = LedgerKey(rows[-1][_BLOCK], rows[-1][_LOG] + 1, -1)


class CapturedTransactions:
    """Which transactions carry an EPCIS capture job's command (their logs are not derived), for one read. When the
    capture jobs' transactions are fewer than those asked about (a job's thousands of events travel in a few hundred
    transactions), they are read once, all of them; otherwise asked about in batches (an IN list per SQL_CHUNK)."""

    def __init__(self, service: Connection) -> None:
        self.service = service
        self.any = service.execute(select(T_ECMD.c.command_id).limit(1)).first() is not None
        self.known: set[bytes] | None = None  # every capture job's transaction, once read

    def among(self, tx_hashes: set[bytes]) -> set[bytes]:
        if not self.any:
            return set()
        if self.known is None and len(tx_hashes) > READ_CAPTURED_FROM:
            joined = T_ECMD.join(T_ITEM, T_ITEM.c.command_id == T_ECMD.c.command_id).join(T_TX, T_TX.c.id == T_ITEM.c.tx_id)
            found = self.service.execute(select(T_TX.c.tx_hash).select_from(joined).limit(len(tx_hashes) + 1)).scalars().all()
            if len(found) <= len(tx_hashes):  # all of them (reading them cost no more than the IN lists would)
                self.known = {bytes(tx_hash) for tx_hash in found}
        if self.known is not None:
            return {bytes(tx_hash) for tx_hash in tx_hashes} & self.known
        return captured_transactions(self.service, tx_hashes)




class _Shape(NamedTuple):
    """What every event of one kind of log from one site has alike (computed once per chunk)."""

    operation: str
    event_type: str
    action: str | None
    biz_step: str
    disposition: str | None
    read_point: dict[str, str]
    biz_location: dict[str, str] | None


def _shape(places: Places, kind: str, site_key: str, org_id: int) -> _Shape:
    operation = KIND_OPERATION[kind]
    step = LEDGER_STEPS[operation]
    location = places.location(site_key, org_id)
    biz_location = None if operation in NO_BIZ_LOCATION else {"id": location}
    return _Shape(operation, step.event_type, step.action, step.biz_step, step.disposition, {"id": location}, biz_location)


# the column of a log's rows that splits it into events: per vehicle (install, removal), per sender (receipt)
_SPLIT_COLUMN = {"installed": _VIN, "removed": _REMOVED_VIN, "received": _SENDER}


class Named(NamedTuple):
    """A part or logistic unit as a containment or remanufacturing event names it beyond its rows' own parts."""

    epc: str
    gtin: str | None = None
    lot_code: str | None = None


def read_names(index: Connection, ids: Iterable[bytes]) -> dict[bytes, Named]:
    """The EPCs (and a part's GTIN and lot code) of these parts and logistic units."""
    wanted = sorted(set(ids))
    found: dict[bytes, Named] = {}
    sql = f"SELECT p.part_id, p.gtin, p.serial, l.lot_code FROM {T_PART.name} p LEFT JOIN {T_LOT.name} l ON l.lot = p.lot WHERE p.part_id {{}}"
    for pid, gtin, serial, code in driver_rows(index, sql, wanted):
        found[bytes(pid)] = Named(part_epc(gtin, serial, bytes(pid)), gtin, code)
    missing = [pid for pid in wanted if pid not in found]
    if missing:
        for uid, sscc in driver_rows(index, f"SELECT unit_id, sscc FROM {T_UNIT.name} WHERE unit_id {{}}", missing):
            found[bytes(uid)] = Named(unit_epc(sscc, bytes(uid)))
    return found


def unit_epc(sscc: str, unit_id: bytes) -> str:
    """A logistic unit's EPC: its SSCC's Digital Link URI."""
    try:
        return sscc_uri(sscc)
    except ValidationError:
        return f"urn:partledger:unit:{hex0x(unit_id)}"


def _named(names: dict[bytes, Named], pid: bytes) -> Named:
    return names.get(pid) or Named(f"urn:partledger:part:{hex0x(pid)}")


def _row_epc(row: Any, names: dict[bytes, Named]) -> str:
    gtin = row[_GTIN]
    if gtin is None:  # a logistic unit
        return _named(names, bytes(row[_PART])).epc
    return part_epc(gtin, row[_SERIAL], row[_PART])


def _events_of_rows(index: Connection, skip: CapturedTransactions, places: Places, ledger: LedgerFilter, rows: list[Any],
                    hasher: Callable[[dict[str, Any]], str], logs: list[int], related: bool = False,
                    recorder: Recorder | None = None) -> Iterator[Derived]:  # fmt: skip
    """The events of the rows (_rows_query) of whole logs, in order; counts the logs in logs[0]. `related`: whether the
    mirror holds any containment or remanufacturing (else the rows need nothing looked up for it).

    The hot loop of a lot's history (10^4 events, a few microseconds each): rows are read by position, and what
    events share is made once: a block's time, a kind of log's fields from a site (_Shape), a log's transaction
    hash, a GTIN's URI prefix. Events of one chunk share those nested values (readPoint, bizLocation): read, never
    changed. `recorder`: every event of a final log is made (those the filters drop too), and the log kept whole once
    its last event is made (a log left halfway, at the end of a page, is not kept)."""
    times = block_times(index, {row[_BLOCK] for row in rows})
    registered = sorted({row[_LOT] for row in rows if row[_KIND] == "registered"})
    codes = dict(driver_rows(index, f"SELECT lot, lot_code FROM {T_LOT.name} WHERE lot {{}}", registered)) if registered else {}
    skipped = skip.among({row[_TX] for row in rows})
    names: dict[bytes, Named] = {}
    reborn: set[tuple[bytes, bytes]] = set()  # (part, transaction) of a remanufacturing's registration: not derived apart
    if related:
        wanted = {bytes(row[_REL]) for row in rows if row[_REL] is not None and (row[_KIND] in CONTAINMENT_KINDS or row[_KIND] == REMANUFACTURED)}
        wanted |= {bytes(row[_PART]) for row in rows if row[_GTIN] is None}
        names = read_names(index, wanted) if wanted else {}
        firsts = [bytes(row[_PART]) for row in rows if row[_KIND] == "registered" and row[_POSITION] == 0]
        if firsts:
            reborn = {(bytes(pid), bytes(tx)) for pid, tx in driver_rows(index, f"SELECT part_id, tx_hash FROM {T_LINEAGE.name} WHERE part_id {{}}", firsts)}
    whens: dict[int, str] = {}
    shapes: dict[tuple[str, str, int], _Shape] = {}
    parties: dict[tuple[str, int], list[dict[str, str]]] = {}  # a sourceList or destinationList naming one party
    prefixes = _GTIN_PREFIXES
    memo, sha256, dumps = HASHES.hashes if hasher is HASHES else None, hashlib.sha256, orjson.dumps
    matches, lot, keys = ledger.epcs, ledger.lot, ledger.keys
    final = recorder.final_block if recorder is not None else -1
    count, start, total = 0, 0, len(rows)
    while start < total:
        first = rows[start]
        block, log_index = first[_BLOCK], first[_LOG]
        end = start + 1
        while end < total and rows[end][_LOG] == log_index and rows[end][_BLOCK] == block:
            end += 1
        log_rows = rows[start:end]
        start = end
        count += 1
        if skipped and bytes(first[_TX]) in skipped:
            if block <= final:
                recorder.keep(block, log_index, first[_TX], ())  # type: ignore[union-attr]
            continue
        kind = first[_KIND]
        if reborn and kind == "registered" and len(log_rows) == 1 and (bytes(first[_PART]), bytes(first[_TX])) in reborn:
            if block <= final:
                recorder.keep(block, log_index, first[_TX], ())  # type: ignore[union-attr]
            continue  # the new part of a remanufacturing: its TransformationEvent names it
        seconds = times[block]
        when = whens.get(seconds)
        if when is None:
            when = whens[seconds] = iso_time(seconds)
        site, org = first[_SITE], first[_ORG]
        shape = shapes.get((kind, site, org))
        if shape is None:
            shape = shapes[(kind, site, org)] = _shape(places, kind, site, org)
        if kind in CONTAINMENT_KINDS or kind == REMANUFACTURED:
            key = _new(LedgerKey, (block, log_index, first[_POSITION]))
            if keys is not None and key not in keys:
                continue
            event = _containment_event(shape, log_rows, when, names, () if block <= final else matches)
            if event is None:
                continue
            event["partledger:txHash"] = "0x" + bytes(first[_TX]).hex()
            event["partledger:logIndex"] = log_index
            event["partledger:blockNumber"] = block
            event["eventID"] = hasher(event)
            derived = _new(Derived, (key, seconds * 1000, org, event))
            if block <= final:
                recorder.keep(block, log_index, first[_TX], (encoded(derived),), plain=False)  # type: ignore[union-attr]
                if matches and _containment_event(shape, log_rows, when, names, matches) is None:
                    continue
            yield derived
            continue
        inside: list[Any] = []
        if related and log_rows[-1][_REL] is not None and kind != "registered":  # a container moved: its contents' rows follow
            cut = next(place for place, row in enumerate(log_rows) if row[_REL] is not None)
            log_rows, inside = log_rows[:cut], log_rows[cut:]
        column = _SPLIT_COLUMN.get(kind)
        if column is None:
            groups: Any = ((None, log_rows),)
        elif column == _VIN:
            groups = _split(log_rows, lambda row: bytes(row[_VIN]) if row[_VIN] else None)
        else:
            groups = _split(log_rows, itemgetter(column))
        operation = shape.operation
        tx_hash = None
        kept: list[Kept] | None = [] if block <= final else None
        for split, group in groups:
            wanted = True
            if matches and (len(matches) > 1 or len(groups) > 1 or inside or "epc" not in matches[0].roles) and not all(_matches(match, group) for match in matches):
                wanted = False  # (a whole log matches the first match: _log_query chose it by that)
            elif lot is not None and len(groups) > 1 and not any(row[_LOT] == lot for row in group) and not _holds_lot(inside, group, lot):
                wanted = False  # a split log's event about other lots' parts only
            if not wanted and kept is None:
                continue
            key = _new(LedgerKey, (block, log_index, group[0][_POSITION]))
            if keys is not None and key not in keys:
                continue
            if tx_hash is None:
                tx_hash = "0x" + bytes(first[_TX]).hex()
            epcs = []
            for row in group:  # part_epc, its common case inline
                gtin, serial = row[_GTIN], row[_SERIAL]
                prefix = prefixes.get(gtin)
                epcs.append(prefix + serial if prefix is not None and serial.isalnum() and serial.isascii() and len(serial) <= 20 else _row_epc(row, names))
            event: dict[str, Any] = {
                "eventID": None, "type": "ObjectEvent", "eventTime": when, "eventTimeZoneOffset": "+00:00", "recordTime": when, "epcList": epcs,
                "action": shape.action, "bizStep": shape.biz_step, "disposition": shape.disposition, "readPoint": shape.read_point,
            }  # fmt: skip
            if shape.biz_location is not None:
                event["bizLocation"] = shape.biz_location
            doc = first[_DOC]
            if doc:
                event["bizTransactionList"] = [{"type": DOC_TYPE, "bizTransaction": doc_urn(bytes(doc))}]
            if operation == "ship":
                if first[_COUNTERPARTY] is not None:
                    event["destinationList"] = parties.get(("destination", first[_COUNTERPARTY])) or _party_list(parties, places, "destination", first[_COUNTERPARTY])
            elif operation == "receive":
                if split is not None:
                    event["sourceList"] = parties.get(("source", split)) or _party_list(parties, places, "source", split)
            elif operation == "register":
                code = codes.get(first[_LOT])
                if code is not None:
                    event["ilmd"] = {"cbvmda:lotNumber": code}
            event["partledger:txHash"] = tx_hash
            event["partledger:logIndex"] = log_index
            event["partledger:blockNumber"] = block
            if doc:
                event["partledger:docHash"] = hex0x(doc)
            if split is not None and (operation == "install" or operation == "remove"):
                event["partledger:vinHash"] = hex0x(split)
            if memo is not None:  # finish, with HASHES inline
                event["eventID"] = memo.get(sha256(dumps(event)).digest()[:16]) or HASHES(event)
            else:
                event["eventID"] = hasher(event)
            derived = _new(Derived, (key, seconds * 1000, org, event))
            if kept is not None:
                kept.append(encoded(derived, group, inside, split=len(groups) > 1) if len(groups) > 1 or inside else encoded(derived))
            if wanted:
                yield derived
        if kept is not None:
            recorder.keep(block, log_index, first[_TX], tuple(kept))  # type: ignore[union-attr]
    logs[0] = count


def _containment_event(shape: _Shape, rows: list[Any], when: str, names: dict[bytes, Named], matches: tuple[EpcMatch, ...]) -> dict[str, Any] | None:
    """The AggregationEvent of a packing, unpacking, assembly or disassembly log, or the TransformationEvent of a
    remanufacturing (eventID still None); None when a MATCH_ parameter does not match it."""
    first = rows[0]
    related = bytes(first[_REL])
    other = _named(names, related)
    if shape.event_type == "TransformationEvent":
        own_role, other_role = "input", "output"
    else:
        own_role, other_role = "child", "parent"
    for match in matches:
        if not ((own_role in match.roles and _matches(match, rows, role=own_role))
                or (other_role in match.roles and (related in match.part_ids or (other.gtin is not None and other.gtin in match.gtins)))):  # fmt: skip
            return None
    event: dict[str, Any] = {"eventID": None, "type": shape.event_type, "eventTime": when, "eventTimeZoneOffset": "+00:00", "recordTime": when}
    if shape.event_type == "TransformationEvent":
        event["inputEPCList"] = [_row_epc(first, names)]
        event["outputEPCList"] = [other.epc]
    else:
        event["parentID"] = other.epc
        event["childEPCs"] = [_row_epc(row, names) for row in rows]
        event["action"] = shape.action
    event["bizStep"] = shape.biz_step
    if shape.disposition is not None:
        event["disposition"] = shape.disposition
    event["readPoint"] = shape.read_point
    if shape.biz_location is not None:
        event["bizLocation"] = shape.biz_location
    if shape.event_type == "TransformationEvent" and other.lot_code is not None:
        event["ilmd"] = {"cbvmda:lotNumber": other.lot_code}
    return event


def _holds_lot(inside: list[Any], group: list[Any], lot: int) -> bool:
    """Whether one of the containers of `group` held a part of `lot` when it moved (its rows in `inside`)."""
    if not inside:
        return False
    containers = {bytes(row[_PART]) for row in group}
    return any(row[_LOT] == lot and bytes(row[_REL]) in containers for row in inside)


_new = tuple.__new__  # a NamedTuple made without its Python __new__: half the cost, twice per event


def _party_list(lists: dict[tuple[str, int], list[dict[str, str]]], places: Places, role: str, org_id: int) -> list[dict[str, str]]:
    found = lists[(role, org_id)] = [{"type": "owning_party", role: places.party(org_id)}]
    return found


def _split(rows: list[Any], split_of: Callable[[Any], Any]) -> tuple[tuple[Any, list[Any]], ...]:
    """A log's rows per event (vehicle, sender), in the order of their first part."""
    if len(rows) == 1:
        return ((split_of(rows[0]), rows),)
    groups: dict[Any, list[Any]] = {}
    for row in rows:
        groups.setdefault(split_of(row), []).append(row)
    return tuple(groups.items())


def _matches(match: EpcMatch, rows: list[Any], *, role: str = "epc") -> bool:
    """Whether one of the rows' own parts (or units), named in `role`, matches."""
    return role in match.roles and any(bytes(row[_PART]) in match.part_ids or row[_GTIN] in match.gtins for row in rows)


def _recall_events(index: Connection, service: Connection, places: Places, ledger: LedgerFilter, after: LedgerKey | None,
                   hasher: Callable[[dict[str, Any]], str]) -> Iterator[Derived]:  # fmt: skip
    if ledger.nothing or RECALL not in ledger.operations or ledger.epcs or ledger.biz_location_keys is not None:
        return  # a recall names no part, and has no bizLocation
    query = select(T_RECALL.c.lot, T_RECALL.c.org_id, T_RECALL.c.site_key, T_RECALL.c.notice_hash, T_RECALL.c.block_number,
                   T_RECALL.c.tx_hash, T_LOT.c.lot_code).select_from(T_RECALL.join(T_LOT, T_LOT.c.lot == T_RECALL.c.lot))  # fmt: skip
    if ledger.lot is not None:
        query = query.where(T_RECALL.c.lot == ledger.lot)
    if ledger.first_block is not None:
        query = query.where(T_RECALL.c.block_number >= ledger.first_block)
    if ledger.last_block is not None:
        query = query.where(T_RECALL.c.block_number <= ledger.last_block)
    if ledger.read_point_keys is not None:
        query = query.where(T_RECALL.c.site_key.in_(sorted(ledger.read_point_keys)))
    if ledger.keys is not None:
        query = query.where(T_RECALL.c.lot.in_(sorted({k.first for k in ledger.keys if k.log_index == RECALL_LOG_INDEX})))
    if after is not None:
        query = query.where(tuple_(T_RECALL.c.block_number, T_RECALL.c.lot) > (after.block, after.first if after.log_index == RECALL_LOG_INDEX else -1))
    rows = index.execute(query.order_by(T_RECALL.c.block_number, T_RECALL.c.lot)).all()
    if not rows:
        return
    skipped = captured_transactions(service, {row.tx_hash for row in rows})
    times = block_times(index, {row.block_number for row in rows})
    for row in rows:
        if bytes(row.tx_hash) in skipped:
            continue
        gtins = sorted(index.execute(select(T_PART.c.gtin).where(T_PART.c.lot == row.lot).distinct()).scalars())
        if not all(any((gtin, row.lot_code) in match.lots or gtin in match.gtins for gtin in gtins) for match in ledger.classes):
            continue
        when = iso_time(times[row.block_number])
        step = LEDGER_STEPS[RECALL]
        event: dict[str, Any] = {
            "eventID": None,
            "type": "ObjectEvent",
            "eventTime": when,
            "eventTimeZoneOffset": "+00:00",
            "recordTime": when,
            "quantityList": [{"epcClass": _lot_class(gtin, row.lot_code)} for gtin in gtins],
            "action": step.action,
            "bizStep": step.biz_step,
            "disposition": step.disposition,
            "readPoint": {"id": places.location(row.site_key, row.org_id)},
            "partledger:txHash": hex0x(row.tx_hash),
            "partledger:blockNumber": row.block_number,
            "partledger:noticeHash": hex0x(row.notice_hash),
        }
        key = LedgerKey(row.block_number, RECALL_LOG_INDEX, row.lot)
        yield Derived(key, times[row.block_number] * 1000, row.org_id, finish(event, hasher))


def _lot_class(gtin: str, lot_code: str) -> str:
    try:
        return lgtin_uri(gtin, lot_code)
    except ValidationError:
        return f"urn:partledger:lot:{gtin}:{lot_code}"


def derived_events(
    index: Connection,
    service: Connection,
    *,
    places: Places,
    ledger: LedgerFilter,
    after: LedgerKey | None = None,
    chunk: int = 2_000,
    hasher: Callable[[dict[str, Any]], str] = HASHES,
    reader: Recorder | None = None,
    recorder: Recorder | None = None,
) -> Iterator[Derived]:
    """The derived events `ledger` wants, after `after`, in order; lazily, `chunk` logs at a time (merged with the
    recalls only when there is one: a lot's 10^4 part events then come straight). `reader`: the final logs kept
    encoded (EncodedLogs) are read where they can answer, and those derived are kept; events may then come as Encoded
    (shown: shown_event). `recorder`: the logs derived are kept, nothing read from the kept ones."""
    parts = _part_events(index, service, places, ledger, after, hasher, chunk, reader=reader, recorder=recorder)
    recalls = _recall_events(index, service, places, ledger, after, hasher)
    first = next(recalls, None)
    return parts if first is None else heapq.merge(parts, itertools.chain((first,), recalls), key=_KEY)


_KEY = itemgetter(0)  # Derived.key


# --- finding a derived event by its eventID ---------------------------------------------------------------------


class DerivedIds:
    """eventID -> LedgerKey of every derived event up to a block, built incrementally in memory (per mirror).

    A derived eventID is a hash: nothing in it says which log it came from. The first lookup derives every event
    once (as fast as a query reads them); later lookups derive only the blocks indexed since. The identities the
    events are written with are part of their hashes: when they change (`fingerprint`), the index starts over. A key
    found is checked by deriving that one event again (a reorganisation may have replaced its log)."""

    def __init__(self) -> None:
        self.ids: dict[bytes, LedgerKey] = {}  # the hash's 32 bytes -> where the event comes from
        self.block = -1
        self.fingerprint: Any = None
        self.lock = threading.Lock()

    def lookup(self, index: Connection, service: Connection, places: Places, event_id: str | None, *, fingerprint: Any, head: int,
               recorder: Recorder | None = None) -> LedgerKey | None:  # fmt: skip
        """The key of the derived event `event_id` (None: only bring the index up to `head`); `recorder`: keep the
        logs derived on the way (EncodedLogs)."""
        try:
            digest = hash_digest(event_id) if event_id is not None else None
        except (ValueError, ValidationError):
            return None
        with self.lock:
            if fingerprint != self.fingerprint or head < self.block:
                self.ids, self.block, self.fingerprint = {}, -1, fingerprint
            if (digest is None or digest not in self.ids) and head > self.block:
                ledger = LedgerFilter(first_block=self.block + 1, last_block=head)
                for derived in derived_events(index, service, places=places, ledger=ledger, recorder=recorder):
                    self.ids[hash_digest(derived.event["eventID"])] = derived.key
                self.block = head
            return self.ids.get(digest) if digest is not None else None

    def __len__(self) -> int:
        return len(self.ids)

    def forget(self) -> None:
        with self.lock:
            self.ids, self.block, self.fingerprint = {}, -1, None


derived_ids = PerMirror(DerivedIds)  # the DerivedIds of a mirror


def find_derived(index: Connection, service: Connection, places: Places, event_id: str, *, engine: Engine, fingerprint: Any, head: int) -> Derived | None:
    """The derived event whose eventID is `event_id`, or None."""
    ids = derived_ids(engine)
    for attempt in range(2):
        key = ids.lookup(index, service, places, event_id, fingerprint=fingerprint, head=head)
        if key is None:
            return None
        for derived in derived_events(index, service, places=places, ledger=LedgerFilter(keys=frozenset({key}))):
            if derived.event["eventID"] == event_id:
                return derived
        ids.forget()  # the log was replaced (a reorganisation): build again once
    return None
