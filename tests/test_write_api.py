"""The write API's acceptance tests on Anvil + SQLite and Anvil + PostgreSQL: every write endpoint accepted (202)
and followed to its block, refused by the pre-check with its exact HTTP status and error code, or accepted and then
refused by the contract with its custom error; several commands packed into one transaction.

Chain states a test starts from are made directly with the organisations' own (dev) site keys; everything a test
checks goes through the API and its service-held site keys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, func, select
from sqlalchemy.engine import Engine
from web3 import Web3

from labels.digital_link import build_uri
from ledger_service.app import load_signers
from ledger_service.auth import create_api_key
from ledger_service.submitter import Submitter, SubmitterConfig
from ledger_service.tables import ChainTransaction, Command, PrivateVin
from ledger_service.vault import Vault
from partledger.db import make_engine
from partledger.errors import ValidationError
from partledger.ids import ascii32, part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.pgcluster import unique_name
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, running_service, wait_command
from wallets.keystore import create_keystore

NO_DOC = bytes(32)
DOC = "0x" + keccak(text="delivery-note-4711").hex()
VINS = ("WVWZZZ1JZXW000001", "1HGCM82633A004352")
S = PartStatus
T_TX = ChainTransaction.__table__


# --- the stack and how to talk to it ------------------------------------------------------------------------


@pytest.fixture
def stack(ledger: Ledger, db_url: str, tmp_path, request: pytest.FixtureRequest) -> Stack:
    """Index and service databases of the same kind: two SQLite files, or two databases of the session's cluster."""
    return make_stack(ledger, db_url, tmp_path, request)


def make_stack(ledger: Ledger, db_url: str, tmp_path, request: pytest.FixtureRequest) -> Stack:
    if db_url.startswith("sqlite"):
        service_db = f"sqlite:///{tmp_path / 'service.db'}"
    else:
        service_db = request.getfixturevalue("postgres").create_database(unique_name("svc"))
    return prepare_stack(ledger, tmp_path, db_url, service_db)


@contextmanager
def serve(stack: Stack, **overrides: Any) -> Iterator[TestClient]:
    """running_service, once its indexer has caught up with the chain (so that pre-checks see the setup)."""
    with running_service(stack, **overrides) as client:
        caught_up(stack)
        yield client


def caught_up(stack: Stack) -> None:
    stack.client.indexer.wait_for(stack.ledger.w3.eth.block_number)  # type: ignore[union-attr]


