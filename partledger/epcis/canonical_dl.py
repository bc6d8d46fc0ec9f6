"""GS1 keys in the canonical form the EPCIS event hash uses: constrained canonical GS1 Digital Link URIs.

CBV 2.0's event hash (see hashing.py) writes every EPC URI, EPC class/pattern URI and Digital Link URI as a
constrained canonical Digital Link on https://id.gs1.org: the finest identification level only, no query string,
no CPV, GTINs padded to 14 digits, and the serial's reserved characters ! ( ) * + , : percent-encoded. This is a port
of `dl_normaliser.py` of the reference implementation (github.com/RalphTro/epcis-event-hash-generator, release
1.9.3, MIT licence, Copyright 2019-2023 Ralph Troeger), kept close to the original so that the hashes stay equal:
the regular expressions are the original ones, compiled once and picked by the URI's scheme prefix instead of tried
in turn. `identifiers.epc_key` is the project's own key (a different percent-encoding), used for comparing EPCs.
"""

# ruff: noqa: E501
from __future__ import annotations

import re
from typing import Callable, Final

_URN_PATTERNS: Final = {
    "urn:epc:id:sgtin:": "^urn:epc:id:sgtin:((\\d{6}\\.\\d{7})|(\\d{7}\\.\\d{6})|(\\d{8}\\.\\d{5})|(\\d{9}\\.\\d{4})|(\\d{10}\\.\\d{3})|(\\d{11}\\.\\d{2})|(\\d{12}\\.\\d{1}))\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}$",
    "urn:epc:id:sscc:": '^urn:epc:id:sscc:((\\d{6}\\.\\d{11}$)|(\\d{7}\\.\\d{10}$)|(\\d{8}\\.\\d{9}$)|(\\d{9}\\.\\d{8}$)|(\\d{10}\\.\\d{7}$)|(\\d{11}\\.\\d{6}$)|(\\d{12}\\.\\d{5}$))',
    "urn:epc:id:sgln:": "^urn:epc:id:sgln:((\\d{6}\\.\\d{6})|(\\d{7}\\.\\d{5})|(\\d{8}\\.\\d{4})|(\\d{9}\\.\\d{3})|(\\d{10}\\.\\d{2})|(\\d{11}\\.\\d{1})|(\\d{12}\\.))\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}$",
    "urn:epc:id:grai:": "^urn:epc:id:grai:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.\\.))\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,16}$",
    "urn:epc:id:giai:": "^urn:epc:id:giai:(([\\d]{6}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,24})|([\\d]{7}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,23})|([\\d]{8}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,22})|([\\d]{9}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,21})|([\\d]{10}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20})|([\\d]{11}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,19})|([\\d]{12}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,18}))$",
    "urn:epc:id:gsrn:": '^urn:epc:id:gsrn:(([\\d]{6}\\.[\\d]{11}$)|([\\d]{7}\\.[\\d]{10}$)|([\\d]{8}\\.[\\d]{9}$)|([\\d]{9}\\.[\\d]{8}$)|([\\d]{10}\\.[\\d]{7}$)|([\\d]{11}\\.[\\d]{6}$)|([\\d]{12}\\.[\\d]{5}$))',
    "urn:epc:id:gsrnp:": '^urn:epc:id:gsrnp:(([\\d]{6}\\.[\\d]{11}$)|([\\d]{7}\\.[\\d]{10}$)|([\\d]{8}\\.[\\d]{9}$)|([\\d]{9}\\.[\\d]{8}$)|([\\d]{10}\\.[\\d]{7}$)|([\\d]{11}\\.[\\d]{6}$)|([\\d]{12}\\.[\\d]{5}$))',
    "urn:epc:id:gdti:": "^urn:epc:id:gdti:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.\\.))(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}$",
    "urn:epc:id:cpi:": '^urn:epc:id:cpi:((\\d{6}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,24})|(\\d{7}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,23})|(\\d{8}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,22})|(\\d{9}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,21})|(\\d{10}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,20})|(\\d{11}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,19})|(\\d{12}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,18}))\\.[\\d]{1,12}$',
    "urn:epc:id:sgcn:": '^urn:epc:id:sgcn:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.))\\.[\\d]{1,12}$',
    "urn:epc:id:ginc:": "^urn:epc:id:ginc:([\\d]{6}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,24}|[\\d]{7}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,23}|[\\d]{8}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,22}|[\\d]{9}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,21}|[\\d]{10}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}|[\\d]{11}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,19}|[\\d]{12}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,18})$",
    "urn:epc:id:gsin:": '^urn:epc:id:gsin:(([\\d]{6}\\.[\\d]{10}$)|([\\d]{7}\\.[\\d]{9}$)|([\\d]{8}\\.[\\d]{8}$)|([\\d]{9}\\.[\\d]{7}$)|([\\d]{10}\\.[\\d]{6}$)|([\\d]{11}\\.[\\d]{5}$)|([\\d]{12}\\.[\\d]{4}$))',
    "urn:epc:id:itip:": "^urn:epc:id:itip:(([\\d]{6}\\.[\\d]{7})|([\\d]{7}\\.[\\d]{6})|([\\d]{8}\\.[\\d]{5})|([\\d]{9}\\.[\\d]{4})|([\\d]{10}\\.[\\d]{3})|([\\d]{11}\\.[\\d]{2})|([\\d]{12}\\.[\\d]{1}))\\.[\\d]{2}\\.[\\d]{2}\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}$",
    "urn:epc:id:upui:": "^urn:epc:id:upui:((\\d{6}\\.\\d{7})|(\\d{7}\\.\\d{6})|(\\d{8}\\.\\d{5})|(\\d{9}\\.\\d{4})|(\\d{10}\\.\\d{3})|(\\d{11}\\.\\d{2})|(\\d{12}\\.\\d{1}))\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,28}$",
    "urn:epc:id:pgln:": '^urn:epc:id:pgln:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.))$',
    "urn:epc:class:lgtin:": "^urn:epc:class:lgtin:(([\\d]{6}\\.[\\d]{7})|([\\d]{7}\\.[\\d]{6})|([\\d]{8}\\.[\\d]{5})|([\\d]{9}\\.[\\d]{4})|([\\d]{10}\\.[\\d]{3})|([\\d]{11}\\.[\\d]{2})|([\\d]{12}\\.[\\d]{1}))\\.(\\%2[125-9A-Fa-f]|\\%3[0-9A-Fa-f]|\\%4[1-9A-Fa-f]|\\%5[0-9AaFf]|\\%6[1-9A-Fa-f]|\\%7[0-9Aa]|[!\\')(*+,.0-9:;=A-Za-z_-]){1,20}$",
    "urn:epc:idpat:sgtin:": '^urn:epc:idpat:sgtin:((\\d{6}\\.\\d{7})|(\\d{7}\\.\\d{6})|(\\d{8}\\.\\d{5})|(\\d{9}\\.\\d{4})|(\\d{10}\\.\\d{3})|(\\d{11}\\.\\d{2})|(\\d{12}\\.\\d{1}))\\.\\*$',
    "urn:epc:idpat:grai:": '^urn:epc:idpat:grai:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.\\.))\\.\\*$',
    "urn:epc:idpat:gdti:": '^urn:epc:idpat:gdti:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.\\.))\\.\\*$',
    "urn:epc:idpat:sgcn:": '^urn:epc:idpat:sgcn:(([\\d]{6}\\.[\\d]{6})|([\\d]{7}\\.[\\d]{5})|([\\d]{8}\\.[\\d]{4})|([\\d]{9}\\.[\\d]{3})|([\\d]{10}\\.[\\d]{2})|([\\d]{11}\\.[\\d]{1})|([\\d]{12}\\.\\.))\\.\\*$',
    "urn:epc:idpat:cpi:": '^urn:epc:idpat:cpi:((\\d{6}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,24})|(\\d{7}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,23})|(\\d{8}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,22})|(\\d{9}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,21})|(\\d{10}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,20})|(\\d{11}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,19})|(\\d{12}\\.(\\%2[3dfDF]|\\%3[0-9]|\\%4[1-9A-Fa-f]|\\%5[0-9Aa]|[0-9A-Z-]){1,18}))\\.\\*$',
    "urn:epc:idpat:itip:": '^urn:epc:idpat:itip:(([\\d]{6}\\.[\\d]{7})|([\\d]{7}\\.[\\d]{6})|([\\d]{8}\\.[\\d]{5})|([\\d]{9}\\.[\\d]{4})|([\\d]{10}\\.[\\d]{3})|([\\d]{11}\\.[\\d]{2})|([\\d]{12}\\.[\\d]{1}))\\.[\\d]{2}\\.[\\d]{2}\\.\\*$',
    "urn:epc:idpat:upui:": '^urn:epc:idpat:upui:((\\d{6}\\.\\d{7})|(\\d{7}\\.\\d{6})|(\\d{8}\\.\\d{5})|(\\d{9}\\.\\d{4})|(\\d{10}\\.\\d{3})|(\\d{11}\\.\\d{2})|(\\d{12}\\.\\d{1}))\\.\\*$',
}
_URN_REGEX: Final = {prefix: re.compile(pattern) for prefix, pattern in _URN_PATTERNS.items()}


