"""EIP-712 typed data: the EvidenceLedger's Attestation and the forwarder's ForwardRequest, each with the domain read
from its contract (ERC-5267)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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


def forward_request_digest(domain: Eip712Domain, request: ForwardRequest) -> bytes:
    """The EIP-712 digest the site key signs (the forwarder recomputes it with its own nonce of the sender)."""
    from eth_account.messages import encode_typed_data
    from eth_utils import keccak

    signable = encode_typed_data(full_message=forward_request_typed_data(domain, request))
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def recover_forward_request_signer(domain: Eip712Domain, request: ForwardRequest, signature: bytes, *, digest: bytes | None = None) -> str | None:
    """Who signed `request` (whose digest may be given, computed once), as the forwarder's ECDSA.tryRecover sees it:
    None for a signature it refuses (not 65 bytes, v not 27 or 28, s in the upper half of the curve order, no point)."""
    from eth_keys import keys
    from eth_keys.exceptions import BadSignature

    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:64], "big")
    if s > SECP256K1_HALF_N or r == 0 or s == 0:
        return None
    try:
        public = keys.Signature(vrs=(signature[64] - 27, r, s)).recover_public_key_from_msg_hash(digest or forward_request_digest(domain, request))
    except (BadSignature, ValueError):
        return None
    return public.to_checksum_address()
