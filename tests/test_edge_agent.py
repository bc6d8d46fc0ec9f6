"""The edge agent (`partledger edge run`) as a real process, against the real stack (Anvil, indexer, the service
with its relayer under uvicorn), its links to the cloud and to the chain node through TCP proxies the test cuts.

The site (an extra site key of workshop2, which the service holds no key of) keeps working while the link is cut:
its requests are checked against its local view, signed with its own key and queued; they land once the link is
back, exactly once, also when the agent is SIGKILLed during the backlog. A request the chain refuses comes back
failed with the contract's error, and the agent's later requests still land; so do they after a request refused
before it could use its nonce (a filler uses it). The nonce bookkeeping is also tested without sockets.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak

from partledger.artifacts import FORWARDER, load_artifact
from partledger.ids import ascii32
from partledger.model import PartStatus
from tests.chainkit import Ledger, revert_to, snapshot
from tests.consolekit import served
from tests.forkserver import ForkedProcess, ForkServer
from tests.labelkit import caught_up
from tests.ports import free_port
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, running_service, wait_until
from wallets.keystore import SCRYPT_N_LIGHT, create_keystore, load_keystore

pytestmark = pytest.mark.chain

EDGE = "workshop2"  # the organisation of the edge site; the service holds no key of it
NO_DOC = bytes(32)
OFFLINE_PARTS = 200  # the acceptance: 200 parts received and installed while the link is cut ...
CUT_SECONDS = 60  # ... for 60 s
KILLS = 20  # SIGKILLs of the agent during its backlog, as the issue asks (each restart 1-3 s here)
KILL_PARTS = 60
S = PartStatus


# --- the link: TCP proxies the test cuts ------------------------------------------------------------------------


class Proxy:
    """A loopback TCP proxy to `upstream`. Cut, it refuses connections and drops those open. While cut, its port
    stays bound to a socket that does not listen (a connection to it is refused, as to a closed port): with the port
    let go, another process on the machine took it during a 60 s cut once, and the link could not come back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._held: socket.socket | None = None  # the port while cut: bound, not listening
        self._acceptor: threading.Thread | None = None
        self.restore()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener, self._held = self._held or self._bound(), None
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._open.clear()
        if listener is not None:
            # The closed listener lives on while its thread's accept waits (up to its 0.05 s timeout): the port is
            # bound again once that thread has ended.
            assert self._acceptor is not None
            self._acceptor.join(timeout=30)
            self._held = self._bound()

    def close(self) -> None:
        self.cut()
        if self._held is not None:
            self._held.close()
            self._held = None

    def _bound(self) -> socket.socket:
        held = socket.socket()
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind(("127.0.0.1", self.port))
        return held

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:
                    client.close(), upstream.close()
                    return
                self._open |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                target.sendall(chunk)
        except OSError:
            pass
        for conn in (source, target):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@dataclass
class Link:
    """The site's link to the cloud: the service's API and the chain node, cut and restored together."""

    cloud: Proxy
    rpc: Proxy

    def cut(self) -> None:
        self.cloud.cut(), self.rpc.cut()

    def restore(self) -> None:
        self.cloud.restore(), self.rpc.restore()

    def close(self) -> None:
        self.cloud.close(), self.rpc.close()


# --- the world: the stack, the link, the agent process ----------------------------------------------------------


