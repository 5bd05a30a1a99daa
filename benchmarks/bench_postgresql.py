"""statestore on PostgreSQL against a raw asyncpg floor, every figure measured in one run.

The floor is hand-written asyncpg on statestore's own tables (the schema is made by opening
a store, which runs the migrations): a pool of 16 connections, statements prepared through
asyncpg's statement cache, one transaction per operation. It writes the rows a statestore
append writes -- upsert the ``sessions`` row, insert one ``messages`` row and one
``responses`` row -- and reads with the SELECTs statestore runs, returning the records and
building nothing from them. Both sides get the same pydantic models, built before the
clock starts; raw and statestore use distinct session ids, so neither waits on the other's
row locks. The store also has a pool of 16 connections.

Each figure is measured for both sides in the same run, medians in alternation (raw call,
store call, round after round), so both see the same background load. The ratio column is
statestore over raw: for a rate, higher is better; for a time, lower is. The machine is
shared and noisy: read the ratios, not the absolute values. The script exits 0 whether or
not the targets are met (it is a measurement), and non-zero on any error.

Run:  python benchmarks/bench_postgresql.py                 (a few minutes)
      python benchmarks/bench_postgresql.py --quick         (small sizes, a smoke run)
      python benchmarks/bench_postgresql.py --postgresql URL --processes N
      (default: a new database on postgresql+asyncpg://postgres@127.0.0.1:5432/test's
      server, dropped afterwards; 4 processes for the multi-process figure)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import secrets
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import sqlalchemy
from sqlalchemy import URL, event, make_url

from statestore import AgentResponse, Session, StateStore, UserMessage

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POOL_SIZE = 16
"""Connections in each side's pool."""
PROCESS_WRITERS = 16
"""Coroutines per process in the multi-process figure."""
BARRIER_TIMEOUT = 300.0
"""Seconds a process waits for the others at a round's start or end before giving up."""
WARMUP = 5
"""Calls (or appends per coroutine) before measuring, not counted."""
USER = "bench"

# -- the floor's SQL: the columns of statestore's UPSERT_SESSION, INSERT_MESSAGE,
# INSERT_RESPONSE and its loads and listings (src/statestore/_sql.py), in asyncpg's $n form.

UPSERT_SESSION = """
INSERT INTO sessions (id, user_id, active_seed_id, active_persona_id, project_id,
    message_count, response_count, created_at, updated_at, metadata, extra, version,
    state_token, unset_fields)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $13)
ON CONFLICT (id) DO UPDATE SET
    user_id = excluded.user_id, active_seed_id = excluded.active_seed_id,
    active_persona_id = excluded.active_persona_id, project_id = excluded.project_id,
    message_count = excluded.message_count, response_count = excluded.response_count,
    created_at = excluded.created_at, updated_at = excluded.updated_at,
    metadata = excluded.metadata, extra = excluded.extra, version = sessions.version + 1,
    state_token = excluded.state_token, unset_fields = excluded.unset_fields
"""
INSERT_MESSAGE = """
INSERT INTO messages (session_id, position, content, created_at, extra)
VALUES ($1, $2, $3, $4, $5)
"""
INSERT_RESPONSE = """
INSERT INTO responses (session_id, position, content, reported_session_id, seed_id,
    phase_reached, evaluation_passed, created_at, extra)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""
LOAD_SESSION = """
SELECT id, user_id, active_seed_id, active_persona_id, message_count, response_count,
    created_at, updated_at, metadata, extra, state_token, unset_fields
FROM sessions WHERE id = $1
"""
SELECT_MESSAGES = """
SELECT position, content, created_at, extra FROM messages
WHERE session_id = $1 ORDER BY position
"""
SELECT_RESPONSES = """
SELECT position, content, reported_session_id, seed_id, phase_reached, evaluation_passed,
    created_at, extra
FROM responses WHERE session_id = $1 ORDER BY position
"""
LIST_SUMMARIES = """
SELECT id, user_id, message_count, active_seed_id, project_id, created_at, updated_at
FROM sessions ORDER BY updated_at DESC, id DESC
"""
COUNT_CHILDREN = """
SELECT (SELECT count(*) FROM messages WHERE session_id LIKE $1),
       (SELECT count(*) FROM responses WHERE session_id LIKE $1)
