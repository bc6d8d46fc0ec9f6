"""`partledger wallet`: site keystores on disk, and their rotation and revocation on the ConsortiumRegistry.

Passphrases come from --passphrase-file or the keystore environment variables (wallets.keystore), never from an
option value. Rotation and revocation are signed by the consortium operator's key.

web3 and eth-account are imported inside the commands that use them, so that `partledger --help` starts without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from partledger.manifest import Manifest, load_manifest
from partledger_cli.devnet import default_paths

if TYPE_CHECKING:
    from web3 import Web3
    from web3.contract import Contract

    from wallets.rotation import SiteKeyStatus
    from wallets.signer import LocalSigner

wallet_app = typer.Typer(help="Site keys: keystores, and their rotation and revocation on chain.", no_args_is_help=True)

KeyDir = Annotated[Optional[Path], typer.Option("--dir", help="key directory (default: the devnet's run/keys)")]
ManifestPath = Annotated[Path, typer.Option(help="deployment manifest")]
Rpc = Annotated[Optional[str], typer.Option(help="JSON-RPC URL (default: the manifest's)")]
PassphraseFile = Annotated[Optional[Path], typer.Option(help="secret file with the keystore passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE])")]
OperatorKeystore = Annotated[Path, typer.Option(help="v3 keystore of the consortium operator, who signs")]


@wallet_app.command("new")
def wallet_new_command(
    org_slug: Annotated[str, typer.Option(help="organisation slug: the key's directory")],
    site: Annotated[str, typer.Option(help="site name (also its on-chain name, up to 32 characters)")],
    directory: KeyDir = None,
    passphrase_file: PassphraseFile = None,
    light: Annotated[bool, typer.Option(help="light scrypt: for throwaway devnet keys only")] = False,
) -> None:
    """Create a site key: a new v3 keystore at DIR/ORG-SLUG/SITE.json. Prints its address."""
    from wallets.keystore import read_passphrase
    from wallets.rotation import create_site_keystore

    created = create_site_keystore(
        directory or default_paths().keys, org_slug=org_slug, site=site, passphrase=read_passphrase(passphrase_file), light=light
    )
    print(created.address)
    print(f"keystore written to {created.path}; the operator adds it on chain (ConsortiumRegistry.addSiteKey)")


@wallet_app.command("list")
def wallet_list_command(
    directory: KeyDir = None,
    manifest: Annotated[Optional[Path], typer.Option(help="deployment manifest: adds each key's status on chain")] = None,
    rpc: Rpc = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON array instead of a table")] = False,
) -> None:
    """List the keystores of a key directory (read without decrypting), with their on-chain status given a manifest."""
    from wallets.rotation import list_keystores, read_site_key

    keystores = list_keystores(directory or default_paths().keys)
    statuses: dict[str, SiteKeyStatus] = {}
    if manifest is not None:
        _, _, registry = _open_registry(manifest, rpc)
        statuses = {keystore.address: read_site_key(registry, keystore.address) for keystore in keystores}
    rows: list[dict[str, Any]] = []
    for keystore in keystores:
        row: dict[str, Any] = {"address": keystore.address, "org_slug": keystore.org_slug, "site": keystore.site, "path": str(keystore.path)}
        if keystore.address in statuses:
            status = statuses[keystore.address]
            row |= {"state": status.state, "org_id": status.org_id, "chain_site": status.site, "added_block": status.added_block, "revoked_block": status.revoked_block}
        rows.append(row)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    for row in rows:
        line = f"{row['address']}  {row['org_slug'] or '-':<16} {row['site'] or '-':<20}"
        if row.get("state") == "unknown":
            line += " unknown  (not a site key on chain)"
        elif "state" in row:
            line += f" {row['state']:<8} org {row['org_id']:<5} added {row['added_block']:<8} revoked {row['revoked_block'] or '-'}"
        print(f"{line}  {row['path']}")


@wallet_app.command("rotate")
def wallet_rotate_command(
    keystore: Annotated[Path, typer.Option(help="v3 keystore of the site key to replace")],
    operator_keystore: OperatorKeystore,
    manifest: ManifestPath,
    rpc: Rpc = None,
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the passphrase for the new keystore (and the operator's, unless given apart)")] = None,
    operator_passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the operator keystore's passphrase")] = None,
) -> None:
    """Replace a site key: a new one is added on chain for the same organisation and site, then the old one revoked
    (when it is not already: a key revoked in haste after a compromise gets its replacement this way)."""
    from partledger.deploy import refuse_dev_key
    from wallets.keystore import read_passphrase
    from wallets.rotation import rotate_site_key

    passphrase = read_passphrase(passphrase_file)
    operator = _operator(operator_keystore, read_passphrase(operator_passphrase_file) if operator_passphrase_file else passphrase)
    w3, loaded, registry = _open_registry(manifest, rpc)
    refuse_dev_key(w3, operator.address)
    rotation = rotate_site_key(w3, registry, operator, keystore, passphrase=passphrase, gas_price=loaded.gas_price)
    print(f"old {rotation.old.address}  revoked in block {rotation.old.revoked_block}")
    print(f"new {rotation.new.address}  added in block {rotation.new.added_block}  (org {rotation.new.org_id}, site {rotation.new.site})  keystore {rotation.new_keystore}")


@wallet_app.command("revoke")
def wallet_revoke_command(
    address: Annotated[str, typer.Option(help="the site key to revoke, for good")],
    operator_keystore: OperatorKeystore,
    manifest: ManifestPath,
    rpc: Rpc = None,
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the operator keystore's passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE])")] = None,
) -> None:
    """Revoke a site key for good: it can change nothing anywhere from the next block on."""
    from web3 import Web3

    from partledger.deploy import refuse_dev_key
    from wallets.keystore import read_passphrase
    from wallets.rotation import revoke_site_key

    if not Web3.is_address(address):
        raise typer.BadParameter(f"{address!r} is not an address", param_hint="--address")
    operator = _operator(operator_keystore, read_passphrase(passphrase_file))
    w3, loaded, registry = _open_registry(manifest, rpc)
    refuse_dev_key(w3, operator.address)
    status = revoke_site_key(w3, registry, operator, address, gas_price=loaded.gas_price)
    print(f"revoked {status.address}  in block {status.revoked_block}  (org {status.org_id}, site {status.site})")


def _operator(keystore: Path, passphrase: str) -> LocalSigner:
    from wallets.signer import LocalSigner

    return LocalSigner.from_keystore(keystore, passphrase)


def _open_registry(manifest_path: Path, rpc: Optional[str]) -> tuple[Web3, Manifest, Contract]:
    """The chain a manifest describes, checked to be that chain, and its ConsortiumRegistry."""
    from partledger.chain import connect, require_chain
    from wallets.rotation import registry_contract

    manifest = load_manifest(manifest_path)
    w3 = connect(rpc or manifest.rpc_url)
    require_chain(w3, chain_id=manifest.chain_id, code={name: (c.address, c.code_hash) for name, c in manifest.contracts.items()})
    return w3, manifest, registry_contract(w3, manifest)
