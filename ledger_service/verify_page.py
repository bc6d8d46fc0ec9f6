"""What a scan answers: the mobile-first verification page (Chinese and English), the JSON verdict, the RFC 9264
linkset, and which of them a request asked for.

The page carries both languages and shows one (by ?lang=, else the `lang` cookie the switch sets, else
Accept-Language, else Chinese); the switch flips it in place without a new request (and works as a plain link
without JavaScript). Its only script and style are inline under a per-response CSP nonce: the page loads nothing
from anywhere, and asks the service only POST /v1/scan (VIN check, "buying it new", coarse location).
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any, Optional

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from labels.digital_link import DigitalLink
from ledger_service.clones import FLAG_KINDS
from ledger_service.verify import RecallNotice, Verdict, Verification
from partledger.model import PartStatus

if TYPE_CHECKING:
    from ledger_service.resolver_links import RecallFacts

TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"
_LANGUAGE_RANGE = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")

Pair = dict[str, str]


def _pair(zh: str, en: str) -> Pair:
    return {"zh": zh, "en": en}


VERDICTS: dict[Verdict, tuple[Pair, Pair]] = {
    Verdict.GENUINE: (_pair("正品配件", "Genuine part"),
                      _pair("由{maker}登记，目前在联盟成员的库存中或运输途中。", "Registered by {maker}; in stock or in transit between consortium members.")),
    Verdict.SOLD: (_pair("正品配件 — 已售出", "Genuine part — sold"),
                   _pair("由{maker}登记，已由授权商家售出。", "Registered by {maker} and sold by an authorised seller.")),
    Verdict.INSTALLED: (_pair("正品配件 — 已装车", "Genuine part — installed in a vehicle"),
                        _pair("由{maker}登记，已由授权维修厂安装到车辆上。", "Registered by {maker} and installed in a vehicle by an authorised workshop.")),
    Verdict.RECALLED: (_pair("已召回 — 请勿使用", "Recalled — do not use"),
                       _pair("{maker}已召回该配件所在的生产批次。请勿安装或使用，请联系销售商或维修厂。",
                             "{maker} has recalled this part's production lot. Do not install or use it; contact the seller or your workshop.")),
    Verdict.CONTAINS_RECALLED: (_pair("含有召回配件 — 请勿使用", "Contains a recalled part — do not use"),
                                _pair("该总成内含有已被召回批次的配件（见下方）。请勿安装或使用，请联系销售商或维修厂。",
                                      "This assembly holds a part of a recalled lot (see below). Do not install or use it; contact the seller or your workshop.")),
    Verdict.QUARANTINED: (_pair("已隔离 — 请勿安装", "On hold — do not install"),
                          _pair("该配件因质量检验或疑似假冒被暂扣，不得使用。", "This part is held back for a quality check or as a suspected counterfeit.")),
    Verdict.SCRAPPED: (_pair("已销毁的配件", "Destroyed part"),
                       _pair("该配件已被销毁：在用配件上的此标签是复制品。", "This part was destroyed: a label on a part in use is a copy.")),
    Verdict.SIGNATURE_INVALID: (_pair("标签无效 — 可能是假冒", "Invalid label — possibly counterfeit"),
                                _pair("标签上的签名不是该配件制造商所签。", "The label's signature was not made by the part's manufacturer.")),
    Verdict.KEY_REVOKED: (_pair("标签无效 — 可能是假冒", "Invalid label — possibly counterfeit"),
                          _pair("标签签名所用的厂商密钥在该配件登记之前已被吊销。", "The label was signed with a manufacturer key revoked before this part was registered.")),
    Verdict.UNSIGNED: (_pair("标签缺少厂商签名", "Label without manufacturer signature"),
                       _pair("正规标签都带有制造商签名，此标签没有。请向销售方索取正规标签。",
                             "PartLedger labels carry the manufacturer's signature; this one has none. Ask the seller for a genuine label.")),
    Verdict.UNKNOWN: (_pair("未登记 — 可能是假冒", "Not registered — possibly counterfeit"),
                      _pair("联盟账本中没有登记该商品条码和序列号的配件。", "No part with this GTIN and serial number is registered in the consortium ledger.")),
}  # fmt: skip

FLAGS: dict[str, Pair] = {
    "scanned_after_scrap": _pair("该配件已销毁，但它的标签仍在被扫描。", "This part was destroyed, yet its label is still being scanned."),
    "scanned_as_new_after_installation": _pair("作为新件出售，但账本记录该配件已安装在车辆上。", "Offered as new, but the ledger says this part is installed in a vehicle."),
    "vin_mismatch": _pair("您输入的车架号与该配件安装的车辆不符。", "The VIN you entered is not the vehicle this part was installed in."),
    "impossible_travel": _pair("该标签在相距过远的地点被扫描，两次扫描之间不可能到达：标签很可能被复制。",
                               "This label was scanned in places too far apart for the time between the scans: it has probably been copied."),
    "unregistered_serial": _pair("已向制造商报告。", "Reported to the manufacturer."),
}  # fmt: skip
assert set(FLAGS) == set(FLAG_KINDS)

STATUS_NAMES: dict[PartStatus, Pair] = {
    PartStatus.IN_STOCK: _pair("在库", "in stock"),
    PartStatus.IN_TRANSIT: _pair("运输中", "in transit"),
    PartStatus.SOLD: _pair("已售出", "sold"),
    PartStatus.INSTALLED: _pair("已装车", "installed"),
    PartStatus.QUARANTINED: _pair("已隔离", "quarantined"),
    PartStatus.SCRAPPED: _pair("已报废", "scrapped"),
    PartStatus.RECYCLED: _pair("已回收", "recycled"),
    PartStatus.REMANUFACTURED: _pair("已再制造（原件已消耗）", "remanufactured (consumed)"),
}
SIGNATURES: dict[str, Pair] = {
    "valid": _pair("有效（制造商签名）", "valid (manufacturer's)"),
    "invalid": _pair("无效", "invalid"),
    "revoked": _pair("密钥已吊销", "key revoked"),
    "missing": _pair("无", "none"),
    "unchecked": _pair("未核验", "not checked"),
}
WORDS: dict[str, Pair] = {
    "title": _pair("配件验真", "Part verification"),
    "switch": _pair("English", "中文"),
    "suspicious": _pair("可疑：此标签可能被复制", "Suspicious: this label may be a copy"),
    "manufacturer": _pair("制造商", "Manufacturer"),
    "gtin": _pair("商品条码", "GTIN"),
    "serial": _pair("序列号", "Serial"),
    "status": _pair("状态", "Status"),
    "signature": _pair("标签签名", "Label signature"),
    "recall": _pair("召回通知", "Recall notice"),
    "recall_detail": _pair("区块 {block}，发布方：{by}", "block {block}, issued by {by}"),
    "remanufactured_from": _pair("再制造件，原件（商品条码 / 序列号）", "Remanufactured from (GTIN / serial)"),
    "remanufactured_detail": _pair("此件由制造商用退回的原件再制造，原件已消耗。", "The manufacturer remanufactured this part from a returned original, which was consumed."),
    "recalled_inside": _pair("内含召回配件（商品条码 / 序列号）", "Recalled part inside (GTIN / serial)"),
    "recalled_inside_detail": _pair("共 {count} 件召回配件；最近的一件位于第 {depth} 层", "{count} recalled part(s) inside; the nearest {depth} level(s) down"),
    "vin_title": _pair("核对是否为您车辆上的配件", "Is this the part fitted to your vehicle?"),
    "vin_placeholder": _pair("车架号（17位）", "VIN (17 characters)"),
    "vin_button": _pair("核对", "Check"),
    "vin_match": _pair("车架号一致：这是安装在您车辆上的配件。", "The VIN matches: this is the part fitted to your vehicle."),
    "buying_title": _pair("您正在作为新件购买此配件吗？", "Are you buying this part as new?"),
    "buying_button": _pair("我正在购买新件", "I am buying it new"),
    "location_title": _pair("共享大致位置（精确到约10公里），帮助识别被复制的标签", "Share your approximate location (to about 10 km) to help detect copied labels"),
    "location_button": _pair("共享大致位置", "Share approximate location"),
    "no_location": _pair("未能获取位置。", "Location unavailable."),
    "checking": _pair("正在核验…", "Checking…"),
    "no_concern": _pair("未发现异常。", "Nothing suspicious found."),
    "busy": _pair("查询过于频繁，请稍后再试。", "Too many checks; please try again shortly."),
    "failed": _pair("核验失败，请稍后再试。", "The check failed; please try again."),
    "footer": _pair("已对照联盟区块链账本核验（区块 {block}）。本页只显示公开信息。",
                    "Checked against the consortium ledger (block {block}). This page shows public information only."),
    "bad_title": _pair("无效的配件标签地址", "Not a valid part label address"),
    "bad_detail": _pair("此地址不是有效的 GS1 数字链接（{code}）。请重新扫描标签上的二维码。",
                        "This is not a valid GS1 Digital Link ({code}). Please scan the label's QR code again."),
    "limited_title": _pair("查询过于频繁", "Too many checks"),
    "limited_detail": _pair("请在 {seconds} 秒后重试。", "Please try again in {seconds} s."),
    "unknown_maker": _pair("未知制造商", "an unknown manufacturer"),
    "notice_action": _pair("现在请这样做", "What to do now"),
    "notice_reason": _pair("召回原因", "Reason"),
    "notice_risk": _pair("风险", "Risk"),
    "notice_remedy": _pair("处理办法", "Remedy"),
    "notice_contact": _pair("联系方式", "Contact"),
    "notice_check": _pair("通知原文（其 SHA-256 即链上记录的哈希）：", "The notice as anchored (its SHA-256 is the hash on chain):"),
    "label_also": _pair("另外：", "Also:"),
}  # fmt: skip


# --- negotiation ---------------------------------------------------------------------------------------------


def negotiate(accept: str | None, link_type: str | None) -> str:
    """"linkset", "json" or "html": ?linkType=linkset (or all) and Accept: application/linkset+json ask for the
    linkset; Accept: application/json (and no HTML) for JSON; anything else, a browser first, for the page."""
    if link_type in ("linkset", "all"):
        return "linkset"
    text = (accept or "").lower()
    if "application/linkset+json" in text:
        return "linkset"
    if "application/json" in text and "text/html" not in text:
        return "json"
    return "html"


def choose_language(*, query: str | None, cookie: str | None, accept_language: str | None) -> str:
    """zh or en: an explicit choice first (?lang=, then the cookie), else the preferred of the two by
    Accept-Language (q values honoured), else Chinese."""
    for choice in (query, cookie):
        if choice in LANGUAGES:
            return choice  # type: ignore[return-value]
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for position, item in enumerate((accept_language or "").split(",")[:20]):
        match = _LANGUAGE_RANGE.match(item)
        if match is None:
            continue
        primary = match[1].lower()
        q = float(match[2]) if match[2] else 1.0
        if primary in LANGUAGES and q > 0 and q - position * 1e-6 > best_q:
            best, best_q = primary, q - position * 1e-6
    return best


# --- the page ------------------------------------------------------------------------------------------------


@functools.cache
def _asset(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


@functools.cache
def _fragments() -> Environment:
    """The Jinja2 templates of the pages' newer parts (templates/verify/), autoescaped."""
    return Environment(loader=FileSystemLoader(TEMPLATES / "verify"), autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=StrictUndefined)


