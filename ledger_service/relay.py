"""The relay's front desk: POST /v1/relay's checks and its durable write, and what GET /v1/relay/{id} answers.

A site that keeps its own key signs ForwardRequests (EIP-712 under the forwarder's domain, read from the chain by
ERC-5267) and posts them here, one or many, through any member's API key: the signature, not the API key, says who
acts. Each request is checked, in order: its shape (value 0, a gas limit within bounds, a deadline still ahead); the
call it carries (to PartLedger or EvidenceLedger, one of the operations of ledger_service.operations, its arguments
decodable); its signature (it recovers to `from` for the nonce given, as the forwarder will recover it); its signer
(an active site key in the mirror, of an active organisation holding a role the operation needs); and its nonce (not
below the forwarder's count for the signer, read at most NONCE_FRESH_SECONDS ago, nor that of a request relayed here
and mined: a request used already is a replay; not held by another live request). A nonce a site used through another
relayer since the count was read passes here and fails at the relayer with the forwarder's error: reading the
count for every post cost a JSON-RPC call each, most of the desk's time under load.
Then every request of the post is written in ONE SQL transaction and the answer is 202: from there on the requests
survive a crash, and the relayer (ledger_service.relayer) packs them into executeBatch transactions.

What the mirror says of the parts is not checked here, unlike commands: a site's queued requests depend on one
another (a receipt, then an installation), which the mirror cannot see yet. The chain judges, and a refused request
ends failed with the target's decoded error. A request posted again (the same EIP-712 digest) is the same request:
the answer names it again with its status, and nothing is relayed twice (the forwarder's nonce could not allow it).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak
from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from web3 import Web3
from web3.exceptions import Web3RPCError

from indexer.tables import Organisation, SiteKey
from ledger_service.auth import Principal, require_may_act
from ledger_service.errors import NotFound, RowErrors
from ledger_service.group_commit import GroupCommit
from ledger_service.operations import OPERATIONS, Operation
from ledger_service.relay_tables import RelayBatch, RelayRequest
from partledger.abi import decode  # eth-abi's values and errors, read directly when canonical
from partledger.artifacts import FORWARDER, function_spec, load_artifact
from partledger.chain import revert_of
from partledger.eip712 import Eip712Domain, ForwardRequest, forward_request_digest, read_domain, recover_forward_request_signer
from partledger.errors import ChainUnavailable, ConfigError
from partledger.failpoints import failpoint
from partledger.manifest import Manifest
from partledger.model import Role

T_REQ, T_BATCH = RelayRequest.__table__, RelayBatch.__table__
T_KEY, T_ORG = SiteKey.__table__, Organisation.__table__
LIVE = ("accepted", "relayed", "mined", "confirmed")  # states that hold their nonce
USED = ("mined", "confirmed")  # states whose nonce the forwarder has counted
NONCE_FRESH_SECONDS = 30.0  # how long a signer's forwarder nonce, once read, is taken as it is
NONCES_SELECTOR = keccak(text="nonces(address)")[:4]
SHOWN = {"accepted": "accepted", "relayed": "relayed", "mined": "relayed", "confirmed": "confirmed", "failed": "failed"}
# A post's two reads, built once: building a statement and its cache key cost as much as SQLite's answer.
# Every row of the posted signers by the posted nonces (a superset: each signer by every nonce).
POSTED = select(T_REQ.c.id, T_REQ.c.digest, T_REQ.c.signer, T_REQ.c.nonce, T_REQ.c.state).where(
    T_REQ.c.signer.in_(bindparam("signers", expanding=True)), T_REQ.c.nonce.in_(bindparam("nonces", expanding=True))
)
# Each signer's key with its organisation (roles None: no organisation row).
SIGNER_KEYS = (
    select(T_KEY.c.address, T_KEY.c.org_id, T_KEY.c.revoked_block, T_ORG.c.roles, T_ORG.c.suspended)
    .select_from(T_KEY.outerjoin(T_ORG, T_ORG.c.org_id == T_KEY.c.org_id))
    .where(T_KEY.c.address.in_(bindparam("signers", expanding=True)))
)


@dataclass(frozen=True)
class Submitted:
    """One request as posted: the ForwardRequest fields with the nonce it was signed for, and the signature."""

    request: ForwardRequest
    signature: bytes


class RelayDesk:
    def __init__(self, *, service_engine: Engine, index_engine: Engine, manifest: Manifest, w3: Web3, max_request_gas: int) -> None:
        if manifest.forwarder is None:
            raise ConfigError("the deployment manifest names no forwarder: its ledgers take direct calls only")
        self.service_engine = service_engine
        self.index_engine = index_engine
        self.max_request_gas = max_request_gas
        self.forwarder = w3.eth.contract(address=manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        self.contracts = {Web3.to_checksum_address(manifest.address(name)): name for name in ("PartLedger", "EvidenceLedger")}
        self.operations: dict[tuple[str, bytes], tuple[Operation, tuple[str, ...]]] = {}
        for op in OPERATIONS.values():
            selector, types = function_spec(op.contract, op.function)
            self.operations[(op.contract, selector)] = (op, types)
        self._domain: Eip712Domain | None = None
        self._lock = threading.Lock()
        self._nonces: dict[str, tuple[int, float]] = {}  # signer -> (the forwarder's nonce, time.monotonic() it was read)
        self._writer = GroupCommit(service_engine, _write_requests)  # concurrent posts written in one transaction

    def domain(self) -> Eip712Domain:
        """The forwarder's EIP-712 domain, read once from the chain (ERC-5267)."""
        with self._lock:
            if self._domain is None:
                self._domain = _chain_read(lambda: read_domain(self.forwarder))
            return self._domain

    # --- POST /v1/relay -------------------------------------------------------------------------------------

    def accept(self, principal: Principal, submitted: list[Submitted]) -> dict[str, Any]:
        """Checks every request and writes them all, or refuses the post with each refused request's row (422
        invalid_requests, details [{row, code, message}], rows 1-based). Requests seen before are named again."""
        require_may_act(principal)
        for attempt in range(2):  # a concurrent post of the same request may be written between the look and the write
            try:
                return self._accept(principal, submitted)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _accept(self, principal: Principal, submitted: list[Submitted]) -> dict[str, Any]:
        domain = self.domain()
        digests = [forward_request_digest(domain, item.request) for item in submitted]
        signers = sorted({item.request.sender for item in submitted})
        nonces = sorted({item.request.nonce for item in submitted})
        wanted = set(digests)
        known: dict[bytes, Any] = {}
        live: dict[tuple[str, int], tuple[bytes, str]] = {}
        with self.service_engine.connect() as conn:
            # One read serves both: a request posted before is among POSTED's rows, since its digest covers its signer
            # and nonce. The state is filtered here, not in SQL: with it there, SQLite chose the state index and read
            # every live request of the table for each post (3.4 ms a post at 8,500 rows, growing with the table).
            for row in conn.execute(POSTED, {"signers": signers, "nonces": nonces}):
                digest = bytes(row.digest)
                if digest in wanted:
                    known[digest] = row
                if row.state in LIVE:
                    live[(row.signer, row.nonce)] = (digest, row.state)
        with self.index_engine.connect() as conn:
            keys = {row.address: row for row in conn.execute(SIGNER_KEYS, {"signers": signers})}
        fresh = [item.request.sender for item, digest in zip(submitted, digests) if digest not in known]
        chain_nonces = self._chain_nonces(sorted(set(fresh)))
        now = time.time()
        problems: list[dict[str, Any]] = []
        answers: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        written: dict[bytes, str] = {}
        for row_number, (item, digest) in enumerate(zip(submitted, digests), start=1):
            request = item.request
            if digest in known:
                row = known[digest]
                answers.append({"id": row.id, "signer": row.signer, "nonce": row.nonce, "status": SHOWN[row.state], "idempotent_replay": True})
                continue
            if digest in written:
                answers.append({"id": written[digest], "signer": request.sender, "nonce": request.nonce, "status": "accepted"})
                continue
            try:
                function, org_id = self._check(domain, item, digest, now=now, keys=keys)
                if request.nonce < chain_nonces[request.sender]:
                    raise Refused("nonce_used", f"nonce {request.nonce} of {request.sender} is used already (the forwarder is at {chain_nonces[request.sender]}): a request runs once")
                holder, state = live.get((request.sender, request.nonce), (None, None))
                if holder is not None and holder != digest:
                    if state in USED:
                        raise Refused("nonce_used", f"nonce {request.nonce} of {request.sender} is used already by a request relayed here: a request runs once")
                    raise Refused("nonce_taken", f"another request of {request.sender} holds nonce {request.nonce}")
            except Refused as refusal:
                problems.append({"row": row_number, "code": refusal.code, "message": refusal.message})
                continue
            live[(request.sender, request.nonce)] = (digest, "accepted")
            request_id = str(uuid.uuid4())
            written[digest] = request_id
            rows.append({
                "id": request_id, "digest": digest, "org_id": org_id, "submitted_by": principal.org_id, "actor": principal.actor[:80],
                "signer": request.sender, "nonce": request.nonce, "target": request.to, "function": function, "gas": request.gas,
                "deadline": request.deadline, "data": request.data, "signature": item.signature, "state": "accepted", "batch_id": None,
                "attempts": 0, "created_at": now, "updated_at": now,
            })  # fmt: skip
            answers.append({"id": request_id, "signer": request.sender, "nonce": request.nonce, "status": "accepted"})
        if problems:
            raise RowErrors(f"{len(problems)} of {len(submitted)} request(s) refused: nothing was accepted", problems, code="invalid_requests")
        if rows:
            self._writer.write(rows)
            failpoint("relay.after_commit")  # committed, the 202 not sent: the post again must name the same requests
        return {"requests": answers}

    def _check(self, domain: Eip712Domain, item: Submitted, digest: bytes, *, now: float, keys: dict[str, Any]) -> tuple[str, int]:
        """(function name, signer's organisation) of a request that passes every check but the nonce's; Refused."""
        request = item.request
        if request.value != 0:
            raise Refused("invalid_value", "a relayed request carries no value (no operation is payable)")
        if request.deadline <= now:
            raise Refused("request_expired", f"the deadline {request.deadline} has passed")
        if not 0 < request.gas <= self.max_request_gas:
            raise Refused("invalid_gas", f"the gas a request offers its call must be between 1 and {self.max_request_gas}")
        contract = self.contracts.get(request.to)
        if contract is None:
            raise Refused("unknown_target", f"{request.to} is neither the PartLedger nor the EvidenceLedger of this deployment")
        found = self.operations.get((contract, request.data[:4]))
        if found is None:
            raise Refused("unknown_operation", f"the call is not one of the {contract} operations the service relays")
        op, types = found
        try:
            decode(types, request.data[4:])
        except Exception:  # noqa: BLE001 - any decoding failure means the same: the arguments are not that call's
            raise Refused("invalid_call", f"the arguments do not decode as {contract}.{op.function}") from None
        if recover_forward_request_signer(domain, request, item.signature, digest=digest) != request.sender:
            raise Refused("invalid_signature", f"the signature is not {request.sender}'s over this request with nonce {request.nonce}")
        key = keys.get(request.sender)
        if key is None:
            raise Refused("unknown_site_key", f"{request.sender} is no site key of any member")
        if key.revoked_block is not None:
            raise Refused("site_key_revoked", f"site key {request.sender} was revoked in block {key.revoked_block}")
        if key.roles is None or key.suspended:  # its organisation: no row, or suspended
            raise Refused("organisation_suspended", f"organisation {key.org_id} of {request.sender} is not an active member")
        if op.roles and not Role(key.roles) & op.roles:
            raise Refused("missing_role", f"{op.kind} needs one of the roles {', '.join(r.name.lower() for r in Role if op.roles & r)}")
        return op.function, key.org_id

    def _chain_nonces(self, signers: list[str]) -> dict[str, int]:
        """The forwarder's nonce of each signer as last read, reading (in one JSON-RPC batch) those never read or
        read more than NONCE_FRESH_SECONDS ago."""
        now = time.monotonic()
        with self._lock:
            stale = [signer for signer in signers if now - self._nonces.get(signer, (0, -NONCE_FRESH_SECONDS - 1))[1] > NONCE_FRESH_SECONDS]
        if stale:
            fresh = _chain_read(lambda: read_forwarder_nonces(self.forwarder.w3, self.forwarder.address, stale))
            with self._lock:
                self._nonces.update((signer, (nonce, now)) for signer, nonce in fresh.items())
        with self._lock:
            return {signer: self._nonces[signer][0] for signer in signers}

    # --- GET /v1/relay/{id} ---------------------------------------------------------------------------------

    def view(self, principal: Principal, request_id: str) -> dict[str, Any]:
        """One request, for its signer's organisation, the organisation that posted it, auditors and regulators."""
        with self.service_engine.connect() as conn:
            row = conn.execute(select(T_REQ).where(T_REQ.c.id == request_id)).mappings().first()
            if row is None or principal.org_id not in (row["org_id"], row["submitted_by"]) and not principal.sees_everything:
                raise NotFound(f"no relayed request {request_id}", code="unknown_relay_request")
            batch = None
            if row["batch_id"] is not None:
                batch = conn.execute(select(T_BATCH.c.tx_hash, T_BATCH.c.block_number).where(T_BATCH.c.id == row["batch_id"])).first()
        return request_view(row, batch)


