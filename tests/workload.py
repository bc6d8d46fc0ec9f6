"""Seeded random workloads for the indexer's acceptance tests, and a helper that indexes a chain to its head.

`Workload` drives the live contracts of a Ledger kit (their ABIs, addresses, and unlocked dev keys) with every kind of operation — registrations across
several lots and GTINs, custody hand-overs, sales, installations, quarantine, scrapping, recycling, recalls,
registry changes, two-party EIP-712 documents, batch roots and nonce cancels — keeping a model of the chain so that
it only sends what the contracts accept. A run of N operations counts part-level transitions (a bulk call of 150
parts is 150) plus every other event.

It is fast because it never waits for a transaction: automining is switched off, transactions go out as raw
`eth_sendTransaction` with an explicit gas limit (no estimation against a state the node has not reached yet), and
`evm_mine` seals a block every few transactions. Anvil orders equal-fee transactions by arrival, so a receipt sent
right after the shipment it depends on lands after it, in the same block or a later one. At the end every receipt
is checked: one reverted transaction would mean the model is wrong.

New site keys are fresh random keys that Anvil impersonates (`anvil_autoImpersonateAccount`), so that they can
both send transactions and sign attestations. Use it on a fresh deployment (`start_chain`, or `build_ledger`).
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy.engine import Engine

from indexer import migrate
from indexer.runner import Indexer, IndexerConfig
from indexer.sink import Sink
from indexer.source import JsonRpcSource
from partledger.anvil import AnvilConfig, AnvilNode
from tests.ports import free_port
from partledger.artifacts import function_spec
from partledger.chain import connect
from partledger.eip712 import Attestation, attestation_typed_data, read_domain
from partledger.ids import ascii32, gtin_check_digit, part_id_unchecked
from partledger.manifest import Manifest
from partledger.model import CUSTODY_ROLES, DocType, PartStatus, Role
from partledger.rpc import rpc_session
from tests.chainkit import ANVIL_ACCOUNTS, Ledger, build_ledger, dev_account

GTINS = tuple(int(body + str(gtin_check_digit(body))) for body in ("0401234500001", "0950600013435", "0061414100003", "0400638133393", "0871234567890"))  # fmt: skip
LOT_CODES = tuple(f"L{year}-{week:02d}" for year in (24, 25) for week in (3, 17, 41))
BATCH_KINDS = (b"scan", b"qc", b"sensor", b"temperature")
ROLE_BITS = tuple(Role)
NEW_ORG_ROLES = (
    Role.MANUFACTURER, Role.LOGISTICS, Role.DISTRIBUTOR, Role.WORKSHOP, Role.RECYCLER,
    Role.DISTRIBUTOR | Role.WORKSHOP, Role.MANUFACTURER | Role.RECYCLER, Role.AUDITOR, Role.REGULATOR,
)  # fmt: skip
NO_DEADLINE = 2**40  # unix time far beyond any test run
MAX_BATCH = 200


# --- a chain for one test module ------------------------------------------------------------------------------------


@contextmanager
def start_chain() -> Iterator[tuple[AnvilNode, Ledger]]:
    """A dedicated Anvil with the contracts and the test consortium deployed, stopped on exit."""
    node = AnvilNode.start(AnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS))
    try:
        yield node, build_ledger(connect(node.url))
    finally:
        node.stop()


# --- indexing to the head ---------------------------------------------------------------------------------------------


def index_to_head(url: str, engine: Engine, manifest: Manifest, **config: Any) -> Indexer:
    """Migrates the database, then runs the in-process indexer step by step until its cursor is the node's head."""
    migrate.upgrade(engine)
    source = JsonRpcSource(url)
    indexer = Indexer(source=source, sink=Sink(engine, manifest.chain_id), manifest=manifest, config=IndexerConfig(**config))
    head = source.head_number()
    while (state := indexer.sink.state()) is None or state.block_number < head:
        indexer.step()
    assert state.block_number == head
    return indexer


# --- JSON-RPC without web3's middleware -------------------------------------------------------------------------------


