"""The indexer's mirror of containment (assemblies, logistic units) and remanufacturing, on a dedicated Anvil node.

The chain moves a container in O(1) and names only the container; the mirror expands. Checked against the contract's
own views, never against a model written here:
- every part row and every logistic unit row is PartLedger.part(id) (status, custodian, recipient, lot, VIN tag,
  recall): a contained part shows its outermost container's state;
- the containment table is PartLedger.containerOf(id) for every id, and lineage is remanufacturedFrom(id);
- after random containment work, container moves and reorganisations (anvil_reorg, anvil_rollback), the mirror equals
  a mirror indexed afresh from the canonical chain, table by table: the undo of containment is exact.
A worked example (pads in calipers in a module, modules in a carton on a pallet) checks the rows themselves: the
history of a part that moved inside a container, its installation on the module's vehicle, the lineage.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from eth_abi import decode, encode
from eth_utils import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from indexer.runner import IndexerConfig
from indexer.tables import INDEX_METADATA, Containment, Installation, Lineage, LogisticUnit, Part, PartEvent, Shipment
from partledger.anvil import AnvilNode
from partledger.chain import connect
from partledger.db import make_engine
from partledger.ids import ascii32, gtin_check_digit, logistic_unit_id, part_id
from partledger.model import CUSTODY_ROLES, PartStatus, Role
from tests.chainkit import ANVIL_ACCOUNTS, GTIN_A, GTIN_B, Ledger, build_ledger
from tests.ports import free_port
from tests.test_indexer_reorg import NodeRefused, ReorgAnvilConfig, ReorgChain, _plain, fresh_mirror, make_indexer, sync, tx_request, wipe

pytestmark = [pytest.mark.chain]

EXAMPLES = 12  # random plans per database
STEPS = 14
FINALITY = 6
ZERO32 = bytes(32)
S = PartStatus
CUSTODY, MAKERS_AND_WORKSHOPS = int(CUSTODY_ROLES), int(Role.MANUFACTURER | Role.WORKSHOP)
# Tables a fresh index must reproduce exactly (the cursor's own bookkeeping aside).
COMPARED = tuple(table.name for table in INDEX_METADATA.sorted_tables if table.name not in ("indexer_state", "indexed_blocks", "undo_log"))
SURROGATE = frozenset({"id"})


def sscc(body: str) -> str:
    """An 18-digit SSCC with its check digit."""
    body = body.zfill(17)
    return body + str(gtin_check_digit(body))


# --- reading the chain and the mirror -------------------------------------------------------------------------------


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def chain_views(chain: ReorgChain, ids: list[bytes], block: int | None = None) -> dict[bytes, tuple[tuple[Any, ...], bytes, bytes]]:
    """For each id: part(id), containerOf(id) and remanufacturedFrom(id), read at `block` (default: the head)."""
    at = hex(chain.head() if block is None else block)
    address = chain.ledger.parts.address
    calls = []
    for pid in ids:
        for signature in ("part(bytes32)", "containerOf(bytes32)", "remanufacturedFrom(bytes32)"):
            calls.append(("eth_call", [{"to": address, "data": "0x" + (_selector(signature) + pid).hex()}, at]))
    answers = chain.batch(calls)
    views = {}
    for index, pid in enumerate(ids):
        part, container, origin = answers[3 * index : 3 * index + 3]
        view = decode(["uint8", "uint32", "uint32", "uint64", "bytes15", "bool"], bytes.fromhex(part[2:]))
        views[pid] = (tuple(view), bytes.fromhex(container[2:]), bytes.fromhex(origin[2:]))
    return views


def mirror_views(engine: Engine, ids: list[bytes]) -> dict[bytes, tuple[tuple[Any, ...], bytes, bytes]]:
    """The same, as the mirror answers it (zero bytes and status 0 where it holds nothing)."""
    p, u, c, lineage = Part.__table__, LogisticUnit.__table__, Containment.__table__, Lineage.__table__
    with engine.connect() as conn:
        parts = {bytes(row.part_id): row for row in conn.execute(select(p).where(p.c.part_id.in_(ids)))}
        units = {bytes(row.unit_id): row for row in conn.execute(select(u).where(u.c.unit_id.in_(ids)))}
        containers = {bytes(row.part_id): bytes(row.container_id) for row in conn.execute(select(c).where(c.c.part_id.in_(ids)))}
        origins = {bytes(row.part_id): bytes(row.original_id) for row in conn.execute(select(lineage).where(lineage.c.part_id.in_(ids)))}
    views = {}
    for pid in ids:
        row = parts.get(pid)
        if row is not None:
            state = (row.status, row.custodian, row.recipient or 0, row.lot, bytes(row.vin_hash or ZERO32)[:15], bool(row.recalled))
        elif (unit := units.get(pid)) is not None:
            state = (unit.status, unit.custodian, unit.recipient or 0, 0, bytes(unit.vin_hash or ZERO32)[:15], False)
        else:
            state = (0, 0, 0, 0, bytes(15), False)
        views[pid] = (state, containers.get(pid, ZERO32), origins.get(pid, ZERO32))
    return views


def assert_mirror_matches_chain(chain: ReorgChain, engine: Engine, ids: list[bytes], units: set[bytes] | None = None) -> None:
    """Every id's mirrored state and links are the contract's; and every stored containment path is the chain of
    containerOf() up from the part (a unit's entry marked u, an assembly's a)."""
    expected, actual = chain_views(chain, ids), mirror_views(engine, ids)
    wrong = [f"  0x{pid.hex()[:12]}: mirror {actual[pid]}, chain {expected[pid]}" for pid in ids if actual[pid] != expected[pid]]
    assert not wrong, f"{len(wrong)} of {len(ids)} ids differ from part()/containerOf()/remanufacturedFrom():\n" + "\n".join(wrong[:8])
    units = set(getattr(chain, "units", {})) if units is None else units
    up = {pid: view[1] for pid, view in expected.items() if any(view[1])}
    with engine.connect() as conn:
        stored = {bytes(p): bytes(path) for p, path in conn.execute(select(Containment.__table__.c.part_id, Containment.__table__.c.path))}
    for pid, path in stored.items():
        want, current = b"", pid
        while current in up:
            current = up[current]
            want += (b"u" if current in units else b"a") + current
        assert path == want, f"the containment path of 0x{pid.hex()[:12]} is not the chain of containerOf()"


def dump(engine: Engine) -> dict[str, Counter[tuple[Any, ...]]]:
    with engine.connect() as conn:
        tables = {}
        for name in COMPARED:
            table = INDEX_METADATA.tables[name]
            columns = [column for column in table.columns if column.name not in SURROGATE]
            tables[name] = Counter(tuple(_plain(value) for value in row) for row in conn.execute(select(*columns)))
    return tables


def assert_equals_fresh_index(chain: ReorgChain, engine: Engine, scratch: Engine) -> None:
    """The mirror, after whatever reorganisations it went through, equals one indexed from scratch now."""
    wipe(scratch)
    indexer, _ = make_indexer(chain, scratch, IndexerConfig(finality_depth=FINALITY, poll_interval=0))
    sync(indexer, chain)
    have, want = dump(engine), dump(scratch)
    for name in COMPARED:
        missing, extra = want[name] - have[name], have[name] - want[name]
        assert not missing and not extra, f"{name}: {sum(missing.values())} rows missing, {sum(extra.values())} unexpected; e.g. missing {list(missing)[:2]}, unexpected {list(extra)[:2]}"


# --- the dedicated chain ----------------------------------------------------------------------------------------------


class World:
    """The pool's ids as the chain has them now: state, direct container, outermost container, contents."""

    def __init__(self, views: dict[bytes, tuple[tuple[Any, ...], bytes, bytes]], units: dict[bytes, int]) -> None:
        self.views = views
        self.units = units  # unit id -> SSCC
        self.container = {pid: view[1] for pid, view in views.items() if any(view[1])}
        self.contents: dict[bytes, list[bytes]] = defaultdict(list)
        for pid, container in sorted(self.container.items()):
            self.contents[container].append(pid)

    def state(self, pid: bytes) -> tuple[Any, ...]:
        return self.views[pid][0]

    def root(self, pid: bytes) -> bytes:
        while pid in self.container:
            pid = self.container[pid]
        return pid

    def loose(self, statuses: tuple[int, ...], *, parts_only: bool = False) -> dict[int, list[bytes]]:
        """Ids in no container in one of `statuses`, by custodian (by recipient for in transit)."""
        groups: dict[int, list[bytes]] = defaultdict(list)
        for pid, (state, container, _) in sorted(self.views.items()):
            status, custodian, recipient = state[0], state[1], state[2]
            if any(container) or status not in statuses or (parts_only and pid in self.units):
                continue
            groups[recipient if status == S.IN_TRANSIT else custodian].append(pid)
        return groups


