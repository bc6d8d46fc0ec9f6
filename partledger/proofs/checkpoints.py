"""Operator-signed block-hash checkpoints (format partledger-checkpoints/1, see docs/proof-bundle.md).

The operator signs, with EIP-712, the hash of every N-th final block (and of the newest final block), and once the
deployment's contract addresses. An auditor takes the file once; `partledger proof verify --checkpoints FILE` then
accepts any later bundle whose header chain reaches a checkpointed block. Exporting again appends to the file after
checking that the checkpoints already in it are still the chain's (a mismatch means a reorganisation or another
chain, and stops the export).
"""

from __future__ import annotations

from typing import Any, Protocol

from partledger.errors import ChainMismatch, ConfigError
from partledger.manifest import Manifest
from partledger.proofs import verifier as v
from partledger.proofs.builder import JsonRpc


class TypedDataSigner(Protocol):
    """What signing a checkpoint needs of a key (wallets.signer.LocalSigner and RemoteSigner fit)."""

    @property
    def address(self) -> str: ...

    def sign_typed_data(self, full_message: dict[str, Any]) -> bytes: ...


def _domain(chain_id: int) -> dict[str, Any]:
    return v.CHECKPOINT_DOMAIN | {"chainId": chain_id}


def _types(primary: str, fields: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {
        "EIP712Domain": [{"name": name, "type": kind} for name, kind in v.CHECKPOINT_DOMAIN_FIELDS],
        primary: [{"name": name, "type": kind} for name, kind in fields],
    }


def checkpoint_typed_data(chain_id: int, number: int, block_hash: str) -> dict[str, Any]:
    return {"types": _types("Checkpoint", v.CHECKPOINT_FIELDS), "primaryType": "Checkpoint", "domain": _domain(chain_id), "message": {"number": number, "hash": block_hash}}


def deployment_typed_data(chain_id: int, contracts: dict[str, str]) -> dict[str, Any]:
    message = {"consortiumRegistry": contracts["ConsortiumRegistry"], "partLedger": contracts["PartLedger"], "evidenceLedger": contracts["EvidenceLedger"]}
    return {"types": _types("Deployment", v.DEPLOYMENT_FIELDS), "primaryType": "Deployment", "domain": _domain(chain_id), "message": message}


def export_checkpoints(rpc: JsonRpc, manifest: Manifest, signer: TypedDataSigner, *, every: int, existing: Any = None) -> dict[str, Any]:
    """The checkpoint file with every `every`-th final block since deployment and the newest final block signed,
    keeping (after re-checking) the checkpoints of `existing`."""
    if every < 1:
        raise ConfigError("the checkpoint interval is at least one block")
    chain_id = int(rpc.call("eth_chainId", []), 16)
    if chain_id != manifest.chain_id:
        raise ChainMismatch(f"the node is chain {chain_id}, the manifest says {manifest.chain_id}")
    contracts = {name: v.checksum(bytes.fromhex(manifest.address(name)[2:])) for name in ("ConsortiumRegistry", "PartLedger", "EvidenceLedger")}
    kept: dict[int, dict[str, Any]] = {}
    if existing is not None:
        try:
            v.verify_checkpoints(existing, operator=signer.address)
        except v.CheckFailed as exc:
            raise ConfigError(f"the existing checkpoint file cannot be extended: {exc}") from None
        if existing["chainId"] != chain_id or existing["deployment"]["contracts"] != contracts:
            raise ConfigError("the existing checkpoint file is of another chain or deployment")
        kept = {entry["number"]: entry for entry in existing["checkpoints"]}
    final = int(rpc.call("eth_blockNumber", []), 16) - manifest.confirmations
    wanted = set(range(-(-manifest.deployment_block // every) * every, final + 1, every)) | {final}
    checkpoints = []
    for number in sorted(wanted | set(kept)):
        block_hash = rpc.call("eth_getBlockByNumber", [hex(number), False])["hash"].lower()
        if number in kept:
            if kept[number]["hash"] != block_hash:
                raise ChainMismatch(f"block {number} is now {block_hash}, the checkpoint file says {kept[number]['hash']}: a reorganisation?")
            checkpoints.append(kept[number])
            continue
        signature = signer.sign_typed_data(checkpoint_typed_data(chain_id, number, block_hash))
        checkpoints.append({"number": number, "hash": block_hash, "signature": v.to_hex(bytes(signature))})
    deployment_signature = existing["deployment"]["signature"] if existing is not None else v.to_hex(bytes(signer.sign_typed_data(deployment_typed_data(chain_id, contracts))))
    return {
        "format": v.CHECKPOINTS_FORMAT,
        "chainId": chain_id,
        "operator": signer.address,
        "deployment": {"contracts": contracts, "signature": deployment_signature},
        "checkpoints": checkpoints,
    }


def chain_target(checkpoints: Any, block: int) -> int | None:
    """The first checkpointed block at or after `block`: where a bundle's header chain should reach."""
    later = [entry["number"] for entry in checkpoints["checkpoints"] if entry["number"] >= block]
    return min(later) if later else None
