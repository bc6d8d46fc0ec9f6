"""Audit read access: auditors and regulators read every organisation's consortium-class data, and every such read
is itself logged — who (organisation, and the API key or console user: Principal.actor), what (method, path and
query, answer status), when — before its answer leaves. A read that cannot be logged is refused (503
audit_log_unavailable).

The log is anchored in batches: consecutive entries become a StandardMerkleTree (partledger.merkle) whose root goes
on chain through the outbox's anchor_batch command (kind "audit-log"), signed by a site key the service holds for an
auditor or regulator organisation. A batch closes when AUDIT_BATCH_SIZE entries wait or the oldest has waited
AUDIT_BATCH_MAX_AGE seconds (checked on each logged read), or on POST /v1/audit/anchor. Each entry then has an
inclusion proof, and GET /v1/audit/log/{id}/proof answers its proof bundle.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import func, insert, select, update
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from indexer.tables import Organisation
from ledger_service.audit_tables import AuditBatch, AuditLogEntry
from ledger_service.auth import Principal, authenticate
from ledger_service.deps import Services
from ledger_service.errors import ApiError
from ledger_service.outbox import Draft
from partledger.db import write_transaction
from partledger.merkle import StandardMerkleTree, build_tree
from partledger.model import Role

log = logging.getLogger("partledger.service.audit")
T_LOG, T_BATCH, T_ORG = AuditLogEntry.__table__, AuditBatch.__table__, Organisation.__table__
AUDIT_RECORD_TYPES = ("uint64", "uint32", "string", "string", "string", "uint16", "uint64")  # id, org, who, method, target, status, ms
AUDIT_RECORD_FIELDS = ("id", "orgId", "keyId", "method", "target", "status", "atMillis")
AUDIT_BATCH_KIND = "audit-log"
AUDIT_BATCH_SIZE = 64
AUDIT_BATCH_MAX_AGE = 300.0
AUDIT_BATCH_LIMIT = 10_000
PRINCIPAL_TTL = 15.0
AUDITED_ROLES = Role.AUDITOR | Role.REGULATOR


def record_values(row: Any) -> tuple[Any, ...]:
    """An entry as the values of its Merkle leaf (types AUDIT_RECORD_TYPES). The leaf's keyId is the API key's id,
    or "user:<username>" for a console user, so that the anchored log names the person (API key leaves are as
    they were before users existed)."""
    return (row.id, row.org_id, _leaf_key(row), row.method, row.target, row.status, row.at_ms)


def _leaf_key(row: Any) -> str:
    return row.actor if row.actor is not None and row.actor.startswith("user:") else row.key_id


def entry_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "org_id": row.org_id, "key_id": row.key_id, "actor": row.actor or f"key:{row.key_id}",
        "method": row.method, "target": row.target, "status": row.status, "at": row.at_ms / 1000, "batch_id": row.batch_id,
    }  # fmt: skip


@dataclass(frozen=True)
class EntryProof:
    """An anchored entry: its batch, its leaf values and inclusion proof."""

    root: bytes
    command_id: str | None
    values: tuple[Any, ...]
    proof: list[bytes]


class AuditLog:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._principals: dict[str, tuple[float, Principal | None]] = {}
        self._anchoring = threading.Lock()

    # -- who is reading -----------------------------------------------------------------------------------------

    def known_principal(self, authorization: str) -> tuple[bool, Principal | None]:
        """(True, what audited_principal answers) while the header's answer is remembered; (False, None) when it must
        be looked up. No I/O: the middleware asks this on the event loop, and goes to a worker thread only on a miss."""
        cached = self._principals.get(hashlib.sha256(authorization.encode()).hexdigest())
        if cached is None or cached[0] < time.monotonic():
            return False, None
        principal = cached[1]
        return True, principal if principal is not None and principal.roles & AUDITED_ROLES else None

    def audited_principal(self, authorization: str | None) -> Principal | None:
        """The auditor or regulator behind an Authorization header; None for anyone else (or no valid key)."""
        if not authorization:
            return None
        known, principal = self.known_principal(authorization)
        if known:
            return principal
        try:
            principal = authenticate(self.services.service_engine, self.services.index_engine, authorization)
        except ApiError:
            principal = None
        if len(self._principals) > 10_000:
            self._principals.clear()
        self._principals[hashlib.sha256(authorization.encode()).hexdigest()] = (time.monotonic() + PRINCIPAL_TTL, principal)
        return principal if principal is not None and principal.roles & AUDITED_ROLES else None

    # -- logging ------------------------------------------------------------------------------------------------

    def record(self, principal: Principal, *, method: str, target: str, status: int) -> int:
        with self.services.service_engine.begin() as conn:
            result = conn.execute(insert(T_LOG).values(
                org_id=principal.org_id, key_id=principal.key_id[:16], actor=principal.actor[:80], method=method[:8], target=target,
                status=status, at_ms=int(time.time() * 1000),
            ))  # fmt: skip
        return int(result.inserted_primary_key[0])

    def batch_due(self) -> bool:
        with self.services.service_engine.connect() as conn:
            count, oldest = conn.execute(select(func.count(), func.min(T_LOG.c.at_ms)).where(T_LOG.c.batch_id.is_(None))).one()
            unsubmitted = conn.execute(select(T_BATCH.c.id).where(T_BATCH.c.command_id.is_(None)).limit(1)).first()
        if unsubmitted is not None:
            return True
        return count >= AUDIT_BATCH_SIZE or (count > 0 and time.time() - oldest / 1000 >= AUDIT_BATCH_MAX_AGE)

    # -- anchoring ----------------------------------------------------------------------------------------------

    def anchor_pending(self) -> list[dict[str, Any]]:
        """Closes a batch of the waiting entries (if any) and hands every batch not yet submitted to the outbox."""
        with self._anchoring:
            self._close_batch()
            return self._submit_batches()

    def _close_batch(self) -> None:
        # Reads the waiting entries, then writes the batch: the write lock first (each request appends entries).
        with write_transaction(self.services.service_engine) as conn:
            rows = conn.execute(select(T_LOG).where(T_LOG.c.batch_id.is_(None)).order_by(T_LOG.c.id).limit(AUDIT_BATCH_LIMIT)).all()
            if not rows:
                return
            tree = build_tree([record_values(row) for row in rows], types=AUDIT_RECORD_TYPES)
            batch_id = conn.execute(insert(T_BATCH).values(
                root=tree.root, first_entry=rows[0].id, last_entry=rows[-1].id, entry_count=len(rows), created_at=time.time(),
            )).inserted_primary_key[0]  # fmt: skip
            ids = [row.id for row in rows]
            claimed = conn.execute(update(T_LOG).where(T_LOG.c.id.in_(ids), T_LOG.c.batch_id.is_(None)).values(batch_id=batch_id)).rowcount
            if claimed != len(ids):
                raise RuntimeError("audit entries were batched concurrently")  # rolls this batch back

    def _submit_batches(self) -> list[dict[str, Any]]:
        outbox = self.services.outbox
        engine = self.services.service_engine
        with engine.connect() as conn:
            waiting = conn.execute(select(T_BATCH).where(T_BATCH.c.command_id.is_(None)).order_by(T_BATCH.c.id)).all()
        if not waiting:
            return []
        anchor = self._anchoring_principal() if outbox is not None else None
        if anchor is None:
            log.warning("%d audit-log batch(es) wait: this service holds no site key of an auditor or regulator organisation", len(waiting))
            return []
        principal, signer = anchor
        submitted = []
        for batch in waiting:
            payload = {"root": "0x" + bytes(batch.root).hex(), "record_count": batch.entry_count, "batch_kind": AUDIT_BATCH_KIND}
            draft = Draft(kind="anchor_batch", summary=payload, part_ids=[], items=[payload], part_count=0)
            answer = outbox.accept(  # type: ignore[union-attr]
                principal, draft, signer=signer, idempotency_key=f"audit-batch-{batch.id}", request_sha256=hashlib.sha256(bytes(batch.root)).hexdigest()
            )
            with engine.begin() as conn:
                conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch.id).values(command_id=answer["command_id"], anchor_org=principal.org_id))
            submitted.append({"batch_id": batch.id, "root": payload["root"], "entries": batch.entry_count, "command_id": answer["command_id"]})
        return submitted

    def _anchoring_principal(self) -> tuple[Principal, str] | None:
        """The first auditor or regulator organisation whose active site key this service holds, and that key."""
        outbox = self.services.outbox
        with self.services.index_engine.connect() as conn:
            orgs = conn.execute(select(T_ORG.c.org_id, T_ORG.c.roles).where(T_ORG.c.suspended.is_(False)).order_by(T_ORG.c.org_id)).all()
        for org in orgs:
            if not Role(org.roles) & AUDITED_ROLES:
                continue
            principal = Principal(org_id=org.org_id, roles=Role(org.roles), key_id=AUDIT_BATCH_KIND, sites=None)
            try:
                return principal, outbox.signer_for(principal, None)  # type: ignore[union-attr]
            except ApiError:
                continue
        return None

    # -- reading the log ----------------------------------------------------------------------------------------

    def entries(self, *, org_id: int | None, after_id: int, limit: int) -> list[dict[str, Any]]:
        query = select(T_LOG).where(T_LOG.c.id > after_id)
        if org_id is not None:
            query = query.where(T_LOG.c.org_id == org_id)
        with self.services.service_engine.connect() as conn:
            rows = conn.execute(query.order_by(T_LOG.c.id).limit(limit)).all()
            batch_ids = {row.batch_id for row in rows if row.batch_id is not None}
            batches = {b.id: b for b in conn.execute(select(T_BATCH).where(T_BATCH.c.id.in_(batch_ids)))} if batch_ids else {}
        items = []
        for row in rows:
            view = entry_view(row)
            batch = batches.get(row.batch_id)
            view["batch"] = None if batch is None else {"root": "0x" + bytes(batch.root).hex(), "command_id": batch.command_id}
            items.append(view)
        return items

    def entry_proof(self, entry_id: int) -> EntryProof | None:
        """The entry's batch and inclusion proof; None when the entry is unknown or not batched yet."""
        with self.services.service_engine.connect() as conn:
            entry = conn.execute(select(T_LOG).where(T_LOG.c.id == entry_id)).first()
            if entry is None or entry.batch_id is None:
                return None
            batch = conn.execute(select(T_BATCH).where(T_BATCH.c.id == entry.batch_id)).one()
            rows = conn.execute(select(T_LOG).where(T_LOG.c.batch_id == batch.id).order_by(T_LOG.c.id)).all()
        tree: StandardMerkleTree = build_tree([record_values(row) for row in rows], types=AUDIT_RECORD_TYPES)
        if tree.root != bytes(batch.root):
            raise RuntimeError(f"audit batch {batch.id} no longer hashes to its anchored root")
        index = next(i for i, row in enumerate(rows) if row.id == entry_id)
        return EntryProof(root=bytes(batch.root), command_id=batch.command_id, values=record_values(entry), proof=tree.proof_at(index))


