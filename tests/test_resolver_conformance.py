"""The Digital Link resolver against the GS1-Conformant Resolver standard (1.2), one test per rule: HEAD, OPTIONS,
CORS and its preflight, the description file, key qualifiers in the standard's order, the product and lot levels,
?linkType= redirects, the linkset listing every link; and the manufacturer's links (PUT by the GTIN's manufacturer
alone), their migration and their CLI.

No chain: the service (create_app) runs in process over a mirror seeded directly in SQLite, one per module."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_utils import to_checksum_address
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, func, insert, inspect, select
from typer.testing import CliRunner

from indexer import migrate as index_migrate
from indexer.tables import IndexerState, Lot, Organisation, Part, Recall
from labels.digital_link import parse_key_path
from ledger_service import migrate
from ledger_service.app import create_app
from ledger_service.auth import create_api_key
from ledger_service.link_tables import ProductLink
from ledger_service.public_app import create_public_app
from ledger_service.resolver_links import Link, choose_link
from ledger_service.scan_tables import Scan
from ledger_service.settings import ServiceSettings
from ledger_service.tables import SERVICE_METADATA
from partledger.db import make_engine
from partledger.errors import ValidationError
from partledger.ids import part_id
from partledger.manifest import DeployedContract, Manifest, save_manifest
from partledger.model import PartStatus, Role
from tests.test_scan_migration import downgrade

CHAIN_ID = 31337
GTIN_A = "04012345000016"  # the maker's (first registered), also registered later by maker2
GTIN_C = "09506000134352"  # the maker's, in another lot
GTIN_UNKNOWN = "09506000134369"  # valid, never registered
MAKER, MAKER2, WORKSHOP = 1, 2, 3
NOTICE = bytes.fromhex("ab" * 32)
SITE = to_checksum_address("0x" + "22" * 20)
JSON = {"Accept": "application/json"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", "Accept-Language": "en-GB,en;q=0.9"}
LINKSET = {"Accept": "application/linkset+json"}
LINKS = [
    {"link_type": "gs1:pip", "href": "https://maker.example/p/4012345000016", "title": "Brake caliper", "lang": "en", "type": "text/html"},
    {"link_type": "pip", "href": "https://maker.example/zh/p/4012345000016", "title": "制动钳", "lang": "zh-cn", "type": "text/html"},
    {"link_type": "https://gs1.org/voc/instructions", "href": "https://maker.example/manual.pdf?v=2", "title": "Fitting instructions", "type": "application/pdf"},
    {"link_type": "gs1:safetyInfo", "href": "https://maker.example/sds.pdf", "title": "Safety data sheet", "lang": "en"},
]


def seed_mirror(url: str) -> None:
    """A mirror as the indexer would leave it: three organisations, four lots (one recalled), parts of two GTINs."""
    engine = make_engine(url)
    index_migrate.upgrade(engine)

    def part(gtin: str, serial: str, *, lot: int, maker: int, block: int, recalled: bool = False) -> dict[str, Any]:
        return {"part_id": part_id(gtin, serial), "gtin": gtin, "serial": serial, "lot": lot, "manufacturer": maker, "status": int(PartStatus.IN_STOCK),
                "custodian": maker, "recalled": recalled, "site_key": SITE, "registered_block": block, "updated_block": block}  # fmt: skip

    with engine.begin() as conn:
        conn.execute(insert(Organisation.__table__), [
            {"org_id": MAKER, "name": "Maker Co", "roles": int(Role.MANUFACTURER), "registered_block": 1, "updated_block": 1},
            {"org_id": MAKER2, "name": "Second Maker", "roles": int(Role.MANUFACTURER), "registered_block": 1, "updated_block": 1},
            {"org_id": WORKSHOP, "name": "Workshop", "roles": int(Role.WORKSHOP), "registered_block": 1, "updated_block": 1},
        ])  # fmt: skip
        conn.execute(insert(Lot.__table__), [
            {"lot": 1, "manufacturer": MAKER, "lot_code": "L-OK", "opened_block": 10, "recalled": False},
            {"lot": 2, "manufacturer": MAKER, "lot_code": "L-RC", "opened_block": 11, "recalled": True},
            {"lot": 3, "manufacturer": MAKER2, "lot_code": "L-OK", "opened_block": 20, "recalled": False},
            {"lot": 4, "manufacturer": MAKER, "lot_code": "L-C", "opened_block": 12, "recalled": False},
        ])  # fmt: skip
        conn.execute(insert(Part.__table__), [
            part(GTIN_A, "A1", lot=1, maker=MAKER, block=10), part(GTIN_A, "A2", lot=1, maker=MAKER, block=10),
            part(GTIN_A, "R1", lot=2, maker=MAKER, block=11, recalled=True), part(GTIN_C, "C1", lot=4, maker=MAKER, block=12),
            part(GTIN_A, "X1", lot=3, maker=MAKER2, block=20),
        ])  # fmt: skip
        conn.execute(insert(Recall.__table__), [{"lot": 2, "org_id": MAKER, "site_key": SITE, "notice_hash": NOTICE, "block_number": 30, "tx_hash": bytes(32)}])
        conn.execute(insert(IndexerState.__table__), [{"chain_id": CHAIN_ID, "block_number": 40, "block_hash": bytes(32), "written_block": 40, "head_seen": 40}])
    engine.dispose()


def settings_for(workdir: Path, **overrides: Any) -> ServiceSettings:
    manifest = workdir / "manifest.json"
    if not manifest.exists():
        contract = DeployedContract(address=to_checksum_address("0x" + "11" * 20), block=1, tx_hash="0x" + "00" * 32, artifact_sha256="", code_hash="")
        save_manifest(Manifest(chain_id=CHAIN_ID, rpc_url="http://127.0.0.1:9", deployment_block=1, deployer=SITE, operator=SITE,
                               contracts={name: contract for name in ("PartLedger", "ConsortiumRegistry", "EvidenceLedger")}, dev_chain=True), manifest)  # fmt: skip
    options = {"public_rate_limit": "100000/minute", "submitter": False, **overrides}
    return ServiceSettings(manifest=manifest, index_db_url=f"sqlite:///{workdir / 'index.db'}", service_db_url=f"sqlite:///{workdir / 'service.db'}", **options)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("resolver")
    settings = settings_for(workdir)
    seed_mirror(settings.index_db_url)
    app = create_app(settings)
    engine = app.state.services.service_engine
    keys = {name: create_api_key(engine, org_id=org) for name, org in (("maker", MAKER), ("maker2", MAKER2), ("workshop", WORKSHOP))}
    with TestClient(app) as client:
        put = client.put(f"/v1/products/{GTIN_A}/links", headers=auth(keys, "maker"), json={"links": LINKS})
        assert put.status_code == 200, put.text
        yield {"client": client, "keys": keys, "settings": settings, "workdir": workdir}


def auth(keys: dict[str, str], org: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[org]}"}


# --- HEAD --------------------------------------------------------------------------------------------------------

ADDRESSES = [
    f"/01/{GTIN_A}/21/A1",  # a part (unsigned label)
    f"/01/{GTIN_A}/21/NEVER-MADE",  # an unknown serial: 404 with its verdict
    f"/01/{GTIN_A}",  # the product
    f"/01/{GTIN_A}/10/L-RC",  # a recalled lot
    f"/01/{GTIN_UNKNOWN}",  # an unknown product
    f"/01/{GTIN_A}/21/A1/10/L-OK",  # qualifiers out of order: 400
    f"/01/{GTIN_A}?linkType=gs1:pip",  # a redirect
    f"/01/{GTIN_A}?linkType=linkset",
    "/.well-known/gs1resolver",
]


@pytest.mark.parametrize("address", ADDRESSES)
@pytest.mark.parametrize("accept", [JSON, BROWSER], ids=["json", "html"])
def test_head_gives_gets_status_and_headers_without_a_body(world, address, accept):
    client = world["client"]
    got = client.get(address, headers=accept, follow_redirects=False)
    head = client.head(address, headers=accept, follow_redirects=False)
    assert (head.status_code, head.content) == (got.status_code, b"")
    varying = {"content-security-policy", "x-request-id"}  # a fresh nonce and a fresh request id each answer
    assert {k: v for k, v in head.headers.items() if k not in varying} == {k: v for k, v in got.headers.items() if k not in varying}
    assert int(head.headers["content-length"]) == len(got.content)


def test_head_of_a_label_records_no_scan(world):
    client = world["client"]
    desk = client.app.state.scan_desk
    engine = client.app.state.services.service_engine

    def scans() -> int:
        desk.book.flush()
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Scan.__table__)).scalar()

    before = scans()
    assert client.head(f"/01/{GTIN_A}/21/A2", headers=JSON).status_code == 200
    assert scans() == before
    assert client.get(f"/01/{GTIN_A}/21/A2", headers=JSON).status_code == 200
    assert scans() == before + 1


# --- OPTIONS, CORS -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [f"/01/{GTIN_A}/21/A1", f"/01/{GTIN_A}", f"/01/{GTIN_A}/10/L-OK", "/01/garbage", "/.well-known/gs1resolver"])
def test_options_answers_allow_and_the_cors_preflight(world, address):
    preflight = world["client"].options(address, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET",
                                                           "Access-Control-Request-Headers": "accept, accept-language"})  # fmt: skip
    assert preflight.status_code == 204 and preflight.content == b""
    assert preflight.headers["allow"] == "GET, HEAD, OPTIONS"
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert preflight.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "accept, accept-language"
    assert preflight.headers["access-control-max-age"] == "86400"
    plain = world["client"].options(address, headers={"Access-Control-Request-Headers": "x\r\ny: evil"})
    assert (plain.status_code, plain.headers["access-control-allow-headers"]) == (204, "Accept, Accept-Language")


CORS_CASES = [
    ("get", f"/01/{GTIN_A}/21/A1", JSON, 200),
    ("get", f"/01/{GTIN_A}/21/NEVER-MADE", BROWSER, 404),
    ("get", f"/01/{GTIN_A}", JSON, 200),
    ("get", f"/01/{GTIN_A}/10/L-RC", BROWSER, 200),
    ("get", f"/01/{GTIN_UNKNOWN}", JSON, 404),
    ("get", f"/01/{GTIN_A}?linkType=gs1:pip", JSON, 307),
    ("get", f"/01/{GTIN_A}?linkType=linkset", JSON, 200),
    ("get", f"/01/{GTIN_A}/21/A1/10/L-OK", BROWSER, 400),
    ("get", "/00/106141411234567897", JSON, 404),
    ("get", "/.well-known/gs1resolver", JSON, 200),
    ("head", f"/01/{GTIN_A}", JSON, 200),
    ("post", f"/01/{GTIN_A}", JSON, 405),
    ("delete", "/.well-known/gs1resolver", JSON, 405),
]


@pytest.mark.parametrize(("method", "address", "accept", "status"), CORS_CASES, ids=[f"{c[0]} {c[1]} {c[3]}" for c in CORS_CASES])
def test_every_resolver_answer_carries_cors_headers(world, method, address, accept, status):
    answer = world["client"].request(method, address, headers={**accept, "Origin": "https://shop.example"}, follow_redirects=False)
    assert answer.status_code == status, answer.text
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["access-control-allow-methods"] == "GET, HEAD, OPTIONS"
    exposed = {name.strip().lower() for name in answer.headers["access-control-expose-headers"].split(",")}
    assert {"link", "location", "retry-after"} <= exposed


def test_other_methods_on_a_resolver_address_are_405_with_allow(world):
    for method in ("post", "put", "patch", "delete"):
        answer = world["client"].request(method, f"/01/{GTIN_A}/21/A1")
        assert (answer.status_code, answer.headers["allow"], answer.json()["error"]["code"]) == (405, "GET, HEAD, OPTIONS", "method_not_allowed")


def test_a_rate_limited_answer_carries_cors_headers_too(world, tmp_path):
    settings = settings_for(world["workdir"], public_rate_limit="1/minute")
    with TestClient(create_public_app(settings)) as public:
        assert public.get(f"/01/{GTIN_A}", headers=JSON).status_code == 200
        limited = public.get(f"/01/{GTIN_A}", headers=JSON)
    assert (limited.status_code, limited.json()["error"]["code"], limited.headers["access-control-allow-origin"]) == (429, "rate_limited", "*")
    assert "retry-after" in limited.headers


# --- the description file --------------------------------------------------------------------------------------


def test_well_known_gs1resolver_describes_the_resolver(world):
    answer = world["client"].get("/.well-known/gs1resolver")
    assert (answer.status_code, answer.headers["content-type"]) == (200, "application/json")
    body = answer.json()
    # The standard's description file schema (1.2.0): resolverRoot (a URI) and supportedPrimaryKeys (AIs of its enum)
    # are what every file must give; the rest are the optional properties this resolver declares.
    assert body == {
        "name": "PartLedger",
        "resolverRoot": "http://testserver",
        "supportedPrimaryKeys": ["01"],
        "supportedLinkType": [{"namespace": "https://gs1.org/voc/", "prefix": "gs1:"}],
        "linkTypeDefaultCanBeLinkset": False,
        "supportedContextValuesEnumerated": ["purchase", "vehicle"],
        "jsonLdContextLocation": "https://ref.gs1.org/standards/resolver/linkset-context",
    }
    assert re.fullmatch(r"^[a-zA-Z_][A-Za-z0-9_-]*?:$", body["supportedLinkType"][0]["prefix"])
    behind = world["client"].get("/.well-known/gs1resolver", headers={"Host": "id.partledger.test"})
    assert behind.json()["resolverRoot"] == "http://id.partledger.test"


# --- key qualifiers in the standard's order --------------------------------------------------------------------

OUT_OF_ORDER = [
    (f"/10/L-OK/01/{GTIN_A}", "qualifier_before_key"),
    (f"/21/A1/01/{GTIN_A}", "qualifier_before_key"),
    ("/22/V1", "qualifier_before_key"),
    (f"/01/{GTIN_A}/21/A1/10/L-OK", "qualifier_out_of_order"),
    (f"/01/{GTIN_A}/10/L-OK/22/V1", "qualifier_out_of_order"),
    (f"/01/{GTIN_A}/10/L-OK/10/L-RC", "qualifier_out_of_order"),
    (f"/01/{GTIN_A}/235/TPX1/21/A1", "qualifier_out_of_order"),
    (f"/01/{GTIN_A}/17/261231", "unknown_ai"),  # a data attribute belongs in the query string
    (f"/01/{GTIN_A}/99/X", "unknown_ai"),
    (f"/01/{GTIN_A}/00/106141411234567897", "unknown_ai"),
    (f"/01/{GTIN_A}/10", "invalid_digital_link"),
    (f"/01/{GTIN_A}/22/" + "V" * 21, "invalid_cpv"),
    (f"/01/{GTIN_A}/10/A%20B", "invalid_lot"),
]


@pytest.mark.parametrize(("address", "code"), OUT_OF_ORDER)
def test_key_qualifiers_out_of_the_standards_order_are_400(world, address, code):
    client = world["client"]
    answer = client.get(address, headers=JSON)
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, code), answer.text
    page = client.get(address, headers=BROWSER)
    assert page.status_code == 400 and "Not a valid part label address" in page.text and code in page.text


def test_key_qualifiers_in_order_resolve_walking_up_to_what_is_known(world):
    client = world["client"]
    full = client.get(f"/01/{GTIN_A}/22/V1/10/L-OK/21/A1", headers=JSON)
    assert (full.status_code, full.json()["verdict"], full.json()["serial"]) == (200, "unsigned", "A1")
    variant = client.get(f"/01/{GTIN_A}/22/V1", headers=JSON)  # no variants kept: the product answers
    assert (variant.status_code, variant.json()["gtin"]) == (200, GTIN_A)
    assert client.get(f"/01/{GTIN_A}/235/TPX-1", headers=JSON).json()["gtin"] == GTIN_A
    assert client.get(f"/01/{GTIN_A}/22/V1/10/L-RC", headers=JSON).json()["recalled"] is True


def test_a_trailing_slash_is_tolerated(world):
    client = world["client"]
    for address in (f"/01/{GTIN_A}", f"/01/{GTIN_A}/10/L-OK", f"/01/{GTIN_A}/21/A1"):
        plain, slashed = client.get(address, headers=JSON), client.get(address + "/", headers=JSON)
        assert plain.status_code == slashed.status_code == 200
        assert {k: v for k, v in plain.json().items() if k != "scan_id"} == {k: v for k, v in slashed.json().items() if k != "scan_id"}


def test_another_gs1_primary_key_is_404_unsupported_key(world):
    answer = world["client"].get("/00/106141411234567897", headers=JSON)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "unsupported_key")
    page = world["client"].get("/414/9520123456788", headers=BROWSER)
    assert page.status_code == 404 and "GTINs (AI 01) only" in page.text


def test_key_path_parsing_keeps_the_qualifiers_and_canonical_path():
    key = parse_key_path(f"/01/{GTIN_A[1:]}/22/V%2F1/10/L%2D1/21/S1/", "linkType=gs1:pip&sig=x")
    assert (key.gtin, key.cpv, key.lot, key.serial, key.level, key.link_type, key.signature) == (GTIN_A, "V/1", "L-1", "S1", "serial", "gs1:pip", "x")
    assert key.path == f"/01/{GTIN_A}/22/V%2F1/10/L-1/21/S1"
    with pytest.raises(ValidationError) as refused:
        parse_key_path(f"/01/{GTIN_A}/22/V1/10/L 1")
    assert refused.value.code == "invalid_lot"
    assert parse_key_path(f"/01/{GTIN_A}/22/V1/10/L1").path == f"/01/{GTIN_A}/22/V1/10/L1"


# --- the product and lot levels ----------------------------------------------------------------------------------


def test_product_level_answers_the_gtin_its_manufacturer_and_its_links(world):
    client = world["client"]
    answer = client.get(f"/01/{GTIN_A}", headers=JSON)
    assert answer.status_code == 200
    body = answer.json()
    assert body["gtin"] == GTIN_A and body["block"] == 40
    assert body["manufacturer"] == {"id": MAKER, "name": "Maker Co"}  # the first registrant, not maker2 (block 20)
    assert [link["link_type"] for link in body["links"]] == ["gs1:pip", "gs1:pip", "gs1:instructions", "gs1:safetyInfo"]
    assert body["links"][1] == {"link_type": "gs1:pip", "href": "https://maker.example/zh/p/4012345000016", "title": "制动钳", "lang": "zh-CN", "type": "text/html"}
    assert answer.headers["link"] == f'<http://testserver/01/{GTIN_A}?linkType=linkset>; rel="linkset"; type="application/linkset+json"'
    assert answer.headers["x-partledger-block"] == "40"
    page = client.get(f"/01/{GTIN_A}", headers=BROWSER)
    assert page.status_code == 200 and 'data-verdict="product"' in page.text and "Registered product" in page.text
    assert 'href="https://maker.example/manual.pdf?v=2"' in page.text and "Maker Co" in page.text
    bare = client.get(f"/01/{GTIN_C}", headers=JSON).json()
    assert (bare["manufacturer"]["id"], bare["links"]) == (MAKER, [])


def test_an_unknown_product_is_404_unknown_gtin(world):
    client = world["client"]
    answer = client.get(f"/01/{GTIN_UNKNOWN}", headers=JSON)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "unknown_gtin")
    page = client.get(f"/01/{GTIN_UNKNOWN}", headers=BROWSER)
    assert page.status_code == 404 and "No part with this GTIN is registered" in page.text


def test_lot_level_answers_the_lot_and_its_recall_status(world):
    client = world["client"]
    recalled = client.get(f"/01/{GTIN_A}/10/L-RC", headers=JSON)
    assert recalled.status_code == 200
    assert recalled.json() == {
        "gtin": GTIN_A, "lot": "L-RC", "manufacturer": {"id": MAKER, "name": "Maker Co"}, "recalled": True,
        "recall": {"notice_hash": "0x" + NOTICE.hex(), "block": 30, "by": "Maker Co", "notice": None}, "links": recalled.json()["links"], "block": 40,
    }  # fmt: skip
    assert len(recalled.json()["links"]) == 4  # the product's, inherited
    fine = client.get(f"/01/{GTIN_A}/10/L-OK", headers=JSON).json()
    assert (fine["recalled"], "recall" in fine, fine["manufacturer"]["id"]) == (False, False, MAKER)  # the maker's L-OK, not maker2's
    page = client.get(f"/01/{GTIN_A}/10/L-RC", headers=BROWSER)
    assert page.status_code == 200 and "Lot recalled — do not use" in page.text and "0x" + NOTICE.hex() in page.text
    assert 'class="card verdict danger"' in page.text


UNKNOWN_LOTS = [
    (f"/01/{GTIN_A}/10/NO-SUCH", "unknown_lot", "No lot with this code is registered for this GTIN"),
    (f"/01/{GTIN_A}/10/L-C", "unknown_lot", "No lot with this code is registered for this GTIN"),  # the maker's lot, but of another GTIN
    (f"/01/{GTIN_UNKNOWN}/10/L-OK", "unknown_gtin", "No part with this GTIN is registered"),
]


@pytest.mark.parametrize(("address", "code", "text"), UNKNOWN_LOTS)
def test_an_unknown_lot_is_404(world, address, code, text):
    answer = world["client"].get(address, headers=JSON)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, code)
    page = world["client"].get(address, headers=BROWSER)
    assert page.status_code == 404 and text in page.text


# --- ?linkType= --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("link_type", ["gs1:instructions", "instructions", "https://gs1.org/voc/instructions", "https://ref.gs1.org/voc/instructions"])
def test_link_type_redirects_307_to_the_manufacturers_link(world, link_type):
    answer = world["client"].get(f"/01/{GTIN_A}", params={"linkType": link_type, "foo": "bar"}, follow_redirects=False)
    assert answer.status_code == 307 and answer.content == b""
    query = answer.request.url.query.decode()
    assert answer.headers["location"] == f"https://maker.example/manual.pdf?v=2&{query}"  # the whole query string passed on
    assert answer.headers["link"].endswith('rel="linkset"; type="application/linkset+json"')


def test_link_type_picks_the_link_in_the_clients_language_and_is_inherited_below_the_gtin(world):
    client = world["client"]
    for address in (f"/01/{GTIN_A}", f"/01/{GTIN_A}/10/L-OK", f"/01/{GTIN_A}/21/A1", f"/01/{GTIN_A}/21/NEVER-MADE"):
        chinese = client.get(address + "?linkType=gs1:pip", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}, follow_redirects=False)
        assert (chinese.status_code, chinese.headers["location"]) == (307, "https://maker.example/zh/p/4012345000016?linkType=gs1:pip")
    english = client.get(f"/01/{GTIN_A}?linkType=pip", headers={"Accept-Language": "fr, en;q=0.8, zh;q=0.1"}, follow_redirects=False)
    assert english.headers["location"] == "https://maker.example/p/4012345000016?linkType=pip"
    nobody = client.get(f"/01/{GTIN_A}?linkType=pip", headers={"Accept-Language": "de"}, follow_redirects=False)
    assert nobody.headers["location"].startswith("https://maker.example/p/")  # the manufacturer's first


def test_an_unavailable_link_type_is_404_listing_what_there_is(world):
    client = world["client"]
    for link_type in ("gs1:recipeInfo", "nonsense", "gs1:pip"):
        gtin = GTIN_C if link_type == "gs1:pip" else GTIN_A
        answer = client.get(f"/01/{gtin}?linkType={link_type}", headers=JSON, follow_redirects=False)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "link_type_not_found"), answer.text
    listed = client.get(f"/01/{GTIN_A}/21/A1?linkType=gs1:recipeInfo", headers=JSON).json()["error"]["details"]
    assert listed == {"link_types": ["gs1:instructions", "gs1:pip", "gs1:safetyInfo"]}
    page = client.get(f"/01/{GTIN_A}?linkType=gs1:recipeInfo", headers=BROWSER)
    assert page.status_code == 404 and "There is no link of type gs1:recipeInfo." in page.text and "Fitting instructions" in page.text


def test_partledgers_own_link_types_answer_as_the_default(world):
    client = world["client"]
    assert client.get(f"/01/{GTIN_A}/21/A1?linkType=gs1:verificationService", headers=JSON).json()["verdict"] == "unsigned"
    assert client.get(f"/01/{GTIN_A}/10/L-RC?linkType=gs1:recallStatus", headers=JSON).json()["recalled"] is True
    assert client.get(f"/01/{GTIN_A}?linkType=gs1:defaultLink", headers=JSON).json()["gtin"] == GTIN_A


def test_choose_link_honours_quality_values():
    links = [Link("pip", "https://x/en", "t", "en"), Link("pip", "https://x/zh", "t", "zh-CN"), Link("sds", "https://x/s", "t")]
    assert choose_link(links, "pip", accept_language="zh;q=0.2, en;q=0.9").href == "https://x/en"
    assert choose_link(links, "pip", accept_language="en;q=0, zh-TW").href == "https://x/zh"  # q=0: not acceptable; zh-TW's language matches zh-CN
    assert choose_link(links, "pip", accept_language="*").href == "https://x/en"
    assert choose_link(links, "instructions", accept_language="en") is None


# --- the linkset -----------------------------------------------------------------------------------------------

GS1_HREFLANG = re.compile(r"(^\w{2}$)|(^\w{2}-\w{2}$)")  # the GS1 linkset schema's hreflang pattern


def check_linkset(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each entry's anchor and targets as GS1's linkset schema requires them (href, title; hreflang ll or ll-CC);
    the entries by anchor."""
    entries = {}
    for entry in body["linkset"]:
        for relation, targets in entry.items():
            if relation == "anchor":
                continue
            assert relation.startswith("https://gs1.org/voc/"), relation
            for target in targets:
                assert target["href"].startswith(("http://", "https://")) and target["title"], target
                assert all(GS1_HREFLANG.match(lang) for lang in target.get("hreflang", [])), target
        entries[entry["anchor"]] = entry
    return entries


