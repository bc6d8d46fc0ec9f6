"""GS1 Digital Link URIs of serialised parts: ``https://{resolver}/01/{gtin14}/21/{serial}?sig={signature}``.

What a label's QR code carries, and what the resolver (ledger_service) parses back. The rules, from the GS1 Digital
Link URI syntax standard (1.x):
- the primary key is the GTIN (AI 01), always written as 14 digits; parsing also accepts GTIN-8/12/13 and pads them,
  and refuses a wrong check digit;
- the serial (AI 21) is 1 to 20 characters of GS1 character set 82; in the path every character other than the URI
  unreserved ones (A-Z a-z 0-9 - . _) is percent-encoded, so that ``/``, ``%``, ``?`` or ``&`` inside a serial can
  neither end the path segment nor start the query;
- an optional batch/lot qualifier (AI 10) between them is accepted when parsing (``/01/{gtin}/10/{lot}/21/{serial}``);
  the URIs built here leave it out, it is printed human-readable instead, to keep the code small;
- the query string may carry other attributes; PartLedger's is ``sig``, the manufacturer's compact label signature
  (labels.signature), and the resolver's ``linkType``. A resolver passes unknown attributes over.

What the resolver reads from a request path is wider (parse_key_path): a GTIN alone (/01/{gtin}), with its key
qualifiers in the order the Digital Link URI syntax gives them, consumer product variant (22), batch/lot (10), serial
(21), or a third-party controlled extension (235) alone. A qualifier before the GTIN, out of that order or repeated,
and an AI that is no key qualifier of a GTIN (a data attribute belongs in the query string) are refused with their
own codes; one trailing slash is tolerated (GS1-Conformant Resolver standard, 2.13).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

from partledger.errors import ValidationError
from partledger.ids import GS1_CSET82, normalize_gtin, validate_lot, validate_serial

CODE = "invalid_digital_link"
SIGNATURE_PARAMETER = "sig"
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_URI_LENGTH = 2048
MAX_QUERY_FIELDS = 32


@dataclass(frozen=True)
class DigitalLink:
    """A parsed Digital Link: the part's identifiers and the query attributes PartLedger reads."""

    gtin: str  # 14 digits, check digit verified
    serial: str
    lot: str | None = None
    signature: str | None = None  # the `sig` attribute as written (base64url); decoded by labels.signature
    link_type: str | None = None

    @property
    def path(self) -> str:
        """The canonical path, /01/{gtin14}/21/{serial percent-encoded}."""
        return f"/01/{self.gtin}/21/{encode_segment(self.serial)}"


def encode_segment(value: str) -> str:
    """A GS1 AI value percent-encoded for a path segment: every character but A-Z a-z 0-9 - . _ escaped."""
    return quote(value, safe="")


def decode_segment(raw: str, what: str) -> str:
    """A percent-encoded path segment, strictly: a bare '%' or a non-ASCII byte is refused."""
    if "%" not in raw and raw.isascii():
        return raw  # most identifiers: nothing to decode
    if _PERCENT.search(raw):
        raise ValidationError(CODE, f"the {what} has a '%' that starts no percent-escape")
    try:
        data = raw.encode("ascii")
    except UnicodeEncodeError:
        raise ValidationError(CODE, f"the {what} has characters that a URI must percent-encode") from None
    out = bytearray()
    index = 0
    while index < len(data):
        if data[index] == 0x25:  # '%'
            out.append(int(data[index + 1 : index + 3], 16))
            index += 3
        else:
            out.append(data[index])
            index += 1
    try:
        return out.decode("ascii")
    except UnicodeDecodeError:
        raise ValidationError(CODE, f"the {what} is not ASCII once decoded") from None


def build_uri(resolver: str, *, gtin: str, serial: str, signature: str | None = None) -> str:
    """The Digital Link of a part at `resolver` (scheme, host and an optional path prefix, e.g. https://id.example.com)."""
    parts = urlsplit(resolver)
    if parts.scheme not in ("https", "http") or not parts.netloc or parts.query or parts.fragment:
        raise ValidationError("invalid_resolver", f"the resolver must be an http(s) URL with no query, got {resolver!r}")
    link = DigitalLink(gtin=normalize_gtin(gtin), serial=validate_serial(serial))
    uri = resolver.rstrip("/") + link.path
    if signature is not None:
        uri += f"?{SIGNATURE_PARAMETER}={signature}"
    return uri


