"""Workers for the acknowledged-saves test (``python -m tests.ack_workers`` from the root).

``TARGET WORKERS COROUTINES SECONDS SEED OUTDIR [STORES]`` forks ``WORKERS`` children on one
database already at the newest schema (a SQLite file or a PostgreSQL URL), each with
``STORES`` stores open on it (default 1; more send each operation through a random one of
them, and the guarantees must hold all the same). Child ``N`` owns
the sessions ``ack-wN-s0`` .. ``ack-wN-s{SESSIONS - 1}`` and runs ``COROUTINES`` coroutines
of seeded random operations on them for ``SECONDS``: edits in place of live session
objects shared by the coroutines; saves of them, of copies (``copy.copy``,
``copy.deepcopy``, ``model_copy``) and of pickle round trips edited in place, of sessions
loaded from the store; saves awaited, fired and forgotten, abandoned by a tiny
``wait_for`` timeout or cancelled after a random number of ``sleep(0)``; deletes,
``update_session_with`` and prunes by TTL -- which meet the other children's sessions too.
Some saves and updates are poisoned (``metadata["poison"]``, which a trigger the test
installs makes the database reject), so that writes fail now and then in the middle of the
others; some saves have a value no backend stores, which the call itself must refuse.

Every write is logged per session, in call order, with the exact state it would store
(captured at the call) and whether it was acknowledged; the log goes to
``OUTDIR/ack-N.json``. :func:`judge` says whether a stored state is one a log allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import pickle
import random
import sys
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage
from statestore.errors import InvalidDataError, StateStoreError

from .fault_workers import fork_workers

SESSIONS = 8
"""Sessions each worker owns."""

FRESH_EVERY = 3
"""Every third session is fresh: each of its states has ``updated_at`` = now, and it is
never deleted, so it must be stored at the end once one save of it was acknowledged."""

TTL_HOURS = 24 * 7
PRUNE = PruneConfig(max_sessions=0, ttl_hours=TTL_HOURS)
"""Prunes by TTL only: they may take a stale session, never a fresh one."""

STALE_AGE = timedelta(days=30)
"""How old a stale state's ``updated_at`` is."""

POOL = 4
"""Live session objects kept per session id."""

MAX_ITEMS = 10
"""A history longer than this loses its oldest items (a rewrite) after an edit."""

OPERATIONS = {
    "edit": 6,
    "save": 8,
    "copy": 3,
    "new": 1,
    "load": 2,
    "drop": 1,
    "update": 3,
    "delete": 1,
    "prune": 1,
}

HOW = {"await": 4, "forget": 2, "timeout": 2, "cancel": 2}
"""How the caller treats a write: awaited, fired and forgotten, timed out, cancelled."""

TIMEOUTS = (0, 0, 0.0001, 0.001, 0.003, 0.05)
"""``wait_for`` timeouts: most expire before the commit, a few do not."""

POISON_KEY = "poison"
POISONED = "poisoned session"
"""A session whose metadata has :data:`POISON_KEY` is rejected by the database with this
message (see :data:`POISON_TRIGGERS`): such a write must fail, as a whole."""

POISON_RATE = 0.05
BAD_DATA_RATE = 0.03

POISON_TRIGGERS = {
    "sqlite": [
        f"""CREATE TRIGGER ack_poison_{event} BEFORE {event} ON sessions
        WHEN NEW.metadata LIKE '%"{POISON_KEY}"%'
        BEGIN SELECT RAISE(ABORT, '{POISONED}'); END"""
        for event in ("INSERT", "UPDATE")
    ],
    "postgresql": [
        f"""CREATE FUNCTION ack_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.metadata::text LIKE '%"{POISON_KEY}"%' THEN
                RAISE EXCEPTION '{POISONED}';
            END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER ack_poison BEFORE INSERT OR UPDATE ON sessions
        FOR EACH ROW EXECUTE FUNCTION ack_poison()""",
    ],
}
"""Statements, per backend, that make the database reject poisoned sessions."""

POISON_CLEANUP = "DROP TRIGGER ack_poison ON sessions; DROP FUNCTION ack_poison()"
"""Takes the PostgreSQL trigger away again."""

