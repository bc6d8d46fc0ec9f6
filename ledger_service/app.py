"""create_app(settings): the whole FastAPI service, built from its settings and nothing created at import time."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import AsyncIterator

import requests
from fastapi import FastAPI
from sqlalchemy.engine import Engine
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from web3 import Web3

from ledger_service import migrate
from ledger_service.deps import Services, settled_heap
from ledger_service.errors import install_error_handlers
from ledger_service.outbox import Outbox
from ledger_service.evidence import Notary
from ledger_service.routes import evidence as evidence_routes
from ledger_service.routes import queries, writes
from ledger_service.routes import resolver
from ledger_service.routes import proofs
from ledger_service.routes import containment as containment_routes
from ledger_service.audit import install_audit_log
from ledger_service.command_stages import MirrorWatch
from ledger_service.key_figures import BlockTimes
from ledger_service.metrics import install_metrics
from ledger_service.epcis.routes import install_epcis
from ledger_service.notifications import routes as notification_routes
from ledger_service.console import install_console
from ledger_service.schemas import keep_documented_bodies
from ledger_service.settings import ServiceSettings
from ledger_service.custodial_relay import CustodialRelayConfig
from ledger_service.submitter import Submitter, SubmitterConfig
from ledger_service.relay import RelayDesk
from ledger_service.relayer import Relayer, RelayerConfig
from ledger_service.replica import read_replica
from ledger_service.routes import relay as relay_routes
from ledger_service.vault import Vault
from ledger_service.signer_leases import SignerLeases
from partledger.db import is_sqlite, make_engine
from partledger.dblock import ExclusiveLock, LockHeld
from partledger.artifacts import load_artifact
from partledger.deploy import dev_key_addresses
from partledger.eip712 import read_domain
from partledger.errors import ConfigError, PartLedgerError
from partledger.manifest import Manifest, load_manifest
from partledger.chain import web3_for
from partledger.rpc import rpc_session
from wallets.keystore import read_passphrase
from wallets.rotation import list_keystores
from wallets.signer import LocalSigner, Signer

log = logging.getLogger("partledger.service")
LEADER_RETRY_SECONDS = 3.0
RECURSION_LIMIT = 5_000
KEY_REFRESH_SECONDS = 5.0  # how often a request naming a site without a held key may look for new keystores


class ChainHead:
    """The node's head block, asked with a short timeout (health must answer even when the node is down)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._session = rpc_session(url)

    def __call__(self) -> int | None:
        try:
            reply = self._session.post(self._url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}, timeout=2)
            return int(reply.json()["result"], 16)
        except (requests.RequestException, ValueError, KeyError):
            return None


