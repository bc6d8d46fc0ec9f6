"""The deployment manifest: which chain, which contract addresses, from which block, built from which artifacts.

Written by deployment (`partledger devnet up`, `partledger deploy`), read by every later stage: the service
finds the contracts in it, the indexer its start block, the verifier its chain id.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from partledger.artifacts import FORWARDER
from partledger.errors import ConfigError

FORMAT = "partledger-deployment/1"


@dataclass(frozen=True)
class DeployedContract:
    address: str
    block: int
    tx_hash: str
    artifact_sha256: str
    code_hash: str


@dataclass(frozen=True)
class Manifest:
    chain_id: int
    rpc_url: str
    deployment_block: int
    deployer: str
    operator: str
    contracts: dict[str, DeployedContract]
    dev_chain: bool
    confirmations: int = 0
    gas_price: int = 0
    format: str = FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def address(self, name: str) -> str:
        try:
            return self.contracts[name].address
        except KeyError:
            raise ConfigError(f"the deployment manifest has no {name} contract") from None

    @property
    def forwarder(self) -> str | None:
        """The ERC-2771 forwarder PartLedger and EvidenceLedger trust; None in a manifest written before there was one
        (its ledgers take only direct calls)."""
        entry = self.contracts.get(FORWARDER)
        return entry.address if entry is not None else None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def save_manifest(manifest: Manifest, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(manifest.to_json())
    temporary.replace(path)


def load_manifest(path: Path) -> Manifest:
    """The manifest at `path`; ConfigError (one line) when it is missing or malformed."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no deployment manifest at {path} (run `partledger devnet up` or `partledger deploy`)") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"unreadable deployment manifest {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(f"{path} is not a {FORMAT} manifest")
    try:
        contracts = {name: DeployedContract(**entry) for name, entry in data["contracts"].items()}
        return Manifest(**{**data, "contracts": contracts})
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"deployment manifest {path} is incomplete: {exc}") from None
