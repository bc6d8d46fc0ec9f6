"""The EPCIS 2.0 query side: GET /events (the standard's SimpleEventQuery parameters), GET /events/{eventID}, and a
lot's whole history as one EPCISDocument.

Where it sits: the read side of the service. ledger_service.epcis.routes (the REST binding) calls these functions;
`partledger epcis export` reaches lot_history_document through the service or straight from the databases.

Two sources, merged in eventTime order: the events capture stored (service tables epcis_events, epcis_event_epcs) and
the ledger's events derived from the mirror (ledger_service.epcis.derive). EPCs in a query may be EPC URIs or Digital
Link URIs (compared by their canonical key), or SGTIN patterns (`urn:epc:idpat:sgtin:CP.IR.*`, or the GTIN's Digital
Link `/01/{gtin}`). A list is pipe-delimited (`EQ_bizStep=shipping|receiving`); parameters are ANDed. An unknown
parameter or a malformed value is a 400 (BadRequest: unknown_parameter, invalid_parameter, invalid_page_token).

Pages: `perPage` events (default 30, at most 10,000), then an opaque `nextPageToken`, bound to the query (the same
parameters and caller) and carrying where the page ended; the caller sends it with the same parameters.

A captured event comes back as captured (its @context, its eventID), without its private fields; one captured with an
eventID of its own also carries its canonical hash, `partledger:eventHash` (GET /events/{eventID} answers it by
either). A derived event's eventID is its hash.

Access follows the data classes: every member sees every event (consortium data) without its private fields (a
captured event's sealed `partledger:vin`, shown to the capturing organisation, auditors and regulators; a derived
install's or removal's `partledger:vinHash`, shown to the workshop whose log it is, auditors and regulators). The
public sees nothing: the routes answer 401 before calling here.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from operator import itemgetter
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlencode

import orjson
from sqlalchemy import and_, exists, func, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine

from indexer.tables import IndexerState, Lot, Part, PartEvent, Recall
from ledger_service.auth import Principal
from ledger_service.epcis import derive
from ledger_service.epcis.derive import ClassMatch, Derived, EpcMatch, LedgerFilter, LedgerKey, Places
from ledger_service.epcis.identities import load_directory
from ledger_service.epcis.mapping import CONTEXT, LEDGER_STEPS, SCHEMA_VERSION
from ledger_service.epcis.tables import EpcisEvent, EpcisEventEpc
from ledger_service.errors import BadRequest, NotFound
from ledger_service.vault import Vault
from partledger.collector import collector_paused
from partledger.epcis.hashing import NI_PREFIX, NI_SUFFIX
from partledger.epcis.identifiers import ID_GS1, Epc, epc_key, lgtin_uri, parse_epc
from partledger.epcis.vocabulary import ACTIONS, EVENT_TYPES, bare_word
from partledger.errors import ValidationError
from partledger.ids import is_valid_serial, logistic_unit_id, part_id

T_CEVENT, T_CEPC = EpcisEvent.__table__, EpcisEventEpc.__table__
T_PART, T_LOT, T_STATE, T_PEVENT, T_RECALL = Part.__table__, Lot.__table__, IndexerState.__table__, PartEvent.__table__, Recall.__table__

DEFAULT_PER_PAGE = 30
MAX_PER_PAGE = 10_000
SQL_CHUNK = derive.SQL_CHUNK
SPARSE_EPCS = 10_000  # captured EPC rows a MATCH_ parameter names, at most, for them to be read through their index (_epc_condition)
LOT_CHUNK = 50_000  # logs read at once for a lot's history: one pass over the lot's parts is cheaper than several

# MATCH_ parameter -> the roles (epcis_event_epcs.role) of a captured event it looks at, and whether it names classes
EPC_PARAMETERS: dict[str, tuple[tuple[str, ...], bool]] = {
    "MATCH_epc": (("epc", "child"), False),
    "MATCH_parentID": (("parent",), False),
    "MATCH_inputEPC": (("input",), False),
    "MATCH_outputEPC": (("output",), False),
    "MATCH_anyEPC": (("epc", "child", "parent", "input", "output"), False),
    "MATCH_epcClass": (("quantity",), True),
    "MATCH_anyEPCClass": (("quantity", "input", "output"), True),
}
TIME_PARAMETERS = ("GE_eventTime", "LT_eventTime", "GE_recordTime", "LT_recordTime")
WORD_PARAMETERS = ("eventType", "EQ_action", "EQ_bizStep", "EQ_disposition")
PLACE_PARAMETERS = ("EQ_bizLocation", "EQ_readPoint")
PARAMETERS = frozenset(
    (*EPC_PARAMETERS, *TIME_PARAMETERS, *WORD_PARAMETERS, *PLACE_PARAMETERS, "EQ_eventID", "perPage", "nextPageToken")
)
EVENT_HASH = "partledger:eventHash"
CAPTURED, DERIVED = 0, 1


class Sources(Protocol):
    """What the query reads (ledger_service.deps.Services has it; so does the CLI's direct reader)."""

    index_engine: Engine
    service_engine: Engine
    vault: Vault | None


# --- the parameters ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventQuery:
    """A query's parameters, checked and parsed."""

    event_types: frozenset[str] | None = None
    actions: frozenset[str] | None = None
    biz_steps: frozenset[str] | None = None
    dispositions: frozenset[str] | None = None
    ge_event_ms: int | None = None
    lt_event_ms: int | None = None
    ge_record_ms: int | None = None
    lt_record_ms: int | None = None
    epcs: tuple[tuple[str, tuple[Epc, ...]], ...] = ()  # (MATCH_ parameter, its EPCs)
    biz_locations: tuple[str, ...] | None = None
    read_points: tuple[str, ...] | None = None
    event_ids: tuple[str, ...] | None = None
    per_page: int = DEFAULT_PER_PAGE
    token: str | None = None
    binding: str = ""  # what a page token is bound to: the parameters (but perPage and the token) and the caller
    given: tuple[tuple[str, str], ...] = field(default=())  # the parameters as given, to build the next page's URL


def _values(name: str, raw: str) -> list[str]:
    values = raw.split("|")
    if any(not value.strip() for value in values):
        raise BadRequest(f"{name}: an empty value in {raw!r}", code="invalid_parameter")
    return [value.strip() for value in values]


def _time_ms(name: str, raw: str) -> int:
    text = raw.strip()
    if len(text) > 6 and text[-6] == " " and text[-5:-3].isdigit():
        text = text[:-6] + "+" + text[-5:]  # an offset's "+" sent unencoded in a query string arrives as a space
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: {raw!r} is not an ISO 8601 date-time", code="invalid_parameter") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def _epc(name: str, value: str) -> Epc:
    try:
        return parse_epc(value)
    except ValidationError as exc:
        raise BadRequest(f"{name}: {exc}", code="invalid_parameter") from None


def parse_query(params: Mapping[str, str | Sequence[str]], *, principal: Principal) -> EventQuery:
    """The query's parameters, checked: BadRequest for an unknown parameter or a malformed value."""
    given: list[tuple[str, str]] = []
    getlist = getattr(params, "getlist", None)  # a query string's multi-dict: a repeated parameter is one list
    for name, raw in params.items():
        if name not in PARAMETERS:
            raise BadRequest(f"unknown query parameter {name!r}", code="unknown_parameter", details={"parameter": name})
        values = getlist(name) if getlist is not None else [raw] if isinstance(raw, str) else list(raw)
        given.append((name, "|".join(values)))
    fields: dict[str, Any] = {}
    epcs: list[tuple[str, tuple[Epc, ...]]] = []
    for name, text in given:
        if name == "eventType":
            types = frozenset(bare_word(value) for value in _values(name, text))
            unknown = sorted(types - EVENT_TYPES)
            if unknown:
                raise BadRequest(f"eventType: unknown event type {unknown[0]!r}", code="invalid_parameter")
            fields["event_types"] = types
        elif name == "EQ_action":
            actions = frozenset(_values(name, text))
            if not actions <= ACTIONS:
                raise BadRequest(f"EQ_action: an action is ADD, OBSERVE or DELETE, not {sorted(actions - ACTIONS)[0]!r}", code="invalid_parameter")
            fields["actions"] = actions
        elif name == "EQ_bizStep":
            fields["biz_steps"] = frozenset(bare_word(value) for value in _values(name, text))
        elif name == "EQ_disposition":
            fields["dispositions"] = frozenset(bare_word(value) for value in _values(name, text))
        elif name in TIME_PARAMETERS:
            fields[{"GE_eventTime": "ge_event_ms", "LT_eventTime": "lt_event_ms", "GE_recordTime": "ge_record_ms", "LT_recordTime": "lt_record_ms"}[name]] = _time_ms(name, text)
        elif name in EPC_PARAMETERS:
            epcs.append((name, tuple(_epc(name, value) for value in _values(name, text))))
        elif name in PLACE_PARAMETERS:
            values = tuple(_values(name, text))
            for value in values:
                _epc(name, value)  # a malformed GS1 location is refused; any other URI is compared as written
            fields["biz_locations" if name == "EQ_bizLocation" else "read_points"] = values
        elif name == "EQ_eventID":
            fields["event_ids"] = tuple(_values(name, text))
        elif name == "perPage":
            if not text.isdigit() or not 1 <= int(text) <= MAX_PER_PAGE:
                raise BadRequest(f"perPage is a whole number from 1 to {MAX_PER_PAGE}, not {text!r}", code="invalid_parameter")
            fields["per_page"] = int(text)
        elif name == "nextPageToken":
            fields["token"] = text
    bound = sorted((name, text) for name, text in given if name not in ("perPage", "nextPageToken"))
    binding = hashlib.sha256(orjson.dumps([principal.org_id, bound])).hexdigest()[:16]
    return EventQuery(**fields, epcs=tuple(epcs), binding=binding, given=tuple(given))


# --- page tokens --------------------------------------------------------------------------------------------------

SortKey = tuple[int, int, int, int, int]  # (eventTime ms, CAPTURED | DERIVED, seq | block, 0 | log index, 0 | first)


def encode_token(query: EventQuery, key: SortKey) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([query.binding, list(key)])).decode().rstrip("=")


