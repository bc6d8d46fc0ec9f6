"""The resolver's pages above a part: a product (/01/{gtin}) with its manufacturer's links, a lot
(/01/{gtin}/10/{lot}) with its recall status, and the 404 pages of an unknown product, lot, key or link type.

The same document as the verification page (ledger_service.verify_page: both languages in the page, one shown, the
same stylesheet and script under a per-response CSP nonce); only public data.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from ledger_service.resolver_links import Link, ProductFacts
from ledger_service.verify_page import WORDS, Pair, _both, _document, _pair, render_notice

TEXTS: dict[str, Pair] = {
    "product_title": _pair("已登记的商品", "Registered product"),
    "product_detail": _pair("该商品条码的配件由{maker}在联盟账本中登记。扫描单个配件标签可核验其真伪。",
                            "Parts with this GTIN are registered in the consortium ledger by {maker}. Scan a part's own label to check that part."),
    "lot_ok_title": _pair("批次未召回", "Lot not recalled"),
    "lot_ok_detail": _pair("{maker}的该生产批次目前没有召回。", "This production lot of {maker} is not recalled."),
    "lot_recalled_title": _pair("批次已召回 — 请勿使用", "Lot recalled — do not use"),
    "lot_recalled_detail": _pair("{maker}已召回该生产批次。请勿安装或使用其中的配件，请联系销售商或维修厂。",
                                 "{maker} has recalled this production lot. Do not install or use its parts; contact the seller or your workshop."),
    "lot": _pair("批次", "Lot"),
    "links": _pair("制造商提供的链接", "The manufacturer's links"),
    "no_links": _pair("制造商尚未提供链接。", "The manufacturer has given no links yet."),
    "unknown_title": _pair("未登记 — 可能是假冒", "Not registered — possibly counterfeit"),
    "unknown_gtin": _pair("联盟账本中没有登记该商品条码的配件。", "No part with this GTIN is registered in the consortium ledger."),
    "unknown_lot": _pair("联盟账本中没有该商品条码的此批次。", "No lot with this code is registered for this GTIN in the consortium ledger."),
    "unsupported_title": _pair("不支持的标识", "Identifier not supported"),
    "unsupported_key": _pair("本解析器只解析商品条码（GTIN，AI 01）。", "This resolver resolves GTINs (AI 01) only."),
    "no_link_title": _pair("没有所请求的链接", "No such link"),
    "link_type_not_found": _pair("没有“{link_type}”类型的链接。", "There is no link of type {link_type}."),
    "footer": _pair("已对照联盟区块链账本查询（区块 {block}）。本页只显示公开信息。", "Read from the consortium ledger (block {block}). This page shows public information only."),
}  # fmt: skip


def render_product_page(facts: ProductFacts, links: Sequence[Link], *, lang: str, nonce: str) -> str:
    """The page of a product (facts.lot None) or of a lot."""
    maker = facts.manufacturer or None
    maker_pair = _pair(maker, maker) if maker else WORDS["unknown_maker"]
    if facts.lot is None:
        kind, severity, title, detail = "product", "ok", TEXTS["product_title"], TEXTS["product_detail"]
    elif facts.recalled:
        kind, severity, title, detail = "recalled", "danger", TEXTS["lot_recalled_title"], TEXTS["lot_recalled_detail"]
    else:
        kind, severity, title, detail = "lot", "ok", TEXTS["lot_ok_title"], TEXTS["lot_ok_detail"]
    parts = [f'<section class="card verdict {severity}" id="verdict" data-verdict="{kind}">',
             f'<h1 id="verdict-title">{_both(title)}</h1>',
             f'<p id="verdict-detail">{_both(detail, maker=maker_pair)}</p></section>', render_notice(facts.recall)]  # fmt: skip
    facts_rows = [(WORDS["manufacturer"], html.escape(maker or "—")), (WORDS["gtin"], html.escape(facts.gtin))]
    if facts.lot is not None:
        facts_rows.append((TEXTS["lot"], html.escape(facts.lot)))
    if facts.recall is not None:
        by = facts.recall.by or "—"
        notice = f'<code>0x{facts.recall.notice_hash.hex()}</code><br>{_both(WORDS["recall_detail"], block=str(facts.recall.block), by=_pair(by, by))}'
        facts_rows.append((WORDS["recall"], notice))
    rows = "".join(f"<dt>{_both(label)}</dt><dd>{value}</dd>" for label, value in facts_rows)
    parts.append(f'<section class="card" id="facts"><dl>{rows}</dl></section>')
    parts.append(_links_card(links))
    parts.append(f'<footer>{_both(TEXTS["footer"], block=str(facts.block))}</footer>')
    return _document(lang=lang, nonce=nonce, body="".join(parts), title=title, verdict=kind, severity=severity)


def render_not_found_page(*, code: str, lang: str, nonce: str, link_type: str = "", links: Sequence[Link] = ()) -> str:
    """The 404 page of an unknown GTIN or lot (code unknown_gtin, unknown_lot), a key this resolver does not serve
    (unsupported_key), or a link type the address has no link of (link_type_not_found, with the links it has)."""
    if code == "link_type_not_found":
        title, detail = TEXTS["no_link_title"], _both(TEXTS["link_type_not_found"], link_type=_pair(link_type, link_type))
    elif code == "unsupported_key":
        title, detail = TEXTS["unsupported_title"], _both(TEXTS["unsupported_key"])
    else:
        title, detail = TEXTS["unknown_title"], _both(TEXTS["unknown_lot" if code == "unknown_lot" else "unknown_gtin"])
    body = (
        f'<section class="card verdict danger" id="verdict" data-verdict="{html.escape(code)}"><h1 id="verdict-title">{_both(title)}</h1>'
        f'<p id="verdict-detail">{detail}</p><p><code>{html.escape(code)}</code></p></section>'
    )
    if code == "link_type_not_found":
        body += _links_card(links)
    return _document(lang=lang, nonce=nonce, body=body, title=title, verdict=code, severity="danger")


def _links_card(links: Sequence[Link]) -> str:
    if not links:
        return f'<section class="card" id="links"><h2>{_both(TEXTS["links"])}</h2><p>{_both(TEXTS["no_links"])}</p></section>'
    items = "".join(
        f'<li><a href="{html.escape(link.href)}" rel="noopener noreferrer"'
        + (f' hreflang="{html.escape(link.lang)}"' if link.lang else "")
        + (f' type="{html.escape(link.media_type)}"' if link.media_type else "")
        + f">{html.escape(link.title)}</a> <small>gs1:{html.escape(link.link_type)}</small></li>"
        for link in links
    )
    return f'<section class="card" id="links"><h2>{_both(TEXTS["links"])}</h2><ul>{items}</ul></section>'
