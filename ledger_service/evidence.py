"""Trade evidence between two organisations: one proposes a document (its site key signs the EIP-712 Attestation),
the other countersigns (with its own site key here, or a signature it made elsewhere), and the anchoring goes into
the outbox like any other command. The domain is read from the deployed EvidenceLedger (ERC-5267), once."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.engine import Engine

from indexer.tables import Document, Organisation, SiteKey
from ledger_service.auth import Principal
from ledger_service.errors import BadRequest, Conflict, Forbidden, NotFound, Unprocessable
from ledger_service.outbox import Draft, Outbox
from ledger_service.pagination import decode_cursor, encode_cursor
from ledger_service.tables import DocumentProposal
from partledger.eip712 import Attestation, Eip712Domain, attestation_typed_data
from partledger.model import DocType
from wallets.signer import Signer

T_PROPOSAL = DocumentProposal.__table__
T_ORG, T_KEY, T_DOC = Organisation.__table__, SiteKey.__table__, Document.__table__
MAX_VALIDITY_SECONDS = 90 * 24 * 3600


class Notary:
    def __init__(self, *, outbox: Outbox, signers: dict[str, Signer], read_domain: Callable[[], Eip712Domain]) -> None:
        self.outbox = outbox
        self.signers = signers
        self._read_domain = read_domain
        self._domain: Eip712Domain | None = None

    @property
    def domain(self) -> Eip712Domain:
        if self._domain is None:
            self._domain = self._read_domain()
        return self._domain

    def propose(self, principal: Principal, *, doc_hash: bytes, doc_type: int, counterparty: int, previous: bytes | None,
                parts_root: bytes | None, valid_for: int, site: str | None) -> dict[str, Any]:  # fmt: skip
        """Signs an Attestation as the issuer and keeps it until the counterparty countersigns."""
        if counterparty == principal.org_id:
            raise Unprocessable("issuer and counterparty must be different organisations", code="same_party")
        if doc_type not in DocType._value2member_map_:
            raise Unprocessable(f"unknown document type {doc_type}", code="invalid_doc_type")
        if not 60 <= valid_for <= MAX_VALIDITY_SECONDS:
            raise Unprocessable("valid_for must be between 60 seconds and 90 days", code="invalid_validity")
        with self.outbox.index_engine.connect() as conn:
            other = conn.execute(select(T_ORG.c.suspended).where(T_ORG.c.org_id == counterparty)).first()
            if other is None or other.suspended:
                raise Unprocessable(f"organisation {counterparty} is not an active member", code="unknown_counterparty")
            if conn.execute(select(T_DOC.c.block_number).where(T_DOC.c.doc_hash == doc_hash)).first() is not None:
                raise Conflict("this document hash is anchored already", code="document_anchored")
            if previous is not None and conn.execute(select(T_DOC.c.block_number).where(T_DOC.c.doc_hash == previous)).first() is None:
                raise Unprocessable("the previous document is not anchored", code="unknown_previous_document")
        signer = self.outbox.signer_for(principal, site)
        attestation = Attestation(
            docHash=doc_hash, docType=doc_type, issuer=principal.org_id, counterparty=counterparty,
            previous=previous or bytes(32), partsRoot=parts_root or bytes(32), nonce=secrets.token_bytes(32),
            deadline=int(time.time()) + valid_for,
        )  # fmt: skip
        signature = self.signers[signer].sign_typed_data(attestation_typed_data(self.domain, attestation))
        proposal_id = str(uuid.uuid4())
        with self.outbox.service_engine.begin() as conn:
            conn.execute(insert(T_PROPOSAL).values(
                id=proposal_id, issuer=principal.org_id, counterparty=counterparty, attestation=json.dumps(_message(attestation)),
                issuer_signer=signer, issuer_signature=signature, created_at=time.time(),
            ))  # fmt: skip
        return self.view(principal, proposal_id)

    def countersign(self, principal: Principal, proposal_id: str, *, signature: bytes | None, site: str | None,
                    idempotency_key: str | None, request_sha256: str) -> dict[str, Any]:  # fmt: skip
        """The counterparty's signature (made here with its site key, or given), then the anchoring command."""
        proposal = self._proposal(principal, proposal_id)
        if proposal["counterparty"] != principal.org_id:
            raise Forbidden("only the counterparty countersigns a proposal", code="not_counterparty")
        if proposal["command_id"] is not None:
            return self.outbox.view(principal, proposal["command_id"]) | {"proposal_id": proposal_id}
        message = json.loads(proposal["attestation"])
        attestation = _attestation(message)
        if attestation.deadline <= time.time():
            raise Conflict("the proposal's deadline has passed; propose again", code="proposal_expired")
        typed = attestation_typed_data(self.domain, attestation)
        submitter = self.outbox.signer_for(principal, site)
        if signature is None:
            signer = submitter
            signature = self.signers[signer].sign_typed_data(typed)
        else:
            signer = Account.recover_message(encode_typed_data(full_message=typed), signature=signature)
            with self.outbox.index_engine.connect() as conn:
                key = conn.execute(select(T_KEY.c.org_id, T_KEY.c.revoked_block).where(T_KEY.c.address == signer)).first()
            if key is None or key.org_id != principal.org_id or key.revoked_block is not None:
                raise Unprocessable("the signature is not by an active site key of the counterparty", code="invalid_signature")
        payload = {
            "attestation": message,
            "issuer_signature": "0x" + bytes(proposal["issuer_signature"]).hex(),
            "counterparty_signature": "0x" + bytes(signature).hex(),
        }
        draft = Draft(kind="anchor_document", summary={"proposal_id": proposal_id, "doc_hash": message["docHash"]}, part_ids=[], items=[payload], part_count=0)
        answer = self.outbox.accept(principal, draft, signer=submitter, idempotency_key=idempotency_key, request_sha256=request_sha256)
        with self.outbox.service_engine.begin() as conn:
            conn.execute(update(T_PROPOSAL).where(T_PROPOSAL.c.id == proposal_id).values(
                counterparty_signer=signer, counterparty_signature=bytes(signature), command_id=answer["command_id"],
            ))  # fmt: skip
        return answer | {"proposal_id": proposal_id}

    def view(self, principal: Principal, proposal_id: str) -> dict[str, Any]:
        proposal = self._proposal(principal, proposal_id)
        return {
            "proposal_id": proposal["id"],
            "attestation": json.loads(proposal["attestation"]),
            "domain": self.domain.__dict__,
            "issuer_signer": proposal["issuer_signer"],
            "issuer_signature": "0x" + bytes(proposal["issuer_signature"]).hex(),
            "counterparty_signer": proposal["counterparty_signer"],
            "command_id": proposal["command_id"],
            "status": "countersigned" if proposal["command_id"] else "awaiting_countersignature",
        }

    def _proposal(self, principal: Principal, proposal_id: str) -> Any:
        with self.outbox.service_engine.connect() as conn:
            row = conn.execute(select(T_PROPOSAL).where(T_PROPOSAL.c.id == proposal_id)).mappings().first()
        if row is None or principal.org_id not in (row["issuer"], row["counterparty"]) and not principal.sees_everything:
            raise NotFound(f"no document proposal {proposal_id}", code="unknown_proposal")
        return row


