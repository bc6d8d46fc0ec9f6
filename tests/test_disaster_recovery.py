"""Disaster recovery, with the real command line in subprocesses.

The SQL mirror lost: after a random workload that the indexer followed (`partledger index --once` between rounds),
the database file is deleted (SQLite) or its schema dropped (PostgreSQL), and `partledger index --rebuild --once`
restores it from the chain alone, every indexer table equal row by row to a snapshot taken before the loss.

The service's private tables lost: after a workload through the API (registrations, hand-overs, installations with
clear VINs, trade-document proposals, consumer scans, auditor reads), `partledger backup` writes them to one file and
`partledger restore` brings them into a fresh database of the other kind; every private table equals the original,
and a service started on the restored database answers as the first one did (commands, proposals, scans, the
workshop's clear VIN, an idempotent replay). Restoring into a non-empty database needs --force; a truncated or
corrupted file is refused with one line and exit code 1, before anything is written.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from indexer.tables import INDEX_METADATA
from ledger_service.audit_tables import AuditBatch
from ledger_service.auth import create_api_key
from ledger_service.migrate import SCRIPTS as SERVICE_SCRIPTS
from ledger_service.migrate import upgrade as migrate_service
from ledger_service.tables import SERVICE_METADATA, PrivateVin
from ledger_service.vault import Vault
from partledger.db import make_engine
from partledger.documents import new_salt, salted_document_hash
from partledger.ids import part_id
from partledger.manifest import Manifest, save_manifest
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.forkserver import ForkServer
from tests.labelkit import BEIJING, GUANGZHOU, label_uri, target
from tests.servicekit import Stack, prepare_stack, running_service, wait_command
from tests.test_indexer_equality import assert_same_rows, db_rows
from tests.workload import Workload, start_chain

SERVICE_HEAD = ScriptDirectory(str(SERVICE_SCRIPTS)).get_current_head()  # the revision a backup names

pytestmark = [pytest.mark.chain, pytest.mark.heavy]

ROUNDS = 4  # workload rounds, the indexer catching up after each
OPERATIONS_PER_ROUND = 600
VINS = ("WVWZZZ1JZXW000001", "1HGCM82633A004352")
OTHER_VIN = "VF1RFB00X57000001"


@pytest.fixture
def partledger(forkserver: ForkServer, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The `partledger` command as a user runs it, each call a process of its own (forked from the worker's fork
    server, so that a dozen calls do not pay a dozen interpreter start-ups)."""

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return forkserver.run(list(arguments), env=dict(os.environ), workdir=tmp_path / "cli")

    return run


