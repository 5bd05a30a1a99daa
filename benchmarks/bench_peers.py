"""statestore on SQLite against the peers users would pick instead, in one process, as ratios.

Every workload runs through six participants, each on a database file (or folder) of its
own, made new for each workload:

- **statestore**: ``StateStore.open(path)``, its defaults: synchronous=FULL, WAL.
- **openai-agents** ``SQLiteSession(session_id, path)`` (``agents.memory``), one object per
  session as its users make them, through its async API (``add_items``, ``get_items``,
  ``clear_session``). It runs each call in ``asyncio.to_thread`` on a thread-local
  ``sqlite3`` connection, behind one process-wide lock per file. As shipped it sets only
  journal_mode=WAL; here a subclass also sets synchronous=FULL on every connection it opens
  (its ``_configure_connection`` hook), checked once per database. One exchange is one
  ``add_items`` of two items, a user message and an assistant output message, in the
  shapes its ``Runner`` stores.
- **LangGraph** ``AsyncSqliteSaver`` (``langgraph.checkpoint.sqlite.aio``) on an
  ``aiosqlite`` connection made here, ``PRAGMA journal_mode=WAL`` and
  ``PRAGMA synchronous=FULL`` set on it, then ``await saver.setup()``. The conversation is
  the ``messages`` channel of a checkpoint (langchain-core ``HumanMessage``/``AIMessage``).
  The saver is called directly, with no graph: one exchange is one ``aput`` of a checkpoint
  holding the whole conversation, the least a graph run writes (a real ``ainvoke`` of a
  one-node ``MessagesState`` graph writes three checkpoints and two sets of writes per
  turn). Appending without the conversation in hand is ``aget_tuple`` then ``aput``.
  Listing is ``alist(None)`` (with ``limit=`` for the newest), which lists checkpoints, not
  threads: it equals listing threads here only because each listed thread has exactly one
  checkpoint, and it decodes every checkpoint it returns. Deleting is ``adelete_thread``.
- **file store**: ``filestore_model.FileStore``, one pretty JSON file per session written
  by temp file and rename, never fsynced: shown beside the peers for reference only.
- **inline floor**: raw stdlib ``sqlite3`` called on the event loop's thread (it blocks
  the loop, so no asyncio service can use it; shown for reference).
- **one-hop floor**: the same raw ``sqlite3`` on one dedicated thread, one
  ``loop.run_in_executor`` hop on a one-thread executor per transaction: the honest floor
  for an asyncio library.

Both floors use lean tables (``sessions`` with an index on ``(updated_at, id)``,
``messages``, ``responses``), WAL and synchronous=FULL, ``BEGIN IMMEDIATE`` transactions.
An append is one transaction: upsert the session row (``RETURNING`` its message count),
insert one message row and one response row. A floor never loads to append.

Seeded data (what each timed call finds) is written before the clock starts, through each
participant's fastest path (statestore's saves; openai-agents' ``add_items``; LangGraph's
sync ``SqliteSaver`` at synchronous=OFF, one checkpoint holding a thread's whole history,
except the threads to delete, which get one checkpoint per exchange as appends leave them;
raw ``executemany`` for the floors). Each timed call builds its own exchange, in its
participant's own form, inside the clock.

Medians are measured in alternation (each participant's call in turn, round after round,
after a warm-up), so all see the same background load. The appends cycle through several
sessions so that a history grows by at most about ten exchanges while measured. The
64-coroutine figure gives each coroutine a session of its own; the floors' figure is
sequential (one append at a time), which is what the target compares against. "Best peer"
is the better of openai-agents and LangGraph; "—" means the participant cannot do it. The
target for appending without load at the long history compares with the median of the
first workload (``save_session`` on a session in hand, at 10 exchanges), measured earlier
in the same run.
The machine is shared and noisy: read the ratios, not the absolute values. The script
exits 0 whether or not the targets are met, and non-zero on any error.

Run:  python benchmarks/bench_peers.py            (several minutes)
      python benchmarks/bench_peers.py --quick    (small sizes, a smoke run)
      python benchmarks/bench_peers.py --dir PATH (databases in a new folder under PATH)
Needs the ``bench`` extra: ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
from agents.memory import SQLiteSession
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    empty_checkpoint,
)
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from filestore_model import FileStore
from statestore import AgentResponse, Session, StateStore, UserMessage

Op = Callable[[], Awaitable[object]]
"""One timed call."""

WARMUP = 5
"""Rounds before measuring, not counted."""
USER = "bench"
QUESTION = "How do I keep an agent's conversation state when the service restarts? " * 2
ANSWER = "Persist each exchange as it happens, and load the session on the next request. " * 4
STATESTORE, AGENTS, LANGGRAPH = "statestore", "openai-agents", "LangGraph"
FILES = "file store (no fsync)"
INLINE, ONE_HOP = "inline floor", "one-hop floor"
PEERS = (AGENTS, LANGGRAPH)
COLUMNS = (STATESTORE, AGENTS, LANGGRAPH, FILES, INLINE, ONE_HOP)


@dataclass(frozen=True)
class Sizes:
    """How much each workload does."""

    repeat: int
    """Calls per participant per median."""
    rotation: int
    """Sessions each append figure cycles through."""
    long_history: int
    load_history: int
    listed: int
    list_repeat: int
    """Calls per median of list all."""
    slow_list_repeat: int
    """Calls for a list that decodes every session (LangGraph's list all, the file store's)."""
    crowd_appends: int
    """Appends per coroutine per measured round of the 64-coroutine figure."""
    crowd_rounds: int
    history: int = 10
    newest: int = 50
    writers: int = 64

    def describe(self) -> str:
        """Say what the run does, for the report's header."""
        return (
            f"{self.repeat} calls per median, appends cycling through {self.rotation} "
            f"sessions; load {self.load_history} + {self.load_history}; lists of "
            f"{self.listed:,} sessions ({self.list_repeat} calls for list all, "
            f"{self.slow_list_repeat} where every session is decoded); {self.writers} "
            f"coroutines x {self.crowd_appends} appends x {self.crowd_rounds} rounds"
        )


