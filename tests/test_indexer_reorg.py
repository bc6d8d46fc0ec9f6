"""The indexer against chain reorganisations, on a dedicated Anvil node.

Hypothesis plays random interleavings of lifecycle, registry and evidence transactions, mined blocks, the
in-process indexer run a few steps or to the head, and reorganisations of depth 1 to 10: `anvil_reorg` with empty
new blocks, re-including a prefix of the orphaned transactions, or carrying fresh ones; `anvil_rollback`; and a
reorganisation landing between two reads of one indexer step. Whenever the indexer has caught up with the head,
the mirror must be the canonical chain's:

(a) the cursor and every stored block (hash, parent, time) are the node's, the stored window is contiguous, and
    every undo-log entry belongs to a stored block;
(b) no row references a transaction outside the canonical chain (receipt by hash, its block number and hash);
(c) every table equals an independent rebuild from the canonical chain's eth_getLogs: no event missing, none
    duplicated; every part row equals PartLedger.part(id), every organisation, site key and lot the contracts' views.

Some actions aim: they make a change of one kind, index it, then orphan it; a sink that counts what each rollback
undoes shows that the reorganisations did remove registrations, reopen shipments and installations, undo recalls and
restore organisations from the undo log. A reorganisation deeper than the finality depth must stop the indexer,
unhealthy with a clear message, and nothing may be written after it.

Reorganisations would wreck the session's shared chain, so this module runs its own Anvil node. Each example
starts from a snapshot of the deployed consortium with parts already in every state, and from an empty mirror.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection, Engine

from indexer import migrate
from indexer.runner import DeepReorg, Indexer, IndexerConfig
from indexer.sink import Sink
from indexer.source import BlockHeader, JsonRpcSource
from indexer.tables import INDEX_METADATA, IndexedBlock, Installation, Part, Recall, Shipment, SiteKey, UndoEntry
from partledger.anvil import AnvilConfig, AnvilNode
from tests.ports import free_port
from partledger.chain import connect
from partledger.db import make_engine
from partledger.rpc import rpc_session
from partledger.eip712 import Attestation, attestation_typed_data, read_domain
from partledger.ids import ascii32, part_id
from partledger.model import CUSTODY_ROLES, DocType, PartStatus, Role
from tests.chainkit import ANVIL_ACCOUNTS, GTIN_A, GTIN_B, Ledger, build_ledger, dev_account

pytestmark = [pytest.mark.chain, pytest.mark.heavy]

MAX_DEPTH = 10
FINALITY = MAX_DEPTH  # the random test's finality depth: its deepest reorganisations stand right on the limit
EXAMPLES = {"sqlite": 100, "postgresql": 100}
GAS = 3_000_000
DEADLINE = 2**32  # of every attestation: far ahead (the mirror's BIGINT column cannot take uint64 values above 2**63 - 1)
ZERO32 = bytes(32)
ZERO15 = bytes(15)

CUSTODY = int(CUSTODY_ROLES)
MANUFACTURER, DISTRIBUTOR, WORKSHOP = int(Role.MANUFACTURER), int(Role.DISTRIBUTOR), int(Role.WORKSHOP)
RECYCLER, REGULATOR, AUDITOR = int(Role.RECYCLER), int(Role.REGULATOR), int(Role.AUDITOR)
IN_STOCK, IN_TRANSIT, INSTALLED, QUARANTINED = PartStatus.IN_STOCK, PartStatus.IN_TRANSIT, PartStatus.INSTALLED, PartStatus.QUARANTINED

# Organisations whose roles and suspension the random plans may change; the others keep the lifecycle moving.
VOLATILE_ORGS = ("maker2", "workshop2", "recycler", "auditor", "regulator")
LOT_CODES = ("RL-1", "RL-2", "RL-3")

# What a rollback undid, over the whole module (printed at the end of each test; `pytest -s` shows it).
UNDONE: Counter[str] = Counter()


# ----------------------------------------------------------------------------------------------------------------
# The dedicated chain
# ----------------------------------------------------------------------------------------------------------------


class NodeRefused(Exception):
    """The node answered a JSON-RPC call with an error (a revert, for eth_estimateGas)."""


def _selector(signature: str) -> bytes:
    return function_signature_to_4byte_selector(signature)


class ReorgChain:
    """The dedicated Anvil node with the consortium deployed, a base state to return to, and raw JSON-RPC."""

    def __init__(self, node: AnvilNode, ledger: Ledger, base_parts: list[bytes]) -> None:
        self.node = node
        self.url = node.url
        self.ledger = ledger
        self.w3 = ledger.w3
        self.base_parts = base_parts
        self._session = rpc_session(self.url)
        self._snapshot = self.rpc("evm_snapshot")
        # No reorganisation goes below the snapshot: Anvil loses a snapshot whose block was replaced or rolled back.
        self.floor = self.head()

    def rpc(self, method: str, *params: Any) -> Any:
        answer = self._session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).json()
        if "error" in answer:
            raise NodeRefused(f"{method}: {answer['error'].get('message')}")
        return answer["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Answers to several calls in one JSON-RPC batch, in order."""
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": index, "method": method, "params": params} for index, (method, params) in enumerate(calls)]
        by_id = {answer["id"]: answer for answer in self._session.post(self.url, json=payload).json()}
        results = []
        for index, call in enumerate(calls):
            if "error" in by_id[index]:
                raise AssertionError(f"{call}: {by_id[index]['error']}")
            results.append(by_id[index]["result"])
        return results

    def receipt(self, tx_hash: str) -> dict[str, Any]:
        """The receipt of a sent transaction, once automine has mined it (Anvil mines just after answering)."""
        for _ in range(1_000):
            receipt = self.rpc("eth_getTransactionReceipt", tx_hash)
            if receipt is not None:
                return receipt
            time.sleep(0.002)
        raise AssertionError(f"transaction {tx_hash} not mined")

    def head(self) -> int:
        return int(self.rpc("eth_blockNumber"), 16)

    def blocks(self, numbers: list[int]) -> dict[int, dict[str, Any] | None]:
        answers = self.batch([("eth_getBlockByNumber", [hex(number), False]) for number in numbers])
        return dict(zip(numbers, answers))

    def reset(self) -> None:
        """Back to the base state (a snapshot is used up by reverting to it, so take the next one)."""
        assert self.rpc("evm_revert", self._snapshot) is True
        self._snapshot = self.rpc("evm_snapshot")

    def views(self, calls: list[tuple[str, bytes, list[str]]], block: int) -> list[tuple[Any, ...]]:
        """eth_call of (contract address, calldata, output types) in one batch, decoded."""
        answers = self.batch([("eth_call", [{"to": to, "data": "0x" + data.hex()}, hex(block)]) for to, data, _ in calls])
        return [decode(types, bytes.fromhex(answer[2:])) for (_, _, types), answer in zip(calls, answers)]


def view_part(chain: ReorgChain, pid: bytes) -> tuple[str, bytes, list[str]]:
    return chain.ledger.parts.address, _selector("part(bytes32)") + pid, ["uint8", "uint32", "uint32", "uint64", "bytes15", "bool"]


def view_organisation(chain: ReorgChain, org_id: int) -> tuple[str, bytes, list[str]]:
    return chain.ledger.registry.address, _selector("organisation(uint32)") + encode(["uint32"], [org_id]), ["uint16", "bool"]


def view_site_key(chain: ReorgChain, key: str) -> tuple[str, bytes, list[str]]:
    return chain.ledger.registry.address, _selector("siteKey(address)") + encode(["address"], [key]), ["uint32", "bytes32", "uint64", "uint64"]


