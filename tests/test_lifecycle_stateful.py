"""Stateful property test of the PartLedger lifecycle against a pure-Python model.

Hypothesis drives random sequences of ledger operations (register, ship, receive, cancel, sell, install, remove,
quarantine, release, scrap, recycle, recall, key revocation, suspension) by random site keys, right and wrong ones,
over a small pool of parts so that collisions and odd states are frequent. After every step it checks that

(a) the chain accepted the call exactly when the model did;
(b) a rejected call failed with the custom error, and the arguments, the model predicts (the contract asks the
    registry about the caller first, then checks the recipient of a shipment, then the batch shape, then each part
    in list order, reporting the first that fails);
(c) every part of the pool, every lot and every lot number on chain equals the model;
(d) an accepted call emitted exactly the events the model predicts (one operation event carrying exactly the ids
    operated, plus LotOpened on a lot's first registration), and nothing else.

Each example runs on an Anvil snapshot of the session's freshly deployed consortium and is rolled back afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_utils import event_abi_to_log_topic, keccak
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from web3.contract import Contract
from web3.types import TxReceipt

from partledger.errors import ContractRevert
from partledger.ids import ascii32, part_id_unchecked
from partledger.model import CUSTODY_ROLES, PartStatus, Role
from tests.chainkit import GTIN_A, GTIN_B, Ledger, ViewBatch, revert_to, snapshot
from tests.seed import run_in_rounds

pytestmark = [pytest.mark.chain, pytest.mark.heavy]

STEPS = 20  # stateful_step_count; max_examples comes from the loaded profile ("ci": 200)
ROUNDS = 3  # rounds of max_examples sequences at most, until a revoked key has tried to act (test_lifecycle_matches_model)

GTINS = (int(GTIN_A), int(GTIN_B))
# Serials no other test uses, so that a chain left dirty by another test cannot collide with the pool.
SERIALS = tuple(ascii32(f"STM-{index}") for index in range(1, 5))
LOT_CODES = (ascii32("STM-L1"), ascii32("STM-L2"))
POOL: tuple[tuple[int, bytes], ...] = tuple((gtin, serial) for gtin in GTINS for serial in SERIALS)
POOL_IDS: tuple[bytes, ...] = tuple(part_id_unchecked(gtin, serial) for gtin, serial in POOL)
ZERO32 = bytes(32)
ZERO15 = bytes(15)

MANUFACTURER = int(Role.MANUFACTURER)
DISTRIBUTOR = int(Role.DISTRIBUTOR)
WORKSHOP = int(Role.WORKSHOP)
RECYCLER = int(Role.RECYCLER)
REGULATOR = int(Role.REGULATOR)
CUSTODY = int(CUSTODY_ROLES)

NONE, IN_STOCK, IN_TRANSIT, SOLD, INSTALLED, QUARANTINED, SCRAPPED, RECYCLED = (
    PartStatus.NONE,
    PartStatus.IN_STOCK,
    PartStatus.IN_TRANSIT,
    PartStatus.SOLD,
    PartStatus.INSTALLED,
    PartStatus.QUARANTINED,
    PartStatus.SCRAPPED,
    PartStatus.RECYCLED,
)

# What happened, per rule and outcome, across the whole run (printed at the end; `pytest -s` shows it).
STATS: Counter[tuple[str, str]] = Counter()
RUN: Counter[str] = Counter()
TRIED: Counter[tuple[str, str]] = Counter()


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


class Revert(Exception):
    """The model's prediction that the call reverts with this custom error."""

    def __init__(self, name: str, *args: Any) -> None:
        super().__init__(f"{name}{args}")
        self.name = name
        self.args_ = args


@dataclass(frozen=True)
class PartModel:
    status: PartStatus = NONE
    custodian: int = 0
    recipient: int = 0
    lot: int = 0
    vin_tag: bytes = ZERO15


@dataclass
class LotModel:
    manufacturer: int
    recalled: bool = False


@dataclass(frozen=True)
class Transition:
    """A plain status change of parts held by the caller (PartLedger._transition)."""

    function: str
    roles: int
    from_statuses: frozenset[PartStatus]
    to_status: PartStatus
    blocked_by_recall: bool
    event: str
    hash_name: str = "docHash"


TRANSITIONS = {
    "cancel": Transition("cancelShipments", CUSTODY, frozenset({IN_TRANSIT}), IN_STOCK, False, "ShipmentsCancelled"),
    "sell": Transition("sellParts", DISTRIBUTOR | WORKSHOP, frozenset({IN_STOCK}), SOLD, True, "PartsSold"),
    "remove": Transition("removeParts", WORKSHOP, frozenset({INSTALLED}), IN_STOCK, False, "PartsRemoved"),
    "quarantine": Transition(
        "quarantineParts", CUSTODY, frozenset({IN_STOCK}), QUARANTINED, False, "PartsQuarantined", "reasonHash"
    ),
    "release": Transition("releaseParts", CUSTODY, frozenset({QUARANTINED}), IN_STOCK, False, "PartsReleased"),
    "scrap": Transition("scrapParts", CUSTODY, frozenset({IN_STOCK, QUARANTINED}), SCRAPPED, False, "PartsScrapped"),
    "recycle": Transition(
        "recycleParts", RECYCLER, frozenset({IN_STOCK, QUARANTINED}), RECYCLED, False, "PartsRecycled"
    ),
}

# How the opening drives parts: the target status and, past the manufacturer, the organisation that takes them.
OPENING_TARGETS = {
    "installed": "workshop",
    "in transit": "warehouse",
    "sold": "distributor",
    "received": "workshop2",
    "quarantined": "",
    "recycled": "recycler",
    "scrapped": "",
}
PART_OPERATIONS = ("ship", "receive", "install", *TRANSITIONS)
# The statuses each operation accepts, as the generator sees them to aim at refusals. Deliberately restated rather
# than taken from TRANSITIONS: a mistake in the model must not steer the generator away from the cases showing it.
ACCEPTS = {
    "ship": frozenset({IN_STOCK}),
    "receive": frozenset({IN_TRANSIT}),
    "install": frozenset({IN_STOCK}),
    "cancel": frozenset({IN_TRANSIT}),
    "sell": frozenset({IN_STOCK}),
    "remove": frozenset({INSTALLED}),
    "quarantine": frozenset({IN_STOCK}),
    "release": frozenset({QUARANTINED}),
    "scrap": frozenset({IN_STOCK, QUARANTINED}),
    "recycle": frozenset({IN_STOCK, QUARANTINED}),
}
ANY_OPERATIONS = ("register", *PART_OPERATIONS, "empty_batch")