def check_digit(body: str) -> int:
    """The GS1 check digit of a key's digits before it (GTIN, GLN, SSCC, GRAI, GDTI, …)."""
    digits = [int(digit) for digit in body]
    total = 3 * sum(digits[-1::-2]) + sum(digits[-2::-2])
    return (10 - total % 10) % 10


def _encode(text: str) -> str:
    # GS1 Digital Link Table 7-1: the characters an EPC URI may hold raw but a DL path must percent-encode
    return (text.replace("!", "%21").replace("(", "%28").replace(")", "%29").replace("*", "%2A")
            .replace("+", "%2B").replace(",", "%2C").replace(":", "%3A"))  # fmt: skip


def _gtin(uri: str, start: int, partition: int) -> str:
    prefix = uri[start:partition]
    item = uri[partition + 1 : partition + 1 + (13 - len(prefix))]
    raw = item[0:1] + prefix + item[1:]
    return raw + str(check_digit(raw))


def _twelve(uri: str, start: int, partition: int) -> str:
    prefix = uri[start:partition]
    return prefix + uri[partition + 1 : partition + 1 + (12 - len(prefix))]


def _sgtin(uri: str, p: int) -> str:
    return "https://id.gs1.org/01/" + _gtin(uri, 17, p) + "/21/" + _encode(uri[32:])


