"""The label signature: a manufacturer's site key vouching, off chain, for one label of one part.

The signed message is EIP-712 typed data, so that any wallet or HSM front that signs typed data can sign labels and
any EIP-712 library can check them:

    domain  EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
            name "PartLedger Label", version "1", chainId: the consortium chain's id,
            verifyingContract: the PartLedger contract's address (from the deployment manifest)
    message PartLabel(uint64 gtin,string serial)
            gtin: the GTIN-14 as a number, serial: the GS1 AI 21 serial as written (ASCII)

    digest  keccak256(0x1901 || domainSeparator || keccak256(PARTLABEL_TYPEHASH || uint256(gtin) || keccak256(serial)))

The domain binds a label to one chain and one PartLedger deployment: a label signed for a test chain or another
consortium does not verify here. No contract checks this domain (PartLedger has no EIP-712 domain of its own; a
contract could, with ECDSA.recover over the same digest).

In the URI the signature is compact (EIP-2098: r || yParity<<255 | s, 64 bytes), base64url without padding: 86
characters in the `sig` query attribute. The signer is recovered from it (ecrecover) and looked up in the consortium
registry: a key of the part's manufacturer, not revoked before the label could have been made.
"""

from __future__ import annotations

import base64
import binascii
import functools
from dataclasses import asdict
from typing import Any, Protocol

from coincurve import PublicKey
from eth_utils import keccak, to_checksum_address
from sha3 import keccak_256

from partledger.eip712 import Eip712Domain
from partledger.ids import normalize_gtin, validate_serial

DOMAIN_NAME = "PartLedger Label"
DOMAIN_VERSION = "1"
PART_LABEL_FIELDS = [{"name": "gtin", "type": "uint64"}, {"name": "serial", "type": "string"}]
DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
PART_LABEL_TYPEHASH = keccak(text="PartLabel(uint64 gtin,string serial)")
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
COMPACT_LENGTH = 64


class TypedDataSigner(Protocol):
    """What signing a label needs of a key: wallets.signer.LocalSigner and RemoteSigner fit."""

    @property
    def address(self) -> str: ...

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes: ...


def label_domain(*, chain_id: int, part_ledger: str) -> Eip712Domain:
    """The label domain of a deployment: its chain id and PartLedger address."""
    return Eip712Domain(name=DOMAIN_NAME, version=DOMAIN_VERSION, chainId=chain_id, verifyingContract=to_checksum_address(part_ledger))


def label_typed_data(domain: Eip712Domain, *, gtin: str, serial: str) -> dict[str, Any]:
    """Full EIP-712 typed data of one label, as Signer.sign_typed_data takes it."""
    return {
        "types": {"EIP712Domain": DOMAIN_FIELDS, "PartLabel": PART_LABEL_FIELDS},
        "primaryType": "PartLabel",
        "domain": asdict(domain),
        "message": {"gtin": int(normalize_gtin(gtin)), "serial": validate_serial(serial)},
    }


@functools.lru_cache(maxsize=16)
def domain_separator(domain: Eip712Domain) -> bytes:
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(text=domain.name)
        + keccak(text=domain.version)
        + domain.chainId.to_bytes(32, "big")
        + bytes.fromhex(domain.verifyingContract[2:]).rjust(32, b"\0")
    )


def label_digest(domain: Eip712Domain, *, gtin: str, serial: str) -> bytes:
    """The EIP-712 digest of a label (what the key signs), computed directly: the same as eth-account's
    encode_typed_data(full_message=label_typed_data(...)) hashes to, at a fraction of the cost."""
    # safe-pysha3's C keccak directly: eth-utils' wrapper costs 25 times more, and this runs on every scan.
    struct = keccak_256(PART_LABEL_TYPEHASH + int(gtin).to_bytes(32, "big") + keccak_256(serial.encode("ascii")).digest()).digest()
    return keccak_256(b"\x19\x01" + domain_separator(domain) + struct).digest()


def to_compact(signature: bytes) -> bytes:
    """A 65-byte r||s||v signature (v 27/28 or 0/1, low s) as 64 bytes EIP-2098: r || (yParity << 255 | s)."""
    if len(signature) != 65:
        raise ValueError("a signature is 65 bytes r || s || v")
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    parity = v - 27 if v >= 27 else v
    if parity not in (0, 1) or not 0 < s <= SECP256K1_N // 2:
        raise ValueError("the signature has no canonical (low-s) form")
    return r + (s | parity << 255).to_bytes(32, "big")


def encode_signature(signature: bytes) -> str:
    """The `sig` attribute: the compact signature, base64url without padding."""
    return base64.urlsafe_b64encode(to_compact(signature)).rstrip(b"=").decode("ascii")


def decode_signature(text: str) -> bytes | None:
    """The 64-byte compact signature in a `sig` attribute; None when it is not one."""
    if len(text) != 86:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "==")
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == COMPACT_LENGTH and base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text else None


def sign_label(signer: TypedDataSigner, domain: Eip712Domain, *, gtin: str, serial: str) -> str:
    """The `sig` attribute of a label, signed by `signer` (a site key of the part's manufacturer)."""
    return encode_signature(signer.sign_typed_data(label_typed_data(domain, gtin=gtin, serial=serial)))


@functools.lru_cache(maxsize=65_536)
def recover_signer(domain: Eip712Domain, gtin: str, serial: str, signature: str) -> str | None:
    """The checksummed address whose key made `signature` (a `sig` attribute) over this label; None when the
    signature is malformed, not canonical (high s) or recovers to no key. Cached: a label is scanned many times."""
    compact = decode_signature(signature)
    if compact is None:
        return None
    r = int.from_bytes(compact[:32], "big")
    word = int.from_bytes(compact[32:], "big")
    parity, s = word >> 255, word & ((1 << 255) - 1)
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_N // 2):
        return None
    recoverable = compact[:32] + s.to_bytes(32, "big") + bytes([parity])
    try:
        public = PublicKey.from_signature_and_message(recoverable, label_digest(domain, gtin=gtin, serial=serial), hasher=None)
    except Exception:  # noqa: BLE001 - coincurve raises plain Exception/ValueError for a point that does not recover
        return None
    return to_checksum_address(keccak_256(public.format(compressed=False)[1:]).digest()[12:])
