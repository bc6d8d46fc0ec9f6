"""The relayer: packs accepted relay requests of many sites into executeBatch transactions of the forwarder, signs
them with the relayer's own keys (which hold no role: a request acts only through its site's signature), sends them,
and follows each to its verdict per request — surviving a crash at any point.

Packing. A request is relayed only when its nonce is the one the forwarder will expect of its signer (the chain's
count, or the next after the signer's requests already in flight), so each site's requests go in nonce order, and a
site's requests in flight all ride with one relayer key (its transactions are mined in their nonce order). Requests
of up to batch_size different or equal sites, taken in turn from each site, fill a batch. Batches are non-atomic
(the refund receiver is the relayer): a request the forwarder finds invalid is skipped, and a call that reverts uses
its nonce and is reported — a relayed request behaves like a transaction of its site.

Recording. The relayer's nonce is chosen in the SQL transaction that stores the signed bytes (unique on relayer +
nonce) and marks the requests relayed; only then are the bytes sent. After a restart the recorded bytes are sent
again as they are ("already known": sent; "nonce too low" with our receipt: mined; without it for a while: void, and
its requests wait again).

Verdicts, from the receipt: the forwarder's ExecutedForwardRequest(signer, nonce, success) per executed request.
Success: mined, then confirmed after the manifest's confirmations. A failed call: failed with the target's custom
error, which the forwarder does not pass on, found by replaying the call as the forwarder made it (the signer's
address appended, its gas) on the state before the block, or, when that passes (a request earlier in the same
batch changed the state), after it. No event: the forwarder skipped it; the forwarder's own error, replayed, says
why (a deadline passed, a nonce used meanwhile by the site itself). A request expired before it could be packed, or
whose nonce the site used meanwhile, fails with the error the forwarder would raise, without being sent; the site's
later requests then wait for a request with that nonce (the site signs again from its nonce) or for their own
deadline, and are never sent out of order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from eth_utils import keccak
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from web3 import Web3
from web3.exceptions import Web3RPCError

from ledger_service.metrics import observe_latency
from ledger_service.relay import read_forwarder_nonces
from ledger_service.relay_tables import RelayBatch, RelayRequest
from partledger.artifacts import FORWARDER, calldata, load_artifact
from partledger.chain import STALLED_CHAIN_FACTOR, GasSizer, decode_revert, replay_revert
from partledger.db import write_transaction
from partledger.dblock import ExclusiveLock, LockHeld
from partledger.eip712 import Eip712Domain, ForwardRequest, read_domain, recover_forward_request_signer
from partledger.errors import ChainError, ChainUnavailable, ContractRevert
from partledger.failpoints import failpoint
from partledger.manifest import Manifest
from wallets.errors import SignerUnavailable
from wallets.signer import Signer

log = logging.getLogger("partledger.relayer")
T_REQ, T_BATCH = RelayRequest.__table__, RelayBatch.__table__
EXECUTED_TOPIC = keccak(text="ExecutedForwardRequest(address,uint256,bool)")
RESEND_AFTER_SECONDS = 5.0
RECEIPTS_PER_BATCH = 200
CANDIDATES = 5_000  # accepted requests looked at per pass
MAX_ATTEMPTS = 3  # whole-batch reverts, or skips that pass when replayed, before a request fails for good
DEADLINE_MARGIN_SECONDS = 2  # a request that expires sooner would likely expire before its batch is mined
BLOCK_GAS_SHARE = 0.9
PER_REQUEST_GAS = 40_000  # what the forwarder spends around each call, its calldata apart: signature, nonce, event
BATCH_GAS = 60_000
SQL_IDS = 10_000  # request ids per UPDATE ... IN (...)
SEND_BYTES = 400_000  # signed bytes per JSON-RPC batch of sends: Anvil refuses a request body over 2 MiB (hex doubles)
BOUND_SHARE = 16  # a batch whose bound is at most 1/16 of the block's gas is sent with its bound (_batch_gas)


@dataclass(frozen=True)
class RelayerConfig:
    batch_size: int = 100
    max_in_flight: int = 4  # batches one relayer key may have sent and not yet mined
    interval: float = 0.05
    # A pass sends less than a full batch only once its oldest request has waited this long: sent at once, at 500
    # requests a second, each pass's 20 or so made a transaction of their own, and the relayer's and the node's cost
    # per transaction, not per request, was most of what they spent.
    linger: float = 0.2
    nonce_taken_seconds: float = 30.0  # "nonce too low" and still no receipt this long (and 2 blocks) later: void


class Relayer:
    def __init__(self, *, engine: Engine, w3: Web3, keys: dict[str, Signer], manifest: Manifest, config: RelayerConfig) -> None:
        """`keys`: the relayer's own keys (not site keys), by address."""
        self.engine = engine
        self.w3 = w3
        self.keys = keys
        self.manifest = manifest
        self.config = config
        self.forwarder = w3.eth.contract(address=manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        self._forwarder_lower = self.forwarder.address.lower()
        self._domain: Eip712Domain | None = None
        self._block_gas_limit: int | None = None
        self.gas = GasSizer(w3)
        self._nonce_taken: dict[int, tuple[float, int]] = {}
        self._known_nonces: dict[str, int] = {}  # signer -> the forwarder's nonce, as last read or counted

    # --- the loop -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, lock: ExclusiveLock | None = None) -> None:
        """Steps until `stop`; returns if `lock` (the leader's) was lost to another process."""
        delay = self.config.interval
        while not stop.is_set():
            try:
                if lock is not None:
                    lock.ensure()
                busy = self.step()
                delay = self.config.interval
            except LockHeld as exc:
                log.warning("%s: this process no longer runs the relayer", exc)
                return
            except (OperationalError, InterfaceError, ChainUnavailable, SignerUnavailable) as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                busy = False
                delay = min(max(delay * 2, 0.5), 5.0)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad step; it is logged
                log.exception("relayer step failed")
                busy = False
                delay = 1.0
            if not busy:
                stop.wait(delay)

    def _write(self) -> Any:
        """A write transaction whose SQLite write lock is polled for (partledger.db.write_transaction)."""
        return write_transaction(self.engine, polled=True)

    def step(self) -> bool:
        """One pass: follow what was sent (and send what was signed), then pack and send for each relayer key."""
        try:
            progressed = self.follow()
            progressed |= self.pack()
        except (OSError, Web3RPCError) as exc:
            raise ChainUnavailable(f"the JSON-RPC node failed: {type(exc).__name__}") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise ChainUnavailable(f"cannot reach the JSON-RPC node: {type(exc).__name__}") from None
            raise
        return progressed

    # --- following batches ----------------------------------------------------------------------------------

    def follow(self) -> bool:
        """Receipts of the open batches, in JSON-RPC batches: a verdict per request of each mined batch; batches
        recorded and not sent (a crash), or sent long ago without a receipt, are sent (again)."""
        with self.engine.connect() as conn:
            open_batches = conn.execute(select(T_BATCH).where(T_BATCH.c.state.in_(("signed", "sent", "mined"))).order_by(T_BATCH.c.id)).mappings().all()
        if not open_batches:
            return False
        head = self.w3.eth.block_number
        progressed = False
        to_send = []
        mined: list[tuple[Any, dict[str, Any], bool]] = []  # newly mined: (batch, receipt, confirmed)
        for batch, receipt in zip(open_batches, self._receipts([bytes(batch["tx_hash"]) for batch in open_batches])):
            if receipt is None:
                if batch["state"] == "mined":  # its block was reorganised away: it waits to be mined again
                    self._unmine(batch)
                    progressed = True
                elif batch["state"] == "signed" or time.time() - (batch["sent_at"] or 0) > RESEND_AFTER_SECONDS:
                    to_send.append(batch)
                continue
            confirmed = head - int(receipt["blockNumber"], 16) >= self.manifest.confirmations
            if batch["state"] == "mined":
                if confirmed:
                    self._confirm(batch)
                    progressed = True
                continue
            mined.append((batch, receipt, confirmed))
        if mined:
            failpoint("relayer.before_receipt")  # mined, their verdicts not recorded
            self._settle(mined)
            progressed = True
        if to_send:
            self._send(to_send)
            progressed = True
        return progressed

    def _settle(self, mined: list[tuple[Any, dict[str, Any], bool]]) -> None:
        """The verdict of each request of the newly mined batches, recorded with the batches' in ONE SQL transaction
        (one per batch was the relayer's main wait once its sends were batched: a block holds ten batches and more).
        A batch that reverted as a whole goes its own way (_batch_reverted)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(T_REQ).where(T_REQ.c.batch_id.in_([batch["id"] for batch, _, _ in mined]))).mappings().all()
        requests_of: dict[int, list[Any]] = {}
        for row in rows:
            requests_of.setdefault(row["batch_id"], []).append(row)
        settled: list[tuple[Any, dict[str, Any], list[tuple[Any, dict[str, Any]]]]] = []  # (batch, its values, its verdicts)
        for batch, receipt, confirmed in mined:
            block = int(receipt["blockNumber"], 16)
            if int(receipt["status"], 16) != 1:
                self._batch_reverted(batch, requests_of.get(batch["id"], []), block)
                continue
            values = {"state": "confirmed" if confirmed else "mined", "block_number": block, "gas_used": int(receipt["gasUsed"], 16)}
            settled.append((batch, values, self._verdicts(batch, receipt, requests_of.get(batch["id"], []), block, confirmed=confirmed)))
        if not settled:
            return
        now = time.time()
        with self._write() as conn:
            alike: dict[str, list[str]] = {}  # most verdicts are the same values ("mined" or "confirmed"): one UPDATE each
            for batch, values, verdicts in settled:
                conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch["id"]).values(**values))
                for request, verdict in verdicts:
                    if len(verdict) == 1:
                        alike.setdefault(verdict["state"], []).append(request["id"])
                    else:
                        conn.execute(update(T_REQ).where(T_REQ.c.id == request["id"]).values(**verdict, updated_at=now))
            for state, ids in alike.items():
                for start in range(0, len(ids), SQL_IDS):  # a backlog settled at once stays within PostgreSQL's parameters
                    conn.execute(update(T_REQ).where(T_REQ.c.id.in_(ids[start : start + SQL_IDS])).values(state=state, updated_at=now))
        for batch, values, verdicts in settled:  # decided once: a batch is settled once (its state leaves "sent" with it)
            for request, verdict in verdicts:
                if verdict["state"] in ("confirmed", "failed"):
                    observe_relayed(request, verdict["state"], now)
            failed = sum(verdict["state"] == "failed" for _, verdict in verdicts)
            log.info("batch %s mined in block %d: %d request(s), %d failed", _hex(batch["tx_hash"]), values["block_number"], len(verdicts), failed)

    def _verdicts(self, batch: Any, receipt: dict[str, Any], requests: list[Any], block: int, *, confirmed: bool) -> list[tuple[Any, dict[str, Any]]]:
        """Each request of a mined batch with the values it is to be written with: mined or confirmed; failed with
        the target's error (its call reverted) or the forwarder's (skipped); or accepted again, to wait for another
        batch, when it was skipped for a reason gone since."""
        executed = self._executed(receipt)
        checksummed = {request["signer"].lower(): request["signer"] for request in requests}  # a checksum costs a keccak
        for signer, nonce in executed:  # each executed request used its nonce, whether its call succeeded or not
            address = checksummed.get(signer) or Web3.to_checksum_address(signer)
            self._known_nonces[address] = max(self._known_nonces.get(address, 0), nonce + 1)
        verdicts: list[tuple[Any, dict[str, Any]]] = []
        for request in requests:
            success = executed.get((request["signer"].lower(), request["nonce"]))
            if success is True:
                verdicts.append((request, {"state": "confirmed" if confirmed else "mined"}))
            elif success is False:
                verdicts.append((request, _failed(self._call_error(request, block))))
            else:
                skipped = self._skip_error(request, block, batch["relayer"])
                if skipped is not None:
                    verdicts.append((request, _failed(skipped)))
                elif request["attempts"] + 1 >= MAX_ATTEMPTS:
                    verdicts.append((request, _failed(ContractRevert("Unknown"), "the forwarder skipped it in every batch, though it passes alone")))
                else:  # valid now: skipped for a reason gone since; it waits for the next batch
                    verdicts.append((request, {"state": "accepted", "batch_id": None, "attempts": request["attempts"] + 1}))
        return verdicts

    def _batch_reverted(self, batch: Any, requests: list[Any], block: int) -> None:
        """The whole batch reverted (it should not: it was estimated): its requests wait for another batch, and fail
        with the batch's error after MAX_ATTEMPTS."""
        sent = self.w3.eth.get_transaction(bytes(batch["tx_hash"]))
        decoded = replay_revert(self.w3, {"from": sent["from"], "to": sent["to"], "data": sent["input"], "gas": sent["gas"]}, block)
        now = time.time()
        failed = []
        with self._write() as conn:
            conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch["id"]).values(state="reverted", block_number=block, error_name=decoded.name[:200]))
            for request in requests:
                if request["attempts"] + 1 >= MAX_ATTEMPTS:
                    values = _failed(decoded, f"its batches reverted {MAX_ATTEMPTS} times: {decoded}")
                    failed.append(request)
                else:
                    values = {"state": "accepted", "batch_id": None}
                conn.execute(update(T_REQ).where(T_REQ.c.id == request["id"]).values(**values, attempts=request["attempts"] + 1, updated_at=now))
        for request in failed:
            observe_relayed(request, "failed", now)
        log.warning("batch %s reverted with %s", _hex(batch["tx_hash"]), decoded)

    def _confirm(self, batch: Any) -> None:
        now = time.time()
        with self._write() as conn:
            conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch["id"]).values(state="confirmed"))
            confirmed = conn.execute(
                update(T_REQ).where(T_REQ.c.batch_id == batch["id"], T_REQ.c.state == "mined").values(state="confirmed", updated_at=now)
                .returning(T_REQ.c.function, T_REQ.c.created_at)
            ).all()  # fmt: skip
        for request in confirmed:
            observe_relayed(request._mapping, "confirmed", now)

    def _unmine(self, batch: Any) -> None:
        """A mined batch whose block is gone: sent again as it is, its requests relayed and undecided."""
        with self._write() as conn:
            conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch["id"]).values(state="sent", block_number=None))
            signers = conn.execute(update(T_REQ).where(T_REQ.c.batch_id == batch["id"]).values(state="relayed", updated_at=time.time()).returning(T_REQ.c.signer)).scalars().all()
        for signer in signers:  # the nonces counted from the batch are no longer used: read them again
            self._known_nonces.pop(signer, None)

    def _executed(self, receipt: dict[str, Any]) -> dict[tuple[str, int], bool]:
        """(signer, nonce) -> success of each request the forwarder executed, from its ExecutedForwardRequest logs."""
        executed = {}
        for entry in receipt["logs"]:
            topics = [bytes.fromhex(topic[2:]) for topic in entry["topics"]]
            if entry["address"].lower() == self._forwarder_lower and topics and topics[0] == EXECUTED_TOPIC:
                data = bytes.fromhex(entry["data"][2:])
                if len(data) != 64 or data[32:63] != bytes(31) or data[63] > 1:  # (uint256 nonce, bool success), as emitted
                    raise ChainError(f"an ExecutedForwardRequest log that is not the forwarder's: {entry['data']}")
                executed[("0x" + topics[1][-20:].hex(), int.from_bytes(data[:32], "big"))] = data[63] == 1
        return executed

    def _call_error(self, request: Any, block: int) -> ContractRevert:
        """Why a forwarded call failed: the call as the forwarder made it, replayed before the block, then after it."""
        call = {
            "from": self.forwarder.address, "to": request["target"], "gas": hex(request["gas"]),
            "data": "0x" + (bytes(request["data"]) + bytes.fromhex(request["signer"][2:])).hex(),
        }  # fmt: skip
        for state in (block - 1, block):
            error = self._call_fails(call, state)
            if error is not None:
                return error
        return ContractRevert("Unknown")

    def _skip_error(self, request: Any, block: int, relayer: str) -> ContractRevert | None:
        """Why the forwarder skipped a request: its own error for `execute` of it after the block; None when it would
        pass now."""
        call = {"from": relayer, "to": self.forwarder.address, "data": self._execute_calldata(request)}
        return self._call_fails(call, block)

    def _call_fails(self, call: dict[str, Any], block: int) -> ContractRevert | None:
        answer = self.w3.provider.make_request("eth_call", [call, hex(block)])  # type: ignore[arg-type]
        error = answer.get("error")
        if error is None:
            return None
        data = error.get("data") if isinstance(error, dict) else None
        decoded = decode_revert(data.get("data") if isinstance(data, dict) else data)
        if decoded.name == "Unknown" and not decoded.data and isinstance(error, dict):
            return ContractRevert("Unknown", (str(error.get("message", ""))[:200],))  # out of gas and the like: the node's words
        return decoded

    # --- packing --------------------------------------------------------------------------------------------

    def pack(self) -> bool:
        """Packs batches for every relayer key with room in flight, from one look at the accepted requests: requests
        whose nonce is next for their signer, a signer with requests in flight staying with that relayer key. True if
        it did anything."""
        with self.engine.connect() as conn:
            in_flight = dict(conn.execute(
                select(T_BATCH.c.relayer, func.count()).where(T_BATCH.c.state.in_(("signed", "sent"))).group_by(T_BATCH.c.relayer)
            ).all())  # fmt: skip
            by_load = sorted(self.keys, key=lambda relayer: (in_flight.get(relayer, 0), relayer))  # free sites go to the least loaded key
            room = {relayer: self.config.max_in_flight - in_flight.get(relayer, 0) for relayer in by_load}
            room = {relayer: slots for relayer, slots in room.items() if slots > 0}
            if not room:
                return False
            candidates = conn.execute(select(T_REQ).where(T_REQ.c.state == "accepted").order_by(T_REQ.c.created_at, T_REQ.c.id).limit(CANDIDATES)).mappings().all()
            if not candidates or (len(candidates) < self.config.batch_size and time.time() - candidates[0]["created_at"] < self.config.linger):
                return False  # nothing, or not a batch's worth yet, nor waiting long
            flying = conn.execute(
                select(T_REQ.c.signer, T_REQ.c.nonce, T_BATCH.c.relayer).join(T_BATCH, T_BATCH.c.id == T_REQ.c.batch_id)
                .where(T_REQ.c.state == "relayed", T_BATCH.c.state.in_(("signed", "sent")))
            ).all()  # fmt: skip
        pinned: dict[str, str] = {}  # a signer with requests in flight: the relayer key they ride with
        next_after_flight: dict[str, int] = {}
        for row in flying:
            pinned[row.signer] = row.relayer
            next_after_flight[row.signer] = max(next_after_flight.get(row.signer, 0), row.nonce + 1)
        by_signer: dict[str, list[Any]] = {}
        for request in candidates:
            if pinned.get(request["signer"]) in (None, *room):  # free, or with a relayer key that has room
                by_signer.setdefault(request["signer"], []).append(request)
        if not by_signer:
            return False
        now = time.time()
        chain_nonces = self._signer_nonces(by_signer, next_after_flight)
        failures: list[tuple[Any, ContractRevert, str]] = []
        runs: dict[str | None, list[list[Any]]] = {}  # by the relayer key they must ride with (None: any)
        for signer, requests in by_signer.items():
            chain_nonce = chain_nonces[signer]
            expected = max(chain_nonce, next_after_flight.get(signer, 0))
            by_nonce = {}
            for request in sorted(requests, key=lambda r: r["nonce"]):
                if request["deadline"] <= now + DEADLINE_MARGIN_SECONDS:
                    failures.append((request, ContractRevert("ERC2771ForwarderExpiredRequest", (request["deadline"],)), f"its deadline {request['deadline']} passed before it could be relayed"))
                elif request["nonce"] < chain_nonce:
                    failures.append((request, self._used_nonce_error(request, chain_nonce), f"nonce {request['nonce']} was used meanwhile: the forwarder is at {chain_nonce}"))
                else:
                    by_nonce.setdefault(request["nonce"], request)  # one per nonce (acceptance refuses a second)
            run = []
            while expected in by_nonce:  # the signer's requests from the nonce the forwarder will expect, without a gap
                run.append(by_nonce.pop(expected))
                expected += 1
            if run:
                runs.setdefault(pinned.get(signer), []).append(run)
        if failures:
            self._fail_unsent(failures)
        batches = 0
        planned: dict[str, list[list[Any]]] = {}  # relayer key -> its batches, in nonce order
        while runs and room:
            for relayer in list(room):
                own, free = runs.get(relayer, []), runs.get(None, [])
                lengths = {id(run): len(run) for run in free}
                batch = self._fill(own + free)
                if not batch or (len(batch) < self.config.batch_size and now - min(request["created_at"] for request in batch) < self.config.linger):
                    room.pop(relayer)  # nothing for this key, or a part of a batch not waiting long: its requests wait for the next pass
                    continue
                runs[relayer] = [run for run in own if run]
                runs[None] = [run for run in free if len(run) == lengths[id(run)]]
                runs[relayer] += [run for run in free if run and len(run) != lengths[id(run)]]  # started here: stays here
                runs = {key: value for key, value in runs.items() if value}
                planned.setdefault(relayer, []).append(batch)
                batches += 1
                room[relayer] -= 1
                if not room[relayer]:
                    room.pop(relayer)
        self._sign_and_send(planned)
        return bool(failures or batches)

    def _sign_and_send(self, planned: dict[str, list[list[Any]]]) -> None:
        """Every batch of the pass signed and recorded in ONE SQL transaction (each relayer key's in its nonce order:
        the lowest from its transaction count, read once for the pass, that no recorded batch holds), then all sent in
        one JSON-RPC batch and recorded as sent in one more transaction. Two write transactions and two requests to
        the node for each batch were the relayer's waits (SQLite's write lock beside the API's posts; the node), even
        with each key in a thread of its own. A request changed meanwhile (another relayer process) rolls the whole
        pass back: nothing signed is kept."""
        if not planned:
            return
        counts = self._transaction_counts(sorted(planned))
        prepared = []
        for relayer, batches in planned.items():
            for requests in batches:
                data = self._calldata(requests, relayer)
                prepared.append((relayer, requests, data, self._batch_gas(relayer, data, requests)))
        now = time.time()
        recorded = []
        with self._write() as conn:
            for relayer, requests, data, gas in prepared:
                ids = [request["id"] for request in requests]
                claimed = conn.execute(update(T_REQ).where(T_REQ.c.id.in_(ids), T_REQ.c.state == "accepted").values(state="relayed", updated_at=now)).rowcount
                if claimed != len(ids):
                    raise ChainError("relay requests changed while being packed")  # rolls back: nothing signed is kept
                nonce = self._next_nonce(conn, relayer, counts[relayer])  # sees the batches recorded above
                transaction = {
                    "to": self.forwarder.address, "data": data, "value": 0, "gas": gas, "gasPrice": self.manifest.gas_price,
                    "chainId": self.manifest.chain_id, "nonce": nonce,
                }  # fmt: skip
                raw = bytes(self.keys[relayer].sign_transaction(transaction).raw_transaction)
                batch_id = conn.execute(insert(T_BATCH).values(
                    relayer=relayer, nonce=nonce, tx_hash=keccak(raw), raw=raw, request_count=len(ids), state="signed", created_at=now,
                )).inserted_primary_key[0]  # fmt: skip
                conn.execute(update(T_REQ).where(T_REQ.c.id.in_(ids)).values(batch_id=batch_id))
                recorded.append(batch_id)
        failpoint("relayer.after_sign")  # signed and recorded, not sent
        with self.engine.connect() as conn:
            batches = conn.execute(select(T_BATCH).where(T_BATCH.c.id.in_(recorded)).order_by(T_BATCH.c.id)).mappings().all()
        self._send(list(batches))

    def _signer_nonces(self, by_signer: dict[str, list[Any]], next_after_flight: dict[str, int]) -> dict[str, int]:
        """The forwarder's nonce of each signer: as the relayer last knew it (read, or counted from its own executed
        requests) when the signer's lowest accepted nonce is the one expected next; read from the chain (in one
        batch) when not known or when it does not fit, which is also how a nonce the site used elsewhere is seen."""
        lowest = {signer: min(request["nonce"] for request in requests) for signer, requests in by_signer.items()}
        unsure = [
            signer for signer in sorted(by_signer)
            if signer not in self._known_nonces or lowest[signer] != max(self._known_nonces[signer], next_after_flight.get(signer, 0))
        ]  # fmt: skip
        self._known_nonces.update(self._chain_nonces(unsure))
        return {signer: self._known_nonces[signer] for signer in by_signer}

    def _fill(self, runs: list[list[Any]]) -> list[Any]:
        """Up to batch_size requests taken in turn from each signer's run (so that each signer's stay in nonce order
        and many sites share a batch), within the block's gas."""
        budget = self._gas_limit() - BATCH_GAS
        batch: list[Any] = []
        while runs and len(batch) < self.config.batch_size:
            for run in list(runs):
                need = run[0]["gas"] * 64 // 63 + PER_REQUEST_GAS + 16 * _request_bytes(run[0])
                if len(batch) >= self.config.batch_size or (batch and need > budget):
                    return batch
                batch.append(run.pop(0))
                budget -= need
                if not run:
                    runs.remove(run)
        return batch

    def _batch_gas(self, relayer: str, data: str, requests: list[Any]) -> int:
        """The gas to sign a batch with. Its bound when that is at most 1/BOUND_SHARE of the block's gas: what the
        requests offer their calls, the forwarder's share around each and the transaction's calldata (by Prague's
        rules, its floor included). That is enough whatever the state the batch meets, costs nothing at gas price
        zero, and asks the node nothing: a run on the pending state, on Anvil, replays every transaction waiting
        there, and with the relayer's batches in flight it took about a quarter of a second a batch and held the
        relay to 3-4 batches a second (benchmarks/relay_bench.py). A larger bound would crowd the block: then one
        run of the batch with room to spare (partledger.chain.GasSizer: the state may change before it is mined),
        or the bound if the run fails."""
        limit = self._gas_limit()
        payload = bytes.fromhex(data[2:])
        zeros = payload.count(0)
        tokens = zeros + 4 * (len(payload) - zeros)  # EIP-7623's calldata tokens
        execution = BATCH_GAS + sum(request["gas"] * 64 // 63 + PER_REQUEST_GAS for request in requests)
        bound = min(limit, 21_000 + max(4 * tokens + execution, 10 * tokens))
        if bound * BOUND_SHARE <= limit:
            return bound
        answer = self.gas.limits([{"from": relayer, "to": self.forwarder.address, "data": data}])[0]
        if "error" in answer:
            return bound
        sized = answer["result"]  # with headroom already; the forwarder also wants gas / 63 of a request's left at its end
        return min(limit, sized + max(request["gas"] for request in requests) // 63 + 100_000)

    def _send(self, batches: list[Any]) -> None:
        """Sends recorded batches (their bytes) in order, in one JSON-RPC batch, and records as sent those the node
        holds now."""
        answers: list[dict[str, Any]] = []
        for chunk in _by_size(batches, SEND_BYTES):
            sent = self.w3.provider.make_batch_request([("eth_sendRawTransaction", [_hex(batch["raw"])]) for batch in chunk])  # type: ignore[attr-defined]
            if not isinstance(sent, list) or len(sent) != len(chunk):
                raise Web3RPCError(f"the node refused a batch of {len(chunk)} transactions: {sent if not isinstance(sent, list) else ''}")
            answers.extend(sent)
        held = []
        for batch, answer in zip(batches, answers):
            error = answer.get("error")
            if error is not None:
                message = str(error.get("message", error) if isinstance(error, dict) else error).lower()
                if "already known" in message or "already imported" in message or "known transaction" in message:
                    pass
                elif "nonce too low" in message or "nonce is too low" in message:
                    if not self._mined_after_all(batch):
                        continue
                elif "nonce too high" in message:
                    continue  # a node that takes no nonce gap: the batch before goes first
                else:
                    self._void(batch, f"the node refused the transaction: {message}")
                    continue
            held.append(batch["id"])
        if held:
            failpoint("relayer.after_send")  # sent, not recorded as sent
            with self._write() as conn:
                conn.execute(update(T_BATCH).where(T_BATCH.c.id.in_(held), T_BATCH.c.state.in_(("signed", "sent"))).values(state="sent", sent_at=time.time()))

    def _mined_after_all(self, batch: Any) -> bool:
        """"nonce too low": true if the batch itself was mined (following records it); otherwise, once that has
        held a while and a few blocks (or STALLED_CHAIN_FACTOR times as long on a chain that makes no block), another
        transaction has the nonce and the batch is void."""
        if self._receipts([bytes(batch["tx_hash"])])[0] is not None:
            return True
        block = self.w3.eth.block_number
        since, first_block = self._nonce_taken.setdefault(batch["id"], (time.monotonic(), block))
        held = time.monotonic() - since
        if held >= self.config.nonce_taken_seconds and (block >= first_block + 2 or held >= STALLED_CHAIN_FACTOR * self.config.nonce_taken_seconds):
            self._nonce_taken.pop(batch["id"], None)
            self._void(batch, "nonce taken by another transaction")
        return False

    def _void(self, batch: Any, reason: str) -> None:
        """A batch that can never be mined: its requests wait for another."""
        log.warning("batch %s void: %s", _hex(batch["tx_hash"]), reason)
        with self._write() as conn:
            conn.execute(update(T_BATCH).where(T_BATCH.c.id == batch["id"]).values(state="void", error_name=reason[:200]))
            conn.execute(update(T_REQ).where(T_REQ.c.batch_id == batch["id"], T_REQ.c.state == "relayed").values(state="accepted", batch_id=None, updated_at=time.time()))

    def _fail_unsent(self, failures: list[tuple[Any, ContractRevert, str]]) -> None:
        now = time.time()
        failed = []
        with self._write() as conn:
            for request, error, why in failures:
                changed = conn.execute(update(T_REQ).where(T_REQ.c.id == request["id"], T_REQ.c.state == "accepted").values(**_failed(error, f"{error}: {why}"), updated_at=now))
                if changed.rowcount == 1:
                    failed.append(request)
        for request in failed:
            observe_relayed(request, "failed", now)

    # --- the chain ------------------------------------------------------------------------------------------

    def _used_nonce_error(self, request: Any, chain_nonce: int) -> ContractRevert:
        """What the forwarder says of a request whose nonce is behind: the signature recovers, for its current nonce,
        to another address (ERC2771ForwarderInvalidSigner(recovered, from))."""
        if self._domain is None:
            self._domain = read_domain(self.forwarder)
        current = replace(_forward_request(request), nonce=chain_nonce)
        recovered = recover_forward_request_signer(self._domain, current, bytes(request["signature"])) or "0x0000000000000000000000000000000000000000"
        return ContractRevert("ERC2771ForwarderInvalidSigner", (recovered, request["signer"]))

    def _transaction_counts(self, relayers: list[str]) -> dict[str, int]:
        """Each relayer key's transaction count ("latest"), in one JSON-RPC batch."""
        answers = self.w3.provider.make_batch_request([("eth_getTransactionCount", [Web3.to_checksum_address(relayer), "latest"]) for relayer in relayers])  # type: ignore[attr-defined]
        if not isinstance(answers, list) or len(answers) != len(relayers) or any("error" in answer for answer in answers):
            raise Web3RPCError(f"the node failed to answer the relayer keys' transaction counts: {answers if not isinstance(answers, list) else ''}")
        return {relayer: int(answer["result"], 16) for relayer, answer in zip(relayers, answers)}

    def _chain_nonces(self, signers: list[str]) -> dict[str, int]:
        return read_forwarder_nonces(self.w3, self.forwarder.address, signers)

    def _receipts(self, tx_hashes: list[bytes]) -> list[dict[str, Any] | None]:
        receipts: list[dict[str, Any] | None] = []
        for start in range(0, len(tx_hashes), RECEIPTS_PER_BATCH):
            chunk = tx_hashes[start : start + RECEIPTS_PER_BATCH]
            answers = self.w3.provider.make_batch_request([("eth_getTransactionReceipt", [_hex(tx_hash)]) for tx_hash in chunk])  # type: ignore[attr-defined]
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise Web3RPCError(f"the node refused a batch of {len(chunk)} receipt requests")
            for answer in answers:
                if "error" in answer:
                    raise Web3RPCError(f"the node failed to answer for a receipt: {answer['error']}")
                receipts.append(answer.get("result"))
        return receipts

    def _next_nonce(self, conn: Any, relayer: str, chain_nonce: int) -> int:
        """The lowest nonce from the chain's count (read before; it only grows, and a batch mined since is recorded)
        that no batch of the relayer key holds."""
        taken = {row[0] for row in conn.execute(select(T_BATCH.c.nonce).where(T_BATCH.c.relayer == relayer, T_BATCH.c.state != "void", T_BATCH.c.nonce >= chain_nonce))}
        nonce = chain_nonce
        while nonce in taken:
            nonce += 1
        return nonce

    def _calldata(self, requests: list[Any], relayer: str) -> str:
        """executeBatch of the requests, non-atomic: a refund receiver that is not zero (the relayer; requests carry
        no value, so nothing is ever refunded) makes the forwarder skip an invalid request rather than revert all."""
        return calldata(FORWARDER, "executeBatch", [[_forward_request(r).as_call_data(bytes(r["signature"])) for r in requests], relayer])

    def _execute_calldata(self, request: Any) -> str:
        return calldata(FORWARDER, "execute", [_forward_request(request).as_call_data(bytes(request["signature"]))])

    def _gas_limit(self) -> int:
        if self._block_gas_limit is None:
            self._block_gas_limit = int(self.w3.eth.get_block("latest")["gasLimit"] * BLOCK_GAS_SHARE)
        return self._block_gas_limit


def _by_size(batches: list[Any], limit: int) -> Iterator[list[Any]]:
    """The batches in order, in runs whose signed bytes stay within `limit` (a run holds one at least)."""
    run: list[Any] = []
    size = 0
    for batch in batches:
        if run and size + len(batch["raw"]) > limit:
            yield run
            run, size = [], 0
        run.append(batch)
        size += len(batch["raw"])
    if run:
        yield run


def _request_bytes(request: Any) -> int:
    """A request's bytes in executeBatch's calldata: its offset, its struct's seven head words, its data and its
    signature (each with its length, padded to words)."""
    return 32 * 8 + 32 + -(-len(request["data"]) // 32) * 32 + 32 + 96


def observe_relayed(request: Any, stage: str, at: float) -> None:
    """A relayed request's seconds from acceptance to its verdict (confirmed or failed), in the commands' latency
    histogram under kind "relay.<function>"."""
    observe_latency(f"relay.{request['function']}", stage, at - request["created_at"])


def _forward_request(row: Any) -> ForwardRequest:
    return ForwardRequest(sender=row["signer"], to=row["target"], value=0, gas=row["gas"], nonce=row["nonce"], deadline=row["deadline"], data=bytes(row["data"]))


def _failed(error: ContractRevert, message: str | None = None) -> dict[str, Any]:
    return {
        "state": "failed",
        "error_name": error.name,
        "error_args": json.dumps([_jsonable(value) for value in error.args_]),
        "error_message": message or str(error),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


def _hex(raw: bytes) -> str:
    return "0x" + bytes(raw).hex()