"""

Op = Callable[[], Awaitable[object]]
"""One timed call, its arguments bound before the clock starts."""


@dataclass(frozen=True)
class Sizes:
    """How much each figure does."""

    writers: int
    appends: int
    """Appends (or new sessions) per coroutine per measured round."""
    rounds: int
    """Measured rounds per side of each throughput figure."""
    repeat: int
    """Calls per side of each median."""
    list_all_repeat: int
    history: int
    """Messages (and responses) of the loaded session."""
    few_sessions: int
    many_sessions: int
    update_sessions: int
    """Sessions per side that update_session_with cycles through."""
    newest: int = 50

    def describe(self, processes: int) -> str:
        """Say what the run does, for the report's header."""
        return (
            f"{self.writers} coroutines x {self.appends} appends x {self.rounds} rounds per "
            f"side; {processes} processes x {PROCESS_WRITERS} coroutines, same rounds; "
            f"{self.repeat} calls per median ({self.list_all_repeat} for list all); load "
            f"{self.history} + {self.history}; lists of {self.few_sessions:,} and "
            f"{self.many_sessions:,} sessions; pools of {POOL_SIZE}"
        )


FULL = Sizes(
    writers=64,
    appends=20,
    rounds=3,
    repeat=300,
    list_all_repeat=30,
    history=400,
    few_sessions=2_000,
    many_sessions=10_000,
    update_sessions=20,
)
QUICK = Sizes(
    writers=64,
    appends=3,
    rounds=1,
    repeat=20,
    list_all_repeat=5,
    history=40,
    few_sessions=200,
    many_sessions=1_000,
    update_sessions=4,
)


def expect(condition: bool, message: str) -> None:
    """Fail the run (a non-zero exit) when the two sides did not do the same work."""
    if not condition:
        raise RuntimeError(message)


def exchange() -> tuple[UserMessage, AgentResponse]:
    """Return one user message and one agent response, stamped now."""
    at = datetime.now(UTC)
    message = UserMessage(content="question", timestamp=at)
    response = AgentResponse(
        content="answer",
        seed_id="seed-alpha",
        phase_reached="seed",
        evaluation_passed=True,
        timestamp=at,
    )
    return message, response


# -- the raw floor ---------------------------------------------------------------------------


@dataclass
class RawSession:
    """What the floor remembers of a session it appends to."""

    id: str
    created_at: datetime
    user_id: str = USER
    metadata: str = "{}"
    exchanges: int = 0


def session_params(session: RawSession, exchanges: int, updated_at: datetime) -> tuple[Any, ...]:
    """The UPSERT_SESSION parameters of a session with ``exchanges`` exchanges."""
    return (
        session.id,
        session.user_id,
        None,  # active_seed_id
        None,  # active_persona_id
        None,  # project_id
        exchanges,  # message_count
        exchanges,  # response_count
        session.created_at,
        updated_at,
        session.metadata,
        None,  # extra
        random.getrandbits(63),  # state_token, new on every save as statestore's
        None,  # unset_fields
    )


async def write_exchange(
    connection: asyncpg.Connection,
    session: RawSession,
    message: UserMessage,
    response: AgentResponse,
) -> None:
    """Write one appended exchange as statestore does: session row, message row, response row."""
    position = session.exchanges
    params = session_params(session, position + 1, message.timestamp)
    await connection.execute(UPSERT_SESSION, *params)
    await connection.execute(
        INSERT_MESSAGE, session.id, position, message.content, message.timestamp, None
    )
    await connection.execute(
        INSERT_RESPONSE,
        session.id,
        position,
        response.content,
        response.session_id,
        response.seed_id,
        response.phase_reached,
        response.evaluation_passed,
        response.timestamp,
        None,
    )


@dataclass
class Opened:
    """How many server connections a pool has opened so far."""

    count: int = 0


