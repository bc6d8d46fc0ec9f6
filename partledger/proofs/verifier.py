"""Offline verifier of PartLedger proof bundles (format partledger-proof/1, see docs/proof-bundle.md).

Give it a bundle (one JSON file), optionally the document itself, and a trust anchor: a block hash you trust, a
JSON-RPC node you trust, or the operator's signed checkpoints. It needs no database and no PartLedger server, and
depends only on `rlp`, `eth-hash` (keccak-256) and `coincurve` (secp256k1). Everything the bundle claims is
recomputed here; nothing is taken on the bundle's word. The checks, in the order they are reported:

  format        the JSON has exactly the fields of the format, each of its type (hex lower case, checksummed
                addresses, integers), and no other field
  header        the block header (RLP) decodes to a known hardfork layout, hashes (keccak-256) to the block hash,
                and its fields are the ones listed
  header chain  each later header names the one before it as its parent (a bridge to a checkpointed block)
  finality      (Besu QBFT) the headers from the trusted validator set up to the block link by parent hash, each
                sealed by ceil(2n/3) distinct validators after its parent, the validator votes followed (qbft.py)
  anchor        the block hash is the trusted one: given on the command line, answered by your own node, signed
                by the consortium operator in a checkpoint file, or sealed by the QBFT validators you trust
  transaction   the raw transaction hashes to its hash, sits at its index under the header's transactionsRoot
                (Merkle-Patricia proof), was signed by its sender for this chain, and called the event's contract
  receipt       the receipt (EIP-2718 encoding) sits at the same index under the header's receiptsRoot and succeeded
  event         the log in the receipt is the bundle's event, emitted by the named PartLedger contract; its
                arguments decode to the ones listed; a site key event was sent by that site key
  signatures    (documents) the EIP-712 Attestation is the anchored one, under the EvidenceLedger's domain, and each
                party's signature (low-s) recovers to the signer the contract recorded
  registry      the ConsortiumRegistry's storage at that block, proven against the header's stateRoot: for each
                acting key its organisation, site, added and revoked blocks; for each organisation its roles and
                suspension
  signers       each acting key belonged to the right organisation, was added by that block and not revoked,
                its organisation not suspended and holding a role the operation needs
  batch record  (batched records) the record's leaf, and its StandardMerkleTree proof up to the anchored root; an
                EPCIS event or a quality-notification transition given with it hashes to the record
  document      keccak256(salt || contentHash) is the anchored docHash; with the file, keccak256(file) is contentHash

A verdict is valid only when every check passes. Run it as `python -m partledger.proofs.verifier bundle.json
--trusted-block N:0xHASH [--document invoice.pdf]` or through `partledger proof verify`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import coincurve
import rlp
from eth_hash.auto import keccak

FORMAT = "partledger-proof/1"
CHECKPOINTS_FORMAT = "partledger-checkpoints/1"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# --- what the chain looks like ----------------------------------------------------------------------------------

# Block header fields in RLP order: (JSON-RPC name, kind). Kinds: h 32 bytes, a address, b bytes, q quantity.
HEADER_FIELDS = (
    ("parentHash", "h"), ("sha3Uncles", "h"), ("miner", "a"), ("stateRoot", "h"), ("transactionsRoot", "h"),
    ("receiptsRoot", "h"), ("logsBloom", "b"), ("difficulty", "q"), ("number", "q"), ("gasLimit", "q"),
    ("gasUsed", "q"), ("timestamp", "q"), ("extraData", "b"), ("mixHash", "h"), ("nonce", "b"),
    ("baseFeePerGas", "q"),  # London
    ("withdrawalsRoot", "h"),  # Shanghai
    ("blobGasUsed", "q"), ("excessBlobGas", "q"), ("parentBeaconBlockRoot", "h"),  # Cancun
    ("requestsHash", "h"),  # Prague
)  # fmt: skip
HEADER_LAYOUTS = {15: "pre-London", 16: "London", 17: "Shanghai", 20: "Cancun", 21: "Prague"}

# Roles.sol
MANUFACTURER, LOGISTICS, DISTRIBUTOR, WORKSHOP, RECYCLER, AUDITOR, REGULATOR = (1 << bit for bit in range(7))
CUSTODY = MANUFACTURER | LOGISTICS | DISTRIBUTOR | WORKSHOP | RECYCLER
ROLE_NAMES = ("manufacturer", "logistics", "distributor", "workshop", "recycler", "auditor", "regulator")

# ConsortiumRegistry storage (contracts/artifacts/ConsortiumRegistry.json, storageLayout): mapping slots and packing.
ORGANISATIONS_SLOT = 2  # uint32 orgId => {uint16 roles; bool suspended}
KEYS_SLOT = 3  # address key => {uint32 orgId; uint64 addedBlock; uint64 revokedBlock}
KEY_SITES_SLOT = 4  # address key => bytes32 site

ATTESTATION = "(bytes32,uint16,uint32,uint32,bytes32,bytes32,bytes32,uint64)"
ATTESTATION_FIELDS = (
    ("docHash", "bytes32"), ("docType", "uint16"), ("issuer", "uint32"), ("counterparty", "uint32"),
    ("previous", "bytes32"), ("partsRoot", "bytes32"), ("nonce", "bytes32"), ("deadline", "uint64"),
)  # fmt: skip
EIP712_DOMAIN_FIELDS = (("name", "string"), ("version", "string"), ("chainId", "uint256"), ("verifyingContract", "address"))
TYPED_DATA_TYPES = {
    "EIP712Domain": [{"name": name, "type": kind} for name, kind in EIP712_DOMAIN_FIELDS],
    "Attestation": [{"name": name, "type": kind} for name, kind in ATTESTATION_FIELDS],
}
CHECKPOINT_DOMAIN_FIELDS = (("name", "string"), ("version", "string"), ("chainId", "uint256"))
CHECKPOINT_DOMAIN = {"name": "PartLedger Checkpoints", "version": "1"}
CHECKPOINT_FIELDS = (("number", "uint64"), ("hash", "bytes32"))
DEPLOYMENT_FIELDS = (("consortiumRegistry", "address"), ("partLedger", "address"), ("evidenceLedger", "address"))


@dataclass(frozen=True)
class EventSpec:
    """An event a bundle may prove: its inputs (name, type, indexed), who acted, and the roles that act needs."""

    contract: str
    name: str
    inputs: tuple[tuple[str, str, bool], ...]
    org: str  # the argument naming the acting organisation ("" for documents: issuer or counterparty)
    key: str | None  # the argument naming the acting site key; None: the transaction's sender
    roles: int  # the acting organisation must hold one of these; 0: any

    @property
    def signature(self) -> str:
        return f"{self.name}({','.join(kind for _, kind, _ in self.inputs)})"


def _parts_event(name: str, roles: int, doc: str = "docHash", extra: tuple[tuple[str, str, bool], ...] = ()) -> EventSpec:
    inputs = (("orgId", "uint32", True), ("siteKey", "address", True), (doc, "bytes32", False), ("partIds", "bytes32[]", False))
    return EventSpec("PartLedger", name, inputs + extra, "orgId", "siteKey", roles)


EVENTS = {
    spec.name: spec
    for spec in (
        EventSpec("PartLedger", "LotOpened", (("lot", "uint64", True), ("manufacturer", "uint32", True), ("lotCode", "bytes32", False)), "manufacturer", None, MANUFACTURER),
        EventSpec("PartLedger", "PartsRegistered", (("lot", "uint64", True), ("manufacturer", "uint32", True), ("siteKey", "address", True), ("gtin", "uint64", False), ("serials", "bytes32[]", False)), "manufacturer", "siteKey", MANUFACTURER),
        EventSpec("PartLedger", "PartsShipped", (("from", "uint32", True), ("to", "uint32", True), ("siteKey", "address", True), ("docHash", "bytes32", False), ("partIds", "bytes32[]", False)), "from", "siteKey", CUSTODY),
        _parts_event("PartsReceived", CUSTODY),
        _parts_event("ShipmentsCancelled", CUSTODY),
        _parts_event("PartsSold", DISTRIBUTOR | WORKSHOP),
        _parts_event("PartsInstalled", WORKSHOP, extra=(("vinHashes", "bytes32[]", False),)),
        _parts_event("PartsRemoved", WORKSHOP),
        _parts_event("PartsQuarantined", CUSTODY, doc="reasonHash"),
        _parts_event("PartsReleased", CUSTODY),
        _parts_event("PartsScrapped", CUSTODY),
        _parts_event("PartsRecycled", RECYCLER),
        EventSpec("PartLedger", "LogisticUnitCreated", (("sscc", "uint64", True), ("unitId", "bytes32", True), ("orgId", "uint32", True)), "orgId", None, CUSTODY),
        EventSpec("PartLedger", "PartsPacked", (("unitId", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("partIds", "bytes32[]", False)), "orgId", "siteKey", CUSTODY),
        EventSpec("PartLedger", "PartsUnpacked", (("unitId", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("partIds", "bytes32[]", False)), "orgId", "siteKey", CUSTODY),
        EventSpec("PartLedger", "PartsAssembled", (("parentId", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("childIds", "bytes32[]", False)), "orgId", "siteKey", MANUFACTURER | WORKSHOP),
        EventSpec("PartLedger", "PartsDisassembled", (("parentId", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("childIds", "bytes32[]", False)), "orgId", "siteKey", MANUFACTURER | WORKSHOP),
        EventSpec("PartLedger", "PartRemanufactured", (("originalId", "bytes32", True), ("partId", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", False)), "orgId", "siteKey", MANUFACTURER),
        EventSpec("PartLedger", "LotRecalled", (("lot", "uint64", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("noticeHash", "bytes32", False)), "orgId", "siteKey", MANUFACTURER | REGULATOR),
        EventSpec("EvidenceLedger", "DocumentAnchored", (
            ("docHash", "bytes32", True), ("issuer", "uint32", True), ("counterparty", "uint32", True),
            ("attestation", ATTESTATION, False), ("issuerSigner", "address", False), ("counterpartySigner", "address", False),
            ("issuerSignature", "bytes", False), ("counterpartySignature", "bytes", False),
        ), "", None, 0),
        EventSpec("EvidenceLedger", "NonceCancelled", (("orgId", "uint32", True), ("nonce", "bytes32", True), ("siteKey", "address", False)), "orgId", "siteKey", 0),
        EventSpec("EvidenceLedger", "BatchAnchored", (("root", "bytes32", True), ("orgId", "uint32", True), ("siteKey", "address", True), ("kind", "bytes32", False), ("recordCount", "uint32", False)), "orgId", "siteKey", 0),
    )
}  # fmt: skip
SUBJECTS = {"DocumentAnchored": ("document",), "BatchAnchored": ("batch", "batch-record")}


class CheckFailed(Exception):
    """A check did not pass; the message says why, for a person."""


# --- hex, addresses, keccak ---------------------------------------------------------------------------------


def to_hex(data: bytes) -> str:
    return "0x" + data.hex()


def from_hex(text: str, size: int | None = None) -> bytes:
    """Bytes of canonical hex ("0x", lower case, even length); CheckFailed otherwise."""
    if not isinstance(text, str) or not text.startswith("0x") or text != text.lower() or len(text) % 2:
        raise CheckFailed(f"not canonical hex: {str(text)[:20]!r}")
    try:
        data = bytes.fromhex(text[2:])
    except ValueError:
        raise CheckFailed(f"not canonical hex: {text[:20]!r}") from None
    if size is not None and len(data) != size:
        raise CheckFailed(f"expected {size} bytes, got {len(data)}")
    return data


def quantity(value: int) -> str:
    return hex(value)


def checksum(address: bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    text = address.hex()
    digest = keccak(text.encode()).hex()
    return "0x" + "".join(c.upper() if int(d, 16) >= 8 else c for c, d in zip(text, digest))


def address_bytes(text: str) -> bytes:
    """The 20 bytes of an address given in its exact EIP-55 form; CheckFailed otherwise."""
    if not isinstance(text, str) or len(text) != 42 or not text.startswith("0x"):
        raise CheckFailed(f"not an address: {str(text)[:44]!r}")
    try:
        raw = bytes.fromhex(text[2:])
    except ValueError:
        raise CheckFailed(f"not an address: {text!r}") from None
    if checksum(raw) != text:
        raise CheckFailed(f"address not in its EIP-55 checksummed form: {text}")
    return raw


def _int(raw: bytes) -> int:
    """An RLP integer; leading zero bytes are not canonical."""
    if raw[:1] == b"\x00":
        raise CheckFailed("non-canonical RLP integer (leading zero)")
    return int.from_bytes(raw, "big")


# --- Merkle-Patricia proofs -------------------------------------------------------------------------------------


def _nibbles(data: bytes) -> list[int]:
    return [n for byte in data for n in (byte >> 4, byte & 15)]


def _compact_path(encoded: bytes) -> tuple[list[int], bool]:
    """Hex-prefix decoding of a leaf or extension path: (nibbles, is_leaf)."""
    if not encoded:
        raise CheckFailed("empty node path")
    flag = encoded[0] >> 4
    if flag > 3:
        raise CheckFailed("bad hex-prefix flag in a trie node")
    nibbles = _nibbles(encoded)[1 if flag & 1 else 2 :]
    if not flag & 1 and encoded[0] & 15:
        raise CheckFailed("bad hex-prefix padding in a trie node")
    return nibbles, bool(flag & 2)


def mpt_get(root: bytes, key: bytes, proof: list[bytes]) -> bytes | None:
    """The value under `key` in the Merkle-Patricia trie with hash `root`, by `proof` (the RLP of each node from
    the root down, embedded nodes excluded); None when the proof shows the key absent. Every node must hash to
    the reference its parent holds, and every node given must be used."""
    path = _nibbles(key)
    reference: Any = root
    used = 0
    while True:
        if isinstance(reference, bytes):
            if len(reference) != 32:
                raise CheckFailed("bad node reference in the proof")
            if used >= len(proof):
                raise CheckFailed(f"the proof ends after {used} node(s)")
            raw = proof[used]
            if keccak(raw) != reference:
                raise CheckFailed(f"proof node {used} does not hash to the reference above it")
            used += 1
            node = rlp.decode(raw)
        else:
            node = reference  # embedded in its parent (its RLP is under 32 bytes)
        if not isinstance(node, list):
            raise CheckFailed("a proof node is not an RLP list")
        if len(node) == 17:
            if not path:
                value = node[16]
                break
            reference, path = node[path[0]], path[1:]
            if reference == b"":
                value = None
                break
        elif len(node) == 2:
            nibbles, is_leaf = _compact_path(node[0])
            if is_leaf:
                value = node[1] if nibbles == path else None
                break
            if path[: len(nibbles)] != nibbles:
                value = None
                break
            reference, path = node[1], path[len(nibbles) :]
        else:
            raise CheckFailed("a proof node is neither a branch nor a leaf/extension")
    if used != len(proof):
        raise CheckFailed(f"the proof carries {len(proof) - used} node(s) it does not use")
    if value is not None and not isinstance(value, bytes):
        raise CheckFailed("a trie value is not a byte string")
    return value or None


# --- ABI encoding (enough for PartLedger's events and batch records) ---------------------------------------------


def _is_dynamic(kind: str) -> bool:
    return kind in ("bytes", "string") or kind.endswith("[]")


def _tuple_types(kind: str) -> list[str]:
    return kind[1:-1].split(",")


_INTEGER = re.compile(r"u?int([1-9][0-9]{0,2})")
_FIXED_BYTES = re.compile(r"bytes([1-9][0-9]?)")


def _encode_static(kind: str, value: Any) -> bytes:
    """One ABI word; CheckFailed for a value that does not fit, and for a type name that is no ABI type: uint60 or
    bytes40 would encode some values as uint64 or nothing would, and a bundle could then show another type for the
    same proven bytes."""
    if kind.startswith("uint") or kind.startswith("int"):
        width = _INTEGER.fullmatch(kind)
        bits = int(width.group(1)) if width else 0
        if bits % 8 or not 8 <= bits <= 256:
            raise CheckFailed(f"{kind} is no ABI type")
        if not isinstance(value, int) or isinstance(value, bool):
            raise CheckFailed(f"{kind} value is not an integer")
        if kind.startswith("uint"):
            if not 0 <= value < 1 << bits:
                raise CheckFailed(f"{value} does not fit {kind}")
            return value.to_bytes(32, "big")
        if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
            raise CheckFailed(f"{value} does not fit {kind}")
        return value.to_bytes(32, "big", signed=True)
    if kind == "address":
        return bytes(12) + (value if isinstance(value, bytes) else address_bytes(value))
    if kind == "bool":
        if not isinstance(value, bool):
            raise CheckFailed("bool value is not true or false")
        return int(value).to_bytes(32, "big")
    if kind.startswith("bytes") and kind[5:].isdigit():
        if not _FIXED_BYTES.fullmatch(kind) or not 1 <= int(kind[5:]) <= 32:
            raise CheckFailed(f"{kind} is no ABI type")
        size = int(kind[5:])
        if not isinstance(value, bytes) or len(value) != size:
            raise CheckFailed(f"{kind} value has the wrong length")
        return value + bytes(32 - size)
    raise CheckFailed(f"ABI type {kind} is not supported by this verifier")


def _utf8(value: Any) -> Any:
    """A string value's UTF-8 bytes; CheckFailed for a string no UTF-8 can hold (a lone surrogate, from JSON's \\ud800)."""
    if not isinstance(value, str):
        return value
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise CheckFailed("string value is not valid Unicode (a lone surrogate)") from None


def abi_encode(kinds: list[str], values: list[Any]) -> bytes:
    """abi.encode(values) for elementary types, bytes, string, static tuples and arrays of static elementary types."""
    if len(kinds) != len(values):
        raise CheckFailed("value count differs from type count")
    heads, tails = [], []
    head_size = sum(32 * len(_tuple_types(k)) if k.startswith("(") else 32 for k in kinds)
    for kind, value in zip(kinds, values):
        if kind in ("bytes", "string"):
            data = _utf8(value) if kind == "string" else value
            if not isinstance(data, bytes):
                raise CheckFailed(f"{kind} value of the wrong type")
            tail = len(data).to_bytes(32, "big") + data + bytes(-len(data) % 32)
        elif kind.endswith("[]"):
            if not isinstance(value, list):
                raise CheckFailed(f"{kind} value is not a list")
            tail = len(value).to_bytes(32, "big") + b"".join(_encode_static(kind[:-2], item) for item in value)
        elif kind.startswith("("):
            members = _tuple_types(kind)
            if not isinstance(value, (list, tuple)) or len(value) != len(members):
                raise CheckFailed(f"{kind} value is not a list of {len(members)}")
            heads.append(b"".join(_encode_static(k, v) for k, v in zip(members, value)))
            continue
        else:
            heads.append(_encode_static(kind, value))
            continue
        heads.append((head_size + sum(len(t) for t in tails)).to_bytes(32, "big"))
        tails.append(tail)
    return b"".join(heads) + b"".join(tails)


def _decode_static(kind: str, word: bytes) -> Any:
    if kind == "address":
        return word[12:]
    if kind == "bool":
        return word[-1] == 1
    if kind.startswith("bytes"):
        return word[: int(kind[5:])]
    if kind.startswith("int"):
        return int.from_bytes(word, "big", signed=True)
    return int.from_bytes(word, "big")


def abi_decode(kinds: list[str], data: bytes) -> list[Any]:
    """The values `data` encodes; CheckFailed unless `data` is exactly their canonical encoding."""
    values: list[Any] = []
    position = 0

    def word(at: int) -> bytes:
        if at + 32 > len(data):
            raise CheckFailed("ABI data too short")
        return data[at : at + 32]

    for kind in kinds:
        if _is_dynamic(kind):
            offset = int.from_bytes(word(position), "big")
            length = int.from_bytes(word(offset), "big") if offset < len(data) else 0
            if kind in ("bytes", "string"):
                raw = data[offset + 32 : offset + 32 + length]
                values.append(raw.decode() if kind == "string" else raw)
            else:
                if length > len(data) // 32:
                    raise CheckFailed("ABI array length beyond the data")
                values.append([_decode_static(kind[:-2], word(offset + 32 + 32 * i)) for i in range(length)])
            position += 32
        elif kind.startswith("("):
            values.append([_decode_static(k, word(position + 32 * i)) for i, k in enumerate(_tuple_types(kind))])
            position += 32 * len(_tuple_types(kind))
        else:
            values.append(_decode_static(kind, word(position)))
            position += 32
    try:
        canonical = abi_encode(kinds, values)
    except CheckFailed:
        canonical = b""
    if canonical != data:
        raise CheckFailed("the event data is not a canonical ABI encoding")
    return values


def _render(kind: str, value: Any) -> Any:
    """A decoded ABI value as JSON: hex for bytes, EIP-55 for addresses, numbers for integers."""
    if kind == "address":
        return checksum(value)
    if kind == ATTESTATION:
        return {name: _render(k, v) for (name, k), v in zip(ATTESTATION_FIELDS, value)}
    if kind.endswith("[]"):
        return [_render(kind[:-2], item) for item in value]
    if isinstance(value, bytes):
        return to_hex(value)
    return value


def _from_json(kind: str, value: Any) -> Any:
    """A batch record value from its JSON form (hex for bytes, EIP-55 for addresses) to what abi_encode takes."""
    if kind == "string":
        if not isinstance(value, str):
            raise CheckFailed("string value is not a string")
        return value
    if kind == "bytes" or (kind.startswith("bytes") and kind[5:].isdigit()):
        return from_hex(value)
    if kind.endswith("[]") or kind.startswith("("):
        raise CheckFailed(f"ABI type {kind} is not supported in batch records")
    return value


def leaf_hash(kinds: list[str], values: list[Any]) -> bytes:
    """OpenZeppelin StandardMerkleTree leaf: keccak256(keccak256(abi.encode(values)))."""
    if len(kinds) != len(values):
        raise CheckFailed(f"{len(values)} values for {len(kinds)} types")
    return keccak(keccak(abi_encode(kinds, [_from_json(k, v) for k, v in zip(kinds, values)])))


def process_merkle_proof(leaf: bytes, proof: list[bytes]) -> bytes:
    """OpenZeppelin MerkleProof.processProof: sorted-pair keccak up to the root."""
    node = leaf
    for sibling in proof:
        node = keccak(min(node, sibling) + max(node, sibling))
    return node


EVENTS_BY_TOPIC = {keccak(spec.signature.encode()): spec for spec in EVENTS.values()}


def decode_event(topics: list[bytes], data: bytes) -> tuple[EventSpec, dict[str, Any]]:
    """The PartLedger event a log is (by topic 0) and its arguments by name, rendered as JSON values."""
    spec = EVENTS_BY_TOPIC.get(topics[0]) if topics else None
    if spec is None:
        raise CheckFailed("topic 0 is no event a PartLedger proof covers")
    indexed = [(n, k) for n, k, i in spec.inputs if i]
    if len(topics) != 1 + len(indexed):
        raise CheckFailed(f"{spec.name} has {len(indexed)} indexed argument(s), the log {len(topics) - 1}")
    args: dict[str, Any] = {}
    for (name, kind), topic in zip(indexed, topics[1:]):
        args[name] = _render(kind, abi_decode([kind], topic)[0])
    unindexed = [(n, k) for n, k, i in spec.inputs if not i]
    for (name, kind), value in zip(unindexed, abi_decode([k for _, k in unindexed], data)):
        args[name] = _render(kind, value)
    return spec, {name: args[name] for name, _, _ in spec.inputs}


def acting_keys(spec: EventSpec, args: dict[str, Any], sender: str) -> list[tuple[str, str, tuple[int, ...], int]]:
    """Who acted in an event: (role, key, organisations it may belong to, roles its organisation needs one of)."""
    if spec.name == "DocumentAnchored":
        parties = (args["issuer"], args["counterparty"])
        return [
            ("submitter", sender, parties, 0),
            ("issuer signer", args["issuerSigner"], (args["issuer"],), 0),
            ("counterparty signer", args["counterpartySigner"], (args["counterparty"],), 0),
        ]
    return [("site key", args[spec.key] if spec.key else sender, (args[spec.org],), spec.roles)]


# --- EIP-712 and signatures -------------------------------------------------------------------------------------


def hash_struct(name: str, fields: tuple[tuple[str, str], ...], values: dict[str, Any]) -> bytes:
    """EIP-712 hashStruct of a struct whose fields are elementary types, string or bytes."""
    type_hash = keccak(f"{name}({','.join(f'{kind} {field}' for field, kind in fields)})".encode())
    encoded = []
    for field_name, kind in fields:
        value = values[field_name]
        if kind == "string":
            encoded.append(keccak(value.encode()))
        elif kind == "bytes":
            encoded.append(keccak(from_hex(value)))
        else:
            encoded.append(_encode_static(kind, from_hex(value) if kind.startswith("bytes") else value))
    return keccak(type_hash + b"".join(encoded))


def eip712_digest(domain_fields: tuple[tuple[str, str], ...], domain: dict[str, Any], primary: str,
                  fields: tuple[tuple[str, str], ...], message: dict[str, Any]) -> bytes:  # fmt: skip
    return keccak(b"\x19\x01" + hash_struct("EIP712Domain", domain_fields, domain) + hash_struct(primary, fields, message))


def recover_signer(digest: bytes, signature: bytes) -> str:
    """The address whose key made a 65-byte r||s||v signature (v 27 or 28, low s) of `digest`."""
    if len(signature) != 65:
        raise CheckFailed(f"a signature is 65 bytes, this one {len(signature)}")
    r, s, v = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big"), signature[64]
    if v not in (27, 28):
        raise CheckFailed(f"signature v is {v}, not 27 or 28")
    return _recover(digest, r, s, v - 27)


def _recover(digest: bytes, r: int, s: int, parity: int) -> str:
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_N // 2):
        raise CheckFailed("signature r or s out of range (s must be in the lower half, as EIP-2 requires)")
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([parity]), digest, hasher=None
        )
    except Exception:  # noqa: BLE001 - coincurve raises ValueError or its own errors for unrecoverable signatures
        raise CheckFailed("the signature recovers to no key") from None
    return checksum(keccak(key.format(compressed=False)[1:])[-20:])


# --- transactions and receipts ----------------------------------------------------------------------------------

# Typed transactions (EIP-2718): payload length, index of chainId, nonce and `to`.
TX_LAYOUTS = {1: (11, 4), 2: (12, 5), 3: (14, 5), 4: (13, 5)}


@dataclass(frozen=True)
class Transaction:
    type: int
    chain_id: int | None
    nonce: int
    to: bytes
    sender: str


def decode_transaction(raw: bytes) -> Transaction:
    """Decodes a signed transaction (legacy or EIP-2718 typed) and recovers its sender."""
    if not raw:
        raise CheckFailed("empty transaction")
    if raw[0] >= 0xC0:
        items = rlp.decode(raw)
        if len(items) != 9:
            raise CheckFailed("a legacy transaction has 9 fields")
        v = _int(items[6])
        if v in (27, 28):
            chain_id, parity, unsigned = None, v - 27, items[:6]
        elif v >= 37:
            chain_id, parity = (v - 35) // 2, (v - 35) % 2
            unsigned = list(items[:6]) + [chain_id, b"", b""]
        else:
            raise CheckFailed(f"bad legacy transaction v {v}")
        sighash = keccak(rlp.encode(unsigned))
        sender = _recover(sighash, _int(items[7]), _int(items[8]), parity)
        return Transaction(0, chain_id, _int(items[0]), items[3], sender)
    kind = raw[0]
    if kind not in TX_LAYOUTS:
        raise CheckFailed(f"transaction type {kind} is not supported by this verifier")
    items = rlp.decode(raw[1:])
    length, to_index = TX_LAYOUTS[kind]
    if len(items) != length:
        raise CheckFailed(f"a type {kind} transaction has {length} fields")
    parity = _int(items[-3])
    if parity not in (0, 1):
        raise CheckFailed("bad transaction y parity")
    sighash = keccak(bytes([kind]) + rlp.encode(items[:-3]))
    sender = _recover(sighash, _int(items[-2]), _int(items[-1]), parity)
    return Transaction(kind, _int(items[0]), _int(items[1]), items[to_index], sender)


@dataclass(frozen=True)
class Receipt:
    type: int
    status: int
    cumulative_gas: int
    logs: list[tuple[bytes, list[bytes], bytes]]  # (address, topics, data)


def decode_receipt(raw: bytes) -> Receipt:
    """Decodes a receipt in its EIP-2718 consensus encoding: [type byte] rlp([status, gas, bloom, logs])."""
    kind, payload = (0, raw) if raw[:1] >= b"\xc0" else (raw[0], raw[1:])
    items = rlp.decode(payload)
    if len(items) != 4 or not isinstance(items[3], list):
        raise CheckFailed("a receipt has 4 fields")
    status = _int(items[0]) if len(items[0]) <= 1 else -1
    if status not in (0, 1):
        raise CheckFailed("the receipt carries no status (pre-Byzantium)")
    logs = []
    for entry in items[3]:
        address, topics, data = entry
        logs.append((address, list(topics), data))
    return Receipt(kind, status, _int(items[1]), logs)


# --- header -----------------------------------------------------------------------------------------------------


def decode_header(raw: bytes) -> dict[str, Any]:
    """Header fields by name (bytes, or int for quantities) from the header's RLP; CheckFailed on unknown layouts."""
    items = rlp.decode(raw)
    if not isinstance(items, list) or len(items) not in HEADER_LAYOUTS:
        count = len(items) if isinstance(items, list) else 0
        raise CheckFailed(f"a header of {count} fields matches no hardfork this verifier knows ({sorted(HEADER_LAYOUTS)})")
    fields: dict[str, Any] = {}
    for (name, kind), value in zip(HEADER_FIELDS, items):
        if not isinstance(value, bytes):
            raise CheckFailed(f"header field {name} is not a byte string")
        size = {"h": 32, "a": 20}.get(kind)
        if size is not None and len(value) != size:
            raise CheckFailed(f"header field {name} is {len(value)} bytes, not {size}")
        fields[name] = _int(value) if kind == "q" else value
    return fields