def decode_token(query: EventQuery) -> SortKey | None:
    if query.token is None:
        return None
    try:
        binding, key = orjson.loads(base64.urlsafe_b64decode(query.token + "=" * (-len(query.token) % 4)))
    except (ValueError, TypeError):
        raise BadRequest("malformed nextPageToken", code="invalid_page_token") from None
    if not isinstance(key, list) or len(key) != 5 or not all(isinstance(part, int) and not isinstance(part, bool) for part in key):
        raise BadRequest("malformed nextPageToken", code="invalid_page_token")
    if binding != query.binding:
        raise BadRequest("this nextPageToken belongs to another query: send it with the parameters of the page before", code="invalid_page_token")
    return (key[0], key[1], key[2], key[3], key[4])


# --- captured events ----------------------------------------------------------------------------------------------


def _epc_condition(service: Connection, values: tuple[Epc, ...], roles: tuple[str, ...], *, classes: bool) -> Any:
    """SQL: a captured event names one of `values` in one of `roles`.

    When few EPC rows match (at most SPARSE_EPCS: a part's events, a lot's class), the events are found through the
    EPCs' index (ix_epcis_event_epcs_epc): `seq IN (SELECT seq ... WHERE epc ...)`, then sorted by eventTime. Tested
    on each captured event in eventTime order instead (a correlated EXISTS), a part's three events cost a scan of all
    10^5 captured ones (55 ms). When many match (a GTIN pattern over 10^5 captured parts), that scan finds a page
    in its first rows, where reading every match to sort them would cost 100 ms: then the EXISTS."""
    exact = sorted({epc.key for epc in values})
    alternatives = [T_CEPC.c.epc.in_(exact)]
    for epc in values:
        if epc.kind == "sgtin_pattern":  # the key is https://id.gs1.org/01/{gtin}: digits only, safe in LIKE
            alternatives.append(_starts_with(service, epc.key + ("/10/" if classes else "/21/")))
    matching = select(T_CEPC.c.seq).where(or_(*alternatives), T_CEPC.c.role.in_(roles))
    if service.execute(select(func.count()).select_from(matching.limit(SPARSE_EPCS + 1).subquery())).scalar_one() <= SPARSE_EPCS:
        return T_CEVENT.c.seq.in_(matching)
    return exists().where(T_CEPC.c.seq == T_CEVENT.c.seq, T_CEPC.c.role.in_(roles), or_(*alternatives))