class RawFloor:
    """Hand-written asyncpg on statestore's tables: the same rows, nothing in between."""

    def __init__(self, pool: asyncpg.Pool, opened: Opened) -> None:
        self._pool = pool
        self.opened = opened

    @classmethod
    async def open(cls, url: URL) -> RawFloor:
        """Open a pool of POOL_SIZE connections (all opened now) on the database at ``url``."""
        opened = Opened()

        async def count(connection: asyncpg.Connection) -> None:
            opened.count += 1

        pool = await asyncpg.create_pool(
            dsn_of(url), min_size=POOL_SIZE, max_size=POOL_SIZE, init=count
        )
        return cls(pool, opened)

    async def close(self) -> None:
        """Close the pool."""
        await self._pool.close()

    async def append(
        self, session: RawSession, message: UserMessage, response: AgentResponse
    ) -> None:
        """Append one exchange in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            await write_exchange(connection, session, message, response)
        session.exchanges += 1

    async def create(self, session: Session) -> None:
        """Insert a new, empty session's row in one transaction."""
        metadata = json.dumps(session.metadata, separators=(",", ":"))
        row = RawSession(session.id, session.created_at, user_id=session.user_id, metadata=metadata)
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(UPSERT_SESSION, *session_params(row, 0, session.updated_at))

    async def load(self, session_id: str) -> tuple[Any, list[Any], list[Any]]:
        """Read a session's row, messages and responses in one REPEATABLE READ READ ONLY tx."""
        async with (
            self._pool.acquire() as connection,
            connection.transaction(isolation="repeatable_read", readonly=True),
        ):
            row = await connection.fetchrow(LOAD_SESSION, session_id)
            messages = await connection.fetch(SELECT_MESSAGES, session_id)
            responses = await connection.fetch(SELECT_RESPONSES, session_id)
        return row, messages, responses

    async def summaries(self, limit: int | None = None) -> list[Any]:
        """Return the summary rows, newest first, at most ``limit``."""
        async with self._pool.acquire() as connection:
            if limit is None:
                return list(await connection.fetch(LIST_SUMMARIES))
            return list(await connection.fetch(LIST_SUMMARIES + " LIMIT $1", limit))

    async def update_with(
        self, session_id: str, message: UserMessage, response: AgentResponse
    ) -> None:
        """Lock a session's row, then append one exchange to it, in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(LOAD_SESSION + " FOR UPDATE", session_id)
            session = RawSession(
                id=row["id"],
                created_at=row["created_at"],
                user_id=row["user_id"],
                metadata=row["metadata"],
                exchanges=row["message_count"],
            )
            await write_exchange(connection, session, message, response)

    async def insert_sessions(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert session rows (UPSERT_SESSION parameters) in one transaction."""
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.executemany(UPSERT_SESSION, rows)

    async def child_counts(self, id_pattern: str) -> tuple[int, int]:
        """Count the message and response rows of the sessions whose id is LIKE the pattern."""
        async with self._pool.acquire() as connection:
            messages, responses = await connection.fetchrow(COUNT_CHILDREN, id_pattern)
        return messages, responses


def dsn_of(url: URL) -> str:
    """The asyncpg DSN of a SQLAlchemy URL."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


# -- statestore's side -----------------------------------------------------------------------


async def store_append(
    store: StateStore, session: Session, message: UserMessage, response: AgentResponse
) -> None:
    """Append one exchange to a session and save it."""
    session.user_messages.append(message)
    session.agent_responses.append(response)
    session.updated_at = message.timestamp
    await store.save_session(session)


async def store_update(
    store: StateStore, session_id: str, message: UserMessage, response: AgentResponse
) -> None:
    """Append one exchange through update_session_with."""

    def append(session: Session) -> None:
        session.user_messages.append(message)
        session.agent_responses.append(response)
        session.updated_at = message.timestamp

    expect(await store.update_session_with(session_id, append) is not None, session_id)


def connections_opened(store: StateStore) -> Opened:
    """Count the server connections the store's pool opens from now on ("connect" events)."""
    opened = Opened()

    def count(*_: object) -> None:
        opened.count += 1

    event.listen(store.engine.sync_engine, "connect", count)
    return opened