TEXT = " ' % _ \" ;-- é 漢字 🙂"

StateDump = dict[str, Any]
Op = dict[str, Any]
"""One logged write: ``seq`` (its place in its session's call order), ``kind`` ("save",
"delete" or "update"), ``how``, ``acked``, ``error``, ``poisoned``, and what it stores:
``state`` for a save, the ``outputs`` of ``fn`` (each call) and the ``result`` of an
acknowledged update."""


# -- what the log allows ----------------------------------------------------------------


def is_stale(state: StateDump) -> bool:
    """Whether a prune by :data:`PRUNE` may delete a session stored in this state."""
    updated = datetime.fromisoformat(state["updated_at"])
    return updated < datetime.now(UTC) - timedelta(hours=TTL_HOURS)


def effects(op: Op) -> list[StateDump | None]:
    """The states a write may leave its session in if it commits (``None``: missing)."""
    if op["kind"] == "update" and op["acked"]:
        return [op["result"]]  # None: it found no session (and fn never ran)
    if op["poisoned"]:
        return []  # it cannot commit
    if op["kind"] == "save":
        return [op["state"]]
    if op["kind"] == "delete":
        return [None]
    return list(op["outputs"])  # none: fn never ran, nothing changed


def last_acked(ops: list[Op]) -> int | None:
    """The index of the last write acknowledged, in call order."""
    return max((index for index, op in enumerate(ops) if op["acked"]), default=None)


def judge(
    ops: list[Op], stored: StateDump | None, *, floor: int | None = -1, strict: bool = False
) -> str | None:
    """Return what is wrong with ``stored`` as the state of a session with this log, or None.

    The stored state must be, whole, the state of the last acknowledged write (the
    ``floor``; by default the last in the log) or of a later one; missing only if one of
    them deletes it, found it missing, or is stale (a prune's to take). With ``strict``
    (no write failed anywhere, so every write committed in its turn) it must be the state
    of the last write that changed anything.
    """
    if floor == -1:
        floor = last_acked(ops)
    problems = []
    poisoned = [op["seq"] for op in ops if op["poisoned"] and op["acked"] and effects(op) != [None]]
    if poisoned:
        problems.append(
            f"saves of states the database rejects were acknowledged (so they stored another "
            f"state than the one at the call): {poisoned}"
        )
    window = ops if floor is None else ops[floor:]
    may_be_missing = floor is None  # nothing acknowledged: maybe never stored
    candidates: list[StateDump] = []
    for op in window:
        for state in effects(op):
            if state is None:
                may_be_missing = True
            else:
                candidates.append(state)
                may_be_missing = may_be_missing or is_stale(state)
    if stored is None and not may_be_missing:
        problems.append(
            "missing, though every state it may hold is fresh and none deletes it "
            f"(a prune deleted a fresh session, or a write was lost); {_story(ops, floor)}"
        )
    elif stored is not None and stored not in candidates:
        problems.append(f"stored state is none that may be stored: {_mismatch(stored, ops, floor)}")
    elif strict:
        expected = last_effect(ops)
        if stored != expected and not (
            stored is None and expected is not None and is_stale(expected)
        ):
            found = _mismatch(stored, ops, floor) if stored else f"missing; {_story(ops, floor)}"
            problems.append(f"not the state of the last write, though no write failed: {found}")
    return "; and ".join(problems) or None


def last_effect(ops: list[Op]) -> StateDump | None:
    """The state the last write that changed anything leaves (every write committed)."""
    for op in reversed(ops):
        states = effects(op)
        if states:
            return states[-1]
    return None


def _size(state: StateDump) -> str:
    messages, responses = state.get("user_messages", []), state.get("agent_responses", [])
    return f"{len(messages)}m/{len(responses)}r"


def _state_of(op: Op) -> StateDump | None:
    """The state a write stores, if it stores one (for a report)."""
    states = effects(op) or op.get("outputs") or [op.get("state")]
    states = [state for state in states if state is not None]
    return states[-1] if states else None