def _rotated(values: Sequence[Any], by: int) -> list[Any]:
    by %= len(values)
    return [*values[by:], *values[:by]]


def valid_gtin(gtin: int) -> bool:
    """PartLedger._requireValidGtin, restated: 1..1e14-1 with a correct GS1 check digit."""
    if gtin <= 0 or gtin >= 10**14:
        return False
    rest, total = gtin // 10, 0
    for position in range(13):
        total += (rest % 10) * (3 if position % 2 == 0 else 1)
        rest //= 10
    return (10 - total % 10) % 10 == gtin % 10


@dataclass
class Outcome:
    """A predicted success: the events the receipt must hold, and how the model changes once it is mined."""

    events: list[tuple[Contract, str, dict[str, Any]]]
    commit: Callable[[TxReceipt], None]


@dataclass
class Model:
    """The ledger and the parts of the registry it depends on."""

    operator: str
    key_org: dict[str, int]
    roles: dict[int, int]
    org_count: int
    lot_count: int
    parts: dict[bytes, PartModel] = field(default_factory=lambda: {pid: PartModel() for pid in POOL_IDS})
    lots: dict[int, LotModel] = field(default_factory=dict)
    lot_numbers: dict[tuple[int, bytes], int] = field(default_factory=dict)
    revoked: dict[str, int] = field(default_factory=dict)
    suspended: set[int] = field(default_factory=set)

    # -- registry --------------------------------------------------------------------------------------------

    def authorize(self, key: str, any_of: int) -> tuple[int, int]:
        org = self.key_org.get(key)
        if org is None:
            raise Revert("ConsortiumRegistryUnknownKey", key)
        if key in self.revoked:
            raise Revert("ConsortiumRegistryKeyRevoked", key, self.revoked[key])
        if org in self.suspended:
            raise Revert("ConsortiumRegistryOrganisationSuspended", org)
        roles = self.roles[org]
        if any_of and not roles & any_of:
            raise Revert("ConsortiumRegistryMissingRole", org, any_of)
        return org, roles

    def require_active(self, org: int) -> int:
        if not 1 <= org <= self.org_count:
            raise Revert("ConsortiumRegistryUnknownOrganisation", org)
        if org in self.suspended:
            raise Revert("ConsortiumRegistryOrganisationSuspended", org)
        return self.roles[org]

    # -- ledger helpers --------------------------------------------------------------------------------------

    def recalled(self, lot: int) -> bool:
        return lot in self.lots and self.lots[lot].recalled

    def view(self, part: PartModel) -> tuple[Any, ...]:
        """What PartLedger.part() must return for this part."""
        return (int(part.status), part.custodian, part.recipient, part.lot, part.vin_tag, self.recalled(part.lot))

    @staticmethod
    def wrong_status(pid: bytes, status: PartStatus) -> Revert:
        if status == NONE:
            return Revert("PartLedgerUnknownPart", pid)
        return Revert("PartLedgerWrongStatus", pid, int(status))

    def held(self, parts: dict[bytes, PartModel], pid: bytes, statuses: frozenset[PartStatus], org: int) -> PartModel:
        current = parts.get(pid, PartModel())
        if current.status not in statuses:
            raise self.wrong_status(pid, current.status)
        if current.custodian != org:
            raise Revert("PartLedgerNotCustodian", pid, current.custodian, org)
        return current

    def _commit_parts(self, parts: dict[bytes, PartModel]) -> Callable[[TxReceipt], None]:
        def commit(_receipt: TxReceipt) -> None:
            self.parts.update(parts)

        return commit


# ----------------------------------------------------------------------------------------------------------------
# Reading the chain
# ----------------------------------------------------------------------------------------------------------------


