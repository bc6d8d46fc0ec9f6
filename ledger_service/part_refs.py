"""Parts named as people see them, resolved to part ids against the indexer's mirror.

HTTP body or console form → **part_refs** → write_service's pre-checks → outbox. A write names its parts by a list of
entries (rows, counted from 1), each one of:
- a part id, "0x" + 64 hex digits;
- {"gtin": ..., "serial": ...}: a GTIN-8/12/13/14 (normalised to 14 digits, check digit verified) and a GS1 serial;
- a Digital Link URI as a label prints it, https://{resolver}/01/{gtin}/21/{serial}[?sig=…]. Naming a part is not
  verifying a label: a signature, when present, is not checked here (the resolver and the scan endpoint do that);
- {"sscc": ...}: a logistic unit (a carton, a pallet: GS1 AI 00, 18 digits), where a write takes one (ship, receive,
  cancel, pack, unpack);
- a selection {"lot": <lot code (string) or lot number (integer)>, "gtin"?, "status"?, "site"?}: the caller's own
  parts of that lot, optionally of one GTIN, in one status, at one of its sites (a site name or site key address).
  "Own" is who must hold a part for the write: its custodian, or for a receipt its recipient. Without "status", the
  statuses the write starts from (for a shipment: in stock). A part inside a container moves only with it, so a
  selection leaves such parts out, but for an unpacking or a disassembly.

A row that cannot be read, names no registered part, names a part the caller does not hold, selects nothing or names
a part an earlier row named is refused with its row and reason (422 invalid_parts); nothing is accepted then.
Resolution takes a handful of SQL queries per request whatever the number of rows: part ids are computed here
(keccak) and looked up in chunks, selections in one query for their lots and one for their parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Union

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from indexer.tables import Containment, LogisticUnit, Lot, Part, SiteKey
from labels.digital_link import parse_uri
from ledger_service.auth import Principal
from ledger_service.errors import PayloadTooLarge, RowErrors
from ledger_service.operations import OPERATIONS
from partledger.errors import ValidationError
from partledger.ids import ascii32, logistic_unit_id, normalize_gtin, part_id_unchecked, validate_lot, validate_serial
from partledger.model import PartStatus

__all__ = ["PartRef", "RowErrors", "Selection", "parse_part_ref", "resolve_install_parts", "resolve_parts"]

PartRef = Union[str, Mapping[str, Any]]  # one entry as sent: a string (part id or URI) or an object
UNREADABLE, UNKNOWN, NOT_YOURS, EMPTY, DUPLICATE = "unreadable", "unknown_part", "not_yours", "empty_selection", "duplicate_part"
STATUS_NAMES = {status.name.lower(): status for status in PartStatus if status is not PartStatus.NONE}
LOOKUP_CHUNK = 900  # bound parameters per IN (...) query, under SQLite's limit
MAX_ERRORS = 1000  # rows reported per refusal
SELECTIONS_PER_QUERY = 50  # selections OR-ed into one query (a few bound parameters each)
_PART_ID = re.compile(r"0[xX][0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_PART_KEYS, _SELECTION_KEYS = frozenset({"gtin", "serial"}), frozenset({"lot", "gtin", "status", "site"})
_UNIT_KEYS = frozenset({"sscc"})


@dataclass(frozen=True)
class Selection:
    """The caller's parts of a lot: by lot code or lot number, narrowed by GTIN (14 digits), status and site."""

    lot_code: str | None = None
    lot_number: int | None = None
    gtin: str | None = None
    status: PartStatus | None = None
    site: str | None = None


