"""examples/fastapi_app.py, driven over ASGI with httpx: lifespan, dependency, endpoints."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from sqlalchemy import URL

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def load_example() -> ModuleType:
    """Import the example as a module of its own (each test gets a fresh app)."""
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def database(target: Path | URL, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the example's STATESTORE_DB at the backend under test."""
    if isinstance(target, URL):
        monkeypatch.setenv("STATESTORE_DB", target.render_as_string(hide_password=False))
    else:
        monkeypatch.setenv("STATESTORE_DB", str(target))


@pytest.fixture
async def client(database: None) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the example app, its lifespan run around the test (store open, closed)."""
    app = load_example().app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def test_chat_creates_the_session_and_keeps_every_turn(client: httpx.AsyncClient) -> None:
    for turn, text in enumerate(["hello", "how are you?", "bye"], start=1):
        reply = await client.post("/sessions/s-1/chat", json={"user_id": "ann", "message": text})
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"session_id": "s-1", "reply": f"You said: {text}", "turns": turn}
    history = await client.get("/sessions/s-1", params={"user_id": "ann"})
    assert [turn["content"] for turn in history.json()] == [
        "hello",
        "You said: hello",
        "how are you?",
        "You said: how are you?",
        "bye",
        "You said: bye",
    ]
    assert (await client.get("/users/ann/sessions")).json() == ["s-1"]


async def test_concurrent_requests_to_one_session_lose_no_turn(client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(
        *(
            client.post("/sessions/busy/chat", json={"user_id": "bob", "message": f"m{index}"})
            for index in range(20)
        )
    )
    assert all(reply.status_code == 200 for reply in replies)
    history = (await client.get("/sessions/busy", params={"user_id": "bob"})).json()
    assert sorted(turn["content"] for turn in history if turn["role"] == "user") == sorted(
        f"m{index}" for index in range(20)
    )


async def test_another_users_session_is_not_found(client: httpx.AsyncClient) -> None:
    await client.post("/sessions/private/chat", json={"user_id": "ann", "message": "secret"})
    intruder = await client.post(
        "/sessions/private/chat", json={"user_id": "eve", "message": "let me in"}
    )
    assert intruder.status_code == 404
    assert (await client.get("/sessions/private", params={"user_id": "eve"})).status_code == 404
    history = (await client.get("/sessions/private", params={"user_id": "ann"})).json()
    assert len(history) == 2


async def test_a_bad_session_id_or_message_is_a_422(client: httpx.AsyncClient) -> None:
    bad_id = await client.post("/sessions/..%2Fetc/chat", json={"user_id": "a", "message": "x"})
    assert bad_id.status_code in (404, 422)
    nul = await client.post("/sessions/ok/chat", json={"user_id": "a", "message": "nul \u0000"})
    assert nul.status_code == 422
    assert "content" in nul.json()["detail"]
