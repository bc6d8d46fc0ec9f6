"""What the Digital Link resolver answers beyond a part's verdict: the product (/01/{gtin}) and the lot
(/01/{gtin}/10/{lot}) from the mirror, each manufacturer's own links per GTIN (service table product_links,
migration 0006), the linksets and redirects built from them, and the resolver description file
(/.well-known/gs1resolver), after the GS1-Conformant Resolver standard (1.2).

Read side of the flow: the mirror's parts, lots, recalls and organisations, and the service's product_links.

Who keeps a GTIN's links: its manufacturer, the organisation that registered the first part with that GTIN (the
contract lets any manufacturer register any GTIN; a later registrant does not become its manufacturer). A GTIN with
no part registered has no manufacturer yet: its links can be neither read nor set (404 unknown_gtin; register a lot
first). PUT replaces the whole set.

Link types are GS1 Web Vocabulary terms (https://gs1.org/voc/, prefix gs1:), written gs1:pip or pip. PartLedger's
own answers hold the link types defaultLink, verificationService and recallStatus; a manufacturer's set cannot
use those (nor defaultLinkMulti, handledBy).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Optional
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, exists, insert, select
from sqlalchemy.engine import Connection, Engine

from indexer.tables import Lot, Organisation, Part, Recall
from ledger_service.auth import Principal, require_may_act
from ledger_service.errors import Forbidden, NotFound, RowErrors
from ledger_service.link_tables import ProductLink
from ledger_service.read import indexed_block
from ledger_service.recall_notices import Notice
from ledger_service.schemas import Exact, Hex32, Omittable, OrganisationRef, RecallNoticeView

T_PART, T_LOT, T_RECALL, T_ORG = Part.__table__, Lot.__table__, Recall.__table__, Organisation.__table__
T_LINK = ProductLink.__table__

GS1_VOC = "https://gs1.org/voc/"
GS1_VOC_NAMESPACES = (GS1_VOC, "https://ref.gs1.org/voc/", "https://www.gs1.org/voc/", "http://gs1.org/voc/")
GS1_PREFIX = "gs1:"
LINKSET_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"  # the standard's JSON-LD context for linksets
# Link types of the GS1 Web Vocabulary (subproperties of gs1:linkType) a manufacturer may use for its links.
MANUFACTURER_LINK_TYPES = frozenset({
    "activityIdeas", "allergenInfo", "appDownload", "backgroundInfo", "brandHomepageClinical", "brandHomepagePatient",
    "careersInfo", "certificationInfo", "consumerHandlingStorageInfo", "dpp", "eifu", "epcis", "epil", "eventsInfo",
    "faqs", "hasRetailers", "homepage", "ingredientsInfo", "instructions", "leaveReview", "locationInfo",
    "logisticsInfo", "loyaltyProgram", "masterData", "menuInfo", "nutritionalInfo", "openingHoursInfo", "paymentLink",
    "pip", "productSustainabilityInfo", "promotion", "purchaseSuppliesOrAccessories", "quickStartGuide", "recipeInfo",
    "registerProduct", "registryEntry", "relatedImage", "relatedVideo", "reportFound", "review", "safetyInfo",
    "scheduleTime", "serviceInfo", "smartLabel", "smpc", "socialMedia", "statisticInfo", "subscribe", "support",
    "sustainabilityInfo", "traceability", "tutorial", "userAgreement", "whatsInTheBox",
})  # fmt: skip
# PartLedger's own answers (the page and the JSON at the requested address), and GS1 link types with a meaning of
# their own in a resolver: none of them is a manufacturer's to set.
RESERVED_LINK_TYPES = frozenset({"defaultLink", "defaultLinkMulti", "verificationService", "recallStatus", "handledBy", "jws"})
# The link types each level answers itself: ?linkType= one of them is answered like no linkType at all.
OWN_LINK_TYPES = {
    "serial": frozenset({"defaultLink", "verificationService", "recallStatus"}),
    "lot": frozenset({"defaultLink", "recallStatus"}),
    "product": frozenset({"defaultLink"}),
}
MAX_LINKS = 50
MANUFACTURER_CACHE_SECONDS = 30.0
_LANG = re.compile(r"^([A-Za-z]{2})(?:-([A-Za-z]{2}))?$")  # what GS1's linkset schema takes as hreflang: ll or ll-CC
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_LANGUAGE_RANGE = re.compile(r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


# --- the JSON bodies (for the OpenAPI schema; the answers are built as plain dicts) -----------------------------


class LinkIn(BaseModel):
    """One link of a GTIN's set, as its manufacturer sends it."""

    model_config = ConfigDict(extra="forbid")
    link_type: str = Field(max_length=80, description="a GS1 Web Vocabulary link type: gs1:pip, pip or https://gs1.org/voc/pip")
    href: str = Field(max_length=2048, description="the target: an https URL")
    title: str = Field(max_length=200, description="a human-readable title, in the target's language")
    lang: Optional[str] = Field(default=None, max_length=35, description="the target's language: ISO 639-1, optionally with a region (zh, zh-CN, en)")
    type: Optional[str] = Field(default=None, max_length=100, description="the target's media type (text/html, application/pdf, ...)")


