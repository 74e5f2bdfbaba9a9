"""The long provider-fault run (tests/test_reliability.py is the CI-sized one): a larger batch with
the fault set injected again for each quarter, on the time-skipping server.

    python bench/faults.py --purchases 40
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from simulators.atom import AtomSimulator  # noqa: E402
from tests.test_reliability import assert_invariants, batch_under_faults, seats  # noqa: E402
from workers.client import ensure_search_attributes  # noqa: E402
from workers.logs import configure  # noqa: E402


async def main(count: int) -> None:
    configure("dev", "ERROR")
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(Path(sys.executable).parent / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client)
    sim = seats(AtomSimulator(), count)
    started = time.perf_counter()
    try:
        first, rest = await batch_under_faults(env, sim, count, seed=42)
    finally:
        await env.shutdown()
    assert_invariants(sim, first, rest)
    results = first + rest
    reasons = sorted({str(r.failure.reason) for r in results if r.failure})
    print(
        f"\n| purchases | provider calls (minimum {count * 8}) | wall | fulfilled | failed (reasons) | orders | "
        f"cancelled orders |\n|---:|---:|---:|---:|---|---:|---:|\n"
        f"| {count} | {len(sim.calls)} | {time.perf_counter() - started:.0f} s | {len(first)} | "
        f"{len(rest)} ({', '.join(reasons)}) | {len(sim.orders)} | "
        f"{sum(o['status'] == 'cancelled' for o in sim.ledger()['orders'])} |"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=40)
    asyncio.run(main(parser.parse_args().purchases))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
