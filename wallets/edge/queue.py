"""The edge agent's local store: one SQLite file (WAL, synchronous=FULL) holding the queue of signed requests, the
site's view of its parts as last synced from the cloud, a few facts (signer, organisation, EIP-712 domain, next
nonce, last sync, the consortium's organisations) and the VINs the site's pages hashed, with their salts (only the
salted hash goes on chain; the salt is what lets the site show later that a VIN is the one recorded).

A request answered 202 by the local API is committed here first, so it survives a crash or a power cut. A request's
life: queued (signed, waiting for the link) → relayed (the cloud's relay holds it, under relay_id) → confirmed, or
failed with its reason. `posted` records that a post to the cloud was attempted: from then on the cloud may hold the
signed bytes, so the request is posted again as it is (the cloud dedups it) and never signed again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    parts TEXT NOT NULL,
    target TEXT NOT NULL,
    data BLOB NOT NULL,
    gas INTEGER NOT NULL,
    nonce INTEGER,
    deadline INTEGER,
    signature BLOB,
    status TEXT NOT NULL,
    posted INTEGER NOT NULL DEFAULT 0,
    relay_id TEXT,
    tx_hash TEXT,
    block INTEGER,
    reason TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_status ON requests (status, seq);
CREATE TABLE IF NOT EXISTS parts (
    part_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    custodian INTEGER,
    recipient INTEGER,
    recalled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS vins (
    vin_hash TEXT PRIMARY KEY,
    sealed BLOB NOT NULL,
    created_at REAL NOT NULL
);
"""

STATUSES = ("queued", "relayed", "confirmed", "failed")


class EdgeStore:
    """The SQLite file, through one connection shared by the agent's threads under a lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")  # a request answered 202 is on disk, power cut included
        self._conn.executescript(SCHEMA)
        self.lock = threading.RLock()

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQL transaction (BEGIN IMMEDIATE … COMMIT), under the lock."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self.lock:
            return self._conn.execute(sql, parameters).fetchall()

    # --- facts ----------------------------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    def put(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, json.dumps(value)))

    def keep_vin(self, vin_hash: str, sealed: bytes) -> None:
        """An installation's clear VIN and salt, sealed (wallets.edge.pages.seal_vin): never kept in clear here."""
        with self.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO vins (vin_hash, sealed, created_at) VALUES (?, ?, ?)", (vin_hash, sealed, time.time()))

    def sealed_vin(self, vin_hash: str) -> bytes | None:
        rows = self.query("SELECT sealed FROM vins WHERE vin_hash = ?", (vin_hash,))
        return bytes(rows[0]["sealed"]) if rows else None

    def recent_requests(self, limit: int) -> list[dict[str, Any]]:
        """The latest requests, newest first, as GET /edge/requests/{id} shows each (nonce fillers left out)."""
        return [request_view(row) for row in self.query("SELECT * FROM requests WHERE kind != 'nonce_fill' ORDER BY seq DESC LIMIT ?", (limit,))]

    # --- what `partledger edge status` and GET /edge/status show ----------------------------------------------

    def summary(self) -> dict[str, Any]:
        counts = {status: 0 for status in STATUSES}
        for row in self.query("SELECT status, count(*) AS n FROM requests GROUP BY status"):
            counts[row["status"]] = row["n"]
        oldest = self.query("SELECT id, kind, nonce, created_at FROM requests WHERE status = 'queued' ORDER BY seq LIMIT 1")
        failed = self.query("SELECT id, kind, nonce, reason, updated_at FROM requests WHERE status = 'failed' ORDER BY updated_at DESC, seq DESC LIMIT 10")
        now = time.time()
        return {
            "site": self.get("site"),
            "signer": self.get("signer"),
            "organisation": self.get("org_id"),
            "queue_depth": counts["queued"] + counts["relayed"],
            "counts": counts,
            "oldest_unsent": (
                {"id": oldest[0]["id"], "kind": oldest[0]["kind"], "nonce": oldest[0]["nonce"], "queued_at": oldest[0]["created_at"], "age_seconds": round(now - oldest[0]["created_at"], 1)}
                if oldest else None
            ),
            "last_sync": self.get("last_sync"),
            "view_block": self.get("view_block"),
            "next_nonce": self.get("next_nonce"),
            "link": self.get("link", "unknown"),
            "recent_failures": [
                {"id": row["id"], "kind": row["kind"], "nonce": row["nonce"], "reason": json.loads(row["reason"]) if row["reason"] else None, "at": row["updated_at"]}
                for row in failed
            ],
        }  # fmt: skip


def request_view(row: sqlite3.Row) -> dict[str, Any]:
    """A queued request as GET /edge/requests/{id} shows it."""
    return {
        "id": row["id"],
        "kind": row["kind"],
        "status": row["status"],
        "part_ids": json.loads(row["parts"]),
        "payload": json.loads(row["payload"]),
        "nonce": row["nonce"],
        "deadline": row["deadline"],
        "relay_id": row["relay_id"],
        "tx_hash": row["tx_hash"],
        "block": row["block"],
        "reason": json.loads(row["reason"]) if row["reason"] else None,
        "queued_at": row["created_at"],
        "updated_at": row["updated_at"],
    }
