"""The indexer on a live Anvil, row by row: migrations, one part through its whole life, adaptive log ranges."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_utils import keccak
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from indexer import migrate
from indexer.runner import SQLITE_CACHE_MIB, Indexer, IndexerConfig, IndexerLock, IndexerLocked
from indexer.sink import Sink
from indexer.source import JsonRpcSource, RangeTooLarge
from indexer.tables import INDEX_METADATA, Installation, Lot, Part, PartEvent, Shipment
from partledger.db import make_engine
from partledger.errors import ChainUnavailable
from partledger.ids import part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A
from tests.pgcluster import PostgresCluster, unique_name
from tests.servicekit import wait_until

NO_DOC = bytes(32)


def index_to_head(ledger, engine, source=None, **config):
    indexer = Indexer(
        source=source or JsonRpcSource(ledger.w3.provider.endpoint_uri),
        sink=Sink(engine, ledger.manifest.chain_id),
        manifest=ledger.manifest,
        config=IndexerConfig(**config),
    )
    head = ledger.w3.eth.block_number
    while (state := indexer.sink.state()) is None or state.block_number < head:
        indexer.step()
    return indexer


def rows(engine, table, *order):
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(table.__table__).order_by(*order)).mappings()]


def test_migrations_create_exactly_the_tables_the_models_describe(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), INDEX_METADATA)
    assert [d for d in diff if "alembic_version" not in str(d)] == []


def test_the_writer_can_keep_a_larger_sqlite_page_cache_than_readers(tmp_path):
    url = f"sqlite:///{tmp_path / 'index.db'}"
    for engine, kib in ((make_engine(url, sqlite_cache_mib=SQLITE_CACHE_MIB), SQLITE_CACHE_MIB * 1024), (make_engine(url), 2000)):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -kib  # negative: KiB, as SQLite counts
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        engine.dispose()


def test_one_part_through_its_whole_life_is_mirrored_row_by_row(ledger, db_url):
    maker, warehouse, workshop = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["workshop"]
    p = ledger.parts.functions
    (pid, other) = ledger.register(maker, ["LIFE-1", "LIFE-2"], lot="L-LIFE")
    doc = keccak(text="delivery note")
    ledger.act(maker.key, p.shipParts([pid], warehouse.id, doc))
    ledger.act(maker.key, p.cancelShipments([pid], NO_DOC))
    ledger.act(maker.key, p.shipParts([pid, other], warehouse.id, doc))
    ledger.act(warehouse.key, p.receiveParts([pid, other], NO_DOC))
    ledger.act(warehouse.key, p.shipParts([pid], workshop.id, NO_DOC))
    ledger.act(workshop.key, p.receiveParts([pid], NO_DOC))
    vin = keccak(text="salt+VIN")
    ledger.act(workshop.key, p.installParts([pid], [vin], NO_DOC))
    ledger.act(workshop.key, p.removeParts([pid], NO_DOC))
    lot = ledger.lot_number(maker, "L-LIFE")
    ledger.act(maker.key, p.recallLot(lot, keccak(text="notice")))
    ledger.act(workshop.key, p.quarantineParts([pid], NO_DOC))
    ledger.act(workshop.key, p.scrapParts([pid], NO_DOC))

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    index_to_head(ledger, engine)

    kinds = [row["kind"] for row in rows(engine, PartEvent, PartEvent.block_number, PartEvent.log_index) if row["part_id"] == pid]
    assert kinds == ["registered", "shipped", "cancelled", "shipped", "received", "shipped", "received", "installed", "removed", "quarantined", "scrapped"]
    part = next(row for row in rows(engine, Part, Part.part_id) if row["part_id"] == pid)
    assert part["gtin"] == GTIN_A and part["serial"] == "LIFE-1" and part["lot"] == lot
    assert (part["status"], part["custodian"], part["recipient"], part["recalled"], part["vin_hash"]) == (PartStatus.SCRAPPED, workshop.id, None, True, None)
    assert part["site_key"] == workshop.key and part["manufacturer"] == maker.id
    other_row = next(row for row in rows(engine, Part, Part.part_id) if row["part_id"] == other)
    assert (other_row["status"], other_row["custodian"], other_row["recalled"]) == (PartStatus.IN_STOCK, warehouse.id, True)
    shipments = [(s["from_org"], s["to_org"], s["outcome"]) for s in rows(engine, Shipment, Shipment.shipped_block) if s["part_id"] == pid]
    assert shipments == [(maker.id, warehouse.id, "cancelled"), (maker.id, warehouse.id, "received"), (warehouse.id, workshop.id, "received")]
    (installation,) = rows(engine, Installation, Installation.id)
    assert (installation["part_id"], installation["vin_hash"], installation["org_id"]) == (pid, vin, workshop.id)
    assert installation["removed_block"] is not None
    (lot_row,) = [row for row in rows(engine, Lot, Lot.lot) if row["lot"] == lot]
    assert (lot_row["lot_code"], lot_row["manufacturer"], lot_row["recalled"]) == ("L-LIFE", maker.id, True)


class RangeLimitedSource(JsonRpcSource):
    """A node that refuses eth_getLogs over more than `limit` blocks, as hosted nodes and Besu can be set to."""

    def __init__(self, url: str, limit: int) -> None:
        super().__init__(url)
        self.limit = limit
        self.refusals = 0

    def logs(self, from_block, to_block, addresses):
        if to_block - from_block + 1 > self.limit:
            self.refusals += 1
            raise RangeTooLarge(f"query exceeds max block range {self.limit}")
        return super().logs(from_block, to_block, addresses)


def test_indexer_shrinks_log_ranges_the_node_refuses(ledger, tmp_path):
    maker = ledger.orgs["maker"]
    for index in range(6):
        ledger.register(maker, [f"R{index}"], lot="L-RANGE")
    engine = make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    migrate.upgrade(engine)
    source = RangeLimitedSource(ledger.w3.provider.endpoint_uri, limit=3)
    index_to_head(ledger, engine, source=source, max_log_range=64)
    assert source.refusals > 0
    serials = {row["serial"] for row in rows(engine, Part, Part.part_id)}
    assert {f"R{index}" for index in range(6)} <= serials
    assert part_id(GTIN_A, "R0") in {row["part_id"] for row in rows(engine, Part, Part.part_id)}


def test_document_with_the_largest_uint64_deadline_is_mirrored_exactly(db_url):
    """Any member may anchor a document that never expires (deadline 2**64 - 1): past a signed BIGINT's range."""
    from indexer.decoder import DecodedLog
    from indexer.source import BlockHeader
    from indexer.tables import Document

    engine = make_engine(db_url)
    migrate.upgrade(engine)
    sink = Sink(engine, 31337)
    sink.start(BlockHeader(0, b"\1" * 32, bytes(32), 0))
    attestation = (b"\2" * 32, 2, 1, 2, bytes(32), bytes(32), b"\3" * 32, 2**64 - 1)
    log = DecodedLog(
        contract="EvidenceLedger", event="DocumentAnchored", block_number=1, block_hash=b"\4" * 32, tx_hash=b"\5" * 32, log_index=0,
        args={"docHash": attestation[0], "issuer": 1, "counterparty": 2, "attestation": attestation, "issuerSigner": "0x" + "11" * 20,
              "counterpartySigner": "0x" + "22" * 20, "issuerSignature": b"\6" * 65, "counterpartySignature": b"\7" * 65},
    )  # fmt: skip
    header = BlockHeader(1, b"\4" * 32, b"\1" * 32, 1_700_000_000)
    sink.write([log], cursor=header, headers=[header], head=1, journal_from=0, prune_below=0)
    (row,) = rows(engine, Document, Document.doc_hash)
    assert int(row["deadline"]) == 2**64 - 1 and row["block_time"] == 1_700_000_000


