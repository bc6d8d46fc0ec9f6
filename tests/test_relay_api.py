"""The service as relayer, on a live Anvil with the real stack (indexer, service, relayer thread), one per module.

The service holds no key of workshop2: that site keeps its own (the "edge" here is the test, signing with the site's
dev key). POST /v1/relay takes requests signed by sites, checks them as the forwarder and the contracts will (each
refusal asserted with its row's code), stores them, and relays them in batches of many sites' requests; GET
/v1/relay/{id} follows each to confirmed, or to failed with the forwarder's or the target's decoded error.
"""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from fastapi.testclient import TestClient
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, func, select

from ledger_service import migrate as service_migrate
from ledger_service.relay_tables import RelayBatch, RelayRequest
from ledger_service.tables import SERVICE_METADATA
from partledger.db import make_engine
from partledger.model import PartStatus
from tests.chainkit import Ledger, reverts, revert_to, snapshot
from tests.consolekit import served
from tests.labelkit import caught_up
from tests.relaykit import Relay, Signed, dev_keys
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, running_service, wait_until
from wallets.keystore import create_keystore, load_keystore

pytestmark = pytest.mark.chain

NO_DOC = bytes(32)
S = PartStatus
EDGE = "workshop2"  # the site whose key the service does not hold


@dataclass
class World:
    ledger: Ledger
    stack: Stack
    client: TestClient
    relay: Relay  # signs as sites do (their dev keys); relays on chain with the service's first relayer key
    relayers: frozenset[str]  # the service's relayer keys: a batch leaves with any of them

    def post(self, org: str, signed: list[Signed]) -> httpx.Response:
        return self.client.post("/v1/relay", json={"requests": [item.as_json() for item in signed]}, headers=self.stack.headers(org))

    def accepted(self, org: str, signed: list[Signed]) -> list[str]:
        response = self.post(org, signed)
        assert response.status_code == 202, response.text
        return [answer["id"] for answer in response.json()["requests"]]

    def status(self, org: str, request_id: str) -> dict[str, Any]:
        response = self.client.get(f"/v1/relay/{request_id}", headers=self.stack.headers(org))
        assert response.status_code == 200, response.text
        return response.json()

    def settled(self, org: str, request_id: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = self.status(org, request_id)
            if view["status"] in ("confirmed", "failed"):
                return view
            time.sleep(0.02)
        raise TimeoutError(f"relayed request {request_id} still {view['status']}")

    def org(self, name: str) -> Any:
        return self.ledger.orgs[name]


@pytest.fixture(scope="module")
def world(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    ledger = deployed
    workdir = tmp_path_factory.mktemp("relay")
    snapshot_id = snapshot(ledger.w3)
    try:
        stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
        shutil.rmtree(stack.keys_dir / EDGE)  # registered on chain, but the service holds no key of that site
        create_keystore(workdir / "relayer" / "relayer-1.json", PASSPHRASE, light=True)
        create_keystore(workdir / "relayer" / "relayer-2.json", PASSPHRASE, light=True)  # a second nonce sequence
        relayer = load_keystore(workdir / "relayer" / "relayer-1.json", PASSPHRASE)
        relayers = frozenset(load_keystore(path, PASSPHRASE).address for path in (workdir / "relayer").glob("*.json"))
        # One batch in flight per relayer key: a key waiting for its batch's block leaves the next sites to the other.
        with running_service(stack, relayer_keys_dir=workdir / "relayer", relay_max_in_flight=1) as client:
            caught_up(client, ledger)
            yield World(ledger, stack, client, Relay(ledger, relayer), relayers)
    finally:
        revert_to(ledger.w3, snapshot_id)


def verdicts_observed(stage: str) -> float:
    """Relayed receiveParts requests observed at `stage` in this process's command latency histogram."""
    return REGISTRY.get_sample_value("partledger_command_latency_seconds_count", {"kind": "relay.receiveParts", "stage": stage}) or 0.0


def shipped(world: World, to: str, serials: list[str]) -> list[bytes]:
    """Parts the maker registers and ships (directly, with its dev key) to `to`, indexed."""
    ledger = world.ledger
    ids = ledger.register(world.org("maker"), serials, lot="L-RELAY")
    ledger.act(world.org("maker").key, ledger.parts.functions.shipParts(ids, world.org(to).id, NO_DOC))
    caught_up(world.client, ledger)
    return ids


def relay_rows(world: World) -> int:
    engine = world.client.app.state.services.service_engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(RelayRequest.__table__)).scalar()


def on_chain(ledger: Ledger, pid: bytes) -> tuple[S, int]:
    status, custodian, *_ = ledger.status(pid)
    return S(status), custodian


def test_a_site_keeping_its_own_key_acts_through_the_relay_and_the_service_cannot_act_for_it(world):
    ledger, relay = world.ledger, world.relay
    edge, maker = world.org(EDGE), world.org("maker")
    [pid] = shipped(world, EDGE, ["RLA-OWN"])
    receive = ledger.parts.functions.receiveParts([pid], NO_DOC)
    # The custodial path has no key to sign with.
    response = world.client.post("/v1/parts/receive", json={"part_ids": ["0x" + pid.hex()]}, headers=world.stack.headers(EDGE))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "no_site_key")
    # A request in the site's name signed by keys the service does have (the maker's site key it holds, its relayer
    # key) is refused at once, and on chain by the forwarder if a relayer sends it all the same.
    held_key = load_keystore(world.stack.keys_dir / "maker" / "service-site.json", PASSPHRASE)
    for forger in (held_key, relay.relayer):
        forged = relay.sign(edge.key, receive, signer=forger)
        response = world.post(EDGE, [forged])
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_requests"
        assert [(row["row"], row["code"]) for row in response.json()["error"]["details"]] == [(1, "invalid_signature")]
        with reverts("ERC2771ForwarderInvalidSigner", forger.address, edge.key):
            relay.execute(forged)
    assert on_chain(ledger, pid) == (S.IN_TRANSIT, maker.id)
    # The site's own signature: relayed by the service's relayer key, acting as the site.
    [request_id] = world.accepted(EDGE, [relay.sign(edge.key, receive)])
    view = world.settled(EDGE, request_id)
    assert (view["status"], view["signer"], view["organisation"], view["function"], view["error"]) == ("confirmed", edge.key, edge.id, "receiveParts", None)
    assert on_chain(ledger, pid) == (S.IN_STOCK, edge.id)
    receipt = ledger.w3.eth.get_transaction_receipt(view["tx_hash"])
    assert receipt["from"] in world.relayers and (receipt["to"], receipt["blockNumber"]) == (ledger.manifest.forwarder, view["block"])
    (event,) = ledger.events(receipt, ledger.parts, "PartsReceived")
    assert (event["args"]["orgId"], event["args"]["siteKey"], list(event["args"]["partIds"])) == (edge.id, edge.key, [pid])


