"""Text search by index: text folded once into words (no case, no accents), matched by SQLite FTS5 or PostgreSQL full text.

The stored ``search_text`` of a document (and of an archive package) is its words, folded here —
lower case, accents and ligatures removed, punctuation dropped — joined by single spaces.  Both
backends index those words (migration 073): SQLite in an FTS5 table kept by triggers
(``unicode61 remove_diacritics 2``), PostgreSQL in a GIN index over ``to_tsvector('simple', …)``.
Over text that holds only words and spaces both split the same words, so both answer the same.

A query matches a document when each of its space-separated terms does; a term is the phrase of its
words, the last one a prefix: « 2024-DE » is the phrase 2024 then a word starting with « de », and
finds « 2024-DEL-017 »; « dupont jean » finds « Jean Dupont ».  A word is never matched from its
middle (« pont » does not find « Dupont »): that is what an index of words can answer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

_FOLD = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ø": "o", "Ø": "o", "đ": "d",
                       "Đ": "d", "ł": "l", "Ł": "l", "ı": "i"})
_WORD = re.compile(r"[^\W_]+")

# The tables whose ``search_text`` is indexed, and their SQLite FTS5 table (external content, same rowid).
FTS_TABLES = {"documents": "documents_fts", "archive_packages": "archive_packages_fts"}


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, without accents or ligatures, punctuation dropped."""
    folded = unicodedata.normalize("NFKD", text.translate(_FOLD)).lower()
    return _WORD.findall("".join(c for c in folded if not unicodedata.combining(c)))


def folded(values: Iterable[Any]) -> str:
    """The ``search_text`` stored for these values (strings and numbers; anything else is left out)."""
    return " ".join(w for v in values if isinstance(v, (str, int, float))
                    for w in words(str(v)))


def terms(q: str) -> list[list[str]]:
    """The query's terms, each the list of its words (terms without a word are dropped)."""
    return [ws for part in q.split() if (ws := words(part))]


def fts5_query(q: str) -> str | None:
    """The FTS5 MATCH expression of ``q`` (None: no word to look for)."""
    found = terms(q)
    if not found:
        return None
    return " AND ".join('"' + " ".join(ws) + '" *' for ws in found)


def tsquery(q: str) -> str | None:
    """The PostgreSQL ``to_tsquery('simple', …)`` text of ``q`` (None: no word to look for)."""
    found = terms(q)
    if not found:
        return None
    return " & ".join("(" + " <-> ".join([*ws[:-1], ws[-1] + ":*"]) + ")" for ws in found)


def condition(dialect: str, table: str, q: str | None, arg: Callable[[Any], str]) -> str | None:
    """The WHERE condition on ``table`` (documents, archive_packages) for the query ``q``, using its text
    index; None when ``q`` holds no word (no condition).  ``arg(value)`` adds a parameter."""
    if not q:
        return None
    if dialect == "postgres":
        text = tsquery(q)
        return None if text is None else f"to_tsvector('simple', search_text) @@ to_tsquery('simple', {arg(text)})"
    match = fts5_query(q)
    if match is None:
        return None
    fts = FTS_TABLES[table]
    return f"{table}.rowid IN (SELECT rowid FROM {fts} WHERE {fts} MATCH {arg(match)})"