def test_indexer_is_healthy_again_as_soon_as_the_node_answers_after_an_outage(tmp_path):
    """A node outage marks the mirror unhealthy; when the node is back, health returns without waiting for a block
    (a permissioned chain may produce none for a while)."""
    from partledger.anvil import AnvilConfig, AnvilNode
    from tests.ports import free_port
    from partledger.chain import connect
    from tests.chainkit import ANVIL_ACCOUNTS, build_ledger

    config = AnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS, state_path=tmp_path / "anvil-state.json")
    node = AnvilNode.start(config)
    stop = threading.Event()
    try:
        ledger = build_ledger(connect(node.url))
        engine = make_engine(f"sqlite:///{tmp_path / 'i.db'}")
        migrate.upgrade(engine)
        indexer = Indexer(source=JsonRpcSource(node.url), sink=Sink(engine, ledger.manifest.chain_id), manifest=ledger.manifest, config=IndexerConfig(poll_interval=0.05))
        thread = threading.Thread(target=indexer.run, kwargs={"stop": stop.is_set}, daemon=True)
        thread.start()
        head = ledger.w3.eth.block_number
        wait_until(lambda: (state := indexer.sink.state()) is not None and state.block_number == head, "catch-up")
        node.stop()
        wait_until(lambda: not indexer.sink.state().healthy, "the outage to show")
        assert indexer.sink.state().message
        node = AnvilNode.start(config)
        assert connect(node.url).eth.block_number == head  # the same chain, and no new block
        wait_until(lambda: indexer.sink.state().healthy, "health after the outage")
        assert indexer.sink.state().message == "" and indexer.sink.state().block_number == head
    finally:
        stop.set()
        node.stop()


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A cluster of the test's own, to stop and start: the session's cluster serves the other tests meanwhile."""
    cluster = PostgresCluster()
    yield cluster
    cluster.destroy()


class IndexerThread(threading.Thread):
    """`Indexer.run` in a thread that keeps what ended it: a wait on the indexer fails at once when it has stopped."""

    def __init__(self, indexer: Indexer, lock: IndexerLock) -> None:
        super().__init__(daemon=True)
        self.indexer, self.lock = indexer, lock
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.indexer.run(stop=self.stopping.is_set, lock=self.lock)
        except BaseException as exc:  # noqa: BLE001 - kept for the test to report
            self.error = exc

    def check_alive(self) -> None:
        if not self.is_alive():
            raise AssertionError("the indexer stopped following the chain") from self.error

    def cursor(self) -> int:
        self.check_alive()
        state = self.indexer.sink.state()
        return -1 if state is None else state.block_number

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=30)


def start_indexer(ledger, url: str, source: JsonRpcSource | None = None) -> tuple[IndexerThread, IndexerLock]:
    engine = make_engine(url)
    migrate.upgrade(engine)
    lock = IndexerLock(engine)
    indexer = Indexer(
        source=source or JsonRpcSource(ledger.w3.provider.endpoint_uri),
        sink=Sink(engine, ledger.manifest.chain_id),
        manifest=ledger.manifest,
        config=IndexerConfig(poll_interval=0.05),
    )
    thread = IndexerThread(indexer, lock)
    thread.start()
    return thread, lock


def wait_for_database_warning(thread: IndexerThread, caplog: pytest.LogCaptureFixture) -> None:
    """Until the indexer has logged that it cannot reach its database (it cannot record that in the database)."""

    def warned() -> bool:
        thread.check_alive()
        return any("database is unavailable" in record.getMessage() for record in caplog.records)

    wait_until(warned, "the indexer to meet the outage", 60.0)


def test_indexer_waits_out_a_postgresql_restart_and_keeps_its_writer_lock(ledger, own_postgres, caplog):
    """The server restarting ends the session holding the advisory lock: the indexer waits for the database, takes
    its lock again before writing, and goes on from its cursor; a second writer is still refused."""
    caplog.set_level(logging.WARNING, logger="partledger.indexer")
    url = own_postgres.create_database(unique_name("restart"))
    thread, lock = start_indexer(ledger, url)
    try:
        wait_until(lambda: thread.cursor() == ledger.w3.eth.block_number, "catch-up", 60.0)
        own_postgres.stop()
        ledger.register(ledger.orgs["maker"], ["PG-RESTART"], lot="L-PG")
        wait_for_database_warning(thread, caplog)
        own_postgres.start()
        # the database may still refuse the first connections after its restart
        wait_until(lambda: thread.cursor() == ledger.w3.eth.block_number, "the block written during the outage", 60.0, ignoring=(SQLAlchemyError,))
        assert part_id(GTIN_A, "PG-RESTART") in {row["part_id"] for row in rows(thread.indexer.sink.engine, Part, Part.part_id)}
        with pytest.raises(IndexerLocked):
            IndexerLock(make_engine(url))
    finally:
        thread.finish()
        lock.release()


class DatabaseStoppingSource(JsonRpcSource):
    """The node, through which a test stops the database at one exact moment of the indexer's loop: in the first
    `head` call after `armed` is set, the node's read of a step that finds nothing new, just before it reads its
    cursor (and the loop the mirror's health). With `node_down`, that call then fails as if the node were
    unreachable too."""

    def __init__(self, url: str, cluster: PostgresCluster, *, node_down: bool) -> None:
        super().__init__(url)
        self.cluster, self.node_down = cluster, node_down
        self.armed, self.stopped = threading.Event(), threading.Event()

    def head(self):
        if self.armed.is_set() and not self.stopped.is_set():
            self.cluster.stop()
            self.stopped.set()
            if self.node_down:
                raise ChainUnavailable("the node is unreachable too")
        return super().head()


@pytest.mark.parametrize("node_down", [False, True], ids=["after-a-step", "with-the-node-down"])
def test_indexer_keeps_following_when_the_database_goes_away_mid_iteration(ledger, own_postgres, caplog, node_down):
    """A restart ends the database's connections at any moment of an iteration: also between a step and the loop's
    own read of the cursor (where the indexer thread used to die of the database error, issue 13), and while the
    node is unreachable, when the loop records the node's outage as the mirror's health."""
    caplog.set_level(logging.WARNING, logger="partledger.indexer")
    source = DatabaseStoppingSource(ledger.w3.provider.endpoint_uri, own_postgres, node_down=node_down)
    thread, lock = start_indexer(ledger, own_postgres.create_database(unique_name("between")), source)
    try:
        wait_until(lambda: thread.cursor() == ledger.w3.eth.block_number, "catch-up", 60.0)
        source.armed.set()
        wait_for_database_warning(thread, caplog)
        assert source.stopped.is_set()
        ledger.register(ledger.orgs["maker"], ["PG-BETWEEN"], lot="L-PG")
        own_postgres.start()
        wait_until(lambda: thread.cursor() == ledger.w3.eth.block_number, "the block written during the outage", 60.0, ignoring=(SQLAlchemyError,))
        assert thread.indexer.sink.state().healthy
    finally:
        thread.finish()
        lock.release()
