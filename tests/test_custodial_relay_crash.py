"""Custodial single-part commands relayed in batches (ledger_service.custodial_relay) with real processes: the
service (`partledger serve`, submitter and relayer threads of it) SIGKILLed 4 times at each of five failpoints while
a maker's and a warehouse's one-part shipments and receipts stream through it: a command committed with its 202 not
sent; requests signed with the site's key and handed to the relayer, the loop not yet told; a batch signed and
recorded and not sent; sent and not recorded as sent; mined with its verdicts not recorded.

In the end every accepted command is confirmed; each part was shipped and received once on chain, by the service's
key of its site, through the forwarder; each (site key, forwarder nonce) executed once, and exactly the requests the
service recorded as confirmed; each relayer key's nonces gapless; and the site keys themselves sent nothing.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_utils import keccak
from sqlalchemy import select

from ledger_service.relay_tables import RelayBatch, RelayRequest
from ledger_service.tables import ChainTransaction, CommandItem
from partledger.db import make_engine
from tests.crashkit import Chain, Service, assert_sent_once_in_nonce_order, dedicated_chain, prepare_relay_stack
from tests.forkserver import ForkServer
from tests.relaykit import Relay
from tests.seed import run_seed
from tests.servicekit import PASSPHRASE, IndexerThread, Stack
from wallets.keystore import load_keystore

pytestmark = [pytest.mark.chain, pytest.mark.heavy, pytest.mark.spread]

FAILPOINTS = ("api.after_commit", "submitter.after_hand_over", "relayer.after_sign", "relayer.after_send", "relayer.before_receipt")
KILLS_PER_FAILPOINT = 4
KILL_PROBABILITY = 0.5
MIN_PARTS = 40  # the stream goes on past this until every failpoint had its kills
AHEAD = 6  # shipments posted ahead of the oldest not yet received
REGISTERED = 600
STALL_SECONDS = 300.0
T_REQ, T_BATCH, T_ITEM = RelayRequest.__table__, RelayBatch.__table__, CommandItem.__table__


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    with dedicated_chain(tmp_path) as chain:
        yield chain


@pytest.fixture
def stack(chain: Chain, tmp_path: Path) -> Stack:
    """The service's database and the mirror on SQLite; every site's key held by the service; two relayer keys."""
    return prepare_relay_stack(chain.ledger, tmp_path, sites=(), relayer_keys=2)


@pytest.mark.timeout(1800)
def test_sigkilled_service_relays_each_custodial_command_exactly_once(chain: Chain, stack: Stack, tmp_path: Path, forkserver: ForkServer) -> None:
    ledger = chain.ledger
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = [pid for start in range(0, REGISTERED, 100) for pid in ledger.register(maker, [f"CRK{n:04d}" for n in range(start, start + 100)], lot="L-CRK")]
    relayers = sorted(load_keystore(path, PASSPHRASE).address for path in (tmp_path / "relayer").glob("*.json"))
    service = Service(
        stack, tmp_path,
        env={"PARTLEDGER_RELAYER_KEYS_DIR": str(tmp_path / "relayer"), "PARTLEDGER_RELAY_BATCH_SIZE": "3", "PARTLEDGER_RELAY_MAX_IN_FLIGHT": "1"},
        kill_targets=dict.fromkeys(FAILPOINTS, KILLS_PER_FAILPOINT), kill_probability=KILL_PROBABILITY, forkserver=forkserver,
        seed=f"{run_seed()}:custodial-relay",
    )  # fmt: skip
    commands: list[tuple[str, str]] = []  # (org, command id)

    def post(kind: str, org: str, number: int) -> str:
        body = {"part_ids": ["0x" + pids[number].hex()], "doc_hash": "0x" + keccak(text=f"{kind}-{number}").hex()}  # its own note: never packed with another
        command_id = service.post(f"/v1/parts/{kind}", org, body | ({"to_org": warehouse.id} if kind == "ship" else {}))
        commands.append((org, command_id))
        return command_id

    with IndexerThread(ledger, stack.index_db_url) as indexer:
        indexer.wait_for(ledger.w3.eth.block_number)

        def done(org: str, command_id: str) -> bool:
            view = service.request("GET", f"/v1/commands/{command_id}", org=org).json()
            assert view["status"] != "rejected", view
            state = indexer.indexer.sink.state()
            return view["status"] == "confirmed" and state is not None and state.block_number >= view["block"]

        try:
            service.start()
            shipping: deque[tuple[int, str]] = deque()
            receiving: deque[str] = deque()
            posted = 0
            last_move = time.monotonic()
            while posted < MIN_PARTS or service.kills_missing() or shipping or receiving:
                assert posted < REGISTERED, f"{posted} parts streamed and still {dict(service.kills)}"
                moved = False
                if (posted < MIN_PARTS or service.kills_missing()) and len(shipping) < AHEAD:
                    shipping.append((posted, post("ship", "maker", posted)))
                    posted += 1
                    moved = True
                if shipping and done("maker", shipping[0][1]):
                    receiving.append(post("receive", "warehouse", shipping.popleft()[0]))
                    moved = True
                if receiving and done("warehouse", receiving[0]):
                    receiving.popleft()
                    moved = True
                if moved:
                    last_move = time.monotonic()
                else:
                    assert time.monotonic() - last_move < STALL_SECONDS, f"no command moved for {STALL_SECONDS:.0f} s\n{service.log_tail(120)}"
                    time.sleep(0.1)
            views = [service.wait_confirmed(org, command_id) for org, command_id in commands]
        finally:
            service.stop()

    # Each part shipped and received once, by the service's key of its site, in a batch of the forwarder.
    site_keys = {stack.site_keys["maker"], stack.site_keys["warehouse"]}
    effects: Counter[tuple[str, bytes, str]] = Counter()
    for event in ("PartsShipped", "PartsReceived"):
        for entry in getattr(ledger.parts.events, event)().get_logs(from_block=0):
            if entry["args"]["siteKey"] in site_keys:
                assert ledger.w3.eth.get_transaction(entry["transactionHash"])["to"] == ledger.manifest.forwarder
                effects.update((event, bytes(pid), entry["args"]["siteKey"]) for pid in entry["args"]["partIds"])
    expected = Counter(
        {("PartsShipped", pid, stack.site_keys["maker"]): 1 for pid in pids[:posted]} | {("PartsReceived", pid, stack.site_keys["warehouse"]): 1 for pid in pids[:posted]}
    )  # fmt: skip
    assert effects == expected, f"{sum((effects - expected).values())} effect(s) too many, {sum((expected - effects).values())} missing"

    # Each (site key, nonce) executed once, successfully: exactly the requests recorded as confirmed.
    relay = Relay(ledger)
    executed: Counter[tuple[str, int]] = Counter()
    for entry in relay.forwarder.events.ExecutedForwardRequest().get_logs(from_block=0):
        assert entry["args"]["success"], entry
        executed[(entry["args"]["signer"], entry["args"]["nonce"])] += 1
    assert set(executed.values()) == {1}
    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        requests = conn.execute(select(T_REQ)).mappings().all()
        items = conn.execute(select(T_ITEM)).mappings().all()
        batches = conn.execute(select(T_BATCH).order_by(T_BATCH.c.relayer, T_BATCH.c.nonce)).mappings().all()
        own_transactions = conn.execute(select(ChainTransaction.__table__)).all()
    engine.dispose()
    confirmed = {request["id"]: request for request in requests if request["state"] == "confirmed"}
    assert Counter((r["signer"], r["nonce"]) for r in confirmed.values()) == executed
    assert all(r["error_name"].startswith("ERC2771Forwarder") or r["error_name"] == "Superseded" for r in requests if r["state"] == "failed")
    assert len(items) == len(commands) == len(views) and all(item["state"] == "confirmed" and item["relay_request_id"] in confirmed for item in items)
    for key in site_keys:
        assert relay.nonce(key) == sum(signer == key for signer, _ in executed)
        assert ledger.w3.eth.get_transaction_count(key) == 0, "a site key sent a transaction of its own"
    assert own_transactions == []
    per_key = assert_sent_once_in_nonce_order(ledger, batches, {relayer[:8]: relayer for relayer in relayers}, sender="relayer")
    startup = sum(service.startup_seconds) / len(service.startup_seconds)
    print(f"\ncustodial relay SIGKILL test: {posted} parts shipped and received, kills {dict(service.kills)}, runs {service.runs} "
          f"(start {startup:.1f}s on average), requests {len(requests)} ({len(requests) - len(confirmed)} failed unexecuted and signed again), "
          f"batches per relayer key {per_key}")  # fmt: skip
