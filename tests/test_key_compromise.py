"""Key compromise drill: a manufacturer's plant streams registrations through the API while the operator revokes the
plant's site key with `partledger wallet revoke` (the real CLI, as a subprocess) — twice: first the key in use, whose
commands the plant's standby key (a second key added for the same site) takes over; then that standby key too, when
the site has no key left. At each revocation the key has transactions signed and sent but not mined (the node mines
only when the test says so) and commands accepted but not signed.

In the end every accepted command is confirmed or rejected with the chain's error and a reason, none is lost; nothing
a revoked key signed takes effect after its revocation (the chain refuses it); and the verify page flags labels
signed by a revoked key on parts registered after its revocation, while the labels it signed before stay genuine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import func, select

from indexer import migrate as index_migrate
from indexer.tables import SiteKey
from labels.digital_link import build_uri
from labels.signature import label_domain, sign_label
from ledger_service import migrate as service_migrate
from ledger_service.auth import Principal
from ledger_service.errors import ApiError
from ledger_service.outbox import Outbox
from ledger_service.tables import ChainTransaction, CommandItem
from partledger.db import make_engine
from partledger.ids import ascii32, part_id
from partledger.manifest import Manifest, load_manifest, save_manifest
from partledger.model import PartStatus, Role
from tests.chainkit import GTIN_A, Ledger, dev_account
from tests.labelkit import JSON, target
from tests.servicekit import PASSPHRASE, Stack, prepare_stack, running_service, wait_command, wait_until
from tests.test_write_api import caught_up
from wallets.keystore import create_keystore, keystore_address
from wallets.signer import LocalSigner

T_TX, T_ITEM = ChainTransaction.__table__, CommandItem.__table__
SERIALS_PER_COMMAND = 3
CONFIRMED_BEFORE_EACH_REVOCATION = 8
OPEN_COMMANDS = 12  # the plant posts ahead of the chain by at most this many commands
TIMEOUT = 60.0


class Miner:
    """Anvil with automine off, mining a block every 50 ms unless paused, so that transactions can be held in the
    node's pool, signed and sent but not mined, at the moment of a revocation."""

    def __init__(self, ledger: Ledger) -> None:
        self.rpc = ledger.w3.provider.make_request
        self.running = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Miner:
        self.rpc("evm_setAutomine", [False])
        self.running.set()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.rpc("evm_setAutomine", [True])

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.running.is_set():
                self.rpc("evm_mine", [])
            time.sleep(0.05)

    def mine(self) -> None:
        self.rpc("evm_mine", [])


class Plant:
    """The site's stream: registration commands, each of its own lot (so that each is a transaction of its own),
    posted one after another until stopped, at most OPEN_COMMANDS of them not yet mined or rejected."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.engine = make_engine(stack.service_db_url)
        self.accepted: list[tuple[str, list[str]]] = []  # (command id, serials)
        self.refused: list[tuple[int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Plant:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            if count(self.engine, T_ITEM, T_ITEM.c.state.in_(("pending", "signed", "sent"))) >= OPEN_COMMANDS:
                time.sleep(0.02)
                continue
            number += 1
            serials = [f"KC{number:03d}-{index}" for index in range(SERIALS_PER_COMMAND)]
            body = {"gtin": GTIN_A, "lot": f"KC-{number:03d}", "serials": serials}
            response = self.stack.client.post("/v1/parts/register", headers=self.stack.headers("maker"), json=body)  # type: ignore[union-attr]
            if response.status_code == 202:
                self.accepted.append((response.json()["command_id"], serials))
            else:
                self.refused.append((response.status_code, response.json()["error"]["code"]))
                time.sleep(0.1)
            time.sleep(0.01)


def count(engine: Any, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


@pytest.fixture
def drill(ledger: Ledger, tmp_path: Path) -> dict[str, Any]:
    """A stack whose maker site 'service-site' has two service-held keys (the second a standby), and the operator's
    keystore and a manifest for the CLI. The operator pays a gas price of 1 where the sites pay 0: on a node that
    orders its pool by fee (Anvil, Besu) the revocation is mined ahead of the compromised key's queued transactions."""
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    standby = create_keystore(stack.keys_dir / "maker" / "service-site.2.json", PASSPHRASE, light=True)
    ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(ledger.orgs["maker"].id, standby.address, ascii32("service-site")))
    return with_operator(stack, tmp_path) | {"standby": standby.address}


