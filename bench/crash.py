"""The long kill-the-worker run (tests/test_crash.py is the CI-sized one): a batch of purchases on the
dev server while the worker process is SIGKILLed again and again, then the ledger is checked.

    python bench/crash.py --purchases 40 --kills 10 [--atom-rate off]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import uvicorn
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from simulators.atom import SHOWTIME, AtomSimulator  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.test_crash import kill_during_batch  # noqa: E402
from workers.client import ensure_search_attributes  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402


async def main(count: int, kills: int, rate: str) -> None:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
                                                ui=False, data_converter=pydantic_data_converter,
                                                dev_server_extra_args=dev_server_args())
    await ensure_search_attributes(env.client)
    sim = AtomSimulator(api_key="test-atom-key")
    sim.showtimes[SHOWTIME].seats |= {f"D{n}": "available" for n in range(1, count + 1)}
    sim.faults.latency = 0.3
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(sim.app, host="127.0.0.1", port=port, log_level="warning"))
    serve = asyncio.create_task(server.serve())
    started = time.perf_counter()
    try:
        results = await kill_during_batch(env, sim, f"http://127.0.0.1:{port}", count, kills, seed=11, rate=rate)
    finally:
        server.should_exit = True
        await serve
        await env.shutdown()
    ledger = sim.ledger()
    keys = [o["clientRequestId"] for o in ledger["orders"]]
    fulfilled = sum(r.state == "FULFILLED" for r in results)
    print(f"\n| purchases | SIGKILLs | wall | fulfilled | orders | distinct order keys | provider calls "
          f"(minimum {count * 8}) |\n|---:|---:|---:|---:|---:|---:|---:|\n"
          f"| {count} | {kills} | {time.perf_counter() - started:.0f} s | {fulfilled} | {len(keys)} | "
          f"{len(set(keys))} | {len(sim.calls)} |")
    assert fulfilled == count and len(keys) == len(set(keys)) == count


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=40)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--atom-rate", default="25", help="BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND (off: local calls)")
    args = parser.parse_args()
    asyncio.run(main(args.purchases, args.kills, args.atom_rate))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
