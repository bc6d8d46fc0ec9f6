"""Recall notices people can act on: what a recall says, in Chinese and English (title, reason, risk, remedy, what to
do now, contact), kept by the service and anchored on chain by its hash, the recall's notice_hash.

Where it sits: the write path checks a notice and stores it with the recall command that anchors it
(write_service.submit_recall, in the command's transaction); the read side shows it (the verification and product
pages, the console, the API), and GET /v1/recall-notices/{hash} serves it with its canonical bytes to anyone, once a
recall on chain names that hash. A recall sent with a bare notice_hash (a PDF's, say) has no text here.

The canonical form, which is what is hashed: the notice as one JSON object,

    {"action":{"en":"…","zh":"…"},"contact":{…},"reason":{…},"remedy":{…},"risk":{…},
     "schema":"partledger/recall-notice/1","title":{…}}

serialised as RFC 8785 (JSON Canonicalization Scheme) serialises it: members sorted by name, no whitespace between
tokens, UTF-8, strings escaped only where JSON must (`"`, `\\`, control characters). The notice holds strings only,
for which that is exactly Python's json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False).
notice_hash = SHA-256 of those bytes, as the console's PDF notices are hashed: anyone checks a notice with
`curl -s …/v1/recall-notices/0x…/canonical.json | sha256sum`. The text is kept as sent (no trimming, no Unicode
normalisation): line breaks are "\\n", and no other control character but a tab is accepted.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from indexer.tables import Organisation, Recall
from ledger_service.errors import NotFound, Unprocessable
from ledger_service.notice_tables import RecallNoticeRecord

T_NOTICE, T_RECALL, T_ORG = RecallNoticeRecord.__table__, Recall.__table__, Organisation.__table__
SCHEMA = "partledger/recall-notice/1"
LANGUAGES = ("zh", "en")
FIELDS = ("title", "reason", "risk", "remedy", "action", "contact")  # the order people read them in
LIMITS = {"title": 200, "reason": 4000, "risk": 4000, "remedy": 4000, "action": 4000, "contact": 500}  # characters
ALLOWED_CONTROLS = frozenset("\n\t")

Notice = dict[str, dict[str, str]]  # field -> language -> text


# --- the notice and its hash --------------------------------------------------------------------------------------


def checked_notice(notice: Mapping[str, Any]) -> Notice:
    """The notice as it is hashed and kept, or every problem at once: 422 invalid_notice, details
    [{"field": "risk.en", "code": "missing" | "blank" | "too_long" | "invalid_text" | "unknown_field", "message"}]."""
    problems: list[dict[str, str]] = []
    checked: Notice = {}
    for name in notice:
        if name not in FIELDS:
            problems.append({"field": str(name)[:40], "code": "unknown_field", "message": f"a notice has the fields {', '.join(FIELDS)}"})
    for name in FIELDS:
        texts = notice.get(name)
        if not isinstance(texts, Mapping):
            problems.append({"field": name, "code": "missing", "message": "give it in zh and en"})
            continue
        for lang in texts:
            if lang not in LANGUAGES:
                problems.append({"field": f"{name}.{str(lang)[:8]}", "code": "unknown_field", "message": "the languages are zh and en"})
        checked[name] = {}
        for lang in LANGUAGES:
            text = texts.get(lang)
            problem = _text_problem(text, LIMITS[name])
            if problem is not None:
                problems.append({"field": f"{name}.{lang}", "code": problem[0], "message": problem[1]})
            else:
                checked[name][lang] = text  # type: ignore[assignment]
    if problems:
        raise Unprocessable(f"the recall notice is not valid ({len(problems)} problem(s))", code="invalid_notice", details=problems)
    return checked


def _text_problem(text: Any, limit: int) -> Optional[tuple[str, str]]:
    if text is None:
        return "missing", "required"
    if not isinstance(text, str):
        return "invalid_text", "a text is a string"
    if not text.strip():
        return "blank", "must not be blank"
    if len(text) > limit:
        return "too_long", f"at most {limit} characters"
    for char in text:
        if char in ALLOWED_CONTROLS:
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            return "invalid_text", f"control character U+{ord(char):04X}: line breaks are \\n"
        if category == "Cs":
            return "invalid_text", "a lone surrogate is no character"
    return None


def canonical_bytes(notice: Notice) -> bytes:
    """The canonical form of a checked notice (see the module's docstring)."""
    document = {name: {lang: notice[name][lang] for lang in LANGUAGES} for name in FIELDS} | {"schema": SCHEMA}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def notice_hash(canonical: bytes) -> bytes:
    return hashlib.sha256(canonical).digest()


def parse_canonical(canonical: bytes) -> Notice:
    """The notice held in canonical bytes (the schema marker left out)."""
    document = json.loads(canonical)
    return {name: {lang: document[name][lang] for lang in LANGUAGES} for name in FIELDS}


# --- storing and reading ------------------------------------------------------------------------------------------


def store_notice(conn: Connection, *, command_id: str, canonical: bytes, org_id: int, lot: int) -> None:
    """Keeps a notice with the recall command that anchors it (in that command's transaction)."""
    conn.execute(
        insert(T_NOTICE).values(command_id=command_id, notice_hash=notice_hash(canonical), canonical=canonical, org_id=org_id, lot=lot, created_at=time.time())
    )


def held_canonical(conn: Connection, digest: bytes) -> Optional[bytes]:
    """The canonical bytes of the notice with this hash, if the service holds it (checked against the hash)."""
    for (canonical,) in conn.execute(select(T_NOTICE.c.canonical).where(T_NOTICE.c.notice_hash == digest).limit(4)):
        if notice_hash(bytes(canonical)) == digest:
            return bytes(canonical)
    return None


def held_notices(service_engine: Engine, digests: Iterable[bytes]) -> dict[bytes, Notice]:
    """The notices the service holds among `digests`, by hash."""
    wanted = {bytes(digest) for digest in digests if digest}
    if not wanted:
        return {}
    found: dict[bytes, Notice] = {}
    with service_engine.connect() as conn:
        for digest in wanted:
            canonical = held_canonical(conn, digest)
            if canonical is not None:
                found[digest] = parse_canonical(canonical)
    return found


def notice_of(service_engine: Engine, digest: Optional[bytes | str]) -> Optional[Notice]:
    """The notice with this hash (32 bytes or "0x…"), None when the service holds no text for it."""
    if digest is None:
        return None
    if isinstance(digest, str):
        digest = bytes.fromhex(digest.removeprefix("0x"))
    return held_notices(service_engine, [digest]).get(digest)


def anchored_notice(*, service_engine: Engine, index_engine: Engine, digest: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    """The canonical bytes of a notice that a recall on chain names, and those recalls (block, by): 404
    unknown_recall_notice when no recall names the hash (yet), or the service holds no text for it."""
    with index_engine.connect() as conn:
        rows = conn.execute(
            select(T_RECALL.c.block_number, T_ORG.c.name).select_from(T_RECALL.outerjoin(T_ORG, T_ORG.c.org_id == T_RECALL.c.org_id))
            .where(T_RECALL.c.notice_hash == digest).order_by(T_RECALL.c.block_number, T_RECALL.c.lot)
        ).all()  # fmt: skip
    canonical = None
    if rows:
        with service_engine.connect() as conn:
            canonical = held_canonical(conn, digest)
    if canonical is None:
        raise NotFound(f"no recall on chain names a notice 0x{digest.hex()} that this service holds", code="unknown_recall_notice")
    return canonical, [{"block": int(row.block_number), "by": row.name} for row in rows]


def notice_answer(canonical: bytes, recalls: list[dict[str, Any]]) -> dict[str, Any]:
    """GET /v1/recall-notices/{hash}: the notice, its canonical bytes (as a string) and how they are hashed, and the
    recalls on chain that name it."""
    return {
        "notice_hash": "0x" + notice_hash(canonical).hex(),
        "hash_algorithm": "sha-256",
        "canonical_form": "RFC 8785 JSON (JCS), UTF-8",
        "canonical": canonical.decode("utf-8"),
        "notice": parse_canonical(canonical),
        "recalls": recalls,
    }