def _brief(op: Op) -> str:
    state = _state_of(op)
    size = f" {_size(state)}" if state else ""
    fresh = "" if not state else " stale" if is_stale(state) else " fresh"
    flag = "ack" if op["acked"] else "err" if op["error"] else "-"
    flag += " poisoned" if op["poisoned"] else ""
    return f"#{op['seq']} {op['kind']}/{op['how']}/{op.get('source', '')} {flag}{size}{fresh}"


def _story(ops: list[Op], floor: int | None) -> str:
    start = max(0, (floor or 0) - 2)
    shown = ", ".join(_brief(op) for op in ops[start:])
    return f"last acknowledged #{floor}; writes from #{start}: {shown}"


def _mismatch(stored: StateDump, ops: list[Op], floor: int | None) -> str:
    """Say which write the stored state claims to be, and how it differs from that write."""
    seq = stored.get("metadata", {}).get("op")
    claimed = next((op for op in ops if op["seq"] == seq), None)
    text = f"it has metadata op={seq}"
    state = None if claimed is None else _state_of(claimed)
    if state == stored:
        text += f", the state of #{seq}, which an acknowledged later write replaced"
    elif state is not None:
        fields = sorted(k for k in state.keys() | stored.keys() if state.get(k) != stored.get(k))
        text += (
            f", and differs from #{seq}'s state in {fields} "
            f"(stored {_size(stored)}, #{seq} {_size(state)})"
        )
    return f"{text}; {_story(ops, floor)}"


# -- edits ------------------------------------------------------------------------------


def _text(rng: random.Random, what: str) -> str:
    return f"{what} {rng.randrange(10**6)}{TEXT[: rng.randrange(len(TEXT) + 1)]}"


def _message(rng: random.Random) -> UserMessage:
    if rng.random() < 0.3:  # an unknown field, kept as the message's extra
        return UserMessage(content=_text(rng, "msg"), mood=rng.choice(["calm", None, 3]))
    return UserMessage(content=_text(rng, "msg"))


def _response(rng: random.Random) -> AgentResponse:
    return AgentResponse(
        content=_text(rng, "reply"),
        seed_id=rng.choice([None, "seed-a", "seed-b"]),
        phase_reached=rng.choice([None, "plan", "done"]),
        evaluation_passed=rng.choice([None, True, False]),
        session_id=rng.choice([None, "elsewhere"]),
    )


def _append_message(s: Session, rng: random.Random) -> None:
    s.add_user_message(_text(rng, "asked"))


def _append_response(s: Session, rng: random.Random) -> None:
    s.add_agent_response(_response(rng))


def _extend(s: Session, rng: random.Random) -> None:
    s.user_messages.extend([_message(rng) for _ in range(rng.randrange(1, 3))])


def _plus_equals(s: Session, rng: random.Random) -> None:
    s.agent_responses += [_response(rng)]


def _edit_message(s: Session, rng: random.Random) -> None:
    if s.user_messages:
        rng.choice(s.user_messages).content = _text(rng, "edited")


def _edit_response(s: Session, rng: random.Random) -> None:
    if s.agent_responses:
        response = rng.choice(s.agent_responses)
        response.evaluation_passed = rng.choice([None, True, False])
        response.content = _text(rng, "re-edited")


def _delete_first(s: Session, rng: random.Random) -> None:
    if s.user_messages:
        del s.user_messages[0]


def _insert(s: Session, rng: random.Random) -> None:
    s.user_messages.insert(rng.randrange(len(s.user_messages) + 1), _message(rng))


def _replace_item(s: Session, rng: random.Random) -> None:
    if s.agent_responses:
        s.agent_responses[rng.randrange(len(s.agent_responses))] = _response(rng)


def _assign_list(s: Session, rng: random.Random) -> None:
    s.user_messages = [*s.user_messages[1:], _message(rng)]


def _reverse(s: Session, rng: random.Random) -> None:
    s.agent_responses.reverse()


def _pop(s: Session, rng: random.Random) -> None:
    if s.user_messages:
        s.user_messages.pop()


def _clear(s: Session, rng: random.Random) -> None:
    s.agent_responses.clear()


def _metadata(s: Session, rng: random.Random) -> None:
    value = rng.choice([rng.randrange(100), {"nested": [1, "two", None]}, _text(rng, "m"), 0.5])
    s.set_metadata(rng.choice(["a", "b", "c"]), value)


