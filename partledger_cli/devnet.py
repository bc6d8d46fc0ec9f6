"""`partledger devnet`: a local Anvil chain with the contracts deployed and a demo consortium seeded.

web3, eth-account and the Anvil runner are imported inside the functions that use them, so that `partledger --help`
and every other command start without them.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any

from partledger.artifacts import all_artifacts, load_artifact
from partledger.errors import DevnetError
from partledger.manifest import Manifest, save_manifest
from partledger.model import Role

from partledger_cli.paths import DEVNET_DIR, DevnetPaths, default_paths  # noqa: F401 - default_paths re-exported

if TYPE_CHECKING:
    from web3 import Web3

    from partledger.anvil import AnvilConfig

CONSORTIUM_FILE = DEVNET_DIR / "consortium.json"


def running_pid(paths: DevnetPaths) -> int | None:
    """The pid of the devnet's Anvil when it is alive, else None (a stale pid file is ignored)."""
    try:
        pid = int(paths.pid.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def devnet_up(config: AnvilConfig, paths: DevnetPaths) -> dict[str, Any]:
    """Starts Anvil detached, deploys, seeds the demo consortium, writes the manifest; returns the consortium."""
    from partledger.anvil import AnvilNode

    if running_pid(paths) is not None:
        raise DevnetError(f"the devnet is already running (pid {paths.pid.read_text().strip()}); `partledger devnet down` first")
    all_artifacts()  # fail before starting anything when artifacts are missing
    if paths.run.exists():
        shutil.rmtree(paths.run)  # a new chain: old keys and manifest describe nothing any more
    paths.run.mkdir(parents=True)
    node = AnvilNode.start(config, log_path=paths.log, detach=True)
    paths.pid.write_text(f"{node.process.pid}\n")
    try:
        return _deploy_and_seed(config, paths)
    except BaseException:
        node.stop()
        paths.pid.unlink(missing_ok=True)
        raise


def _deploy_and_seed(config: AnvilConfig, paths: DevnetPaths) -> dict[str, Any]:
    from partledger.chain import connect, send_call
    from partledger.deploy import deploy_contracts
    from partledger.ids import ascii32
    from wallets.keystore import create_keystore, write_passphrase_file

    w3 = connect(config.url)
    passphrase = write_passphrase_file(paths.passphrase)
    operator = create_keystore(paths.keys / "operator.json", passphrase, light=True)
    _fund(w3, config, operator.address)
    manifest = deploy_contracts(
        w3, operator, rpc_url=config.url, admin=operator.address, operator=operator.address, gas_price=config.gas_price
    )
    registry = w3.eth.contract(address=manifest.address("ConsortiumRegistry"), abi=load_artifact("ConsortiumRegistry").abi)
    definition = json.loads(CONSORTIUM_FILE.read_text())
    organisations = []
    for entry in definition["organisations"]:
        roles = Role(0)
        for role in entry["roles"]:
            roles |= Role[role]
        receipt = send_call(w3, operator, registry.functions.registerOrganisation(int(roles), entry["name"]), gas_price=config.gas_price)
        (event,) = registry.events.OrganisationRegistered().process_receipt(receipt)
        org_id = event["args"]["orgId"]
        sites = []
        for site in entry["sites"]:
            keystore = paths.keys / entry["slug"] / f"{site}.json"
            key = create_keystore(keystore, passphrase, light=True)
            _fund(w3, config, key.address)
            send_call(w3, operator, registry.functions.addSiteKey(org_id, key.address, ascii32(site)), gas_price=config.gas_price)
            sites.append({"site": site, "address": key.address, "keystore": str(keystore)})
        organisations.append({"slug": entry["slug"], "id": org_id, "name": entry["name"], "roles": entry["roles"], "sites": sites})
    manifest = Manifest(**{**manifest.__dict__, "extra": {"devnet": True, "operator_keystore": str(paths.keys / "operator.json")}})
    save_manifest(manifest, paths.manifest)
    consortium = {"chain_id": manifest.chain_id, "rpc_url": config.url, "organisations": organisations}
    paths.consortium.write_text(json.dumps(consortium, indent=2, ensure_ascii=False) + "\n")
    return consortium


def _fund(w3: Web3, config: AnvilConfig, address: str) -> None:
    """Gives a devnet key ether when gas is not free (anvil_setBalance: devnet only)."""
    if config.gas_price > 0:
        w3.provider.make_request("anvil_setBalance", [address, hex(10**24)])


def devnet_down(paths: DevnetPaths) -> bool:
    """Stops the devnet's Anvil; False when none was running."""
    from partledger.anvil import stop_pid

    pid = running_pid(paths)
    paths.pid.unlink(missing_ok=True)
    return pid is not None and stop_pid(pid)


def devnet_status(paths: DevnetPaths) -> dict[str, Any]:
    from partledger.anvil import wait_until_ready
    from partledger.chain import connect

    pid = running_pid(paths)
    if pid is None:
        return {"running": False}
    manifest = json.loads(paths.manifest.read_text()) if paths.manifest.exists() else {}
    url = manifest.get("rpc_url")
    if url:
        wait_until_ready(url, timeout=5)
        head = connect(url).eth.block_number
    else:
        head = None
    return {"running": True, "pid": pid, "rpc_url": url, "chain_id": manifest.get("chain_id"), "head": head}
