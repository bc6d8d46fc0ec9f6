"""`partledger submit`: the submitter as a process of its own, beside API processes that only accept commands
(`partledger serve` with PARTLEDGER_SUBMITTER=false). Settings come from the PARTLEDGER_* environment variables, as
for `serve`.

On PostgreSQL any number of them run at once and share the site keys out (ledger_service/signer_leases.py); the
survivors take over a dead one's keys. On SQLite one runs at a time: another waits as a standby and takes over when
the first ends. The relayer (PARTLEDGER_RELAYER_KEYS_DIR) runs in an API process that leads it, or as `partledger relay`.

The service (SQLAlchemy, web3) is imported inside the command, so that `partledger --help` starts without it.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated, Any

import typer


def submit_command(
    log_format: Annotated[str, typer.Option(help="json: one JSON object per line; or text")] = "json",
) -> None:
    """Run the submitter until SIGTERM or Ctrl-C: it packs, signs and sends the outbox's commands and follows them to
    confirmation (settings from PARTLEDGER_* environment variables, as `serve`)."""

    from ledger_service import migrate
    from ledger_service.app import build_submitter, key_refresher, load_signers, run_as_leader
    from partledger.chain import web3_for
    from partledger.db import is_sqlite, make_engine
    from partledger.errors import ConfigError
    from partledger.manifest import load_manifest

    settings = worker_settings(log_format)
    manifest = load_manifest(settings.manifest)
    engine = make_engine(settings.service_db_url, durable=True)
    migrate.upgrade(engine)
    signers = load_signers(settings, manifest)
    if not signers:
        raise ConfigError("no site keys to sign with: set PARTLEDGER_KEYS_DIR (and the keystore passphrase)")
    w3 = web3_for(settings.rpc_url or manifest.rpc_url)
    submitter = build_submitter(settings, manifest=manifest, engine=engine, w3=w3, signers=signers, refresh_keys=key_refresher(settings, manifest, signers))
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        if is_sqlite(settings.service_db_url):
            run_as_leader(submitter, engine, stop)
        else:
            submitter.run(stop)
    finally:
        engine.dispose()


def worker_settings(log_format: str) -> Any:
    """The service's settings (PARTLEDGER_* variables) for a process beside `serve` (`submit`, `relay`), with its
    logging configured; a BadParameter or a one-line ConfigError otherwise."""
    from pydantic import ValidationError

    from ledger_service.settings import ServiceSettings
    from partledger.errors import ConfigError
    from partledger.jsonlog import configure_logging

    try:
        configure_logging(log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None
    try:
        return ServiceSettings()  # type: ignore[call-arg]
    except ValidationError as exc:
        wrong = "; ".join(f"PARTLEDGER_{'_'.join(map(str, error['loc'])).upper()}: {error['msg']}" for error in exc.errors())
        raise ConfigError(f"the service's settings are incomplete or wrong: {wrong}") from None