class Rpc:
    """Plain JSON-RPC over one HTTP session: thousands of calls, and none needs web3's formatting."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._session = rpc_session(url)
        self._ids = itertools.count(1)

    def _post(self, payload: Any) -> Any:
        reply = self._session.post(self.url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}, timeout=60)
        reply.raise_for_status()
        return orjson.loads(reply.content)

    def call(self, method: str, params: list[Any]) -> Any:
        answer = self._post({"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params})
        if "error" in answer:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Results in request order; raises on the first error."""
        if not calls:
            return []
        answers = self._post([{"jsonrpc": "2.0", "id": index, "method": method, "params": params} for index, (method, params) in enumerate(calls)])
        by_id = {answer["id"]: answer for answer in answers}
        results = []
        for index, (method, _params) in enumerate(calls):
            if "error" in by_id[index]:
                raise RuntimeError(f"{method} failed: {by_id[index]['error']}")
            results.append(by_id[index]["result"])
        return results


# --- the model ----------------------------------------------------------------------------------------------------


@dataclass
class OrgModel:
    id: int
    name: str
    roles: int
    suspended: bool = False
    keys: list[str] = field(default_factory=list)  # active site keys

    def can_act(self, roles: int = 0) -> bool:
        return not self.suspended and bool(self.keys) and (roles == 0 or bool(self.roles & roles))


@dataclass
class PartModel:
    status: PartStatus
    custodian: int
    recipient: int
    lot: int


@dataclass
class LotModel:
    number: int
    manufacturer: int
    recalled: bool = False


@dataclass
class WorkloadStats:
    operations: int = 0
    transactions: int = 0
    first_block: int = 0
    last_block: int = 0
    logs: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # operations by kind

    @property
    def blocks(self) -> int:
        return self.last_block - self.first_block + 1


