"""The write path's one door: every write the API and the console make, from a validated request to the outbox.

HTTP request → **write_service** → outbox (durable) → submitter → chain. The API's write routes parse a body and call
one function here; the console's forms do the same, so both share one authorisation, one validation and one outbox.
The functions block (SQL, a keccak per part): async callers run them with `run_in_threadpool`. They raise the errors
module's ApiErrors (and partledger's ValidationError) exactly as the API answers them.

Each submission checks, in this order: that the caller may act at all (a viewer may not: 403 read_only_role); its
own body (rows, VINs); a stored answer for its Idempotency-Key (a retry gets the first answer even when the command
took effect meanwhile and the checks below would now refuse it); the site key to sign with; the organisation's role;
the parts named by reference (part_refs: per-row refusals, 422 invalid_parts); the parts' state as the mirror has it;
then it writes the command, its items and the idempotency record in one transaction.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from ledger_service.auth import Principal, require_may_act  # a viewer reads and never writes: 403 read_only_role
from ledger_service.containment_checks import check_write
from ledger_service.deps import Services
from ledger_service.errors import BadRequest, PayloadTooLarge, Unprocessable
from ledger_service.operations import OPERATIONS
from ledger_service.outbox import Draft, Outbox
from ledger_service.part_refs import PartRef, resolve_install_parts, resolve_parts
from ledger_service.recall_notices import canonical_bytes, checked_notice, store_notice
from ledger_service.recall_notices import notice_hash as notice_digest
from ledger_service.tables import PrivateVin
from partledger.errors import ValidationError
from partledger.ids import logistic_unit_id, normalize_gtin, normalize_sscc, normalize_vin, part_id, validate_lot, validate_serial, vin_hash

__all__ = [
    "CONTAINMENT", "TRANSITIONS", "csv_registration", "outbox_of", "registration_draft", "require_may_act", "submit_batch",
    "submit_containment", "submit_install", "submit_recall", "submit_register", "submit_register_csv", "submit_remanufacture", "submit_transition",
]  # fmt: skip
TRANSITIONS = ("ship", "receive", "cancel", "sell", "remove", "quarantine", "release", "scrap", "recycle")
CONTAINMENT = ("pack", "unpack", "assemble", "disassemble")
CONTAINMENT_CHECKED = frozenset(TRANSITIONS + CONTAINMENT + ("install", "remanufacture"))
DocHash = bytes | str | None  # 32 bytes, or "0x" + 64 hex digits as the API's bodies carry it


# --- the checks every submission shares -------------------------------------------------------------------------


def outbox_of(services: Services) -> Outbox:
    if services.outbox is None:
        raise BadRequest("this service instance only reads (no site keys configured)", code="read_only")
    return services.outbox


def _accept(
    services: Services, principal: Principal, *, kind: str, build: Callable[[], Draft], site: str | None,
    idempotency_key: str | None, request_sha256: str, precheck: Callable[[], None] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Replay, signer, role, the draft, its parts' pre-check, then the outbox. `build` makes the draft after the
    replay and the role check: it resolves part references, which a retry must not repeat once the parts moved."""
    outbox = outbox_of(services)
    if idempotency_key is not None:
        replay = outbox.replay(principal.org_id, idempotency_key, request_sha256)
        if replay is not None:
            return replay
    signer = outbox.signer_for(principal, site)
    op = OPERATIONS[kind]
    outbox.precheck(principal, op, [])  # the role alone, before any part is looked up
    draft = build()
    outbox.precheck(principal, op, draft.part_ids, to=draft.summary.get("to"))
    if kind in CONTAINMENT_CHECKED:  # contained parts, logistic units, recalled parts inside containers
        check_write(services.index_engine, principal, kind, draft.part_ids, draft.summary)
    if precheck is not None:
        precheck()
    return outbox.accept(principal, draft, signer=signer, idempotency_key=idempotency_key, request_sha256=request_sha256)


def _hex(value: DocHash) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if len(value) != 32:
        raise BadRequest("a document hash is 32 bytes", code="invalid_request")
    return "0x" + bytes(value).hex()


def _chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


# --- part transitions: ship, receive, cancel, sell, remove, quarantine, release, scrap, recycle --------------------