def succeeded(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    return run.stdout


def refused(run: subprocess.CompletedProcess[str], words: str) -> None:
    """Exit code 1 and one line on stderr, saying `words`; no traceback."""
    assert run.returncode == 1, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("partledger: error: ") and words in lines[0], run.stderr


# --- the mirror, rebuilt from the chain ---------------------------------------------------------------------------


WALL_CLOCK = "updated_at"  # indexer_state: when the cursor was last written, the one column a rebuild cannot repeat


def mirror_snapshot(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every table of the indexer, surrogate ids aside (the helper of the indexer's equality test)."""
    tables = {name: db_rows(engine, name) for name in INDEX_METADATA.tables}
    tables["indexer_state"] = [{k: v for k, v in row.items() if k != WALL_CLOCK} for row in tables["indexer_state"]]
    return tables


def lose_database(url: str, engine: Engine) -> None:
    """The disaster: the SQLite file (and its WAL) deleted, or the PostgreSQL schema dropped."""
    engine.dispose()
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for lost in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            lost.unlink(missing_ok=True)
    else:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()


def test_mirror_deleted_is_rebuilt_from_the_chain_equal_to_the_original(partledger: Callable[..., subprocess.CompletedProcess[str]], db_url: str, tmp_path: Path) -> None:
    with start_chain() as (node, ledger):
        manifest = tmp_path / "manifest.json"
        save_manifest(Manifest(**{**ledger.manifest.__dict__, "rpc_url": node.url}), manifest)
        workload = Workload(ledger, seed=8005)
        for _ in range(ROUNDS):
            workload.run(OPERATIONS_PER_ROUND)
            succeeded(partledger("index", "--manifest", str(manifest), "--db", db_url, "--once"))
        head = ledger.w3.eth.block_number
        engine = make_engine(db_url)
        before = mirror_snapshot(engine)
        assert before["indexer_state"][0]["block_number"] == head
        assert len(before["part_events"]) >= OPERATIONS_PER_ROUND and before["documents"] and before["site_keys"]

        lose_database(db_url, engine)
        out = succeeded(partledger("index", "--manifest", str(manifest), "--db", db_url, "--rebuild", "--once"))

        assert f"up to block {head}" in out
        after = mirror_snapshot(make_engine(db_url))
        for name in INDEX_METADATA.tables:
            assert_same_rows(name, after[name], before[name])


# --- the service's private tables, backed up and restored ---------------------------------------------------------


AUDIT_BATCHES = AuditBatch.__table__


def service_rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every private table of the service, every column (ids included: other rows and answers refer to them)."""
    tables = {}
    with engine.connect() as conn:
        for name, table in SERVICE_METADATA.tables.items():
            tables[name] = [{k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()} for row in conn.execute(select(table)).mappings()]
    return tables


def ids(serials: list[str], gtin: str = GTIN_A) -> list[str]:
    return ["0x" + part_id(gtin, serial).hex() for serial in serials]


def command(stack: Stack, org: str, path: str, body: dict[str, Any], *, key: str | None = None) -> str:
    """POSTs with an Idempotency-Key and waits until the command is confirmed (and indexed)."""
    assert stack.client is not None
    answer = stack.client.post(path, headers=stack.headers(org, **{"Idempotency-Key": key or str(uuid.uuid4())}), json=body)
    assert answer.status_code == 202, answer.text
    view = wait_command(stack, org, answer.json()["command_id"])
    assert view["status"] == "confirmed", view
    return answer.json()["command_id"]


@pytest.fixture
def written(ledger: Ledger, postgres, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, Any]:
    """A service database of the kind asked (sqlite | postgresql) after a workload through the API; returns the
    stack, what it was asked, and the answers it gave."""
    from tests.pgcluster import unique_name

    kind = request.param
    service_db = f"sqlite:///{tmp_path / 'service.db'}" if kind == "sqlite" else postgres.create_database(unique_name("svc"))
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", service_db)
    maker, workshop, distributor = ledger.orgs["maker"], ledger.orgs["workshop"], ledger.orgs["distributor"]
    serials = [f"DR{n:03d}" for n in range(6)]
    commands: list[tuple[str, str]] = []
    with running_service(stack) as client:
        replay_key = str(uuid.uuid4())
        commands.append(("maker", command(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-DR", "serials": serials}, key=replay_key)))
        commands.append(("maker", command(stack, "maker", "/v1/parts/register", {"gtin": GTIN_B, "lot": "L-DR", "serials": ["DRB1"]})))
        commands.append(("maker", command(stack, "maker", "/v1/parts/ship", {"part_ids": ids(serials), "to_org": workshop.id})))
        commands.append(("workshop", command(stack, "workshop", "/v1/parts/receive", {"part_ids": ids(serials)})))
        items = [{"part_id": pid, "vin": vin} for pid, vin in zip(ids(serials[:2]), VINS)]
        commands.append(("workshop", command(stack, "workshop", "/v1/parts/install", {"items": items})))
        commands.append(("maker", command(stack, "maker", "/v1/batches", {"root": "0x" + "ab" * 32, "record_count": 12, "kind": "qc"})))

        proposals = []
        for counterparty, countersign in ((distributor, True), (workshop, False)):
            doc_hash = "0x" + salted_document_hash(f"%PDF-1.7 invoice {counterparty.id}".encode(), new_salt()).hex()
            answer = client.post("/v1/documents/proposals", headers=stack.headers("maker"), json={"doc_hash": doc_hash, "doc_type": "invoice", "counterparty": counterparty.id})
            assert answer.status_code == 201, answer.text
            proposals.append(answer.json()["proposal_id"])
            if countersign:
                answer = client.post(f"/v1/documents/proposals/{proposals[-1]}/countersign", headers=stack.headers("distributor"), json={})
                assert answer.status_code == 202, answer.text
                assert wait_command(stack, "distributor", answer.json()["command_id"])["status"] == "confirmed"
                commands.append(("distributor", answer.json()["command_id"]))

        fitted = label_uri(ledger, gtin=GTIN_A, serial=serials[0], key=maker.key)
        scans = []
        for body in ({"uri": fitted, "vin": VINS[0]}, {"uri": fitted, "vin": OTHER_VIN},
                     {"uri": label_uri(ledger, gtin=GTIN_B, serial="DRB1", key=maker.key), "lat": BEIJING[0], "lon": BEIJING[1], "context": "purchase"},
                     {"uri": label_uri(ledger, gtin=GTIN_B, serial="DRB1", key=maker.key), "lat": GUANGZHOU[0], "lon": GUANGZHOU[1], "context": "purchase"}):  # fmt: skip
            answer = client.post("/v1/scan", json=body)
            assert answer.status_code == 200, answer.text
            scans.append(answer.json()["scan_id"])
            if "vin" in body:
                assert answer.json()["vin_match"] is (body["vin"] == VINS[0]), answer.text
        assert client.get(target(fitted), headers={"Accept": "application/json"}).status_code == 200
        assert client.get("/v1/parts", headers=stack.headers("auditor"), params={"gtin": GTIN_A}).status_code == 200
        # The auditor's read of /v1/parts is the one entry waiting: it becomes batch 1, handed to the outbox.
        assert_anchored(stack, client.post("/v1/audit/anchor", headers=stack.headers("auditor")), batch_id=1, entries=1)

        answers = read_answers(stack, commands, proposals, scans)
    return {"stack": stack, "commands": commands, "proposals": proposals, "scans": scans, "answers": answers, "fitted": fitted, "replay_key": replay_key, "serials": serials}  # fmt: skip


def assert_anchored(stack: Stack, answer: Any, *, batch_id: int, entries: int) -> None:
    """POST /v1/audit/anchor answered 200 (a plain route: it never answers 202) with exactly one batch handed to the
    outbox, `batch_id` of `entries` entries, as the service database holds it (root and outbox command)."""
    assert answer.status_code == 200, answer.text
    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        row = conn.execute(select(AUDIT_BATCHES).where(AUDIT_BATCHES.c.id == batch_id)).mappings().one()
    engine.dispose()
    assert row["command_id"] is not None and row["entry_count"] == entries
    assert answer.json() == {"submitted": [{"batch_id": batch_id, "root": "0x" + bytes(row["root"]).hex(), "entries": entries, "command_id": row["command_id"]}]}


def read_answers(stack: Stack, commands: list[tuple[str, str]], proposals: list[str], scans: list[str]) -> dict[str, Any]:
    """What the service answers about what it was asked: commands, proposals, scan records and clone flags."""
    client = stack.client
    assert client is not None
    answers: dict[str, Any] = {}
    for org, command_id in commands:
        answers[f"command:{command_id}"] = client.get(f"/v1/commands/{command_id}", headers=stack.headers(org)).json()
    for proposal_id in proposals:
        answers[f"proposal:{proposal_id}"] = client.get(f"/v1/documents/proposals/{proposal_id}", headers=stack.headers("maker")).json()
    for scan_id in scans:
        answers[f"record:{scan_id}"] = client.get(f"/v1/scans/{scan_id}", headers=stack.headers("maker")).json()
    answers["flags"] = client.get("/v1/scan-flags", headers=stack.headers("maker")).json()
    return answers


@pytest.mark.parametrize(("written", "restore_kind"), [("sqlite", "postgresql"), ("postgresql", "sqlite")], indirect=["written"])
def test_private_tables_backed_up_and_restored_into_the_other_kind_of_database(partledger: Callable[..., subprocess.CompletedProcess[str]], written: dict[str, Any], restore_kind: str, postgres, tmp_path: Path) -> None:  # fmt: skip
    from tests.pgcluster import unique_name

    stack: Stack = written["stack"]
    backup = tmp_path / "service-backup.jsonl.gz"
    out = succeeded(partledger("backup", "--db", stack.service_db_url, "--out", str(backup)))
    assert "backed up" in out and f"revision {SERVICE_HEAD}" in out

    header = json.loads(gzip.open(backup).readline())
    assert header["alembic_revision"] == SERVICE_HEAD and {t["name"] for t in header["tables"]} == set(SERVICE_METADATA.tables)
    original = service_rows(make_engine(stack.service_db_url))
    assert {t["name"]: t["rows"] for t in header["tables"]} == {name: len(rows) for name, rows in original.items()}
    for name in ("api_keys", "idempotency_records", "commands", "command_items", "chain_transactions", "private_vins",
                 "document_proposals", "scans", "scan_flags", "audit_log", "audit_batches"):  # fmt: skip
        assert original[name], f"the workload wrote nothing to {name}"

    restored_url = f"sqlite:///{tmp_path / 'restored.db'}" if restore_kind == "sqlite" else postgres.create_database(unique_name("restored"))
    out = succeeded(partledger("restore", "--db", restored_url, "--from", str(backup)))
    assert "restored" in out

    restored = service_rows(make_engine(restored_url))
    for name in SERVICE_METADATA.tables:
        assert_same_rows(name, restored[name], original[name])

    # The workshop's clear VINs come back with the VIN key kept outside the database.
    vault = Vault.from_key_file(stack.workdir / "vin.key")
    with make_engine(restored_url).connect() as conn:
        sealed = conn.execute(select(PrivateVin.__table__)).mappings().all()
    assert sorted(vault.open(bytes(row["ciphertext"]), bytes(row["vin_hash"]))[:17].decode() for row in sealed) == sorted(VINS)

    # A service on the restored database answers as the original did, and takes new work.
    stack.service_db_url = restored_url
    with running_service(stack) as client:
        assert read_answers(stack, written["commands"], written["proposals"], written["scans"]) == written["answers"]
        for vin, match in ((VINS[0], True), (OTHER_VIN, False)):
            answer = client.post("/v1/scan", json={"uri": written["fitted"], "vin": vin})
            assert answer.status_code == 200 and answer.json()["vin_match"] is match, answer.text
        body = {"gtin": GTIN_A, "lot": "L-DR", "serials": written["serials"]}
        replay = client.post("/v1/parts/register", headers=stack.headers("maker", **{"Idempotency-Key": written["replay_key"]}), json=body)
        assert replay.status_code == 202 and replay.json()["command_id"] == written["commands"][0][1] and replay.json()["idempotent_replay"]
        fresh = command(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-DR", "serials": ["DR-AFTER"]})
        assert fresh not in {command_id for _, command_id in written["commands"]}
        # New ids are free: the one entry waiting (the first service's own POST /v1/audit/anchor) closes batch 2.
        assert_anchored(stack, client.post("/v1/audit/anchor", headers=stack.headers("auditor")), batch_id=2, entries=1)


# --- refusals -----------------------------------------------------------------------------------------------------


@pytest.fixture
def small_backup(partledger: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path) -> Path:
    """A backup of a migrated service database holding a few API keys."""
    engine = make_engine(f"sqlite:///{tmp_path / 'small.db'}")
    migrate_service(engine)
    for org_id in range(1, 30):
        create_api_key(engine, org_id=org_id, label=f"key of organisation {org_id}")
    backup = tmp_path / "small.jsonl.gz"
    succeeded(partledger("backup", "--db", f"sqlite:///{tmp_path / 'small.db'}", "--out", str(backup)))
    return backup


def test_restore_into_a_non_empty_database_needs_force(partledger: Callable[..., subprocess.CompletedProcess[str]], small_backup: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'target.db'}"
    succeeded(partledger("restore", "--db", url, "--from", str(small_backup)))
    before = service_rows(make_engine(url))
    refused(partledger("restore", "--db", url, "--from", str(small_backup)), "is not empty")
    assert service_rows(make_engine(url)) == before
    succeeded(partledger("restore", "--db", url, "--from", str(small_backup), "--force"))
    assert service_rows(make_engine(url)) == before


@pytest.mark.parametrize("damage", ["truncated", "gzip_corrupted", "row_altered", "row_dropped", "not_a_backup"])
def test_a_damaged_backup_is_refused_with_one_line_and_nothing_written(partledger: Callable[..., subprocess.CompletedProcess[str]], small_backup: Path, tmp_path: Path, damage: str) -> None:
    packed = small_backup.read_bytes()
    lines = gzip.decompress(packed).splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl.gz"
    if damage == "truncated":
        damaged.write_bytes(packed[: len(packed) * 2 // 3])
        words = "truncated or corrupted"
    elif damage == "gzip_corrupted":
        middle = len(packed) // 2
        damaged.write_bytes(packed[:middle] + bytes([packed[middle] ^ 0xFF]) + packed[middle + 1 :])
        words = "corrupted"
    elif damage == "row_altered":
        lines[5] = lines[5].replace(b"key of organisation", b"key of organisatioN")
        damaged.write_bytes(gzip.compress(b"".join(lines)))
        words = "SHA-256 does not match"
    elif damage == "row_dropped":
        damaged.write_bytes(gzip.compress(b"".join(lines[:-1])))
        words = "corrupted"
    else:
        damaged.write_bytes(gzip.compress(b'{"hello": "world"}\n'))
        words = "not a PartLedger service backup"
    url = f"sqlite:///{tmp_path / 'target.db'}"
    refused(partledger("restore", "--db", url, "--from", str(damaged)), words)
    assert not (tmp_path / "target.db").exists()  # the file is checked whole before the database is even opened
