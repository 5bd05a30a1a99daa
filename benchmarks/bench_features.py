"""What revision 0006's features cost: full-text search, forks, listing filters, and the
search index's share of every write, each figure a ratio measured in one run.

For each backend (SQLite, and PostgreSQL unless left out) the script builds two stores, of
100,000 and of 1,000,000 user messages (``--quick``: 2,000 and 10,000), each message with
one agent response, so the search index holds twice as many texts. Sessions hold 10
messages each, except one of 2,000 (``--quick``: 200), the session forked. The rows are
written with raw SQL, fast: SQLite ``executemany`` with the six search triggers dropped
(and made again after), PostgreSQL ``COPY`` with the tables' triggers disabled (the session
count set by hand); then ``rebuild_search_index()`` indexes every text, timed. PostgreSQL
is ``VACUUM (ANALYZE)``d after; SQLite is not ``ANALYZE``d (statestore never does it). A
text is 12 (message) or 24 (response) words of a 2,744-word vocabulary; a common term is
in 90% of the messages, a rare one in 10 of them, spread from the oldest to the newest;
responses hold neither.

1. Search: the first page (``limit=20``) of a rare and of a common term, and the common
   term's second page (``after=``), next to ``list_sessions(limit=50)`` on the same store;
   and each at 1,000,000 messages over the same at 100,000. Hits come newest first along an
   index, so a page should cost what its hits cost, however large the store.
2. Fork: ``fork_session`` of the 2,000-message session next to ``load_session`` of it.
3. Listing filters (``limit=50``) on the larger store, next to the unfiltered listing; each
   row says how many sessions the filter matches.
4. The search index's share of a write: ``append_to_session`` (one message and one
   response), ``save_session`` of a loaded session after one exchange, and the fork, on the
   larger store at head and on a copy of it with the search triggers dropped.

Medians of repeated calls, measured in alternation (each call in turn, round after round,
after warm-up rounds), so that every figure of a table sees the same background load. The
machine is shared and noisy: read the ratios, not the absolute times. Progress goes to
stderr. Exits 0 whatever the figures, non-zero on any error.

Run:  python benchmarks/bench_features.py                  (about five minutes)
      python benchmarks/bench_features.py --quick          (small sizes, SQLite: a smoke run)
      python benchmarks/bench_features.py --postgresql URL (the database to create and drop)
      python benchmarks/bench_features.py --no-postgresql  (SQLite only)

The PostgreSQL database (default ``postgresql+asyncpg://postgres@127.0.0.1/bench_features``
at full size; ``--quick`` uses none unless given) must not exist: the script creates it, and
``<name>_small`` and ``<name>_nosearch`` beside it, and drops all three when done.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

import asyncpg
from sqlalchemy import URL, make_url

from statestore import AgentResponse, Session, StateStore, UserMessage, migrate
from statestore.models import format_timestamp

DEFAULT_POSTGRESQL = "postgresql+asyncpg://postgres@127.0.0.1/bench_features"

MESSAGES_PER_SESSION = 10
COMMON_TERM = "account"
COMMON_SHARE = 0.9
"""The share of user messages holding the common term."""
RARE_TERM = "quokka"
RARE_HITS = 10
"""How many user messages hold the rare term."""
MESSAGE_WORDS, RESPONSE_WORDS = 12, 24
SYLLABLES = ("ba", "de", "fi", "go", "ku", "la", "me", "ni", "po", "ru", "sa", "te", "vi", "zo")
VOCABULARY = ["".join(parts) for parts in itertools.product(SYLLABLES, repeat=3)]
"""The filler words: 2,744 made-up words, neither term among them."""

LONG_ID = "long-session"
"""The session of ``long_history`` messages: the one forked, and the parent of the forks
stored (1% of the sessions)."""
START = datetime(2026, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=90)
"""Sessions are created evenly over this span from START; each lasts up to 3 days."""
CHUNK_SESSIONS = 5_000
"""Sessions generated and written at a time."""

PAGE = 20
"""A search page (``search_messages``' default limit)."""
LISTED = 50
"""A listing page."""
WARMUP = 3
"""Rounds run before measuring, not counted."""
ROTATION = 20
"""Sessions the appends and saves cycle through, so that no history grows much."""

SQLITE_SEARCH_TRIGGERS = [
    f"{table}_search_{event}"
    for table in ("messages", "responses")
    for event in ("insert", "delete", "update")
]
POSTGRESQL_SEARCH_TRIGGERS = [
    (f"{table}_{trigger}", table)
    for table in ("messages", "responses")
    for trigger in ("search", "search_update")
]
"""(trigger, table) of each PostgreSQL search trigger."""
COUNT_SESSIONS = "SELECT sum(value) FROM statestore_counters WHERE name LIKE 'sessions/%'"
"""The number of sessions, as the counter rows of revision 0004 hold it."""

SESSION_COLUMNS = [
    "id",
    "user_id",
    "active_seed_id",
    "active_persona_id",
    "project_id",
    "message_count",
    "response_count",
    "created_at",
    "updated_at",
    "metadata",
    "extra",
    "version",
    "state_token",
    "unset_fields",
    "parent_session_id",
    "forked_at",
]
MESSAGE_COLUMNS = ["session_id", "position", "content", "created_at", "extra"]
RESPONSE_COLUMNS = [
    "session_id",
    "position",
    "content",
    "reported_session_id",
    "seed_id",
    "phase_reached",
    "evaluation_passed",
    "created_at",
    "extra",
]

# Row labels (the smoke test looks for them).
LIST_NEWEST = f"list newest {LISTED}, no filter"
SEARCH_RARE = f'search "{RARE_TERM}": rare term, first page ({RARE_HITS} hits)'
SEARCH_COMMON = f'search "{COMMON_TERM}": common term, first page of {PAGE}'
SEARCH_COMMON_NEXT = f'search "{COMMON_TERM}": common term, second page (after=)'
APPEND = "append_to_session, 1 message + 1 response"
SAVE = "save_session of a loaded session after 1 exchange"
HEAD, BARE = "head", "without search triggers"

Target = Path | URL
"""What ``StateStore.open`` is given: a SQLite file or a PostgreSQL database."""
Timed = Callable[[], Awaitable[float]]
"""One call that returns how long its timed part took, in seconds."""
Key = TypeVar("Key")


def progress(message: str) -> None:
    """Say on stderr what the run is doing."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def expect(condition: bool, message: str) -> None:
    """Fail the run (a non-zero exit) when a call did not return what it must."""
    if not condition:
        raise RuntimeError(message)


@dataclass(frozen=True)
class Sizes:
    """How large the stores are and how many rounds each figure gets."""

    small_messages: int
    large_messages: int
    long_history: int
    search_rounds: int
    listing_rounds: int
    fork_rounds: int
    write_rounds: int


FULL = Sizes(100_000, 1_000_000, 2_000, 100, 50, 15, 100)
QUICK = Sizes(2_000, 10_000, 200, 5, 5, 3, 10)


@dataclass(frozen=True)
class Shape:
    """What one store holds: ``messages`` user messages (and as many responses), in
    sessions of MESSAGES_PER_SESSION and the session LONG_ID of ``long_history``."""

    messages: int
    long_history: int

    @property
    def sessions(self) -> int:
        """How many sessions, the long one included."""
        return 1 + (self.messages - self.long_history) // MESSAGES_PER_SESSION

    @property
    def texts(self) -> int:
        """How many texts the search index holds: every message and response."""
        return 2 * self.messages

    def created_at(self, index: int) -> datetime:
        """When the index-th session (0: the long one) was created: evenly over SPAN."""
        return START + SPAN * index / max(1, self.sessions - 1)


def session_id(index: int) -> str:
    """The id of the index-th regular session (from 1)."""
    return f"session-{index:07d}"


# -- the data ------------------------------------------------------------------------------


@dataclass
class Chunk:
    """Rows of some sessions, in the stored formats, for the tables of the same names."""

    sessions: list[tuple[Any, ...]]
    messages: list[tuple[Any, ...]]
    responses: list[tuple[Any, ...]]


def message_text(rng: random.Random, *, rare: bool) -> str:
    """A user message: filler words, the common term in 90% of them, the rare if asked."""
    words = rng.choices(VOCABULARY, k=MESSAGE_WORDS)
    if rng.random() < COMMON_SHARE:
        words[3] = COMMON_TERM
    if rare:
        words.append(RARE_TERM)
    return " ".join(words)


def response_text(rng: random.Random) -> str:
    """An agent response: filler words only."""
    return " ".join(rng.choices(VOCABULARY, k=RESPONSE_WORDS))


def session_row(
    index: int, history: int, created: datetime, lasts: timedelta, rng: random.Random
) -> list[Any]:
    """The index-th session's row (0: the long one), timestamps as datetimes.

    Drawn so that each listing filter matches a known share: 10 seeds (10% each), a
    persona for half the sessions out of 10 (5% each), 100 users (1% each), metadata tier
    "gold" for 10%, and 1% of the sessions forks of LONG_ID.
    """
    persona = f"persona-{rng.randrange(10)}" if rng.random() < 0.5 else None
    tier = "gold" if rng.random() < 0.1 else rng.choice(("silver", "bronze"))
    fork = index > 0 and rng.random() < 0.01
    lineage = {"parent_session_id": LONG_ID, "forked_at": format_timestamp(created)}
    return [
        LONG_ID if index == 0 else session_id(index),
        f"user-{rng.randrange(100)}",
        f"seed-{rng.randrange(10)}",
        persona,
        None,
        history,
        history,
        created,
        created + lasts + timedelta(seconds=1),
        json.dumps({"tier": tier, "channel": rng.choice(("web", "api"))}),
        json.dumps(lineage) if fork else None,
        1,
        index + 1,
        None,
        LONG_ID if fork else None,
        created if fork else None,
    ]


def chunks(shape: Shape, timestamp: Callable[[datetime], Any]) -> Iterator[Chunk]:
    """Every row of a store, CHUNK_SESSIONS sessions at a time, oldest session first, the
    same on every backend; timestamps passed through ``timestamp`` (the stored form).

    Every ``messages / RARE_HITS``-th user message (from the middle of the first stretch)
    holds the rare term, so its hits spread from the oldest messages to the newest.
    """
    rng = random.Random(20261201)
    stride = max(1, shape.messages // RARE_HITS)
    made = 0
    for first in range(0, shape.sessions, CHUNK_SESSIONS):
        chunk = Chunk([], [], [])
        for index in range(first, min(first + CHUNK_SESSIONS, shape.sessions)):
            history = shape.long_history if index == 0 else MESSAGES_PER_SESSION
            created = shape.created_at(index)
            lasts = timedelta(seconds=rng.uniform(60, 3 * 86_400))
            row = session_row(index, history, created, lasts, rng)
            owner, seed = row[0], row[2]
            for position in range(history):
                asked = created + lasts * position / history
                rare = made % stride == stride // 2 and made // stride < RARE_HITS
                made += 1
                chunk.messages.append(
                    (owner, position, message_text(rng, rare=rare), timestamp(asked), None)
                )
                chunk.responses.append(
                    (
                        owner,
                        position,
                        response_text(rng),
                        owner,
                        seed,
                        "execute",
                        rng.random() < 0.8,
                        timestamp(asked + lasts / (2 * history)),
                        None,
                    )
                )
            for column in ("created_at", "updated_at", "forked_at"):
                at = SESSION_COLUMNS.index(column)
                row[at] = None if row[at] is None else timestamp(row[at])
            chunk.sessions.append(tuple(row))
        yield chunk


def sqlite_stamp(moment: datetime) -> str:
    """A timestamp in statestore's SQLite storage format."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def exchange(rng: random.Random) -> tuple[UserMessage, AgentResponse]:
    """A new user message and agent response, their texts like the stored ones."""
    response = AgentResponse(
        content=response_text(rng),
        seed_id="seed-1",
        phase_reached="execute",
        evaluation_passed=True,
    )
    return UserMessage(content=message_text(rng, rare=False)), response


# -- the backends --------------------------------------------------------------------------


@dataclass(frozen=True)
class Built:
    """A filled store and what filling it took."""

    target: Target
    shape: Shape
    insert_seconds: float
    """Writing the rows with raw SQL, the search triggers off."""
    rebuild_seconds: float
    """``rebuild_search_index()``."""


async def rebuild(target: Target, shape: Shape) -> float:
    """Index every stored text with ``rebuild_search_index()``; return how long it took."""
    progress(f"  rebuild_search_index() of {shape.texts:,} texts")
    async with StateStore.open(target) as store:
        start = time.perf_counter()
        indexed = await store.rebuild_search_index()
        elapsed = time.perf_counter() - start
    expect(indexed == shape.texts, f"rebuilt {indexed:,} entries, not {shape.texts:,}")
    return elapsed


class Backend(Protocol):
    """Where the stores are made: SQLite files or PostgreSQL databases."""

    name: str

    async def build(self, label: str, shape: Shape) -> Built:
        """Make a store at head holding ``shape``, its search index rebuilt."""
        ...

    async def copy_without_search(self, built: Built) -> Target:
        """Copy a built store (closed) and drop the search triggers in the copy."""
        ...

    async def close(self) -> None:
        """Remove every store made."""
        ...


class SQLiteFiles:
    """Stores in files of a temporary folder."""

    name = "SQLite"

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="statestore-bench-features-"))

    async def build(self, label: str, shape: Shape) -> Built:
        """Migrate a new file, write its rows with ``executemany`` (search triggers dropped,
        made again after), and rebuild the index."""
        path = self.folder / f"{label}.db"
        await migrate.upgrade(path)
        progress(f"  inserting {shape.messages:,} messages and responses")
        start = time.perf_counter()
        self.insert(path, shape)
        inserted = time.perf_counter() - start
        return Built(path, shape, inserted, await rebuild(path, shape))

    @staticmethod
    def insert(path: Path, shape: Shape) -> None:
        """Write every row of ``shape``; the session-count trigger counts them."""
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute("PRAGMA cache_size = -262144")  # 256 MiB
            names = ", ".join(f"'{name}'" for name in SQLITE_SEARCH_TRIGGERS)
            triggers = connection.execute(
                f"SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name IN ({names})"
            ).fetchall()
            expect(len(triggers) == len(SQLITE_SEARCH_TRIGGERS), "search triggers missing")
            for name in SQLITE_SEARCH_TRIGGERS:
                connection.execute(f"DROP TRIGGER {name}")
            for chunk in chunks(shape, sqlite_stamp):
                connection.execute("BEGIN")
                for table, columns, rows in (
                    ("sessions", SESSION_COLUMNS, chunk.sessions),
                    ("messages", MESSAGE_COLUMNS, chunk.messages),
                    ("responses", RESPONSE_COLUMNS, chunk.responses),
                ):
                    marks = ", ".join("?" for _ in columns)
                    connection.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                    )
                connection.execute("COMMIT")
            for (statement,) in triggers:
                connection.execute(statement)
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            [(counted,)] = connection.execute(COUNT_SESSIONS).fetchall()
            expect(counted == shape.sessions, f"{counted:,} sessions counted")
        finally:
            connection.close()

    async def copy_without_search(self, built: Built) -> Target:
        """Copy the file (its WAL checkpointed first) and drop the six search triggers."""
        assert isinstance(built.target, Path)
        with sqlite3.connect(built.target) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        copy = built.target.with_name(f"{built.target.stem}-nosearch.db")
        shutil.copyfile(built.target, copy)
        connection = sqlite3.connect(copy, isolation_level=None)
        try:
            for name in SQLITE_SEARCH_TRIGGERS:
                connection.execute(f"DROP TRIGGER {name}")
        finally:
            connection.close()
        return copy

    async def close(self) -> None:
        """Delete the folder."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def version(self) -> str:
        """The SQLite library's version."""
        return sqlite3.sqlite_version


