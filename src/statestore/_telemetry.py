"""What each operation did, for OpenTelemetry and for ``logging``.

With ``opentelemetry-api`` installed (the ``otel`` extra) every read and write is a span
``statestore <operation>``, started in the caller's context when the operation is called and
ended when its result is known. Its attributes: ``db.system``, ``statestore.operation``, the
session id as ``gen_ai.conversation.id`` (when the operation is about one session), and for
a write ``statestore.batch_size`` (the operations that shared its transaction),
``statestore.rows_written`` (rows that transaction changed), ``statestore.queued_seconds``
(from the call to the transaction's start) and ``statestore.commit_seconds`` (the
transaction). A failed operation's span has status ERROR and the exception recorded.

The writers also report metrics on the meter ``statestore``: ``statestore.queue.depth``
(writes called and not yet in a transaction), ``statestore.batch.size`` and
``statestore.commit.duration`` (seconds), each with ``db.system``.

Every transaction is logged at DEBUG on the ``statestore`` logger, with the same figures as
``extra`` fields (``statestore_operation``, ``statestore_batch_size``, ...).

Without the extra, :data:`ENABLED` is False and the runners skip all of it: the cost is one
attribute check per operation.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # the otel extra is not installed
    _trace = None  # type: ignore[assignment]
    _metrics = None  # type: ignore[assignment]

__all__ = ["ENABLED", "Trace", "queued", "start", "traced", "transaction_done"]

ResultT = TypeVar("ResultT")
Params = ParamSpec("Params")

ENABLED = _trace is not None
"""Whether OpenTelemetry's API is importable (spans and metrics are then recorded)."""

logger = logging.getLogger("statestore")

_INSTRUMENTS: dict[str, Any] = {}


def _instrument(name: str) -> Any:
    """The metric instrument ``name``, made on first use (after the host set its meter)."""
    instrument = _INSTRUMENTS.get(name)
    if instrument is None:
        meter = _metrics.get_meter("statestore")
        if name == "statestore.queue.depth":
            instrument = meter.create_up_down_counter(
                name, unit="{write}", description="Writes called, not yet in a transaction."
            )
        elif name == "statestore.batch.size":
            instrument = meter.create_histogram(
                name, unit="{write}", description="Writes that shared one transaction."
            )
        else:
            instrument = meter.create_histogram(
                name, unit="s", description="Time a write transaction took, commit included."
            )
        _INSTRUMENTS[name] = instrument
    return instrument


def _quiet(function: Callable[Params, ResultT]) -> Callable[Params, ResultT | None]:
    """Telemetry never fails a store operation: an error in it (a broken exporter, say) is
    logged and the operation goes on, committed or not as it would have been."""

    @functools.wraps(function)
    def call(*args: Params.args, **kwargs: Params.kwargs) -> ResultT | None:
        try:
            return function(*args, **kwargs)
        except Exception:
            logger.warning("statestore telemetry failed; the operation goes on", exc_info=True)
            return None

    return call


_TRACERS: list[Any] = []


def _tracer() -> Any:
    """statestore's tracer, made once: before the host sets its provider it is a proxy that
    follows the provider set later, so one is enough (making one per span cost more than
    the span)."""
    if not _TRACERS:
        _TRACERS.append(_trace.get_tracer("statestore"))
    return _TRACERS[0]


class Trace:
    """One operation's span, from its call to its result."""

    __slots__ = ("called", "span")

    def __init__(self, operation: str, session_id: str | None, system: str) -> None:
        attributes: dict[str, Any] = {"db.system": system, "statestore.operation": operation}
        if session_id is not None:
            attributes["gen_ai.conversation.id"] = session_id
        self.span = _tracer().start_span(
            f"statestore {operation}", kind=_trace.SpanKind.CLIENT, attributes=attributes
        )
        self.called = time.monotonic()

    @_quiet
    def committed(self, started: float, ended: float, batch_size: int, rows: int | None) -> None:
        """Record the transaction this write ran in (monotonic times; ``rows`` if known)."""
        self.span.set_attributes(
            {
                "statestore.batch_size": batch_size,
                "statestore.queued_seconds": max(0.0, started - self.called),
                "statestore.commit_seconds": ended - started,
            }
        )
        if rows is not None:
            self.span.set_attribute("statestore.rows_written", rows)

    @_quiet
    def finish(self, error: BaseException | None) -> None:
        """End the span, as failed if ``error``."""
        if error is not None:
            self.span.record_exception(error)
            self.span.set_status(_trace.Status(_trace.StatusCode.ERROR, str(error)))
        self.span.end()


@_quiet
def start(operation: str, session_id: str | None, system: str) -> Trace | None:
    """A span for an operation called now, or None without OpenTelemetry."""
    return Trace(operation, session_id, system) if ENABLED else None


async def traced(
    operation: str, session_id: str | None, system: str, work: Awaitable[ResultT]
) -> ResultT:
    """Await ``work`` (a read) inside its span."""
    trace = start(operation, session_id, system)
    if trace is None:
        return await work
    try:
        result = await work
    except BaseException as error:
        trace.finish(error)
        raise
    trace.finish(None)
    return result


@_quiet
def queued(system: str, writes: int) -> None:
    """Count writes into (positive) or out of (negative) the queue."""
    if ENABLED:
        _instrument("statestore.queue.depth").add(writes, {"db.system": system})


@_quiet
def transaction_done(
    system: str,
    operation: str,
    traces: Sequence[Trace | None],
    started: float,
    rows: int | None,
    *,
    failed: bool,
) -> None:
    """Record one write transaction of ``len(traces)`` writes, begun at ``started`` (the
    monotonic clock) and over now: each committed write's span, metrics, a DEBUG log."""
    ended = time.monotonic()
    seconds, batch_size = ended - started, max(1, len(traces))
    if not failed:
        for trace in traces:
            if trace is not None:
                trace.committed(started, ended, batch_size, rows)
    if ENABLED:
        attributes = {"db.system": system}
        _instrument("statestore.batch.size").record(batch_size, attributes)
        _instrument("statestore.commit.duration").record(seconds, attributes)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "%s: %d writes in one transaction, %s rows, %.1f ms%s",
            operation,
            batch_size,
            "?" if rows is None else rows,
            seconds * 1000,
            " (failed)" if failed else "",
            extra={
                "statestore_operation": operation,
                "statestore_db_system": system,
                "statestore_batch_size": batch_size,
                "statestore_rows_written": rows,
                "statestore_commit_seconds": seconds,
                "statestore_failed": failed,
            },
        )
