"""The read API over a live mirror: classification, authorization, pagination, freshness, errors."""

from __future__ import annotations

import gc
import os

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient

from indexer import migrate
from ledger_service.app import create_app
from ledger_service.public_app import create_public_app
from ledger_service.auth import create_api_key
from ledger_service.settings import ServiceSettings
from partledger.db import make_engine
from partledger.manifest import save_manifest
from tests.test_indexer import index_to_head

NO_DOC = bytes(32)


@pytest.fixture
def api(ledger, db_url, tmp_path):
    """Workload on chain, mirrored into `db_url`, served by create_app; returns (client, keys by org name, ids)."""
    maker, warehouse, workshop = ledger.orgs["maker"], ledger.orgs["warehouse"], ledger.orgs["workshop"]
    p = ledger.parts.functions
    ids = ledger.register(maker, [f"Q{index:03d}" for index in range(250)], lot="L-Q")
    ledger.act(maker.key, p.shipParts(ids[:10], warehouse.id, keccak(text="dn-1")))
    ledger.act(warehouse.key, p.receiveParts(ids[:10], NO_DOC))
    ledger.act(warehouse.key, p.shipParts(ids[:2], workshop.id, NO_DOC))
    ledger.act(workshop.key, p.receiveParts(ids[:2], NO_DOC))
    ledger.act(workshop.key, p.installParts(ids[:1], [keccak(text="vin")], NO_DOC))
    lot = ledger.lot_number(maker, "L-Q")
    ledger.act(maker.key, p.recallLot(lot, keccak(text="notice")))
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    index_to_head(ledger, engine)
    manifest_path = tmp_path / "manifest.json"
    save_manifest(ledger.manifest.__class__(**{**ledger.manifest.__dict__, "rpc_url": ledger.w3.provider.endpoint_uri}), manifest_path)
    service_db = f"sqlite:///{tmp_path / 'service.db'}"
    app = create_app(ServiceSettings(manifest=manifest_path, index_db_url=db_url, service_db_url=service_db))
    service_engine = app.state.services.service_engine
    keys = {name: create_api_key(service_engine, org_id=org.id) for name, org in ledger.orgs.items()}
    with TestClient(app) as client:
        yield client, keys, ids, lot


def get(client, keys, as_org, url, **params):
    headers = {"Authorization": f"Bearer {keys[as_org]}"} if as_org else {}
    return client.get(url, headers=headers, params=params)


def test_fastapi_telemetry_is_on_only_where_opentelemetry_is_configured(monkeypatch, tmp_path):
    settings = ServiceSettings(manifest=tmp_path / "m.json", index_db_url="sqlite://", service_db_url="sqlite://")
    for name in [name for name in os.environ if name.startswith("OTEL_") or name == "FASTAPI_OTEL_AUTO_CONFIGURE"]:
        monkeypatch.delenv(name)
    assert settings.telemetry_config() == {"tracing": False, "metrics": False, "logs": False}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert settings.telemetry_config() == {}
    assert settings.model_copy(update={"telemetry": False}).telemetry_config()["tracing"] is False


