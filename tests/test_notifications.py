"""Quality notifications end to end on one live stack (Anvil, the indexer, SQLite, the service with its submitter;
Chromium for the console's inbox): recipients computed from the mirror through assemblies and logistic units, the
per-recipient state machine, every transition anchored by the acting organisation's site key with a proof bundle that
the offline verifier accepts (and refuses once tampered with), a workshop's acknowledgement listing the affected parts
it holds and installed, and bad requests refused with stable codes.

The chain (one module-wide snapshot): the maker makes brake pads (lot PADS-N). Three go to maker2, which builds two
brake modules around two of them (assembly), packs both modules into a carton (an SSCC logistic unit) and ships the
carton to the distributor; the distributor takes one module out and ships it to the workshop, which installs it in a
vehicle; maker2 keeps the third pad loose. A fourth pad went to the warehouse and came back. The maker recalls the lot.
Elsewhere the maker's other part went to workshop2, which must never hear of the pads."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from eth_utils import keccak
from fastapi.testclient import TestClient
from sqlalchemy import MetaData, inspect

from ledger_service import accounts
from ledger_service import migrate as service_migrate
from ledger_service.console.i18n import Catalogue
from ledger_service.notifications.tables import Notification, NotificationBatch, NotificationPart, NotificationRecipient, NotificationTransition
from ledger_service.tables import SERVICE_METADATA
from partledger import quality_notifications as qn
from partledger.db import make_engine
from partledger.ids import gtin_check_digit, logistic_unit_id
from partledger.proofs import verifier as v
from tests.chainkit import GTIN_A, GTIN_B, Ledger
from tests.consolekit import CSP_LISTENER, axe_findings, error_code, field_error, launched_chromium, phone_context, served, session_of, watch_errors
from tests.labelkit import caught_up, live_stack
from tests.servicekit import Stack, wait_until
from tests.test_scan_migration import downgrade

pytestmark = pytest.mark.chain

ZERO32 = bytes(32)
VIN_HASH = keccak(text="salted VIN of the workshop's customer")
PASSWORD = "notifications-console-password-3"
TABLES = {t.__tablename__ for t in (Notification, NotificationPart, NotificationRecipient, NotificationTransition, NotificationBatch)}


def sscc(body: str) -> int:
    body = body.zfill(17)
    return int(body + str(gtin_check_digit(body)))


@dataclass
class World:
    stack: Stack
    client: TestClient
    ledger: Ledger
    lot: int = 0
    pads: list[bytes] = field(default_factory=list)
    modules: list[bytes] = field(default_factory=list)
    carton: bytes = b""
    other: bytes = b""

    def org(self, name: str) -> int:
        return self.ledger.orgs[name].id

    def headers(self, org: str, **extra: str) -> dict[str, str]:
        return self.stack.headers(org, **extra)


@pytest.fixture(scope="module")
def world(deployed: Ledger, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with live_stack(deployed, tmp_path_factory.mktemp("notifications")) as (stack, client):
        here = World(stack, client, deployed)
        build_chain(here)
        caught_up(client, deployed)
        engine = make_engine(stack.service_db_url)
        for username, org, role in (("ws.oper", "workshop", "operator"), ("ws.view", "workshop", "viewer"), ("mk.oper", "maker", "operator")):
            accounts.create_user(engine, org_id=deployed.orgs[org].id, username=username, password=PASSWORD, role=role)
        yield here


def build_chain(world: World) -> None:
    ledger = world.ledger
    p = ledger.parts.functions
    maker, maker2, warehouse = ledger.orgs["maker"], ledger.orgs["maker2"], ledger.orgs["warehouse"]
    distributor, workshop, workshop2 = ledger.orgs["distributor"], ledger.orgs["workshop"], ledger.orgs["workshop2"]
    pads = ledger.register(maker, [f"NPAD-{n}" for n in range(5)], lot="PADS-N")
    [other] = ledger.register(maker, ["NOTHER-1"], lot="OTHER-N")
    ledger.act(maker.key, p.shipParts(pads[:3], maker2.id, ZERO32))
    ledger.act(maker2.key, p.receiveParts(pads[:3], ZERO32))
    modules = ledger.register(maker2, ["NMOD-1", "NMOD-2"], gtin=GTIN_B, lot="MODULES-N")
    ledger.act(maker2.key, p.assembleParts(modules[0], [pads[0]]))
    ledger.act(maker2.key, p.assembleParts(modules[1], [pads[1]]))
    carton = sscc("4012345000091")
    ledger.act(maker2.key, p.packParts(carton, modules))
    ledger.act(maker2.key, p.shipParts([logistic_unit_id(carton)], distributor.id, ZERO32))
    ledger.act(distributor.key, p.receiveParts([logistic_unit_id(carton)], ZERO32))
    ledger.act(distributor.key, p.unpackParts(carton, [modules[0]]))
    ledger.act(distributor.key, p.shipParts([modules[0]], workshop.id, ZERO32))
    ledger.act(workshop.key, p.receiveParts([modules[0]], ZERO32))
    ledger.act(workshop.key, p.installParts([modules[0]], [VIN_HASH], ZERO32))
    ledger.act(maker.key, p.shipParts([pads[3]], warehouse.id, ZERO32))  # the warehouse held it once, and gave it back
    ledger.act(warehouse.key, p.receiveParts([pads[3]], ZERO32))
    ledger.act(warehouse.key, p.shipParts([pads[3]], maker.id, ZERO32))
    ledger.act(maker.key, p.receiveParts([pads[3]], ZERO32))
    ledger.act(maker.key, p.shipParts([other], workshop2.id, ZERO32))
    ledger.act(workshop2.key, p.receiveParts([other], ZERO32))
    world.lot = ledger.lot_number(maker, "PADS-N")
    ledger.act(maker.key, p.recallLot(world.lot, keccak(text="recall notice PADS-N")))
    world.pads, world.modules, world.carton, world.other = pads, modules, logistic_unit_id(carton), other


# --- helpers -------------------------------------------------------------------------------------------------------


def hexid(value: bytes) -> str:
    return "0x" + value.hex()


def raise_notification(world: World, org: str, body: dict[str, Any], *, status: int = 201, **headers: str) -> dict[str, Any]:
    answer = world.client.post("/v1/notifications", headers=world.headers(org, **headers), json={"severity": "critical", "title": "Brake pads crack", **body})
    assert answer.status_code == status, answer.text
    return answer.json()


def recall_alert(world: World, **extra: Any) -> dict[str, Any]:
    return raise_notification(world, "maker", {"kind": "alert", "lots": [world.lot], "send": True, "message": "Stop fitting these pads."} | extra)


def act(world: World, org: str, notification_id: str, action: str, *, status: int = 200, **extra: Any) -> dict[str, Any]:
    answer = world.client.post(f"/v1/notifications/{notification_id}/actions", headers=world.headers(org), json={"action": action, **extra})
    assert answer.status_code == status, answer.text
    return answer.json()


def code_of(answer: Any) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


def states(view: dict[str, Any]) -> dict[int, str]:
    return {r["org"]["id"]: r["state"] for r in view["recipients"]}


def bundle_of(world: World, org: str, notification_id: str, transition_id: str) -> dict[str, Any]:
    """The transition's proof bundle, once its batch is anchored and mirrored."""

    def fetch() -> dict[str, Any] | None:
        answer = world.client.get(f"/v1/notifications/{notification_id}/transitions/{transition_id}/proof", headers=world.headers(org))
        if answer.status_code == 409 and answer.json()["error"]["code"] == "not_anchored_yet":
            return None
        assert answer.status_code == 200, answer.text
        return answer.json()

    return wait_until(fetch, f"transition {transition_id} anchored", timeout=60)


