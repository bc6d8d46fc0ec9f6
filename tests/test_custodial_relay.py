"""Custodial sites' single-part commands relayed in batches (ledger_service.custodial_relay), on a live Anvil with
the whole stack, on SQLite and on PostgreSQL: the service holds the sites' keys, signs each one-part command as a ForwardRequest and hands it to
the relayer, which packs the requests of many sites into one executeBatch transaction. The site key sends nothing
itself; on chain each act is the site's, as the contracts see it through the forwarder. What the chain refuses after
the hand-over rejects the command with the contract's error; what the forwarder refuses unexecuted (its nonce used
meanwhile) is signed again and lands."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_utils import keccak
from sqlalchemy import select
from web3 import Web3

from ledger_service.app import custodial_relay_config, load_relayer_keys, load_signers
from ledger_service.relay_tables import RelayRequest
from ledger_service.relayer import Relayer, RelayerConfig
from ledger_service.submitter import Submitter, SubmitterConfig
from ledger_service.tables import ChainTransaction, CommandItem, PrivateVin
from partledger.db import make_engine
from partledger.ids import ascii32
from tests.chainkit import Ledger
from tests.relaykit import Relay
from tests.servicekit import PASSPHRASE, Stack, wait_command, wait_until
from tests.test_write_api import NO_DOC, S, accepted, count_rows, held_by, hexid, make_stack, on_chain, post, serve
from wallets.keystore import create_keystore, load_keystore

pytestmark = pytest.mark.chain

VIN = "WVWZZZ1JZXW000001"


@pytest.fixture
def stack(ledger: Ledger, db_url: str, tmp_path, request: pytest.FixtureRequest) -> Stack:
    """Index and service databases of the same kind (SQLite files, or databases of the session's PostgreSQL cluster)."""
    stack = make_stack(ledger, db_url, tmp_path, request)
    for index in (1, 2):
        create_keystore(tmp_path / "relayer" / f"relayer-{index}.json", PASSPHRASE, light=True)
    return stack


def relayed(stack: Stack, **overrides: Any) -> Any:
    """The service with relayer keys (custodial relay on by default) and the indexer."""
    return serve(stack, relayer_keys_dir=stack.workdir / "relayer", **overrides)


@contextmanager
def running(worker: Submitter | Relayer) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def submitting(client: Any) -> Any:
    """A submitter, relaying custodial single-part commands, for a service started with submitter=False: commands
    accepted before it starts are all pending at once."""
    services = client.app.state.services
    relay = custodial_relay_config(services.settings, services.manifest)
    assert relay is not None
    return running(Submitter(
        engine=services.service_engine, w3=Web3(Web3.HTTPProvider(services.manifest.rpc_url)), signers=load_signers(services.settings, services.manifest),
        manifest=services.manifest, config=SubmitterConfig(interval=0.02), relay=relay,
    ))  # fmt: skip


def relaying(client: Any) -> Any:
    """A relayer for a service started with relayer=False: requests handed over before it starts wait for it."""
    services = client.app.state.services
    return running(Relayer(
        engine=services.service_engine, w3=Web3(Web3.HTTPProvider(services.manifest.rpc_url)),
        keys=load_relayer_keys(services.settings, services.manifest), manifest=services.manifest, config=RelayerConfig(interval=0.02),
    ))  # fmt: skip


def confirmed(stack: Stack, org: str, command_id: str) -> dict[str, Any]:
    view = wait_command(stack, org, command_id)
    assert view["status"] == "confirmed", view
    [item] = view["items"]
    assert item["state"] == "confirmed" and "relay_request" in item, view
    return view


def relay_request(stack: Stack, org: str, view: dict[str, Any]) -> dict[str, Any]:
    response = stack.client.get(f"/v1/relay/{view['items'][0]['relay_request']}", headers=stack.headers(org))
    assert response.status_code == 200, response.text
    return response.json()


def handed_over(stack: Stack, count: int) -> None:
    engine = make_engine(stack.service_db_url)
    wait_until(lambda: count_rows(engine, RelayRequest.__table__, RelayRequest.__table__.c.state == "accepted") == count, f"{count} requests handed over")


def test_one_part_commands_of_several_sites_ride_in_one_batch_and_act_as_their_sites(stack, ledger):
    orgs = ledger.orgs
    recipients = ["workshop", "workshop", "distributor", "warehouse", "workshop2", "recycler"]
    pids = held_by(ledger, "maker", [f"CR{index}" for index in range(len(recipients))], lot="L-CR")
    maker_key = stack.site_keys["maker"]
    relay = Relay(ledger)
    with relayed(stack, submitter=False) as client:
        # Each its own delivery note: no two could share a transaction of the maker's key.
        ships = [
            accepted(post(stack, "maker", "/v1/parts/ship", {"part_ids": [hexid(pid)], "to_org": orgs[to].id, "doc_hash": hexid(keccak(text=f"dn-{i}"))}))
            for i, (pid, to) in enumerate(zip(pids, recipients))
        ]  # fmt: skip
        with submitting(client):
            views = [confirmed(stack, "maker", command) for command in ships]
            # One batch carried them all: one transaction, to the forwarder, from a relayer key.
            [tx_hash] = {view["transactions"][0]["tx_hash"] for view in views}
            tx = ledger.w3.eth.get_transaction(tx_hash)
            assert tx["to"] == ledger.manifest.forwarder and tx["from"] not in stack.site_keys.values()
            receipt = ledger.w3.eth.get_transaction_receipt(tx_hash)
            assert [(signer, ok) for signer, _, ok in relay.outcomes(receipt)] == [(maker_key, True)] * len(ships)
            assert relay_request(stack, "maker", views[0])["status"] == "confirmed"

            # The recipients' custodial keys relay their own one-part commands: receipts, then an installation with
            # its VIN kept encrypted, a quarantine and a scrap.
            receipts = {pid: accepted(post(stack, to, "/v1/parts/receive", {"part_ids": [hexid(pid)]})) for pid, to in zip(pids[:3], recipients)}
            for pid, command in receipts.items():
                confirmed(stack, recipients[pids.index(pid)], command)
            install = confirmed(stack, "workshop", accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pids[0]), "vin": VIN}]})))
            confirmed(stack, "workshop", accepted(post(stack, "workshop", "/v1/parts/quarantine", {"part_ids": [hexid(pids[1])]})))
            confirmed(stack, "workshop", accepted(post(stack, "workshop", "/v1/parts/scrap", {"part_ids": [hexid(pids[1])]})))

    assert [on_chain(ledger, pid) for pid in pids[:3]] == [(S.INSTALLED, orgs["workshop"].id, 0), (S.SCRAPPED, orgs["workshop"].id, 0), (S.IN_STOCK, orgs["distributor"].id, 0)]
    assert [on_chain(ledger, pid) for pid in pids[3:]] == [(S.IN_TRANSIT, orgs["maker"].id, orgs[to].id) for to in recipients[3:]]
    # The events name the site keys the service holds, as for a transaction of their own; those keys sent nothing.
    [installed] = ledger.parts.events.PartsInstalled.get_logs(from_block=install["block"], to_block=install["block"])
    assert installed["args"]["siteKey"] == stack.site_keys["workshop"]
    assert all(ledger.w3.eth.get_transaction_count(key) == 0 for key in stack.site_keys.values())
    service = make_engine(stack.service_db_url)
    assert count_rows(service, ChainTransaction.__table__) == 0
    with service.connect() as conn:
        [vin] = conn.execute(select(PrivateVin.__table__)).mappings().all()
    assert bytes(vin["part_id"]) == pids[0] and bytes(vin["vin_hash"]) == bytes(installed["args"]["vinHashes"][0])


