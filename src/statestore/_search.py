"""Full-text search over messages and responses: the query syntax, its SQL, and snippets.

The index (revision 0006) holds one ``search_entries`` row per text, numbered by
``entry_id`` in the order texts were written, and the text's words: SQLite's FTS5 table
``search_text`` (rowid = ``entry_id``), PostgreSQL's ``search_entries.document``
``tsvector`` (the ``simple`` configuration). Triggers keep it in step.

**Query syntax**, the same on both backends (:func:`parse_query`)::

    refund policy        texts with both words (any order, any case)
    "refund policy"      the words next to each other, in that order
    refund OR return     either word (OR binds tighter than the space: a OR b c = (a|b) & c)
    refund -policy       texts with refund and without policy
    refund*              a word starting with refund (a word of letters and digits only)

Anything else is words: quotes that do not close run to the end, and operator characters
(``( ) : ^ + AND NOT NEAR``) are plain text. Each backend splits the words it is given as it
splits stored text (FTS5's ``unicode61``, PostgreSQL's parser), so ``don't`` finds "don't".

**Order**: the most recently written texts first (``entry_id`` descending). SQLite's FTS5
index holds each word's entries in that order, so a page reads its hits and stops;
PostgreSQL walks the newest entries along the key and asks the GIN index only for a word
too rare to fill a page there (:func:`_postgresql_search`). Either way a page's cost grows
with the hits asked for, not with the store: a relevance order would have to score every
match.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from statestore._tx import Tx
from statestore._validate import MAX_COUNT, arguments, check_count, check_name, check_text
from statestore.errors import InvalidArgumentError
from statestore.models import SearchHit, build

__all__ = [
    "MAX_QUERY_TERMS",
    "POSTGRESQL_INDEXED_CHARACTERS",
    "Query",
    "SearchRow",
    "parse_query",
    "reader",
    "rebuild_index",
    "search",
    "snippet",
]

MAX_QUERY_TERMS = 32
"""The most words and phrases one query may hold."""

POSTGRESQL_INDEXED_CHARACTERS = 100_000
"""How much of each text PostgreSQL indexes: a ``tsvector`` holds at most 1 MB, and the
words of 100,000 characters always fit (SQLite's FTS5 has no such limit)."""

RECENT_ENTRIES = 4096
"""PostgreSQL: how many of the newest entries a search reads first (see
:func:`_postgresql_search`)."""

SNIPPET_WORDS = 12
"""About how many words a snippet shows around the first match."""

SNIPPET_REACH = 240
"""How many characters before the first match a snippet's words are looked for in (and
twice as many after)."""

_WORD = re.compile(r"[^\W_]+")
"""A word as both backends split text: a run of letters and digits."""

_TOKEN = re.compile(r'"([^"]*)"?|(\S+)')


@dataclass(frozen=True)
class Term:
    """A word or phrase of a query (``text`` as given), or a word prefix."""

    text: str
    prefix: bool = False

    @property
    def words(self) -> list[str]:
        """The term's words, case-folded, as a snippet matches them."""
        return [word.casefold() for word in _WORD.findall(self.text)]


@dataclass(frozen=True)
class Query:
    """A parsed query: every group must match (a group: any of its terms), no excluded
    term may."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]

    @property
    def terms(self) -> list[Term]:
        """Every term that must or may match (what a snippet marks)."""
        return [term for group in self.groups for term in group]


def parse_query(text: object) -> Query:
    """Parse a query in the syntax above.

    Raises:
        InvalidArgumentError: ``text`` is not a str, holds no word to search for (empty,
            only punctuation, only excluded words), or more than :data:`MAX_QUERY_TERMS`.
    """
    with arguments():
        check_text("query", text)
    assert isinstance(text, str)
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    count = 0
    for match in _TOKEN.finditer(text):
        phrase, bare = match.group(1), match.group(2)
        if bare == "OR" and phrase is None:
            join_next = bool(groups)
            continue
        negated = bare is not None and bare.startswith("-") and len(bare) > 1
        if negated:
            bare = bare[1:]
        term = _term(phrase, bare)
        if term is None:
            continue
        count += 1
        if count > MAX_QUERY_TERMS:
            raise InvalidArgumentError("query", f"has more than {MAX_QUERY_TERMS} terms")
        if negated:
            excluded.append(term)
        elif join_next:
            groups[-1].append(term)
        else:
            groups.append([term])
        join_next = False
    if not groups:
        raise InvalidArgumentError(
            "query", f"has no word to search for: {text!r}" if text.strip() else "is empty"
        )
    return Query(tuple(tuple(group) for group in groups), tuple(excluded))


def _term(phrase: str | None, bare: str | None) -> Term | None:
    if phrase is not None:
        return Term(phrase) if _WORD.search(phrase) else None
    assert bare is not None
    prefix = bare.endswith("*") and _WORD.fullmatch(bare[:-1]) is not None
    word = bare[:-1] if prefix else bare
    return Term(word, prefix=prefix) if _WORD.search(word) else None


# -- SQL ------------------------------------------------------------------------------------


class SearchRow(NamedTuple):
    """One hit as the search reads it."""

    entry_id: int
    session_id: str
    user_id: str
    kind: str
    position: int
    content: str
    created_at: Any


_HIT = """
SELECT e.entry_id, e.session_id, s.user_id, e.kind, e.position,
       coalesce(m.content, r.content) AS content,
       coalesce(m.created_at, r.created_at) AS created_at
"""
_TEXT_OF_ENTRY = """
LEFT JOIN messages AS m
    ON e.kind = 'message' AND m.session_id = e.session_id AND m.position = e.position
LEFT JOIN responses AS r
    ON e.kind = 'response' AND r.session_id = e.session_id AND r.position = e.position
"""
"""Each entry ``e``'s text, by its key: ``coalesce(m.content, r.content)``."""

_TEXTS = "\nJOIN sessions AS s ON s.id = e.session_id" + _TEXT_OF_ENTRY
# A hit must still have its text (an entry a TRUNCATE left behind has none).
_FILTERS = {
    "text": "coalesce(m.content, r.content) IS NOT NULL",
    "session_id": "e.session_id = :session_id",
    "user_id": "s.user_id = :user_id",
    "after": "e.entry_id < :after",
}

_SEARCH = {
    "sqlite": _HIT
    + "FROM search_text JOIN search_entries AS e ON e.entry_id = search_text.rowid"
    + _TEXTS
    + "WHERE search_text MATCH :match AND {filters} ORDER BY search_text.rowid DESC LIMIT :limit",
    # In one session: its entries (by their key's index), each checked against the words
    # by rowid, so a page costs the session's texts, not the whole store's matches.
    "sqlite in a session": _HIT
    + "FROM search_entries AS e CROSS JOIN search_text ON search_text.rowid = e.entry_id"
    + _TEXTS
    + "WHERE search_text MATCH :match AND {filters} ORDER BY e.entry_id DESC LIMIT :limit",
    # The newest RECENT_ENTRIES entries only, along the key: enough for a word in one text
    # of every few hundred, whatever the store's size.
    "postgresql recent": _HIT
    + "FROM (SELECT * FROM search_entries AS e WHERE {below}"
    + " ORDER BY e.entry_id DESC LIMIT :recent) AS e"
    + _TEXTS
    + "WHERE e.document @@ ({match}) AND {filters} ORDER BY e.entry_id DESC LIMIT :limit",
    # Every match, from the GIN index (or a session's entries, by their key), then sorted:
    # ``entry_id + 0`` is not the key, so the planner cannot walk the whole key instead.
    "postgresql": _HIT
    + "FROM search_entries AS e"
    + _TEXTS
    + "WHERE e.document @@ ({match}) AND {filters} ORDER BY e.entry_id + 0 DESC LIMIT :limit",
}


def _fts5(query: Query) -> str:
    """The query as an FTS5 MATCH expression: every term a quoted string, so nothing in
    it is an operator."""

    def quoted(term: Term) -> str:
        text = '"' + term.text.replace('"', '""') + '"'
        return text + "*" if term.prefix else text

    groups = " AND ".join("(" + " OR ".join(map(quoted, group)) + ")" for group in query.groups)
    return "".join([f"({groups})", *(f" NOT {quoted(term)}" for term in query.excluded)])


def _tsquery(query: Query, params: dict[str, Any]) -> str:
    """The query as a PostgreSQL ``tsquery`` expression; the terms go in ``params``."""

    terms = iter(range(MAX_QUERY_TERMS))

    def bound(term: Term) -> str:
        name = f"term_{next(terms)}"
        if term.prefix:  # a word of letters and digits only (see _term): safe to quote
            params[name] = f"'{term.text}':*"
            return f"to_tsquery('simple', :{name})"
        params[name] = term.text
        return f"phraseto_tsquery('simple', :{name})"

    groups = [" || ".join(map(bound, group)) for group in query.groups]
    expression = " && ".join(f"({group})" for group in groups)
    for term in query.excluded:
        expression += f" && !!({bound(term)})"
    return expression


def reader(
    query: str,
    *,
    user_id: str | None,
    session_id: str | None,
    limit: int,
    after: SearchHit | None,
) -> Callable[[Tx], list[SearchHit]]:
    """Check a search's arguments and return the read that runs it.

    Raises:
        InvalidArgumentError: The query has nothing to search for, or an argument is not
            of its type or range.
    """
    parsed = parse_query(query)
    with arguments():
        check_text("user_id", user_id, optional=True)
    if session_id is not None:
        check_name(session_id, kind="session id")
    check_count("limit", limit)
    if after is not None and not (
        isinstance(after, SearchHit)
        and isinstance(after.entry_id, int)
        and 0 < after.entry_id <= MAX_COUNT
    ):
        raise InvalidArgumentError("after", "must be a SearchHit from a search")
    return partial(
        search,
        query=parsed,
        user_id=user_id,
        session_id=session_id,
        after=None if after is None else after.entry_id,
        limit=limit,
    )


def search(
    tx: Tx,
    query: Query,
    *,
    user_id: str | None,
    session_id: str | None,
    after: int | None,
    limit: int,
) -> list[SearchHit]:
    """Return up to ``limit`` hits of ``query``, most recently written first, before the
    entry ``after`` if given."""
    params: dict[str, Any] = {
        "user_id": user_id,
        "session_id": session_id,
        "after": after,
        "limit": limit,
    }
    given = {"text"} | {
        name for name in ("user_id", "session_id", "after") if params[name] is not None
    }
    filters = " AND ".join(sql for name, sql in _FILTERS.items() if name in given)
    if tx.dialect == "sqlite":
        params["match"] = _fts5(query)
        statement = _SEARCH["sqlite" if session_id is None else "sqlite in a session"]
        rows = tx.rows(statement.format(filters=filters), params)
    else:
        rows = _postgresql_search(tx, query, params, filters, recent=session_id is None)
    time = tx.time
    hits = []
    for row in rows:
        hit = SearchRow._make(row)
        hits.append(
            build(
                SearchHit,
                {
                    "entry_id": hit.entry_id,
                    "session_id": hit.session_id,
                    "user_id": hit.user_id,
                    "kind": hit.kind,
                    "position": hit.position,
                    "timestamp": time.read(hit.created_at),
                    "snippet": snippet(hit.content, query),
                },
            )
        )
    return hits


def _postgresql_search(
    tx: Tx, query: Query, params: dict[str, Any], filters: str, *, recent: bool
) -> Sequence[Sequence[Any]]:
    """PostgreSQL's rows of a search: from the newest entries when they hold a page (a
    common word), else from every match (a rare one).

    The planner, left to choose, walks the key newest first for a word it takes for common,
    and one it has no statistics for looks common: a word in 10 texts of 2,000,000 read
    all of them (590 ms). Here the walk is bounded, and what it cannot fill is asked of
    the GIN index, which costs the word's matches.
    """
    match = _tsquery(query, params)
    if recent:
        below = "e.entry_id < :after" if params["after"] is not None else "true"
        statement = _SEARCH["postgresql recent"].format(below=below, match=match, filters=filters)
        rows = tx.rows(statement, {**params, "recent": RECENT_ENTRIES})
        if len(rows) == params["limit"]:
            return rows
    return tx.rows(_SEARCH["postgresql"].format(match=match, filters=filters), params)


def snippet(content: str, query: Query, words: int = SNIPPET_WORDS) -> str:
    """The text around the first word a term matches, matches marked ``**so**``.

    Matched in Python on both backends, by the same rule (case-folded words; a prefix
    term matches the words it starts), so both give the same snippet for the same text.
    Only a window of characters around the first match is split into words: a hit in a
    text of millions of characters costs what a short one does.
    """
    wanted = {word for term in query.terms if not term.prefix for word in term.words}
    prefixes = tuple(term.text.casefold() for term in query.terms if term.prefix)

    def matches(word: str) -> bool:
        folded = word.casefold()
        return folded in wanted or folded.startswith(prefixes)

    first = _first_match(content, wanted, prefixes)
    low = max(0, first - SNIPPET_REACH)
    high = min(len(content), first + 2 * SNIPPET_REACH)
    found = list(_WORD.finditer(content, low, high))
    if not found:
        return content[:80]
    at = next((n for n, word in enumerate(found) if matches(word.group())), 0)
    start = max(0, at - words // 3)
    end = min(len(found), start + words)
    begin = found[start].start() if start or low else 0
    finish = found[end - 1].end() if end < len(found) or high < len(content) else len(content)
    pieces = []
    cursor = begin
    for word in found[start:end]:
        if matches(word.group()):
            pieces += [content[cursor : word.start()], f"**{word.group()}**"]
            cursor = word.end()
    pieces.append(content[cursor:finish])
    text = " ".join("".join(pieces).split())
    return ("…" if begin else "") + text + ("…" if finish < len(content) else "")


def _first_match(content: str, wanted: set[str], prefixes: tuple[str, ...]) -> int:
    """Where the first word a term may match starts (0 if none does)."""
    alternatives = [re.escape(word) for word in sorted(wanted)]
    alternatives += [re.escape(prefix) + r"[^\W_]*" for prefix in prefixes]
    if not alternatives:
        return 0
    pattern = re.compile(rf"(?<![^\W_])(?:{'|'.join(alternatives)})(?![^\W_])", re.IGNORECASE)
    found = pattern.search(content)
    return found.start() if found else 0


# -- rebuilding ------------------------------------------------------------------------------

_STORED_TEXTS = """
SELECT session_id, kind, position, content FROM (
    SELECT session_id, 'message' AS kind, position, content, created_at FROM messages
    UNION ALL
    SELECT session_id, 'response' AS kind, position, content, created_at FROM responses
) AS texts ORDER BY created_at, session_id, kind, position
"""

_REBUILD = {
    "sqlite": [
        "DELETE FROM search_entries",
        "INSERT INTO search_text (search_text) VALUES ('delete-all')",
        "INSERT INTO search_entries (session_id, kind, position) "
        f"SELECT session_id, kind, position FROM ({_STORED_TEXTS}) AS ordered",
        # The entries just made, each joined to its text by key: no second sort of them all.
        "INSERT INTO search_text (rowid, content) "
        "SELECT e.entry_id, coalesce(m.content, r.content) FROM search_entries AS e"
        + _TEXT_OF_ENTRY,
    ],
    "postgresql": [
        "DELETE FROM search_entries",
        "INSERT INTO search_entries (session_id, kind, position, document) "
        "SELECT session_id, kind, position, "
        f"to_tsvector('simple', left(content, {POSTGRESQL_INDEXED_CHARACTERS})) "
        f"FROM ({_STORED_TEXTS}) AS ordered",
    ],
}
"""Empty the index and index every stored text again, oldest first (revision 0006 fills
it the same way)."""


def rebuild_index(tx: Tx) -> int:
    """Rebuild the search index from the stored texts; return how many it holds."""
    for statement in _REBUILD[tx.dialect]:
        tx.run(statement)
    [(count,)] = tx.rows("SELECT count(*) FROM search_entries")
    return int(count)