FULL = Sizes(
    repeat=300,
    rotation=30,
    long_history=2_000,
    load_history=400,
    listed=10_000,
    list_repeat=20,
    slow_list_repeat=3,
    crowd_appends=20,
    crowd_rounds=2,
)
QUICK = Sizes(
    repeat=20,
    rotation=3,
    long_history=200,
    load_history=40,
    listed=1_000,
    list_repeat=5,
    slow_list_repeat=2,
    crowd_appends=3,
    crowd_rounds=1,
)


def expect(condition: bool, message: str) -> None:
    """Fail the run (a non-zero exit) when a participant did not do the work asked."""
    if not condition:
        raise RuntimeError(message)


def conversations(prefix: str, count: int, exchanges: int) -> list[tuple[str, int]]:
    """(session id, exchanges) of ``count`` sessions to seed."""
    return [(f"{prefix}-{index:05d}", exchanges) for index in range(count)]


def cycling(items: Sequence[Any]) -> Callable[[], Any]:
    """Return a function giving the items in turn, round and round."""
    return itertools.cycle(items).__next__


def in_order(items: Sequence[Any]) -> Callable[[], Any]:
    """Return a function giving each item once, in order."""
    return iter(items).__next__


def taking_turns(ops: Sequence[Op]) -> Op:
    """An op that calls the given ops in turn, round and round."""
    turns = itertools.cycle(ops)
    return lambda: next(turns)()


def spaced(index: int, now: datetime) -> datetime:
    """The update time of the index-th seeded session: a second older than the one before."""
    return now - timedelta(seconds=index)


class Participant(Protocol):
    """What each workload asks of a participant: seed, then return the call to time.

    A method returns ``None`` when the participant cannot do the workload.
    """

    name: str

    async def appender(self, history: int, sessions: int) -> Op | None:
        """Append one exchange to a session already in hand (loaded once)."""

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        """Append one exchange given only the session id."""

    async def loader(self, history: int) -> Op | None:
        """Load a conversation of ``history`` exchanges."""

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        """List all of ``sessions`` sessions, and the newest ``newest``."""

    async def creator(self) -> Op | None:
        """Create a session and append two exchanges, saving after each step."""

    async def deleter(self, history: int, sessions: int) -> Op | None:
        """Delete one session of ``history`` exchanges (a different one per call)."""

    async def writers(self, count: int) -> list[Op] | None:
        """One op per concurrent writer, each appending to its own session."""

    async def close(self) -> None:
        """Release everything."""


# -- statestore ------------------------------------------------------------------------------


def store_exchange() -> tuple[UserMessage, AgentResponse]:
    """One user message and one agent response, stamped now."""
    at = datetime.now(UTC)
    message = UserMessage(content=QUESTION, timestamp=at)
    response = AgentResponse(
        content=ANSWER,
        seed_id="seed-alpha",
        phase_reached="seed",
        evaluation_passed=True,
        timestamp=at,
    )
    return message, response


def store_conversation(session_id: str, exchanges: int, updated_at: datetime) -> Session:
    """A session of ``exchanges`` exchanges."""
    session = Session(id=session_id, user_id=USER, created_at=updated_at - timedelta(hours=1))
    for _ in range(exchanges):
        message, response = store_exchange()
        message.timestamp = response.timestamp = updated_at
        session.user_messages.append(message)
        session.agent_responses.append(response)
    session.updated_at = updated_at
    return session


def add_exchange(session: Session) -> None:
    """Append one exchange to a session in hand."""
    message, response = store_exchange()
    session.user_messages.append(message)
    session.agent_responses.append(response)
    session.updated_at = message.timestamp


class StatestoreSide:
    """statestore on its own file, at its defaults (synchronous=FULL, WAL)."""

    name = STATESTORE

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @classmethod
    async def open(cls, path: Path) -> StatestoreSide:
        """Open a store on a new file."""
        return cls(await StateStore.open(path))

    async def close(self) -> None:
        """Close the store."""
        await self.store.close()

    async def _seed(self, seeds: Sequence[tuple[str, int]]) -> list[str]:
        """Save the sessions, a few hundred at a time; return their ids."""
        now = datetime.now(UTC)
        sessions = [store_conversation(s, n, spaced(i, now)) for i, (s, n) in enumerate(seeds)]
        for start in range(0, len(sessions), 500):
            chunk = sessions[start : start + 500]
            await asyncio.gather(*(self.store.save_session(s) for s in chunk))
        return [session.id for session in sessions]

    async def _loaded(self, seeds: Sequence[tuple[str, int]]) -> list[Session]:
        """Seed sessions, then load each once."""
        loaded = [await self.store.load_session(s) for s in await self._seed(seeds)]
        expect(all(s is not None for s in loaded), "statestore lost a seeded session")
        return [s for s in loaded if s is not None]

    def _saving(self, session: Session) -> Op:
        async def append() -> None:
            add_exchange(session)
            await self.store.save_session(session)

        return append

    async def appender(self, history: int, sessions: int) -> Op | None:
        loaded = await self._loaded(conversations("a", sessions, history))
        return taking_turns([self._saving(session) for session in loaded])

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        append_to_session = getattr(self.store, "append_to_session", None)
        if append_to_session is None:
            return None
        ids = cycling(await self._seed(conversations("u", sessions, history)))

        async def append() -> None:
            message, response = store_exchange()
            await append_to_session(ids(), user_messages=[message], agent_responses=[response])

        return append

    async def loader(self, history: int) -> Op | None:
        [session_id] = await self._seed([("long", history)])
        loaded = await self.store.load_session(session_id)
        expect(loaded is not None and len(loaded.user_messages) == history, "statestore load")
        return lambda: self.store.load_session(session_id)

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        await self._seed(conversations("l", sessions, 1))
        expect(len(await self.store.list_sessions()) == sessions, "statestore listing")
        return self.store.list_sessions, lambda: self.store.list_sessions(limit=newest)

    async def creator(self) -> Op | None:
        async def create() -> None:
            session = Session(user_id=USER)
            await self.store.save_session(session)
            for _ in range(2):
                add_exchange(session)
                await self.store.save_session(session)

        return create

    async def deleter(self, history: int, sessions: int) -> Op | None:
        ids = in_order(await self._seed(conversations("d", sessions, history)))

        async def delete() -> None:
            expect(await self.store.delete_session(ids()), "statestore deleted nothing")

        return delete

    async def writers(self, count: int) -> list[Op] | None:
        return [self._saving(s) for s in await self._loaded(conversations("w", count, 2))]


