"""The scan page of the member console: labels read by the phone's camera or from photos, each opening its part, or
many in a row building a list for one bulk action (ledger_service.console.custody).

Where it sits: one area of the console (ledger_service.console.web). The camera runs in the page (static/scan.js:
getUserMedia, and the browser's BarcodeDetector where it has one); a browser without one posts frames to
/console/scan/frame, and photos go up as a plain multipart form that works without JavaScript. Both are decoded by
the zxing-cpp code of POST /v1/scan/image (ledger_service.routes.resolver.decode_qr_codes). A list lives in the page
itself, as hidden fields of a CSRF-protected form: every scan posts it back with the new labels, so the server keeps
no state per session and a list survives a reload of the form. Scanning records nothing and changes nothing: only
the custody forms write.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from labels.digital_link import DigitalLink
from ledger_service.console.custody import ERROR_KEYS, MAX_LIST, form_texts, render_list, vin_barcode_formats, vins_in
from ledger_service.console.custody_read import item_of, link_of_text, parse_item, pid_of
from ledger_service.console.i18n import lazy
from ledger_service.console.web import ConsoleUser, checked_form, error_message, form_text, render, router_for
from ledger_service.errors import ApiError, PayloadTooLarge
from ledger_service.routes.resolver import MAX_IMAGE_BYTES, decode_barcodes, decode_qr_codes
from partledger.errors import ValidationError
from partledger.ids import normalize_gtin, validate_serial

router = router_for("scan")

MAX_PHOTOS = 20  # photos per upload
SCAN_KEYS = {
    "no_qr_code": lazy("scan.error.no_qr_code"), "invalid_image": lazy("scan.error.invalid_image"), "not_a_label": lazy("scan.error.not_a_label"),
    "too_large": lazy("scan.error.too_large"), "too_many_photos": lazy("scan.error.too_many_photos"),
}  # fmt: skip


def part_page_url(link: DigitalLink) -> str:
    """The console page of a scanned part, carrying the label's signature so that the page checks it."""
    return f"/console/parts/0x{pid_of(link).hex()}" + (f"?sig={link.signature}" if link.signature else "")


@router.get("/scan", response_class=HTMLResponse)
def scan_page(request: Request, user: ConsoleUser) -> HTMLResponse:
    """The scanner: the camera (with JavaScript), a photo upload of one or many labels, GTIN and serial typed in."""
    return render(request, user, "console/scan/scan.html", {"list": []})


@router.get("/scan/open", response_class=HTMLResponse)
def open_code(request: Request, user: ConsoleUser, code: str = "") -> Response:
    """A label read in the page (its Digital Link): the part's page."""
    try:
        link = link_of_text(code[:2048])
    except ValidationError as exc:
        errors = {"code": error_message(request, exc.code, str(exc))}
        return render(request, user, "console/scan/scan.html", {"list": [], "errors": errors, "values": {"code": code[:200]}}, status=400, code=exc.code)
    return RedirectResponse(part_page_url(link), status_code=303)


async def _read_upload(upload: UploadFile) -> bytes:
    data = await upload.read(MAX_IMAGE_BYTES + 1)
    if len(data) > MAX_IMAGE_BYTES:
        raise PayloadTooLarge(f"an image may be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MiB", code="too_large")
    return data


