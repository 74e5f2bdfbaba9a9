"""The long server-restart run (tests/test_server_restart.py is the CI-sized one): the dev server
(SQLite file) is killed and restarted several times during a batch.

    python bench/restart.py --purchases 40 --restarts 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))

from simulators.atom import SHOWTIME, AtomSimulator  # noqa: E402
from tests.test_server_restart import restart_during_batch  # noqa: E402
from workers.logs import configure  # noqa: E402


async def main(count: int, restarts: int) -> None:
    configure("dev", "ERROR")
    sim = AtomSimulator(api_key="test-atom-key", fulfil_after_polls=2)
    sim.showtimes[SHOWTIME].seats |= {f"R{n}": "available" for n in range(1, count + 1)}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        results = await restart_during_batch(Path(home) / "temporal.db", sim, count, restarts)
    keys = [o["clientRequestId"] for o in sim.ledger()["orders"]]
    fulfilled = sum(r.state == "FULFILLED" for r in results)
    print(
        f"\n| purchases | server restarts | wall | fulfilled | orders | distinct order keys |\n"
        f"|---:|---:|---:|---:|---:|---:|\n"
        f"| {count} | {restarts} | {time.perf_counter() - started:.0f} s | {fulfilled} | {len(keys)} | "
        f"{len(set(keys))} |"
    )
    assert fulfilled == count and len(keys) == len(set(keys)) == count


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--purchases", type=int, default=40)
    parser.add_argument("--restarts", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(main(args.purchases, args.restarts))
    sys.stdout.flush()
    os._exit(0)  # temporalio/sdk-python#300