def parse_uri(uri: str) -> DigitalLink:
    """A Digital Link from a whole URI (what a QR code holds); ValidationError (code invalid_digital_link) otherwise."""
    if len(uri) > MAX_URI_LENGTH:
        raise ValidationError(CODE, f"a Digital Link is at most {MAX_URI_LENGTH} characters")
    try:
        parts = urlsplit(uri.strip())
    except ValueError:
        raise ValidationError(CODE, "not a URI") from None
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValidationError(CODE, "a Digital Link is an http(s) URI with a host")
    return parse_path(parts.path, parts.query)


def parse_path(path: str, query: str = "") -> DigitalLink:
    """A Digital Link from its raw (still percent-encoded) path and query string.

    The path ends in the key and its qualifiers: .../01/{gtin}[/10/{lot}]/21/{serial}; whatever comes before is the
    resolver's own prefix.
    """
    if len(path) + len(query) > MAX_URI_LENGTH:
        raise ValidationError(CODE, f"a Digital Link is at most {MAX_URI_LENGTH} characters")
    segments = path.split("/")
    if len(segments) >= 5 and segments[-2] == "21":
        serial_raw = segments[-1]
        head = segments[:-2]
    else:
        raise ValidationError(CODE, "the path must end in /01/{gtin}/21/{serial}")
    lot = None
    if len(head) >= 4 and head[-2] == "10":
        lot = validate_lot(decode_segment(head[-1], "lot"))
        head = head[:-2]
    if len(head) < 3 or head[-2] != "01":
        raise ValidationError(CODE, "the path must end in /01/{gtin}/21/{serial}")
    gtin = normalize_gtin(decode_segment(head[-1], "GTIN"))
    serial = validate_serial(decode_segment(serial_raw, "serial"))
    attributes = _query(query)
    return DigitalLink(gtin=gtin, serial=serial, lot=lot, signature=attributes.get(SIGNATURE_PARAMETER), link_type=attributes.get("linkType"))


def _query(query: str) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = _plain_pairs(query) or parse_qsl(query, keep_blank_values=True, strict_parsing=True, encoding="ascii", errors="strict", max_num_fields=MAX_QUERY_FIELDS)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError(CODE, "the query string is malformed") from None
    attributes: dict[str, str] = {}
    for name, value in pairs:
        if name in (SIGNATURE_PARAMETER, "linkType") and name in attributes:
            raise ValidationError(CODE, f"the query string gives {name} twice")
        attributes.setdefault(name, value)
    return attributes


def _plain_pairs(query: str) -> list[tuple[str, str]] | None:
    """parse_qsl(query, strict) for a query with nothing to unescape (no '%', no '+': a label's `sig=...`), without
    its per-field unquoting; None when the query needs parse_qsl itself, or would be refused by it."""
    if "%" in query or "+" in query or query.count("&") >= MAX_QUERY_FIELDS:
        return None
    pairs = []
    for field in query.split("&"):
        name, equals, value = field.partition("=")
        if not equals:
            return None
        pairs.append((name, value))
    return pairs


# --- request paths at the resolver ------------------------------------------------------------------------------

GTIN_KEY = "01"
# The key qualifiers of a GTIN, in the order a path gives them (GS1 Digital Link URI syntax, gtin-path); AI 235
# (third-party controlled, serialised extension of GTIN, TPX) qualifies a GTIN alone.
GTIN_QUALIFIERS = ("22", "10", "21")
TPX = "235"
# The GS1 primary keys a Digital Link path may start with; PartLedger's resolver answers for GTINs alone.
PRIMARY_KEYS = frozenset({"00", "01", "253", "255", "401", "402", "410", "411", "412", "413", "414", "415", "416", "417",
                          "8003", "8004", "8006", "8010", "8013", "8017", "8018"})  # fmt: skip
CPV_MAX_LENGTH = 20  # AI 22: X..20
TPX_MAX_LENGTH = 28  # AI 235: X..28


@dataclass(frozen=True)
class KeyPath:
    """A resolver request path, parsed: the GTIN, its key qualifiers, and the query attributes PartLedger reads."""

    gtin: str  # 14 digits, check digit verified
    cpv: str | None = None
    lot: str | None = None
    serial: str | None = None
    tpx: str | None = None
    signature: str | None = None
    link_type: str | None = None

    @property
    def level(self) -> str:
        """What the path names: "serial" (a part), "lot" (a batch of the GTIN) or "product" (the GTIN; also with a
        variant or TPX alone, which PartLedger keeps nothing for: they resolve as the GTIN, walking up the tree)."""
        if self.serial is not None:
            return "serial"
        return "lot" if self.lot is not None else "product"

    @property
    def path(self) -> str:
        """The canonical path of what was asked: /01/{gtin14} and the qualifiers given, percent-encoded."""
        path = f"/{GTIN_KEY}/{self.gtin}"
        if self.tpx is not None:
            return path + f"/{TPX}/{encode_segment(self.tpx)}"
        for ai, value in zip(GTIN_QUALIFIERS, (self.cpv, self.lot, self.serial)):
            if value is not None:
                path += f"/{ai}/{encode_segment(value)}"
        return path

    @property
    def product_path(self) -> str:
        return f"/{GTIN_KEY}/{self.gtin}"

    def digital_link(self) -> DigitalLink:
        """The part's Digital Link (serial level only)."""
        assert self.serial is not None
        return DigitalLink(gtin=self.gtin, serial=self.serial, lot=self.lot, signature=self.signature, link_type=self.link_type)