# -- timing ----------------------------------------------------------------------------------


def quantile(samples: Sequence[float], q: float) -> float:
    """Return the q-quantile of samples (q in 0..1)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def paired(raw_call: Op, store_call: Op, repeat: int) -> tuple[list[float], list[float]]:
    """Time the raw call and the store call in turn, round after round, after a warm-up.

    Returns (raw seconds, store seconds), ``repeat`` samples each.
    """
    raw_samples: list[float] = []
    store_samples: list[float] = []
    for round_number in range(WARMUP + repeat):
        for call, samples in ((raw_call, raw_samples), (store_call, store_samples)):
            started = time.perf_counter()
            await call()
            if round_number >= WARMUP:
                samples.append(time.perf_counter() - started)
    return raw_samples, store_samples


async def timed_calls(ops: Sequence[Op]) -> list[float]:
    """Await each op in turn; return each one's seconds from the call to its result."""
    latencies = []
    for op in ops:
        started = time.perf_counter()
        await op()
        latencies.append(time.perf_counter() - started)
    return latencies


@dataclass
class Round:
    """One measured burst of a crowd of coroutines."""

    elapsed: float
    latencies: list[float]


async def run_crowd(plans: Sequence[Sequence[Op]]) -> Round:
    """Run one coroutine per plan, all at once; time the whole and each call."""
    started = time.perf_counter()
    per_coroutine = await asyncio.gather(*(timed_calls(ops) for ops in plans))
    elapsed = time.perf_counter() - started
    return Round(elapsed, [latency for latencies in per_coroutine for latency in latencies])


@dataclass
class Throughput:
    """Calls per second over measured rounds, and the p99 of one call's latency."""

    rate: float
    p99: float

    @classmethod
    def of(cls, latencies: Sequence[float], elapsed: float) -> Throughput:
        """Combine the latencies of every call with the rounds' total wall time."""
        return cls(len(latencies) / elapsed, quantile(latencies, 0.99))


def raw_appends(raw: RawFloor, sessions: Sequence[RawSession], count: int) -> list[list[Op]]:
    """One plan per session: ``count`` raw appends, their models built now."""
    return [[partial(raw.append, s, *exchange()) for _ in range(count)] for s in sessions]