def _starts_with(service: Connection, prefix: str) -> Any:
    """SQL: a captured EPC's key starts with `prefix` (digits and slashes after the scheme and host): a range of the
    EPCs' index on SQLite, whose LIKE cannot use it (it ignores case; a canonical key's scheme and host are lower
    case); PostgreSQL's LIKE is that range."""
    if service.dialect.name == "postgresql":
        return T_CEPC.c.epc.like(prefix + "%")
    return and_(T_CEPC.c.epc >= prefix, T_CEPC.c.epc < prefix[:-1] + chr(ord(prefix[-1]) + 1))


def _place_forms(values: tuple[str, ...]) -> list[str]:
    """A location as given and as its canonical key (a captured event stores it as written)."""
    forms = set(values)
    for value in values:
        try:
            forms.add(epc_key(value))
        except ValidationError:
            pass
    return sorted(forms)


def _id_condition(event_ids: tuple[str, ...]) -> Any:
    digests = [digest for digest in map(_ni_digest, event_ids) if digest is not None]
    condition = T_CEVENT.c.event_id.in_(sorted(set(event_ids)))
    return or_(condition, T_CEVENT.c.event_hash.in_(digests)) if digests else condition


def _ni_digest(value: str) -> bytes | None:
    """The 32 bytes of an `ni:///sha-256;<hex>?ver=…` canonical hash, None for any other eventID."""
    if not value.startswith("ni:///sha-256;"):
        return None
    digits = value[len("ni:///sha-256;") :].split("?", 1)[0]
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _captured_select(query: EventQuery, after: SortKey | None, service: Connection) -> Any:
    statement = select(T_CEVENT.c.seq, T_CEVENT.c.org_id, T_CEVENT.c.event_time_ms, T_CEVENT.c.event_hash, T_CEVENT.c.body, T_CEVENT.c.private)
    if query.event_types is not None:
        statement = statement.where(T_CEVENT.c.event_type.in_(sorted(query.event_types)))
    if query.actions is not None:
        statement = statement.where(T_CEVENT.c.action.in_(sorted(query.actions)))
    if query.biz_steps is not None:
        statement = statement.where(T_CEVENT.c.biz_step.in_(sorted(query.biz_steps)))
    if query.dispositions is not None:
        statement = statement.where(T_CEVENT.c.disposition.in_(sorted(query.dispositions)))
    if query.biz_locations is not None:
        statement = statement.where(T_CEVENT.c.biz_location.in_(_place_forms(query.biz_locations)))
    if query.read_points is not None:
        statement = statement.where(T_CEVENT.c.read_point.in_(_place_forms(query.read_points)))
    for column, bound, lower in (
        (T_CEVENT.c.event_time_ms, query.ge_event_ms, True), (T_CEVENT.c.event_time_ms, query.lt_event_ms, False),
        (T_CEVENT.c.record_time_ms, query.ge_record_ms, True), (T_CEVENT.c.record_time_ms, query.lt_record_ms, False),
    ):  # fmt: skip
        if bound is not None:
            statement = statement.where(column >= bound if lower else column < bound)
    for name, values in query.epcs:
        roles, classes = EPC_PARAMETERS[name]
        statement = statement.where(_epc_condition(service, values, roles, classes=classes))
    if query.event_ids is not None:
        statement = statement.where(_id_condition(query.event_ids))
    if after is not None:
        time_ms, source, seq = after[0], after[1], after[2]
        if source == CAPTURED:
            statement = statement.where(tuple_(T_CEVENT.c.event_time_ms, T_CEVENT.c.seq) > (time_ms, seq))
        else:
            statement = statement.where(T_CEVENT.c.event_time_ms > time_ms)
    return statement.order_by(T_CEVENT.c.event_time_ms, T_CEVENT.c.seq)