class LinksIn(BaseModel):
    """The whole set of a GTIN's links: it replaces the set kept before (an empty list removes them all)."""

    model_config = ConfigDict(extra="forbid")
    links: list[LinkIn] = Field(max_length=MAX_LINKS)


class LinkOut(Exact):
    link_type: str = Field(description="gs1:{term}")
    href: str
    title: str
    lang: Optional[str]
    type: Optional[str]


class ProductLinks(Exact):
    """A GTIN's links as its manufacturer keeps them."""

    gtin: str
    manufacturer: OrganisationRef
    links: list[LinkOut]
    updated_at: Optional[float] = Field(description="unix time of the last PUT; null when none was made")
    block: int


class RecallView(Exact):
    notice_hash: Hex32
    block: int
    by: Optional[str] = Field(description="the recalling organisation's name")
    notice: Optional[RecallNoticeView] = Field(description="the notice's text; null when this service holds none for the hash")


class ProductAnswer(Exact):
    """/01/{gtin}: the product, its manufacturer and the manufacturer's links: public data only."""

    gtin: str
    manufacturer: OrganisationRef
    links: list[LinkOut]
    block: int


class LotAnswer(Exact):
    """/01/{gtin}/10/{lot}: the lot and its recall status: public data only."""

    gtin: str
    lot: str
    manufacturer: OrganisationRef
    recalled: bool
    recall: Omittable[RecallView] = Field(default=None, description="present when the lot is recalled")
    links: list[LinkOut]
    block: int


class ProblemDetail(Exact):
    code: str
    message: str
    details: Omittable[Any] = None


class ProblemBody(Exact):
    """The error body: {"error": {"code", "message", "details"?}}."""

    error: ProblemDetail


class LinkTypeNamespace(Exact):
    namespace: str
    prefix: str


class ResolverDescription(Exact):
    """The resolver description file (GS1-Conformant Resolver standard, section 3)."""

    name: str
    resolverRoot: str
    supportedPrimaryKeys: list[str]
    supportedLinkType: list[LinkTypeNamespace]
    linkTypeDefaultCanBeLinkset: bool
    supportedContextValuesEnumerated: list[str]
    jsonLdContextLocation: str


# --- link types and links ---------------------------------------------------------------------------------------


def link_type_term(value: str) -> Optional[str]:
    """The GS1 Web Vocabulary term of a link type written gs1:pip, pip or https://gs1.org/voc/pip (or under
    ref.gs1.org); None when it is none of these (another namespace, or no term)."""
    for namespace in GS1_VOC_NAMESPACES:
        if value.startswith(namespace):
            value = value[len(namespace) :]
            break
    else:
        value = value.removeprefix(GS1_PREFIX)
    return value if value.isascii() and value.isalnum() and value[:1].isalpha() else None


@dataclass(frozen=True)
class Link:
    """A manufacturer's link, as kept and served."""

    link_type: str  # the term: pip, instructions, ...
    href: str
    title: str
    lang: Optional[str] = None
    media_type: Optional[str] = None

    def view(self) -> dict[str, Any]:
        return {"link_type": GS1_PREFIX + self.link_type, "href": self.href, "title": self.title, "lang": self.lang, "type": self.media_type}

    def target(self) -> dict[str, Any]:
        """The link as an RFC 9264 target object."""
        target: dict[str, Any] = {"href": self.href, "title": self.title}
        if self.media_type:
            target["type"] = self.media_type
        if self.lang:
            target["hreflang"] = [self.lang]
        return target


