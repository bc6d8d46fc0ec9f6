"""The GS1 Digital Link resolver and the scan endpoints: where a consumer's phone lands when it reads a label.

Public, rate-limited per client (429 with Retry-After), public data only:
    GET  /01/{gtin}/21/{serial}?sig=...   the verdict: the page for a browser (zh/en), JSON for Accept:
                                          application/json, the RFC 9264 linkset for ?linkType=linkset or
                                          Accept: application/linkset+json; 404 for an unknown part (with its verdict),
                                          400 for a malformed address
    GET  /01/{gtin}                       the product: its manufacturer and the manufacturer's links (404 unknown_gtin)
    GET  /01/{gtin}/10/{lot}              the lot and its recall status (404 unknown_lot)
         ...?linkType=gs1:pip             307 to the manufacturer's link of that type (the best for Accept-Language),
                                          the request's query string passed on; 404 link_type_not_found without one
    GET  /.well-known/gs1resolver         the resolver description file
    GET  /v1/recall-notices/{hash}        a recall notice (zh, en) and its canonical bytes, once a recall names it;
         .../canonical.json               the bytes alone, whose SHA-256 is the hash on chain (404 unknown_recall_notice)
    POST /v1/scan                         the same verdict for an app: {uri, vin?, context?, lat?, lon?}
    POST /v1/scan/image                   a photo (image/* body or multipart field "image"): every QR code in it
                                          decoded (zxing-cpp) and verified
For members (API key):
    GET  /v1/scan-flags                   clone-detection flags on the caller's parts (auditors, regulators: all)
    GET  /v1/scans/{scan_id}              a scan record with its Merkle inclusion proof and anchoring
    GET  /v1/products/{gtin}/links        a GTIN's links; PUT replaces them (its manufacturer only)

The GS1-Conformant Resolver standard (1.2) on every resolver address (a path starting with an AI: /01/..., a
qualifier or another GS1 key) and the description file, answered by ResolverFastPath: GET, HEAD (GET's status and
headers, no body, no scan recorded) and OPTIONS (Allow, and the CORS preflight); any other method 405. Every answer
carries CORS headers (any origin, Link and Location exposed). Key qualifiers in the standard's order, else 400
(qualifier_before_key, qualifier_out_of_order, unknown_ai); another GS1 primary key than a GTIN is 404
(unsupported_key). A product's, lot's or part's linkset lists PartLedger's own answers and the GTIN's manufacturer's
links (ledger_service.resolver_links).

Every verification is recorded as a scan (ledger_service.scans) and judged for clones (ledger_service.clones).
The scan keeper thread runs with the app (this router's lifespan).
"""

from __future__ import annotations

import io
import logging
import re
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Annotated, Any, Literal, Optional, TypeVar, Union

import orjson
from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from starlette._utils import get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from labels.digital_link import GTIN_QUALIFIERS, PRIMARY_KEYS, TPX, DigitalLink, KeyPath, first_ai, parse_key_path, parse_uri
from labels.signature import label_domain
from ledger_service import metrics, product_page, scans, verify_page
from ledger_service.clones import CONTEXTS, TRAVEL_WINDOW_SECONDS, ScanFacts, assess_scan, coarse
from ledger_service.deps import CurrentPrincipal, Services, ServicesDep
from ledger_service.errors import BadRequest, PayloadTooLarge, Unprocessable
from ledger_service.resolver_links import (
    LINKSET_CONTEXT, OWN_LINK_TYPES, Link, LinksIn, LotAnswer, ManufacturerCache, ProblemBody, ProductAnswer, ProductFacts, ProductLinks,
    ResolverDescription, choose_link, link_type_term, links_entry, links_view, lot_facts, own_entry, product_answer, product_facts, read_links,
    replace_links, resolver_description,
)  # fmt: skip
from ledger_service.ratelimit import Rate, RateLimiter, retry_after
from ledger_service.replica import read_mirror
from ledger_service.recall_notices import anchored_notice, notice_answer, notice_of
from ledger_service.scans import ScanBook, ScanRecord, client_fingerprint, fingerprint_key
from ledger_service.schemas import CanonicalRecallNotice, ImageScan, LabelVerdict, Linkset, Page, RecallNoticeAnswer, ScanFlag, ScanRecordProof
from ledger_service.verify import Verification, Verifier
from partledger.errors import ValidationError
from partledger.ids import normalize_gtin

log = logging.getLogger("partledger.service.resolver")
T = TypeVar("T")

MAX_IMAGE_BYTES = 12 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000
DECODE_EDGE = 2400  # photos are scaled down to this longest edge before decoding (a QR code needs far fewer pixels)
IMAGE_COST = 5.0  # rate-limit tokens an image costs: decoding one costs as much as a few page views
MAX_FINGERPRINTS = 10_000  # client fingerprints remembered per process
MAX_BASE_URLS = 256  # base URLs remembered (by scheme, host and root path)