@dataclass
class World:
    ledger: Ledger
    stack: Stack
    client: Any
    link: Link
    forkserver: ForkServer
    workdir: Path
    keystore: Path
    site_key: str
    agents: list[ForkedProcess] = field(default_factory=list)

    def org(self, name: str) -> Any:
        return self.ledger.orgs[name]

    def start_agent(
        self, db: Path, port: int, *, sync_interval: float = 1.0, batch_size: int = 100, keystore: Path | None = None, site: str = "edge-bay-1"
    ) -> ForkedProcess:
        env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir),
            "PARTLEDGER_KEYSTORE_PASSPHRASE": PASSPHRASE, "PARTLEDGER_EDGE_API_KEY": self.stack.api_keys[EDGE],
        }  # fmt: skip
        arguments = [
            "edge", "run", "--site", site, "--keystore", str(keystore or self.keystore), "--cloud", self.link.cloud.url, "--rpc", self.link.rpc.url,
            "--manifest", str(self.stack.manifest_path), "--db", str(db), "--port", str(port), "--sync-interval", str(sync_interval),
            "--batch-size", str(batch_size),
        ]  # fmt: skip
        process = self.forkserver.spawn(arguments, env=env, stdout=db.with_suffix(".log"))
        self.agents.append(process)
        wait_until(lambda: _answers(port) or process.poll() is not None, "the edge agent's local API")
        assert process.poll() is None, db.with_suffix(".log").read_text()[-3000:]
        return process

    def ship_to_edge(self, serials: list[str], lot: str) -> list[bytes]:
        maker = self.org("maker")
        ids = self.ledger.register(maker, serials, lot=lot)
        self.ledger.act(maker.key, self.ledger.parts.functions.shipParts(ids, self.org(EDGE).id, NO_DOC))
        caught_up(self.client, self.ledger)
        return ids

    def forwarder_nonce(self) -> int:
        forwarder = self.ledger.w3.eth.contract(address=self.ledger.manifest.forwarder, abi=load_artifact(FORWARDER).abi)
        return forwarder.functions.nonces(self.site_key).call()

    def cloud_rows(self) -> list[Any]:
        from sqlalchemy import select

        from ledger_service.relay_tables import RelayRequest

        table = RelayRequest.__table__
        with self.client.app.state.services.service_engine.connect() as conn:
            return conn.execute(select(table.c.nonce, table.c.state, table.c.function).where(table.c.signer == self.site_key)).all()

    def on_chain(self, pids: list[bytes]) -> list[tuple[S, int]]:
        """(status, custodian) of each part, read in one JSON-RPC batch."""
        with self.ledger.w3.batch_requests() as batch:
            for pid in pids:
                batch.add(self.ledger.parts.functions.part(pid))
            return [(S(answer[0]), answer[1]) for answer in batch.execute()]

    def mirror_events(self, pids: list[bytes]) -> Counter[tuple[bytes, str]]:
        """(part, kind) of every event the mirror holds of these parts that the edge's site key signed."""
        from sqlalchemy import select

        from indexer.tables import PartEvent

        table = PartEvent.__table__
        with self.client.app.state.services.index_engine.connect() as conn:
            rows = conn.execute(select(table.c.part_id, table.c.kind).where(table.c.part_id.in_(pids), table.c.site_key == self.site_key)).all()
        return Counter((bytes(row.part_id), row.kind) for row in rows)


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/edge/status", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def world(deployed: Ledger, forkserver: ForkServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ledger = deployed
    workdir = tmp_path_factory.mktemp("edge")
    snapshot_id = snapshot(ledger.w3)
    try:
        stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
        shutil.rmtree(stack.keys_dir / EDGE)  # the service holds no key of the edge's organisation
        create_keystore(workdir / "relayer" / "relayer-1.json", PASSPHRASE, light=True)
        site = Account.create()
        keystore = workdir / "edge-site.json"
        keystore.write_text(json.dumps(Account.encrypt(site.key, PASSPHRASE, kdf="scrypt", iterations=SCRYPT_N_LIGHT)))
        assert load_keystore(keystore, PASSPHRASE).address == site.address
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(ledger.orgs[EDGE].id, site.address, ascii32("edge-bay-1")))
        with running_service(stack, relayer_keys_dir=workdir / "relayer") as client, served(client.app, lifespan="off") as cloud_url:
            caught_up(client, ledger)
            port = int(cloud_url.rsplit(":", 1)[1])
            rpc = ledger.w3.provider.endpoint_uri.removeprefix("http://").split(":")
            link = Link(Proxy(("127.0.0.1", port)), Proxy((rpc[0], int(rpc[1].split("/")[0]))))
            world = World(ledger, stack, client, link, forkserver, workdir, keystore, site.address)
            try:
                yield world
            finally:
                for agent in world.agents:
                    agent.kill()
                    agent.wait(10)
                link.close()
    finally:
        revert_to(ledger.w3, snapshot_id)