def _sscc(uri: str, p: int) -> str:
    raw = uri[p + 1 : p + 2] + uri[16:p] + uri[p + 2 :]
    return "https://id.gs1.org/00/" + raw + str(check_digit(raw))


def _sgln(uri: str, p: int) -> str:
    raw = _twelve(uri, 16, p)
    extension = uri[30:]
    base = "https://id.gs1.org/414/" + raw + str(check_digit(raw))
    return base if extension == "0" else base + "/254/" + _encode(extension)


def _grai(uri: str, p: int) -> str:
    raw = "0" + _twelve(uri, 16, p)
    return "https://id.gs1.org/8003/" + raw + str(check_digit(raw)) + _encode(uri[30:])


def _giai(uri: str, p: int) -> str:
    return "https://id.gs1.org/8004/" + uri[16:p] + _encode(uri[p + 1 :])


def _gsrn(uri: str, p: int) -> str:
    raw = uri[16:p] + uri[p + 1 :]
    return "https://id.gs1.org/8018/" + raw + str(check_digit(raw))


def _gsrnp(uri: str, p: int) -> str:
    raw = uri[17:p] + uri[p + 1 :]
    return "https://id.gs1.org/8017/" + raw + str(check_digit(raw))


def _gdti(uri: str, p: int) -> str:
    raw = _twelve(uri, 16, p)
    return "https://id.gs1.org/253/" + raw + str(check_digit(raw)) + _encode(uri[30:])


def _cpi(uri: str, p: int) -> str:
    separator = uri.rfind(".")
    return "https://id.gs1.org/8010/" + _encode(uri[15:p] + uri[p + 1 : separator]) + "/8011/" + uri[separator + 1 :]


