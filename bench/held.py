"""Many purchases held at once: N manual purchases wait in AWAITING_CONFIRMATION (long leases) on
the dev server with one worker. Measures the worker process's memory per held purchase and whether
`confirm` slows down (update round trip until the order is placed), against a baseline with few held.

    python bench/held.py --held 10000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from simulators.atom import SHOWTIME, AtomSimulator  # noqa: E402
from workers import client as purchases  # noqa: E402
from workers.client import ensure_search_attributes, start_purchase  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.worker import serving  # noqa: E402
from workflows.models import ConfirmRequest  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def request(n: int) -> dict:
    return {"provider": "atom", "purchase_id": f"held-{n}", "showtime_id": SHOWTIME, "confirmation": "manual",
            "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"S{n}"]}],
            "buyer": {"email": "g@example.com", "first_name": "J", "last_name": "D"}}


async def hold(client: Client, count: int, first: int, sim: AtomSimulator) -> float:
    gate = asyncio.Semaphore(50)  # starts in flight: more only overloads the 2-core machine
    previews = sum(1 for c in sim.calls if c["endpoint"] == "preview")

    async def one(n: int) -> None:
        async with gate:
            await start_purchase(client, request(n), "held")

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(first, first + count)))
    while sum(1 for c in sim.calls[previews:] if c["endpoint"] == "preview") < count:
        await asyncio.sleep(0.2)
    return time.perf_counter() - started


async def confirm_latencies(client: Client, ids: list[int]) -> list[float]:
    latencies = []
    for n in ids:
        started = time.perf_counter()
        status = await purchases.confirm(client, f"held-{n}", ConfirmRequest())
        latencies.append((time.perf_counter() - started) * 1000)
        assert status.state in ("AWAITING_FULFILLMENT", "FULFILLED"), status.state
    return latencies


async def main(held: int, samples: int) -> None:
    configure("dev", "WARNING")
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
                                                ui=False, data_converter=pydantic_data_converter,
                                                dev_server_extra_args=dev_server_args())
    client = env.client
    await ensure_search_attributes(env.client)
    sim = AtomSimulator(api_key="bench-key", lease_seconds=6 * 3600)  # holds outlast the run
    sim.showtimes[SHOWTIME].seats = {f"S{n}": "available" for n in range(held + 2 * samples)}
    atom = AtomActivities(AtomSettings(base_url="http://atom.sim", api_key="bench-key", activities_per_second=None),
                          transport=httpx.ASGITransport(app=sim.app))
    rng = random.Random(3)
    try:
        async with serving(env.client, "held", [atom], sandboxed=False):  # as `boxoffice worker` runs
            base_rss = rss_mb()
            await hold(client, samples, held + samples, sim)
            baseline = await confirm_latencies(client, list(range(held + samples, held + 2 * samples)))
            before = rss_mb()
            seconds = await hold(client, held, 0, sim)
            after = rss_mb()
            loaded = await confirm_latencies(client, rng.sample(range(held), samples))
    finally:
        await atom.aclose()
        await env.shutdown()
    print(f"\n{held} purchases held in AWAITING_CONFIRMATION; one worker (default cache 1000 workflows), "
          f"dev server in memory; {samples} confirms measured each time.\n")
    print("| held | time to hold all | worker+driver RSS | confirm p50 | confirm max |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {samples} | – | {before:.0f} MB (start {base_rss:.0f} MB) | {statistics.median(baseline):.0f} ms | "
          f"{max(baseline):.0f} ms |")
    print(f"| {held} | {seconds:.0f} s ({held / seconds:.0f}/s) | {after:.0f} MB | {statistics.median(loaded):.0f} ms | "
          f"{max(loaded):.0f} ms |")
    print(f"\nMemory per extra held purchase: {(after - before) * 1024 / held:.1f} KB.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.held, args.samples))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