# -- openai-agents ---------------------------------------------------------------------------


class DurableSQLiteSession(SQLiteSession):
    """openai-agents' SQLiteSession with synchronous=FULL on every connection it opens."""

    @staticmethod
    def _configure_connection(conn: sqlite3.Connection) -> None:
        SQLiteSession._configure_connection(conn)  # journal_mode=WAL, as shipped
        conn.execute("PRAGMA synchronous = FULL")


def agents_exchange() -> list[Any]:
    """One user message and one assistant output message, as openai-agents' Runner stores."""
    return [
        {"role": "user", "content": QUESTION},
        {
            "id": f"msg_{uuid.uuid4().hex}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": []}],
        },
    ]


class AgentsSide:
    """openai-agents' SQLiteSession objects on one file, one object per session."""

    name = AGENTS

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sessions: list[DurableSQLiteSession] = []

    @classmethod
    async def open(cls, path: Path) -> AgentsSide:
        """Make the file and check the PRAGMAs its connections get."""
        side = cls(path)
        probe = side._session("probe")
        connection = probe._get_connection()
        pragmas = (
            connection.execute("PRAGMA journal_mode").fetchone()[0],
            connection.execute("PRAGMA synchronous").fetchone()[0],
        )
        expect(pragmas == ("wal", 2), f"openai-agents connection at {pragmas}, not WAL and FULL")
        return side

    async def close(self) -> None:
        """Close every session object."""
        for session in self.sessions:
            session.close()

    def _session(self, session_id: str) -> DurableSQLiteSession:
        session = DurableSQLiteSession(session_id, self.path)
        self.sessions.append(session)
        return session

    async def _seed(self, seeds: Sequence[tuple[str, int]]) -> list[DurableSQLiteSession]:
        """One session object per seed, its history added in one call."""
        sessions = []
        for session_id, exchanges in seeds:
            session = self._session(session_id)
            await session.add_items([i for _ in range(exchanges) for i in agents_exchange()])
            sessions.append(session)
        return sessions

    @staticmethod
    def _adding(session: DurableSQLiteSession) -> Op:
        return lambda: session.add_items(agents_exchange())

    async def appender(self, history: int, sessions: int) -> Op | None:
        seeded = await self._seed(conversations("a", sessions, history))
        return taking_turns([self._adding(session) for session in seeded])

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        return await self.appender(history, sessions)  # add_items never loads

    async def loader(self, history: int) -> Op | None:
        [session] = await self._seed([("long", history)])
        expect(len(await session.get_items()) == 2 * history, "openai-agents load")
        return session.get_items

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        return None  # SQLiteSession has no listing

    async def creator(self) -> Op | None:
        ids = itertools.count()

        async def create() -> None:
            session = self._session(f"new-{next(ids)}")  # it has no create: add_items does
            for _ in range(2):
                await session.add_items(agents_exchange())

        return create

    async def deleter(self, history: int, sessions: int) -> Op | None:
        seeded = await self._seed(conversations("d", sessions, history))
        for session in seeded:
            await session.get_items()  # its connection opened before the clock starts
        clears = in_order([session.clear_session for session in seeded])
        return lambda: clears()()  # each session once

    async def writers(self, count: int) -> list[Op] | None:
        return [self._adding(s) for s in await self._seed(conversations("w", count, 2))]


# -- LangGraph -------------------------------------------------------------------------------


def graph_exchange() -> list[BaseMessage]:
    """One human message and one AI message, with ids as LangGraph's add_messages gives."""
    return [
        HumanMessage(content=QUESTION, id=str(uuid.uuid4())),
        AIMessage(content=ANSWER, id=str(uuid.uuid4())),
    ]


@dataclass
class GraphThread:
    """A LangGraph thread in hand: its latest checkpoint's config and its conversation."""

    config: RunnableConfig
    messages: list[BaseMessage] = field(default_factory=list)
    step: int = -1
    version: str | None = None

    @classmethod
    def new(cls, thread_id: str) -> GraphThread:
        """A thread with no checkpoint yet."""
        return cls({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})

    @classmethod
    def of(cls, saved: CheckpointTuple) -> GraphThread:
        """The thread whose latest checkpoint was just read."""
        return cls(
            saved.config,
            list(saved.checkpoint["channel_values"]["messages"]),
            saved.metadata["step"],
            str(saved.checkpoint["channel_versions"]["messages"]),
        )

    def advance(
        self, saver: SqliteSaver | AsyncSqliteSaver, new: list[BaseMessage]
    ) -> tuple[Checkpoint, CheckpointMetadata]:
        """Add messages and return the checkpoint (and metadata) that holds them all."""
        self.messages.extend(new)
        self.step += 1
        self.version = saver.get_next_version(self.version, None)
        checkpoint = empty_checkpoint()
        checkpoint["id"] = str(uuid6(clock_seq=self.step))
        checkpoint["channel_values"] = {"messages": self.messages}
        checkpoint["channel_versions"] = {"messages": self.version}
        checkpoint["updated_channels"] = ["messages"]
        return checkpoint, {"source": "loop", "step": self.step, "parents": {}}

    async def put(self, saver: AsyncSqliteSaver, new: list[BaseMessage]) -> None:
        """Write the next checkpoint through the async saver."""
        checkpoint, metadata = self.advance(saver, new)
        versions = checkpoint["channel_versions"]
        self.config = await saver.aput(self.config, checkpoint, metadata, versions)