def driver_dsn(url: URL) -> str:
    """The URL as asyncpg takes it."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgreSQLDatabases:
    """Stores in databases of their own on one server: the URL's database for the larger
    store, ``<name>_small`` and ``<name>_nosearch`` beside it."""

    name = "PostgreSQL"

    def __init__(self, url: URL) -> None:
        self.url = url
        self.created: list[str] = []

    async def admin(self, statement: str, *, query: bool = False) -> Any:
        """Run a statement on the server's ``postgres`` database (a query: return its
        first value)."""
        connection = await asyncpg.connect(driver_dsn(self.url.set(database="postgres")))
        try:
            if query:
                return await connection.fetchval(statement)
            return await connection.execute(statement)
        finally:
            await connection.close()

    def database(self, label: str) -> str:
        """The database name of the store ``label``."""
        assert self.url.database is not None
        return self.url.database if label == "large" else f"{self.url.database}_{label}"

    async def check_free(self) -> None:
        """Refuse to start if a database the run would create exists: it may not be the
        script's to drop."""
        names = ", ".join(f"'{self.database(label)}'" for label in ("large", "small", "nosearch"))
        taken = await self.admin(
            f"SELECT string_agg(datname, ', ') FROM pg_database WHERE datname IN ({names})",
            query=True,
        )
        expect(taken is None, f"database(s) {taken} exist: drop them or pass another --postgresql")

    async def create(self, name: str, template: str | None = None) -> URL:
        """Create database ``name`` (a copy of ``template`` if given)."""
        statement = f'CREATE DATABASE "{name}"'
        if template is not None:
            statement += f' TEMPLATE "{template}" STRATEGY FILE_COPY'
        for attempt in itertools.count():
            try:
                await self.admin(statement)
                break
            except asyncpg.ObjectInUseError:  # the template had a visitor (autovacuum)
                if attempt == 20:
                    raise
                await asyncio.sleep(1)
        self.created.append(name)
        return self.url.set(database=name)

    async def build(self, label: str, shape: Shape) -> Built:
        """Migrate a new database, ``COPY`` its rows in (triggers disabled), rebuild the
        index, then ``VACUUM (ANALYZE)``."""
        url = await self.create(self.database(label))
        await migrate.upgrade(url)
        connection = await asyncpg.connect(driver_dsn(url))
        try:
            progress(f"  copying in {shape.messages:,} messages and responses")
            start = time.perf_counter()
            await self.insert(connection, shape)
            inserted = time.perf_counter() - start
            rebuilt = await rebuild(url, shape)
            progress("  VACUUM (ANALYZE)")
            await connection.execute(
                "VACUUM (ANALYZE) sessions, messages, responses, search_entries"
            )
        finally:
            await connection.close()
        return Built(url, shape, inserted, rebuilt)

    @staticmethod
    async def insert(connection: asyncpg.Connection, shape: Shape) -> None:
        """Write every row of ``shape`` in one transaction, the three tables' triggers
        (session count, search) disabled, and add the sessions to the count by hand."""
        async with connection.transaction():
            for table in ("sessions", "messages", "responses"):
                await connection.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            for chunk in chunks(shape, lambda moment: moment):
                await connection.copy_records_to_table(
                    "sessions", records=chunk.sessions, columns=SESSION_COLUMNS
                )
                await connection.copy_records_to_table(
                    "messages", records=chunk.messages, columns=MESSAGE_COLUMNS
                )
                await connection.copy_records_to_table(
                    "responses", records=chunk.responses, columns=RESPONSE_COLUMNS
                )
            for table in ("sessions", "messages", "responses"):
                await connection.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
            await connection.execute(
                "UPDATE statestore_counters SET value = value + $1 WHERE name = 'sessions/0'",
                shape.sessions,
            )
            counted = await connection.fetchval(COUNT_SESSIONS)
            expect(counted == shape.sessions, f"{counted:,} sessions counted")

    async def copy_without_search(self, built: Built) -> Target:
        """``CREATE DATABASE ... TEMPLATE`` the store, then drop its search triggers."""
        assert isinstance(built.target, URL)
        assert built.target.database is not None
        url = await self.create(self.database("nosearch"), template=built.target.database)
        connection = await asyncpg.connect(driver_dsn(url))
        try:
            for trigger, table in POSTGRESQL_SEARCH_TRIGGERS:
                await connection.execute(f"DROP TRIGGER {trigger} ON {table}")
        finally:
            await connection.close()
        return url

    async def close(self) -> None:
        """Drop every database made."""
        for name in reversed(self.created):
            await self.admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        self.created.clear()

    async def version(self) -> str:
        """The server's version."""
        return str(await self.admin("SHOW server_version", query=True)).split()[0]