def header_hash(raw: bytes) -> bytes:
    """The block hash of a header: keccak256 of its RLP; for a Besu QBFT header (told by its extraData) keccak256 of
    its RLP with the commit seals and the round left out of extraData (partledger/proofs/qbft.py)."""
    from partledger.proofs import qbft

    return qbft.block_hash(raw)


def render_header(fields: dict[str, Any]) -> dict[str, str]:
    return {name: quantity(value) if isinstance(value, int) else to_hex(value) for name, value in fields.items()}


# --- the format -------------------------------------------------------------------------------------------------

HEX, HEX32, ADDRESS, INT, STR, BOOL, JSON = "hex", "hex32", "address", "int", "str", "bool", "json"
BUNDLE_SCHEMA: dict[str, Any] = {
    "format": STR,
    "subject": STR,
    "chainId": INT,
    "contracts": {"ConsortiumRegistry": ADDRESS, "PartLedger": ADDRESS, "EvidenceLedger": ADDRESS},
    "block": {"number": INT, "hash": HEX32, "header": HEX, "fields": JSON},
    "headerChain": [HEX],
    "transaction": {"index": INT, "hash": HEX32, "type": INT, "from": ADDRESS, "to": ADDRESS, "nonce": INT, "raw": HEX, "proof": [HEX]},
    "receipt": {"status": INT, "logCount": INT, "raw": HEX, "proof": [HEX]},
    "event": {"logIndexInReceipt": INT, "address": ADDRESS, "name": STR, "signature": STR, "topics": [HEX32], "data": HEX, "args": JSON},
    "registry": {
        "address": ADDRESS,
        "accountProof": [HEX],
        "keys": [{"key": ADDRESS, "orgId": INT, "site": HEX32, "addedBlock": INT, "revokedBlock": INT, "recordProof": [HEX], "siteProof": [HEX]}],
        "organisations": [{"orgId": INT, "roles": INT, "suspended": BOOL, "proof": [HEX]}],
    },
}  # fmt: skip
OPTIONAL_SCHEMA: dict[str, Any] = {
    "typedData": {"types": JSON, "primaryType": STR, "domain": JSON, "message": JSON, "digest": HEX32},
    "signatures": [{"party": STR, "orgId": INT, "signer": ADDRESS, "signature": HEX}],
    "batchRecord": {"types": [STR], "value": JSON, "leaf": HEX32, "proof": [HEX32]},
    "document": {"salt": HEX32, "contentHash": HEX32},
    "epcisEvent": JSON,
    "notification": {"transition": JSON, "content": JSON},
    "qbft": {"headers": [HEX]},  # any subject, for a Besu QBFT block: the headers from the trusted validators to it
    # any subject, for a relayed transaction (sent to the ERC-2771 forwarder): the forwarder's log that ended the
    # request which emitted the event, and who signed that request
    "forwarded": {"forwarder": ADDRESS, "logIndexInReceipt": INT, "signer": ADDRESS, "nonce": INT},
}
FORWARDER_NAME = "PartLedgerForwarder"  # the forwarder's name in a deployment manifest
EXECUTED_FORWARD_REQUEST = keccak(b"ExecutedForwardRequest(address,uint256,bool)")
SECTIONS_BY_SUBJECT = {
    "event": set(),
    "batch": set(),
    "batch-record": {"batchRecord"},
    "document": {"typedData", "signatures"},
}
OPTIONAL_BY_SUBJECT = {"document": {"document"}, "batch-record": {"epcisEvent", "notification"}}
EPCIS_BATCH_KIND = "epcis"
EPCIS_RECORD_TYPES = ["bytes32", "string", "uint32", "uint64"]  # event hash, eventID, organisation, seq


