"""EIP-712 typed data of the EvidenceLedger's Attestation, with the domain read from the contract (ERC-5267)."""

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


def attestation_typed_data(domain: Eip712Domain, attestation: Attestation) -> dict[str, Any]:
    """Full EIP-712 typed data, as eth-account's `sign_typed_data(full_message=...)` and wallets take it."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Attestation": ATTESTATION_FIELDS,
        },
        "primaryType": "Attestation",
        "domain": asdict(domain),
        "message": asdict(attestation),
    }