# -- timing --------------------------------------------------------------------------------


def timed(call: Callable[[], Awaitable[object]]) -> Timed:
    """A Timed of a whole call."""

    async def run() -> float:
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    return run


async def alternate(calls: Mapping[Key, Timed], rounds: int) -> dict[Key, float]:
    """Run the calls in turn, round after round (WARMUP rounds first, not counted);
    return each one's median in seconds."""
    samples: dict[Key, list[float]] = {key: [] for key in calls}
    for round_number in range(WARMUP + rounds):
        for key, call in calls.items():
            elapsed = await call()
            if round_number >= WARMUP:
                samples[key].append(elapsed)
    return {key: statistics.median(durations) for key, durations in samples.items()}


def us(seconds: float) -> str:
    """A duration in microseconds."""
    return f"{seconds * 1e6:,.0f} µs"


def times(ratio: float) -> str:
    """A ratio."""
    return f"{ratio:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a markdown table."""
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()


# -- the figures ---------------------------------------------------------------------------


async def search_calls(store: StateStore) -> dict[str, Timed]:
    """Section 1's calls on one store: the listing yardstick and the three searches,
    checked once first."""
    common = await store.search_messages(COMMON_TERM, limit=PAGE)
    expect(len(common) == PAGE, f"common term: {len(common)} hits")
    rare = await store.search_messages(RARE_TERM, limit=PAGE)
    expect(len(rare) == RARE_HITS, f"rare term: {len(rare)} hits, not {RARE_HITS}")
    second = await store.search_messages(COMMON_TERM, limit=PAGE, after=common[-1])
    expect(len(second) == PAGE and second[0].entry_id < common[-1].entry_id, "second page")
    return {
        LIST_NEWEST: timed(lambda: store.list_sessions(limit=LISTED)),
        SEARCH_RARE: timed(lambda: store.search_messages(RARE_TERM, limit=PAGE)),
        SEARCH_COMMON: timed(lambda: store.search_messages(COMMON_TERM, limit=PAGE)),
        SEARCH_COMMON_NEXT: timed(
            lambda: store.search_messages(COMMON_TERM, limit=PAGE, after=common[-1])
        ),
    }


