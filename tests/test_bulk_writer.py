"""The indexer's bulk update (indexer.sink.BulkWriter.update) on both databases: below COPY_UPDATE_ROWS one UPDATE
per row, from it on PostgreSQL one UPDATE joined to the rows COPYed into a temporary table. Both must leave the same
table: every row named updated once (a key named twice: the later row wins), every other row untouched, and a
second large update in the same transaction (a second temporary table) as right as the first."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from indexer import migrate
from indexer.sink import COPY_UPDATE_ROWS, PART_STATE_COLUMNS, BulkWriter, T_PART
from partledger.db import make_engine


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
