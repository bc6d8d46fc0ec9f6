"""The durable outbox: an accepted command is in SQL before the 202 answer, split into items the submitter packs.

Accepting a command checks, in order: a site key the service can sign with for the caller, the organisation's role,
and what the indexer's mirror says of the command's subject (the parts' state; for a registration, that no part is
registered yet; for a shipment, the recipient; for a batch or a recall, that it did not happen already); then writes
the command, its items and the idempotency record in ONE transaction. Nothing here talks to the chain: the API keeps
accepting while the node is down. What the mirror cannot see yet (a command accepted but not mined, a block not yet
indexed) the contract refuses, and the command ends rejected with its custom error.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, insert, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from indexer.tables import Batch, LogisticUnit, Lot, Organisation, Part, SiteKey
from ledger_service.auth import Principal, require_may_act
from ledger_service.errors import Conflict, Forbidden, NotFound, Unprocessable
from ledger_service.group_commit import GroupCommit
from ledger_service.metrics import count_accepted
from ledger_service.operations import OPERATIONS, Operation
from ledger_service.relay_tables import RelayBatch, RelayRequest
from ledger_service.tables import ChainTransaction, Command, CommandItem, IdempotencyRecord
from partledger.db import one_of
from partledger.failpoints import failpoint
from partledger.jsonlog import current_request_id
from partledger.model import CUSTODY_ROLES, PartStatus, Role

T_IDEM, T_CMD, T_ITEM, T_TX = IdempotencyRecord.__table__, Command.__table__, CommandItem.__table__, ChainTransaction.__table__
T_PART, T_KEY, T_LOT, T_ORG, T_BATCH = Part.__table__, SiteKey.__table__, Lot.__table__, Organisation.__table__, Batch.__table__
T_UNIT = LogisticUnit.__table__
T_REQ, T_RELAY_BATCH = RelayRequest.__table__, RelayBatch.__table__
PRECHECK_CHUNK = 900  # bound parameters per IN (...) query, under SQLite's limit


@dataclass(frozen=True)
class Draft:
    """A validated request, ready to be written: kind, the parts it touches, per-item payloads."""

    kind: str
    summary: dict[str, Any]  # arguments shared by all its parts
    part_ids: list[bytes]  # parts whose state to pre-check (for a registration: the new ones; empty for non-part commands)
    items: list[dict[str, Any]]  # payloads, each at most max_parts_per_tx parts
    part_count: int
    after_write: Callable[[Connection, str], None] | None = None  # more rows in the same transaction (clear VINs)


class Outbox:
    def __init__(
        self, *, service_engine: Engine, index_engine: Engine, signers: Collection[str], max_parts_per_tx: int,
        refresh_keys: Callable[[], bool] | None = None,
    ) -> None:
        """`signers`: the addresses of the keys the service holds (a live view: keys added later count);
        `refresh_keys`: looks for keystores added since, true if it found some."""
        self.service_engine = service_engine
        self.index_engine = index_engine
        self.signers = signers
        self.refresh_keys = refresh_keys
        self.max_parts_per_tx = max_parts_per_tx
        # Concurrent commands are written in one transaction: one durable commit for the group, and no request waiting
        # for SQLite's write lock in its busy handler.
        self._writer: GroupCommit[Callable[[Connection], None]] = GroupCommit(service_engine, _run_each)

    # --- choosing the key -----------------------------------------------------------------------------------

    def signer_for(self, principal: Principal, site: str | None) -> str:
        """The site key the command will be signed with: an active key of the caller's organisation that this
        service holds, within the API key's sites, matching `site` (an address or a site name) when given. When
        there is none, keystores added since (a replacement key) are looked for once, and the key is chosen again
        whatever that look found: another thread may have opened the replacement meanwhile (the submitter, as the
        chain refuses the old key), while this one's look was held back by KEY_REFRESH_SECONDS or waited for it. A
        request in that moment of a `wallet rotate` got 403 no_site_key (test_key_compromise's rotation drill, once).
        Every signing path starts here, so a viewer is refused here (403 read_only_role), before anything is checked
        or signed."""
        require_may_act(principal)
        try:
            return self._signer_for(principal, site)
        except Forbidden:
            if self.refresh_keys is None:
                raise
            self.refresh_keys()
        return self._signer_for(principal, site)

    def _signer_for(self, principal: Principal, site: str | None) -> str:
        with self.index_engine.connect() as conn:
            keys = conn.execute(
                select(T_KEY.c.address, T_KEY.c.site).where(T_KEY.c.org_id == principal.org_id, T_KEY.c.revoked_block.is_(None)).order_by(T_KEY.c.added_block)
            ).all()
        usable = [key for key in keys if key.address in self.signers and principal.may_use(key.address, key.site)]
        if site is not None:
            usable = [key for key in usable if site in (key.address, key.site)]
        if not usable:
            where = f" for site {site!r}" if site else ""
            raise Forbidden(f"this service holds no active site key of organisation {principal.org_id}{where} that the API key may use", code="no_site_key")
        return usable[0].address

    # --- pre-checks -----------------------------------------------------------------------------------------

    def precheck(self, principal: Principal, op: Operation, part_ids: list[bytes], *, to: int | None = None) -> None:
        """The role, then each part as the mirror has it: for a registration, none may exist yet; otherwise each must
        be in a state `op` starts from, held by the caller. Then a shipment's recipient `to`: another active member
        that holds parts, and for parts of a recalled lot their manufacturer or a recycler."""
        if op.roles and not principal.roles & op.roles:
            raise Forbidden(f"{op.kind} needs one of the roles {_role_names(op.roles)}", code="missing_role")
        if not part_ids:
            return
        if len(set(part_ids)) != len(part_ids):
            raise Unprocessable("a part appears twice in the request", code="duplicate_parts")
        found: dict[bytes, Any] = {}
        with self.index_engine.connect() as conn:
            for start in range(0, len(part_ids), PRECHECK_CHUNK):
                chunk = part_ids[start : start + PRECHECK_CHUNK]
                rows = conn.execute(
                    select(T_PART.c.part_id, T_PART.c.status, T_PART.c.custodian, T_PART.c.recipient, T_PART.c.recalled, T_PART.c.manufacturer).where(one_of(conn, T_PART.c.part_id, chunk))
                )  # fmt: skip
                found.update({bytes(row.part_id): row for row in rows})
            missing = [pid for pid in part_ids if pid not in found]
            for start in range(0, len(missing), PRECHECK_CHUNK):  # logistic units (issue 15): they ship, receive, pack like parts
                rows = conn.execute(
                    select(T_UNIT.c.unit_id.label("part_id"), T_UNIT.c.status, T_UNIT.c.custodian, T_UNIT.c.recipient, false().label("recalled"), literal(0).label("manufacturer"))
                    .where(one_of(conn, T_UNIT.c.unit_id, missing[start : start + PRECHECK_CHUNK]))
                )  # fmt: skip
                found.update({bytes(row.part_id): row for row in rows})
        if op.registers:
            taken = [{"part_id": "0x" + pid.hex(), "manufacturer": found[pid].manufacturer, "status": PartStatus(found[pid].status).name.lower()} for pid in part_ids if pid in found]
            if taken:
                raise Conflict(f"{len(taken)} part(s) are registered already", code="already_registered", details=taken[:100])
            return
        unknown = [pid for pid in part_ids if pid not in found]
        if unknown:
            raise Unprocessable(f"{len(unknown)} part(s) are not registered", code="unknown_part", details=[{"part_id": "0x" + pid.hex()} for pid in unknown[:100]])
        problems = []
        for pid in part_ids:
            row = found[pid]
            holder = row.recipient if op.holder == "recipient" else row.custodian
            reason = None
            if PartStatus(row.status) not in op.from_statuses:
                reason = f"status is {PartStatus(row.status).name.lower()}"
            elif holder != principal.org_id:
                reason = f"{op.holder} is organisation {holder}"
            elif op.blocked_by_recall and row.recalled:
                reason = "its lot is recalled"
            if reason:
                problems.append({"part_id": "0x" + pid.hex(), "reason": reason})
        if not problems and to is not None:
            to_roles = self._recipient_roles(principal, to)
            problems = [
                {"part_id": "0x" + pid.hex(), "reason": "its lot is recalled: it may go back to its manufacturer or to a recycler only"}
                for pid in part_ids if found[pid].recalled and not to_roles & Role.RECYCLER and to != found[pid].manufacturer
            ]  # fmt: skip
        if problems:
            raise Conflict(f"{len(problems)} part(s) are not in a state to {op.kind}", code="invalid_state", details=problems[:100])

    def _recipient_roles(self, principal: Principal, to: int) -> Role:
        """The roles of a shipment's recipient, which must be another active member that holds parts."""
        if to == principal.org_id:
            raise Unprocessable("parts are shipped to another organisation, not to the shipper", code="shipment_to_self")
        with self.index_engine.connect() as conn:
            row = conn.execute(select(T_ORG.c.roles, T_ORG.c.suspended).where(T_ORG.c.org_id == to)).first()
        if row is None or row.suspended:
            raise Unprocessable(f"organisation {to} is not an active member", code="unknown_recipient")
        if not Role(row.roles) & CUSTODY_ROLES:
            raise Unprocessable(f"organisation {to} holds no parts (its roles: {_role_names(Role(row.roles))})", code="recipient_cannot_hold_parts")
        return Role(row.roles)

    def precheck_batch(self, root: bytes) -> None:
        with self.index_engine.connect() as conn:
            block = conn.execute(select(T_BATCH.c.block_number).where(T_BATCH.c.root == root)).scalar()
        if block is not None:
            raise Conflict(f"this batch root was anchored in block {block}", code="batch_anchored")

    def precheck_recall(self, principal: Principal, lot: int) -> None:
        if not principal.roles & (Role.MANUFACTURER | Role.REGULATOR):
            raise Forbidden("recall needs one of the roles manufacturer, regulator", code="missing_role")
        with self.index_engine.connect() as conn:
            row = conn.execute(select(T_LOT.c.manufacturer, T_LOT.c.recalled).where(T_LOT.c.lot == lot)).first()
        if row is None:
            raise NotFound(f"no lot {lot}", code="unknown_lot")
        if row.manufacturer != principal.org_id and not principal.roles & Role.REGULATOR:
            raise Forbidden("only the lot's manufacturer or a regulator may recall it", code="not_lot_manufacturer")
        if row.recalled:
            raise Conflict(f"lot {lot} is recalled already", code="lot_recalled")

    # --- writing --------------------------------------------------------------------------------------------

    def accept(self, principal: Principal, draft: Draft, *, signer: str, idempotency_key: str | None, request_sha256: str) -> dict[str, Any]:
        """Writes the command, recording who sent it (principal.actor); a viewer is refused (403 read_only_role),
        whatever path the command came by. With an Idempotency-Key, a repeat returns the first answer (422 if its
        body differs). The key is claimed in the transaction that writes the command, so that a crash leaves both
        or neither: a claim without its command would hold the client's retries off. Commands accepted at the same
        time share that transaction (ledger_service.group_commit)."""
        require_may_act(principal)
        if idempotency_key is not None:
            replay = self.replay(principal.org_id, idempotency_key, request_sha256)
            if replay is not None:
                return replay
        command_id = str(uuid.uuid4())
        now = time.time()
        answer = {"command_id": command_id, "status": "accepted", "kind": draft.kind, "parts": draft.part_count}

        def write(conn: Connection) -> None:
            if idempotency_key is not None:  # first: a concurrent request with the same key fails here, then replays
                conn.execute(insert(T_IDEM).values(
                    org_id=principal.org_id, key=idempotency_key, request_sha256=request_sha256, state="done",
                    status_code=202, response=json.dumps(answer), created_at=now,
                ))  # fmt: skip
            conn.execute(insert(T_CMD).values(
                id=command_id, org_id=principal.org_id, api_key_id=principal.key_id[:16], actor=principal.actor[:80], kind=draft.kind,
                site_key=signer, part_count=draft.part_count, summary=json.dumps(draft.summary), created_at=now,
                request_id=request_id or f"internal-{command_id}",  # what the submitter's log lines name it by
            ))  # fmt: skip
            conn.execute(insert(T_ITEM), [
                {"command_id": command_id, "signer": signer, "kind": draft.kind, "pack_key": pack_key(draft.kind, payload, command_id),
                 "payload": json.dumps(payload), "part_count": len(payload.get("parts", payload.get("serials", ()))) or 1,
                 "state": "pending", "tx_id": None, "not_before": 0.0, "created_at": now, "updated_at": now}
                for payload in draft.items
            ])  # fmt: skip
            if draft.after_write is not None:
                draft.after_write(conn, command_id)
            failpoint("api.before_commit")  # written, not committed: the client gets no answer and retries

        request_id = current_request_id()  # of this thread's request: the group's leader may write it from another
        try:
            self._writer.write(write)
        except IntegrityError:
            replay = self.replay(principal.org_id, idempotency_key, request_sha256) if idempotency_key is not None else None
            if replay is None:
                raise
            return replay  # a concurrent request with the same key was written first
        failpoint("api.after_commit")  # committed, the 202 not sent: the client's retry must get the same command
        count_accepted(draft.kind)
        return answer

    def replay(self, org_id: int, key: str, request_sha256: str) -> dict[str, Any] | None:
        """The stored answer of the first request with this Idempotency-Key, if there was one."""
        with self.service_engine.connect() as conn:
            row = conn.execute(select(T_IDEM).where(T_IDEM.c.org_id == org_id, T_IDEM.c.key == key)).mappings().first()
        if row is None:
            return None
        if row["request_sha256"] != request_sha256:
            raise Unprocessable("this Idempotency-Key was used with a different request", code="idempotency_key_reused")
        if row["response"] is None:  # a claim written ahead of its command (before this version)
            raise Conflict("a request with this Idempotency-Key is still being processed", code="idempotency_in_progress")
        return json.loads(row["response"]) | {"idempotent_replay": True}

    # --- following a command --------------------------------------------------------------------------------

    def view(self, principal: Principal, command_id: str) -> dict[str, Any]:
        return read_command(self.service_engine, principal, command_id)


def read_command(engine: Engine, principal: Principal, command_id: str) -> dict[str, Any]:
    """One command as GET /v1/commands/{id} answers it: the caller's organisation's (auditors and regulators: any
    organisation's); 404 unknown_command otherwise. Reads only: a service instance without site keys answers it too."""
    with engine.connect() as conn:
        command = conn.execute(select(T_CMD).where(T_CMD.c.id == command_id)).mappings().first()
        if command is None or (command["org_id"] != principal.org_id and not principal.sees_everything):
            raise NotFound(f"no command {command_id}", code="unknown_command")
        items = conn.execute(select(T_ITEM).where(T_ITEM.c.command_id == command_id).order_by(T_ITEM.c.id)).mappings().all()
        tx_ids = {item["tx_id"] for item in items if item["tx_id"] is not None}
        txs = {row["id"]: row for row in conn.execute(select(T_TX).where(T_TX.c.id.in_(tx_ids))).mappings()} if tx_ids else {}
        request_ids = {item["relay_request_id"] for item in items if item["relay_request_id"] is not None}
        batches = {
            row.id: row._mapping
            for row in conn.execute(
                select(T_REQ.c.id, T_RELAY_BATCH.c.tx_hash, T_RELAY_BATCH.c.block_number).join(T_RELAY_BATCH, T_RELAY_BATCH.c.id == T_REQ.c.batch_id).where(T_REQ.c.id.in_(request_ids))
            )
        } if request_ids else {}  # fmt: skip
    return command_view(command, items, txs, batches)


def command_view(command: Any, items: list[Any], txs: dict[int, Any], batches: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`batches`: the relay batch (tx_hash, block_number) carrying each relayed item's request, by request id."""
    states = [item["state"] for item in items]
    states_by_id = {item["id"]: item["state"] for item in items}
    if "rejected" in states:
        status = "rejected"
    elif all(state == "confirmed" for state in states):
        status = "confirmed"
    elif any(state in ("sent", "mined", "confirmed") for state in states):
        status = "submitted"
    else:
        status = "accepted"
    carrying = {i["id"]: txs[i["tx_id"]] for i in items if i["tx_id"] in txs} | {i["id"]: batches[i["relay_request_id"]] for i in items if i["relay_request_id"] in (batches or {})}
    transactions = sorted({("0x" + bytes(tx["tx_hash"]).hex(), tx["block_number"]) for item_id, tx in carrying.items() if states_by_id[item_id] != "pending"}, key=str)
    errors = [
        {"error": item["error_name"], "args": json.loads(item["error_args"]) if item["error_args"] else [], "message": item["error_message"]}
        for item in items if item["state"] == "rejected"
    ]  # fmt: skip
    blocks = [block for _, block in transactions if block is not None]
    return {
        "command_id": command["id"],
        "kind": command["kind"],
        "status": status,
        "organisation": command["org_id"],
        "site_key": command["site_key"],
        # Keys that signed (or were to sign) in its stead: the site's replacement after site_key was revoked.
        "re_signed_by": sorted({item["signer"] for item in items} - {command["site_key"]}),
        "parts": command["part_count"],
        "summary": json.loads(command["summary"]),
        "accepted_at": command["created_at"],
        "actor": command["actor"] or f"key:{command['api_key_id']}",  # commands from before 0004 came by API key
        "items": [{"parts": item["part_count"], "state": item["state"]} | ({"relay_request": item["relay_request_id"]} if item["relay_request_id"] else {}) for item in items],
        "transactions": [{"tx_hash": tx_hash, "block": block} for tx_hash, block in transactions],
        "block": max(blocks) if status == "confirmed" and blocks else None,
        "errors": errors,
    }


def _run_each(conn: Connection, writes: list[Callable[[Connection], None]]) -> None:
    """A group of accepted commands' writes, in the order they came."""
    for write in writes:
        write(conn)


def pack_key(kind: str, payload: dict[str, Any], command_id: str) -> str:
    """Items with the same pack key (and signer and kind) may share a transaction."""
    values = [command_id if name == "unique" else payload.get(name) for name in OPERATIONS[kind].pack_args]
    return json.dumps(values)


def request_digest(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()


def _role_names(roles: Role) -> str:
    return ", ".join(role.name.lower() for role in Role if roles & role)