@contextmanager
def submitting(client: TestClient, **config: Any) -> Iterator[Submitter]:
    """A submitter for a service started with submitter=False: commands accepted before it starts are all pending
    at once, so that packing and races are deterministic."""
    services = client.app.state.services  # type: ignore[attr-defined]
    submitter = Submitter(
        engine=services.service_engine,
        w3=Web3(Web3.HTTPProvider(services.manifest.rpc_url)),
        signers=load_signers(services.settings, services.manifest),
        manifest=services.manifest,
        config=SubmitterConfig(interval=0.02, **config),
    )
    stop = threading.Event()
    thread = threading.Thread(target=submitter.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield submitter
    finally:
        stop.set()
        thread.join(timeout=10)


def post(stack: Stack, org: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
    assert stack.client is not None
    return stack.client.post(path, headers=stack.headers(org, **headers), json=body)


def post_csv(stack: Stack, org: str, text: str, **params: str) -> httpx.Response:
    assert stack.client is not None
    headers = stack.headers(org, **{"Content-Type": "text/csv"})
    return stack.client.post("/v1/parts/register.csv", headers=headers, content=text.encode(), params=params)


def accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "accepted" and len(body["command_id"]) == 36
    return body["command_id"]


def confirmed(stack: Stack, org: str, response: httpx.Response) -> dict[str, Any]:
    view = wait_command(stack, org, accepted(response))
    assert view["status"] == "confirmed", view
    assert view["errors"] == [] and view["block"] == max(tx["block"] for tx in view["transactions"])
    return view


def rejected(stack: Stack, org: str, response: httpx.Response) -> dict[str, Any]:
    view = wait_command(stack, org, accepted(response))
    assert view["status"] == "rejected", view
    return view


def settled(stack: Stack, org: str, command_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """The command once every item of it is confirmed or rejected (its status reads rejected as soon as one item is),
    and the indexer has the chain's head."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = wait_command(stack, org, command_id, timeout=timeout)
        if all(item["state"] in ("confirmed", "rejected") for item in view["items"]):
            caught_up(stack)
            return view
        time.sleep(0.02)
    raise TimeoutError(f"command {command_id} has items in flight after {timeout}s: {view['items']}")


def vin_rows(stack: Stack) -> set[tuple[str, bytes]]:
    """(command id, part id) of every encrypted clear VIN the service keeps."""
    engine = make_engine(stack.service_db_url)
    try:
        with engine.connect() as conn:
            return {(row.command_id, bytes(row.part_id)) for row in conn.execute(select(PrivateVin.__table__))}
    finally:
        engine.dispose()


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def hexid(value: bytes) -> str:
    return "0x" + value.hex()


def ids_of(pids: list[bytes]) -> list[str]:
    return [hexid(pid) for pid in pids]


def on_chain(ledger: Ledger, pid: bytes) -> tuple[PartStatus, int, int]:
    """(status, custodian, recipient) as PartLedger.part() has them."""
    status, custodian, recipient, *_ = ledger.status(pid)
    return S(status), custodian, recipient


def org_id(ledger: Ledger, name: str) -> int:
    return ledger.orgs[name].id


def held_by(ledger: Ledger, name: str, serials: list[str], *, lot: str = "L-W", gtin: str = GTIN_A) -> list[bytes]:
    """Parts registered by `maker` and handed over (shipped and received, with the organisations' own keys)."""
    maker = ledger.orgs["maker"]
    pids = ledger.register(maker, serials, gtin=gtin, lot=lot)
    if name != "maker":
        org = ledger.orgs[name]
        ledger.act(maker.key, ledger.parts.functions.shipParts(pids, org.id, NO_DOC))
        ledger.act(org.key, ledger.parts.functions.receiveParts(pids, NO_DOC))
    return pids


def count_rows(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def database_bytes(url: str) -> list[tuple[str, bytes]]:
    """Every value of every table of a database, as bytes (text UTF-8 encoded), with its table name."""
    engine = make_engine(url)
    metadata = MetaData()
    metadata.reflect(engine)
    values = []
    with engine.connect() as conn:
        for table in metadata.sorted_tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if value is not None:
                        values.append((table.name, bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()))
    engine.dispose()
    return values


# --- registration ---------------------------------------------------------------------------------------------


def test_register_json_puts_the_parts_in_stock_at_the_manufacturer(stack, ledger):
    maker = ledger.orgs["maker"]
    with serve(stack):
        response = post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A.lstrip("0"), "lot": "L-J", "serials": ["J1", "J2", "J3"]})
        view = confirmed(stack, "maker", response)
        assert response.json()["kind"] == "register" and response.json()["parts"] == 3
        assert view["kind"] == "register" and view["parts"] == 3 and view["organisation"] == maker.id
        assert view["summary"] == {"gtin": GTIN_A, "lot": "L-J"}  # the GTIN-13 given is normalised to GTIN-14
        assert view["site_key"] == stack.site_keys["maker"] and len(view["transactions"]) == 1
        assert ledger.w3.eth.get_transaction(view["transactions"][0]["tx_hash"])["from"] == stack.site_keys["maker"]
        for serial in ("J1", "J2", "J3"):
            assert on_chain(ledger, part_id(GTIN_A, serial)) == (S.IN_STOCK, maker.id, 0)
        part = stack.client.get(f"/v1/parts/{hexid(part_id(GTIN_A, 'J2'))}", headers=stack.headers("maker")).json()["part"]
        assert part["status"] == "in_stock" and part["lot"]["code"] == "L-J"

        refused(post(stack, "maker", "/v1/parts/register", {"gtin": "04012345000017", "lot": "L-J", "serials": ["J4"]}), 400, "invalid_gtin")
        refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L J", "serials": ["J4"]}), 400, "invalid_lot")
    assert on_chain(ledger, part_id(GTIN_A, "J4"))[0] == S.NONE


def test_registering_a_serial_already_on_chain_is_refused_at_once_or_by_the_contract_with_its_part_id(stack, ledger):
    maker = ledger.orgs["maker"]
    [existing] = ledger.register(maker, ["DUP-1"], lot="L-D")
    with serve(stack, submitter=False) as client:
        error = refused(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-D", "serials": ["DUP-0", "DUP-1"]}), 409, "already_registered")
        assert error["details"] == [{"part_id": hexid(existing), "manufacturer": maker.id, "status": "in_stock"}]
        # Registered on chain after the pre-check passed: the contract refuses.
        command = accepted(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-D", "serials": ["DUP-2"]}))
        [existing] = ledger.register(maker, ["DUP-2"], lot="L-D")
        with submitting(client):
            view = wait_command(stack, "maker", command)
    assert view["status"] == "rejected"
    assert view["errors"] == [{"error": "PartLedgerPartAlreadyRegistered", "args": [hexid(existing)], "message": view["errors"][0]["message"]}]
    assert "PartLedgerPartAlreadyRegistered" in view["errors"][0]["message"]
    assert view["transactions"] == [] and view["block"] is None


def test_register_csv_registers_every_row_of_one_gtin_and_lot(stack, ledger):
    maker = ledger.orgs["maker"]
    rows = "".join(f"{GTIN_B},C{index},L-CSV\r\n" for index in range(1, 6))
    with serve(stack):
        view = confirmed(stack, "maker", post_csv(stack, "maker", "\ufeffgtin,serial,lot\r\n" + rows, site="service-site"))
        assert view["kind"] == "register" and view["parts"] == 5 and view["summary"] == {"gtin": GTIN_B, "lot": "L-CSV"}
        assert view["site_key"] == stack.site_keys["maker"]
        assert all(on_chain(ledger, part_id(GTIN_B, f"C{index}")) == (S.IN_STOCK, maker.id, 0) for index in range(1, 6))

        mixed = f"gtin,serial,lot\n{GTIN_B},C6,L-CSV\n{GTIN_B},C7,L-OTHER\n"
        error = refused(post_csv(stack, "maker", mixed), 422, "invalid_rows")
        assert [(row["row"], row["code"]) for row in error["details"]] == [(3, "mixed_batch")]
    assert on_chain(ledger, part_id(GTIN_B, "C6"))[0] == S.NONE


# --- custody -----------------------------------------------------------------------------------------------------


def test_ship_puts_the_parts_in_transit_to_the_named_organisation(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = held_by(ledger, "maker", ["SH1", "SH2"])
    with serve(stack):
        view = confirmed(stack, "maker", post(stack, "maker", "/v1/parts/ship", {"part_ids": ids_of(pids), "to_org": warehouse.id, "doc_hash": DOC}))
        assert view["kind"] == "ship" and view["summary"] == {"doc_hash": DOC, "to": warehouse.id}
        assert [on_chain(ledger, pid) for pid in pids] == [(S.IN_TRANSIT, maker.id, warehouse.id)] * 2
        history = stack.client.get(f"/v1/parts/{hexid(pids[0])}", headers=stack.headers("maker")).json()["history"]
        assert history[-1]["kind"] == "shipped" and history[-1]["doc_hash"] == DOC and history[-1]["site_key"] == stack.site_keys["maker"]

        error = refused(post(stack, "maker", "/v1/parts/ship", {"part_ids": ids_of(pids), "to_org": warehouse.id}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pid), "reason": "status is in_transit"} for pid in pids]


def test_receive_completes_the_hand_over_to_the_recipient(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = held_by(ledger, "maker", ["RC1", "RC2"])
    ledger.act(maker.key, ledger.parts.functions.shipParts(pids, warehouse.id, NO_DOC))
    with serve(stack):
        view = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/receive", {"part_ids": ids_of(pids)}))
        assert view["kind"] == "receive" and view["organisation"] == warehouse.id
        assert [on_chain(ledger, pid) for pid in pids] == [(S.IN_STOCK, warehouse.id, 0)] * 2

        error = refused(post(stack, "warehouse", "/v1/parts/receive", {"part_ids": ids_of(pids[:1])}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pids[0]), "reason": "status is in_stock"}]


def test_cancel_takes_an_unreceived_shipment_back_into_stock(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = held_by(ledger, "maker", ["CA1", "CA2"])
    ledger.act(maker.key, ledger.parts.functions.shipParts(pids, warehouse.id, NO_DOC))
    with serve(stack):
        confirmed(stack, "maker", post(stack, "maker", "/v1/parts/cancel", {"part_ids": ids_of(pids)}))
        assert [on_chain(ledger, pid) for pid in pids] == [(S.IN_STOCK, maker.id, 0)] * 2

        error = refused(post(stack, "warehouse", "/v1/parts/receive", {"part_ids": ids_of(pids)}), 409, "invalid_state")
        assert [problem["reason"] for problem in error["details"]] == ["status is in_stock"] * 2
        refused(post(stack, "maker", "/v1/parts/cancel", {"part_ids": ids_of(pids)}), 409, "invalid_state")


def test_sell_records_a_sale_and_refuses_parts_of_a_recalled_lot(stack, ledger):
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    pids = held_by(ledger, "distributor", ["SE1"], lot="L-SELL")
    recalled = held_by(ledger, "distributor", ["SE2"], lot="L-SELL-R")
    ledger.act(maker.key, ledger.parts.functions.recallLot(ledger.lot_number(maker, "L-SELL-R"), keccak(text="notice")))
    with serve(stack):
        confirmed(stack, "distributor", post(stack, "distributor", "/v1/parts/sell", {"part_ids": ids_of(pids), "doc_hash": DOC}))
        assert on_chain(ledger, pids[0]) == (S.SOLD, distributor.id, 0)

        error = refused(post(stack, "distributor", "/v1/parts/sell", {"part_ids": ids_of(recalled)}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(recalled[0]), "reason": "its lot is recalled"}]
    assert on_chain(ledger, recalled[0]) == (S.IN_STOCK, distributor.id, 0)


# --- vehicles ----------------------------------------------------------------------------------------------------


def test_install_puts_the_vin_on_chain_only_as_a_salted_hash_and_keeps_it_encrypted(stack, ledger):
    workshop = ledger.orgs["workshop"]
    pids = held_by(ledger, "workshop", ["IN1", "IN2"])
    items = [{"part_id": hexid(pid), "vin": vin} for pid, vin in zip(pids, (VINS[0].lower(), VINS[1]))]
    with serve(stack):
        view = confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/install", {"items": items, "doc_hash": DOC}))
        assert view["kind"] == "install" and view["parts"] == 2
        block = view["block"]
        detail = stack.client.get(f"/v1/parts/{hexid(pids[0])}", headers=stack.headers("workshop")).json()["part"]

        refused(post(stack, "workshop", "/v1/parts/install", {"items": items}), 409, "invalid_state")
        refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pids[0]), "vin": "WVWZZZ1JZXW00000I"}]}), 400, "invalid_vin")

    [event] = ledger.parts.events.PartsInstalled.get_logs(from_block=block, to_block=block)
    on_chain_hashes = dict(zip(event["args"]["partIds"], event["args"]["vinHashes"]))
    service = make_engine(stack.service_db_url)
    with service.connect() as conn:
        rows = conn.execute(select(PrivateVin.__table__)).mappings().all()
    assert len(rows) == 2
    vault = Vault.from_key_file(stack.workdir / "vin.key")
    for pid, vin in zip(pids, VINS):
        [row] = [row for row in rows if bytes(row["part_id"]) == pid]
        assert row["org_id"] == workshop.id and row["command_id"] == view["command_id"]
        ciphertext, hashed = bytes(row["ciphertext"]), bytes(row["vin_hash"])
        assert vin.encode() not in ciphertext and vin.lower().encode() not in ciphertext
        plaintext = vault.open(ciphertext, hashed)
        assert plaintext[:17] == vin.encode() and len(plaintext) == 17 + 32
        salt = plaintext[17:]
        assert keccak(salt + vin.encode()) == hashed == on_chain_hashes[pid]
        status, custodian, recipient, _, vin_tag, _ = ledger.status(pid)
        assert (S(status), custodian, recipient) == (S.INSTALLED, workshop.id, 0) and vin_tag == hashed[:15]
    assert detail["status"] == "installed" and detail["vin_hash"] == hexid(on_chain_hashes[pids[0]])
    # The clear VIN is nowhere else: not in any other service table, not in the chain mirror.
    for url in (stack.service_db_url, stack.index_db_url):
        for table, value in database_bytes(url):
            for vin in VINS:
                assert vin.encode() not in value and vin.lower().encode() not in value, f"clear VIN in {table}"


