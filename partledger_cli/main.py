"""The `partledger` command line. Errors end as one line on stderr and a non-zero exit code, never a traceback.

Here and in every module of partledger_cli, web3, eth-account, SQLAlchemy, Alembic, FastAPI and the other heavy
libraries are imported inside the commands that use them: `partledger --help` (and every command's --help, which
reads all the command signatures) then starts in a fraction of a second. Command signatures use only standard
library and Typer types, so that Typer can resolve them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from partledger.errors import PartLedgerError
from partledger.manifest import load_manifest, save_manifest
from partledger_cli.backup import register_backup_commands
from partledger_cli.devnet import default_paths, devnet_down, devnet_status, devnet_up
from partledger_cli.edge import edge_app
from partledger_cli.epcis import epcis_app
from partledger_cli.wallet import wallet_app
from partledger_cli.index import index_command
from partledger_cli.labels import labels_app
from partledger_cli.org import org_app
from partledger_cli.products import products_app
from partledger_cli.proof import register_proof_commands
from partledger_cli.stack import down_command, serve_command, up_command
from partledger_cli.relay import relay_command
from partledger_cli.submit import submit_command
from partledger_cli.users import user_app

app = typer.Typer(help="PartLedger: serialised auto parts, custody and trade evidence on a permissioned EVM chain.", no_args_is_help=True)
devnet_app = typer.Typer(help="A local Anvil chain with the contracts and a demo consortium.", no_args_is_help=True)
manifest_app = typer.Typer(help="Deployment manifests.", no_args_is_help=True)
app.add_typer(devnet_app, name="devnet")
app.add_typer(manifest_app, name="manifest")
app.add_typer(wallet_app, name="wallet")
app.add_typer(edge_app, name="edge")
app.command("index")(index_command)
app.add_typer(org_app, name="org")
app.add_typer(user_app, name="user")
app.add_typer(labels_app, name="labels")
app.add_typer(products_app, name="products")
app.add_typer(epcis_app, name="epcis")
app.command("up")(up_command)
app.command("down")(down_command)
app.command("serve")(serve_command)
app.command("submit")(submit_command)
app.command("relay")(relay_command)
register_proof_commands(app)
register_backup_commands(app)
console = Console()


@devnet_app.command("up")
def devnet_up_command(
    port: Annotated[int, typer.Option(help="JSON-RPC port on 127.0.0.1 (a new devnet; one resumed keeps its own)")] = 8545,
    chain_id: Annotated[int, typer.Option(help="chain id")] = 31337,
    block_time: Annotated[int, typer.Option(help="whole seconds per block once seeded; 0: one block per transaction", min=0)] = 0,
    gas_limit: Annotated[int, typer.Option(help="block gas limit")] = 1_000_000_000,
    gas_price: Annotated[int, typer.Option(help="gas price in wei (0: free gas, as on a permissioned Besu network)")] = 0,
    hardfork: Annotated[str, typer.Option(help="EVM hardfork")] = "prague",
) -> None:
    """Resume the devnet of the run directory, or start a new one: Anvil, the contracts, the demo consortium and the
    deployment manifest. Its chain is saved every second and survives a stop, a crash or a reboot."""
    from partledger.anvil import AnvilConfig

    config = AnvilConfig(port=port, chain_id=chain_id, gas_limit=gas_limit, gas_price=gas_price, hardfork=hardfork)
    paths = default_paths()
    with console.status("starting the devnet: Anvil, contracts, demo consortium"):
        started = devnet_up(config, paths, block_time=block_time or None)
    for note in started.notes:
        console.print(note)
    console.print(started.summary())
    manifest = load_manifest(paths.manifest)
    table = Table(title=f"PartLedger devnet — chain {manifest.chain_id} at {manifest.rpc_url}")
    table.add_column("organisation")
    table.add_column("id", justify="right")
    table.add_column("roles")
    table.add_column("sites (key)")
    for org in started.consortium["organisations"]:
        sites = "\n".join(f"{site['site']} ({site['address']})" for site in org["sites"])
        table.add_row(org["name"], str(org["id"]), ", ".join(org["roles"]), sites)
    console.print(table)
    for name, contract in manifest.contracts.items():
        console.print(f"{name:<20} {contract.address}")
    console.print(f"JSON-RPC            {manifest.rpc_url}")
    console.print(f"manifest            {paths.manifest}")
    console.print(f"keystores           {paths.keys} (passphrase file {paths.passphrase})")
    console.print(f"saved chain         {paths.chain_state} (every second)")
    console.print("stop it with        partledger devnet down   (or make stop)")


@devnet_app.command("down")
def devnet_down_command() -> None:
    """Save the devnet's chain and stop its Anvil."""
    if devnet_down(default_paths()):
        console.print("devnet stopped (its chain is saved: `partledger devnet up` resumes it)")
    else:
        console.print("no devnet was running")