def _check_shape(value: Any, schema: Any, where: str) -> None:
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise CheckFailed(f"{where} is not an object")
        missing, extra = set(schema) - set(value), set(value) - set(schema)
        if missing or extra:
            raise CheckFailed(f"{where}: " + "; ".join(filter(None, [missing and f"missing {sorted(missing)}", extra and f"unknown {sorted(extra)}"])))
        for key, inner in schema.items():
            _check_shape(value[key], inner, f"{where}.{key}")
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise CheckFailed(f"{where} is not a list")
        for index, item in enumerate(value):
            _check_shape(item, schema[0], f"{where}[{index}]")
    elif schema == INT:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CheckFailed(f"{where} is not a non-negative integer")
    elif schema == STR:
        if not isinstance(value, str):
            raise CheckFailed(f"{where} is not a string")
    elif schema == BOOL:
        if not isinstance(value, bool):
            raise CheckFailed(f"{where} is not true or false")
    elif schema == HEX:
        from_hex(value)
    elif schema == HEX32:
        from_hex(value, 32)
    elif schema == ADDRESS:
        address_bytes(value)


def parse_json(data: bytes | str) -> Any:
    """JSON with duplicate keys refused (two values for one field would let one of them go unchecked)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise CheckFailed("a JSON object repeats a key")
        return dict(pairs)

    try:
        return json.loads(data, object_pairs_hook=no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise CheckFailed(f"not JSON: {exc}") from None


def check_format(bundle: Any) -> None:
    if not isinstance(bundle, dict):
        raise CheckFailed("a bundle is a JSON object")
    if bundle.get("format") != FORMAT:
        raise CheckFailed(f"format is {str(bundle.get('format'))[:40]!r}, this verifier reads {FORMAT!r}")
    subject = bundle.get("subject")
    if subject not in SECTIONS_BY_SUBJECT:
        raise CheckFailed(f"unknown subject {str(subject)[:40]!r}")
    allowed = SECTIONS_BY_SUBJECT[subject] | OPTIONAL_BY_SUBJECT.get(subject, set()) | {"qbft", "forwarded"}
    schema = dict(BUNDLE_SCHEMA)
    for section in allowed & set(bundle):
        schema[section] = OPTIONAL_SCHEMA[section]
    for section in SECTIONS_BY_SUBJECT[subject]:
        schema[section] = OPTIONAL_SCHEMA[section]
    _check_shape(bundle, schema, "bundle")


# --- trust anchors ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustAnchors:
    """What the auditor trusts: block hashes by number, a node of their own, and/or an operator checkpoint file."""

    blocks: dict[int, bytes] = field(default_factory=dict)
    rpc_url: str | None = None
    checkpoints: Any = None  # a parsed partledger-checkpoints/1 file
    operator: str | None = None  # the checkpoint signer to require
    contracts: dict[str, str] | None = None  # the deployment's addresses, from its published manifest
    validators: Any = None  # Besu QBFT: a parsed genesis file or list of validator addresses (qbft.trusted_validators)

    @property
    def empty(self) -> bool:
        return not self.blocks and self.rpc_url is None and self.checkpoints is None and self.validators is None


def manifest_contracts(data: Any) -> dict[str, str]:
    """The contract addresses of a deployment manifest (format partledger-deployment/1), EIP-55."""
    if not isinstance(data, dict) or data.get("format") != "partledger-deployment/1" or not isinstance(data.get("contracts"), dict):
        raise CheckFailed("not a partledger-deployment/1 manifest")
    try:
        return {name: checksum(bytes.fromhex(entry["address"][2:])) for name, entry in data["contracts"].items()}
    except (KeyError, TypeError, ValueError):
        raise CheckFailed("the manifest's contract addresses are unreadable") from None


def parse_trusted_block(text: str) -> tuple[int, bytes]:
    """N:0xHASH (as `--trusted-block` takes it)."""
    number, _, block_hash = text.partition(":")
    try:
        return int(number), from_hex(block_hash.lower(), 32)
    except (ValueError, CheckFailed):
        raise ValueError(f"a trusted block is NUMBER:0xHASH (64 hex digits), not {text!r}") from None


def json_rpc(url: str, method: str, params: list[Any], *, timeout: float = 10.0) -> Any:
    """One JSON-RPC call with the standard library (no web3 here)."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310 - the auditor names the URL
            answer = json.loads(reply.read())
    except (OSError, ValueError) as exc:
        raise CheckFailed(f"the node at {url} did not answer {method}: {exc}") from None
    if "error" in answer:
        raise CheckFailed(f"the node refused {method}: {answer['error']}")
    return answer.get("result")


