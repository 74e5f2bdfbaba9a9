"""What turning tracing on costs: Atom purchases on the dev server (auto confirmation, simulator with
zero latency, fulfilled at the first poll, activities on the workflow's queue), first with tracing
off, then on through the production path (`connect()` with OTEL_TRACES_EXPORTER set: the SDK's
TracingInterceptor on client and worker; httpx is instrumented too, but the in-process simulator's
ASGI transport makes no HTTP spans). Spans go through a BatchSpanProcessor to an exporter that
counts and drops them: the cost measured is making and propagating spans in this process, not
shipping them to a collector.

    python bench/tracing.py --purchases 100 --concurrency 1,10

Prints a markdown table. CPU is this process's (driver, worker and simulator together).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from bench.throughput import fresh_simulator, measure, request  # noqa: E402
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.settings import WorkerSettings  # noqa: E402
from workers.worker import connect, serving  # noqa: E402


class Counting(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def run(client: Client, name: str, purchases: int, concurrency: int) -> dict:
    sim = fresh_simulator()
    atom = AtomActivities(
        AtomSettings(base_url="http://atom.sim", api_key="bench-key", activities_per_second=None),
        transport=httpx.ASGITransport(app=sim.app),
    )
    queue = f"tracing-{name}-{concurrency}"
    try:
        async with serving(client, queue, [atom]):

            async def purchase(n: int) -> None:
                handle = await start_purchase(client, request(n, f"{name}{concurrency}"), queue)
                assert (await purchase_outcome(handle)).state == "FULFILLED"

            return await measure(purchases, concurrency, purchase)
    finally:
        await atom.aclose()


async def main(purchases: int, concurrencies: list[int]) -> None:
    configure("dev", "WARNING")  # per-call log lines would be measured too
    binary = Path(sys.executable).parent / "temporal"
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(binary), ui=False, data_converter=pydantic_data_converter
    )
    await ensure_search_attributes(env.client)
    os.environ["TEMPORAL_ADDRESS"] = env.client.service_client.config.target_host
    exporter = Counting()
    rows = []
    try:
        off = await connect(WorkerSettings())
        for concurrency in concurrencies:
            rows.append(("tracing off", concurrency, await run(off, "off", purchases, concurrency), 0.0))
        # Set before connect(): boxoffice keeps a provider someone set first (here: the counting one).
        provider = TracerProvider()
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
        trace.set_tracer_provider(provider)
        os.environ["OTEL_TRACES_EXPORTER"] = "otlp"
        on = await connect(WorkerSettings())
        for concurrency in concurrencies:
            before = exporter.spans
            result = await run(on, "on", purchases, concurrency)
            processor.force_flush()
            rows.append(("tracing on", concurrency, result, (exporter.spans - before) / purchases))
    finally:
        await env.shutdown()

    print(f"\n{purchases} purchases per row; dev server (SQLite in memory), 2 cores.\n")
    print("| run | concurrency | purchases/s | p50 ms | p99 ms | CPU ms/purchase | spans/purchase |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, concurrency, r, spans in rows:
        print(
            f"| {name} | {concurrency} | {r['per_s']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
            f"{r['cpu'] * 1000 / purchases:.0f} | {spans:.0f} |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=100)
    parser.add_argument("--concurrency", default="1,10")
    args = parser.parse_args()
    asyncio.run(main(args.purchases, [int(c) for c in args.concurrency.split(",")]))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: temporalio/sdk-python#300 can abort it
