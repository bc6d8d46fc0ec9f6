"""The write path's crash safety with real processes: the service (`partledger serve`) SIGKILLed a hundred times at
the failpoints of the HTTP accept path and of the submitter during a stream of 2,000 parts, with the service's own
database on SQLite and on PostgreSQL; and the chain node stopped for 30 s in the middle of a stream while the API
keeps accepting.

The first run of the service in a test is a fresh `python -m partledger_cli serve`; the runs after a kill are forked
from a preloaded fork server (tests/forkserver.py), so that a hundred restarts do not pay a hundred interpreter
start-ups (the chain and the service: tests/crashkit.py). The failpoints' draws are seeded from the run's seed
(PARTLEDGER_TEST_SEED).

Each test runs its own Anvil (with --state, so that it can be stopped and started again on the same port); the
indexer follows in a thread of the test process. Clients retry a request that got no answer with the same
Idempotency-Key. In the end every command the API accepted (202) is confirmed and on chain exactly once — counted
from the contract's event logs — and each site key's nonces on chain are gapless: the chain's transaction count is
the number of transactions the service did not void, and their nonces are 0..n-1.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from ledger_service.tables import ChainTransaction, Command, CommandItem
from partledger.db import make_engine
from partledger.ids import part_id, part_id_unchecked
from tests.chainkit import GTIN_B, Ledger
from tests.crashkit import Chain, Service, assert_sent_once_in_nonce_order, dedicated_chain
from tests.forkserver import ForkServer
from tests.seed import run_seed
from tests.servicekit import IndexerThread, Stack, prepare_stack

pytestmark = [pytest.mark.chain, pytest.mark.heavy, pytest.mark.spread]

FAILPOINTS = ("api.before_commit", "api.after_commit", "submitter.after_sign", "submitter.after_send", "submitter.before_receipt")
KILLS_PER_FAILPOINT = 20
KILL_PROBABILITY = 0.5  # per pass through the armed failpoint (once per request, or once per batch of transactions); one failpoint is armed per run of the service
STREAM_PARTS = 2_000
PARTS_PER_REQUEST = 20
PARTS_PER_TX = 10  # small transactions: some 600 of them, so that each failpoint is passed often
AHEAD = 10  # registrations posted ahead of the oldest batch not yet shipped
OUTAGE_SECONDS = 30.0
STALL_SECONDS = 300.0  # no command confirmed and indexed this long while the service answers: a hang, reported with the outbox's state
SERVICE_DATABASES = ("sqlite", "postgresql")  # the service's own database, with its outbox
T_TX, T_ITEM, T_CMD = ChainTransaction.__table__, CommandItem.__table__, Command.__table__


# --- the chain node and the service: tests/crashkit.py ----------------------------------------------------------


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with dedicated_chain(tmp_path) as chain:
        yield chain


@pytest.fixture(params=SERVICE_DATABASES)
def stack(chain: Chain, tmp_path: Path, request: pytest.FixtureRequest) -> Stack:
    """The mirror on SQLite (the indexer runs in a thread of the test); the service's own database, with its outbox,
    on each kind."""
    service_db_url = f"sqlite:///{tmp_path / 'service.db'}"
    if request.param == "postgresql":
        from tests.pgcluster import unique_name

        service_db_url = request.getfixturevalue("postgres").create_database(unique_name("crash"))
    return prepare_stack(chain.ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", service_db_url)


# --- what the API accepted ------------------------------------------------------------------------------------


@dataclass
class Accepted:
    """Every command the API answered 202, per organisation, with the parts each one carries."""

    commands: list[tuple[str, str, str]] = field(default_factory=list)  # (org, kind, command id)
    parts: dict[str, Counter[bytes]] = field(default_factory=lambda: {"register": Counter(), "ship": Counter(), "receive": Counter()})

    def add(self, org: str, kind: str, command_id: str, ids: list[bytes]) -> None:
        self.commands.append((org, kind, command_id))
        self.parts[kind].update(ids)


def serials_of(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{index:05d}" for index in range(count)]


def hex_ids(serials: list[str]) -> list[str]:
    return ["0x" + part_id(GTIN_B, serial).hex() for serial in serials]


def chunks(values: list[Any], size: int) -> list[list[Any]]:
    return [values[start : start + size] for start in range(0, len(values), size)]


# --- what must hold in the end ----------------------------------------------------------------------------------


def on_chain(ledger: Ledger) -> dict[str, Counter[bytes]]:
    """How many times each part was registered, shipped and received, from the contract's event logs."""
    events = ledger.parts.events
    counts: dict[str, Counter[bytes]] = {"register": Counter(), "ship": Counter(), "receive": Counter()}
    for entry in events.PartsRegistered().get_logs(from_block=0):
        counts["register"].update(part_id_unchecked(entry["args"]["gtin"], serial) for serial in entry["args"]["serials"])
    for kind, event in (("ship", events.PartsShipped), ("receive", events.PartsReceived)):
        for entry in event().get_logs(from_block=0):
            counts[kind].update(bytes(pid) for pid in entry["args"]["partIds"])
    return counts


