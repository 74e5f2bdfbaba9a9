"""How the dev server's settings change dispatch latency, one fresh server per configuration:

- bare: throughput.py's bare workflow (1 local + 7 no-op activities), one at a time (p50 of the last 20 of 25);
- dispatch gap: WorkflowTaskScheduled → WorkflowTaskStarted after each activity, from history;
- timers: a 2 s timer, then an activity that fails once and is retried after 2 s (a fulfilment
  poll's shape): time beyond the 4 s asked for.

    python bench/dispatch.py
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).parents[1]))

from bench.throughput import BareWorkflow, noop  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402

TIMER_RUNS = 3
attempts: dict[str, int] = {}


@activity.defn(name="fails_once")
async def fails_once(key: str) -> None:
    attempts[key] = attempts.get(key, 0) + 1
    if attempts[key] == 1:
        raise ApplicationError("not yet")


@workflow.defn(name="Timed", sandboxed=False)
class Timed:
    @workflow.run
    async def run(self, key: str) -> None:
        await workflow.sleep(2)
        await workflow.execute_activity(
            "fails_once",
            key,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=2), backoff_coefficient=1.0),
        )


async def measure(name: str, args: list[str]) -> tuple[str, float, float, float]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"), ui=False, dev_server_extra_args=args
    )
    client = env.client
    try:
        async with Worker(client, task_queue="dispatch", workflows=[BareWorkflow, Timed], activities=[noop, fails_once]):
            latencies, gaps = [], []
            for n in range(25):
                started = time.perf_counter()
                await client.execute_workflow("BareWorkflow", id=f"bare-{n}", task_queue="dispatch")
                latencies.append((time.perf_counter() - started) * 1000)
            events = (await client.get_workflow_handle("bare-24").fetch_history()).events
            for before, after in zip(events, events[1:], strict=False):
                if (
                    before.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED
                    and after.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
                    and before.event_id > 2
                ):
                    gaps.append((after.event_time.ToDatetime() - before.event_time.ToDatetime()).total_seconds() * 1000)
            late = []
            for n in range(TIMER_RUNS):
                started = time.perf_counter()
                await client.execute_workflow("Timed", f"{name}-{n}", id=f"timed-{n}", task_queue="dispatch")
                late.append((time.perf_counter() - started) * 1000 - 4000)
    finally:
        await env.shutdown()
    return name, statistics.median(latencies[5:]), statistics.median(gaps), statistics.median(late)


async def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        runs = [
            ("default (in memory)", []),
            ("DISPATCH_CONFIG (in memory)", dev_server_args()),
            ("DISPATCH_CONFIG, SQLite file, default pragmas", dev_server_args() + ["--db-filename", f"{home}/plain.db"]),
            ("DISPATCH_CONFIG, SQLite file, DEV_DB_PRAGMAS (`boxoffice dev`)", dev_server_args(Path(home) / "wal.db")),
        ]
        rows = [await measure(name, args) for name, args in runs]
    print(f"\nload {os.getloadavg()[0]:.1f}\n")
    print("| dev server | bare workflow p50 | dispatch gap p50 | 2 s timer + 2 s retry: late by (p50) |")
    print("|---|---:|---:|---:|")
    for name, bare, gap, late in rows:
        print(f"| {name} | {bare:.0f} ms | {gap:.1f} ms | {late:.0f} ms |")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