def test_an_install_the_contract_rejects_keeps_no_clear_vin_and_the_parts_installed_keep_theirs(stack, ledger):
    """One part per item: a command of two parts, one of them quarantined after the pre-check, and a command of one
    part quarantined the same way. The contract refuses those items and their encrypted VINs go with them; the
    installed part keeps its VIN, which still checks on /v1/scan."""
    workshop = ledger.orgs["workshop"]
    kept, lost, alone = held_by(ledger, "workshop", ["IV1", "IV2", "IV3"])
    with serve(stack, submitter=False, max_parts_per_tx=1) as client:
        body = {"items": [{"part_id": hexid(kept), "vin": VINS[0]}, {"part_id": hexid(lost), "vin": VINS[1]}]}
        split = accepted(post(stack, "workshop", "/v1/parts/install", body))
        whole = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(alone), "vin": VINS[1]}]}))
        assert vin_rows(stack) == {(split, kept), (split, lost), (whole, alone)}
        ledger.act(workshop.key, ledger.parts.functions.quarantineParts([lost, alone], NO_DOC))  # only the contract sees it
        with submitting(client):
            split_view, whole_view = settled(stack, "workshop", split), settled(stack, "workshop", whole)
        assert split_view["items"] == [{"parts": 1, "state": "confirmed"}, {"parts": 1, "state": "rejected"}]
        assert [(error["error"], error["args"]) for error in split_view["errors"]] == [("PartLedgerWrongStatus", [hexid(lost), int(S.QUARANTINED)])]
        assert whole_view["items"] == [{"parts": 1, "state": "rejected"}]
        assert [(error["error"], error["args"]) for error in whole_view["errors"]] == [("PartLedgerWrongStatus", [hexid(alone), int(S.QUARANTINED)])]
        assert vin_rows(stack) == {(split, kept)}

        def scan(serial: str, vin: str) -> dict[str, Any]:
            response = client.post("/v1/scan", json={"uri": build_uri("http://testserver", gtin=GTIN_A, serial=serial), "vin": vin})
            assert response.status_code == 200, response.text
            return response.json()

        assert (scan("IV1", VINS[0].lower())["vin_match"], scan("IV1", VINS[1])["vin_match"]) == (True, False)
    assert on_chain(ledger, kept) == (S.INSTALLED, workshop.id, 0)
    assert [on_chain(ledger, pid) for pid in (lost, alone)] == [(S.QUARANTINED, workshop.id, 0)] * 2