def assert_exactly_once_and_gapless(service: Service, stack: Stack, accepted: Accepted) -> dict[str, Any]:
    """Every accepted command confirmed; every part it carries on chain exactly once; nothing else on chain; each
    signer's nonces gapless. Returns a few numbers for the report."""
    ledger = stack.ledger
    for org, _, command_id in accepted.commands:
        view = service.request("GET", f"/v1/commands/{command_id}", org=org).json()
        assert view["status"] == "confirmed", view
    for kind, counts in accepted.parts.items():
        assert set(counts.values()) <= {1}, f"a part was accepted twice for {kind}"
    chain_counts = on_chain(ledger)
    for kind in ("register", "ship", "receive"):
        twice = [pid.hex() for pid, count in chain_counts[kind].items() if count != 1]
        assert not twice, f"{len(twice)} part(s) {kind}ed more than once on chain, e.g. {twice[:3]}"
        assert set(chain_counts[kind]) == set(accepted.parts[kind]), f"{kind}: on chain {len(chain_counts[kind])}, accepted {len(accepted.parts[kind])}"

    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(T_CMD)).scalar() == len(accepted.commands), "a retry wrote a second command"
        states = Counter(row[0] for row in conn.execute(select(T_ITEM.c.state)))
        assert set(states) == {"confirmed"}, states
        txs = conn.execute(select(T_TX).order_by(T_TX.c.signer, T_TX.c.nonce)).mappings().all()
    engine.dispose()
    per_key = assert_sent_once_in_nonce_order(ledger, txs, dict(stack.site_keys), sender="signer")
    return {"transactions": sum(per_key.values()), "void": len(txs) - sum(per_key.values()), "commands": len(accepted.commands)}