class RateLimited(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__("rate limited")
        self.retry_after = retry_after(wait)


class ScanDesk:
    """Per app: the verifier, the scan book and its keeper thread, the rate limiter, the fingerprint key."""

    def __init__(self, services: Services) -> None:
        settings = services.settings
        self.services = services
        domain = label_domain(chain_id=services.manifest.chain_id, part_ledger=services.manifest.address("PartLedger"))
        self.book = ScanBook(services.service_engine)
        self.limiter = RateLimiter(Rate.parse(settings.public_rate_limit))
        self.key = fingerprint_key(scan_key_file=settings.scan_key_file, vin_key_file=settings.vin_key_file)
        self._fingerprints: dict[tuple[str, str], bytes] = {}
        self.manufacturers = ManufacturerCache()
        # SQLite reads come from the local page cache in microseconds: cheaper on the event loop than a hop to the
        # thread pool (a quarter of a scan's cost). A networked database's round trips go to the pool.
        self.inline = services.index_engine.dialect.name == "sqlite" and services.service_engine.dialect.name == "sqlite"
        self.verifier = Verifier(
            index_engine=services.index_engine, service_engine=services.service_engine, vault=services.vault, domain=domain,
            pin_connection=self.inline,  # verifications then all run on the event loop's thread: one connection is theirs
            replica=services.replica,
        )  # fmt: skip
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self.services.replica is not None:
            self.services.replica.start()  # the verify tier's replica: its monitor runs while this tier does
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.book.run, args=(self._stop,), kwargs={"outbox": self.services.outbox, "index_engine": self.services.index_engine},
                name="scan-keeper", daemon=True,
            )  # fmt: skip
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.verifier.close()
        if self.services.replica is not None:
            self.services.replica.close()

    async def run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`function` (which reads the databases) inline or in the thread pool, as `inline` says."""
        if self.inline:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)

    def limit(self, request: Request, cost: float = 1.0) -> None:
        wait = self.limiter.acquire(_client(request), cost)
        if wait > 0:
            raise RateLimited(wait)

    def check(
        self,
        link: DigitalLink,
        request: Request,
        *,
        source: str,
        vin: Optional[str] = None,
        context: Optional[str] = None,
        lat: Optional[float] = None,
        lon: Optional[float] = None,
        record: bool = True,
    ) -> tuple[Verification, bytes]:
        """The verdict with its clone flags, recorded as a scan (unless `record` is False: a HEAD request); returns it
        and the scan id."""
        found = self.verifier.verify(link, vin=vin)
        now = self.book.clock()
        facts = ScanFacts(at=now, lat=coarse(lat), lon=coarse(lon), context=context, vin_match=found.vin_match)
        history = self.book.history(found.part_id, since=now - TRAVEL_WINDOW_SECONDS) if facts.lat is not None and found.registered else []
        found.flags = assess_scan(facts, registered=found.registered, status=found.status, history=history) if found.manufacturer_id is not None else []
        # Time-ordered (milliseconds, then 80 random bits, as a UUIDv7): new scans append to the primary key's
        # B-tree instead of landing on a random page of it.
        scan_id = int(now * 1000).to_bytes(6, "big") + secrets.token_bytes(10)
        request.state.block = found.block
        if not record:
            return found, scan_id
        client = request.client
        self.book.record(
            ScanRecord(
                scan_id=scan_id, part_id=found.part_id, gtin=link.gtin, serial=link.serial, manufacturer=found.manufacturer_id,
                scanned_at=now, verdict=found.verdict.value, source=source, context=context, lat=facts.lat, lon=facts.lon,
                fingerprint=self.fingerprint(address=client.host if client else "unknown", user_agent=request.headers.get("user-agent", "")),
                client_ip=client.host if client else None, flags=found.flags,
            )
        )  # fmt: skip
        return found, scan_id

    def product(self, key: KeyPath) -> tuple[Optional[ProductFacts], list[Link], str]:
        """The product (or the lot) `key` names, from the mirror, and the GTIN's links; when unknown (None, [], and
        which is: unknown_gtin, or unknown_lot for a lot of a known GTIN)."""
        facts, code = self.mirror(lambda engine: self._product_facts(engine, key))
        if facts is None:
            return None, [], code
        if facts.recall is not None:
            facts = replace(facts, recall=replace(facts.recall, notice=notice_of(self.services.service_engine, facts.recall.notice_hash)))
        return facts, self.links(key.gtin), ""

    def _product_facts(self, engine: Engine, key: KeyPath) -> tuple[Optional[ProductFacts], str]:
        with engine.connect() as conn:
            facts = product_facts(conn, key.gtin, chain_id=self.services.manifest.chain_id, manufacturers=self.manufacturers)
            if facts is None:
                return None, "unknown_gtin"
            if key.lot is not None:
                facts = lot_facts(conn, facts, key.lot)
                if facts is None:
                    return None, "unknown_lot"
        return facts, ""

    def mirror(self, function: Callable[[Engine], T]) -> T:
        """function(engine) on the mirror's read replica when one is configured and usable, else on its primary."""
        return read_mirror(self.services.replica, self.services.index_engine, function)

    def links(self, gtin: str) -> list[Link]:
        with self.services.service_engine.connect() as conn:
            return read_links(conn, gtin)

    def fingerprint(self, *, address: str, user_agent: str) -> bytes:
        """client_fingerprint, remembered: a client scans again and again, and an HMAC costs more than a lookup."""
        key = (address, user_agent[:256])  # all of the user agent that the fingerprint reads
        known = self._fingerprints.get(key)
        if known is None:
            if len(self._fingerprints) >= MAX_FINGERPRINTS:
                self._fingerprints.clear()
            known = self._fingerprints[key] = client_fingerprint(self.key, address=address, user_agent=user_agent)
        return known


