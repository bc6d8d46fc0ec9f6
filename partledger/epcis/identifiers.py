"""GS1 keys as EPCIS events name them: EPC URIs (urn:epc:…) and GS1 Digital Link URIs, parsed to one form.

An EPCIS 2.0 event may name the same part as `urn:epc:id:sgtin:4012345.011111.987` (GS1 Tag Data Standard 2.0,
EPC Pure Identity URI) or as `https://id.gs1.org/01/04012345111118/21/987` (GS1 Digital Link 1.x, on any host).
Capture, the mapping to the ledger and the query side compare EPCs by `epc_key`: the Digital Link form on
https://id.gs1.org, GTIN written as 14 digits, the serial, lot or extension percent-encoded the way the project's
labels write a path segment (every character but A-Z a-z 0-9 - . _). The URN and DL forms of one EPC give one key.

Kinds: sgtin (a serialised item), lgtin (a lot, urn:epc:class:lgtin), sgtin_pattern (every item of a GTIN:
urn:epc:idpat:sgtin:CP.IR.* or DL /01/{gtin}), sscc (a logistic unit), sgln (a location, GLN + extension), pgln
(a party), other (any other URI, kept as written). Malformed GS1 keys (bad check digit, characters outside GS1's set,
wrong length) raise ValidationError("invalid_epc").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import quote

from partledger.errors import ValidationError
from partledger.ids import GS1_CSET82
from partledger.ids import gtin_check_digit as _check_digit

CODE: Final = "invalid_epc"
ID_GS1: Final = "https://id.gs1.org"
KINDS: Final = frozenset({"sgtin", "sscc", "lgtin", "sgln", "pgln", "sgtin_pattern", "other"})

# TDS 2.0 §6.3.1 / Table I.3.1-1: an EPC URI's serial, lot or extension is GS1 AI encodable characters, where
# " % & / < > ? are written %22 %25 %26 %2F %3C %3E %3F. Any %XX is accepted here; the decoded text is then checked.
_ESCAPED: Final = r"(?:%[0-9A-Fa-f]{2}|[!'()*+,\-.0-9:;=A-Za-z_])+"
_SGTIN: Final = re.compile(rf"urn:epc:id:sgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_ESCAPED})", re.ASCII)
_LGTIN: Final = re.compile(rf"urn:epc:class:lgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_ESCAPED})", re.ASCII)
_SGTIN_PATTERN: Final = re.compile(r"urn:epc:idpat:sgtin:(\d{6,12})\.(\d{1,7})\.\*", re.ASCII)
_SSCC: Final = re.compile(r"urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})", re.ASCII)
_SGLN: Final = re.compile(rf"urn:epc:id:sgln:(\d{{6,12}})\.(\d{{0,6}})\.({_ESCAPED})", re.ASCII)
_PGLN: Final = re.compile(r"urn:epc:id:pgln:(\d{6,12})\.(\d{0,6})", re.ASCII)
_URN_SCHEMES: Final = {
    "urn:epc:id:sgtin:": "sgtin",
    "urn:epc:class:lgtin:": "lgtin",
    "urn:epc:idpat:sgtin:": "sgtin_pattern",
    "urn:epc:id:sscc:": "sscc",
    "urn:epc:id:sgln:": "sgln",
    "urn:epc:id:pgln:": "pgln",
}
# Characters a URN must escape (TDS 2.0 Table I.3.1-1); the rest of GS1 set 82 is written as is.
_URN_ESCAPES: Final = {'"': "%22", "%": "%25", "&": "%26", "/": "%2F", "<": "%3C", ">": "%3E", "?": "%3F"}
_PERCENT: Final = re.compile(r"%([0-9A-Fa-f]{2})", re.ASCII)
# The common shape, read without the general walk: a serialised item on any host, without a path prefix.
_DL_SGTIN: Final = re.compile(r"https?://[^/?#]*/01/(\d{14})/21/([^/?#]+)/?(?:[?#].*)?", re.ASCII)
_BARE_PERCENT: Final = re.compile(r"%(?![0-9A-Fa-f]{2})", re.ASCII)

# GS1 Digital Link 1.1 §4: primary keys and their qualifiers in the only order allowed; short names from DL 1.0.
_DL_QUALIFIERS: Final = {"01": ("22", "10", "21"), "00": (), "414": ("254",), "417": ()}
_DL_SHORT_NAMES: Final = {"gtin": "01", "sscc": "00", "gln": "414", "party": "417", "cpv": "22", "lot": "10", "ser": "21"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Epc:
    """One parsed EPC. `key` is the canonical comparison key (see the module docstring)."""

    kind: str
    key: str
    gtin: str | None = None  # 14 digits, check digit verified
    serial: str | None = None  # decoded (raw GS1 characters)
    lot: str | None = None
    sscc: str | None = None  # 18 digits
    gln: str | None = None  # 13 digits
    extension: str | None = None  # GLN extension (AI 254), None when absent or "0"


def parse_epc(uri: str) -> Epc:
    """Parse an EPC URI, an EPC class/pattern URI or a Digital Link URI; any other URI gives kind "other"."""
    if not isinstance(uri, str) or not uri:
        raise ValidationError(CODE, "an EPC must be a non-empty string")
    return _parse(uri)


@lru_cache(maxsize=8192)
def _parse(uri: str) -> Epc:
    """parse_epc's work, remembered (an Epc is immutable): a capture names each event's readPoint and bizLocation,
    the same few locations thousands of times, and reads an event's EPCs more than once."""
    if uri.startswith("urn:epc:"):
        return _parse_urn(uri)
    if uri.startswith(("https://", "http://")):
        parsed = _parse_digital_link(uri)
        if parsed is not None:
            return parsed
    return Epc(kind="other", key=uri)