def test_a_part_of_a_batch_waits_for_its_linger_and_a_full_batch_goes_at_once(stack, ledger):
    """The relayer's passes with a linger: requests fewer than a batch wait while the oldest is younger than the
    linger (no transaction, nothing marked relayed); as many as a batch go at once; the rest go once they have waited
    the linger (here 0); all land."""
    warehouse = ledger.orgs["warehouse"]
    pids = held_by(ledger, "maker", [f"CR-L{index}" for index in range(4)], lot="L-CR")
    with relayed(stack, relayer=False) as client:
        commands = [accepted(post(stack, "maker", "/v1/parts/ship", {"part_ids": [hexid(pid)], "to_org": warehouse.id, "doc_hash": hexid(keccak(text=f"dn-l{index}"))})) for index, pid in enumerate(pids[:3])]
        handed_over(stack, 3)
        services = client.app.state.services
        relayer = Relayer(
            engine=services.service_engine, w3=Web3(Web3.HTTPProvider(services.manifest.rpc_url)),
            keys=load_relayer_keys(services.settings, services.manifest), manifest=services.manifest, config=RelayerConfig(batch_size=4, linger=3_600),
        )  # fmt: skip
        engine = make_engine(stack.service_db_url)
        table = RelayRequest.__table__

        def states() -> list[str]:
            with engine.connect() as conn:
                return sorted(conn.execute(select(table.c.state)).scalars())

        assert relayer.pack() is False and states() == ["accepted"] * 3  # 3 of a batch of 4, none waiting an hour
        relayer.config = RelayerConfig(batch_size=3, linger=3_600)
        assert relayer.pack() is True and states() == ["relayed"] * 3  # a full batch: at once
        commands.append(accepted(post(stack, "maker", "/v1/parts/ship", {"part_ids": [hexid(pids[3])], "to_org": warehouse.id, "doc_hash": hexid(keccak(text="dn-l3"))})))
        handed_over(stack, 1)
        assert relayer.pack() is False and states() == ["accepted"] + ["relayed"] * 3
        relayer.config = RelayerConfig(batch_size=3, linger=0.0, interval=0.02)
        with running(relayer):
            views = [confirmed(stack, "maker", command) for command in commands]
    assert len({view["transactions"][0]["tx_hash"] for view in views}) == 2  # the full batch, and the one that waited
    assert [on_chain(ledger, pid) for pid in pids] == [(S.IN_TRANSIT, ledger.orgs["maker"].id, warehouse.id)] * 4