def view_lot(chain: ReorgChain, lot: int) -> tuple[str, bytes, list[str]]:
    return chain.ledger.parts.address, _selector("lot(uint64)") + encode(["uint64"], [lot]), ["uint32", "bool"]


def view_organisation_count(chain: ReorgChain) -> tuple[str, bytes, list[str]]:
    return chain.ledger.registry.address, _selector("organisationCount()"), ["uint32"]


def tx_request(ledger: Ledger, sender: str, call: Any) -> dict[str, Any]:
    """A transaction request for Anvil to sign (by an unlocked dev key) from a bound contract call."""
    contract = next(c for c in (ledger.registry, ledger.parts, ledger.evidence) if c.address == call.address)
    data = contract.encode_abi(call.abi_element_identifier, args=list(call.args))
    return {"from": sender, "to": call.address, "data": data, "gas": hex(GAS), "gasPrice": "0x0"}


@cache
def _signer(index: int) -> Any:
    return dev_account(index)


def sign_attestation(ledger: Ledger, attested: Attestation, *keys: str) -> list[bytes]:
    """Both parties' signatures, by the dev accounts that are their site keys."""
    typed = attestation_typed_data(read_domain(ledger.evidence), attested)
    accounts = ledger.w3.eth.accounts
    return [bytes(_signer(accounts.index(key)).sign_typed_data(full_message=typed).signature) for key in keys]


def build_base_state(ledger: Ledger) -> list[bytes]:
    """Parts in every state a reorganisation can reopen: in transit, received, installed, quarantined; a document
    and a batch anchored. Returns the parts' ids."""
    orgs, functions, doc = ledger.orgs, ledger.parts.functions, keccak(text="base")
    maker, maker2, workshop, workshop2 = orgs["maker"], orgs["maker2"], orgs["workshop"], orgs["workshop2"]
    a = ledger.register(maker, [f"BASE-A{index}" for index in range(1, 9)], lot="BASE-1")
    b = ledger.register(maker2, [f"BASE-B{index}" for index in range(1, 5)], gtin=GTIN_B, lot="BASE-2")
    ledger.act(maker.key, functions.shipParts(a[0:2], orgs["warehouse"].id, doc))
    ledger.act(maker.key, functions.shipParts(a[2:5], workshop.id, doc))
    ledger.act(workshop.key, functions.receiveParts(a[2:5], doc))
    ledger.act(workshop.key, functions.installParts(a[2:4], [keccak(text="VIN-1"), keccak(text="VIN-2")], doc))
    ledger.act(maker.key, functions.shipParts(a[5:6], orgs["distributor"].id, doc))
    ledger.act(maker.key, functions.quarantineParts(a[6:7], doc))
    ledger.act(maker2.key, functions.shipParts(b[0:2], workshop2.id, doc))
    ledger.act(workshop2.key, functions.receiveParts(b[0:1], doc))
    ledger.act(workshop2.key, functions.installParts(b[0:1], [keccak(text="VIN-3")], doc))
    ledger.act(maker.key, ledger.evidence.functions.anchorBatch(keccak(text="base-batch"), 3, ascii32("labels")))
    distributor = orgs["distributor"]
    attested = Attestation(keccak(text="base-doc"), int(DocType.PURCHASE_ORDER), maker.id, distributor.id, ZERO32, ZERO32, keccak(text="n"), DEADLINE)
    signatures = sign_attestation(ledger, attested, maker.key, distributor.key)
    ledger.act(maker.key, ledger.evidence.functions.anchorDocument(attested.as_tuple(), *signatures))
    return a + b


@dataclass(frozen=True)
class ReorgAnvilConfig(AnvilConfig):
    """Anvil keeping every block's state in memory. With its default history (a bounded number of states in
    memory, older ones on disk), after a hundred-odd snapshot reverts and reorganisations of the same blocks it
    lost the whole state: no contract code at any block."""

    def arguments(self) -> list[str]:
        return [*super().arguments(), "--prune-history", "1000000"]


@pytest.fixture(scope="module")
def chain() -> Iterator[ReorgChain]:
    node = AnvilNode.start(ReorgAnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS))
    try:
        ledger = build_ledger(connect(node.url))
        base_parts = build_base_state(ledger)
        yield ReorgChain(node, ledger, base_parts)
    finally:
        node.stop()


# ----------------------------------------------------------------------------------------------------------------
# The indexer under test, with a source that can be interrupted and a sink that counts what rollbacks undo
# ----------------------------------------------------------------------------------------------------------------


class InterruptingSource:
    """The indexer's JSON-RPC source, able to run a callback (a reorganisation) right after its n-th next read."""

    def __init__(self, url: str) -> None:
        self._inner = JsonRpcSource(url)
        self._pending: tuple[int, Callable[[], None]] | None = None

    def interrupt_after(self, reads: int, callback: Callable[[], None]) -> None:
        self._pending = (reads, callback)

    def fire_pending(self) -> None:
        if self._pending is not None:
            _, callback = self._pending
            self._pending = None
            callback()

    def _read(self, result: Any) -> Any:
        if self._pending is not None:
            reads, callback = self._pending
            self._pending = None if reads <= 1 else (reads - 1, callback)
            if reads <= 1:
                callback()
        return result

    def chain_id(self) -> int:
        return self._inner.chain_id()

    def head_number(self) -> int:
        return self._read(self._inner.head_number())

    def head(self) -> BlockHeader:
        return self._read(self._inner.head())

    def headers(self, numbers: list[int]) -> list[BlockHeader | None]:
        return self._read(self._inner.headers(numbers))

    def logs(self, from_block: int, to_block: int, addresses: list[str]) -> list[dict[str, Any]]:
        return self._read(self._inner.logs(from_block, to_block, addresses))


def _count(conn: Connection, table: Any, *conditions: Any) -> int:
    return conn.execute(select(func.count()).select_from(table).where(and_(*conditions))).scalar_one()


class CountingSink(Sink):
    """The indexer's sink, counting what each rollback undoes into UNDONE."""

    def rollback(self, ancestor: BlockHeader) -> int:
        above = ancestor.number
        p, s, i, r, k, u = Part.__table__, Shipment.__table__, Installation.__table__, Recall.__table__, SiteKey.__table__, UndoEntry.__table__
        with self.engine.connect() as conn:
            UNDONE["rollbacks"] += 1
            UNDONE["parts unregistered"] += _count(conn, p, p.c.registered_block > above)
            UNDONE["part states recomputed"] += _count(conn, p, p.c.registered_block <= above, p.c.updated_block > above)
            UNDONE["shipments reopened"] += _count(conn, s, s.c.shipped_block <= above, s.c.closed_block > above)
            UNDONE["shipments removed"] += _count(conn, s, s.c.shipped_block > above)
            UNDONE["installations reopened"] += _count(conn, i, i.c.installed_block <= above, i.c.removed_block > above)
            UNDONE["installations removed"] += _count(conn, i, i.c.installed_block > above)
            UNDONE["recalls undone"] += _count(conn, r, r.c.block_number > above)
            UNDONE["organisation changes undone"] += _count(conn, u, u.c.block_number > above)
            UNDONE["site key changes undone"] += _count(conn, k, (k.c.added_block > above) | (k.c.revoked_block > above))
        return super().rollback(ancestor)


def fresh_mirror(db_url: str) -> Engine:
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    return engine