def _seed(s: Session, rng: random.Random) -> None:
    s.set_active_seed(rng.choice([None, "seed-a", "seed-b"]))


EDITS: dict[str, tuple[int, Callable[[Session, random.Random], None]]] = {
    "append_message": (8, _append_message),
    "append_response": (8, _append_response),
    "extend": (3, _extend),
    "plus_equals": (3, _plus_equals),
    "edit_message": (2, _edit_message),
    "edit_response": (1, _edit_response),
    "delete_first": (1, _delete_first),
    "insert": (1, _insert),
    "replace_item": (1, _replace_item),
    "assign_list": (1, _assign_list),
    "reverse": (1, _reverse),
    "pop": (1, _pop),
    "clear": (1, _clear),
    "metadata": (2, _metadata),
    "seed": (1, _seed),
}


def draw(rng: random.Random, weights: dict[str, int], counts: Counter[str], prefix: str) -> str:
    """Draw a name by its weight, from those not yet counted under ``prefix`` while any are.

    So every operation, edit and way of treating a write runs early in each worker, however
    few operations a slow machine lets it make; then the weights alone decide.
    """
    names = [name for name in weights if not counts[prefix + name]] or list(weights)
    return rng.choices(names, [weights[name] for name in names])[0]


FIELD_EDITS = {"edit_message", "edit_response"}
"""Edits that assign a message's field: every session in the process then saves whole
(see ``statestore._tracking.note_edit``), so only even workers make them, and odd workers'
saves rely on their lists' own tracking of rewrites."""


