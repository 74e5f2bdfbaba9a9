"""Fulfilment polling: how soon a purchase sees the provider flip to fulfilled, and what the polls
cost in history. Atom simulator on the dev server; the order turns fulfilled at a random moment
0–6 s after it is placed (budget 10 s, interval 2 s).

    python bench/polling.py --samples 10
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from simulators.atom import AtomSimulator  # noqa: E402
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.worker import serving  # noqa: E402

NEVER = 10**9


async def main(samples: int) -> None:
    configure("dev", "WARNING")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(),
    )
    await ensure_search_attributes(env.client)
    sim = AtomSimulator(api_key="bench-key", fulfil_after_polls=NEVER)
    atom = AtomActivities(
        AtomSettings(base_url="http://atom.sim", api_key="bench-key", activities_per_second=None),
        transport=httpx.ASGITransport(app=sim.app),
    )
    rng = random.Random(1)
    delays, polls, events = [], [], []
    try:
        async with serving(env.client, "polling", [atom]):
            for n in range(samples):
                sim.fulfil_after_polls = NEVER
                ordered = len(sim.orders)
                handle = await start_purchase(
                    env.client,
                    {
                        "provider": "atom",
                        "purchase_id": f"poll-{n}",
                        "showtime_id": "ST-20260214-1930-AMC4",
                        "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"B{n + 1}"]}],
                        "buyer": {"email": "g@example.com", "first_name": "J", "last_name": "D"},
                    },
                    "polling",
                )
                while len(sim.orders) == ordered:  # until this purchase's order is placed
                    await asyncio.sleep(0.005)
                await asyncio.sleep(rng.uniform(0, 6))
                flipped = sim.clock()
                sim.fulfil_after_polls = 0  # the next status read answers fulfilled
                result = await purchase_outcome(handle)
                assert result.state == "FULFILLED", result.failure
                seen = min(c["at"] for c in sim.calls if c["endpoint"] == "status" and c["at"] >= flipped)
                delays.append(seen - flipped)
                order = result.provider_order_id
                polls.append(sum(1 for c in sim.calls if c["endpoint"] == "status" and order in c["path"]))
                events.append(len((await handle.fetch_history()).events))
    finally:
        await atom.aclose()
        await env.shutdown()
    print(f"\n{samples} purchases; poll interval 2 s, budget 10 s; fulfilled 0–6 s after the order.\n")
    print("| detection delay p50 | max | polls per purchase (min–max) | history events per purchase (min–max) |")
    print("|---:|---:|---:|---:|")
    print(
        f"| {statistics.median(delays) * 1000:.0f} ms | {max(delays) * 1000:.0f} ms | {min(polls)}–{max(polls)} | "
        f"{min(events)}–{max(events)} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    asyncio.run(main(parser.parse_args().samples))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