def wipe(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in reversed(INDEX_METADATA.sorted_tables):
            conn.execute(table.delete())


def make_indexer(chain: ReorgChain, engine: Engine, config: IndexerConfig) -> tuple[Indexer, InterruptingSource]:
    source = InterruptingSource(chain.url)
    manifest = chain.ledger.manifest
    indexer = Indexer(source=source, sink=CountingSink(engine, manifest.chain_id), manifest=manifest, config=config)
    indexer.check_chain()
    return indexer, source


def sync(indexer: Indexer, chain: ReorgChain) -> None:
    """Steps the indexer until it stands on the node's head."""
    for _ in range(1_000):
        indexed = indexer.step()
        state = indexer.sink.state()
        assert state is not None
        if indexed == 0 and state.block_number == chain.head():
            return
    raise AssertionError("the indexer did not reach the head in 1000 steps")


# ----------------------------------------------------------------------------------------------------------------
# The independent rebuild and the checks
# ----------------------------------------------------------------------------------------------------------------

PART_EVENT_KINDS = {
    "PartsShipped": "shipped", "PartsReceived": "received", "ShipmentsCancelled": "cancelled", "PartsSold": "sold",
    "PartsInstalled": "installed", "PartsRemoved": "removed", "PartsQuarantined": "quarantined",
    "PartsReleased": "released", "PartsScrapped": "scrapped", "PartsRecycled": "recycled",
}  # fmt: skip
KIND_STATUS = {
    "registered": IN_STOCK, "shipped": IN_TRANSIT, "received": IN_STOCK, "cancelled": IN_STOCK, "sold": PartStatus.SOLD,
    "installed": INSTALLED, "removed": IN_STOCK, "quarantined": QUARANTINED, "released": IN_STOCK,
    "scrapped": PartStatus.SCRAPPED, "recycled": PartStatus.RECYCLED,
}  # fmt: skip


def _text(raw: bytes) -> str:
    try:
        return bytes(raw).rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return "0x" + bytes(raw).hex()


def _zero_none(value: bytes | None) -> bytes | None:
    return bytes(value) if value is not None and any(value) else None


@dataclass
class Mirror:
    """The indexer's tables as plain values, keyed by their natural keys (multisets where rows may repeat)."""

    organisations: dict[int, tuple] = field(default_factory=dict)
    site_keys: dict[str, tuple] = field(default_factory=dict)
    lots: dict[int, tuple] = field(default_factory=dict)
    parts: dict[bytes, tuple] = field(default_factory=dict)
    part_events: Counter[tuple] = field(default_factory=Counter)
    shipments: Counter[tuple] = field(default_factory=Counter)
    installations: Counter[tuple] = field(default_factory=Counter)
    recalls: dict[int, tuple] = field(default_factory=dict)
    documents: dict[bytes, tuple] = field(default_factory=dict)
    batches: dict[bytes, tuple] = field(default_factory=dict)
    cancelled_nonces: dict[tuple, tuple] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, (memoryview, bytearray)) else value


def read_mirror(engine: Engine) -> Mirror:
    tables = INDEX_METADATA.tables
    with engine.connect() as conn:

        def rows(name: str) -> list[dict[str, Any]]:
            return [{key: _plain(value) for key, value in row.items()} for row in conn.execute(select(tables[name])).mappings()]

        mirror = Mirror()
        for row in rows("organisations"):
            mirror.organisations[row["org_id"]] = (row["name"], row["roles"], bool(row["suspended"]), row["registered_block"], row["updated_block"])
        for row in rows("site_keys"):
            mirror.site_keys[row["address"]] = (row["org_id"], row["site"], row["added_block"], row["revoked_block"], row["revoked_by"])
        for row in rows("lots"):
            mirror.lots[row["lot"]] = (row["manufacturer"], row["lot_code"], row["opened_block"], bool(row["recalled"]))
        for row in rows("parts"):
            mirror.parts[row["part_id"]] = (
                row["gtin"], row["serial"], row["lot"], row["manufacturer"], row["status"], row["custodian"], row["recipient"],
                bool(row["recalled"]), row["vin_hash"], row["registered_block"], row["updated_block"],
            )  # fmt: skip
        for row in rows("part_events"):
            mirror.part_events[(
                row["chain_id"], row["block_number"], row["tx_hash"], row["log_index"], row["position"], row["part_id"], row["kind"],
                row["org_id"], row["site_key"], row["counterparty"], row["doc_hash"], row["vin_hash"],
            )] += 1  # fmt: skip
        for row in rows("shipments"):
            mirror.shipments[(
                row["part_id"], row["from_org"], row["to_org"], row["doc_hash"], row["shipped_block"], row["shipped_tx"],
                row["outcome"], row["closed_block"],
            )] += 1  # fmt: skip
        for row in rows("installations"):
            mirror.installations[(
                row["part_id"], row["org_id"], row["vin_hash"], row["installed_block"], row["installed_tx"], row["removed_block"],
            )] += 1  # fmt: skip
        for row in rows("recalls"):
            mirror.recalls[row["lot"]] = (row["org_id"], row["site_key"], row["notice_hash"], row["block_number"], row["tx_hash"])
        for row in rows("documents"):
            mirror.documents[row["doc_hash"]] = (
                row["doc_type"], row["issuer"], row["counterparty"], row["previous"], row["parts_root"], row["nonce"], int(row["deadline"]),
                row["issuer_signer"], row["counterparty_signer"], row["issuer_signature"], row["counterparty_signature"],
                row["block_number"], row["block_time"], row["tx_hash"], row["log_index"],
            )  # fmt: skip
        for row in rows("batches"):
            mirror.batches[row["root"]] = (
                row["org_id"], row["site_key"], row["kind"], row["record_count"], row["block_number"], row["tx_hash"], row["log_index"],
            )  # fmt: skip
        for row in rows("cancelled_nonces"):
            mirror.cancelled_nonces[(row["org_id"], row["nonce"])] = (row["site_key"], row["block_number"])
    return mirror


def _topic(event: Any) -> bytes:
    return bytes.fromhex(str(event.topic).removeprefix("0x"))