def audit_log_of(app: FastAPI) -> AuditLog:
    """The app's audit log, made on first use (create_app builds the services; nothing here at import time)."""
    audit = getattr(app.state, "audit_log", None)
    if audit is None:
        audit = app.state.audit_log = AuditLog(app.state.services)
    return audit


def install_audit_log(app: FastAPI) -> None:
    """Logs every /v1 request of an auditor or regulator key (health excepted) before its answer leaves."""
    app.add_middleware(AuditReads)


class AuditReads:
    """The audit log's middleware, pure ASGI: a request without an Authorization header (every public scan) passes
    at the cost of a header lookup. An auditor's or regulator's read is recorded when its answer starts, before
    any of it is sent; when it cannot be recorded, a 503 goes out instead and the answer is dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = _authorization(scope) if scope["type"] == "http" else None
        path = scope.get("path", "")
        if authorization is None or not path.startswith("/v1/") or path == "/v1/health":
            await self.app(scope, receive, send)  # public reads (the resolver's scans among them) are nobody's audit trail
            return
        audit = audit_log_of(scope["app"])
        known, principal = audit.known_principal(authorization)
        if not known:
            principal = await run_in_threadpool(audit.audited_principal, authorization)
        if principal is None:
            await self.app(scope, receive, send)
            return
        refused = False

        async def send_logged(message: Message) -> None:
            nonlocal refused
            if refused:
                return  # the rest of an answer that was not logged
            if message["type"] == "http.response.start" and message["status"] != 401:
                url = Request(scope).url
                target = url.path + (f"?{url.query}" if url.query else "")
                try:
                    await run_in_threadpool(audit.record, principal, method=scope["method"], target=target, status=message["status"])
                except Exception:  # noqa: BLE001 - an unlogged auditor read must not leave
                    log.exception("could not write the audit log")
                    refused = True
                    body = {"error": {"code": "audit_log_unavailable", "message": "the audit log could not record this read; it was refused"}}
                    await JSONResponse(body, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
                    return
                try:
                    if await run_in_threadpool(audit.batch_due):
                        await run_in_threadpool(audit.anchor_pending)
                except Exception:  # noqa: BLE001 - anchoring is retried on the next read; the read itself is logged
                    log.exception("could not anchor the audit log")
            await send(message)

        await self.app(scope, receive, send_logged)


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return value.decode("latin-1")
    return None