def _normalise(value: Any) -> Any:
    """Comparable form of decoded values: addresses lower-cased, bytes-likes as bytes, sequences as tuples."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, (list, tuple)):
        return tuple(_normalise(item) for item in value)
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in value.items()}
    return value


# ----------------------------------------------------------------------------------------------------------------
# The state machine
# ----------------------------------------------------------------------------------------------------------------


class LifecycleMachine(RuleBasedStateMachine):
    ledger: Ledger  # set by the test before the machine runs
    start: ChainStart  # read by the test before the machine runs
    views: ViewBatch
    topics: dict[bytes, tuple[Contract, str]]

    def __init__(self) -> None:
        super().__init__()
        ledger = self.ledger
        self.w3 = ledger.w3
        self.snapshot_id = snapshot(self.w3)
        RUN["sequences"] += 1
        self.step = 0
        self.revocations = 0
        self.forced_sender: str | None = None  # set while a revoked key tries its luck
        self.registry_changes = 0
        orgs = list(ledger.orgs.values())
        self.org_keys = {org.id: list(org.keys) for org in orgs}
        self.unknown_key = ledger.spare_keys[0]  # an unlocked account the registry never heard of
        self.actors = [key for org in orgs for key in org.keys] + [self.unknown_key]
        self.org_by_name = {org.name: org.id for org in orgs}
        # Hypothesis favours the first element of sampled_from (and 0 of integers), two to three times over the
        # others, so these orders put first what keeps a sequence going: downstream recipients, keys and
        # organisations the lifecycle can spare.
        self.downstream_first = [
            org.id
            for org in sorted(orgs, key=lambda org: (not org.roles & Role.DISTRIBUTOR, not org.roles & Role.WORKSHOP))
            if org.roles & CUSTODY_ROLES
        ]
        self.revocable = [*orgs[0].keys[1:], *(key for org in orgs[::-1] for key in org.keys[:1]), *orgs[0].keys[:1]]
        self.revocable.append(self.unknown_key)
        self.suspendable = [org.id for org in sorted(orgs, key=lambda org: (org.roles & CUSTODY_ROLES != 0, -org.id))]
        self.bystanders = [
            key for org in orgs if not org.roles & (Role.MANUFACTURER | Role.REGULATOR) for key in org.keys
        ] + [self.unknown_key]
        self.manufacturers = [org.id for org in orgs if org.roles & Role.MANUFACTURER]
        self.model = Model(
            operator=ledger.operator,
            key_org={key: org.id for org in orgs for key in org.keys},
            roles=dict(self.start.roles),
            org_count=self.start.org_count,
            lot_count=self.start.lots,
            revoked=dict(self.start.revoked),
            suspended=set(self.start.suspended),
        )

    def teardown(self) -> None:
        revert_to(self.w3, self.snapshot_id)

    # -- helpers ---------------------------------------------------------------------------------------------

    def _doc(self) -> bytes:
        return keccak(text=f"doc-{self.step}")

    def _execute(
        self, label: str, sender: str, call: Any, predict: Callable[[], Outcome], ids: list[bytes] | None = None
    ) -> TxReceipt | None:
        """Sends `call` from `sender` and checks (a), (b) and (d) against `predict`."""
        self.step += 1
        if ids:  # coverage of the operation x status matrix, by the first part named
            TRIED[(label, self.model.parts[ids[0]].status.name)] += 1
        try:
            outcome: Outcome | None = predict()
            expected: Revert | None = None
        except Revert as revert:
            outcome, expected = None, revert
        try:
            receipt = self.ledger.act(sender, call)
        except ContractRevert as error:
            STATS[(label, error.name)] += 1
            if self.forced_sender is not None:
                RUN["revoked key refused"] += 1
                assert error.name == "ConsortiumRegistryKeyRevoked", f"{label} by a revoked key: {error}"
            assert expected is not None, f"{label}: the model accepts it, the chain reverted with {error}"
            assert (error.name, _normalise(error.args_)) == (expected.name, _normalise(expected.args_)), (
                f"{label}: the model predicts {expected}, the chain reverted with {error}"
            )
            return None
        STATS[(label, "ok")] += 1
        assert self.forced_sender is None, f"{label}: the revoked key {self.forced_sender} was accepted"
        assert outcome is not None, f"{label}: the model predicts {expected}, the chain accepted it"
        self._check_events(label, receipt, outcome.events)
        outcome.commit(receipt)
        return receipt

    def _check_events(
        self, label: str, receipt: TxReceipt, expected: list[tuple[Contract, str, dict[str, Any]]]
    ) -> None:
        logs = receipt["logs"]
        seen = [self.topics.get(bytes(log["topics"][0]), (None, "?"))[1] for log in logs]
        assert seen == [name for _, name, _ in expected], f"{label}: events {seen}, expected {expected}"
        for log, (contract, name, args) in zip(logs, expected, strict=True):
            assert log["address"] == contract.address, f"{label}: {name} from {log['address']}"
            decoded = contract.events[name]().process_log(log)
            assert _normalise(dict(decoded["args"])) == _normalise(args), (
                f"{label}: {name} carries {dict(decoded['args'])}, expected {args}"
            )

    def _draw_actor(self, data: st.DataObject, org: int | None) -> str:
        """Mostly a key of the organisation that could plausibly act (`org`), otherwise any key, the unknown too."""
        if self.forced_sender is not None:
            return self.forced_sender
        if org and data.draw(st.integers(0, 9), label="plausible actor?") < 7:
            return data.draw(st.sampled_from(self.org_keys[org]), label="actor")
        return data.draw(st.sampled_from(self.actors), label="actor")

    def _group(self, pid: bytes) -> tuple[Any, ...]:
        part = self.model.parts[pid]
        return (part.status, part.custodian, part.recipient, self.model.recalled(part.lot))

    def _draw_parts(
        self, data: st.DataObject, prefer: frozenset[PartStatus], holder_roles: int = 0, first: bytes | None = None
    ) -> list[bytes]:
        """1 to 5 part ids: mostly starting with a part in a `prefer` status (held by an organisation with one of
        `holder_roles`, when there is such a part) and continuing with parts in the same state (so that bulk calls
        can succeed), sometimes any part of the pool, sometimes a duplicate."""
        count = data.draw(st.sampled_from((1, 1, 1, 2, 3, 4, 5)), label="count")
        candidates = [pid for pid in POOL_IDS if self.model.parts[pid].status in prefer]
        held = [pid for pid in candidates if self.model.roles.get(self.model.parts[pid].custodian, 0) & holder_roles]
        candidates = held or candidates
        if first is None:
            # Mostly a part the operation suits; else a registered part (wrong status, custodian or recipient);
            # else any part of the pool (unknown ones included).
            roll = data.draw(st.integers(0, 9), label="which part?")
            wrong = sorted({self.model.parts[pid].status for pid in POOL_IDS} - prefer - {NONE})
            if 7 <= roll <= 8 and wrong:  # a status the operation does not accept, each as likely as the others
                status = data.draw(st.sampled_from(wrong), label="wrong status")
                first = data.draw(
                    st.sampled_from([pid for pid in POOL_IDS if self.model.parts[pid].status == status]), label="part"
                )
            else:
                first = data.draw(st.sampled_from(candidates if roll < 7 and candidates else POOL_IDS), label="part")
        chosen = [first]
        group = self._group(first)
        while len(chosen) < count:
            roll = data.draw(st.integers(0, 9), label="next part how?")
            same = [pid for pid in POOL_IDS if pid not in chosen and self._group(pid) == group]
            if roll < 7 and same:
                chosen.append(data.draw(st.sampled_from(same), label="part"))
            elif roll == 7:
                chosen.append(data.draw(st.sampled_from(chosen), label="duplicate part"))
            else:
                chosen.append(data.draw(st.sampled_from(POOL_IDS), label="part"))
        return chosen

    # -- the operations: predict, send, compare --------------------------------------------------------------

    def _register(self, sender: str, gtin: int, lot_code: bytes, serials: list[bytes]) -> None:
        model = self.model

        def predict() -> Outcome:
            org, _ = model.authorize(sender, MANUFACTURER)
            if not serials:
                raise Revert("PartLedgerEmptyBatch")
            if not valid_gtin(gtin):
                raise Revert("PartLedgerInvalidGtin", gtin)
            if lot_code == ZERO32:
                raise Revert("PartLedgerEmptyLotCode")
            lot = model.lot_numbers.get((org, lot_code))
            opened = lot is None
            if lot is None:
                lot = model.lot_count + 1
            elif model.lots[lot].recalled:
                raise Revert("PartLedgerLotRecalled", lot)
            parts = dict(model.parts)
            for index, serial in enumerate(serials):
                if serial == ZERO32:
                    raise Revert("PartLedgerEmptySerial", index)
                pid = part_id_unchecked(gtin, serial)
                if parts.get(pid, PartModel()).status != NONE:
                    raise Revert("PartLedgerPartAlreadyRegistered", pid)
                parts[pid] = PartModel(IN_STOCK, org, 0, lot, ZERO15)
            events = [(self.ledger.parts, "LotOpened", {"lot": lot, "manufacturer": org, "lotCode": lot_code})] * opened
            events.append(
                (
                    self.ledger.parts,
                    "PartsRegistered",
                    {"lot": lot, "manufacturer": org, "siteKey": sender, "gtin": gtin, "serials": serials},
                )
            )

            def commit(_receipt: TxReceipt) -> None:
                model.parts.update(parts)
                if opened:
                    model.lot_count = lot
                    model.lot_numbers[(org, lot_code)] = lot
                    model.lots[lot] = LotModel(org)

            return Outcome(events, commit)

        self._execute("register", sender, self.ledger.parts.functions.registerParts(gtin, lot_code, serials), predict)

    def _ship(self, sender: str, ids: list[bytes], to: int) -> None:
        model, doc = self.model, self._doc()

        def predict() -> Outcome:
            org, _ = model.authorize(sender, CUSTODY)
            to_roles = model.require_active(to)
            if not to_roles & CUSTODY:
                raise Revert("PartLedgerRecipientCannotHoldParts", to)
            if to == org:
                raise Revert("PartLedgerShipmentToSelf", to)
            if not ids:
                raise Revert("PartLedgerEmptyBatch")
            to_recycler = bool(to_roles & RECYCLER)
            parts = dict(model.parts)
            for pid in ids:
                held = model.held(parts, pid, frozenset({IN_STOCK}), org)
                if not to_recycler and model.recalled(held.lot) and model.lots[held.lot].manufacturer != to:
                    raise Revert("PartLedgerPartRecalled", pid, held.lot)
                parts[pid] = PartModel(IN_TRANSIT, org, to, held.lot, ZERO15)
            args = {"from": org, "to": to, "siteKey": sender, "docHash": doc, "partIds": ids}
            return Outcome([(self.ledger.parts, "PartsShipped", args)], model._commit_parts(parts))

        self._execute("ship", sender, self.ledger.parts.functions.shipParts(ids, to, doc), predict, ids)

    def _receive(self, sender: str, ids: list[bytes]) -> None:
        model, doc = self.model, self._doc()

        def predict() -> Outcome:
            org, _ = model.authorize(sender, CUSTODY)
            if not ids:
                raise Revert("PartLedgerEmptyBatch")
            parts = dict(model.parts)
            for pid in ids:
                shipped = parts[pid]
                if shipped.status != IN_TRANSIT:
                    raise model.wrong_status(pid, shipped.status)
                if shipped.recipient != org:
                    raise Revert("PartLedgerNotRecipient", pid, shipped.recipient, org)
                parts[pid] = PartModel(IN_STOCK, org, 0, shipped.lot, ZERO15)
            args = {"orgId": org, "siteKey": sender, "docHash": doc, "partIds": ids}
            return Outcome([(self.ledger.parts, "PartsReceived", args)], model._commit_parts(parts))

        self._execute("receive", sender, self.ledger.parts.functions.receiveParts(ids, doc), predict, ids)

    def _install(self, sender: str, ids: list[bytes], vins: list[bytes]) -> None:
        model, doc = self.model, self._doc()

        def predict() -> Outcome:
            org, _ = model.authorize(sender, WORKSHOP)
            if not ids:
                raise Revert("PartLedgerEmptyBatch")
            if len(vins) != len(ids):
                raise Revert("PartLedgerLengthMismatch", len(ids), len(vins))
            parts = dict(model.parts)
            for pid, vin in zip(ids, vins, strict=True):
                held = model.held(parts, pid, frozenset({IN_STOCK}), org)
                if model.recalled(held.lot):
                    raise Revert("PartLedgerPartRecalled", pid, held.lot)
                parts[pid] = PartModel(INSTALLED, org, 0, held.lot, vin[:15])
            args = {"orgId": org, "siteKey": sender, "docHash": doc, "partIds": ids, "vinHashes": vins}
            return Outcome([(self.ledger.parts, "PartsInstalled", args)], model._commit_parts(parts))

        self._execute("install", sender, self.ledger.parts.functions.installParts(ids, vins, doc), predict, ids)

    def _transition(self, label: str, sender: str, ids: list[bytes]) -> None:
        model, doc, spec = self.model, self._doc(), TRANSITIONS[label]

        def predict() -> Outcome:
            org, _ = model.authorize(sender, spec.roles)
            if not ids:
                raise Revert("PartLedgerEmptyBatch")
            parts = dict(model.parts)
            for pid in ids:
                held = model.held(parts, pid, spec.from_statuses, org)
                if spec.blocked_by_recall and model.recalled(held.lot):
                    raise Revert("PartLedgerPartRecalled", pid, held.lot)
                parts[pid] = PartModel(spec.to_status, org, 0, held.lot, ZERO15)
            args = {"orgId": org, "siteKey": sender, spec.hash_name: doc, "partIds": ids}
            return Outcome([(self.ledger.parts, spec.event, args)], model._commit_parts(parts))

        call = getattr(self.ledger.parts.functions, spec.function)(ids, doc)
        self._execute(label, sender, call, predict, ids)

    def _transition_rule(self, label: str, data: st.DataObject, first: bytes | None = None) -> None:
        spec = TRANSITIONS[label]
        ids = self._draw_parts(data, spec.from_statuses, 0 if spec.roles == CUSTODY else spec.roles, first)
        sender = self._draw_actor(data, self.model.parts[ids[0]].custodian)
        self._transition(label, sender, ids)

    # -- rules -----------------------------------------------------------------------------------------------

    @initialize(data=st.data())
    def opening(self, data: st.DataObject) -> None:
        """Every sequence starts with parts in the manufacturers' stock, some of them already driven to another
        status (in transit, received downstream, sold, installed, quarantined, scrapped, recycled), so that the
        random steps meet every status early. All of it goes through the same checked path as every step."""
        for maker, gtin in zip(self.manufacturers, GTINS, strict=False):
            at_least = int(maker == self.manufacturers[0])
            serials = data.draw(
                st.lists(st.sampled_from(SERIALS), min_size=at_least, max_size=4, unique=True), label="serials"
            )
            if serials:
                lot_code = data.draw(st.sampled_from(LOT_CODES), label="lot code")
                self._register(self.org_keys[maker][0], gtin, lot_code, serials)
        targets = st.lists(st.sampled_from(tuple(OPENING_TARGETS)), min_size=1, max_size=3)
        for target in data.draw(targets, label="opening targets"):
            stock = [pid for pid in POOL_IDS if self.model.parts[pid].status == IN_STOCK]
            if not stock:
                break
            first = data.draw(st.sampled_from(stock), label="part")
            holder = self.model.parts[first].custodian
            more = [pid for pid in stock if pid != first and self.model.parts[pid].custodian == holder]
            ids = [first, *data.draw(st.lists(st.sampled_from(more), max_size=2, unique=True) if more else st.just([]))]
            self._drive(ids, holder, target)

    def _drive(self, ids: list[bytes], holder: int, target: str) -> None:
        """The plausible path of `ids` from `holder`'s stock to `target`."""
        key = self.org_keys[holder][0]
        if target in ("quarantined", "scrapped"):
            return self._transition({"quarantined": "quarantine", "scrapped": "scrap"}[target], key, ids)
        to = self.org_by_name[OPENING_TARGETS[target]]
        if to == holder:
            return
        self._ship(key, ids, to)
        if target == "in transit":
            return
        self._receive(self.org_keys[to][0], ids)
        if target == "sold":
            self._transition("sell", self.org_keys[to][0], ids)
        elif target == "installed":
            self._install(self.org_keys[to][0], ids, [keccak(text=f"vin-{self.step}-{i}") for i in range(len(ids))])
        elif target == "recycled":
            self._transition("recycle", self.org_keys[to][0], ids)

    @rule(data=st.data())
    def advance(self, data: st.DataObject) -> None:
        """A likely next step of some live part, by a key of the organisation that would take it: the rule that
        carries parts deep into the lifecycle (shipped on, received, sold, installed, removed, quarantined...).
        Everything is still checked against the model; recalls, revoked keys and suspensions make it fail."""
        model = self.model
        live = [pid for pid in POOL_IDS if model.parts[pid].status in (IN_STOCK, IN_TRANSIT, INSTALLED, QUARANTINED)]
        if not live:
            return self._any_register(data)
        if data.draw(st.integers(0, 9), label="leave installed parts?") < 9:  # let them be, mostly: the other
            live = [pid for pid in live if model.parts[pid].status != INSTALLED] or live  # rules remove them
        # Favour the parts furthest along: in transit, or held past the manufacturer.
        onward = [
            pid
            for pid in live
            if model.parts[pid].status == IN_TRANSIT or model.parts[pid].custodian not in self.manufacturers
        ]
        if onward and data.draw(st.integers(0, 3), label="onward?") < 3:
            live = onward
        ids = self._draw_parts(data, frozenset(), first=data.draw(st.sampled_from(live), label="part"))
        part = model.parts[ids[0]]
        if part.status == IN_TRANSIT:  # received; or cancelled; or the near misses: mixing up the two ends
            roll = data.draw(st.integers(0, 9), label="receive or cancel?")
            recipient_key = data.draw(st.sampled_from(self.org_keys[part.recipient]), label="recipient key")
            shipper_key = data.draw(st.sampled_from(self.org_keys[part.custodian]), label="shipper key")
            if roll < 7 or roll == 9:
                return self._receive(recipient_key if roll < 7 else shipper_key, ids)  # NotRecipient
            return self._transition("cancel", shipper_key if roll == 7 else recipient_key, ids)  # NotCustodian
        if part.custodian == 0:  # the draw fell on an unregistered part
            return self._transition("scrap", data.draw(st.sampled_from(self.actors), label="actor"), ids)
        sender = data.draw(st.sampled_from(self.org_keys[part.custodian]), label="actor")
        roles = model.roles[part.custodian]
        if part.status == INSTALLED:
            return self._transition("remove", sender, ids)
        if part.status == QUARANTINED:
            choices = ["release", "release", "scrap"] + ["recycle"] * bool(roles & RECYCLER)
            return self._transition(data.draw(st.sampled_from(choices), label="op"), sender, ids)
        if roles & WORKSHOP:
            choices = ["install", "sell", "ship", "install", "quarantine", "scrap"]
        elif roles & DISTRIBUTOR:
            choices = ["sell", "ship", "sell", "quarantine", "scrap"]
        elif roles & RECYCLER:
            choices = ["recycle", "ship", "quarantine", "recycle", "scrap"]
        else:
            choices = ["ship", "ship", "quarantine", "ship", "scrap"]
        operation = data.draw(st.sampled_from(choices), label="op")
        if operation == "ship":
            holders = [org for org in self.downstream_first if org != part.custodian]
            if model.recalled(part.lot):  # back to its manufacturer or to a recycler, mostly
                back = [model.lots[part.lot].manufacturer, self.org_by_name["recycler"]]
                holders = [org for org in back if org != part.custodian] + holders
            return self._ship(sender, ids, data.draw(st.sampled_from(holders), label="to"))
        if operation == "install":
            return self._install(sender, ids, [keccak(text=f"vin-{self.step}-{i}") for i in range(len(ids))])
        return self._transition(operation, sender, ids)

    def _any_register(self, data: st.DataObject) -> None:
        sender = self._draw_actor(data, data.draw(st.sampled_from(self.manufacturers), label="maker"))
        gtin = data.draw(st.sampled_from(GTINS), label="gtin")
        lot_code = data.draw(st.sampled_from(LOT_CODES), label="lot code")
        fresh = [serial for serial in SERIALS if self.model.parts[part_id_unchecked(gtin, serial)].status == NONE]
        count = data.draw(st.sampled_from((1, 1, 2, 3, 5)), label="count")
        serials = [
            data.draw(st.sampled_from(fresh if fresh and data.draw(st.integers(0, 9)) < 8 else SERIALS), label="serial")
            for _ in range(count)
        ]
        defect = data.draw(st.integers(0, 19), label="defect")
        if defect == 17:
            gtin = data.draw(st.sampled_from((gtin + 1 if gtin % 10 != 9 else gtin - 1, 0, 10**14)), label="bad gtin")
        elif defect == 18:
            lot_code = ZERO32
        elif defect == 19:
            serials.insert(data.draw(st.integers(0, len(serials)), label="at"), ZERO32)
        self._register(sender, gtin, lot_code, serials)

    def _any_ship(self, data: st.DataObject, first: bytes | None = None) -> None:
        ids = self._draw_parts(data, frozenset({IN_STOCK}), first=first)
        sender = self._draw_actor(data, self.model.parts[ids[0]].custodian)
        if data.draw(st.integers(0, 9), label="known recipient?") < 9:
            to = data.draw(st.integers(1, self.model.org_count), label="to")
        else:
            to = data.draw(st.sampled_from((0, self.model.org_count + 1)), label="to")
        self._ship(sender, ids, to)

    def _any_receive(self, data: st.DataObject, first: bytes | None = None) -> None:
        ids = self._draw_parts(data, frozenset({IN_TRANSIT}), first=first)
        part = self.model.parts[ids[0]]
        # The recipient, or the shipper (still the custodian) receiving its own shipment, or anyone.
        shipper = data.draw(st.integers(0, 2), label="the shipper?") == 2
        sender = self._draw_actor(data, part.custodian if shipper else part.recipient)
        self._receive(sender, ids)

    def _any_install(self, data: st.DataObject, first: bytes | None = None) -> None:
        ids = self._draw_parts(data, frozenset({IN_STOCK}), WORKSHOP, first)
        sender = self._draw_actor(data, self.model.parts[ids[0]].custodian)
        vins = [keccak(text=f"vin-{self.step}-{index}") for index in range(len(ids))]
        if data.draw(st.integers(0, 9), label="length mismatch?") == 9:
            vins = vins[:-1] if data.draw(st.booleans(), label="fewer?") else [*vins, keccak(text="extra")]
        self._install(sender, ids, vins)

    def _any_cancel(self, data: st.DataObject) -> None:
        self._transition_rule("cancel", data)

    def _any_sell(self, data: st.DataObject) -> None:
        self._transition_rule("sell", data)

    def _any_remove(self, data: st.DataObject) -> None:
        self._transition_rule("remove", data)

    def _any_quarantine(self, data: st.DataObject) -> None:
        self._transition_rule("quarantine", data)

    def _any_release(self, data: st.DataObject) -> None:
        self._transition_rule("release", data)

    def _any_scrap(self, data: st.DataObject) -> None:
        self._transition_rule("scrap", data)

    def _any_recycle(self, data: st.DataObject) -> None:
        self._transition_rule("recycle", data)

    def _any_empty_batch(self, data: st.DataObject) -> None:
        """Any operation with no part: the caller's key is still checked first (and a shipment's recipient)."""
        sender = self._draw_actor(data, None)
        operation = data.draw(st.sampled_from(("register", "ship", "receive", "install", *TRANSITIONS)), label="op")
        if operation == "register":
            self._register(sender, data.draw(st.sampled_from((*GTINS, 0)), label="gtin"), LOT_CODES[0], [])
        elif operation == "ship":
            self._ship(sender, [], data.draw(st.integers(0, self.model.org_count + 1), label="to"))
        elif operation == "receive":
            self._receive(sender, [])
        elif operation == "install":
            self._install(sender, [], [keccak(text="vin")] * data.draw(st.integers(0, 1), label="vins"))
        else:
            self._transition(operation, sender, [])

    @rule(data=st.data())
    def operate(self, data: st.DataObject) -> None:
        """Any operation on parts drawn from the pool, by a mostly plausible, sometimes arbitrary key: the rule
        that tries the wrong custodian, the wrong role, the wrong recipient, unknown and finished parts."""
        operation = data.draw(st.sampled_from(ANY_OPERATIONS), label="operation")
        if operation in TRANSITIONS:
            self._transition_rule(operation, data)
        else:
            getattr(self, f"_any_{operation}")(data)

    @rule(data=st.data())
    def operate_on_part(self, data: st.DataObject) -> None:
        """A registered part, whatever its status (each status present as likely as the others), and then any
        operation on it: sweeps the operation x status matrix, terminal, sold and installed parts included."""
        statuses = sorted({part.status for part in self.model.parts.values()} - {NONE})
        if not statuses:
            return self.operate(data)
        # Rotated by the step number: Hypothesis favours the first element, which would otherwise mostly be
        # IN_STOCK and "ship".
        status = data.draw(st.sampled_from(_rotated(statuses, self.step)), label="status")
        first = data.draw(
            st.sampled_from([pid for pid in POOL_IDS if self.model.parts[pid].status == status]), label="part"
        )
        operations = list(PART_OPERATIONS)
        if data.draw(st.integers(0, 4), label="refusing operation?") < 4:  # mostly one the status does not allow
            operations = [operation for operation in PART_OPERATIONS if status not in ACCEPTS[operation]]
        operation = data.draw(st.sampled_from(_rotated(operations, self.step)), label="operation")
        if operation in TRANSITIONS:
            self._transition_rule(operation, data, first)
        else:
            getattr(self, f"_any_{operation}")(data, first)

    @rule(data=st.data())
    def operate_on_another_part(self, data: st.DataObject) -> None:
        self.operate_on_part(data)

    # Hypothesis picks among rules about evenly; these aliases weight the steps towards advance (3/9) and
    # operate_on_part (2/9), leaving operate, recall, registry changes (capped) and revoked keys the rest.

    @rule(data=st.data())
    def advance_more(self, data: st.DataObject) -> None:
        self.advance(data)

    @rule(data=st.data())
    def advance_further(self, data: st.DataObject) -> None:
        self.advance(data)

    @precondition(lambda self: bool(self.model.revoked))
    @rule(data=st.data())
    def revoked_key_acts(self, data: st.DataObject) -> None:
        """A revoked key tries any operation: whatever it is, it must fail with ConsortiumRegistryKeyRevoked."""
        self.forced_sender = data.draw(st.sampled_from(sorted(self.model.revoked)), label="revoked key")
        try:
            if data.draw(st.integers(0, 9), label="recall?") == 9:
                self.recall(data)
            else:
                self.operate(data)
        finally:
            self.forced_sender = None

    @precondition(lambda self: self.registry_changes < 2)
    @rule(data=st.data())
    def registry_change(self, data: st.DataObject) -> None:
        """The operator revokes a site key (once per sequence, a later try hits a revoked or unknown key or revokes
        a second one), or suspends or reinstates an organisation. At most two per sequence: each cuts an
        organisation off, and the lifecycle needs them to go anywhere."""
        self.registry_changes += 1
        roll = data.draw(st.integers(0, 9), label="revoke?")
        if roll >= 7 and (self.revocations == 0 or roll == 9):
            self._revoke_key(data)
        else:
            self._toggle_suspension(data)

    @rule(data=st.data())
    def recall(self, data: st.DataObject) -> None:
        model, notice = self.model, self._doc()
        if model.lots and data.draw(st.integers(0, 9), label="known lot?") < 8:
            # Lots whose parts went furthest first: a recall matters most once parts are out in the trade.
            onward = Counter(
                part.lot for part in model.parts.values() if part.custodian and part.custodian not in self.manufacturers
            )
            lot = data.draw(st.sampled_from(sorted(model.lots, key=lambda n: (-onward[n], -n))), label="lot")
        else:
            lot = data.draw(st.sampled_from((0, model.lot_count + 1)), label="lot")
        roll = data.draw(st.integers(0, 9), label="who?")
        maker = model.lots[lot].manufacturer if lot in model.lots else self.manufacturers[0]
        if roll < 3:  # no say at all: MissingRole, UnknownKey
            sender = data.draw(st.sampled_from(self.bystanders), label="actor")
        elif roll < 5:  # another manufacturer: NotLotManufacturer, whether or not the lot is recalled already
            other = [key for org in self.manufacturers if org != maker for key in self.org_keys[org]]
            sender = data.draw(st.sampled_from(other), label="actor")
        elif roll < 8:
            sender = data.draw(st.sampled_from(self.org_keys[maker]), label="actor")
        else:
            sender = self.org_keys[self.org_by_name["regulator"]][0]
        sender = self.forced_sender or sender

        def predict() -> Outcome:
            org, roles = model.authorize(sender, MANUFACTURER | REGULATOR)
            if lot not in model.lots:
                raise Revert("PartLedgerUnknownLot", lot)
            if not roles & REGULATOR and model.lots[lot].manufacturer != org:
                raise Revert("PartLedgerNotLotManufacturer", lot, model.lots[lot].manufacturer, org)
            if model.lots[lot].recalled:
                raise Revert("PartLedgerLotRecalled", lot)

            def commit(_receipt: TxReceipt) -> None:
                model.lots[lot].recalled = True

            args = {"lot": lot, "orgId": org, "siteKey": sender, "noticeHash": notice}
            return Outcome([(self.ledger.parts, "LotRecalled", args)], commit)

        self._execute("recall", sender, self.ledger.parts.functions.recallLot(lot, notice), predict)

    def _revoke_key(self, data: st.DataObject) -> None:
        """The operator (sometimes a site key) revokes a site key (sometimes an unknown or revoked one)."""
        model = self.model
        key = data.draw(st.sampled_from(self.revocable), label="key to revoke")
        if data.draw(st.integers(0, 9), label="by operator?") < 8:
            sender = model.operator
        else:
            sender = data.draw(st.sampled_from(self.actors), label="revoker")

        def predict() -> Outcome:
            org = model.key_org.get(key)
            if org is None:
                raise Revert("ConsortiumRegistryUnknownKey", key)
            if key in model.revoked:
                raise Revert("ConsortiumRegistryKeyRevoked", key, model.revoked[key])
            if sender != model.operator:
                caller_org, _ = model.authorize(sender, 0)
                if caller_org != org:
                    raise Revert("ConsortiumRegistryUnauthorizedRevocation", sender, key)

            def commit(receipt: TxReceipt) -> None:
                model.revoked[key] = receipt["blockNumber"]
                self.revocations += 1

            args = {"orgId": org, "key": key, "revokedBy": sender}
            return Outcome([(self.ledger.registry, "SiteKeyRevoked", args)], commit)

        if self._execute("revoke", sender, self.ledger.registry.functions.revokeSiteKey(key), predict):
            info = self.ledger.registry.functions.siteKey(key).call()
            assert (info[0], info[3]) == (model.key_org[key], model.revoked[key])

    def _toggle_suspension(self, data: st.DataObject) -> None:
        """The operator suspends an organisation, or reinstates a suspended one."""
        model = self.model
        if model.suspended and data.draw(st.integers(0, 9), label="reinstate?") < 8:
            org = data.draw(st.sampled_from(sorted(model.suspended)), label="org")
        else:
            org = data.draw(st.sampled_from(self.suspendable), label="org")
        suspend = org not in model.suspended
        function = "suspendOrganisation" if suspend else "reinstateOrganisation"

        def predict() -> Outcome:
            def commit(_receipt: TxReceipt) -> None:
                (model.suspended.add if suspend else model.suspended.discard)(org)

            event = "OrganisationSuspended" if suspend else "OrganisationReinstated"
            return Outcome([(self.ledger.registry, event, {"orgId": org})], commit)

        call = getattr(self.ledger.registry.functions, function)(org)
        self._execute("suspend" if suspend else "reinstate", model.operator, call, predict)
        assert self.ledger.registry.functions.organisation(org).call()[1] == suspend

    # -- (c): the chain equals the model after every step ----------------------------------------------------

    @invariant()
    def chain_matches_model(self) -> None:
        model = self.model
        calls: list[tuple[str, tuple[Any, ...]]] = [("part", (pid,)) for pid in POOL_IDS]
        lot_range = range(1, model.lot_count + 2)  # one past the last lot must be unknown
        calls += [("lot", (lot,)) for lot in lot_range]
        combos = [(org, code) for org in self.manufacturers for code in LOT_CODES]
        calls += [("lotNumber", combo) for combo in combos]
        results = iter(self.views.run(calls))
        for (gtin, serial), pid in zip(POOL, POOL_IDS, strict=True):
            (view,) = next(results)
            part = model.parts[pid]
            expected = model.view(part)
            assert tuple(view) == expected, (
                f"step {self.step}: part {gtin}/{serial.rstrip(bytes(1)).decode()} is {view} on chain, "
                f"{expected} in the model"
            )
        for lot in lot_range:
            seen = tuple(next(results))
            if lot not in model.lots and lot <= model.lot_count:
                continue  # opened before this example (only if an earlier test left the chain dirty)
            expected_lot = (model.lots[lot].manufacturer, model.lots[lot].recalled) if lot in model.lots else (0, False)
            assert seen == expected_lot, f"step {self.step}: lot {lot} is {seen} on chain, {expected_lot} in the model"
        for combo in combos:
            (number,) = next(results)
            assert number == model.lot_numbers.get(combo, 0), f"step {self.step}: lotNumber{combo}"
        # Once in a while, the same view through web3's own call path (what the indexer and services use).
        if self.step % 4 == 0:
            pid = POOL_IDS[self.step // 4 % len(POOL_IDS)]
            part = model.parts[pid]
            expected = model.view(part)
            assert tuple(self.ledger.parts.functions.part(pid).call()) == expected


@dataclass(frozen=True)
class ChainStart:
    """The state every example starts from (and reverts to). On a fresh session chain it is build_ledger's
    consortium, all keys valid and no lot; whatever an earlier test may have left is read, not assumed."""

    org_count: int
    roles: dict[int, int]
    suspended: frozenset[int]
    revoked: dict[str, int]
    lots: int


def _chain_start(ledger: Ledger) -> ChainStart:
    registry = ledger.registry.functions
    org_count = registry.organisationCount().call()
    organisations = {org: registry.organisation(org).call() for org in range(1, org_count + 1)}
    revoked = {}
    for key in [key for org in ledger.orgs.values() for key in org.keys]:
        revoked_block = registry.siteKey(key).call()[3]
        if revoked_block:
            revoked[key] = revoked_block
    assert registry.siteKey(ledger.spare_keys[0]).call()[0] == 0, "the spare key was added to an organisation"
    for gtin, serial in POOL:
        assert ledger.parts.functions.part(part_id_unchecked(gtin, serial)).call()[0] == NONE, "pool part registered"
    lots = 0
    while ledger.parts.functions.lot(lots + 1).call()[0] != 0:
        lots += 1
    return ChainStart(
        org_count=org_count,
        roles={org: roles for org, (roles, _) in organisations.items()},
        suspended=frozenset(org for org, (_, suspended) in organisations.items() if suspended),
        revoked=revoked,
        lots=lots,
    )


@pytest.mark.timeout(1800)  # 80-250 s on an idle 2-core machine; 600 s was not enough at load average 10 (597 s in one run)
def test_lifecycle_matches_model(deployed: Ledger) -> None:
    LifecycleMachine.ledger = deployed
    LifecycleMachine.views = ViewBatch(deployed)
    LifecycleMachine.topics = {
        bytes(event_abi_to_log_topic(entry)): (contract, entry["name"])
        for contract in (deployed.parts, deployed.registry)
        for entry in contract.abi
        if entry.get("type") == "event"
    }
    LifecycleMachine.start = _chain_start(deployed)
    STATS.clear()
    RUN.clear()
    TRIED.clear()
    chosen = settings(stateful_step_count=STEPS)  # max_examples and the rest from the loaded profile
    # A revoked key's try is a rare corner (a registry change, a revocation, then that rule, in one sequence): 7 to
    # 31 of them in 200 sequences, and none at all in one seed seen. Another round, with a seed derived from the
    # run's (so a run still replays), runs only when the round missed it; every check of every round holds throughout.
    rounds = run_in_rounds(LifecycleMachine, chosen, rounds=ROUNDS, reached=lambda: RUN["revoked key refused"] > 0 or chosen.max_examples < 200)
    ok = sum(count for (_, outcome), count in STATS.items() if outcome == "ok")
    total = sum(STATS.values())
    print(f"\n{rounds} round(s), {RUN['sequences']} sequences, {total} operations sent: {ok} accepted, {total - ok} reverted")
    print(f"  revoked keys refused {RUN['revoked key refused']} times")
    for (label, outcome), count in sorted(STATS.items()):
        print(f"  {label:12} {outcome:45} {count}")
    statuses = [status.name for status in PartStatus]
    print("  tried, by the status of the first part named:")
    print("  " + " " * 12 + "".join(f"{name[:9]:>10}" for name in statuses))
    for label in ("ship", "receive", "install", *TRANSITIONS):
        print(f"  {label:12}" + "".join(f"{TRIED[(label, name)]:>10}" for name in statuses))
    # The generator must keep reaching the interesting parts of the lifecycle, or the test proves little. With the
    # "ci" profile (200 sequences) every operation succeeds dozens of times; a small profile checks the basics.
    required = ["register", "ship", "receive"]
    if chosen.max_examples >= 200:
        required += ["cancel", "sell", "install", "remove", "quarantine", "release", "scrap", "recycle", "recall"]
        required += ["revoke", "suspend", "reinstate"]
        assert RUN["revoked key refused"] > 0, "no revoked key ever tried to act"
        assert RUN["sequences"] >= chosen.max_examples
    for label in required:
        assert STATS[(label, "ok")] > 0, f"no successful {label} in {RUN['sequences']} sequences"