def rebuild_from_logs(chain: ReorgChain, to_block: int) -> Mirror:
    """The mirror as it should be, from the canonical chain's logs alone (web3's own decoding, an in-memory model)."""
    ledger = chain.ledger
    contracts = (ledger.registry, ledger.parts, ledger.evidence)
    events = {(contract.address.lower(), _topic(event())): event() for contract in contracts for event in contract.events}
    logs = chain.w3.eth.get_logs({"fromBlock": ledger.manifest.deployment_block, "toBlock": to_block, "address": [c.address for c in contracts]})
    logs = sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))
    document_blocks = sorted({log["blockNumber"] for log in logs if bytes(log["topics"][0]) == _topic(ledger.evidence.events.DocumentAnchored())})
    times = {number: int(block["timestamp"], 16) for number, block in chain.blocks(document_blocks).items() if block}
    expected = Mirror()
    open_shipments: dict[bytes, tuple] = {}
    open_installations: dict[bytes, tuple] = {}
    chain_id = ledger.manifest.chain_id
    for log in logs:
        event = events.get((log["address"].lower(), bytes(log["topics"][0])))
        if event is None:
            continue
        args, name, block, tx = event.process_log(log)["args"], event.event_name, log["blockNumber"], bytes(log["transactionHash"])
        if name == "OrganisationRegistered":
            expected.organisations[args["orgId"]] = (args["name"], args["roles"], False, block, block)
        elif name in ("OrganisationRolesChanged", "OrganisationSuspended", "OrganisationReinstated"):
            org_name, roles, suspended, registered, _ = expected.organisations[args["orgId"]]
            roles = args["roles"] if name == "OrganisationRolesChanged" else roles
            suspended = {"OrganisationSuspended": True, "OrganisationReinstated": False}.get(name, suspended)
            expected.organisations[args["orgId"]] = (org_name, roles, suspended, registered, block)
        elif name == "SiteKeyAdded":
            expected.site_keys[args["key"]] = (args["orgId"], _text(args["site"]), block, None, None)
        elif name == "SiteKeyRevoked":
            org_id, site, added, _, _ = expected.site_keys[args["key"]]
            expected.site_keys[args["key"]] = (org_id, site, added, block, args["revokedBy"])
        elif name == "LotOpened":
            expected.lots[args["lot"]] = (args["manufacturer"], _text(args["lotCode"]), block, False)
        elif name == "LotRecalled":
            manufacturer, code, opened, _ = expected.lots[args["lot"]]
            expected.lots[args["lot"]] = (manufacturer, code, opened, True)
            expected.recalls[args["lot"]] = (args["orgId"], args["siteKey"], bytes(args["noticeHash"]), block, tx)
        elif name == "PartsRegistered":
            for position, serial in enumerate(args["serials"]):
                pid = keccak(encode(["uint64", "bytes32"], [args["gtin"], bytes(serial)]))
                maker = args["manufacturer"]
                expected.parts[pid] = (str(args["gtin"]).zfill(14), _text(serial), args["lot"], maker, int(IN_STOCK), maker, None, False, None, block, block)
                expected.part_events[(chain_id, block, tx, log["logIndex"], position, pid, "registered", maker, args["siteKey"], None, None, None)] += 1
        elif name in PART_EVENT_KINDS:
            kind = PART_EVENT_KINDS[name]
            org_id = args["from"] if kind == "shipped" else args["orgId"]
            counterparty = args["to"] if kind == "shipped" else None
            doc_hash = _zero_none(args["reasonHash"] if kind == "quarantined" else args["docHash"])
            for position, raw_pid in enumerate(args["partIds"]):
                pid = bytes(raw_pid)
                vin = bytes(args["vinHashes"][position]) if kind == "installed" else None
                gtin, serial, lot, manufacturer, *_rest, registered, _ = expected.parts[pid]
                expected.parts[pid] = (gtin, serial, lot, manufacturer, int(KIND_STATUS[kind]), org_id, counterparty, False, vin, registered, block)
                key = (chain_id, block, tx, log["logIndex"], position, pid, kind, org_id, args["siteKey"], counterparty, doc_hash, vin)
                expected.part_events[key] += 1
                if kind == "shipped":
                    open_shipments[pid] = (pid, org_id, counterparty, doc_hash, block, tx)
                elif kind in ("received", "cancelled"):
                    expected.shipments[(*open_shipments.pop(pid), kind, block)] += 1
                elif kind == "installed":
                    open_installations[pid] = (pid, org_id, vin, block, tx)
                elif kind == "removed":
                    expected.installations[(*open_installations.pop(pid), block)] += 1
        elif name == "DocumentAnchored":
            a = args["attestation"]
            a = tuple(a.values()) if isinstance(a, Mapping) else tuple(a)
            expected.documents[bytes(a[0])] = (
                a[1], a[2], a[3], _zero_none(a[4]), _zero_none(a[5]), bytes(a[6]), a[7], args["issuerSigner"], args["counterpartySigner"],
                bytes(args["issuerSignature"]), bytes(args["counterpartySignature"]), block, times[block], tx, log["logIndex"],
            )  # fmt: skip
        elif name == "BatchAnchored":
            expected.batches[bytes(args["root"])] = (
                args["orgId"], args["siteKey"], _text(args["kind"]), args["recordCount"], block, tx, log["logIndex"],
            )  # fmt: skip
        elif name == "NonceCancelled":
            expected.cancelled_nonces[(args["orgId"], bytes(args["nonce"]))] = (args["siteKey"], block)
    for row in open_shipments.values():
        expected.shipments[(*row, None, None)] += 1
    for row in open_installations.values():
        expected.installations[(*row, None)] += 1
    recalled = {lot for lot, (_, _, _, flag) in expected.lots.items() if flag}
    for pid, (gtin, serial, lot, manufacturer, status, custodian, recipient, _, vin, registered, updated) in list(expected.parts.items()):
        expected.parts[pid] = (gtin, serial, lot, manufacturer, status, custodian, recipient, lot in recalled, vin, registered, updated)
    return expected


def _differences(actual: Mapping, expected: Mapping) -> str:
    keys = set(actual) | set(expected)
    wrong = [(key, actual.get(key), expected.get(key)) for key in keys if actual.get(key) != expected.get(key)]
    shown = "; ".join(f"{key!r}: mirror {got!r}, chain {want!r}" for key, got, want in wrong[:4])
    return shown + (f" (+{len(wrong) - 4} more)" if len(wrong) > 4 else "")


