"""The platform's key figures, read from SQL when asked: what /metrics reports at each scrape (the outbox, the
submitter's transactions in flight, the indexer's lag and reorganisations, the audit log's anchoring lag) and what
the operations dashboard of the console shows (organisations, commands per day, parts by status, verifications and
clone flags per day, lag).

Every figure is read from the databases (the service's own, and the indexer's mirror), never from one process's
memory: every worker answers the same, the submitter and the indexer may run as processes of their own, and a stage
that stopped shows as a growing lag rather than as silence. Reads only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy import Integer, case, cast, func, select
from sqlalchemy.engine import Connection, Engine

from indexer.tables import IndexerState, Organisation, Part
from ledger_service.audit_tables import AuditBatch, AuditLogEntry
from ledger_service.clones import FLAG_KINDS
from ledger_service.scan_tables import Scan, ScanFlag
from ledger_service.tables import ChainTransaction, Command, CommandItem
from partledger.model import PartStatus
from partledger.rpc import rpc_session

T_CMD, T_ITEM, T_TX = Command.__table__, CommandItem.__table__, ChainTransaction.__table__
T_LOG, T_AUDIT_BATCH = AuditLogEntry.__table__, AuditBatch.__table__
T_SCAN, T_FLAG = Scan.__table__, ScanFlag.__table__
T_STATE, T_ORG, T_PART = IndexerState.__table__, Organisation.__table__, Part.__table__
OPEN_ITEM_STATES = ("pending", "signed", "sent", "mined")  # not final: the outbox's depth
IN_FLIGHT_STATES = ("signed", "sent")  # a key's transactions signed and not mined (SubmitterConfig.max_in_flight_per_signer)
DAY = 86_400
ACTIVE_DAYS = 30  # an organisation is active when it sent a command within this many days


# --- the write path: the outbox and the submitter ----------------------------------------------------------------


@dataclass(frozen=True)
class OutboxFigures:
    items: dict[str, int]  # open items by state (every state of OPEN_ITEM_STATES, 0 included)
    oldest_open_age: float  # seconds since the oldest open item was accepted (0: none open)
    in_flight: dict[str, int]  # transactions signed and not mined, per signer key (keys with none left out)


def outbox_figures(conn: Connection, *, now: float) -> OutboxFigures:
    counts = dict(conn.execute(select(T_ITEM.c.state, func.count()).where(T_ITEM.c.state.in_(OPEN_ITEM_STATES)).group_by(T_ITEM.c.state)).all())
    oldest = conn.execute(select(func.min(T_ITEM.c.created_at)).where(T_ITEM.c.state.in_(OPEN_ITEM_STATES))).scalar()
    in_flight = dict(conn.execute(select(T_TX.c.signer, func.count()).where(T_TX.c.state.in_(IN_FLIGHT_STATES)).group_by(T_TX.c.signer)).all())
    return OutboxFigures(
        items={state: int(counts.get(state, 0)) for state in OPEN_ITEM_STATES},
        oldest_open_age=max(now - oldest, 0.0) if oldest is not None else 0.0,
        in_flight={signer: int(count) for signer, count in sorted(in_flight.items())},
    )


# --- the indexer ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexerFigures:
    head: int | None  # the chain's head (the node's; else the head the indexer saw last), None when unknown
    block: int | None  # the mirror's cursor, None before the indexer started
    lag_blocks: int | None
    lag_seconds: float | None  # how long the oldest block not yet in the mirror has existed (0 when caught up)
    healthy: bool
    message: str
    reorgs: int
    reorged_blocks: int
    head_from_node: bool  # whether `head` is the node's own answer


def indexer_figures(conn: Connection, *, chain_id: int, head: Callable[[], int | None], block_time: Callable[[int], int | None] | None, now: float) -> IndexerFigures:
    """The mirror's cursor against the chain's head. `head` asks the node (None when it does not answer: the head
    the indexer saw last stands in); `block_time` gives a block's timestamp from the node (None: not asked)."""
    state = conn.execute(select(T_STATE).where(T_STATE.c.chain_id == chain_id)).mappings().first()
    node_head = head()
    if state is None:
        return IndexerFigures(node_head, None, None, None, False, "the indexer has not started", 0, 0, node_head is not None)
    block = int(state["block_number"])
    chain_head = node_head if node_head is not None else int(state["head_seen"])
    lag = max(chain_head - block, 0)
    lag_seconds: float | None = 0.0
    if lag > 0:
        first_missing = block_time(block + 1) if block_time is not None else None
        lag_seconds = max(now - first_missing, 0.0) if first_missing is not None else None
    return IndexerFigures(
        head=chain_head, block=block, lag_blocks=lag, lag_seconds=lag_seconds, healthy=bool(state["healthy"]), message=state["message"],
        reorgs=int(state["reorgs"]), reorged_blocks=int(state["reorged_blocks"]), head_from_node=node_head is not None,
    )  # fmt: skip