def epc_key(uri: str) -> str:
    """The canonical key of an EPC: equal for the URN and the Digital Link forms of one GS1 key."""
    return parse_epc(uri).key


def sgtin_uri(gtin14: str, serial: str) -> str:
    """The Digital Link URI of a serialised item on id.gs1.org: https://id.gs1.org/01/{gtin14}/21/{serial}."""
    return f"{ID_GS1}/01/{_checked_gtin(gtin14)}/21/{_segment(_checked_text(serial, 'serial'))}"


def lgtin_uri(gtin14: str, lot: str) -> str:
    """The Digital Link URI of a lot (an EPCIS epcClass): https://id.gs1.org/01/{gtin14}/10/{lot}."""
    return f"{ID_GS1}/01/{_checked_gtin(gtin14)}/10/{_segment(_checked_text(lot, 'lot'))}"


def sscc_uri(sscc: str) -> str:
    """The Digital Link URI of a logistic unit (AI 00): https://id.gs1.org/00/{sscc, 18 digits}."""
    if len(sscc) != 18 or not sscc.isdigit() or _check_digit(sscc[:-1]) != int(sscc[-1]):
        raise ValidationError(CODE, f"SSCC {sscc!r} is not 18 digits with its check digit")
    return f"{ID_GS1}/00/{sscc}"


def party_uri(gln: str) -> str:
    """The Digital Link URI of a party (AI 417): https://id.gs1.org/417/{gln}."""
    return f"{ID_GS1}/417/{_checked_gln(gln)}"


def location_uri(gln: str, extension: str | None = "") -> str:
    """The Digital Link URI of a location (AI 414, with the AI 254 extension when given and not "0")."""
    base = f"{ID_GS1}/414/{_checked_gln(gln)}"
    if extension and extension != "0":
        return f"{base}/254/{_segment(_checked_text(extension, 'GLN extension'))}"
    return base


def sgtin_urn(gtin14: str, serial: str, *, company_prefix_length: int) -> str:
    """The EPC Pure Identity URI of a serialised item: urn:epc:id:sgtin:{company prefix}.{indicator+item ref}.{serial}."""
    prefix, item = _split_gtin(_checked_gtin(gtin14), company_prefix_length)
    return f"urn:epc:id:sgtin:{prefix}.{item}.{_urn_escape(_checked_text(serial, 'serial'))}"