def test_requests_from_several_sites_land_in_one_transaction_each_acting_as_itself(world):
    ledger, relay = world.ledger, world.relay
    p = ledger.parts.functions
    warehouse, distributor, workshop = world.org("warehouse"), world.org("distributor"), world.org("workshop")
    to_warehouse = shipped(world, "warehouse", ["RLA-W1", "RLA-W2"])
    to_distributor = shipped(world, "distributor", ["RLA-D1"])
    to_workshop = shipped(world, "workshop", ["RLA-S1"])
    # The workshop's receipt and then its installation: two requests of one site, nonces in a row, one post.
    received = relay.sign(workshop.key, p.receiveParts(to_workshop, NO_DOC))
    install = relay.sign(workshop.key, p.installParts(to_workshop, [b"\x17" * 32], NO_DOC), nonce=received.request.nonce + 1, gas=300_000)
    batch = [
        relay.sign(warehouse.key, p.receiveParts(to_warehouse, NO_DOC)),
        relay.sign(distributor.key, p.receiveParts(to_distributor, NO_DOC)),
        received,
        install,
    ]
    ids = world.accepted("warehouse", batch)  # anyone may post them: the signatures say who acts
    views = [world.settled(name, request_id) for name, request_id in zip(("warehouse", "distributor", "workshop", "workshop"), ids)]
    assert [view["status"] for view in views] == ["confirmed"] * 4
    assert len({view["tx_hash"] for view in views}) == 1, views
    receipt = ledger.w3.eth.get_transaction_receipt(views[0]["tx_hash"])
    # Sites in any order; each site's requests in nonce order (the installation after the receipt it needs).
    assert sorted(relay.outcomes(receipt)) == sorted((signed.request.sender, signed.request.nonce, True) for signed in batch)
    acted = {(event["event"], event["args"]["siteKey"], event["args"]["orgId"]) for name in ("PartsReceived", "PartsInstalled") for event in ledger.events(receipt, ledger.parts, name)}
    assert acted == {("PartsReceived", warehouse.key, warehouse.id), ("PartsReceived", distributor.key, distributor.id), ("PartsReceived", workshop.key, workshop.id), ("PartsInstalled", workshop.key, workshop.id)}
    assert [on_chain(ledger, pid) for pid in [*to_warehouse, *to_distributor, *to_workshop]] == [
        (S.IN_STOCK, warehouse.id), (S.IN_STOCK, warehouse.id), (S.IN_STOCK, distributor.id), (S.INSTALLED, workshop.id),
    ]  # fmt: skip
    # Each request is its signer's organisation's (and the poster's) to follow; not another member's.
    response = world.client.get(f"/v1/relay/{ids[1]}", headers=world.stack.headers("workshop"))
    assert (response.status_code, response.json()["error"]["code"]) == (404, "unknown_relay_request")


