"""The EPCIS 2.0 / CBV 2.0 canonical event hash: `ni:///sha-256;<hex>?ver=CBV2.0`.

Every EPCIS event PartLedger captures or derives from the ledger gets this hash; it goes into the anchored batch
and into proof bundles, so an event is proved like any other record. The algorithm is CBV 2.0's "EPCIS event hash
ID" (CBV 2.0 §8.9; the rules are written out in the README of the reference implementation,
github.com/RalphTro/epcis-event-hash-generator): the event is written as one "pre-hash string" of `key=value`
pieces in a canonical property order, values normalised, lists sorted, and that string is hashed with SHA-256.

The hashes must equal the reference implementation's (release 1.9.3, MIT licence, Copyright 2019-2023 Ralph
Troeger and Sebastian Schmittner), whose published vectors the tests check. This is a port of its JSON path
(json_to_py, json_xml_model_mismatch_correction, hash_generator), keeping the parts that decide the bytes:

- the event becomes a tree of (name, value, children): JSON keys with a namespace prefix are written `{ns}local`,
  `…List` keys hold one child per item named without "List" (inputEPC and outputEPC become `epc`, the quantity
  items `quantityElement`), childEPCs hold `epc` children;
- the pre-hash is `eventType=<type>`, then the fields of PROP_ORDER in that order, each `name=value` (children
  follow their parent's name), same-named siblings sorted; user extensions inside readPoint, bizLocation and the
  sensor elements follow their parent's ordered fields; everything left over (bizTransactionList, sourceList and
  destinationList, which the reference never matches in its order, ilmd, event-level extensions, unknown fields)
  follows, each piece written out and the pieces sorted; recordTime, eventID and errorDeclaration are left out;
- values are trimmed; timestamps (a name containing "time", not "offset") in UTC with milliseconds and "Z";
  numbers without trailing zeros; CBV URNs as web URIs; EPC and Digital Link URIs as constrained canonical Digital
  Links (canonical_dl.py); bare CBV words (bizStep "shipping") as the web-vocabulary URI the EPCIS JSON-LD
  context gives them, and, as the reference does, any other string value of the event equal to the word.

Where the reference crashes or depends on things outside the event, this port follows the rules instead:
- a JSON-LD @context whose entries are term definitions (`{"rail:x": {"@type": "@id"}}`) is read for its prefixes
  only (the reference stops there: Example-TransactionEvents-2020_07_03y); nested extension objects and lists of
  them are written `{ns}name` followed by their sorted children (rule 20);
- the prefixes of the EPCIS 2.0 context (cbv, cbvmda, gs1, epcis, …) are always known, so `gs1:Temperature` and
  `cbvmda:lotNumber` expand even when the document does not redeclare them (rule 15);
- bare words are expanded from the event's own vocabulary fields, not the whole document's, so an event's hash
  does not depend on the other events beside it;
- a bizTransaction, source or destination writes its type first, whatever the JSON key order (rule 13), and may
  lack a type (the reference crashes);
- timestamps round on the fourth decimal, 5-9 up (rule 9; the reference rounds half to even, and crashes when
  .9995 carries into the next second); a timestamp without offset is read as UTC;
- JSON booleans are written `true`/`false` as in XML (the reference writes Python's `True`); `@`-keys (an event's
  own @context) and null values are left out.
"""

from __future__ import annotations

import hashlib
import re
import math
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Mapping

from partledger.epcis import vocabulary
from partledger.epcis.canonical_dl import canonical_dl
from partledger.errors import ValidationError

NI_PREFIX: Final = "ni:///sha-256;"
MAX_NESTING: Final = 64  # objects and lists inside each other; an EPCIS event needs fewer than ten
NI_SUFFIX: Final = "?ver=CBV2.0"

# Prefixes the EPCIS 2.0 JSON-LD context declares (https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld).
STANDARD_PREFIXES: Final = {
    "epcis": "https://ref.gs1.org/epcis/",
    "cbv": "https://ref.gs1.org/cbv/",
    "cbvmda": "urn:epcglobal:cbv:mda:",
    "gs1": "https://gs1.org/voc/",
    "rdfs": "http://www.w3.org/2000/01/rdf-schema#",
    "owl": "http://www.w3.org/2002/07/owl#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
    "dcterms": "http://purl.org/dc/terms/",
}