class Shown(NamedTuple):
    """An event as the caller sees it, and its place in the merged order (a tuple: one per event of a page)."""

    key: SortKey
    event: dict[str, Any]


_KEY = itemgetter(0)  # Shown.key, for heapq.merge


def _show_captured(row: Any, principal: Principal, vault: Vault | None) -> Shown:
    event = orjson.loads(row.body)
    ni = f"{NI_PREFIX}{bytes(row.event_hash).hex()}{NI_SUFFIX}"
    if event.get("eventID") != ni:
        event[EVENT_HASH] = ni  # the canonical hash of an event captured with an eventID of its own
    if row.private is not None and vault is not None and (principal.sees_everything or principal.org_id == row.org_id):
        event.update(orjson.loads(vault.open(bytes(row.private), bytes(row.event_hash))))
    return Shown((row.event_time_ms, CAPTURED, row.seq, 0, 0), event)


def _show_derived(derived: Derived, principal: Principal, sees_everything: bool | None = None) -> Shown:
    key = derived.key
    return _new(Shown, ((derived.time_ms, DERIVED, key[0], key[1], key[2]), _derived_event(derived, principal, sees_everything)))


_new = tuple.__new__  # a NamedTuple made without its Python __new__ (one per event of a page)


def _derived_event(derived: Derived, principal: Principal, sees_everything: bool | None = None) -> Any:
    """A derived event as `principal` sees it (a dict, or the orjson.Fragment of a kept one); `sees_everything`:
    principal.sees_everything, when the caller asked once for many events."""
    if sees_everything is None:
        sees_everything = principal.sees_everything
    return derive.shown_event(derived, sees_everything or principal.org_id == derived.org_id)


