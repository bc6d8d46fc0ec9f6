"""A command's way through its stages — accepted, submitted, confirmed or rejected, mirrored — written on its row
(commands.submitted_at, confirmed_at and confirmed_block, rejected_at, mirrored_at), observed once each in the
latency histogram (partledger_command_latency_seconds: seconds since acceptance), and logged with the request ids of
the commands concerned.

HTTP request (X-Request-ID) → outbox (commands.request_id) → submitter: transaction_sent (tx hash, nonce) and
transaction_confirmed (tx hash, block) log lines name the commands each transaction carries and their request ids;
→ MirrorWatch: commands_mirrored once the indexer's mirror holds their block.

The submitter calls record_sent, record_confirmed and record_rejected inside the SQL transactions that move the
items; each stage is taken by a conditional UPDATE (only where its column is still empty) that returns the rows it
changed, so that a stage is observed once per command however many processes work on the outbox. (A transaction
that fails at its very commit, the database going away, leaves its observations made: its retry observes them again.)
A command is confirmed when all its items are; rejected when one is (and then never confirmed). Commands accepted
before migration 0010 are not measured.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from ledger_service.metrics import observe_latency
from ledger_service.read import indexed_block
from ledger_service.relay_tables import RelayBatch, RelayRequest
from ledger_service.tables import ChainTransaction, Command, CommandItem
from partledger.dblock import ExclusiveLock, LockHeld

log = logging.getLogger("partledger.submitter")
T_CMD, T_ITEM, T_TX = Command.__table__, CommandItem.__table__, ChainTransaction.__table__
T_REQ, T_BATCH = RelayRequest.__table__, RelayBatch.__table__
CHUNK = 900  # bound parameters per IN (...), under SQLite's limit
MIRROR_BATCH = 5_000
MIRROR_INTERVAL = 0.1  # seconds between looks at the mirror's cursor: the resolution of the mirrored stage


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    return [values[start : start + CHUNK] for start in range(0, len(values), CHUNK)]


def _carried(conn: Connection, tx_ids: Collection[int]) -> dict[int, list[tuple[str, str | None]]]:
    """Per transaction, the (command id, request id) of the commands it carries, in acceptance order."""
    carried: dict[int, list[tuple[str, str | None]]] = {}
    for chunk in _chunks(sorted(tx_ids)):
        rows = conn.execute(
            select(T_ITEM.c.tx_id, T_CMD.c.id, T_CMD.c.request_id).distinct()
            .select_from(T_ITEM.join(T_CMD, T_CMD.c.id == T_ITEM.c.command_id))
            .where(T_ITEM.c.tx_id.in_(chunk))
            .order_by(T_ITEM.c.tx_id, T_CMD.c.id)
        ).all()  # fmt: skip
        for tx_id, command_id, request_id in rows:
            carried.setdefault(tx_id, []).append((command_id, request_id))
    return carried


def _ids(commands: list[tuple[str, str | None]]) -> dict[str, Any]:
    """A log line's command ids and request ids; `request_id` too when they all came by one request."""
    fields: dict[str, Any] = {"command_ids": [command for command, _ in commands], "request_ids": [request for _, request in commands]}
    requests = {request for _, request in commands if request is not None}
    if len(requests) == 1:
        fields["request_id"] = requests.pop()
    return fields


def record_sent(conn: Connection, tx_ids: Collection[int]) -> None:
    """Transactions the node now holds (first sends and sends again): each logged with its commands, and the
    commands sent for the first time observed at stage submitted."""
    if not tx_ids:
        return
    now = time.time()
    carried = _carried(conn, tx_ids)
    txs = conn.execute(select(T_TX.c.id, T_TX.c.tx_hash, T_TX.c.nonce, T_TX.c.signer, T_TX.c.kind).where(T_TX.c.id.in_(list(carried)))).all() if carried else []
    for tx in txs:
        log.info(
            "transaction %s sent", "0x" + bytes(tx.tx_hash).hex(),
            extra={"event": "transaction_sent", "tx_hash": "0x" + bytes(tx.tx_hash).hex(), "nonce": tx.nonce, "signer": tx.signer, "kind": tx.kind,
                   **_ids(carried[tx.id])},
        )  # fmt: skip
    commands = sorted({command for pairs in carried.values() for command, _ in pairs})
    for chunk in _chunks(commands):
        first = conn.execute(
            update(T_CMD).where(T_CMD.c.id.in_(chunk), T_CMD.c.submitted_at.is_(None)).values(submitted_at=now).returning(T_CMD.c.kind, T_CMD.c.created_at)
        ).all()
        for kind, created_at in first:
            observe_latency(kind, "submitted", now - created_at)


