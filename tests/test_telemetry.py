"""OpenTelemetry spans and metrics, and the DEBUG log, of store operations (the otel extra)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from statestore import DatabaseBusyError, StateStore, _telemetry

from .test_store import make_session


class _WhileRecording(InMemorySpanExporter):
    """Keeps spans only while a test asks for them (the providers outlive this module)."""

    recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(spans) if self.recording else SpanExportResult.SUCCESS


_EXPORTER = _WhileRecording()
_READER = InMemoryMetricReader()


@pytest.fixture(scope="session", autouse=True)
def providers() -> None:
    """Install the SDK's in-memory exporters once (OpenTelemetry's providers are global)."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[_READER]))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The spans the test makes."""
    _EXPORTER.clear()
    _EXPORTER.recording = True
    try:
        yield _EXPORTER
    finally:
        _EXPORTER.recording = False
        _EXPORTER.clear()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def metric_points(name: str) -> list[Any]:
    data = _READER.get_metrics_data()
    assert data is not None
    return [
        point
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_the_extra_is_installed_in_the_suite() -> None:
    assert _telemetry.ENABLED


async def test_a_save_is_a_span_in_the_callers_trace(
    store: StateStore, spans: InMemorySpanExporter, backend: str
) -> None:
    """Started in the caller's context, with the session id, batch size, times and rows."""
    session = make_session(messages=1)
    with trace.get_tracer("test").start_as_current_span("request") as request:
        await store.save_session(session)
    [span] = named(spans, "statestore save_session")
    assert span.parent is not None
    assert span.parent.span_id == request.get_span_context().span_id
    attributes = dict(span.attributes or {})
    assert attributes["db.system"] == backend
    assert attributes["statestore.operation"] == "save_session"
    assert attributes["gen_ai.conversation.id"] == session.id
    assert attributes["statestore.batch_size"] == 1
    assert float(attributes["statestore.queued_seconds"]) >= 0  # type: ignore[arg-type]
    assert float(attributes["statestore.commit_seconds"]) > 0  # type: ignore[arg-type]
    if backend == "sqlite":
        assert int(attributes["statestore.rows_written"]) >= 3  # type: ignore[call-overload]
    assert span.status.status_code is not StatusCode.ERROR


async def test_saves_called_together_report_their_shared_transaction(
    store: StateStore, spans: InMemorySpanExporter
) -> None:
    sessions = [make_session(messages=1) for _ in range(64)]
    await asyncio.gather(*(store.save_session(session) for session in sessions))
    saved = named(spans, "statestore save_session")
    assert len(saved) == 64
    assert {span.attributes["gen_ai.conversation.id"] for span in saved if span.attributes} == {
        session.id for session in sessions
    }
    assert max(int(span.attributes["statestore.batch_size"]) for span in saved) > 1  # type: ignore[index, call-overload]


async def test_reads_and_other_writes_are_spans_too(
    store: StateStore, spans: InMemorySpanExporter
) -> None:
    session = make_session(messages=2)
    await store.save_session(session)
    await store.load_session(session.id)
    await store.list_sessions()
    await store.delete_session(session.id)
    [load] = named(spans, "statestore load_session")
    assert (load.attributes or {})["gen_ai.conversation.id"] == session.id
    assert named(spans, "statestore list_sessions")
    [delete] = named(spans, "statestore delete_session")
    assert (delete.attributes or {})["gen_ai.conversation.id"] == session.id


async def test_a_failed_write_is_an_error_span(db_path: Path, spans: InMemorySpanExporter) -> None:
    """A save that times out behind another process's lock ends its span as an error."""
    async with StateStore.open(db_path, busy_timeout=0.1) as store:
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(DatabaseBusyError):
                await store.save_session(make_session(messages=1))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    [span] = named(spans, "statestore save_session")
    assert span.status.status_code is StatusCode.ERROR
    assert any(event.name == "exception" for event in span.events)


async def test_the_writer_reports_batches_commits_and_an_empty_queue(
    store: StateStore, backend: str
) -> None:
    await asyncio.gather(*(store.save_session(make_session(messages=1)) for _ in range(10)))
    for name in ("statestore.batch.size", "statestore.commit.duration"):
        points = [p for p in metric_points(name) if p.attributes.get("db.system") == backend]
        assert points, name
        assert sum(point.count for point in points) > 0
    depth = [
        p for p in metric_points("statestore.queue.depth") if p.attributes["db.system"] == backend
    ]
    assert [point.value for point in depth] == [0]  # every write called has left the queue


async def test_each_transaction_is_logged_with_structured_fields(
    store: StateStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="statestore"):
        await store.save_session(make_session(messages=1))
    [record] = [r for r in caplog.records if getattr(r, "statestore_operation", None)]
    assert record.statestore_operation == "save_session"  # type: ignore[attr-defined]
    assert record.statestore_batch_size == 1  # type: ignore[attr-defined]
    assert record.statestore_failed is False  # type: ignore[attr-defined]
    assert record.statestore_commit_seconds > 0  # type: ignore[attr-defined]


def test_without_opentelemetry_the_store_works_and_records_nothing(tmp_path: Path) -> None:
    """With the API not importable, telemetry is off and every operation still works."""
    probe = f"""
import asyncio, sys
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
from statestore import Session, StateStore, UserMessage, _telemetry
assert not _telemetry.ENABLED

async def main():
    async with StateStore.open({str(tmp_path / "state.db")!r}) as store:
        session = Session(user_id="u", user_messages=[UserMessage(content="hi")])
        await asyncio.gather(*(store.save_session(session) for _ in range(3)))
        assert (await store.load_session(session.id)) == session

asyncio.run(main())
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


class _BrokenSpan:
    def set_attributes(self, attributes: Any) -> None:
        raise RuntimeError("exporter down")

    set_attribute = set_attributes

    def record_exception(self, error: BaseException) -> None:
        raise RuntimeError("exporter down")

    def set_status(self, status: Any) -> None:
        raise RuntimeError("exporter down")

    def end(self) -> None:
        raise RuntimeError("exporter down")


class _BrokenTracer:
    def __init__(self, *, at_start: bool) -> None:
        self.at_start = at_start

    def start_span(self, *args: Any, **kwargs: Any) -> _BrokenSpan:
        if self.at_start:
            raise RuntimeError("tracer down")
        return _BrokenSpan()


@pytest.mark.parametrize("at_start", [True, False], ids=["start-fails", "span-fails"])
async def test_broken_telemetry_never_fails_or_repeats_a_save(
    store: StateStore, monkeypatch: pytest.MonkeyPatch, at_start: bool, backend: str
) -> None:
    """A tracer that raises everywhere: every save, read and delete still works, once."""
    monkeypatch.setattr(_telemetry, "_TRACERS", [_BrokenTracer(at_start=at_start)])
    sessions = [make_session(messages=1) for _ in range(20)]
    await asyncio.gather(*(store.save_session(session) for session in sessions))
    for session in sessions:
        session.add_user_message("again")
    await asyncio.gather(*(store.save_session(session) for session in sessions))
    for session in sessions:
        assert await store.load_session(session.id) == session
    assert await store.delete_session(sessions[0].id)
    assert len(await store.list_sessions()) == 19
