"""The service's private tables (never on chain, never in the indexer's mirror): API keys for now."""

from __future__ import annotations

from typing import Optional

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class ServiceTable(SQLModel, registry=registry(metadata=MetaData())):
    """Base of the service's tables, with their own metadata and migrations."""


SERVICE_METADATA = ServiceTable.metadata


class ApiKey(ServiceTable, table=True):
    """An organisation's API key. Only a SHA-256 of the secret is kept: keys are 256-bit random, so a slow hash
    would add nothing but latency."""

    __tablename__ = "api_keys"

    key_id: str = Field(primary_key=True, max_length=16)
    org_id: int = Field(index=True)
    secret_sha256: str = Field(max_length=64)
    label: str = ""
    sites: Optional[str] = None  # JSON list of site key addresses it may act through; None: every site of the org
    created_at: float
    revoked_at: Optional[float] = None