class ContainmentChain(ReorgChain):
    """The dedicated node, its consortium, and a base state with containment in every shape."""

    def __init__(self, node: AnvilNode, ledger: Ledger) -> None:
        self.pool: list[bytes] = []
        self.units: dict[bytes, int] = {}
        self._build(ledger)
        super().__init__(node, ledger, list(self.pool))

    def _build(self, ledger: Ledger) -> None:
        maker, warehouse, workshop = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["workshop"]
        p = ledger.parts.functions
        pads = ledger.register(maker, [f"BP-{index}" for index in range(6)], lot="PADS")
        calipers = ledger.register(maker, ["CAL-1", "CAL-2"], gtin=GTIN_B, lot="CALIPERS")
        spare = ledger.register(maker, [f"SP-{index}" for index in range(4)], lot="SPARES")
        ledger.act(maker.key, p.assembleParts(calipers[0], pads[0:2]))
        ledger.act(maker.key, p.assembleParts(calipers[1], pads[2:4]))
        carton, pallet = int(sscc("4012345000001")), int(sscc("4012345000002"))
        ledger.act(maker.key, p.packParts(carton, calipers[:1] + pads[4:5]))
        ledger.act(maker.key, p.packParts(pallet, [logistic_unit_id(carton), spare[0]]))
        ledger.act(maker.key, p.shipParts([logistic_unit_id(pallet)], warehouse.id, ZERO32))
        ledger.act(warehouse.key, p.receiveParts([logistic_unit_id(pallet)], ZERO32))
        ledger.act(maker.key, p.shipParts([calipers[1]], workshop.id, ZERO32))
        ledger.act(workshop.key, p.receiveParts([calipers[1]], ZERO32))
        ledger.act(workshop.key, p.installParts([calipers[1]], [keccak(text="VIN-BASE")], ZERO32))
        self.pool = pads + calipers + spare
        self.units = {logistic_unit_id(carton): carton, logistic_unit_id(pallet): pallet}

    def ids(self) -> list[bytes]:
        return sorted(set(self.pool) | set(self.units))

    def world(self) -> World:
        return World(chain_views(self, self.ids()), self.units)


