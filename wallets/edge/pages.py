"""The edge agent's local pages, for the people at a workshop or a warehouse with a tablet or a PC next to a scanner:
the agent's status with its recent requests, a part looked up by what the scanner read, and the receive, install and
ship forms. They call the agent as the local API does (the same checks, the same queue) and work offline as well.

Layering: wallets imports only partledger, so what the pages share with the member console comes in through
`PageKit`, wired by the CLI (`partledger edge run`): the console's message catalogue (its `edge.po` holds the pages'
own texts; `error.<code>` words and statuses are the console's), its stylesheet, and the parser the console uses for
what a label carries (a part id or a GS1 Digital Link URI). The templates are the edge's own (templates/edge/).

Protection, for an app on 127.0.0.1 that any site open in the same browser could post to: every form carries the
agent's CSRF token (random per process, readable only by a page of this origin); a post without it, or whose Origin
is another site, is refused (403 csrf_failed). A Host header that is a domain name (not localhost, not an IP
literal) is refused, which keeps a DNS-rebinding site from reading the token.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eth_utils import keccak
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from partledger.errors import ValidationError
from partledger.ids import checked_vin, vin_hash
from wallets.edge.agent import MAX_PARTS, EdgeAgent, Refusal

PAGES = "/edge/site"
STATIC = "/edge/static"
TEMPLATES = Path(__file__).with_name("templates")
LANGUAGES = ("zh", "en")
LANG_COOKIE = "lang"
CSP = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
RECENT = 20  # requests on the home page
FIELD_LIMIT = 40_000  # characters of one form field (200 Digital Links fit)
_LANGUAGE_RANGE = re.compile(r"\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


@dataclass(frozen=True)
class PageKit:
    """What the pages take from the console, handed in by the CLI."""

    catalogue: Any  # .gettext(lang, key, **params) and .has(lang, key), as ledger_service.console.i18n.Catalogue
    static_dir: Path  # the console's static files: console.css, favicon.svg
    read_part: Callable[[str], str]  # a part id or a Digital Link URI -> "0x…" part id; Refusal(422, "unreadable") else


def choose_language(request: Request) -> str:
    """zh or en: ?lang=, else the `lang` cookie, else the preferred of the two by Accept-Language, else Chinese."""
    for choice in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if choice in LANGUAGES:
            return choice
    best, best_q = "zh", -1.0
    for position, item in enumerate(request.headers.get("accept-language", "").split(",")[:20]):
        match = _LANGUAGE_RANGE.match(item)
        if match and match[1].lower() in LANGUAGES:
            q = float(match[2]) if match[2] else 1.0
            if q > 0 and q - position * 1e-6 > best_q:
                best, best_q = match[1].lower(), q - position * 1e-6
    return best


def is_local_host(host_header: str) -> bool:
    """localhost or an IP literal, with or without a port: never a name a DNS-rebinding site could point here."""
    host = urlsplit(f"//{host_header}").hostname or ""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class EdgePages:
    def __init__(self, agent: EdgeAgent, kit: PageKit) -> None:
        self.agent = agent
        self.kit = kit
        self.csrf_token = secrets.token_urlsafe(32)
        self.env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), trim_blocks=True, lstrip_blocks=True)

    # --- rendering ----------------------------------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        lang = choose_language(request)
        catalogue = self.kit.catalogue

        def _(key: str, **params: Any) -> str:
            return catalogue.gettext(lang, key, **params)

        def error_words(code: str | None, fallback: str = "") -> str:
            if code and catalogue.has(lang, f"error.{code}"):
                return _(f"error.{code}")
            return fallback or _("error.generic")

        def reason_words(reason: dict[str, Any] | None) -> str:
            """A failed request's reason as the cloud decoded it: the contract error's name, else the relay's code."""
            reason = reason or {}
            return error_words(reason.get("error") or reason.get("code"), str(reason.get("message") or ""))

        other = "en" if lang == "zh" else "zh"
        switch = request.url.include_query_params(lang=other)
        page = {
            "_": _, "lang": lang, "html_lang": "zh-CN" if lang == "zh" else "en", "other_lang": other,
            "switch_url": f"{switch.path}?{switch.query}",
            "csrf_token": self.csrf_token, "PAGES": PAGES, "STATIC": STATIC, "error_words": error_words, "reason_words": reason_words,
            "org_name": self.org_name, "when": _when, "values": {}, "errors": {}, "code": None, **context,
        }  # fmt: skip
        if page.get("problem_key"):
            page["problem"] = _(page["problem_key"])
        elif page["code"]:
            page["problem"] = error_words(page["code"], page.get("problem") or "")
        response = HTMLResponse(self.env.get_template(template).render(page), status_code=status)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Content-Language"] = page["html_lang"]
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86_400, samesite="lax", httponly=True)
        return response

    def error_page(self, request: Request, status: int, code: str, message: str = "") -> HTMLResponse:
        return self.render(request, "edge/error.html", status, code=code, problem=message)

    def org_name(self, org_id: int | None) -> str:
        if org_id is None:
            return "—"
        name = self.agent.organisations().get(org_id)
        return f"{name} (#{org_id})" if name else f"#{org_id}"

    # --- request checks -----------------------------------------------------------------------------------------

    def guard(self, request: Request) -> None:
        if not is_local_host(request.headers.get("host", "")):
            raise Refusal(403, "host_not_local", "the edge pages answer only to localhost or an IP address")

    async def checked_form(self, request: Request) -> FormData:
        """The form, once its csrf_token is the agent's and its Origin (when the browser sends one) is this host."""
        self.guard(request)
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise Refusal(403, "csrf_failed", "the form was sent from another site")
        form = await request.form(max_files=0, max_fields=20)
        given = form.get("csrf_token")
        if not isinstance(given, str) or not secrets.compare_digest(given.encode(), self.csrf_token.encode()):
            raise Refusal(403, "csrf_failed", "the form's security token is missing or wrong: reload the page and send it again")
        return form

    def read_parts(self, text: str, field: str) -> list[str]:
        """The parts of a form field, one a line (a scanner ends each read with Enter)."""
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise Refusal(422, "empty_selection", "name at least one part", field=field)
        if len(lines) > MAX_PARTS:
            raise Refusal(422, "invalid_part_count", f"between 1 and {MAX_PARTS} parts per request", field=field)
        parts = []
        for number, line in enumerate(lines, start=1):
            try:
                parts.append(self.kit.read_part(line))
            except Refusal as refusal:
                raise Refusal(refusal.status, refusal.code, f"line {number}: {refusal.message}", field=field) from None
        return parts

    # --- the routes ---------------------------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        agent = self.agent

        @router.get("/")
        @router.get("/edge")
        @router.get("/edge/")
        async def root() -> Response:
            return RedirectResponse(PAGES, status_code=303)

        @router.get(PAGES)
        async def home(request: Request) -> Response:
            self.guard(request)
            summary = await run_in_threadpool(agent.store.summary)
            recent = await run_in_threadpool(agent.store.recent_requests, RECENT)
            return self.render(request, "edge/home.html", summary=summary, recent=recent, link_up=summary["link"] == "up")

        @router.get(PAGES + "/scan")
        async def scan(request: Request, q: str = "") -> Response:
            self.guard(request)
            text = q.strip()[:FIELD_LIMIT]
            if not text:
                return self.render(request, "edge/scan.html", values={"q": ""})
            try:
                part = await run_in_threadpool(agent.part, self.kit.read_part(text))
            except Refusal as refusal:
                words = "edge.scan.unknown_part" if refusal.code == "unknown_part" else None  # the view's sense, not the registry's
                return self.render(request, "edge/scan.html", refusal.status, values={"q": text}, code=refusal.code, problem=refusal.message, problem_key=words)
            return self.render(request, "edge/scan.html", values={"q": text}, part=part, actions=actions_on(part, agent.store.get("org_id")))

        @router.get(PAGES + "/requests/{request_id}")
        async def request_page(request: Request, request_id: str) -> Response:
            self.guard(request)
            try:
                shown = await run_in_threadpool(agent.request, request_id[:64])
            except Refusal as refusal:
                return self.error_page(request, refusal.status, refusal.code, refusal.message)
            return self.render(request, "edge/request.html", shown=shown, settled=shown["status"] in ("confirmed", "failed"))

        for kind in ("receive", "install", "ship"):
            self._form_routes(router, kind)
        return router

    def _form_routes(self, router: APIRouter, kind: str) -> None:
        template = f"edge/{kind}.html"

        @router.get(f"{PAGES}/{kind}", name=f"{kind}_form")
        async def show(request: Request, part: str = "") -> Response:
            self.guard(request)
            values = {"parts": part[:FIELD_LIMIT], "part": part[:FIELD_LIMIT]}
            return self.render(request, template, values=values, organisations=self.destinations())

        @router.post(f"{PAGES}/{kind}", name=f"{kind}_post")
        async def post(request: Request) -> Response:
            try:
                form = await self.checked_form(request)
            except Refusal as refusal:
                return self.error_page(request, refusal.status, refusal.code, refusal.message)
            values = {name: str(form.get(name) or "")[:FIELD_LIMIT] for name in ("parts", "part", "vin", "to")}
            try:
                shown = await run_in_threadpool(self.submit, kind, values)
            except Refusal as refusal:
                errors = {refusal.field: f"error.{refusal.code}"} if refusal.field else {}
                return self.render(request, template, refusal.status, values=values, organisations=self.destinations(), code=refusal.code, problem=refusal.message, errors=errors)
            return RedirectResponse(f"{PAGES}/requests/{shown['id']}", status_code=303)

    def submit(self, kind: str, values: dict[str, str]) -> dict[str, Any]:
        """A form's request, as the local API would take it: parts read, a VIN hashed with a fresh salt kept here."""
        if kind == "receive":
            return self.agent.submit("receive", self.read_parts(values["parts"], "parts"), {"doc_hash": "0x" + "00" * 32})
        if kind == "install":
            part = self.read_parts(values["part"], "part")
            if len(part) != 1:
                raise Refusal(422, "invalid_part_count", "one part per installation", field="part")
            try:
                vin = checked_vin(values["vin"])
            except ValidationError as exc:
                raise Refusal(422, exc.code, str(exc), field="vin") from None
            salt = secrets.token_bytes(32)
            hashed = "0x" + vin_hash(vin, salt).hex()
            self.agent.store.keep_vin(hashed, seal_vin(self.agent.key, hashed, vin, salt))  # before the request: no hash queued without its salt kept
            return self.agent.submit("install", part, {"doc_hash": "0x" + "00" * 32, "vin_hashes": [hashed]})
        to = values["to"].strip()
        if not to.isdigit() or int(to) not in self.agent.organisations():
            raise Refusal(422, "unknown_organisation", f"choose an organisation this site knows, not {to[:20]!r}", field="to")
        return self.agent.submit("ship", self.read_parts(values["parts"], "parts"), {"doc_hash": "0x" + "00" * 32, "to": int(to)})

    def destinations(self) -> list[tuple[str, str]]:
        """(id, name) of the organisations a part may be shipped to: every member known but the site's own."""
        own = self.agent.store.get("org_id")
        return [(str(org_id), f"{name} (#{org_id})") for org_id, name in sorted(self.agent.organisations().items()) if org_id != own]