async def search_figures(
    small: StateStore, large: StateStore, shapes: tuple[Shape, Shape], rounds: int
) -> None:
    """Section 1: each search on both stores, as ratios to the listing and 1M / 100k."""
    calls = {
        (name, size): call
        for size, store in (("small", small), ("large", large))
        for name, call in (await search_calls(store)).items()
    }
    median = await alternate(calls, rounds)
    low, high = (f"{shape.messages:,}" for shape in shapes)
    print(
        f"Search: first pages (limit={PAGE}) next to list_sessions(limit={LISTED}) on the "
        f"same store, stores of {low} and {high} user messages (each with a response: "
        f"{shapes[0].texts:,} and {shapes[1].texts:,} texts indexed); the common term is in "
        f"{COMMON_SHARE:.0%} of the messages, the rare one in {RARE_HITS}. Medians of "
        f"{rounds} calls.\n"
    )
    rows = []
    for name in (LIST_NEWEST, SEARCH_RARE, SEARCH_COMMON, SEARCH_COMMON_NEXT):
        at_small, at_large = median[name, "small"], median[name, "large"]
        rows.append(
            [
                name,
                us(at_small),
                times(at_small / median[LIST_NEWEST, "small"]),
                us(at_large),
                times(at_large / median[LIST_NEWEST, "large"]),
                times(at_large / at_small),
            ]
        )
    table(
        [
            "operation",
            f"{low} messages",
            "/ list newest",
            f"{high} messages",
            "/ list newest",
            f"{high} / {low}",
        ],
        rows,
    )


