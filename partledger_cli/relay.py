"""`partledger relay`: the relayer as a process of its own, beside API processes that only accept relayed requests
(`partledger serve` with PARTLEDGER_RELAYER=false). Settings come from the PARTLEDGER_* environment variables, as for
`serve`; the relayer's keys are PARTLEDGER_RELAYER_KEYS_DIR's.

Inside an API process the relayer shares the GIL with up to 40 request threads: each of its JSON-RPC calls and SQL
statements waits its turn back, and under load its batches fell behind what the desk accepted. One relayer leads at a
time, through the database's "relayer" lock: another (or an API process with PARTLEDGER_RELAYER left true) waits as a
standby and takes over when the leader ends.
"""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer


def relay_command(
    log_format: Annotated[str, typer.Option(help="json: one JSON object per line; or text")] = "json",
) -> None:
    """Run the relayer until SIGTERM or Ctrl-C: it packs the requests sites signed (POST /v1/relay) into executeBatch
    transactions, sends them with the relayer's keys and follows each request to its verdict."""

    from ledger_service import migrate
    from ledger_service.app import load_relayer_keys, run_as_leader
    from ledger_service.relayer import Relayer, RelayerConfig
    from partledger.chain import web3_for
    from partledger.db import make_engine
    from partledger.errors import ConfigError
    from partledger.manifest import load_manifest
    from partledger_cli.submit import worker_settings

    settings = worker_settings(log_format)
    manifest = load_manifest(settings.manifest)
    if manifest.forwarder is None:
        raise ConfigError("the deployment manifest names no forwarder: there is nothing to relay")
    keys = load_relayer_keys(settings, manifest)
    if not keys:
        raise ConfigError("no relayer keys: set PARTLEDGER_RELAYER_KEYS_DIR (and the keystore passphrase)")
    engine = make_engine(settings.service_db_url, durable=True)
    migrate.upgrade(engine)
    w3 = web3_for(settings.rpc_url or manifest.rpc_url)
    config = RelayerConfig(
        batch_size=settings.relay_batch_size, max_in_flight=settings.relay_max_in_flight, interval=settings.submit_interval,
        linger=settings.relay_linger,
    )
    relayer = Relayer(engine=engine, w3=w3, keys=keys, manifest=manifest, config=config)
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        run_as_leader(relayer, engine, stop, "relayer")
    finally:
        engine.dispose()
