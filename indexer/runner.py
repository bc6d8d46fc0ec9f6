"""The indexer loop: target = min(head − confirmations, cursor + batch), reorg checks, adaptive log ranges.

One writer per database: `IndexerLock` holds a PostgreSQL advisory lock, or an flock next to the SQLite file,
for the life of the process; a second writer refuses to start. Both are released by the OS when the process dies.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from indexer.decoder import LogDecoder
from indexer.sink import Sink
from indexer.source import BlockHeader, ChainSource, RangeTooLarge
from indexer.tables import IndexerState
from partledger.dblock import ExclusiveLock, LockHeld
from partledger.errors import ChainError, ChainMismatch, ChainUnavailable
from partledger.manifest import Manifest

log = logging.getLogger("partledger.indexer")
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError)


class IndexerLocked(LockHeld):
    """Another indexer process writes to this database."""


class DeepReorg(ChainError):
    """The chain reorganised deeper than the configured finality: the mirror can no longer be trusted."""


SQLITE_CACHE_MIB = 64  # the writer's SQLite page cache: catching up, about 15 % faster than SQLite's 2 MiB default


@dataclass(frozen=True)
class IndexerConfig:
    confirmations: int = 0  # blocks behind head before a block is indexed (0 for QBFT's instant finality)
    finality_depth: int = 64  # deepest reorganisation handled; block hashes are kept this far back
    batch_blocks: int = 2_000  # blocks per iteration at most
    max_log_range: int = 2_000  # initial eth_getLogs span; halved when the node refuses
    poll_interval: float = 0.5


class IndexerLock(ExclusiveLock):
    """Exclusive right to write the mirror, held until release() or process exit."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, "indexer", error=IndexerLocked)