def test_linkset_lists_every_link_of_each_level(world):
    client = world["client"]
    for answer in (client.get(f"/01/{GTIN_A}?linkType=linkset"), client.get(f"/01/{GTIN_A}", headers=LINKSET), client.get(f"/01/{GTIN_A}?linkType=all")):
        assert (answer.status_code, answer.headers["content-type"]) == (200, "application/linkset+json")
        (product,) = check_linkset(answer.json()).values()
        assert product["anchor"] == f"http://testserver/01/{GTIN_A}"
        assert product["https://gs1.org/voc/defaultLink"][0]["type"] == "text/html"
        assert [t["hreflang"] for t in product["https://gs1.org/voc/pip"]] == [["en"], ["zh-CN"]]
        assert product["https://gs1.org/voc/instructions"] == [{"href": "https://maker.example/manual.pdf?v=2", "title": "Fitting instructions", "type": "application/pdf"}]
        assert product["https://gs1.org/voc/safetyInfo"][0]["href"] == "https://maker.example/sds.pdf"
        assert 'rel="http://www.w3.org/ns/json-ld#context"' in answer.headers["link"]
    lot = check_linkset(client.get(f"/01/{GTIN_A}/10/L-RC?linkType=linkset").json())
    assert set(lot) == {f"http://testserver/01/{GTIN_A}/10/L-RC", f"http://testserver/01/{GTIN_A}"}
    assert lot[f"http://testserver/01/{GTIN_A}/10/L-RC"]["https://gs1.org/voc/recallStatus"][0]["type"] == "application/json"
    serial = check_linkset(client.get(f"/01/{GTIN_A}/21/A1?linkType=linkset").json())
    assert set(serial) == {f"http://testserver/01/{GTIN_A}/21/A1", f"http://testserver/01/{GTIN_A}"}
    assert "https://gs1.org/voc/verificationService" in serial[f"http://testserver/01/{GTIN_A}/21/A1"]
    assert len(serial[f"http://testserver/01/{GTIN_A}"]["https://gs1.org/voc/pip"]) == 2
    alone = check_linkset(client.get(f"/01/{GTIN_C}/21/C1?linkType=linkset").json())
    assert list(alone) == [f"http://testserver/01/{GTIN_C}/21/C1"]  # no links of the manufacturer's: one entry, as before


