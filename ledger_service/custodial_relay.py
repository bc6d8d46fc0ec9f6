"""Custodial sites' single-part commands through the relay's batches (issue 17).

A site whose key the service holds used to send every command as a transaction of that key: one nonce after another,
so a stream of one-part commands that cannot share a transaction (each its own recipient or delivery note) was bound
by one key's nonce sequence. Here the submitter signs such an item as an ERC-2771 ForwardRequest with the site's key
instead, and hands it to the relayer (a relay_requests row, as POST /v1/relay writes one), which packs it into
executeBatch transactions with other sites' requests. On chain it is the site's act as before: the contracts take
_msgSender() from the forwarder, the events name the site key, and every rule holds (tests/test_relay_contract.py).

Which items: one part, of an operation on parts, not an EPCIS capture job's (a job's ledger events are found by their
transaction, which a batch shares with other requests). Larger items keep their own transactions: they pack up to
max_parts_per_tx parts a transaction already. One key's items never travel both ways at once: an item goes by the
other way only once nothing of its key is in flight the first way, so that a key's items land in acceptance order.

Recording. The hand-over is one SQL transaction: the items claimed (pending → signed), a forwarder nonce each (the
lowest at or above the forwarder's count that no live request of the key holds), the signed requests written, each
item naming its request. A crash before its commit leaves the items pending and nothing signed; after it, the
relayer has them. From then on an item's state follows its request's (follow): accepted → signed, relayed → sent,
mined, confirmed; failed with the target's error → rejected with it (its command's other items are untouched);
failed unexecuted (the forwarder refused it: its deadline passed, its nonce was used; or the forwarder skipped it in
every batch), its nonce unused → pending, signed again with the same lowest free nonce, so that the key's later
requests, which wait for that nonce, run after it as before; MAX_SIGNINGS times, then rejected, and the key's later
requests still waiting are taken back and signed again from there. A revoked key (the target's
ConsortiumRegistryKeyRevoked naming it) → pending, and the submitter retires the key as for its own transactions.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.engine import Connection, Engine
from web3 import Web3

from ledger_service import command_stages
from ledger_service.operations import OPERATIONS
from ledger_service.relay import LIVE, read_forwarder_nonces
from ledger_service.relay_tables import RelayBatch, RelayRequest
from ledger_service.tables import Command, CommandItem
from partledger.artifacts import FORWARDER, load_artifact
from partledger.chain import free_nonces
from partledger.db import write_transaction
from partledger.eip712 import Eip712Domain, ForwardRequest, forward_request_digest, forward_request_typed_data, read_domain
from partledger.errors import ChainError, ContractRevert
from partledger.failpoints import failpoint
from partledger.manifest import Manifest
from wallets.signer import Signer

log = logging.getLogger("partledger.submitter")
T_ITEM, T_CMD = CommandItem.__table__, Command.__table__
T_REQ, T_BATCH = RelayRequest.__table__, RelayBatch.__table__
ITEM_STATE = {"accepted": "signed", "relayed": "sent", "mined": "mined", "confirmed": "confirmed"}  # request state -> item state
OPEN = ("signed", "sent", "mined")
MAX_SIGNINGS = 3  # unexecuted failures of one item before it is rejected
SIGN_AGAIN_AFTER = 1.0  # seconds an item refused unexecuted waits before it is signed again
CHUNK = 900


@dataclass(frozen=True)
class CustodialRelayConfig:
    deadline: int = 3_600  # seconds a request stays valid (it is signed again once expired)
    in_flight: int = 1_000  # a key's requests handed over and not yet mined


def relayable(item: Any) -> bool:
    """Whether an outbox item goes through the relay: one part, an operation on parts, not an EPCIS capture's."""
    return item["part_count"] == 1 and OPERATIONS[item["kind"]].per_part and json.loads(item["payload"]).get("capture") is None


