"""Where a purchase's CPU goes: a batch of Atom purchases (the `boxoffice` row of throughput.py),
to be sampled by py-spy, and a report grouping py-spy's samples by the code they were in.

    pip install py-spy
    py-spy record -r 200 --format raw -o /tmp/spy.txt -- python bench/profile.py --purchases 400 --concurrency 50
    python bench/profile.py --report /tmp/spy.txt

A sample counts for the innermost frame that matches a group below (its self time, roughly); idle
samples (the event loop waiting, idle executor threads) are left out.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.modules.setdefault("sniffio", None)  # as in throughput.py

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from bench.throughput import fresh_simulator, measure, request  # noqa: E402
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.worker import serving  # noqa: E402

GROUPS = [  # first match from the innermost frame outwards
    ("simulator", "simulators/"),
    ("starlette (simulator)", "starlette/"),
    ("httpx", "httpx/"),
    ("pydantic", "pydantic"),
    ("temporalio payload visitor", "temporalio/bridge/_visitor.py"),
    ("temporalio converter", "temporalio/converter"),
    ("logging", "structlog"),
    ("logging", "logging/"),
    ("workflow code", "workflows/"),
    ("activity code", "activities/"),
    ("temporalio sandbox", "_sandbox"),
    ("temporalio workflow instance", "_workflow_instance.py"),
    ("temporalio activity worker", "worker/_activity.py"),
    ("temporalio workflow worker", "worker/_workflow.py"),
    ("temporalio bridge (Rust core)", "temporalio/bridge"),
    ("temporalio client", "temporalio/client.py"),
    ("asyncio", "asyncio/"),
]


def report(path: str) -> None:
    counts: collections.Counter[str] = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if any(idle in frames[-1] for idle in ("select (selectors", "_worker (concurrent")):
            continue
        group = next(
            (name for frame in reversed(frames) for name, pattern in GROUPS if pattern in frame),
            "other" if stack else "native threads (the SDK's Rust core: gRPC, protobuf)",
        )
        counts[group] += int(n)
    total = sum(counts.values())
    print(f"| code | share of busy samples ({total}) |\n|---|---:|")
    for group, count in counts.most_common():
        print(f"| {group} | {count / total:.0%} |")


async def run(purchases: int, concurrency: int) -> None:
    configure("dev", "WARNING")
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(),
    )
    await ensure_search_attributes(env.client)
    atom = AtomActivities(
        AtomSettings(base_url="http://atom.sim", api_key="bench-key", activities_per_second=None),
        transport=httpx.ASGITransport(app=fresh_simulator().app),
    )
    try:
        async with serving(env.client, "profile", [atom], sandboxed=False):

            async def purchase(n: int) -> None:
                await purchase_outcome(await start_purchase(env.client, request(n, "profile"), "profile"))

            result = await measure(purchases, concurrency, purchase)
        print(f"{result['per_s']:.1f} purchases/s, {result['cpu'] / purchases * 1000:.0f} ms CPU per purchase")
    finally:
        await atom.aclose()
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--report", metavar="PY_SPY_RAW", help="group a py-spy --format raw file instead")
    args = parser.parse_args()
    if args.report:
        report(args.report)
    else:
        asyncio.run(run(args.purchases, args.concurrency))