def checkpoint_digest(chain_id: int, number: int, block_hash: bytes) -> bytes:
    return eip712_digest(CHECKPOINT_DOMAIN_FIELDS, CHECKPOINT_DOMAIN | {"chainId": chain_id}, "Checkpoint",
                         CHECKPOINT_FIELDS, {"number": number, "hash": to_hex(block_hash)})  # fmt: skip


def deployment_digest(chain_id: int, contracts: dict[str, str]) -> bytes:
    message = {"consortiumRegistry": contracts["ConsortiumRegistry"], "partLedger": contracts["PartLedger"], "evidenceLedger": contracts["EvidenceLedger"]}
    return eip712_digest(CHECKPOINT_DOMAIN_FIELDS, CHECKPOINT_DOMAIN | {"chainId": chain_id}, "Deployment", DEPLOYMENT_FIELDS, message)


CHECKPOINTS_SCHEMA = {
    "format": STR,
    "chainId": INT,
    "operator": ADDRESS,
    "deployment": {"contracts": {"ConsortiumRegistry": ADDRESS, "PartLedger": ADDRESS, "EvidenceLedger": ADDRESS}, "signature": HEX},
    "checkpoints": [{"number": INT, "hash": HEX32, "signature": HEX}],
}


def verify_checkpoints(data: Any, *, operator: str | None = None) -> dict[int, bytes]:
    """The block hashes of a checkpoint file, after checking every signature recovers to its operator (and that
    operator is `operator`, when given)."""
    _check_shape(data, CHECKPOINTS_SCHEMA, "checkpoints")
    if data["format"] != CHECKPOINTS_FORMAT:
        raise CheckFailed(f"the checkpoint file is not {CHECKPOINTS_FORMAT}")
    if operator is not None and data["operator"] != operator:
        raise CheckFailed(f"the checkpoints are signed for {data['operator']}, not the operator {operator} you trust")
    chain_id = data["chainId"]
    if recover_signer(deployment_digest(chain_id, data["deployment"]["contracts"]), from_hex(data["deployment"]["signature"])) != data["operator"]:
        raise CheckFailed("the checkpoint file's deployment statement is not signed by its operator")
    hashes: dict[int, bytes] = {}
    for entry in data["checkpoints"]:
        block_hash = from_hex(entry["hash"], 32)
        if recover_signer(checkpoint_digest(chain_id, entry["number"], block_hash), from_hex(entry["signature"])) != data["operator"]:
            raise CheckFailed(f"checkpoint {entry['number']} is not signed by the operator {data['operator']}")
        hashes[entry["number"]] = block_hash
    return hashes