# The canonical property order (README of the reference, "Canonical property order"; the reference's PROP_ORDER).
# bizTransactionList, sourceList and destinationList are listed there too, but the reference never matches them
# in order: they are written with the leftovers, which is what its published hashes hold.
_QUANTITY: Final = (("quantityElement", (("epcClass", None), ("quantity", None), ("uom", None))),)
_EPC: Final = (("epc", None),)
PROP_ORDER: Final = (
    ("eventTime", None),
    ("eventTimeZoneOffset", None),
    ("certificationInfo", None),
    ("parentID", None),
    ("epcList", _EPC),
    ("inputEPCList", _EPC),
    ("childEPCs", _EPC),
    ("quantityList", _QUANTITY),
    ("childQuantityList", _QUANTITY),
    ("inputQuantityList", _QUANTITY),
    ("outputEPCList", _EPC),
    ("outputQuantityList", _QUANTITY),
    ("action", None),
    ("transformationID", None),
    ("bizStep", None),
    ("disposition", None),
    ("persistentDisposition", (("set", None), ("unset", None))),
    ("readPoint", (("id", None),)),
    ("bizLocation", (("id", None),)),
    ("sensorElementList", (("sensorElement", (
        ("sensorMetadata", tuple((name, None) for name in (
            "time", "startTime", "endTime", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod",
            "bizRules"))),
        ("sensorReport", tuple((name, None) for name in (
            "type", "exception", "deviceID", "deviceMetadata", "rawData", "dataProcessingMethod", "time",
            "microorganism", "chemicalSubstance", "value", "component", "stringValue", "booleanValue",
            "hexBinaryValue", "uriValue", "minValue", "maxValue", "meanValue", "sDev", "percRank", "percValue", "uom",
            "coordinateReferenceSystem"))),
    )),)),
)  # fmt: skip
_ORDERED_NAMES: Final = frozenset(name for name, _ in PROP_ORDER)
_NOT_HASHED: Final = frozenset({"recordTime", "eventID", "type", "errorDeclaration"})
_SKIPPED_KEYS: Final = frozenset({"#text", "rdfs:comment", "comment"})
_PAIR_LISTS: Final = {"bizTransactionList": "bizTransaction", "sourceList": "source", "destinationList": "destination"}
_RENAMED: Final = {
    "inputEPC": "epc", "outputEPC": "epc",
    "inputQuantity": "quantityElement", "outputQuantity": "quantityElement", "childQuantity": "quantityElement",
}  # fmt: skip
_UNSORTED_NAMES: Final = frozenset(_PAIR_LISTS.values())

# Where the EPCIS context gives bare words a vocabulary (@type @vocab with a term list): word -> URI.
_CBV = vocabulary.CBV_URI
_GS1 = vocabulary.GS1_VOC_URI
_BIZ_STEP_TERMS: Final = {word: f"{_CBV}BizStep-{word}" for word in vocabulary.BIZ_STEPS}
_DISPOSITION_TERMS: Final = {word: f"{_CBV}Disp-{word}" for word in vocabulary.DISPOSITIONS}
_BTT_TERMS: Final = {word: f"{_CBV}BTT-{word}" for word in vocabulary.BIZ_TRANSACTION_TYPES}
_SDT_TERMS: Final = {word: f"{_CBV}SDT-{word}" for word in vocabulary.SOURCE_DEST_TYPES}
_ER_TERMS: Final = {word: f"{_CBV}ER-{word}" for word in vocabulary.ERROR_REASONS}
_MEASUREMENT_TERMS: Final = {word: f"{_GS1}{word}" for word in vocabulary.MEASUREMENT_TYPES}
_ALERT_TERMS: Final = {word: f"{_GS1}{word}" for word in vocabulary.SENSOR_ALERT_TYPES}
_COMPONENT_TERMS: Final = {word: f"{_CBV}Comp-{word}" for word in vocabulary.COMPONENTS}
_VOCAB_ROOTS: Final = ("https://ref.gs1.org/cbv", "https://gs1.org/voc")
_CBV_URNS: Final = (
    ("urn:epcglobal:cbv:bizstep:", f"{_CBV}BizStep-"),
    ("urn:epcglobal:cbv:disp:", f"{_CBV}Disp-"),
    ("urn:epcglobal:cbv:btt:", f"{_CBV}BTT-"),
    ("urn:epcglobal:cbv:sdt:", f"{_CBV}SDT-"),
    ("urn:epcglobal:cbv:er:", f"{_CBV}ER-"),
)
_TIMESTAMP: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?")
_NUMERIC_START: Final = frozenset("0123456789+-.iInN")

