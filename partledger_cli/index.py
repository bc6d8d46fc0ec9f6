"""`partledger index`: run the indexer (one writer per database), or rebuild the mirror from the chain alone.

The indexer and SQLAlchemy are imported inside the command, so that `partledger --help` starts without them.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from partledger.manifest import load_manifest
from partledger_cli.paths import default_paths


def default_db_url() -> str:
    return f"sqlite:///{default_paths().run / 'index.db'}"


def index_command(
    manifest: Annotated[Optional[Path], typer.Option(help="deployment manifest (default: the devnet's)")] = None,
    db: Annotated[Optional[str], typer.Option(help="database URL (default: sqlite in the devnet run directory)")] = None,
    rpc: Annotated[Optional[str], typer.Option(help="JSON-RPC URL (default: the manifest's)")] = None,
    confirmations: Annotated[Optional[int], typer.Option(help="blocks behind head (default: the manifest's)")] = None,
    finality_depth: Annotated[int, typer.Option(help="deepest reorganisation handled")] = 64,
    batch_blocks: Annotated[int, typer.Option(help="blocks per iteration at most")] = 2_000,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="drop the mirror and rebuild it from the chain")] = False,
    once: Annotated[bool, typer.Option("--once", help="catch up to the current head, then exit")] = False,
    log_format: Annotated[str, typer.Option(help="json: one JSON object per line; or text")] = "json",
) -> None:
    """Mirror the chain into SQL and keep following it (until Ctrl-C or SIGTERM)."""
    from indexer import migrate
    from indexer.runner import SQLITE_CACHE_MIB, Indexer, IndexerConfig, IndexerLock
    from indexer.sink import Sink
    from indexer.source import JsonRpcSource
    from partledger.db import make_engine

    from partledger.jsonlog import configure_logging

    try:
        configure_logging(log_format)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None
    loaded = load_manifest(manifest or default_paths().manifest)
    engine = make_engine(db or default_db_url(), sqlite_cache_mib=SQLITE_CACHE_MIB)
    lock = IndexerLock(engine)
    try:
        if rebuild:
            migrate.drop_all(engine)
        migrate.upgrade(engine)
        source = JsonRpcSource(rpc or loaded.rpc_url)
        config = IndexerConfig(
            confirmations=loaded.confirmations if confirmations is None else confirmations,
            finality_depth=finality_depth,
            batch_blocks=batch_blocks,
        )
        indexer = Indexer(source=source, sink=Sink(engine, loaded.chain_id), manifest=loaded, config=config)
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        until = source.head_number() - config.confirmations if once else None
        try:
            indexer.run(stop=lambda: bool(stopping), until_block=until, lock=lock)
        except KeyboardInterrupt:
            pass
        state = indexer.sink.state()
        if state is not None:
            typer.echo(f"indexed chain {loaded.chain_id} up to block {state.block_number}")
    finally:
        lock.release()


def main() -> None:
    """`partledger index` alone, without importing the rest of the CLI (web3, FastAPI): it restarts fast."""
    from partledger.errors import PartLedgerError

    try:
        typer.run(index_command)
    except PartLedgerError as exc:
        print(f"partledger: error: {exc}", file=sys.stderr)
        sys.exit(1)
