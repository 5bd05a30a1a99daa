"""A chat endpoint on statestore: the store opened in the app's lifespan, given to each
request as a dependency.

Run it (``pip install fastapi uvicorn`` beside statestore)::

    STATESTORE_DB=chat.db uvicorn examples.fastapi_app:app

``STATESTORE_DB`` is a SQLite file path or a ``postgresql+asyncpg://`` URL. One store serves
every request: saves made at once share transactions, and saves of one session commit in
the order they were called.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from statestore import (
    AgentResponse,
    InvalidDataError,
    InvalidNameError,
    StateStore,
    UserMessage,
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the store when the app starts; close it (finishing queued saves) when it stops."""
    async with StateStore.open(os.environ.get("STATESTORE_DB", "chat.db")) as store:
        app.state.store = store
        yield


app = FastAPI(title="chat on statestore", lifespan=lifespan)


def get_store(request: Request) -> StateStore:
    """The app's one store."""
    store: StateStore = request.app.state.store
    return store


Store = Annotated[StateStore, Depends(get_store)]


@app.exception_handler(InvalidNameError)
@app.exception_handler(InvalidDataError)
async def refused(request: Request, error: Exception) -> JSONResponse:
    """A value statestore refuses (a bad id, text it cannot store) is the client's error."""
    return JSONResponse(status_code=422, content={"detail": str(error)})


class ChatIn(BaseModel):
    user_id: str
    message: str


class ChatOut(BaseModel):
    session_id: str
    reply: str
    turns: int


class Turn(BaseModel):
    role: str
    content: str


def reply_to(message: str) -> str:
    """Stands in for the agent."""
    return f"You said: {message}"


@app.post("/sessions/{session_id}/chat")
async def chat(session_id: str, body: ChatIn, store: Store) -> ChatOut:
    """Add one exchange to a session, creating the session on its first message."""
    session = await store.get_or_create_session(body.user_id, session_id)
    if session.user_id != body.user_id:  # the id is the client's: keep users apart
        raise HTTPException(status_code=404, detail="no such session")
    reply = reply_to(body.message)
    await store.append_to_session(
        session_id,
        user_messages=[UserMessage(content=body.message)],
        agent_responses=[AgentResponse(content=reply, session_id=session_id)],
    )
    return ChatOut(session_id=session_id, reply=reply, turns=len(session.user_messages) + 1)


@app.get("/sessions/{session_id}")
async def history(session_id: str, user_id: str, store: Store) -> list[Turn]:
    """The conversation, message then reply, turn by turn."""
    session = await store.load_session(session_id)
    if session is None or session.user_id != user_id:
        raise HTTPException(status_code=404, detail="no such session")
    turns: list[Turn] = []
    for index in range(max(len(session.user_messages), len(session.agent_responses))):
        if index < len(session.user_messages):
            turns.append(Turn(role="user", content=session.user_messages[index].content))
        if index < len(session.agent_responses):
            turns.append(Turn(role="agent", content=session.agent_responses[index].content))
    return turns


@app.get("/users/{user_id}/sessions")
async def sessions(user_id: str, store: Store, limit: int = 20) -> list[str]:
    """The user's sessions, most recently updated first."""
    return [summary.id for summary in await store.list_sessions(user_id=user_id, limit=limit)]
