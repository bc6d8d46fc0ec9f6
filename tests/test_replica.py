"""The verify tier on a PostgreSQL streaming replica of the mirror (issue 18, acceptance "Replica").

A real second cluster: a primary of its own (initdb's defaults: wal_level=replica, and pg_hba trusting replication
from 127.0.0.1), copied with `pg_basebackup -R` into a second data directory and started as a hot standby on another
port. The service runs against the primary (the indexer writes it) with PARTLEDGER_INDEX_REPLICA_URL naming the
standby. Checked: verifications read the standby (its pg_stat_activity shows the service's connection and the part
read); a lagging standby (replay paused) is left for the primary once beyond the bound, so that a recall it has not
replayed is still the verdict; a stopped one shows in /v1/health and the verdicts come from the primary; started
again, it is read again; a read that fails on it (its connections killed) runs on the primary, with the circuit
open.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ledger_service.public_app import create_public_app
from ledger_service.replica import APPLICATION_NAME, read_replica
from ledger_service.settings import ServiceSettings
from partledger.db import make_engine
from partledger.errors import ConfigError
from partledger.ids import part_id
from tests.chainkit import GTIN_A, Ledger
from tests.labelkit import JSON, label_uri, register, target
from tests.pgcluster import PostgresCluster, pg_bin, unique_name
from tests.ports import free_port
from tests.servicekit import Stack, prepare_stack, running_service, wait_until

MAX_LAG = 6.0  # seconds: a healthy standby here is 0.01 to 0.3 s behind; room for a monitor thread starved on a loaded machine
CHECK_INTERVAL = 0.1
METRICS_TOKEN = "replica-test-metrics-token"


class Standby(PostgresCluster):
    """A hot standby of `primary`: its base backup with the standby configuration written (-R), on a port of its own."""

    def __init__(self, primary: PostgresCluster) -> None:  # not super().__init__(), which would initdb a new cluster
        self.options = primary.options
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="partledger-pg-standby-"))
        self.data = self.root / "data"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self._run(
            pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-D", str(self.data),
            "-R", "--wal-method=stream", "--checkpoint=fast", "--no-sync",
        )  # fmt: skip
        self.start()


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PostgresCluster, Standby]]:
    primary = PostgresCluster()
    standby = None
    try:
        standby = Standby(primary)
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def sql(cluster: PostgresCluster, database: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname={database}", autocommit=True, connect_timeout=5) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def verdict(client: TestClient, uri: str) -> str:
    answer = client.get(target(uri), headers=JSON)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["verdict"])


def replica_health(stack: Stack) -> dict[str, Any]:
    assert stack.client is not None
    health = stack.client.get("/v1/health").json()
    return {**health["replica"], "status": health["status"]}


def fallbacks(stack: Stack) -> dict[str, float]:
    """partledger_index_replica_fallbacks_total by reason, from GET /metrics."""
    assert stack.client is not None
    text = stack.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text) if family.name == "partledger_index_replica_fallbacks"
        for sample in family.samples if sample.name.endswith("_total")
    }  # fmt: skip


def replica_part(standby: Standby, database: str, pid: bytes) -> tuple[Any, ...] | None:
    """(status, recalled) of a part as the standby shows it."""
    rows = sql(standby, database, "SELECT status, recalled FROM parts WHERE part_id = %s", pid)
    return tuple(rows[0]) if rows else None


def read_on_standby(client: TestClient, standby: Standby, database: str, path: str) -> Any:
    """GET `path` (JSON), checking that the verify tier read it on the standby: one of its connections there (its
    application_name, the mirror's database) was active after the request started. pg_stat_activity's `query` cannot
    tell: a pooled connection's last statement is the ROLLBACK that returned it to the pool."""
    (started,) = sql(standby, "postgres", "SELECT clock_timestamp()")[0]
    answer = client.get(path, headers=JSON)
    assert answer.status_code == 200, answer.text
    active = sql(
        standby, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = %s AND state_change >= %s",
        APPLICATION_NAME, database, started,
    )[0][0]  # fmt: skip
    assert active >= 1, f"no connection of the verify tier on the standby was active while it answered {path}"
    return answer.json()


def verified_on(client: TestClient, standby: Standby, database: str, uri: str) -> str:
    """The verdict on `uri`, read on the standby."""
    return str(read_on_standby(client, standby, database, target(uri))["verdict"])


def test_verify_reads_the_replica_and_falls_back_to_the_primary_never_giving_a_stale_verdict(
    ledger: Ledger, clusters: tuple[PostgresCluster, Standby], tmp_path: Path,
) -> None:  # fmt: skip
    primary, standby = clusters
    index_db = unique_name("mirror")
    stack = prepare_stack(ledger, tmp_path, primary.create_database(index_db), primary.create_database(unique_name("svc")))
    maker = ledger.orgs["maker"]
    ledger.register(maker, ["R1"], lot="REPL-1")
    ledger.register(maker, ["S1"], lot="REPL-2")
    first = label_uri(ledger, gtin=GTIN_A, serial="R1", key=maker.key)
    second = label_uri(ledger, gtin=GTIN_A, serial="S1", key=maker.key)
    settings = {"index_replica_url": standby.url(index_db), "index_replica_max_lag": MAX_LAG, "index_replica_check_interval": CHECK_INTERVAL,
                "metrics_token": METRICS_TOKEN}  # fmt: skip
    with running_service(stack, **settings) as client:
        client.indexer.wait_for(ledger.w3.eth.block_number)  # type: ignore[attr-defined]

        # The mirror's writes reach the standby; the verify tier reads it.
        wait_until(lambda: replica_part(standby, index_db, part_id(GTIN_A, "S1")), "the standby to replay the registrations")
        health = wait_until(lambda: (h := replica_health(stack))["serving"] and h, "the replica to be checked and serving")
        assert health["configured"] and health["reachable"] and health["lag_seconds"] is not None and health["lag_seconds"] <= MAX_LAG, health
        assert health["status"] == "ok" and health["max_lag_seconds"] == MAX_LAG and health["message"] == "", health
        before = fallbacks(stack)
        assert verified_on(client, standby, index_db, first) == "genuine"
        assert fallbacks(stack) == before, "the verification went to the primary"

        # Replay paused: the standby falls behind a recall. Beyond the bound, the verdict is the primary's.
        sql(standby, "postgres", "SELECT pg_wal_replay_pause()")
        ledger.act(maker.key, ledger.parts.functions.recallLot(ledger.lot_number(maker, "REPL-1"), keccak(text="replica-notice")))
        client.indexer.wait_for(ledger.w3.eth.block_number)  # type: ignore[attr-defined]
        lagging = wait_until(lambda: not (h := replica_health(stack))["serving"] and h, "the paused standby's lag to pass the bound", timeout=60)
        assert lagging["reachable"] and "behind the primary" in lagging["message"] and lagging["status"] == "degraded", lagging
        assert replica_part(standby, index_db, part_id(GTIN_A, "R1"))[1] is False  # type: ignore[index]  # it has not seen the recall
        assert verdict(client, first) == "recalled"
        sql(standby, "postgres", "SELECT pg_wal_replay_resume()")
        wait_until(lambda: replica_health(stack)["serving"], "the standby to catch up")
        assert replica_part(standby, index_db, part_id(GTIN_A, "R1"))[1] is True  # type: ignore[index]
        assert verified_on(client, standby, index_db, first) == "recalled"

        # Stopped: health says so, and the verdicts come from the primary, the recall made meanwhile included.
        standby.stop("fast")
        assert verdict(client, second) == "genuine"
        ledger.act(maker.key, ledger.parts.functions.recallLot(ledger.lot_number(maker, "REPL-2"), keccak(text="replica-notice-2")))
        client.indexer.wait_for(ledger.w3.eth.block_number)  # type: ignore[attr-defined]
        assert verdict(client, second) == "recalled"
        down = wait_until(lambda: (h := replica_health(stack))["reachable"] is False and h, "health to report the standby down")
        assert not down["serving"] and down["message"].startswith("unreachable") and down["status"] == "degraded", down

        # Started again: reachable, its lag reported, read again (a connection of its own: the old ones died with it).
        standby.start()
        back = wait_until(lambda: (h := replica_health(stack))["serving"] and h, "the restarted standby to serve", timeout=60)
        assert back["reachable"] and back["lag_seconds"] is not None and back["status"] == "ok", back
        assert replica_part(standby, index_db, part_id(GTIN_A, "S1"))[1] is True  # type: ignore[index]
        assert verified_on(client, standby, index_db, second) == "recalled"

        # Its connections killed under the service: the read fails there, runs on the primary, and opens the circuit.
        failed = fallbacks(stack).get("failed", 0.0)
        sql(standby, "postgres", "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = %s", APPLICATION_NAME)
        assert verdict(client, second) == "recalled"
        assert fallbacks(stack).get("failed", 0.0) == failed + 1
        tripped = replica_health(stack)
        assert tripped["reachable"] and not tripped["serving"] and "after a read failed on the replica" in tripped["message"], tripped

    # The public verification tier alone (create_public_app) reads the replica the same way.
    with TestClient(create_public_app(stack.settings(**settings))) as public:
        replica = public.app.state.services.replica  # type: ignore[attr-defined]
        wait_until(lambda: replica.health()["serving"], "the public tier's replica to be checked")
        assert verified_on(public, standby, index_db, second) == "recalled"
        lot = read_on_standby(public, standby, index_db, f"/01/{GTIN_A}/10/REPL-2")  # a lot's page reads the replica too
        assert lot["recall"] is not None, lot


def test_a_replica_is_refused_unless_the_mirror_and_the_replica_are_on_postgresql(tmp_path: Path) -> None:
    settings = ServiceSettings(manifest=tmp_path / "manifest.json", index_db_url=f"sqlite:///{tmp_path / 'index.db'}",
                               service_db_url=f"sqlite:///{tmp_path / 'service.db'}", index_replica_url="postgresql+psycopg://postgres@127.0.0.1:1/mirror")  # fmt: skip
    with pytest.raises(ConfigError, match="PARTLEDGER_INDEX_REPLICA_URL"):
        read_replica(settings, make_engine(settings.index_db_url))
    on_postgres = settings.model_copy(update={"index_db_url": "postgresql+psycopg://postgres@127.0.0.1:1/mirror", "index_replica_url": f"sqlite:///{tmp_path / 'r.db'}"})
    with pytest.raises(ConfigError, match="PARTLEDGER_INDEX_REPLICA_URL"):
        read_replica(on_postgres, make_engine(on_postgres.index_db_url))
    assert read_replica(settings.model_copy(update={"index_replica_url": None}), make_engine(settings.index_db_url)) is None
