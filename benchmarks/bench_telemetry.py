"""What telemetry costs a save: without OpenTelemetry, with its API alone, with the SDK.

Each configuration runs in a process of its own, on a SQLite file of its own
(synchronous=FULL), in rounds that alternate the configurations so that all meet the same
background load; each figure is the median over rounds:

* **absent**: ``opentelemetry`` not importable (the ``otel`` extra not installed);
* **API, no SDK**: the API installed and no provider set (its spans do nothing);
* **SDK**: a ``TracerProvider`` exporting to memory through a ``BatchSpanProcessor``, and a
  ``MeterProvider`` with an in-memory reader;
* **before** (with ``--before SRC``): the same workload on another checkout's ``src``, for
  example the commit before telemetry.

Workloads: a sequential append through ``save_session`` (median of 200), and 64
coroutines appending 10 times each (saves per second). Ratios are to **absent**.

Run:  python benchmarks/bench_telemetry.py [--rounds 5] [--before /path/to/old/src]
      python benchmarks/bench_telemetry.py --quick      (one round, small sizes)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import asyncio, json, statistics, sys, time
from datetime import UTC, datetime
mode, path, appends, writers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode in ("absent", "before"):
    sys.modules["opentelemetry"] = None
if mode == "sdk":
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))
from statestore import AgentResponse, Session, StateStore, UserMessage

def exchange(session):
    at = datetime.now(UTC)
    session.user_messages.append(UserMessage(content="question " * 10, timestamp=at))
    session.agent_responses.append(AgentResponse(content="answer " * 40, timestamp=at))

async def main():
    async with StateStore.open(path) as store:
        sessions = [Session(user_id="u") for _ in range(writers)]
        for session in sessions:
            for _ in range(10):
                exchange(session)
            await store.save_session(session)
        times = []
        for index in range(appends):
            session = sessions[index % writers]
            exchange(session)
            started = time.perf_counter()
            await store.save_session(session)
            times.append(time.perf_counter() - started)

        async def writer(session):
            for _ in range(10):
                exchange(session)
                await store.save_session(session)

        started = time.perf_counter()
        await asyncio.gather(*(writer(session) for session in sessions))
        rate = writers * 10 / (time.perf_counter() - started)
    print(json.dumps({"append": statistics.median(times), "rate": rate}))

asyncio.run(main())
"""


def run(
    mode: str, folder: Path, appends: int, writers: int, before: str | None
) -> dict[str, float]:
    """One round of one configuration, in a new process on a new file."""
    path = folder / f"{mode}-{len(list(folder.iterdir()))}.db"
    env = dict(os.environ)
    if mode == "before":
        assert before is not None
        env["PYTHONPATH"] = before
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(path), str(appends), str(writers)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{result.stderr}")
    measured: dict[str, float] = json.loads(result.stdout)
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round, small sizes")
    parser.add_argument("--before", help="another checkout's src folder to measure too")
    arguments = parser.parse_args()
    rounds, appends, writers = (1, 20, 8) if arguments.quick else (arguments.rounds, 200, 64)
    modes = ["absent", "api", "sdk"] + (["before"] if arguments.before else [])
    figures: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for mode in modes:
                figures[mode].append(run(mode, Path(folder), appends, writers, arguments.before))
    medians = {
        mode: {
            key: statistics.median(round_[key] for round_ in rounds_) for key in ("append", "rate")
        }
        for mode, rounds_ in figures.items()
    }
    absent = medians["absent"]
    names = {"absent": "absent", "api": "API, no SDK", "sdk": "SDK, in-memory", "before": "before"}
    print(f"{rounds} rounds; sequential append: median of {appends}; {writers} coroutines x 10\n")
    print("| configuration | append, median | vs absent | saves/s, concurrent | vs absent |")
    print("|---|---|---|---|---|")
    for mode in modes:
        figure = medians[mode]
        print(
            f"| {names[mode]} | {figure['append'] * 1e6:,.0f} µs "
            f"| {figure['append'] / absent['append']:.2f}x "
            f"| {figure['rate']:,.0f} | {figure['rate'] / absent['rate']:.2f}x |"
        )


if __name__ == "__main__":
    main()