def trusted(world: World, bundle: dict[str, Any]) -> v.TrustAnchors:
    """The trust anchor an auditor takes from a node of its own: the bundle's block hash as the node answers it."""
    number = bundle["block"]["number"]
    return v.TrustAnchors(blocks={number: bytes(world.ledger.w3.eth.get_block(number)["hash"])})


# --- recipients ----------------------------------------------------------------------------------------------------


def test_a_recall_alert_reaches_exactly_the_organisations_that_hold_held_received_or_installed_a_part_of_the_lot(world: World):
    view = recall_alert(world)
    expected = {world.org(name) for name in ("maker2", "distributor", "workshop", "warehouse")}
    assert set(states(view)) == expected and set(states(view).values()) == {"sent"}
    reasons = {r["org"]["id"]: set(r["reasons"]) for r in view["recipients"]}
    assert {"holds", "installed"} <= reasons[world.org("workshop")]  # inside the module it installed
    assert {"holds", "received"} <= reasons[world.org("distributor")]  # the module still in the carton it received
    assert "holds" in reasons[world.org("maker2")] and "holds" not in reasons[world.org("warehouse")]
    assert view["recalled"] is True and view["role"] == "initiator" and view["part_count"] == 5 and view["next_actions"] == []
    assert sorted((t["action"], t["recipient"]["id"]) for t in view["transitions"]) == sorted((a, org) for a in ("create", "send") for org in expected)
    assert {t["actor"]["id"] for t in view["transitions"]} == {world.org("maker")}