def fork_call(store: StateStore, source_id: str) -> Timed:
    """Time a fork of ``source_id``; the fork is deleted afterwards, untimed."""

    async def fork() -> float:
        start = time.perf_counter()
        copy = await store.fork_session(source_id)
        elapsed = time.perf_counter() - start
        expect(await store.delete_session(copy.id), "the fork was not stored")
        return elapsed

    return fork


async def fork_figure(store: StateStore, shape: Shape, rounds: int) -> None:
    """Section 2: fork the long session next to loading it."""
    loaded = await store.load_session(LONG_ID)
    expect(loaded is not None and len(loaded.user_messages) == shape.long_history, "long")
    median = await alternate(
        {"fork": fork_call(store, LONG_ID), "load": timed(lambda: store.load_session(LONG_ID))},
        rounds,
    )
    print(
        f"Fork: fork_session of a session of {shape.long_history:,} messages + "
        f"{shape.long_history:,} responses (its texts indexed again by the triggers) next to "
        f"load_session of it, on the store of {shape.messages:,} messages. Medians of "
        f"{rounds} calls.\n"
    )
    table(
        ["operation", "fork_session", "load_session", "fork / load"],
        [
            [
                f"fork a session of {shape.long_history:,} + {shape.long_history:,}",
                us(median["fork"]),
                us(median["load"]),
                times(median["fork"] / median["load"]),
            ]
        ],
    )