def render_notice(recall: Optional[RecallNotice | RecallFacts]) -> str:
    """The card of a recall's notice in both languages, what to do now first; "" when the service holds no text for
    its hash (a recall sent with a bare notice_hash), where the facts still show the hash."""
    if recall is None or recall.notice is None:
        return ""
    return _fragments().get_template("recall_notice.html").render(notice=recall.notice, notice_hash="0x" + recall.notice_hash.hex(), words=WORDS)


def _label_warning(found: Verification) -> str:
    """The label's own fault under a verdict that comes first (recalled), as the line below the headline."""
    kind = found.label_warning
    if kind is None:
        return ""
    title, detail = VERDICTS[kind]
    return _fragments().get_template("label_warning.html").render(kind=kind.value, title=title, detail=detail, words=WORDS)


def _both(pair: Pair, **values: Any) -> str:
    """Both languages of a text, each in its span; the page's CSS shows one."""
    return "".join(
        f'<span lang="{code}" class="{code}">{html.escape(pair[code].format(**{k: v[code] if isinstance(v, dict) else v for k, v in values.items()}))}</span>'
        for code in LANGUAGES
    )


def _document(*, lang: str, nonce: str, body: str, title: Pair, verdict: str, severity: str) -> str:
    return Template(_asset("verify.html")).substitute(
        html_lang="zh-CN" if lang == "zh" else "en",
        title=html.escape(title[lang]),
        nonce=nonce,
        css=_asset("verify.css"),
        js=_asset("verify.js"),
        verdict=html.escape(verdict),
        severity=html.escape(severity),
        switch_href="?lang=en" if lang == "zh" else "?lang=zh",
        switch=_both(WORDS["switch"]),
        brand=_both(_pair("PartLedger 配件溯源", "PartLedger")),
        body=body,
        texts=json.dumps(_script_texts(title), ensure_ascii=False).replace("<", "\\u003c"),
    )