def thread_config(thread_id: str) -> RunnableConfig:
    """The config naming a thread's latest checkpoint."""
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}


class GraphSide:
    """LangGraph's AsyncSqliteSaver on an aiosqlite connection at WAL and synchronous=FULL."""

    name = LANGGRAPH

    def __init__(self, path: Path, connection: aiosqlite.Connection, saver: AsyncSqliteSaver):
        self.path = path
        self.connection = connection
        self.saver = saver

    @classmethod
    async def open(cls, path: Path) -> GraphSide:
        """Connect, set the PRAGMAs, and set the saver up."""
        connection = aiosqlite.connect(path)
        await connection
        await connection.execute("PRAGMA journal_mode = WAL")
        await connection.execute("PRAGMA synchronous = FULL")
        saver = AsyncSqliteSaver(connection)
        await saver.setup()
        return cls(path, connection, saver)

    async def close(self) -> None:
        """Close the connection."""
        await self.connection.close()

    def _seed(self, seeds: Sequence[tuple[str, int]], *, per_exchange: bool = False) -> list[str]:
        """Write the threads with the sync saver at synchronous=OFF; return their ids.

        A thread's history is one checkpoint holding it all, or with ``per_exchange`` one
        checkpoint per exchange, each holding the conversation so far.
        """
        connection = sqlite3.connect(self.path, check_same_thread=False)
        connection.execute("PRAGMA synchronous = OFF")
        saver = SqliteSaver(connection)
        for thread_id, exchanges in seeds:
            thread = GraphThread.new(thread_id)
            turns = [graph_exchange() for _ in range(exchanges)]
            if not per_exchange:
                turns = [[message for turn in turns for message in turn]]
            for new in turns:
                checkpoint, metadata = thread.advance(saver, new)
                versions = checkpoint["channel_versions"]
                thread.config = saver.put(thread.config, checkpoint, metadata, versions)
        connection.close()
        return [thread_id for thread_id, _ in seeds]

    async def _read(self, thread_id: str) -> GraphThread:
        saved = await self.saver.aget_tuple(thread_config(thread_id))
        expect(saved is not None, f"LangGraph lost thread {thread_id}")
        assert saved is not None
        return GraphThread.of(saved)

    def _putting(self, thread: GraphThread) -> Op:
        return lambda: thread.put(self.saver, graph_exchange())

    async def appender(self, history: int, sessions: int) -> Op | None:
        ids = self._seed(conversations("a", sessions, history))
        return taking_turns([self._putting(await self._read(thread_id)) for thread_id in ids])

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        ids = cycling(self._seed(conversations("u", sessions, history)))

        async def append() -> None:  # a checkpoint holds everything: read it to write the next
            thread = await self._read(ids())
            await thread.put(self.saver, graph_exchange())

        return append

    async def loader(self, history: int) -> Op | None:
        [thread_id] = self._seed([("long", history)])
        expect(len((await self._read(thread_id)).messages) == 2 * history, "LangGraph load")
        return lambda: self.saver.aget_tuple(thread_config(thread_id))

    async def _list(self, limit: int | None) -> list[CheckpointTuple]:
        return [saved async for saved in self.saver.alist(None, limit=limit)]

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        self._seed(conversations("l", sessions, 1))
        expect(len(await self._list(None)) == sessions, "LangGraph listing")
        return lambda: self._list(None), lambda: self._list(newest)

    async def creator(self) -> Op | None:
        ids = itertools.count()

        async def create() -> None:
            thread = GraphThread.new(f"new-{next(ids)}")
            await thread.put(self.saver, [])
            for _ in range(2):
                await thread.put(self.saver, graph_exchange())

        return create

    async def deleter(self, history: int, sessions: int) -> Op | None:
        ids = in_order(self._seed(conversations("d", sessions, history), per_exchange=True))
        return lambda: self.saver.adelete_thread(ids())

    async def writers(self, count: int) -> list[Op] | None:
        ids = self._seed(conversations("w", count, 2))
        return [self._putting(await self._read(thread_id)) for thread_id in ids]


# -- the file store model --------------------------------------------------------------------