def listing_filters(shape: Shape) -> dict[str, dict[str, Any]]:
    """Each filter measured, by its row label (the shares are drawn in session_row)."""
    return {
        'active_seed_id="seed-3"': {"active_seed_id": "seed-3"},
        'active_persona_id="persona-3"': {"active_persona_id": "persona-3"},
        f'forks_of="{LONG_ID}"': {"forks_of": LONG_ID},
        "created_after + created_before (a tenth of the span)": {
            "created_after": START + SPAN * 0.45,
            "created_before": START + SPAN * 0.55,
        },
        "updated_after (the last tenth of the span)": {"updated_after": START + SPAN * 0.9},
        'metadata={"tier": "gold"}': {"metadata": {"tier": "gold"}},
        'user_id="user-7" + metadata={"tier": "gold"}': {
            "user_id": "user-7",
            "metadata": {"tier": "gold"},
        },
    }


async def listing_figures(store: StateStore, shape: Shape, rounds: int) -> None:
    """Section 3: each filtered listing next to the unfiltered one."""
    filters = listing_filters(shape)
    matches = {label: len(await store.list_sessions(**kwargs)) for label, kwargs in filters.items()}
    calls: dict[str, Timed] = {LIST_NEWEST: timed(lambda: store.list_sessions(limit=LISTED))}
    for label, kwargs in filters.items():
        calls[label] = timed(partial(store.list_sessions, limit=LISTED, **kwargs))
    median = await alternate(calls, rounds)
    print(
        f"Listing filters: list_sessions(limit={LISTED}, filter) next to "
        f"list_sessions(limit={LISTED}), on the store of {shape.sessions:,} sessions. "
        f"Medians of {rounds} calls.\n"
    )
    rows = [[LIST_NEWEST, f"{shape.sessions:,} (100%)", us(median[LIST_NEWEST]), "1.00x"]]
    for label, count in matches.items():
        rows.append(
            [
                label,
                f"{count:,} ({count / shape.sessions:.1%})",
                us(median[label]),
                times(median[label] / median[LIST_NEWEST]),
            ]
        )
    table(["filter", "sessions matching", "median", "/ no filter"], rows)


