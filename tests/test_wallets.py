"""Signers and site key rotation as they run: a real Anvil, the real signing server as a process on loopback, the
`partledger wallet` commands as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from hypothesis import given, settings, strategies as st
from web3 import Web3

from partledger.anvil import AnvilNode
from tests.ports import free_port
from partledger.artifacts import load_artifact
from partledger.chain import require_chain, send_call, send_transaction
from partledger.deploy import deploy_contracts
from partledger.eip712 import Attestation, attestation_typed_data, read_domain
from partledger.ids import ascii32
from partledger.manifest import load_manifest
from partledger.model import Role
from tests.chainkit import GTIN_A, Ledger, reverts
from tests.forkserver import ForkServer
from tests.test_cli_devnet import assert_one_line_error
from wallets.errors import RotationIncomplete, SignerError, SignerMismatch, SignerUnavailable
from wallets.keystore import PASSPHRASE_FILE_ENV, create_keystore, keystore_address, load_keystore, write_passphrase_file
from wallets.rotation import rotate_site_key
from wallets.signer import SECP256K1_N, LocalSigner, RemoteSigner, Signer, _plain_legacy

SERVER = [sys.executable, "-m", "wallets.remote_server"]


# ---------------------------------------------------------------------------------------------------------------------
# the signing server as a process


@contextmanager
def running_signer_server(keys: Path, passphrase_file: Path, log: Path, *arguments: str) -> Iterator[str]:
    """`python -m wallets.remote_server` on a free loopback port, its output appended to `log`; yields its URL."""
    port = free_port()
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [*SERVER, "--keys", str(keys), "--port", str(port), *arguments],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, PASSPHRASE_FILE_ENV: str(passphrase_file)},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/upcheck", timeout=1).text == "OK":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the signing server did not come up"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        assert process.wait(10) == 0, log.read_text()


@dataclass
class SignerKeys:
    directory: Path
    passphrase_file: Path
    log: Path
    accounts: dict[str, LocalAccount]


@pytest.fixture(scope="module")
def signer_keys(tmp_path_factory: pytest.TempPathFactory) -> SignerKeys:
    root = tmp_path_factory.mktemp("signer")
    passphrase = write_passphrase_file(root / "passphrase")
    accounts = {name: create_keystore(root / "keys" / "maker" / f"{name}.json", passphrase, light=True) for name in ("alpha", "beta", "gamma")}
    return SignerKeys(root / "keys", root / "passphrase", root / "server.log", accounts)


@pytest.fixture(scope="module")
def signer_url(signer_keys: SignerKeys) -> Iterator[str]:
    with running_signer_server(signer_keys.directory, signer_keys.passphrase_file, signer_keys.log) as url:
        yield url


class RewritingProxy:
    """A real HTTP hop in front of the real signing server that rewrites what passes through it: what a compromised
    or broken signer would answer, produced by real signing."""

    def __init__(
        self,
        upstream: str,
        *,
        request: Callable[[dict[str, Any]], None] = lambda _: None,
        response: Callable[[dict[str, Any]], None] = lambda _: None,
        down: Callable[[dict[str, Any]], bool] = lambda _: False,
    ) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if proxy.down(body):
                    self._send(503, b"signer unavailable", "text/plain")
                    return
                proxy.rewrite_request(body)
                answer = httpx.post(upstream, json=body, timeout=10).json()
                proxy.rewrite_response(answer)
                self._send(200, json.dumps(answer).encode(), "application/json")

            def _send(self, status: int, data: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.rewrite_request = request
        self.rewrite_response = response
        self.down = down
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def transfer(w3: Web3, signer: Signer, *, to: str | None = None) -> dict[str, Any]:
    return {
        "from": signer.address,
        "to": to or "0x000000000000000000000000000000000000dEaD",
        "value": 0,
        "gas": 30_000,
        "gasPrice": 0,
        "nonce": w3.eth.get_transaction_count(signer.address),
        "chainId": w3.eth.chain_id,
        "data": b"\x01\x02",
    }


def attestation_message(ledger: Ledger) -> dict[str, Any]:
    attestation = Attestation(
        docHash=b"\x11" * 32, docType=1, issuer=1, counterparty=2, previous=b"\0" * 32, partsRoot=b"\x22" * 32, nonce=b"\x33" * 32, deadline=2**40
    )
    return attestation_typed_data(read_domain(ledger.evidence), attestation)


# ---------------------------------------------------------------------------------------------------------------------
# signers


@pytest.fixture(params=["local", "remote"])
def site_signer(request: pytest.FixtureRequest, signer_keys: SignerKeys) -> Iterator[Signer]:
    account = signer_keys.accounts["alpha"]
    if request.param == "local":
        yield LocalSigner.from_keystore(signer_keys.directory / "maker" / "alpha.json", signer_keys.passphrase_file.read_text().strip())
    else:
        with RemoteSigner(request.getfixturevalue("signer_url"), account.address) as remote:
            yield remote


def test_local_and_remote_signers_satisfy_the_signer_interface(site_signer: Signer):
    assert isinstance(site_signer, Signer)


def test_signer_sends_a_free_gas_transaction_mined_from_its_address(ledger: Ledger, site_signer: Signer):
    receipt = send_transaction(ledger.w3, site_signer, transfer(ledger.w3, site_signer))
    assert receipt["status"] == 1 and receipt["from"] == site_signer.address
    assert ledger.w3.eth.get_transaction(receipt["transactionHash"])["gasPrice"] == 0


def test_signer_acts_as_a_registered_site_key(ledger: Ledger, site_signer: Signer):
    maker = ledger.orgs["maker"]
    ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(maker.id, site_signer.address, ascii32("signer-site")))
    receipt = send_call(ledger.w3, site_signer, ledger.parts.functions.registerParts(int(GTIN_A), ascii32("LOT-W"), [ascii32("W-1")]))
    (event,) = ledger.events(receipt, ledger.parts, "PartsRegistered")
    assert event["args"]["siteKey"] == site_signer.address and event["args"]["manufacturer"] == maker.id


def test_remote_signer_deploys_contracts(ledger: Ledger, anvil: AnvilNode, signer_url: str, signer_keys: SignerKeys):
    with RemoteSigner(signer_url, signer_keys.accounts["beta"].address) as remote:
        manifest = deploy_contracts(ledger.w3, remote, rpc_url=anvil.url, admin=remote.address, operator=remote.address)
    assert manifest.deployer == remote.address
    require_chain(ledger.w3, chain_id=manifest.chain_id, code={name: (c.address, c.code_hash) for name, c in manifest.contracts.items()})


def test_local_and_remote_typed_data_signatures_are_identical_and_recover_to_the_key(ledger: Ledger, signer_url: str, signer_keys: SignerKeys):
    account = signer_keys.accounts["gamma"]
    message = attestation_message(ledger)
    local = LocalSigner(account).sign_typed_data(message)
    with RemoteSigner(signer_url, account.address) as remote:
        assert remote.sign_typed_data(message) == local
    assert len(local) == 65 and local[64] in (27, 28)
    assert Account.recover_message(encode_typed_data(full_message=message), signature=local) == account.address


def test_remote_signer_lists_the_servers_accounts(signer_url: str, signer_keys: SignerKeys):
    with RemoteSigner(signer_url, signer_keys.accounts["alpha"].address) as remote:
        assert remote.accounts() == sorted(account.address for account in signer_keys.accounts.values())


def test_remote_signer_refuses_a_transaction_signed_by_another_key(w3: Web3, signer_url: str, signer_keys: SignerKeys):
    alpha, beta = signer_keys.accounts["alpha"], signer_keys.accounts["beta"]

    def sign_with_beta(body: dict[str, Any]) -> None:
        body["params"][0]["from"] = beta.address

    with RewritingProxy(signer_url, request=sign_with_beta) as url, RemoteSigner(url, alpha.address) as remote:
        nonce = w3.eth.get_transaction_count(beta.address)
        with pytest.raises(SignerMismatch, match=f"signed by {beta.address}, not by {alpha.address}"):
            send_transaction(w3, remote, transfer(w3, remote))
    assert w3.eth.get_transaction_count(beta.address) == nonce  # nothing was sent


def test_remote_signer_refuses_a_signature_of_another_transaction(w3: Web3, signer_url: str, signer_keys: SignerKeys):
    alpha = signer_keys.accounts["alpha"]

    def redirect(body: dict[str, Any]) -> None:
        body["params"][0]["to"] = "0x00000000000000000000000000000000000Badd0"
        body["params"][0]["value"] = "0x1"

    with RewritingProxy(signer_url, request=redirect) as url, RemoteSigner(url, alpha.address) as remote:
        with pytest.raises(SignerMismatch, match="whose to, value differ from the transaction asked for"):
            remote.sign_transaction(transfer(w3, remote))


def test_remote_signer_refuses_typed_data_signed_by_another_key(ledger: Ledger, signer_url: str, signer_keys: SignerKeys):
    alpha, beta = signer_keys.accounts["alpha"], signer_keys.accounts["beta"]

    def sign_with_beta(body: dict[str, Any]) -> None:
        body["params"][0] = beta.address

    with RewritingProxy(signer_url, request=sign_with_beta) as url, RemoteSigner(url, alpha.address) as remote:
        with pytest.raises(SignerMismatch, match=f"signed typed data with {beta.address}"):
            remote.sign_typed_data(attestation_message(ledger))


def test_remote_signer_turns_a_high_s_signature_into_the_low_s_one(ledger: Ledger, signer_url: str, signer_keys: SignerKeys):
    account = signer_keys.accounts["alpha"]

    def to_high_s(body: dict[str, Any]) -> None:  # what an HSM or KMS may answer: valid, but in the upper half
        signature = bytes.fromhex(body["result"][2:])
        s = SECP256K1_N - int.from_bytes(signature[32:64], "big")
        body["result"] = "0x" + (signature[:32] + s.to_bytes(32, "big") + bytes([55 - signature[64]])).hex()

    message = attestation_message(ledger)
    with RewritingProxy(signer_url, response=to_high_s) as url, RemoteSigner(url, account.address) as remote:
        assert remote.sign_typed_data(message) == LocalSigner(account).sign_typed_data(message)


def test_rotation_cut_off_between_add_and_revoke_says_which_keys_are_active(ledger: Ledger, signer_url: str, signer_keys: SignerKeys, tmp_path: Path):
    operator = signer_keys.accounts["beta"]
    ledger.act(ledger.operator, ledger.registry.functions.grantRole(ledger.registry.functions.OPERATOR_ROLE().call(), operator.address))
    old_keystore = tmp_path / "maker" / "plant-9.json"
    old = create_keystore(old_keystore, "pw", light=True)
    ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(ledger.orgs["maker"].id, old.address, ascii32("plant-9")))
    signed = []

    def down_after_first_signature(body: dict[str, Any]) -> bool:  # the HSM drops out mid-rotation
        signed.append(body["method"])
        return len(signed) > 1

    with RewritingProxy(signer_url, down=down_after_first_signature) as url, RemoteSigner(url, operator.address) as remote:
        with pytest.raises(RotationIncomplete) as info:
            rotate_site_key(ledger.w3, ledger.registry, remote, old_keystore, passphrase="pw")
    new_address = keystore_address(tmp_path / "maker" / "plant-9.2.json")
    assert str(info.value).startswith(
        f"the new key {new_address} ({tmp_path / 'maker' / 'plant-9.2.json'}) is active, but revoking the old key {old.address} failed: "
        f"the remote signer at {url} answered eth_signTransaction with HTTP 503 and no JSON-RPC reply"
    )
    assert ledger.registry.functions.siteKey(new_address).call()[3] == 0 and ledger.registry.functions.siteKey(old.address).call()[3] == 0


def test_remote_signer_refuses_an_account_the_server_does_not_hold(w3: Web3, signer_url: str):
    stranger = Account.create().address
    with RemoteSigner(signer_url, stranger) as remote, pytest.raises(SignerError) as info:
        remote.sign_transaction(transfer(w3, remote))
    assert str(info.value) == (
        f"the remote signer at {signer_url} refused eth_signTransaction: account {stranger} is not held by this signer (code -32000)"
    )


def test_remote_signer_on_a_dead_port_fails_with_one_clear_error(w3: Web3, signer_keys: SignerKeys):
    url = f"http://127.0.0.1:{free_port()}"
    with RemoteSigner(url, signer_keys.accounts["alpha"].address) as remote, pytest.raises(SignerUnavailable) as info:
        send_transaction(w3, remote, transfer(w3, remote))
    assert str(info.value) == f"cannot reach the remote signer at {url}: ConnectError"


def test_remote_signer_that_never_answers_times_out_as_unavailable(w3: Web3, signer_keys: SignerKeys):
    with socket.socket() as silent:  # accepts connections (the backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with RemoteSigner(url, signer_keys.accounts["alpha"].address, timeout=0.3) as remote, pytest.raises(SignerUnavailable) as info:
            remote.sign_transaction(transfer(w3, remote))
    assert str(info.value) == f"the remote signer at {url} did not answer eth_signTransaction within 0.3s"


@pytest.mark.parametrize(
    ("request_body", "code", "message"),
    [
        ({"method": "eth_sign", "params": []}, -32601, "method 'eth_sign' not supported"),
        ({"method": "eth_signTransaction", "params": [{"from": "0x1", "nonce": "0x0"}]}, -32602, "the signing account must be a 20-byte hex address"),
        ({"method": "eth_signTransaction", "params": [{"nonce": "0x0", "gas": "0x5208", "gasPrice": "0x0"}]}, -32602, "no chainId (replay protection is required)"),
        ({"method": "eth_signTransaction", "params": [{"gas": "0x5208", "gasPrice": "0x0", "chainId": "0x1"}]}, -32602, "the transaction has no nonce"),
        ({"method": "eth_signTypedData", "params": ["{from}", {"types": {}}]}, -32602, "invalid typed data: "),
    ],
)
def test_signing_server_answers_invalid_requests_with_json_rpc_errors(signer_url: str, signer_keys: SignerKeys, request_body: dict[str, Any], code: int, message: str):
    alpha = signer_keys.accounts["alpha"].address
    params = json.loads(json.dumps(request_body["params"]).replace("{from}", alpha))
    if params and isinstance(params[0], dict) and "from" not in params[0]:
        params[0]["from"] = alpha
    reply = httpx.post(signer_url, json={"jsonrpc": "2.0", "id": 7, "method": request_body["method"], "params": params}).json()
    assert reply["id"] == 7 and reply["error"]["code"] == code and message in reply["error"]["message"], reply


def test_signing_server_bound_to_a_chain_refuses_another(tmp_path: Path, w3: Web3, signer_keys: SignerKeys):
    with running_signer_server(signer_keys.directory, signer_keys.passphrase_file, tmp_path / "log", "--chain-id", "1") as url:
        with RemoteSigner(url, signer_keys.accounts["alpha"].address) as remote, pytest.raises(SignerError, match="this signer signs for chain 1 only"):
            remote.sign_transaction(transfer(w3, remote))


def test_signing_server_with_a_wrong_passphrase_fails_to_start_in_one_line(tmp_path: Path, signer_keys: SignerKeys):
    (tmp_path / "wrong").write_text("not-the-passphrase\n")
    result = subprocess.run(
        [*SERVER, "--keys", str(signer_keys.directory), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60, env={**os.environ, PASSPHRASE_FILE_ENV: str(tmp_path / "wrong")},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().startswith("remote-signer: error: cannot decrypt keystore") and len(result.stderr.strip().splitlines()) == 1
    assert "not-the-passphrase" not in result.stderr + result.stdout


# ---------------------------------------------------------------------------------------------------------------------
# `partledger wallet` end to end: one consortium deployed through the CLI, its keys created, rotated and revoked


@dataclass
class WalletWorld:
    root: Path
    keys: Path
    passphrase: str
    passphrase_file: Path
    operator: Path
    manifest: Path
    org_id: int
    results: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    server_log: Path | None = None
    forkserver: ForkServer | None = None

    def cli(self, step: str, *arguments: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """`partledger ARGUMENTS` in a process of its own, forked from the worker's fork server (the imports paid
        once for the module's twenty runs; test_cli_devnet.py starts the command line from scratch)."""
        assert self.forkserver is not None
        env = {**os.environ, PASSPHRASE_FILE_ENV: str(self.passphrase_file), **(env or {})}
        result = self.forkserver.run(list(arguments), env=env, workdir=self.root / "cli", timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        self.results[step] = result
        return result

    def registry(self, w3: Web3) -> Any:
        return w3.eth.contract(address=load_manifest(self.manifest).address("ConsortiumRegistry"), abi=load_artifact("ConsortiumRegistry").abi)

    def parts(self, w3: Web3) -> Any:
        return w3.eth.contract(address=load_manifest(self.manifest).address("PartLedger"), abi=load_artifact("PartLedger").abi)

    def address(self, step: str, prefix: str = "") -> str:
        for line in self.results[step].stdout.splitlines():
            if line.startswith(prefix):
                return line.removeprefix(prefix).split()[0]
        raise AssertionError(f"no line starting with {prefix!r} in {self.results[step].stdout}")


@pytest.fixture(scope="module")
def world(anvil: AnvilNode, w3: Web3, tmp_path_factory: pytest.TempPathFactory, forkserver: ForkServer) -> WalletWorld:
    root = tmp_path_factory.mktemp("wallet")
    passphrase = write_passphrase_file(root / "passphrase")
    keys = root / "keys"
    create_keystore(keys / "operator.json", passphrase, light=True)
    world = WalletWorld(root, keys, passphrase, root / "passphrase", keys / "operator.json", root / "manifest.json", org_id=0, forkserver=forkserver)
    world.cli("deploy", "deploy", "--rpc", anvil.url, "--keystore", str(world.operator), "--out", str(world.manifest))
    operator = LocalSigner.from_keystore(world.operator, passphrase)
    registry = world.registry(w3)
    receipt = send_call(w3, operator, registry.functions.registerOrganisation(int(Role.MANUFACTURER), "Maker"))
    world.org_id = registry.events.OrganisationRegistered().process_receipt(receipt)[0]["args"]["orgId"]

    world.cli("new plant-1", "wallet", "new", "--org-slug", "maker", "--site", "plant-1", "--dir", str(keys), "--light")
    world.cli("new plant-2", "wallet", "new", "--org-slug", "maker", "--site", "plant-2", "--dir", str(keys), "--light")
    world.cli("new plant-1 again", "wallet", "new", "--org-slug", "maker", "--site", "plant-1", "--dir", str(keys), "--light", check=False)
    world.cli("new bad site", "wallet", "new", "--org-slug", "maker", "--site", "../escape", "--dir", str(keys), check=False)
    for step in ("new plant-1", "new plant-2"):  # the operator admits the new keys
        site = step.removeprefix("new ")
        send_call(w3, operator, registry.functions.addSiteKey(world.org_id, world.address(step), ascii32(site)))
    on_chain = ("--operator-keystore", str(world.operator), "--manifest", str(world.manifest))
    world.cli("list before", "wallet", "list", "--dir", str(keys), "--manifest", str(world.manifest), "--json")

    plant_1 = str(keys / "maker" / "plant-1.json")
    world.cli("rotate", "wallet", "rotate", "--keystore", plant_1, *on_chain)
    world.cli("rotate again", "wallet", "rotate", "--keystore", plant_1, *on_chain, check=False)
    new_key = str(keys / "maker" / "plant-1.2.json")
    world.cli("rotate by non-operator", "wallet", "rotate", "--keystore", new_key, "--operator-keystore", new_key, "--manifest", str(world.manifest), check=False)
    world.cli("rotate no passphrase file", "wallet", "rotate", "--keystore", new_key, *on_chain, check=False, env={PASSPHRASE_FILE_ENV: str(root / "missing")})
    (root / "wrong").write_text("wrong-secret-passphrase\n")
    world.cli("rotate wrong passphrase", "wallet", "rotate", "--keystore", new_key, *on_chain, check=False, env={PASSPHRASE_FILE_ENV: str(root / "wrong")})
    world.cli("revoke", "wallet", "revoke", "--address", world.address("new plant-2"), *on_chain)
    world.cli("revoke again", "wallet", "revoke", "--address", world.address("new plant-2"), *on_chain, check=False)
    world.cli("revoke bad address", "wallet", "revoke", "--address", "0x12", *on_chain, check=False)
    world.cli("list after", "wallet", "list", "--dir", str(keys), "--manifest", str(world.manifest), "--json")
    world.cli("list table", "wallet", "list", "--dir", str(keys), "--manifest", str(world.manifest))
    world.cli("rotate revoked", "wallet", "rotate", "--keystore", str(keys / "maker" / "plant-2.json"), *on_chain)

    # the rotated key, served by the signing server and used through it
    world.server_log = root / "server.log"
    with running_signer_server(keys, world.passphrase_file, world.server_log) as url, RemoteSigner(url, world.address("rotate", "new ")) as remote:
        send_transaction(w3, remote, transfer(w3, remote))
        remote.sign_typed_data({"types": {"EIP712Domain": [{"name": "name", "type": "string"}], "M": [{"name": "x", "type": "uint256"}]}, "primaryType": "M", "domain": {"name": "t"}, "message": {"x": 1}})
        with RemoteSigner(url, Account.create().address) as stranger, pytest.raises(SignerError):
            stranger.sign_transaction(transfer(w3, stranger))
    return world


def test_wallet_new_writes_a_private_keystore_per_org_and_site_and_prints_its_address(world: WalletWorld):
    path = world.keys / "maker" / "plant-1.json"
    assert keystore_address(path) == world.address("new plant-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keystore(path, world.passphrase).address == world.address("new plant-1")


def test_wallet_new_refuses_to_overwrite_a_key_or_to_leave_the_key_directory(world: WalletWorld):
    assert_one_line_error(world.results["new plant-1 again"], "exists already; refusing to overwrite a key")
    assert_one_line_error(world.results["new bad site"], "site '../escape' must be 1 to 32 of A-Z a-z 0-9 _ -")
    assert not (world.root / "escape.json").exists()


def test_wallet_list_shows_org_and_site_from_the_path_and_status_on_chain(world: WalletWorld):
    before = {row["address"]: row for row in json.loads(world.results["list before"].stdout)}
    plant_1 = before[world.address("new plant-1")]
    assert plant_1["org_slug"] == "maker" and plant_1["site"] == "plant-1" and plant_1["chain_site"] == "plant-1"
    assert plant_1["state"] == "active" and plant_1["org_id"] == world.org_id and plant_1["added_block"] > 0 and plant_1["revoked_block"] == 0
    operator = before[keystore_address(world.operator)]
    assert (operator["org_slug"], operator["site"], operator["state"]) == (None, None, "unknown")

    after = {row["address"]: row for row in json.loads(world.results["list after"].stdout)}
    states = {(row["site"], row["state"]) for row in after.values()}
    assert states == {(None, "unknown"), ("plant-1", "revoked"), ("plant-1", "active"), ("plant-2", "revoked")}
    table = world.results["list table"].stdout
    assert f"{world.address('rotate', 'new ')}  maker            plant-1              active   org {world.org_id}" in table


def test_wallet_rotate_adds_the_new_key_for_the_same_org_and_site_then_revokes_the_old(world: WalletWorld, w3: Web3):
    old, new = world.address("rotate", "old "), world.address("rotate", "new ")
    assert old == world.address("new plant-1")
    assert keystore_address(world.keys / "maker" / "plant-1.2.json") == new
    assert stat.S_IMODE((world.keys / "maker" / "plant-1.2.json").stat().st_mode) == 0o600
    registry = world.registry(w3)
    new_org, new_site, new_added, new_revoked = registry.functions.siteKey(new).call()
    old_org, old_site, _old_added, old_revoked = registry.functions.siteKey(old).call()
    assert (new_org, new_site, new_revoked) == (world.org_id, ascii32("plant-1"), 0)
    assert (old_org, old_site) == (world.org_id, ascii32("plant-1"))
    assert 0 < new_added < old_revoked  # added first: the site is never without an active key
    assert f"old {old}  revoked in block {old_revoked}" in world.results["rotate"].stdout


def test_rotated_out_key_gets_key_revoked_when_it_acts_and_the_new_key_works(world: WalletWorld, w3: Web3):
    old = LocalSigner.from_keystore(world.keys / "maker" / "plant-1.json", world.passphrase)
    new = LocalSigner.from_keystore(world.keys / "maker" / "plant-1.2.json", world.passphrase)
    parts = world.parts(w3)
    revoked_block = world.registry(w3).functions.siteKey(old.address).call()[3]
    with reverts("ConsortiumRegistryKeyRevoked", old.address, revoked_block):
        send_call(w3, old, parts.functions.registerParts(int(GTIN_A), ascii32("LOT-OLD"), [ascii32("OLD-1")]))
    receipt = send_call(w3, new, parts.functions.registerParts(int(GTIN_A), ascii32("LOT-NEW"), [ascii32("NEW-1")]))
    assert receipt["from"] == new.address


def test_wallet_rotate_refuses_a_revoked_key_a_non_operator_and_a_bad_passphrase_in_one_line(world: WalletWorld, w3: Web3):
    old = world.address("new plant-1")
    revoked_block = world.registry(w3).functions.siteKey(old).call()[3]
    assert_one_line_error(world.results["rotate again"], f"cannot rotate {old}: it was revoked in block {revoked_block} and already replaced")
    assert_one_line_error(world.results["rotate by non-operator"], "contract reverted with AccessControlUnauthorizedAccount(")
    assert_one_line_error(world.results["rotate no passphrase file"], "cannot read the passphrase file")
    assert_one_line_error(world.results["rotate wrong passphrase"], f"cannot decrypt keystore {world.operator}: wrong passphrase or damaged file")
    assert "wrong-secret-passphrase" not in world.results["rotate wrong passphrase"].stderr
    assert sorted(path.name for path in (world.keys / "maker").iterdir()) == ["plant-1.2.json", "plant-1.json", "plant-2.2.json", "plant-2.json"]


def test_wallet_rotate_of_a_key_revoked_in_haste_only_adds_its_replacement(world: WalletWorld, w3: Web3):
    """After `wallet revoke` on a compromised key, `wallet rotate` on it gives the site its new key."""
    old, new = world.address("new plant-2"), keystore_address(world.keys / "maker" / "plant-2.2.json")
    registry = world.registry(w3)
    old_revoked = registry.functions.siteKey(old).call()[3]
    new_org, new_site, new_added, new_revoked = registry.functions.siteKey(new).call()
    assert (new_org, new_site, new_revoked) == (world.org_id, ascii32("plant-2"), 0) and new_added > old_revoked > 0
    assert f"new {new}  added in block {new_added}  (org {world.org_id}, site plant-2)" in world.results["rotate revoked"].stdout


def test_wallet_revoke_revokes_for_good_and_a_second_revoke_fails_in_one_line(world: WalletWorld, w3: Web3):
    key = world.address("new plant-2")
    _org, _site, _added, revoked = world.registry(w3).functions.siteKey(key).call()
    assert revoked > 0
    assert f"revoked {key}  in block {revoked}  (org {world.org_id}, site plant-2)" in world.results["revoke"].stdout
    assert_one_line_error(world.results["revoke again"], f"contract reverted with ConsortiumRegistryKeyRevoked('{key}', {revoked})")
    assert world.results["revoke bad address"].returncode == 2


def test_no_passphrase_or_private_key_appears_in_cli_or_signing_server_output(world: WalletWorld):
    assert world.server_log is not None
    secrets = [world.passphrase]
    for path in world.keys.rglob("*.json"):
        key = bytes(load_keystore(path, world.passphrase).key).hex()
        secrets += [key, key.upper()]
    outputs = {f"{step} {stream}": getattr(result, stream) for step, result in world.results.items() for stream in ("stdout", "stderr")}
    outputs["signing server log"] = world.server_log.read_text()
    assert "eth_signTransaction" in outputs["signing server log"]  # the log is real and covers signing
    leaks = [name for name, text in outputs.items() for secret in secrets if secret in text]
    assert not leaks


# --- LocalSigner's direct legacy signing ---------------------------------------------------------------------------

_QUANTITY = st.integers(min_value=0, max_value=2**256 - 1)


@settings(max_examples=150, deadline=None)
@given(
    key=st.integers(min_value=1, max_value=SECP256K1_N - 1), nonce=st.integers(min_value=0, max_value=2**64 - 2), gas_price=_QUANTITY,
    gas=st.integers(min_value=21_000, max_value=2**63), value=_QUANTITY, chain_id=st.integers(min_value=1, max_value=2**32),
    to=st.binary(min_size=20, max_size=20), data=st.binary(max_size=7_000), as_bytes=st.booleans(),
)  # fmt: skip
def test_a_legacy_call_signed_directly_is_eth_accounts_transaction_byte_for_byte(
    key: int, nonce: int, gas_price: int, gas: int, value: int, chain_id: int, to: bytes, data: bytes, as_bytes: bool,
) -> None:  # fmt: skip
    """What the submitter signs (a legacy call: to, data, value, gas, gasPrice, chainId, nonce) takes LocalSigner's
    direct path; its bytes, hash and signature must be eth-account's own, and the sender recovered from them the key's."""
    account = Account.from_key(key.to_bytes(32, "big"))
    transaction = {
        "to": Web3.to_checksum_address(to), "data": data if as_bytes else "0x" + data.hex(), "value": value, "gas": gas,
        "gasPrice": gas_price, "chainId": chain_id, "nonce": nonce,
    }  # fmt: skip
    assert _plain_legacy(transaction) is not None  # the direct path, not the fallback
    direct, reference = LocalSigner(account).sign_transaction(transaction), account.sign_transaction(transaction)
    assert bytes(direct.raw_transaction) == bytes(reference.raw_transaction)
    assert (bytes(direct.hash), direct.r, direct.s, direct.v) == (bytes(reference.hash), reference.r, reference.s, reference.v)
    assert Account.recover_transaction(direct.raw_transaction) == account.address


@pytest.mark.parametrize("change", [
    {"to": "0x" + "ab" * 20},  # lower case: eth-account decides what it accepts
    {"to": "0x" + "Ab" * 20},  # a checksum that does not match
    {"maxFeePerGas": 1},  # another kind of transaction
    {"nonce": -1}, {"gas": 2**256}, {"value": True}, {"chainId": 0},
    {"data": "not hex"}, {"data": "0xzz"},
])  # fmt: skip
def test_anything_but_a_plain_legacy_call_is_left_to_eth_account(change: dict[str, Any]) -> None:
    transaction = {"to": Web3.to_checksum_address("0x" + "ab" * 20), "data": "0x12", "value": 0, "gas": 50_000, "gasPrice": 0, "chainId": 1, "nonce": 0}
    assert _plain_legacy(transaction) is not None
    assert _plain_legacy({**transaction, **change}) is None
