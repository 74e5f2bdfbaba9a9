"""The long kill-the-worker run (tests/test_crash.py is the CI-sized one): for each provider, a batch
of purchases on the dev server while the worker process is SIGKILLed again and again, then what the
simulator's ledger holds is counted: orders (duplicates: beyond one per purchase, or named by no
purchase), holds, leases, baskets and reservations still standing (leaks), payments, and Atom's guest
accounts against purchases.

    python bench/crash.py --provider all --purchases 12 --kills 4 [--atom-rate off]
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

from tests.test_crash import STANDS, Tally, kill_during_batch, served, tally  # noqa: E402
from workers.client import ensure_search_attributes  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workflows.models import PurchaseState  # noqa: E402

HEADER = ("| provider | purchases | SIGKILLs | wall | fulfilled | orders | duplicates | payments | standing holds "
          "| leaks | guest accounts (orphan) | provider calls |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")


def row(provider: str, kills: int, wall: float, counted: Tally) -> str:
    accounts = "–" if counted.accounts is None else f"{counted.accounts} ({len(counted.orphan_accounts)})"
    return (f"| {provider} | {counted.purchases} | {kills} | {wall:.0f} s | {counted.fulfilled} | {counted.orders} | "
            f"{counted.duplicates} | {counted.payments} | {len(counted.holds)} | {counted.leaks} | {accounts} | "
            f"{counted.calls} |")


async def run(env: WorkflowEnvironment, provider: str, count: int, kills: int, atom_rate: str) -> tuple[str, Tally]:
    sim = STANDS[provider].simulator(count)
    sim.faults.latency = 0.3  # widen the windows a kill can land in
    settings = {"BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND": atom_rate} if provider == "atom" else {}
    started = time.perf_counter()
    async with served(sim) as base_url:
        results = await kill_during_batch(env, provider, sim, base_url, count, kills, seed=11, settings=settings,
                                          timeout=600)
    counted = tally(sim, results)
    not_fulfilled = [r.state for r in results if r.state != PurchaseState.FULFILLED]
    print(row(provider, kills, time.perf_counter() - started, counted), flush=True)
    for problem in (not_fulfilled and f"not fulfilled: {not_fulfilled}", counted.holds and f"standing: {counted.holds}",
                    counted.unowned_payments and f"payments on no fulfilled order: {counted.unowned_payments}",
                    counted.orphan_accounts and f"orphan guest accounts: {counted.orphan_accounts}"):
        if problem:
            print(f"  {provider}: {problem}", file=sys.stderr, flush=True)
    return provider, counted


async def main(providers: list[str], count: int, kills: int, atom_rate: str) -> bool:
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
                                                ui=False, data_converter=pydantic_data_converter,
                                                dev_server_extra_args=dev_server_args())
    await ensure_search_attributes(env.client)
    started = time.perf_counter()
    print(HEADER, flush=True)
    try:
        tallies = [await run(env, provider, count, kills, atom_rate) for provider in providers]
    finally:
        await env.shutdown()
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s", flush=True)
    return all(t.fulfilled == count and t.orders == count and t.duplicates == 0 and t.leaks == 0 for _, t in tallies)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=[*STANDS, "all"], default="all")
    parser.add_argument("--purchases", type=int, default=12)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--atom-rate", default="25", help="BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND (off: local calls)")
    args = parser.parse_args()
    ok = asyncio.run(main(list(STANDS) if args.provider == "all" else [args.provider], args.purchases, args.kills,
                          args.atom_rate))
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # os._exit: temporalio/sdk-python#300