def store_appends(store: StateStore, sessions: Sequence[Session], count: int) -> list[list[Op]]:
    """One plan per session: ``count`` statestore appends, their models built now."""
    return [[partial(store_append, store, s, *exchange()) for _ in range(count)] for s in sessions]


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One row of the report."""

    name: str
    raw: str
    statestore: str
    ratio: str
    target: str = ""
    met: bool | None = None


def us(seconds: float) -> str:
    """Format a duration in microseconds."""
    return f"{seconds * 1e6:,.0f} µs"


def rate_figure(name: str, raw: float, ours: float, at_least: float | None) -> Figure:
    """A rate (higher is better); the target is ours >= at_least x raw."""
    ratio = ours / raw
    if at_least is None:
        return Figure(name, f"{raw:,.0f}/s", f"{ours:,.0f}/s", f"{ratio:.2f}x")
    return Figure(
        name,
        f"{raw:,.0f}/s",
        f"{ours:,.0f}/s",
        f"{ratio:.2f}x",
        f">= {at_least:g}x raw",
        ratio >= at_least,
    )


def time_figure(name: str, raw: float, ours: float, at_most: float | None) -> Figure:
    """A duration (lower is better); the target is ours <= at_most x raw."""
    ratio = ours / raw
    if at_most is None:
        return Figure(name, us(raw), us(ours), f"{ratio:.2f}x")
    return Figure(
        name, us(raw), us(ours), f"{ratio:.2f}x", f"<= {at_most:g}x raw", ratio <= at_most
    )


def throughput_figures(
    rate_name: str,
    p99_name: str,
    raw: Throughput,
    ours: Throughput,
    *,
    at_least: float | None,
    p99_at_most: float | None,
) -> list[Figure]:
    """A rate row and its p99 latency row."""
    return [
        rate_figure(rate_name, raw.rate, ours.rate, at_least),
        time_figure(p99_name, raw.p99, ours.p99, p99_at_most),
    ]


def report(figures: Sequence[Figure]) -> None:
    """Print the figures as a markdown table, then how many targets were met."""
    print("| figure | raw | statestore | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    for figure in figures:
        met = "" if figure.met is None else ("yes" if figure.met else "NO")
        print(
            f"| {figure.name} | {figure.raw} | {figure.statestore} | {figure.ratio} "
            f"| {figure.target} | {met} |"
        )
    targets = [figure.met for figure in figures if figure.met is not None]
    print(f"targets met: {sum(targets)} of {len(targets)}")


# -- the figures in one process --------------------------------------------------------------


async def crowd_append_figures(raw: RawFloor, store: StateStore, sizes: Sizes) -> list[Figure]:
    """Appends/s and p99 with ``writers`` coroutines, and the connections opened meanwhile."""
    raw_sessions = [
        RawSession(f"raw-crowd-{index}", datetime.now(UTC)) for index in range(sizes.writers)
    ]
    store_sessions = [
        Session(id=f"store-crowd-{index}", user_id=USER) for index in range(sizes.writers)
    ]
    store_opened = connections_opened(store)
    await run_crowd(raw_appends(raw, raw_sessions, WARMUP))
    await run_crowd(store_appends(store, store_sessions, WARMUP))
    raw_before, store_before = raw.opened.count, store_opened.count
    raw_rounds, store_rounds = [], []
    for _ in range(sizes.rounds):
        raw_rounds.append(await run_crowd(raw_appends(raw, raw_sessions, sizes.appends)))
        store_rounds.append(await run_crowd(store_appends(store, store_sessions, sizes.appends)))
    raw_during = raw.opened.count - raw_before
    store_during = store_opened.count - store_before
    expect(
        await raw.child_counts("raw-crowd-%") == await raw.child_counts("store-crowd-%"),
        "raw and statestore wrote different numbers of rows",
    )
    setting = f"{sizes.writers} coroutines, one process"
    return [
        *throughput_figures(
            f"appends/s, {setting}",
            f"p99 latency of a save, {setting}",
            combined(raw_rounds),
            combined(store_rounds),
            at_least=1.5,
            p99_at_most=1.0,
        ),
        Figure(
            f"server connections opened, steady {sizes.writers}-coroutine appends (after warm-up)",
            str(raw_during),
            str(store_during),
            "",
            "0",
            store_during == 0,
        ),
    ]


def combined(rounds: Sequence[Round]) -> Throughput:
    """The throughput of several rounds together."""
    latencies = [latency for one in rounds for latency in one.latencies]
    return Throughput.of(latencies, sum(one.elapsed for one in rounds))


async def creation_figures(raw: RawFloor, store: StateStore, sizes: Sizes) -> list[Figure]:
    """New sessions/s with ``writers`` coroutines each saving new, empty sessions."""

    def plans(side: str, round_name: str, count: int) -> list[list[Session]]:
        return [
            [
                Session(id=f"new-{side}-{round_name}-{writer}-{index}", user_id=USER)
                for index in range(count)
            ]
            for writer in range(sizes.writers)
        ]

    def raw_plans(round_name: str, count: int) -> list[list[Op]]:
        return [[partial(raw.create, s) for s in ss] for ss in plans("raw", round_name, count)]

    def store_plans(round_name: str, count: int) -> list[list[Op]]:
        return [
            [partial(store.save_session, s) for s in ss] for ss in plans("store", round_name, count)
        ]

    await run_crowd(raw_plans("warm-up", WARMUP))
    await run_crowd(store_plans("warm-up", WARMUP))
    raw_rounds, store_rounds = [], []
    for round_number in range(sizes.rounds):
        raw_rounds.append(await run_crowd(raw_plans(f"r{round_number}", sizes.appends)))
        store_rounds.append(await run_crowd(store_plans(f"r{round_number}", sizes.appends)))
    return throughput_figures(
        f"new sessions/s, {sizes.writers} coroutines",
        f"p99 latency of a new session's save, {sizes.writers} coroutines",
        combined(raw_rounds),
        combined(store_rounds),
        at_least=1.0,
        p99_at_most=None,
    )


async def sequential_append_figure(raw: RawFloor, store: StateStore, sizes: Sizes) -> Figure:
    """One coroutine appending exchanges to one session, one at a time."""
    raw_session = RawSession("raw-sequential", datetime.now(UTC))
    store_session = Session(id="store-sequential", user_id=USER)
    calls = WARMUP + sizes.repeat
    raw_exchanges = iter([exchange() for _ in range(calls)])
    store_exchanges = iter([exchange() for _ in range(calls)])
    raw_samples, store_samples = await paired(
        lambda: raw.append(raw_session, *next(raw_exchanges)),
        lambda: store_append(store, store_session, *next(store_exchanges)),
        sizes.repeat,
    )
    return time_figure(
        "append one exchange, sequential, median",
        statistics.median(raw_samples),
        statistics.median(store_samples),
        1.5,
    )


async def load_figure(raw: RawFloor, store: StateStore, sizes: Sizes) -> Figure:
    """Load of one long session (both sides read the same one)."""
    session = Session(id="long-history", user_id=USER)
    for _ in range(sizes.history):
        message, response = exchange()
        session.user_messages.append(message)
        session.agent_responses.append(response)
    await store.save_session(session)
    loaded = await store.load_session(session.id)
    _, messages, responses = await raw.load(session.id)
    expect(loaded == session, "the stored long session does not load back as saved")
    expect(len(messages) == len(responses) == sizes.history, "the raw load missed rows")
    raw_samples, store_samples = await paired(
        lambda: raw.load(session.id), lambda: store.load_session(session.id), sizes.repeat
    )
    return time_figure(
        f"load a session of {sizes.history} messages + {sizes.history} responses, median",
        statistics.median(raw_samples),
        statistics.median(store_samples),
        1.2,
    )


def listed_rows(start: int, stop: int, now: datetime) -> list[tuple[Any, ...]]:
    """UPSERT_SESSION parameters of empty sessions ``start`` to ``stop``, a second apart."""
    rows = []
    for index in range(start, stop):
        updated = now - timedelta(seconds=index)
        session = RawSession(
            f"listed-{index:06d}", updated - timedelta(hours=1), user_id=f"user-{index % 100}"
        )
        rows.append(session_params(session, 0, updated))
    return rows


async def listing_figures(raw: RawFloor, store: StateStore, sizes: Sizes) -> list[Figure]:
    """List the newest page and all summaries; the growth of list all with the row count.

    Run first: the database must hold exactly the sessions listed.
    """
    now = datetime.now(UTC)
    await raw.insert_sessions(listed_rows(0, sizes.few_sessions, now))
    listed = len(await store.list_sessions()), len(await raw.summaries())
    expect(listed == (sizes.few_sessions,) * 2, f"listed {listed} sessions")
    raw_few, store_few = await paired(raw.summaries, store.list_sessions, sizes.list_all_repeat)
    await raw.insert_sessions(listed_rows(sizes.few_sessions, sizes.many_sessions, now))
    listed = len(await store.list_sessions()), len(await raw.summaries())
    expect(listed == (sizes.many_sessions,) * 2, f"listed {listed} sessions")
    newest = sizes.newest
    raw_page, store_page = await paired(
        lambda: raw.summaries(newest), lambda: store.list_sessions(limit=newest), sizes.repeat
    )
    raw_all, store_all = await paired(raw.summaries, store.list_sessions, sizes.list_all_repeat)
    many, few = sizes.many_sessions, sizes.few_sessions
    raw_growth = statistics.median(raw_all) / statistics.median(raw_few)
    store_growth = statistics.median(store_all) / statistics.median(store_few)
    return [
        time_figure(
            f"list newest {newest} of {many:,} sessions, median",
            statistics.median(raw_page),
            statistics.median(store_page),
            2.0,
        ),
        time_figure(
            f"list all {many:,} sessions, median",
            statistics.median(raw_all),
            statistics.median(store_all),
            2.0,
        ),
        Figure(
            f"list all, growth from {few:,} to {many:,} sessions",
            f"{raw_growth:.2f}x",
            f"{store_growth:.2f}x",
            f"{store_growth / raw_growth:.2f}x",
            f"~{many / few:g}x (linear), shown only",
        ),
    ]


async def update_with_figure(raw: RawFloor, store: StateStore, sizes: Sizes) -> Figure:
    """update_session_with appending one exchange, against SELECT ... FOR UPDATE + append.

    Each side cycles through sessions of 10 exchanges, each growing by one per call.
    """
    raw_ids, store_ids = [], []
    for index in range(sizes.update_sessions):
        raw_session = RawSession(f"raw-update-{index}", datetime.now(UTC))
        store_session = Session(id=f"store-update-{index}", user_id=USER)
        for _ in range(10):
            await raw.append(raw_session, *exchange())
            await store_append(store, store_session, *exchange())
        raw_ids.append(raw_session.id)
        store_ids.append(store_session.id)
    calls = WARMUP + sizes.repeat
    raw_turns = iter([(raw_ids[i % len(raw_ids)], *exchange()) for i in range(calls)])
    store_turns = iter([(store_ids[i % len(store_ids)], *exchange()) for i in range(calls)])
    raw_samples, store_samples = await paired(
        lambda: raw.update_with(*next(raw_turns)),
        lambda: store_update(store, *next(store_turns)),
        sizes.repeat,
    )
    return time_figure(
        "update_session_with appending one exchange, median",
        statistics.median(raw_samples),
        statistics.median(store_samples),
        2.0,
    )


async def in_one_process(url: URL, sizes: Sizes) -> list[Figure]:
    """Every figure but the multi-process one, on one raw pool and one store."""
    async with StateStore.open(url, pool_size=POOL_SIZE) as store:
        raw = await RawFloor.open(url)
        try:
            listing = await listing_figures(raw, store, sizes)  # first: see its docstring
            crowd = await crowd_append_figures(raw, store, sizes)
            sequential = await sequential_append_figure(raw, store, sizes)
            creation = await creation_figures(raw, store, sizes)
            load = await load_figure(raw, store, sizes)
            update = await update_with_figure(raw, store, sizes)
        finally:
            await raw.close()
    return [*crowd, sequential, *creation, load, *listing, update]


# -- the multi-process figure ----------------------------------------------------------------


_barrier: threading.Barrier | None = None
"""In a worker process: the barrier every process and the parent meet at (see below)."""


def join_barrier(barrier: threading.Barrier) -> None:
    """Pool initializer: keep the barrier (it can reach a worker only when it starts)."""
    global _barrier
    _barrier = barrier


def process_worker(url: str, sizes: Sizes, index: int) -> dict[str, list[float]]:
    """One process of the multi-process figure; returns each side's append latencies."""
    assert _barrier is not None, "start the worker with join_barrier"
    try:
        return asyncio.run(_process_rounds(make_url(url), _barrier, sizes, index))
    except BaseException as error:
        _barrier.abort()  # the parent and the other processes stop waiting for this one
        # Sent to the parent as text: not every exception survives pickling.
        raise RuntimeError(f"process {index} failed:\n{traceback.format_exc()}") from error