def validate_links(items: Sequence[LinkIn]) -> list[Link]:
    """The links of a PUT, checked; RowErrors (422 invalid_links, one row per refused link, 1-based) otherwise."""
    links: list[Link] = []
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, Optional[str], str]] = set()
    for row, item in enumerate(items, start=1):
        try:
            link = _checked(item)
        except _Refused as refused:
            rows.append({"row": row, "value": item.model_dump(), "code": refused.code, "message": refused.message})
            continue
        key = (link.link_type, link.lang, link.href)
        if key in seen:
            rows.append({"row": row, "value": item.model_dump(), "code": "duplicate_link", "message": "the same link type, language and target twice"})
            continue
        seen.add(key)
        links.append(link)
    if rows:
        raise RowErrors(f"{len(rows)} of {len(items)} links refused", rows, code="invalid_links")
    return links


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _checked(item: LinkIn) -> Link:
    term = link_type_term(item.link_type.strip())
    if term is None or (term not in MANUFACTURER_LINK_TYPES and term not in RESERVED_LINK_TYPES):
        raise _Refused("invalid_link_type", f"{item.link_type!r} is no GS1 Web Vocabulary link type (gs1:pip, gs1:instructions, gs1:safetyInfo, ...)")
    if term in RESERVED_LINK_TYPES:
        raise _Refused("reserved_link_type", f"gs1:{term} is PartLedger's own answer, not a manufacturer's link")
    href = item.href.strip()
    parts = urlsplit(href) if href.isascii() and href.isprintable() and " " not in href else None
    if parts is None or parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise _Refused("invalid_href", "the target must be an https URL with a host (no credentials, no spaces: percent-encode them)")
    title = item.title.strip()
    if not title or not title.isprintable():
        raise _Refused("invalid_title", "the title must be printable text, 1 to 200 characters")
    lang = None
    if item.lang:
        match = _LANG.match(item.lang.strip())
        if match is None:
            raise _Refused("invalid_lang", "the language must be an ISO 639-1 code, optionally with a region: zh, zh-CN, en")
        lang = match[1].lower() + (f"-{match[2].upper()}" if match[2] else "")
    media_type = None
    if item.type:
        media_type = item.type.strip().lower()
        if not _MEDIA_TYPE.match(media_type):
            raise _Refused("invalid_media_type", "the media type must be type/subtype, with no parameters: text/html, application/pdf")
    return Link(link_type=term, href=href, title=title, lang=lang, media_type=media_type)


def choose_link(links: Sequence[Link], term: str, *, accept_language: Optional[str]) -> Optional[Link]:
    """The link of type `term` to redirect to: the best match for Accept-Language (q values honoured, an exact tag
    before its primary language), else the first of that type in the manufacturer's order; None when there is none."""
    candidates = [link for link in links if link.link_type == term]
    if len(candidates) <= 1 or not accept_language:
        return candidates[0] if candidates else None
    ranges: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language.split(",")[:20]):
        match = _LANGUAGE_RANGE.match(item)
        if match is not None:
            quality = float(match[2]) if match[2] else 1.0
            if quality > 0:
                ranges.append((-quality, position, match[1].lower()))
    for _, _, wanted in sorted(ranges):
        if wanted == "*":
            return candidates[0]
        for exact in (True, False):
            for link in candidates:
                have = (link.lang or "").lower()
                if have and (have == wanted if exact else have.split("-")[0] == wanted.split("-")[0]):
                    return link
    return candidates[0]


# --- the mirror: products and lots ------------------------------------------------------------------------------


def gtin_manufacturer(conn: Connection, gtin: str) -> Optional[int]:
    """The GTIN's manufacturer: the organisation that registered its first part (None when none is registered)."""
    query = select(T_PART.c.manufacturer).where(T_PART.c.gtin == gtin).order_by(T_PART.c.registered_block, T_PART.c.lot).limit(1)
    return conn.execute(query).scalar()