@pytest.fixture(scope="module")
def chain() -> Iterator[ContainmentChain]:
    node = AnvilNode.start(ReorgAnvilConfig(port=free_port(), accounts=ANVIL_ACCOUNTS))
    try:
        yield ContainmentChain(node, build_ledger(connect(node.url)))
    finally:
        node.stop()


# --- random plans -------------------------------------------------------------------------------------------------


class Scenario:
    """Random containment work, container moves and reorganisations against the chain and the indexer."""

    def __init__(self, chain: ContainmentChain, rng: random.Random) -> None:
        self.chain, self.rng = chain, rng
        self.ledger = chain.ledger
        self.keys = {org.id: org.key for org in self.ledger.orgs.values()}
        self.roles = {org.id: int(org.roles) for org in self.ledger.orgs.values()}
        self.counter = 0
        self.stats: Counter[str] = Counter()
        self.base_pool, self.base_units = list(chain.pool), dict(chain.units)

    def restore(self) -> None:
        self.chain.pool, self.chain.units = list(self.base_pool), dict(self.base_units)

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.rng.randrange(10**6)}-{self.counter}"

    def options(self, world: World) -> list[tuple[str, str, Any]]:
        """(kind, sender, call) candidates; the node's gas estimate weeds out the few the chain would refuse."""
        rng, f, orgs = self.rng, self.ledger.parts.functions, self.ledger.orgs
        options: list[tuple[str, str, Any]] = []

        def pick(groups: dict[int, list[bytes]], roles: int = CUSTODY) -> tuple[int, list[bytes]] | None:
            usable = [org for org in sorted(groups) if self.roles.get(org, 0) & roles and org in self.keys]
            if not usable:
                return None
            org = rng.choice(usable)
            return org, rng.sample(groups[org], min(len(groups[org]), rng.randint(1, 3)))

        maker = orgs["maker"]
        serials = [self.fresh("R-") for _ in range(rng.randint(1, 3))]
        options.append(("register", maker.key, f.registerParts(int(GTIN_A), ascii32(rng.choice(("RL-1", "RL-2"))), [ascii32(s) for s in serials])))
        in_stock = world.loose((S.IN_STOCK,))
        if chosen := pick(in_stock):
            org, ids = chosen
            # into an existing unit whose outermost container the organisation holds in stock, or a new one
            targets = [unit for unit in world.units if world.state(world.root(unit))[:2] == (S.IN_STOCK, org) and world.root(unit) not in ids]
            if targets and rng.random() < 0.6:
                unit = rng.choice(sorted(targets))
                number = world.units[unit]
            else:
                number = int(sscc(str(rng.randrange(10**12, 10**13))))
                unit = logistic_unit_id(number)
            ids = [pid for pid in ids if pid != unit]
            if ids:
                options += [("pack", self.keys[org], f.packParts(number, ids))] * 3
        if chosen := pick(world.loose((S.IN_STOCK,), parts_only=True), MAKERS_AND_WORKSHOPS):
            org, ids = chosen
            parents = [pid for pid in self.chain.pool if world.state(world.root(pid))[:2] == (S.IN_STOCK, org) and world.root(pid) not in ids]
            if parents:
                options += [("assemble", self.keys[org], f.assembleParts(rng.choice(sorted(parents)), ids))] * 3
        for container, inside in sorted(world.contents.items()):
            status, custodian = world.state(world.root(container))[:2]
            if status != S.IN_STOCK or custodian not in self.keys:
                continue
            taken = rng.sample(inside, rng.randint(1, len(inside)))
            if container in world.units:
                options += [("unpack", self.keys[custodian], f.unpackParts(world.units[container], taken))] * 2
            elif self.roles[custodian] & MAKERS_AND_WORKSHOPS:
                options += [("disassemble", self.keys[custodian], f.disassembleParts(container, taken))] * 2
        custodians = [org.id for org in orgs.values() if int(org.roles) & CUSTODY]
        if chosen := pick(in_stock):
            org, ids = chosen
            options += [("ship", self.keys[org], f.shipParts(ids, rng.choice([c for c in custodians if c != org]), rng.randbytes(32)))] * 3
        if chosen := pick(world.loose((S.IN_TRANSIT,))):
            org, ids = chosen
            options += [("receive", self.keys[org], f.receiveParts(ids, ZERO32))] * 5
        in_transit_by_sender: dict[int, list[bytes]] = defaultdict(list)
        for pid in sorted(world.views):
            state = world.state(pid)
            if state[0] == S.IN_TRANSIT and pid not in world.container:
                in_transit_by_sender[state[1]].append(pid)
        if chosen := pick(in_transit_by_sender):
            org, ids = chosen
            options.append(("cancel", self.keys[org], f.cancelShipments(ids, ZERO32)))
        if chosen := pick(world.loose((S.IN_STOCK,), parts_only=True), int(Role.WORKSHOP)):
            org, ids = chosen
            options += [("install", self.keys[org], f.installParts(ids, [rng.randbytes(32) for _ in ids], ZERO32))] * 5
        if chosen := pick(world.loose((S.INSTALLED,)), int(Role.WORKSHOP)):
            org, ids = chosen
            options += [("remove", self.keys[org], f.removeParts(ids, ZERO32))] * 2
        if chosen := pick(world.loose((S.IN_STOCK,), parts_only=True)):
            org, ids = chosen
            options.append(("quarantine", self.keys[org], f.quarantineParts(ids, ZERO32)))
        if chosen := pick(world.loose((S.QUARANTINED,))):
            org, ids = chosen
            options.append(("release", self.keys[org], f.releaseParts(ids, ZERO32)))
        if chosen := pick(world.loose((S.IN_STOCK,), parts_only=True), int(Role.DISTRIBUTOR | Role.WORKSHOP)):
            org, ids = chosen
            options.append(("sell", self.keys[org], f.sellParts(ids, ZERO32)))
        if rng.random() < 0.2 and (chosen := pick(world.loose((S.IN_STOCK, S.QUARANTINED), parts_only=True))):
            org, ids = chosen
            options.append(("scrap", self.keys[org], f.scrapParts(ids, ZERO32)))
        lots = sorted({world.state(pid)[3] for pid in self.chain.pool} - {0})
        if rng.random() < 0.1:
            options.append(("recall", orgs["regulator"].key, f.recallLot(rng.choice(lots), rng.randbytes(32))))
        if chosen := pick(world.loose((S.IN_STOCK,), parts_only=True), int(Role.MANUFACTURER)):
            org, ids = chosen
            empty = [pid for pid in ids if pid not in world.contents]
            if empty:
                options.append(("remanufacture", self.keys[org], f.remanufacturePart(empty[0], int(GTIN_B), ascii32("REMAN"), ascii32(self.fresh("RM-")))))
        return options

    def send(self) -> None:
        world = self.chain.world()
        kind, sender, call = self.rng.choice(self.options(world))
        request = tx_request(self.ledger, sender, call)
        try:
            self.chain.rpc("eth_estimateGas", request)
        except NodeRefused:
            self.stats[f"{kind} refused"] += 1
            return
        receipt = self.chain.receipt(self.chain.rpc("eth_sendTransaction", request))
        assert receipt["status"] == "0x1"
        self.stats[kind] += 1
        name = call.abi_element_identifier.split("(")[0]
        if name == "registerParts":
            self.chain.pool += [part_id(GTIN_A, bytes(serial).rstrip(b"\0").decode()) for serial in call.args[2]]
        elif name == "remanufacturePart":
            self.chain.pool.append(part_id(GTIN_B, bytes(call.args[3]).rstrip(b"\0").decode()))
        elif name == "packParts":
            self.chain.units[logistic_unit_id(call.args[0])] = call.args[0]

    def reorganise(self, indexer: Any, depth: int) -> None:
        """A reorganisation (empty new blocks) or a rollback of blocks the indexer has written, no deeper than its
        stored window reaches: the finality depth below the highest head it wrote at (a rollback lowers the head,
        and the blocks pruned at the higher head are not stored again)."""
        sync(indexer, self.chain)
        state = indexer.sink.state()
        assert state is not None
        self.peak = max(getattr(self, "peak", 0), state.head_seen)
        depth = min(depth, self.chain.head() - max(self.chain.floor, self.peak - FINALITY))
        if depth <= 0:
            return
        if self.rng.random() < 0.5:
            self.chain.rpc("anvil_reorg", depth, [])
            self.stats["reorg"] += 1
        else:
            self.chain.rpc("anvil_rollback", depth)
            self.stats["rollback"] += 1


