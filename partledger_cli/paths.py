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
    def relayer_keys(self) -> Path:
        """The relayer's key: it sends the batches of requests that sites signed themselves (POST /v1/relay) and
        holds no role. Outside `keys`, whose folders are organisations' site keys."""
        return self.run / "relayer-keys"

    @property
    def passphrase(self) -> Path:
        return self.run / "passphrase"

    @property
    def chain_state(self) -> Path:
        """The chain, saved every second by the keeper (gzipped anvil_dumpState, replaced atomically)."""
        return self.run / "chain-state.json.gz"

    @property
    def lock(self) -> Path:
        return self.run.parent / f".{self.run.name}.lock"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"


def default_paths() -> DevnetPaths:
    return DevnetPaths(Path(os.environ.get("PARTLEDGER_DEVNET_DIR", DEVNET_DIR / "run")))