def _script_texts(title: Pair) -> dict[str, Any]:
    return {
        "title": title,
        "flags": FLAGS,
        **{key: WORDS[key] for key in ("vin_match", "checking", "no_concern", "busy", "failed", "no_location")},
    }


def render_page(found: Verification, *, lang: str, nonce: str) -> str:
    """The verification page of a verdict."""
    maker = found.manufacturer or None
    maker_pair = _pair(maker, maker) if maker else WORDS["unknown_maker"]
    title, detail = VERDICTS[found.verdict]
    severity = found.severity
    parts = [f'<section class="card verdict {severity}" id="verdict" data-verdict="{found.verdict.value}">',
             f'<h1 id="verdict-title">{_both(title)}</h1>',
             f'<p id="verdict-detail">{_both(detail, maker=maker_pair)}</p>', _label_warning(found)]  # fmt: skip
    if found.public_flags:
        items = "".join(f"<li>{_both(FLAGS[flag.kind])}</li>" for flag in found.public_flags)
        parts.append(f'<div class="alert" id="suspicious" role="alert">{_both(WORDS["suspicious"])}<ul>{items}</ul></div>')
    parts.append("</section>")
    parts.append(render_notice(found.recall if found.recall is not None or found.contained_recall is None else found.contained_recall.recall))
    facts = [
        (WORDS["gtin"], html.escape(found.link.gtin)),
        (WORDS["serial"], html.escape(found.link.serial)),
    ]
    if found.registered:
        facts.insert(0, (WORDS["manufacturer"], html.escape(maker or "—")))
        if found.status is not None:
            facts.append((WORDS["status"], _both(STATUS_NAMES[found.status])))
        facts.append((WORDS["signature"], _both(SIGNATURES[found.signature])))
    if found.recall is not None:
        by = found.recall.by or "—"
        facts.append((WORDS["recall"], f'<code>0x{found.recall.notice_hash.hex()}</code><br>{_both(WORDS["recall_detail"], block=str(found.recall.block), by=_pair(by, by))}'))
    if found.remanufactured_from is not None:
        _, gtin, serial = found.remanufactured_from
        facts.append((WORDS["remanufactured_from"], f'<span id="remanufactured-from">{html.escape(f"{gtin or chr(8212)} / {serial or chr(8212)}")}</span><br>{_both(WORDS["remanufactured_detail"])}'))
    inside = found.contained_recall
    if inside is not None:
        named = html.escape(f"{inside.gtin or '—'} / {inside.serial or '—'}")
        notice = "" if inside.recall is None else f'<br><code>0x{inside.recall.notice_hash.hex()}</code>'
        facts.append((WORDS["recalled_inside"], f'<span id="recalled-inside">{named}</span>{notice}<br>{_both(WORDS["recalled_inside_detail"], count=str(inside.count), depth=str(inside.depth))}'))
    rows = "".join(f"<dt>{_both(label)}</dt><dd>{value}</dd>" for label, value in facts)
    parts.append(f'<section class="card" id="facts"><dl>{rows}</dl></section>')
    if found.registered and found.verdict in (Verdict.INSTALLED, Verdict.RECALLED) and found.status is PartStatus.INSTALLED:
        parts.append(
            f'<section class="card"><h2>{_both(WORDS["vin_title"])}</h2><form id="vin-form" autocomplete="off">'
            f'<input id="vin" name="vin" maxlength="17" minlength="17" required aria-label="VIN" placeholder="{html.escape(WORDS["vin_placeholder"][lang])}">'
            f'<button type="submit">{_both(WORDS["vin_button"])}</button></form><div class="result" id="vin-result" aria-live="polite"></div></section>'
        )
    if found.registered and found.verdict in (Verdict.GENUINE, Verdict.SOLD, Verdict.INSTALLED):
        parts.append(
            f'<section class="card"><h2>{_both(WORDS["buying_title"])}</h2><button class="secondary" id="buying-new" type="button">{_both(WORDS["buying_button"])}</button>'
            f'<div class="result" id="buying-result" aria-live="polite"></div></section>'
        )
    if found.registered:
        parts.append(
            f'<section class="card"><h2>{_both(WORDS["location_title"])}</h2><button class="secondary" id="share-location" type="button">{_both(WORDS["location_button"])}</button>'
            f'<div class="result" id="location-result" aria-live="polite"></div></section>'
        )
    parts.append(f'<footer>{_both(WORDS["footer"], block=str(found.block))}</footer>')
    return _document(lang=lang, nonce=nonce, body="".join(parts), title=title, verdict=found.verdict.value, severity=severity)