def create_app(settings: ServiceSettings) -> FastAPI:
    # Importing web3 (its py_ecc) raises the recursion limit to 100,000, deep enough for a nested JSON body to
    # overflow the C stack and kill the process: bring it back to where the parser fails cleanly instead.
    sys.setrecursionlimit(min(sys.getrecursionlimit(), RECURSION_LIMIT))
    manifest = load_manifest(settings.manifest)
    rpc_url = settings.rpc_url or manifest.rpc_url
    services = Services(
        settings=settings,
        manifest=manifest,
        index_engine=make_engine(settings.index_db_url),
        service_engine=make_engine(settings.service_db_url, durable=True),
        head=ChainHead(rpc_url),
        block_time=BlockTimes(rpc_url),
    )
    services.replica = read_replica(settings, services.index_engine)  # the verify tier's reads (its lifespan runs the monitor)
    migrate.upgrade(services.service_engine)
    signers = load_signers(settings, manifest)
    if signers:
        refresh_keys = key_refresher(settings, manifest, signers)
        services.outbox = Outbox(
            service_engine=services.service_engine, index_engine=services.index_engine, signers=signers, max_parts_per_tx=settings.max_parts_per_tx,
            refresh_keys=refresh_keys,
        )
    if settings.vin_key_file is not None:
        services.vault = Vault.from_key_file(settings.vin_key_file)
    w3 = web3_for(rpc_url)
    if services.outbox is not None:
        evidence = w3.eth.contract(address=manifest.address("EvidenceLedger"), abi=load_artifact("EvidenceLedger").abi)
        services.notary = Notary(outbox=services.outbox, signers=signers, read_domain=lambda: read_domain(evidence))
    submitter = None
    if signers and settings.submitter:
        submitter = build_submitter(settings, manifest=manifest, engine=services.service_engine, w3=w3, signers=signers, refresh_keys=refresh_keys)

    relayer = None
    # An API process that leaves relaying to `partledger relay` (PARTLEDGER_RELAYER=false) takes relayed requests when
    # a relayer's keys are configured, without opening them.
    relayer_keys = load_relayer_keys(settings, manifest) if settings.relayer else {}
    relaying = bool(relayer_keys) or (not settings.relayer and settings.relayer_keys_dir is not None)
    if relaying and manifest.forwarder is not None:  # a manifest from before the forwarder: direct calls only
        services.relay = RelayDesk(
            service_engine=services.service_engine, index_engine=services.index_engine, manifest=manifest, w3=w3,
            max_request_gas=settings.relay_max_request_gas,
        )  # fmt: skip
        if settings.relayer:
            config = RelayerConfig(
                batch_size=settings.relay_batch_size, max_in_flight=settings.relay_max_in_flight, interval=settings.submit_interval,
                linger=settings.relay_linger,
            )
            relayer = Relayer(engine=services.service_engine, w3=w3, keys=relayer_keys, manifest=manifest, config=config)

    mirror_watch = MirrorWatch(service_engine=services.service_engine, index_engine=services.index_engine, chain_id=manifest.chain_id)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if submitter is not None:
            thread = threading.Thread(target=run_as_leader, args=(submitter, services.service_engine, stop), name="submitter", daemon=True)
            thread.start()
        relay_thread = None
        if relayer is not None:
            relay_thread = threading.Thread(target=run_as_leader, args=(relayer, services.service_engine, stop, "relayer"), name="relayer", daemon=True)
            relay_thread.start()
        if epcis_worker is not None:
            epcis_worker.start()
        stages = threading.Thread(target=run_as_leader, args=(mirror_watch, services.service_engine, stop, "stages"), name="mirror-watch", daemon=True)
        stages.start()  # every process may: one at a time marks the commands the mirror shows (the latency metrics)
        with settled_heap():
            yield
        stop.set()
        stages.join(timeout=10)
        if epcis_worker is not None:
            epcis_worker.stop()
        if thread is not None:
            thread.join(timeout=10)
        if relay_thread is not None:
            relay_thread.join(timeout=10)
        services.index_engine.dispose()
        services.service_engine.dispose()

    app = FastAPI(
        title="PartLedger",
        version="1",
        description="Serialised auto parts, custody, recalls and trade evidence on a permissioned EVM chain.",
        lifespan=lifespan,
        telemetry=settings.telemetry_config(),
    )
    app.state.services = services
    install_error_handlers(app)
    keep_documented_bodies(app)
    app.include_router(resolver.router)  # first: the public resolver is the hottest path, matched before the rest
    app.include_router(relay_routes.router)  # /v1/relay: requests signed by sites' own keys (issue 17), the busiest post
    app.include_router(queries.router)
    app.include_router(writes.router)
    app.include_router(evidence_routes.router)
    app.include_router(proofs.router)
    app.include_router(containment_routes.reads)  # /v1/units, recall impact through containers (issue 15)
    app.include_router(containment_routes.writes)  # pack, unpack, assemble, disassemble, remanufacture
    app.include_router(notification_routes.router)  # /v1/notifications: quality notifications
    epcis_worker = install_epcis(app, services)  # /epcis: the EPCIS 2.0 REST binding; /v1/gs1: members' GS1 identities
    install_console(app)  # /console: the member console's pages, static files and HTML error pages
    app.add_middleware(resolver.ResolverFastPath)  # innermost: the audit log and the block header see it as any route
    install_audit_log(app)
    app.add_middleware(BlockHeader)
    install_metrics(app, services)  # outermost: GET /metrics, X-Request-ID, every request counted and logged
    return app