@pytest.fixture
def single_key_drill(ledger: Ledger, tmp_path: Path) -> dict[str, Any]:
    """A stack whose maker site 'service-site' has one service-held key, and the operator's keystore."""
    stack = prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")
    return with_operator(stack, tmp_path)


def with_operator(stack: Stack, tmp_path: Path) -> dict[str, Any]:
    operator = tmp_path / "operator" / "operator.json"
    operator.parent.mkdir()
    operator.write_text(json.dumps(Account.encrypt(dev_account(0).key, PASSPHRASE, kdf="scrypt", iterations=2**4)))
    (tmp_path / "operator" / "passphrase").write_text(PASSPHRASE + "\n")
    manifest = tmp_path / "operator" / "manifest.json"
    save_manifest(Manifest(**{**load_manifest(stack.manifest_path).__dict__, "gas_price": 1}), manifest)
    return {"stack": stack, "primary": stack.site_keys["maker"], "operator": operator, "manifest": manifest}


def revoke_mid_stream(drill: dict[str, Any], miner: Miner, key: str, *, confirmed_before: int) -> int:
    """Holds the node's mining until `key` has transactions sent but not mined and commands waiting to be signed,
    then revokes it with the CLI and lets the node mine again. The revocation block."""
    stdout = wallet_mid_stream(drill, miner, key, ["revoke", "--address", key], confirmed_before=confirmed_before)
    match = re.fullmatch(rf"revoked {key}  in block (\d+)  \(org {drill['stack'].ledger.orgs['maker'].id}, site service-site\)\n", stdout)
    assert match, stdout
    return int(match.group(1))


