"""Many purchases held at once: manual Atom purchases are started with `hold_purchase` (returns once
AWAITING_CONFIRMATION) and left waiting (long leases), on the dev server with one worker process
(default cache: 1000 workflows, older ones are evicted and replayed when they next get work). At
checkpoints it reports the worker process's RSS, the hold rate, the time to held, and the latency of
`confirm` on random held purchases (an evicted one is replayed first).

The Atom simulator runs in a child process, so the RSS measured is the worker's (and this driver's,
which keeps no per-purchase state); the dev server's and the simulator's RSS are reported beside it.
The simulator's checks scan every lease per call, which is quadratic at this scale; here a seat index
answers them (leases outlast the run, so none expires). The dev server keeps its state in a SQLite
file (as `boxoffice dev` does): in memory, ~80,000 held purchases exhausted a 24 GB machine.

    python bench/held.py --held 100000 --minutes 90
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from activities.atom import AtomActivities, AtomSettings  # noqa: E402
from simulators.atom import SHOWTIME, AtomSimulator, Lease, Showtime  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from workers import client as purchases  # noqa: E402
from workers.client import ensure_search_attributes  # noqa: E402
from workers.devstack import dev_server_args, port_open  # noqa: E402
from workers.logs import configure  # noqa: E402
from workers.worker import serving  # noqa: E402
from workflows.models import ConfirmRequest  # noqa: E402

IN_FLIGHT = 50  # holds started at once: more only overloads the 2-core machine


class Leases(dict[str, Lease]):
    """The simulator's leases with a seat → lease index."""

    def __init__(self) -> None:
        super().__init__()
        self.by_seat: dict[str, str] = {}

    def __setitem__(self, key: str, lease: Lease) -> None:
        super().__setitem__(key, lease)
        self.by_seat.update(dict.fromkeys(lease.seat_ids, key))


class Calls(list[dict[str, Any]]):
    """Keeps no call: the simulator records every request, which is its memory, not the run's."""

    def append(self, call: dict[str, Any]) -> None:
        pass


class ManyHeldSimulator(AtomSimulator):
    def __init__(self, seats: int) -> None:
        super().__init__(api_key="bench-key", lease_seconds=6 * 3600)  # holds outlast the run
        self.leases = Leases()
        self.calls = Calls()
        self.showtimes[SHOWTIME].seats = {f"S{n}": "available" for n in range(seats)}

    def _expire_leases(self) -> None:
        pass  # nothing expires within the run

    def _seat_taken(self, showtime: Showtime, seat: str, client_request_id: str) -> bool:
        assert isinstance(self.leases, Leases)
        if showtime.seats.get(seat) != "available":
            return True
        return self.leases.by_seat.get(seat, client_request_id) != client_request_id


def serve_simulator(port: int, seats: int) -> None:
    import uvicorn

    uvicorn.run(ManyHeldSimulator(seats).app, host="127.0.0.1", port=port, log_level="warning")


def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dev_server_pid() -> int:
    """The `temporal server start-dev` child of this process (WorkflowEnvironment keeps it private)."""
    for task in Path("/proc/self/task").iterdir():
        for child in (task / "children").read_text().split():
            if Path(f"/proc/{child}/exe").resolve().name == "temporal":
                return int(child)
    raise RuntimeError("no dev server child process")


def request(n: int) -> dict:
    return {
        "provider": "atom",
        "purchase_id": f"held-{n}",
        "showtime_id": SHOWTIME,
        "confirmation": "manual",
        "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"S{n}"]}],
        "buyer": {"email": "g@example.com", "first_name": "J", "last_name": "D"},
    }


@contextlib.asynccontextmanager
async def atom_stack(seats: int, db: Path | None = None) -> AsyncIterator[tuple[Client, AtomActivities, int]]:
    """A dev server (its state in `db`, else in memory), a ManyHeldSimulator with `seats` seats in a
    child process, and Atom activities without a rate limit talking to it: the client, the
    activities and the simulator's pid."""
    port = free_port()
    simulator = subprocess.Popen([sys.executable, __file__, "--serve-simulator", str(port), "--held", str(seats)])
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(db),
    )
    atom = AtomActivities(AtomSettings(base_url=f"http://127.0.0.1:{port}", api_key="bench-key", activities_per_second=None))
    try:
        await ensure_search_attributes(env.client)
        while not port_open("127.0.0.1", port):
            await asyncio.sleep(0.1)
        yield env.client, atom, simulator.pid
    finally:
        await atom.aclose()
        await env.shutdown()
        simulator.terminate()