def to_urn(uri: str, *, company_prefix_length: int) -> str:
    """The EPC URI form of `uri` (either form in). The company prefix length is not in a GTIN or GLN, so the
    caller says it. A non-GS1 URI comes back unchanged."""
    epc = parse_epc(uri)
    length = company_prefix_length
    if epc.kind == "sgtin":
        return sgtin_urn(epc.gtin, epc.serial, company_prefix_length=length)  # type: ignore[arg-type]
    if epc.kind in ("lgtin", "sgtin_pattern"):
        prefix, item = _split_gtin(epc.gtin, length)  # type: ignore[arg-type]
        if epc.kind == "lgtin":
            return f"urn:epc:class:lgtin:{prefix}.{item}.{_urn_escape(epc.lot)}"  # type: ignore[arg-type]
        return f"urn:epc:idpat:sgtin:{prefix}.{item}.*"
    if epc.kind == "sscc":
        _check_prefix_length(length)
        sscc = epc.sscc or ""
        return f"urn:epc:id:sscc:{sscc[1 : 1 + length]}.{sscc[0]}{sscc[1 + length : 17]}"
    if epc.kind in ("sgln", "pgln"):
        _check_prefix_length(length)
        gln = epc.gln or ""
        if epc.kind == "pgln":
            return f"urn:epc:id:pgln:{gln[:length]}.{gln[length:12]}"
        return f"urn:epc:id:sgln:{gln[:length]}.{gln[length:12]}.{_urn_escape(epc.extension or '0')}"
    return uri


# --- EPC URIs -------------------------------------------------------------------------------------------------


def _parse_urn(uri: str) -> Epc:
    kind = _URN_SCHEMES.get(uri[: uri.find(":", uri.find(":", 8) + 1) + 1])
    if kind is None:
        return Epc(kind="other", key=uri)  # another EPC scheme (grai, giai, …): compared as written
    if kind == "sgtin" or kind == "lgtin":
        match = (_SGTIN if kind == "sgtin" else _LGTIN).fullmatch(uri)
        if match is None:
            raise ValidationError(CODE, f"{uri!r} is not a valid {kind.upper()} EPC URI")
        gtin = _urn_gtin(match.group(1), match.group(2), uri)
        text = _checked_text(_urn_unescape(match.group(3), uri), "serial" if kind == "sgtin" else "lot")
        if kind == "sgtin":
            return Epc(kind="sgtin", key=f"{ID_GS1}/01/{gtin}/21/{_segment(text)}", gtin=gtin, serial=text)
        return Epc(kind="lgtin", key=f"{ID_GS1}/01/{gtin}/10/{_segment(text)}", gtin=gtin, lot=text)
    if kind == "sgtin_pattern":
        match = _SGTIN_PATTERN.fullmatch(uri)
        if match is None:
            # urn:epc:idpat:sgtin:CP.*.* names no one GTIN; compare it as written
            if uri.endswith(".*.*") or uri.endswith(":*.*.*"):
                return Epc(kind="other", key=uri)
            raise ValidationError(CODE, f"{uri!r} is not a valid SGTIN pattern URI")
        gtin = _urn_gtin(match.group(1), match.group(2), uri)
        return Epc(kind="sgtin_pattern", key=f"{ID_GS1}/01/{gtin}", gtin=gtin)
    if kind == "sscc":
        match = _SSCC.fullmatch(uri)
        if match is None or len(match.group(1)) + len(match.group(2)) != 17:
            raise ValidationError(CODE, f"{uri!r} is not a valid SSCC EPC URI")
        prefix, serial_ref = match.groups()
        body = serial_ref[0] + prefix + serial_ref[1:]
        sscc = body + str(gtin_check_digit(body))
        return Epc(kind="sscc", key=f"{ID_GS1}/00/{sscc}", sscc=sscc)
    if kind == "pgln":
        match = _PGLN.fullmatch(uri)
        if match is None or len(match.group(1)) + len(match.group(2)) != 12:
            raise ValidationError(CODE, f"{uri!r} is not a valid PGLN EPC URI")
        body = match.group(1) + match.group(2)
        gln = body + str(gtin_check_digit(body))
        return Epc(kind="pgln", key=f"{ID_GS1}/417/{gln}", gln=gln)
    match = _SGLN.fullmatch(uri)
    if match is None or len(match.group(1)) + len(match.group(2)) != 12:
        raise ValidationError(CODE, f"{uri!r} is not a valid SGLN EPC URI")
    body = match.group(1) + match.group(2)
    gln = body + str(gtin_check_digit(body))
    extension = _checked_text(_urn_unescape(match.group(3), uri), "GLN extension")
    return _location(gln, None if extension == "0" else extension)