class ManufacturerCache:
    """gtin_manufacturer for the public answers, remembered for a while: a GTIN's first registrant does not change
    (but by a reorganisation, which this many seconds of staleness covers), and finding it reads the GTIN's parts."""

    def __init__(self, seconds: float = MANUFACTURER_CACHE_SECONDS, size: int = 10_000) -> None:
        self._seconds, self._size = seconds, size
        self._known: dict[str, tuple[float, Optional[int]]] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, gtin: str) -> Optional[int]:
        now = time.monotonic()
        entry = self._known.get(gtin)
        if entry is not None and now - entry[0] < self._seconds:
            return entry[1]
        maker = gtin_manufacturer(conn, gtin)
        with self._lock:
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[gtin] = (now, maker)
        return maker


@dataclass(frozen=True)
class RecallFacts:
    notice_hash: bytes
    block: int
    by: Optional[str]
    notice: Optional[Notice] = None  # its text, when the service holds it (ledger_service.recall_notices)


@dataclass(frozen=True)
class ProductFacts:
    """What the mirror says of a GTIN, and, for a lot, of that lot: public data only."""

    gtin: str
    manufacturer_id: int
    manufacturer: Optional[str]
    block: int
    lot: Optional[str] = None
    recalled: bool = False
    recall: Optional[RecallFacts] = None


def product_facts(conn: Connection, gtin: str, *, chain_id: int, manufacturers: Optional[ManufacturerCache] = None) -> Optional[ProductFacts]:
    """The GTIN as the mirror knows it; None when no part is registered with it."""
    maker = manufacturers.get(conn, gtin) if manufacturers is not None else gtin_manufacturer(conn, gtin)
    if maker is None:
        return None
    return ProductFacts(gtin=gtin, manufacturer_id=maker, manufacturer=_org_name(conn, maker), block=indexed_block(conn, chain_id))


def lot_facts(conn: Connection, product: ProductFacts, lot_code: str) -> Optional[ProductFacts]:
    """The lot `lot_code` of the product's manufacturer holding parts of its GTIN, with its recall (None: no such lot)."""
    gtin = product.gtin
    holds_gtin = exists().where(T_PART.c.lot == T_LOT.c.lot, T_PART.c.gtin == gtin)
    row = conn.execute(
        select(T_LOT.c.lot, T_LOT.c.recalled).where(T_LOT.c.lot_code == lot_code, T_LOT.c.manufacturer == product.manufacturer_id, holds_gtin).order_by(T_LOT.c.lot).limit(1)
    ).first()
    if row is None:
        return None
    recall = None
    if row.recalled:
        notice = conn.execute(select(T_RECALL.c.notice_hash, T_RECALL.c.block_number, T_RECALL.c.org_id).where(T_RECALL.c.lot == row.lot)).first()
        if notice is not None:
            recall = RecallFacts(bytes(notice.notice_hash), int(notice.block_number), _org_name(conn, notice.org_id))
    return ProductFacts(
        gtin=gtin, manufacturer_id=product.manufacturer_id, manufacturer=product.manufacturer, block=product.block, lot=lot_code,
        recalled=bool(row.recalled), recall=recall,
    )  # fmt: skip


def _org_name(conn: Connection, org_id: int) -> Optional[str]:
    return conn.execute(select(T_ORG.c.name).where(T_ORG.c.org_id == org_id)).scalar()


def product_answer(facts: ProductFacts, links: Sequence[Link]) -> dict[str, Any]:
    """The public JSON of a product (facts.lot None) or of a lot."""
    answer: dict[str, Any] = {"gtin": facts.gtin}
    if facts.lot is not None:
        answer["lot"] = facts.lot
    answer["manufacturer"] = {"id": facts.manufacturer_id, "name": facts.manufacturer}
    if facts.lot is not None:
        answer["recalled"] = facts.recalled
        if facts.recall is not None:
            recall = facts.recall
            answer["recall"] = {"notice_hash": "0x" + recall.notice_hash.hex(), "block": recall.block, "by": recall.by, "notice": recall.notice}
    answer["links"] = [link.view() for link in links]
    answer["block"] = facts.block
    return answer


# --- the service's product_links ----------------------------------------------------------------------------------


def read_links(conn: Connection, gtin: str) -> list[Link]:
    """A GTIN's links in their manufacturer's order."""
    rows = conn.execute(
        select(T_LINK.c.link_type, T_LINK.c.href, T_LINK.c.title, T_LINK.c.lang, T_LINK.c.media_type).where(T_LINK.c.gtin == gtin).order_by(T_LINK.c.position)
    ).all()
    return [Link(link_type=row.link_type, href=row.href, title=row.title, lang=row.lang, media_type=row.media_type) for row in rows]