def _reader(sources: Sources, index: Connection, places: Places, encoded: bool) -> derive.Recorder | None:
    """Where a query answered as JSON (`encoded`) reads and keeps logs encoded (derive.EncodedLogs)."""
    if not encoded:
        return None
    return derive.encoded_logs(sources.index_engine).recorder(_kept_fingerprint(index, places), _head(index))


def _kept_fingerprint(index: Connection, places: Places) -> Any:
    """What derive.EncodedLogs' logs depend on beyond their rows: the identities, and the reorganisations the
    indexer rolled back (a replaced block's logs may keep their transactions and log indexes)."""
    return (_fingerprint(places), index.execute(select(func.coalesce(func.sum(T_STATE.c.reorgs), 0))).scalar())


# --- derived events -----------------------------------------------------------------------------------------------


def _operations(query: EventQuery) -> frozenset[str]:
    return frozenset(
        name for name, step in LEDGER_STEPS.items()
        if (query.event_types is None or step.event_type in query.event_types)
        and (query.actions is None or step.action in query.actions)
        and (query.biz_steps is None or step.biz_step in query.biz_steps)
        and (query.dispositions is None or step.disposition in query.dispositions)
    )  # fmt: skip


def _ledger_match(values: tuple[Epc, ...], roles: tuple[str, ...]) -> EpcMatch:
    ids, gtins = set(), set()
    for epc in values:
        if epc.kind == "sgtin" and epc.gtin and epc.serial is not None and is_valid_serial(epc.serial):
            ids.add(part_id(epc.gtin, epc.serial))
        elif epc.kind == "sscc" and epc.sscc is not None:
            ids.add(logistic_unit_id(epc.sscc))
        elif epc.kind == "sgtin_pattern" and epc.gtin:
            gtins.add(epc.gtin)
    return EpcMatch(frozenset(ids), frozenset(gtins), frozenset(roles))


def _class_match(values: tuple[Epc, ...]) -> ClassMatch:
    lots = frozenset((epc.gtin, epc.lot) for epc in values if epc.kind == "lgtin" and epc.gtin and epc.lot is not None)
    gtins = frozenset(epc.gtin for epc in values if epc.kind == "sgtin_pattern" and epc.gtin)
    return ClassMatch(lots, gtins)


def _uri_key(value: str) -> str:
    try:
        return epc_key(value)
    except ValidationError:
        return value


