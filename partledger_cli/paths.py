"""Where the devnet keeps its state (a light module: the indexer's command imports it without web3)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from partledger.artifacts import REPO_ROOT

DEVNET_DIR = REPO_ROOT / "hardhat-free-devnet"


@dataclass(frozen=True)
class DevnetPaths:
    run: Path

    @property
    def pid(self) -> Path:
        return self.run / "anvil.pid"

    @property
    def log(self) -> Path:
        return self.run / "anvil.log"

    @property
    def manifest(self) -> Path:
        return self.run / "manifest.json"

    @property
    def consortium(self) -> Path:
        return self.run / "consortium.json"

    @property
    def keys(self) -> Path:
        return self.run / "keys"

    @property
    def passphrase(self) -> Path:
        return self.run / "passphrase"


def default_paths() -> DevnetPaths:
    return DevnetPaths(Path(os.environ.get("PARTLEDGER_DEVNET_DIR", DEVNET_DIR / "run")))
