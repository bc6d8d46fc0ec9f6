"""Test kit for labels and verification: signing labels with the consortium's dev keys, a module-wide live stack
(chain snapshot, indexer, service) and helpers to scan as a phone or an app would."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from labels.digital_link import build_uri
from labels.signature import label_domain, sign_label
from partledger.ids import ascii32
from tests.chainkit import Ledger, dev_account, revert_to, snapshot
from tests.servicekit import Stack, prepare_stack, running_service
from wallets.signer import LocalSigner

RESOLVER = "http://testserver"
JSON = {"Accept": "application/json"}
BROWSER_ZH = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
BROWSER_EN = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "en-GB,en;q=0.9"}
BEIJING = (39.9, 116.4)
GUANGZHOU = (23.1, 113.3)


@functools.cache
def dev_signer(address: str) -> LocalSigner:
    """The LocalSigner of one of Anvil's dev accounts, found by address."""
    for index in range(60):
        account = dev_account(index)
        if account.address == address:
            return LocalSigner(account)
    raise LookupError(address)


def label_uri(ledger: Ledger, *, gtin: str, serial: str, key: str | None, resolver: str = RESOLVER) -> str:
    """The Digital Link of a label signed by the dev key `key` (None: no signature)."""
    domain = label_domain(chain_id=ledger.manifest.chain_id, part_ledger=ledger.manifest.address("PartLedger"))
    signature = None if key is None else sign_label(dev_signer(key), domain, gtin=gtin, serial=serial)
    return build_uri(resolver, gtin=gtin, serial=serial, signature=signature)


def forged_uri(ledger: Ledger, *, gtin: str, serial: str) -> str:
    """A label signed by a key nobody registered."""
    from eth_account import Account

    domain = label_domain(chain_id=ledger.manifest.chain_id, part_ledger=ledger.manifest.address("PartLedger"))
    return build_uri(RESOLVER, gtin=gtin, serial=serial, signature=sign_label(LocalSigner(Account.create()), domain, gtin=gtin, serial=serial))


def target(uri: str) -> str:
    """The path and query of a URI, as the test client requests it."""
    parts = urlsplit(uri)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def caught_up(client: TestClient, ledger: Ledger) -> None:
    client.indexer.wait_for(ledger.w3.eth.block_number)  # type: ignore[attr-defined]


def register(ledger: Ledger, key: str, *, gtin: str, lot: str, serials: list[str]) -> None:
    ledger.act(key, ledger.parts.functions.registerParts(int(gtin), ascii32(lot), [ascii32(s) for s in serials]))


@contextmanager
def live_stack(ledger: Ledger, workdir: Path, **overrides: Any) -> Iterator[tuple[Stack, TestClient]]:
    """A stack on SQLite over the session's chain, for a whole module: rolled back to the chain as it was after."""
    snapshot_id = snapshot(ledger.w3)
    try:
        stack = prepare_stack(ledger, workdir, f"sqlite:///{workdir / 'index.db'}", f"sqlite:///{workdir / 'service.db'}")
        with running_service(stack, **overrides) as client:
            caught_up(client, ledger)
            yield stack, client
    finally:
        revert_to(ledger.w3, snapshot_id)