@devnet_app.command("keep")
def devnet_keep_command(
    every: Annotated[float, typer.Option(help="seconds between two saves")] = 1.0,
) -> None:
    """Save the devnet's chain every few seconds until stopped (started by `devnet up`; SIGTERM saves once more)."""
    from partledger_cli.devnet import keep_chain

    keep_chain(default_paths(), every=every)


@devnet_app.command("reset")
def devnet_reset_command(
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Stop everything and delete the devnet: its chain, keys, API keys and databases."""
    from partledger_cli.stack import reset_stack

    reset_stack(default_paths(), confirmed=yes)
    console.print("the devnet is deleted: `partledger up` starts a new one")


@devnet_app.command("status")
def devnet_status_command() -> None:
    """Whether the devnet runs, where, and its head block."""
    print(json.dumps(devnet_status(default_paths())))


@app.command("deploy")
def deploy_command(
    rpc: Annotated[str, typer.Option(help="JSON-RPC URL of the chain")],
    keystore: Annotated[Path, typer.Option(help="v3 keystore of the deployer (also admin and operator unless given)")],
    out: Annotated[Path, typer.Option(help="where to write the deployment manifest")] = Path("manifest.json"),
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the keystore passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE])")] = None,
    operator: Annotated[Optional[str], typer.Option(help="consortium operator address")] = None,
    admin: Annotated[Optional[str], typer.Option(help="admin address (grants the operator role)")] = None,
    gas_price: Annotated[int, typer.Option(help="gas price in wei")] = 0,
    confirmations: Annotated[int, typer.Option(help="blocks until final (0 for QBFT)")] = 0,
) -> None:
    """Deploy the contracts to any JSON-RPC chain and write the deployment manifest."""
    from partledger.chain import connect
    from partledger.deploy import deploy_contracts
    from wallets.keystore import load_keystore, read_passphrase

    deployer = load_keystore(keystore, read_passphrase(passphrase_file))
    w3 = connect(rpc)
    manifest = deploy_contracts(
        w3,
        deployer,
        rpc_url=rpc,
        admin=admin or deployer.address,
        operator=operator or deployer.address,
        gas_price=gas_price,
        confirmations=confirmations,
    )
    save_manifest(manifest, out)
    for name, contract in manifest.contracts.items():
        console.print(f"{name:<20} {contract.address}  (block {contract.block})")
    console.print(f"manifest written to {out}")


@manifest_app.command("check")
def manifest_check_command(
    manifest: Annotated[Path, typer.Option(help="deployment manifest")] = Path("hardhat-free-devnet/run/manifest.json"),
    rpc: Annotated[Optional[str], typer.Option(help="JSON-RPC URL (default: the manifest's)")] = None,
) -> None:
    """Check that a chain is the one a manifest describes: chain id and the code at every address."""
    from partledger.chain import connect, require_chain

    loaded = load_manifest(manifest)
    w3 = connect(rpc or loaded.rpc_url)
    require_chain(w3, chain_id=loaded.chain_id, code={name: (c.address, c.code_hash) for name, c in loaded.contracts.items()})
    console.print(f"ok: chain {loaded.chain_id} holds the {len(loaded.contracts)} contracts of {manifest}")


def main() -> None:
    """Console entry point: PartLedgerError → one line on stderr and exit 1; usage errors → exit 2 (Typer)."""
    try:
        app()
    except PartLedgerError as exc:
        print(f"partledger: error: {exc}", file=sys.stderr)
        sys.exit(1)
