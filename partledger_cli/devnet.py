"""`partledger devnet`: a local Anvil chain with the contracts deployed and a demo consortium seeded.

web3, eth-account and the Anvil runner are imported inside the functions that use them, so that `partledger --help`
and every other command start without them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from partledger.artifacts import all_artifacts, load_artifact
from partledger.errors import DevnetError
from partledger.manifest import Manifest, save_manifest
from partledger.model import Role

from partledger_cli.paths import DEVNET_DIR, DevnetPaths, default_paths  # noqa: F401 - default_paths re-exported
from partledger_cli.pidfiles import port_in_use, recorded

if TYPE_CHECKING:
    from web3 import Web3

    from partledger.anvil import AnvilConfig

CONSORTIUM_FILE = DEVNET_DIR / "consortium.json"


KEEP_EVERY = 1.0  # seconds between two saves of the chain: at most this much is lost with the node
# The indexer of `partledger up` handles reorganisations this deep: a node killed between two saves comes back
# without the blocks of up to a second, and a block per transaction makes that hundreds of blocks at full load.
DEVNET_FINALITY_DEPTH = 10_000
ANVIL = ("anvil",)
KEEPER = ("partledger_cli", "devnet", "keep")


def running_pid(paths: DevnetPaths) -> int | None:
    """The pid of the devnet's Anvil when it is alive, else None (a stale pid file is ignored)."""
    node = recorded(paths.pid, *ANVIL)
    return node.pid if node.alive else None


@dataclass(frozen=True)
class DevnetStart:
    consortium: dict[str, Any]
    resumed: bool
    block: int  # the head the node started at
    notes: tuple[str, ...] = ()  # what was found and mended on the way (a stale pid file)

    def summary(self) -> str:
        return f"resumed the devnet at block {self.block}" if self.resumed else "started a new devnet"


def devnet_up(config: AnvilConfig, paths: DevnetPaths, *, block_time: int | None = None) -> DevnetStart:
    """Resumes the devnet of the run directory (its saved chain, manifest, keys) or, when there is none, starts a
    new one: Anvil detached, the contracts deployed, the demo consortium seeded. The chain keeper then saves the
    chain every second. A new devnet mines a block per transaction, or, with `block_time`, one block every so many
    seconds once seeded (empty ones too: the saved chain grows by every block)."""
    node = recorded(paths.pid, *ANVIL)
    if node.alive:
        raise DevnetError(f"the devnet is already running (pid {node.pid}); `partledger devnet down` first")
    notes = []
    if node.stale:
        paths.pid.unlink()
        notes.append(f"removed the stale pid file of an Anvil that no longer runs (pid {node.pid})")
    all_artifacts()  # fail before starting anything when artifacts are missing
    if paths.manifest.exists():
        return _resume(paths, tuple(notes))
    if paths.run.exists():
        shutil.rmtree(paths.run)  # a devnet that never finished seeding: nothing in it describes a chain
    paths.run.mkdir(parents=True)
    _require_free_port(config.port, "Anvil")
    started = _start_node(config, paths)
    try:
        consortium = _deploy_and_seed(config, paths, block_time=block_time)
        if block_time is not None:
            started.request("evm_setIntervalMining", [block_time])  # whole seconds, as QBFT's block period
        save_chain(paths)
    except BaseException:
        started.node.stop()
        paths.pid.unlink(missing_ok=True)
        raise
    start_keeper(paths)
    return DevnetStart(consortium, resumed=False, block=started.head(), notes=tuple(notes))


def _resume(paths: DevnetPaths, notes: tuple[str, ...]) -> DevnetStart:
    from partledger.anvil import AnvilConfig, read_chain_state
    from partledger.chain import connect, require_chain
    from partledger.manifest import load_manifest

    manifest = load_manifest(paths.manifest)
    if not paths.chain_state.exists():
        raise DevnetError(f"{paths.run} holds a devnet without a saved chain (made before the devnet kept its chain): `partledger up --fresh` starts a new one")
    try:
        saved, unpacked = read_chain_state(paths.chain_state)
    except DevnetError as exc:
        raise DevnetError(f"{exc}: restore it from a backup, or start a new devnet with `partledger up --fresh`") from None
    loading = paths.run / "anvil-load.json"
    loading.write_bytes(unpacked)
    port = int(manifest.rpc_url.rsplit(":", 1)[1])
    _require_free_port(port, "Anvil")
    extra = manifest.extra or {}
    config = AnvilConfig(port=port, chain_id=manifest.chain_id, block_time=extra.get("block_time"), gas_price=int(extra.get("gas_price", 0)), load_state=loading)
    started = _start_node(config, paths)
    try:
        require_chain(connect(config.url), chain_id=manifest.chain_id, code={name: (c.address, c.code_hash) for name, c in manifest.contracts.items()})
    except BaseException:
        started.node.stop()
        paths.pid.unlink(missing_ok=True)
        raise
    loading.unlink()
    start_keeper(paths)
    consortium = json.loads(paths.consortium.read_text())
    return DevnetStart(consortium, resumed=True, block=max(saved.block, started.head()), notes=notes)