def scratch_url(db_url: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A second empty database of the same kind, for the index made from scratch."""
    if db_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'scratch.db'}"
    from tests.pgcluster import unique_name

    return request.getfixturevalue("postgres").create_database(unique_name("scratch"))


def test_mirror_of_containment_equals_the_chain_through_random_work_and_reorganisations(
    chain: ContainmentChain, db_url: str, request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    engine, scratch = fresh_mirror(db_url), fresh_mirror(scratch_url(db_url, request, tmp_path))
    seen: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    @given(seed=st.integers(0, 2**32 - 1), batch_blocks=st.sampled_from((1, 3, 2_000)))
    def run(seed: int, batch_blocks: int) -> None:
        chain.reset()
        wipe(engine)
        rng = random.Random(seed)
        scenario = Scenario(chain, rng)
        try:
            indexer, _ = make_indexer(chain, engine, IndexerConfig(finality_depth=FINALITY, batch_blocks=batch_blocks, poll_interval=0))
            for _ in range(STEPS):
                roll = rng.random()
                if roll < 0.7:
                    scenario.send()
                elif roll < 0.85:
                    sync(indexer, chain)
                    assert_mirror_matches_chain(chain, engine, chain.ids())
                else:
                    scenario.reorganise(indexer, rng.randint(1, 4))
            sync(indexer, chain)
            assert_mirror_matches_chain(chain, engine, chain.ids())
            assert_equals_fresh_index(chain, engine, scratch)
            seen.update(scenario.stats)
        finally:
            scenario.restore()

    try:
        run()
    finally:
        engine.dispose()
        scratch.dispose()
    print(f"\nplayed {dict(sorted(seen.items()))}")
    missing = [kind for kind in ("pack", "unpack", "assemble", "disassemble", "ship", "receive", "install", "remove", "reorg", "rollback") if not seen[kind]]
    assert not missing, f"the plans never made a {missing}: {dict(seen)}"


# --- a worked example ---------------------------------------------------------------------------------------------------


def rows(engine: Engine, table: Any, *conditions: Any) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(select(table.__table__).where(*conditions)).all()


def index_chain(chain: ReorgChain, db_url: str) -> Engine:
    engine = fresh_mirror(db_url)
    indexer, _ = make_indexer(chain, engine, IndexerConfig(poll_interval=0))
    sync(indexer, chain)
    return engine


def test_a_part_moves_with_its_containers_and_its_rows_say_so(chain: ContainmentChain, db_url: str) -> None:
    """The base state: pads in calipers, a caliper and a pad in a carton, the carton and a spare on a pallet shipped to
    the warehouse; the other caliper (with two pads) installed by the workshop. Then the caliper is removed and a pad
    taken out of it, and a spare part remanufactured."""
    chain.reset()
    ledger, f = chain.ledger, chain.ledger.parts.functions
    maker, warehouse, workshop = (ledger.orgs[name] for name in ("maker", "warehouse", "workshop"))
    pads, calipers, spares = chain.pool[0:6], chain.pool[6:8], chain.pool[8:12]
    carton, pallet = sorted(chain.units, key=chain.units.__getitem__)
    ledger.act(workshop.key, f.removeParts([calipers[1]], ZERO32))
    ledger.act(workshop.key, f.disassembleParts(calipers[1], [pads[3]]))
    ledger.act(maker.key, f.remanufacturePart(spares[1], int(GTIN_A), ascii32("REMAN-1"), ascii32("RM-1")))
    reborn = part_id(GTIN_A, "RM-1")
    engine = index_chain(chain, db_url)
    try:
        assert_mirror_matches_chain(chain, engine, chain.ids() + [reborn])
        links = {bytes(row.part_id): (bytes(row.container_id), row.kind) for row in rows(engine, Containment)}
        assert links == {
            pads[0]: (calipers[0], "assembly"), pads[1]: (calipers[0], "assembly"), pads[2]: (calipers[1], "assembly"),
            calipers[0]: (carton, "unit"), pads[4]: (carton, "unit"), carton: (pallet, "unit"), spares[0]: (pallet, "unit"),
        }  # fmt: skip
        # A pad two containers down moved with the pallet: its own rows, after the pallet's, naming the pallet.
        history = [(row.kind, row.org_id, row.counterparty, row.related_id and bytes(row.related_id)) for row in sorted(rows(engine, PartEvent, PartEvent.part_id == pads[0]), key=lambda r: (r.block_number, r.log_index, r.position))]
        assert history == [
            ("registered", maker.id, None, None), ("assembled", maker.id, None, calipers[0]),
            ("shipped", maker.id, warehouse.id, pallet), ("received", warehouse.id, None, pallet),
        ]  # fmt: skip
        (shipped,) = rows(engine, PartEvent, PartEvent.part_id == pads[0], PartEvent.kind == "shipped")
        (named,) = rows(engine, PartEvent, PartEvent.tx_hash == shipped.tx_hash, PartEvent.position == 0)
        assert bytes(named.part_id) == pallet and named.related_id is None and shipped.position > 0
        (pad,) = rows(engine, Part, Part.part_id == pads[0])
        assert (pad.status, pad.custodian, pad.recipient) == (S.IN_STOCK, warehouse.id, None)
        # Shipments are the named ids': the pallet, the installed caliper; never what was inside them.
        shipped_ids = {bytes(row.part_id) for row in rows(engine, Shipment)}
        assert pallet in shipped_ids and calipers[1] in shipped_ids and not shipped_ids & {pads[0], pads[4], carton, spares[0]}
        # The caliper's installation installed its pads on its vehicle; its removal took them out.
        fitted = {bytes(row.part_id): (bytes(row.vin_hash), row.org_id, row.removed_block is not None) for row in rows(engine, Installation)}
        assert fitted == {pid: (keccak(text="VIN-BASE"), workshop.id, True) for pid in (calipers[1], pads[2], pads[3])}
        units = {bytes(row.unit_id): row for row in rows(engine, LogisticUnit)}
        assert {unit: row.sscc for unit, row in units.items()} == {unit: str(number).zfill(18) for unit, number in chain.units.items()}
        assert all(row.created_by == maker.id and row.created_site_key == maker.key and row.custodian == warehouse.id for row in units.values())
        # Remanufacturing: the original consumed, the lineage, and the history row naming the new part.
        (line,) = rows(engine, Lineage)
        assert (bytes(line.part_id), bytes(line.original_id)) == (reborn, spares[1])
        (consumed,) = rows(engine, PartEvent, PartEvent.part_id == spares[1], PartEvent.kind == "remanufactured")
        assert bytes(consumed.related_id) == reborn and consumed.org_id == maker.id
        assert rows(engine, Part, Part.part_id == spares[1])[0].status == S.REMANUFACTURED
        assert rows(engine, Part, Part.part_id == reborn)[0].status == S.IN_STOCK
        # Units are never parts: no inventory, lot page or count can show them.
        assert not rows(engine, Part, Part.part_id.in_(list(chain.units)))
        assert_reads(engine, chain, pads, calipers, spares, carton, pallet, reborn)
    finally:
        engine.dispose()


def assert_reads(engine: Engine, chain: ContainmentChain, pads: list[bytes], calipers: list[bytes], spares: list[bytes], carton: bytes, pallet: bytes, reborn: bytes) -> None:
    """The read side's walks (ledger_service.containment) on this database: PostgreSQL runs them as its own SQL."""
    from ledger_service import containment

    ledger = chain.ledger
    pad_lot = ledger.lot_number(ledger.orgs["maker"], "PADS")
    with engine.connect() as conn, conn.begin():
        counts = containment.lot_container_counts(conn, pad_lot)
        assert (counts.assemblies, counts.units, counts.levels, counts.contained_parts) == (2, 2, 3, 4)  # pads[3] was taken out
        page, total, more = containment.lot_containers_page(conn, pad_lot, after=None, limit=3)
        assert (total, more, len(page)) == (4, True, 3)
        everything = {holder.id: holder for holder in page + containment.lot_containers_page(conn, pad_lot, after=page[-1].id, limit=3)[0]}
        assert {pid: (h.kind, h.depth, h.parts) for pid, h in everything.items()} == {
            calipers[0]: ("assembly", 1, 2), calipers[1]: ("assembly", 1, 1), carton: ("unit", 1, 3), pallet: ("unit", 2, 3),
        }  # fmt: skip
        assert containment.outermost_containers(conn, [pads[0], pads[2], spares[2]]) == {pads[0]: (pallet, "unit"), pads[2]: (calipers[1], "assembly")}
        assert containment.container_path(conn, pads[0]) == [(calipers[0], "assembly"), (carton, "unit"), (pallet, "unit")]
        tree, truncated = containment.contents_tree(conn, pallet)
        assert not truncated and {node["id"] for node in tree} == {"0x" + carton.hex(), "0x" + spares[0].hex()}
        assert containment.count_parts_inside(conn, pallet) == 6  # carton, spare, caliper, pad, and the caliper's two pads
        assert containment.recalled_inside(conn, pallet) is None
        assert containment.lineage(conn, reborn)["remanufactured_from"][0]["part_id"] == "0x" + spares[1].hex()
        ledger.act(ledger.orgs["maker"].key, ledger.parts.functions.recallLot(pad_lot, keccak(text="pads")))
    indexer, _ = make_indexer(chain, engine, IndexerConfig(poll_interval=0))
    sync(indexer, chain)
    with engine.connect() as conn, conn.begin():
        inside = containment.recalled_inside(conn, pallet)
        assert inside is not None and (inside.part.id, inside.depth, inside.count) == (pads[4], 2, 3)
        assert set(containment.recalled_inside_many(conn, [pallet, calipers[1], spares[2]])) == {pallet, calipers[1]}