# --- the manufacturer's links ------------------------------------------------------------------------------------


def test_put_links_is_the_gtin_manufacturers_alone(world):
    client, keys = world["client"], world["keys"]
    body = {"links": LINKS[:1]}
    for org in ("maker2", "workshop"):  # maker2 registered parts of GTIN_A too, but after the maker
        refused = client.put(f"/v1/products/{GTIN_A}/links", headers=auth(keys, org), json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "not_gtin_manufacturer")
    unknown = client.put(f"/v1/products/{GTIN_UNKNOWN}/links", headers=auth(keys, "maker"), json=body)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_gtin")
    assert client.put(f"/v1/products/{GTIN_A}/links", json=body).status_code == 401
    bad_gtin = client.put("/v1/products/04012345000017/links", headers=auth(keys, "maker"), json=body)
    assert (bad_gtin.status_code, bad_gtin.json()["error"]["code"]) == (400, "invalid_gtin")
    assert len(client.get(f"/01/{GTIN_A}", headers=JSON).json()["links"]) == 4  # nothing changed


def test_put_replaces_the_set_and_any_member_reads_it(world):
    client, keys = world["client"], world["keys"]
    first = client.put(f"/v1/products/{GTIN_C}/links", headers=auth(keys, "maker"), json={"links": LINKS[2:]})
    assert first.status_code == 200 and [link["link_type"] for link in first.json()["links"]] == ["gs1:instructions", "gs1:safetyInfo"]
    second = client.put(f"/v1/products/{GTIN_C[1:]}/links", headers=auth(keys, "maker"), json={"links": LINKS[3:]})  # a GTIN-13 names the same
    assert [link["href"] for link in second.json()["links"]] == ["https://maker.example/sds.pdf"]
    read = client.get(f"/v1/products/{GTIN_C}/links", headers=auth(keys, "workshop"))
    assert read.status_code == 200
    assert read.json() | {"updated_at": None} == {
        "gtin": GTIN_C, "manufacturer": {"id": MAKER, "name": "Maker Co"}, "updated_at": None, "block": 40,
        "links": [{"link_type": "gs1:safetyInfo", "href": "https://maker.example/sds.pdf", "title": "Safety data sheet", "lang": "en", "type": None}],
    }  # fmt: skip
    assert isinstance(read.json()["updated_at"], float)
    assert client.put(f"/v1/products/{GTIN_C}/links", headers=auth(keys, "maker"), json={"links": []}).json()["links"] == []
    assert client.get(f"/01/{GTIN_C}", headers=JSON).json()["links"] == []
    assert client.get(f"/v1/products/{GTIN_UNKNOWN}/links", headers=auth(keys, "maker")).json()["error"]["code"] == "unknown_gtin"