def assert_mirror_is_canonical(chain: ReorgChain, engine: Engine, pool: set[bytes]) -> None:
    """(a), (b) and (c) of the module docstring, with the indexer standing on the node's head."""
    head = chain.head()
    tables = INDEX_METADATA.tables
    with engine.connect() as conn:
        state = conn.execute(select(tables["indexer_state"])).mappings().one()
        blocks = conn.execute(select(IndexedBlock.__table__)).all()
        stored = {number: (bytes(hash_), bytes(parent), timestamp) for number, hash_, parent, timestamp in blocks}
        undo_blocks = {row[0] for row in conn.execute(select(UndoEntry.__table__.c.block_number))}
    assert state["healthy"] and state["message"] == "", state["message"]
    assert state["block_number"] == head, f"cursor {state['block_number']}, head {head}"

    # (a) the cursor, the stored window and the undo log
    node_blocks = chain.blocks(sorted(set(stored) | {head}))
    assert bytes(state["block_hash"]) == bytes.fromhex(node_blocks[head]["hash"][2:]), "the cursor hash is not the node's"
    for number, (hash_, parent, timestamp) in stored.items():
        block = node_blocks[number]
        assert block is not None, f"stored block {number} is above the node's head {head}"
        node = (bytes.fromhex(block["hash"][2:]), bytes.fromhex(block["parentHash"][2:]), int(block["timestamp"], 16))
        assert (hash_, parent, timestamp) == node, f"stored block {number} is not the node's"
    assert sorted(stored) == list(range(min(stored), head + 1)), f"stored window has holes: {sorted(stored)}"
    assert undo_blocks <= set(stored), f"undo entries for blocks outside the window: {sorted(undo_blocks - set(stored))}"

    # (c) the independent rebuild, table by table
    mirror, expected = read_mirror(engine), rebuild_from_logs(chain, head)
    for name in Mirror.__dataclass_fields__:
        actual_table, expected_table = getattr(mirror, name), getattr(expected, name)
        if isinstance(actual_table, Counter):
            missing, extra = expected_table - actual_table, actual_table - expected_table
            assert not missing and not extra, f"{name}: missing {list(missing.items())[:3]}, duplicated or orphaned {list(extra.items())[:3]}"
        else:
            assert actual_table == expected_table, f"{name}: {_differences(actual_table, expected_table)}"

    # (b) every transaction a row names is canonical, in the block the row says
    referenced: set[tuple[bytes, int]] = set()
    referenced |= {(key[2], key[1]) for key in mirror.part_events}
    referenced |= {(row[5], row[4]) for row in mirror.shipments} | {(row[4], row[3]) for row in mirror.installations}
    referenced |= {(row[4], row[3]) for row in mirror.recalls.values()} | {(row[13], row[11]) for row in mirror.documents.values()}
    referenced |= {(row[5], row[4]) for row in mirror.batches.values()}
    pairs = sorted(referenced)
    receipts = chain.batch([("eth_getTransactionReceipt", ["0x" + tx.hex()]) for tx, _ in pairs])
    canonical = chain.blocks(sorted({block for _, block in pairs}))
    for (tx, block), receipt in zip(pairs, receipts):
        assert receipt is not None, f"orphaned row: transaction 0x{tx.hex()} is not on the canonical chain"
        mined_in = int(receipt["blockNumber"], 16)
        assert mined_in == block, f"transaction 0x{tx.hex()} is in block {mined_in}, the mirror says {block}"
        assert receipt["blockHash"] == canonical[block]["hash"], f"transaction 0x{tx.hex()}: receipt block hash is not canonical"

    # (c) rows against the contracts' views at the head
    pids = sorted(pool | set(mirror.parts))
    keys, lots = sorted(mirror.site_keys), sorted(mirror.lots)
    (count,), *answers = chain.views(
        [view_organisation_count(chain)]
        + [view_part(chain, pid) for pid in pids]
        + [view_organisation(chain, org_id) for org_id in sorted(mirror.organisations)]
        + [view_site_key(chain, key) for key in keys]
        + [view_lot(chain, lot) for lot in lots],
        head,
    )
    assert sorted(mirror.organisations) == list(range(1, count + 1))
    part_views, answers = answers[: len(pids)], answers[len(pids) :]
    for pid, (status, custodian, recipient, lot, vin_tag, recalled) in zip(pids, part_views):
        row = mirror.parts.get(pid)
        if row is None:
            assert status == 0, f"part 0x{pid.hex()} is on chain (status {status}) but not in the mirror"
            continue
        _, _, row_lot, _, row_status, row_custodian, row_recipient, row_recalled, row_vin, _, _ = row
        assert (row_status, row_custodian, row_recipient or 0, row_lot, (row_vin or ZERO15)[:15], row_recalled) == (
            status, custodian, recipient, lot, bytes(vin_tag), recalled,
        ), f"part 0x{pid.hex()}: mirror {row}, PartLedger.part {status, custodian, recipient, lot, vin_tag, recalled}"  # fmt: skip
    org_views, answers = answers[: len(mirror.organisations)], answers[len(mirror.organisations) :]
    for org_id, (roles, suspended) in zip(sorted(mirror.organisations), org_views):
        assert mirror.organisations[org_id][1:3] == (roles, suspended), f"organisation {org_id}"
    key_views, lot_views = answers[: len(keys)], answers[len(keys) :]
    for key, (org_id, _, added, revoked) in zip(keys, key_views):
        row = mirror.site_keys[key]
        assert (row[0], row[2], row[3] or 0) == (org_id, added, revoked), f"site key {key}"
    for lot, (manufacturer, recalled) in zip(lots, lot_views):
        assert (mirror.lots[lot][0], mirror.lots[lot][3]) == (manufacturer, recalled), f"lot {lot}"


# ----------------------------------------------------------------------------------------------------------------
# Random plans
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class World:
    """What the chain says now, as far as choosing a transaction that should succeed needs."""

    parts: dict[bytes, tuple[int, int, int, int, bytes, bool]]  # status, custodian, recipient, lot, vinTag, recalled
    orgs: dict[int, tuple[int, bool]]  # roles, suspended
    lots: dict[int, tuple[int, bool]]  # manufacturer, recalled


Transaction = tuple[str, Any]  # (sender, bound contract call)