def ledger_filter(query: EventQuery, *, index: Connection, places: Places, derived_keys: frozenset[LedgerKey] | None) -> LedgerFilter:
    """The derived events a query wants."""
    operations = _operations(query)
    nothing = not operations
    epcs, classes = [], []
    for name, values in query.epcs:
        roles, names_classes = EPC_PARAMETERS[name]
        if names_classes:
            classes.append(_class_match(values))
        else:  # epcList, childEPCs, parentID, inputEPCList, outputEPCList as the same roles name them in captured events
            epcs.append(_ledger_match(values, roles))
    ge = max((bound for bound in (query.ge_event_ms, query.ge_record_ms) if bound is not None), default=None)
    lt = min((bound for bound in (query.lt_event_ms, query.lt_record_ms) if bound is not None), default=None)
    first = last = None
    if ge is not None or lt is not None:
        first, last, empty = derive.block_bounds(index, ge_ms=ge, lt_ms=lt)
        nothing = nothing or empty
    sites = {}
    for name, values in (("biz", query.biz_locations), ("read", query.read_points)):
        if values is not None:
            sites[name] = places.site_keys_at(_uri_key, {_uri_key(value) for value in values})
    return LedgerFilter(
        operations=operations, first_block=first, last_block=last, epcs=tuple(epcs), classes=tuple(classes),
        read_point_keys=sites.get("read"), biz_location_keys=sites.get("biz"), keys=derived_keys, nothing=nothing,
    )  # fmt: skip


def _derived_after(ledger: LedgerFilter, after: SortKey | None, index: Connection) -> tuple[LedgerFilter, LedgerKey | None]:
    """Where the derived events of the next page start, given where the page before ended."""
    if after is None:
        return ledger, None
    if after[1] == DERIVED:
        return ledger, LedgerKey(after[2], after[3], after[4])
    first, _, empty = derive.block_bounds(index, ge_ms=after[0], lt_ms=None)  # after a captured event at time t
    if empty:
        return replace(ledger, nothing=True), None
    return replace(ledger, first_block=max(first or 0, ledger.first_block or 0)), None


# --- the entry points ---------------------------------------------------------------------------------------------


def _read(sources: Sources) -> tuple[Connection, Connection]:
    index = sources.index_engine.connect()
    if sources.index_engine.dialect.name == "postgresql":
        index = index.execution_options(isolation_level="REPEATABLE READ")
    return index, sources.service_engine.connect()


def _places(sources: Sources, index: Connection) -> Places:
    return derive.load_places(load_directory(sources.service_engine, sources.index_engine), index)


def _fingerprint(places: Places) -> Any:
    directory = places.directory
    return (tuple(sorted(directory.party_glns.items())), tuple(sorted(directory.site_locations.items(), key=repr)), tuple(sorted(places.sites.items())))


def _head(index: Connection) -> int:
    head = index.execute(select(func.max(T_STATE.c.block_number))).scalar()
    if head is None:  # a mirror written by hand (tests): its newest event
        head = max(index.execute(select(func.max(T_PEVENT.c.block_number))).scalar() or -1, index.execute(select(func.max(T_RECALL.c.block_number))).scalar() or -1)
    return int(head)


def _derived_keys(sources: Sources, index: Connection, service: Connection, places: Places, event_ids: tuple[str, ...]) -> frozenset[LedgerKey]:
    ids = derive.derived_ids(sources.index_engine)
    fingerprint, head = _fingerprint(places), _head(index)
    keys = (ids.lookup(index, service, places, event_id, fingerprint=fingerprint, head=head) for event_id in event_ids if _ni_digest(event_id))
    return frozenset(key for key in keys if key is not None)


WARM_WHILE_USED_SECONDS = 600.0  # a process warms (warm_derived) while EPCIS was used in it this recently
_last_used = -WARM_WHILE_USED_SECONDS - 1.0  # time.monotonic() of this process's last EPCIS read or capture job


def note_use() -> None:
    """An EPCIS read or capture job ran in this process: its capture worker keeps warming for WARM_WHILE_USED_SECONDS."""
    global _last_used
    _last_used = time.monotonic()


def used_recently() -> bool:
    """Whether this process served EPCIS lately. A process that does not (the relay and command traffic of an API
    worker) skips the warm-up: every API process derived and hashed each block's events for itself, 17-25 % of each
    worker's GIL time under relayed load with no EPCIS client at all. The first read after a quiet spell derives
    what it needs on its own path, as any read of logs not kept does."""
    return time.monotonic() - _last_used <= WARM_WHILE_USED_SECONDS


