"""`partledger edge`: the edge agent at a site that keeps its own key (wallets.edge), and its status.

The agent, the store, FastAPI, uvicorn and eth-account are imported inside the commands, so that `partledger
--help` starts without them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from wallets.edge.pages import PageKit

edge_app = typer.Typer(help="The edge agent: a site's own key, a local queue and API, relaying to the cloud when it can.", no_args_is_help=True)


@edge_app.command("run")
def edge_run_command(
    site: Annotated[str, typer.Option(help="the site's name (shown in status)")],
    keystore: Annotated[Path, typer.Option(help="v3 keystore of the site key: it signs here and never leaves")],
    cloud: Annotated[str, typer.Option(help="the cloud service's base URL, e.g. https://ledger.example.com")],
    api_key: Annotated[str, typer.Option(envvar="PARTLEDGER_EDGE_API_KEY", help="the organisation's API key for the cloud (or PARTLEDGER_EDGE_API_KEY)")],
    manifest: Annotated[Path, typer.Option(help="deployment manifest: the forwarder, PartLedger and registry addresses")] = Path("hardhat-free-devnet/run/manifest.json"),
    rpc: Annotated[Optional[str], typer.Option(help="JSON-RPC URL for the chain reads (nonce, EIP-712 domain); default: the manifest's")] = None,
    db: Annotated[Path, typer.Option(help="the agent's SQLite queue and view")] = Path("edge.db"),
    host: Annotated[str, typer.Option(help="address of the local API")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port of the local API")] = 8600,
    passphrase_file: Annotated[Optional[Path], typer.Option(help="secret file with the keystore passphrase (else PARTLEDGER_KEYSTORE_PASSPHRASE[_FILE])")] = None,
    batch_size: Annotated[int, typer.Option(help="requests per POST /v1/relay", min=1, max=1000)] = 100,
    sync_interval: Annotated[float, typer.Option(help="seconds between two syncs of the view and the nonce", min=0.1)] = 10.0,
) -> None:
    """Run the edge agent: the local API on HOST:PORT, and the relay loop towards the cloud."""
    import logging
    import threading

    import uvicorn

    from partledger.artifacts import FORWARDER
    from partledger.errors import ConfigError
    from partledger.manifest import load_manifest
    from wallets.edge.agent import EdgeAgent, EdgeConfig, Refusal
    from wallets.edge.local_api import create_edge_app
    from wallets.edge.queue import EdgeStore
    from wallets.keystore import load_keystore, read_passphrase

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log = logging.getLogger("partledger.edge")
    key = load_keystore(keystore, read_passphrase(passphrase_file))
    deployment = load_manifest(manifest)
    if deployment.forwarder is None:
        raise ConfigError(f"the deployment of {manifest} has no {FORWARDER}: its ledgers take no relayed requests")
    config = EdgeConfig(
        site=site, cloud_url=cloud, api_key=api_key, rpc_url=rpc or deployment.rpc_url, part_ledger=deployment.address("PartLedger"),
        forwarder=deployment.forwarder, registry=deployment.address("ConsortiumRegistry"), batch_size=batch_size, sync_interval=sync_interval,
    )  # fmt: skip
    store = EdgeStore(db)
    try:
        agent = EdgeAgent(store=store, key=key, config=config)
    except Refusal as refusal:
        raise ConfigError(refusal.message) from None
    log.info("edge agent of site %s (key %s): queue %s, local API on %s:%d, cloud %s", site, key.address, db, host, port, cloud)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), name="edge-relay", daemon=True)
    loop.start()
    try:
        uvicorn.run(create_edge_app(agent, edge_page_kit()), host=host, port=port, log_level="warning", ws="none")
    finally:
        stop.set()
        loop.join(timeout=15)
        store.close()


def edge_page_kit() -> PageKit:
    """What the edge's local pages share with the member console (wallets may not import it; the CLI may): its
    message catalogue, its stylesheet, and its reading of a part id or a label's Digital Link URI."""
    from ledger_service.console.i18n import default_catalogue
    from ledger_service.console.web import STATIC_DIR
    from ledger_service.part_refs import parse_part_ref
    from partledger.errors import ValidationError
    from wallets.edge.agent import Refusal
    from wallets.edge.pages import PageKit

    def read_part(text: str) -> str:
        try:
            named = parse_part_ref(text)
        except ValidationError as exc:
            raise Refusal(422, exc.code, str(exc)) from None
        if not isinstance(named, bytes):
            raise Refusal(422, "unreadable", "a part is named by its id (0x…) or a Digital Link URI")
        return "0x" + named.hex()

    return PageKit(catalogue=default_catalogue(), static_dir=STATIC_DIR, read_part=read_part)


@edge_app.command("status")
def edge_status_command(
    db: Annotated[Path, typer.Option(help="the agent's SQLite queue")] = Path("edge.db"),
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object instead of lines")] = False,
) -> None:
    """Queue depth, the oldest unsent request and the last sync, read from the agent's database (running or not)."""
    from partledger.errors import ConfigError
    from wallets.edge.queue import EdgeStore

    if not db.exists():
        raise ConfigError(f"no edge agent database at {db}")
    store = EdgeStore(db)
    try:
        summary = store.summary()
    finally:
        store.close()
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    counts = summary["counts"]
    print(f"site            {summary['site']} ({summary['signer']}, organisation {summary['organisation']})")
    print(f"queue depth     {summary['queue_depth']} (queued {counts['queued']}, relayed {counts['relayed']}; confirmed {counts['confirmed']}, failed {counts['failed']})")
    oldest = summary["oldest_unsent"]
    if oldest is None:
        print("oldest unsent   none")
    else:
        print(f"oldest unsent   {oldest['id']} ({oldest['kind']}, nonce {oldest['nonce']}, queued {_when(oldest['queued_at'])}, {oldest['age_seconds']:.0f}s ago)")
    if summary["last_sync"] is None:
        print("last sync       never")
    else:
        print(f"last sync       {_when(summary['last_sync'])} (view at block {summary['view_block']})")
    print(f"link            {summary['link']}")
    for failure in summary["recent_failures"]:
        reason = failure["reason"] or {}
        print(f"failed          {failure['id']} ({failure['kind']}, nonce {failure['nonce']}): {reason.get('error') or reason.get('code')}: {reason.get('message') or reason.get('args')}")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