def test_a_request_the_chain_refuses_fails_with_the_targets_decoded_error_and_the_sites_next_request_runs(world):
    ledger, relay = world.ledger, world.relay
    p = ledger.parts.functions
    warehouse, distributor = world.org("warehouse"), world.org("distributor")
    [not_mine] = shipped(world, "warehouse", ["RLA-NOT-MINE"])
    [mine] = shipped(world, "distributor", ["RLA-MINE"])
    wrong = relay.sign(distributor.key, p.receiveParts([not_mine], NO_DOC))
    right = relay.sign(distributor.key, p.receiveParts([mine], NO_DOC), nonce=wrong.request.nonce + 1)
    before = {stage: verdicts_observed(stage) for stage in ("confirmed", "failed")}
    refused_id, next_id = world.accepted("distributor", [wrong, right])  # no part-state check at acceptance: the chain judges
    refused = world.settled("distributor", refused_id)
    assert refused["status"] == "failed" and refused["tx_hash"] is not None
    assert refused["error"]["error"] == "PartLedgerNotRecipient"
    assert refused["error"]["args"] == ["0x" + not_mine.hex(), warehouse.id, distributor.id]
    assert world.settled("distributor", next_id)["status"] == "confirmed"  # the refused call used its nonce
    # Each verdict observed once in the latency histogram, under the relayed function's kind.
    assert {stage: verdicts_observed(stage) - before[stage] for stage in before} == {"confirmed": 1, "failed": 1}
    assert on_chain(ledger, not_mine) == (S.IN_TRANSIT, world.org("maker").id)
    assert on_chain(ledger, mine) == (S.IN_STOCK, distributor.id)


def test_acceptance_refuses_what_cannot_run_each_row_with_its_reason_and_accepts_nothing_of_the_post(world):
    ledger, relay = world.ledger, world.relay
    p = ledger.parts.functions
    maker, auditor, warehouse = world.org("maker"), world.org("auditor"), world.org("warehouse")
    [pid] = ledger.register(maker, ["RLA-ROWS"], lot="L-RELAY")
    caught_up(world.client, ledger)
    ship = p.shipParts([pid], warehouse.id, NO_DOC)
    good = relay.sign(maker.key, ship)
    now = int(time.time())
    unknown_key = ledger.spare_keys[0]
    rows = [
        relay.sign(maker.key, ship, deadline=now - 1),  # 1 request_expired
        Signed(replace(good.request, data=bytes.fromhex(p.shipParts([pid], world.org("distributor").id, NO_DOC)._encode_transaction_data()[2:])), good.signature),  # 2 tampered
        relay.sign(auditor.key, ship),  # 3 missing_role
        relay.sign(unknown_key, ship),  # 4 unknown_site_key
        relay.sign(maker.key, ledger.registry.functions.revokeSiteKey(maker.keys[1]), gas=100_000),  # 5 unknown_target
        Signed(replace(good.request, value=1), good.signature),  # 6 invalid_value
        relay.sign(maker.key, ledger.evidence.functions.cancelNonce(b"\x01" * 32), gas=100_000),  # 7 unknown_operation
        good,  # 8 fine, but not without the others
    ]
    before = relay_rows(world)
    response = world.post("maker", rows)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_requests"
    assert [(row["row"], row["code"]) for row in error["details"]] == [
        (1, "request_expired"), (2, "invalid_signature"), (3, "missing_role"), (4, "unknown_site_key"), (5, "unknown_target"),
        (6, "invalid_value"), (7, "unknown_operation"),
    ]  # fmt: skip
    assert relay_rows(world) == before
    [request_id] = world.accepted("maker", [good])
    assert world.settled("maker", request_id)["status"] == "confirmed"