def warm_derived(sources: Sources) -> int:
    """Derives (and hashes) the ledger events of the blocks indexed since the last call, so that eventID lookups and
    the next queries find their hashes made; returns how many derived events are indexed. For a service thread that
    runs it after the indexer moves (each event's hash is then computed once, off the request path)."""
    index, service = _read(sources)
    with collector_paused(), index, service, index.begin(), service.begin():
        places = _places(sources, index)
        ids = derive.derived_ids(sources.index_engine)
        fingerprint, head = _fingerprint(places), _head(index)
        recorder = derive.encoded_logs(sources.index_engine).recorder(_kept_fingerprint(index, places), head)
        ids.lookup(index, service, places, None, fingerprint=fingerprint, head=head, recorder=recorder)
        return len(ids)


def query_events(*, services: Sources, principal: Principal, params: Mapping[str, str | Sequence[str]], base_url: str,
                 encoded: bool = False) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """GET /events: an EPCISQueryDocument of one page of the events matching `params`, and the next page's URL
    (for `Link: <url>; rel="next"`), None on the last page. `encoded`: the answer goes out as JSON (orjson), and
    its derived events may be orjson.Fragments (derive.EncodedLogs)."""
    note_use()
    query = parse_query(params, principal=principal)
    after = decode_token(query)
    index, service = _read(services)
    with collector_paused(), index, service, index.begin(), service.begin():
        places = _places(services, index)
        keys = _derived_keys(services, index, service, places, query.event_ids) if query.event_ids is not None else None
        ledger, derived_after = _derived_after(ledger_filter(query, index=index, places=places, derived_keys=keys), after, index)
        wanted = query.per_page + 1
        sees_everything = principal.sees_everything
        captured = (_show_captured(row, principal, services.vault) for row in service.execute(_captured_select(query, after, service).limit(wanted)))
        derived = (  # as many logs a chunk as the page wants events: each chunk is a pass over the logs that match
            _show_derived(event, principal, sees_everything)
            for event in derive.derived_events(
                index, service, places=places, ledger=ledger, after=derived_after, chunk=max(wanted, 64), reader=_reader(services, index, places, encoded)
            )  # fmt: skip
        )
        page = list(itertools.islice(heapq.merge(captured, derived, key=_KEY), wanted))
    next_url = None
    if len(page) > query.per_page:
        page = page[: query.per_page]
        token = encode_token(query, page[-1].key)
        kept = [(name, text) for name, text in query.given if name != "nextPageToken"]
        next_url = f"{base_url}?{urlencode(kept + [('nextPageToken', token)])}"
    return query_document([shown.event for shown in page]), next_url


def query_document(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@context": CONTEXT,
        "type": "EPCISQueryDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": _now(),
        "epcisBody": {"queryResults": {"queryName": "SimpleEventQuery", "resultsBody": {"eventList": events}}},
    }


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def get_event(*, services: Sources, principal: Principal, event_id: str) -> dict[str, Any]:
    """GET /events/{eventID}: a captured event by its eventID (or its canonical hash), or a derived one by its
    eventID (its hash); NotFound unknown_event otherwise. The event carries its @context."""
    note_use()
    index, service = _read(services)
    with collector_paused(), index, service, index.begin(), service.begin():  # the first lookup derives every event
        rows = service.execute(
            select(T_CEVENT.c.seq, T_CEVENT.c.org_id, T_CEVENT.c.event_time_ms, T_CEVENT.c.event_hash, T_CEVENT.c.body, T_CEVENT.c.private)
            .where(_id_condition((event_id,))).order_by(T_CEVENT.c.event_id != event_id, T_CEVENT.c.seq).limit(1)
        ).all()  # fmt: skip
        if rows:
            event = _show_captured(rows[0], principal, services.vault).event
            return event if "@context" in event else {"@context": CONTEXT, **event}
        if _ni_digest(event_id) is not None:
            places = _places(services, index)
            found = derive.find_derived(
                index, service, places, event_id, engine=services.index_engine, fingerprint=_fingerprint(places), head=_head(index)
            )  # fmt: skip
            if found is not None:
                return {"@context": CONTEXT, **_show_derived(found, principal).event}
    raise NotFound(f"no event {event_id!r}", code="unknown_event")