class BlockHeader:
    """Every answer to a request that read the mirror carries X-PartLedger-Block: the block its data reflects (set in
    request.state.block by the route or its dependency). Pure ASGI: the header is added to the response's start
    message as it passes, at the cost of a dictionary lookup (BaseHTTPMiddleware costs a task and a queue a request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the dictionary behind request.state, shared with the routes

        async def send_with_block(message: Message) -> None:
            if message["type"] == "http.response.start":
                block = state.get("block")
                if block is not None:
                    MutableHeaders(scope=message)["X-PartLedger-Block"] = str(block)
            await send(message)

        await self.app(scope, receive, send_with_block)


def load_signers(settings: ServiceSettings, manifest: Manifest, known: Mapping[str, Signer] | None = None) -> dict[str, Signer]:
    """The site keys in settings.keys_dir not in `known`, opened with the keystore passphrase. Public development
    keys are refused unless the manifest describes a development chain."""
    if settings.keys_dir is None:
        return {}
    if settings.keystore_passphrase is not None:
        passphrase = settings.keystore_passphrase.get_secret_value()
    else:
        passphrase = read_passphrase(settings.keystore_passphrase_file)
    signers: dict[str, Signer] = {}
    for keystore in list_keystores(settings.keys_dir):
        if keystore.org_slug is None or (known is not None and keystore.address in known):
            continue  # not a site key (the operator's), or already open
        if keystore.address in dev_key_addresses() and not manifest.dev_chain:
            raise ConfigError(f"refusing the public development key {keystore.address} on chain {manifest.chain_id}, not a dev chain")
        signers[keystore.address] = LocalSigner.from_keystore(keystore.path, passphrase)
    log.info("signing with %d %ssite keys", len(signers), "more " if known else "")
    return signers


def load_relayer_keys(settings: ServiceSettings, manifest: Manifest) -> dict[str, Signer]:
    """The relayer's keys: every v3 keystore in settings.relayer_keys_dir, opened with the keystore passphrase. They
    pay for and send the batches, and hold no role. Public development keys only on a development chain."""
    if settings.relayer_keys_dir is None:
        return {}
    if settings.keystore_passphrase is not None:
        passphrase = settings.keystore_passphrase.get_secret_value()
    else:
        passphrase = read_passphrase(settings.keystore_passphrase_file)
    keys: dict[str, Signer] = {}
    for path in sorted(settings.relayer_keys_dir.glob("*.json")):
        signer = LocalSigner.from_keystore(path, passphrase)
        if signer.address in dev_key_addresses() and not manifest.dev_chain:
            raise ConfigError(f"refusing the public development key {signer.address} as a relayer on chain {manifest.chain_id}, not a dev chain")
        keys[signer.address] = signer
    if not keys:
        raise ConfigError(f"no relayer keystore (*.json) in {settings.relayer_keys_dir}")
    log.info("relaying with %d relayer key(s)", len(keys))
    return keys


def key_refresher(settings: ServiceSettings, manifest: Manifest, signers: dict[str, Signer]) -> Callable[..., bool]:
    """A function that opens keystores added to the key directory since (a site's replacement key after
    `partledger wallet rotate`) into `signers`, in place, so that the service signs with them without a restart;
    it returns whether it found any. Unless forced (the submitter, once per revoked key), at most one look every
    few seconds: a request naming a site the service holds no key for must not cost a directory scan each."""
    lock = threading.Lock()
    last = [0.0]

    def refresh(*, force: bool = False) -> bool:
        with lock:
            if not force and time.monotonic() - last[0] < KEY_REFRESH_SECONDS:
                return False
            last[0] = time.monotonic()
            try:
                found = load_signers(settings, manifest, known=signers)
            except (PartLedgerError, OSError, ValueError) as exc:
                log.warning("cannot read new site keys: %s", exc)
                return False
            signers.update(found)  # one C-level update: readers iterate copies (sorted) or test membership
            return bool(found)

    return refresh


def build_submitter(
    settings: ServiceSettings, *, manifest: Manifest, engine: Engine, w3: Web3, signers: dict[str, Signer], refresh_keys: Callable[..., bool],
) -> Submitter:
    """The submitter of these settings. On PostgreSQL it shares the site keys out with the other submitter processes
    (`partledger submit`, signer_leases.py); on SQLite it signs with all of them, in the one process that leads."""
    return Submitter(
        engine=engine,
        w3=w3,
        signers=signers,
        refresh_keys=refresh_keys,
        manifest=manifest,
        config=SubmitterConfig(
            max_parts_per_tx=settings.max_parts_per_tx,
            max_in_flight_per_signer=settings.max_in_flight_per_signer,
            defer_seconds=settings.defer_seconds,
            interval=settings.submit_interval,
        ),
        leases=None if is_sqlite(settings.service_db_url) else SignerLeases(settings.service_db_url),
        relay=custodial_relay_config(settings, manifest),
    )


def custodial_relay_config(settings: ServiceSettings, manifest: Manifest) -> CustodialRelayConfig | None:
    """Whether custodial sites' single-part commands go through the relay (settings.custodial_relay; by default
    whenever a relayer's keys are configured, here or for `partledger relay`, and the manifest names a forwarder)."""
    wanted = settings.custodial_relay if settings.custodial_relay is not None else settings.relayer_keys_dir is not None
    if not wanted:
        return None
    if manifest.forwarder is None:
        if settings.custodial_relay:
            raise ConfigError("PARTLEDGER_CUSTODIAL_RELAY is set, but the deployment manifest names no forwarder")
        return None
    return CustodialRelayConfig(deadline=settings.custodial_relay_deadline, in_flight=settings.custodial_relay_in_flight)


def run_as_leader(submitter: Submitter | Relayer | MirrorWatch, engine: Engine, stop: threading.Event, name: str = "submitter") -> None:
    """Runs the submitter (or the relayer: `name`) while this process holds the database's lock of that name. Every
    other worker or replica serves the API only, and tries again every few seconds, so a new leader takes over when
    one dies."""
    standby = False
    while not stop.is_set():
        try:
            lock = ExclusiveLock(engine, name)
        except LockHeld:
            if not standby:  # once per wait: it may last as long as the leader
                log.info("another process runs the %s: this one waits as a standby", name)
                standby = True
            stop.wait(LEADER_RETRY_SECONDS)
            continue
        except Exception:  # noqa: BLE001 - the database may be down for a while; try again
            log.exception("cannot take the %s lock", name)
            stop.wait(LEADER_RETRY_SECONDS)
            continue
        standby = False
        try:
            log.info("this process runs the %s", name)
            submitter.run(stop, lock)
        finally:
            try:
                lock.release()
            except Exception:  # noqa: BLE001 - a lost database session released it already
                log.warning("the %s lock's session was lost; nothing to release", name)
