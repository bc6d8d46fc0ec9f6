"""The console's message catalogue is complete: every key a console template or module names (`_("…")`,
`gettext("…")`, `lazy("…")`), every key the pages build from a closed set (statuses, roles, command kinds, clone
flags), and the words for every error code the service raises and every custom error the contracts define, exist
and are non-empty in Chinese and in English, each defined once. The check itself is shown to fail on a catalogue
that lacks a key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ledger_service.accounts import ROLES
from ledger_service.clones import FLAG_KINDS
from ledger_service.console.i18n import LANGUAGES, LOCALE_DIR, Catalogue
from ledger_service.console.web import COMMAND_STATUSES, NAVIGATION, PART_STATUSES
from ledger_service.operations import OPERATIONS
from partledger.artifacts import REPO_ROOT, all_artifacts

CONSOLE_TEMPLATES = REPO_ROOT / "ledger_service" / "templates" / "console"
CONSOLE_MODULES = REPO_ROOT / "ledger_service" / "console"
# A key as a literal, complete argument: _("home.title"), gettext('x.y', n=1), lazy("nav.home"); not _("status." ~ s).
KEY_USE = re.compile(r"""(?<![\w.])(?:_|gettext|lazy)\(\s*(["'])([A-Za-z0-9_.\-]+)\1\s*[,)]""")
# Error codes as the service raises them: code="…", ValidationError("…", …), a class's `code = "…"`.
CODE_USE = re.compile(r"""\bcode\s*=\s*["']([a-z][a-z0-9_]*)["']|ValidationError\(\s*["']([a-z][a-z0-9_]*)["']""")
ROW_CODES = ("unreadable", "unknown_part", "not_yours", "empty_selection", "duplicate_part", "invalid_row", "mixed_batch")  # per-row codes of part_refs
HANDLER_CODES = ("chain_unavailable", "database_unavailable", "internal_error", "method_not_allowed", "http_error", "not_found", "invalid_request")
CONTRACT_FALLBACKS = ("Error", "Panic", "Unknown")  # partledger.chain.decode_revert's names besides the ABIs'


def keys_used(files: list[Path]) -> dict[str, list[str]]:
    """Every literal key in `files`, and where each is used."""
    found: dict[str, list[str]] = {}
    for path in files:
        for match in KEY_USE.finditer(path.read_text(encoding="utf-8")):
            found.setdefault(match.group(2), []).append(str(path.relative_to(REPO_ROOT)))
    return found


def console_sources() -> list[Path]:
    return sorted(CONSOLE_TEMPLATES.rglob("*.html")) + sorted(CONSOLE_MODULES.rglob("*.py"))


def raised_error_codes() -> dict[str, set[str]]:
    """The codes of the errors the service, its write path and its libraries raise, and where (the console's
    areas included: a page shows `error.<code>`, so each area's own codes belong in its catalogue)."""
    codes: dict[str, set[str]] = {}
    for package in ("ledger_service", "partledger", "labels", "wallets"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            for match in CODE_USE.finditer(path.read_text(encoding="utf-8")):
                codes.setdefault(match.group(1) or match.group(2), set()).add(str(path.relative_to(REPO_ROOT)))
    return codes


def missing_keys(catalogue: Catalogue, keys: set[str] | dict[str, list[str]]) -> dict[str, list[str]]:
    return {lang: keys_missing for lang, keys_missing in catalogue.missing(keys).items() if keys_missing}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.load()


def test_every_key_a_console_template_or_module_uses_is_in_both_languages(catalogue):
    used = keys_used(console_sources())
    assert len(used) > 100  # the extraction finds the pages' keys
    missing = missing_keys(catalogue, used)
    assert not missing, "\n".join(f"{lang}: {key} (used in {', '.join(sorted(set(used[key])))})" for lang, keys in missing.items() for key in keys)


def test_every_key_built_from_a_closed_set_is_in_both_languages(catalogue):
    built = (
        {f"status.{name}" for name in PART_STATUSES + COMMAND_STATUSES}
        | {"status.recalled"}
        | {f"role.{role}" for role in ROLES}
        | {f"kind.{kind}" for kind in OPERATIONS}
        | {f"flag.{kind}" for kind in FLAG_KINDS}
        | {entry.key for entry in NAVIGATION}
    )
    assert not missing_keys(catalogue, built)


def test_every_error_code_and_contract_error_has_words_in_both_languages(catalogue):
    raised = raised_error_codes()
    codes = set(raised) | set(ROW_CODES) | set(HANDLER_CODES)
    assert {"bad_credentials", "csrf_failed", "invalid_state", "unknown_part", "read_only_role"} <= codes
    contract = {entry["name"] for artifact in all_artifacts().values() for entry in artifact.errors} | set(CONTRACT_FALLBACKS)
    assert {"PartLedgerNotCustodian", "EvidenceLedgerSameParty", "ConsortiumRegistryKeyRevoked"} <= contract
    missing = missing_keys(catalogue, {f"error.{code}" for code in codes | contract})
    assert not missing, "\n".join(f"{lang}: {key} (raised in {', '.join(sorted(raised.get(key[6:], {'the contracts'})))})" for lang, keys in missing.items() for key in keys)


def test_each_key_is_defined_once_and_every_catalogue_file_has_both_languages(catalogue):
    assert catalogue.duplicates == []
    for lang in LANGUAGES:
        assert catalogue.messages[lang], lang
    names = {lang: sorted(path.name for path in (LOCALE_DIR / lang).glob("*.po")) for lang in LANGUAGES}
    assert names["zh"] == names["en"] and "core.po" in names["zh"]
    assert set(catalogue.messages["zh"]) == set(catalogue.messages["en"]), set(catalogue.messages["zh"]) ^ set(catalogue.messages["en"])


def test_parameters_are_filled_and_the_same_in_both_languages(catalogue):
    for key, zh in catalogue.messages["zh"].items():
        en = catalogue.messages["en"].get(key, "")
        assert set(re.findall(r"%\((\w+)\)s", zh)) == set(re.findall(r"%\((\w+)\)s", en)), key
    assert catalogue.gettext("en", "home.all", count=3) == "See all (3)"
    assert catalogue.gettext("zh", "error.sign_in_throttled", seconds=42) == "登录失败次数过多，请在 42 秒后重试。"
    assert catalogue.gettext("en", "no.such.key") == "no.such.key"


PO = """msgid ""
msgstr ""
"Content-Type: text/plain; charset=utf-8\\n"

msgid "demo.title"
msgstr "{title}"

msgid "demo.count"
msgstr "{count}"
"""


def test_the_check_fails_on_a_key_missing_or_empty_in_one_language(tmp_path):
    for lang, title, count in (("zh", "标题", "共 %(n)s 件"), ("en", "", "%(n)s parts")):
        (tmp_path / lang).mkdir()
        (tmp_path / lang / "demo.po").write_text(PO.format(title=title, count=count), encoding="utf-8")
    template = tmp_path / "page.html"
    template.write_text('<h1>{{ _("demo.title") }}</h1><p>{{ _("demo.count", n=2) }} {{ _("demo.missing") }} {{ _("status." ~ s) }}</p>', encoding="utf-8")
    found = {match.group(2) for match in KEY_USE.finditer(template.read_text())}
    assert found == {"demo.title", "demo.count", "demo.missing"}
    small = Catalogue.load(tmp_path)
    assert small.gettext("zh", "demo.count", n=2) == "共 2 件"
    assert missing_keys(small, found) == {"zh": ["demo.missing"], "en": ["demo.missing", "demo.title"]}
    (tmp_path / "zh" / "other.po").write_text(PO.format(title="again", count="again"), encoding="utf-8")
    assert sorted(Catalogue.load(tmp_path).duplicates) == ["zh: demo.count in demo.po and other.po", "zh: demo.title in demo.po and other.po"]
