"""`partledger proof get | verify` and `partledger checkpoint export`: auditor proofs from the command line.

The proof builder and verifier (eth-abi, coincurve, py-trie), httpx and eth-account are imported inside the commands
that use them, so that `partledger --help` starts without them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from partledger.errors import ConfigError
from partledger.manifest import load_manifest
from partledger_cli.devnet import default_paths

if TYPE_CHECKING:
    from partledger.proofs import verifier as v
    from partledger.proofs.builder import BatchRecord, ProofBuilder

proof_app = typer.Typer(help="Auditor proofs: fetch a proof bundle, verify one offline.", no_args_is_help=True)
checkpoint_app = typer.Typer(help="Operator-signed block-hash checkpoints: the auditor's trust anchor.", no_args_is_help=True)
console = Console()

ManifestOption = Annotated[Optional[Path], typer.Option(help="deployment manifest (default: the devnet's)")]
RpcOption = Annotated[Optional[str], typer.Option(help="JSON-RPC URL (default: the manifest's)")]


def register_proof_commands(app: typer.Typer) -> None:
    app.add_typer(proof_app, name="proof")
    app.add_typer(checkpoint_app, name="checkpoint")


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise typer.BadParameter(f"{what} is 0x followed by 64 hex digits")
    return raw


def _builder(manifest: Path | None, rpc: str | None, validators_from: int | None = None) -> ProofBuilder:
    from partledger.proofs.builder import ProofBuilder

    loaded = load_manifest(manifest or default_paths().manifest)
    return ProofBuilder(rpc_url=rpc or loaded.rpc_url, manifest=loaded, qbft_from=validators_from)


def _record(path: Path) -> BatchRecord:
    """A batch record file: {"types": [...], "value": [...], "proof": [...]} or {"types", "values": [all], "index"}."""
    from partledger.merkle import build_tree
    from partledger.proofs.builder import BatchRecord, record_json

    try:
        data = json.loads(path.read_text())
        types = data["types"]
        if "values" in data:
            values = [list(row) for row in data["values"]]
            tree = build_tree([[_abi_value(t, x) for t, x in zip(types, row, strict=True)] for row in values], types=types)
            index = data["index"]
            return BatchRecord(types, record_json(types, values[index]), tree.proof_at(index))
        return BatchRecord(types, data["value"], [bytes.fromhex(p[2:]) for p in data["proof"]])
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise ConfigError(f"unreadable batch record file {path}: {exc}") from None


def _abi_value(kind: str, value: Any) -> Any:
    """A record value from its JSON form to what eth-abi encodes (bytes for bytes and bytesN)."""
    return bytes.fromhex(value[2:]) if kind.startswith("bytes") else value


def _from_service(url: str, path: str, *, params: dict[str, Any], record: BatchRecord | None) -> dict[str, Any]:
    import httpx

    from partledger.proofs import verifier as v

    api_key = os.environ.get("PARTLEDGER_API_KEY")
    if not api_key:
        raise ConfigError("set PARTLEDGER_API_KEY to fetch a bundle from a PartLedger service")
    headers = {"Authorization": f"Bearer {api_key}"}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            if record is None:
                reply = client.get(path, params=params, headers=headers)
            else:
                body = {"types": record.types, "value": record.value, "proof": [v.to_hex(p) for p in record.proof]}
                reply = client.post(path + "/records", params=params, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot reach the service at {url}: {type(exc).__name__}: {exc}") from None
    if reply.status_code != 200:
        raise ConfigError(f"the service answered {reply.status_code}: {reply.text[:300]}")
    return reply.json()


@proof_app.command("get")
def get_command(
    doc_hash: Annotated[Optional[str], typer.Option("--doc-hash", help="an anchored trade document's hash")] = None,
    tx: Annotated[Optional[str], typer.Option(help="a lifecycle event: its transaction hash (with --log-index)")] = None,
    log_index: Annotated[Optional[int], typer.Option(help="the event's log index in its block")] = None,
    batch_root: Annotated[Optional[str], typer.Option(help="an anchored batch root")] = None,
    record: Annotated[Optional[Path], typer.Option(help="with --batch-root: a JSON file with the record (types, value, proof) or the whole batch (types, values, index)")] = None,
    document: Annotated[Optional[Path], typer.Option(help="with --doc-hash and --salt: the document file, to put its salt and content hash in the bundle")] = None,
    salt: Annotated[Optional[str], typer.Option(help="the document's 32-byte salt (0x...)")] = None,
    chain_to: Annotated[Optional[int], typer.Option(help="add the headers up to this block (a checkpointed one)")] = None,
    validators_from: Annotated[Optional[int], typer.Option(help="Besu QBFT: the block after which the auditor's trusted validators hold (0: genesis; default: the newest epoch block)")] = None,
    checkpoints: Annotated[Optional[Path], typer.Option(help="add the headers up to the first checkpoint of this file after the block")] = None,
    out: Annotated[Path, typer.Option(help="where to write the bundle")] = Path("bundle.json"),
    manifest: ManifestOption = None,
    rpc: RpcOption = None,
    service: Annotated[Optional[str], typer.Option(help="fetch from a PartLedger service at this URL (API key in PARTLEDGER_API_KEY) instead of a node")] = None,
) -> None:
    """Fetch the proof bundle of a trade document, a lifecycle event or a batched record."""
    from partledger.proofs.builder import attach_document, dump_bundle
    from partledger.proofs.checkpoints import chain_target

    if sum(x is not None for x in (doc_hash, tx, batch_root)) != 1 or (tx is None) != (log_index is None):
        raise typer.BadParameter("give exactly one of --doc-hash, --tx with --log-index, or --batch-root")
    if validators_from is not None and service is not None:
        raise typer.BadParameter("--validators-from builds from a node: it does not go with --service")
    batch_record = _record(record) if record is not None else None
    if checkpoints is not None and chain_to is None:
        # the target depends on the block, known once the bundle is built: build, then rebuild with the chain
        first = _get(doc_hash, tx, log_index, batch_root, batch_record, None, manifest, rpc, service, validators_from)
        chain_to = chain_target(json.loads(checkpoints.read_text()), first["block"]["number"])
        if chain_to is None:
            raise ConfigError(f"no checkpoint in {checkpoints} at or after block {first['block']['number']}: export checkpoints again")
    bundle = _get(doc_hash, tx, log_index, batch_root, batch_record, chain_to, manifest, rpc, service, validators_from)
    if salt is not None or document is not None:
        if salt is None or document is None or doc_hash is None:
            raise typer.BadParameter("--salt and --document go together, with --doc-hash")
        bundle = attach_document(bundle, salt=_hex32(salt, "--salt"), content=document.read_bytes())
    out.write_text(dump_bundle(bundle))
    console.print(f"{bundle['subject']} bundle of block {bundle['block']['number']} written to {out} ({out.stat().st_size:,} bytes)")


def _get(doc_hash: str | None, tx: str | None, log_index: int | None, batch_root: str | None, record: BatchRecord | None,
         chain_to: int | None, manifest: Path | None, rpc: str | None, service: str | None, validators_from: int | None) -> dict[str, Any]:  # fmt: skip
    params = {"chain_to": chain_to} if chain_to is not None else {}
    if service is not None:
        if doc_hash is not None:
            return _from_service(service, f"/v1/proofs/documents/{doc_hash}", params=params, record=None)
        if tx is not None:
            return _from_service(service, f"/v1/proofs/events/{tx}/{log_index}", params=params, record=None)
        return _from_service(service, f"/v1/proofs/batches/{batch_root}", params=params, record=record)
    builder = _builder(manifest, rpc, validators_from)
    if doc_hash is not None:
        return builder.document(_hex32(doc_hash, "--doc-hash"), chain_to=chain_to)
    if tx is not None:
        return builder.event(_hex32(tx, "--tx"), log_index or 0, chain_to=chain_to)
    return builder.batch(_hex32(batch_root or "", "--batch-root"), record=record, chain_to=chain_to)


@proof_app.command("verify")
def verify_command(
    bundle: Annotated[Path, typer.Argument(help="the proof bundle (JSON)")],
    document: Annotated[Optional[Path], typer.Option(help="the document file, checked against the anchored hash")] = None,
    trusted_block: Annotated[Optional[list[str]], typer.Option(help="a block you trust, as NUMBER:0xHASH")] = None,
    rpc: Annotated[Optional[str], typer.Option(help="a JSON-RPC node you trust")] = None,
    checkpoints: Annotated[Optional[Path], typer.Option(help="the operator's signed checkpoint file")] = None,
    operator: Annotated[Optional[str], typer.Option(help="the operator address the checkpoints must be signed by")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="the consortium's deployment manifest: pins the contract addresses")] = None,
    validators: Annotated[Optional[Path], typer.Option(help="Besu QBFT: the genesis file, or a JSON list of the validator addresses, you trust")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the verdict as JSON")] = False,
) -> None:
    """Verify a proof bundle offline: every hash, proof and signature, against a trust anchor. Exit 0 only if valid."""
    from partledger.proofs import qbft
    from partledger.proofs import verifier as v

    try:
        blocks = dict(v.parse_trusted_block(text) for text in trusted_block or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        loaded_checkpoints = v.parse_json(checkpoints.read_bytes()) if checkpoints is not None else None
    except (OSError, v.CheckFailed) as exc:
        raise ConfigError(f"unreadable checkpoint file {checkpoints}: {exc}") from None
    try:
        contracts = v.manifest_contracts(v.parse_json(manifest.read_bytes())) if manifest is not None else None
    except (OSError, v.CheckFailed) as exc:
        raise ConfigError(f"unreadable deployment manifest {manifest}: {exc}") from None
    try:
        loaded_validators = v.parse_json(validators.read_bytes()) if validators is not None else None
        if loaded_validators is not None:
            qbft.trusted_validators(loaded_validators)
    except (OSError, v.CheckFailed) as exc:
        raise ConfigError(f"unusable validators file {validators}: {exc}") from None
    anchors = v.TrustAnchors(blocks=blocks, rpc_url=rpc, checkpoints=loaded_checkpoints, operator=operator, contracts=contracts, validators=loaded_validators)
    try:
        raw = bundle.read_bytes()
        content = document.read_bytes() if document is not None else None
    except OSError as exc:
        raise ConfigError(f"cannot read {exc.filename}: {exc.strerror}") from None
    verdict = v.verify_bundle(raw, document=content, anchors=anchors)
    if as_json:
        print(json.dumps(verdict.to_dict(), indent=2))
    else:
        print_verdict(verdict, bundle)
    raise typer.Exit(0 if verdict.ok else 1)


def print_verdict(verdict: v.Verdict, source: Path) -> None:
    table = Table(title=f"proof bundle {source}", show_lines=False)
    table.add_column("", width=2)
    table.add_column("check")
    table.add_column("result")
    for check in verdict.checks:
        table.add_row("[green]✓[/]" if check.ok else "[red]✗[/]", check.name, check.detail)
    console.print(table)
    if verdict.ok:
        facts = Table(title="what the bundle proves", show_header=False)
        facts.add_column("fact")
        facts.add_column("value")
        for label, value in verdict.facts:
            facts.add_row(label, value)
        console.print(facts)
        console.print(f"[bold green]VALID[/]: all {len(verdict.checks)} checks passed")
    else:
        first = next(check for check in verdict.checks if not check.ok)
        console.print(f"[bold red]INVALID[/]: failed {', '.join(verdict.failed)}: {first.name}: {escape(first.detail)}", soft_wrap=True, highlight=False)


@checkpoint_app.command("export")
def export_command(
    out: Annotated[Path, typer.Option(help="the checkpoint file (extended when it exists)")] = Path("checkpoints.json"),
    every: Annotated[int, typer.Option(help="a checkpoint every this many blocks (and the newest final block)")] = 100,
    keystore: Annotated[Optional[Path], typer.Option(help="the operator's v3 keystore (default: the devnet's)")] = None,
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with its passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE]; the devnet's by default)")] = None,
    manifest: ManifestOption = None,
    rpc: RpcOption = None,
) -> None:
    """Sign block-hash checkpoints with the operator key: the trust anchor auditors take once."""
    from partledger.proofs import verifier as v
    from partledger.proofs.builder import JsonRpc
    from partledger.proofs.checkpoints import export_checkpoints
    from wallets.keystore import load_keystore, read_passphrase
    from wallets.signer import LocalSigner

    paths = default_paths()
    loaded = load_manifest(manifest or paths.manifest)
    if keystore is None:
        devnet_keystore = loaded.extra.get("operator_keystore")
        if not devnet_keystore:
            raise ConfigError("give --keystore: the manifest names no operator keystore (only the devnet's does)")
        keystore = Path(devnet_keystore)
        if passphrase_file is None and "PARTLEDGER_KEYSTORE_PASSPHRASE" not in os.environ and paths.passphrase.exists():
            passphrase_file = paths.passphrase
    signer = LocalSigner(load_keystore(keystore, read_passphrase(passphrase_file)))
    try:
        existing = v.parse_json(out.read_bytes()) if out.exists() else None
    except v.CheckFailed as exc:
        raise ConfigError(f"unreadable checkpoint file {out}: {exc}") from None
    data = export_checkpoints(JsonRpc(rpc or loaded.rpc_url), loaded, signer, every=every, existing=existing)
    temporary = out.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(out)
    last = data["checkpoints"][-1] if data["checkpoints"] else None
    console.print(f"{len(data['checkpoints'])} checkpoint(s) signed by {signer.address} in {out}" + (f", newest block {last['number']}" if last else ""))
