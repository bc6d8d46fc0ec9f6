"""The indexer's bulk update (partledger.db.BulkWriter.update) on both databases: below COPY_UPDATE_ROWS one UPDATE
per row, from it on PostgreSQL one UPDATE joined to the rows COPYed into a temporary table. Both must leave the same
table: every row named updated once (a key named twice: the later row wins), every other row untouched, and a
second large update in the same transaction (a second temporary table) as right as the first. The same for closing
open shipments (BulkWriter.close_open): only a part's shipment in transit closes, and the first close of a part wins."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from indexer import migrate
from indexer.sink import PART_STATE_COLUMNS, T_PART, T_SHIP
from partledger.db import COPY_UPDATE_ROWS, BulkWriter, make_engine, one_of


def part(number: int) -> bytes:
    return number.to_bytes(32, "big")


def state(number: int, version: int) -> dict:
    return {"status": 1 + (number + version) % 5, "custodian": number % 7 + version, "recipient": version, "vin_hash": bytes([version]) * 32,
            "site_key": f"0x{version:040x}", "updated_block": 1_000 * version + number}  # fmt: skip


@pytest.mark.parametrize("size", [COPY_UPDATE_ROWS - 1, 3 * COPY_UPDATE_ROWS])
def test_a_bulk_update_sets_each_named_row_once_and_leaves_the_others(db_url: str, size: int) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    total = 2 * size
    with engine.begin() as conn:
        conn.execute(T_PART.insert(), [
            {"part_id": part(n), "gtin": "09506000134352", "serial": f"S{n}", "lot": 1, "manufacturer": 1, "registered_block": 1, "recalled": False, **state(n, 0)}
            for n in range(total)
        ])  # fmt: skip
    first = [{"part_id": part(n), **state(n, 1)} for n in range(0, size)]
    first.append({"part_id": part(0), **state(0, 2)})  # named again: the later row wins
    second = [{"part_id": part(n), **state(n, 3)} for n in range(size, total, 2)]
    with engine.begin() as conn:
        writer = BulkWriter(conn)
        writer.update(T_PART, "part_id", PART_STATE_COLUMNS, first)
        writer.update(T_PART, "part_id", PART_STATE_COLUMNS, second)
    with engine.connect() as conn:
        rows = {bytes(row["part_id"]): row for row in conn.execute(select(T_PART)).mappings()}
    engine.dispose()
    expected = {n: state(n, 0) for n in range(total)} | {n: state(n, 1) for n in range(size)} | {0: state(0, 2)} | {n: state(n, 3) for n in range(size, total, 2)}
    for number, values in expected.items():
        row = rows[part(number)]
        assert {column: (bytes(row[column]) if column == "vin_hash" else row[column]) for column in PART_STATE_COLUMNS} == values, number
    assert len(rows) == total


@pytest.mark.parametrize("size", [COPY_UPDATE_ROWS - 2, 3 * COPY_UPDATE_ROWS])
def test_closing_open_shipments_closes_each_parts_open_one_only_and_the_first_close_of_a_part_wins(db_url: str, size: int) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    shipment = {"from_org": 1, "to_org": 2, "doc_hash": bytes(32), "shipped_tx": bytes(32)}
    with engine.begin() as conn:  # each part: two past shipments, closed, and one in transit; part `size` has none open
        conn.execute(T_SHIP.insert(), [
            {"part_id": part(n), "shipped_block": block, "outcome": "received" if block < 3 else None, "closed_block": block + 1 if block < 3 else None, **shipment}
            for n in range(size + 1) for block in (1, 2, 3) if not (n == size and block == 3)
        ])  # fmt: skip
    closes = [{"key_part_id": part(n), "outcome": "received", "closed_block": 10 + n} for n in range(size)]
    closes.append({"key_part_id": part(0), "outcome": "cancelled", "closed_block": 99})  # already closed by the first: nothing
    closes.append({"key_part_id": part(size), "outcome": "received", "closed_block": 77})  # no shipment in transit: nothing
    with engine.begin() as conn:
        BulkWriter(conn).close_open(T_SHIP, "part_id", "outcome", ("outcome", "closed_block"), closes)
    with engine.connect() as conn:
        rows = {(bytes(row["part_id"]), row["shipped_block"]): (row["outcome"], row["closed_block"]) for row in conn.execute(select(T_SHIP)).mappings()}
    engine.dispose()
    expected = {(part(n), block): ("received", block + 1) for n in range(size + 1) for block in (1, 2)}
    expected |= {(part(n), 3): ("received", 10 + n) for n in range(size)}
    assert rows == expected


@pytest.mark.parametrize("size", [0, 1, 900, 5_000])
def test_one_of_finds_exactly_the_named_rows_on_both_databases(db_url: str, size: int) -> None:
    """partledger.db.one_of: one JSON array read by json_each on SQLite (ids of bytes through partledger_unhex), one
    bound array (`= ANY`) on PostgreSQL; the same rows either way, for ids of bytes (parts), integers and text (with
    quotes and letters past ASCII), a list with a repeat, ids that are not there, and more of them than an old
    SQLite takes parameters."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(T_PART.insert(), [
            {"part_id": part(n), "gtin": "09506000134352", "serial": serial(n), "lot": n % 3, "manufacturer": 1, "registered_block": 1, "recalled": False, **state(n, 0)}
            for n in range(1_000)
        ])  # fmt: skip
    named = [part(n) for n in range(0, 2 * size, 2)] + [part(0)] * bool(size)  # every other one, then past the end
    serials = [serial(n) for n in range(1, 2 * size, 2)] + [serial(1)] * bool(size)
    with engine.connect() as conn:
        found = {bytes(row[0]) for row in conn.execute(select(T_PART.c.part_id).where(one_of(conn, T_PART.c.part_id, named)))}
        by_serial = set(conn.execute(select(T_PART.c.serial).where(one_of(conn, T_PART.c.serial, serials))).scalars())
        lots = conn.execute(select(T_PART.c.lot).where(one_of(conn, T_PART.c.lot, [2, 5])).distinct()).scalars().all()
    engine.dispose()
    assert found == {pid for pid in named if int.from_bytes(pid, "big") < 1_000}
    assert by_serial == {serial(n) for n in range(1, min(2 * size, 1_000), 2)}
    assert lots == [2]


def serial(number: int) -> str:
    return f"S{number}" if number % 10 else f"S{number}-é'\"x"