class Scenario:
    """One example: a random plan played against the chain and the indexer."""

    def __init__(self, chain: ReorgChain, indexer: Indexer, source: InterruptingSource) -> None:
        self.chain = chain
        self.ledger = chain.ledger
        self.indexer = indexer
        self.source = source
        self.pool: set[bytes] = set(chain.base_parts)
        self.keys: dict[int, str] = {org.id: org.key for org in self.ledger.orgs.values()}
        self.added_keys: dict[str, int] = {}
        self.counter = 0
        self.stats: Counter[str] = Counter()
        self.peak = 0  # the highest head the indexer has written at

    # --- reading the chain ----------------------------------------------------------------------------------

    def world(self) -> World:
        head = self.chain.head()
        (count,) = self.chain.views([view_organisation_count(self.chain)], head)[0]
        pids = sorted(self.pool)
        calls = [view_part(self.chain, pid) for pid in pids] + [view_organisation(self.chain, org) for org in range(1, count + 1)]
        answers = self.chain.views(calls, head)
        parts = {pid: tuple(answer) for pid, answer in zip(pids, answers)}
        lots = sorted({answer[3] for answer in parts.values() if answer[3]})
        lot_answers = self.chain.views([view_lot(self.chain, lot) for lot in lots], head)
        orgs = {org: tuple(answer) for org, answer in zip(range(1, count + 1), answers[len(pids) :])}
        return World(parts=parts, orgs=orgs, lots=dict(zip(lots, map(tuple, lot_answers))))  # type: ignore[arg-type]

    def can_act(self, world: World, org_id: int, roles: int) -> bool:
        org_roles, suspended = world.orgs.get(org_id, (0, True))
        return org_id in self.keys and not suspended and org_roles & roles != 0

    def held(
        self, world: World, statuses: tuple[int, ...], roles: int = CUSTODY, *, by_recipient: bool = False, unrecalled: bool = False
    ) -> dict[int, list[bytes]]:
        """Parts in one of `statuses`, by the organisation holding them (or receiving them), if it can act."""
        groups: dict[int, list[bytes]] = defaultdict(list)
        for pid, (status, custodian, recipient, _, _, recalled) in sorted(world.parts.items()):
            holder = recipient if by_recipient else custodian
            if status in statuses and self.can_act(world, holder, roles) and not (unrecalled and recalled):
                groups[holder].append(pid)
        return groups

    # --- choosing a transaction -----------------------------------------------------------------------------

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def choose(self, world: World, rng: random.Random, kinds: tuple[str, ...] = ()) -> tuple[str, Transaction]:
        """A transaction that should succeed on the chain as it is, of a kind drawn by weight among those possible
        (among `kinds` when given and possible)."""
        functions, registry, evidence = self.ledger.parts.functions, self.ledger.registry.functions, self.ledger.evidence.functions
        orgs, operator = self.ledger.orgs, self.ledger.operator
        doc = rng.randbytes(32)
        options: list[tuple[str, Callable[[], Transaction]]] = []

        def batch_of(groups: dict[int, list[bytes]]) -> tuple[int, list[bytes]]:
            org = rng.choice(sorted(groups))
            return org, rng.sample(groups[org], min(len(groups[org]), rng.randint(1, 3)))

        def add(kind: str, groups: dict[int, list[bytes]], build: Callable[[int, list[bytes]], Any], weight: int = 3) -> None:
            if groups:
                for _ in range(weight):
                    options.append((kind, lambda: (lambda org, pids: (self.keys[org], build(org, pids)))(*batch_of(groups))))

        makers = [org for org in (orgs["maker"], orgs["maker2"]) if self.can_act(world, org.id, MANUFACTURER)]
        if makers:

            def register() -> Transaction:
                maker, gtin = rng.choice(makers), rng.choice((GTIN_A, GTIN_B))
                lot = rng.choice((*LOT_CODES, self.fresh("NL-")))
                serials = [self.fresh("S-") for _ in range(rng.randint(1, 3))]
                self.pool.update(part_id(gtin, serial) for serial in serials)
                return maker.key, functions.registerParts(int(gtin), ascii32(lot), [ascii32(serial) for serial in serials])

            options += [("register", register)] * 3

        destinations = [org for org, (roles, suspended) in world.orgs.items() if roles & CUSTODY and not suspended]

        def ship(org: int, pids: list[bytes]) -> Any:
            return functions.shipParts(pids, rng.choice([d for d in destinations if d != org] or [org]), doc)

        add("ship", self.held(world, (IN_STOCK,), unrecalled=True), ship, weight=4)
        add("receive", self.held(world, (IN_TRANSIT,), by_recipient=True), lambda org, pids: functions.receiveParts(pids, doc), weight=5)
        add("cancel", self.held(world, (IN_TRANSIT,)), lambda org, pids: functions.cancelShipments(pids, doc), weight=4)
        sellable = self.held(world, (IN_STOCK,), DISTRIBUTOR | WORKSHOP, unrecalled=True)
        add("sell", sellable, lambda org, pids: functions.sellParts(pids, doc), weight=1)
        installable = self.held(world, (IN_STOCK,), WORKSHOP, unrecalled=True)
        add("install", installable, lambda org, pids: functions.installParts(pids, [rng.randbytes(32) for _ in pids], doc))
        add("remove", self.held(world, (INSTALLED,), WORKSHOP), lambda org, pids: functions.removeParts(pids, doc), weight=7)
        add("quarantine", self.held(world, (IN_STOCK,)), lambda org, pids: functions.quarantineParts(pids, doc), weight=2)
        add("release", self.held(world, (QUARANTINED,)), lambda org, pids: functions.releaseParts(pids, doc), weight=2)
        add("scrap", self.held(world, (IN_STOCK, QUARANTINED)), lambda org, pids: functions.scrapParts(pids, doc), weight=1)
        add("recycle", self.held(world, (IN_STOCK, QUARANTINED), RECYCLER), lambda org, pids: functions.recycleParts(pids, doc), weight=1)

        recallable = sorted(lot for lot, (manufacturer, recalled) in world.lots.items() if not recalled)
        recallers = [org for org in world.orgs if self.can_act(world, org, REGULATOR)]
        if recallable:

            def recall() -> Transaction:
                lot = rng.choice(recallable)
                manufacturer = world.lots[lot][0]
                sender = rng.choice(([manufacturer] if self.can_act(world, manufacturer, MANUFACTURER) else []) + recallers or [manufacturer])
                return self.keys.get(sender, orgs["maker"].key), functions.recallLot(lot, doc)

            options += [("recall", recall)] * 3

        volatile = [orgs[name].id for name in VOLATILE_ORGS] + [org for org in world.orgs if org > len(orgs)]

        def change_roles() -> Transaction:
            org = rng.choice(volatile)
            roles = world.orgs[org][0] ^ rng.choice((AUDITOR, REGULATOR, DISTRIBUTOR))
            return operator, registry.setOrganisationRoles(org, roles or AUDITOR)

        def toggle_suspension() -> Transaction:
            org = rng.choice(volatile)
            call = registry.reinstateOrganisation if world.orgs[org][1] else registry.suspendOrganisation
            return operator, call(org)

        def register_organisation() -> Transaction:
            return operator, registry.registerOrganisation(rng.choice((int(Role.LOGISTICS), DISTRIBUTOR, WORKSHOP, AUDITOR)), self.fresh("org-"))

        def add_key() -> Transaction:
            spare = [key for key in self.ledger.spare_keys if key not in self.added_keys]
            key, org = rng.choice(spare), rng.choice(sorted(world.orgs))
            self.added_keys[key] = org
            return operator, registry.addSiteKey(org, key, ascii32(self.fresh("site-")))

        def revoke_key() -> Transaction:
            key = rng.choice([orgs["maker"].keys[1], *sorted(self.added_keys)])
            return operator, registry.revokeSiteKey(key)

        def anchor_batch() -> Transaction:
            org = rng.choice([org for org in self.keys if self.can_act(world, org, 0xFFFF)] or [orgs["maker"].id])
            return self.keys[org], evidence.anchorBatch(rng.randbytes(32), rng.randint(1, 500), ascii32(rng.choice(("labels", "scans"))))

        def cancel_nonce() -> Transaction:
            org = rng.choice([org for org in self.keys if self.can_act(world, org, 0xFFFF)] or [orgs["maker"].id])
            return self.keys[org], evidence.cancelNonce(rng.randbytes(32))

        def anchor_document() -> Transaction:
            parties = [org for org in self.keys if self.can_act(world, org, 0xFFFF)]
            issuer, counterparty = rng.sample(parties, 2) if len(parties) > 1 else (orgs["maker"].id, orgs["distributor"].id)
            previous = keccak(text="base-doc") if rng.random() < 0.3 else ZERO32
            doc_type, nonce = int(rng.choice(list(DocType))), rng.randbytes(32)
            attested = Attestation(rng.randbytes(32), doc_type, issuer, counterparty, previous, rng.randbytes(32), nonce, DEADLINE)
            signatures = sign_attestation(self.ledger, attested, self.keys[issuer], self.keys[counterparty])
            return self.keys[issuer], evidence.anchorDocument(attested.as_tuple(), *signatures)

        options += [("roles", change_roles)] * 3 + [("suspension", toggle_suspension)] * 4 + [("organisation", register_organisation)] * 2
        options += [("add key", add_key), ("revoke key", revoke_key)]
        options += [("batch", anchor_batch)] * 2 + [("nonce", cancel_nonce)] + [("document", anchor_document)] * 3
        options = [option for option in options if option[0] in kinds] or options
        kind, build = options[rng.randrange(len(options))]
        return kind, build()

    def send_transactions(self, seed: int, kinds: tuple[str, ...] = ()) -> None:
        """One transaction in its own block, or (one time in four) two or three in one block, where a later one
        may fail for an earlier one (a failed transaction has no logs: the indexer must skip it)."""
        rng = random.Random(seed)
        count = 1 if kinds or rng.random() < 0.75 else rng.randint(2, 3)
        sent = []
        if count > 1:
            self.chain.rpc("evm_setAutomine", False)
        try:
            for _ in range(count):
                kind, (sender, call) = self.choose(self.world(), rng, kinds)
                request = tx_request(self.ledger, sender, call)
                try:
                    self.chain.rpc("eth_estimateGas", request)
                except NodeRefused:
                    self.stats[f"{kind} refused"] += 1
                    continue
                sent.append(self.chain.rpc("eth_sendTransaction", request))
                self.stats[kind] += 1
        finally:
            if count > 1:
                self.chain.rpc("evm_mine")
                self.chain.rpc("evm_setAutomine", True)
        # Every transaction mined before anything else happens (automine mines just after answering).
        receipts = [self.chain.receipt(tx_hash) for tx_hash in sent]
        assert count > 1 or all(receipt["status"] == "0x1" for receipt in receipts)

    # --- reorganisations ------------------------------------------------------------------------------------

    def observe(self) -> None:
        state = self.indexer.sink.state()
        if state is not None:
            self.peak = max(self.peak, state.head_seen)

    def max_depth(self) -> int:
        """The deepest reorganisation the indexer must handle now: above the snapshot, and no more than FINALITY
        below the highest head it has written at (the stored window reaches that far back; once the head has
        moved backwards, by anvil_rollback, the blocks pruned at the higher head are not stored again)."""
        self.observe()
        return min(MAX_DEPTH, self.chain.head() - max(self.chain.floor, self.peak - FINALITY))

    def fresh_transactions(self, rng: random.Random, depth: int) -> list[list[Any]]:
        """New transactions for the replacement blocks, as requests Anvil signs (nonces from the common block)."""
        ledger, maker, warehouse = self.ledger, self.ledger.orgs["maker"].key, self.ledger.orgs["warehouse"].key
        functions, evidence = ledger.parts.functions, ledger.evidence.functions
        serials = [self.fresh("F-") for _ in range(rng.randint(1, 2))]
        self.pool.update(part_id(GTIN_A, serial) for serial in serials)
        candidates = [
            tx_request(ledger, maker, functions.registerParts(int(GTIN_A), ascii32(self.fresh("FL-")), [ascii32(serial) for serial in serials])),
            tx_request(ledger, maker, evidence.anchorBatch(rng.randbytes(32), 7, ascii32("reorg"))),
            tx_request(ledger, warehouse, evidence.cancelNonce(rng.randbytes(32))),
        ]
        chosen = rng.sample(candidates, rng.randint(1, len(candidates)))
        return [[request, offset] for request, offset in zip(chosen, sorted(rng.randrange(depth) for _ in chosen))]

    def reorganise(self, depth: int, seed: int) -> None:
        """anvil_reorg: the last `depth` blocks replaced by empty ones, by ones re-including a prefix of the
        orphaned transactions (in order, so that nonces hold), or by ones carrying fresh transactions."""
        depth = min(depth, self.max_depth())
        if depth <= 0:
            return
        rng = random.Random(seed)
        mode = rng.choice(("empty", "replay", "fresh"))
        head = self.chain.head()
        pairs: list[list[Any]] = []
        if mode == "replay":
            blocks = self.chain.blocks(list(range(head - depth + 1, head + 1)))
            hashes = [tx for number in sorted(blocks) for tx in blocks[number]["transactions"]]
            prefix = hashes[: rng.randint(0, len(hashes))]
            raws = self.chain.batch([("eth_getRawTransactionByHash", [tx]) for tx in prefix])
            pairs = [[raw, offset] for raw, offset in zip(raws, sorted(rng.randrange(depth) for _ in raws))]
        elif mode == "fresh":
            pairs = self.fresh_transactions(rng, depth)
        self.chain.rpc("anvil_reorg", depth, pairs)
        self.stats[f"reorg {mode}"] += 1

    def roll_back(self, depth: int) -> None:
        depth = min(depth, self.max_depth())
        if depth > 0:
            self.chain.rpc("anvil_rollback", depth)
            self.stats["rollback"] += 1

    # --- the plan -------------------------------------------------------------------------------------------

    def play(self, action: tuple[str, int, int]) -> None:
        kind, a, b = action
        if kind == "tx":
            self.send_transactions(a)
        elif kind == "mine":
            self.chain.rpc("anvil_mine", hex(1 + a % 3))
        elif kind == "step":
            for _ in range(1 + a % 3):
                self.indexer.step()
        elif kind == "sync":
            self.sync_and_check()
        elif kind == "reorg":
            self.reorganise(1 + a % MAX_DEPTH, b)
        elif kind == "sync, reorg":  # a reorganisation of blocks the indexer has surely written
            sync(self.indexer, self.chain)
            self.reorganise(1 + a % MAX_DEPTH, b)
        elif kind in UNDO_KINDS:  # a change of one kind, indexed, then orphaned
            self.send_transactions(b, UNDO_KINDS[kind])
            sync(self.indexer, self.chain)
            self.reorganise(1 + a % 3, b)
        elif kind == "reorg in step":
            # Between two reads of one step: after its 1st to 5th read (head, cursor header, target header, logs, window).
            self.source.interrupt_after(1 + (a >> 8) % 5, lambda: self.reorganise(1 + a % MAX_DEPTH, b))
            self.indexer.step()
            self.source.fire_pending()
            self.stats["reorg in step"] += 1
        elif kind == "rollback":
            self.roll_back(1 + a % MAX_DEPTH)
        self.observe()

    def sync_and_check(self) -> None:
        sync(self.indexer, self.chain)
        assert_mirror_is_canonical(self.chain, self.indexer.sink.engine, self.pool)