def _sgcn(uri: str, p: int) -> str:
    raw = _twelve(uri, 16, p)
    return "https://id.gs1.org/255/" + raw + str(check_digit(raw)) + uri[30:]


def _ginc(uri: str, p: int) -> str:
    return "https://id.gs1.org/401/" + uri[16:p] + _encode(uri[p + 1 :])


def _gsin(uri: str, p: int) -> str:
    raw = uri[16:p] + uri[p + 1 :]
    return "https://id.gs1.org/402/" + raw + str(check_digit(raw))


def _itip(uri: str, p: int) -> str:
    return "https://id.gs1.org/8006/" + _gtin(uri, 16, p) + uri[31:33] + uri[34:36] + "/21/" + _encode(uri[37:])


def _upui(uri: str, p: int) -> str:
    return "https://id.gs1.org/01/" + _gtin(uri, 16, p) + "/235/" + _encode(uri[31:])


def _pgln(uri: str, p: int) -> str:
    raw = _twelve(uri, 16, p)
    return "https://id.gs1.org/417/" + raw + str(check_digit(raw))


def _lgtin(uri: str, p: int) -> str:
    return "https://id.gs1.org/01/" + _gtin(uri, 20, p) + "/10/" + _encode(uri[35:])


def _sgtin_pattern(uri: str, p: int) -> str:
    return "https://id.gs1.org/01/" + _gtin(uri, 20, p)


def _grai_pattern(uri: str, p: int) -> str:
    raw = "0" + _twelve(uri, 19, p)
    return "https://id.gs1.org/8003/" + raw + str(check_digit(raw))


def _gdti_pattern(uri: str, p: int) -> str:
    raw = _twelve(uri, 19, p)
    return "https://id.gs1.org/253/" + raw + str(check_digit(raw))


def _sgcn_pattern(uri: str, p: int) -> str:
    raw = _twelve(uri, 19, p)
    return "https://id.gs1.org/255/" + raw + str(check_digit(raw))


def _cpi_pattern(uri: str, p: int) -> str:
    separator = uri.rfind(".")
    return "https://id.gs1.org/8010/" + _encode(uri[18:p] + uri[p + 1 : separator])


def _itip_pattern(uri: str, p: int) -> str:
    return "https://id.gs1.org/8006/" + _gtin(uri, 19, p) + uri[34:36] + uri[37:39]


def _upui_pattern(uri: str, p: int) -> str:
    return "https://id.gs1.org/01/" + _gtin(uri, 19, p)


_URN_HANDLERS: Final[dict[str, Callable[[str, int], str]]] = {
    "urn:epc:id:sgtin:": _sgtin, "urn:epc:id:sscc:": _sscc, "urn:epc:id:sgln:": _sgln, "urn:epc:id:grai:": _grai,
    "urn:epc:id:giai:": _giai, "urn:epc:id:gsrn:": _gsrn, "urn:epc:id:gsrnp:": _gsrnp, "urn:epc:id:gdti:": _gdti,
    "urn:epc:id:cpi:": _cpi, "urn:epc:id:sgcn:": _sgcn, "urn:epc:id:ginc:": _ginc, "urn:epc:id:gsin:": _gsin,
    "urn:epc:id:itip:": _itip, "urn:epc:id:upui:": _upui, "urn:epc:id:pgln:": _pgln, "urn:epc:class:lgtin:": _lgtin,
    "urn:epc:idpat:sgtin:": _sgtin_pattern, "urn:epc:idpat:grai:": _grai_pattern, "urn:epc:idpat:gdti:": _gdti_pattern,
    "urn:epc:idpat:sgcn:": _sgcn_pattern, "urn:epc:idpat:cpi:": _cpi_pattern, "urn:epc:idpat:itip:": _itip_pattern,
    "urn:epc:idpat:upui:": _upui_pattern,
}  # fmt: skip