class CustodialRelay:
    def __init__(
        self, *, engine: Engine, w3: Web3, manifest: Manifest, signers: dict[str, Signer], config: CustodialRelayConfig,
        reject_items: Callable[..., int],
    ) -> None:  # fmt: skip
        """`reject_items(conn, *where, values=...)`: the submitter's one way to reject items (their VINs go with them)."""
        if manifest.forwarder is None:
            raise ChainError("the deployment manifest names no forwarder: custodial commands cannot be relayed")
        self.engine = engine
        self.w3 = w3
        self.signers = signers
        self.config = config
        self.reject_items = reject_items
        self.forwarder = w3.eth.contract(address=manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        self.registry = w3.eth.contract(address=manifest.address("ConsortiumRegistry"), abi=load_artifact("ConsortiumRegistry").abi)
        self._domain: Eip712Domain | None = None
        self._orgs: dict[str, int] = {}  # site key -> its organisation (the registry's; a key never changes organisation)

    # --- what is in flight ----------------------------------------------------------------------------------

    def handed_over(self, conn: Connection, signer: str) -> int:
        """The key's items handed to the relayer and not yet mined."""
        return conn.execute(
            select(func.count()).where(T_ITEM.c.signer == signer, T_ITEM.c.relay_request_id.is_not(None), T_ITEM.c.state.in_(("signed", "sent")))
        ).scalar()  # fmt: skip

    def any_handed_over(self, conn: Connection) -> bool:
        """Whether any key has items handed over and not yet confirmed (they may change the state others simulate on)."""
        return conn.execute(select(T_ITEM.c.id).where(T_ITEM.c.relay_request_id.is_not(None), T_ITEM.c.state.in_(OPEN)).limit(1)).first() is not None

    # --- handing over ---------------------------------------------------------------------------------------

    def hand_over(self, signer: str, runs: Sequence[tuple[list[Any], dict[str, Any], int]]) -> None:
        """Signs one ForwardRequest per (run, call, gas) with `signer`'s key and writes them, the items naming them,
        in one SQL transaction. The gas is the call's own, as sized for a transaction of the key (its headroom
        covers the forwarder's appended address)."""
        domain = self.domain()
        org_id = self._org_of(signer)
        chain_nonce = read_forwarder_nonces(self.w3, self.forwarder.address, [signer])[signer]
        now = time.time()
        deadline = int(now) + self.config.deadline
        ids = [item["id"] for run, _, _ in runs for item in run]
        with write_transaction(self.engine) as conn:
            claimed = conn.execute(
                update(T_ITEM).where(T_ITEM.c.id.in_(ids), T_ITEM.c.state == "pending").values(state="signed", updated_at=now)
            ).rowcount  # fmt: skip
            if claimed != len(ids):
                raise ChainError("outbox items changed while being packed")  # rolls back: nothing signed is kept
            senders = {row.id: row for row in conn.execute(select(T_CMD.c.id, T_CMD.c.org_id, T_CMD.c.actor, T_CMD.c.api_key_id).where(T_CMD.c.id.in_({item["command_id"] for run, _, _ in runs for item in run})))}
            requests, carried = [], []
            for (run, call, gas), nonce in zip(runs, self._free_nonces(conn, signer, chain_nonce, len(runs))):
                request = ForwardRequest(sender=signer, to=call["to"], value=0, gas=gas, nonce=nonce, deadline=deadline, data=bytes.fromhex(call["data"][2:]))
                digest = forward_request_digest(domain, request)
                command = senders[run[0]["command_id"]]
                request_id = str(uuid.uuid4())
                requests.append({
                    "id": request_id, "digest": digest, "org_id": org_id, "submitted_by": command.org_id,
                    "actor": command.actor or f"key:{command.api_key_id}", "signer": signer, "nonce": nonce, "target": call["to"],
                    "function": OPERATIONS[run[0]["kind"]].function, "gas": gas, "deadline": deadline, "data": request.data,
                    "signature": self._sign(signer, domain, request, digest), "state": "accepted", "batch_id": None, "attempts": 0,
                    "created_at": now, "updated_at": now,
                })  # fmt: skip
                carried += [{"item": item["id"], "request": request_id} for item in run]
            conn.execute(T_REQ.insert(), requests)
            conn.execute(update(T_ITEM).where(T_ITEM.c.id == bindparam("item")).values(relay_request_id=bindparam("request")), carried)
        failpoint("submitter.after_hand_over")  # handed to the relayer, the loop not yet told
        log.info("%d custodial request(s) of %s handed to the relayer (%d item(s))", len(runs), signer, len(ids))

    def _sign(self, signer: str, domain: Eip712Domain, request: ForwardRequest, digest: bytes) -> bytes:
        """The site key's signature of the request: of its digest when the key is in this process, else (a remote
        signer) of its typed data."""
        sign_digest = getattr(self.signers[signer], "sign_eip712_digest", None)
        if sign_digest is not None:
            return bytes(sign_digest(digest))
        return self.signers[signer].sign_typed_data(forward_request_typed_data(domain, request))

    def _free_nonces(self, conn: Connection, signer: str, chain_nonce: int, count: int) -> list[int]:
        """The `count` lowest forwarder nonces from the chain's count that no live request of `signer` holds."""
        taken = {row[0] for row in conn.execute(select(T_REQ.c.nonce).where(T_REQ.c.signer == signer, T_REQ.c.state.in_(LIVE), T_REQ.c.nonce >= chain_nonce))}
        return free_nonces(chain_nonce, taken, count)

    # --- following ------------------------------------------------------------------------------------------

    def follow(self, held: Sequence[str] | None) -> dict[str, ContractRevert]:
        """Moves the handed-over items of the keys `held` (None: all) to their requests' states. Returns the keys the
        chain refused as revoked, with its error, for the submitter to retire (their items are pending again)."""
        where = [T_ITEM.c.relay_request_id.is_not(None), T_ITEM.c.state.in_(OPEN)]
        if held is not None:
            where.append(T_ITEM.c.signer.in_(list(held)))
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    T_ITEM.c.id, T_ITEM.c.command_id, T_ITEM.c.state, T_ITEM.c.signer, T_ITEM.c.relay_attempts, T_REQ.c.nonce,
                    T_REQ.c.state.label("request_state"), T_REQ.c.error_name, T_REQ.c.error_args, T_REQ.c.error_message,
                )
                .select_from(T_ITEM.join(T_REQ, T_REQ.c.id == T_ITEM.c.relay_request_id))
                .where(*where)
            ).all()  # fmt: skip
        changed = [row for row in rows if row.request_state == "failed" or ITEM_STATE[row.request_state] != row.state]
        if not changed:
            return {}
        now = time.time()
        revoked: dict[str, ContractRevert] = {}
        moved: dict[str, list[Any]] = {}
        with write_transaction(self.engine) as conn:
            for row in changed:
                if row.request_state != "failed":
                    moved.setdefault(ITEM_STATE[row.request_state], []).append(row)
                    continue
                error = ContractRevert(row.error_name or "Unknown", tuple(json.loads(row.error_args or "[]")))
                item = and_(T_ITEM.c.id == row.id, T_ITEM.c.state == row.state)
                if revokes(error, row.signer):
                    conn.execute(update(T_ITEM).where(item).values(state="pending", relay_request_id=None, updated_at=now))
                    revoked[row.signer] = error
                elif not _executed(error):
                    if row.relay_attempts + 1 < MAX_SIGNINGS:
                        conn.execute(update(T_ITEM).where(item).values(
                            state="pending", relay_request_id=None, relay_attempts=row.relay_attempts + 1, not_before=now + SIGN_AGAIN_AFTER, updated_at=now,
                        ))  # fmt: skip
                    else:
                        self.reject_items(conn, item, values=_error_values(row, now))
                        self._take_back_after(conn, row.signer, row.nonce, now)
                    log.warning("custodial request for item %d (%s, nonce %d) not executed: %s", row.id, row.signer, row.nonce, row.error_message)
                else:
                    self.reject_items(conn, item, values=_error_values(row, now))
            for state, rows_now in moved.items():
                ids = [row.id for row in rows_now]
                for start in range(0, len(ids), CHUNK):
                    conn.execute(update(T_ITEM).where(T_ITEM.c.id.in_(ids[start : start + CHUNK]), T_ITEM.c.state.in_(OPEN)).values(state=state, updated_at=now))
            submitted = [row.command_id for state, rows_now in moved.items() if state != "signed" for row in rows_now]
            command_stages.record_submitted(conn, submitted)
            command_stages.record_commands_confirmed(conn, [row.command_id for row in moved.get("confirmed", ())])
        return revoked

    def _take_back_after(self, conn: Connection, signer: str, nonce: int, now: float) -> None:
        """The key's requests above `nonce` (now never used) that still wait: failed, their items pending again, so
        that they are signed again from the free nonce on, in their order."""
        waiting = conn.execute(
            update(T_REQ).where(T_REQ.c.signer == signer, T_REQ.c.nonce > nonce, T_REQ.c.state == "accepted")
            .values(state="failed", error_name="Superseded", error_args="[]", error_message=f"nonce {nonce} before it was never used: signed again", updated_at=now)
            .returning(T_REQ.c.id)
        ).scalars().all()  # fmt: skip
        for start in range(0, len(waiting), CHUNK):
            conn.execute(update(T_ITEM).where(T_ITEM.c.relay_request_id.in_(waiting[start : start + CHUNK])).values(state="pending", relay_request_id=None, updated_at=now))

    # --- the chain ------------------------------------------------------------------------------------------

    def domain(self) -> Eip712Domain:
        if self._domain is None:
            self._domain = read_domain(self.forwarder)
        return self._domain

    def _org_of(self, signer: str) -> int:
        if signer not in self._orgs:
            self._orgs[signer] = int(self.registry.functions.siteKey(signer).call()[0])
        return self._orgs[signer]


def _executed(error: ContractRevert) -> bool:
    """Whether a failed request ran its call (the target refused it), rather than being refused by the forwarder or
    skipped, its nonce unused."""
    return not (error.name.startswith("ERC2771Forwarder") or error.name in ("Unknown", "Superseded"))


def revokes(error: ContractRevert, signer: str) -> bool:
    """Whether the chain refused because `signer` itself is revoked."""
    return error.name == "ConsortiumRegistryKeyRevoked" and bool(error.args_) and str(error.args_[0]).lower() == signer.lower()


def _error_values(row: Any, now: float) -> dict[str, Any]:
    return {"error_name": row.error_name, "error_args": row.error_args, "error_message": row.error_message, "updated_at": now}
