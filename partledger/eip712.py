"""EIP-712 typed data: the EvidenceLedger's Attestation and the forwarder's ForwardRequest, each with the domain read
from its contract (ERC-5267)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import coincurve
from eth_utils import keccak, to_checksum_address
from web3.contract import Contract

ATTESTATION_FIELDS = [
    {"name": "docHash", "type": "bytes32"},
    {"name": "docType", "type": "uint16"},
    {"name": "issuer", "type": "uint32"},
    {"name": "counterparty", "type": "uint32"},
    {"name": "previous", "type": "bytes32"},
    {"name": "partsRoot", "type": "bytes32"},
    {"name": "nonce", "type": "bytes32"},
    {"name": "deadline", "type": "uint64"},
]


@dataclass(frozen=True)
class Eip712Domain:
    name: str
    version: str
    chainId: int  # noqa: N815 - EIP-712 field name
    verifyingContract: str  # noqa: N815 - EIP-712 field name


@dataclass(frozen=True)
class Attestation:
    docHash: bytes  # noqa: N815 - the Solidity struct's field names, so that it maps 1:1
    docType: int  # noqa: N815
    issuer: int
    counterparty: int
    previous: bytes
    partsRoot: bytes  # noqa: N815
    nonce: bytes
    deadline: int

    def as_tuple(self) -> tuple[Any, ...]:
        """The struct as a contract call argument."""
        return tuple(asdict(self).values())


def read_domain(contract: Contract) -> Eip712Domain:
    """The EIP-712 domain the deployed contract uses, from its eip712Domain() (ERC-5267); never hard-coded."""
    _fields, name, version, chain_id, verifying_contract, _salt, _extensions = contract.functions.eip712Domain().call()
    return Eip712Domain(name=name, version=version, chainId=chain_id, verifyingContract=verifying_contract)


DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def typed_data(domain: Eip712Domain, primary_type: str, fields: list[dict[str, str]], message: dict[str, Any]) -> dict[str, Any]:
    """Full EIP-712 typed data of one struct, as eth-account's `sign_typed_data(full_message=...)` and wallets take it."""
    return {
        "types": {"EIP712Domain": DOMAIN_FIELDS, primary_type: fields},
        "primaryType": primary_type,
        "domain": asdict(domain),
        "message": message,
    }


def attestation_typed_data(domain: Eip712Domain, attestation: Attestation) -> dict[str, Any]:
    """Full EIP-712 typed data of an Attestation."""
    return typed_data(domain, "Attestation", ATTESTATION_FIELDS, asdict(attestation))


# OpenZeppelin's ERC2771Forwarder: a site key signs one of these; anyone relays it (execute, executeBatch).
FORWARD_REQUEST_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "gas", "type": "uint256"},
    {"name": "nonce", "type": "uint256"},
    {"name": "deadline", "type": "uint48"},
    {"name": "data", "type": "bytes"},
]


@dataclass(frozen=True)
class ForwardRequest:
    """A request for the forwarder to call `to` with `data` as `sender`. The nonce is signed but not sent: the
    forwarder checks the signature against its current nonce of `sender`, so a request runs at most once."""

    sender: str  # EIP-712 field "from"
    to: str
    value: int
    gas: int
    nonce: int
    deadline: int
    data: bytes

    def message(self) -> dict[str, Any]:
        return {"from": self.sender, "to": self.to, "value": self.value, "gas": self.gas, "nonce": self.nonce, "deadline": self.deadline, "data": self.data}

    def as_call_data(self, signature: bytes) -> tuple[Any, ...]:
        """The forwarder's ForwardRequestData (from, to, value, gas, deadline, data, signature), as a call argument."""
        return (self.sender, self.to, self.value, self.gas, self.deadline, self.data, signature)


def forward_request_typed_data(domain: Eip712Domain, request: ForwardRequest) -> dict[str, Any]:
    """Full EIP-712 typed data of a ForwardRequest."""
    return typed_data(domain, "ForwardRequest", FORWARD_REQUEST_FIELDS, request.message())


SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


FORWARD_REQUEST_TYPEHASH = keccak(text="ForwardRequest(" + ",".join(f"{f['type']} {f['name']}" for f in FORWARD_REQUEST_FIELDS) + ")")
DOMAIN_TYPEHASH = keccak(text="EIP712Domain(" + ",".join(f"{f['type']} {f['name']}" for f in DOMAIN_FIELDS) + ")")
UINT256_MAX, UINT48_MAX = 2**256 - 1, 2**48 - 1


@lru_cache(maxsize=65_536)
def checksum_address(address: str) -> str:
    """EIP-55 of `address` (0x and 40 hex digits, any letter case), remembered: a relay desk sees the same few hundred
    site keys and two targets again and again, and eth_utils' checksum (a Keccak and a pass over each character in
    Python) was a tenth of an API process's CPU under relayed load. Raises ValueError as eth_utils does."""
    return to_checksum_address(address)


@lru_cache(maxsize=16)
def domain_separator(domain: Eip712Domain) -> bytes:
    """hashStruct(EIP712Domain) of `domain`, as the forwarder's _domainSeparatorV4() computes it."""
    return keccak(DOMAIN_TYPEHASH + keccak(text=domain.name) + keccak(text=domain.version) + _uint(domain.chainId, UINT256_MAX) + _address(domain.verifyingContract))


def forward_request_digest(domain: Eip712Domain, request: ForwardRequest) -> bytes:
    """The EIP-712 digest the site key signs (the forwarder recomputes it with its own nonce of the sender): the
    struct's words put together directly, as the forwarder's _hashTypedDataV4 does. eth-account's general encoder
    (encode_typed_data over forward_request_typed_data, equal: tests/test_eip712.py) costs ~0.8 ms a request, which
    POST /v1/relay pays for every request it takes. ValueError for a value out of its type's range."""
    struct = keccak(
        FORWARD_REQUEST_TYPEHASH + _address(request.sender) + _address(request.to) + _uint(request.value, UINT256_MAX)
        + _uint(request.gas, UINT256_MAX) + _uint(request.nonce, UINT256_MAX) + _uint(request.deadline, UINT48_MAX) + keccak(request.data)
    )  # fmt: skip
    return keccak(b"\x19\x01" + domain_separator(domain) + struct)


def recover_forward_request_signer(domain: Eip712Domain, request: ForwardRequest, signature: bytes, *, digest: bytes | None = None) -> str | None:
    """Who signed `request` (whose digest may be given, computed once), as the forwarder's ECDSA.tryRecover sees it:
    None for a signature it refuses (not 65 bytes, v not 27 or 28, s in the upper half of the curve order, no point)."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if s > SECP256K1_HALF_N or r == 0 or s == 0 or r >= SECP256K1_N or s >= SECP256K1_N:
        return None
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes([signature[64] - 27]), digest or forward_request_digest(domain, request), hasher=None)
    except ValueError:  # no point on the curve for this r
        return None
    return checksum_address("0x" + keccak(public.format(compressed=False)[1:])[-20:].hex())


def _uint(value: int, bound: int) -> bytes:
    if not 0 <= value <= bound:
        raise ValueError(f"{value} is out of range for its EIP-712 type")
    return value.to_bytes(32, "big")


def _address(address: str) -> bytes:
    raw = bytes.fromhex(address[2:] if address[:2] in ("0x", "0X") else address)
    if len(raw) != 20:
        raise ValueError(f"{address} is not a 20-byte address")
    return raw.rjust(32, b"\0")