@router.post("/scan", response_class=HTMLResponse)
async def scan_submit(request: Request, user: ConsoleUser) -> Response:
    """Labels added to the list: photos (`photo`, one or many), texts read in the page (`code`), a GTIN and serial
    typed in; `item` carries the list so far and `drop` takes one off. One label scanned from nothing opens its part
    (unless `many` asks for a list); otherwise the list, with what may be done with it."""
    form = await checked_form(request, user)
    carried = form_texts(form, "item")
    drop = form_text(form, "drop", 2048)
    many = bool(form_text(form, "many")) or bool(carried)
    links: list[DigitalLink] = []
    seen: set[tuple[str, str]] = set()
    notes: list[dict[str, str]] = []
    errors: dict[str, Any] = {}

    def add(link: DigitalLink) -> None:
        if (link.gtin, link.serial) not in seen:
            seen.add((link.gtin, link.serial))
            links.append(link)

    for value in carried:
        if value == drop:
            continue
        try:
            add(parse_item(value))
        except ValidationError:
            continue  # an entry the page did not make: left out
    photos = [value for value in form.getlist("photo") if isinstance(value, UploadFile) and value.filename]
    if len(photos) > MAX_PHOTOS:
        errors["photo"] = (SCAN_KEYS["too_many_photos"], {"count": MAX_PHOTOS})
        photos = photos[:MAX_PHOTOS]
    for photo in photos:
        name = photo.filename or ""
        try:
            texts = await run_in_threadpool(decode_qr_codes, await _read_upload(photo))
        except ApiError as exc:
            notes.append({"name": name, "text": SCAN_KEYS.get(exc.code, SCAN_KEYS["invalid_image"]), "code": exc.code})
            continue
        if not texts:
            notes.append({"name": name, "text": SCAN_KEYS["no_qr_code"], "code": "no_qr_code"})
        for text in texts:
            _add_text(text, name, add, notes)
    for text in form_texts(form, "code"):
        _add_text(text, "", add, notes)
    gtin, serial = form_text(form, "gtin", 20), form_text(form, "serial", 40)
    if gtin or serial:
        try:
            add(DigitalLink(gtin=normalize_gtin(gtin), serial=validate_serial(serial)))
        except ValidationError as exc:
            errors["gtin" if exc.code == "invalid_gtin" else "serial"] = error_message(request, exc.code, str(exc))
    if len(links) > MAX_LIST:
        errors["list"] = ERROR_KEYS["list_too_long"]
        links = links[:MAX_LIST]
    if not links:
        code = "invalid_form" if errors else (notes[0]["code"] if notes else "no_qr_code")
        if not errors:
            errors["photo"] = notes[0]["text"] if notes else SCAN_KEYS["no_qr_code"]
        status = 413 if code == "too_large" else (400 if code in ("invalid_image", "invalid_form") else 422)
        values = {"gtin": gtin, "serial": serial}
        return render(request, user, "console/scan/scan.html", {"list": [], "errors": errors, "notes": notes, "values": values}, status=status, code=code)
    if len(links) == 1 and not many and not notes and not errors:
        return RedirectResponse(part_page_url(links[0]), status_code=303)
    return await render_list(request, user, links, errors=errors, notes=notes, status=413 if "list" in errors else 200, code="list_too_long" if "list" in errors else None)


def _add_text(text: str, name: str, add: Any, notes: list[dict[str, str]]) -> None:
    try:
        add(link_of_text(text))
    except ValidationError:
        notes.append({"name": name, "text": SCAN_KEYS["not_a_label"], "code": "not_a_label", "value": text[:120]})


@router.post("/scan/frame")
async def scan_frame(request: Request, user: ConsoleUser) -> JSONResponse:
    """A camera frame from a browser without a barcode detector (multipart: csrf_token, image, kind label|vin),
    decoded with zxing-cpp: {"codes": [{text, gtin, serial, item, url} | {text, error}]} for labels, {"vins": [...]}
    for a VIN barcode (Code 39, Code 128, Data Matrix)."""
    form = await checked_form(request, user)
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        return JSONResponse({"error": {"code": "invalid_image", "message": "send the frame as the multipart file field 'image'"}}, status_code=400)
    try:
        data = await _read_upload(upload)
        if form_text(form, "kind") == "vin":
            texts = await run_in_threadpool(decode_barcodes, data, vin_barcode_formats())
            return JSONResponse({"vins": vins_in(texts)})
        texts = await run_in_threadpool(decode_qr_codes, data)
    except ApiError as exc:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message}}, status_code=413 if exc.code == "too_large" else 400)
    codes: list[dict[str, Any]] = []
    for text in texts:
        try:
            link = link_of_text(text)
        except ValidationError as exc:
            codes.append({"text": text[:200], "error": exc.code})
            continue
        codes.append({"text": text, "gtin": link.gtin, "serial": link.serial, "item": item_of(link), "url": part_page_url(link)})
    return JSONResponse({"codes": codes})