def test_an_install_that_reverts_on_chain_keeps_no_clear_vin_of_the_part_it_names(stack, ledger):
    """A transaction of two items, mined after a transaction of the workshop's own key that quarantined one of the
    parts: it reverts; that part's item is rejected and its VIN deleted, the other item is signed again, installed,
    and keeps its VIN."""
    workshop = ledger.orgs["workshop"]
    kept, lost = held_by(ledger, "workshop", ["IR1", "IR2"])
    rpc = ledger.w3.provider.make_request
    with serve(stack, submitter=False, max_parts_per_tx=1) as client:
        body = {"items": [{"part_id": hexid(kept), "vin": VINS[0]}, {"part_id": hexid(lost), "vin": VINS[1]}]}
        command = accepted(post(stack, "workshop", "/v1/parts/install", body))
        service = make_engine(stack.service_db_url)
        rpc("evm_setAutomine", [False])
        try:
            with submitting(client):
                deadline = time.monotonic() + 30
                while count_rows(service, T_TX, T_TX.c.state == "sent") == 0:
                    assert time.monotonic() < deadline, "the install was not sent"
                    time.sleep(0.02)
                # A higher tip than the service's zero gas price: mined first in the block.
                quarantine = ledger.parts.functions.quarantineParts([lost], NO_DOC)
                quarantine.transact({"from": workshop.key, "gasPrice": 10**9, "gas": 500_000})
                rpc("evm_mine", [])
                rpc("evm_setAutomine", [True])
                view = settled(stack, "workshop", command)
        finally:
            rpc("evm_setAutomine", [True])
    assert view["items"] == [{"parts": 1, "state": "confirmed"}, {"parts": 1, "state": "rejected"}]
    assert [(error["error"], error["args"]) for error in view["errors"]] == [("PartLedgerWrongStatus", [hexid(lost), int(S.QUARANTINED)])]
    assert count_rows(service, T_TX, T_TX.c.state == "reverted") == 1
    assert vin_rows(stack) == {(command, kept)}
    assert [on_chain(ledger, pid) for pid in (kept, lost)] == [(S.INSTALLED, workshop.id, 0), (S.QUARANTINED, workshop.id, 0)]