def submit_transition(
    services: Services, principal: Principal, *, kind: str, parts: Sequence[bytes | PartRef], site: str | None = None,
    to_org: int | None = None, doc_hash: DocHash = None, idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """A transition of the parts named: each a 32-byte part id (taken as is, as the API's `part_ids`) or a reference
    that part_refs resolves (a "0x…" id, {gtin, serial}, a Digital Link URI, a lot selection). Answers the 202 body."""
    if kind not in TRANSITIONS:
        raise ValueError(f"not a part transition: {kind}")
    if (kind == "ship") != (to_org is not None):
        raise ValueError("to_org is given for a shipment, and only for one")
    require_may_act(principal)
    if not parts:
        raise Unprocessable("name at least one part", code="no_parts")
    doc = _hex(doc_hash)
    settings = services.settings

    def build() -> Draft:
        if all(isinstance(part, bytes) for part in parts):
            ids = list(parts)  # type: ignore[arg-type]
        else:
            with services.index_engine.connect() as conn:
                ids = resolve_parts(conn, principal, parts, kind=kind, max_parts=settings.max_rows_per_request)
        shared: dict[str, Any] = {"doc_hash": doc} | ({"to": to_org} if kind == "ship" else {})
        hex_ids = ["0x" + pid.hex() for pid in ids]
        items = [{"parts": chunk, **shared} for chunk in _chunks(hex_ids, settings.max_parts_per_tx)]
        return Draft(kind=kind, summary=shared, part_ids=ids, items=items, part_count=len(ids))

    return _accept(services, principal, kind=kind, build=build, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)


# --- registration -----------------------------------------------------------------------------------------------


def registration_draft(services: Services, *, gtin: str, lot: str, serials: list[str]) -> Draft:
    """The registration of `serials` of one GTIN and lot, or every invalid row at once (422 invalid_rows)."""
    if len(serials) > services.settings.max_rows_per_request:
        raise PayloadTooLarge(f"at most {services.settings.max_rows_per_request} parts per request")
    gtin14 = normalize_gtin(gtin)
    validate_lot(lot)
    errors = []
    for row, serial in enumerate(serials, start=1):
        try:
            validate_serial(serial)
        except ValidationError as exc:
            errors.append({"row": row, "serial": serial[:40], "code": exc.code, "message": str(exc)})
    if errors:
        raise Unprocessable(f"{len(errors)} row(s) are invalid", code="invalid_rows", details=errors[:1000])
    if len(set(serials)) != len(serials):
        raise Unprocessable("a serial appears twice in the request", code="duplicate_parts")
    pids = [part_id(gtin14, serial) for serial in serials]
    ids = ["0x" + pid.hex() for pid in pids]
    size = services.settings.max_parts_per_tx
    items = [{"gtin": gtin14, "lot": lot, "serials": chunk, "part_ids": id_chunk} for chunk, id_chunk in zip(_chunks(serials, size), _chunks(ids, size))]
    return Draft(kind="register", summary={"gtin": gtin14, "lot": lot}, part_ids=pids, items=items, part_count=len(serials))


def submit_register(
    services: Services, principal: Principal, *, gtin: str, lot: str, serials: list[str], site: str | None = None,
    idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    require_may_act(principal)
    draft = registration_draft(services, gtin=gtin, lot=lot, serials=serials)
    return _accept(services, principal, kind="register", build=lambda: draft, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)


def csv_registration(raw: bytes) -> tuple[str, str, list[str]]:
    """(gtin, lot, serials) of a CSV upload (header gtin,serial,lot; one GTIN and lot), or every invalid row at once:
    400 invalid_csv for a file that cannot be read, 422 invalid_rows with the file's line numbers."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadRequest("the CSV must be UTF-8", code="invalid_csv") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))  # newline="": the csv module reads line ends itself
    try:
        if reader.fieldnames is None or [name.strip().lower() for name in reader.fieldnames] != ["gtin", "serial", "lot"]:
            raise BadRequest("the CSV header must be: gtin,serial,lot", code="invalid_csv")
        rows = [(reader.line_num, row) for row in reader]  # the line in the file: the reader skips blank lines
    except csv.Error as exc:  # e.g. a NUL byte, or a field the csv module cannot read
        raise BadRequest(f"the CSV cannot be read at line {reader.line_num}: {exc}", code="invalid_csv") from None
    if not rows:
        raise BadRequest("the CSV has no rows", code="invalid_csv")
    errors = []
    first: dict[str, Any] | None = None  # the first valid row, whose GTIN and lot every other row must have
    for number, row in rows:
        if None in row or any(value is None for value in row.values()):
            errors.append({"row": number, "code": "invalid_row", "message": "wrong number of columns"})
            continue
        try:
            normalize_gtin(row["gtin"])
            validate_serial(row["serial"])
            validate_lot(row["lot"])
        except ValidationError as exc:
            errors.append({"row": number, "code": exc.code, "message": str(exc)})
            continue
        if first is None:
            first = row
        elif normalize_gtin(row["gtin"]) != normalize_gtin(first["gtin"]) or row["lot"] != first["lot"]:
            errors.append({"row": number, "code": "mixed_batch", "message": "every row of one upload must have the GTIN and lot of the first row"})
    if errors or first is None:
        raise Unprocessable(f"{len(errors)} CSV row(s) are invalid", code="invalid_rows", details=errors[:1000])
    return first["gtin"], first["lot"], [row["serial"] for _, row in rows]


def submit_register_csv(
    services: Services, principal: Principal, *, csv_bytes: bytes, site: str | None = None, idempotency_key: str | None = None,
    request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    require_may_act(principal)
    gtin, lot, serials = csv_registration(csv_bytes)
    draft = registration_draft(services, gtin=gtin, lot=lot, serials=serials)
    return _accept(services, principal, kind="register", build=lambda: draft, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)


# --- installation -----------------------------------------------------------------------------------------------


def submit_install(
    services: Services, principal: Principal, *, items: Sequence[tuple[bytes | PartRef, str]], site: str | None = None,
    doc_hash: DocHash = None, idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """Parts installed in vehicles: (part, VIN in clear) per item, the part a 32-byte id or a reference naming one
    part. The clear VIN and its salt are sealed into the service's private table in the command's transaction; only
    the salted hash goes on chain."""
    require_may_act(principal)
    vault = services.vault
    if vault is None:
        raise BadRequest("no VIN encryption key is configured on this service", code="read_only")
    if not items:
        raise Unprocessable("name at least one part and its vehicle", code="no_parts")
    doc = _hex(doc_hash)
    vins = [normalize_vin(vin) for _, vin in items]  # before anything else, as the body's own validation
    size = services.settings.max_parts_per_tx

    def build() -> Draft:
        refs = [part for part, _ in items]
        if all(isinstance(part, bytes) for part in refs):
            ids: list[bytes] = list(refs)  # type: ignore[arg-type]
        else:
            with services.index_engine.connect() as conn:
                ids = resolve_install_parts(conn, principal, refs)
        sealed: list[dict[str, Any]] = []
        part_hex, vin_hashes = [], []
        for pid, vin in zip(ids, vins):
            salt = secrets.token_bytes(32)
            hashed = vin_hash(vin, salt)
            part_hex.append("0x" + pid.hex())
            vin_hashes.append("0x" + hashed.hex())
            sealed.append({"vin_hash": hashed, "part_id": pid, "ciphertext": vault.seal(vin.encode() + salt, hashed)})
        payloads = [{"parts": chunk, "vin_hashes": hashes, "doc_hash": doc} for chunk, hashes in zip(_chunks(part_hex, size), _chunks(vin_hashes, size))]

        def store_vins(conn: Connection, command_id: str) -> None:
            now = time.time()
            conn.execute(insert(PrivateVin.__table__), [row | {"org_id": principal.org_id, "command_id": command_id, "created_at": now} for row in sealed])

        return Draft(kind="install", summary={"doc_hash": doc}, part_ids=ids, items=payloads, part_count=len(ids), after_write=store_vins)

    return _accept(services, principal, kind="install", build=build, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)


# --- lots and evidence ------------------------------------------------------------------------------------------


def submit_recall(
    services: Services, principal: Principal, *, lot: int, notice_hash: bytes | str | None = None, notice: Mapping[str, Any] | None = None,
    site: str | None = None, idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """A lot recalled by its manufacturer or a regulator, with its `notice` (ledger_service.recall_notices: kept here
    in the command's transaction, its SHA-256 on chain) or the bare `notice_hash` of a notice kept elsewhere. Both:
    the hash must be the notice's (422 notice_hash_mismatch); a notice that is not valid: 422 invalid_notice."""
    require_may_act(principal)
    canonical = None
    if notice is not None:
        canonical = canonical_bytes(checked_notice(notice))
        digest = "0x" + notice_digest(canonical).hex()
        if notice_hash is not None and (_hex(notice_hash) or "").lower() != digest:
            raise Unprocessable(f"notice_hash is not the notice's hash ({digest})", code="notice_hash_mismatch")
        notice_hash = digest
    if notice_hash is None:
        raise Unprocessable("a recall needs its notice or a notice_hash", code="invalid_notice")
    payload = {"lot": lot, "notice_hash": _hex(notice_hash)}

    def store(conn: Connection, command_id: str) -> None:
        assert canonical is not None
        store_notice(conn, command_id=command_id, canonical=canonical, org_id=principal.org_id, lot=lot)

    draft = Draft(kind="recall", summary=payload, part_ids=[], items=[payload], part_count=0, after_write=store if canonical is not None else None)
    outbox = outbox_of(services)
    return _accept(
        services, principal, kind="recall", build=lambda: draft, site=site, idempotency_key=idempotency_key,
        request_sha256=request_sha256, precheck=lambda: outbox.precheck_recall(principal, lot),
    )  # fmt: skip


def submit_batch(
    services: Services, principal: Principal, *, root: bytes | str, record_count: int, batch_kind: str, site: str | None = None,
    idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """The Merkle root of a batch of `record_count` records of `batch_kind`, anchored on chain."""
    require_may_act(principal)
    root_hex = _hex(root)
    assert root_hex is not None
    payload = {"root": root_hex, "record_count": record_count, "batch_kind": batch_kind}
    draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0)
    outbox = outbox_of(services)
    return _accept(
        services, principal, kind="anchor_batch", build=lambda: draft, site=site, idempotency_key=idempotency_key,
        request_sha256=request_sha256, precheck=lambda: outbox.precheck_batch(bytes.fromhex(root_hex[2:])),
    )  # fmt: skip


# --- containment and remanufacturing (issue 15) -----------------------------------------------------------------


def submit_containment(
    services: Services, principal: Principal, *, kind: str, container: str | int | bytes | PartRef, parts: Sequence[bytes | PartRef],
    site: str | None = None, idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """Parts packed into or unpacked from the logistic unit `container` (its SSCC), or fitted into or taken out of the
    assembly part `container` (its id, or a reference naming one part). The contents are part ids taken as they are,
    or references (part_refs). Checks, beyond the role and the parts' state: ledger_service.containment_checks."""
    if kind not in CONTAINMENT:
        raise ValueError(f"not a containment write: {kind}")
    require_may_act(principal)
    if not parts:
        raise Unprocessable("name at least one part", code="no_parts")
    settings = services.settings
    sscc = normalize_sscc(container) if kind in ("pack", "unpack") else None  # type: ignore[arg-type]

    def build() -> Draft:
        with services.index_engine.connect() as conn:
            summary: dict[str, Any]
            if sscc is not None:
                named = "0x" + logistic_unit_id(sscc).hex()
                shared, summary = {"sscc": sscc}, {"sscc": sscc, "unit_id": named}
            else:
                parent = container if isinstance(container, bytes) else resolve_parts(conn, principal, [container], max_parts=1, allow_selections=False)[0]
                named = "0x" + parent.hex()
                shared = summary = {"parent": named}
            if all(isinstance(part, bytes) for part in parts):
                ids: list[bytes] = list(parts)  # type: ignore[arg-type]
            else:
                ids = resolve_parts(conn, principal, parts, kind=kind, max_parts=settings.max_rows_per_request)
        hex_ids = ["0x" + pid.hex() for pid in ids]
        # part_ids: the container, so that the submitter never simulates a later write naming it before this one
        items = [{"parts": chunk, **shared, "part_ids": [named]} for chunk in _chunks(hex_ids, settings.max_parts_per_tx)]
        return Draft(kind=kind, summary=summary, part_ids=ids, items=items, part_count=len(ids))

    return _accept(services, principal, kind=kind, build=build, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)


def submit_remanufacture(
    services: Services, principal: Principal, *, original: bytes | PartRef, gtin: str, lot: str, serial: str, site: str | None = None,
    idempotency_key: str | None = None, request_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """A part returned to its manufacturer (or a remanufacturer) remanufactured into the new part `gtin`/`serial` of
    lot `lot`, linked to it on chain; the original is consumed."""
    require_may_act(principal)
    gtin14 = normalize_gtin(gtin)
    validate_lot(lot)
    validate_serial(serial)
    new = part_id(gtin14, serial)

    def build() -> Draft:
        if isinstance(original, bytes):
            source = original
        else:
            with services.index_engine.connect() as conn:
                (source,) = resolve_parts(conn, principal, [original], max_parts=1, allow_selections=False)
        payload = {"original": "0x" + source.hex(), "gtin": gtin14, "lot": lot, "serial": serial, "part_ids": ["0x" + source.hex(), "0x" + new.hex()]}
        summary = {key: value for key, value in payload.items() if key != "part_ids"}
        return Draft(kind="remanufacture", summary=summary, part_ids=[new], items=[payload], part_count=1)

    return _accept(services, principal, kind="remanufacture", build=build, site=site, idempotency_key=idempotency_key, request_sha256=request_sha256)