async def write_calls(store: StateStore, shape: Shape) -> dict[str, Timed]:
    """Section 4's calls on one store, the same texts on every store: appends by id and
    saves of loaded sessions, each cycling through ROTATION sessions, and the fork."""
    rng = random.Random(7)
    appended = itertools.cycle([session_id(index) for index in range(1, 1 + ROTATION)])
    saving = range(1 + ROTATION, 1 + 2 * ROTATION)
    loaded = [await store.load_session(session_id(index)) for index in saving]
    saved = itertools.cycle([session for session in loaded if session is not None])

    async def append() -> float:
        message, response = exchange(rng)
        start = time.perf_counter()
        await store.append_to_session(
            next(appended), user_messages=[message], agent_responses=[response]
        )
        return time.perf_counter() - start

    async def save() -> float:
        session: Session = next(saved)
        message, response = exchange(rng)
        session.user_messages.append(message)
        session.agent_responses.append(response)
        session.updated_at = datetime.now(UTC)
        start = time.perf_counter()
        await store.save_session(session)
        return time.perf_counter() - start

    return {APPEND: append, SAVE: save, fork_label(shape): fork_call(store, LONG_ID)}


def fork_label(shape: Shape) -> str:
    """Section 4's fork row."""
    return f"fork_session of {shape.long_history:,} + {shape.long_history:,}"