def test_a_started_service_puts_its_heap_out_of_the_collectors_reach(api, db_url, tmp_path):
    """Else each full garbage collection walks every object of the started service: ~100 ms without an answer."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    public = create_public_app(ServiceSettings(manifest=tmp_path / "manifest.json", index_db_url=db_url, service_db_url=f"sqlite:///{tmp_path / 'public.db'}"))
    with TestClient(public):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0  # stopped: collectable again


def test_health_reports_head_indexed_block_and_lag(api, ledger):
    client, _, _, _ = api
    body = client.get("/v1/health").json()
    assert body["indexed_block"] == ledger.w3.eth.block_number == body["head"] and body["lag"] == 0
    assert body["status"] == "ok" and body["indexer_healthy"] is True
    ledger.w3.provider.make_request("evm_mine", [])
    assert client.get("/v1/health").json()["lag"] == 1


def test_every_read_reports_the_block_it_reflects(api, ledger):
    client, keys, ids, _ = api
    response = get(client, keys, "maker", f"/v1/parts/0x{ids[0].hex()}")
    assert response.status_code == 200
    assert response.json()["block"] == ledger.w3.eth.block_number
    assert response.headers["X-PartLedger-Block"] == str(response.json()["block"])


def test_part_history_for_involved_org_and_public_view_for_others(api, ledger):
    client, keys, ids, _ = api
    url = f"/v1/parts/0x{ids[0].hex()}"
    body = get(client, keys, "workshop", url).json()
    assert body["classification"] == "consortium"
    assert [event["kind"] for event in body["history"]] == ["registered", "shipped", "received", "shipped", "received", "installed"]
    assert body["part"]["status"] == "installed" and body["part"]["recalled"] is True
    assert body["part"]["vin_hash"] == "0x" + keccak(text="vin").hex()
    stranger = get(client, keys, "distributor", url).json()
    assert stranger["classification"] == "public" and stranger["history"] is None
    assert set(stranger["part"]) == {"part_id", "gtin", "serial", "manufacturer", "status", "recalled"}
    auditor = get(client, keys, "auditor", url).json()
    assert auditor["classification"] == "consortium" and auditor["history"][-1]["vin_hash"] is not None
    maker_view = get(client, keys, "maker", url).json()
    assert maker_view["part"]["vin_hash"] is None, "the salted VIN hash is the installing workshop's and auditors'"


def test_part_lookup_by_gtin_and_serial(api):
    client, keys, ids, _ = api
    body = get(client, keys, "maker", "/v1/parts/gs1/04012345000016/Q000").json()
    assert body["part"]["part_id"] == "0x" + ids[0].hex()
    response = get(client, keys, "maker", "/v1/parts/gs1/04012345000017/Q000")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_gtin"


def test_parts_by_lot_are_paged_with_a_cursor(api):
    client, keys, ids, lot = api
    seen, cursor, pages = [], None, 0
    while True:
        params = {"lot": lot, "limit": 100} | ({"cursor": cursor} if cursor else {})
        body = get(client, keys, "maker", "/v1/parts", **params).json()
        seen += [item["part_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 250 == len(set(seen))
    assert sorted(seen) == sorted("0x" + pid.hex() for pid in ids)


def test_parts_list_shows_only_what_the_caller_may_see(api):
    client, keys, _, lot = api
    warehouse = get(client, keys, "warehouse", "/v1/parts", lot=lot, limit=1000).json()["items"]
    assert len(warehouse) == 8 and all(item["custodian"]["name"] == "warehouse" for item in warehouse)
    assert get(client, keys, "distributor", "/v1/parts", lot=lot).json()["items"] == []
    assert len(get(client, keys, "regulator", "/v1/parts", lot=lot, limit=1000).json()["items"]) == 250
    in_transit = get(client, keys, "maker", "/v1/parts", status="installed").json()["items"]
    assert len(in_transit) == 1


def test_inventory_per_site(api, ledger):
    client, keys, _, _ = api
    body = get(client, keys, "maker", "/v1/inventory").json()
    (site,) = body["sites"]
    assert site["site_key"] == ledger.orgs["maker"].key and site["counts"] == {"in_stock": 240}
    assert get(client, keys, "warehouse", "/v1/inventory", org=ledger.orgs["maker"].id).status_code == 403
    assert get(client, keys, "auditor", "/v1/inventory", org=ledger.orgs["maker"].id).json()["sites"] == body["sites"]


def test_recall_impact_for_manufacturer_regulator_auditor_only(api, ledger):
    client, keys, ids, lot = api
    body = get(client, keys, "maker", f"/v1/lots/{lot}/recall-impact", limit=1000).json()
    assert body["lot"]["recalled"] is True and body["recall"]["by"]["name"] == "maker"
    assert body["counts"] == {"in_stock": 249, "installed": 1} and body["installed_vehicles"] == 1
    installed = [item for item in body["items"] if item["vehicle_vin_hash"]]
    assert [item["part_id"] for item in installed] == ["0x" + ids[0].hex()]
    for org in ("regulator", "auditor"):
        assert get(client, keys, org, f"/v1/lots/{lot}/recall-impact").status_code == 200
    for org in ("warehouse", "workshop", "maker2"):
        response = get(client, keys, org, f"/v1/lots/{lot}/recall-impact")
        assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"
    assert get(client, keys, "maker", "/v1/lots/999/recall-impact").json()["error"]["code"] == "unknown_lot"


def test_authentication_failures_are_401_with_stable_codes(api, tmp_path):
    client, keys, ids, _ = api
    url = f"/v1/parts/0x{ids[0].hex()}"
    assert client.get(url).json()["error"]["code"] == "unauthorized"
    for header in ("Bearer nope", "Bearer plk_abc", "Basic xyz", "Bearer " + keys["maker"][:-2] + "xx"):
        response = client.get(url, headers={"Authorization": header})
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
        assert keys["maker"] not in response.text


def test_malformed_input_gets_4xx_never_500(api):
    client, keys, _, _ = api
    cases = [
        ("/v1/parts/0xzz" + "0" * 62, 422),
        ("/v1/parts?cursor=%%%", 400),
        ("/v1/parts?limit=0", 422),
        ("/v1/parts?limit=100000", 422),
        ("/v1/parts?status=flying", 400),
        ("/v1/parts?gtin=123", 400),
        ("/v1/evidence?doc_type=poem", 400),
        ("/v1/evidence?doc_hash=0x12", 400),
        ("/v1/lots/abc/recall-impact", 422),
        ("/v1/nowhere", 404),
    ]
    for url, status in cases:
        response = client.get(url, headers={"Authorization": f"Bearer {keys['maker']}"})
        assert response.status_code == status, (url, response.status_code, response.text)
        assert "code" in response.json()["error"]