PROPOSAL_SIDES = ("issued", "to_countersign")
PROPOSAL_READ_ROUNDS = 8


def list_proposals(engine: Engine, principal: Principal, *, side: str, waiting_only: bool = False, limit: int = 50,
                   cursor: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The principal's organisation's proposals, newest first, a page at a time: those it issued, or those it is
    to countersign. `waiting_only`: still awaiting the countersignature and not expired."""
    if side not in PROPOSAL_SIDES:
        raise Unprocessable(f"side is one of {', '.join(PROPOSAL_SIDES)}", code="invalid_side")
    column = T_PROPOSAL.c.issuer if side == "issued" else T_PROPOSAL.c.counterparty
    query = select(T_PROPOSAL).where(column == principal.org_id)
    if waiting_only:
        query = query.where(T_PROPOSAL.c.command_id.is_(None))
    after = decode_cursor(cursor, 2)
    if after is not None:
        created, last_id = after
        if not isinstance(created, (int, float)) or not isinstance(last_id, str):
            raise BadRequest("malformed pagination cursor", code="invalid_cursor")
        query = query.where(or_(T_PROPOSAL.c.created_at < created, and_(T_PROPOSAL.c.created_at == created, T_PROPOSAL.c.id < last_id)))
    now = time.time()
    items: list[dict[str, Any]] = []
    next_cursor = None
    order = (T_PROPOSAL.c.created_at.desc(), T_PROPOSAL.c.id.desc())
    with engine.connect() as conn:
        # expired proposals are filtered after reading (the deadline sits in the attestation's JSON): read on until a
        # page is full or the rows run out, a bounded number of rounds (then the page is short and the cursor goes on)
        for _ in range(PROPOSAL_READ_ROUNDS):
            rows = conn.execute(query.order_by(*order).limit(limit + 1)).mappings().all()
            items += [summary for summary in (proposal_summary(row, now=now) for row in rows) if not waiting_only or summary["status"] == "awaiting_countersignature"]
            if len(items) > limit or len(rows) <= limit:
                break
            last = rows[-1]
            query = query.where(or_(T_PROPOSAL.c.created_at < last["created_at"], and_(T_PROPOSAL.c.created_at == last["created_at"], T_PROPOSAL.c.id < last["id"])))
        else:
            next_cursor = encode_cursor([last["created_at"], last["id"]])
    if len(items) > limit:
        items = items[:limit]
        next_cursor = encode_cursor([items[-1]["created_at"], items[-1]["proposal_id"]])
    return {"items": items, "next_cursor": next_cursor}


def proposal_summary(row: Any, *, now: float) -> dict[str, Any]:
    """A proposal as a list shows it: what is signed, by whom, and where it stands."""
    message = json.loads(row["attestation"])
    if row["command_id"] is not None:
        status = "countersigned"
    elif message["deadline"] <= now:
        status = "expired"
    else:
        status = "awaiting_countersignature"
    return {
        "proposal_id": row["id"], "issuer": row["issuer"], "counterparty": row["counterparty"], "doc_hash": message["docHash"],
        "doc_type": DocType(message["docType"]).name.lower() if message["docType"] in DocType._value2member_map_ else message["docType"],
        "deadline": message["deadline"], "created_at": row["created_at"], "command_id": row["command_id"], "status": status,
    }  # fmt: skip


def _message(attestation: Attestation) -> dict[str, Any]:
    return {key: "0x" + value.hex() if isinstance(value, bytes) else value for key, value in attestation.__dict__.items()}


def _attestation(message: dict[str, Any]) -> Attestation:
    return Attestation(**{key: bytes.fromhex(value[2:]) if isinstance(value, str) else value for key, value in message.items()})