# --- the verdict ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    checks: list[Check]
    facts: list[tuple[str, str]]  # what the bundle proves, for a person (only meaningful when ok)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    @property
    def failed(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.ok,
            "failed": self.failed,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
            "facts": [{"label": label, "value": value} for label, value in self.facts],
        }


class _Verification:
    """One run over one bundle: each check reads the bundle and what earlier checks decoded."""

    def __init__(self, bundle: dict[str, Any], document: bytes | None, anchors: TrustAnchors) -> None:
        self.b = bundle
        self.document = document
        self.anchors = anchors
        self.header: dict[str, Any] | None = None
        self.known_hashes: dict[int, bytes] = {}
        self.tx: Transaction | None = None
        self.sender: str | None = None  # who acted through the transaction: its sender, or the forwarded request's signer
        self.args: dict[str, Any] | None = None
        self.spec: EventSpec | None = None
        self.keys: dict[str, dict[str, Any]] = {}
        self.orgs: dict[int, dict[str, Any]] = {}
        self.facts: list[tuple[str, str]] = []
        self.finality: str | None = None

    def run(self) -> list[Check]:
        checks: list[tuple[str, Callable[[], str]]] = [
            ("header", self.check_header),
            ("header chain", self.check_header_chain),
            ("finality", self.check_finality),
            ("anchor", self.check_anchor),
            ("transaction", self.check_transaction),
            ("receipt", self.check_receipt),
            ("event", self.check_event),
            ("signatures", self.check_signatures),
            ("registry", self.check_registry),
            ("signers", self.check_signers),
            ("batch record", self.check_batch_record),
            ("document", self.check_document),
        ]
        results = [Check("format", True, f"{FORMAT}, subject {self.b['subject']}")]
        for name, check in checks:
            try:
                detail = check()
            except CheckFailed as exc:
                results.append(Check(name, False, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - malformed input anywhere fails its check, never crashes
                results.append(Check(name, False, f"malformed: {type(exc).__name__}: {exc}"[:300]))
                continue
            if detail:
                results.append(Check(name, True, detail))
        return results

    def need(self, value: Any, what: str) -> Any:
        if value is None:
            raise CheckFailed(f"not checked: needs {what}")
        return value

    # -- block -------------------------------------------------------------------------------------------------

    def check_header(self) -> str:
        block = self.b["block"]
        raw = from_hex(block["header"])
        fields = decode_header(raw)
        self.header = fields
        layout = HEADER_LAYOUTS[len(fields)]
        if header_hash(raw) != from_hex(block["hash"]):
            raise CheckFailed(f"the header hashes to {to_hex(header_hash(raw))}, not the block hash {block['hash']}")
        if fields["number"] != block["number"]:
            raise CheckFailed(f"the header is of block {fields['number']}, the bundle says {block['number']}")
        if render_header(fields) != block["fields"]:
            raise CheckFailed("the listed header fields differ from the header's RLP")
        self.known_hashes[fields["number"]] = header_hash(raw)
        when = datetime.datetime.fromtimestamp(fields["timestamp"], datetime.timezone.utc).isoformat().replace("+00:00", "Z")
        self.facts += [("block", f"{fields['number']} {block['hash']}"), ("block time", when)]
        bft = ", Besu QBFT: hashed without its commit seals and round" if header_hash(raw) != keccak(raw) else ""
        return f"block {fields['number']} ({layout} layout, {len(fields)} fields{bft}) hashes to {block['hash']}"

    def check_header_chain(self) -> str:
        chain = self.b["headerChain"]
        if not chain:
            return ""
        number = self.need(self.header, "a valid header")["number"]
        parent = self.need(self.known_hashes.get(number), "a valid header")
        for raw_hex in chain:
            raw = from_hex(raw_hex)
            fields = decode_header(raw)
            if fields["number"] != number + 1 or fields["parentHash"] != parent:
                raise CheckFailed(f"the header after block {number} does not name it as its parent")
            number, parent = number + 1, header_hash(raw)
            self.known_hashes[number] = parent
        return f"{len(chain)} header(s) link block {self.b['block']['number']} to block {number} ({to_hex(parent)})"

    def check_finality(self) -> str:
        """Besu QBFT: the bundle's headers lead from the trusted validators to the block, each sealed by a quorum of
        the validators after its parent (with --validators); without it, only that they link up to the block."""
        if "qbft" not in self.b and self.anchors.validators is None:
            return ""
        from partledger.proofs import qbft

        self.need(self.header, "a valid header")
        headers = [from_hex(h) for h in self.b.get("qbft", {"headers": []})["headers"]] + [from_hex(self.b["block"]["header"])]
        if self.anchors.validators is None:
            first = qbft.link_headers(headers)
            return f"QBFT headers link blocks {first}..{self.header['number']} (seals not checked: no --validators given)"
        trusted = qbft.trusted_validators(self.anchors.validators)
        final = qbft.verify_finality(headers, trusted, chain_id=self.b["chainId"])
        self.finality = f"block {final.number} is final: sealed by {final.signers} of the {final.validators} validators followed from {trusted.source}"
        self.facts.append(("finality", self.finality))
        return final.detail

    def check_anchor(self) -> str:
        if self.anchors.empty:
            raise CheckFailed("no trust anchor given: pass --trusted-block N:HASH, --rpc URL, --checkpoints FILE or --validators FILE")
        self.need(self.known_hashes or None, "a valid header")
        done = []
        for number, block_hash in sorted(self.anchors.blocks.items()):
            done.append(self._match(number, block_hash, "the trusted block"))
        if self.anchors.checkpoints is not None:
            data = self.anchors.checkpoints
            hashes = verify_checkpoints(data, operator=self.anchors.operator)
            if data["chainId"] != self.b["chainId"]:
                raise CheckFailed(f"the checkpoints are of chain {data['chainId']}, the bundle of chain {self.b['chainId']}")
            if data["deployment"]["contracts"] != self.b["contracts"]:
                raise CheckFailed("the bundle's contract addresses are not the ones the operator signed in the checkpoint file")
            covered = sorted(set(hashes) & set(self.known_hashes))
            if not covered:
                span = f"{min(self.known_hashes)}..{max(self.known_hashes)}"
                raise CheckFailed(f"no checkpoint in blocks {span}: fetch the bundle with a header chain to a checkpoint")
            done.append(self._match(covered[0], hashes[covered[0]], f"the checkpoint signed by {data['operator']}"))
        if self.anchors.rpc_url is not None:
            url = self.anchors.rpc_url
            chain_id = int(json_rpc(url, "eth_chainId", []), 16)
            if chain_id != self.b["chainId"]:
                raise CheckFailed(f"the node at {url} is chain {chain_id}, the bundle is of chain {self.b['chainId']}")
            number = self.b["block"]["number"]
            block = json_rpc(url, "eth_getBlockByNumber", [quantity(number), False])
            if not block:
                raise CheckFailed(f"the node at {url} has no block {number}")
            done.append(self._match(number, from_hex(block["hash"].lower(), 32), f"the node at {url}"))
        if self.anchors.validators is not None:
            done.append(self.need(self.finality, "the block's QBFT finality"))
        if self.anchors.contracts is not None:
            if any(self.anchors.contracts.get(name) != address for name, address in self.b["contracts"].items()):
                raise CheckFailed("the bundle's contract addresses are not the deployment manifest's")
            if "forwarded" in self.b and self.anchors.contracts.get(FORWARDER_NAME) != self.b["forwarded"]["forwarder"]:
                raise CheckFailed("the bundle's forwarder is not the deployment manifest's")
            done.append("contracts are the manifest's")
        elif self.anchors.checkpoints is None:
            done.append("contract addresses as the bundle declares them (pin them with the deployment manifest)")
        return "; ".join(done)

    def _match(self, number: int, block_hash: bytes, source: str) -> str:
        if number not in self.known_hashes:
            span = f"{min(self.known_hashes)}..{max(self.known_hashes)}"
            raise CheckFailed(f"block {number} ({source}) is outside the bundle's blocks {span}")
        if self.known_hashes[number] != block_hash:
            raise CheckFailed(f"block {number} hashes to {to_hex(self.known_hashes[number])}, {source} says {to_hex(block_hash)}")
        return f"block {number} matches {source}"

    # -- transaction, receipt, event ---------------------------------------------------------------------------

    def check_transaction(self) -> str:
        header = self.need(self.header, "a decodable header")
        entry = self.b["transaction"]
        raw = from_hex(entry["raw"])
        if keccak(raw) != from_hex(entry["hash"]):
            raise CheckFailed("keccak256(raw transaction) is not the transaction hash")
        proven = mpt_get(header["transactionsRoot"], rlp.encode(entry["index"]), [from_hex(n) for n in entry["proof"]])
        if proven != raw:
            raise CheckFailed(f"the proof does not put this transaction at index {entry['index']} under transactionsRoot")
        tx = decode_transaction(raw)
        claimed = (tx.type, tx.sender, checksum(tx.to) if len(tx.to) == 20 else "", tx.nonce)
        if claimed != (entry["type"], entry["from"], entry["to"], entry["nonce"]):
            raise CheckFailed("the listed type, from, to or nonce differ from the signed transaction")
        if tx.chain_id != self.b["chainId"]:
            raise CheckFailed(f"the transaction is signed for chain {tx.chain_id}, the bundle is of chain {self.b['chainId']}")
        self.tx = tx
        self.facts.append(("transaction", f"{entry['hash']} (index {entry['index']}) sent by {tx.sender}"))
        return f"{entry['hash']} at index {entry['index']}, signed by {tx.sender} for chain {tx.chain_id}"

    def check_receipt(self) -> str:
        header = self.need(self.header, "a decodable header")
        entry = self.b["receipt"]
        raw = from_hex(entry["raw"])
        index = self.b["transaction"]["index"]
        if mpt_get(header["receiptsRoot"], rlp.encode(index), [from_hex(n) for n in entry["proof"]]) != raw:
            raise CheckFailed(f"the proof does not put this receipt at index {index} under receiptsRoot")
        receipt = decode_receipt(raw)
        if (receipt.status, len(receipt.logs)) != (entry["status"], entry["logCount"]):
            raise CheckFailed("the listed status or log count differ from the receipt")
        if receipt.status != 1:
            raise CheckFailed("the transaction failed (receipt status 0)")
        self.receipt = receipt
        return f"at index {index} under receiptsRoot, status success, {len(receipt.logs)} log(s)"

    def check_event(self) -> str:
        receipt: Receipt = self.need(getattr(self, "receipt", None), "a proven receipt")
        event = self.b["event"]
        position = event["logIndexInReceipt"]
        if position >= len(receipt.logs):
            raise CheckFailed(f"the receipt has no log {position}")
        address, topics, data = receipt.logs[position]
        if (checksum(address), [to_hex(t) for t in topics], to_hex(data)) != (event["address"], event["topics"], event["data"]):
            raise CheckFailed(f"log {position} of the receipt is not the bundle's event (address, topics or data differ)")
        spec, args = decode_event(topics, data)
        if (event["name"], event["signature"]) != (spec.name, spec.signature):
            raise CheckFailed(f"topic 0 is {spec.signature}, the bundle names {event['signature'][:60]!r}")
        if event["address"] != self.b["contracts"][spec.contract]:
            raise CheckFailed(f"the log was emitted by {event['address']}, not the {spec.contract} at {self.b['contracts'][spec.contract]}")
        if args != event["args"]:
            raise CheckFailed("the listed arguments differ from the decoded log")
        subjects = SUBJECTS.get(spec.name, ("event",))
        if self.b["subject"] not in subjects:
            raise CheckFailed(f"a {spec.name} event is a {' or '.join(subjects)} subject, not {self.b['subject']}")
        tx = self.need(self.tx, "a proven transaction")
        if self.b["transaction"]["to"] == event["address"]:
            if "forwarded" in self.b:
                raise CheckFailed("the transaction called the event's contract directly, yet the bundle lists a forwarded request")
            sender = tx.sender
            if spec.key is not None and args[spec.key] != sender:
                raise CheckFailed(f"the event names site key {args[spec.key]}, but {sender} sent the transaction")
        else:
            sender = self._forwarded_signer(receipt, position)
            if spec.key is not None and args[spec.key] != sender:
                raise CheckFailed(f"the event names site key {args[spec.key]}, but {sender} signed the forwarded request")
        self.spec, self.args, self.sender = spec, args, sender
        self.facts.append(("event", f"{spec.contract}.{spec.name} at {event['address']}"))
        for name, value in args.items():
            if name not in ("issuerSignature", "counterpartySignature", "attestation"):
                self.facts.append((f"  {name}", json.dumps(value) if isinstance(value, list) else str(value)))
        return f"{spec.name} emitted by {spec.contract} {event['address']}, arguments decoded"

    def _forwarded_signer(self, receipt: Receipt, position: int) -> str:
        """The signer of the forwarded request that emitted the log at `position`: the transaction went to the
        ERC-2771 forwarder, which calls the target for each request and then logs ExecutedForwardRequest(signer,
        nonce, success); so the event belongs to the first such log after it. (PartLedger records the signer the
        forwarder verified as the site key: this is the receipt's own account of the same fact.)"""
        forwarded = self.b.get("forwarded")
        to = self.b["transaction"]["to"]
        if forwarded is None:
            raise CheckFailed(f"the transaction called {to}, not the contract that emitted the event, and the bundle lists no forwarded request")
        if forwarded["forwarder"] != to:
            raise CheckFailed(f"the transaction called {to}, not the forwarder {forwarded['forwarder']} the bundle names")
        index = forwarded["logIndexInReceipt"]
        if not position < index < len(receipt.logs):
            raise CheckFailed(f"the forwarder's log {index} does not follow the event's log {position} in the receipt")

        def executed(log: tuple[bytes, list[bytes], bytes]) -> bool:
            return checksum(log[0]) == to and bool(log[1]) and log[1][0] == EXECUTED_FORWARD_REQUEST

        if any(executed(log) for log in receipt.logs[position + 1 : index]):
            raise CheckFailed(f"another forwarded request ended between the event and log {index}: the event is not of that request")
        address, topics, data = receipt.logs[index]
        if not executed(receipt.logs[index]) or len(topics) != 2 or topics[1][:12] != bytes(12) or len(data) != 64:
            raise CheckFailed(f"log {index} of the receipt is not the forwarder's ExecutedForwardRequest")
        signer, nonce, success = checksum(topics[1][12:]), int.from_bytes(data[:32], "big"), int.from_bytes(data[32:], "big")
        if success != 1:
            raise CheckFailed("the forwarder logged the request as failed")
        if (signer, nonce) != (forwarded["signer"], forwarded["nonce"]):
            raise CheckFailed(f"the forwarder logged request {nonce} of {signer}, the bundle lists {forwarded['nonce']} of {forwarded['signer']}")
        self.facts.append(("relayed", f"request {nonce} signed by {signer}, relayed by {self.need(self.tx, 'a proven transaction').sender} through {to}"))
        return signer

    # -- signatures ---------------------------------------------------------------------------------------------

    def check_signatures(self) -> str:
        if self.b["subject"] != "document":
            return ""
        args = self.need(self.args, "a proven event")
        typed = self.b["typedData"]
        if typed["types"] != TYPED_DATA_TYPES or typed["primaryType"] != "Attestation":
            raise CheckFailed("the typed data is not the EvidenceLedger's Attestation type")
        domain = typed["domain"]
        _check_shape(domain, {"name": STR, "version": STR, "chainId": INT, "verifyingContract": ADDRESS}, "typedData.domain")
        if domain["chainId"] != self.b["chainId"] or domain["verifyingContract"] != self.b["contracts"]["EvidenceLedger"]:
            raise CheckFailed("the EIP-712 domain is not of this chain's EvidenceLedger")
        if typed["message"] != args["attestation"]:
            raise CheckFailed("the signed Attestation is not the anchored one")
        digest = eip712_digest(EIP712_DOMAIN_FIELDS, domain, "Attestation", ATTESTATION_FIELDS, typed["message"])
        if digest != from_hex(typed["digest"]):
            raise CheckFailed("the listed EIP-712 digest is not the typed data's")
        expected = [
            {"party": "issuer", "orgId": args["issuer"], "signer": args["issuerSigner"], "signature": args["issuerSignature"]},
            {"party": "counterparty", "orgId": args["counterparty"], "signer": args["counterpartySigner"], "signature": args["counterpartySignature"]},
        ]
        if self.b["signatures"] != expected:
            raise CheckFailed("the listed signatures differ from the anchored ones")
        for entry in expected:
            recovered = recover_signer(digest, from_hex(entry["signature"]))
            if recovered != entry["signer"]:
                raise CheckFailed(f"the {entry['party']}'s signature recovers to {recovered}, not {entry['signer']}")
        return f"both parties' EIP-712 signatures recover to the recorded signers (digest {typed['digest'][:18]}…)"

    # -- registry -----------------------------------------------------------------------------------------------

    def check_registry(self) -> str:
        header = self.need(self.header, "a decodable header")
        registry = self.b["registry"]
        if registry["address"] != self.b["contracts"]["ConsortiumRegistry"]:
            raise CheckFailed("the registry proven is not the bundle's ConsortiumRegistry")
        address = address_bytes(registry["address"])
        account = mpt_get(header["stateRoot"], keccak(address), [from_hex(n) for n in registry["accountProof"]])
        if account is None:
            raise CheckFailed("the state proof shows no registry account")
        _nonce, _balance, storage_root, _code_hash = rlp.decode(account)

        def slot_value(slot: bytes, proof: list[str]) -> int:
            value = mpt_get(storage_root, keccak(slot), [from_hex(n) for n in proof])
            return 0 if value is None else _int(rlp.decode(value))

        for entry in registry["keys"]:
            key = address_bytes(entry["key"])
            record = slot_value(keccak(bytes(12) + key + KEYS_SLOT.to_bytes(32, "big")), entry["recordProof"])
            site = slot_value(keccak(bytes(12) + key + KEY_SITES_SLOT.to_bytes(32, "big")), entry["siteProof"])
            facts = {"orgId": record & 0xFFFFFFFF, "addedBlock": (record >> 32) & (2**64 - 1), "revokedBlock": (record >> 96) & (2**64 - 1), "site": to_hex(site.to_bytes(32, "big"))}
            if record >> 160 or any(entry[name] != value for name, value in facts.items()):
                raise CheckFailed(f"the registry's record of key {entry['key']} differs from the one listed")
            if entry["key"] in self.keys:
                raise CheckFailed(f"key {entry['key']} listed twice")
            self.keys[entry["key"]] = entry
        for entry in registry["organisations"]:
            value = slot_value(keccak(entry["orgId"].to_bytes(32, "big") + ORGANISATIONS_SLOT.to_bytes(32, "big")), entry["proof"])
            if value >> 24 or (value & 0xFFFF, bool(value >> 16)) != (entry["roles"], entry["suspended"]):
                raise CheckFailed(f"the registry's record of organisation {entry['orgId']} differs from the one listed")
            if entry["orgId"] in self.orgs:
                raise CheckFailed(f"organisation {entry['orgId']} listed twice")
            self.orgs[entry["orgId"]] = entry
        return f"state of ConsortiumRegistry at block {header['number']}: {len(self.keys)} key(s), {len(self.orgs)} organisation(s), proven against stateRoot"

    def check_signers(self) -> str:
        spec: EventSpec = self.need(self.spec, "a proven event")
        args = self.need(self.args, "a proven event")
        sender = self.need(self.sender, "a proven event")
        self.need(self.keys or None, "proven registry facts")
        block = self.b["block"]["number"]
        actors = acting_keys(spec, args, sender)
        needed_keys = {key for _, key, _, _ in actors}
        if set(self.keys) != needed_keys:
            raise CheckFailed(f"the registry facts cover keys {sorted(self.keys)}, the event needs {sorted(needed_keys)}")
        needed_orgs = {self.keys[key]["orgId"] for key in needed_keys}
        if set(self.orgs) != needed_orgs:
            raise CheckFailed(f"the registry facts cover organisations {sorted(self.orgs)}, the event needs {sorted(needed_orgs)}")
        lines = []
        for role, key, orgs, roles in actors:
            fact = self.keys[key]
            org = self.orgs[fact["orgId"]]
            site = _text32(fact["site"])
            if fact["orgId"] not in orgs:
                raise CheckFailed(f"{role} {key} belongs to organisation {fact['orgId'] or 'none'}, not {' or '.join(map(str, orgs))}")
            if not 0 < fact["addedBlock"] <= block:
                raise CheckFailed(f"{role} {key} was not a registered key at block {block}")
            if fact["revokedBlock"]:
                when = "before" if fact["revokedBlock"] < block else "in"
                raise CheckFailed(f"{role} {key} ({site}) was revoked in block {fact['revokedBlock']}, {when} block {block}")
            if org["suspended"]:
                raise CheckFailed(f"organisation {fact['orgId']} of {role} {key} was suspended at block {block}")
            if roles and not org["roles"] & roles:
                raise CheckFailed(f"organisation {fact['orgId']} holds none of the roles {_role_names(roles)} that {spec.name} needs")
            lines.append(f"{role} {key} ({site}) of organisation {fact['orgId']}, added in block {fact['addedBlock']}")
            self.facts.append((role, f"{key} site {site!r} of organisation {fact['orgId']} ({_role_names(org['roles'])}), key added in block {fact['addedBlock']}, not revoked at block {block}"))
        return "; ".join(lines) + f": valid at block {block}"

    # -- batch records and documents ----------------------------------------------------------------------------

    def check_batch_record(self) -> str:
        if self.b["subject"] != "batch-record":
            return ""
        args = self.need(self.args, "a proven event")
        record = self.b["batchRecord"]
        if not isinstance(record["value"], list):
            raise CheckFailed("a batch record value is a list")
        leaf = leaf_hash(record["types"], record["value"])
        if leaf != from_hex(record["leaf"]):
            raise CheckFailed("the record does not hash to the listed leaf")
        if process_merkle_proof(leaf, [from_hex(n) for n in record["proof"]]) != from_hex(args["root"]):
            raise CheckFailed(f"the inclusion proof does not lead to the anchored root {args['root']}")
        self.facts.append(("batch record", f"({', '.join(record['types'])}) {json.dumps(record['value'], ensure_ascii=False)}"))
        detail = f"the record's leaf is in the anchored batch {args['root']} ({len(record['proof'])} proof step(s))"
        if "epcisEvent" in self.b:
            detail += "; " + self.check_epcis_event(args, record)
        if "notification" in self.b:
            detail += "; " + self.check_notification(args, record)
        return detail

    def check_notification(self, args: dict[str, Any], record: dict[str, Any]) -> str:
        """A quality-notification transition proven by its batch (partledger/quality_notifications.py): the batch is
        of kind "notification" and was anchored by the acting organisation (its site key sent the transaction, the
        signers check proves the key was that organisation's); the transition hashes (keccak256 of its canonical
        JSON) to the record's first value, the record's other values are the transition's, the transition is one
        the state machine allows, and the notification's content hashes to the contentHash it names."""
        from partledger import quality_notifications as qn

        kind = from_hex(args["kind"], 32).rstrip(b"\0").decode("ascii", "replace")
        if kind != qn.NOTIFICATION_BATCH_KIND or record["types"] != qn.RECORD_TYPES:
            raise CheckFailed(f"a notification transition is proven by a batch of kind {qn.NOTIFICATION_BATCH_KIND!r} with records ({', '.join(qn.RECORD_TYPES)}), not {kind!r}")
        transition, content = self.b["notification"]["transition"], self.b["notification"]["content"]
        if not isinstance(transition, dict) or transition.get("format") != qn.TRANSITION_FORMAT:
            raise CheckFailed(f"the notification transition is not a {qn.TRANSITION_FORMAT} object")
        try:
            values = qn.record_values(transition)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckFailed(f"the notification transition cannot be hashed: {exc}") from None
        if values != record["value"]:
            raise CheckFailed("the notification transition is not the record: its hash, notification, organisations, state or time differ")
        problem = qn.transition_problem(transition)
        if problem is not None:
            raise CheckFailed(f"the state machine allows no such transition: {problem}")
        if transition["actor"] != args["orgId"]:
            raise CheckFailed(f"the transition was taken by organisation {transition['actor']}, but organisation {args['orgId']} anchored it")
        if not isinstance(content, dict) or content.get("id") != transition["notification"]:
            raise CheckFailed("the notification content is not the transition's notification")
        try:
            content_hash = "0x" + qn.record_hash(content).hex()
        except (TypeError, ValueError) as exc:
            raise CheckFailed(f"the notification content cannot be hashed: {exc}") from None
        if content_hash != transition.get("contentHash"):
            raise CheckFailed(f"the notification content hashes to {content_hash}, the transition names {transition.get('contentHash')}")
        self.facts.append(("notification", f"{content.get('kind')} {transition['notification']} of organisation {transition.get('initiator')}: {content.get('title')}"))
        self.facts.append(("transition", f"{transition['action']}: {transition['from']} -> {transition['state']} for organisation {transition['recipient']}, by organisation {transition['actor']} at {transition['atMillis']} ms"))
        return f"the {transition['action']} transition hashes to {values[0]}, the record's, and was taken by the anchoring organisation {args['orgId']}"

    def check_epcis_event(self, args: dict[str, Any], record: dict[str, Any]) -> str:
        """An EPCIS event proven by its batch: the batch is of kind "epcis", and the event's canonical hash (EPCIS 2.0,
        computed here from the event as given) is the record's event hash, its eventID the record's."""
        from partledger.epcis.hashing import event_hash, hash_digest

        kind = from_hex(args["kind"], 32).rstrip(b"\0").decode("ascii", "replace")
        if kind != EPCIS_BATCH_KIND or record["types"] != EPCIS_RECORD_TYPES:
            raise CheckFailed(f"an EPCIS event is proven by a batch of kind {EPCIS_BATCH_KIND!r} with records ({', '.join(EPCIS_RECORD_TYPES)}), not {kind!r}")
        event = self.b["epcisEvent"]
        if not isinstance(event, dict):
            raise CheckFailed("the EPCIS event is not a JSON object")
        computed = event_hash(event, context=event.get("@context"))
        if from_hex(record["value"][0], 32) != hash_digest(computed):
            raise CheckFailed(f"the EPCIS event's canonical hash {computed} is not the record's event hash {record['value'][0]}")
        if event.get("eventID") != record["value"][1]:
            raise CheckFailed("the EPCIS event's eventID is not the record's")
        self.facts.append(("EPCIS event", f"{event.get('type')} {event.get('eventID')}: canonical hash {computed}"))
        return f"the EPCIS event hashes to {computed}, the record's event hash"

    def check_document(self) -> str:
        section = self.b.get("document")
        if section is None and self.document is None:
            return ""
        if section is None:
            raise CheckFailed("a document was given but the bundle carries no salt to hash it with")
        args = self.need(self.args, "a proven event")
        salt, content_hash = from_hex(section["salt"]), from_hex(section["contentHash"])
        if keccak(salt + content_hash) != from_hex(args["docHash"]):
            raise CheckFailed("keccak256(salt || contentHash) is not the anchored docHash")
        if self.document is None:
            self.facts.append(("document", f"content hash {section['contentHash']} (no file checked)"))
            return "salt and content hash give the anchored docHash (no document file given)"
        if keccak(self.document) != content_hash:
            raise CheckFailed("the document file's keccak256 is not the anchored document's content hash: a different file")
        self.facts.append(("document", f"the given file ({len(self.document)} bytes) is the anchored document"))
        return f"keccak256(salt || keccak256(file)) = docHash {args['docHash']}"


def _text32(value: str) -> str:
    raw = from_hex(value).rstrip(b"\x00")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return value
    return text if text.isprintable() else value


def _role_names(roles: int) -> str:
    return "|".join(name for bit, name in enumerate(ROLE_NAMES) if roles >> bit & 1) or "none"


def verify_bundle(bundle: bytes | str | dict[str, Any], *, document: bytes | None = None, anchors: TrustAnchors = TrustAnchors()) -> Verdict:
    """Checks a proof bundle (JSON text or parsed) against `anchors`, and `document` when given."""
    try:
        parsed = parse_json(bundle) if isinstance(bundle, (bytes, str)) else bundle
        check_format(parsed)
    except CheckFailed as exc:
        return Verdict([Check("format", False, str(exc))], [])
    verification = _Verification(parsed, document, anchors)
    checks = verification.run()
    return Verdict(checks, [("subject", parsed["subject"]), ("chain", str(parsed["chainId"])), *verification.facts])


# --- command line (plain text; `partledger proof verify` prints the same with Rich) ------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partledger.proofs.verifier", description="Verify a PartLedger proof bundle offline.")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--document", type=Path, help="the document file the bundle anchors")
    parser.add_argument("--trusted-block", action="append", default=[], metavar="N:HASH", help="a block hash you trust")
    parser.add_argument("--rpc", help="a JSON-RPC node you trust")
    parser.add_argument("--checkpoints", type=Path, help="the operator's signed checkpoint file")
    parser.add_argument("--validators", type=Path, help="Besu QBFT: the genesis file or a JSON list of the validators you trust")
    parser.add_argument("--operator", help="the operator address the checkpoints must be signed by")
    parser.add_argument("--manifest", type=Path, help="the consortium's deployment manifest: pins the contract addresses")
    options = parser.parse_args(argv)
    try:
        blocks = dict(parse_trusted_block(text) for text in options.trusted_block)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        checkpoints = parse_json(options.checkpoints.read_bytes()) if options.checkpoints else None
        validators = parse_json(options.validators.read_bytes()) if options.validators else None
        contracts = manifest_contracts(parse_json(options.manifest.read_bytes())) if options.manifest else None
        document = options.document.read_bytes() if options.document else None
        bundle = options.bundle.read_bytes()
    except (OSError, CheckFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    anchors = TrustAnchors(blocks=blocks, rpc_url=options.rpc, checkpoints=checkpoints, operator=options.operator, contracts=contracts, validators=validators)
    verdict = verify_bundle(bundle, document=document, anchors=anchors)
    for check in verdict.checks:
        print(f"[{'PASS' if check.ok else 'FAIL'}] {check.name:<13} {check.detail}")
    if verdict.ok:
        for label, value in verdict.facts:
            print(f"       {label}: {value}")
    print("VALID: every check passed" if verdict.ok else f"INVALID: failed {', '.join(verdict.failed)}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
