"""Pure decoding of raw JSON-RPC logs into records, by the committed ABIs. No I/O, no chain calls.

A raw log is the dict eth_getLogs returns (hex strings). The decoded record keeps where the log stands (block,
transaction, index) and its arguments by name: bytes for fixed bytes, int for integers, checksummed text for
addresses, tuples for structs, lists for arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from eth_utils import keccak, to_checksum_address

from partledger.abi import decode
from partledger.artifacts import abi_type, load_artifact

INDEXED_CONTRACTS = ("ConsortiumRegistry", "PartLedger", "EvidenceLedger")


@dataclass(frozen=True, slots=True)
class DecodedLog:
    contract: str
    event: str
    block_number: int
    block_hash: bytes
    tx_hash: bytes
    log_index: int
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _EventSpec:
    contract: str
    name: str
    indexed: tuple[tuple[str, str], ...]  # (name, type) in topic order
    data_names: tuple[str, ...]
    data_types: tuple[str, ...]
    address_args: frozenset[str]


@lru_cache(maxsize=16_384)
def _checksummed(address: str) -> str:
    """The same few addresses (site keys, contracts) come back in every block, and a checksum costs a keccak."""
    return to_checksum_address(address)


class LogDecoder:
    """Decodes logs of the three PartLedger contracts at the addresses of one deployment."""

    def __init__(self, addresses: dict[str, str]) -> None:
        """`addresses` maps contract name to its deployed address (from the deployment manifest)."""
        self._contract_at = {address.lower(): name for name, address in addresses.items()}
        self._specs: dict[tuple[str, bytes], _EventSpec] = {}
        for name in INDEXED_CONTRACTS:
            for entry in load_artifact(name).events:
                types = [abi_type(item) for item in entry["inputs"]]
                topic0 = keccak(text=f"{entry['name']}({','.join(types)})")
                inputs = list(zip(entry["inputs"], types))
                self._specs[(name, topic0)] = _EventSpec(
                    contract=name,
                    name=entry["name"],
                    indexed=tuple((item["name"], t) for item, t in inputs if item["indexed"]),
                    data_names=tuple(item["name"] for item, _ in inputs if not item["indexed"]),
                    data_types=tuple(t for item, t in inputs if not item["indexed"]),
                    address_args=frozenset(item["name"] for item, t in inputs if t == "address"),
                )

    @property
    def addresses(self) -> list[str]:
        return list(self._contract_at)

    def decode(self, log: dict[str, Any]) -> DecodedLog | None:
        """The record for one raw log; None for a log of another contract or an event we do not index."""
        contract = self._contract_at.get(log["address"].lower())
        topics = log["topics"]
        if contract is None or not topics:
            return None
        spec = self._specs.get((contract, bytes.fromhex(topics[0][2:])))
        if spec is None:
            return None
        args: dict[str, Any] = {}
        for (name, topic_type), topic in zip(spec.indexed, topics[1:]):
            (args[name],) = decode([topic_type], bytes.fromhex(topic[2:]))
        values = decode(list(spec.data_types), bytes.fromhex(log["data"][2:]))
        args.update(zip(spec.data_names, values))
        for name in spec.address_args:
            args[name] = _checksummed(args[name])
        return DecodedLog(
            contract=contract,
            event=spec.name,
            block_number=int(log["blockNumber"], 16),
            block_hash=bytes.fromhex(log["blockHash"][2:]),
            tx_hash=bytes.fromhex(log["transactionHash"][2:]),
            log_index=int(log["logIndex"], 16),
            args=args,
        )
