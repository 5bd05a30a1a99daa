"""Model check: random sequences of every public operation against a plain in-memory model.

The model is the file store's semantics written out as dicts: a session is the JSON it was
last saved as; a document is a ``category/name.md`` or ``category/name.json`` file; the
``sessions`` category's JSON files are the sessions. After every step the store and the
model must agree on everything the public API can show.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from statestore import AgentResponse, PruneConfig, Session, StateStore, UserMessage

from .test_hostile_data import OnLoop, run_in_thread, same_json

SESSION_IDS = ["a", "b", "c%", "d_'", "e"]
USERS = ["u1", "u_", "u%"]
CATEGORIES = ["memory", "memory/notes", "personas", "sessions", "x%_'"]
NAMES = ["n1", "n_", "n%", "a"]
HOURS_AGO = [-0.5, 0.5, 3, 30, 300]
"""How long before the machine started a session was last updated (never near a TTL edge)."""
TTLS = [0, 1, 24, 100]

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=8)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TEXT, children, max_size=3),
    max_leaves=6,
)


def listing_order(sessions: dict[str, Session]) -> list[Session]:
    """Sessions most recently updated first, ties by id descending (the documented order)."""
    return sorted(sessions.values(), key=lambda s: (s.updated_at, s.id), reverse=True)


def summary(session: Session) -> tuple[Any, ...]:
    """What a SessionSummary of ``session`` must show."""
    project = session.metadata.get("project_ids")
    return (
        session.id,
        session.user_id,
        len(session.user_messages),
        session.active_seed_id,
        project if isinstance(project, str) else None,
        session.created_at,
        session.updated_at,
    )


class StoreModel(RuleBasedStateMachine):
    """Drives a store and the model with the same operations; they must always agree."""

    def __init__(self, store: StateStore, on_loop: OnLoop) -> None:
        super().__init__()
        self.store = store
        self.run = on_loop
        self.now = datetime.now(UTC)
        self.sessions: dict[str, Session] = {}  # the state each session was last saved as
        self.markdown: dict[tuple[str, str], str] = {}
        self.json: dict[tuple[str, str], Any] = {}
        self.run(self._empty_the_store())

    async def _empty_the_store(self) -> None:
        for listed in await self.store.list_sessions():
            await self.store.delete_session(listed.id)
        for category in CATEGORIES:
            for name in await self.store.list_category(category):
                while await self.store.delete_file(category, name):
                    pass

    def teardown(self) -> None:
        self.run(self._empty_the_store())

    # -- helpers --------------------------------------------------------------------------

    def _remember(self, session: Session) -> None:
        self.sessions[session.id] = session.model_copy(deep=True)

    @staticmethod
    def _ids(data: st.DataObject) -> str:
        # Only the fixed pool: the random ids of get_or_create(None) would make draws differ
        # from run to run, which hypothesis cannot replay.
        return data.draw(st.sampled_from(SESSION_IDS))

    @staticmethod
    def _session(data: st.DataObject, session_id: str, now: datetime) -> Session:
        moment = now - timedelta(hours=data.draw(st.sampled_from(HOURS_AGO)))
        session = Session(
            id=session_id,
            user_id=data.draw(st.sampled_from(USERS)),
            created_at=moment - timedelta(hours=1),
            metadata=data.draw(st.dictionaries(TEXT, JSON, max_size=2)),
        )
        if data.draw(st.booleans()):
            session.metadata["project_ids"] = data.draw(st.sampled_from(["p1", "p%"]))
        session.active_seed_id = data.draw(st.none() | st.sampled_from(["seed-a", "seed_b"]))
        for turn in range(data.draw(st.integers(0, 3))):
            stamp = moment - timedelta(minutes=10 - turn)
            session.user_messages.append(UserMessage(content=data.draw(TEXT), timestamp=stamp))
            session.agent_responses.append(
                AgentResponse(
                    content=data.draw(TEXT),
                    seed_id=data.draw(st.none() | st.just("seed-a")),
                    evaluation_passed=data.draw(st.none() | st.booleans()),
                    timestamp=stamp,
                )
            )
        session.updated_at = moment
        return session

    # -- sessions -------------------------------------------------------------------------

    @rule(data=st.data())
    def save_session(self, data: st.DataObject) -> None:
        session = self._session(data, self._ids(data), self.now)
        self.run(self.store.save_session(session))
        self._remember(session)

    @precondition(lambda self: any(i in self.sessions for i in SESSION_IDS))
    @rule(data=st.data(), turns=st.integers(1, 3), edit=st.booleans())
    def load_change_and_save(self, data: st.DataObject, turns: int, edit: bool) -> None:
        session_id = data.draw(st.sampled_from([i for i in SESSION_IDS if i in self.sessions]))
        loaded = self.run(self.store.load_session(session_id))
        assert loaded is not None
        for turn in range(turns):
            loaded.add_user_message(f"more {turn}")
            loaded.add_agent_response(AgentResponse(content=f"reply {turn}"))
        if edit and loaded.user_messages:
            loaded.user_messages[0].content = "edited"
        self.run(self.store.update_session(loaded))
        self._remember(loaded)

    @rule(data=st.data())
    def load_session(self, data: st.DataObject) -> None:
        session_id = self._ids(data)
        loaded = self.run(self.store.load_session(session_id))
        expected = self.sessions.get(session_id)
        assert (loaded is None) == (expected is None)
        if loaded is not None and expected is not None:
            assert loaded == expected

    @rule(data=st.data())
    def delete_session(self, data: st.DataObject) -> None:
        session_id = self._ids(data)
        assert self.run(self.store.delete_session(session_id)) == (session_id in self.sessions)
        self.sessions.pop(session_id, None)

    @rule(data=st.data(), user=st.sampled_from(USERS), fresh=st.booleans())
    def get_or_create_session(self, data: st.DataObject, user: str, fresh: bool) -> None:
        session_id = None if fresh else self._ids(data)
        got = self.run(self.store.get_or_create_session(user, session_id))
        if session_id is not None and session_id in self.sessions:
            assert got == self.sessions[session_id]
            return
        assert got.user_id == user
        assert got.user_messages == got.agent_responses == []
        assert got.id not in self.sessions
        if session_id is not None:
            assert got.id == session_id
        self._remember(got)

    @rule(data=st.data(), key=TEXT, value=JSON, append=st.booleans())
    def update_session_with(self, data: st.DataObject, key: str, value: Any, append: bool) -> None:
        session_id = self._ids(data)
        seen: list[Session] = []

        def change(session: Session) -> None:
            seen.append(session.model_copy(deep=True))
            session.set_metadata(key, value)
            if append:
                session.add_user_message("appended in fn")

        updated = self.run(self.store.update_session_with(session_id, change))
        if session_id not in self.sessions:
            assert updated is None
            assert seen == []
            return
        assert updated is not None
        assert seen == [self.sessions[session_id]]  # fn is given exactly the stored state
        self._remember(updated)

    @rule(max_sessions=st.integers(0, 6), ttl_hours=st.sampled_from(TTLS))
    def prune_sessions(self, max_sessions: int, ttl_hours: int) -> None:
        before = set(self.sessions)
        if ttl_hours:
            cutoff = datetime.now(UTC) - timedelta(hours=ttl_hours)
            self.sessions = {i: s for i, s in self.sessions.items() if s.updated_at >= cutoff}
        if max_sessions:
            kept = listing_order(self.sessions)[:max_sessions]
            self.sessions = {s.id: s for s in kept}
        deleted = self.run(
            self.store.prune_sessions(PruneConfig(max_sessions=max_sessions, ttl_hours=ttl_hours))
        )
        assert deleted == len(before) - len(self.sessions)

    @rule(
        user=st.none() | st.sampled_from(USERS), project=st.none() | st.sampled_from(["p1", "p%"])
    )
    def list_sessions(self, user: str | None, project: str | None) -> None:
        listed = self.run(self.store.list_sessions(user_id=user, project_id=project))
        expected = [
            summary(s)
            for s in listing_order(self.sessions)
            if (user is None or s.user_id == user)
            and (project is None or s.metadata.get("project_ids") == project)
        ]
        assert [tuple(getattr(x, f) for f in SUMMARY_FIELDS) for x in listed] == expected

    # -- documents ------------------------------------------------------------------------

    @rule(category=st.sampled_from(CATEGORIES), name=st.sampled_from(NAMES), content=TEXT)
    def save_markdown(self, category: str, name: str, content: str) -> None:
        self.run(self.store.save_markdown(category, name, content))
        self.markdown[(category, name)] = content

    @rule(category=st.sampled_from(CATEGORIES), name=st.sampled_from(NAMES), value=JSON)
    def save_json(self, category: str, name: str, value: Any) -> None:
        if category == "sessions":  # the file store's sessions/<id>.json: a session
            session = Session(id=name, user_id="from-json", created_at=self.now)
            session.metadata["value"] = value
            self.run(self.store.save_json(category, name, session.model_dump(mode="json")))
            self._remember(session)
            return
        self.run(self.store.save_json(category, name, value))
        self.json[(category, name)] = value

    @rule(category=st.sampled_from(CATEGORIES), name=st.sampled_from(NAMES))
    def load_documents(self, category: str, name: str) -> None:
        assert self.run(self.store.load_markdown(category, name)) == self.markdown.get(
            (category, name)
        )
        loaded = self.run(self.store.load_json(category, name))
        if category == "sessions":
            stored = self.sessions.get(name)
            assert loaded == (None if stored is None else stored.model_dump(mode="json"))
        else:
            assert same_json(loaded, self.json.get((category, name)))

    @rule(category=st.sampled_from(CATEGORIES), name=st.sampled_from(NAMES + SESSION_IDS))
    def delete_file(self, category: str, name: str) -> None:
        deleted = self.run(self.store.delete_file(category, name))
        if category == "sessions" and name in self.sessions:
            expected = True
            del self.sessions[name]
        elif category != "sessions" and (category, name) in self.json:
            expected = True
            del self.json[(category, name)]
        else:
            expected = self.markdown.pop((category, name), None) is not None
        assert deleted == expected

    # -- after every step -------------------------------------------------------------------

    @invariant()
    def store_agrees_with_the_model(self) -> None:
        listed = self.run(self.store.list_sessions())
        assert [tuple(getattr(x, f) for f in SUMMARY_FIELDS) for x in listed] == [
            summary(s) for s in listing_order(self.sessions)
        ]
        for session_id, expected in self.sessions.items():
            loaded = self.run(self.store.load_session(session_id))
            assert loaded is not None
            assert loaded.model_dump_json() == expected.model_dump_json()
        for category in CATEGORIES:
            names = {n for c, n in self.markdown if c == category}
            names |= {n for c, n in self.json if c == category}
            if category == "sessions":
                names |= set(self.sessions)
            assert self.run(self.store.list_category(category)) == sorted(names)
        for (category, name), content in self.markdown.items():
            assert self.run(self.store.load_markdown(category, name)) == content
        for (category, name), value in self.json.items():
            assert same_json(self.run(self.store.load_json(category, name)), value)


SUMMARY_FIELDS = (
    "id",
    "user_id",
    "message_count",
    "active_seed_id",
    "project_id",
    "created_at",
    "updated_at",
)

MODEL_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


async def test_store_agrees_with_the_file_store_model(store: StateStore) -> None:
    """Random sequences of every public operation leave the store equal to the model."""

    def check(on_loop: OnLoop) -> None:
        run_state_machine_as_test(lambda: StoreModel(store, on_loop), settings=MODEL_SETTINGS)

    await run_in_thread(check)