def record_confirmed(conn: Connection, blocks: dict[int, int]) -> None:
    """Transactions confirmed, each in its block (transaction id -> block; their items already marked confirmed in
    this SQL transaction): each logged with its commands; the commands now confirmed whole (no item left that is
    not) observed at stage confirmed, with the highest block of their transactions, which the mirror watch waits for."""
    carried = _carried(conn, blocks)
    hashes: dict[int, bytes] = {}
    for chunk in _chunks(sorted(blocks)):
        hashes.update((tx_id, bytes(tx_hash)) for tx_id, tx_hash in conn.execute(select(T_TX.c.id, T_TX.c.tx_hash).where(T_TX.c.id.in_(chunk))))
    for tx_id, block in blocks.items():
        tx_hash = "0x" + hashes.get(tx_id, b"").hex()
        log.info(
            "transaction %s confirmed in block %d", tx_hash, block,
            extra={"event": "transaction_confirmed", "tx_hash": tx_hash, "block": block, **_ids(carried.get(tx_id, []))},
        )  # fmt: skip
    record_commands_confirmed(conn, [command for pairs in carried.values() for command, _ in pairs])


def record_commands_confirmed(conn: Connection, command_ids: Collection[str]) -> None:
    """Of `command_ids` (an item of each just confirmed, in this SQL transaction), those now confirmed whole (no item
    left that is not) observed at stage confirmed, with the highest block of their items' transactions, their own or
    the relay's batches (ledger_service.custodial_relay), which the mirror watch waits for."""
    now = time.time()
    unfinished = select(T_ITEM.c.id).where(T_ITEM.c.command_id == T_CMD.c.id, T_ITEM.c.state != "confirmed").exists()
    for chunk in _chunks(sorted(set(command_ids))):
        done = conn.execute(
            select(T_CMD.c.id).where(T_CMD.c.id.in_(chunk), T_CMD.c.confirmed_at.is_(None), T_CMD.c.rejected_at.is_(None), ~unfinished)
        ).scalars().all()  # fmt: skip
        if not done:
            continue
        highest: dict[str, int] = {}
        own = select(T_ITEM.c.command_id, T_TX.c.block_number).select_from(T_ITEM.join(T_TX, T_TX.c.id == T_ITEM.c.tx_id))
        relayed = select(T_ITEM.c.command_id, T_BATCH.c.block_number).select_from(
            T_ITEM.join(T_REQ, T_REQ.c.id == T_ITEM.c.relay_request_id).join(T_BATCH, T_BATCH.c.id == T_REQ.c.batch_id)
        )  # fmt: skip
        for query in (own, relayed):
            for command_id, block in conn.execute(query.where(T_ITEM.c.command_id.in_(done))):
                if block is not None:
                    highest[command_id] = max(highest.get(command_id, block), block)
        by_block: dict[int | None, list[str]] = {}
        for command_id in done:
            by_block.setdefault(highest.get(command_id), []).append(command_id)
        for block, ids in by_block.items():
            confirmed = conn.execute(
                update(T_CMD).where(T_CMD.c.id.in_(ids), T_CMD.c.confirmed_at.is_(None), T_CMD.c.rejected_at.is_(None))
                .values(confirmed_at=now, confirmed_block=block)
                .returning(T_CMD.c.kind, T_CMD.c.created_at)
            ).all()  # fmt: skip
            for kind, created_at in confirmed:
                observe_latency(kind, "confirmed", now - created_at)