@dataclass
class _StartedNode:
    node: Any  # AnvilNode
    url: str

    def request(self, method: str, params: list[Any]) -> Any:
        from partledger.anvil import devnet_rpc

        return devnet_rpc(self.url, method, params, timeout=30)

    def head(self) -> int:
        return int(self.request("eth_blockNumber", []), 16)


def _start_node(config: AnvilConfig, paths: DevnetPaths) -> _StartedNode:
    from partledger.anvil import AnvilNode

    node = AnvilNode.start(config, log_path=paths.log, detach=True)
    paths.pid.write_text(f"{node.process.pid}\n")
    return _StartedNode(node, config.url)


def _require_free_port(port: int, what: str) -> None:
    if port_in_use(port):
        raise DevnetError(f"port {port} for {what} is taken by a process this stack did not start: stop it, or move this devnet with `partledger up --fresh --anvil-port N`")


def _resume_mining(paths: DevnetPaths) -> None:
    import requests

    from partledger.anvil import devnet_rpc
    from partledger.manifest import load_manifest

    manifest = load_manifest(paths.manifest)
    if (manifest.extra or {}).get("block_time") is None:
        try:
            devnet_rpc(manifest.rpc_url, "evm_setAutomine", [True], timeout=10)
        except (requests.RequestException, DevnetError):
            pass  # the node is not up yet: it starts with automine on


def save_chain(paths: DevnetPaths) -> int:
    """Saves the running devnet's chain now; returns the size written."""
    from partledger.anvil import save_chain_state
    from partledger.manifest import load_manifest

    return save_chain_state(load_manifest(paths.manifest).rpc_url, paths.chain_state)


def start_keeper(paths: DevnetPaths) -> None:
    """The chain keeper as a background process of its own (`partledger devnet keep`), unless one runs."""
    import subprocess
    import sys

    keeper = recorded(paths.pidfile("keeper"), *KEEPER)
    if keeper.alive:
        return
    with open(paths.run / "keeper.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "partledger_cli", "devnet", "keep", "--every", str(KEEP_EVERY)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PARTLEDGER_DEVNET_DIR": str(paths.run)},
        )  # fmt: skip
    paths.pidfile("keeper").write_text(f"{process.pid}\n")


def keep_chain(paths: DevnetPaths, *, every: float) -> None:
    """Saves the chain every `every` seconds until SIGTERM, then once more and returns. A node that does not answer
    (stopped, restarting) is waited for; the last whole save stays on disk meanwhile."""
    import logging
    import signal
    import threading

    log = logging.getLogger("partledger.devnet.keeper")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    _resume_mining(paths)  # a keeper killed during a save leaves automine paused
    failing = False
    while True:
        stopping = stop.is_set()
        try:
            save_chain(paths)
            if failing:
                log.info("saving the chain again")
            failing = False
        except Exception as exc:  # noqa: BLE001 - the node may be down for a while: keep the last save, try again
            if not failing:
                log.warning("cannot save the chain (%s): the last save stays", exc)
            failing = True
        if stopping:
            return
        stop.wait(every)


def _deploy_and_seed(config: AnvilConfig, paths: DevnetPaths, *, block_time: int | None) -> dict[str, Any]:
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
    relayer = create_keystore(paths.relayer_keys / "relayer-1.json", passphrase, light=True)
    _fund(w3, config, relayer.address)
    extra = {"devnet": True, "operator_keystore": str(paths.keys / "operator.json"), "block_time": block_time, "gas_price": config.gas_price}
    manifest = Manifest(**{**manifest.__dict__, "extra": extra})
    save_manifest(manifest, paths.manifest)
    consortium = {"chain_id": manifest.chain_id, "rpc_url": config.url, "organisations": organisations}
    paths.consortium.write_text(json.dumps(consortium, indent=2, ensure_ascii=False) + "\n")
    return consortium


def _fund(w3: Web3, config: AnvilConfig, address: str) -> None:
    """Gives a devnet key ether when gas is not free (anvil_setBalance: devnet only)."""
    if config.gas_price > 0:
        w3.provider.make_request("anvil_setBalance", [address, hex(10**24)])


def devnet_down(paths: DevnetPaths) -> bool:
    """Saves the chain one last time, stops the keeper and Anvil; False when no Anvil was running."""
    from partledger.anvil import stop_pid

    node = recorded(paths.pid, *ANVIL)
    keeper = recorded(paths.pidfile("keeper"), *KEEPER)
    if keeper.alive:
        stop_pid(keeper.pid)  # type: ignore[arg-type]  # it saves once more on its way out
    if node.alive and paths.manifest.exists():
        save_chain(paths)
    paths.pidfile("keeper").unlink(missing_ok=True)
    paths.pid.unlink(missing_ok=True)
    return node.alive and stop_pid(node.pid)  # type: ignore[arg-type]


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
