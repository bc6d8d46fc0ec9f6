"""`partledger devnet` and `partledger deploy` as a user runs them: real processes, a real Anvil, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from tests.ports import free_port
from partledger.anvil import running
from partledger.artifacts import load_artifact
from partledger.chain import connect
from partledger.deploy import refuse_dev_key
from partledger.errors import ConfigError
from partledger.model import Role
from wallets.keystore import create_keystore, keystore_address, load_keystore

CLI = [sys.executable, "-m", "partledger_cli"]


def run_cli(*arguments: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*CLI, *arguments], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("partledger: error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.fixture
def devnet_dir(tmp_path: Path):
    env = {"PARTLEDGER_DEVNET_DIR": str(tmp_path / "run")}
    yield tmp_path / "run", env
    run_cli("devnet", "down", env=env, check=False)


def test_devnet_up_deploys_and_seeds_demo_consortium_then_down_stops_it(devnet_dir):
    run_dir, env = devnet_dir
    port = free_port()
    run_cli("devnet", "up", "--port", str(port), "--chain-id", "4242", env=env)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["chain_id"] == 4242 and manifest["rpc_url"] == f"http://127.0.0.1:{port}"
    assert set(manifest["contracts"]) == {"PartLedgerForwarder", "ConsortiumRegistry", "PartLedger", "EvidenceLedger"}
    for name, contract in manifest["contracts"].items():
        assert contract["artifact_sha256"] == load_artifact(name).sha256
    assert manifest["deployment_block"] == min(c["block"] for c in manifest["contracts"].values())

    w3 = connect(manifest["rpc_url"])
    assert w3.eth.chain_id == 4242
    registry = w3.eth.contract(address=manifest["contracts"]["ConsortiumRegistry"]["address"], abi=load_artifact("ConsortiumRegistry").abi)
    consortium = json.loads((run_dir / "consortium.json").read_text())
    roles = [org["roles"] for org in consortium["organisations"]]
    assert roles == [["MANUFACTURER"], ["LOGISTICS"], ["DISTRIBUTOR"], ["WORKSHOP"], ["WORKSHOP"], ["AUDITOR"]]
    assert len(consortium["organisations"][0]["sites"]) == 2
    assert registry.functions.organisationCount().call() == 6
    passphrase = (run_dir / "passphrase").read_text().strip()
    assert oct((run_dir / "passphrase").stat().st_mode & 0o777) == "0o600"
    for org in consortium["organisations"]:
        on_chain_roles, suspended = registry.functions.organisation(org["id"]).call()
        assert on_chain_roles == sum(int(Role[role]) for role in org["roles"]) and not suspended
        for site in org["sites"]:
            org_id, _site, added, revoked = registry.functions.siteKey(site["address"]).call()
            assert (org_id, revoked) == (org["id"], 0) and added > 0
            assert keystore_address(Path(site["keystore"])) == site["address"]
    first_site = consortium["organisations"][0]["sites"][0]
    assert load_keystore(Path(first_site["keystore"]), passphrase).address == first_site["address"]

    status = json.loads(run_cli("devnet", "status", env=env).stdout)
    assert status["running"] and status["chain_id"] == 4242
    run_cli("manifest", "check", "--manifest", str(run_dir / "manifest.json"))

    assert_one_line_error(run_cli("devnet", "up", "--port", str(free_port()), env=env, check=False), "already running")

    pid = status["pid"]
    assert "devnet stopped" in run_cli("devnet", "down", env=env).stdout
    assert not running(pid)  # exited: gone, or a zombie its adopter has not reaped yet
    assert json.loads(run_cli("devnet", "status", env=env).stdout) == {"running": False}


def test_devnet_with_paid_gas_funds_its_keys(devnet_dir):
    run_dir, env = devnet_dir
    run_cli("devnet", "up", "--port", str(free_port()), "--gas-price", "1000000000", "--block-time", "1", env=env)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["gas_price"] == 10**9


def test_deploy_to_any_rpc_writes_manifest_that_checks(anvil, tmp_path: Path):
    keystore = tmp_path / "deployer.json"
    create_keystore(keystore, "correct horse", light=True)
    env = {"PARTLEDGER_KEYSTORE_PASSPHRASE": "correct horse"}
    out = tmp_path / "manifest.json"
    run_cli("deploy", "--rpc", anvil.url, "--keystore", str(keystore), "--out", str(out), "--confirmations", "2", env=env)
    manifest = json.loads(out.read_text())
    assert manifest["deployer"] == keystore_address(keystore) and manifest["confirmations"] == 2
    run_cli("manifest", "check", "--manifest", str(out))


def test_deploy_fails_in_one_line_when_rpc_unreachable(tmp_path: Path):
    keystore = tmp_path / "k.json"
    create_keystore(keystore, "pw", light=True)
    result = run_cli("deploy", "--rpc", f"http://127.0.0.1:{free_port()}", "--keystore", str(keystore), env={"PARTLEDGER_KEYSTORE_PASSPHRASE": "pw"}, check=False)
    assert_one_line_error(result, "cannot reach the JSON-RPC node")


def test_deploy_fails_in_one_line_on_wrong_passphrase_without_echoing_it(tmp_path: Path):
    keystore = tmp_path / "k.json"
    create_keystore(keystore, "right", light=True)
    result = run_cli("deploy", "--rpc", "http://127.0.0.1:1", "--keystore", str(keystore), env={"PARTLEDGER_KEYSTORE_PASSPHRASE": "wrong-secret"}, check=False)
    assert_one_line_error(result, "cannot decrypt keystore")
    assert "wrong-secret" not in result.stderr


def test_manifest_check_fails_in_one_line_on_wrong_chain_id(anvil, tmp_path: Path):
    keystore = tmp_path / "deployer.json"
    create_keystore(keystore, "pw", light=True)
    out = tmp_path / "manifest.json"
    run_cli("deploy", "--rpc", anvil.url, "--keystore", str(keystore), "--out", str(out), env={"PARTLEDGER_KEYSTORE_PASSPHRASE": "pw"})
    manifest = json.loads(out.read_text())
    out.write_text(json.dumps({**manifest, "chain_id": 999}))
    assert_one_line_error(run_cli("manifest", "check", "--manifest", str(out), check=False), "chain id is 31337, the deployment manifest says 999")
    manifest["contracts"]["PartLedger"]["address"] = manifest["deployer"]
    out.write_text(json.dumps(manifest))
    assert_one_line_error(run_cli("manifest", "check", "--manifest", str(out), check=False), "no contract code at")


def test_manifest_check_fails_in_one_line_when_manifest_missing_or_malformed(tmp_path: Path):
    assert_one_line_error(run_cli("manifest", "check", "--manifest", str(tmp_path / "none.json"), check=False), "no deployment manifest")
    (tmp_path / "bad.json").write_text("{not json")
    assert_one_line_error(run_cli("manifest", "check", "--manifest", str(tmp_path / "bad.json"), check=False), "unreadable deployment manifest")


def test_devnet_up_fails_in_one_line_when_artifacts_missing(devnet_dir, tmp_path: Path):
    _, env = devnet_dir
    result = run_cli("devnet", "up", "--port", str(free_port()), env={**env, "PARTLEDGER_ARTIFACTS": str(tmp_path / "empty")}, check=False)
    assert_one_line_error(result, "missing contract artifact")
    assert "run `make contracts`" in result.stderr


def test_usage_errors_exit_2():
    assert run_cli("devnet", "up", "--port", "not-a-port", check=False).returncode == 2


class _NonDevChain:
    """A production chain's answers (this machine can run no Besu): client and chain id of a permissioned network."""

    client_version = "besu/v25.10.0/linux-x86_64/openjdk-java-21"

    class eth:  # noqa: N801 - mirrors Web3.eth
        chain_id = 2026


def test_dev_key_refused_outside_a_dev_chain_and_accepted_on_anvil(w3):
    from tests.chainkit import dev_account

    dev = dev_account(3).address
    with pytest.raises(ConfigError, match="refusing the public development key"):
        refuse_dev_key(_NonDevChain(), dev)  # type: ignore[arg-type]
    refuse_dev_key(_NonDevChain(), Web3.to_checksum_address("0x" + "12" * 20))
    refuse_dev_key(w3, dev)