async def write_figures(head: StateStore, bare: StateStore, shape: Shape, sizes: Sizes) -> None:
    """Section 4: each write at head next to the same without the search triggers."""
    at_head, without = await write_calls(head, shape), await write_calls(bare, shape)
    writes = {(name, HEAD): at_head[name] for name in (APPEND, SAVE)}
    writes |= {(name, BARE): without[name] for name in (APPEND, SAVE)}
    median = await alternate(writes, sizes.write_rounds)
    fork = fork_label(shape)
    median |= await alternate(
        {(fork, HEAD): at_head[fork], (fork, BARE): without[fork]}, sizes.fork_rounds
    )
    print(
        f"The search index's share of a write: on the store of {shape.messages:,} messages "
        f"at head, and on a copy of it with the search triggers dropped. Medians of "
        f"{sizes.write_rounds} calls ({sizes.fork_rounds} forks).\n"
    )
    rows = [
        [
            name,
            us(median[name, BARE]),
            us(median[name, HEAD]),
            times(median[name, HEAD] / median[name, BARE]),
        ]
        for name in (APPEND, SAVE, fork)
    ]
    table(["operation", BARE, HEAD, "head / without"], rows)


def build_table(builds: Sequence[Built]) -> None:
    """Print how the stores were filled, and the rebuild's throughput."""
    rows = [
        [
            f"{built.shape.messages:,} messages",
            f"{built.shape.sessions:,}",
            f"{built.shape.texts:,}",
            f"{built.insert_seconds:.2f} s",
            f"{built.rebuild_seconds:.2f} s",
            f"{built.shape.texts / built.rebuild_seconds:,.0f}",
        ]
        for built in builds
    ]
    table(
        [
            "store",
            "sessions",
            "texts",
            "rows made and inserted, search triggers off",
            "rebuild_search_index()",
            "texts indexed/s",
        ],
        rows,
    )


async def measure(backend: Backend, sizes: Sizes) -> None:
    """Build the two stores on one backend and print its four sections."""
    shapes = (
        Shape(sizes.small_messages, sizes.long_history),
        Shape(sizes.large_messages, sizes.long_history),
    )
    builds = []
    for label, shape in zip(("small", "large"), shapes, strict=True):
        progress(f"{backend.name}: building the store of {shape.messages:,} messages")
        builds.append(await backend.build(label, shape))
    small, large = builds
    print(f"## {backend.name}\n")
    build_table(builds)
    async with StateStore.open(small.target) as at_small, StateStore.open(large.target) as store:
        progress(f"{backend.name}: searches")
        await search_figures(at_small, store, shapes, sizes.search_rounds)
        progress(f"{backend.name}: fork")
        await fork_figure(store, large.shape, sizes.fork_rounds)
        progress(f"{backend.name}: listing filters")
        await listing_figures(store, large.shape, sizes.listing_rounds)
    progress(f"{backend.name}: copying the large store without the search triggers")
    bare_target = await backend.copy_without_search(large)
    async with StateStore.open(large.target) as head, StateStore.open(bare_target) as bare:
        progress(f"{backend.name}: writes at head and without search")
        await write_figures(head, bare, large.shape, sizes)


async def main() -> None:
    """Parse the options, run every backend asked for, print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, SQLite: a smoke run")
    parser.add_argument(
        "--postgresql",
        metavar="URL",
        help=f"the PostgreSQL database to create, fill and drop (full size: {DEFAULT_POSTGRESQL})",
    )
    parser.add_argument("--no-postgresql", action="store_true", help="measure SQLite only")
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    postgresql = options.postgresql or (None if options.quick else DEFAULT_POSTGRESQL)
    if options.no_postgresql:
        postgresql = None
    started = time.perf_counter()
    sqlite = SQLiteFiles()
    backends: list[Backend] = [sqlite]
    versions = [f"SQLite {sqlite.version()}"]
    if postgresql is not None:
        server = PostgreSQLDatabases(make_url(postgresql))
        await server.check_free()
        backends.append(server)
        versions.append(f"PostgreSQL {await server.version()}")
    print(
        f"statestore's search, forks and listing filters, {'quick' if options.quick else 'full'}"
        f" run; Python {sys.version.split()[0]}, {', '.join(versions)}\n"
    )
    for backend in backends:
        try:
            await measure(backend, sizes)
        finally:
            await backend.close()
    progress(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    asyncio.run(main())