def test_put_refuses_bad_links_row_by_row_and_changes_nothing(world):
    client, keys = world["client"], world["keys"]
    links = [
        LINKS[0],
        {"link_type": "gs1:pip", "href": "http://maker.example/p", "title": "plain http"},
        {"link_type": "gs1:verificationService", "href": "https://maker.example/v", "title": "ours, not theirs"},
        {"link_type": "gs1:noSuchType", "href": "https://maker.example/x", "title": "x"},
        {"link_type": "gs1:pip", "href": "https://maker.example/p", "title": "p", "lang": "english"},
        {"link_type": "gs1:pip", "href": "https://maker.example/p", "title": "p", "type": "text/html; charset=utf-8"},
        {"link_type": "gs1:pip", "href": "https://user:pw@maker.example/p", "title": "credentials"},
        {"link_type": "gs1:pip", "href": "https://maker.example/p", "title": "  "},
        LINKS[0],
    ]
    refused = client.put(f"/v1/products/{GTIN_A}/links", headers=auth(keys, "maker"), json={"links": links})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "invalid_links")
    rows = [(row["row"], row["code"]) for row in refused.json()["error"]["details"]]
    assert rows == [(2, "invalid_href"), (3, "reserved_link_type"), (4, "invalid_link_type"), (5, "invalid_lang"), (6, "invalid_media_type"),
                    (7, "invalid_href"), (8, "invalid_title"), (9, "duplicate_link")]  # fmt: skip
    assert len(client.get(f"/01/{GTIN_A}", headers=JSON).json()["links"]) == 4
    too_many = client.put(f"/v1/products/{GTIN_A}/links", headers=auth(keys, "maker"), json={"links": [LINKS[0]] * 51})
    assert (too_many.status_code, too_many.json()["error"]["code"]) == (422, "invalid_request")