def _write_requests(conn: Any, posts: list[list[dict[str, Any]]]) -> None:
    """The request rows of a group of posts, in one INSERT."""
    conn.execute(insert(T_REQ), [row for rows in posts for row in rows])
    failpoint("relay.before_commit")  # written, not committed: the client gets no answer and posts again


class Refused(Exception):
    """One request refused at acceptance: its error code and message (a row of 422 invalid_requests)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def request_view(row: Any, batch: Any) -> dict[str, Any]:
    relayed = row["state"] in ("relayed", "mined", "confirmed") or (row["state"] == "failed" and batch is not None)
    error = None
    if row["state"] == "failed":
        error = {"error": row["error_name"], "args": json.loads(row["error_args"]) if row["error_args"] else [], "message": row["error_message"]}
    return {
        "id": row["id"],
        "status": SHOWN[row["state"]],
        "signer": row["signer"],
        "organisation": row["org_id"],
        "nonce": row["nonce"],
        "to": row["target"],
        "function": row["function"],
        "deadline": row["deadline"],
        "tx_hash": "0x" + bytes(batch.tx_hash).hex() if relayed and batch is not None else None,
        "block": batch.block_number if relayed and batch is not None and row["state"] != "relayed" else None,
        "error": error,
        "accepted_at": row["created_at"],
    }


def _chain_read(read: Any) -> Any:
    """`read()`, with the node's failures as ChainUnavailable (503 chain_unavailable)."""
    try:
        return read()
    except Exception as exc:
        if revert_of(exc) is not None:
            raise
        raise ChainUnavailable(f"cannot read the forwarder: {type(exc).__name__}") from None


def read_forwarder_nonces(w3: Web3, forwarder: str, signers: list[str]) -> dict[str, int]:
    """The forwarder's current nonce of each signer, in one JSON-RPC batch of eth_call (web3's contract functions
    cost ~1 ms of CPU a call to build, more than the node takes to answer)."""
    if not signers:
        return {}
    calls = [("eth_call", [{"to": forwarder, "data": "0x" + (NONCES_SELECTOR + bytes.fromhex(signer[2:]).rjust(32, b"\0")).hex()}, "latest"]) for signer in signers]
    answers = w3.provider.make_batch_request(calls)  # type: ignore[attr-defined]
    if not isinstance(answers, list) or len(answers) != len(signers) or any("error" in answer for answer in answers):
        raise Web3RPCError(f"the node failed to answer the forwarder's nonces: {answers if not isinstance(answers, list) else ''}")
    return {signer: int(answer["result"], 16) for signer, answer in zip(signers, answers)}
