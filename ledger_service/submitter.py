"""The submitter: packs pending outbox items into bulk contract calls, signs them with the site's key, sends them,
and follows them to confirmation — surviving a crash at any point.

Per signer, items are taken in acceptance order; a contiguous run of items of the same kind and pack key (the same
recipient, the same GTIN and lot, ...) becomes one transaction of at most max_parts_per_tx parts. The nonce is
chosen in the SQL transaction that stores the signed bytes (unique on signer + nonce), and only then are the bytes
sent. After a restart the recorded bytes are sent again as they are: "already known" means sent, "nonce too low"
with our hash on chain means mined; a nonce is signed again only when its transaction can no longer be on chain:
"nonce too low" without our receipt must persist for a while and a few blocks (behind a load-balanced RPC, the
node that answers may not have the block holding our transaction yet).
A call that would revert is simulated first (one run of it, which also sizes its gas: partledger.chain.GasSizer), and
the item holding the part the error names is rejected with the contract's error, or deferred while other transactions
in flight may still change the state.

A site key revoked on chain (ConsortiumRegistryKeyRevoked naming the signer, from a simulation or from a transaction
that reverted) is retired: its transactions not yet mined can only revert now, so they are void; every item it was
to sign, or signed in vain, moves to another active key of the same organisation and site that this service holds
(a rotation's new key, or a standby key), or, with none, is rejected with the chain's error and the reason. A command
whose API key is narrowed to sites that leave the replacement out (the revoked key's address) is rejected too: nothing
is signed with a key after the chain refused it, nor with one the command's sender may not use.

A rejected item is final, and _reject_items is the one place an item becomes rejected: an install item's encrypted
clear VINs (private_vins) are deleted in the same SQL transaction, as the install never happened. A voided or
re-signed item is not rejected, so its VINs stay.

With `leases` (PostgreSQL, several submitter processes: signer_leases.py) a submitter follows, sends and signs only
for the keys it holds now, and takes up a key handed over from another process as it would after its own restart.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from eth_utils import keccak
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from ledger_service import command_stages
from ledger_service.custodial_relay import CustodialRelay, CustodialRelayConfig, relayable, revokes
from ledger_service.operations import contract_arguments
from ledger_service.auth import sites_allow
from ledger_service.tables import ApiKey, ChainTransaction, Command, CommandItem, PrivateVin, User
from partledger.artifacts import calldata, load_artifact
from partledger.chain import STALLED_CHAIN_FACTOR, GasSizer, decode_revert, free_nonces, revert_of
from partledger.db import write_transaction
from partledger.dblock import ExclusiveLock, LockHeld
from partledger.errors import ChainError, ChainUnavailable, ContractRevert
from partledger.failpoints import failpoint
from partledger.manifest import Manifest
from ledger_service.signer_leases import SignerLeases
from wallets.errors import SignerUnavailable
from wallets.signer import Signer

log = logging.getLogger("partledger.submitter")
T_ITEM, T_TX, T_VIN = CommandItem.__table__, ChainTransaction.__table__, PrivateVin.__table__
T_COMMAND, T_API_KEY, T_USER = Command.__table__, ApiKey.__table__, User.__table__
RESEND_AFTER_SECONDS = 5.0
SUBMIT_PER_STEP = 64  # transactions one key may sign in one pass of the loop (one batch; then the others' turn, and receipts)
RECEIPTS_PER_BATCH = 200
RECHECK_CONFIRMED_SECONDS = 5.0  # how often the chain's nonce of each key is compared with what we recorded
DEFER_STEP_SECONDS = 0.5
BLOCK_GAS_SHARE = 0.9
DELETE_CHUNK = 900  # bound parameters per IN (...) query, under SQLite's limit


class TxChange(NamedTuple):
    """A transaction's new state (its items take the same), the block that holds it and the gas it used."""

    tx_id: int
    state: str  # sent (its block reorganised away) | mined | confirmed
    block_number: int | None
    gas_used: int | None = None


@dataclass(frozen=True)
class SubmitterConfig:
    max_parts_per_tx: int = 200
    max_in_flight_per_signer: int = 8
    defer_seconds: float = 30.0
    interval: float = 0.05
    nonce_taken_seconds: float = 30.0  # "nonce too low" and still no receipt this long (and 2 blocks) later: void


