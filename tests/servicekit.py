"""The whole write path in a test: site keystores registered on the live Anvil, the indexer following in a thread,
the service built by create_app with its submitter, and helpers to call it and wait for commands."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from indexer import migrate as index_migrate
from indexer.runner import Indexer, IndexerConfig
from indexer.sink import Sink
from indexer.source import JsonRpcSource
from ledger_service.app import create_app
from ledger_service.auth import create_api_key
from ledger_service.settings import ServiceSettings
from ledger_service.vault import write_key_file
from partledger.db import make_engine
from partledger.ids import ascii32
from partledger.manifest import Manifest, save_manifest
from tests.chainkit import Ledger
from wallets.keystore import create_keystore

PASSPHRASE = "test-keystore-passphrase-5d1c"
TEST_SCRYPT_N = 1 << 4  # the stack's keystores: a service start opens nine of them, and the crash tests start it hundreds of times

T = TypeVar("T")


@dataclass
class Stack:
    ledger: Ledger
    workdir: Path
    index_db_url: str
    service_db_url: str
    site_keys: dict[str, str] = field(default_factory=dict)  # org name -> address of its service-held key
    api_keys: dict[str, str] = field(default_factory=dict)  # org name -> API key
    client: TestClient | None = None

    @property
    def keys_dir(self) -> Path:
        return self.workdir / "keys"

    @property
    def manifest_path(self) -> Path:
        return self.workdir / "manifest.json"

    def settings(self, **overrides: Any) -> ServiceSettings:
        return ServiceSettings(
            manifest=self.manifest_path,
            index_db_url=self.index_db_url,
            service_db_url=self.service_db_url,
            keys_dir=self.keys_dir,
            keystore_passphrase=PASSPHRASE,
            vin_key_file=self.workdir / "vin.key",
            # A test's few requests go at once: its stack polls often, and relays a part of a batch without waiting
            # for more (tests/test_custodial_relay.py tests the linger itself; the benchmarks run the default).
            **{"submit_interval": 0.02, "relay_linger": 0.0, **overrides},
        )

    def env(self) -> dict[str, str]:
        """The same settings as environment variables, for a service run as a real process."""
        return {
            "PARTLEDGER_MANIFEST": str(self.manifest_path),
            "PARTLEDGER_INDEX_DB_URL": self.index_db_url,
            "PARTLEDGER_SERVICE_DB_URL": self.service_db_url,
            "PARTLEDGER_KEYS_DIR": str(self.keys_dir),
            "PARTLEDGER_KEYSTORE_PASSPHRASE": PASSPHRASE,
            "PARTLEDGER_VIN_KEY_FILE": str(self.workdir / "vin.key"),
            "PARTLEDGER_SUBMIT_INTERVAL": "0.02",
            "PARTLEDGER_RELAY_LINGER": "0",
        }

    def headers(self, org: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_keys[org]}", **extra}


def at_test_strength(keystore: Path, account: LocalAccount) -> None:
    """Re-encrypts a keystore with scrypt at TEST_SCRYPT_N: nine keys at the devnet's light strength cost a service
    start about a tenth of a second of CPU, which the write-path crash tests would pay two hundred times."""
    keystore.write_text(json.dumps(Account.encrypt(account.key, PASSPHRASE, kdf="scrypt", iterations=TEST_SCRYPT_N)))


def prepare_stack(ledger: Ledger, workdir: Path, index_db_url: str, service_db_url: str) -> Stack:
    """Keystores for one service-held site key per organisation (registered on chain by the operator), the manifest
    with the node's URL, a VIN key, migrated databases and one API key per organisation."""
    stack = Stack(ledger, workdir, index_db_url, service_db_url)
    for name, org in ledger.orgs.items():
        account = create_keystore(stack.keys_dir / name / "service-site.json", PASSPHRASE, light=True)
        at_test_strength(stack.keys_dir / name / "service-site.json", account)
        ledger.act(ledger.operator, ledger.registry.functions.addSiteKey(org.id, account.address, ascii32("service-site")))
        stack.site_keys[name] = account.address
    save_manifest(Manifest(**{**ledger.manifest.__dict__, "rpc_url": ledger.w3.provider.endpoint_uri}), stack.manifest_path)
    write_key_file(workdir / "vin.key")
    index_migrate.upgrade(make_engine(index_db_url))
    from ledger_service import migrate as service_migrate

    service_engine = make_engine(service_db_url)
    service_migrate.upgrade(service_engine)
    stack.api_keys = {name: create_api_key(service_engine, org_id=org.id) for name, org in ledger.orgs.items()}
    return stack


class IndexerThread:
    """The indexer following the chain in a background thread (in-process, as `partledger index` would)."""

    def __init__(self, ledger: Ledger, db_url: str) -> None:
        self.indexer = Indexer(
            source=JsonRpcSource(ledger.w3.provider.endpoint_uri),
            sink=Sink(make_engine(db_url), ledger.manifest.chain_id),
            manifest=ledger.manifest,
            config=IndexerConfig(poll_interval=0.05),
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.indexer.run, kwargs={"stop": self._stop.is_set}, daemon=True)

    def __enter__(self) -> IndexerThread:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def wait_for(self, block: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.indexer.sink.state()
            if state is not None and state.block_number >= block:
                return
            time.sleep(0.02)
        raise TimeoutError(f"indexer did not reach block {block}")


@contextmanager
def running_service(stack: Stack, **overrides: Any) -> Iterator[TestClient]:
    """The service (with its submitter thread) and the indexer, both running, for the duration of the block; the
    block starts once the mirror holds the chain as it was at the start. The API authenticates a key against the
    mirror (its organisation active, its site key registered), and a mirror still catching up with a long session
    chain answered a test's first post 401: the service had started faster than the indexer read the chain."""
    head = stack.ledger.w3.eth.block_number
    with IndexerThread(stack.ledger, stack.index_db_url) as indexer, TestClient(create_app(stack.settings(**overrides))) as client:
        stack.client = client
        client.indexer = indexer  # type: ignore[attr-defined]
        indexer.wait_for(head, timeout=120)
        yield client


def wait_command(stack: Stack, org: str, command_id: str, *, until: tuple[str, ...] = ("confirmed", "rejected"), timeout: float = 60.0) -> dict[str, Any]:
    """Polls GET /v1/commands/{id} until its status is one of `until`; then waits for the indexer to have its block."""
    assert stack.client is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = stack.client.get(f"/v1/commands/{command_id}", headers=stack.headers(org)).json()
        if view["status"] in until:
            if view["status"] == "confirmed" and view["block"] is not None:
                stack.client.indexer.wait_for(view["block"])  # type: ignore[attr-defined]
            return view
        time.sleep(0.02)
    raise TimeoutError(f"command {command_id} still {view['status']} after {timeout}s")


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 30.0, *, ignoring: tuple[type[Exception], ...] = ()) -> T:
    """Polls `predicate` until it returns something truthy, and returns that; an exception of a type in `ignoring`
    counts as not yet (a database that is down for part of a test)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except ignoring:
            pass
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
