"""The verdict matrix against the live stack (Anvil, indexer, service): one part in each lifecycle state, a recalled
lot, a forged signature, another organisation's key, a revoked key, an unsigned label, an unknown serial and
malformed addresses, each with its exact verdict, HTTP status and page text; recalled × {unsigned, forged, revoked
key} headlined recalled with the label's fault second, and the recall's notice (sent through the API, its hash on
chain) on the page in both languages, in the JSON, on the lot's page and served with its canonical bytes; any address under /01/ with the exact
status, form and error code the GS1 Digital Link rules (and the GS1-Conformant Resolver standard's) give it; the
linkset; public data only; the rate limit."""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from typing import Optional
from urllib.parse import parse_qsl, quote

import pytest
from eth_utils import keccak
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger_service.recall_notices import canonical_bytes
from ledger_service.resolver_links import LotAnswer
from ledger_service.schemas import CanonicalRecallNotice, LabelVerdict, RecallImpact, RecallNoticeAnswer
from partledger.ids import part_id
from tests.chainkit import GTIN_A, GTIN_B
from tests.labelkit import BROWSER_EN, BROWSER_ZH, JSON, caught_up, forged_uri, label_uri, live_stack, register, target
from tests.servicekit import wait_command

VIN = "LSVAU2180N2183294"
OTHER_VIN = "LFV2A21K8M4123456"
NOTICE = keccak(text="recall notice 2026-07: brake caliper bolt torque")  # a bare hash: the service holds no text for it
NOTICE_TEXT = {
    "title": {"zh": "制动卡钳螺栓召回", "en": "Brake caliper bolt recall"},
    "reason": {"zh": "该批次卡钳的固定螺栓扭矩不足。", "en": "The caliper bolts of this lot were under-torqued."},
    "risk": {"zh": "卡钳可能松动，导致制动失效。", "en": "The caliper may come loose and the brake fail."},
    "remedy": {"zh": "经销商免费更换螺栓。", "en": "Dealers replace the bolts free of charge."},
    "action": {"zh": "请勿安装此配件。\n已安装的车辆请停止驾驶并联系经销商。", "en": "Do not fit this part.\nIf it is fitted, stop driving and call your dealer."},
    "contact": {"zh": "召回热线 400-800-1234", "en": "Recall line +86 400 800 1234"},
}
NOTICE_HASH = "0x" + hashlib.sha256(canonical_bytes(NOTICE_TEXT)).hexdigest()


@pytest.fixture(scope="module")
def world(deployed, tmp_path_factory):
    """Parts in every state, made with the organisations' dev keys (the installation through the API, so that the
    service holds the encrypted VIN)."""
    ledger = deployed
    with live_stack(ledger, tmp_path_factory.mktemp("matrix"), public_rate_limit="10000/minute") as (stack, client):
        o = ledger.orgs
        maker, maker_spare = o["maker"].keys
        fn = ledger.parts.functions
        serials = ["STOCK", "TRANSIT", "SOLD", "INSTALLED", "QUAR", "SCRAP", "RECYCLED", "REMOVED", 'ODD/%&"?+.1']
        register(ledger, maker, gtin=GTIN_A, lot="LOT-M", serials=serials)
        register(ledger, maker, gtin=GTIN_A, lot="LOT-R", serials=["RECALL-1", "RECALL-INST"])
        pid = {s: part_id(GTIN_A, s) for s in serials + ["RECALL-1", "RECALL-INST"]}
        ledger.act(maker, fn.shipParts([pid["TRANSIT"]], o["distributor"].id, bytes(32)))
        ledger.act(maker, fn.shipParts([pid["SOLD"]], o["distributor"].id, bytes(32)))
        ledger.act(o["distributor"].key, fn.receiveParts([pid["SOLD"]], bytes(32)))
        ledger.act(o["distributor"].key, fn.sellParts([pid["SOLD"]], bytes(32)))
        ledger.act(maker, fn.shipParts([pid["INSTALLED"], pid["REMOVED"], pid["RECALL-INST"]], o["workshop"].id, bytes(32)))
        ledger.act(o["workshop"].key, fn.receiveParts([pid["INSTALLED"], pid["REMOVED"], pid["RECALL-INST"]], bytes(32)))
        ledger.act(maker, fn.quarantineParts([pid["QUAR"]], bytes(32)))
        ledger.act(maker, fn.scrapParts([pid["SCRAP"]], bytes(32)))
        ledger.act(maker, fn.shipParts([pid["RECYCLED"]], o["recycler"].id, bytes(32)))
        ledger.act(o["recycler"].key, fn.receiveParts([pid["RECYCLED"]], bytes(32)))
        ledger.act(o["recycler"].key, fn.recycleParts([pid["RECYCLED"]], bytes(32)))
        caught_up(client, ledger)
        items = [{"part_id": "0x" + pid[s].hex(), "vin": v} for s, v in (("INSTALLED", VIN), ("REMOVED", OTHER_VIN), ("RECALL-INST", VIN))]
        accepted = client.post("/v1/parts/install", headers=stack.headers("workshop"), json={"items": items})
        assert accepted.status_code == 202, accepted.text
        assert wait_command(stack, "workshop", accepted.json()["command_id"])["status"] == "confirmed"
        ledger.act(o["workshop"].key, fn.removeParts([pid["REMOVED"]], bytes(32)))
        ledger.act(maker, fn.recallLot(ledger.lot_number(o["maker"], "LOT-R"), NOTICE))
        # The spare key signs a label while valid, is revoked, and then a part is registered after the revocation.
        early = label_uri(ledger, gtin=GTIN_A, serial="STOCK", key=maker_spare)
        ledger.act(ledger.operator, ledger.registry.functions.revokeSiteKey(maker_spare))
        register(ledger, maker, gtin=GTIN_A, lot="LOT-M", serials=["LATE"])
        # A lot recalled through the API with a notice people can read; registered after the revocation, so that
        # its part carries every fault a label can have: none, no signature, a forged one, the revoked key's.
        register(ledger, maker, gtin=GTIN_A, lot="LOT-N", serials=["N-1"])
        caught_up(client, ledger)
        recall = client.post("/v1/lots/recall", headers=stack.headers("maker"), json={"lot": ledger.lot_number(o["maker"], "LOT-N"), "notice": NOTICE_TEXT})
        assert recall.status_code == 202, recall.text
        assert wait_command(stack, "maker", recall.json()["command_id"])["status"] == "confirmed"
        caught_up(client, ledger)
        yield {"ledger": ledger, "stack": stack, "client": client, "maker": maker, "spare": maker_spare, "early": early}