_DESK_LOCK = threading.Lock()


def desk_of(app: Any) -> ScanDesk:
    desk = getattr(app.state, "scan_desk", None)
    if desk is None:
        with _DESK_LOCK:
            desk = getattr(app.state, "scan_desk", None)
            if desk is None:
                desk = ScanDesk(app.state.services)
                app.state.scan_desk = desk
    return desk


@asynccontextmanager
async def scan_lifespan(app: FastAPI) -> AsyncIterator[None]:
    desk = desk_of(app)
    desk.start()
    try:
        yield
    finally:
        desk.stop()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- answers -------------------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: Optional[dict[str, str]] = None, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=media_type)


def _language(request: Request) -> str:
    return verify_page.choose_language(query=request.query_params.get("lang"), cookie=request.cookies.get("lang"), accept_language=request.headers.get("accept-language"))


def _html(page: str, *, status: int, nonce: str, lang: str, headers: Optional[dict[str, str]] = None) -> Response:
    csp = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self'; img-src 'self' data:; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    merged = {"Content-Security-Policy": csp, "Content-Language": "zh-CN" if lang == "zh" else "en", "X-Content-Type-Options": "nosniff", **(headers or {})}
    return Response(page, status_code=status, headers=merged, media_type="text/html; charset=utf-8")


def _wants_html(request: Request) -> bool:
    return request.method in ("GET", "HEAD") and verify_page.negotiate(request.headers.get("accept"), request.query_params.get("linkType")) == "html"


def _problem(request: Request, status: int, code: str, message: str, headers: Optional[dict[str, str]] = None, *, pages: bool = True) -> Response:
    """The error as the page a browser asked for (`pages`: the address has pages, as the resolver's have), else as
    the JSON error body."""
    if pages and _wants_html(request):
        nonce, lang = secrets.token_urlsafe(16), _language(request)
        kind = "limited" if status == 429 else "malformed"
        page = verify_page.render_problem_page(lang=lang, nonce=nonce, kind=kind, code=code, retry_after=(headers or {}).get("Retry-After", ""))
        return _html(page, status=status, nonce=nonce, lang=lang, headers=headers)
    return _json({"error": {"code": code, "message": message}}, status, headers)


class PublicRoute(APIRoute):
    """The public endpoints' errors: a malformed address is a 400, a client over its limit a 429 with Retry-After, a
    database that does not answer a 503; never a 500. A resolver address (/01/...) answers them in the form the
    client asked for (page or JSON); the JSON endpoints (/v1/scan, /v1/recall-notices/...) always in JSON, whatever
    Accept says: they have no page, and a 429 in HTML was an undocumented content type there (the API fuzzer, as a
    stranger, with 60 examples an operation)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        pages = self.path.startswith("/01/")  # the resolver's addresses (_RESOLVER_PREFIX, defined below)

        async def handler(request: Request) -> Response:
            return await answer_public(request, original, pages=pages)

        return handler


async def answer_public(request: Request, endpoint: Callable[[Request], Coroutine[Any, Any, Response]], *, pages: bool = True) -> Response:
    """`endpoint`'s answer, or the answer to its error as the public endpoints give it (see PublicRoute); `pages`:
    the address has pages, so an error may be one."""
    try:
        return await endpoint(request)
    except ValidationError as exc:
        return _problem(request, 400, exc.code, str(exc), pages=pages)
    except RateLimited as exc:
        return _problem(request, 429, "rate_limited", "too many requests from this client", {"Retry-After": exc.retry_after}, pages=pages)
    except OperationalError:
        log.exception("database unavailable")
        return _problem(request, 503, "unavailable", "the ledger mirror is unavailable; try again shortly", {"Retry-After": "5"}, pages=pages)


router = APIRouter(lifespan=scan_lifespan)  # everything, for the service (create_app)
public_router = APIRouter(lifespan=scan_lifespan)  # the public endpoints alone, for the public tier (ledger_service.public_app)
public = APIRouter(route_class=PublicRoute, tags=["verification"])
members = APIRouter(prefix="/v1", tags=["verification"])

ANSWER_HEADERS = {"Cache-Control": "no-store", "Vary": "Accept, Accept-Language, Cookie"}
NOTICE_HEADERS = {"Cache-Control": "public, max-age=300"}  # a notice never changes; a recall naming it may be reorged away
HTML = {"schema": {"type": "string"}}  # the verification page, for a browser


def _query_value(request: Request, name: str) -> Optional[str]:
    """request.query_params.get(name), without parsing the query string when `name` cannot be in it (no such
    substring, no percent-escape): a scan's query is its signature alone."""
    raw = request.scope.get("query_string", b"")
    if b"%" not in raw and name.encode() not in raw:
        return None
    return request.query_params.get(name)