class BlockTimes:
    """A block's timestamp from the node (eth_getBlockByNumber), with a short timeout: a scrape must answer when
    the node does not."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = rpc_session(url)

    def __call__(self, number: int) -> int | None:
        try:
            reply = self._session.post(self._url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockByNumber", "params": [hex(number), False]}, timeout=2)
            block = reply.json()["result"]
            return None if block is None else int(block["timestamp"], 16)
        except (requests.RequestException, ValueError, KeyError, TypeError):
            return None


# --- the audit log -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFigures:
    unanchored: int  # entries whose batch is not confirmed on chain (not batched, not handed over, or not confirmed yet)
    lag_seconds: float  # age of the oldest of them (0: none)


def audit_figures(conn: Connection, *, now: float) -> AuditFigures:
    count, oldest_ms = conn.execute(select(func.count(), func.min(T_LOG.c.at_ms)).where(T_LOG.c.batch_id.is_(None))).one()
    waiting = conn.execute(
        select(T_AUDIT_BATCH.c.entry_count, T_LOG.c.at_ms)
        .select_from(T_AUDIT_BATCH.outerjoin(T_CMD, T_CMD.c.id == T_AUDIT_BATCH.c.command_id).join(T_LOG, T_LOG.c.id == T_AUDIT_BATCH.c.first_entry))
        .where(T_CMD.c.confirmed_at.is_(None))
    ).all()
    count = int(count) + sum(int(row.entry_count) for row in waiting)
    times = [value for value in [oldest_ms, *(row.at_ms for row in waiting)] if value is not None]
    return AuditFigures(unanchored=count, lag_seconds=max(now - min(times) / 1000, 0.0) if times else 0.0)


# --- the operations dashboard --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayCount:
    day: str  # YYYY-MM-DD (UTC)
    counts: dict[str, int]  # by series (a status, a kind, ...)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Dashboard:
    """The operations dashboard's figures over the last `days` UTC days (today included)."""

    days: int
    members: int  # organisations registered and not suspended
    suspended: int
    active: int  # organisations that sent a command within ACTIVE_DAYS
    commands: list[DayCount]  # by outcome: confirmed, rejected, open
    parts: dict[str, int]  # by status (every status, 0 included)
    recalled_parts: int
    scans: list[DayCount]  # by outcome: ok (no flag), flagged
    flags: list[DayCount]  # by clone-flag kind
    flag_totals: dict[str, int]  # by kind, over the period
    outbox: OutboxFigures
    indexer: IndexerFigures
    audit: AuditFigures
    generated_at: float = field(default_factory=time.time)


def day_starts(now: float, days: int) -> list[float]:
    """The UTC midnights of the last `days` days, oldest first (the last one is today's)."""
    today = now - now % DAY
    return [today - DAY * (days - 1 - index) for index in range(days)]


def _day_label(start: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(start))


def _day_index(column: Any, starts: Sequence[float]) -> Any:
    """The index of the day (in `starts`) a time column falls in, as SQL: a CASE over the midnights, the same on
    SQLite and PostgreSQL (no floor or float modulo there is both)."""
    return cast(case(*[(column >= start, index) for index, start in reversed(list(enumerate(starts)))], else_=-1), Integer)


def _per_day(rows: Sequence[Any], starts: Sequence[float], series: Sequence[str]) -> list[DayCount]:
    table = [{name: 0 for name in series} for _ in starts]
    for index, name, count in rows:
        if 0 <= index < len(starts) and name in table[index]:
            table[index][name] += int(count)
    return [DayCount(_day_label(start), counts) for start, counts in zip(starts, table)]


def dashboard(
    service_engine: Engine, index_engine: Engine, *, chain_id: int, head: Callable[[], int | None], block_time: Callable[[int], int | None] | None,
    days: int = 14, now: float | None = None,
) -> Dashboard:  # fmt: skip
    now = time.time() if now is None else now
    starts = day_starts(now, days)
    since = starts[0]
    with service_engine.connect() as conn:
        day = _day_index(T_CMD.c.created_at, starts).label("day")
        outcome = case((T_CMD.c.rejected_at.is_not(None), "rejected"), (T_CMD.c.confirmed_at.is_not(None), "confirmed"), else_="open").label("outcome")
        commands = conn.execute(select(day, outcome, func.count()).where(T_CMD.c.created_at >= since).group_by(day, outcome)).all()
        active = conn.execute(select(func.count(func.distinct(T_CMD.c.org_id))).where(T_CMD.c.created_at >= now - ACTIVE_DAYS * DAY)).scalar()
        scan_day = _day_index(T_SCAN.c.scanned_at, starts).label("day")
        scan_outcome = case((T_SCAN.c.flags == "", "ok"), else_="flagged").label("outcome")
        scans = conn.execute(select(scan_day, scan_outcome, func.count()).where(T_SCAN.c.scanned_at >= since).group_by(scan_day, scan_outcome)).all()
        flag_day = _day_index(T_FLAG.c.created_at, starts).label("day")
        flags = conn.execute(select(flag_day, T_FLAG.c.kind, func.count()).where(T_FLAG.c.created_at >= since).group_by(flag_day, T_FLAG.c.kind)).all()
        outbox = outbox_figures(conn, now=now)
        audit = audit_figures(conn, now=now)
    with index_engine.connect() as conn:
        members, suspended = conn.execute(
            select(func.count(), func.coalesce(func.sum(case((T_ORG.c.suspended.is_(True), 1), else_=0)), 0))
        ).one()  # fmt: skip
        by_status = dict(conn.execute(select(T_PART.c.status, func.count()).group_by(T_PART.c.status)).all())
        recalled = conn.execute(select(func.count()).where(T_PART.c.recalled.is_(True))).scalar()
        indexer = indexer_figures(conn, chain_id=chain_id, head=head, block_time=block_time, now=now)
    flag_days = _per_day(flags, starts, FLAG_KINDS)
    return Dashboard(
        days=days,
        members=int(members) - int(suspended),
        suspended=int(suspended),
        active=int(active or 0),
        commands=_per_day(commands, starts, ("confirmed", "rejected", "open")),
        parts={status.name.lower(): int(by_status.get(int(status), 0)) for status in PartStatus if status is not PartStatus.NONE},
        recalled_parts=int(recalled or 0),
        scans=_per_day(scans, starts, ("ok", "flagged")),
        flags=flag_days,
        flag_totals={kind: sum(day.counts[kind] for day in flag_days) for kind in FLAG_KINDS},
        outbox=outbox,
        indexer=indexer,
        audit=audit,
        generated_at=now,
    )