def parse_part_ref(value: Any) -> bytes | Selection:
    """The part id an entry names, or the selection it describes; ValidationError code "unreadable" otherwise."""
    if isinstance(value, bytes):
        if len(value) != 32:
            raise ValidationError(UNREADABLE, "a part id is 32 bytes")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text[:2].lower() == "0x":
            if not _PART_ID.fullmatch(text):
                raise ValidationError(UNREADABLE, "a part id is 0x followed by 64 hex digits")
            return bytes.fromhex(text[2:])
        if text[:7].lower() == "http://" or text[:8].lower() == "https://":
            try:
                link = parse_uri(text)
            except ValidationError as exc:
                raise ValidationError(UNREADABLE, f"not a Digital Link of a part: {exc}") from None
            return part_id_unchecked(int(link.gtin), ascii32(link.serial))
        raise ValidationError(UNREADABLE, "a part is named by its id (0x…), a Digital Link URI, {gtin, serial} or a selection {lot, …}")
    if isinstance(value, Mapping):
        keys = set(value)
        if keys == _PART_KEYS:
            return _gtin_serial(value["gtin"], value["serial"])
        if keys == _UNIT_KEYS:
            if not isinstance(value["sscc"], (str, int)) or isinstance(value["sscc"], bool):
                raise ValidationError(UNREADABLE, "sscc is a string of 18 digits")
            try:
                return logistic_unit_id(value["sscc"])
            except ValidationError as exc:
                raise ValidationError(UNREADABLE, str(exc)) from None
        if "lot" in keys and keys <= _SELECTION_KEYS:
            return _selection(value)
        raise ValidationError(UNREADABLE, "an object names a part as {gtin, serial}, a logistic unit as {sscc}, or selects parts as {lot, gtin?, status?, site?}")
    raise ValidationError(UNREADABLE, "a part is named by a string or an object")


def _gtin_serial(gtin: Any, serial: Any) -> bytes:
    if not isinstance(gtin, (str, int)) or isinstance(gtin, bool) or not isinstance(serial, str):
        raise ValidationError(UNREADABLE, "gtin is a string of digits and serial a string")
    try:
        gtin14 = normalize_gtin(gtin)
        validate_serial(serial)
    except ValidationError as exc:
        raise ValidationError(UNREADABLE, str(exc)) from None
    return part_id_unchecked(int(gtin14), ascii32(serial))


def _selection(value: Mapping[str, Any]) -> Selection:
    lot, gtin, status, site = value["lot"], value.get("gtin"), value.get("status"), value.get("site")
    code = number = None
    if isinstance(lot, str):
        try:
            code = validate_lot(lot)
        except ValidationError as exc:
            raise ValidationError(UNREADABLE, str(exc)) from None
    elif isinstance(lot, int) and not isinstance(lot, bool) and 1 <= lot < 2**63:
        number = lot
    else:
        raise ValidationError(UNREADABLE, "lot is a lot code (a string) or a lot number (a positive integer)")
    if gtin is not None:
        if not isinstance(gtin, (str, int)) or isinstance(gtin, bool):
            raise ValidationError(UNREADABLE, "gtin is a string of digits")
        try:
            gtin = normalize_gtin(gtin)
        except ValidationError as exc:
            raise ValidationError(UNREADABLE, str(exc)) from None
    if status is not None and (not isinstance(status, str) or status not in STATUS_NAMES):
        raise ValidationError(UNREADABLE, f"status is one of {', '.join(STATUS_NAMES)}")
    if site is not None and (not isinstance(site, str) or not 1 <= len(site) <= 64):
        raise ValidationError(UNREADABLE, "site is a site name or a site key address")
    return Selection(lot_code=code, lot_number=number, gtin=gtin, status=None if status is None else STATUS_NAMES[status], site=site)


# --- resolution -------------------------------------------------------------------------------------------------