async def _process_rounds(
    url: URL, barrier: threading.Barrier, sizes: Sizes, index: int
) -> dict[str, list[float]]:
    """Raw rounds on a pool of its own, then statestore rounds on a store of its own.

    One side at a time, so that the processes never hold more than POOL_SIZE connections
    each (the server's limit is typically 100).
    """
    raw = await RawFloor.open(url)
    try:
        raw_sessions = [
            RawSession(f"raw-p{index}-{n}", datetime.now(UTC)) for n in range(PROCESS_WRITERS)
        ]
        raw_latencies = await _rounds_together(
            barrier, partial(raw_appends, raw, raw_sessions), sizes
        )
    finally:
        await raw.close()
    async with StateStore.open(url, migrate=False, pool_size=POOL_SIZE) as store:
        store_sessions = [
            Session(id=f"store-p{index}-{n}", user_id=USER) for n in range(PROCESS_WRITERS)
        ]
        store_latencies = await _rounds_together(
            barrier, partial(store_appends, store, store_sessions), sizes
        )
    return {"raw": raw_latencies, "statestore": store_latencies}


async def _rounds_together(
    barrier: threading.Barrier, plans: Callable[[int], list[list[Op]]], sizes: Sizes
) -> list[float]:
    """Warm up, then run each round between two barriers the parent times."""
    await run_crowd(plans(WARMUP))
    latencies: list[float] = []
    for _ in range(sizes.rounds):
        ops = plans(sizes.appends)
        await asyncio.to_thread(barrier.wait)
        latencies += (await run_crowd(ops)).latencies
        await asyncio.to_thread(barrier.wait)
    return latencies


