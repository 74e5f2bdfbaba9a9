"""The long kill-the-worker run (tests/test_crash.py is the CI-sized one): for each provider, a batch
of purchases on the dev server while the worker process is SIGKILLed again and again, then what the
simulator's ledger holds is counted: orders (duplicates: beyond one per purchase, or named by no
purchase), holds, leases, baskets and reservations still standing, payments, and Atom's guest
accounts against purchases. What a provider cannot find again (an ACME reservation, an Atom guest
account made by an attempt whose answer a kill lost) its purchase names as of unknown id: those
names are counted from the purchases' histories, and leaks are what stands that nobody names.

    python bench/crash.py --provider all --purchases 12 --kills 4 [--atom-rate off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

sys.path.insert(0, str(Path(__file__).parents[1]))

from tests.test_crash import STANDS, Tally, kill_during_batch, served, tally  # noqa: E402
from workers.client import ensure_search_attributes  # noqa: E402
from workers.devstack import dev_server_args  # noqa: E402
from workflows.models import PurchaseResult, PurchaseState  # noqa: E402

HEADER = (
    "| provider | purchases | SIGKILLs | wall | fulfilled | orders | duplicates | payments | standing holds "
    "| named, unknown id | leaks (unnamed) | guest accounts (orphan) | provider calls |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)
# The calls whose retries the purchase names as of unknown id (workflows/acme.py, workflows/atom.py).
UNKNOWN = {"acme": "acme.reserve", "atom": "atom.create_guest_account"}


async def named_unknown(client: Client, provider: str, results: list[PurchaseResult]) -> int:
    """How many effects of unknown id the purchases named, read from their histories (the dev stand
    runs without codec keys): each completed call in UNKNOWN names its `unknown_attempts`; a failed
    ACME reserve names the attempts before a refusal, or all of them once its retries ran out (1
    when the failure says no attempt: a timeout), as workflows/acme.py does."""
    activity = UNKNOWN.get(provider)
    if activity is None:
        return 0
    named = 0
    for result in results:
        scheduled: set[int] = set()
        async for event in client.get_workflow_handle(f"purchase-{result.purchase_id}").fetch_history_events():
            if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                if event.activity_task_scheduled_event_attributes.activity_type.name == activity:
                    scheduled.add(event.event_id)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
                done = event.activity_task_completed_event_attributes
                if done.scheduled_event_id in scheduled:
                    named += json.loads(done.result.payloads[0].data).get("unknown_attempts", 0)
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
                failure = event.activity_task_failed_event_attributes.failure
                if event.activity_task_failed_event_attributes.scheduled_event_id in scheduled:
                    info = failure.application_failure_info  # the ApplicationError the activity raised
                    details = info.details.payloads
                    attempt = (json.loads(details[0].data).get("attempt") or 1) if details else 1
                    named += attempt - 1 if info.non_retryable else attempt
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
                if event.activity_task_timed_out_event_attributes.scheduled_event_id in scheduled:
                    named += 1
    return named


def row(provider: str, kills: int, wall: float, counted: Tally, named: int) -> str:
    """`named`: effects of unknown id the purchases named (holds for ACME, guest accounts for Atom)."""
    holds = len(counted.holds)
    named_holds = min(named, holds) if provider == "acme" else 0
    accounts = "–" if counted.accounts is None else f"{counted.accounts} ({len(counted.orphan_accounts)})"
    return (
        f"| {provider} | {counted.purchases} | {kills} | {wall:.0f} s | {counted.fulfilled} | {counted.orders} | "
        f"{counted.duplicates} | {counted.payments} | {holds} | {named if provider in UNKNOWN else '–'} | "
        f"{unnamed_leaks(counted, named_holds)} | {accounts} | {counted.calls} |"
    )


def unnamed_leaks(counted: Tally, named_holds: int) -> int:
    return counted.leaks - named_holds


async def run(env: WorkflowEnvironment, provider: str, count: int, kills: int, atom_rate: str) -> tuple[str, Tally, int]:
    sim = STANDS[provider].simulator(count)
    sim.faults.latency = 0.3  # widen the windows a kill can land in
    settings = {"BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND": atom_rate} if provider == "atom" else {}
    started = time.perf_counter()
    async with served(sim) as base_url:
        # ACME: a purchase that failed after reserve attempts of unknown outcome waits them out (10 min
        # of real time on the dev server) before it ends.
        results = await kill_during_batch(
            env, provider, sim, base_url, count, kills, seed=11, settings=settings, timeout=1200 if provider == "acme" else 600
        )
    counted = tally(sim, results)
    named = await named_unknown(env.client, provider, results)
    not_fulfilled = [
        f"{r.state} {r.failure.reason if r.failure else ''}".strip() for r in results if r.state != PurchaseState.FULFILLED
    ]
    print(row(provider, kills, time.perf_counter() - started, counted, named), flush=True)
    for problem in (
        not_fulfilled and f"not fulfilled: {not_fulfilled}",
        counted.holds and f"standing: {counted.holds}",
        counted.unowned_payments and f"payments on no fulfilled order: {counted.unowned_payments}",
        counted.orphan_accounts and f"orphan guest accounts: {counted.orphan_accounts}",
    ):
        if problem:
            print(f"  {provider}: {problem}", file=sys.stderr, flush=True)
    return provider, counted, named


async def main(providers: list[str], count: int, kills: int, atom_rate: str) -> bool:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        ui=False,
        data_converter=pydantic_data_converter,
        dev_server_extra_args=dev_server_args(),
    )
    await ensure_search_attributes(env.client)
    started = time.perf_counter()
    print(HEADER, flush=True)
    try:
        tallies = [await run(env, provider, count, kills, atom_rate) for provider in providers]
    finally:
        await env.shutdown()
    print(f"\ntotal wall {time.perf_counter() - started:.0f} s", flush=True)
    return all(
        t.fulfilled == count
        and t.orders == count
        and t.duplicates == 0
        and len(t.orphan_accounts) <= named
        and unnamed_leaks(t, min(named, len(t.holds)) if p == "acme" else 0) == 0
        for p, t, named in tallies
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=[*STANDS, "all"], default="all")
    parser.add_argument("--purchases", type=int, default=12)
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--atom-rate", default="25", help="BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND (off: local calls)")
    args = parser.parse_args()
    ok = asyncio.run(
        main(list(STANDS) if args.provider == "all" else [args.provider], args.purchases, args.kills, args.atom_rate)
    )
    sys.stdout.flush()
    os._exit(0 if ok else 1)  # os._exit: temporalio/sdk-python#300