Node = tuple  # (name: str, value: str, children: list[Node])


# --- public API -------------------------------------------------------------------------------------------------


def event_hash(event: Mapping[str, Any], *, context: list | dict | str | None = None) -> str:
    """The CBV 2.0 event hash of one EPCIS event (a JSON object), as `ni:///sha-256;<hex>?ver=CBV2.0`. `context`
    is the @context of the document the event came in (for its namespace prefixes); None when there is none."""
    if not isinstance(event, dict):
        raise ValidationError("invalid_event", "an EPCIS event must be a JSON object")
    digest = hashlib.sha256(_prehash(event, _prefixes(context)).encode("utf-8")).hexdigest()
    return f"{NI_PREFIX}{digest}{NI_SUFFIX}"


def event_prehash(event: Mapping[str, Any], *, context: list | dict | str | None = None) -> str:
    """The canonical pre-hash string of an event (what event_hash hashes), for debugging and for tests."""
    if not isinstance(event, dict):
        raise ValidationError("invalid_event", "an EPCIS event must be a JSON object")
    return _prehash(event, _prefixes(context))


def hash_digest(ni: str) -> bytes:
    """The 32-byte SHA-256 digest inside an `ni:///sha-256;<hex>?ver=…` event hash."""
    if not isinstance(ni, str) or not ni.startswith(NI_PREFIX):
        raise ValidationError("invalid_event_hash", "an event hash starts with ni:///sha-256;")
    hex_part = ni[len(NI_PREFIX) :].split("?", 1)[0]
    if len(hex_part) != 64:
        raise ValidationError("invalid_event_hash", "an event hash holds 64 hex digits")
    try:
        return bytes.fromhex(hex_part)
    except ValueError:
        raise ValidationError("invalid_event_hash", "an event hash holds 64 hex digits") from None


def document_event_hashes(document: Mapping[str, Any]) -> list[str]:
    """The event hash of every event of an EPCISDocument or EPCISQueryDocument, in order."""
    events = document_events(document)
    prefixes = _prefixes(document.get("@context"))
    return [
        f"{NI_PREFIX}{hashlib.sha256(_prehash(event, prefixes).encode('utf-8')).hexdigest()}{NI_SUFFIX}"
        for event in events
    ]