class FileSide:
    """The old file store: one JSON file per session, rewritten whole, never fsynced."""

    name = FILES

    def __init__(self, files: FileStore) -> None:
        self.files = files

    @classmethod
    async def open(cls, path: Path) -> FileSide:
        """A new, empty store in the folder."""
        return cls(FileStore(path))

    async def close(self) -> None:
        """Nothing to release."""

    def _seed(self, seeds: Sequence[tuple[str, int]]) -> list[str]:
        now = datetime.now(UTC)
        for index, (session_id, exchanges) in enumerate(seeds):
            self.files.save_session(store_conversation(session_id, exchanges, spaced(index, now)))
        return [session_id for session_id, _ in seeds]

    def _path(self, session_id: str) -> Path:
        return self.files.sessions_dir / f"{session_id}.json"

    def _read(self, session_id: str) -> Session:
        return Session.model_validate_json(self._path(session_id).read_bytes())

    def _saving(self, session: Session) -> Op:
        async def append() -> None:
            add_exchange(session)
            self.files.save_session(session)

        return append

    async def appender(self, history: int, sessions: int) -> Op | None:
        ids = self._seed(conversations("a", sessions, history))
        return taking_turns([self._saving(self._read(session_id)) for session_id in ids])

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        ids = cycling(self._seed(conversations("u", sessions, history)))

        async def append() -> None:  # a file holds everything: read it to write it again
            session = self._read(ids())
            add_exchange(session)
            self.files.save_session(session)

        return append

    async def loader(self, history: int) -> Op | None:
        [session_id] = self._seed([("long", history)])
        expect(len(self._read(session_id).user_messages) == history, "file store load")

        async def load() -> Session:
            return self._read(session_id)

        return load

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        self._seed(conversations("l", sessions, 1))
        expect(len(self.files.list_sessions()) == sessions, "file store listing")

        async def list_all() -> object:
            return self.files.list_sessions()

        async def list_newest() -> object:
            return self.files.list_sessions()[:newest]  # it must read every file either way

        return list_all, list_newest

    async def creator(self) -> Op | None:
        async def create() -> None:
            session = Session(user_id=USER)
            self.files.save_session(session)
            for _ in range(2):
                add_exchange(session)
                self.files.save_session(session)

        return create

    async def deleter(self, history: int, sessions: int) -> Op | None:
        ids = in_order(self._seed(conversations("d", sessions, history)))

        async def delete() -> None:
            self._path(ids()).unlink()

        return delete

    async def writers(self, count: int) -> list[Op] | None:
        return None  # synchronous: 64 coroutines would take turns blocking the loop


# -- the raw floors --------------------------------------------------------------------------

LEAN_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY, user_id TEXT NOT NULL, message_count INTEGER NOT NULL,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_update ON sessions (updated_at, id);
CREATE TABLE messages (
    session_id TEXT NOT NULL, position INTEGER NOT NULL, content TEXT NOT NULL,
    created_at TEXT NOT NULL, PRIMARY KEY (session_id, position)
) WITHOUT ROWID;
CREATE TABLE responses (
    session_id TEXT NOT NULL, position INTEGER NOT NULL, content TEXT NOT NULL,
    seed_id TEXT, phase_reached TEXT, evaluation_passed INTEGER, created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, position)
) WITHOUT ROWID;
"""
INSERT_SESSION = (
    "INSERT INTO sessions (id, user_id, message_count, created_at, updated_at) "
    "VALUES (?, ?, ?, ?, ?)"
)
UPSERT_SESSION = (
    "INSERT INTO sessions (id, user_id, message_count, created_at, updated_at) "
    "VALUES (?, ?, 1, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "message_count = message_count + 1, updated_at = excluded.updated_at "
    "RETURNING message_count"
)
INSERT_MESSAGE = (
    "INSERT INTO messages (session_id, position, content, created_at) VALUES (?, ?, ?, ?)"
)
INSERT_RESPONSE = (
    "INSERT INTO responses (session_id, position, content, seed_id, phase_reached, "
    "evaluation_passed, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
SUMMARIES = (
    "SELECT id, user_id, message_count, created_at, updated_at FROM sessions "
    "ORDER BY updated_at DESC, id DESC"
)


def raw_connection(path: Path, synchronous: str) -> sqlite3.Connection:
    """A plain sqlite3 connection in autocommit mode (transactions are explicit), WAL."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 30000")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    return connection


