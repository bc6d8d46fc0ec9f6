"""Test kit for auditor proofs: trade documents anchored on the live Anvil with fresh signer keys, and helpers
that mutate bundles."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from partledger.documents import salted_document_hash
from partledger.eip712 import Attestation, attestation_typed_data, read_domain
from partledger.ids import ascii32
from partledger.model import DocType
from tests.chainkit import Ledger, Org

INVOICE_PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n% invoice 2026-0042, 120 brake discs\n%%EOF\n"


@dataclass(frozen=True)
class AnchoredDocument:
    content: bytes
    salt: bytes
    doc_hash: bytes
    receipt: TxReceipt
    issuer_key: LocalAccount
    counterparty_key: LocalAccount

    @property
    def block(self) -> int:
        return self.receipt["blockNumber"]


def add_signer(ledger: Ledger, org: Org) -> LocalAccount:
    """A fresh key added to `org` by the operator (a site key that signs typed data but never sends)."""
    key: LocalAccount = Account.create()
    ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(org.id, key.address, ascii32(f"{org.name}-signer")))
    return key


def anchor_document(
    ledger: Ledger,
    issuer: Org,
    counterparty: Org,
    *,
    content: bytes = INVOICE_PDF,
    issuer_key: LocalAccount | None = None,
    counterparty_key: LocalAccount | None = None,
) -> AnchoredDocument:
    """Both parties sign an invoice's Attestation; the issuer's dev key anchors it."""
    issuer_key = issuer_key or add_signer(ledger, issuer)
    counterparty_key = counterparty_key or add_signer(ledger, counterparty)
    salt = secrets.token_bytes(32)
    doc_hash = salted_document_hash(content, salt)
    attestation = Attestation(
        docHash=doc_hash, docType=int(DocType.INVOICE), issuer=issuer.id, counterparty=counterparty.id, previous=bytes(32),
        partsRoot=bytes(32), nonce=secrets.token_bytes(32), deadline=int(time.time()) + 3600 * 24 * 365,
    )  # fmt: skip
    typed = attestation_typed_data(read_domain(ledger.evidence), attestation)
    signatures = [bytes(key.sign_typed_data(full_message=typed).signature) for key in (issuer_key, counterparty_key)]
    receipt = ledger.act(issuer.key, ledger.evidence.functions.anchorDocument(attestation.as_tuple(), *signatures))
    return AnchoredDocument(content, salt, doc_hash, receipt, issuer_key, counterparty_key)


def flip_byte(hex_text: str, position: int, mask: int) -> str:
    """`hex_text` (0x...) with byte `position` XORed with a non-zero `mask`."""
    raw = bytearray(bytes.fromhex(hex_text[2:]))
    raw[position % len(raw)] ^= mask or 1
    return "0x" + raw.hex()


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Every scalar in a JSON value with its path."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in leaves(inner, (*path, key))]
    if isinstance(value, list):
        return [item for index, inner in enumerate(value) for item in leaves(inner, (*path, index))]
    return [(path, value)]


def set_at(value: Any, path: tuple[Any, ...], new: Any) -> None:
    for step in path[:-1]:
        value = value[step]
    value[path[-1]] = new