class Submitter:
    def __init__(
        self, *, engine: Engine, w3: Web3, signers: dict[str, Signer], manifest: Manifest, config: SubmitterConfig,
        refresh_keys: Callable[..., bool] | None = None, leases: SignerLeases | None = None, relay: CustodialRelayConfig | None = None,
    ) -> None:
        """`signers` may grow while it runs: `refresh_keys(force=True)` opens keystores added since into it.
        `leases`: which of `signers` this process may use now, shared with other submitter processes; None: all.
        `relay`: single-part items go to the relayer as requests signed with the site's key (custodial_relay.py)."""
        self.engine = engine
        self.leases = leases
        self.w3 = w3
        self.signers = signers
        self.refresh_keys = refresh_keys
        self.manifest = manifest
        self.config = config
        self.contracts = {
            name: w3.eth.contract(address=manifest.address(name), abi=load_artifact(name).abi)
            for name in ("PartLedger", "EvidenceLedger", "ConsortiumRegistry")
        }
        self._block_gas_limit: int | None = None
        self.gas = GasSizer(w3)
        self._retired: dict[str, ContractRevert] = {}  # revoked signers, and the chain's refusal
        self._nonce_taken: dict[int, tuple[float, int]] = {}  # tx id -> (when, block) "nonce too low" was first seen
        self._next_recheck = 0.0
        self._lost_resent = False  # the last follow() sent again transactions the node had lost
        self.custodial = None if relay is None else CustodialRelay(
            engine=engine, w3=w3, manifest=manifest, signers=signers, config=relay, reject_items=_reject_items,
        )  # fmt: skip

    # --- the loop -------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, lock: ExclusiveLock | None = None) -> None:
        """Steps until `stop`; returns early if `lock` (the leader's) was lost to another process (its database
        session ended, and another replica took over meanwhile)."""
        try:
            self._run(stop, lock)
        finally:
            if self.leases is not None:
                self.leases.release()

    def _run(self, stop: threading.Event, lock: ExclusiveLock | None) -> None:
        delay = self.config.interval
        while not stop.is_set():
            try:
                if lock is not None:
                    lock.ensure()
                if self.leases is not None:
                    self.leases.refresh(self.signers)
                busy = self.step()
                delay = self.config.interval
            except LockHeld as exc:
                log.warning("%s: this process no longer runs the submitter", exc)
                return
            except (OperationalError, InterfaceError) as exc:  # the service database restarts or fails over
                log.warning("the database is unavailable (%s); retrying in %.1fs", type(exc).__name__, delay)
                busy = False
                delay = min(max(delay * 2, 0.5), 5.0)
            except (ChainUnavailable, SignerUnavailable) as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                busy = False
                delay = min(max(delay * 2, 0.5), 5.0)
            except Exception:  # noqa: BLE001 - the loop must outlive any one bad step; it is logged
                log.exception("submitter step failed")
                busy = False
                delay = 1.0
            if not busy:
                stop.wait(delay)

    def step(self) -> bool:
        """One pass: follow what was sent, send what was signed, pack and send what is pending. True if it did
        anything (so that the loop goes on at once)."""
        try:
            progressed = self.recheck_confirmed()
            progressed |= self.follow()
            progressed |= self.follow_custodial()
            if self._lost_resent:
                return True  # what the node lost goes first: new transactions wait for the next pass
            progressed |= self.resend()
            if self._anything_pending():
                for signer in self.held_signers():
                    progressed |= self.submit_batch(signer)
        except (OSError, Web3RPCError) as exc:
            raise ChainUnavailable(f"the JSON-RPC node failed: {type(exc).__name__}") from None
        except Exception as exc:
            if type(exc).__module__.startswith(("requests", "urllib3")):
                raise ChainUnavailable(f"cannot reach the JSON-RPC node: {type(exc).__name__}") from None
            raise
        return progressed

    def _anything_pending(self) -> bool:
        """Whether any item waits to be packed, whoever its signer: one indexed look per pass, so that an idle
        submitter does not ask twice per key every pass (with 9 keys and nothing to send, the submitter took 16 % of its API process's GIL time under relayed load)."""
        with self.engine.connect() as conn:
            return conn.execute(select(T_ITEM.c.id).where(T_ITEM.c.state == "pending").limit(1)).first() is not None

    def held_signers(self) -> list[str]:
        """The keys this submitter signs, sends and follows for now: all of them, or those its leases hold."""
        if self.leases is None:
            return sorted(self.signers)
        return sorted(self.leases.owned & set(self.signers))

    def _held_only(self) -> tuple[Any, ...]:
        """A WHERE clause on the outbox's transactions: those of the keys held (none with every key)."""
        return () if self.leases is None else (T_TX.c.signer.in_(self.held_signers()),)

    # --- following sent transactions ------------------------------------------------------------------------

    def follow_custodial(self) -> bool:
        """Items handed to the relayer take their requests' states; a key the chain refused as revoked is retired."""
        if self.custodial is None:
            return False
        revoked = self.custodial.follow(None if self.leases is None else self.held_signers())
        for signer, decoded in revoked.items():
            self._retire_signer(signer, decoded)
        return bool(revoked)

    def follow(self) -> bool:
        """Receipts of what was sent: asked only for transactions whose nonce the chain has passed (one nonce
        query per key instead of a receipt query per transaction still in the pool), in JSON-RPC batches; those
        the node seems to have lost are sent again, in one batch."""
        self._lost_resent = False
        with self.engine.connect() as conn:
            # In signing order: what is sent again goes out in the order it went first (a receipt after its shipment).
            open_txs = conn.execute(select(T_TX).where(T_TX.c.state.in_(("sent", "mined")), *self._held_only()).order_by(T_TX.c.id)).mappings().all()
        if not open_txs:
            return False
        # The head and each key's next nonce in one JSON-RPC batch: through web3's middleware, one call a key and one
        # for the head took a fifth of the submitter's CPU under the EPCIS bench.
        signers = sorted({tx["signer"] for tx in open_txs})
        answers = self._batch([("eth_blockNumber", []), *(("eth_getTransactionCount", [signer, "latest"]) for signer in signers)])
        if any("error" in answer for answer in answers):
            raise Web3RPCError(f"the node failed to answer for the head or a key's nonce: {next(a['error'] for a in answers if 'error' in a)}")
        head = int(answers[0]["result"], 16)
        mined_below = {signer: int(answer["result"], 16) for signer, answer in zip(signers, answers[1:])}
        progressed = False
        stale = []  # the node may have lost them (a restart): the same bytes again
        due = []
        for tx in open_txs:
            if tx["state"] == "sent" and tx["nonce"] >= mined_below[tx["signer"]]:
                if time.time() - (tx["sent_at"] or 0) > RESEND_AFTER_SECONDS:
                    stale.append(tx)
                continue  # not mined yet: its nonce is still the key's next, or after it
            due.append(tx)
        changes: list[TxChange] = []  # recorded together: one commit for the pass, not one per receipt
        for tx, receipt in zip(due, self._receipts([bytes(tx["tx_hash"]) for tx in due])):
            if receipt is None:
                if tx["state"] == "mined":  # its block was reorganised away: it is pending again
                    changes.append(TxChange(tx["id"], "sent", None))
                elif time.time() - (tx["sent_at"] or 0) > RESEND_AFTER_SECONDS:
                    stale.append(tx)
                continue
            block = receipt["blockNumber"]
            failpoint("submitter.before_receipt")  # mined, its receipt not recorded
            if receipt["status"] == 0:
                self._set_txs(changes)  # in order: what came before it first
                changes = []
                self._reverted(tx, block)
                progressed = True
            elif head - block >= self.manifest.confirmations:
                changes.append(TxChange(tx["id"], "confirmed", block, receipt["gasUsed"]))
            elif tx["state"] == "sent":
                changes.append(TxChange(tx["id"], "mined", block, receipt["gasUsed"]))
        self._set_txs(changes)
        progressed |= bool(changes)
        self._lost_resent = self._send_all(stale, in_order=True) > 0
        return progressed

    def recheck_confirmed(self) -> bool:
        """Every few seconds, each key's nonce on chain against the transactions recorded as confirmed: one the chain
        no longer has (a node that lost its newest blocks, as a devnet restart can, or a reorganisation deeper than
        the confirmations) goes back to sent, and its recorded bytes are sent again. Without this, its nonce would
        stay free and every later transaction of the key would wait in the node's queue for good."""
        if time.monotonic() < self._next_recheck:
            return False
        self._next_recheck = time.monotonic() + RECHECK_CONFIRMED_SECONDS
        progressed = False
        head = self.w3.eth.block_number
        for signer in self.held_signers():
            on_chain = self.w3.eth.get_transaction_count(signer, "latest")
            with self.engine.connect() as conn:
                # A nonce the chain has not reached, or a block the chain no longer has: either way, ask for the receipt.
                recorded = conn.execute(
                    select(T_TX)
                    .where(T_TX.c.signer == signer, T_TX.c.state == "confirmed", or_(T_TX.c.nonce >= on_chain, T_TX.c.block_number > head))
                    .order_by(T_TX.c.nonce)
                ).mappings().all()
            for tx in recorded:
                if self._receipt(bytes(tx["tx_hash"])) is None:
                    log.warning("transaction %s (signer %s, nonce %d) recorded as confirmed in block %s is no longer on chain: sending it again",
                                "0x" + bytes(tx["tx_hash"]).hex(), signer, tx["nonce"], tx["block_number"])  # fmt: skip
                    self._set_txs([TxChange(tx["id"], "sent", None)])
                    progressed = True
        return progressed

    def _receipts(self, tx_hashes: list[bytes]) -> list[dict[str, int] | None]:
        """Block number, status and gas used of each transaction's receipt (None: not mined), in one JSON-RPC
        batch per RECEIPTS_PER_BATCH."""
        receipts: list[dict[str, int] | None] = []
        for start in range(0, len(tx_hashes), RECEIPTS_PER_BATCH):
            chunk = tx_hashes[start : start + RECEIPTS_PER_BATCH]
            for answer in self._batch([("eth_getTransactionReceipt", ["0x" + tx_hash.hex()]) for tx_hash in chunk]):
                if "error" in answer:
                    raise Web3RPCError(f"the node failed to answer for a receipt: {answer['error']}")
                found = answer.get("result")
                receipts.append(None if found is None else {key: int(found[key], 16) for key in ("blockNumber", "status", "gasUsed")})
        return receipts

    def _receipt(self, tx_hash: bytes) -> Any:
        try:
            return self.w3.eth.get_transaction_receipt(tx_hash)
        except Exception as exc:  # web3 raises TransactionNotFound for "not mined yet"
            if type(exc).__name__ == "TransactionNotFound":
                return None
            raise

    def _reverted(self, tx: Any, block: int) -> None:
        """A transaction that reverted on chain: its nonce is spent; the item the error names is rejected, the
        others go back to pending."""
        decoded = self._replay(tx, block)
        revoked = revokes(decoded, tx["signer"])
        with self.engine.begin() as conn:
            conn.execute(update(T_TX).where(T_TX.c.id == tx["id"]).values(state="reverted", block_number=block, error_name=decoded.name))
            items = conn.execute(select(T_ITEM).where(T_ITEM.c.tx_id == tx["id"])).mappings().all()
            culprit = _culprit(items, decoded)
            now = time.time()
            for item in items:
                if not revoked and (culprit is None or item["id"] == culprit):
                    _reject_items(conn, T_ITEM.c.id == item["id"], values=_error_columns(decoded) | {"updated_at": now})
                else:
                    conn.execute(update(T_ITEM).where(T_ITEM.c.id == item["id"]).values(state="pending", tx_id=None, updated_at=now))
        log.warning("transaction %s reverted with %s", "0x" + bytes(tx["tx_hash"]).hex(), decoded)
        if revoked:
            self._retire_signer(tx["signer"], decoded)

    def _replay(self, tx: Any, block: int) -> ContractRevert:
        """Why a transaction reverted: the call replayed on the state before its block, or, when that passes (a
        transaction earlier in the same block changed the state: a key revoked, a part taken), after it."""
        signed = self.w3.eth.get_transaction(bytes(tx["tx_hash"]))
        call = {"from": signed["from"], "to": signed["to"], "data": signed["input"], "gas": signed["gas"]}
        for state in (block - 1, block):
            try:
                self.w3.eth.call(call, state)
            except ContractLogicError as exc:
                return revert_of(exc) or ContractRevert("Unknown")
        return ContractRevert("Unknown")

    # --- revoked site keys ----------------------------------------------------------------------------------

    def _retire_signer(self, signer: str, decoded: ContractRevert) -> None:
        """`signer` was revoked on chain (decoded: ConsortiumRegistryKeyRevoked(signer, block)). Its transactions
        not yet mined are void (they can only revert now); the items it was to sign go to the site's replacement
        key, or are rejected with the chain's error and why."""
        self._retired[signer] = decoded
        with self.engine.connect() as conn:
            unmined = conn.execute(select(T_TX).where(T_TX.c.signer == signer, T_TX.c.state.in_(("signed", "sent")))).mappings().all()
        for tx in unmined:
            if self._receipt(bytes(tx["tx_hash"])) is None:
                self._void(tx, f"site key {signer} was revoked")
        replacement, org_id, site = self._replacement(signer)
        now = time.time()
        pending = (T_ITEM.c.signer == signer, T_ITEM.c.state == "pending")
        with write_transaction(self.engine) as conn:  # reads the items the replacement may not take, then moves the rest
            if replacement is not None:
                barred = self._barred_from(conn, pending, replacement, site)
                if barred:
                    reason = (
                        f"{decoded}: site key {signer} was revoked, and the API key that sent this command may not use "
                        f"the replacement key {replacement} of site {site!r} (it is narrowed to other sites)"
                    )
                    _reject_items(conn, T_ITEM.c.id.in_(barred), values=_error_columns(decoded) | {"error_message": reason, "updated_at": now})
                moved = conn.execute(update(T_ITEM).where(*pending).values(signer=replacement, not_before=0.0, updated_at=now)).rowcount
            else:
                block = decoded.args_[1] if len(decoded.args_) > 1 else "?"
                reason = (
                    f"{decoded}: site key {signer} of organisation {org_id} was revoked in block {block}, and this service "
                    f"holds no other active key of that organisation for site {site!r} to sign with"
                )
                values = _error_columns(decoded) | {"error_message": reason}
                moved = _reject_items(conn, *pending, values=values | {"updated_at": now})
        log.warning("site key %s revoked: %d item(s) %s", signer, moved, f"moved to {replacement}" if replacement else "rejected (no replacement key)")

    @staticmethod
    def _barred_from(conn: Connection, pending: tuple[Any, ...], replacement: str, site: str) -> list[int]:
        """The pending items (`pending`) whose command's sender (API key or console user) is narrowed to sites
        that leave out the replacement key: they are rejected rather than signed with a key their sender may not use."""
        items = T_ITEM.join(T_COMMAND, T_COMMAND.c.id == T_ITEM.c.command_id)
        by_key = select(T_ITEM.c.id, T_API_KEY.c.sites).select_from(items.join(T_API_KEY, T_API_KEY.c.key_id == T_COMMAND.c.api_key_id))
        by_user = select(T_ITEM.c.id, T_USER.c.sites).select_from(items.join(T_USER, T_COMMAND.c.actor == "user:" + T_USER.c.username))
        rows = [
            *conn.execute(by_key.where(*pending, T_API_KEY.c.sites.is_not(None))).all(),
            *conn.execute(by_user.where(*pending, T_USER.c.sites.is_not(None))).all(),
        ]
        return [row.id for row in rows if not sites_allow(json.loads(row.sites), replacement, site)]

    def _replacement(self, signer: str) -> tuple[str | None, int, str]:
        """(an active key this service holds for the same organisation and site as `signer`, or None; the
        organisation; the site), as the registry has them now."""
        registry = self.contracts["ConsortiumRegistry"].functions
        org_id, site, _, _ = registry.siteKey(signer).call()
        for attempt in range(2):
            if attempt == 1:
                if self.refresh_keys is None:
                    break
                self.refresh_keys(force=True)  # keystores added since (a replacement from `partledger wallet rotate`)
            for address in sorted(self.signers):
                if address != signer and address not in self._retired:
                    other_org, other_site, _, revoked_block = registry.siteKey(address).call()
                    if (other_org, other_site, revoked_block) == (org_id, site, 0):
                        return address, org_id, _site_name(site)
        return None, org_id, _site_name(site)

    # --- sending --------------------------------------------------------------------------------------------

    def resend(self) -> bool:
        """Sends what was signed and not recorded as sent (a crash in between), in signing order."""
        with self.engine.connect() as conn:
            signed = conn.execute(select(T_TX).where(T_TX.c.state == "signed", *self._held_only()).order_by(T_TX.c.id)).mappings().all()
        self._send_all(signed, in_order=True)
        return bool(signed)

    def _send_all(self, txs: list[Any], *, in_order: bool = False) -> int:
        """Sends recorded transactions in one JSON-RPC batch and records as sent those the node holds now; returns
        how many it holds.
        in_order: for transactions sent before, which the node lost (a devnet node restarted from a save without its
        newest blocks) or never got (a crash between signing and sending): they go out in the order they were
        signed, and the transactions of one key are mined before the next key's are sent, since a node's pool
        orders the keys as it likes and a receipt sent again must not be mined before its shipment (of another key)
        is."""
        live = [tx for tx in txs if tx["signer"] not in self._retired]  # revoked: _retire_signer voided those not mined
        answers = self._send_in_order(live) if in_order else self._batch([_send_request(tx) for tx in live])
        held = []
        for tx, answer in zip(live, answers):
            error = answer.get("error")
            if error is not None:
                message = str(error.get("message", error) if isinstance(error, dict) else error).lower()
                if "already known" in message or "already imported" in message or "known transaction" in message:
                    pass  # sent before (a restart between sending and recording it)
                elif "nonce too low" in message or "nonce is too low" in message:
                    if not self._mined_after_all(tx):
                        continue
                elif "nonce too high" in message:
                    # A node that takes no nonce gap (Hardhat's automine) and got this batch's transactions out of
                    # order: not yet. The same bytes go again (resend, in order) once the nonce before is mined.
                    continue
                else:
                    self._void(tx, f"the node refused the transaction: {message}")
                    continue
            held.append(tx["id"])
        if not held:
            return 0
        failpoint("submitter.after_send")  # sent, not recorded as sent
        with self.engine.begin() as conn:
            conn.execute(update(T_TX).where(T_TX.c.id.in_(held), T_TX.c.state.in_(("signed", "sent"))).values(state="sent", sent_at=time.time()))
            conn.execute(update(T_ITEM).where(T_ITEM.c.tx_id.in_(held), T_ITEM.c.state == "signed").values(state="sent", updated_at=time.time()))
            command_stages.record_sent(conn, held)  # logged with the commands' request ids; first sends timed
        return len(held)

    def _send_in_order(self, txs: list[Any]) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        runs = [list(run) for _, run in itertools.groupby(txs, key=lambda tx: tx["signer"])]
        for number, run in enumerate(runs):
            answers += self._batch([_send_request(tx) for tx in run])
            if number + 1 < len(runs):
                self._wait_mined(bytes(run[-1]["tx_hash"]))
        return answers

    def _wait_mined(self, tx_hash: bytes, timeout: float = 15.0) -> None:
        """Until the transaction has a receipt, or `timeout` (the node may refuse it: the answers say so)."""
        deadline = time.monotonic() + timeout
        while self._receipt(tx_hash) is None and time.monotonic() < deadline:
            time.sleep(0.02)

    def _mined_after_all(self, tx: Any) -> bool:
        """The node said "nonce too low" to `tx`: true if `tx` itself was mined (sent before a restart; following
        it records it). Otherwise another transaction has its nonce, and it never can be mined: its items are
        freed, once that has held for a while and a few blocks, so that a lagging node is not taken at its word (or
        held STALLED_CHAIN_FACTOR times as long on a chain that makes no block)."""
        if self._receipt(bytes(tx["tx_hash"])) is not None:
            return True
        block = self.w3.eth.block_number
        since, first_block = self._nonce_taken.setdefault(tx["id"], (time.monotonic(), block))
        held = time.monotonic() - since
        if held >= self.config.nonce_taken_seconds and (block >= first_block + 2 or held >= STALLED_CHAIN_FACTOR * self.config.nonce_taken_seconds):
            self._nonce_taken.pop(tx["id"], None)
            self._void(tx, "nonce taken by another transaction")
        return False

    def _void(self, tx: Any, reason: str) -> None:
        log.warning("transaction %s void: %s", "0x" + bytes(tx["tx_hash"]).hex(), reason)
        with self.engine.begin() as conn:
            conn.execute(update(T_TX).where(T_TX.c.id == tx["id"]).values(state="void", error_name=reason[:200]))
            conn.execute(update(T_ITEM).where(T_ITEM.c.tx_id == tx["id"]).values(state="pending", tx_id=None, updated_at=time.time()))

    # --- packing and signing --------------------------------------------------------------------------------

    def submit_batch(self, signer: str) -> bool:
        """Packs the oldest pending items of `signer` into up to SUBMIT_PER_STEP transactions (as much as it has room
        for in flight), simulates them in one JSON-RPC batch, then signs, records and sends in one batch those that
        would pass. True if it did anything."""
        now = time.time()
        with self.engine.connect() as conn:
            in_flight = conn.execute(select(func.count()).where(T_TX.c.signer == signer, T_TX.c.state.in_(("signed", "sent")))).scalar()
            handed_over = 0 if self.custodial is None else self.custodial.handed_over(conn, signer)
            candidates = conn.execute(
                select(T_ITEM).where(T_ITEM.c.signer == signer, T_ITEM.c.state == "pending").order_by(T_ITEM.c.id).limit(1_000)
            ).mappings().all()
        runs = _next_runs([item for item in candidates if item["not_before"] <= now], self.config.max_parts_per_tx, SUBMIT_PER_STEP)
        if not runs:
            return False
        relayed = self.custodial is not None and all(relayable(item) for item in runs[0])
        if self.custodial is not None:  # the runs that go the first one's way; the other way once nothing of the key is in flight this way
            runs = list(itertools.takewhile(lambda run: all(relayable(item) for item in run) == relayed, runs))
            if (in_flight if relayed else handed_over) > 0:
                return False
        room = self.custodial.config.in_flight - handed_over if relayed and self.custodial is not None else self.config.max_in_flight_per_signer - in_flight
        runs = runs[: max(0, room)]
        if not runs:
            return False
        if signer in self._retired:  # accepted for a key the chain revoked already (the mirror did not show it yet)
            self._retire_signer(signer, self._retired[signer])
            return True
        calls = []
        for run in runs:
            contract_name, function, arguments = contract_arguments(run[0]["kind"], [json.loads(item["payload"]) for item in run])
            calls.append({"from": signer, "to": self.contracts[contract_name].address, "data": calldata(contract_name, function, arguments), "value": 0})
        passing = []
        # Simulated on the latest block, not on "pending": Anvil runs a call on "pending" after every transaction
        # waiting in its pool, so with 50 shipments of 200 parts waiting, a 200-part shipment's simulation took
        # 74-135 ms instead of 3-8 ms (measured side by side); under bulk load the submitters waited 36-44 % of their
        # time for those runs, and the node's CPU per transition fell by about 40 % without them (the relayer's
        # batches learnt the same: relayer._batch_gas). An item that needs a transaction still in the pool is
        # deferred (_refused_before_sending) until it is mined; one that a pooled transaction will make fail reverts
        # on chain, and _reverted rejects it and sends the others again.
        for run, call, answer in zip(runs, calls, self.gas.limits(calls, block="latest")):
            if "error" not in answer:
                passing.append((run, call, answer["result"]))
                continue
            decoded = _revert_in(answer["error"])
            if revokes(decoded, signer):
                self._retire_signer(signer, decoded)  # every pending item of the key, these runs' too
                return True
            self._refused_before_sending(run, decoded)
        if passing and relayed and self.custodial is not None:
            self.custodial.hand_over(signer, passing)
        elif passing:
            self._sign_and_send(signer, passing)
        return True

    def _refused_before_sending(self, run: list[Any], decoded: ContractRevert) -> None:
        """The simulation reverted: reject (or, while other transactions may still change the state, defer) the
        item the error names — or the whole run when the error names no part."""
        culprit = _culprit(run, decoded)
        now = time.time()
        # Read before the write transaction: on SQLite a transaction that reads and then writes fails at once
        # ("database is locked", whatever the busy timeout) if the API committed in between.
        with self.engine.connect() as conn:
            others_in_flight = conn.execute(select(func.count()).where(T_TX.c.state.in_(("signed", "sent", "mined")))).scalar() > 0
            others_in_flight = others_in_flight or (self.custodial is not None and self.custodial.any_handed_over(conn))
        with self.engine.begin() as conn:
            for item in run:
                if culprit is not None and item["id"] != culprit:
                    continue
                if others_in_flight and now - item["created_at"] < self.config.defer_seconds:
                    conn.execute(update(T_ITEM).where(T_ITEM.c.id == item["id"]).values(not_before=now + DEFER_STEP_SECONDS, updated_at=now))
                else:
                    _reject_items(conn, T_ITEM.c.id == item["id"], values=_error_columns(decoded) | {"updated_at": now})

    def _sign_and_send(self, signer: str, runs: list[tuple[list[Any], dict[str, Any], int]]) -> None:
        """Signs one transaction per (run, call, gas limit), records them all with their items in one SQL
        transaction, then sends them (the recorded bytes, so that a crash in between re-sends the same)."""
        limit = self._gas_limit()
        ids = [item["id"] for run, _, _ in runs for item in run]
        with self.engine.begin() as conn:
            # Claim the items first: this write takes SQLite's write lock before anything is read, so that the
            # INSERT below cannot fail on a stale snapshot ("database is locked" at once, whatever the busy
            # timeout) when the API commits a command meanwhile.
            claimed = conn.execute(
                update(T_ITEM).where(T_ITEM.c.id.in_(ids), T_ITEM.c.state == "pending").values(state="signed", updated_at=time.time())
            ).rowcount
            if claimed != len(ids):
                raise ChainError("outbox items changed while being packed")  # rolls back: nothing signed is kept
            rows = []
            for (run, call, gas), nonce in zip(runs, self._next_nonces(conn, signer, len(runs))):
                transaction = {
                    "to": call["to"], "data": call["data"], "value": 0, "gas": min(gas, limit),
                    "gasPrice": self.manifest.gas_price, "chainId": self.manifest.chain_id, "nonce": nonce,
                }  # fmt: skip
                raw = bytes(self.signers[signer].sign_transaction(transaction).raw_transaction)
                rows.append({
                    "signer": signer, "nonce": nonce, "tx_hash": keccak(raw), "raw": raw, "kind": run[0]["kind"],
                    "part_count": sum(item["part_count"] for item in run), "state": "signed", "created_at": time.time(),
                })  # fmt: skip
            # One INSERT and one UPDATE for the pass, each with a row of parameters per transaction (executemany),
            # the new ids in the rows' order: one statement built per transaction cost the service's interpreter
            # 3 % during benchmarks/epcis_bench.py's capture (py-spy --gil).
            tx_ids = list(conn.execute(insert(T_TX).returning(T_TX.c.id, sort_by_parameter_order=True), rows).scalars())
            conn.execute(
                update(T_ITEM).where(T_ITEM.c.id == bindparam("item")).values(tx_id=bindparam("tx")),
                [{"item": item["id"], "tx": tx_id} for (run, _, _), tx_id in zip(runs, tx_ids) for item in run],
            )  # fmt: skip
        failpoint("submitter.after_sign")  # signed and recorded, not sent
        with self.engine.connect() as conn:
            txs = conn.execute(select(T_TX).where(T_TX.c.id.in_(tx_ids)).order_by(T_TX.c.nonce)).mappings().all()
        self._send_all(txs)

    def _next_nonces(self, conn: Any, signer: str, count: int) -> list[int]:
        """The `count` lowest nonces at or above the chain's count for `signer` that no live recorded transaction
        holds."""
        chain_nonce = self.w3.eth.get_transaction_count(signer, "latest")
        taken = {
            row[0]
            for row in conn.execute(select(T_TX.c.nonce).where(T_TX.c.signer == signer, T_TX.c.state != "void", T_TX.c.nonce >= chain_nonce))
        }
        return free_nonces(chain_nonce, taken, count)

    def _batch(self, requests: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """One JSON-RPC batch: each answer ({"result": ...} or {"error": ...}) in the order of `requests`."""
        if not requests:
            return []
        answers = self.w3.provider.make_batch_request(requests)  # type: ignore[attr-defined]
        if not isinstance(answers, list) or len(answers) != len(requests):
            error = answers.get("error") if isinstance(answers, dict) else answers
            raise Web3RPCError(f"the node refused a batch of {len(requests)} requests: {error}")
        return [dict(answer) for answer in answers]

    def _gas_limit(self) -> int:
        if self._block_gas_limit is None:
            self._block_gas_limit = int(self.w3.eth.get_block("latest")["gasLimit"] * BLOCK_GAS_SHARE)
        return self._block_gas_limit

    def _set_txs(self, changes: list[TxChange]) -> None:
        """Transactions' new states (their items' too) in one SQL transaction. A pass that found a hundred receipts
        made a hundred commits, each a wait for SQLite's write lock behind a capture job storing its events and a
        sync: 4 s in which the submitter signed nothing (the EPCIS bench's jobs' timeline)."""
        if not changes:
            return
        with self.engine.begin() as conn:
            now = time.time()
            # Each statement once, with a row of parameters per transaction (the driver's executemany): built and
            # run one transaction at a time, the two UPDATEs took 4 % of the service's interpreter during
            # benchmarks/epcis_bench.py's capture (py-spy --gil), most of it SQLAlchemy compiling the same statements.
            with_gas = [{"tx": c.tx_id, "new_state": c.state, "block": c.block_number, "gas": c.gas_used} for c in changes if c.gas_used is not None]
            without_gas = [{"tx": c.tx_id, "new_state": c.state, "block": c.block_number} for c in changes if c.gas_used is None]
            if with_gas:
                conn.execute(_TX_STATE_AND_GAS, with_gas)
            if without_gas:
                conn.execute(_TX_STATE, without_gas)
            conn.execute(_ITEMS_STATE, [{"tx": c.tx_id, "new_state": c.state, "now": now} for c in changes])
            confirmed = {change.tx_id: change.block_number for change in changes if change.state == "confirmed" and change.block_number is not None}
            if confirmed:
                command_stages.record_confirmed(conn, confirmed)


_TX_STATE = update(T_TX).where(T_TX.c.id == bindparam("tx")).values(state=bindparam("new_state"), block_number=bindparam("block"))
_TX_STATE_AND_GAS = _TX_STATE.values(gas_used=bindparam("gas"))
_ITEMS_STATE = update(T_ITEM).where(T_ITEM.c.tx_id == bindparam("tx")).values(state=bindparam("new_state"), updated_at=bindparam("now"))


def _reject_items(conn: Connection, *where: Any, values: dict[str, Any]) -> int:
    """Rejects the items `where` selects, with `values` (the error, updated_at), and deletes the encrypted clear VINs
    of those that were installs: personal data of an install that did not happen is not kept. An item is one contract
    call's share of its command, all or none on chain, so only its own parts' VINs go: the command's other items may
    still be installed. Returns how many items it rejected."""
    rejected = conn.execute(
        update(T_ITEM).where(*where).values(state="rejected", **values).returning(T_ITEM.c.command_id, T_ITEM.c.kind, T_ITEM.c.payload)
    ).all()
    command_stages.record_rejected(conn, {item.command_id for item in rejected}, error=values.get("error_name"))
    for item in rejected:
        if item.kind == "install":
            hashes = [bytes.fromhex(value[2:]) for value in json.loads(item.payload)["vin_hashes"]]
            for start in range(0, len(hashes), DELETE_CHUNK):
                conn.execute(delete(T_VIN).where(T_VIN.c.command_id == item.command_id, T_VIN.c.vin_hash.in_(hashes[start : start + DELETE_CHUNK])))
    return len(rejected)


def _send_request(tx: Any) -> tuple[str, list[Any]]:
    return ("eth_sendRawTransaction", ["0x" + bytes(tx["raw"]).hex()])


def _next_run(items: list[Any], max_parts: int) -> list[Any]:
    """The oldest item and the items right after it with the same kind and pack key, up to max_parts parts."""
    if not items:
        return []
    first = items[0]
    run, parts = [first], first["part_count"]
    for item in items[1:]:
        if item["kind"] != first["kind"] or item["pack_key"] != first["pack_key"] or parts + item["part_count"] > max_parts:
            break
        run.append(item)
        parts += item["part_count"]
    return run


def _next_runs(items: list[Any], max_parts: int, count: int) -> list[list[Any]]:
    """Up to `count` runs (_next_run) from the oldest items on. A run that names a part an earlier run of these
    names ends the list: its transaction must be simulated after the earlier one is in the node's pool."""
    runs: list[list[Any]] = []
    seen: set[str] = set()
    while items and len(runs) < count:
        run = _next_run(items, max_parts)
        parts = {part for item in run for part in _parts_of(item)}
        if parts & seen:
            break
        seen |= parts
        runs.append(run)
        items = items[len(run) :]
    return runs


def _parts_of(item: Any) -> list[str]:
    payload = json.loads(item["payload"])
    return list(payload.get("parts", ())) + list(payload.get("part_ids", ()))


def _revert_in(error: dict[str, Any]) -> ContractRevert:
    """The contract's error in a JSON-RPC error answer to eth_estimateGas; a node error that is no revert raises
    (the loop retries it as the node being unavailable)."""
    message = str(error.get("message", ""))
    if error.get("code") != 3 and "revert" not in message.lower():
        raise Web3RPCError(f"the node failed to simulate a transaction: {message}")
    data = error.get("data")
    return decode_revert(data.get("data") if isinstance(data, dict) else data)


def _site_name(site: bytes) -> str:
    return bytes(site).rstrip(b"\0").decode("ascii", errors="replace")


def _culprit(items: list[Any], decoded: ContractRevert) -> int | None:
    """The item holding the part (or serial) a custom error names first, if any."""
    if not decoded.args_ or not isinstance(decoded.args_[0], bytes) or len(decoded.args_[0]) != 32:
        return None
    named = "0x" + decoded.args_[0].hex()
    for item in items:
        payload = json.loads(item["payload"])
        if named in payload.get("parts", ()) or named in payload.get("part_ids", ()):
            return item["id"]
    return None


def _error_columns(decoded: ContractRevert) -> dict[str, Any]:
    return {
        "error_name": decoded.name,
        "error_args": json.dumps([_jsonable(value) for value in decoded.args_]),
        "error_message": str(decoded),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


