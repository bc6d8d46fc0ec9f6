"""Operations (issue 18, Build 4): Prometheus metrics at /metrics, and JSON logs whose request id follows a command.

The acceptance line "Metrics": after a scripted run of known size through the real service on Anvil (writes on
several routes, some refused with 4xx, scans with their verdicts and clone flags, an auditor's reads and the audit
log anchored), the scrape's histogram counts equal the requests sent, per route template and status, exactly; the
commands counted at each stage (submitted, confirmed, mirrored) equal the commands confirmed; the outbox, the
submitter, the indexer (a reorganisation included) and the audit log's anchoring report what SQL and the chain say.
Once in-process (TestClient: the scrape's counts before and after), once as a real `partledger serve --workers 2`
whose two worker processes add their counts up through PROMETHEUS_MULTIPROC_DIR (absolute counts), and whose JSON
log lines follow one command from its HTTP request (X-Request-ID) to its transaction hash and block.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Engine

from indexer import migrate as index_migrate
from indexer.tables import INDEX_METADATA
from ledger_service import migrate as service_migrate
from ledger_service.app import create_app
from ledger_service.public_app import create_public_app
from ledger_service.routes.resolver import desk_of
from ledger_service.metrics import RESOLVER_OTHER, UNMATCHED, resolver_template
from ledger_service.scan_tables import Scan
from ledger_service.tables import SERVICE_METADATA, Command
from partledger.artifacts import REPO_ROOT
from partledger.db import make_engine
from partledger.ids import part_id
from partledger.jsonlog import JsonFormatter
from tests.chainkit import GTIN_A, Ledger, revert_to, snapshot
from tests.ports import free_port
from tests.servicekit import IndexerThread, Stack, prepare_stack, running_service, wait_until

pytestmark = [pytest.mark.chain, pytest.mark.heavy]  # two worker processes start from cold: 40-70 s on a loaded 2-core machine
T_CMD = Command.__table__
METRICS_TOKEN = "metrics-token-for-the-test-7f3a"
REGISTER, SHIP, RECEIVE = "/v1/parts/register", "/v1/parts/ship", "/v1/parts/receive"
COMMAND, PART, SCAN = "/v1/commands/{command_id}", "/v1/parts/{part_id}", "/01/{gtin}/21/{serial}"


@pytest.fixture(scope="module")
def stack(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A service-held site key per organisation and migrated SQLite databases, on the session's chain rolled back
    afterwards."""
    snapshot_id = snapshot(deployed.w3)
    workdir = tmp_path_factory.mktemp("metrics")
    try:
        yield prepare_stack(deployed, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
    finally:
        revert_to(deployed.w3, snapshot_id)


# --- a client that counts what it sent ----------------------------------------------------------------------------


class Counted:
    """Sends requests and counts each answer by (method, route template, status): what the scrape must show."""

    def __init__(self, send: Any, stack: Stack) -> None:
        self.send = send  # (method, url, **kwargs) -> a response with .status_code, .json(), .headers
        self.stack = stack
        self.sent: Counter[tuple[str, str, str]] = Counter()
        self.lock = threading.Lock()

    def __call__(self, method: str, url: str, route: str, *, org: str | None = None, **kwargs: Any) -> Any:
        headers = {**(self.stack.headers(org) if org else {}), **kwargs.pop("headers", {})}
        reply = self.send(method, url, headers=headers, **kwargs)
        with self.lock:
            self.sent[(method, route, str(reply.status_code))] += 1
        return reply

    def accepted(self, org: str, path: str, body: dict[str, Any], **headers: str) -> dict[str, Any]:
        reply = self("POST", path, path, org=org, json=body, headers=headers)
        assert reply.status_code == 202, reply.text
        return reply.json()

    def refused(self, org: str | None, path: str, body: Any, status: int, code: str) -> None:
        reply = self("POST", path, path, org=org, json=body)
        assert reply.status_code == status and reply.json()["error"]["code"] == code, reply.text

    def settled(self, org: str, command_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """Polls the command (each poll counted) until it is final; returns its view."""
        deadline = time.monotonic() + timeout
        while True:
            view = self("GET", f"/v1/commands/{command_id}", COMMAND, org=org).json()
            if view["status"] in ("confirmed", "rejected"):
                return view
            assert time.monotonic() < deadline, f"command {command_id} still {view['status']}"
            time.sleep(0.02)


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


def http_counts(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> Counter[tuple[str, str, str]]:
    found: Counter[tuple[str, str, str]] = Counter()
    for (name, labels), value in samples.items():
        if name == "partledger_http_request_duration_seconds_count" and value:
            tags = dict(labels)
            found[(tags["method"], tags["route"], tags["status"])] = int(value)
    return found


def by_label(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **fixed: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` whose labels include `fixed`, keyed by their other labels' values (sorted by name)."""
    found = {}
    for (sample, labels), value in samples.items():
        tags = dict(labels)
        if sample == name and all(tags.get(key) == wanted for key, wanted in fixed.items()):
            found[tuple(value for key, value in sorted(tags.items()) if key not in fixed)] = value
    return found


def delta(after: dict[Any, float], before: dict[Any, float]) -> dict[Any, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value - before.get(key, 0.0)}


@functools.cache
def engine_of(url: str) -> Engine:
    return make_engine(url)


def sql_value(url: str, statement: Any) -> Any:
    with engine_of(url).connect() as conn:
        return conn.execute(statement).scalar()


def commands_since(stack: Stack, started: float) -> list[Any]:
    with engine_of(stack.service_db_url).connect() as conn:
        return conn.execute(select(T_CMD).where(T_CMD.c.created_at >= started)).mappings().all()


# --- the scripted run ---------------------------------------------------------------------------------------------


def scripted_run(http: Counted, stack: Stack, *, prefix: str, indexer: IndexerThread) -> dict[str, Any]:
    """Registrations, shipments and receipts (202) with refusals (400, 401, 409, 422) between them, scans of known
    verdicts and flags. Returns what it expects the scan counters to show."""
    ledger = stack.ledger
    serials = [[f"{prefix}{batch}{n}" for n in range(3)] for batch in range(4)]
    registered = [http.accepted("maker", REGISTER, {"gtin": GTIN_A, "lot": f"L-{prefix}", "serials": batch}) for batch in serials]
    http.refused("maker", REGISTER, {"gtin": "04012345000017", "lot": "L-X", "serials": ["BADGTIN"]}, 400, "invalid_gtin")
    http.refused("maker", REGISTER, {"gtin": GTIN_A, "lot": "L-X"}, 422, "invalid_request")
    http.refused(None, REGISTER, {"gtin": GTIN_A, "lot": "L-X", "serials": ["NOKEY"]}, 401, "unauthorized")
    views = [http.settled("maker", answer["command_id"]) for answer in registered]
    assert {view["status"] for view in views} == {"confirmed"}, views
    wait_indexed(indexer, max(view["block"] for view in views))
    http.refused("maker", REGISTER, {"gtin": GTIN_A, "lot": f"L-{prefix}", "serials": serials[0]}, 409, "already_registered")
    pids = [["0x" + part_id(GTIN_A, serial).hex() for serial in batch] for batch in serials]
    warehouse = ledger.orgs["warehouse"].id
    shipped = [http.accepted("maker", SHIP, {"part_ids": pids[batch], "to_org": warehouse}) for batch in (0, 1)]
    http.refused("warehouse", SHIP, {"part_ids": pids[2], "to_org": ledger.orgs["maker"].id}, 409, "invalid_state")
    views = [http.settled("maker", answer["command_id"]) for answer in shipped]
    wait_indexed(indexer, max(view["block"] for view in views))
    received = [http.accepted("warehouse", RECEIVE, {"part_ids": pids[batch]}) for batch in (0, 1)]
    views = [http.settled("warehouse", answer["command_id"]) for answer in received]
    wait_indexed(indexer, max(view["block"] for view in views))

    verdicts: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    for serial in (serials[3][0], serials[3][1], serials[0][0]):
        reply = http("GET", f"/01/{GTIN_A}/21/{serial}", SCAN, headers={"Accept": "application/json"})
        assert reply.status_code == 200, reply.text
        verdicts[reply.json()["verdict"]] += 1
    unknown = http("GET", f"/01/{GTIN_A}/21/{prefix}NOSUCH", SCAN, headers={"Accept": "application/json"})
    assert unknown.status_code == 404 and unknown.json()["verdict"] == "unknown", unknown.text
    verdicts["unknown"] += 1
    flags["unregistered_serial"] += 1  # flagged to the GTIN's manufacturer, not told to the scanner
    for lat, lon in ((31.2, 121.5), (39.9, -75.2)):  # Shanghai, then Philadelphia a moment later
        reply = http("GET", f"/01/{GTIN_A}/21/{serials[3][2]}?lat={lat}&lon={lon}", SCAN, headers={"Accept": "application/json"})
        verdicts[reply.json()["verdict"]] += 1
        flags.update(reply.json()["flags"])
        # Another worker process sees the scan once it is written (each process queues its scans for FLUSH_SECONDS).
        located = select(func.count()).select_from(Scan.__table__).where(Scan.__table__.c.serial == serials[3][2], Scan.__table__.c.lat.is_not(None))
        wait_until(lambda: sql_value(stack.service_db_url, located) >= 1, "the located scan written")
    assert flags["impossible_travel"] == 1, flags
    return {"verdicts": verdicts, "flags": flags, "scans": sum(verdicts.values())}


def wait_indexed(indexer: IndexerThread, block: int) -> None:
    """Until the mirror holds `block`: the next command's pre-check reads it."""
    indexer.wait_for(block)


def wait_mirrored(stack: Stack, started: float) -> list[Any]:
    """Until every command since `started` is final and, when confirmed, marked as in the mirror; returns them."""

    def settled() -> list[Any] | None:
        rows = commands_since(stack, started)
        done = all(row["rejected_at"] is not None or row["mirrored_at"] is not None for row in rows)
        return rows if rows and done else None

    return wait_until(settled, "every command confirmed and in the mirror (or rejected)", timeout=60)


def check_commands(samples: dict[Any, float], rows: list[Any], accepted: Counter[str]) -> None:
    """The command counters against the commands in SQL: accepted per kind, and each stage counted once per command
    that reached it."""
    confirmed = Counter(row["kind"] for row in rows if row["confirmed_at"] is not None)
    assert Counter({kind: int(value) for (kind,), value in by_label(samples, "partledger_commands_accepted_total").items()}) == accepted
    assert sum(confirmed.values()) == len(rows) and not any(row["rejected_at"] for row in rows)
    for stage in ("submitted", "confirmed", "mirrored"):
        counted = Counter({kind: int(value) for (kind,), value in by_label(samples, "partledger_command_latency_seconds_count", stage=stage).items()})
        assert counted == confirmed, (stage, counted, confirmed)
    assert not by_label(samples, "partledger_command_latency_seconds_count", stage="rejected")


# --- the run in one process ------------------------------------------------------------------------------------------


def test_histogram_counts_equal_the_requests_sent_per_route_and_status_and_every_command_per_stage(stack: Stack):
    with running_service(stack, metrics_token=METRICS_TOKEN) as client:
        http = Counted(client.request, stack)
        bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}

        def scrape() -> dict[Any, float]:
            reply = http("GET", "/metrics", "/metrics", headers=bearer)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain"), reply.text
            return scraped(reply.text)

        client.indexer.wait_for(stack.ledger.w3.eth.block_number)  # type: ignore[attr-defined]
        started = time.time()
        before = scrape()
        expected = scripted_run(http, stack, prefix="IP", indexer=client.indexer)  # type: ignore[attr-defined]
        services = client.app.state.services  # type: ignore[attr-defined]
        assert desk_of(client.app).book.anchor(services.outbox, services.index_engine)  # now, not when the scan keeper's minute is up

        # an auditor's reads wait in the audit log until it is anchored on chain
        some_part = "0x" + part_id(GTIN_A, "IP00").hex()
        for _ in range(3):
            assert http("GET", f"/v1/parts/{some_part}", PART, org="auditor").status_code == 200
        waiting = scrape()
        assert waiting[("partledger_audit_log_unanchored_entries", frozenset())] == 3
        assert waiting[("partledger_audit_log_anchoring_lag_seconds", frozenset())] > 0
        anchored = http("POST", "/v1/audit/anchor", "/v1/audit/anchor", org="auditor")
        assert anchored.status_code == 200 and len(anchored.json()["submitted"]) == 1, anchored.text
        rows = wait_mirrored(stack, started)  # the anchoring command among them (followed in SQL: an auditor's reads would be logged)
        assert anchored.json()["submitted"][0]["command_id"] in {row["id"] for row in rows if row["kind"] == "anchor_batch"}
        # the mirror caught up with the chain's head: no lag left (the head moves on as commands land, so wait for it)
        wait_until(lambda: scrape()[("partledger_indexer_lag_blocks", frozenset())] == 0, "no indexer lag")
        after = scrape()
        sent = http.sent - Counter({("GET", "/metrics", "200"): 1})  # the last scrape counts itself only in the next one
        reorganise(stack.ledger.w3, client.indexer)  # type: ignore[attr-defined]
        reorgs = ("partledger_indexer_reorgs_total", frozenset())
        reorged = wait_until(lambda: (found := scrape())[reorgs] > after[reorgs] and found, "the reorganisation counted")

    assert http_counts(delta(after, before)) == sent, (http_counts(delta(after, before)), sent)
    assert len(sent) >= 10 and sum(sent.values()) >= 20  # several routes, refusals among them (polls of commands vary in number)
    assert {status for _, _, status in sent} >= {"200", "202", "400", "401", "404", "409", "422"}
    # two empty blocks indexed, then replaced by a block with a transaction: one reorganisation, two blocks taken away
    assert reorged[reorgs] == after[reorgs] + 1
    assert reorged[("partledger_indexer_reorged_blocks_total", frozenset())] == after[("partledger_indexer_reorged_blocks_total", frozenset())] + 2

    accepted = Counter(row["kind"] for row in rows)
    check_commands(delta(after, before), rows, accepted)

    scans = delta(after, before)
    assert Counter({verdict: int(value) for (source, verdict), value in by_label(scans, "partledger_scans_total").items() if source == "json"}) == expected["verdicts"]
    assert Counter({kind: int(value) for (kind,), value in by_label(scans, "partledger_clone_flags_total").items()}) == expected["flags"]

    assert after[("partledger_audit_log_unanchored_entries", frozenset())] == 1  # the anchoring request itself, logged as it left
    assert after[("partledger_indexer_healthy", frozenset())] == 1
    assert after[("partledger_indexer_block", frozenset())] == after[("partledger_chain_head_block", frozenset())]
    assert after[("partledger_indexer_lag_seconds", frozenset())] == 0
    assert sum(by_label(after, "partledger_outbox_items").values()) == 0 and after[("partledger_outbox_oldest_open_seconds", frozenset())] == 0
    assert not any(by_label(after, "partledger_submitter_in_flight_transactions").values())
    assert set(by_label(after, "partledger_outbox_items")) == {("pending",), ("signed",), ("sent",), ("mined",)}


def reorganise(w3: Any, indexer: IndexerThread) -> None:
    """Two empty blocks, indexed, then orphaned by a block holding a transaction (another hash) at the first one's height."""
    fork = w3.provider.make_request("evm_snapshot", [])["result"]
    for _ in range(2):
        w3.provider.make_request("evm_mine", [])
    indexer.wait_for(w3.eth.block_number)
    assert w3.provider.make_request("evm_revert", [fork])["result"] is True
    operator = w3.eth.accounts[0]
    sent = w3.provider.make_request("eth_sendTransaction", [{"from": operator, "to": operator, "value": "0x0", "gasPrice": "0x0"}])
    assert "result" in sent, sent


# --- the run in two worker processes -----------------------------------------------------------------------------


class Served:
    """`partledger serve --workers 2` as a real process, its JSON log lines in a file."""

    def __init__(self, stack: Stack, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        self.metrics_dir = workdir / "prometheus"
        self.metrics_dir.mkdir()
        (self.metrics_dir / "counter_99999999.db").write_bytes(b"a former process's file (no such pid): the service removes it")
        env = {**os.environ, **stack.env(), "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "partledger_cli", "serve", "--port", str(self.port), "--workers", "2"],
                cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_until(lambda: self.process.poll() is not None or len(self.lines(message="Application startup complete.")) >= 2, "both workers started", timeout=120)
        assert self.process.poll() is None, self.tail()

    def lines(self, **fields: Any) -> list[dict[str, Any]]:
        """The JSON log lines with these field values (every line that is JSON when none is given)."""
        found = []
        for text in self.log_path.read_text(errors="replace").splitlines():
            if text.startswith("{"):
                line = json.loads(text)
                if all(line.get(key) == value for key, value in fields.items()):
                    found.append(line)
        return found

    def tail(self) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def fresh_connection(method: str, url: str, **kwargs: Any) -> requests.Response:
    """One request on a connection of its own, so that the kernel spreads them over the workers."""
    with requests.Session() as session:
        return session.request(method, url, timeout=30, **kwargs)


def test_two_workers_add_their_counts_up_and_the_logs_follow_a_command_to_its_block(stack: Stack, tmp_path: Path):
    with IndexerThread(stack.ledger, stack.index_db_url) as indexer:
        indexer.wait_for(stack.ledger.w3.eth.block_number)
        served = Served(stack, tmp_path)
        try:
            assert not (served.metrics_dir / "counter_99999999.db").exists()
            http = Counted(lambda method, path, **kwargs: fresh_connection(method, served.url + path, **kwargs), stack)
            started = time.time()
            # a burst from several threads at once: both workers answer some
            burst = [threading.Thread(target=lambda: [http("GET", "/v1/health", "/v1/health") for _ in range(8)]) for _ in range(4)]
            for thread in burst:
                thread.start()
            for thread in burst:
                thread.join()
            expected = scripted_run(http, stack, prefix="MP", indexer=indexer)
            followed = http.accepted("maker", REGISTER, {"gtin": GTIN_A, "lot": "L-FOLLOW", "serials": ["FOLLOW1", "FOLLOW2"]}, **{"X-Request-ID": "follow-me-0001"})
            view = http.settled("maker", followed["command_id"])
            while len({line["pid"] for line in served.lines(event="http_request")}) < 2:  # until both workers answered one
                http("GET", "/v1/health", "/v1/health")
            rows = wait_mirrored(stack, started)
            samples = scraped(fresh_connection("GET", served.url + "/metrics").text)  # from this host: no token needed
        finally:
            served.stop()

    assert http_counts(samples) == http.sent, (http_counts(samples), http.sent)
    pids = {line["pid"] for line in served.lines(event="http_request")}
    assert len(pids) == 2, pids
    check_commands(samples, rows, Counter(row["kind"] for row in rows))
    assert Counter({verdict: int(value) for (source, verdict), value in by_label(samples, "partledger_scans_total").items() if source == "json"}) == expected["verdicts"]
    assert Counter({kind: int(value) for (kind,), value in by_label(samples, "partledger_clone_flags_total").items()}) == expected["flags"]

    # one command, from its HTTP request to its transaction and block, by its request id
    (request,) = served.lines(request_id="follow-me-0001", event="http_request")
    assert (request["route"], request["status"], request["method"]) == (REGISTER, 202, "POST")
    (tx,) = view["transactions"]
    sent = [line for line in served.lines(event="transaction_sent") if "follow-me-0001" in line["request_ids"]]
    confirmed = [line for line in served.lines(event="transaction_confirmed") if "follow-me-0001" in line["request_ids"]]
    assert [line["tx_hash"] for line in sent] == [tx["tx_hash"]] and sent[0]["command_ids"] == [followed["command_id"]], sent
    assert [(line["tx_hash"], line["block"]) for line in confirmed] == [(tx["tx_hash"], view["block"])], confirmed
    assert confirmed[0]["request_id"] == "follow-me-0001"
    mirrored = [line for line in served.lines(event="commands_mirrored") if followed["command_id"] in line["command_ids"]]
    assert len(mirrored) == 1 and mirrored[0]["block"] >= view["block"]
    assert all(line["level"] and line["time"].endswith("Z") for line in served.lines())


# --- who may scrape, what is counted under which route ------------------------------------------------------------


@pytest.fixture(scope="module")
def reader(stack: Stack) -> TestClient:
    """A service whose /metrics needs the token (the test client's address is "testclient"), its lifespan not run:
    no submitter, no mirror watch, nothing of the other tests' services taken."""
    return TestClient(create_app(stack.settings(metrics_token=METRICS_TOKEN)))


def test_metrics_answer_this_host_or_the_operators_token_only(stack: Stack, reader: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": METRICS_TOKEN}):
        reply = reader.get("/metrics", headers=headers)
        assert reply.status_code == 401 and reply.json()["error"]["code"] == "metrics_unauthorized", headers
    assert reader.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200

    app = create_app(stack.settings())  # no token: this host only
    refused = TestClient(app).get("/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_local_only" and refused.headers["x-request-id"]
    local = TestClient(app, client=("127.0.0.1", 50000))
    assert local.get("/metrics").status_code == 200
    proxied = local.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"})  # a proxy on this host, for someone else
    assert proxied.status_code == 403 and proxied.json()["error"]["code"] == "metrics_local_only"
    assert TestClient(create_app(stack.settings(metrics=False)), client=("127.0.0.1", 50000)).get("/metrics").status_code == 404

    public = TestClient(create_public_app(stack.settings()), client=("127.0.0.1", 50000))  # the verification tier: the same rules
    assert public.get("/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 403
    samples = scraped(public.get("/metrics").text)
    assert ("partledger_indexer_healthy", frozenset()) in samples and ("partledger_outbox_items", frozenset({("state", "pending")})) in samples


def test_the_request_id_is_the_clients_when_well_formed_and_every_path_counts_under_a_bounded_route(reader: TestClient):
    client = reader
    assert client.get("/v1/health", headers={"X-Request-ID": "abc-123:x/y"}).headers["x-request-id"] == "abc-123:x/y"
    for bad in (b"", b"a b", b"x" * 129, "é".encode(), b"a\tb"):
        given = client.get("/v1/health", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert given.encode() != bad and len(given) == 32  # a fresh one instead
    for n in range(30):
        client.get(f"/nowhere/{n}")
        client.get(f"/01/{GTIN_A}/21/S{n}", headers={"Accept": "application/json"})
    client.get("/console/static/nothing-here.css")
    samples = scraped(client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text)
    routes = {route for _, route, _ in http_counts(samples)}
    assert {UNMATCHED, SCAN, "/v1/health", "/console/static/{path}"} <= routes
    assert not any("nowhere" in route or "/S1" in route for route in routes), routes
    assert resolver_template(f"/01/{GTIN_A}") == "/01/{gtin}" and resolver_template(f"/01/{GTIN_A}/10/L1") == "/01/{gtin}/10/{lot}"
    assert resolver_template("/414/4012345000009") == RESOLVER_OTHER


def test_a_json_log_line_carries_the_request_id_and_every_extra_field():
    import logging

    from partledger.jsonlog import REQUEST_ID

    record = logging.LogRecord("partledger.test", logging.INFO, __file__, 1, "sent %s", ("0xab",), None)
    record.tx_hash = "0xab"
    token = REQUEST_ID.set("req-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        REQUEST_ID.reset(token)
    assert line["message"] == "sent 0xab" and line["request_id"] == "req-1" and line["tx_hash"] == "0xab" and line["level"] == "info"
    assert line["pid"] == os.getpid() and line["time"].endswith("Z")


def test_the_migrations_add_exactly_the_stage_columns_and_reorg_counts(tmp_path: Path):
    service = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    service_migrate.upgrade(service)
    mine = MetaData()
    for name in ("commands", "scan_flags"):
        SERVICE_METADATA.tables[name].to_metadata(mine)
    with service.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in ("commands", "scan_flags")})
        assert compare_metadata(context, mine) == []
    index = make_engine(f"sqlite:///{tmp_path / 'index.db'}")
    index_migrate.upgrade(index)
    state = MetaData()
    INDEX_METADATA.tables["indexer_state"].to_metadata(state)
    with index.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name == "indexer_state"})
        assert compare_metadata(context, state) == []
    with service.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T_CMD)).scalar() == 0