def resolve_parts(
    conn: Connection, principal: Principal, refs: Sequence[Any], *, kind: str | None = None, max_parts: int = 100_000,
    allow_selections: bool = True,
) -> list[bytes]:  # fmt: skip
    """The part ids that `refs` name, in row order (a selection's parts in part id order), for the write `kind`
    (who must hold the parts, a selection's default statuses); without `kind`, parts the caller holds or is shipped,
    in any status. RowErrors (422 invalid_parts) when any row is refused; PayloadTooLarge (413 too_many_parts) when
    the parts named come to more than `max_parts`."""
    op = OPERATIONS[kind] if kind is not None else None
    holders = (op.holder,) if op is not None else ("custodian", "recipient")
    errors: list[dict[str, Any]] = []
    parsed: list[tuple[int, Any, bytes | Selection]] = []
    for row, value in enumerate(refs, start=1):
        try:
            ref = parse_part_ref(value)
            if isinstance(ref, Selection) and not allow_selections:
                raise ValidationError(UNREADABLE, "each item names one part: a selection is not allowed here")
        except ValidationError as exc:
            errors.append(_row_error(row, value, exc.code, str(exc)))
            continue
        parsed.append((row, value, ref))

    explicit = [ref for _, _, ref in parsed if isinstance(ref, bytes)]
    held = _held(conn, explicit)
    selections = [ref for _, _, ref in parsed if isinstance(ref, Selection)]
    selected = (
        _select(conn, principal, selections, holders=holders, default_statuses=op.from_statuses if op else None, cap=max_parts,
                loose_only=kind not in ("unpack", "disassemble"))
        if selections else {}
    )  # fmt: skip

    ids: list[bytes] = []
    named: dict[bytes, int] = {}  # part id -> the row that first named it
    for row, value, ref in parsed:
        if isinstance(ref, bytes):
            found = held.get(ref)
            if found is None:
                errors.append(_row_error(row, value, UNKNOWN, f"no part 0x{ref.hex()} is registered"))
                continue
            if principal.org_id not in (getattr(found, holder) for holder in holders):
                errors.append(_row_error(row, value, NOT_YOURS, f"part 0x{ref.hex()} is not held by your organisation" + (f" (to {kind})" if kind else "")))
                continue
            members = [ref]
        else:
            found_members = selected[ref]
            if isinstance(found_members, str) or not found_members:
                why = found_members if isinstance(found_members, str) else None
                errors.append(_row_error(row, value, EMPTY, _empty_reason(ref, why, kind)))
                continue
            members = found_members
        repeated = next((pid for pid in members if pid in named), None)
        if repeated is not None:
            errors.append(_row_error(row, value, DUPLICATE, f"part 0x{repeated.hex()} is named by row {named[repeated]} already"))
            continue
        named.update((pid, row) for pid in members)
        ids.extend(members)
        if len(ids) > max_parts:
            raise PayloadTooLarge(f"the parts named come to more than {max_parts} (at row {row}): narrow the selection or send several requests", code="too_many_parts")
    if errors:
        errors.sort(key=lambda error: error["row"])
        raise RowErrors(f"{len(errors)} of {len(refs)} part entries are refused; nothing was accepted", errors[:MAX_ERRORS])
    return ids


def resolve_install_parts(conn: Connection, principal: Principal, refs: Sequence[Any]) -> list[bytes]:
    """One part per installation item: as resolve_parts for an installation, selections refused."""
    return resolve_parts(conn, principal, refs, kind="install", allow_selections=False)


def _row_error(row: int, value: Any, code: str, message: str) -> dict[str, Any]:
    shown = "0x" + value.hex() if isinstance(value, bytes) else value
    return {"row": row, "value": shown, "code": code, "message": message}


def _held(conn: Connection, ids: list[bytes]) -> dict[bytes, Any]:
    """Custodian and recipient of each registered part among `ids`."""
    found: dict[bytes, Any] = {}
    unique = list(dict.fromkeys(ids))
    part = Part.__table__
    for start in range(0, len(unique), LOOKUP_CHUNK):
        chunk = unique[start : start + LOOKUP_CHUNK]
        rows = conn.execute(select(part.c.part_id, part.c.custodian, part.c.recipient).where(part.c.part_id.in_(chunk)))
        found.update({bytes(row.part_id): row for row in rows})
    unit = LogisticUnit.__table__
    missing = [pid for pid in unique if pid not in found]
    for start in range(0, len(missing), LOOKUP_CHUNK):
        rows = conn.execute(select(unit.c.unit_id, unit.c.custodian, unit.c.recipient).where(unit.c.unit_id.in_(missing[start : start + LOOKUP_CHUNK])))
        found.update({bytes(row.unit_id): row for row in rows})
    return found


_NO_LOT, _NO_SITE = "no_lot", "no_site"


