"""The service's settings, from the environment (prefix PARTLEDGER_) or given to create_app."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARTLEDGER_", extra="forbid")

    manifest: Path  # the deployment manifest: chain id, contract addresses
    index_db_url: str  # the indexer's SQL mirror (read only here)
    service_db_url: str  # the service's own private tables: API keys, outbox, clear VINs
    rpc_url: Optional[str] = None  # default: the manifest's
    max_page_size: int = 1_000
    default_page_size: int = 100