class Workload:
    """Random valid operations on a deployed consortium, reproducible from `seed` (given the same starting chain)."""

    WEIGHTS: dict[str, float] = {
        "register": 9, "ship": 14, "receive": 12, "cancel": 3, "sell": 4, "install": 5, "remove": 2,
        "quarantine": 3, "release": 2, "scrap": 2, "recycle": 2, "recall": 1, "registry": 6,
        "document": 5, "batch": 3, "nonce": 3,
    }  # fmt: skip

    def __init__(
        self, ledger: Ledger, *, seed: int, txs_per_block: tuple[int, int] = (1, 8), max_batch: int = MAX_BATCH, small_share: float = 0.3
    ) -> None:
        """`txs_per_block`: the range a block's transaction count is drawn from; `small_share`: the share of bulk
        calls of at most 10 parts (the others take 1 to `max_batch`)."""
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.rpc = Rpc(ledger.w3.provider.endpoint_uri)  # type: ignore[attr-defined]
        self.txs_per_block = txs_per_block
        self.max_batch = max_batch
        self.small_share = small_share
        self.stats = WorkloadStats()
        self._tag = f"{seed % 1000:03d}{self.rng.randrange(36**3):03x}"  # serials unique to this run
        self._serials = itertools.count(1)
        self._names = itertools.count(1)
        self._pending = 0
        self._block_size = self.rng.randint(*txs_per_block)
        self._domain = read_domain(ledger.evidence)
        self.accounts: dict[str, LocalAccount] = {account.address: account for account in map(dev_account, range(ANVIL_ACCOUNTS))}
        self.orgs: dict[int, OrgModel] = {}
        for org in ledger.orgs.values():
            roles, suspended = ledger.registry.functions.organisation(org.id).call()
            self.orgs[org.id] = OrgModel(org.id, org.name, roles, suspended, list(org.keys))
        self.org_count = ledger.registry.functions.organisationCount().call()
        assert self.org_count == len(self.orgs), "the workload starts from the consortium build_ledger registers"
        self.lots: dict[int, LotModel] = {}
        self.lot_numbers: dict[tuple[int, str], int] = {}
        self.lot_count = len(ledger.parts.events.LotOpened.get_logs(from_block=0))
        self.parts: dict[bytes, PartModel] = {}
        self.held: dict[tuple[int, PartStatus], dict[bytes, None]] = {}  # (custodian, status) -> parts, in order
        self.incoming: dict[int, dict[bytes, None]] = {}  # recipient -> parts in transit to it
        self.documents: list[bytes] = []
        self.used_nonces: dict[bytes, set[int]] = {}  # nonce -> organisations that used or cancelled it
        self.calls = {name: getattr(self, f"_{name}") for name in self.WEIGHTS}
        self._encoders: dict[tuple[str, str], Callable[[list[Any]], bytes]] = {}

    # --- driving ------------------------------------------------------------------------------------------------

    def run(self, operations: int) -> WorkloadStats:
        """Sends operations until `operations` more were made, mines them, checks every receipt; the totals so far."""
        self.rpc.call("anvil_autoImpersonateAccount", [True])
        self.rpc.call("evm_setAutomine", [False])
        first_block = int(self.rpc.call("eth_blockNumber", []), 16) + 1
        sent_before = self.stats.transactions
        names, weights = list(self.WEIGHTS), list(self.WEIGHTS.values())
        try:
            target = self.stats.operations + operations
            while self.stats.operations < target:
                name = self.rng.choices(names, weights)[0]
                before = self.stats.operations
                self.calls[name]()
                self.stats.kinds[name] += self.stats.operations - before
            if self._pending:
                self._mine()
        finally:
            self.rpc.call("evm_setAutomine", [True])
        self.stats.first_block = self.stats.first_block or first_block
        self.stats.last_block = int(self.rpc.call("eth_blockNumber", []), 16)
        self._check_receipts(first_block, self.stats.transactions - sent_before)
        return self.stats

    def _send(self, sender: str, contract: Any, function: str, args: list[Any], *, gas: int, count: int) -> None:
        data = "0x" + self._encoder(contract, function)(args).hex()
        self.rpc.call("eth_sendTransaction", [{"from": sender, "to": contract.address, "data": data, "gas": hex(gas), "gasPrice": "0x0"}])
        self.stats.transactions += 1
        self.stats.operations += count
        self._pending += 1
        if self._pending >= self._block_size:
            self._mine()

    def _encoder(self, contract: Any, function: str) -> Callable[[list[Any]], bytes]:
        """Calldata by eth_abi directly: web3's encode_abi normalises every element and costs more than Anvil."""
        key = (contract.address, function)
        if key not in self._encoders:
            name = next(name for name, deployed in self.ledger.manifest.contracts.items() if deployed.address == contract.address)
            selector, types = function_spec(name, function)
            self._encoders[key] = lambda args: selector + encode(types, args)
        return self._encoders[key]

    def _mine(self) -> None:
        self.rpc.call("evm_mine", [])
        self._pending = 0
        self._block_size = self.rng.randint(*self.txs_per_block)

    def _check_receipts(self, first_block: int, sent: int) -> None:
        numbers = list(range(first_block, self.stats.last_block + 1))
        mined = 0
        for start in range(0, len(numbers), 100):
            for receipts in self.rpc.batch([("eth_getBlockReceipts", [hex(n)]) for n in numbers[start : start + 100]]):
                for receipt in receipts:
                    assert receipt["status"] == "0x1", f"the workload model is wrong: transaction {receipt['transactionHash']} reverted"
                    mined += 1
                    self.stats.logs += len(receipt["logs"])
        assert mined == sent, f"{sent} transactions sent, {mined} mined"

    # --- choosing -------------------------------------------------------------------------------------------------

    def _orgs(self, roles: int = 0) -> list[OrgModel]:
        return [org for org in self.orgs.values() if org.can_act(roles)]

    def _key(self, org: OrgModel) -> str:
        return self.rng.choice(org.keys)

    def _size(self, available: int) -> int:
        """How many parts a bulk call takes: often small, often large, always 1 to max_batch."""
        cap = min(available, self.max_batch)
        return self.rng.randint(1, min(cap, 10)) if self.rng.random() < self.small_share else self.rng.randint(1, cap)

    def _pick(self, pool: list[bytes]) -> list[bytes]:
        return self.rng.sample(pool, self._size(len(pool)))

    def _holding(self, org: int, *statuses: PartStatus) -> list[bytes]:
        return [pid for status in statuses for pid in self.held.get((org, status), ())]

    def _recalled(self, pid: bytes) -> bool:
        return self.lots[self.parts[pid].lot].recalled

    def _doc(self) -> bytes:
        return bytes(32) if self.rng.random() < 0.25 else self.rng.randbytes(32)

    @staticmethod
    def _gas(parts: int) -> int:
        return 250_000 + 45_000 * parts

    def _move(self, pid: bytes, status: PartStatus, custodian: int, recipient: int = 0) -> None:
        part = self.parts[pid]
        del self.held[(part.custodian, part.status)][pid]
        if part.status == PartStatus.IN_TRANSIT:
            del self.incoming[part.recipient][pid]
        part.status, part.custodian, part.recipient = status, custodian, recipient
        self.held.setdefault((custodian, status), {})[pid] = None
        if status == PartStatus.IN_TRANSIT:
            self.incoming.setdefault(recipient, {})[pid] = None

    def _part_op(self, roles: int, statuses: tuple[PartStatus, ...], function: str, to: PartStatus, *, not_recalled: bool = False, vins: bool = False) -> None:
        candidates = [(org, pool) for org in self._orgs(roles) if (pool := [p for p in self._holding(org.id, *statuses) if not (not_recalled and self._recalled(p))])]
        if not candidates:
            return
        org, pool = self.rng.choice(candidates)
        pids = self._pick(pool)
        args: list[Any] = [pids]
        if vins:
            args.append([self.rng.randbytes(32) for _ in pids])
        args.append(self._doc())
        self._send(self._key(org), self.ledger.parts, function, args, gas=self._gas(len(pids)), count=len(pids))
        for pid in pids:
            self._move(pid, to, org.id)

    # --- part operations -------------------------------------------------------------------------------------------

    def _register(self) -> None:
        makers = self._orgs(Role.MANUFACTURER)
        if not makers:
            return
        org = self.rng.choice(makers)
        code = self.rng.choice(LOT_CODES)
        number = self.lot_numbers.get((org.id, code))
        if number is not None and self.lots[number].recalled:
            return
        gtin = self.rng.choice(GTINS)
        serials = [ascii32(f"S{self._tag}{next(self._serials):07d}") for _ in range(self._size(self.max_batch))]
        opened = number is None
        self._send(self._key(org), self.ledger.parts, "registerParts", [gtin, ascii32(code), serials], gas=self._gas(len(serials)), count=len(serials) + opened)
        if opened:
            self.lot_count += 1
            number = self.lot_count
            self.lot_numbers[(org.id, code)] = number
            self.lots[number] = LotModel(number, org.id)
        for serial in serials:
            pid = part_id_unchecked(gtin, serial)
            self.parts[pid] = PartModel(PartStatus.IN_STOCK, org.id, 0, number)  # type: ignore[arg-type]
            self.held.setdefault((org.id, PartStatus.IN_STOCK), {})[pid] = None

    def _ship(self) -> None:
        senders = [(org, pool) for org in self._orgs(CUSTODY_ROLES) if (pool := self._holding(org.id, PartStatus.IN_STOCK))]
        if not senders:
            return
        org, pool = self.rng.choice(senders)
        recipients = [to for to in self.orgs.values() if to.id != org.id and not to.suspended and to.roles & CUSTODY_ROLES]
        if not recipients:
            return
        to = self.rng.choice(recipients)
        if not to.roles & Role.RECYCLER:
            pool = [p for p in pool if not self._recalled(p) or self.lots[self.parts[p].lot].manufacturer == to.id]
        if not pool:
            return
        pids = self._pick(pool)
        self._send(self._key(org), self.ledger.parts, "shipParts", [pids, to.id, self._doc()], gas=self._gas(len(pids)), count=len(pids))
        for pid in pids:
            self._move(pid, PartStatus.IN_TRANSIT, org.id, to.id)

    def _receive(self) -> None:
        receivers = [(org, list(pool)) for org in self._orgs(CUSTODY_ROLES) if (pool := self.incoming.get(org.id))]
        if not receivers:
            return
        org, pool = self.rng.choice(receivers)
        pids = self._pick(pool)
        self._send(self._key(org), self.ledger.parts, "receiveParts", [pids, self._doc()], gas=self._gas(len(pids)), count=len(pids))
        for pid in pids:
            self._move(pid, PartStatus.IN_STOCK, org.id)

    def _cancel(self) -> None:
        self._part_op(CUSTODY_ROLES, (PartStatus.IN_TRANSIT,), "cancelShipments", PartStatus.IN_STOCK)

    def _sell(self) -> None:
        self._part_op(Role.DISTRIBUTOR | Role.WORKSHOP, (PartStatus.IN_STOCK,), "sellParts", PartStatus.SOLD, not_recalled=True)

    def _install(self) -> None:
        self._part_op(Role.WORKSHOP, (PartStatus.IN_STOCK,), "installParts", PartStatus.INSTALLED, not_recalled=True, vins=True)

    def _remove(self) -> None:
        self._part_op(Role.WORKSHOP, (PartStatus.INSTALLED,), "removeParts", PartStatus.IN_STOCK)

    def _quarantine(self) -> None:
        self._part_op(CUSTODY_ROLES, (PartStatus.IN_STOCK,), "quarantineParts", PartStatus.QUARANTINED)

    def _release(self) -> None:
        self._part_op(CUSTODY_ROLES, (PartStatus.QUARANTINED,), "releaseParts", PartStatus.IN_STOCK)

    def _scrap(self) -> None:
        self._part_op(CUSTODY_ROLES, (PartStatus.IN_STOCK, PartStatus.QUARANTINED), "scrapParts", PartStatus.SCRAPPED)

    def _recycle(self) -> None:
        self._part_op(Role.RECYCLER, (PartStatus.IN_STOCK, PartStatus.QUARANTINED), "recycleParts", PartStatus.RECYCLED)

    def _recall(self) -> None:
        open_lots = [lot for lot in self.lots.values() if not lot.recalled]
        if not open_lots:
            return
        lot = self.rng.choice(open_lots)
        callers = [org for org in self._orgs(Role.REGULATOR | Role.MANUFACTURER) if org.roles & Role.REGULATOR or org.id == lot.manufacturer]
        if not callers:
            return
        org = self.rng.choice(callers)
        self._send(self._key(org), self.ledger.parts, "recallLot", [lot.number, self.rng.randbytes(32)], gas=200_000, count=1)
        lot.recalled = True

    # --- registry -------------------------------------------------------------------------------------------------

    def _new_key(self) -> str:
        account: LocalAccount = Account.from_key(self.rng.randbytes(32))
        self.accounts[account.address] = account
        return account.address

    def _add_key(self, org: OrgModel) -> None:
        key = self._new_key()
        site = ascii32(f"org{org.id}-site-{next(self._names)}")
        self._send(self.ledger.operator, self.ledger.registry, "addSiteKey", [org.id, key, site], gas=200_000, count=1)
        org.keys.append(key)

    def _registry(self) -> None:
        registry, operator = self.ledger.registry, self.ledger.operator
        choice = self.rng.choice(("org", "key", "key", "revoke", "revoke", "suspend", "reinstate", "roles"))
        orgs = list(self.orgs.values())
        if choice == "org":
            roles = int(self.rng.choice(NEW_ORG_ROLES))
            name = self.rng.choice(("Pièces Détachées", "Autoteile Müller", "部品商事", "Parts & Co")) + f" {next(self._names)}"
            self._send(operator, registry, "registerOrganisation", [roles, name], gas=200_000, count=1)
            self.org_count += 1
            org = self.orgs[self.org_count] = OrgModel(self.org_count, name, roles)
            for _ in range(self.rng.randint(1, 2)):
                self._add_key(org)
        elif choice == "key":
            self._add_key(self.rng.choice(orgs))
        elif choice == "revoke":
            owners = [org for org in orgs if len(org.keys) >= 2]
            if not owners:
                return
            org = self.rng.choice(owners)
            key = self.rng.choice(org.keys)
            siblings = [k for k in org.keys if k != key]
            by = operator if org.suspended or self.rng.random() < 0.5 else self.rng.choice(siblings)
            self._send(by, registry, "revokeSiteKey", [key], gas=200_000, count=1)
            org.keys.remove(key)
        elif choice == "suspend":
            active = [org for org in orgs if not org.suspended]
            if sum(org.suspended for org in orgs) >= 2 or not active:
                return
            org = self.rng.choice(active)
            self._send(operator, registry, "suspendOrganisation", [org.id], gas=200_000, count=1)
            org.suspended = True
        elif choice == "reinstate":
            suspended = [org for org in orgs if org.suspended]
            if not suspended:
                return
            org = self.rng.choice(suspended)
            self._send(operator, registry, "reinstateOrganisation", [org.id], gas=200_000, count=1)
            org.suspended = False
        else:
            org = self.rng.choice(orgs)
            roles = org.roles ^ int(self.rng.choice(ROLE_BITS))
            if roles == 0:
                return
            self._send(operator, registry, "setOrganisationRoles", [org.id, roles], gas=200_000, count=1)
            org.roles = roles

    # --- evidence -------------------------------------------------------------------------------------------------

    def _document(self) -> None:
        parties = self._orgs()
        if len(parties) < 2:
            return
        issuer, counterparty = self.rng.sample(parties, 2)
        attested = Attestation(
            docHash=self.rng.randbytes(32),
            docType=int(self.rng.choice(list(DocType))),
            issuer=issuer.id,
            counterparty=counterparty.id,
            previous=self.rng.choice(self.documents) if self.documents and self.rng.random() < 0.4 else bytes(32),
            partsRoot=self.rng.randbytes(32) if self.rng.random() < 0.5 else bytes(32),
            nonce=self.rng.randbytes(32),
            deadline=NO_DEADLINE,
        )
        typed = attestation_typed_data(self._domain, attested)
        signatures = [bytes(self.accounts[self._key(org)].sign_typed_data(full_message=typed).signature) for org in (issuer, counterparty)]
        submitter = self._key(self.rng.choice((issuer, counterparty)))
        self._send(submitter, self.ledger.evidence, "anchorDocument", [attested.as_tuple(), *signatures], gas=400_000, count=1)
        self.documents.append(attested.docHash)
        self.used_nonces[attested.nonce] = {issuer.id, counterparty.id}

    def _batch(self) -> None:
        orgs = self._orgs()
        if not orgs:
            return
        kind = self.rng.randbytes(32) if self.rng.random() < 0.15 else self.rng.choice(BATCH_KINDS).ljust(32, b"\0")
        args = [self.rng.randbytes(32), self.rng.randint(1, 1_000_000), kind]
        self._send(self._key(self.rng.choice(orgs)), self.ledger.evidence, "anchorBatch", args, gas=200_000, count=1)

    def _nonce(self) -> None:
        orgs = self._orgs()
        if not orgs:
            return
        org = self.rng.choice(orgs)
        others = [nonce for nonce, users in self.used_nonces.items() if org.id not in users]
        # Sometimes a nonce other organisations used: cancelling is per organisation.
        nonce = self.rng.choice(others) if others and self.rng.random() < 0.3 else keccak(self.rng.randbytes(32))
        self._send(self._key(org), self.ledger.evidence, "cancelNonce", [nonce], gas=200_000, count=1)
        self.used_nonces.setdefault(nonce, set()).add(org.id)