def document_events(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The events of an EPCISDocument (epcisBody.eventList, or a single epcisBody.event) or of an
    EPCISQueryDocument (epcisBody.queryResults.resultsBody.eventList)."""
    body = document.get("epcisBody") if isinstance(document, dict) else None
    if not isinstance(body, dict):
        raise ValidationError("invalid_document", "an EPCIS document has an epcisBody object")
    if "eventList" in body:
        events = body["eventList"]
    elif "event" in body:
        events = [body["event"]]
    else:
        results = body.get("queryResults", {})
        body = results.get("resultsBody") if isinstance(results, dict) else None
        events = body.get("eventList") if isinstance(body, dict) else None
    if not isinstance(events, list) or not all(isinstance(event, dict) for event in events):
        raise ValidationError("invalid_document", "epcisBody.eventList must be a list of event objects")
    return events


# --- the pre-hash -----------------------------------------------------------------------------------------------

_prefix_cache: tuple[object, dict[str, str]] | None = None


def _prefixes(context: object) -> dict[str, str]:
    """Namespace prefixes: the EPCIS context's, then the document's (objects in @context whose values are strings)."""
    global _prefix_cache
    if context is None:
        return STANDARD_PREFIXES
    cached = _prefix_cache
    if cached is not None and cached[0] is context:
        return cached[1]
    prefixes = dict(STANDARD_PREFIXES)
    for entry in context if isinstance(context, list) else [context]:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if isinstance(value, str) and not key.startswith("@") and ":" not in key:
                    prefixes[key] = value
    _prefix_cache = (context, prefixes)
    return prefixes


def _prehash(event: dict[str, Any], prefixes: dict[str, str]) -> str:
    simple = _simple_prehash(event, prefixes)
    if simple is not None:
        return simple
    return _Prehasher(prefixes, event).prehash()


def _leaf(value: Any, words: dict[str, str], prefixes: dict[str, str]) -> str:
    """A JSON scalar as text: a bare CBV word as its URI, a CURIE expanded, booleans as in XML."""
    if isinstance(value, str):
        if words and value in words:
            value = words[value]
        prefix, colon, local = value.partition(":")
        if colon and prefix in prefixes:
            return prefixes[prefix] + local
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


# The shapes most events have (what capture sees thousands of times a second), written directly; the output is
# the tree walk's, byte for byte (tests compare the two). Anything else returns None and takes the tree walk.
_SIMPLE_SCALARS: Final = ("eventTime", "eventTimeZoneOffset", "certificationInfo", "parentID", "action",
                          "transformationID", "bizStep", "disposition")  # fmt: skip
_SIMPLE_EPC_LISTS: Final = ("epcList", "inputEPCList", "childEPCs", "outputEPCList")
_SIMPLE_QUANTITY_LISTS: Final = ("quantityList", "childQuantityList", "inputQuantityList", "outputQuantityList")
_SIMPLE_LOCATIONS: Final = ("readPoint", "bizLocation")
_SIMPLE_KEYS: Final = frozenset(
    _SIMPLE_SCALARS + _SIMPLE_EPC_LISTS + _SIMPLE_QUANTITY_LISTS + _SIMPLE_LOCATIONS + tuple(_PAIR_LISTS)
    + ("type", "eventID", "recordTime", "ilmd")
)
_SIMPLE_ORDER: Final = tuple(
    (name, kind)
    for name, _ in PROP_ORDER
    for kind in ("scalar" if name in _SIMPLE_SCALARS else "epcs" if name in _SIMPLE_EPC_LISTS
                 else "quantities" if name in _SIMPLE_QUANTITY_LISTS else "location" if name in _SIMPLE_LOCATIONS
                 else None,)
    if kind is not None
)  # fmt: skip
_QUANTITY_FIELDS: Final = ("epcClass", "quantity", "uom")


def _simple_prehash(event: dict[str, Any], prefixes: dict[str, str]) -> str | None:
    for key, value in event.items():
        if key not in _SIMPLE_KEYS and key[:1] != "@":
            return None
    found = []
    for name, terms in (("bizStep", _BIZ_STEP_TERMS), ("disposition", _DISPOSITION_TERMS)):
        value = event.get(name)
        if value is not None:
            if not isinstance(value, str):
                return None
            uri = _expand_word(value, terms, prefixes)
            if uri is not None:
                found.append(uri)
    rest = []
    for list_name, value_name in _PAIR_LISTS.items():
        items = event.get(list_name)
        if items is None:
            continue
        if not isinstance(items, list):
            return None
        terms = _BTT_TERMS if list_name == "bizTransactionList" else _SDT_TERMS
        for item in items:
            if not isinstance(item, dict) or not item.keys() <= {"type", value_name}:
                return None
            if not all(isinstance(part, str) for part in item.values()):
                return None
            if "type" in item:
                uri = _expand_word(item["type"], terms, prefixes)
                if uri is not None:
                    found.append(uri)
    words = _word_matches(frozenset(found)) if found else {}
    for list_name, value_name in _PAIR_LISTS.items():
        items = event.get(list_name)
        if not items:
            continue
        pairs = []
        for item in items:
            pair = ""
            for name in ("type", value_name):
                if name in item:
                    text = _leaf(item[name], words, prefixes).strip()
                    pair += f"{name}={_canonical(text)}" if text else name
            pairs.append(pair)
        pairs.sort()
        rest.append(list_name + "".join(pairs))
    ilmd = event.get("ilmd")
    if ilmd is not None:
        piece = _simple_ilmd(ilmd, words, prefixes)
        if piece is None:
            return None
        rest.append(piece)
    out = ["eventType=", vocabulary.bare_word(event["type"]) if isinstance(event.get("type"), str) else ""]
    if not isinstance(event.get("type", ""), str):
        return None
    for name, kind in _SIMPLE_ORDER:
        value = event.get(name)
        if value is None:
            continue
        if kind == "scalar":
            if not isinstance(value, str):
                return None
            text = _leaf(value, words, prefixes).strip()
            if text:
                out.append(f"{name}={_timestamp(text) if name == 'eventTime' else _canonical(text)}")
        elif kind == "epcs":
            if not isinstance(value, list):
                return None
            pieces = []
            for item in value:
                if not isinstance(item, str):
                    return None
                text = _leaf(item, words, prefixes).strip()
                if text:
                    pieces.append("epc=" + _canonical(text))
            if pieces:
                pieces.sort()
                out.append(name + "".join(pieces))
        elif kind == "location":
            if not isinstance(value, dict) or value.keys() != {"id"} or not isinstance(value["id"], str):
                return None
            text = _leaf(value["id"], words, prefixes).strip()
            if text:
                out.append(f"{name}id={_canonical(text)}")
        else:
            if not isinstance(value, list):
                return None
            elements = []
            for item in value:
                if not isinstance(item, dict) or "epcClass" not in item or not item.keys() <= _QUANTITY_KEYS:
                    return None
                element = ""
                for field in _QUANTITY_FIELDS:
                    if field in item:
                        field_value = item[field]
                        if not isinstance(field_value, (str, int, float)) or isinstance(field_value, bool):
                            return None
                        text = _leaf(field_value, words, prefixes).strip()
                        if text:
                            element += f"{field}={_canonical(text)}"
                if element:
                    elements.append("quantityElement" + element)
            if elements:
                elements.sort()
                out.append(name + "".join(elements))
    if rest:
        rest.sort()
        out.extend(rest)
    return "".join(out)


_QUANTITY_KEYS: Final = frozenset(_QUANTITY_FIELDS)


def _simple_ilmd(ilmd: Any, words: dict[str, str], prefixes: dict[str, str]) -> str | None:
    """Instance/lot master data of scalar fields (a commissioning event's lot, its expiry date) as the tree walk
    writes it among the leftovers: `ilmd`, then each field `{ns}name=value` (no timestamp rule there), sorted. None
    for anything else (nested objects, lists, #text, names the tree gives a meaning)."""
    if not isinstance(ilmd, dict) or "#text" in ilmd:
        return None
    pieces = []
    for key, value in ilmd.items():
        if key in _SKIPPED_KEYS or key[:1] == "@" or value is None:
            continue
        if not isinstance(value, (str, int, float)):  # bool is an int
            return None
        prefix, colon, local = key.partition(":")
        name = "{" + prefixes[prefix] + "}" + local if colon and prefix in prefixes else key
        if name.endswith("List") or name == "childEPCs" or name in _RENAMED or name in _UNSORTED_NAMES:
            return None
        text = _leaf(value, words, prefixes).strip()
        pieces.append(f"{name}={_canonical(text)}" if text else name)
    if len(pieces) > 1:
        pieces.sort()
    return "ilmd" + "".join(pieces)


def _expand_word(value: str, terms: dict[str, str], prefixes: dict[str, str]) -> str | None:
    """What JSON-LD expansion makes of a vocabulary field's value, when that is a CBV or GS1 web-vocabulary URI."""
    uri = terms.get(value)
    if uri is None:
        prefix, colon, local = value.partition(":")
        uri = prefixes[prefix] + local if colon and prefix in prefixes else value
    return uri if uri.startswith(_VOCAB_ROOTS) else None


class _Prehasher:
    """One event's pre-hash: its vocabulary (for bare words), its tree, and the walk over PROP_ORDER."""

    __slots__ = ("prefixes", "event", "words")

    def __init__(self, prefixes: dict[str, str], event: Mapping[str, Any]) -> None:
        self.prefixes = prefixes
        self.event = event
        self.words = self._vocabulary_words()

    def prehash(self) -> str:
        event = self.event
        event_type = event.get("type", "")
        children = self._children(event)
        ordered = _ordered(children, PROP_ORDER)
        rest = [child for child in children if child[0] not in _NOT_HASHED]
        kind = vocabulary.bare_word(event_type) if isinstance(event_type, str) else self._leaf(event_type)
        return f"eventType={kind}{ordered}{_generic(rest) if rest else ''}"

    # the event as a tree, as json_to_py and deep_structure_correction build it

    def _children(self, obj: Mapping[str, Any], depth: int = 0) -> list[Node]:
        depth += 1
        plain: list[Node] = []
        groups: dict[str, list] = {}
        child_epcs: list[Node] = []
        for key, value in obj.items():
            if key in _SKIPPED_KEYS or key[:1] == "@" or value is None:
                continue
            name = self._key(key)
            items = value if isinstance(value, list) else (value,)
            if name.endswith("List"):
                group = groups.setdefault(name, [])
                if name in _PAIR_LISTS:
                    group.extend(self._pair(item, _PAIR_LISTS[name], depth) for item in items if item is not None)
                else:
                    group.extend(self._node(name[:-4], item, depth) for item in items if item is not None)
            elif name == "childEPCs":
                child_epcs.extend(("epc", self._node(name, item, depth)[1], []) for item in items if item is not None)
            else:
                plain.extend(self._node(name, item, depth) for item in items if item is not None)
        for name, group in groups.items():
            if group:  # an empty JSON list leaves no trace, as in json_to_py
                plain.append((name, "", group))
        if child_epcs:
            plain.append(("childEPCs", "", child_epcs))
        return plain

    def _node(self, name: str, value: Any, depth: int) -> Node:
        if depth > MAX_NESTING:
            raise ValidationError("invalid_event", f"the event nests values more than {MAX_NESTING} levels deep")
        if isinstance(value, dict):
            text = value.get("#text")
            children = self._children(value, depth)
            if name in _RENAMED or (name == "quantity" and children):
                name = _RENAMED.get(name, "quantityElement")
            return (name, _leaf(text, self.words, self.prefixes) if text is not None else "", children)
        if isinstance(value, list):  # a list inside a list: its items are unnamed children
            return (name, "", [self._node("", item, depth + 1) for item in value if item is not None])
        return (_RENAMED.get(name, name), self._leaf(value), [])

    def _pair(self, item: Any, value_name: str, depth: int) -> Node:
        """A bizTransaction, source or destination: type first, then the identifier, then anything else."""
        if not isinstance(item, dict):
            return ("", "", [(value_name, self._leaf(item), [])])
        nodes = [self._node(self._key(key), value, depth) for key, value in item.items()
                 if key not in _SKIPPED_KEYS and key[:1] != "@" and value is not None]  # fmt: skip
        nodes.sort(key=lambda node: (node[0] != "type", node[0] != value_name))
        return ("", "", nodes)

    def _key(self, key: str) -> str:
        prefix, colon, local = key.partition(":")
        if colon and prefix in self.prefixes:
            return "{" + self.prefixes[prefix] + "}" + local
        return key

    def _leaf(self, value: Any) -> str:
        return _leaf(value, self.words, self.prefixes)

    # bare CBV words: what JSON-LD expansion gives the vocabulary fields, and every suffix that matches it

    def _vocabulary_words(self) -> dict[str, str]:
        event = self.event
        found: list[str] = []
        self._expand(event.get("bizStep"), _BIZ_STEP_TERMS, found)
        self._expand(event.get("disposition"), _DISPOSITION_TERMS, found)
        persistent = event.get("persistentDisposition")
        if isinstance(persistent, dict):
            self._expand(persistent.get("set"), _DISPOSITION_TERMS, found)
            self._expand(persistent.get("unset"), _DISPOSITION_TERMS, found)
        for list_name, terms in (("bizTransactionList", _BTT_TERMS), ("sourceList", _SDT_TERMS),
                                 ("destinationList", _SDT_TERMS)):  # fmt: skip
            for item in _as_list(event.get(list_name)):
                if isinstance(item, dict):
                    self._expand(item.get("type"), terms, found)
        declaration = event.get("errorDeclaration")
        if isinstance(declaration, dict):
            self._expand(declaration.get("reason"), _ER_TERMS, found)
        for element in _as_list(event.get("sensorElementList")):
            if isinstance(element, dict):
                for report in _as_list(element.get("sensorReport")):
                    if isinstance(report, dict):
                        self._expand(report.get("type"), _MEASUREMENT_TERMS, found)
                        self._expand(report.get("exception"), _ALERT_TERMS, found)
                        self._expand(report.get("component"), _COMPONENT_TERMS, found)
        if not found:
            return {}
        return _word_matches(frozenset(found))

    def _expand(self, value: Any, terms: dict[str, str], found: list[str]) -> None:
        for item in _as_list(value):
            if isinstance(item, str):
                uri = _expand_word(item, terms, self.prefixes)
                if uri is not None:
                    found.append(uri)


@lru_cache(maxsize=1024)
def _word_matches(uris: frozenset[str]) -> dict[str, str]:
    """json_to_py's heuristic: a string value becomes the one expanded URI that ends with "-value" or "/value"."""
    matches: dict[str, set[str]] = {}
    for uri in uris:
        for index, char in enumerate(uri):
            if char == "-" or char == "/":
                matches.setdefault(uri[index + 1 :], set()).add(uri)
    return {word: next(iter(found)) for word, found in matches.items() if len(found) == 1 and word}


def _as_list(value: Any) -> list | tuple:
    if value is None:
        return ()
    return value if isinstance(value, list) else (value,)


def _ordered(children: list[Node], order: tuple) -> str:
    """The fields of `order` in that order, consuming them from `children` (hash_generator's
    _recurse_through_children_in_order): what is left in `children` afterwards was not written."""
    extensions = _gather_extensions(children)
    names = {child[0] for child in children}
    text = ""
    for name, sub_order in order:
        if name not in names or name in _PAIR_LISTS:
            continue
        values = []
        for child in [child for child in children if child[0] == name]:
            piece = _ordered_child(child, sub_order)
            if piece:
                values.append(piece)
            if not child[2]:
                children.remove(child)
        if values:
            values.sort()
            text += "".join(values)
    if extensions:
        text += _generic(extensions)
    return text


def _ordered_child(child: Node, sub_order: tuple | None) -> str:
    name, value, grandchildren = child
    inner = _ordered(grandchildren, sub_order) if sub_order else ""
    if value:
        value = value.strip()
    if value:
        lowered = name.lower()
        value = _timestamp(value) if "time" in lowered and "offset" not in lowered else _canonical(value)
        return f"{name}={value}{inner}"
    return f"{name}{inner}" if inner else ""


def _gather_extensions(children: list[Node]) -> list[Node]:
    """User extensions inside a standard field (readPoint, sensorReport, …): `{ns/}name` children, taken out of
    `children` to be written after the field's ordered ones (hash_generator's _gather_user_extensions)."""
    if len(children) <= 1:
        return []
    for child in children:
        if "eventTime" in child[0] or "action" in child[0]:
            return []
    extensions = [child for child in children if "{" in child[0] and "/}" in child[0]]
    for extension in extensions:
        children.remove(extension)
    return extensions


def _generic(children: list[Node]) -> str:
    """Children written name[=value] followed by their own children, sorted unless they are the parts of a
    bizTransaction, source or destination (hash_generator's _generic_child_list_to_prehash_string)."""
    pieces = []
    for name, value, grandchildren in children:
        value = value.strip() if value else value
        if value:
            value = _canonical(value)
        piece = f"{name}={value}" if value else name
        pieces.append(piece + _generic(grandchildren) if grandchildren else piece)
    if len(pieces) > 1 and not any(child[0] in _UNSORTED_NAMES for child in children):
        pieces.sort()
    return "".join(pieces)


@lru_cache(maxsize=16384)
def _canonical(text: str) -> str:
    """A value as the hash writes it: CBV URNs as web URIs, numbers without trailing zeros, GS1 keys as
    canonical Digital Links (hash_generator's _canonize_value)."""
    if "urn:epcglobal:cbv:" in text:
        for urn, web in _CBV_URNS:
            text = text.replace(urn, web)
    if text[0] in _NUMERIC_START:
        try:
            number = float(text)
            if math.isfinite(number):
                text = str(int(number)) if number.is_integer() else str(number)
        except ValueError:
            pass
    if "." in text and (text.startswith("urn:epc:") or text.startswith("http")):
        converted = canonical_dl(text)
        if converted:
            return converted
    return text


@lru_cache(maxsize=4096)
def _timestamp(text: str) -> str:
    """A timestamp in UTC with milliseconds and "Z"; the third decimal rounds up when the fourth is 5-9. Text that
    is no timestamp (or one out of datetime's range) is written as it is, like the reference does."""
    try:
        return _utc_milliseconds(text)
    except (ValueError, OverflowError):
        return text


def _utc_milliseconds(text: str) -> str:
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        parsed = datetime.fromisoformat(text)
        fraction = f"{parsed.microsecond:06d}"
        offset = parsed.utcoffset() or timedelta(0)
        base = parsed.replace(microsecond=0, tzinfo=None) - offset
    else:
        year, month, day, hour, minute, second, fraction, zone = match.groups()
        fraction = fraction or ""
        base = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
        if zone and zone != "Z" and zone not in ("+00:00", "-00:00"):
            sign = 1 if zone[0] == "+" else -1
            base -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    milliseconds = int(fraction[:3].ljust(3, "0"))
    if len(fraction) > 3 and fraction[3] >= "5":
        milliseconds += 1
        if milliseconds == 1000:
            base += timedelta(seconds=1)
            milliseconds = 0
    return f"{base.year:04d}-{base.month:02d}-{base.day:02d}T{base.hour:02d}:{base.minute:02d}:{base.second:02d}.{milliseconds:03d}Z"