def _float(request: Request, name: str, low: float, high: float) -> Optional[float]:
    text = _query_value(request, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValidationError("invalid_location", f"{name} must be a number") from None
    if not low <= value <= high:
        raise ValidationError("invalid_location", f"{name} must be between {low:g} and {high:g}")
    return value


def _context(value: Optional[str]) -> Optional[str]:
    if value is not None and value not in CONTEXTS:
        raise ValidationError("invalid_context", f"context must be one of {', '.join(CONTEXTS)}")
    return value


@public.get(
    "/01/{key_path:path}",
    summary="GS1 Digital Link resolver: /01/{gtin}/21/{serial}?sig=... (the verification page, JSON verdict or linkset), /01/{gtin} (the product), "
            "/01/{gtin}/10/{lot} (the lot's recall status); ?linkType=gs1:{type} redirects to the manufacturer's link",
    description="HEAD and OPTIONS (CORS preflight) are answered on every resolver address too; every answer carries CORS headers.",
    responses={200: {"model": Union[LabelVerdict, ProductAnswer, LotAnswer], "description": "the verdict, the product or the lot",
                     "content": {"application/linkset+json": {"schema": Linkset.model_json_schema()}, "text/html": HTML}},
               307: {"description": "?linkType=: the manufacturer's link of that type (Location), the query string passed on"},
               400: {"description": "not a valid Digital Link: malformed, or key qualifiers out of the standard's order"},
               404: {"model": Union[LabelVerdict, ProblemBody], "description": "not registered — possibly counterfeit; an unknown product, lot or link type",
                     "content": {"text/html": HTML}},
               429: {"description": "rate limited (Retry-After)"}},
)  # fmt: skip
async def resolve(request: Request, key_path: str) -> Response:
    return await resolve_request(request)


async def resolve_request(request: Request) -> Response:
    """The resolver's answer to a GET or HEAD of a Digital Link path (read from the raw path: key_path is decoded)."""
    desk = desk_of(request.app)
    desk.limit(request)
    path = _raw_path(request)
    if first_ai(path) in _OTHER_KEYS:
        return _not_found(request, "unsupported_key", f"this resolver resolves GTINs (AI 01) only, not AI {first_ai(path)}")
    key = parse_key_path(path, request.scope.get("query_string", b"").decode("latin-1"))
    form = verify_page.negotiate(request.headers.get("accept"), key.link_type)
    base_url = _base_url(request)
    level = key.level
    if form == "linkset":
        return _json(await desk.run(_linkset, desk, key, base_url=base_url, query=request.url.query), 200, _linkset_headers(base_url, key), "application/linkset+json")
    if key.link_type is not None and link_type_term(key.link_type) not in OWN_LINK_TYPES[level]:
        return await _redirect(request, desk, key, base_url=base_url)
    if level != "serial":
        return await _product(request, desk, key, form=form, base_url=base_url)
    link = key.digital_link()
    headers = {**ANSWER_HEADERS, "Link": verify_page.link_header(base_url=base_url, link=link) or ""}
    found, scan_id = await desk.run(
        desk.check, link, request, source="page" if form == "html" else "json", context=_context(_query_value(request, "context")),
        lat=_float(request, "lat", -90, 90), lon=_float(request, "lon", -180, 180), record=request.method != "HEAD",
    )  # fmt: skip
    headers["X-PartLedger-Block"] = str(found.block)
    if form == "json":
        return _json(found.public() | {"scan_id": "0x" + scan_id.hex()}, found.http_status, headers)
    nonce, lang = secrets.token_urlsafe(16), _language(request)
    return _html(verify_page.render_page(found, lang=lang, nonce=nonce), status=found.http_status, nonce=nonce, lang=lang, headers=headers)


def _raw_path(request: Request) -> str:
    """The request's path as sent (percent-escapes kept), without the app's root path."""
    scope = request.scope
    raw = (scope.get("raw_path") or request.url.path.encode()).split(b"?", 1)[0].decode("latin-1")
    root = scope.get("root_path", "")
    return raw[len(root) :] if root and raw.startswith(root + "/") else raw


def _linkset(desk: ScanDesk, key: KeyPath, *, base_url: str, query: str) -> dict[str, Any]:
    """The linkset of a part, lot or product: PartLedger's own answers at the address asked, and the GTIN's
    manufacturer's links (their anchor the GTIN: links of each level up to the primary key)."""
    links = desk.links(key.gtin)
    root = base_url.rstrip("/")
    if key.level == "serial":
        linkset = verify_page.linkset(key.digital_link(), base_url=base_url, query=query)
        if links:
            linkset["linkset"].append(links_entry(root + key.product_path, links))
        return linkset
    entry = own_entry(root + key.path, level=key.level)
    if key.path == key.product_path:
        entry |= links_entry(entry["anchor"], links)
        return {"linkset": [entry]}
    return {"linkset": [entry, links_entry(root + key.product_path, links)] if links else [entry]}


async def _redirect(request: Request, desk: ScanDesk, key: KeyPath, *, base_url: str) -> Response:
    """?linkType= a type of the manufacturer's: 307 to its link (the best for Accept-Language), the request's whole
    query string passed on (GS1-Conformant Resolver 2.12); 404 link_type_not_found, listing what there is, without one."""
    asked = key.link_type or ""
    term = link_type_term(asked)
    links = await desk.run(desk.links, key.gtin)
    chosen = choose_link(links, term, accept_language=request.headers.get("accept-language")) if term is not None else None
    link_header = _linkset_link(base_url, key.path)
    if chosen is None:
        shown = asked[:80]
        return _not_found(request, "link_type_not_found", f"there is no link of type {shown!r} at this address", links=links, link_type=shown,
                          details={"link_types": sorted({"gs1:" + link.link_type for link in links})}, headers={"Link": link_header})  # fmt: skip
    query = request.scope.get("query_string", b"").decode("latin-1")
    location = chosen.href + (("&" if "?" in chosen.href else "?") + query if query else "")
    return Response(status_code=307, headers={"Location": location, "Link": link_header, "Cache-Control": "no-store", "Vary": "Accept-Language"})


async def _product(request: Request, desk: ScanDesk, key: KeyPath, *, form: str, base_url: str) -> Response:
    """The product (/01/{gtin}, also with a variant or TPX) or the lot (/01/{gtin}/10/{lot}) as JSON or its page."""
    facts, links, code = await desk.run(desk.product, key)
    if facts is None:
        what = f"no lot {key.lot!r} of GTIN {key.gtin}" if code == "unknown_lot" else f"no part with GTIN {key.gtin}"
        return _not_found(request, code, f"{what} is registered in the consortium ledger", headers={"Link": _linkset_link(base_url, key.path)})
    request.state.block = facts.block
    headers = {**ANSWER_HEADERS, "Link": _linkset_link(base_url, key.path), "X-PartLedger-Block": str(facts.block)}
    if form == "json":
        return _json(product_answer(facts, links), 200, headers)
    nonce, lang = secrets.token_urlsafe(16), _language(request)
    return _html(product_page.render_product_page(facts, links, lang=lang, nonce=nonce), status=200, nonce=nonce, lang=lang, headers=headers)


def _not_found(request: Request, code: str, message: str, *, links: list[Link] | None = None, link_type: str = "", details: Any = None,
               headers: Optional[dict[str, str]] = None) -> Response:  # fmt: skip
    """A 404 of the resolver's, as the page or the error body the client asked for."""
    headers = {**ANSWER_HEADERS, **(headers or {})}
    if _wants_html(request):
        nonce, lang = secrets.token_urlsafe(16), _language(request)
        page = product_page.render_not_found_page(code=code, lang=lang, nonce=nonce, link_type=link_type, links=links or [])
        return _html(page, status=404, nonce=nonce, lang=lang, headers=headers)
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return _json({"error": error}, 404, headers)


def _linkset_link(base_url: str, path: str) -> str:
    """The Link header of every answer at `path`, pointing at its linkset."""
    return f'<{base_url.rstrip("/")}{path}?linkType=linkset>; rel="linkset"; type="application/linkset+json"'


def _linkset_headers(base_url: str, key: KeyPath) -> dict[str, str]:
    """A linkset's headers: its own address, and the standard's JSON-LD context (GS1-Conformant Resolver 2.10)."""
    context = f'<{LINKSET_CONTEXT}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    return {**ANSWER_HEADERS, "Link": _linkset_link(base_url, key.digital_link().path if key.level == "serial" else key.path) + ", " + context}


_BASE_URLS: dict[tuple[Any, ...], str] = {}


def _base_url(request: Request) -> str:
    """str(request.base_url), remembered by what it is made of (building a URL costs more than the lookup)."""
    scope = request.scope
    server = scope.get("server")  # a tuple or a list (ASGI)
    key = (scope.get("scheme"), None if server is None else tuple(server), request.headers.get("host"), scope.get("app_root_path", scope.get("root_path", "")))
    known = _BASE_URLS.get(key)
    if known is None:
        if len(_BASE_URLS) >= MAX_BASE_URLS:
            _BASE_URLS.clear()  # the host header is the client's to choose
        known = _BASE_URLS[key] = str(request.base_url)
    return known


# The resolver's addresses: a path starting with a GTIN (/01/...), with a GTIN's key qualifier (a 400: it comes
# after the GTIN) or with another GS1 primary key (a 404: this resolver serves GTINs only); and the description file.
# Every path under /01/ included: the declared route's pattern (/01/{key_path:path}, ".*") stops at a line break,
# which would leave a path holding an encoded one (%0A) to the router's plain 404 instead of the resolver's 400.
_RESOLVER_PREFIX = "/01/"
_OTHER_KEYS = PRIMARY_KEYS - {"01"}
_RESOLVER_AIS = PRIMARY_KEYS | set(GTIN_QUALIFIERS) | {TPX}
WELL_KNOWN_PATH = "/.well-known/gs1resolver"
ALLOWED_METHODS = "GET, HEAD, OPTIONS"
# CORS (GS1-Conformant Resolver 2.2): any origin may read every answer, and the headers a client needs from it.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": ALLOWED_METHODS,
    "Access-Control-Expose-Headers": "Link, Location, Content-Language, Retry-After, X-PartLedger-Block",
}
_CORS_RAW = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in CORS_HEADERS.items()]
_HEADER_NAMES = re.compile(r"^[A-Za-z0-9-]+(?:\s*,\s*[A-Za-z0-9-]+)*$")
PREFLIGHT_MAX_AGE = "86400"


