"""Throughput and latency of Atom purchases on the dev server, beside two references in one run:

- floor:    the same 7 provider HTTP calls made directly by asyncio (no Temporal, no durability);
- ceiling:  a bare Temporal workflow with the same shape (1 local + 7 regular no-op activities);
- boxoffice: PurchaseWorkflow, auto confirmation, against the Atom simulator (zero latency,
             fulfilled at the first poll), worker in this process; once with the activities on the
             workflow's task queue (unlimited provider: eager start), once rate-limited (own queue,
             the worker's share of the limit, reads and rerun-safe writes local: what `boxoffice
             worker` runs for Atom), once rate-limited the way it was before (every call a regular
             activity on the own queue, the server's limit only); the limit here (1000/s) is too
             high to throttle: these rows measure the mechanism's cost. Once in the SDK's sandbox
             (as the tests run workflows; `boxoffice worker` does not);
- time to held: `hold_purchase` of a manual purchase, until it returns AWAITING_CONFIRMATION
             (unlimited, rate-limited, rate-limited as before);
- burst at Atom's limit (`--burst N`): N purchases at once, rate-limited at Atom's default (25
             requests/s) against a simulator that answers 429 above Atom's documented limit
             (simulators/ratelimit.py): the burst queues; its busiest second and 429s are counted.

Each set runs once per dev-server configuration: `default` (the dev server's own settings) and
`tuned` (workers/devstack.py DISPATCH_CONFIG, what boxoffice's dev servers run with).

    python bench/throughput.py --purchases 200 --concurrency 1,10,50 --servers default,tuned
    python bench/throughput.py --purchases 60 --concurrency 1,50 --servers tuned --burst 60 \
        --runs "boxoffice;rate-limited;rate-limited, server limit only;time to held;time to held, rate-limited"

Prints a markdown table. CPU is this process's (driver, worker and simulator together); RSS is
the process's peak so far.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import httpx
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

sys.path.insert(0, str(Path(__file__).parents[1]))
# httpx's in-process ASGI transport (the simulator's) tries `import sniffio` on every request, ~1 ms
# each when it is not installed: fail that import at once, so the stand-in's cost is not measured.
sys.modules.setdefault("sniffio", None)

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from activities.ratelimit import SharedLimit  # noqa: E402
from simulators.atom import AtomSimulator  # noqa: E402
from simulators.ratelimit import RateLimited  # noqa: E402
from workers.client import ensure_search_attributes, hold_purchase, purchase_outcome, start_purchase  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.worker import serving  # noqa: E402
from workflows.models import AtomItem, Buyer  # noqa: E402

STEPS = 7


@activity.defn(name="noop")
async def noop() -> None:
    return None


@workflow.defn(name="BareWorkflow", sandboxed=False)
class BareWorkflow:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_local_activity("noop", start_to_close_timeout=timedelta(seconds=5))
        for _ in range(STEPS):
            await workflow.execute_activity("noop", start_to_close_timeout=timedelta(seconds=30))


SERVERS = {"default": [], "tuned": dev_server_args()}
# name → (activities per second, sandboxed, server limit only): the worker as `boxoffice worker` runs
# it (no sandbox) for a provider without a limit and for a rate-limited one, a rate-limited one as it
# ran before the workers' shares (every call a regular activity), the SDK's sandbox (as the tests
# run), and holds.
BOXOFFICE_RUNS = {
    "boxoffice": (None, False, False),
    "rate-limited": (1000.0, False, False),
    "rate-limited, server limit only": (1000.0, False, True),
    "boxoffice, sandboxed": (None, True, False),
    "time to held": (None, False, False),
    "time to held, rate-limited": (1000.0, False, False),
    "time to held, rate-limited, server limit only": (1000.0, False, True),
}
# Each run's p50 beside the unlimited run's of its kind.
UNLIMITED = {"rate-limited": "boxoffice", "rate-limited, server limit only": "boxoffice"} | {
    name: "time to held" for name in BOXOFFICE_RUNS if name.startswith("time to held, ")
}


def request(n: int, run: str, confirmation: str = "auto") -> dict:
    return {
        "provider": "atom",
        "purchase_id": f"bench-{run}-{n}",
        "showtime_id": "ST-20260214-1930-AMC4",
        "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [seat_for(n)]}],
        "buyer": {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"},
        "confirmation": confirmation,
    }


def fresh_simulator() -> AtomSimulator:
    sim = AtomSimulator(api_key="bench-key", fulfil_after_polls=0)
    # Enough seats for any batch: every purchase takes its own.
    sim.showtimes["ST-20260214-1930-AMC4"].seats = {f"{r}{n}": "available" for r in "ABCDEFGHIJ" for n in range(1, 101)}
    return sim


def seat_for(n: int) -> str:
    return f"{'ABCDEFGHIJ'[n // 100 % 10]}{n % 100 + 1}"


async def measure(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> dict:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            await one(n)
            latencies.append(time.perf_counter() - started)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(timed(n) for n in range(count)))
    wall = time.perf_counter() - wall
    latencies.sort()
    return {
        "per_s": count / wall,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
        "cpu": time.process_time() - cpu,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def run_set(client: Client, purchases: int, concurrency: int, runs: list[str]) -> list[tuple[str, dict, int]]:
    """floor, ceiling and the boxoffice `runs` at one concurrency, on one server."""
    rows = []
    run = uuid.uuid4().hex[:6]

    # floor: the calls themselves
    sim = fresh_simulator()
    direct = AtomActivities(
        AtomSettings(base_url="http://atom.sim", api_key="bench-key"), transport=httpx.ASGITransport(app=sim.app)
    )

    async def direct_purchase(n: int) -> None:
        items = [AtomItem(product_id="PROD-ADULT-001", offer_id="OFFER-STD-001", seat_ids=[seat_for(n)])]
        await direct.refresh_checkout("ST-20260214-1930-AMC4", [], items)
        session = await direct.create_guest_account(Buyer(email="g@example.com", first_name="J", last_name="D"))
        key = f"req-{run}-{n}"
        await direct.lease(session, items, key)
        await direct.preview_order(session, items, key, True)
        order = await direct.create_order(session, items, key, True)
        await direct.order_status(session, order.order_id)
        await direct.order_summary(session, order.order_id)

    rows.append(("floor: direct HTTP", await measure(purchases, concurrency, direct_purchase), 0))
    await direct.aclose()

    # ceiling: the engine with the same shape
    queue = f"bare-{run}"
    async with Worker(client, task_queue=queue, workflows=[BareWorkflow], activities=[noop], max_concurrent_workflow_tasks=100):

        async def bare(n: int) -> None:
            await client.execute_workflow("BareWorkflow", id=f"bare-{run}-{n}", task_queue=queue)

        result = await measure(purchases, concurrency, bare)
        events = len((await client.get_workflow_handle(f"bare-{run}-0").fetch_history()).events)
    rows.append(("ceiling: bare workflow", result, events))

    # boxoffice: activities on the workflow's queue (eager), on a queue of their own, and the time
    # until a manual purchase is held
    for name in runs:
        limit, sandboxed, server_limit_only = BOXOFFICE_RUNS[name]
        sim = fresh_simulator()
        # A limit too high to throttle, with a burst in proportion (a provider's documented burst is).
        burst = int(2 * limit) if limit else None
        atom = AtomActivities(
            AtomSettings(base_url="http://atom.sim", api_key="bench-key", activities_per_second=limit, requests_burst=burst),
            transport=httpx.ASGITransport(app=sim.app),
        )
        queue = f"boxoffice-{run}-{len(rows)}"
        tag = f"{run}{len(rows)}"
        async with serving(client, queue, [atom], sandboxed=sandboxed):
            if server_limit_only:
                atom.http.limit = None  # no share held: every call a regular activity, as before
            while isinstance(atom.http.limit, SharedLimit) and not atom.http.limit.settled:
                await asyncio.sleep(0.1)  # a worker's start is not what is measured

            async def purchase(n: int) -> None:
                handle = await start_purchase(client, request(n, tag), queue)
                assert (await purchase_outcome(handle)).state == "FULFILLED"

            async def held(n: int) -> None:
                _, status = await hold_purchase(client, request(n, tag, "manual"), queue)
                assert status.state == "AWAITING_CONFIRMATION"

            holds = name.startswith("time to held")
            result = await measure(purchases, concurrency, held if holds else purchase)
            first = client.get_workflow_handle(f"purchase-bench-{tag}-0")
            if holds:
                events = 0
                for n in range(purchases):  # not measured: the held purchases end
                    await client.get_workflow_handle(f"purchase-bench-{tag}-{n}").cancel()
            else:
                events = len((await first.fetch_history()).events)
                assert len(sim.orders) == purchases
        await atom.aclose()
        rows.append((name, result, events))
    return rows


async def burst_at_atoms_limit(client: Client, count: int) -> dict:
    """`count` purchases started at once, rate-limited at Atom's default against a simulator that
    refuses what Atom's limit refuses."""
    sim = fresh_simulator()
    limited = RateLimited(sim.app, per_second=25, burst=50)
    atom = AtomActivities(
        AtomSettings(base_url="http://atom.sim", api_key="bench-key"), transport=httpx.ASGITransport(app=limited)
    )
    queue, tag = f"burst-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    async with serving(client, queue, [atom], sandboxed=False):
        started = time.perf_counter()
        handles = [await start_purchase(client, request(n, tag), queue) for n in range(count)]
        outcomes = await asyncio.gather(*(purchase_outcome(handle) for handle in handles))
        wall = time.perf_counter() - started
    await atom.aclose()
    span = max(limited.requests) - min(limited.requests)
    return {
        "fulfilled": sum(outcome.state == "FULFILLED" for outcome in outcomes),
        "per_s": count / wall,
        "requests": len(limited.requests),
        "requests_per_s": len(limited.requests) / span,
        "busiest": limited.busiest_second(),
        "refused": limited.refused,
    }