class Agent:
    """The local API of a running agent."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.http.post(path, json=body)

    def accepted(self, path: str, body: dict[str, Any]) -> str:
        answer = self.post(path, body)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "queued"
        return answer.json()["id"]

    def status(self) -> dict[str, Any]:
        return self.http.get("/edge/status").json()

    def request(self, request_id: str) -> dict[str, Any]:
        return self.http.get(f"/edge/requests/{request_id}").json()

    def settled(self, request_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_until(lambda: (view := self.request(request_id))["status"] in ("confirmed", "failed") and view, f"request {request_id} settled", timeout)

    def synced_at_least(self, block: int) -> None:
        wait_until(lambda: (self.status().get("view_block") or -1) >= block, f"the agent's view at block {block}")


def hexid(pid: bytes) -> str:
    return "0x" + pid.hex()


def vin_hash(serial: str) -> str:
    return "0x" + keccak(text=f"salt-1|WVWZZZ1JZXW0{serial[-5:]}").hex()


def db_counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM requests GROUP BY status").fetchall())
        counts["posted"] = conn.execute("SELECT count(*) FROM requests WHERE posted = 1").fetchone()[0]
    return counts


# --- tests --------------------------------------------------------------------------------------------------------


@pytest.mark.heavy
def test_a_workshop_works_through_a_cut_link_and_every_request_lands_once_when_it_returns(world: World):
    ledger, edge = world.ledger, world.org(EDGE)
    serials = [f"EDG-OFF-{i:04d}" for i in range(OFFLINE_PARTS)]
    pids = world.ship_to_edge(serials, "L-EDGE-OFF")
    db, port = world.workdir / "offline.db", free_port()
    agent_process = world.start_agent(db, port)
    agent = Agent(port)
    agent.synced_at_least(ledger.w3.eth.block_number)
    nonce_before = world.forwarder_nonce()

    world.link.cut()
    cut_at = time.monotonic()
    wait_until(lambda: agent.status()["link"].startswith("down"), "the agent to see the link down")
    ids = []
    for pid, serial in zip(pids, serials):
        ids.append(agent.accepted("/edge/receive", {"part_ids": [hexid(pid)]}))
        ids.append(agent.accepted("/edge/install", {"items": [{"part_id": hexid(pid), "vin_hash": vin_hash(serial)}]}))
    status = agent.status()
    assert (status["queue_depth"], status["counts"]["queued"], status["oldest_unsent"]["id"]) == (2 * OFFLINE_PARTS, 2 * OFFLINE_PARTS, ids[0])
    assert agent.http.get(f"/edge/parts/{hexid(pids[0])}").json()["status"] == "installed"  # the local view, offline
    assert [row for row in world.cloud_rows() if row.nonce >= nonce_before] == []
    time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))  # the cut's length is the point of this test

    world.link.restore()
    wait_until(lambda: agent.status()["counts"]["confirmed"] == 2 * OFFLINE_PARTS, "every queued request confirmed", timeout=180)
    assert agent.status()["counts"] == {"queued": 0, "relayed": 0, "confirmed": 2 * OFFLINE_PARTS, "failed": 0}
    assert world.forwarder_nonce() == nonce_before + 2 * OFFLINE_PARTS
    rows = [row for row in world.cloud_rows() if row.nonce >= nonce_before]
    assert len(rows) == len({row.nonce for row in rows}) == 2 * OFFLINE_PARTS and {row.state for row in rows} == {"confirmed"}
    assert world.on_chain(pids) == [(S.INSTALLED, edge.id)] * len(pids)
    caught_up(world.client, ledger)
    assert world.mirror_events(pids) == Counter({(pid, kind): 1 for pid in pids for kind in ("received", "installed")})
    agent_process.terminate()
    agent_process.wait(15)


def test_a_request_the_chain_refuses_fails_with_its_reason_and_later_requests_land(world: World):
    ledger, maker = world.ledger, world.org("maker")
    moved, kept, never = world.ship_to_edge(["EDG-REF-1", "EDG-REF-2", "EDG-REF-3"], "L-EDGE-REF")
    db, port = world.workdir / "refused.db", free_port()
    process = world.start_agent(db, port, sync_interval=3600)
    agent = Agent(port)
    agent.synced_at_least(ledger.w3.eth.block_number)
    # The cloud moves a part meanwhile: the maker cancels its shipment; the agent's view does not know yet.
    ledger.act(maker.key, ledger.parts.functions.cancelShipments([moved], NO_DOC))
    refused = agent.settled(agent.accepted("/edge/receive", {"part_ids": [hexid(moved)]}))
    assert refused["status"] == "failed"
    assert (refused["reason"]["error"], refused["reason"]["args"]) == ("PartLedgerWrongStatus", [hexid(moved), int(S.IN_STOCK)])
    status = agent.status()
    assert [(failure["id"], failure["reason"]["error"]) for failure in status["recent_failures"]] == [(refused["id"], "PartLedgerWrongStatus")]
    # Re-synced (view and nonce): the moved part is no longer inbound; a later request lands.
    wait_until(lambda: agent.http.get(f"/edge/parts/{hexid(moved)}").status_code == 404, "the view re-synced")
    answer = agent.post("/edge/receive", {"part_ids": [hexid(moved)]})
    assert (answer.status_code, answer.json()["error"]["code"]) == (409, "part_not_inbound")
    landed = agent.settled(agent.accepted("/edge/receive", {"part_ids": [hexid(kept)]}))
    assert landed["status"] == "confirmed" and landed["nonce"] == refused["nonce"] + 1
    status_, custodian, *_ = ledger.status(kept)
    assert (S(status_), custodian) == (S.IN_STOCK, world.org(EDGE).id)

    # Bad input to the local API: 4xx with a code, never a 500.
    cases = [
        ("/edge/receive", {"part_ids": ["0x12"]}, 422, "invalid_body"),
        ("/edge/receive", {"part_ids": []}, 422, "invalid_body"),
        ("/edge/receive", {"parts": [hexid(never)]}, 422, "invalid_body"),
        ("/edge/receive", {"part_ids": [hexid(never), hexid(never)]}, 422, "duplicate_parts"),
        ("/edge/receive", {"part_ids": [hexid(kept)]}, 409, "part_not_inbound"),
        ("/edge/install", {"items": [{"part_id": hexid(never), "vin_hash": vin_hash("X1")}]}, 409, "part_not_in_stock"),
        ("/edge/install", {"items": [{"part_id": hexid(kept)}]}, 422, "invalid_body"),
        ("/edge/ship", {"part_ids": [hexid(kept)], "to": world.org(EDGE).id}, 422, "ship_to_self"),
        ("/edge/ship", {"part_ids": [hexid(kept)], "to": 0}, 422, "invalid_body"),
    ]
    for path, body, code, error in cases:
        answer = agent.post(path, body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (code, error), (path, body, answer.text)
    for path, code, error in (("/edge/requests/nope", 404, "unknown_request"), ("/edge/parts/0x12", 422, "invalid_part_id"), ("/edge/nothing", 404, "not_found")):
        answer = agent.http.get(path)
        assert (answer.status_code, answer.json()["error"]["code"]) == (code, error), path
    broken = agent.http.post("/edge/receive", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (broken.status_code, broken.json()["error"]["code"]) == (422, "invalid_body")

    # `partledger edge status` reads the same database, the agent running or not.
    process.terminate()
    process.wait(15)
    shown = world.forkserver.run(["edge", "status", "--db", str(db)], env={"PATH": os.environ.get("PATH", "")}, workdir=world.workdir / "cli")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("site            edge-bay-1 (" + world.site_key)
    assert lines[1] == "queue depth     0 (queued 0, relayed 0; confirmed 1, failed 1)"
    assert lines[2] == "oldest unsent   none"
    assert lines[3].startswith("last sync       ") and "view at block" in lines[3]
    assert any(line.startswith(f"failed          {refused['id']} (receive, nonce {refused['nonce']}): PartLedgerWrongStatus") for line in lines)
    missing = world.forkserver.run(["edge", "status", "--db", str(world.workdir / "none.db")], env={"PATH": os.environ.get("PATH", "")}, workdir=world.workdir / "cli")
    assert (missing.returncode, missing.stdout) == (1, "") and "no edge agent database" in missing.stderr


def test_sigkills_of_the_agent_during_its_backlog_leave_every_request_landed_exactly_once(world: World, test_rng):
    ledger, edge = world.ledger, world.org(EDGE)
    pids = world.ship_to_edge([f"EDG-KIL-{i:03d}" for i in range(KILL_PARTS)], "L-EDGE-KILL")
    db, port = world.workdir / "kills.db", free_port()
    process = world.start_agent(db, port, batch_size=5)
    agent = Agent(port)
    agent.synced_at_least(ledger.w3.eth.block_number)
    nonce_before = world.forwarder_nonce()
    world.link.cut()
    ids = [agent.accepted("/edge/receive", {"part_ids": [hexid(pid)]}) for pid in pids]
    process.kill()  # right after the last 202: each is on disk already
    process.wait(10)
    assert db_counts(db)["queued"] == KILL_PARTS
    world.link.restore()
    during_backlog = 0
    for _ in range(KILLS):
        before = db_counts(db)
        process = world.start_agent(db, port, batch_size=2)
        if test_rng.random() < 0.8:  # else: killed as soon as it answers
            try:
                wait_until(lambda: db_counts(db) != before, "the agent to make progress", timeout=60)
            except AssertionError as exc:  # once in a fresh-clone run: say where the agent was (its log, appended)
                raise AssertionError(f"{exc}; requests {db_counts(db)}; the agent's log ends:\n{db.with_suffix('.log').read_text()[-4000:]}") from None
        process.kill()
        process.wait(10)
        during_backlog += db_counts(db).get("confirmed", 0) < KILL_PARTS
    assert during_backlog == KILLS  # every kill hit the agent with requests still to settle
    process = world.start_agent(db, port, batch_size=5)
    wait_until(lambda: db_counts(db).get("confirmed", 0) == KILL_PARTS, "the backlog confirmed", timeout=120)
    assert [agent.request(request_id)["status"] for request_id in ids] == ["confirmed"] * KILL_PARTS
    assert world.forwarder_nonce() == nonce_before + KILL_PARTS
    rows = [row for row in world.cloud_rows() if row.nonce >= nonce_before]
    assert len(rows) == len({row.nonce for row in rows}) == KILL_PARTS and {row.state for row in rows} == {"confirmed"}
    assert world.on_chain(pids) == [(S.IN_STOCK, edge.id)] * len(pids)
    caught_up(world.client, ledger)
    assert world.mirror_events(pids) == Counter({(pid, "received"): 1 for pid in pids})
    process.terminate()
    process.wait(15)


# --- the nonce bookkeeping, without sockets (the agent's chain and cloud ports faked) --------------------------


class FakeChain:
    def __init__(self, nonce: int) -> None:
        self.nonce_now = nonce

    def nonce(self, signer: str) -> int:
        return self.nonce_now

    def domain(self) -> Any:
        from partledger.eip712 import Eip712Domain

        return Eip712Domain(name="PartLedger Forwarder", version="1", chainId=31337, verifyingContract="0x" + "55" * 20)

    def site_key(self, address: str) -> tuple[int, int]:
        return 6, 0


class FakeCloud:
    """Answers the view with no parts, and POST /v1/relay with a refusal of the rows given."""

    def __init__(self) -> None:
        self.refuse: dict[int, str] = {}
        self.posted: list[list[dict[str, Any]]] = []

    def pages(self, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
        return [], 10

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.posted.append(kwargs["json"]["requests"])
        details = [{"row": row, "code": code, "message": code} for row, code in self.refuse.items()]
        return httpx.Response(422, json={"error": {"code": "invalid_requests", "message": "refused", "details": details}})


def test_nonces_held_by_no_live_request_are_filled_and_stale_unsent_requests_signed_again(tmp_path):
    from partledger.eip712 import ForwardRequest, forward_request_digest, recover_forward_request_signer
    from wallets.edge.agent import FILLER, EdgeAgent, EdgeConfig
    from wallets.edge.queue import EdgeStore

    key = Account.create()
    config = EdgeConfig(site="bay", cloud_url="http://cloud", api_key="k", rpc_url="http://rpc", part_ledger="0x" + "22" * 20, forwarder="0x" + "55" * 20, registry="0x" + "33" * 20)
    chain, cloud = FakeChain(nonce=5), FakeCloud()
    store = EdgeStore(tmp_path / "edge.db")
    agent = EdgeAgent(store=store, key=key, config=config, chain=chain, cloud=cloud)  # type: ignore[arg-type]
    agent.initialise()
    now = time.time()

    def row(request_id: str, *, nonce: int | None, status: str, posted: int) -> None:
        with store.transaction() as conn:
            conn.execute(
                "INSERT INTO requests (id, kind, payload, parts, target, data, gas, nonce, deadline, signature, status, posted, created_at, updated_at)"
                " VALUES (?, 'receive', '{\"doc_hash\": \"0x00\"}', '[]', ?, x'01020304', 100000, ?, ?, x'00', ?, ?, ?, ?)",
                (request_id, config.part_ledger, nonce, int(now) + 3600, status, posted, now, now),
            )  # fmt: skip

    row("relayed-5", nonce=5, status="relayed", posted=1)
    row("failed-6", nonce=6, status="failed", posted=1)  # refused before it used its nonce: 6 would hold back 7
    row("posted-7", nonce=7, status="queued", posted=1)  # the cloud may hold it: kept as it is
    row("stale-3", nonce=3, status="queued", posted=0)  # never sent, its nonce passed: signed again
    row("unsigned", nonce=None, status="queued", posted=0)  # queued before the first sync
    agent.resync()
    nonces = {r["id"]: (r["nonce"], r["kind"]) for r in store.query("SELECT id, nonce, kind FROM requests WHERE status = 'queued'")}
    fillers = [request_id for request_id, (_, kind) in nonces.items() if kind == FILLER]
    assert len(fillers) == 1 and nonces[fillers[0]][0] == 6
    assert (nonces["posted-7"], nonces["stale-3"], nonces["unsigned"]) == ((7, "receive"), (8, "receive"), (9, "receive"))
    assert store.get("next_nonce") == 10
    for request_id in (fillers[0], "stale-3", "unsigned"):
        signed = store.query("SELECT * FROM requests WHERE id = ?", (request_id,))[0]
        request = ForwardRequest(sender=key.address, to=signed["target"], value=0, gas=signed["gas"], nonce=signed["nonce"], deadline=signed["deadline"], data=bytes(signed["data"]))
        domain = chain.domain()
        assert recover_forward_request_signer(domain, request, bytes(signed["signature"]), digest=forward_request_digest(domain, request)) == key.address

    # A post the cloud refuses: a used nonce is signed again (the cloud holds nothing of that digest), another
    # refusal fails with its code; the rows not refused are posted again as they are.
    cloud.refuse = {3: "nonce_used", 4: "site_key_revoked"}  # rows in nonce order: filler 6, posted-7, stale-3 (8), unsigned (9)
    assert agent.post()
    by_id = {r["id"]: r for r in store.query("SELECT * FROM requests")}
    posted_ids = [r["id"] for r in store.query("SELECT id FROM requests WHERE status = 'queued' AND nonce IS NOT NULL ORDER BY nonce")]
    assert (by_id["posted-7"]["status"], by_id["posted-7"]["posted"], by_id["posted-7"]["nonce"]) == ("queued", 1, 7)
    assert (by_id["stale-3"]["status"], by_id["stale-3"]["nonce"], by_id["stale-3"]["posted"]) == ("queued", None, 0)
    assert by_id["unsigned"]["status"] == "failed" and json.loads(by_id["unsigned"]["reason"]) == {"code": "site_key_revoked", "message": "site_key_revoked"}
    assert fillers[0] in posted_ids
    chain.nonce_now = 6
    agent.resync()  # 8 is held by nothing now (stale-3 unsigned; 9 failed): stale-3 takes 8, and no filler is needed
    assert store.query("SELECT nonce FROM requests WHERE id = 'stale-3'")[0]["nonce"] == 8
    assert store.get("next_nonce") == 9
    store.close()


def test_a_request_refused_before_it_used_its_nonce_gets_a_filler_and_the_later_ones_land(world: World):
    ledger, edge = world.ledger, world.org(EDGE)
    first, expired, last = world.ship_to_edge(["EDG-GAP-1", "EDG-GAP-2", "EDG-GAP-3"], "L-EDGE-GAP")
    db, port = world.workdir / "gap.db", free_port()
    process = world.start_agent(db, port, sync_interval=3600)
    agent = Agent(port)
    agent.synced_at_least(ledger.w3.eth.block_number)
    nonce_before = world.forwarder_nonce()
    world.link.cut()
    ids = [agent.accepted("/edge/receive", {"part_ids": [hexid(pid)]}) for pid in (first, expired, last)]
    process.terminate()
    process.wait(15)
    # The middle one was posted once already, and its deadline passed while the site was offline.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE requests SET deadline = 1, posted = 1 WHERE id = ?", (ids[1],))
    world.link.restore()
    process = world.start_agent(db, port, sync_interval=3600)
    views = [agent.settled(request_id) for request_id in ids]
    assert [view["status"] for view in views] == ["confirmed", "failed", "confirmed"]
    assert views[1]["reason"]["code"] == "request_expired"
    assert [view["nonce"] for view in views] == [nonce_before, nonce_before + 1, nonce_before + 2]
    with sqlite3.connect(db) as conn:
        fillers = conn.execute("SELECT nonce, status, reason FROM requests WHERE kind = 'nonce_fill'").fetchall()
    assert [(nonce, status, json.loads(reason)["error"]) for nonce, status, reason in fillers] == [(nonce_before + 1, "confirmed", "PartLedgerUnknownPart")]
    assert world.forwarder_nonce() == nonce_before + 3
    assert world.on_chain([first, expired, last]) == [(S.IN_STOCK, edge.id), (S.IN_TRANSIT, world.org("maker").id), (S.IN_STOCK, edge.id)]
    process.terminate()
    process.wait(15)


def test_requests_queued_at_the_edge_fail_with_the_registrys_reason_once_the_site_key_is_revoked(world: World):
    """Build 4: the site's key is revoked while its requests wait offline at the edge; when the link returns each
    fails with the registry's reason (none is relayed), the site sees them failed, and the parts stay where they were.
    A key of its own (another bay of the same workshop), so that the module's other tests keep theirs."""
    ledger, edge = world.ledger, world.org(EDGE)
    site = Account.create()
    keystore = world.workdir / "edge-bay-2.json"
    keystore.write_text(json.dumps(Account.encrypt(site.key, PASSPHRASE, kdf="scrypt", iterations=SCRYPT_N_LIGHT)))
    ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(edge.id, site.address, ascii32("edge-bay-2")))
    pids = world.ship_to_edge(["EDG-REV-1", "EDG-REV-2"], "L-EDGE-REV")
    db, port = world.workdir / "revoked.db", free_port()
    process = world.start_agent(db, port, sync_interval=3600, keystore=keystore, site="edge-bay-2")
    agent = Agent(port)
    agent.synced_at_least(ledger.w3.eth.block_number)
    world.link.cut()
    ids = [agent.accepted("/edge/receive", {"part_ids": [hexid(pid)]}) for pid in pids]
    ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(site.address))
    caught_up(world.client, ledger)  # the cloud's mirror knows of the revocation
    world.link.restore()
    views = [agent.settled(request_id) for request_id in ids]
    assert [(view["status"], view["reason"]["code"]) for view in views] == [("failed", "site_key_revoked")] * 2, views
    failures = agent.status()["recent_failures"]
    assert {failure["id"] for failure in failures} >= set(ids), failures
    assert world.on_chain(pids) == [(S.IN_TRANSIT, world.org("maker").id)] * 2
    process.terminate()
    process.wait(15)