def across_processes(url: URL, sizes: Sizes, processes: int) -> list[Figure]:
    """Appends/s in total and p99, ``processes`` x PROCESS_WRITERS coroutines."""
    context = multiprocessing.get_context("spawn")
    address = url.render_as_string(hide_password=False)
    barrier = context.Barrier(processes + 1, timeout=BARRIER_TIMEOUT)
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=join_barrier, initargs=(barrier,)
    ) as executor:
        futures = [
            executor.submit(process_worker, address, sizes, index) for index in range(processes)
        ]
        try:
            elapsed = {side: _time_rounds(barrier, sizes.rounds) for side in ("raw", "statestore")}
        except threading.BrokenBarrierError:
            for future in futures:
                future.result()  # raises the error that broke the barrier
            raise
        latencies = [future.result() for future in futures]
    raw, ours = (
        Throughput.of([x for one in latencies for x in one[side]], elapsed[side])
        for side in ("raw", "statestore")
    )
    setting = f"{processes} processes x {PROCESS_WRITERS} coroutines"
    return throughput_figures(
        f"appends/s in total, {setting}",
        f"p99 latency of a save, {setting}",
        raw,
        ours,
        at_least=1.2,
        p99_at_most=None,
    )


def _time_rounds(barrier: threading.Barrier, rounds: int) -> float:
    """The wall time of ``rounds`` rounds, each from the start barrier to the end barrier."""
    elapsed = 0.0
    for _ in range(rounds):
        barrier.wait()
        started = time.perf_counter()
        barrier.wait()
        elapsed += time.perf_counter() - started
    return elapsed


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def new_database(server: URL) -> Iterator[tuple[URL, str]]:
    """Create a database on the server; yield its URL and the server's version; drop it."""
    name = f"statestore_bench_{secrets.token_hex(4)}"

    async def admin(statement: str) -> str:
        connection = await asyncpg.connect(dsn_of(server))
        try:
            await connection.execute(statement)
            version = await connection.fetchval("SHOW server_version")
            return str(version).split()[0]
        finally:
            await connection.close()

    version = asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name), version
    finally:
        asyncio.run(admin(f'DROP DATABASE "{name}" WITH (FORCE)'))


def main() -> None:
    """Measure every figure and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--postgresql", default=SERVER, help="the server to make a database on")
    parser.add_argument("--processes", type=int, default=4, help="for the multi-process figure")
    options = parser.parse_args()
    if options.processes < 1:
        parser.error("--processes must be at least 1")
    sizes = QUICK if options.quick else FULL
    server = make_url(options.postgresql)
    with new_database(server) as (url, version):
        run = "quick" if options.quick else "full"
        print(f"statestore on PostgreSQL against raw asyncpg, {run} run")
        print(
            f"server: {server.render_as_string(hide_password=True)} (PostgreSQL {version}), "
            f"database {url.database}, dropped afterwards"
        )
        print(
            f"Python {sys.version.split()[0]}, asyncpg {asyncpg.__version__}, "
            f"SQLAlchemy {sqlalchemy.__version__}"
        )
        print(f"sizes: {sizes.describe(options.processes)}")
        figures = asyncio.run(in_one_process(url, sizes))
        figures += across_processes(url, sizes, options.processes)
    report(figures)


if __name__ == "__main__":
    main()