def _urn_gtin(prefix: str, item: str, uri: str) -> str:
    if len(prefix) + len(item) != 13:
        raise ValidationError(CODE, f"{uri!r}: company prefix and item reference must be 13 digits together")
    body = item[0] + prefix + item[1:]
    return body + str(gtin_check_digit(body))


def _urn_unescape(text: str, uri: str) -> str:
    if "%" not in text:
        return text
    decoded = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text)
    if not decoded.isascii():
        raise ValidationError(CODE, f"{uri!r} escapes a character outside ASCII")
    return decoded


def _urn_escape(text: str) -> str:
    return "".join(_URN_ESCAPES.get(char, char) for char in text)


# --- Digital Link URIs ----------------------------------------------------------------------------------------


def _parse_digital_link(uri: str) -> Epc | None:
    """A Digital Link's GS1 key, or None when the URI is not a Digital Link (no primary key AI followed by digits)."""
    simple = _DL_SGTIN.fullmatch(uri)
    if simple is not None:
        gtin = _dl_gtin(simple.group(1), uri)
        serial = _checked_text(_dl_decode(simple.group(2), uri), "serial")
        return Epc(kind="sgtin", key=f"{ID_GS1}/01/{gtin}/21/{_segment(serial)}", gtin=gtin, serial=serial)
    rest = uri.split("://", 1)[1]
    rest = rest.split("#", 1)[0].split("?", 1)[0]
    segments = rest.split("/")[1:]  # drop the host
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    start = None
    for index, segment in enumerate(segments[:-1]):
        ai = _DL_SHORT_NAMES.get(segment, segment)
        value = segments[index + 1]
        if ai in _DL_QUALIFIERS and value.isascii() and value.isdigit():
            start = index
            break
    if start is None:
        return None
    primary = _DL_SHORT_NAMES.get(segments[start], segments[start])
    pairs = segments[start:]
    if len(pairs) % 2:
        raise ValidationError(CODE, f"{uri!r}: a Digital Link path is pairs of AI and value")
    values: dict[str, str] = {}
    allowed = _DL_QUALIFIERS[primary]
    position = -1
    for index in range(0, len(pairs), 2):
        ai = _DL_SHORT_NAMES.get(pairs[index], pairs[index])
        if index == 0:
            values[ai] = pairs[1]
            continue
        if ai not in allowed:
            raise ValidationError(CODE, f"{uri!r}: AI {ai} is not a qualifier of AI {primary}")
        order = allowed.index(ai)
        if order <= position:
            raise ValidationError(CODE, f"{uri!r}: key qualifiers out of the order {'/'.join(allowed)}")
        position = order
        values[ai] = _dl_decode(pairs[index + 1], uri)
    key = values[primary]
    if primary == "01":
        gtin = _dl_gtin(key, uri)
        serial = _checked_text(values["21"], "serial") if "21" in values else None
        lot = _checked_text(values["10"], "lot") if "10" in values else None
        if serial is not None:  # the finest level names the item; a lot beside it is kept but not in the key
            return Epc(kind="sgtin", key=f"{ID_GS1}/01/{gtin}/21/{_segment(serial)}", gtin=gtin, serial=serial, lot=lot)
        if lot is not None:
            return Epc(kind="lgtin", key=f"{ID_GS1}/01/{gtin}/10/{_segment(lot)}", gtin=gtin, lot=lot)
        return Epc(kind="sgtin_pattern", key=f"{ID_GS1}/01/{gtin}", gtin=gtin)
    if primary == "00":
        if len(key) != 18 or gtin_check_digit(key[:-1]) != int(key[-1]):
            raise ValidationError(CODE, f"{uri!r}: an SSCC is 18 digits with a valid check digit")
        return Epc(kind="sscc", key=f"{ID_GS1}/00/{key}", sscc=key)
    gln = _dl_gln(key, uri)
    if primary == "417":
        return Epc(kind="pgln", key=f"{ID_GS1}/417/{gln}", gln=gln)
    extension = _checked_text(values["254"], "GLN extension") if "254" in values else None
    return _location(gln, None if extension == "0" else extension)