@contextmanager
def transaction(connection: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    """BEGIN IMMEDIATE (for a write) ... COMMIT, or ROLLBACK on an error."""
    connection.execute(begin)
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def raw_append(connection: sqlite3.Connection, session_id: str) -> None:
    """Append one exchange in one transaction: upsert the session row, insert two rows."""
    at = datetime.now(UTC).isoformat()
    with transaction(connection):
        (count,) = connection.execute(UPSERT_SESSION, (session_id, USER, at, at)).fetchone()
        connection.execute(INSERT_MESSAGE, (session_id, count - 1, QUESTION, at))
        row = (session_id, count - 1, ANSWER, "seed-alpha", "seed", True, at)
        connection.execute(INSERT_RESPONSE, row)


def raw_create(connection: sqlite3.Connection, session_id: str) -> None:
    """Insert an empty session's row in one transaction."""
    at = datetime.now(UTC).isoformat()
    with transaction(connection):
        connection.execute(INSERT_SESSION, (session_id, USER, 0, at, at))


def raw_load(connection: sqlite3.Connection, session_id: str) -> tuple[Any, ...]:
    """Read a session's row, messages and responses in one read transaction."""
    with transaction(connection, "BEGIN"):
        return (
            connection.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone(),
            connection.execute(
                "SELECT position, content, created_at FROM messages WHERE session_id = ? "
                "ORDER BY position",
                (session_id,),
            ).fetchall(),
            connection.execute(
                "SELECT position, content, seed_id, phase_reached, evaluation_passed, "
                "created_at FROM responses WHERE session_id = ? ORDER BY position",
                (session_id,),
            ).fetchall(),
        )


def raw_summaries(connection: sqlite3.Connection, limit: int | None) -> list[Any]:
    """The summary rows, newest first, at most ``limit``."""
    if limit is None:
        return connection.execute(SUMMARIES).fetchall()
    return connection.execute(f"{SUMMARIES} LIMIT ?", (limit,)).fetchall()


def raw_delete(connection: sqlite3.Connection, session_id: str) -> None:
    """Delete a session's rows in one transaction."""
    with transaction(connection):
        connection.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
        connection.execute("DELETE FROM responses WHERE session_id = ?", (session_id,))
        connection.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def raw_seed(path: Path, seeds: Sequence[tuple[str, int]]) -> list[str]:
    """Insert the sessions' rows in one transaction at synchronous=OFF; return their ids."""
    now = datetime.now(UTC)
    sessions, messages, responses = [], [], []
    for index, (session_id, exchanges) in enumerate(seeds):
        at = spaced(index, now).isoformat()
        sessions.append((session_id, USER, exchanges, at, at))
        for position in range(exchanges):
            messages.append((session_id, position, QUESTION, at))
            responses.append((session_id, position, ANSWER, "seed-alpha", "seed", True, at))
    connection = raw_connection(path, "OFF")
    with transaction(connection):
        connection.executemany(INSERT_SESSION, sessions)
        connection.executemany(INSERT_MESSAGE, messages)
        connection.executemany(INSERT_RESPONSE, responses)
    connection.close()
    return [session_id for session_id, _ in seeds]


Run = Callable[[Callable[[], Any]], Awaitable[Any]]
"""How a floor's call reaches its connection: inline, or one hop to its thread."""


class RawFloor:
    """Hand-written sqlite3 on lean tables, synchronous=FULL, reached inline or in one hop."""

    def __init__(
        self,
        name: str,
        path: Path,
        connection: sqlite3.Connection,
        run: Run,
        stop: Callable[[], None],
    ) -> None:
        self.name = name
        self.path = path
        self.connection = connection
        self._run = run
        self._stop = stop

    @classmethod
    async def open(cls, path: Path, *, hop: bool) -> RawFloor:
        """Create the lean tables; with ``hop``, run every call on one dedicated thread."""
        connection = raw_connection(path, "FULL")
        connection.executescript(LEAN_SCHEMA)
        if not hop:

            async def inline(call: Callable[[], Any]) -> Any:
                return call()

            return cls(INLINE, path, connection, inline, lambda: None)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="one-hop-floor")
        loop = asyncio.get_running_loop()

        def one_hop(call: Callable[[], Any]) -> Awaitable[Any]:
            return loop.run_in_executor(executor, call)

        return cls(ONE_HOP, path, connection, one_hop, executor.shutdown)

    async def close(self) -> None:
        """Stop the thread, close the connection."""
        self._stop()
        self.connection.close()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
        return self._run(lambda: fn(self.connection, *args))

    async def appender(self, history: int, sessions: int) -> Op | None:
        ids = cycling(raw_seed(self.path, conversations("a", sessions, history)))
        return lambda: self._call(raw_append, ids())

    async def unloaded_appender(self, history: int, sessions: int) -> Op | None:
        return await self.appender(history, sessions)  # a floor never loads to append

    async def loader(self, history: int) -> Op | None:
        [session_id] = raw_seed(self.path, [("long", history)])
        _, messages, responses = await self._call(raw_load, session_id)
        expect(len(messages) == len(responses) == history, f"{self.name} load")
        return lambda: self._call(raw_load, session_id)

    async def listers(self, sessions: int, newest: int) -> tuple[Op, Op] | None:
        raw_seed(self.path, conversations("l", sessions, 1))
        expect(len(await self._call(raw_summaries, None)) == sessions, f"{self.name} listing")
        return lambda: self._call(raw_summaries, None), lambda: self._call(raw_summaries, newest)

    async def creator(self) -> Op | None:
        ids = itertools.count()

        async def create() -> None:
            session_id = f"new-{next(ids)}"
            await self._call(raw_create, session_id)
            for _ in range(2):
                await self._call(raw_append, session_id)

        return create

    async def deleter(self, history: int, sessions: int) -> Op | None:
        ids = in_order(raw_seed(self.path, conversations("d", sessions, history)))
        return lambda: self._call(raw_delete, ids())

    async def writers(self, count: int) -> list[Op] | None:
        [session_id] = raw_seed(self.path, [("w", 2)])
        return [lambda: self._call(raw_append, session_id)]  # one writer: sequential


@asynccontextmanager
async def participants(workdir: Path, workload: str) -> AsyncIterator[list[Participant]]:
    """Every participant, each on a new file (or folder) of its own; all closed afterwards."""
    folder = workdir / workload
    folder.mkdir()
    async with AsyncExitStack() as stack:
        sides: list[Participant] = []
        for opening in (
            StatestoreSide.open(folder / "statestore.db"),
            AgentsSide.open(folder / "openai-agents.db"),
            GraphSide.open(folder / "langgraph.db"),
            FileSide.open(folder / "files"),
            RawFloor.open(folder / "inline.db", hop=False),
            RawFloor.open(folder / "one-hop.db", hop=True),
        ):
            side = await opening
            stack.push_async_callback(side.close)
            sides.append(side)
        yield sides


# -- timing ----------------------------------------------------------------------------------


def quantile(samples: Sequence[float], q: float) -> float:
    """The q-quantile of samples (q in 0..1)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def alternate(
    ops: Mapping[str, Op | None],
    repeat: int,
    *,
    warmup: int = WARMUP,
    at_most: Mapping[str, int] | None = None,
) -> dict[str, list[float] | None]:
    """Call each op in turn, round after round; return each one's seconds per measured call.

    ``at_most`` caps the measured calls of slow participants (they sit out later rounds).
    A participant without an op gets ``None``.
    """
    limits = {name: (at_most or {}).get(name, repeat) for name in ops}
    samples: dict[str, list[float]] = {name: [] for name, op in ops.items() if op is not None}
    for round_number in range(warmup + repeat):
        for name, op in ops.items():
            if op is None or round_number >= warmup + limits[name]:
                continue
            started = time.perf_counter()
            await op()
            if round_number >= warmup:
                samples[name].append(time.perf_counter() - started)
    return {name: samples.get(name) for name in ops}


@dataclass
class Throughput:
    """Calls per second over the measured rounds, and the p99 of one call's latency."""

    rate: float
    p99: float