def render_problem_page(*, lang: str, nonce: str, kind: str, code: str = "", retry_after: str = "") -> str:
    """The page for a malformed address (kind "malformed") or a client over its rate limit ("limited")."""
    if kind == "limited":
        title, detail = WORDS["limited_title"], WORDS["limited_detail"]
    else:
        title, detail = WORDS["bad_title"], WORDS["bad_detail"]
    body = (
        f'<section class="card verdict warning" id="verdict" data-verdict="{kind}"><h1 id="verdict-title">{_both(title)}</h1>'
        f'<p id="verdict-detail">{_both(detail, code=code, seconds=retry_after)}</p></section>'
    )
    return _document(lang=lang, nonce=nonce, body=body, title=title, verdict=kind, severity="warning")


# --- the linkset ---------------------------------------------------------------------------------------------


def linkset(link: DigitalLink, *, base_url: str, query: str) -> dict[str, Any]:
    """The RFC 9264 linkset of a part's Digital Link, with GS1 link types (https://gs1.org/voc/): the default link
    and the verification service (the page, in zh and en, and the JSON verdict), and the recall status."""
    anchor = base_url.rstrip("/") + link.path
    target = anchor + (f"?{query}" if query else "")
    page = {"href": target, "title": "配件验真 Part verification", "type": "text/html", "hreflang": ["zh", "en"]}
    data = {"href": target, "title": "Verification verdict", "type": "application/json"}
    return {
        "linkset": [
            {
                "anchor": anchor,
                "https://gs1.org/voc/defaultLink": [page],
                "https://gs1.org/voc/verificationService": [page, data],
                "https://gs1.org/voc/recallStatus": [data | {"title": "Recall status"}],
            }
        ]
    }


def link_header(*, base_url: str, link: Optional[DigitalLink]) -> Optional[str]:
    """The Link header every Digital Link answer carries, pointing at its linkset."""
    if link is None:
        return None
    return f'<{base_url.rstrip("/")}{link.path}?linkType=linkset>; rel="linkset"; type="application/linkset+json"'