def links_view(*, service_engine: Engine, index_engine: Engine, gtin: str, chain_id: int) -> dict[str, Any]:
    """GET /v1/products/{gtin}/links: the GTIN's links with its manufacturer; NotFound unknown_gtin."""
    with index_engine.connect() as index:
        facts = product_facts(index, gtin, chain_id=chain_id)
    if facts is None:
        raise NotFound(f"no part with GTIN {gtin} is registered: its links can be set once its manufacturer registers a lot", code="unknown_gtin")
    with service_engine.connect() as conn:
        links = read_links(conn, gtin)
        updated_at = conn.execute(select(T_LINK.c.updated_at).where(T_LINK.c.gtin == gtin).limit(1)).scalar()
    return {
        "gtin": gtin, "manufacturer": {"id": facts.manufacturer_id, "name": facts.manufacturer}, "links": [link.view() for link in links],
        "updated_at": updated_at, "block": facts.block,
    }  # fmt: skip


def replace_links(
    *, service_engine: Engine, index_engine: Engine, principal: Principal, gtin: str, items: Sequence[LinkIn], chain_id: int, clock: Callable[[], float] = time.time
) -> dict[str, Any]:
    """PUT /v1/products/{gtin}/links: the set replaced, by the GTIN's manufacturer only. Forbidden read_only_role
    (a viewer), NotFound unknown_gtin (no part registered with it), Forbidden not_gtin_manufacturer (another
    organisation), RowErrors invalid_links (a refused link; nothing is changed)."""
    require_may_act(principal)
    with index_engine.connect() as index:
        maker = gtin_manufacturer(index, gtin)
    if maker is None:
        raise NotFound(f"no part with GTIN {gtin} is registered: register a lot of it first", code="unknown_gtin")
    if maker != principal.org_id:
        raise Forbidden(f"only the GTIN's manufacturer (organisation {maker}, which registered its first part) keeps its links", code="not_gtin_manufacturer")
    links = validate_links(items)
    now = clock()
    rows = [
        {"gtin": gtin, "position": position, "link_type": link.link_type, "href": link.href, "title": link.title, "lang": link.lang,
         "media_type": link.media_type, "org_id": principal.org_id, "updated_at": now}
        for position, link in enumerate(links)
    ]  # fmt: skip
    with service_engine.begin() as conn:
        conn.execute(delete(T_LINK).where(T_LINK.c.gtin == gtin))
        if rows:
            conn.execute(insert(T_LINK), rows)
    return links_view(service_engine=service_engine, index_engine=index_engine, gtin=gtin, chain_id=chain_id)


# --- linksets, the description file -------------------------------------------------------------------------------


def links_entry(anchor: str, links: Sequence[Link]) -> dict[str, Any]:
    """The linkset entry of a GTIN's manufacturer links: per link type (GS1 vocabulary URI), its targets."""
    entry: dict[str, Any] = {"anchor": anchor}
    for link in links:
        entry.setdefault(GS1_VOC + link.link_type, []).append(link.target())
    return entry


def own_entry(anchor: str, *, level: str) -> dict[str, Any]:
    """The linkset entry of PartLedger's own answers at a product or lot address: the page (the default link) and,
    for a lot, its recall status as JSON."""
    title = "批次与召回状态 Lot and recall status" if level == "lot" else "商品信息 Product information"
    page = {"href": anchor, "title": title, "type": "text/html", "hreflang": ["zh", "en"]}
    entry: dict[str, Any] = {"anchor": anchor, GS1_VOC + "defaultLink": [page]}
    if level == "lot":
        entry[GS1_VOC + "recallStatus"] = [{"href": anchor, "title": "Recall status", "type": "application/json"}]
    return entry


def resolver_description(base_url: str) -> dict[str, Any]:
    """/.well-known/gs1resolver."""
    return {
        "name": "PartLedger",
        "resolverRoot": base_url.rstrip("/"),
        "supportedPrimaryKeys": ["01"],
        "supportedLinkType": [{"namespace": GS1_VOC, "prefix": GS1_PREFIX}],
        "linkTypeDefaultCanBeLinkset": False,
        "supportedContextValuesEnumerated": ["purchase", "vehicle"],  # ?context= of a scan (ledger_service.clones)
        "jsonLdContextLocation": LINKSET_CONTEXT,
    }