def _select(
    conn: Connection, principal: Principal, selections: list[Selection], *, holders: tuple[str, ...],
    default_statuses: Iterable[PartStatus] | None, cap: int, loose_only: bool = True,
) -> dict[Selection, list[bytes] | str]:  # fmt: skip
    """The part ids of each selection, in part id order, or why it selects nothing (_NO_LOT, _NO_SITE): one query
    for the lots, one for the caller's sites, and one per SELECTIONS_PER_QUERY selections for the caller's parts,
    every filter in SQL so that a LIMIT bounds what is read."""
    lot, part, key = Lot.__table__, Part.__table__, SiteKey.__table__
    codes = {sel.lot_code for sel in selections if sel.lot_code is not None}
    numbers = {sel.lot_number for sel in selections if sel.lot_number is not None}
    lots_by_code: dict[str, set[int]] = {}
    known_numbers: set[int] = set()
    conditions = ([lot.c.lot_code.in_(codes)] if codes else []) + ([lot.c.lot.in_(numbers)] if numbers else [])
    for number, code in conn.execute(select(lot.c.lot, lot.c.lot_code).where(or_(*conditions))):
        lots_by_code.setdefault(code, set()).add(number)
        known_numbers.add(number)
    sites: dict[str, set[str]] = {}
    if any(sel.site is not None for sel in selections):
        for address, site in conn.execute(select(key.c.address, key.c.site).where(key.c.org_id == principal.org_id)):
            sites.setdefault(address.lower(), set()).add(address)
            sites.setdefault(site, set()).add(address)

    result: dict[Selection, list[bytes] | str] = {}
    wanted: dict[Selection, tuple[set[int], frozenset[int] | None, set[str] | None]] = {}
    defaults = None if default_statuses is None else frozenset(int(status) for status in default_statuses)
    for sel in dict.fromkeys(selections):
        lot_numbers = lots_by_code.get(sel.lot_code, set()) if sel.lot_code is not None else {sel.lot_number} & known_numbers
        addresses = None if sel.site is None else sites.get(sel.site.lower() if _ADDRESS.fullmatch(sel.site) else sel.site, set())
        if not lot_numbers:
            result[sel] = _NO_LOT
        elif addresses is not None and not addresses:
            result[sel] = _NO_SITE
        else:
            wanted[sel] = (lot_numbers, frozenset({int(sel.status)}) if sel.status is not None else defaults, addresses)
            result[sel] = []

    def condition(sel: Selection) -> Any:
        lot_numbers, statuses, addresses = wanted[sel]
        terms = [part.c.lot.in_(sorted(lot_numbers))]
        if sel.gtin is not None:
            terms.append(part.c.gtin == sel.gtin)
        if statuses is not None:
            terms.append(part.c.status.in_(sorted(statuses)))
        if addresses is not None:
            terms.append(part.c.site_key.in_(sorted(addresses)))
        return and_(*terms)

    mine = or_(*(getattr(part.c, holder) == principal.org_id for holder in holders))
    if loose_only:
        contained = Containment.__table__
        mine = and_(mine, ~select(contained.c.part_id).where(contained.c.part_id == part.c.part_id).exists())
    by_lot: dict[int, list[Any]] = {}
    found: set[bytes] = set()
    pending = list(wanted)
    for start in range(0, len(pending), SELECTIONS_PER_QUERY):
        chunk = pending[start : start + SELECTIONS_PER_QUERY]
        query = select(part.c.part_id, part.c.lot, part.c.gtin, part.c.status, part.c.site_key).where(mine, or_(*(condition(sel) for sel in chunk)))
        for row in conn.execute(query.order_by(part.c.part_id).limit(cap + 1)):
            if bytes(row.part_id) not in found:
                found.add(bytes(row.part_id))
                by_lot.setdefault(row.lot, []).append(row)
        if len(found) > cap:
            raise PayloadTooLarge(f"the selection comes to more than {cap} parts: narrow it (gtin, status, site) or send several requests", code="too_many_parts")
    for sel, (lot_numbers, statuses, addresses) in wanted.items():
        members = [
            row for number in lot_numbers for row in by_lot.get(number, ())
            if (sel.gtin is None or row.gtin == sel.gtin) and (statuses is None or row.status in statuses)
            and (addresses is None or row.site_key in addresses)
        ]  # fmt: skip
        result[sel] = sorted(bytes(row.part_id) for row in members)
    return result


def _empty_reason(sel: Selection, why: str | None, kind: str | None) -> str:
    lot = f"lot {sel.lot_code!r}" if sel.lot_code is not None else f"lot number {sel.lot_number}"
    if why == _NO_LOT:
        return f"no {lot} is registered"
    if why == _NO_SITE:
        return f"your organisation has no site {sel.site!r}"
    narrowed = ", ".join(f"{name} {value}" for name, value in (("GTIN", sel.gtin), ("status", sel.status and sel.status.name.lower()), ("site", sel.site)) if value)
    if narrowed:
        return f"your organisation holds no part of {lot} with {narrowed}"
    return f"your organisation holds no part of {lot}" + (f" that it may {kind}" if kind else "")