# The "undo ..." actions make a change of one kind, index it, then orphan it: registrations, closings of shipments
# and installations, recalls, and organisation changes (restored from the undo log).
UNDO_KINDS = {
    "undo registration": ("register",), "undo shipment closing": ("receive", "cancel"),
    "undo installation closing": ("remove",), "undo recall": ("recall",),
    "undo organisation change": ("roles", "suspension", "organisation"),
}  # fmt: skip
KINDS = ("tx",) * 8 + ("mine",) * 2 + ("step",) * 3 + ("sync",) * 2 + ("reorg",) * 2 + ("sync, reorg",) * 2
KINDS += ("reorg in step",) * 2 + ("rollback",) + tuple(UNDO_KINDS)
ACTIONS = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=4, max_size=16)


@dataclass(frozen=True)
class Plan:
    batch_blocks: int
    max_log_range: int
    catch_up_first: bool
    actions: list[tuple[str, int, int]]


PLANS = st.builds(Plan, st.sampled_from((4, 2_000, 2)), st.sampled_from((2_000, 3)), st.booleans(), ACTIONS)


# ----------------------------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------------------------


def _backend(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


@pytest.mark.timeout(1800)  # 80-250 s on an idle 2-core machine; 600 s was not enough at load average 10 (597 s in one run)
def test_mirror_equals_the_canonical_chain_through_random_reorganisations(chain: ReorgChain, db_url: str) -> None:
    engine = fresh_mirror(db_url)
    seen: Counter[str] = Counter()
    undone_before = UNDONE.copy()

    @settings(max_examples=EXAMPLES[_backend(db_url)], deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(plan=PLANS)
    def run(plan: Plan) -> None:
        chain.reset()
        wipe(engine)
        config = IndexerConfig(finality_depth=FINALITY, batch_blocks=plan.batch_blocks, max_log_range=plan.max_log_range, poll_interval=0)
        indexer, source = make_indexer(chain, engine, config)
        scenario = Scenario(chain, indexer, source)
        if plan.catch_up_first:
            sync(indexer, chain)
        for action in plan.actions:
            scenario.play(action)
        scenario.sync_and_check()
        seen.update(scenario.stats)

    try:
        run()
    finally:
        engine.dispose()
    undone = UNDONE - undone_before
    print(f"\n{_backend(db_url)}: played {dict(sorted(seen.items()))}\nrollbacks undid {dict(sorted(undone.items()))}")
    for what in ("parts unregistered", "shipments reopened", "installations reopened", "recalls undone", "organisation changes undone"):
        assert undone[what] > 0, f"no reorganisation undid any {what}: the plans miss a case"


def _dump(engine: Engine) -> dict[str, list[tuple]]:
    """Every table's rows, but the state row's heartbeat columns (head seen, health, time)."""
    with engine.connect() as conn:
        dump = {}
        for table in INDEX_METADATA.sorted_tables:
            heartbeat = table.name == "indexer_state"
            columns = [column for column in table.columns if not heartbeat or column.name in ("chain_id", "block_number", "block_hash")]
            dump[table.name] = sorted((tuple(_plain(value) for value in row) for row in conn.execute(select(*columns))), key=repr)
    return dump


def _some_lifecycle(ledger: Ledger, serials: list[str]) -> None:
    """Four blocks: a registration, a shipment, a receipt, and an organisation's roles changed."""
    maker, distributor = ledger.orgs["maker"], ledger.orgs["distributor"]
    pids = ledger.register(maker, serials, lot="DEEP-1")
    ledger.act(maker.key, ledger.parts.functions.shipParts(pids, distributor.id, ZERO32))
    ledger.act(distributor.key, ledger.parts.functions.receiveParts(pids[:1], ZERO32))
    ledger.act(ledger.operator, ledger.registry.functions.setOrganisationRoles(ledger.orgs["auditor"].id, len(serials) * int(Role.AUDITOR)))


def test_reorganisation_deeper_than_finality_stops_the_indexer_and_writes_nothing(chain: ReorgChain, db_url: str) -> None:
    chain.reset()
    engine = fresh_mirror(db_url)
    try:
        indexer, _ = make_indexer(chain, engine, IndexerConfig(finality_depth=3, poll_interval=0))
        _some_lifecycle(chain.ledger, ["DEEP-1", "DEEP-2"])
        sync(indexer, chain)
        # As deep as the finality depth: still handled.
        _some_lifecycle(chain.ledger, ["DEEP-3"])
        sync(indexer, chain)
        chain.rpc("anvil_reorg", 3, [])
        sync(indexer, chain)
        assert_mirror_is_canonical(chain, engine, set(chain.base_parts))
        _some_lifecycle(chain.ledger, ["DEEP-4"])
        sync(indexer, chain)
        cursor = indexer.sink.state()
        assert cursor is not None
        before = _dump(engine)

        chain.rpc("anvil_reorg", 5, [])
        with pytest.raises(DeepReorg) as raised:
            indexer.step()
        state = indexer.sink.state()
        assert state is not None and not state.healthy
        assert state.message == str(raised.value)
        assert state.message.startswith("reorganisation deeper than the configured finality (3 blocks)")
        assert f"below block {cursor.block_number}" in state.message and "partledger index --rebuild" in state.message

        # Nothing further is written: not by more steps, not by a run, not once the chain has grown.
        chain.rpc("anvil_mine", hex(4))
        with pytest.raises(DeepReorg):
            indexer.step()
        with pytest.raises(DeepReorg):
            indexer.run(until_block=chain.head())
        assert _dump(engine) == before
        state = indexer.sink.state()
        assert state is not None and not state.healthy and state.message.startswith("reorganisation deeper")
        assert (state.block_number, state.block_hash) == (cursor.block_number, cursor.block_hash)
    finally:
        engine.dispose()


@pytest.mark.parametrize("reads", [1, 2, 3, 4, 5])
def test_reorganisation_between_two_reads_of_a_step_loses_no_event(chain: ReorgChain, db_url: str, reads: int) -> None:
    """Blocks without our events replaced, while the indexer reads them, by blocks with events."""
    chain.reset()
    engine = fresh_mirror(db_url)
    try:
        indexer, source = make_indexer(chain, engine, IndexerConfig(finality_depth=FINALITY, poll_interval=0))
        sync(indexer, chain)
        chain.rpc("anvil_mine", hex(3))
        ledger, maker = chain.ledger, chain.ledger.orgs["maker"].key
        replacement = [
            [tx_request(ledger, maker, ledger.evidence.functions.anchorBatch(keccak(text=f"mid-step-{reads}"), 1, ascii32("reorg"))), 1],
            [tx_request(ledger, maker, ledger.parts.functions.registerParts(int(GTIN_A), ascii32("MID-1"), [ascii32("MID-1")])), 2],
        ]
        source.interrupt_after(reads, lambda: chain.rpc("anvil_reorg", 3, replacement))
        indexer.step()
        source.fire_pending()
        sync(indexer, chain)
        assert_mirror_is_canonical(chain, engine, set(chain.base_parts) | {part_id(GTIN_A, "MID-1")})
    finally:
        engine.dispose()


def test_reorganisation_undoes_every_kind_of_change(chain: ReorgChain, db_url: str) -> None:
    """One block with a change of every kind, indexed, then orphaned; then the same transactions re-included."""
    chain.reset()
    engine = fresh_mirror(db_url)
    undone_before = UNDONE.copy()
    ledger, orgs = chain.ledger, chain.ledger.orgs
    maker, maker2, distributor = orgs["maker"], orgs["maker2"], orgs["distributor"]
    functions, registry, evidence = ledger.parts.functions, ledger.registry.functions, ledger.evidence.functions
    in_transit, installed = chain.base_parts[0:2], chain.base_parts[2:3]
    attested = Attestation(keccak(text="undo-doc"), int(DocType.INVOICE), maker.id, distributor.id, ZERO32, ZERO32, keccak(text="undo-n"), DEADLINE)
    changes = [
        (maker.key, functions.registerParts(int(GTIN_A), ascii32("UNDO-1"), [ascii32("UNDO-1"), ascii32("UNDO-2")])),
        (maker.key, functions.cancelShipments(in_transit[1:], ZERO32)),
        (orgs["warehouse"].key, functions.receiveParts(in_transit[:1], ZERO32)),
        (orgs["workshop"].key, functions.removeParts(installed, ZERO32)),
        (maker2.key, functions.recallLot(ledger.lot_number(maker2, "BASE-2"), keccak(text="recall"))),
        (ledger.operator, registry.suspendOrganisation(orgs["auditor"].id)),
        (ledger.operator, registry.setOrganisationRoles(orgs["regulator"].id, REGULATOR | AUDITOR)),
        (ledger.operator, registry.registerOrganisation(WORKSHOP, "undo-org")),
        (ledger.operator, registry.addSiteKey(maker.id, ledger.spare_keys[0], ascii32("undo-site"))),
        (ledger.operator, registry.revokeSiteKey(maker.keys[1])),
        (distributor.key, evidence.anchorBatch(keccak(text="undo-batch"), 2, ascii32("scans"))),
        (distributor.key, evidence.cancelNonce(keccak(text="undo-nonce"))),
        (maker.key, evidence.anchorDocument(attested.as_tuple(), *sign_attestation(ledger, attested, maker.key, distributor.key))),
    ]
    pool = set(chain.base_parts) | {part_id(GTIN_A, "UNDO-1"), part_id(GTIN_A, "UNDO-2")}
    try:
        indexer, _ = make_indexer(chain, engine, IndexerConfig(finality_depth=FINALITY, poll_interval=0))
        sync(indexer, chain)
        chain.rpc("evm_setAutomine", False)
        try:
            hashes = [chain.rpc("eth_sendTransaction", tx_request(ledger, sender, call)) for sender, call in changes]
            chain.rpc("evm_mine")
        finally:
            chain.rpc("evm_setAutomine", True)
        assert all(chain.receipt(tx_hash)["status"] == "0x1" for tx_hash in hashes)
        chain.rpc("anvil_mine", hex(1))
        sync(indexer, chain)
        assert_mirror_is_canonical(chain, engine, pool)
        raws = chain.batch([("eth_getRawTransactionByHash", [tx_hash]) for tx_hash in hashes])

        chain.rpc("anvil_reorg", 2, [])
        sync(indexer, chain)
        assert_mirror_is_canonical(chain, engine, pool)
        undone = UNDONE - undone_before
        kinds = ("parts unregistered", "shipments reopened", "installations reopened", "recalls undone", "organisation changes undone")
        for what in (*kinds, "site key changes undone"):
            assert undone[what] > 0, f"the reorganisation undid no {what}"
        assert undone["organisation changes undone"] == 3  # suspended, roles changed, registered

        chain.rpc("anvil_reorg", 2, [[raw, 1] for raw in raws])  # the same transactions, one block later
        sync(indexer, chain)
        assert_mirror_is_canonical(chain, engine, pool)
        assert len(read_mirror(engine).recalls) == 1
    finally:
        engine.dispose()