def lot_history_document(*, services: Sources, principal: Principal, lot: int, encoded: bool = False) -> dict[str, Any]:
    """Every event of a lot, oldest first, as one EPCISDocument: the ledger's (derived; an event names every part of
    its log, the lot's and any other's; with the packings of the containers that held its parts: derive.lot_related)
    and the captured events that name one of its parts, its class (LGTIN) or one of those containers. `encoded`: as
    query_events."""
    note_use()
    index, service = _read(services)
    with collector_paused(), index, service, index.begin(), service.begin():
        code = index.execute(select(T_LOT.c.lot_code).where(T_LOT.c.lot == lot)).scalar()
        if code is None:
            raise NotFound(f"no lot {lot}", code="unknown_lot")
        places = _places(services, index)
        sees_everything = principal.sees_everything
        related = derive.lot_related(index, lot) if derive.has_related(index) else derive.LotRelated()
        captured = [_show_captured(row, principal, services.vault) for row in _lot_captured(index, service, lot, code, containers=related.containers)]
        derived = derive.derived_events(
            index, service, places=places, ledger=LedgerFilter(lot=lot, lot_extra=related), chunk=LOT_CHUNK, reader=_reader(services, index, places, encoded)
        )  # fmt: skip
        if captured:
            events = [shown.event for shown in heapq.merge(captured, map(partial(_show_derived, principal=principal, sees_everything=sees_everything), derived), key=_KEY)]
        else:  # the derived events as they come (10^4 of them: no merge, no Shown)
            events = [_derived_event(event, principal, sees_everything) for event in derived]
    return {
        "@context": CONTEXT,
        "type": "EPCISDocument",
        "schemaVersion": SCHEMA_VERSION,
        "creationDate": _now(),
        "epcisBody": {"eventList": events},
    }


def _lot_captured(index: Connection, service: Connection, lot: int, code: str, *, containers: frozenset[bytes] = frozenset()) -> Iterator[Any]:
    """The captured events naming a part of the lot, its class or one of `containers` (logistic units and assemblies
    that held its parts), in eventTime order."""
    if service.execute(select(T_CEPC.c.seq).limit(1)).first() is None:
        return iter(())  # nothing captured yet
    parts = index.execute(select(T_PART.c.part_id, T_PART.c.gtin).where(T_PART.c.lot == lot)).all()
    gtins = sorted({gtin for _, gtin in parts})
    classes = []
    for gtin in gtins:
        try:
            classes.append(lgtin_uri(gtin, code))
        except ValidationError:
            pass
    seqs: set[int] = set()
    if classes:
        seqs.update(service.execute(select(T_CEPC.c.seq).where(T_CEPC.c.epc.in_(classes))).scalars())
    if _may_name_parts_of(service, gtins):
        seqs.update(row[0] for row in derive.driver_rows(service, f"SELECT seq FROM {T_CEPC.name} WHERE part_id {{}}", [bytes(part) for part, _ in parts]))
    if containers:  # a unit's SSCC is stored with the unit's id (ledger_service.epcis.capture)
        seqs.update(row[0] for row in derive.driver_rows(service, f"SELECT seq FROM {T_CEPC.name} WHERE part_id {{}}", sorted(containers)))
    ordered = sorted(seqs)
    found = []
    for start in range(0, len(ordered), SQL_CHUNK):
        found += service.execute(
            select(T_CEVENT.c.seq, T_CEVENT.c.org_id, T_CEVENT.c.event_time_ms, T_CEVENT.c.event_hash, T_CEVENT.c.body, T_CEVENT.c.private)
            .where(T_CEVENT.c.seq.in_(ordered[start : start + SQL_CHUNK]))
        ).all()  # fmt: skip
    return iter(sorted(found, key=lambda row: (row.event_time_ms, row.seq)))


def _may_name_parts_of(service: Connection, gtins: list[str]) -> bool:
    """Whether a captured event may name a serialised part of one of these GTINs, before asking about each of a lot's
    thousands of parts: on SQLite, whether a captured SGTIN of theirs exists (its key is https://id.gs1.org/01/{the
    GTIN's 14 digits}/21/…, as the mirror writes the GTIN of the part whose id it has); elsewhere, assumed."""
    if service.dialect.name != "sqlite":
        return True  # PostgreSQL's index of the keys cannot answer a prefix (its collation is not C)
    return any(
        service.execute(select(T_CEPC.c.seq).where(_starts_with(service, f"{ID_GS1}/01/{gtin}/21/"), T_CEPC.c.part_id.is_not(None)).limit(1)).first()
        for gtin in gtins
    )