def record_submitted(conn: Connection, command_ids: Collection[str]) -> None:
    """Commands an item of which a relay batch now carries (ledger_service.custodial_relay): those submitted for the
    first time observed at stage submitted."""
    now = time.time()
    for chunk in _chunks(sorted(set(command_ids))):
        first = conn.execute(
            update(T_CMD).where(T_CMD.c.id.in_(chunk), T_CMD.c.submitted_at.is_(None)).values(submitted_at=now).returning(T_CMD.c.kind, T_CMD.c.created_at)
        ).all()
        for kind, created_at in first:
            observe_latency(kind, "submitted", now - created_at)


def record_rejected(conn: Connection, command_ids: Collection[str], *, error: str | None) -> None:
    """Commands with an item rejected just now: observed at stage rejected (once: a command rejected twice, by two
    of its items, counts once) and logged."""
    now = time.time()
    for chunk in _chunks(sorted(set(command_ids))):
        rejected = conn.execute(
            update(T_CMD).where(T_CMD.c.id.in_(chunk), T_CMD.c.rejected_at.is_(None)).values(rejected_at=now)
            .returning(T_CMD.c.id, T_CMD.c.kind, T_CMD.c.created_at, T_CMD.c.request_id)
        ).all()  # fmt: skip
        for command_id, kind, created_at, request_id in rejected:
            observe_latency(kind, "rejected", now - created_at)
            log.info("command %s rejected: %s", command_id, error, extra={"event": "command_rejected", "command_id": command_id, "request_id": request_id, "error": error})


class MirrorWatch:
    """Confirmed commands whose block the indexer's mirror now holds: marked mirrored and observed, every
    MIRROR_INTERVAL (the stage's resolution). Run by one process at a time (app.run_as_leader, lock "stages")."""

    def __init__(self, *, service_engine: Engine, index_engine: Engine, chain_id: int, interval: float = MIRROR_INTERVAL) -> None:
        self.service_engine = service_engine
        self.index_engine = index_engine
        self.chain_id = chain_id
        self.interval = interval

    def step(self) -> int:
        """Marks what the mirror shows now; returns how many commands."""
        with self.index_engine.connect() as conn:
            cursor = indexed_block(conn, self.chain_id)
        with self.service_engine.connect() as conn:
            ids = conn.execute(
                select(T_CMD.c.id).where(T_CMD.c.mirrored_at.is_(None), T_CMD.c.confirmed_block.is_not(None), T_CMD.c.confirmed_block <= cursor).limit(MIRROR_BATCH)
            ).scalars().all()  # fmt: skip
        if not ids:
            return 0
        now = time.time()
        marked: list[Any] = []
        with self.service_engine.begin() as conn:
            for chunk in _chunks(ids):
                marked += conn.execute(
                    update(T_CMD).where(T_CMD.c.id.in_(chunk), T_CMD.c.mirrored_at.is_(None)).values(mirrored_at=now)
                    .returning(T_CMD.c.id, T_CMD.c.kind, T_CMD.c.created_at, T_CMD.c.request_id)
                ).all()  # fmt: skip
        for _, kind, created_at, _ in marked:
            observe_latency(kind, "mirrored", now - created_at)
        if marked:
            log.info("%d command(s) in the mirror at block %d", len(marked), cursor,
                     extra={"event": "commands_mirrored", "block": cursor, **_ids([(row.id, row.request_id) for row in marked])})  # fmt: skip
        return len(marked)

    def run(self, stop: threading.Event, lock: ExclusiveLock | None = None) -> None:
        """Steps until `stop`, or until `lock` went to another process."""
        while not stop.is_set():
            try:
                if lock is not None:
                    lock.ensure()
                busy = self.step() >= MIRROR_BATCH
            except LockHeld:
                return
            except (OperationalError, InterfaceError) as exc:
                log.warning("mirror watch: the database is unavailable (%s)", type(exc).__name__)
                busy = False
            except Exception:  # noqa: BLE001 - a metric must never stop; the next look tries again
                log.exception("mirror watch failed")
                busy = False
            if not busy:
                stop.wait(self.interval)
