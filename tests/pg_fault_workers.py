"""Worker processes for the PostgreSQL fault tests (``python -m tests.pg_fault_workers``).

``save URL ARGUMENTS`` opens one store on ``URL`` and keeps it open for its whole life:
``coroutines`` coroutines each save their own sessions continuously (appends, and whole
rewrites). It prints ``ready`` once every coroutine has had a save acknowledged, then
follows commands on stdin: ``pause`` (every coroutine finishes its save and waits; prints
``paused`` once all are idle), ``resume``, and ``stop``, after which it prints one JSON
object with what it saw:

* ``log``: every save, in the order they ended: session id, kind (append or rewrite),
  wall-clock times of the call and of its outcome, and ``error``: ``None`` if it was
  acknowledged, else the exception's qualified type name (with whether it is a
  ``StateStoreError``, and its ``__cause__``'s type);
* ``states``: per session, the state (``model_dump(mode="json")`` taken at the call) of the
  last acknowledged save, and of every save after it that failed -- the states the session
  may be stored as.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import Any

from statestore import AgentResponse, Session, StateStore, StateStoreError

SESSIONS_PER_COROUTINE = 2
MAX_MESSAGES = 12
"""A session that reaches this many messages is rewritten shorter, keeping saves small."""


def _type_name(error: BaseException | None) -> str | None:
    if error is None:
        return None
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"


def _change(session: Session, rng: random.Random, step: int) -> str:
    """Change ``session`` one way or another; return which kind of save it needs."""
    if len(session.user_messages) >= MAX_MESSAGES:
        del session.user_messages[: MAX_MESSAGES // 2]
        del session.agent_responses[: MAX_MESSAGES // 2]
        session.set_metadata("truncated", step)
        return "rewrite"
    if session.user_messages and rng.random() < 0.3:
        session.user_messages[rng.randrange(len(session.user_messages))].content = f"edit {step}"
        session.set_metadata("edited", step)
        return "rewrite"
    session.add_user_message(f"{session.id} question {step}")
    session.add_agent_response(AgentResponse(content=f"answer {step}", seed_id="seed"))
    return "append"


class Control:
    """What the test asks for through stdin: save, pause (every coroutine idle), stop."""

    def __init__(self, coroutines: int) -> None:
        self.coroutines = coroutines
        self.stop = asyncio.Event()
        self.running = asyncio.Event()
        self.running.set()
        self.started = 0
        self.all_started = asyncio.Event()
        self.idle = 0
        self.all_idle = asyncio.Event()

    def acknowledged_first(self) -> None:
        """Count a coroutine whose first save was acknowledged."""
        self.started += 1
        if self.started == self.coroutines:
            self.all_started.set()

    async def wait_while_paused(self) -> None:
        """Wait, counted as idle, while the test has the workers paused."""
        if self.running.is_set():
            return
        self.idle += 1
        if self.idle == self.coroutines:
            self.all_idle.set()
        await self.running.wait()
        self.idle -= 1

    async def follow(self) -> None:
        """Print ``ready`` once saving, then obey stdin: ``pause``, ``resume``, ``stop``."""
        await self.all_started.wait()
        print("ready", flush=True)
        while True:
            command = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if command == "pause":
                self.all_idle.clear()
                self.running.clear()
                await self.all_idle.wait()
                print("paused", flush=True)
            elif command == "resume":
                self.running.set()
            else:
                self.stop.set()
                self.running.set()
                return


async def save(url: str, worker: int, coroutines: int, pause: float) -> dict[str, Any]:
    """Save sessions from ``coroutines`` coroutines on one store until told to stop."""
    log: list[dict[str, Any]] = []
    states: dict[str, dict[str, Any]] = {}
    control = Control(coroutines)

    async with StateStore.open(url, migrate=False) as store:

        async def one(index: int) -> None:
            rng = random.Random(f"{worker}-{index}")
            sessions = [
                Session(id=f"w{worker}-c{index}-s{k}", user_id=f"w{worker}")
                for k in range(SESSIONS_PER_COROUTINE)
            ]
            step = 0
            acknowledged_once = False
            while True:
                await control.wait_while_paused()
                if control.stop.is_set():
                    return
                step += 1
                session = rng.choice(sessions)
                kind = _change(session, rng, step)
                state = session.model_dump(mode="json")
                entry: dict[str, Any] = {"session": session.id, "kind": kind, "called": time.time()}
                try:
                    await store.save_session(session)
                except Exception as error:  # every failure is logged and checked by the test
                    entry["error"] = _type_name(error)
                    entry["statestore_error"] = isinstance(error, StateStoreError)
                    entry["cause"] = _type_name(error.__cause__)
                    states.setdefault(session.id, {"acknowledged": None, "later": []})
                    states[session.id]["later"].append(state)
                else:
                    entry["error"] = None
                    states[session.id] = {"acknowledged": state, "later": []}
                    if not acknowledged_once:
                        acknowledged_once = True
                        control.acknowledged_first()
                entry["done"] = time.time()
                log.append(entry)
                await asyncio.sleep(pause * rng.random())

        await asyncio.gather(control.follow(), *(one(index) for index in range(coroutines)))
    return {"log": log, "states": states}


COMMANDS = {"save": save}


def main() -> None:
    command, url, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    result = asyncio.run(COMMANDS[command](url, **arguments))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