def test_an_investigation_goes_upstream_to_the_suppliers_of_the_part_and_of_what_is_inside_it(world: World):
    view = raise_notification(world, "workshop", {"kind": "investigation", "part_ids": [hexid(world.modules[0])], "send": True})
    assert states(view) == {world.org("maker2"): "sent", world.org("distributor"): "sent", world.org("maker"): "sent"}
    reasons = {r["org"]["id"]: r["reasons"] for r in view["recipients"]}
    assert reasons == {world.org("maker2"): ["supplier"], world.org("distributor"): ["shipper"], world.org("maker"): ["supplier"]}
    assert view["recalled"] is False and view["parts"] == [hexid(world.modules[0])]


# --- the state machine, acknowledgements, proofs ---------------------------------------------------------------------


def test_each_recipient_acknowledges_what_it_holds_and_installed_and_every_step_has_a_bundle_the_offline_verifier_accepts(world: World, tmp_path: Path):
    nid = recall_alert(world)["id"]
    for org in ("workshop", "distributor", "maker2", "warehouse"):
        act(world, org, nid, "receive")
        acked = act(world, org, nid, "acknowledge", message=f"{org} has checked its stock")
        assert acked["role"] == "recipient" and len(acked["recipients"]) == 1 and acked["next_actions"] == ["accept", "decline"]
    view = act(world, "workshop", nid, "accept", message="We will replace the module.", attachments=[{"name": "plan.pdf", "hash": hexid(keccak(b"plan"))}])
    assert states(view) == {world.org("workshop"): "accepted"}
    view = act(world, "maker", nid, "close", message="Replacement confirmed.")
    assert states(view)[world.org("workshop")] == "closed" and states(view)[world.org("distributor")] == "acknowledged"

    ack = {t["recipient"]["id"]: t["parts"] for t in view["transitions"] if t["action"] == "acknowledge"}
    pad = lambda n: {"part": hexid(world.pads[n]), "gtin": GTIN_A, "serial": f"NPAD-{n}"}  # noqa: E731
    assert ack[world.org("workshop")] == {"heldCount": 0, "installedCount": 1, "held": [], "installed": [pad(0) | {"vinHash": hexid(VIN_HASH), "container": hexid(world.modules[0])}]}
    assert ack[world.org("distributor")] == {"heldCount": 1, "installedCount": 0, "held": [pad(1) | {"container": hexid(world.carton)}], "installed": []}
    assert ack[world.org("maker2")] == {"heldCount": 1, "installedCount": 0, "held": [pad(2)], "installed": []}
    assert ack[world.org("warehouse")] == {"heldCount": 0, "installedCount": 0, "held": [], "installed": []}

    workshop = [t for t in view["transitions"] if t["recipient"]["id"] == world.org("workshop")]
    assert [t["action"] for t in workshop] == ["create", "send", "receive", "acknowledge", "accept", "close"]
    actors = {"create": "maker", "send": "maker", "receive": "workshop", "acknowledge": "workshop", "accept": "workshop", "close": "maker"}
    for step in workshop:  # "we told you on day X, you acknowledged on day Y": each step proven by its actor's key
        bundle = bundle_of(world, "workshop", nid, step["id"])
        verdict = v.verify_bundle(bundle, anchors=trusted(world, bundle))
        assert verdict.ok, verdict.to_dict()
        actor = world.ledger.orgs[actors[step["action"]]]
        assert bundle["event"]["args"]["orgId"] == actor.id and bundle["event"]["args"]["siteKey"] == world.stack.site_keys[actor.name]
        assert bundle["notification"]["transition"]["action"] == step["action"] and bundle["batchRecord"]["value"][0] == step["record_hash"]
    acknowledged = bundle_of(world, "maker", nid, next(t["id"] for t in workshop if t["action"] == "acknowledge"))
    assert acknowledged["notification"]["transition"]["parts"] == ack[world.org("workshop")]
    # the command-line verifier, against the node as the trust anchor
    saved = tmp_path / "acknowledged.json"
    saved.write_text(json.dumps(acknowledged))
    run = subprocess.run([sys.executable, "-m", "partledger.proofs.verifier", str(saved), "--rpc", world.ledger.w3.provider.endpoint_uri], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "VALID" in run.stdout and "acknowledge: received -> acknowledged" in run.stdout, run.stdout + run.stderr

    anchors = trusted(world, acknowledged)
    for change, failed in (
        (lambda b: b["notification"]["transition"]["parts"]["installed"].clear(), "batch record"),  # hide the installed part
        (lambda b: b["notification"]["transition"].update(message="nothing found"), "batch record"),
        (lambda b: b["notification"]["transition"].update(actor=world.org("maker")), "batch record"),
        (lambda b: b["notification"]["content"].update(title="Nothing to see"), "batch record"),
        (lambda b: b["batchRecord"]["value"].__setitem__(4, "accepted"), "batch record"),
    ):
        forged = copy.deepcopy(acknowledged)
        change(forged)
        verdict = v.verify_bundle(forged, anchors=anchors)
        assert not verdict.ok and failed in verdict.failed, verdict.to_dict()


def test_the_state_machine_refuses_steps_out_of_order_or_by_the_wrong_organisation_with_stable_codes(world: World):
    view = raise_notification(world, "maker", {"kind": "alert", "part_ids": [hexid(world.pads[2]), hexid(world.pads[0])]})
    nid = view["id"]
    assert set(states(view).values()) == {"created"} and view["next_actions"] == ["send"] and view["recalled"] is True
    client = world.client
    refused = lambda org, body: code_of(client.post(f"/v1/notifications/{nid}/actions", headers=world.headers(org), json=body))  # noqa: E731
    assert refused("workshop", {"action": "receive"}) == (409, "invalid_transition")
    assert refused("workshop", {"action": "send"}) == (403, "not_initiator")
    assert refused("maker", {"action": "acknowledge"}) == (403, "not_a_recipient")
    assert refused("maker", {"action": "close"}) == (409, "invalid_transition")
    assert refused("maker", {"action": "send", "recipients": [world.org("workshop2")]}) == (422, "unknown_notification_recipient")
    assert refused("maker", {"action": "explode"}) == (422, "invalid_request")
    assert refused("maker", {"action": "send", "attachments": [{"name": "x", "hash": "0x12"}]}) == (422, "invalid_request")
    assert refused("workshop2", {"action": "receive"}) == (404, "unknown_notification")
    sent = act(world, "maker", nid, "send", recipients=[world.org("workshop")])
    assert states(sent)[world.org("workshop")] == "sent" and states(sent)[world.org("maker2")] == "created"
    assert refused("maker", {"action": "send", "recipients": [world.org("workshop")]}) == (409, "invalid_transition")
    act(world, "workshop", nid, "receive")
    act(world, "workshop", nid, "acknowledge")
    assert states(act(world, "workshop", nid, "decline", message="Not our module."))[world.org("workshop")] == "declined"
    assert refused("workshop", {"action": "accept"}) == (409, "invalid_transition")
    assert states(act(world, "maker", nid, "close"))[world.org("workshop")] == "closed"
    assert refused("workshop", {"action": "receive"}) == (409, "invalid_transition")


def test_bad_requests_are_refused_with_stable_codes_and_record_nothing(world: World):
    client, lot = world.client, world.lot
    post = lambda org, body: code_of(client.post("/v1/notifications", headers=world.headers(org), json={"kind": "alert", "title": "t"} | body))  # noqa: E731
    assert post("maker", {"lots": [999_999]}) == (422, "unknown_lot")
    assert post("maker", {"part_ids": ["0x" + "ab" * 32]}) == (422, "unknown_part")
    assert post("maker", {}) == (422, "no_parts")
    assert post("maker", {"lots": [lot], "title": "   "}) == (422, "invalid_title")
    assert post("maker", {"lots": [lot], "kind": "recall"}) == (422, "invalid_request")
    assert post("maker", {"lots": [lot], "severity": "apocalyptic"}) == (422, "invalid_request")
    assert post("maker", {"lots": [lot], "extra": 1}) == (422, "invalid_request")
    assert post("workshop2", {"lots": [lot]}) == (403, "not_involved")
    assert post("auditor", {"lots": [lot]}) == (403, "missing_role")
    assert post("maker", {"lots": [lot], "site": "no-such-site"}) == (403, "no_site_key")
    [lonely] = world.ledger.register(world.ledger.orgs["maker"], ["NLONELY-1"], lot="LONELY-N")
    caught_up(client, world.ledger)
    assert post("maker", {"part_ids": [hexid(lonely)]}) == (422, "no_recipients")
    assert client.post("/v1/notifications", json={"kind": "alert", "title": "t", "lots": [lot]}).status_code == 401
    assert code_of(client.get("/v1/notifications/no-such-id", headers=world.headers("maker"))) == (404, "unknown_notification")
    assert code_of(client.get("/v1/notifications?box=all", headers=world.headers("maker"))) == (403, "not_auditor")
    assert code_of(client.get("/v1/notifications?box=attic", headers=world.headers("maker"))) == (422, "invalid_request")
    assert code_of(client.get("/v1/notifications?cursor=%%%", headers=world.headers("maker"))) == (400, "invalid_cursor")
    nid = recall_alert(world)["id"]
    assert code_of(client.get(f"/v1/notifications/{nid}/transitions/nope/proof", headers=world.headers("workshop"))) == (404, "unknown_transition")
    hidden = next(t["id"] for t in client.get(f"/v1/notifications/{nid}", headers=world.headers("maker")).json()["transitions"] if t["recipient"]["id"] == world.org("distributor"))
    assert code_of(client.get(f"/v1/notifications/{nid}/transitions/{hidden}/proof", headers=world.headers("workshop"))) == (404, "unknown_transition")
    assert code_of(client.get(f"/v1/notifications/{nid}", headers=world.headers("workshop2"))) == (404, "unknown_notification")
    assert code_of(client.get(f"/v1/notifications/{nid}/transitions/{hidden}/proof", headers=world.headers("workshop2"))) == (404, "unknown_notification")


def test_a_recipient_sees_only_its_own_state_the_initiator_every_recipient_and_an_auditor_everything(world: World):
    recall_alert(world, title="Visibility check, an earlier one")  # so that the sent box has a second page in any test order
    nid = recall_alert(world, title="Visibility check")["id"]
    client = world.client
    mine = client.get(f"/v1/notifications/{nid}", headers=world.headers("workshop")).json()
    assert mine["role"] == "recipient" and list(states(mine)) == [world.org("workshop")] and mine["next_actions"] == ["receive"]
    assert {t["recipient"]["id"] for t in mine["transitions"]} == {world.org("workshop")}
    audited = client.get(f"/v1/notifications/{nid}", headers=world.headers("auditor")).json()
    assert audited["role"] == "observer" and len(audited["recipients"]) == 4 and audited["next_actions"] == []
    inbox = client.get("/v1/notifications", headers=world.headers("workshop"), params={"state": "sent"}).json()["items"]
    assert any(item["id"] == nid and item["state"] == "sent" for item in inbox)
    sent = client.get("/v1/notifications", headers=world.headers("maker"), params={"box": "sent", "limit": 1}).json()
    assert sent["items"][0]["id"] == nid and sent["items"][0]["states"] == {"sent": 4} and sent["next_cursor"]
    following = client.get("/v1/notifications", headers=world.headers("maker"), params={"box": "sent", "limit": 1, "cursor": sent["next_cursor"]}).json()
    assert following["items"] and following["items"][0]["id"] != nid
    assert nid in {item["id"] for item in client.get("/v1/notifications", headers=world.headers("auditor"), params={"box": "all"}).json()["items"]}
    assert nid not in {item["id"] for item in client.get("/v1/notifications", headers=world.headers("workshop2")).json()["items"]}


def test_a_retry_with_the_same_idempotency_key_answers_the_first_request_and_records_once(world: World):
    key = f"notify-{uuid.uuid4()}"
    first = recall_alert(world, title="Once only")
    body = {"kind": "alert", "lots": [world.lot], "title": "Retried", "severity": "minor"}
    one = world.client.post("/v1/notifications", headers=world.headers("maker", **{"Idempotency-Key": key}), json=body)
    two = world.client.post("/v1/notifications", headers=world.headers("maker", **{"Idempotency-Key": key}), json=body)
    assert one.status_code == two.status_code == 201 and one.json()["id"] == two.json()["id"] != first["id"]
    assert one.json()["command_id"] == two.json()["command_id"]
    titles = [item["title"] for item in world.client.get("/v1/notifications", headers=world.headers("maker"), params={"box": "sent", "limit": 200}).json()["items"]]
    assert titles.count("Retried") == 1
    changed = world.client.post("/v1/notifications", headers=world.headers("maker", **{"Idempotency-Key": key}), json=body | {"title": "Other"})
    assert code_of(changed) == (422, "idempotency_key_reused")


# --- the console -----------------------------------------------------------------------------------------------------


def test_the_console_inbox_lets_a_workshop_receive_and_acknowledge_a_recall_alert_in_chromium_in_both_languages(world: World, artifacts_dir: Path):
    nid = recall_alert(world, title="召回：刹车片 PADS-N / Recall: brake pads", message="<script>alert(1)</script> 请停止安装。")["id"]
    operator = session_of(world.client, "ws.oper", PASSWORD)
    with served(world.client.app, lifespan="off") as base, launched_chromium() as chromium:
        context = phone_context(chromium, locale="zh-CN", token=operator.token)
        context.add_init_script(CSP_LISTENER)
        problems: list[str] = []
        page = watch_errors(context.new_page(), problems)
        page.on("dialog", lambda dialog: problems.append(f"dialog {dialog.message}"))
        page.goto(f"{base}/console/notifications?lang=zh")
        row = page.locator(f'li[data-notification-id="{nid}"]')
        assert row.get_attribute("data-state") == "sent" and "已发送" in row.inner_text() and "召回警报" in row.inner_text()
        row.locator("a").first.click()
        page.wait_for_selector("#action-receive")
        assert "<script>alert(1)</script> 请停止安装。" in page.locator("#transitions").inner_text()  # shown as text
        page.locator("#action-receive").click()
        page.wait_for_selector("#action-acknowledge")
        assert page.locator("#state").get_attribute("data-state") == "received"
        page.locator("#f-message").fill("已检查库存。")
        page.locator("#action-acknowledge").click()
        page.wait_for_selector("#action-accept")
        assert page.locator("#state").inner_text() == "已确认"
        assert "仍持有：0 · 已安装：1" in page.locator("#transitions").inner_text()
        page.screenshot(path=str(artifacts_dir / "notifications-acknowledged-zh.png"), full_page=True)
        page.goto(f"{base}/console/notifications/{nid}?lang=en")
        assert "Still held: 0 · installed: 1" in page.locator("#transitions").inner_text() and page.locator("#action-accept").inner_text() == "Accept"
        assert axe_findings(page) == []
        assert page.evaluate("window.__csp") == [] and problems == []
        page.screenshot(path=str(artifacts_dir / "notifications-acknowledged-en.png"), full_page=True)
    view = world.client.get(f"/v1/notifications/{nid}", headers=world.headers("workshop")).json()
    assert states(view) == {world.org("workshop"): "acknowledged"}
    ack = next(t for t in view["transitions"] if t["action"] == "acknowledge")
    assert ack["message"] == "已检查库存。" and ack["parts"]["installed"][0]["part"] == hexid(world.pads[0])


def test_the_console_raises_a_notification_shows_refusals_next_to_their_fields_and_lets_no_viewer_act(world: World):
    maker = session_of(world.client, "mk.oper", PASSWORD)
    form = maker.get(f"/console/notifications/new?lot={world.lot}")
    key = re.search(r'name="form_key" value="([^"]+)"', form.text).group(1)
    assert form.status_code == 200 and f'value="{world.lot}"' in form.text
    refused = maker.post("/console/notifications/new", {"kind": "alert", "severity": "major", "title": "x", "lots": "12a", "form_key": key})
    assert refused.status_code == 422 and error_code(refused) == "invalid_form" and field_error(refused, "lots") == "A lot number is a positive whole number."
    refused = maker.post("/console/notifications/new", {"kind": "alert", "severity": "major", "title": "x", "lots": "999999", "form_key": key})
    assert refused.status_code == 422 and error_code(refused) == "unknown_lot" and field_error(refused, "lots")
    refused = maker.post("/console/notifications/new", {"kind": "alert", "severity": "major", "title": "x", "parts": "not a part", "form_key": key})
    assert refused.status_code == 422 and error_code(refused) == "invalid_form" and field_error(refused, "parts")
    made = maker.post("/console/notifications/new", {"kind": "alert", "severity": "major", "title": "From the console", "lots": str(world.lot), "send": "on", "form_key": key},
                      files={"attachment": ("notice.pdf", b"%PDF recall notice", "application/pdf")})  # fmt: skip
    assert made.status_code == 303, made.text
    nid = made.headers["location"].rsplit("/", 1)[1]
    again = maker.post("/console/notifications/new", {"kind": "alert", "severity": "major", "title": "From the console", "lots": str(world.lot), "send": "on", "form_key": key},
                       files={"attachment": ("notice.pdf", b"%PDF recall notice", "application/pdf")})  # fmt: skip
    assert again.headers["location"].rsplit("/", 1)[1] == nid  # a double submit answers the first
    view = world.client.get(f"/v1/notifications/{nid}", headers=world.headers("maker")).json()
    assert set(states(view).values()) == {"sent"} and view["transitions"][0]["attachments"] == [{"name": "notice.pdf", "hash": hexid(keccak(b"%PDF recall notice"))}]
    page = maker.get(f"/console/notifications/{nid}")
    assert page.status_code == 200 and 'id="recipient-table"' in page.text and "From the console" in page.text
    viewer = session_of(world.client, "ws.view", PASSWORD)
    assert viewer.get(f"/console/notifications/{nid}").status_code == 200
    denied = viewer.post(f"/console/notifications/{nid}/act", {"action": "receive"})
    assert denied.status_code == 403 and error_code(denied) == "read_only_role"
    operator = session_of(world.client, "ws.oper", PASSWORD)
    assert operator.post(f"/console/notifications/{nid}/act", {"action": "receive"}, csrf=False).status_code == 403
    early = operator.post(f"/console/notifications/{nid}/act", {"action": "accept"})
    assert early.status_code == 409 and error_code(early) == "invalid_transition"
    assert operator.post(f"/console/notifications/{nid}/act", {"action": "receive"}).status_code == 303
    assert operator.get(f"/console/notifications/{nid}/transitions/nope/proof").status_code == 404


# --- without a stack ---------------------------------------------------------------------------------------------------


def test_the_migration_matches_the_tables_and_downgrades(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'service.db'}")
    service_migrate.upgrade(engine)
    mine = MetaData()
    for name in TABLES:
        SERVICE_METADATA.tables[name].to_metadata(mine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in TABLES})
        assert compare_metadata(context, mine) == []
    downgrade(engine, "0007")
    assert TABLES.isdisjoint(inspect(engine).get_table_names())
    service_migrate.upgrade(engine)
    assert TABLES <= set(inspect(engine).get_table_names())


