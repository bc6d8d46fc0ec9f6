"""The console's message catalogue: symbolic keys (`home.inbound.title`) to text in Chinese and English.

Each area keeps its own gettext PO file, `locale/<lang>/<area>.po` (msgid = the key, msgstr = the text); a language's
catalogue is every PO file of its folder merged (a key defined in two files is reported in `duplicates`, and the
catalogue test fails on it: the first file, by name, wins).
Texts take named parameters as `%(count)s`. A key missing from a catalogue shows as itself, and
tests/test_console_catalogue.py fails on it before anyone sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LOCALE_DIR = Path(__file__).with_name("locale")
LANGUAGES = ("zh", "en")

Translate = Callable[..., str]


def lazy(key: str) -> str:
    """Marks a key used outside a template (navigation entries, messages built in Python) for the catalogue test;
    returns it unchanged, to be translated where it is shown."""
    return key


class Catalogue:
    """The merged messages of every language."""

    def __init__(self, messages: Mapping[str, Mapping[str, str]], duplicates: Iterable[str] = ()) -> None:
        self.messages = {lang: dict(texts) for lang, texts in messages.items()}
        self.duplicates = list(duplicates)  # "<lang>: <key> in a.po and b.po"

    @classmethod
    def load(cls, directory: Path = LOCALE_DIR, languages: Iterable[str] = LANGUAGES) -> Catalogue:
        messages: dict[str, dict[str, str]] = {}
        duplicates: list[str] = []
        for lang in languages:
            merged: dict[str, str] = {}
            source: dict[str, str] = {}
            for path in sorted((directory / lang).glob("*.po")):
                with path.open("rb") as handle:
                    catalog = read_po(handle, locale=None, ignore_obsolete=True)
                for message in catalog:
                    if not message.id or not isinstance(message.id, str):
                        continue  # the header, or a plural entry (the console uses parameters instead)
                    if message.id in merged:
                        duplicates.append(f"{lang}: {message.id} in {source[message.id]} and {path.name}")
                        continue
                    merged[message.id] = message.string if isinstance(message.string, str) else ""
                    source[message.id] = path.name
            messages[lang] = merged
        return cls(messages, duplicates)

    def has(self, lang: str, key: str) -> bool:
        return bool(self.messages.get(lang, {}).get(key))

    def gettext(self, lang: str, key: str, /, **params: Any) -> str:
        """The text of `key` in `lang` with its %(name)s parameters filled in; the key itself when missing."""
        text = self.messages.get(lang, {}).get(key) or key
        if not params:
            return text
        try:
            return text % params
        except (KeyError, ValueError, TypeError):
            return text

    def translator(self, lang: str) -> Translate:
        """`_` for one language: a key and named values."""
        return functools.partial(self.gettext, lang)

    def missing(self, keys: Iterable[str]) -> dict[str, list[str]]:
        """Per language, the keys absent or empty."""
        wanted = sorted(set(keys))
        return {lang: [key for key in wanted if not self.has(lang, key)] for lang in self.messages}


@functools.cache
def default_catalogue() -> Catalogue:
    """The console's catalogue, read once per process."""
    return Catalogue.load()