def wallet_mid_stream(
    drill: dict[str, Any], miner: Miner, key: str, command: list[str], *, confirmed_before: int, operator_transactions: int = 1,
    before_last: Callable[[], bool] = lambda: True,
) -> str:  # fmt: skip
    """Holds the node's mining until `key` has transactions sent but not mined and commands waiting to be signed,
    then runs `partledger wallet COMMAND` as the operator, mining one block for each of its `operator_transactions`
    as it sends them (the last one once `before_last()`), and lets the node mine again. Its output."""
    stack, ledger = drill["stack"], drill["stack"].ledger
    engine = make_engine(stack.service_db_url)
    wait_until(lambda: count(engine, T_ITEM, T_ITEM.c.state == "confirmed", T_ITEM.c.signer == key) >= confirmed_before, f"{key} confirms", TIMEOUT)
    miner.running.clear()
    wait_until(
        lambda: count(engine, T_TX, T_TX.c.signer == key, T_TX.c.state == "sent") >= 3 and count(engine, T_ITEM, T_ITEM.c.signer == key, T_ITEM.c.state == "pending") >= 2,
        f"{key} has transactions in the pool and commands waiting", TIMEOUT,
    )  # fmt: skip
    operator = dev_account(0).address
    cli = subprocess.Popen(
        [sys.executable, "-m", "partledger_cli", "wallet", *command, "--operator-keystore", str(drill["operator"]),
         "--manifest", str(drill["manifest"]), "--passphrase-file", str(drill["operator"].parent / "passphrase")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for number in range(operator_transactions):
            latest = ledger.w3.eth.get_transaction_count(operator, "latest")
            wait_until(lambda: ledger.w3.eth.get_transaction_count(operator, "pending") > latest or cli.poll() is not None, "the operator's transaction is sent", TIMEOUT)
            if number == operator_transactions - 1:
                wait_until(lambda: before_last() or cli.poll() is not None, "the moment of the last operator transaction", TIMEOUT)
                drill.setdefault("waiting", []).append(count(engine, T_ITEM, T_ITEM.c.signer == key, T_ITEM.c.state == "pending"))
            miner.mine()
        miner.running.set()
        stdout, stderr = cli.communicate(timeout=TIMEOUT)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 0, stderr
    return stdout


def transactions_of(ledger: Ledger, key: str, first: int, last: int) -> list[tuple[int, int, int]]:
    """(block, index, status) of every transaction sent by `key` in blocks first..last."""
    found = []
    for number in range(first, last + 1):
        block = ledger.w3.eth.get_block(number, full_transactions=True)
        for tx in block["transactions"]:
            if tx["from"] == key:
                found.append((number, tx["transactionIndex"], ledger.w3.eth.get_transaction_receipt(tx["hash"])["status"]))
    return found


def verdict(stack: Stack, signer: LocalSigner, serial: str) -> str:
    ledger = stack.ledger
    domain = label_domain(chain_id=ledger.manifest.chain_id, part_ledger=ledger.manifest.address("PartLedger"))
    uri = build_uri("http://testserver", gtin=GTIN_A, serial=serial, signature=sign_label(signer, domain, gtin=GTIN_A, serial=serial))
    answer = stack.client.get(target(uri), headers=JSON)  # type: ignore[union-attr]
    assert answer.status_code == 200, answer.text
    return answer.json()["verdict"]


def test_pending_commands_of_a_revoked_key_are_re_signed_by_the_sites_replacement_or_rejected_with_a_reason(drill):
    stack, primary, standby = drill["stack"], drill["primary"], drill["standby"]
    ledger = stack.ledger
    engine = make_engine(stack.service_db_url)
    with running_service(stack, public_rate_limit="10000/minute"), Miner(ledger) as miner, Plant(stack) as plant:
        caught_up(stack)
        first_revocation = revoke_mid_stream(drill, miner, primary, confirmed_before=CONFIRMED_BEFORE_EACH_REVOCATION)
        second_revocation = revoke_mid_stream(drill, miner, standby, confirmed_before=CONFIRMED_BEFORE_EACH_REVOCATION)
        # The stream goes on until the mirror has the second revocation and the API refuses at once.
        wait_until(lambda: plant.refused, "the API refuses the site's writes", TIMEOUT)
        plant.stop()
        views = {command: wait_command(stack, "maker", command, timeout=TIMEOUT) for command, _ in plant.accepted}
        caught_up(stack)
        head = ledger.w3.eth.block_number

        # Labels signed by each key, on parts registered before its revocation and after it.
        primary_signer = LocalSigner.from_keystore(stack.keys_dir / "maker" / "service-site.json", PASSPHRASE)
        standby_signer = LocalSigner.from_keystore(stack.keys_dir / "maker" / "service-site.2.json", PASSPHRASE)
        by_block = {}
        for command, serials in plant.accepted:
            if views[command]["status"] == "confirmed":
                by_block.setdefault(views[command]["block"], serials[0])
        before_first = by_block[min(block for block in by_block if block < first_revocation)]
        between = by_block[min(block for block in by_block if first_revocation < block < second_revocation)]
        ledger.act(ledger.orgs["maker"].key, ledger.parts.functions.registerParts(int(GTIN_A), ascii32("KC-LATE"), [ascii32("KC-LATE")]))
        caught_up(stack)
        verdicts = {
            (signer_name, serial_name): verdict(stack, signer, serial)
            for signer_name, signer in (("primary", primary_signer), ("standby", standby_signer))
            for serial_name, serial in (("before", before_first), ("between", between), ("after", "KC-LATE"))
        }  # fmt: skip

    statuses = [view["status"] for view in views.values()]
    re_signed = [view for view in views.values() if view["re_signed_by"] == [standby]]
    rejected = [view for view in views.values() if view["status"] == "rejected"]
    figures = {
        "accepted": len(views), "confirmed": statuses.count("confirmed"), "re-signed": len(re_signed),
        "rejected": len(rejected), "lost": len(views) - statuses.count("confirmed") - len(rejected),
        "re-signed and confirmed": sum(view["status"] == "confirmed" for view in re_signed), "refused at once": len(plant.refused),
        "in the pool at each revocation (reverted)": [count(engine, T_TX, T_TX.c.signer == key, T_TX.c.state == "reverted") for key in (primary, standby)],
        "waiting to be signed at each revocation": drill["waiting"],
    }  # fmt: skip
    print(f"\nkey compromise drill: {figures}; revoked in blocks {first_revocation} and {second_revocation}")
    assert figures["lost"] == 0 and figures["re-signed"] >= 2 and figures["rejected"] >= 2
    assert set(plant.refused) == {(403, "no_site_key")}

    # Re-signed commands were accepted for the primary key and confirmed by the standby key after the revocation.
    for view in re_signed:
        assert view["site_key"] == primary
        if view["status"] == "confirmed":
            assert first_revocation < view["block"] < second_revocation
            assert {ledger.w3.eth.get_transaction(tx["tx_hash"])["from"] for tx in view["transactions"] if tx["block"] == view["block"]} == {standby}
    # Rejected: with the chain's error, its arguments and the reason.
    for view in rejected:
        assert [(error["error"], error["args"]) for error in view["errors"]] == [("ConsortiumRegistryKeyRevoked", [standby, second_revocation])]
        assert "holds no other active key of that organisation for site 'service-site'" in view["errors"][0]["message"]

    # Nothing signed by a revoked key took effect after its revocation: in the revocation block, its transactions
    # after the revocation reverted, and so did any it sent later. The submitter simulates on the latest block (not
    # on the node's pool, which Anvil replays for every call): a transaction simulated on the block before the
    # revocation's and sent after it reaches the chain, and the contract refuses it.
    for key, revoked in ((primary, first_revocation), (standby, second_revocation)):
        first_in_block = ledger.w3.eth.get_block(revoked, full_transactions=True)["transactions"][0]
        assert first_in_block["from"] == dev_account(0).address  # the operator's revocation, first in its block
        sent = transactions_of(ledger, key, revoked, head)
        assert [status for _, _, status in sent] == [0] * len(sent)
        assert count(engine, T_TX, T_TX.c.signer == key, T_TX.c.state == "reverted") == len(sent) >= 1  # signed, not yet mined: refused
    # The chain has each confirmed command's parts, once; no rejected command's.
    registered = [s.rstrip(b"\0").decode() for log in ledger.parts.events.PartsRegistered.get_logs(from_block=0) for s in log["args"]["serials"]]
    confirmed_serials = [s for command, serials in plant.accepted if views[command]["status"] == "confirmed" for s in serials]
    assert sorted(s for s in registered if s.startswith("KC") and s != "KC-LATE") == sorted(confirmed_serials)
    assert all(ledger.status(part_id(GTIN_A, serials[0]))[0] == PartStatus.NONE for command, serials in plant.accepted if views[command]["status"] == "rejected")

    assert verdicts == {
        ("primary", "before"): "genuine", ("primary", "between"): "key_revoked", ("primary", "after"): "key_revoked",
        ("standby", "before"): "genuine", ("standby", "between"): "genuine", ("standby", "after"): "key_revoked",
    }  # fmt: skip


def test_a_key_rotated_mid_stream_hands_its_pending_commands_to_the_new_key_without_a_restart(single_key_drill):
    """`partledger wallet rotate` on the key in use while commands are in flight: the new keystore lands in the
    service's key directory, the service opens it when the chain refuses the old key, and every accepted command
    is confirmed: those the old key had signed but the chain had not mined are re-signed by the new key."""
    drill, stack, primary = single_key_drill, single_key_drill["stack"], single_key_drill["primary"]
    ledger = stack.ledger
    with running_service(stack, public_rate_limit="10000/minute"), Miner(ledger) as miner, Plant(stack) as plant:
        caught_up(stack)
        rotate = ["rotate", "--keystore", str(stack.keys_dir / "maker" / "service-site.json")]
        replacement = stack.keys_dir / "maker" / "service-site.2.json"
        engine = make_engine(stack.service_db_url)

        def old_key_busy() -> bool:
            """Once the new key is on chain, the old one goes on signing until the revocation is mined: it has
            transactions in the node's pool, or the service saw the revocation pending and moved its commands."""
            queued = ledger.w3.eth.get_transaction_count(primary, "pending") > ledger.w3.eth.get_transaction_count(primary, "latest")
            return queued or (replacement.exists() and count(engine, T_ITEM, T_ITEM.c.signer == keystore_address(replacement)) > 0)

        stdout = wallet_mid_stream(drill, miner, primary, rotate, confirmed_before=CONFIRMED_BEFORE_EACH_REVOCATION, operator_transactions=2, before_last=old_key_busy)
        new = re.search(r"^new (0x[0-9a-fA-F]{40})  added in block (\d+)", stdout, re.MULTILINE)
        revoked = re.search(rf"^old {primary}  revoked in block (\d+)", stdout, re.MULTILINE)
        assert new and revoked, stdout
        wait_until(lambda: count(engine, T_ITEM, T_ITEM.c.state == "confirmed", T_ITEM.c.signer == new.group(1)) >= CONFIRMED_BEFORE_EACH_REVOCATION, "the new key confirms", TIMEOUT)
        plant.stop()
        views = {command: wait_command(stack, "maker", command, timeout=TIMEOUT) for command, _ in plant.accepted}

    statuses = [view["status"] for view in views.values()]
    re_signed = [view for view in views.values() if view["re_signed_by"] == [new.group(1)]]
    print(f"\nkey rotated mid-stream: {len(views)} accepted, {statuses.count('confirmed')} confirmed, {len(re_signed)} re-signed by the new key, refused {len(plant.refused)}")
    assert statuses == ["confirmed"] * len(views) and plant.refused == [], [view["errors"] for view in views.values() if view["status"] != "confirmed"]
    assert len(re_signed) >= 1 and all(view["site_key"] == primary for view in re_signed)
    # Nothing the old key signed took effect after its revocation: what it had in the pool when the revocation was
    # mined first in its block reverted there, and what it sent on a simulation of the block before reverted later.
    revocation = int(revoked.group(1))
    sent = transactions_of(ledger, primary, revocation, ledger.w3.eth.block_number)
    assert [status for _, _, status in sent] == [0] * len(sent)


def test_a_request_during_a_rotation_signs_with_the_replacement_another_thread_just_opened(tmp_path: Path):
    """The moment of a `wallet rotate` that gave a request 403 no_site_key: the mirror shows the old key revoked and
    the new one active; the request finds no key it holds, and its look for new keystores is held back (the
    submitter's look, forced as the chain refused the old key, ran a moment ago) but that look has opened the
    replacement meanwhile. The request signs with it. A site with no key at all is still refused."""
    old, new = "0x" + "11" * 20, "0x" + "22" * 20
    index_engine, service_engine = make_engine(f"sqlite:///{tmp_path / 'index.db'}"), make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    index_migrate.upgrade(index_engine)
    service_migrate.upgrade(service_engine)
    with index_engine.begin() as conn:
        conn.execute(SiteKey.__table__.insert(), [
            {"address": old, "org_id": 7, "site": "bay-1", "added_block": 1, "revoked_block": 9},
            {"address": new, "org_id": 7, "site": "bay-1", "added_block": 8, "revoked_block": None},
        ])  # fmt: skip
    signers = {old: None}
    looks: list[str] = []

    def held_back_look() -> bool:  # KEY_REFRESH_SECONDS not over: no look of its own, but the other thread's landed
        looks.append("held back")
        signers[new] = None
        return False

    outbox = Outbox(service_engine=service_engine, index_engine=index_engine, signers=signers, max_parts_per_tx=10, refresh_keys=held_back_look)
    principal = Principal(org_id=7, roles=Role.MANUFACTURER, key_id="k", sites=None)
    assert outbox.signer_for(principal, None) == new and looks == ["held back"]
    with pytest.raises(ApiError) as refused:
        outbox.signer_for(principal, "bay-2")
    assert refused.value.code == "no_site_key"
    index_engine.dispose()
    service_engine.dispose()