def edit(session: Session, rng: random.Random, counts: Counter[str], *, fields: bool) -> None:
    """Apply one random edit in place (assigning message fields only if ``fields``)."""
    names = [name for name in EDITS if fields or name not in FIELD_EDITS]
    name = draw(rng, {name: EDITS[name][0] for name in names}, counts, "edit:")
    EDITS[name][1](session, rng)
    counts[f"edit:{name}"] += 1
    if len(session.user_messages) > MAX_ITEMS:
        del session.user_messages[: len(session.user_messages) - MAX_ITEMS // 2]
    if len(session.agent_responses) > MAX_ITEMS:
        del session.agent_responses[: len(session.agent_responses) - MAX_ITEMS // 2]


COPIES: dict[str, Callable[[Session], Session]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "model_copy": lambda s: s.model_copy(),
    "model_copy_deep": lambda s: s.model_copy(deep=True),
    "pickle": lambda s: pickle.loads(pickle.dumps(s)),
}


# -- the worker -------------------------------------------------------------------------


class FailedWrites(logging.Handler):
    """Collects statestore's "write failed" records: writes whose caller was gone."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed: list[str] = []
        self.poisoned = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("write failed"):
            return
        if POISONED in message:
            self.poisoned += 1
        else:
            self.failed.append(message)


class Worker:
    """One process's sessions, their live objects, and the log of every write to them."""

    def __init__(self, stores: list[StateStore], worker: int) -> None:
        self.stores = stores
        self.worker = worker
        self.ids = [f"ack-w{worker}-s{k}" for k in range(SESSIONS)]
        self.fresh = {self.ids[k] for k in range(0, SESSIONS, FRESH_EVERY)}
        self.log: dict[str, list[Op]] = {session_id: [] for session_id in self.ids}
        self.pool: dict[str, list[Session]] = {session_id: [] for session_id in self.ids}
        self.pending: set[asyncio.Future[Any]] = set()
        self.errors: list[str] = []
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()

    # -- bookkeeping

    def begin(
        self, session_id: str, kind: str, how: str, *, poisoned: bool = False, **fields: Any
    ) -> Op:
        """Log a write at its call: the next place in its session's call order."""
        ops = self.log[session_id]
        op: Op = {"seq": len(ops), "kind": kind, "how": how, "acked": False, "error": None}
        op.update(fields, poisoned=poisoned)
        ops.append(op)
        self.counts[f"{kind}:{how}"] += 1
        return op

    def failed(self, op: Op, error: BaseException) -> None:
        op["error"] = f"{type(error).__name__}: {error}"
        if op["poisoned"] and POISONED in str(error):
            self.counts[f"{op['kind']}:poisoned, failed"] += 1
        else:
            self.errors.append(f"#{op['seq']} {op['kind']}/{op['how']}: {op['error']}")
        if not isinstance(error, StateStoreError):
            self.violations.append(f"a write failed with a non-StateStoreError: {op['error']}")

    def keep(self, session: Session, rng: random.Random) -> None:
        """Put a live object in its session's pool, in place of a random one if full."""
        pool = self.pool[session.id]
        if len(pool) >= POOL:
            pool[rng.randrange(len(pool))] = session
        else:
            pool.append(session)

    def edit(self, session: Session, rng: random.Random) -> None:
        edit(session, rng, self.counts, fields=self.worker % 2 == 0)

    def pick_store(self, rng: random.Random) -> StateStore:
        """The store to write or read through (one, unless the worker opened more)."""
        return (
            self.stores[rng.randrange(len(self.stores))] if len(self.stores) > 1 else self.stores[0]
        )

    def pick(self, session_id: str, rng: random.Random) -> Session:
        pool = self.pool[session_id]
        if not pool:
            pool.append(self.new_session(session_id))
        return rng.choice(pool)

    def new_session(self, session_id: str) -> Session:
        self.counts["new session object"] += 1
        return Session(id=session_id, user_id=f"user-w{self.worker}")

    def stamp(self, session_id: str, session: Session, rng: random.Random, seq: int) -> None:
        """Make the state fresh or stale (fresh sessions always fresh), and tag its write."""
        now = datetime.now(UTC)
        stale = session_id not in self.fresh and rng.random() < 0.4
        session.updated_at = now - STALE_AGE if stale else now
        session.metadata["op"] = seq

    # -- how a write's caller treats it

    async def drive(
        self, awaitable: Awaitable[Any], op: Op | None, how: str, rng: random.Random
    ) -> None:
        """Await, time out, forget or cancel a write; mark ``op`` acknowledged if it was.

        ``op`` is None for a write that marks itself (see :meth:`wrapped`).
        """
        if how in ("await", "timeout"):
            try:
                if how == "await":
                    await awaitable
                else:
                    await asyncio.wait_for(awaitable, rng.choice(TIMEOUTS))
            except TimeoutError:
                return
            except Exception as error:
                if op is not None:
                    self.failed(op, error)
                return
            if op is not None:
                op["acked"] = True
            return
        task = asyncio.ensure_future(awaitable)
        self.pending.add(task)
        task.add_done_callback(partial(self.settled, op))
        if how == "cancel":
            for _ in range(rng.randrange(8)):
                await asyncio.sleep(0)
            task.cancel()

    def settled(self, op: Op | None, task: asyncio.Future[Any]) -> None:
        """Note how a forgotten or cancelled write ended."""
        self.pending.discard(task)
        if task.cancelled() or op is None:
            return
        error = task.exception()
        if error is not None:
            self.failed(op, error)
        else:
            op["acked"] = True

    async def wrapped(
        self,
        start: Callable[[], tuple[Op, Awaitable[Any]]],
        finish: Callable[[Op, Any], None],
    ) -> None:
        """Call an ``async def`` write and mark it: it is logged when it starts running.

        ``delete_session`` and ``update_session_with`` queue their write when they start,
        with no await before, so the log's order is the order they were queued in.
        """
        op, awaitable = start()
        try:
            result = await awaitable
        except Exception as error:
            self.failed(op, error)
            return
        finish(op, result)

    # -- the operations

    async def save(self, session: Session, rng: random.Random, source: str) -> None:
        """Save ``session``, logging the state it has at the call."""
        if rng.random() < BAD_DATA_RATE:
            await self.refused(session, rng)
        how = draw(rng, HOW, self.counts, "save:")
        poisoned = rng.random() < POISON_RATE
        op = self.begin(session.id, "save", how, source=source, poisoned=poisoned)
        self.stamp(session.id, session, rng, op["seq"])
        if poisoned:
            session.metadata[POISON_KEY] = True
        op["state"] = session.model_dump(mode="json")
        store, call = self.pick_store(rng), rng.random()
        stored = session._stored  # only to count the saves that may take the append path
        if stored is not None and stored.appended_only(session, store._db.time):
            self.counts["save:may append only"] += 1
        if call < 0.1:
            awaitable = store.update_session(session)
        elif call < 0.15 and how in ("await", "forget"):
            # Not cancelled or timed out: abandoned before it starts, its inner
            # coroutine would never be awaited (reported separately).
            awaitable = store.save_session_with_prune(session, PRUNE)
        else:
            awaitable = store.save_session(session)
        if poisoned:  # the next save of this object is clean again
            del session.metadata[POISON_KEY]
        if rng.random() < 0.3:  # changed after the call: not part of what it stores
            self.edit(session, rng)
        await self.drive(awaitable, op, how, rng)

    async def refused(self, session: Session, rng: random.Random) -> None:
        """Save a value no backend stores: the call itself must refuse it, changing nothing."""
        user_id = session.user_id
        session.user_id = "nul \x00"
        try:
            awaitable = self.pick_store(rng).save_session(session)
        except InvalidDataError:
            self.counts["save:refused by the call"] += 1
            return
        finally:
            session.user_id = user_id
        self.violations.append(f"{session.id}: a save of a NUL was not refused by the call")
        with contextlib.suppress(InvalidDataError):
            await awaitable

    async def op_edit(self, session_id: str, rng: random.Random) -> None:
        session = self.pick(session_id, rng)
        for _ in range(rng.randrange(1, 4)):
            self.edit(session, rng)

    async def op_save(self, session_id: str, rng: random.Random) -> None:
        await self.save(self.pick(session_id, rng), rng, "live")

    async def op_copy(self, session_id: str, rng: random.Random) -> None:
        method = rng.choice(list(COPIES))
        duplicate = COPIES[method](self.pick(session_id, rng))
        for _ in range(rng.randrange(3)):
            self.edit(duplicate, rng)
        self.keep(duplicate, rng)
        await self.save(duplicate, rng, method)

    async def op_new(self, session_id: str, rng: random.Random) -> None:
        self.keep(self.new_session(session_id), rng)

    async def op_drop(self, session_id: str, rng: random.Random) -> None:
        pool = self.pool[session_id]
        if pool:
            pool.pop(rng.randrange(len(pool)))

    async def op_load(self, session_id: str, rng: random.Random) -> None:
        """Load a session: it must be a state the log allows already; keep it as live."""
        ops = self.log[session_id]
        floor = last_acked(ops)
        loaded = await self.pick_store(rng).load_session(session_id)
        stored = None if loaded is None else loaded.model_dump(mode="json")
        problem = judge(ops, stored, floor=floor)
        if problem:
            self.violations.append(f"{session_id} loaded while running: {problem}")
        if loaded is not None:
            self.keep(loaded, rng)

    async def op_delete(self, session_id: str, rng: random.Random) -> None:
        if session_id in self.fresh:
            return
        how = draw(rng, HOW, self.counts, "delete:")

        def start() -> tuple[Op, Awaitable[Any]]:
            op = self.begin(session_id, "delete", how)
            return op, self.pick_store(rng).delete_session(session_id)

        def finish(op: Op, existed: bool) -> None:
            op["acked"] = True
            op["result"] = existed

        await self.drive(self.wrapped(start, finish), None, how, rng)

    async def op_update(self, session_id: str, rng: random.Random) -> None:
        how = draw(rng, HOW, self.counts, "update:")
        fresh = session_id in self.fresh or rng.random() < 0.6
        replace = rng.choice([None, None, "deepcopy", "pickle", "model_copy_deep"])
        later = rng.random() < 0.5
        changes = rng.randrange(1, 3)
        seed = rng.randrange(2**32)
        poisoned = rng.random() < POISON_RATE
        store = self.pick_store(rng)
        holder: dict[str, Op] = {}

        def change(session: Session) -> Session | None:
            op = holder["op"]
            local = random.Random(seed)
            target = COPIES[replace](session) if replace else session
            for _ in range(changes):
                self.edit(target, local)
            now = datetime.now(UTC)
            target.updated_at = now if fresh else now - STALE_AGE
            target.metadata["op"] = op["seq"]
            if poisoned:
                target.metadata[POISON_KEY] = True
            op["outputs"].append(target.model_dump(mode="json"))
            return target if replace else None

        async def change_later(session: Session) -> Session | None:
            await asyncio.sleep(0)
            return change(session)

        def start() -> tuple[Op, Awaitable[Any]]:
            source = f"{replace or 'in place'}{' async' if later else ''}"
            op = holder["op"] = self.begin(
                session_id, "update", how, source=source, poisoned=poisoned, outputs=[]
            )
            op["result"] = None
            fn = change_later if later else change
            return op, store.update_session_with(session_id, fn)

        def finish(op: Op, saved: Session | None) -> None:
            op["acked"] = True
            if saved is None:
                return
            op["result"] = saved.model_dump(mode="json")
            if not op["outputs"] or op["result"] != op["outputs"][-1]:
                self.violations.append(f"{session_id} #{op['seq']}: update returned another state")
            self.keep(saved, random.Random(seed))

        await self.drive(self.wrapped(start, finish), None, how, rng)

    async def op_prune(self, session_id: str, rng: random.Random) -> None:
        self.counts["pruned"] += await self.pick_store(rng).prune_sessions(PRUNE)

    async def run(self, index: int, deadline: float, seed: int) -> None:
        """One coroutine: random operations on this worker's sessions until the deadline."""
        rng = random.Random(f"{seed}-{self.worker}-{index}")
        while time.monotonic() < deadline:
            operation = draw(rng, OPERATIONS, self.counts, "")
            session_id = rng.choice(self.ids)
            try:
                await getattr(self, f"op_{operation}")(session_id, rng)
            except Exception as error:
                self.errors.append(f"{operation} {session_id}: {type(error).__name__}: {error}")
            self.counts[operation] += 1


async def run_worker(
    target: str, worker: int, coroutines: int, seconds: float, seed: int, stores: int = 1
) -> dict[str, Any]:
    """Run one worker's coroutines, wait for every write, and return its log as JSON.

    With ``stores`` > 1 the worker opens that many stores on the target and sends each
    operation through a random one (saves of one session id must still commit in call order).
    """
    failures = FailedWrites()
    logger = logging.getLogger("statestore")
    logger.addHandler(failures)
    logger.setLevel(logging.DEBUG)
    unraisable: list[str] = []
    sys.unraisablehook = lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}")
    async with contextlib.AsyncExitStack() as opened:
        work = Worker(
            [
                await opened.enter_async_context(StateStore.open(target, migrate=False))
                for _ in range(stores)
            ],
            worker,
        )
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(work.run(index, deadline, seed) for index in range(coroutines)))
        while work.pending:
            await asyncio.gather(*work.pending, return_exceptions=True)
    # close() waited for every write still queued: each forgotten one has settled.
    work.counts["write failed: poisoned"] = failures.poisoned
    return {
        "sessions": work.log,
        "fresh": sorted(work.fresh),
        "errors": work.errors,
        "violations": work.violations + [f"unraisable {text}" for text in unraisable],
        "failed_writes": failures.failed,
        "counts": dict(work.counts),
    }


def run_workers(
    target: str,
    workers: int,
    coroutines: int,
    seconds: float,
    seed: int,
    out_dir: str,
    stores: int = 1,
) -> int:
    """Fork ``workers`` children (statestore imported once); return 1 if any failed."""

    def work(worker: int) -> dict[str, Any]:
        warnings.simplefilter("error")  # as in the test suite
        return asyncio.run(run_worker(target, worker, coroutines, seconds, seed, stores))

    return fork_workers(workers, work, lambda worker: Path(out_dir, f"ack-{worker}.json"))


def main(argv: list[str]) -> None:
    """``TARGET WORKERS COROUTINES SECONDS SEED OUTDIR [STORES]``."""
    target, workers, coroutines, seconds, seed, out_dir, *stores = argv
    sys.exit(
        run_workers(
            target,
            int(workers),
            int(coroutines),
            float(seconds),
            int(seed),
            out_dir,
            int(stores[0]) if stores else 1,
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