async def crowd_round(ops: Sequence[Op], calls: int) -> tuple[float, list[float]]:
    """Run one coroutine per op, ``calls`` calls in all; return the wall time and latencies."""

    async def writer(op: Op) -> list[float]:
        latencies = []
        for _ in range(calls // len(ops)):
            started = time.perf_counter()
            await op()
            latencies.append(time.perf_counter() - started)
        return latencies

    started = time.perf_counter()
    per_writer = await asyncio.gather(*(writer(op) for op in ops))
    return time.perf_counter() - started, [x for latencies in per_writer for x in latencies]


async def crowd(
    plans: Mapping[str, list[Op] | None], calls: int, rounds: int
) -> dict[str, Throughput | None]:
    """A warm-up round, then ``rounds`` measured rounds per participant in alternation."""
    ready = {name: ops for name, ops in plans.items() if ops is not None}
    for ops in ready.values():
        await crowd_round(ops, 2 * len(ops))
    elapsed = dict.fromkeys(ready, 0.0)
    latencies: dict[str, list[float]] = {name: [] for name in ready}
    for _ in range(rounds):
        for name, ops in ready.items():
            seconds, measured = await crowd_round(ops, calls)
            elapsed[name] += seconds
            latencies[name] += measured
    return {
        name: Throughput(len(latencies[name]) / elapsed[name], quantile(latencies[name], 0.99))
        if name in ready
        else None
        for name in plans
    }


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One of the issue's targets, with what was measured for it."""

    text: str
    measured: str
    met: bool | None
    """None: not measured (a participant could not do the workload)."""


@dataclass
class Row:
    """One workload figure for every participant."""

    name: str
    figures: dict[str, float | None]
    rate: bool = False
    """A rate (higher is better) rather than a duration."""
    targets: list[Target] = field(default_factory=list)

    def best_peer(self) -> tuple[str, float] | None:
        """The better peer and its figure, if any peer could do it."""
        done = [(name, value) for name in PEERS if (value := self.figures[name]) is not None]
        if not done:
            return None
        return (max if self.rate else min)(done, key=lambda pair: pair[1])

    def ratio(self, other: float | None) -> float | None:
        """statestore's figure over ``other``."""
        ours = self.figures[STATESTORE]
        return None if ours is None or other is None else ours / other


def medians(samples: Mapping[str, list[float] | None]) -> dict[str, float | None]:
    """Each participant's median."""
    return {name: None if s is None else statistics.median(s) for name, s in samples.items()}


def p95s(samples: Mapping[str, list[float] | None]) -> dict[str, float | None]:
    """Each participant's 95th percentile."""
    return {name: None if s is None else quantile(s, 0.95) for name, s in samples.items()}


def times(ratio: float | None) -> str:
    """Format a ratio."""
    return "—" if ratio is None else f"{ratio:.2f}x"


def at_most(text: str, ratio: float | None, limit: float) -> Target:
    """A target met when the ratio is at most the limit."""
    return Target(text, times(ratio), None if ratio is None else ratio <= limit)


def at_least(text: str, ratio: float | None, limit: float) -> Target:
    """A target met when the ratio is at least the limit."""
    return Target(text, times(ratio), None if ratio is None else ratio >= limit)


def against_best_peer(row: Row) -> Target:
    """The target "no worse than the best peer"."""
    best = row.best_peer()
    return at_most("<= best peer", row.ratio(best[1] if best else None), 1.0)


def shown(value: float | None, *, rate: bool) -> str:
    """Format a figure: a rate per second, or a duration in a fitting unit."""
    if value is None:
        return "—"
    if rate:
        return f"{value:,.0f}/s"
    if value < 1e-3:
        return f"{value * 1e6:,.0f} µs"
    if value < 1:
        return f"{value * 1e3:,.2f} ms"
    return f"{value:,.2f} s"


def report(rows: Sequence[Row]) -> None:
    """Print the rows as a markdown table, then how many targets were met."""
    print(
        f"| workload | {' | '.join(COLUMNS)} | statestore / best peer | statestore / one-hop "
        "| target: measured | met |"
    )
    print("|---" * (len(COLUMNS) + 5) + "|")
    for row in rows:
        figures = " | ".join(shown(row.figures[name], rate=row.rate) for name in COLUMNS)
        best = row.best_peer()
        versus_peer = f"{times(row.ratio(best[1]))} ({best[0]})" if best else "—"
        targets = "; ".join(f"{t.text}: {t.measured}" for t in row.targets)
        met = "; ".join(
            "yes" if t.met else "not measured" if t.met is None else "NO" for t in row.targets
        )
        print(
            f"| {row.name} | {figures} | {versus_peer} | {times(row.ratio(row.figures[ONE_HOP]))} "
            f"| {targets} | {met} |"
        )
    targets = [target for row in rows for target in row.targets]
    unmeasured = sum(target.met is None for target in targets)
    note = f" ({unmeasured} not measured)" if unmeasured else ""
    print(f"targets met: {sum(target.met is True for target in targets)} of {len(targets)}{note}")


# -- the workloads ---------------------------------------------------------------------------


async def append_rows(workdir: Path, sizes: Sizes) -> list[Row]:
    """Append one exchange to a session in hand: median and p95."""
    async with participants(workdir, "append") as sides:
        ops = {side.name: await side.appender(sizes.history, sizes.rotation) for side in sides}
        samples = await alternate(ops, sizes.repeat)
    median = Row(f"append one exchange ({sizes.history} of history), median", medians(samples))
    median.targets = [
        at_most("<= 1.0x openai-agents", median.ratio(median.figures[AGENTS]), 1.0),
        at_most("<= 1.5x one-hop", median.ratio(median.figures[ONE_HOP]), 1.5),
    ]
    p95 = Row("append one exchange, p95", p95s(samples))
    p95.targets = [against_best_peer(p95)]
    return [median, p95]


async def unloaded_rows(workdir: Path, sizes: Sizes, loaded_append: float | None) -> list[Row]:
    """Append one exchange given only the session id, at a short and a long history."""
    rows = []
    for history in (sizes.history, sizes.long_history):
        async with participants(workdir, f"unloaded-{history}") as sides:
            ops = {
                side.name: await side.unloaded_appender(history, sizes.rotation) for side in sides
            }
            samples = await alternate(ops, sizes.repeat)
        rows.append(
            Row(f"append without load, {history:,} exchanges of history, median", medians(samples))
        )
    short, long = rows
    long.targets = [
        at_most(f"<= 1.2x at {sizes.history}", long.ratio(short.figures[STATESTORE]), 1.2),
        at_most(
            f"<= 1.2x a save_session append at {sizes.history}", long.ratio(loaded_append), 1.2
        ),
    ]
    return rows


async def load_row(workdir: Path, sizes: Sizes) -> Row:
    """Load one long conversation."""
    history = sizes.load_history
    async with participants(workdir, "load") as sides:
        ops = {side.name: await side.loader(history) for side in sides}
        samples = await alternate(ops, sizes.repeat)
    row = Row(f"load a conversation of {history} + {history}, median", medians(samples))
    row.targets = [at_most("<= 1.0x LangGraph", row.ratio(row.figures[LANGGRAPH]), 1.0)]
    return row


async def list_rows(workdir: Path, sizes: Sizes) -> list[Row]:
    """List all sessions, and the newest page."""
    async with participants(workdir, "list") as sides:
        listers = {side.name: await side.listers(sizes.listed, sizes.newest) for side in sides}
        slow = {FILES: sizes.slow_list_repeat, LANGGRAPH: sizes.slow_list_repeat}
        all_ops = {name: None if pair is None else pair[0] for name, pair in listers.items()}
        newest_ops = {name: None if pair is None else pair[1] for name, pair in listers.items()}
        listed_all = await alternate(all_ops, sizes.list_repeat, warmup=1, at_most=slow)
        newest = await alternate(newest_ops, sizes.repeat, at_most={FILES: sizes.slow_list_repeat})
    rows = [
        Row(f"list all of {sizes.listed:,} sessions, median", medians(listed_all)),
        Row(f"list newest {sizes.newest} of {sizes.listed:,} sessions, median", medians(newest)),
    ]
    for row in rows:
        row.targets = [at_most("<= 2x one-hop", row.ratio(row.figures[ONE_HOP]), 2.0)]
    return rows


async def create_row(workdir: Path, sizes: Sizes) -> Row:
    """Create a session and append two exchanges, saving after each."""
    async with participants(workdir, "create") as sides:
        samples = await alternate({side.name: await side.creator() for side in sides}, sizes.repeat)
    row = Row("create a session + 2 turns, median", medians(samples))
    row.targets = [against_best_peer(row)]
    return row


async def delete_row(workdir: Path, sizes: Sizes) -> Row:
    """Delete one session of a short history, a different one per call."""
    sessions = WARMUP + sizes.repeat
    async with participants(workdir, "delete") as sides:
        ops = {side.name: await side.deleter(sizes.history, sessions) for side in sides}
        samples = await alternate(ops, sizes.repeat)
    row = Row(f"delete one session ({sizes.history} exchanges), median", medians(samples))
    row.targets = [against_best_peer(row)]
    return row


async def crowd_rows(workdir: Path, sizes: Sizes) -> list[Row]:
    """64 coroutines appending, each to its own session (the floors: one after another)."""
    os.sync()  # start from clean page cache, so no figure pays for the seeding's writes
    async with participants(workdir, "crowd") as sides:
        plans = {side.name: await side.writers(sizes.writers) for side in sides}
        measured = await crowd(plans, sizes.writers * sizes.crowd_appends, sizes.crowd_rounds)
    setting = f"{sizes.writers} coroutines appending (floors: sequential)"
    rate = Row(
        f"{setting}, appends/s",
        {name: None if t is None else t.rate for name, t in measured.items()},
        rate=True,
    )
    rate.targets = [at_least(">= 3.5x one-hop", rate.ratio(rate.figures[ONE_HOP]), 3.5)]
    p99 = Row(
        f"{setting}, p99",
        {name: None if t is None else t.p99 for name, t in measured.items()},
    )
    ours = p99.figures[STATESTORE]
    p99.targets = [
        Target("<= 5 ms", shown(ours, rate=False), None if ours is None else ours <= 0.005)
    ]
    return [rate, p99]


async def every_row(workdir: Path, sizes: Sizes) -> list[Row]:
    """Run every workload; return the report's rows."""
    appends = await append_rows(workdir, sizes)
    return [
        *appends,
        *await unloaded_rows(workdir, sizes, appends[0].figures[STATESTORE]),
        await load_row(workdir, sizes),
        *await list_rows(workdir, sizes),
        await create_row(workdir, sizes),
        await delete_row(workdir, sizes),
        *await crowd_rows(workdir, sizes),
    ]


def header(quick: bool, sizes: Sizes) -> None:
    """Say what ran on what."""
    packages = ", ".join(
        f"{name} {version(name)}"
        for name in (
            "statestore",
            "openai-agents",
            "langgraph",
            "langgraph-checkpoint-sqlite",
            "aiosqlite",
        )
    )
    print(f"statestore on SQLite against its peers, {'quick' if quick else 'full'} run")
    print(f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}; {packages}")
    print(f"every participant at synchronous=FULL, WAL; sizes: {sizes.describe()}")
    if not hasattr(StateStore, "append_to_session"):
        print("StateStore has no append_to_session: its append-without-load rows show —")


def main() -> None:
    """Measure every workload and print the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--dir", type=Path, help="where to make the databases' folder (default: a temp dir)"
    )
    options = parser.parse_args()
    sizes = QUICK if options.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="statestore-peers-", dir=options.dir))
    try:
        header(options.quick, sizes)
        rows = asyncio.run(every_row(workdir, sizes))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(rows)


if __name__ == "__main__":
    main()