async def main(purchases: int, concurrencies: list[int], servers: list[str], runs: list[str], burst: int) -> None:
    configure("dev", "WARNING")  # per-call log lines would be measured too
    binary = Path(sys.executable).parent / "temporal"
    rows = []
    bursts: list[tuple[str, dict]] = []
    for server in servers:
        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(binary),
            ui=False,
            data_converter=pydantic_data_converter,
            dev_server_extra_args=SERVERS[server],
        )
        client: Client = env.client
        await ensure_search_attributes(client)
        try:
            for concurrency in concurrencies:
                rows += [
                    (server, name, concurrency, r, events)
                    for name, r, events in await run_set(client, purchases, concurrency, runs)
                ]
            if burst:
                bursts.append((server, await burst_at_atoms_limit(client, burst)))
        finally:
            await env.shutdown()

    print(f"\n{purchases} purchases per row; dev server (SQLite in memory), 2 cores, load {os.getloadavg()[0]:.1f}.\n")
    print(
        "| server | run | concurrency | purchases/s | p50 ms | p99 ms | CPU s | CPU ms/purchase | peak RSS MB | events/purchase |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for server, name, concurrency, r, events in rows:
        print(
            f"| {server} | {name} | {concurrency} | {r['per_s']:.1f} | {r['p50']:.0f} | {r['p99']:.0f} | "
            f"{r['cpu']:.1f} | {r['cpu'] / purchases * 1000:.0f} | {r['rss']:.0f} | {events or '–'} |"
        )
    print(
        "\n| server | concurrency | run | throughput / ceiling | throughput / floor | p50 / ceiling p50 | p50 / unlimited p50 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for server in servers:
        for concurrency in concurrencies:
            by = {name: r for s, name, c, r, _ in rows if (s, c) == (server, concurrency)}
            top, bottom = by["ceiling: bare workflow"], by["floor: direct HTTP"]
            for name in runs:
                box = by[name]
                unlimited = by.get(UNLIMITED.get(name, ""))
                beside = f"{box['p50'] / unlimited['p50']:.2f}" if unlimited else "–"
                print(
                    f"| {server} | {concurrency} | {name} | {box['per_s'] / top['per_s']:.2f} | "
                    f"{box['per_s'] / bottom['per_s']:.3f} | {box['p50'] / top['p50']:.2f} | {beside} |"
                )
    if bursts:
        print(f"\n{burst} purchases at once, rate-limited at Atom's 25 requests/s (documented burst 50/s):\n")
        print("| server | fulfilled | purchases/s | provider requests | requests/s | busiest second | 429s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for server, b in bursts:
            print(
                f"| {server} | {b['fulfilled']}/{burst} | {b['per_s']:.1f} | {b['requests']} | {b['requests_per_s']:.1f} | "
                f"{b['busiest']} | {b['refused']} |"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=100)
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--servers", default="default,tuned", help=f"dev-server configurations: {', '.join(SERVERS)}")
    parser.add_argument("--runs", default=";".join(BOXOFFICE_RUNS), help=f"boxoffice runs, of: {'; '.join(BOXOFFICE_RUNS)}")
    parser.add_argument("--burst", type=int, default=0, help="purchases started at once at Atom's rate limit (0: none)")
    args = parser.parse_args()
    runs = [name.strip() for name in args.runs.split(";")]
    asyncio.run(main(args.purchases, [int(c) for c in args.concurrency.split(",")], args.servers.split(","), runs, args.burst))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: temporalio/sdk-python#300 can abort it