def test_an_install_whose_site_key_was_revoked_without_a_replacement_keeps_no_clear_vin(stack, ledger):
    [pid] = held_by(ledger, "workshop", ["IK1"])
    with serve(stack, submitter=False) as client:
        command = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pid), "vin": VINS[0]}]}))
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(stack.site_keys["workshop"]))
        with submitting(client):
            view = settled(stack, "workshop", command)
    assert view["items"] == [{"parts": 1, "state": "rejected"}] and view["transactions"] == []
    assert [error["error"] for error in view["errors"]] == ["ConsortiumRegistryKeyRevoked"]
    assert vin_rows(stack) == set()
    assert on_chain(ledger, pid) == (S.IN_STOCK, ledger.orgs["workshop"].id, 0)


def test_a_revoked_keys_commands_follow_the_site_to_its_new_key_only_for_api_keys_that_may_use_it(stack, ledger):
    """An API key narrowed to the site's name follows the site to its replacement key; one narrowed to the revoked
    key's address does not: its command is rejected with the reason, never signed by a key it may not use."""
    workshop, old = ledger.orgs["workshop"], stack.site_keys["workshop"]
    pids = held_by(ledger, "workshop", ["NS1", "NS2", "NS3", "NS4"])
    service = make_engine(stack.service_db_url)
    by_site = {"Authorization": f"Bearer {create_api_key(service, org_id=workshop.id, sites=['service-site'])}"}
    by_address = {"Authorization": f"Bearer {create_api_key(service, org_id=workshop.id, sites=[old.lower()])}"}  # stored checksummed
    with pytest.raises(ValidationError):
        create_api_key(service, org_id=workshop.id, sites=["0x1234"])
    with serve(stack, submitter=False) as client:
        follows = accepted(client.post("/v1/parts/scrap", headers=by_site, json={"part_ids": [hexid(pids[0])]}))
        barred = accepted(client.post("/v1/parts/scrap", headers=by_address, json={"part_ids": [hexid(pids[1])]}))
        new = create_keystore(stack.keys_dir / "workshop" / "service-site.2.json", PASSPHRASE, light=True)
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(workshop.id, new.address, ascii32("service-site")))
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(old))
        with submitting(client):
            moved, kept_back = settled(stack, "workshop", follows), settled(stack, "workshop", barred)
            assert (moved["status"], moved["site_key"], moved["re_signed_by"]) == ("confirmed", old, [new.address])
            assert (kept_back["status"], kept_back["re_signed_by"], kept_back["transactions"]) == ("rejected", [], [])
            [error] = kept_back["errors"]
            assert error["error"] == "ConsortiumRegistryKeyRevoked"
            assert f"may not use the replacement key {new.address} of site 'service-site'" in error["message"]
            # New requests: the site's name still names the site; the revoked key's address names no usable key.
            again = confirmed(stack, "workshop", client.post("/v1/parts/scrap", headers=by_site, json={"part_ids": [hexid(pids[2])]}))
            assert again["site_key"] == new.address
            refused(client.post("/v1/parts/scrap", headers=by_address, json={"part_ids": [hexid(pids[3])]}), 403, "no_site_key")
    service.dispose()
    assert [on_chain(ledger, pid)[0] for pid in pids] == [S.SCRAPPED, S.IN_STOCK, S.SCRAPPED, S.IN_STOCK]