def stall_report(service: Service, stack: Stack, indexer: IndexerThread) -> str:
    """What a hang looks like from outside: the outbox's items and transactions by state, each key's recorded nonces
    against the chain's, the heads of the chain and the mirror, and the service's log."""
    ledger = stack.ledger
    lines = [f"chain head {ledger.w3.eth.block_number}, mirror at {getattr(indexer.indexer.sink.state(), 'block_number', None)}, service runs {service.runs}, armed {service.armed}"]
    engine = make_engine(stack.service_db_url)
    try:
        with engine.connect() as conn:
            lines.append(f"items by state: {dict(Counter(row[0] for row in conn.execute(select(T_ITEM.c.state))))}")
            per_key: dict[str, Counter[str]] = {}
            top: dict[str, int] = {}
            for signer, state, nonce in conn.execute(select(T_TX.c.signer, T_TX.c.state, T_TX.c.nonce)):
                per_key.setdefault(signer, Counter())[state] += 1
                top[signer] = max(top.get(signer, -1), nonce)
            for signer, states in sorted(per_key.items()):
                lines.append(f"{signer}: chain nonce {ledger.w3.eth.get_transaction_count(signer)}, highest recorded {top[signer]}, {dict(states)}")
            if conn.dialect.name == "postgresql":  # sessions by state, and any waiting on a lock (with what they run)
                sessions = conn.execute(text(
                    "SELECT state, wait_event_type, wait_event, left(query, 120) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                )).all()  # fmt: skip
                lines.append(f"sessions: {dict(Counter((row[0], row[1]) for row in sessions))}")
                lines += [f"waiting on {row[2]}: {row[3]}" for row in sessions if row[1] == "Lock"]
            stuck = conn.execute(select(T_ITEM).where(T_ITEM.c.state != "confirmed").order_by(T_ITEM.c.id).limit(5)).mappings().all()
            lines += [f"item {dict((k, v) for k, v in item.items() if k != 'payload')}" for item in stuck]
    finally:
        engine.dispose()
    return "\n".join(lines) + "\n--- the service's log ---\n" + service.log_tail(120)


# --- the tests --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(1800)  # some 100 service starts: minutes on a loaded machine
def test_sigkilled_service_loses_and_duplicates_nothing(chain: Chain, stack: Stack, tmp_path: Path, forkserver: ForkServer, request: pytest.FixtureRequest) -> None:
    """2,000 parts registered, shipped and received in 300 requests while the service is SIGKILLed at least 20
    times at each failpoint (a request's command written and not committed; committed and the 202 not sent; after
    the outbox write and before sending; after sending and before recording it; with the receipt on chain and not
    recorded), and started again each time; the stream goes on past 2,000 parts until every failpoint had its
    kills. The three kinds of command interleave: a batch is shipped once its registration is indexed, received
    once its shipment is."""
    service = Service(
        stack,
        tmp_path,
        env={"PARTLEDGER_MAX_PARTS_PER_TX": str(PARTS_PER_TX)},
        kill_targets=dict.fromkeys(FAILPOINTS, KILLS_PER_FAILPOINT),
        kill_probability=KILL_PROBABILITY,
        forkserver=forkserver,
        seed=f"{run_seed()}:{request.node.callspec.id}",
    )
    accepted = Accepted()
    warehouse = chain.ledger.orgs["warehouse"].id
    serials = chunks(serials_of("K", STREAM_PARTS), PARTS_PER_REQUEST)
    batches = [hex_ids(chunk) for chunk in serials]
    serials_at_start = list(serials)

    def post(kind: str, org: str, number: int) -> str:
        ids = batches[number]
        if kind == "register":
            body: dict[str, Any] = {"gtin": GTIN_B, "lot": f"CRASH-{number // 10}", "serials": serials[number]}
        else:
            body = {"part_ids": ids} | ({"to_org": warehouse} if kind == "ship" else {})
        command_id = service.post(f"/v1/parts/{kind}", org, body)
        accepted.add(org, kind, command_id, [bytes.fromhex(h[2:]) for h in ids])
        return command_id

    with IndexerThread(chain.ledger, stack.index_db_url) as indexer:

        def done(command_id: str) -> bool:
            """Confirmed, and its block indexed (so that the next step's pre-check sees it)."""
            view = service.request("GET", f"/v1/commands/{command_id}", org="maker").json()
            assert view["status"] != "rejected", view
            state = indexer.indexer.sink.state()
            return view["status"] == "confirmed" and state is not None and state.block_number >= view["block"]

        try:
            service.start()
            registered: deque[tuple[int, str]] = deque()
            shipped: deque[tuple[int, str]] = deque()
            following = 0
            last_move = time.monotonic()
            while following < len(batches) or registered or shipped:
                if following == len(batches) and service.kills_missing():  # the stream goes on until every failpoint had its kills
                    assert len(batches) < 4 * len(serials_at_start), f"{4 * STREAM_PARTS} parts streamed and still {dict(service.kills)}"
                    more = chunks(serials_of(f"K{len(batches)}-", 10 * PARTS_PER_REQUEST), PARTS_PER_REQUEST)
                    serials.extend(more)
                    batches.extend(hex_ids(chunk) for chunk in more)
                moved = False
                if following < len(batches) and len(registered) < AHEAD:
                    registered.append((following, post("register", "maker", following)))
                    following += 1
                    moved = True
                if registered and done(registered[0][1]):
                    number, _ = registered.popleft()
                    shipped.append((number, post("ship", "maker", number)))
                    moved = True
                if shipped and done(shipped[0][1]):
                    post("receive", "warehouse", shipped.popleft()[0])
                    moved = True
                if moved:
                    last_move = time.monotonic()
                else:
                    assert time.monotonic() - last_move < STALL_SECONDS, f"no command moved for {STALL_SECONDS:.0f} s\n{stall_report(service, stack, indexer)}"
                    time.sleep(0.1)
            for org, _, command_id in accepted.commands:
                service.wait_confirmed(org, command_id)
            report = assert_exactly_once_and_gapless(service, stack, accepted)
            startup = sum(service.startup_seconds) / len(service.startup_seconds)
            print(f"\nSIGKILL test: {len(batches) * PARTS_PER_REQUEST} parts, kills {dict(service.kills)}, runs {service.runs} (start {startup:.1f}s on average), "
                  f"requests sent again {service.unanswered}, replayed 202s {service.replays}, {report}")  # fmt: skip
            for name in FAILPOINTS:
                assert service.kills[name] >= KILLS_PER_FAILPOINT, dict(service.kills)
        finally:
            service.stop()


def test_api_accepts_while_chain_node_is_down(chain: Chain, stack: Stack, tmp_path: Path) -> None:
    """The node stopped for 30 s in the middle of a stream: every POST is still answered 202 and health reports
    degraded; once the node is back (same port, same state), everything accepted is on chain exactly once."""
    service = Service(stack, tmp_path)
    accepted = Accepted()
    warehouse = chain.ledger.orgs["warehouse"].id
    batches = chunks(serials_of("N", 600), PARTS_PER_REQUEST)
    before, during = batches[:10], batches[10:]

    def register(serials: list[str]) -> str:
        command_id = service.post("/v1/parts/register", "maker", {"gtin": GTIN_B, "lot": "OUTAGE", "serials": serials})
        accepted.add("maker", "register", command_id, [bytes.fromhex(h[2:]) for h in hex_ids(serials)])
        return command_id

    def ship(serials: list[str]) -> str:
        ids = hex_ids(serials)
        command_id = service.post("/v1/parts/ship", "maker", {"part_ids": ids, "to_org": warehouse})
        accepted.add("maker", "ship", command_id, [bytes.fromhex(h[2:]) for h in ids])
        return command_id

    with IndexerThread(chain.ledger, stack.index_db_url) as indexer:
        try:
            service.start()
            first = [register(serials) for serials in before]
            for command_id in first:
                indexer.wait_for(service.wait_confirmed("maker", command_id)["block"])
            ship(before[0])

            chain.stop()
            down_at = time.monotonic()
            health = service.request("GET", "/v1/health").json()
            assert health["status"] == "degraded" and health["head"] is None, health
            # Registrations, and ships of parts registered before the outage, spread over the outage.
            work = [(register, serials) for serials in during] + [(ship, serials) for serials in before[1:]]
            for index, (action, serials) in enumerate(work):
                time.sleep(max(0.0, down_at + OUTAGE_SECONDS * index / len(work) - time.monotonic()))
                action(serials)
            health = service.request("GET", "/v1/health").json()
            assert health["status"] == "degraded" and health["head"] is None, health
            commands = service.request("GET", f"/v1/commands/{accepted.commands[-1][2]}", org="maker").json()
            assert commands["status"] == "accepted", commands
            time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))
            chain.start()

            for org, _, command_id in accepted.commands:
                indexer.wait_for(service.wait_confirmed(org, command_id)["block"])
            for serials in before:  # the shipments made during the outage can be received now
                ids = hex_ids(serials)
                accepted.add("warehouse", "receive", service.post("/v1/parts/receive", "warehouse", {"part_ids": ids}), [bytes.fromhex(h[2:]) for h in ids])
            for org, _, command_id in accepted.commands:
                service.wait_confirmed(org, command_id)
            report = assert_exactly_once_and_gapless(service, stack, accepted)
            deadline = time.monotonic() + 30
            while (health := service.request("GET", "/v1/health").json())["status"] != "ok":
                assert time.monotonic() < deadline, health
                time.sleep(0.2)
            print(f"\nnode outage test: {report}")
        finally:
            service.stop()