# --- Digital Link URIs (the original's expressions, in its order) ----------------------------------------------
_CHARS = r"[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]"
_DL_ANY: Final = re.compile(
    r"^https?:(\/\/((([^\/?#]*)@)?([^\/?#:]*)(:([^\/?#]*))?))?((([^?#]*)(\/(01|gtin|8006|itip|8010|cpid|414|gln|417|party|8017|gsrnp|8018|gsrn|255|gcn|00|sscc|253|gdti|401|ginc|402|gsin|8003|grai|8004|giai)\/)(\d{4}[^\/]+)(\/[^/]+\/[^/]+)?[/]?(\?([^?\n]*))?(#([^\n]*))?)|(\/[A-Za-z_-]{10}$))"
)
_DL_KEY: Final = re.compile(r"/(?:01|gtin|8006|itip|8010|cpid|414|gln|417|party|8017|gsrnp|8018|gsrn|255|gcn|00|sscc|253|gdti|401|ginc|402|gsin|8003|grai|8004|giai)/\d{4}")
_SHORT_NAMES: Final = (
    ("/gtin/", "/01/"), ("/itip/", "/8006/"), ("/cpid/", "/8010/"), ("/gln/", "/414/"), ("/party/", "/417/"),
    ("/gsrnp/", "/8017/"), ("/gsrn/", "/8018/"), ("/gcn/", "/255/"), ("/sscc/", "/00/"), ("/gdti/", "/253/"),
    ("/ginc/", "/401/"), ("/gsin/", "/402/"), ("/grai/", "/8003/"), ("/giai/", "/8004/"), ("/cpv/", "/22/"),
    ("/lot/", "/10/"), ("/ser/", "/21/"),
)  # fmt: skip
_DL_CANONICAL_HOST: Final = re.compile(
    r"^https:\/\/id.gs1.org\/(01|8006|8010|414|417|8017|8018|255|00|253|401|402|8003|8004)\/(\d{4}[^\/]+)(\/[^\/]+\/[^\/]+)?[\/]?(\?([^?\n]*))?(#([^\n]*))?|(\/[A-Za-z_-]{10}$)"
)
_DL_PRIMARY_ORDER: Final = ("/00/", "/01/", "/253/", "/255/", "/401/", "/402/", "/414/", "/417/", "/8003/", "/8004/", "/8006/", "/8010/", "/8017/", "/8018/")
_GTIN14 = re.compile(r"^https:\/\/id.gs1.org\/01\/\d{14}")
_GTIN13 = re.compile(r"^https:\/\/id.gs1.org\/01\/\d{13}")
_GTIN12 = re.compile(r"^https:\/\/id.gs1.org\/01\/\d{12}")
_GTIN8 = re.compile(r"^https:\/\/id.gs1.org\/01\/\d{8}")
_CPV_LAST = (
    re.compile(r"https:\/\/id.gs1.org\/8006\/\d{18}\/22\/(" + _CHARS + r"{0,20})$"),
    re.compile(r"https:\/\/id.gs1.org\/01\/\d{14}\/22\/(" + _CHARS + r"{0,20})$"),
)
_CPV_BEFORE = (
    re.compile(r"https:\/\/id.gs1.org\/8006\/\d{18}\/22\/([\x2F\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]{0,20})$"),
    re.compile(r"https:\/\/id.gs1.org\/01\/\d{14}\/22\/([\x2F\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]{0,20})$"),
)
_LOT_AND_SERIAL = (
    re.compile(r"https:\/\/id.gs1.org\/8006\/\d{18}\/10\/(" + _CHARS + r"{0,20})\/21\/(" + _CHARS + r"{0,20})$"),
    re.compile(r"https:\/\/id.gs1.org\/01\/(\d{14})\/10\/(" + _CHARS + r"{0,20})\/21\/(" + _CHARS + r"{0,20})$"),
)
_VALID = tuple(re.compile(pattern) for pattern in (
    r"https:\/\/id.gs1.org\/00\/(\d{18})$",
    r"https:\/\/id.gs1.org\/01\/(\d{14})\/21\/(" + _CHARS + r"{0,20})$",
    r"https:\/\/id.gs1.org\/01\/(\d{14})\/10\/(" + _CHARS + r"{0,20})$",
    r"https:\/\/id.gs1.org\/01\/(\d{14})$",
    r"https:\/\/id.gs1.org\/01\/(\d{14})\/235\/(" + _CHARS + r"{0,28})$",
    r"https:\/\/id.gs1.org\/253\/(\d{13})(" + _CHARS + r"{0,17})$",
    r"https:\/\/id.gs1.org\/255\/(\d{13})(\d{0,12})$",
    r"https:\/\/id.gs1.org\/401\/(" + _CHARS + r"{0,30})$",
    r"https:\/\/id.gs1.org\/402\/(\d{17})$",
    r"https:\/\/id.gs1.org\/414\/(\d{13})$",
    r"https:\/\/id.gs1.org\/414\/(\d{13})\/254\/(" + _CHARS + r"{0,20})$",
    r"https:\/\/id.gs1.org\/417\/(\d{13})$",
    r"https:\/\/id.gs1.org\/8003\/(\d{14})(" + _CHARS + r"{0,16})$",
    r"https:\/\/id.gs1.org\/8004\/(" + _CHARS + r"{0,30})$",
    r"https:\/\/id.gs1.org\/8006\/(\d{18})\/21\/(" + _CHARS + r"{0,20})$",
    r"https:\/\/id.gs1.org\/8006\/(\d{18})\/10\/(" + _CHARS + r"{0,20})$",
    r"https:\/\/id.gs1.org\/8006\/(\d{18})$",
    r"https:\/\/id.gs1.org\/8010\/([\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30})\/8011/(\d{0,12})$",
    r"https:\/\/id.gs1.org\/8010\/([\x23\x2D\x2F\x30-\x39\x41-\x5A]{0,30})$",
    r"https:\/\/id.gs1.org\/8017\/(\d{18})$",
    r"https:\/\/id.gs1.org\/8018\/(\d{18})$",
))  # fmt: skip