def test_remove_takes_installed_parts_back_into_the_workshop_stock(stack, ledger):
    workshop = ledger.orgs["workshop"]
    pids = held_by(ledger, "workshop", ["RM1"])
    ledger.act(workshop.key, ledger.parts.functions.installParts(pids, [keccak(text="salted-vin")], NO_DOC))
    with serve(stack):
        confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/remove", {"part_ids": ids_of(pids)}))
        status, custodian, recipient, _, vin_tag, _ = ledger.status(pids[0])
        assert (S(status), custodian, recipient, vin_tag) == (S.IN_STOCK, workshop.id, 0, bytes(15))

        error = refused(post(stack, "workshop", "/v1/parts/remove", {"part_ids": ids_of(pids)}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pids[0]), "reason": "status is in_stock"}]


# --- holds and ends ----------------------------------------------------------------------------------------------


def test_quarantine_holds_parts_back_and_release_returns_them_to_stock(stack, ledger):
    warehouse = ledger.orgs["warehouse"]
    pids = held_by(ledger, "warehouse", ["QU1", "QU2"])
    with serve(stack):
        view = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/quarantine", {"part_ids": ids_of(pids), "doc_hash": DOC}))
        assert view["summary"] == {"doc_hash": DOC}
        assert [on_chain(ledger, pid) for pid in pids] == [(S.QUARANTINED, warehouse.id, 0)] * 2
        error = refused(post(stack, "warehouse", "/v1/parts/quarantine", {"part_ids": ids_of(pids[:1])}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pids[0]), "reason": "status is quarantined"}]

        confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/release", {"part_ids": ids_of(pids[:1])}))
        assert on_chain(ledger, pids[0]) == (S.IN_STOCK, warehouse.id, 0)
        error = refused(post(stack, "warehouse", "/v1/parts/release", {"part_ids": ids_of(pids)}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pids[0]), "reason": "status is in_stock"}]
    assert on_chain(ledger, pids[1]) == (S.QUARANTINED, warehouse.id, 0)


