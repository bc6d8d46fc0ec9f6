"""The labels of a lot: each part's Digital Link with its manufacturer signature, ready to print.

Signing goes through the wallets' Signer interface (a keystore in memory, or a remote signer in front of an HSM),
one EIP-712 signature per part, and checks each signature back before it is printed: a label that would not verify
is never made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from labels.digital_link import build_uri, encode_segment
from labels.qr import qr_png, qr_svg
from labels.signature import TypedDataSigner, recover_signer, sign_label
from partledger.eip712 import Eip712Domain
from partledger.errors import ConfigError
from partledger.ids import normalize_gtin, validate_lot, validate_serial

Progress = Callable[[int], None]


@dataclass(frozen=True)
class LabelPart:
    """What the ledger knows of a part that goes on its label."""

    gtin: str
    serial: str
    lot: str


@dataclass(frozen=True)
class Label:
    """One printable label: the human-readable identifiers, the manufacturer's name and the signed Digital Link."""

    gtin: str
    serial: str
    lot: str
    manufacturer: str
    uri: str


def make_labels(
    parts: Iterable[LabelPart],
    *,
    signer: TypedDataSigner,
    domain: Eip712Domain,
    resolver: str,
    manufacturer: str,
    progress: Progress | None = None,
) -> list[Label]:
    """Signs a label for every part; ConfigError if a signature does not recover to the signer (a broken key store
    or signer answering for another key), so that no unverifiable label is printed."""
    labels = []
    for part in parts:
        gtin, serial, lot = normalize_gtin(part.gtin), validate_serial(part.serial), validate_lot(part.lot)
        signature = sign_label(signer, domain, gtin=gtin, serial=serial)
        if recover_signer(domain, gtin, serial, signature) != signer.address:
            raise ConfigError(f"the signature of label {gtin}/{serial} does not recover to {signer.address}")
        labels.append(Label(gtin=gtin, serial=serial, lot=lot, manufacturer=manufacturer, uri=build_uri(resolver, gtin=gtin, serial=serial, signature=signature)))
        if progress is not None:
            progress(1)
    return labels


def label_file_stem(label: Label) -> str:
    """A file name for one label's image: GTIN and serial, the serial percent-encoded so that it is a safe name."""
    return f"{label.gtin}_{encode_segment(label.serial).replace('%', '~')}"


def write_images(labels: Iterable[Label], directory: Path, *, kind: str, progress: Progress | None = None) -> list[Path]:
    """One QR image per label in `directory`: kind "png" (8 px per module) or "svg"."""
    if kind not in ("png", "svg"):
        raise ConfigError(f"unknown image kind {kind!r}: png or svg")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for label in labels:
        path = directory / f"{label_file_stem(label)}.{kind}"
        path.write_bytes(qr_png(label.uri) if kind == "png" else qr_svg(label.uri))
        written.append(path)
        if progress is not None:
            progress(1)
    return written
