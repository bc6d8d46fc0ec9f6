"""The chain loses what the submitter recorded, and the submitter notices.

- A nonce taken under its feet: another transaction of the same key is mined with the nonce of one the service
  signed and sent. Behind a load-balanced RPC a lagging node answers "nonce too low" for our own mined transaction
  too, so the submitter voids its transaction only when that answer, without our receipt, has held for a while and a
  few blocks; then its items are signed again with a fresh nonce, and the command is confirmed once.
- Blocks lost after confirmation (a devnet node restarted from a state file missing its newest blocks, a
  reorganisation deeper than the confirmations): the transaction goes back to sent and its bytes are sent again;
  the key's later transactions do not wait behind the hole for good.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from ledger_service.submitter import Submitter, SubmitterConfig
from ledger_service.tables import ChainTransaction
from partledger.chain import STALLED_CHAIN_FACTOR
from partledger.db import make_engine
from partledger.ids import part_id
from partledger.model import PartStatus
from tests.chainkit import GTIN_A, Ledger
from tests.servicekit import PASSPHRASE, prepare_stack, running_service, wait_command
from wallets.signer import LocalSigner

T_TX = ChainTransaction.__table__
NONCE_TAKEN_SECONDS = 2.0  # "nonce too low" is first seen ~5 s in (RESEND_AFTER_SECONDS); no block then voids it 3 times this later: room for a slow machine


def transactions(engine) -> list[dict]:
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(select(T_TX.c.id, T_TX.c.nonce, T_TX.c.state, T_TX.c.tx_hash).order_by(T_TX.c.id)).mappings()]


@pytest.mark.parametrize("chain_moves", [True, False], ids=["blocks-come", "no-block-comes"])
def test_a_nonce_taken_by_another_transaction_is_voided_only_after_it_held_and_the_command_is_signed_again(ledger: Ledger, tmp_path: Path, chain_moves: bool) -> None:
    """With blocks coming, the transaction is void once "nonce too low" has held NONCE_TAKEN_SECONDS and 2 blocks;
    on a chain that makes no block (an automining devnet with nothing else to mine), once it has held
    STALLED_CHAIN_FACTOR times as long: waiting for blocks only these items would bring was a hang."""
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    maker_key = stack.site_keys["maker"]
    signer = LocalSigner.from_keystore(stack.keys_dir / "maker" / "service-site.json", PASSPHRASE)
    engine = make_engine(stack.service_db_url)
    w3, rpc = ledger.w3, ledger.w3.provider.make_request
    config = SubmitterConfig(nonce_taken_seconds=NONCE_TAKEN_SECONDS)
    submitter = Submitter(engine=engine, w3=w3, signers={maker_key: signer}, manifest=stack.ledger.manifest, config=config)
    with running_service(stack, submitter=False) as client:
        answer = client.post("/v1/parts/register", headers=stack.headers("maker"), json={"gtin": GTIN_A, "lot": "L-NONCE", "serials": ["N-1", "N-2"]})
        assert answer.status_code == 202, answer.text
        command = answer.json()["command_id"]
        rpc("evm_setAutomine", [False])
        try:
            while not transactions(engine):
                submitter.step()
            (ours,) = transactions(engine)
            assert ours["state"] == "sent"
            # The transaction leaves the node's pool, and another one of the same key takes its nonce.
            rpc("anvil_dropTransaction", ["0x" + bytes(ours["tx_hash"]).hex()])
            other = signer.sign_transaction({"to": maker_key, "value": 0, "gas": 21_000, "gasPrice": 0, "nonce": ours["nonce"], "chainId": w3.eth.chain_id})
            w3.eth.send_raw_transaction(other.raw_transaction)
            rpc("evm_mine", [])
            # The submitter sends its bytes again after a while; the node says "nonce too low" and has no receipt
            # of ours: not voided yet, however often it asks, until the answer has held long enough and 2 blocks.
            started = time.monotonic()
            while time.monotonic() - started < 5.0 + NONCE_TAKEN_SECONDS + 0.5:
                submitter.step()
                assert transactions(engine)[0]["state"] == "sent"
                time.sleep(0.05)
            head = w3.eth.block_number
            if chain_moves:
                rpc("evm_mine", [])
                rpc("evm_mine", [])
            deadline = time.monotonic() + 30 + STALLED_CHAIN_FACTOR * NONCE_TAKEN_SECONDS
            while transactions(engine)[0]["state"] == "sent" and time.monotonic() < deadline:
                submitter.step()
                time.sleep(0.05)
            assert transactions(engine)[0]["state"] == "void"
            assert w3.eth.block_number == head + (2 if chain_moves else 0)
        finally:
            rpc("evm_setAutomine", [True])
        for _ in range(100):
            submitter.step()
            view = client.get(f"/v1/commands/{command}", headers=stack.headers("maker")).json()
            if view["status"] == "confirmed":
                break
            time.sleep(0.05)

    assert view["status"] == "confirmed", view
    first, second = transactions(engine)
    assert first["state"] == "void" and second["state"] == "confirmed" and second["nonce"] == first["nonce"] + 1
    assert {ledger.status(part_id(GTIN_A, serial))[0] for serial in ("N-1", "N-2")} == {PartStatus.IN_STOCK}
    serials = [bytes(serial).rstrip(b"\0") for log in ledger.parts.events.PartsRegistered.get_logs(from_block=0) for serial in log["args"]["serials"]]
    assert sorted(serial for serial in serials if serial.startswith(b"N-")) == [b"N-1", b"N-2"]  # once each


def test_a_confirmed_transaction_the_chain_lost_is_sent_again_and_the_keys_later_work_goes_on(ledger: Ledger, tmp_path: Path) -> None:
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    engine = make_engine(stack.service_db_url)
    rpc = ledger.w3.provider.make_request
    with running_service(stack) as client:
        headers = stack.headers("maker")
        before = rpc("evm_snapshot", [])["result"]
        first = client.post("/v1/parts/register", headers=headers, json={"gtin": GTIN_A, "lot": "L-LOST", "serials": ["LOST-1"]}).json()["command_id"]
        assert wait_command(stack, "maker", first)["status"] == "confirmed"
        (lost,) = transactions(engine)
        rpc("evm_revert", [before])  # the node forgets the block with our transaction (and the transaction)
        assert ledger.w3.eth.get_transaction_count(stack.site_keys["maker"], "latest") == lost["nonce"]
        later = client.post("/v1/parts/register", headers=headers, json={"gtin": GTIN_A, "lot": "L-LATER", "serials": ["LATER-1"]}).json()["command_id"]
        views = {command: wait_command(stack, "maker", command, timeout=30) for command in (first, later)}

    assert [view["status"] for view in views.values()] == ["confirmed", "confirmed"], views
    assert {ledger.status(part_id(GTIN_A, serial))[0] for serial in ("LOST-1", "LATER-1")} == {PartStatus.IN_STOCK}
    resent, second = transactions(engine)
    assert resent["id"] == lost["id"] and resent["tx_hash"] == lost["tx_hash"] and resent["state"] == "confirmed"  # the same bytes
    assert second["nonce"] == lost["nonce"] + 1 and second["state"] == "confirmed"
