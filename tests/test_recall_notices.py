"""Recall notices without a chain: the canonical form is RFC 8785 JSON whose SHA-256 is the notice hash (a fixed
vector, and the same bytes as an independent JCS serialisation), every refusal of a notice at once with its field and
code, and migration 0007 creating exactly the table declared, on SQLite and PostgreSQL, where a notice kept is read
back byte for byte. The notice on the pages, the API and the chain: tests/test_verify_matrix.py, test_verify_browser.py
and test_console_maker.py."""

from __future__ import annotations

import hashlib
import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, inspect

from ledger_service import migrate
from ledger_service.errors import Unprocessable
from ledger_service.notice_tables import RecallNoticeRecord
from ledger_service.recall_notices import FIELDS, canonical_bytes, checked_notice, held_canonical, notice_hash, parse_canonical, store_notice
from ledger_service.tables import SERVICE_METADATA
from partledger.db import make_engine
from tests.test_scan_migration import downgrade

NOTICE = {
    "title": {"zh": "制动卡钳螺栓召回", "en": "Brake caliper bolt recall"},
    "reason": {"zh": "螺栓扭矩不足。", "en": "Bolts under-torqued."},
    "risk": {"zh": "卡钳可能松动。", "en": "The caliper may come loose."},
    "remedy": {"zh": "免费更换。", "en": "Free replacement."},
    "action": {"zh": "停止安装。\n联系经销商。", "en": "Stop fitting.\nCall your dealer."},
    "contact": {"zh": "400-800-1234", "en": "+86 400 800 1234"},
}
CANONICAL = (
    '{"action":{"en":"Stop fitting.\\nCall your dealer.","zh":"停止安装。\\n联系经销商。"},"contact":{"en":"+86 400 800 1234","zh":"400-800-1234"},'
    '"reason":{"en":"Bolts under-torqued.","zh":"螺栓扭矩不足。"},"remedy":{"en":"Free replacement.","zh":"免费更换。"},'
    '"risk":{"en":"The caliper may come loose.","zh":"卡钳可能松动。"},"schema":"partledger/recall-notice/1",'
    '"title":{"en":"Brake caliper bolt recall","zh":"制动卡钳螺栓召回"}}'
).encode("utf-8")


def test_the_canonical_form_is_rfc8785_json_and_its_sha256_is_the_hash():
    canonical = canonical_bytes(checked_notice(NOTICE))
    assert canonical == CANONICAL
    assert notice_hash(canonical) == hashlib.sha256(CANONICAL).digest()
    assert parse_canonical(canonical) == NOTICE
    reordered = {name: {"en": NOTICE[name]["en"], "zh": NOTICE[name]["zh"]} for name in reversed(FIELDS)}
    assert canonical_bytes(checked_notice(reordered)) == canonical  # the order a client sends does not matter


TEXT = st.text(st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\n\t\"\\/"), min_size=1, max_size=40).filter(str.strip)


@settings(max_examples=200, deadline=None)
@given(texts=st.lists(TEXT, min_size=12, max_size=12))
def test_any_valid_notice_hashes_as_its_jcs_bytes(texts):
    """The bytes are what an independent JCS serialiser writes for a strings-only object: members sorted by their
    UTF-16 code units, the minimal escapes of ECMAScript's JSON.stringify, UTF-8."""
    notice = {name: {"zh": texts[2 * i], "en": texts[2 * i + 1]} for i, name in enumerate(FIELDS)}
    canonical = canonical_bytes(checked_notice(notice))
    assert canonical == jcs({**notice, "schema": "partledger/recall-notice/1"}).encode("utf-8")
    assert parse_canonical(canonical) == notice


def jcs(value: object) -> str:
    if isinstance(value, dict):
        members = sorted(value.items(), key=lambda item: item[0].encode("utf-16-be"))
        return "{" + ",".join(f"{jcs(name)}:{jcs(member)}" for name, member in members) + "}"
    escapes = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return '"' + "".join(escapes.get(char, f"\\u{ord(char):04x}" if ord(char) < 0x20 else char) for char in str(value)) + '"'


def test_a_notice_is_refused_with_every_problem_at_once():
    bad = {
        "title": {"zh": "   ", "en": "x" * 201},
        "reason": {"zh": "ok", "en": "bell\x07"},
        "risk": {"zh": "ok", "en": "lone \ud800"},
        "remedy": {"zh": "ok"},
        "contact": {"zh": "ok", "en": "ok", "fr": "non"},
        "extra": {"zh": "x", "en": "x"},
    }
    with pytest.raises(Unprocessable) as refused:
        checked_notice(bad)
    assert refused.value.code == "invalid_notice"
    assert [(problem["field"], problem["code"]) for problem in refused.value.details] == [
        ("extra", "unknown_field"),
        ("title.zh", "blank"),
        ("title.en", "too_long"),
        ("reason.en", "invalid_text"),
        ("risk.en", "invalid_text"),
        ("remedy.en", "missing"),
        ("action", "missing"),
        ("contact.fr", "unknown_field"),
    ]
    assert checked_notice(NOTICE | {"title": {"zh": "标\t题", "en": "x" * 200}})["title"]["en"] == "x" * 200  # a tab, the limit: fine


def test_migration_0007_matches_the_table_keeps_a_notice_byte_for_byte_and_downgrades(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    mine = MetaData()
    SERVICE_METADATA.tables[RecallNoticeRecord.__tablename__].to_metadata(mine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": lambda name, kind, _parent: kind != "table" or name in mine.tables})
        assert compare_metadata(context, mine) == []
    canonical = canonical_bytes(checked_notice(NOTICE))
    with engine.begin() as conn:
        for command in ("c-1", "c-2"):  # the same notice with two recalls: two rows, no clash
            store_notice(conn, command_id=command, canonical=canonical, org_id=1, lot=2**62)
    with engine.connect() as conn:
        assert held_canonical(conn, notice_hash(canonical)) == canonical
        assert held_canonical(conn, hashlib.sha256(b"other").digest()) is None
    assert json.loads(canonical)["schema"] == "partledger/recall-notice/1"
    downgrade(engine, "0006")
    assert "recall_notices" not in inspect(engine).get_table_names()
    migrate.upgrade(engine)
    assert "recall_notices" in inspect(engine).get_table_names()