def test_a_replayed_request_is_named_again_not_relayed_again_and_a_used_nonce_is_refused(world):
    ledger, relay = world.ledger, world.relay
    p = ledger.parts.functions
    maker = world.org("maker")
    [pid] = ledger.register(maker, ["RLA-REPLAY"], lot="L-RELAY")
    caught_up(world.client, ledger)
    signed = relay.sign(maker.key, p.quarantineParts([pid], NO_DOC))
    [request_id] = world.accepted("maker", [signed])
    first = world.settled("maker", request_id)
    assert first["status"] == "confirmed"
    again = world.post("maker", [signed])
    assert again.status_code == 202
    assert again.json()["requests"] == [{"id": request_id, "signer": maker.key, "nonce": signed.request.nonce, "status": "confirmed", "idempotent_replay": True}]
    # Another request signed for the nonce used: a replay of the nonce, refused before it reaches the chain.
    stale = relay.sign(maker.key, p.releaseParts([pid], NO_DOC), nonce=signed.request.nonce)
    response = world.post("maker", [stale])
    assert [(row["row"], row["code"]) for row in response.json()["error"]["details"]] == [(1, "nonce_used")]
    engine = world.client.app.state.services.service_engine  # type: ignore[attr-defined]
    with engine.connect() as conn:
        batches = conn.execute(select(func.count()).select_from(RelayRequest.__table__.join(RelayBatch.__table__, RelayRequest.__table__.c.batch_id == RelayBatch.__table__.c.id)).where(RelayRequest.__table__.c.id == request_id)).scalar()
    assert batches == 1
    assert on_chain(ledger, pid) == (S.QUARANTINED, maker.id)


def test_the_relay_tables_are_what_their_migration_creates(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    service_migrate.upgrade(engine)
    tables = {"relay_requests", "relay_batches"}
    mine = MetaData()
    for name in tables:
        SERVICE_METADATA.tables[name].to_metadata(mine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in tables})
        assert compare_metadata(context, mine) == []


def test_while_one_relayer_key_waits_for_its_block_the_other_carries_the_next_sites_requests(world):
    """Two relayer keys, one batch in flight each: with the node not mining, the first key's batch waits, so the
    next site's request goes out with the second key, on its own nonce sequence; both land once blocks are mined."""
    ledger, relay, w3 = world.ledger, world.relay, world.ledger.w3
    p = ledger.parts.functions
    warehouse, distributor = world.org("warehouse"), world.org("distributor")
    [to_warehouse] = shipped(world, "warehouse", ["RLK-W"])
    [to_distributor] = shipped(world, "distributor", ["RLK-D"])
    w3.provider.make_request("evm_setAutomine", [False])
    try:
        [first] = world.accepted("warehouse", [relay.sign(warehouse.key, p.receiveParts([to_warehouse], NO_DOC))])
        wait_until(lambda: world.status("warehouse", first)["status"] == "relayed", "the first request relayed (its block not mined)")
        [second] = world.accepted("distributor", [relay.sign(distributor.key, p.receiveParts([to_distributor], NO_DOC))])
        wait_until(lambda: world.status("distributor", second)["status"] == "relayed", "the second request relayed while the first waits")
        pending = [world.status("warehouse", first)["tx_hash"], world.status("distributor", second)["tx_hash"]]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])
        w3.provider.make_request("evm_mine", [])
    views = [world.settled("warehouse", first), world.settled("distributor", second)]
    assert [view["status"] for view in views] == ["confirmed"] * 2 and [view["tx_hash"] for view in views] == pending
    senders = [w3.eth.get_transaction(tx_hash)["from"] for tx_hash in pending]
    assert set(senders) == world.relayers and len(senders) == 2, senders
    assert [on_chain(ledger, pid) for pid in (to_warehouse, to_distributor)] == [(S.IN_STOCK, warehouse.id), (S.IN_STOCK, distributor.id)]