def uri(world, serial: str, *, key: str | None = "maker", gtin: str = GTIN_A) -> str:
    ledger = world["ledger"]
    address = {"maker": world["maker"], "spare": world["spare"], "maker2": ledger.orgs["maker2"].key, None: None}[key]
    return label_uri(ledger, gtin=gtin, serial=serial, key=address)


# (case, how to build the URI, verdict, HTTP status, English title, Chinese title)
CASES = [
    ("in stock", lambda w: uri(w, "STOCK"), "genuine", 200, "Genuine part", "正品配件"),
    ("in transit", lambda w: uri(w, "TRANSIT"), "genuine", 200, "Genuine part", "正品配件"),
    ("removed, back in stock", lambda w: uri(w, "REMOVED"), "genuine", 200, "Genuine part", "正品配件"),
    ("odd serial, percent-encoded", lambda w: uri(w, 'ODD/%&"?+.1'), "genuine", 200, "Genuine part", "正品配件"),
    ("sold", lambda w: uri(w, "SOLD"), "sold", 200, "Genuine part — sold", "正品配件 — 已售出"),
    ("installed", lambda w: uri(w, "INSTALLED"), "installed", 200, "Genuine part — installed in a vehicle", "正品配件 — 已装车"),
    ("quarantined", lambda w: uri(w, "QUAR"), "quarantined", 200, "On hold — do not install", "已隔离 — 请勿安装"),
    ("scrapped", lambda w: uri(w, "SCRAP"), "scrapped", 200, "Destroyed part", "已销毁的配件"),
    ("recycled", lambda w: uri(w, "RECYCLED"), "scrapped", 200, "Destroyed part", "已销毁的配件"),
    ("recalled", lambda w: uri(w, "RECALL-1"), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled and installed", lambda w: uri(w, "RECALL-INST"), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled with a notice", lambda w: uri(w, "N-1"), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled, unsigned", lambda w: uri(w, "N-1", key=None), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled, forged signature", lambda w: forged_uri(w["ledger"], gtin=GTIN_A, serial="N-1"), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled, key revoked", lambda w: uri(w, "N-1", key="spare"), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("recalled, bare hash, unsigned", lambda w: uri(w, "RECALL-1", key=None), "recalled", 200, "Recalled — do not use", "已召回 — 请勿使用"),
    ("forged signature", lambda w: forged_uri(w["ledger"], gtin=GTIN_A, serial="STOCK"), "signature_invalid", 200, "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("signature of another serial", lambda w: uri(w, "SOLD").replace("/21/SOLD", "/21/STOCK"), "signature_invalid", 200, "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("another manufacturer's key", lambda w: uri(w, "STOCK", key="maker2"), "signature_invalid", 200, "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("garbage signature", lambda w: uri(w, "STOCK", key=None) + "?sig=not-a-signature", "signature_invalid", 200, "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("key revoked before the part existed", lambda w: uri(w, "LATE", key="spare"), "key_revoked", 200, "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("key revoked after signing", lambda w: w["early"], "genuine", 200, "Genuine part", "正品配件"),
    ("unsigned", lambda w: uri(w, "STOCK", key=None), "unsigned", 200, "Label without manufacturer signature", "标签缺少厂商签名"),
    ("unknown serial", lambda w: uri(w, "NEVER-MADE"), "unknown", 404, "Not registered — possibly counterfeit", "未登记 — 可能是假冒"),
    ("unknown GTIN", lambda w: uri(w, "STOCK", gtin=GTIN_B), "unknown", 404, "Not registered — possibly counterfeit", "未登记 — 可能是假冒"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "verdict", "status", "english", "chinese"), CASES, ids=[c[0] for c in CASES])
def test_verdict_json_and_page(world, case, make, verdict, status, english, chinese):
    client, path = world["client"], target(make(world))
    answer = client.get(path, headers=JSON)
    assert (answer.status_code, answer.headers["content-type"]) == (status, "application/json"), answer.text
    body = answer.json()
    assert body["verdict"] == verdict
    assert answer.headers["link"].endswith('rel="linkset"; type="application/linkset+json"')
    assert answer.headers["cache-control"] == "no-store"
    zh = client.get(path, headers=BROWSER_ZH)
    en = client.get(path, headers=BROWSER_EN)
    for page, lang, title in ((zh, "zh-CN", chinese), (en, "en", english)):
        assert page.status_code == status and page.headers["content-type"] == "text/html; charset=utf-8"
        assert f'<html lang="{lang}">' in page.text and f'data-verdict="{verdict}"' in page.text
        assert f"<title>{title}</title>" in page.text.replace("&#x27;", "'")
        heading = re.search(r'<h1 id="verdict-title">(.*?)</h1>', page.text).group(1)
        assert f'<span lang="zh" class="zh">{chinese}</span><span lang="en" class="en">{english}</span>' == heading
        assert "nonce-" in page.headers["content-security-policy"]


def test_scrapped_page_says_a_label_on_a_part_in_use_is_a_copy(world):
    page = world["client"].get(target(uri(world, "SCRAP")), headers=BROWSER_EN)
    assert "This part was destroyed: a label on a part in use is a copy." in page.text
    assert "该配件已被销毁：在用配件上的此标签是复制品。" in page.text


def test_recalled_part_shows_the_recall_notice(world):
    body = world["client"].get(target(uri(world, "RECALL-1")), headers=JSON).json()
    assert body["recall"]["notice_hash"] == "0x" + NOTICE.hex() and body["recall"]["by"] == world["ledger"].orgs["maker"].name
    page = world["client"].get(target(uri(world, "RECALL-1")), headers=BROWSER_ZH).text
    assert "0x" + NOTICE.hex() in page and "召回通知" in page


LABEL_FAULTS = [
    ("unsigned", lambda w: uri(w, "N-1", key=None), "Label without manufacturer signature", "标签缺少厂商签名"),
    ("signature_invalid", lambda w: forged_uri(w["ledger"], gtin=GTIN_A, serial="N-1"), "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
    ("key_revoked", lambda w: uri(w, "N-1", key="spare"), "Invalid label — possibly counterfeit", "标签无效 — 可能是假冒"),
]  # fmt: skip


@pytest.mark.parametrize(("warning", "make", "english", "chinese"), LABEL_FAULTS, ids=[fault[0] for fault in LABEL_FAULTS])
def test_recalled_comes_first_and_the_labels_fault_second(world, warning, make, english, chinese):
    client, path = world["client"], target(make(world))
    body = client.get(path, headers=JSON).json()
    assert (body["verdict"], body["severity"], body["suspicious"], body["label_warning"]) == ("recalled", "danger", True, warning)
    assert body["recall"]["notice"] == NOTICE_TEXT and body["recall"]["notice_hash"] == NOTICE_HASH
    LabelVerdict.model_validate(body)  # the documented answer
    for headers in (BROWSER_ZH, BROWSER_EN):
        page = client.get(path, headers=headers).text
        line = re.search(r'<p class="label-warning" id="label-warning" data-warning="([a-z_]+)">(.*?)</p>', page, re.S)
        assert line is not None and line[1] == warning
        assert f'<span lang="zh" class="zh">{chinese}</span><span lang="en" class="en">{english}</span>' in line[2]
        # the headline, the label's fault under it in the verdict card, then the notice, then the facts
        assert page.index('id="verdict-title"') < page.index('id="label-warning"') < page.index('id="recall-notice"') < page.index('id="facts"')
    assert client.post("/v1/scan", json={"uri": make(world)}).json()["label_warning"] == warning


def test_the_recall_notice_is_on_the_page_in_both_languages_what_to_do_now_first(world):
    client, path = world["client"], target(uri(world, "N-1"))
    body = client.get(path, headers=JSON).json()
    assert body["verdict"] == "recalled" and body["signature"] == "valid" and "label_warning" not in body
    for headers, lang in ((BROWSER_ZH, "zh-CN"), (BROWSER_EN, "en")):
        page = client.get(path, headers=headers).text
        assert f'<html lang="{lang}">' in page and 'id="label-warning"' not in page
        card = re.search(r'<section class="card notice" id="recall-notice".*?</section>', page, re.S)[0]
        for name, texts in NOTICE_TEXT.items():
            assert f'<span lang="zh" class="zh">{texts["zh"]}</span><span lang="en" class="en">{texts["en"]}</span>' in card, name
        assert card.index('id="notice-action"') < card.index('id="notice-reason"')
        assert f'href="/v1/recall-notices/{NOTICE_HASH}/canonical.json"' in card
    bare = client.get(target(uri(world, "RECALL-1")), headers=BROWSER_EN).text  # recalled with a bare hash: no text to show
    assert 'id="recall-notice"' not in bare and "0x" + NOTICE.hex() in bare
    assert client.get(target(uri(world, "RECALL-1")), headers=JSON).json()["recall"]["notice"] is None


def test_anyone_gets_the_notice_with_the_bytes_whose_sha256_the_recall_put_on_chain(world):
    client, ledger = world["client"], world["ledger"]
    lot = ledger.lot_number(ledger.orgs["maker"], "LOT-N")
    (event,) = [log for log in ledger.parts.events.LotRecalled.get_logs(from_block=0) if log["args"]["lot"] == lot]
    assert "0x" + bytes(event["args"]["noticeHash"]).hex() == NOTICE_HASH
    answer = client.get(f"/v1/recall-notices/{NOTICE_HASH}")
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json", answer.text
    body = RecallNoticeAnswer.model_validate(answer.json()).model_dump()
    assert (body["notice_hash"], body["hash_algorithm"], body["notice"]) == (NOTICE_HASH, "sha-256", NOTICE_TEXT)
    assert body["recalls"] == [{"block": event["blockNumber"], "by": ledger.orgs["maker"].name}]
    assert "0x" + hashlib.sha256(body["canonical"].encode("utf-8")).hexdigest() == NOTICE_HASH
    raw = client.get(f"/v1/recall-notices/{NOTICE_HASH.upper().replace('0X', '0x')}/canonical.json")
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    assert raw.content == body["canonical"].encode("utf-8") and "0x" + hashlib.sha256(raw.content).hexdigest() == NOTICE_HASH
    CanonicalRecallNotice.model_validate_json(raw.content)
    for unknown in ("0x" + NOTICE.hex(), "0x" + "00" * 32):  # a recall's bare hash (no text held), a hash no recall names
        for suffix in ("", "/canonical.json"):
            missing = client.get(f"/v1/recall-notices/{unknown}{suffix}")
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_recall_notice", unknown
    malformed = client.get("/v1/recall-notices/0x1234")
    assert malformed.status_code == 422 and malformed.json()["error"]["code"] == "invalid_request"


def test_the_lot_page_its_json_and_recall_impact_show_the_notice(world):
    client, ledger, stack = world["client"], world["ledger"], world["stack"]
    lot_json = client.get(f"/01/{GTIN_A}/10/LOT-N", headers=JSON).json()
    assert lot_json["recalled"] is True and lot_json["recall"]["notice"] == NOTICE_TEXT and lot_json["recall"]["notice_hash"] == NOTICE_HASH
    LotAnswer.model_validate(lot_json)
    for headers, title in ((BROWSER_EN, "Brake caliper bolt recall"), (BROWSER_ZH, "制动卡钳螺栓召回")):
        page = client.get(f"/01/{GTIN_A}/10/LOT-N", headers=headers).text
        assert 'data-verdict="recalled"' in page and 'id="recall-notice"' in page and title in page
    assert client.get(f"/01/{GTIN_A}/10/LOT-R", headers=JSON).json()["recall"]["notice"] is None
    for code, notice in (("LOT-N", NOTICE_TEXT), ("LOT-R", None)):
        impact = client.get(f"/v1/lots/{ledger.lot_number(ledger.orgs['maker'], code)}/recall-impact", headers=stack.headers("maker"))
        assert impact.status_code == 200 and impact.json()["recall"]["notice"] == notice, impact.text
        RecallImpact.model_validate(impact.json())


def _notice(**changes):
    return {name: changes.get(name, texts) for name, texts in NOTICE_TEXT.items()}


@pytest.mark.parametrize(
    ("case", "body", "code", "fields"),
    [
        ("neither notice nor hash", {}, "invalid_request", None),
        ("blank", {"notice": _notice(risk={"zh": "  ", "en": "x"})}, "invalid_notice", [("risk.zh", "blank")]),
        ("control character", {"notice": _notice(action={"zh": "a\u0000b", "en": "a\rb"})}, "invalid_notice", [("action.zh", "invalid_text"), ("action.en", "invalid_text")]),
        ("too long", {"notice": _notice(title={"zh": "题" * 201, "en": "t"})}, "invalid_notice", [("title.zh", "too_long")]),
        ("a field missing", {"notice": {name: texts for name, texts in NOTICE_TEXT.items() if name != "contact"}}, "invalid_request", None),
        ("a third language", {"notice": _notice(title={"zh": "题", "en": "t", "fr": "titre"})}, "invalid_request", None),
        ("not a string", {"notice": _notice(title={"zh": 1, "en": "t"})}, "invalid_request", None),
        ("hash of something else", {"notice": NOTICE_TEXT, "notice_hash": "0x" + "11" * 32}, "notice_hash_mismatch", None),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_a_recall_with_a_bad_notice_is_refused_422_and_nothing_is_sent(world, case, body, code, fields):
    client, stack, ledger = world["client"], world["stack"], world["ledger"]
    lot = ledger.lot_number(ledger.orgs["maker"], "LOT-M")
    refused = client.post("/v1/lots/recall", headers=stack.headers("maker"), json={"lot": lot} | body)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == code, refused.text
    if fields is not None:
        assert [(problem["field"], problem["code"]) for problem in refused.json()["error"]["details"]] == fields
    assert client.get(f"/01/{GTIN_A}/10/LOT-M", headers=JSON).json()["recalled"] is False


def test_a_notice_with_its_own_hash_passes_to_the_lots_checks(world):
    client, stack, ledger = world["client"], world["stack"], world["ledger"]
    again = client.post("/v1/lots/recall", headers=stack.headers("maker"), json={"lot": ledger.lot_number(ledger.orgs["maker"], "LOT-N"), "notice": NOTICE_TEXT, "notice_hash": NOTICE_HASH})
    assert again.status_code == 409 and again.json()["error"]["code"] == "lot_recalled", again.text


def test_unknown_part_page_says_not_registered_possibly_counterfeit(world):
    page = world["client"].get(target(uri(world, "NEVER-MADE")), headers=BROWSER_EN)
    assert page.status_code == 404 and "Not registered — possibly counterfeit" in page.text
    assert "No part with this GTIN and serial number is registered in the consortium ledger." in page.text


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/01/04012345000017/21/STOCK", "invalid_gtin"),  # wrong check digit
        ("/01/0401234500001X/21/STOCK", "invalid_gtin"),
        ("/01/4012345/21/STOCK", "invalid_gtin"),  # 7 digits
        ("/01/04012345000016/21/", "invalid_serial"),
        ("/01/04012345000016/21/SERIAL-LONGER-THAN-20", "invalid_serial"),
        ("/01/04012345000016/21/A%20B", "invalid_serial"),  # space: outside GS1 character set 82
        ("/01/04012345000016/21/%E4%B8%AD", "invalid_digital_link"),  # not ASCII
        ("/01/04012345000016/21/A%ZZ", "invalid_digital_link"),
        ("/01/04012345000016/21/STOCK/10/LOT-M", "qualifier_out_of_order"),
        ("/01/04012345000016/23/X", "unknown_ai"),
        ("/01/04012345000016/21/STOCK?sig=a&sig=b", "invalid_digital_link"),
        ("/01/04012345000016/21/STOCK?lat=91&lon=0", "invalid_location"),
        ("/01/04012345000016/21/STOCK?context=resale", "invalid_context"),
    ],
)
def test_malformed_address_is_400_never_500(world, path, code):
    client = world["client"]
    answer = client.get(path, headers=JSON)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == code, answer.text
    page = client.get(path, headers=BROWSER_EN)
    assert page.status_code == 400 and "Not a valid part label address" in page.text and code in page.text
    assert "无效的配件标签地址" in client.get(path, headers=BROWSER_ZH).text


def test_gtin_13_is_read_as_its_gtin_14(world):
    body = world["client"].get(target(uri(world, "STOCK")).replace(f"/01/{GTIN_A}/", f"/01/{GTIN_A[1:]}/"), headers=JSON).json()
    assert body["verdict"] == "genuine" and body["gtin"] == GTIN_A


def test_installed_part_checks_the_scanners_vin_against_the_salted_hash(world):
    client, link = world["client"], uri(world, "INSTALLED")
    match = client.post("/v1/scan", json={"uri": link, "vin": VIN.lower(), "context": "vehicle"}).json()
    assert (match["verdict"], match["vin_match"], match["flags"]) == ("installed", True, [])
    mismatch = client.post("/v1/scan", json={"uri": link, "vin": OTHER_VIN}).json()
    assert (mismatch["verdict"], mismatch["vin_match"], mismatch["flags"], mismatch["suspicious"]) == ("installed", False, ["vin_mismatch"], True)
    assert VIN not in str(match) and "vin_hash" not in str(match)
    bad = client.post("/v1/scan", json={"uri": link, "vin": "LSVAU2180N218329I"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_vin"


def test_public_answers_hold_public_data_only(world):
    client = world["client"]
    body = client.get(target(uri(world, "INSTALLED")), headers=JSON).json()
    assert set(body) == {"verdict", "severity", "suspicious", "flags", "gtin", "serial", "signature", "block", "part", "scan_id"}
    assert set(body["part"]) == {"part_id", "manufacturer", "status", "recalled"}
    page = client.get(target(uri(world, "INSTALLED")), headers=BROWSER_EN).text
    ledger = world["ledger"]
    for secret in (world["stack"].site_keys["workshop"], world["maker"], "LOT-M", VIN, "custodian", "vin_hash"):
        assert secret not in page and secret not in str(body)
    unknown = client.get(target(uri(world, "NEVER-MADE")), headers=JSON).json()
    assert "part" not in unknown and ledger.orgs["maker"].name not in str(unknown)


def test_linkset_by_link_type_and_by_accept(world):
    client, path = world["client"], target(uri(world, "STOCK"))
    for answer in (client.get(path + "&linkType=linkset"), client.get(path, headers={"Accept": "application/linkset+json"})):
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/linkset+json"
        (links,) = answer.json()["linkset"]
        assert links["anchor"] == f"http://testserver/01/{GTIN_A}/21/STOCK"
        page, data = links["https://gs1.org/voc/verificationService"]
        assert (page["type"], page["hreflang"], data["type"]) == ("text/html", ["zh", "en"], "application/json")
        assert links["https://gs1.org/voc/defaultLink"][0]["href"].startswith(f"http://testserver/01/{GTIN_A}/21/STOCK?sig=")


def test_language_choice_by_query_and_cookie_beats_accept_language(world):
    client, path = world["client"], target(uri(world, "STOCK"))
    assert '<html lang="en">' in client.get(path + "&lang=en", headers=BROWSER_ZH).text
    assert '<html lang="zh-CN">' in client.get(path, headers={**BROWSER_EN, "Cookie": "lang=zh"}).text
    assert '<html lang="zh-CN">' in client.get(path, headers={"Accept": "text/html"}).text  # no preference: Chinese


def test_public_endpoints_are_rate_limited_per_client(deployed, tmp_path):
    ledger = deployed
    with live_stack(ledger, tmp_path, public_rate_limit="3/minute") as (stack, client):
        register(ledger, ledger.orgs["maker"].key, gtin=GTIN_A, lot="LOT-RL", serials=["RL-1"])
        caught_up(client, ledger)
        path = target(label_uri(ledger, gtin=GTIN_A, serial="RL-1", key=ledger.orgs["maker"].key))
        started = time.monotonic()
        assert [client.get(path, headers=JSON).status_code for _ in range(3)] == [200, 200, 200]
        limited = client.get(path, headers=JSON)
        took = time.monotonic() - started
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        # 3/minute: one token every 20 s, of which the four requests have earned back `took` at most. Exactly 20
        # unless this machine took a second or more over them.
        assert math.ceil(20 - took) <= int(limited.headers["retry-after"]) <= 20, took
        page = client.get(path, headers=BROWSER_EN)
        assert page.status_code == 429 and "Too many checks" in page.text
        assert client.post("/v1/scan", json={"uri": "http://x/01/04012345000016/21/A"}).status_code == 429
        # The JSON endpoints have no page: their 429 is the JSON error whatever Accept says (a browser's, or none).
        for json_path in (f"/v1/recall-notices/0x{'ab' * 32}", f"/v1/recall-notices/0x{'ab' * 32}/canonical.json"):
            for headers in (BROWSER_EN, {}):
                limited = client.get(json_path, headers=headers)
                assert (limited.status_code, limited.headers["content-type"], limited.json()["error"]["code"]) == (429, "application/json", "rate_limited"), json_path
        assert client.get("/v1/health").status_code == 200  # member and health endpoints are not limited here


# --- the answer any address must get, worked out from the GS1 Digital Link rules -------------------------------

# GS1 General Specifications, figure 7.11-1: the 82 characters an AI 21 serial may hold.
GS1_CSET82 = frozenset("!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz")
CONTEXTS = ("purchase", "vehicle")
FORM_TYPES = {"json": "application/json", "html": "text/html; charset=utf-8", "linkset": "application/linkset+json"}


@dataclass(frozen=True)
class Expected:
    status: int
    form: str  # json | html | linkset: what the answer is written as
    code: Optional[str] = None  # the error code of a refusal; None for a verdict or a linkset


class Malformed(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def strict_unquote(raw: str) -> str:
    """A percent-encoded path segment: every '%' starts an escape, and the result is ASCII."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", raw):
        raise Malformed("invalid_digital_link")
    data = re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), raw.encode("ascii"))
    if not data.isascii():
        raise Malformed("invalid_digital_link")
    return data.decode("ascii")


def with_check_digit(body: str) -> str:
    """13 digits and their GS1 check digit (General Specifications 7.9.1: weights 3, 1, 3, ... from the left)."""
    weighted = sum(int(digit) * (3 if position % 2 == 0 else 1) for position, digit in enumerate(body))
    return body + str((10 - weighted % 10) % 10)


def gs1_gtin14(text: str) -> str:
    """GTIN-8/12/13/14 as 14 digits, check digit verified, not zero."""
    if not (text.isascii() and text.isdigit() and len(text) in (8, 12, 13, 14)):
        raise Malformed("invalid_gtin")
    gtin = text.zfill(14)
    if with_check_digit(gtin[:13]) != gtin or int(gtin) == 0:
        raise Malformed("invalid_gtin")
    return gtin


def asked_form(accept: Optional[str], link_type: Optional[str]) -> str:
    """Content negotiation as the resolver's module documents it: a linkset by ?linkType=linkset|all or by its
    media type; JSON when asked for without HTML; else the page."""
    accept = (accept or "").lower()
    if link_type in ("linkset", "all") or "application/linkset+json" in accept:
        return "linkset"
    return "json" if "application/json" in accept and "text/html" not in accept else "html"


def expected_answer(world, raw_path: str, query: str, accept: Optional[str]) -> Expected:
    """What the resolver must answer the address as sent (after the client's own normalisation of dot segments,
    which leaves /01/{gtin}/21/{serial}, /01/{gtin}/ (the product), /01/21/{serial}, /21/{serial} or /)."""
    segments = raw_path.split("/")[1:]
    if segments[0] not in ("01", "21"):
        return Expected(404, "json", "not_found")  # '..' took the path out of the resolver: the router's 404
    loose = dict(parse_qsl(query, keep_blank_values=True))  # the query as any reader takes it (the last value wins)
    problem_form = "html" if asked_form(accept, loose.get("linkType")) == "html" else "json"
    try:
        if len(raw_path) + len(query) > 2048:
            raise Malformed("invalid_digital_link")
        if len(segments) % 2 and segments[-1] == "":
            segments = segments[:-1]  # one trailing slash is tolerated (GS1-Conformant Resolver 2.13)
        if len(segments) % 2:
            raise Malformed("invalid_digital_link")  # an AI without its value
        if segments[0] == "21":
            raise Malformed("qualifier_before_key")  # a serial before its GTIN
        gtin = gs1_gtin14(strict_unquote(segments[1]))
        serial = None
        if len(segments) == 4:  # else /01/{gtin}: the product
            serial = strict_unquote(segments[3])
            if not 1 <= len(serial) <= 20 or not set(serial) <= GS1_CSET82:
                raise Malformed("invalid_serial")
        attributes: dict[str, str] = {}
        if query:
            try:
                pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, encoding="ascii", errors="strict", max_num_fields=32)
            except (ValueError, UnicodeDecodeError):
                raise Malformed("invalid_digital_link") from None
            for name, value in pairs:
                if name in ("sig", "linkType") and name in attributes:
                    raise Malformed("invalid_digital_link")
                attributes.setdefault(name, value)
        form = asked_form(accept, attributes.get("linkType"))
        if form == "linkset":
            return Expected(200, "linkset")
        if attributes.get("linkType") is not None:  # no manufacturer's links in this world, nor one of PartLedger's own types
            return Expected(404, problem_form, "link_type_not_found")
        if serial is None:
            return Expected(200, form) if gtin == GTIN_A else Expected(404, problem_form, "unknown_gtin")
        if loose.get("context") is not None and loose["context"] not in CONTEXTS:
            raise Malformed("invalid_context")
        for name, bound in (("lat", 90), ("lon", 180)):
            if loose.get(name) is not None:
                try:
                    value = float(loose[name])
                except ValueError:
                    raise Malformed("invalid_location") from None
                if not -bound <= value <= bound:
                    raise Malformed("invalid_location")
    except Malformed as malformed:
        return Expected(400, problem_form, malformed.code)
    registered = world["ledger"].parts.functions.part(part_id(gtin, serial)).call()[0] != 0
    return Expected(200 if registered else 404, form)


def half_and_half(made: st.SearchStrategy[str], anything: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Values from `made` half of the time, else from `anything` (one_of would flatten the two into one pick)."""
    return st.booleans().flatmap(lambda pick: made if pick else anything)


# Half of the time any text, as before; the other half keys that get past the GTIN's check digit (those of the parts
# above among them), serials of the GS1 set and queries made of the attributes the resolver reads, so that every
# branch of expected_answer is reached.
GTINS = half_and_half(
    st.one_of(st.sampled_from([GTIN_A, GTIN_A[1:], GTIN_B]), st.integers(min_value=1, max_value=10**13 - 1).map(lambda body: with_check_digit(f"{body:013d}"))),
    st.one_of(st.text(alphabet="0123456789", min_size=0, max_size=15), st.text(max_size=8)),
)
SERIALS = half_and_half(
    st.one_of(st.text(alphabet=sorted(GS1_CSET82), min_size=0, max_size=22), st.sampled_from(["STOCK", "SOLD", "INSTALLED", "SCRAP", "RECALL-1", "LATE", 'ODD/%&"?+.1', "NEVER-MADE"])),
    st.text(max_size=30),
)
ATTRIBUTE = st.tuples(
    st.sampled_from(["sig", "linkType", "context", "lat", "lon", "lang", "other"]),
    st.one_of(st.sampled_from(["linkset", "all", "purchase", "vehicle", "resale", "0", "-90", "181", "nan", "1e3", "zh"]), st.text(max_size=6)),
)
QUERIES = half_and_half(st.lists(ATTRIBUTE, max_size=4).map(lambda pairs: "&".join(f"{name}={value}" for name, value in pairs)), st.text(max_size=40))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    gtin=GTINS,
    serial=SERIALS,
    query=QUERIES,
    accept=st.sampled_from(["application/json", "text/html", "application/linkset+json", "*/*", ""]),
)
def test_any_address_under_01_gets_exactly_its_verdict_or_its_400_never_a_500(world, gtin, serial, query, accept):
    path = f"/01/{quote(gtin, safe='')}/21/{quote(serial, safe='%')}" + (f"?{quote(query, safe='=&%')}" if query else "")
    answer = world["client"].get(path, headers={"Accept": accept} if accept else {})
    sent = answer.request.url  # as the client sends it: dot segments removed, the rest as written
    expected = expected_answer(world, sent.raw_path.split(b"?", 1)[0].decode("ascii"), sent.query.decode("ascii"), answer.request.headers.get("accept"))
    event(f"{expected.status} {expected.code or expected.form}")
    assert (answer.status_code, answer.headers["content-type"]) == (expected.status, FORM_TYPES[expected.form]), (path, expected, answer.text[:300])
    if expected.form == "linkset":
        (links,) = answer.json()["linkset"]
        assert links["anchor"].startswith("http://testserver/01/"), (path, links)
    elif expected.code is not None:
        if expected.form == "json":
            assert answer.json()["error"]["code"] == expected.code, (path, expected, answer.text[:300])
        else:
            assert expected.status == 404 or "Not a valid part label address" in answer.text, (path, expected, answer.text[:300])
            assert expected.code in answer.text, (path, expected, answer.text[:300])
    elif expected.form == "json":
        body = answer.json()
        assert body["gtin"] == GTIN_A if "verdict" not in body else (body["verdict"] == "unknown") is (expected.status == 404), (path, expected, answer.text[:300])
    else:
        verdict = re.search(r'data-verdict="([a-z_]+)"', answer.text)
        assert verdict is not None and (verdict[1] == "unknown") is (expected.status == 404), (path, expected, answer.text[:300])


def test_an_address_with_a_line_break_is_malformed_not_unknown(world):
    """The declared route's pattern (/01/{key_path:path}) stops at a line break; the resolver answers such an address
    all the same, as the malformed Digital Link it is, not with the router's plain 404."""
    for accept, kind in ((JSON, "application/json"), (BROWSER_EN, "text/html")):
        answer = world["client"].get(f"/01/{GTIN_A}/21/A%0AB", headers=accept)
        assert (answer.status_code, answer.headers["content-type"].split(";")[0]) == (400, kind)
    assert world["client"].get(f"/01/{GTIN_A}/21/A%0AB", headers=JSON).json()["error"]["code"] == "invalid_serial"


def test_public_tier_serves_the_same_verdicts_and_nothing_for_members(world):
    from fastapi.testclient import TestClient

    from ledger_service.public_app import create_public_app

    stack = world["stack"]
    with TestClient(create_public_app(stack.settings(public_rate_limit="1000/minute"))) as public:
        for serial, verdict in (("STOCK", "genuine"), ("SCRAP", "scrapped"), ("INSTALLED", "installed")):
            answer = public.get(target(uri(world, serial)), headers=JSON)
            assert (answer.status_code, answer.json()["verdict"]) == (200, verdict)
            assert int(answer.headers["x-partledger-block"]) == answer.json()["block"] > 0
        assert public.post("/v1/scan", json={"uri": uri(world, "SOLD")}).json()["verdict"] == "sold"
        assert public.post("/v1/scan", json={"uri": uri(world, "N-1", key=None)}).json()["label_warning"] == "unsigned"
        assert public.get(f"/v1/recall-notices/{NOTICE_HASH}").json()["notice"] == NOTICE_TEXT
        assert public.get(target(uri(world, "NEVER-MADE")), headers=BROWSER_EN).status_code == 404
        for member_path in ("/v1/scan-flags", "/v1/parts", "/v1/health", "/v1/commands/x"):
            assert public.get(member_path, headers=stack.headers("maker")).status_code == 404
        assert public.post("/v1/parts/register", headers=stack.headers("maker"), json={}).status_code == 404


def test_verdicts_scans_and_flags_on_postgresql(ledger, postgres, tmp_path):
    from tests.pgcluster import unique_name
    from tests.servicekit import prepare_stack, running_service

    stack = prepare_stack(ledger, tmp_path, postgres.create_database(unique_name("idx")), postgres.create_database(unique_name("svc")))
    maker = ledger.orgs["maker"].key
    register(ledger, maker, gtin=GTIN_A, lot="LOT-PG", serials=["PG-1", "PG-SCRAP"])
    ledger.act(maker, ledger.parts.functions.scrapParts([part_id(GTIN_A, "PG-SCRAP")], bytes(32)))
    with running_service(stack, public_rate_limit="1000/minute") as client:
        caught_up(client, ledger)
        for serial, verdict, status in (("PG-1", "genuine", 200), ("PG-SCRAP", "scrapped", 200), ("PG-NONE", "unknown", 404)):
            answer = client.get(target(label_uri(ledger, gtin=GTIN_A, serial=serial, key=maker)), headers=JSON)
            assert (answer.status_code, answer.json()["verdict"], answer.json()["signature"]) == (status, verdict, "valid" if status == 200 else "unchecked")
        flags = client.get("/v1/scan-flags", headers=stack.headers("maker")).json()["items"]
        assert sorted(item["flag"] for item in flags) == ["scanned_after_scrap", "unregistered_serial"]