def test_scrap_ends_parts_in_stock_or_quarantined(stack, ledger):
    maker = ledger.orgs["maker"]
    pids = held_by(ledger, "maker", ["SC1", "SC2"])
    ledger.act(maker.key, ledger.parts.functions.quarantineParts(pids[1:], NO_DOC))
    with serve(stack):
        confirmed(stack, "maker", post(stack, "maker", "/v1/parts/scrap", {"part_ids": ids_of(pids)}))
        assert [on_chain(ledger, pid) for pid in pids] == [(S.SCRAPPED, maker.id, 0)] * 2

        error = refused(post(stack, "maker", "/v1/parts/scrap", {"part_ids": ids_of(pids)}), 409, "invalid_state")
        assert [problem["reason"] for problem in error["details"]] == ["status is scrapped"] * 2


def test_recycle_ends_parts_held_by_the_recycler_only(stack, ledger):
    maker, recycler = ledger.orgs["maker"], ledger.orgs["recycler"]
    pids = held_by(ledger, "recycler", ["RY1"])
    makers = held_by(ledger, "maker", ["RY2"])
    with serve(stack):
        confirmed(stack, "recycler", post(stack, "recycler", "/v1/parts/recycle", {"part_ids": ids_of(pids)}))
        assert on_chain(ledger, pids[0]) == (S.RECYCLED, recycler.id, 0)

        error = refused(post(stack, "recycler", "/v1/parts/recycle", {"part_ids": ids_of(makers)}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(makers[0]), "reason": f"custodian is organisation {maker.id}"}]
    assert on_chain(ledger, makers[0]) == (S.IN_STOCK, maker.id, 0)


# --- recalls and evidence ----------------------------------------------------------------------------------------


def test_recall_by_the_lot_manufacturer_or_a_regulator_marks_every_part_recalled(stack, ledger):
    maker = ledger.orgs["maker"]
    pids = held_by(ledger, "maker", ["RL1", "RL2"], lot="L-RC")
    held_by(ledger, "maker", ["RL3"], lot="L-RC2")
    lot, lot2 = ledger.lot_number(maker, "L-RC"), ledger.lot_number(maker, "L-RC2")
    notice = "0x" + keccak(text="recall-notice").hex()
    with serve(stack):
        refused(post(stack, "maker2", "/v1/lots/recall", {"lot": lot, "notice_hash": notice}), 403, "not_lot_manufacturer")
        refused(post(stack, "maker", "/v1/lots/recall", {"lot": 9_999, "notice_hash": notice}), 404, "unknown_lot")

        view = confirmed(stack, "maker", post(stack, "maker", "/v1/lots/recall", {"lot": lot, "notice_hash": notice}))
        assert view["kind"] == "recall" and view["summary"] == {"lot": lot, "notice_hash": notice} and view["parts"] == 0
        assert ledger.parts.functions.lot(lot).call() == [maker.id, True]
        assert all(ledger.status(pid)[5] is True for pid in pids)
        refused(post(stack, "maker", "/v1/lots/recall", {"lot": lot, "notice_hash": notice}), 409, "lot_recalled")

        confirmed(stack, "regulator", post(stack, "regulator", "/v1/lots/recall", {"lot": lot2, "notice_hash": notice}))
        assert ledger.parts.functions.lot(lot2).call() == [maker.id, True]


def test_batches_anchor_a_merkle_root_once(stack, ledger):
    warehouse = ledger.orgs["warehouse"]
    root = "0x" + keccak(text="scan-batch-1").hex()
    body = {"root": root, "record_count": 1_000, "kind": "scan"}
    with serve(stack):
        view = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/batches", body))
        assert view["kind"] == "anchor_batch" and view["summary"] == {"root": root, "record_count": 1_000, "batch_kind": "scan"}
        assert ledger.evidence.functions.batch(bytes.fromhex(root[2:])).call() == (view["block"], warehouse.id, 1_000)

        error = refused(post(stack, "warehouse", "/v1/batches", body), 409, "batch_anchored")
        assert error["message"] == f"this batch root was anchored in block {view['block']}"


