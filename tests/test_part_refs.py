"""Parts named as people see them (issue 14, section 2): by id, by GTIN and serial, by the Digital Link printed on
their label (signature or not), or by a selection of a lot; every write endpoint that takes parts accepts them, and
refuses a list row by row (422 invalid_parts) without accepting any of it.

Unit tests parse references and resolve them against a real SQLite mirror filled by hand (no sockets); the API
tests run the whole write path on the session's Anvil with SQLite databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError as BodyInvalid
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from indexer.tables import INDEX_METADATA, Lot, Part, SiteKey
from labels.digital_link import build_uri
from ledger_service.auth import Principal
from ledger_service.errors import ApiError, Forbidden, PayloadTooLarge, RowErrors
from ledger_service.part_refs import Selection, parse_part_ref, resolve_install_parts, resolve_parts
from ledger_service.routes.writes import InstallItem, PartsBody
from ledger_service.tables import Command
from ledger_service.write_service import submit_install, submit_transition
from partledger.db import make_engine
from partledger.errors import ValidationError
from partledger.ids import part_id
from partledger.model import PartStatus, Role
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.servicekit import Stack, prepare_stack
from tests.test_write_api import NO_DOC, VINS, accepted, confirmed, held_by, hexid, ids_of, on_chain, post, refused, serve

S = PartStatus
RESOLVER = "https://id.example.com"
ME, OTHER, MAKER = 2, 3, 1
SITE_A, SITE_B, SITE_OTHER = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def row_codes(error: dict[str, Any] | RowErrors) -> list[tuple[int, str]]:
    rows = error.rows if isinstance(error, RowErrors) else error["details"]
    return [(row["row"], row["code"]) for row in rows]


# --- reading one entry (no database) -----------------------------------------------------------------------------


def test_a_part_id_names_itself_in_either_case():
    pid = part_id(GTIN_A, "X1")
    assert parse_part_ref(hexid(pid)) == pid
    assert parse_part_ref("0X" + pid.hex().upper()) == pid
    assert parse_part_ref(pid) == pid


def test_gtin_and_serial_name_the_part_whatever_the_gtin_length():
    pid = part_id(GTIN_A, "X1")
    assert parse_part_ref({"gtin": GTIN_A, "serial": "X1"}) == pid
    assert parse_part_ref({"gtin": GTIN_A.lstrip("0"), "serial": "X1"}) == pid  # GTIN-13, normalised to 14 digits


def test_a_digital_link_names_its_part_with_or_without_signature_lot_or_resolver_path():
    pid = part_id(GTIN_A, "A/B%1")
    plain = build_uri(RESOLVER, gtin=GTIN_A, serial="A/B%1")
    assert parse_part_ref(plain) == pid
    assert parse_part_ref(plain + "?sig=not-a-valid-signature") == pid  # naming a part does not verify its label
    assert parse_part_ref(f"http://example.org/resolver/01/{GTIN_A}/10/LOT-7/21/A%2FB%251?linkType=gs1:pip") == pid


@pytest.mark.parametrize(
    "value",
    [
        "0x1234",  # too short for a part id
        "0x" + "zz" * 32,
        "ABC-123",  # a bare serial names nothing
        "ftp://id.example.com/01/04012345000016/21/X1",
        "https://id.example.com/01/04012345000017/21/X1",  # wrong GTIN check digit
        "https://id.example.com/01/04012345000016/X1",  # no /21/
        "https://id.example.com/01/04012345000016/21/X%ZZ",  # a bare '%'
        {"gtin": GTIN_A, "serial": "has space"},
        {"gtin": GTIN_A},
        {"gtin": GTIN_A, "serial": "X1", "lot": "L"},
        {"lot": ""},
        {"lot": 0},
        {"lot": True},
        {"lot": "L", "status": "lost"},
        {"lot": "L", "gtin": "123"},
        {"lot": "L", "colour": "red"},
        42,
        None,
        ["0x" + "00" * 32],
    ],
)
def test_an_entry_that_names_no_part_is_unreadable(value: Any):
    with pytest.raises(ValidationError) as raised:
        parse_part_ref(value)
    assert raised.value.code == "unreadable"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
    | st.builds(lambda gtin, serial, query: f"https://h/01/{gtin}/21/{serial}{query}", st.text("0123456789%/", max_size=15), st.text(max_size=24), st.sampled_from(["", "?sig=", "?sig=a&sig=b", "?%zz"]))
    | st.builds(lambda digits: "0x" + digits, st.text("0123456789abcdefABCDEFxz", max_size=66)),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["gtin", "serial", "lot", "status", "site", "x"]), children, max_size=4),
    max_leaves=8,
)  # fmt: skip


@given(JSON_VALUES)
def test_any_json_entry_names_a_part_or_a_selection_or_is_unreadable(value: Any):
    try:
        ref = parse_part_ref(value)
    except ValidationError as exc:
        assert exc.code == "unreadable"
    else:
        assert isinstance(ref, Selection) or (isinstance(ref, bytes) and len(ref) == 32)


def test_a_selection_reads_its_lot_as_a_code_or_a_number_and_its_filters():
    assert parse_part_ref({"lot": "L-1"}) == Selection(lot_code="L-1")
    assert parse_part_ref({"lot": 7, "gtin": GTIN_A.lstrip("0"), "status": "in_transit", "site": "north"}) == Selection(
        lot_number=7, gtin=GTIN_A, status=S.IN_TRANSIT, site="north"
    )


def test_a_body_names_its_parts_as_part_ids_or_as_parts_never_both_nor_neither():
    pid = hexid(part_id(GTIN_A, "X1"))
    assert PartsBody(part_ids=[pid]).named() == [bytes.fromhex(pid[2:])]
    assert PartsBody(parts=[pid, {"lot": "L"}, 42]).named() == [pid, {"lot": "L"}, 42]  # rows are judged one by one later
    for body in ({"part_ids": [pid], "parts": [pid]}, {}, {"parts": []}, {"part_ids": []}):
        with pytest.raises(BodyInvalid):
            PartsBody(**body)
    assert InstallItem(part=pid, vin=VINS[0]).named() == pid
    for item in ({"part_id": pid, "part": pid, "vin": VINS[0]}, {"vin": VINS[0]}):
        with pytest.raises(BodyInvalid):
            InstallItem(**item)


def test_a_viewer_is_refused_before_anything_is_read():
    viewer = Principal(org_id=ME, roles=Role.DISTRIBUTOR, key_id="k", sites=None, role="viewer")
    with pytest.raises(Forbidden) as raised:
        submit_transition(None, viewer, kind="sell", parts=[{"lot": "L"}], request_sha256="0")  # type: ignore[arg-type]
    assert raised.value.code == "read_only_role"
    with pytest.raises(Forbidden):
        submit_install(None, viewer, items=[(b"\0" * 32, VINS[0])], request_sha256="0")  # type: ignore[arg-type]


# --- resolving against a mirror (real SQLite, filled by hand) -----------------------------------------------------


def mirror_part(serial: str, *, lot: int, status: S = S.IN_STOCK, custodian: int = ME, recipient: int | None = None, gtin: str = GTIN_A, site: str = SITE_A) -> dict[str, Any]:
    return {
        "part_id": part_id(gtin, serial), "gtin": gtin, "serial": serial, "lot": lot, "manufacturer": MAKER, "status": int(status),
        "custodian": custodian, "recipient": recipient, "recalled": False, "site_key": site, "registered_block": 1, "updated_block": 1,
    }  # fmt: skip


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Connection]:
    """Lot 1 "L-1" (mine: 3 in stock at site A of GTIN A, 1 in stock of GTIN B at site B, 1 sold; 1 held by OTHER),
    lot 2 "L-2" (2 shipped to me by OTHER), lot 3 "L-1" of another manufacturer (1 mine), lot 4 "L-EMPTY" (none mine)."""
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('mirror') / 'index.db'}")
    INDEX_METADATA.create_all(engine)
    parts = [mirror_part(f"A{n}", lot=1) for n in range(3)] + [
        mirror_part("B0", lot=1, gtin=GTIN_B, site=SITE_B),
        mirror_part("SOLD", lot=1, status=S.SOLD),
        mirror_part("THEIRS", lot=1, custodian=OTHER, site=SITE_OTHER),
        mirror_part("T0", lot=2, status=S.IN_TRANSIT, custodian=OTHER, recipient=ME, site=SITE_OTHER),
        mirror_part("T1", lot=2, status=S.IN_TRANSIT, custodian=OTHER, recipient=ME, site=SITE_OTHER),
        mirror_part("M0", lot=3),
        mirror_part("E0", lot=4, custodian=OTHER, site=SITE_OTHER),
    ]
    with engine.begin() as conn:
        conn.execute(insert(Lot.__table__), [
            {"lot": 1, "manufacturer": MAKER, "lot_code": "L-1", "opened_block": 1}, {"lot": 2, "manufacturer": OTHER, "lot_code": "L-2", "opened_block": 1},
            {"lot": 3, "manufacturer": 9, "lot_code": "L-1", "opened_block": 1}, {"lot": 4, "manufacturer": MAKER, "lot_code": "L-EMPTY", "opened_block": 1},
        ])  # fmt: skip
        conn.execute(insert(SiteKey.__table__), [
            {"address": SITE_A, "org_id": ME, "site": "north", "added_block": 1}, {"address": SITE_B, "org_id": ME, "site": "south", "added_block": 1},
            {"address": SITE_OTHER, "org_id": OTHER, "site": "north", "added_block": 1},
        ])  # fmt: skip
        conn.execute(insert(Part.__table__), parts)
    with engine.connect() as conn:
        yield conn
    engine.dispose()


ME_P = Principal(org_id=ME, roles=Role.DISTRIBUTOR, key_id="k", sites=None)


def ids(*serials: str, gtin: str = GTIN_A) -> list[bytes]:
    return [part_id(gtin, serial) for serial in serials]


def test_explicit_references_resolve_in_row_order(mirror):
    refs = [build_uri(RESOLVER, gtin=GTIN_A, serial="A2", signature="sig"), {"gtin": GTIN_B, "serial": "B0"}, hexid(part_id(GTIN_A, "A0"))]
    assert resolve_parts(mirror, ME_P, refs, kind="ship") == ids("A2") + ids("B0", gtin=GTIN_B) + ids("A0")


def test_a_selection_is_my_parts_of_the_lot_in_the_states_the_write_starts_from(mirror):
    in_stock = sorted(ids("A0", "A1", "A2") + ids("B0", gtin=GTIN_B) + ids("M0"))  # lot code L-1 of both manufacturers
    assert resolve_parts(mirror, ME_P, [{"lot": "L-1"}], kind="ship") == in_stock
    assert resolve_parts(mirror, ME_P, [{"lot": 1}], kind="ship") == sorted(ids("A0", "A1", "A2") + ids("B0", gtin=GTIN_B))
    assert resolve_parts(mirror, ME_P, [{"lot": 1, "gtin": GTIN_A}], kind="ship") == sorted(ids("A0", "A1", "A2"))
    assert resolve_parts(mirror, ME_P, [{"lot": 1, "site": "south"}], kind="ship") == ids("B0", gtin=GTIN_B)
    assert resolve_parts(mirror, ME_P, [{"lot": 1, "site": SITE_B.upper().replace("0X", "0x")}], kind="ship") == ids("B0", gtin=GTIN_B)
    assert resolve_parts(mirror, ME_P, [{"lot": "L-1", "status": "sold"}], kind="ship") == ids("SOLD")  # the pre-check refuses it later
    assert resolve_parts(mirror, ME_P, [{"lot": "L-2"}], kind="receive") == sorted(ids("T0", "T1"))  # shipped to me: I am the recipient
    assert len(resolve_parts(mirror, ME_P, [{"lot": 1}])) == 5  # without a write: every status


def test_every_refused_row_is_reported_with_its_reason_and_nothing_resolves(mirror):
    refs = [
        hexid(part_id(GTIN_A, "A0")),
        {"gtin": GTIN_A, "serial": "NEVER"},
        "https://id.example.com/01/123/21/X",
        {"gtin": GTIN_A, "serial": "THEIRS"},
        {"lot": "NO-SUCH-LOT"},
        {"lot": "L-EMPTY"},
        {"lot": 1, "site": "nowhere"},
        build_uri(RESOLVER, gtin=GTIN_A, serial="A0"),
        {"lot": 1, "gtin": GTIN_A},
    ]
    with pytest.raises(RowErrors) as raised:
        resolve_parts(mirror, ME_P, refs, kind="ship")
    error = raised.value
    assert (error.code, error.details is error.rows) == ("invalid_parts", True)
    assert row_codes(error) == [
        (2, "unknown_part"), (3, "unreadable"), (4, "not_yours"), (5, "empty_selection"), (6, "empty_selection"),
        (7, "empty_selection"), (8, "duplicate_part"), (9, "duplicate_part"),
    ]  # fmt: skip
    assert [row["value"] for row in error.rows][:3] == refs[1:4]  # as sent
    messages = {row["row"]: row["message"] for row in error.rows}
    assert "no lot 'NO-SUCH-LOT'" in messages[5] and "no site 'nowhere'" in messages[7] and "row 1" in messages[8]


def test_a_part_in_transit_to_me_is_mine_to_receive_but_not_to_ship(mirror):
    transit = hexid(part_id(GTIN_A, "T0"))
    assert resolve_parts(mirror, ME_P, [transit], kind="receive") == ids("T0")
    with pytest.raises(RowErrors) as raised:
        resolve_parts(mirror, ME_P, [transit], kind="cancel")
    assert row_codes(raised.value) == [(1, "not_yours")]


def test_parts_named_past_the_limit_are_refused_whole(mirror):
    with pytest.raises(PayloadTooLarge) as raised:
        resolve_parts(mirror, ME_P, [{"lot": 1}], kind="ship", max_parts=3)
    assert raised.value.code == "too_many_parts"
    assert len(resolve_parts(mirror, ME_P, [{"lot": 1}], kind="ship", max_parts=4)) == 4


def test_an_installation_names_one_part_per_item_never_a_selection(mirror):
    assert resolve_install_parts(mirror, ME_P, [{"gtin": GTIN_A, "serial": "A1"}]) == ids("A1")
    with pytest.raises(RowErrors) as raised:
        resolve_install_parts(mirror, ME_P, [{"gtin": GTIN_A, "serial": "A1"}, {"lot": 1}])
    assert row_codes(raised.value) == [(2, "unreadable")]


def test_ten_thousand_rows_take_a_handful_of_queries(mirror):
    """Resolution runs a bounded number of SQL statements, not one per row (the lookups go in chunks of 900; an id that
    is no part is looked up again, in chunks, among the logistic units, which ship and receive by the same id)."""
    statements: list[str] = []
    engine = mirror.engine

    from sqlalchemy import event

    def count(*args: Any) -> None:
        statements.append(args[2])

    event.listen(engine, "before_cursor_execute", count)
    try:
        refs = [{"gtin": GTIN_A, "serial": f"N{n}"} for n in range(10_000)] + [{"lot": 1}, {"lot": "L-2"}]
        with pytest.raises(RowErrors) as raised:
            resolve_parts(mirror, ME_P, refs, kind="ship")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(raised.value.rows) == 1000 and raised.value.rows[0]["code"] == "unknown_part"  # the first 1000 rows reported
    assert len(statements) <= 2 * (10_000 // 900 + 1) + 3


# --- through the API, on Anvil ----------------------------------------------------------------------------------


@pytest.fixture
def stack(ledger: Ledger, tmp_path) -> Stack:
    return prepare_stack(ledger, tmp_path, f"sqlite:///{tmp_path / 'index.db'}", f"sqlite:///{tmp_path / 'service.db'}")


def commands_written(stack: Stack) -> int:
    engine = make_engine(stack.service_db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Command.__table__)).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.chain
def test_a_shipment_names_its_parts_by_id_gtin_and_serial_and_digital_link(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = ledger.register(maker, ["R1", "R2", "R3", "R/4", "R5"], lot="L-REF")
    parts = [
        hexid(pids[0]),
        {"gtin": GTIN_A.lstrip("0"), "serial": "R2"},
        build_uri(RESOLVER, gtin=GTIN_A, serial="R3", signature="AAAA-not-checked"),
        build_uri(f"{RESOLVER}/resolver", gtin=GTIN_A, serial="R/4"),  # unsigned, its serial percent-encoded
    ]
    with serve(stack):
        view = confirmed(stack, "maker", post(stack, "maker", "/v1/parts/ship", {"parts": parts, "to_org": warehouse.id}))
        assert (view["kind"], view["parts"], view["summary"]) == ("ship", 4, {"doc_hash": None, "to": warehouse.id})
    assert [on_chain(ledger, pid) for pid in pids[:4]] == [(S.IN_TRANSIT, maker.id, warehouse.id)] * 4
    assert on_chain(ledger, pids[4]) == (S.IN_STOCK, maker.id, 0)


@pytest.mark.chain
def test_a_lot_selection_receives_what_was_shipped_to_me_and_ships_it_on_by_lot_number(stack, ledger):
    maker, warehouse, distributor = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["distributor"]
    lot = ledger.register(maker, ["SL1", "SL2", "SL3"], lot="L-SEL")
    other = ledger.register(maker, ["SO1"], lot="L-OTHER")
    ledger.act(maker.key, ledger.parts.functions.shipParts(lot + other, warehouse.id, NO_DOC))
    with serve(stack):
        view = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/receive", {"parts": [{"lot": "L-SEL"}]}))
        assert view["parts"] == 3
        assert [on_chain(ledger, pid) for pid in lot] == [(S.IN_STOCK, warehouse.id, 0)] * 3
        assert on_chain(ledger, other[0]) == (S.IN_TRANSIT, maker.id, warehouse.id)

        selection = {"lot": ledger.lot_number(maker, "L-SEL"), "gtin": GTIN_A, "status": "in_stock", "site": "service-site"}
        view = confirmed(stack, "warehouse", post(stack, "warehouse", "/v1/parts/ship", {"parts": [selection], "to_org": distributor.id}))
        assert view["parts"] == 3
    assert [on_chain(ledger, pid) for pid in lot] == [(S.IN_TRANSIT, warehouse.id, distributor.id)] * 3


@pytest.mark.chain
def test_a_mixed_list_of_scanned_labels_and_a_selection_is_one_command(stack, ledger):
    maker, workshop = ledger.orgs["maker"], ledger.orgs["workshop"]
    lot = ledger.register(maker, ["MX1", "MX2"], lot="L-MIX")
    [scanned] = ledger.register(maker, ["MY1"], gtin=GTIN_B, lot="L-MIX-B")
    with serve(stack):
        body = {"parts": [build_uri(RESOLVER, gtin=GTIN_B, serial="MY1"), {"lot": "L-MIX", "gtin": GTIN_A}], "to_org": workshop.id}
        view = confirmed(stack, "maker", post(stack, "maker", "/v1/parts/ship", body))
        assert view["parts"] == 3 and len(view["items"]) == 1
    assert [on_chain(ledger, pid) for pid in [scanned, *lot]] == [(S.IN_TRANSIT, maker.id, workshop.id)] * 3


@pytest.mark.chain
def test_refused_rows_are_reported_each_with_its_reason_and_nothing_is_accepted(stack, ledger):
    maker, maker2, warehouse = ledger.orgs["maker"], ledger.orgs["maker2"], ledger.orgs["warehouse"]
    mine = ledger.register(maker, ["E1", "E2"], lot="L-ERR")
    [theirs] = ledger.register(maker2, ["E9"], lot="L-THEIRS")
    parts = [
        hexid(mine[0]),
        {"gtin": GTIN_A, "serial": "NOT-REGISTERED"},
        "https://id.example.com/01/12345/21/E2",
        hexid(theirs),
        {"lot": "NO-SUCH-LOT"},
        {"lot": "L-ERR", "status": "sold"},
        build_uri(RESOLVER, gtin=GTIN_A, serial="E1", signature="x"),
        build_uri(RESOLVER, gtin=GTIN_A, serial="E2"),
    ]
    with serve(stack):
        error = refused(post(stack, "maker", "/v1/parts/ship", {"parts": parts, "to_org": warehouse.id}), 422, "invalid_parts")
        assert row_codes(error) == [(2, "unknown_part"), (3, "unreadable"), (4, "not_yours"), (5, "empty_selection"), (6, "empty_selection"), (7, "duplicate_part")]
        assert [row["value"] for row in error["details"]] == [parts[index] for index in (1, 2, 3, 4, 5, 6)]
        assert all(row["message"] for row in error["details"])
        assert commands_written(stack) == 0
    assert [on_chain(ledger, pid) for pid in mine] == [(S.IN_STOCK, maker.id, 0)] * 2


@pytest.mark.chain
def test_install_names_each_part_by_its_label_and_refuses_a_selection(stack, ledger):
    workshop = ledger.orgs["workshop"]
    pids = held_by(ledger, "workshop", ["IL1", "IL2", "IL3"], lot="L-INS")
    with serve(stack):
        items = [{"part": build_uri(RESOLVER, gtin=GTIN_A, serial="IL1", signature="s"), "vin": VINS[0]}, {"part_id": hexid(pids[1]), "vin": VINS[1]}]
        view = confirmed(stack, "workshop", post(stack, "workshop", "/v1/parts/install", {"items": items}))
        assert view["parts"] == 2
        error = refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part": {"lot": "L-INS"}, "vin": VINS[0]}]}), 422, "invalid_parts")
        assert row_codes(error) == [(1, "unreadable")]
        refused(post(stack, "workshop", "/v1/parts/install", {"items": [{"part": {"gtin": GTIN_A, "serial": "IL3"}, "part_id": hexid(pids[2]), "vin": VINS[0]}]}), 422, "invalid_request")
    assert [on_chain(ledger, pid)[0] for pid in pids] == [S.INSTALLED, S.INSTALLED, S.IN_STOCK]


@pytest.mark.chain
def test_part_ids_keep_their_answers_and_cannot_be_sent_with_parts(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = ledger.register(maker, ["OK1"], lot="L-OLD")
    unknown = hexid(part_id(GTIN_A, "NOT-THERE"))
    with serve(stack):
        error = refused(post(stack, "maker", "/v1/parts/scrap", {"part_ids": [unknown]}), 422, "unknown_part")
        assert error["details"] == [{"part_id": unknown}]
        assert row_codes(refused(post(stack, "maker", "/v1/parts/scrap", {"parts": [unknown]}), 422, "invalid_parts")) == [(1, "unknown_part")]
        refused(post(stack, "maker", "/v1/parts/ship", {"part_ids": ids_of(pids), "parts": ids_of(pids), "to_org": warehouse.id}), 422, "invalid_request")
        refused(post(stack, "maker", "/v1/parts/ship", {"to_org": warehouse.id}), 422, "invalid_request")
        error = refused(post(stack, "maker", "/v1/parts/receive", {"part_ids": ids_of(pids)}), 409, "invalid_state")
        assert error["details"] == [{"part_id": hexid(pids[0]), "reason": "status is in_stock"}]
        assert commands_written(stack) == 0

        body = stack.client.get("/openapi.json").json()["paths"]["/v1/parts/ship"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        schema = stack.client.get("/openapi.json").json()["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
        assert {form["title"] for form in schema["properties"]["parts"]["items"]["anyOf"]} == {"PartId", "DigitalLink", "GtinSerial", "LotSelection", "LogisticUnit"}


@pytest.mark.chain
def test_a_selection_past_the_request_limit_is_refused_whole(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    pids = ledger.register(maker, ["BIG1", "BIG2", "BIG3"], lot="L-BIG")
    with serve(stack, max_rows_per_request=2):
        refused(post(stack, "maker", "/v1/parts/ship", {"parts": [{"lot": "L-BIG"}], "to_org": warehouse.id}), 413, "too_many_parts")
        assert commands_written(stack) == 0
    assert [on_chain(ledger, pid)[0] for pid in pids] == [S.IN_STOCK] * 3


@pytest.mark.chain
def test_a_retry_of_a_selection_replays_its_answer_after_the_parts_moved(stack, ledger):
    maker, warehouse = ledger.orgs["maker"], ledger.orgs["warehouse"]
    ledger.register(maker, ["ID1", "ID2"], lot="L-IDEM")
    body = {"parts": [{"lot": "L-IDEM"}], "to_org": warehouse.id}
    with serve(stack):
        first = post(stack, "maker", "/v1/parts/ship", body, **{"Idempotency-Key": "ship-idem-1"})
        confirmed(stack, "maker", first)
        again = post(stack, "maker", "/v1/parts/ship", body, **{"Idempotency-Key": "ship-idem-1"})
        assert accepted(again) == first.json()["command_id"] and again.json()["idempotent_replay"] is True
        # Without the key it is a new request, and the lot has nothing left in stock to ship.
        assert row_codes(refused(post(stack, "maker", "/v1/parts/ship", body), 422, "invalid_parts")) == [(1, "empty_selection")]
        assert commands_written(stack) == 1


def test_row_errors_are_api_errors_answered_as_422():
    from ledger_service.errors import STATUS

    error = RowErrors("1 of 1 part entries are refused", [{"row": 1, "value": "x", "code": "unreadable", "message": "m"}])
    assert isinstance(error, ApiError) and STATUS[type(error)] == 422 and error.code == "invalid_parts"