def first_ai(path: str) -> str:
    """The first path segment: the AI the path starts with, when it is a Digital Link path."""
    return path[1:].partition("/")[0]


def parse_key_path(path: str, query: str = "") -> KeyPath:
    """A resolver request path (raw, still percent-encoded, relative to the resolver's root) and its query string.

    ValidationError codes: invalid_digital_link (no AI/value pairs, too long, a bad escape), qualifier_before_key (a
    GTIN qualifier first), qualifier_out_of_order (AI 22, 10, 21 not in that order, repeated, or AI 235 with another
    qualifier), unknown_ai (an AI that is no key qualifier of a GTIN), and the values' own: invalid_gtin, invalid_cpv,
    invalid_lot, invalid_serial, invalid_tpx.
    """
    if len(path) + len(query) > MAX_URI_LENGTH:
        raise ValidationError(CODE, f"a Digital Link is at most {MAX_URI_LENGTH} characters")
    segments = path.split("/")[1:]
    if len(segments) % 2 and segments[-1] == "":
        segments.pop()  # one trailing slash
    if not segments or len(segments) % 2:
        raise ValidationError(CODE, "the path must be application identifiers and their values: /01/{gtin}[/22/{cpv}][/10/{lot}][/21/{serial}]")
    ai = segments[0]
    if ai != GTIN_KEY:
        if ai in GTIN_QUALIFIERS or ai == TPX:
            raise ValidationError("qualifier_before_key", f"AI {ai} qualifies a GTIN: it comes after /01/{{gtin}}, not before")
        raise ValidationError(CODE, "the path must start with a GTIN: /01/{gtin}")
    gtin = normalize_gtin(decode_segment(segments[1], "GTIN"))
    values: dict[str, str] = {}
    last = -1
    for index in range(2, len(segments), 2):
        ai, raw = segments[index], segments[index + 1]
        if ai == TPX:
            if len(segments) != 4:
                raise ValidationError("qualifier_out_of_order", "AI 235 (TPX) qualifies a GTIN alone, with no other qualifier")
        elif ai in GTIN_QUALIFIERS:
            order = GTIN_QUALIFIERS.index(ai)
            if order <= last:
                problem = f"AI {ai} appears twice" if order == last else f"AI {ai} must come before AI {GTIN_QUALIFIERS[last]}"
                raise ValidationError("qualifier_out_of_order", f"{problem}: the order is /22/ (variant), /10/ (lot), /21/ (serial)")
            last = order
        else:
            shown = ai[:8] if ai.isascii() and ai.isprintable() else "?"
            raise ValidationError("unknown_ai", f"AI {shown!r} is no key qualifier of a GTIN (22, 10, 21, 235); data attributes go in the query string")
        values[ai] = decode_segment(raw, {"22": "variant", "10": "lot", "21": "serial", TPX: "TPX"}[ai])
    cpv = None if "22" not in values else _cset82(values["22"], what="consumer product variant (AI 22)", code="invalid_cpv", max_length=CPV_MAX_LENGTH)
    lot = None if "10" not in values else validate_lot(values["10"])
    serial = None if "21" not in values else validate_serial(values["21"])
    tpx = None if TPX not in values else _cset82(values[TPX], what="TPX (AI 235)", code="invalid_tpx", max_length=TPX_MAX_LENGTH)
    attributes = _query(query)
    return KeyPath(gtin=gtin, cpv=cpv, lot=lot, serial=serial, tpx=tpx, signature=attributes.get(SIGNATURE_PARAMETER), link_type=attributes.get("linkType"))


def _cset82(value: str, *, what: str, code: str, max_length: int) -> str:
    if not 1 <= len(value) <= max_length or not set(value) <= GS1_CSET82:
        raise ValidationError(code, f"the {what} must be 1 to {max_length} characters of the GS1 character set 82")
    return value
