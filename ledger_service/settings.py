"""The service's settings, from the environment (prefix PARTLEDGER_) or given to create_app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PARTLEDGER_", extra="forbid")

    manifest: Path  # the deployment manifest: chain id, contract addresses, confirmations, gas price
    index_db_url: str  # the indexer's SQL mirror (read only here)
    # A PostgreSQL streaming replica of the mirror for the public verify tier's reads (ledger_service.replica); reads
    # go to the primary while it is down, or further behind than index_replica_max_lag seconds.
    index_replica_url: Optional[str] = None
    index_replica_max_lag: float = Field(default=5.0, gt=0)
    index_replica_check_interval: float = Field(default=1.0, gt=0)  # how often its monitor checks it (requests never do)
    service_db_url: str  # the service's own private tables: API keys, outbox, clear VINs
    rpc_url: Optional[str] = None  # default: the manifest's
    max_page_size: int = 1_000
    default_page_size: int = 100

    # Write path. Without a key directory the service only reads.
    keys_dir: Optional[Path] = None  # v3 keystores of the site keys the service signs with (<org>/<site>.json)
    keystore_passphrase: Optional[SecretStr] = None  # or keystore_passphrase_file
    keystore_passphrase_file: Optional[Path] = None
    vin_key_file: Optional[Path] = None  # base64 AES-256 key for clear VINs at rest, kept outside the database
    max_parts_per_tx: int = 200
    max_rows_per_request: int = 100_000
    max_body_bytes: int = 16 * 1024 * 1024
    max_in_flight_per_signer: int = 8
    submitter: bool = True  # run the submitter inside the service process
    submit_interval: float = 0.05
    defer_seconds: float = 30.0  # how long a command that would revert waits for in-flight transactions

    # The relay (POST /v1/relay): ForwardRequests that sites sign with their own keys, packed into the forwarder's
    # executeBatch transactions sent with the relayer's own keys (no role anywhere: they only carry signatures).
    # Without relayer keys the service relays nothing.
    relayer_keys_dir: Optional[Path] = None  # v3 keystores (*.json) of the relayer keys, opened with the keystore passphrase
    relayer: bool = True  # run the relayer inside the service process (the leader's, as the submitter)
    relay_batch_size: int = 100  # requests per executeBatch transaction
    relay_max_in_flight: int = 4  # batches per relayer key sent and not yet mined
    relay_linger: float = Field(default=0.2, ge=0)  # seconds the oldest request may wait for a full batch (RelayerConfig.linger)
    relay_max_request_gas: int = 5_000_000  # the most gas one request may offer its call
    relay_max_requests: int = 1_000  # requests per POST /v1/relay
    # Custodial sites' single-part commands signed as ForwardRequests with the site's key and relayed in batches with
    # other sites' requests (ledger_service.custodial_relay), rather than sent as transactions of the site's key, one
    # nonce after another. None: whenever relayer keys are configured (relayer_keys_dir) and the manifest names a
    # forwarder.
    custodial_relay: Optional[bool] = None
    custodial_relay_deadline: int = Field(default=3_600, ge=60)  # seconds a custodial request stays valid; it is signed again after
    custodial_relay_in_flight: int = Field(default=1_000, ge=1)  # a site's custodial requests handed to the relayer and not yet mined

    # Labels and consumer verification (the Digital Link resolver, /v1/scan).
    public_rate_limit: str = "60/minute"  # per client on the public endpoints: N/second|minute|hour (burst N)
    scan_key_file: Optional[Path] = None  # base64 key for client fingerprints; default: derived from vin_key_file

    # EPCIS: captured events wait at most this long for their organisation's next anchored batch.
    epcis_batch_seconds: float = 5.0
    # Documents of this many events or more are prepared (schema, hashes, identifiers) in worker processes, this many
    # (0: in the capture job's thread, always); ledger_service.epcis.preparing.
    epcis_prepare_processes: int = Field(default=1, ge=0, le=16)
    epcis_prepare_in_process_below: int = Field(default=1_000, ge=1)

    # The member console (/console). Its session cookie is Secure when the request came over TLS; behind a TLS
    # proxy that sets X-Forwarded-Proto, say so here (the header is otherwise ignored: a client could send it).
    console_trust_forwarded_proto: bool = False

    # Operations (ledger_service.metrics): GET /metrics in Prometheus's text format, for clients on this host only
    # unless a token is set (then `Authorization: Bearer <token>` from anywhere); one JSON log line per request
    # (logger partledger.http) carrying its X-Request-ID.
    metrics: bool = True
    metrics_token: Optional[SecretStr] = None
    request_log: bool = True

    # FastAPI's OpenTelemetry spans and metrics, for an SDK configured outside (opentelemetry-instrument, OTEL_*).
    # None: on when the environment configures OpenTelemetry. Off, requests skip its per-request check of the
    # providers (three environment reads: a tenth of a scan's own CPU).
    telemetry: Optional[bool] = None

    def telemetry_config(self) -> dict[str, bool]:
        """FastAPI(telemetry=...) for these settings."""
        on = self.telemetry if self.telemetry is not None else any(name.startswith("OTEL_") or name == "FASTAPI_OTEL_AUTO_CONFIGURE" for name in os.environ)
        return {} if on else {"tracing": False, "metrics": False, "logs": False}