async def timed_hold(client: Client, n: int, task_queue: str) -> float:
    """Holds purchase `n` (update-with-start); its time to held (ms)."""
    started = time.perf_counter()
    _, status = await purchases.hold_purchase(client, request(n), task_queue)
    assert status.state == "AWAITING_CONFIRMATION", status
    return (time.perf_counter() - started) * 1000


async def timed_confirm(client: Client, n: int) -> float:
    """Confirms held purchase `n`; the update's latency (ms), which ends once the order is placed."""
    started = time.perf_counter()
    status = await purchases.confirm(client, f"held-{n}", ConfirmRequest())
    assert status.state in ("AWAITING_FULFILLMENT", "FULFILLED"), status.state
    return (time.perf_counter() - started) * 1000


async def hold(client: Client, numbers: range, deadline: float) -> tuple[int, list[float]]:
    """Holds purchases `numbers` (IN_FLIGHT at a time) until done or `deadline`; returns how many
    were held and their times to held (ms)."""
    pending = iter(numbers)
    latencies: list[float] = []

    async def starter() -> None:
        for n in pending:
            if time.monotonic() > deadline:
                return
            latencies.append(await timed_hold(client, n, "held"))

    await asyncio.gather(*(starter() for _ in range(IN_FLIGHT)))
    return len(latencies), latencies


async def main(held: int, checkpoints: int, samples: int, minutes: float, db: Path) -> None:
    configure("dev", "WARNING")
    deadline = time.monotonic() + minutes * 60
    rng = random.Random(3)
    rows = []
    async with atom_stack(held + samples, db) as (client, atom, simulator):
        server = dev_server_pid()
        async with serving(client, "held", [atom], sandboxed=False):  # as `boxoffice worker` runs
            start_rss, started = rss_mb(), time.monotonic()
            total, confirmed = 0, set[int]()
            step = held // checkpoints
            while total < held and time.monotonic() < deadline:
                window = time.monotonic()
                count, to_held = await hold(client, range(total, min(total + step, held)), deadline)
                total += count
                rate = count / (time.monotonic() - window)
                picks = rng.sample(sorted(set(range(total)) - confirmed), min(samples, total - len(confirmed)))
                confirmed.update(picks)
                latencies = [await timed_confirm(client, n) for n in picks]
                rows.append(
                    (
                        total - len(confirmed),
                        time.monotonic() - started,
                        rate,
                        rss_mb(),
                        rss_mb(server),
                        rss_mb(simulator),
                        db.stat().st_size / 2**20,
                        statistics.median(to_held),
                        statistics.median(latencies),
                        max(latencies),
                    )
                )
                print(rows[-1], flush=True)
    print(
        f"\nManual Atom purchases held in AWAITING_CONFIRMATION; one worker process (cache 1000 workflows), "
        f"dev server on a SQLite file, {IN_FLIGHT} holds in flight; {samples} confirms per checkpoint; "
        f"worker+driver RSS at start {start_rss:.0f} MB; load {os.getloadavg()[0]:.1f}.\n"
    )
    print(
        "| held | elapsed | hold rate | worker+driver RSS | dev server RSS | simulator RSS | database file "
        "| time to held p50 | confirm p50 | confirm max |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for now_held, elapsed, rate, rss, server_rss, simulator_rss, db_size, held_p50, confirm_p50, worst in rows:
        print(
            f"| {now_held} | {elapsed:.0f} s | {rate:.0f}/s | {rss:.0f} MB | {server_rss:.0f} MB | "
            f"{simulator_rss:.0f} MB | {db_size:.0f} MB | {held_p50:.0f} ms | {confirm_p50:.0f} ms | {worst:.0f} ms |"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--held", type=int, default=100_000)
    parser.add_argument("--checkpoints", type=int, default=10)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=60, help="stop holding more after this long")
    parser.add_argument("--db", type=Path, help="the dev server's SQLite file (default: one in a temporary directory)")
    parser.add_argument("--serve-simulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_simulator:
        serve_simulator(args.serve_simulator, args.held)
        sys.exit(0)
    with tempfile.TemporaryDirectory() as home:
        asyncio.run(main(args.held, args.checkpoints, args.samples, args.minutes, args.db or Path(home) / "held.db"))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
