"""`partledger labels make --lot L`: the QR labels of a whole lot, signed by a site key of its manufacturer.

The lot's parts come from the indexer's mirror (so the lot must be registered and indexed); the signing key is a
v3 keystore (passphrase from a secret file or the environment, never the command line) or a Web3Signer-compatible
remote signer in front of an HSM. Output: a PDF of label sheets (A4 24-up, or one 60 x 40 mm thermal label a page),
or one PNG or SVG QR code per part.

ReportLab, segno, SQLAlchemy and eth-account are imported inside the command, so that `partledger --help` starts
without them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from partledger.errors import ConfigError
from partledger.manifest import load_manifest
from partledger_cli.devnet import default_paths

if TYPE_CHECKING:
    from wallets.signer import Signer

labels_app = typer.Typer(help="QR labels of serialised parts: GS1 Digital Links signed by the manufacturer.", no_args_is_help=True)
console = Console(stderr=True)


def _signer(keystore: Optional[Path], passphrase_file: Optional[Path], signer_url: Optional[str], signer_address: Optional[str]) -> Signer:
    from wallets.keystore import read_passphrase
    from wallets.signer import LocalSigner, RemoteSigner

    if signer_url is not None:
        if keystore is not None or signer_address is None:
            raise typer.BadParameter("a remote signer needs --signer-address, and no --keystore")
        return RemoteSigner(signer_url, signer_address)
    if keystore is None:
        raise typer.BadParameter("give --keystore (a site key of the lot's manufacturer) or --signer-url with --signer-address")
    devnet_passphrase = default_paths().passphrase
    if passphrase_file is None and not any(name in os.environ for name in ("PARTLEDGER_KEYSTORE_PASSPHRASE", "PARTLEDGER_KEYSTORE_PASSPHRASE_FILE")):
        if keystore.resolve().is_relative_to(default_paths().keys.resolve()) and devnet_passphrase.exists():
            passphrase_file = devnet_passphrase  # a devnet keystore: its run directory holds the passphrase file
    return LocalSigner.from_keystore(keystore, read_passphrase(passphrase_file))


@labels_app.command("make")
def make_command(
    lot: Annotated[str, typer.Option(help="the lot code (GS1 AI 10) as registered")],
    keystore: Annotated[Optional[Path], typer.Option(help="v3 keystore of a site key of the lot's manufacturer")] = None,
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the keystore passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE])")] = None,
    signer_url: Annotated[Optional[str], typer.Option(help="Web3Signer-compatible remote signer instead of a keystore")] = None,
    signer_address: Annotated[Optional[str], typer.Option(help="the remote signer's key address")] = None,
    resolver: Annotated[str, typer.Option(envvar="PARTLEDGER_RESOLVER_URL", help="the resolver the QR codes point at (scheme, host, optional path)")] = "http://127.0.0.1:8000",
    fmt: Annotated[str, typer.Option("--format", help="a4 | thermal (PDF sheets), png | svg (one QR image per part)")] = "a4",
    out: Annotated[Optional[Path], typer.Option(help="the PDF file, or the directory of images (default: labels-<lot>-<format>[.pdf])")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="deployment manifest (default: the devnet's)")] = None,
    index_db: Annotated[Optional[str], typer.Option(help="the indexer's database URL (default: the devnet's)")] = None,
    gtin: Annotated[Optional[str], typer.Option(help="only the parts of this GTIN")] = None,
    workers: Annotated[int, typer.Option(help="processes drawing QR codes")] = os.cpu_count() or 1,
) -> None:
    """Sign and print the labels of every part of a lot."""
    from sqlalchemy import select

    from indexer.tables import Lot, Organisation, Part, SiteKey
    from labels.lot import LabelPart, make_labels, write_images
    from labels.sheets import LAYOUTS, write_pdf
    from labels.signature import label_domain
    from partledger.db import make_engine
    from partledger.deploy import dev_key_addresses

    formats = (*LAYOUTS, "png", "svg")
    if fmt not in formats:
        raise typer.BadParameter(f"--format must be one of {', '.join(formats)}")
    loaded = load_manifest(manifest or default_paths().manifest)
    signer = _signer(keystore, passphrase_file, signer_url, signer_address)
    if signer.address in dev_key_addresses() and not loaded.dev_chain:
        raise ConfigError(f"refusing the public development key {signer.address} on chain {loaded.chain_id}, not a dev chain")
    engine = make_engine(index_db or f"sqlite:///{default_paths().run / 'index.db'}")
    keys, lots, parts, orgs = SiteKey.__table__, Lot.__table__, Part.__table__, Organisation.__table__
    with engine.connect() as conn:
        key = conn.execute(select(keys.c.org_id, keys.c.revoked_block).where(keys.c.address == signer.address)).first()
        if key is None:
            raise ConfigError(f"{signer.address} is no site key of the consortium (as indexed)")
        if key.revoked_block is not None:
            raise ConfigError(f"the site key {signer.address} was revoked in block {key.revoked_block}; sign with an active key")
        number = conn.execute(select(lots.c.lot).where(lots.c.manufacturer == key.org_id, lots.c.lot_code == lot)).scalar()
        if number is None:
            raise ConfigError(f"organisation {key.org_id} has no lot {lot!r} (registered and indexed)")
        query = select(parts.c.gtin, parts.c.serial).where(parts.c.lot == number)
        if gtin is not None:
            query = query.where(parts.c.gtin == gtin.zfill(14))
        rows = sorted(conn.execute(query).all(), key=lambda row: (row.gtin, row.serial))
        maker = conn.execute(select(orgs.c.name).where(orgs.c.org_id == key.org_id)).scalar() or f"organisation {key.org_id}"
    engine.dispose()
    if not rows:
        raise ConfigError(f"lot {lot!r} has no parts" + (f" of GTIN {gtin}" if gtin else ""))
    domain = label_domain(chain_id=loaded.chain_id, part_ledger=loaded.address("PartLedger"))
    target = out or Path(f"labels-{lot.replace('/', '_')}-{fmt}" + (".pdf" if fmt in LAYOUTS else ""))
    columns = (TextColumn("{task.description:<9}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        signing = progress.add_task("signing", total=len(rows))
        labels = make_labels(
            [LabelPart(row.gtin, row.serial, lot) for row in rows], signer=signer, domain=domain, resolver=resolver, manufacturer=maker,
            progress=lambda step: progress.advance(signing, step),
        )  # fmt: skip
        drawing = progress.add_task("drawing", total=len(labels))
        if fmt in LAYOUTS:
            target.parent.mkdir(parents=True, exist_ok=True)
            pages = write_pdf(labels, target, layout=fmt, title=f"{maker} — lot {lot}", workers=workers, progress=lambda step: progress.advance(drawing, step))
            what = f"{pages} pages, {fmt}"
        else:
            write_images(labels, target, kind=fmt, progress=lambda step: progress.advance(drawing, step))
            what = f"{len(labels)} {fmt} files"
    typer.echo(f"{len(labels)} labels of lot {lot} ({what}) signed by {signer.address}: {target}")