def _dl_decode(raw: str, uri: str) -> str:
    if "%" not in raw:
        return raw
    if _BARE_PERCENT.search(raw):
        raise ValidationError(CODE, f"{uri!r} has a '%' that starts no percent-escape")
    decoded = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), raw)
    if not decoded.isascii():
        raise ValidationError(CODE, f"{uri!r} escapes a character outside ASCII")
    return decoded


def _dl_gtin(value: str, uri: str) -> str:
    if len(value) not in (8, 12, 13, 14):
        raise ValidationError(CODE, f"{uri!r}: a GTIN is 8, 12, 13 or 14 digits")
    gtin = value.zfill(14)
    if gtin_check_digit(gtin[:-1]) != int(gtin[-1]):
        raise ValidationError(CODE, f"{uri!r}: GTIN {gtin} has a wrong check digit")
    return gtin


def _dl_gln(value: str, uri: str) -> str:
    if len(value) != 13 or gtin_check_digit(value[:-1]) != int(value[-1]):
        raise ValidationError(CODE, f"{uri!r}: a GLN is 13 digits with a valid check digit")
    return value


def _location(gln: str, extension: str | None) -> Epc:
    key = f"{ID_GS1}/414/{gln}" if extension is None else f"{ID_GS1}/414/{gln}/254/{_segment(extension)}"
    return Epc(kind="sgln", key=key, gln=gln, extension=extension)


@lru_cache(maxsize=65536)
def gtin_check_digit(body: str) -> int:
    """The GS1 check digit (partledger.ids), remembered: the same GTINs and GLNs come back in every event."""
    return _check_digit(body)


# --- checks shared by both forms --------------------------------------------------------------------------------


def _segment(text: str) -> str:
    return text if text.isalnum() and text.isascii() else quote(text, safe="")


def _checked_text(text: str, what: str) -> str:
    if not 1 <= len(text) <= 20:
        raise ValidationError(CODE, f"a {what} is 1 to 20 characters, got {len(text)}")
    if not (text.isalnum() and text.isascii()) and not GS1_CSET82.issuperset(text):
        bad = sorted({char for char in text if char not in GS1_CSET82})
        if bad:
            raise ValidationError(CODE, f"{what} {text!r} has characters outside the GS1 set: {''.join(bad)!r}")
    return text


def _checked_gtin(gtin: str) -> str:
    text = str(gtin)
    if not (text.isascii() and text.isdigit()) or len(text) not in (8, 12, 13, 14):
        raise ValidationError(CODE, f"a GTIN is 8, 12, 13 or 14 digits, got {text!r}")
    text = text.zfill(14)
    if gtin_check_digit(text[:-1]) != int(text[-1]):
        raise ValidationError(CODE, f"GTIN {text} has a wrong check digit")
    return text


def _checked_gln(gln: str) -> str:
    text = str(gln)
    if not (text.isascii() and text.isdigit()) or len(text) != 13 or gtin_check_digit(text[:-1]) != int(text[-1]):
        raise ValidationError(CODE, f"a GLN is 13 digits with a valid check digit, got {text!r}")
    return text


def _check_prefix_length(length: int) -> None:
    if not 6 <= length <= 12:
        raise ValidationError(CODE, f"a GS1 company prefix is 6 to 12 digits, not {length}")


def _split_gtin(gtin14: str, length: int) -> tuple[str, str]:
    _check_prefix_length(length)
    return gtin14[1 : 1 + length], gtin14[0] + gtin14[1 + length : 13]