class Indexer:
    """Follows one deployment's contracts on one chain into one database."""

    def __init__(self, *, source: ChainSource, sink: Sink, manifest: Manifest, config: IndexerConfig) -> None:
        self.source = source
        self.sink = sink
        self.manifest = manifest
        self.config = config
        self.decoder = LogDecoder({name: contract.address for name, contract in manifest.contracts.items()})
        self._log_range = config.max_log_range
        self._dated = False  # whether the blocks indexed before block_times existed have their times
        self._unchanged: IndexerState | None = None  # the cursor, when the last step found nothing new after it

    def _date_old_blocks(self) -> None:
        """A mirror written before block_times existed: the times of its blocks with part events or recalls, read
        from the node once (500 blocks a request)."""
        while True:
            numbers = self.sink.undated_blocks(limit=500)
            if not numbers:
                break
            headers = self.source.headers(numbers)
            if any(header is None for header in headers):
                return  # the node lacks a block the mirror has: the reorg handling comes first; try again next step
            self.sink.date_blocks([header for header in headers if header is not None])
        self._dated = True

    def check_chain(self) -> None:
        chain_id = self.source.chain_id()
        if chain_id != self.manifest.chain_id:
            raise ChainMismatch(f"the node's chain id is {chain_id}, the deployment manifest says {self.manifest.chain_id}")

    def step(self) -> int:
        """One iteration; returns the number of blocks indexed (0 when caught up). Raises DeepReorg.

        Caught up with a head that has not moved (the cursor is the latest block, by number and hash), an
        iteration is one JSON-RPC call and one read of the cursor: the latest block's header answers both "is
        there more?" and "was the cursor's block replaced?" (a reorganisation can keep the height)."""
        self._unchanged = None
        latest = self.source.head()
        head = latest.number
        state = self.sink.state()
        if state is None:
            start = max(self.manifest.deployment_block - 1, 0)
            (header,) = self.source.headers([start])
            if header is None:
                raise ChainMismatch(f"the node has no block {start}, where the deployment manifest starts")
            self.sink.start(header)
            state = self.sink.state()
            assert state is not None
        if not self._dated:
            self._date_old_blocks()
        if state.block_number == head and bytes(state.block_hash) == latest.hash:
            self._unchanged = state
            return 0
        (current,) = self.source.headers([state.block_number])
        if current is None or current.hash != state.block_hash:
            self._handle_reorg(state.block_number, head)
            return 0
        target = min(head - self.config.confirmations, state.block_number + self.config.batch_blocks)
        if target <= state.block_number:
            return 0
        first = state.block_number + 1
        # The window reaches back to head - finality_depth: the common ancestor of a reorganisation as deep as the
        # finality depth must be among the stored blocks (and prune_below keeps exactly that block).
        window_start = max(first, head - self.config.finality_depth)
        # The target's hash before the logs are read, compared with its hash after: a reorganisation between the two
        # reads could swap blocks without our logs for blocks with them, which _consistent cannot see.
        (before,) = self.source.headers([target])
        raw_logs = self._fetch_logs(first, target)
        decoded = [record for record in map(self.decoder.decode, raw_logs) if record is not None]
        # Documents, part events and recalls keep their block's time (block_times), also below the reorg window:
        # those headers are read too (and pruned from indexed_blocks by the same write).
        dated = {record.block_number for record in decoded if record.block_number < window_start}
        numbers = sorted(set(range(window_start, target + 1)) | {target} | dated)
        headers = self.source.headers(numbers)
        if any(header is None for header in headers):
            return 0  # the chain shrank under us (a reorg in progress): look again
        by_number = {header.number: header for header in headers if header is not None}
        if before is None or before.hash != by_number[target].hash or not self._consistent(state.block_hash, state.block_number, by_number, raw_logs):
            log.info("chain changed while reading blocks %d-%d; reading again", first, target)
            return 0
        window = [by_number[n] for n in range(window_start, target + 1)]
        self.sink.write(
            decoded,
            cursor=by_number[target],
            headers=[by_number[n] for n in sorted(dated)] + window,
            head=head,
            journal_from=window_start,
            prune_below=head - self.config.finality_depth,
        )
        return target - state.block_number

    def _fetch_logs(self, first: int, last: int) -> list[dict]:
        """Logs of the deployment in [first, last], in chain order, shrinking the range when the node refuses."""
        logs: list[dict] = []
        start = first
        while start <= last:
            end = min(last, start + self._log_range - 1)
            try:
                logs.extend(self.source.logs(start, end, self.decoder.addresses))
            except RangeTooLarge:
                if self._log_range == 1:
                    raise
                self._log_range = max(1, self._log_range // 2)
                continue
            start = end + 1
        return logs

    @staticmethod
    def _consistent(cursor_hash: bytes, cursor_number: int, headers: dict[int, BlockHeader], raw_logs: list[dict]) -> bool:
        """Whether what was read forms one chain: window headers linked by parent hash (to the cursor when it is
        the first), and every log in the window from the block whose header we hold."""
        for number, header in headers.items():
            parent = headers.get(number - 1)
            if parent is not None and header.parent_hash != parent.hash:
                return False
            if number - 1 == cursor_number and header.parent_hash != cursor_hash:
                return False
        for raw in raw_logs:
            header = headers.get(int(raw["blockNumber"], 16))
            if header is not None and bytes.fromhex(raw["blockHash"][2:]) != header.hash:
                return False
        return True

    def _handle_reorg(self, cursor: int, head: int) -> None:
        stored = self.sink.stored_blocks()
        numbers = sorted((n for n in stored if n <= cursor), reverse=True)
        node = {header.number: header for header in self.source.headers(numbers) if header is not None}
        ancestor = next((node[n] for n in numbers if n in node and node[n].hash == stored[n]), None)
        if ancestor is None or cursor - ancestor.number > self.config.finality_depth:
            depth = "beyond the stored window" if ancestor is None else f"{cursor - ancestor.number} blocks"
            message = f"reorganisation deeper than the configured finality ({self.config.finality_depth} blocks): {depth} below block {cursor}; the mirror stops here — rebuild it with `partledger index --rebuild`"
            self.sink.set_health(healthy=False, message=message, head=head)
            raise DeepReorg(message)
        changed = self.sink.rollback(ancestor)
        log.warning("reorganisation: rolled back %d blocks to %d (%d part states recomputed)", cursor - ancestor.number, ancestor.number, changed)

    def run(self, *, stop: Callable[[], bool] = lambda: False, until_block: int | None = None, lock: ExclusiveLock | None = None) -> None:
        """Indexes until `stop()` or, when `until_block` is given, until the cursor reaches it. Retries a node or a
        database that cannot be reached (checking before each step that `lock`, the writer's lock, is still held);
        a deep reorg, a chain mismatch or the lock taken by another writer ends the run."""
        self.check_chain()
        delay = self.config.poll_interval
        while not stop():
            # Everything that touches the database is inside the try: a restart can end the connections at any
            # moment of an iteration, also after step() has returned.
            try:
                if lock is not None:
                    lock.ensure()
                indexed = self.step()
                state = self._unchanged or self.sink.state()  # the cursor as this step read it, when it moved nothing
                if state is not None and not state.healthy:
                    # The node answers again: the mirror is current as far as it goes, even before a new block.
                    self.sink.set_health(healthy=True, message="")
            except ChainUnavailable as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                self._report_unhealthy(str(exc))
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            except DATABASE_UNAVAILABLE as exc:
                # The mirror's database restarted or failed over: nothing was half-written (one transaction per
                # write), so wait for it and go on from the cursor it has.
                log.warning("the database is unavailable (%s); retrying in %.1fs", _cause(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            delay = self.config.poll_interval
            if until_block is not None and state is not None and state.block_number >= until_block:
                return
            if indexed == 0:
                time.sleep(self.config.poll_interval)

    def _report_unhealthy(self, message: str) -> None:
        """Marks the mirror unhealthy when the database can be reached to say so (the node and the database can
        be down together, for instance when both restart with their host)."""
        try:
            if self.sink.state() is not None:
                self.sink.set_health(healthy=False, message=message)
        except DATABASE_UNAVAILABLE as exc:
            log.warning("the database is unavailable too (%s)", _cause(exc))


def _cause(exc: Exception) -> str:
    """The driver's error, as the log shows it: its class (AdminShutdown, OperationalError) and first line."""
    driver_error = getattr(exc, "orig", None) or exc
    first_line = str(driver_error).partition("\n")[0]
    return f"{type(driver_error).__name__}: {first_line}"