def test_public_tier_resolves_products_and_has_no_links_api(world):
    with TestClient(create_public_app(settings_for(world["workdir"]))) as public:
        assert public.get(f"/01/{GTIN_A}", headers=JSON).json()["manufacturer"]["id"] == MAKER
        assert public.get("/.well-known/gs1resolver").status_code == 200
        assert public.options(f"/01/{GTIN_A}").status_code == 204
        assert public.get(f"/v1/products/{GTIN_A}/links", headers=auth(world["keys"], "maker")).status_code == 404


# --- the migration, the CLI ------------------------------------------------------------------------------------


def test_migration_0006_matches_the_table_and_downgrades(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    migrate.upgrade(engine)
    mine = MetaData()
    SERVICE_METADATA.tables[ProductLink.__tablename__].to_metadata(mine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in mine.tables})
        assert compare_metadata(context, mine) == []
    downgrade(engine, "0005")
    assert "product_links" not in inspect(engine).get_table_names()
    migrate.upgrade(engine)
    assert "product_links" in inspect(engine).get_table_names()


def test_cli_sets_and_lists_a_gtins_links(world, tmp_path, monkeypatch):
    from partledger_cli import products
    from partledger_cli.main import app

    monkeypatch.setattr(products, "service_client", lambda url: TestClient(world["client"].app, base_url=url))
    monkeypatch.setenv("PARTLEDGER_API_KEY", world["keys"]["maker"])
    file = tmp_path / "links.json"
    file.write_text(json.dumps(LINKS[2:3]))
    runner = CliRunner()
    done = runner.invoke(app, ["products", "links", "set", GTIN_C, "--file", str(file), "--service", "http://testserver"])
    assert done.exit_code == 0, done.output
    assert f"GTIN {GTIN_C}: 1 link(s) set" in done.output
    listed = runner.invoke(app, ["products", "links", "list", GTIN_C, "--service", "http://testserver", "--json"])
    assert listed.exit_code == 0 and json.loads(listed.output)["links"][0]["href"] == "https://maker.example/manual.pdf?v=2"
    table = runner.invoke(app, ["products", "links", "list", GTIN_C, "--service", "http://testserver"])
    assert "gs1:instructions" in table.output and "Maker Co" in table.output
    file.write_text("[]")
    monkeypatch.setenv("PARTLEDGER_API_KEY", world["keys"]["maker2"])
    refused = runner.invoke(app, ["products", "links", "set", GTIN_C, "--file", str(file), "--service", "http://testserver"])
    assert refused.exit_code == 1 and "(not_gtin_manufacturer)" in refused.output
    monkeypatch.setenv("PARTLEDGER_API_KEY", world["keys"]["maker"])
    assert runner.invoke(app, ["products", "links", "set", GTIN_C, "--file", str(file), "--service", "http://testserver"]).exit_code == 0