def test_every_word_the_inbox_builds_from_a_closed_set_is_in_both_languages():
    catalogue = Catalogue.load()
    keys = (
        {f"notifications.state.{s}" for s in qn.STATES} | {f"notifications.kind.{k}" for k in qn.KINDS}
        | {f"notifications.severity.{s}" for s in qn.SEVERITIES} | {f"notifications.action.{a}" for a in qn.ACTIONS}
        | {f"notifications.action_all.{a}" for a, (_, _, who) in qn.TRANSITIONS.items() if who == "initiator" and a != "create"}
        | {f"notifications.reason.{r}" for r in ("holds", "incoming", "held", "received", "installed", "supplier", "shipper")}
        | {f"notifications.anchor.{s}" for s in ("pending", "anchored", "failed")} | {f"notifications.box.{b}" for b in ("inbox", "sent", "all")}
    )  # fmt: skip
    assert {lang: missing for lang, missing in catalogue.missing(keys).items() if missing} == {}


def test_the_state_machine_names_who_takes_each_step():
    record = {"action": "acknowledge", "from": "received", "state": "acknowledged", "actor": 5, "recipient": 5, "initiator": 2}
    assert qn.transition_problem(record) is None
    assert "taken by the recipient" in qn.transition_problem(record | {"actor": 2})
    assert "goes from received" in qn.transition_problem(record | {"from": "sent"})
    assert "not a notification action" in qn.transition_problem(record | {"action": "forge"})
    assert qn.transition_problem({"action": "close", "from": "declined", "state": "closed", "actor": 2, "recipient": 5, "initiator": 2}) is None
    with pytest.raises(ValueError):
        qn.canonical_json({"at": 1.5})
    assert qn.canonical_json({"b": [1, "二"], "a": None}) == '{"a":null,"b":[1,"二"]}'.encode()