def test_a_client_that_hangs_up_in_the_middle_of_its_body_gets_no_server_error(world, caplog):
    """An edge agent's link drops while it sends a post: the service reads part of the body and then the end of the
    connection. Nothing is accepted, and it is a client's 400 (client_disconnected), not a 500 with a traceback."""
    def answered(status: str) -> float:
        return REGISTRY.get_sample_value("partledger_http_request_duration_seconds_count", {"method": "POST", "route": "/v1/relay", "status": status}) or 0.0

    before = {status: answered(status) for status in ("400", "500")}
    rows = relay_rows(world)
    with served(world.client.app, lifespan="off") as url:
        host, port = url.removeprefix("http://").split(":")
        head = (
            f"POST /v1/relay HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {world.stack.api_keys['warehouse']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(head.encode() + b'{"requests": [{"from": "0x')
        wait_until(lambda: answered("400") == before["400"] + 1, "the cut-off post answered")
    assert answered("500") == before["500"] and relay_rows(world) == rows
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


def test_a_post_the_schema_refuses_is_answered_as_fastapi_answers_it(world):
    """POST /v1/relay reads and parses its body itself (_RelayRoute, for speed), not through FastAPI's dependency
    solving: each malformed post still gets the answer FastAPI gave it (recorded from the route as FastAPI served
    it), and nothing is accepted."""
    rows = relay_rows(world)
    key = {"Authorization": f"Bearer {world.stack.api_keys['warehouse']}"}
    as_json = {**key, "Content-Type": "application/json"}
    signed = world.relay.sign(world.org(EDGE).key, world.ledger.parts.functions.receiveParts([bytes(32)], NO_DOC), gas=100_000).as_json()
    not_an_object = [{"loc": ["body"], "message": "Input should be a valid dictionary or object to extract fields from"}]
    cases = [
        ("no content type", json.dumps({"requests": [signed]}).encode(), key, not_an_object),
        ("text/plain", json.dumps({"requests": [signed]}).encode(), {**key, "Content-Type": "text/plain"}, not_an_object),
        ("an array", b"[1]", as_json, not_an_object),
        ("no body", b"", as_json, [{"loc": ["body"], "message": "Field required"}]),
        ("broken JSON", b'{"requests": [', as_json, [{"loc": ["body", 14], "message": "JSON decode error"}]),
        ("null", b'{"requests": null}', as_json, [{"loc": ["body", "requests"], "message": "Input should be a valid list"}]),
        ("empty, and more", b'{"requests": [], "x": 1}', as_json, [
            {"loc": ["body", "requests"], "message": "List should have at least 1 item after validation, not 0"},
            {"loc": ["body", "x"], "message": "Extra inputs are not permitted"},
        ]),
        ("a field missing", json.dumps({"requests": [{k: v for k, v in signed.items() if k != "gas"}]}).encode(),
         {**key, "Content-Type": "application/json; charset=utf-8"}, [{"loc": ["body", "requests", 0, "gas"], "message": "Field required"}]),
    ]  # fmt: skip
    for name, body, headers, details in cases:
        response = world.client.post("/v1/relay", content=body, headers=headers)
        assert response.status_code == 422, (name, response.text)
        assert response.json() == {"error": {"code": "invalid_request", "message": "the request does not match the API schema", "details": details}}, name
    response = world.client.post("/v1/relay", content=b"\xde\x0c7,L", headers=as_json)  # no UTF-8
    assert (response.status_code, response.json()["error"]) == (400, {"code": "http_error", "message": "There was an error parsing the body"})
    deep = b'{"requests": ' + b"[" * 300 + b"]" * 300 + b"}"
    response = world.client.post("/v1/relay", content=deep, headers=as_json)
    assert (response.status_code, response.json()["error"]) == (422, {"code": "invalid_request", "message": "the JSON body is nested too deeply"})
    for headers, message in (({}, "an API key is required: Authorization: Bearer plk_..."), ({"Authorization": "Bearer plk_x_y"}, "unknown or revoked API key")):
        response = world.client.post("/v1/relay", json={"requests": [signed]}, headers=headers)
        assert (response.status_code, response.json()["error"]) == (401, {"code": "unauthorized", "message": message})
        assert response.headers["WWW-Authenticate"] == "Bearer"
    too_big = world.client.post("/v1/relay", content=b"{}", headers={**as_json, "Content-Length": str(world.stack.settings().max_body_bytes + 1)})
    assert too_big.status_code == 413, too_big.text
    assert relay_rows(world) == rows


def test_a_batch_goes_out_with_its_bound_and_is_run_on_the_node_only_when_that_would_crowd_the_block(world, monkeypatch):
    """The relayer signs a batch with its bound (what its requests offer their calls, the forwarder's share around
    each, its calldata) without asking the node; a bound over 1/BOUND_SHARE of the block's gas is sized by one run of
    the batch instead (for one small request, that can be more: a run's headroom). Both land."""
    from ledger_service import relayer as relayer_module
    from partledger.chain import GasSizer

    ledger, relay, w3 = world.ledger, world.relay, world.ledger.w3
    p = ledger.parts.functions
    warehouse = world.org("warehouse")
    sized: dict[str, int] = {}
    for mode in ("bound", "run"):
        ids = shipped(world, "warehouse", [f"RLG-{mode}-{i}" for i in range(30)])
        with monkeypatch.context() as patch:
            if mode == "bound":
                def refuse(self: GasSizer, calls: Any, block: str = "pending") -> Any:
                    raise AssertionError("a batch within its share of the block is not run on the node")

                patch.setattr(GasSizer, "limits", refuse)
            else:
                original = GasSizer.limits

                def counted(self: GasSizer, calls: Any, block: str = "pending") -> Any:
                    runs.append(len(calls))
                    return original(self, calls, block)

                runs: list[int] = []
                patch.setattr(GasSizer, "limits", counted)
                patch.setattr(relayer_module, "BOUND_SHARE", 10**12)
            [request_id] = world.accepted("warehouse", [relay.sign(warehouse.key, p.receiveParts(ids, NO_DOC))])
            view = world.settled("warehouse", request_id)
        assert view["status"] == "confirmed", view
        assert [on_chain(ledger, pid) for pid in ids] == [(S.IN_STOCK, warehouse.id)] * len(ids)
        sized[mode] = w3.eth.get_transaction(view["tx_hash"])["gas"]
        assert sized[mode] > w3.eth.get_transaction_receipt(view["tx_hash"])["gasUsed"]
    assert runs == [1], runs  # the one batch was run on the node once
    assert sized["bound"] != sized["run"], sized


def test_a_requests_bytes_in_the_batch_are_what_the_abi_encodes():
    from eth_abi import encode

    from ledger_service.relayer import _request_bytes

    for count, size in ((1, 36), (3, 100), (5, 6_404)):
        requests = [("0x" + "11" * 20, "0x" + "22" * 20, 0, 150_000, 10**9, b"\x01" * size, b"\x02" * 65)] * count
        encoded = encode(["(address,address,uint256,uint256,uint48,bytes,bytes)[]", "address"], [requests, "0x" + "33" * 20])
        assert len(encoded) == 3 * 32 + count * _request_bytes({"data": b"\x01" * size})


def test_the_sends_of_a_pass_go_in_json_rpc_batches_within_a_size_the_node_takes():
    """Anvil refuses a request body over 2 MiB: a pass's signed batches go to the node in runs of at most SEND_BYTES
    (one batch alone when it is larger), in their order."""
    from ledger_service.relayer import SEND_BYTES, _by_size

    batches = [{"raw": b"\x01" * size, "n": n} for n, size in enumerate((SEND_BYTES // 2, SEND_BYTES // 2, 1, SEND_BYTES * 2, 7))]
    runs = [[batch["n"] for batch in run] for run in _by_size(batches, SEND_BYTES)]
    assert runs == [[0, 1], [2], [3], [4]]
    assert list(_by_size([], SEND_BYTES)) == []


def test_batches_sent_one_json_rpc_request_each_land_as_in_one(world, monkeypatch):
    from ledger_service import relayer as relayer_module

    ledger, relay = world.ledger, world.relay
    p = ledger.parts.functions
    warehouse, distributor = world.org("warehouse"), world.org("distributor")
    to_warehouse = shipped(world, "warehouse", ["RLS-W1"])
    to_distributor = shipped(world, "distributor", ["RLS-D1"])
    monkeypatch.setattr(relayer_module, "SEND_BYTES", 1)
    ids = world.accepted("warehouse", [relay.sign(warehouse.key, p.receiveParts(to_warehouse, NO_DOC)), relay.sign(distributor.key, p.receiveParts(to_distributor, NO_DOC))])
    views = [world.settled("warehouse", ids[0]), world.settled("distributor", ids[1])]
    assert [view["status"] for view in views] == ["confirmed"] * 2
    assert [on_chain(ledger, pid) for pid in (*to_warehouse, *to_distributor)] == [(S.IN_STOCK, warehouse.id), (S.IN_STOCK, distributor.id)]