def canonical_dl(uri: str) -> str | None:
    """The constrained canonical Digital Link of an EPC URI, EPC class/pattern URI or Digital Link URI; None for
    anything else (the value then stays as written)."""
    partition = uri.find(".")
    if partition < 0:
        return None
    if uri.startswith("urn:epc:"):
        end = uri.find(":", uri.find(":", 8) + 1)
        prefix = uri[: end + 1]
        regex = _URN_REGEX.get(prefix)
        if regex is not None and regex.match(uri):
            return _URN_HANDLERS[prefix](uri, partition)
        return None
    # only a path with a key's AI (or short name) before 4 digits can pass the checks below: skip the rest fast
    if not uri.startswith("http") or _DL_KEY.search(uri) is None or _DL_ANY.match(uri) is None:
        return None
    return _canonical_web_uri(uri)


def _canonical_web_uri(uri: str) -> str | None:
    if "?" in uri:
        uri = uri[: uri.index("?")]
    for short, ai in _SHORT_NAMES:
        uri = uri.replace(short, ai)
    if _DL_CANONICAL_HOST.match(uri) is None:
        for key in _DL_PRIMARY_ORDER:
            at = uri.find(key)
            if at != -1:
                uri = "https://id.gs1.org" + uri[at:]
                break
    if _GTIN14.match(uri) is None:
        if _GTIN13.match(uri) is not None:
            uri = uri.replace("/01/", "/01/0")
        elif _GTIN12.match(uri) is not None:
            uri = uri.replace("/01/", "/01/00")
        elif _GTIN8.match(uri) is not None:
            uri = uri.replace("/01/", "/01/000000")
    after_cpv = uri[uri.find("/22/") + 4 :]
    if _CPV_LAST[0].match(uri) or _CPV_LAST[1].match(uri):
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/") : -1]
    if _CPV_BEFORE[0].match(uri) or _CPV_BEFORE[1].match(uri):
        uri = uri[: uri.find("/22/")] + after_cpv[after_cpv.find("/") :]
    if _LOT_AND_SERIAL[0].match(uri) or _LOT_AND_SERIAL[1].match(uri):
        after_lot = uri[uri.find("/10/") + 4 :]
        uri = uri[: uri.find("/10/")] + after_lot[after_lot.find("/") :]
    for regex in _VALID:
        if regex.match(uri):
            return uri
    return None
