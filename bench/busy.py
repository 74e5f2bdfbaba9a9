"""Confirms while the worker is saturated with holds (an on-sale rush): manual Atom purchases are
held 50 at a time (as bench/held.py), and meanwhile one held purchase per second is confirmed. A
confirm waits for the order, a regular activity; the holds' calls are local activities, which the
SDK core hands to a worker before any regular activity task (its activity poll prefers them), so on
saturated cores the order of a worker that also runs the workflows waits until the holds stop.
Variants, in alternating rounds on one dev server, each with fresh workers in this process:

- one worker: workflows, local and regular activities in one SDK worker (before 2026-11-23);
- `serving`: as `boxoffice worker` runs, regular activities on a worker of their own.

    python bench/busy.py --seconds 60 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

sys.path.insert(0, str(Path(__file__).parents[1]))

from activities.atom import AtomActivities  # noqa: E402
from bench.held import IN_FLIGHT, atom_stack, timed_confirm, timed_hold  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.telemetry import Telemetry  # noqa: E402
from workers.worker import WORKFLOWS, serving  # noqa: E402

SEATS = 1_000_000  # the simulator's seats: every hold of every round gets its own


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def round_of(
    client: Client, numbers: itertools.count, seconds: float, rng: random.Random, to_held: list[float], confirms: list[float]
) -> None:
    """Holds purchases IN_FLIGHT at a time for `seconds` while confirming a held one each second;
    appends the times to held and the confirm latencies (ms)."""
    deadline = time.monotonic() + seconds
    held: list[int] = []

    async def holder() -> None:
        while time.monotonic() < deadline:
            n = next(numbers)
            to_held.append(await timed_hold(client, n, "busy"))
            held.append(n)

    async def confirmer() -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            if not held:
                continue
            confirms.append(await timed_confirm(client, held.pop(rng.randrange(len(held)))))

    await asyncio.gather(confirmer(), *(holder() for _ in range(IN_FLIGHT)))


def one_worker(client: Client, atom: AtomActivities) -> Worker:
    return Worker(
        client,
        task_queue="busy",
        workflows=WORKFLOWS,
        activities=atom.all(),
        workflow_runner=UnsandboxedWorkflowRunner(),
        interceptors=[Telemetry()],
    )


async def main(seconds: float, rounds: int) -> None:
    configure("dev", "ERROR")  # a starved regular activity's late completion is logged by the SDK core
    numbers, rng = itertools.count(), random.Random(5)
    async with atom_stack(SEATS) as (client, atom, _):
        variants: dict[str, Callable[[], AbstractAsyncContextManager[Any]]] = {
            "one worker": lambda: one_worker(client, atom),
            "serving (as `boxoffice worker`)": lambda: serving(client, "busy", [atom], sandboxed=False),
        }
        to_held: dict[str, list[float]] = {name: [] for name in variants}
        confirms: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(rounds):
            for name, workers in variants.items():
                async with workers():
                    await round_of(client, numbers, seconds, rng, to_held[name], confirms[name])
                print(name, len(to_held[name]), statistics.median(confirms[name]), max(confirms[name]), flush=True)
    print(
        f"\nAtom manual purchases held {IN_FLIGHT} at a time for {seconds:.0f} s per round, one held purchase "
        f"confirmed per second (update until the order is placed); {rounds} rounds alternating the variants, "
        f"one worker process (unsandboxed, as `boxoffice worker`); load {os.getloadavg()[0]:.1f}.\n"
    )
    print("| workers | holds/s | time to held p50 | confirms | confirm p50 | confirm p90 | confirm max |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for name in variants:
        print(
            f"| {name} | {len(to_held[name]) / (seconds * rounds):.1f} | {statistics.median(to_held[name]):.0f} ms | "
            f"{len(confirms[name])} | {statistics.median(confirms[name]):.0f} ms | "
            f"{percentile(confirms[name], 0.9):.0f} ms | {max(confirms[name]):.0f} ms |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60, help="length of one round")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rounds))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