def actions_on(part: dict[str, Any], org_id: int | None) -> list[str]:
    """What this site may do with a part as its view has it (the agent checks again on submit)."""
    if part["status"] == "in_transit" and part["recipient"] == org_id:
        return ["receive"]
    if part["status"] == "in_stock" and part["custodian"] == org_id:
        return ["ship"] if part["recalled"] else ["install", "ship"]
    return []


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "—"


def _vin_key(site_key: Any) -> AESGCM:
    """AES-GCM under a key derived from the site key: whoever copies the agent's SQLite file without the keystore and
    its passphrase reads no VIN (the cloud keeps its clear VINs sealed the same way, ledger_service.vault)."""
    return AESGCM(keccak(b"partledger/edge-vins/v1" + bytes(site_key.key)))


def seal_vin(site_key: Any, vin_hash_hex: str, vin: str, salt: bytes) -> bytes:
    """nonce(12) || AES-GCM(salt(32) || VIN), bound to the VIN hash it proves."""
    nonce = secrets.token_bytes(12)
    return nonce + _vin_key(site_key).encrypt(nonce, salt + vin.encode("ascii"), vin_hash_hex.encode("ascii"))


def open_vin(site_key: Any, vin_hash_hex: str, sealed: bytes) -> tuple[str, bytes]:
    """(VIN, salt) of a sealed record; raises cryptography's InvalidTag under another key or hash."""
    clear = _vin_key(site_key).decrypt(sealed[:12], sealed[12:], vin_hash_hex.encode("ascii"))
    return clear[32:].decode("ascii"), clear[:32]