class ResolverFastPath:
    """Every request to a resolver address (see _RESOLVER_AIS) and to the description file, answered in front of
    FastAPI's router: GET /01/... is every scan of a label, and routing and dependency solving cost about a third of
    a scan's own CPU, which the resolver needs neither. GET and HEAD go to resolve_request (HEAD: GET's status and
    headers, without the body), OPTIONS gets Allow and the CORS preflight, any other method 405; every answer carries
    the CORS headers. Errors are answered as PublicRoute answers them. The declared routes (for OpenAPI) match the
    same /01/ paths (but those with a line break)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = get_route_path(scope)
            if path.startswith(_RESOLVER_PREFIX) or path == WELL_KNOWN_PATH or first_ai(path) in _RESOLVER_AIS:
                scope[metrics.ROUTE_KEY] = WELL_KNOWN_PATH if path == WELL_KNOWN_PATH else metrics.resolver_template(path)  # no router names it
                await answer_resolver(scope, receive, send, description=path == WELL_KNOWN_PATH)
                return
        await self.app(scope, receive, send)


async def answer_resolver(scope: Scope, receive: Receive, send: Send, *, description: bool) -> None:
    request = Request(scope, receive)
    method = scope["method"]
    if method in ("GET", "HEAD"):
        response = _description(request) if description else await answer_public(request, resolve_request)
    elif method == "OPTIONS":
        response = _preflight(request)
    else:
        response = _json({"error": {"code": "method_not_allowed", "message": f"a resolver address answers {ALLOWED_METHODS}"}}, 405, {"Allow": ALLOWED_METHODS})
    response.raw_headers.extend(_CORS_RAW)
    if method != "HEAD":
        await response(scope, receive, send)
        return

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    await response(scope, receive, headers_only)


def _preflight(request: Request) -> Response:
    """OPTIONS: the methods a resolver address answers and, for a CORS preflight, the request headers allowed."""
    asked = request.headers.get("access-control-request-headers", "")
    allowed = asked if asked and len(asked) <= 512 and _HEADER_NAMES.match(asked) else "Accept, Accept-Language"
    headers = {"Allow": ALLOWED_METHODS, "Access-Control-Allow-Headers": allowed, "Access-Control-Max-Age": PREFLIGHT_MAX_AGE, "Cache-Control": "no-store"}
    return Response(status_code=204, headers=headers)


def _description(request: Request) -> Response:
    return _json(resolver_description(_base_url(request)), 200, {"Cache-Control": "public, max-age=3600"})


@public.get(
    WELL_KNOWN_PATH, response_class=Response, tags=["verification"],
    responses={200: {"model": ResolverDescription, "description": "the resolver description file (GS1-Conformant Resolver standard, section 3)"}},
    summary="The GS1 resolver description file: this resolver's root, keys (GTIN) and link-type vocabulary",
)  # fmt: skip
async def resolver_description_file(request: Request) -> Response:
    return _description(request)


NoticeHashPath = Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{64}$", description="the recall's notice_hash: SHA-256 of the notice's canonical bytes")]


async def _anchored_notice(request: Request, notice_hash: str) -> tuple[bytes, list[dict[str, Any]]]:
    desk = desk_of(request.app)
    desk.limit(request)
    service_engine, digest = desk.services.service_engine, bytes.fromhex(notice_hash[2:])
    return await desk.run(desk.mirror, lambda engine: anchored_notice(service_engine=service_engine, index_engine=engine, digest=digest))


@public.get(
    "/v1/recall-notices/{notice_hash}", tags=["recalls"],
    responses={200: {"model": RecallNoticeAnswer, "description": "the notice, its canonical bytes and the recalls naming it"}},
    summary="A recall notice in zh and en, with the canonical bytes whose SHA-256 a recall put on chain (public)",
    description="404 unknown_recall_notice when no recall on chain names the hash, or this service holds no text for it; 429 when rate limited.",
)  # fmt: skip
async def recall_notice(request: Request, notice_hash: NoticeHashPath) -> Response:
    canonical, recalls = await _anchored_notice(request, notice_hash)
    return _json(notice_answer(canonical, recalls), 200, NOTICE_HEADERS)


@public.get(
    "/v1/recall-notices/{notice_hash}/canonical.json", tags=["recalls"], response_class=Response,
    responses={200: {"model": CanonicalRecallNotice, "description": "the canonical bytes alone: their SHA-256 is notice_hash"}},
    summary="A recall notice's canonical bytes, to hash: `sha256sum` gives the notice_hash on chain (public)",
    description="404 unknown_recall_notice as for the notice itself; 429 when rate limited.",
)  # fmt: skip
async def recall_notice_bytes(request: Request, notice_hash: NoticeHashPath) -> Response:
    canonical, _ = await _anchored_notice(request, notice_hash)
    return Response(canonical, media_type="application/json", headers=NOTICE_HEADERS)


class ScanBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    uri: str = Field(min_length=1, max_length=2048, description="the Digital Link read from the label")
    vin: Optional[str] = Field(default=None, min_length=17, max_length=17, description="the scanner's vehicle, to check an installed part against")
    context: Optional[Literal["purchase", "vehicle"]] = Field(default=None, description="purchase: buying or receiving the part as new; vehicle: a fitted part")
    lat: Optional[float] = Field(default=None, ge=-90, le=90, description="coarse latitude (kept to 0.1 degree)")
    lon: Optional[float] = Field(default=None, ge=-180, le=180, description="coarse longitude (kept to 0.1 degree)")


@public.post(
    "/v1/scan",
    responses={200: {"model": LabelVerdict, "description": "the verdict"}, 404: {"model": LabelVerdict, "description": "not registered — possibly counterfeit"}},
    summary="Verify a scanned Digital Link (with an optional VIN, context and coarse location)",
)
async def scan(request: Request, body: ScanBody) -> Response:
    desk = desk_of(request.app)
    desk.limit(request)
    link = parse_uri(body.uri)
    found, scan_id = await desk.run(desk.check, link, request, source="api", vin=body.vin, context=body.context, lat=body.lat, lon=body.lon)
    return _json(found.public() | {"scan_id": "0x" + scan_id.hex()}, found.http_status, {**ANSWER_HEADERS, "X-PartLedger-Block": str(found.block)})


@public.post(
    "/v1/scan/image",
    summary="Decode the QR codes in a photo (image/* body, or multipart field 'image') and verify each",
    responses={200: {"model": ImageScan, "description": "each QR code read, with its verdict or why it is no Digital Link"}},
    openapi_extra={"requestBody": {"content": {"image/*": {"schema": {"type": "string", "format": "binary"}},
                                               "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}}}}},
)  # fmt: skip
async def scan_image(request: Request) -> Response:
    desk = desk_of(request.app)
    desk.limit(request, IMAGE_COST)
    data = await _image_bytes(request)
    texts = await run_in_threadpool(decode_qr_codes, data)
    if not texts:
        raise Unprocessable("no QR code could be read in the image", code="no_qr_code")
    codes = []
    for text in texts:
        try:
            link = parse_uri(text)
        except ValidationError as exc:
            codes.append({"text": text[:2048], "error": {"code": exc.code, "message": str(exc)}})
            continue
        found, scan_id = await desk.run(desk.check, link, request, source="image")
        codes.append({"text": text, "verdict": found.public() | {"scan_id": "0x" + scan_id.hex()}})
    return _json({"codes": codes}, 200, ANSWER_HEADERS)


async def _image_bytes(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"an image may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    kind = request.headers.get("content-type", "").lower()
    if kind.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_IMAGE_BYTES)
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise BadRequest("the multipart form needs a file field named 'image'", code="invalid_image")
        data = await upload.read(MAX_IMAGE_BYTES + 1)
    elif kind.startswith("image/"):
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:
                raise PayloadTooLarge(f"an image may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
            chunks.append(chunk)
        data = b"".join(chunks)
    else:
        raise BadRequest("send the photo as an image/* body or as multipart/form-data with a field 'image'", code="invalid_image")
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"an image may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB")
    if not data:
        raise BadRequest("the image is empty", code="invalid_image")
    return data


def decode_qr_codes(data: bytes) -> list[str]:
    """The texts of the QR codes in an image (JPEG, PNG, WebP, ...), photos scaled down first; BadRequest when the
    bytes are no image or a suspiciously huge one."""
    import zxingcpp

    return decode_barcodes(data, zxingcpp.BarcodeFormat.QRCode)


def decode_barcodes(data: bytes, formats: Any) -> list[str]:
    """The texts of the barcodes of `formats` (zxingcpp.BarcodeFormat(s)) in an image, as decode_qr_codes reads
    them (the console reads VIN barcodes with it too)."""
    import zxingcpp  # Pillow and zxing-cpp load with the first photo, not with every start of the service
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise BadRequest(f"the image has more than {MAX_IMAGE_PIXELS // 1_000_000} megapixels", code="invalid_image")
            image.draft("L", (DECODE_EDGE, DECODE_EDGE))  # JPEG: decode at a reduced scale directly
            gray = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise BadRequest("the upload is not a readable image", code="invalid_image") from None
    if max(gray.size) > DECODE_EDGE:
        gray.thumbnail((DECODE_EDGE, DECODE_EDGE))
    seen: list[str] = []
    for result in zxingcpp.read_barcodes(gray, formats=formats):
        if result.valid and result.text not in seen:
            seen.append(result.text)
    return seen


# --- members -------------------------------------------------------------------------------------------------


@members.get("/scan-flags", responses={200: {"model": Page[ScanFlag], "description": "a page of flags, newest first"}}, summary="Clone-detection flags on your parts' scans (auditors, regulators: all), newest first")
def scan_flags(
    request: Request,
    principal: CurrentPrincipal,
    kind: Annotated[Optional[str], Query(description="scanned_after_scrap, scanned_as_new_after_installation, vin_mismatch, impossible_travel, unregistered_serial")] = None,
    since: Annotated[Optional[float], Query(ge=0, description="unix time")] = None,
    part_id: Annotated[Optional[str], Query(pattern=r"^0x[0-9a-fA-F]{64}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[Optional[str], Query(max_length=200)] = None,
) -> Response:
    desk = desk_of(request.app)
    desk.book.flush()
    with desk.services.service_engine.connect() as conn:
        page = scans.list_flags(conn, principal, kind=kind, since=since, part_id=bytes.fromhex(part_id[2:]) if part_id else None, limit=limit, cursor=cursor)
    return _json(page)


@members.get("/scans/{scan_id}", responses={200: {"model": ScanRecordProof, "description": "the scan record and its proof"}}, summary="A scan record, its Merkle leaf and inclusion proof, and where its batch root is anchored")
def scan_record(request: Request, principal: CurrentPrincipal, scan_id: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{32}$")]) -> Response:
    desk = desk_of(request.app)
    desk.book.flush()
    services = desk.services
    with services.service_engine.connect() as conn, services.index_engine.connect() as index_conn:
        return _json(scans.scan_proof(conn, index_conn, principal, bytes.fromhex(scan_id[2:])))


GtinPath = Annotated[str, Path(max_length=14, description="the GTIN (8, 12, 13 or 14 digits)")]


@members.get(
    "/products/{gtin}/links", tags=["products"], responses={200: {"model": ProductLinks, "description": "the GTIN's links, in their manufacturer's order"}},
    summary="A GTIN's links (product page, instructions, safety information...), as its manufacturer keeps them; 404 unknown_gtin",
)  # fmt: skip
def get_product_links(services: ServicesDep, principal: CurrentPrincipal, gtin: GtinPath) -> Response:
    view = links_view(service_engine=services.service_engine, index_engine=services.index_engine, gtin=normalize_gtin(gtin), chain_id=services.manifest.chain_id)
    return _json(view)


@members.put(
    "/products/{gtin}/links", tags=["products"], responses={200: {"model": ProductLinks, "description": "the set as now kept"}},
    summary="Replace a GTIN's links (its manufacturer only: 403 not_gtin_manufacturer; 404 unknown_gtin before any part is registered)",
)  # fmt: skip
def put_product_links(services: ServicesDep, principal: CurrentPrincipal, gtin: GtinPath, body: LinksIn) -> Response:
    view = replace_links(
        service_engine=services.service_engine, index_engine=services.index_engine, principal=principal, gtin=normalize_gtin(gtin),
        items=body.links, chain_id=services.manifest.chain_id,
    )  # fmt: skip
    return _json(view)


router.include_router(public)
router.include_router(members)
public_router.include_router(public)