def test_a_request_the_chain_refuses_after_the_hand_over_rejects_its_command_and_drops_the_vin(stack, ledger):
    workshop = ledger.orgs["workshop"]
    [pid] = held_by(ledger, "workshop", ["CR-RACE"], lot="L-CR")
    with relayed(stack, relayer=False) as client:
        command = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pid), "vin": VIN}]}))
        handed_over(stack, 1)
        ledger.act(workshop.key, ledger.parts.functions.scrapParts([pid], NO_DOC))  # by the site's other key, meanwhile
        with relaying(client):
            view = wait_command(stack, "workshop", command)
    assert view["status"] == "rejected", view
    [error] = view["errors"]
    assert (error["error"], error["args"]) == ("PartLedgerWrongStatus", [hexid(pid), int(S.SCRAPPED)])
    request = relay_request(stack, "workshop", view)
    assert request["status"] == "failed" and request["error"]["error"] == "PartLedgerWrongStatus"
    assert on_chain(ledger, pid) == (S.SCRAPPED, workshop.id, 0)
    assert count_rows(make_engine(stack.service_db_url), PrivateVin.__table__) == 0


def test_a_request_whose_nonce_was_used_meanwhile_is_signed_again_and_lands(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pid, other = held_by(ledger, "maker", ["CR-N1", "CR-N2"], lot="L-CR")
    relay = Relay(ledger)
    site_key = load_keystore(stack.workdir / "keys" / "maker" / "service-site.json", PASSPHRASE)
    with relayed(stack, relayer=False) as client:
        command = accepted(post(stack, "maker", "/v1/parts/ship", {"part_ids": [hexid(pid)], "to_org": warehouse.id}))
        handed_over(stack, 1)
        # The same key uses that forwarder nonce elsewhere first (another relayer): the handed-over request is stale.
        relay.execute(relay.sign(site_key.address, ledger.parts.functions.shipParts([other], warehouse.id, NO_DOC), signer=site_key))
        with relaying(client):
            view = confirmed(stack, "maker", command)
    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        requests = conn.execute(select(RelayRequest.__table__).order_by(RelayRequest.__table__.c.nonce)).mappings().all()
        [item] = conn.execute(select(CommandItem.__table__)).mappings().all()
    assert [(r["nonce"], r["state"], r["error_name"]) for r in requests] == [(0, "failed", "ERC2771ForwarderInvalidSigner"), (1, "confirmed", None)]
    assert view["items"][0]["relay_request"] == requests[1]["id"] and item["relay_attempts"] == 1
    assert on_chain(ledger, pid) == on_chain(ledger, other) == (S.IN_TRANSIT, maker.id, warehouse.id)


def test_a_request_refused_for_a_revoked_key_follows_the_site_to_its_new_key(stack, ledger):
    """Handed over signed by the site's key, which is then revoked: the forwarded call reverts with
    ConsortiumRegistryKeyRevoked, the item goes to the site's replacement key, signed again and relayed; the
    install happens once, in the new key's name, and its VIN is kept."""
    workshop, old = ledger.orgs["workshop"], stack.site_keys["workshop"]
    [pid] = held_by(ledger, "workshop", ["CR-REV"], lot="L-CR")
    with relayed(stack, relayer=False) as client:
        command = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pid), "vin": VIN}]}))
        handed_over(stack, 1)
        new = create_keystore(stack.keys_dir / "workshop" / "service-site.2.json", PASSPHRASE, light=True)
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(workshop.id, new.address, ascii32("service-site")))
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(old))
        with relaying(client):
            view = confirmed(stack, "workshop", command)
    assert (view["site_key"], view["re_signed_by"]) == (old, [new.address])
    engine = make_engine(stack.service_db_url)
    with engine.connect() as conn:
        requests = conn.execute(select(RelayRequest.__table__).order_by(RelayRequest.__table__.c.created_at)).mappings().all()
    assert [(r["signer"], r["state"], r["error_name"]) for r in requests] == [(old, "failed", "ConsortiumRegistryKeyRevoked"), (new.address, "confirmed", None)]
    [installed] = ledger.parts.events.PartsInstalled.get_logs(from_block=view["block"], to_block=view["block"])
    assert installed["args"]["siteKey"] == new.address and installed["args"]["partIds"] == [pid]
    assert count_rows(engine, PrivateVin.__table__) == 1


def test_a_request_refused_for_a_revoked_key_without_a_replacement_rejects_its_command(stack, ledger):
    [pid] = held_by(ledger, "workshop", ["CR-REV2"], lot="L-CR")
    with relayed(stack, relayer=False) as client:
        command = accepted(post(stack, "workshop", "/v1/parts/install", {"items": [{"part_id": hexid(pid), "vin": VIN}]}))
        handed_over(stack, 1)
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(stack.site_keys["workshop"]))
        with relaying(client):
            view = wait_command(stack, "workshop", command)
    assert view["status"] == "rejected" and [error["error"] for error in view["errors"]] == ["ConsortiumRegistryKeyRevoked"]
    assert on_chain(ledger, pid) == (S.IN_STOCK, ledger.orgs["workshop"].id, 0)
    assert count_rows(make_engine(stack.service_db_url), PrivateVin.__table__) == 0