# --- following commands -----------------------------------------------------------------------------------------


def test_get_command_shows_a_command_to_its_organisation_auditors_and_regulators_only(stack, ledger):
    with serve(stack) as client:
        command = accepted(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-G", "serials": ["G1"]}))
        for org in ("maker", "auditor", "regulator"):
            response = client.get(f"/v1/commands/{command}", headers=stack.headers(org))
            assert response.status_code == 200 and response.json()["command_id"] == command
        refused(client.get(f"/v1/commands/{command}", headers=stack.headers("maker2")), 404, "unknown_command")
        refused(client.get("/v1/commands/00000000-0000-4000-8000-000000000000", headers=stack.headers("maker")), 404, "unknown_command")
        refused(client.get(f"/v1/commands/{command}"), 401, "unauthorized")
        view = wait_command(stack, "maker", command)
        assert view["status"] == "confirmed" and view["items"] == [{"parts": 1, "state": "confirmed"}]


# --- refusals by the contract, and packing ------------------------------------------------------------------------


def test_a_race_the_pre_check_cannot_see_is_rejected_with_the_contracts_error_and_arguments(stack, ledger):
    """Ship and scrap of the same part, both accepted while it is in stock: the ship lands first, and the scrap's
    simulation reverts with PartLedgerWrongStatus(part, InTransit)."""
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    [pid] = held_by(ledger, "maker", ["RA1"])
    with serve(stack, submitter=False) as client:
        ship = accepted(post(stack, "maker", "/v1/parts/ship", {"part_ids": [hexid(pid)], "to_org": warehouse.id}))
        scrap = accepted(post(stack, "maker", "/v1/parts/scrap", {"part_ids": [hexid(pid)]}))
        with submitting(client):
            assert wait_command(stack, "maker", ship)["status"] == "confirmed"
            view = wait_command(stack, "maker", scrap)
    assert view["status"] == "rejected" and view["items"] == [{"parts": 1, "state": "rejected"}]
    [error] = view["errors"]
    assert (error["error"], error["args"]) == ("PartLedgerWrongStatus", [hexid(pid), int(S.IN_TRANSIT)])
    assert on_chain(ledger, pid) == (S.IN_TRANSIT, maker.id, warehouse.id)


def test_packed_commands_share_one_transaction_and_a_bad_part_rejects_only_its_own_command(stack, ledger):
    maker = ledger.orgs["maker"]
    batches = [["PK1", "PK2"], ["PK3"], ["PK4", "PK-BAD"], ["PK5"], ["PK6", "PK7"]]
    with serve(stack, submitter=False) as client:
        commands = [accepted(post(stack, "maker", "/v1/parts/register", {"gtin": GTIN_A, "lot": "L-PK", "serials": serials})) for serials in batches]
        [bad] = ledger.register(maker, ["PK-BAD"], lot="L-PK")  # after the pre-check: only the contract sees it
        with submitting(client):
            views = [wait_command(stack, "maker", command) for command in commands]
    assert [view["status"] for view in views] == ["confirmed", "confirmed", "rejected", "confirmed", "confirmed"]
    assert views[2]["errors"] == [{"error": "PartLedgerPartAlreadyRegistered", "args": [hexid(bad)], "message": views[2]["errors"][0]["message"]}]
    assert views[2]["transactions"] == []
    [tx] = {view["transactions"][0]["tx_hash"] for view in views if view["status"] == "confirmed"}
    assert all(len(view["transactions"]) == 1 for view in views if view["status"] == "confirmed")
    registered = ledger.parts.events.PartsRegistered.get_logs(from_block=views[0]["block"], to_block=views[0]["block"])
    assert [hexid(log["transactionHash"]) for log in registered] == [tx]
    assert [s.rstrip(b"\0").decode() for s in registered[0]["args"]["serials"]] == ["PK1", "PK2", "PK3", "PK5", "PK6", "PK7"]
    assert on_chain(ledger, part_id(GTIN_A, "PK4"))[0] == S.NONE
    service = make_engine(stack.service_db_url)
    assert count_rows(service, ChainTransaction.__table__) == 1
    assert count_rows(service, Command.__table__) == 5
