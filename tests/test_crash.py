"""Crash safety, CI-sized (the long run is bench/crash.py): the worker process is SIGKILLed at random
moments during a batch and started again; every purchase still ends, and the simulator's ledger
shows exactly one order per purchase and nothing charged twice."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

import pytest
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from tests.conftest import atom_request
from workers import client as purchases
from workers.client import purchase_outcome
from workflows.models import PurchaseState


async def start_worker(env: WorkflowEnvironment, base_url: str, task_queue: str,
                       rate: str = "25") -> asyncio.subprocess.Process:
    environment = dict(os.environ, TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
                       BOXOFFICE_ATOM_ACTIVITIES_PER_SECOND=rate,
                       BOXOFFICE_TASK_QUEUE=task_queue, BOXOFFICE_ATOM_BASE_URL=base_url,
                       BOXOFFICE_ATOM_API_KEY="test-atom-key", BOXOFFICE_LOG_LEVEL="WARNING",
                       # A simulator on plain http with its public key: dev mode (production refuses both).
                       BOXOFFICE_ENV="dev",
                       # A 1 s HTTP timeout makes a dead worker's attempt time out after 8 s, not 35 s.
                       BOXOFFICE_ATOM_TIMEOUT_SECONDS="1")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "worker", env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


async def kill_during_batch(env: WorkflowEnvironment, sim: AtomSimulator, base_url: str, purchases_count: int,
                            kills: int, seed: int, rate: str = "25") -> list:
    rng = random.Random(seed)
    task_queue = f"crash-{seed}"
    worker = await start_worker(env, base_url, task_queue, rate)
    handles = [
        await purchases.start_purchase(env.client, atom_request(f"crash-{seed}-{n}", items=[
            {"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"D{n + 1}"]}]), task_queue)
        for n in range(purchases_count)
    ]
    for _ in range(kills):
        # Kill once the new worker is at work: a few more provider calls, then a random moment.
        target = len(sim.calls) + rng.randint(2, 8)
        while len(sim.calls) < target:
            await asyncio.sleep(0.02)
        await asyncio.sleep(rng.uniform(0, 0.3))
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        worker = await start_worker(env, base_url, task_queue, rate)
    try:
        return await asyncio.wait_for(asyncio.gather(*(purchase_outcome(h) for h in handles)), 180)
    finally:
        worker.send_signal(signal.SIGTERM)
        await worker.wait()


# Atom on its own rate-limited queue (regular activities), and unlimited: account, lease, reads and
# polls as local activities, which a kill makes run again from the workflow task's start.
@pytest.mark.parametrize("rate", ["25", "off"])
async def test_killed_worker_loses_nothing_and_orders_once(
    dev_env: WorkflowEnvironment, atom_http: tuple[AtomSimulator, str], rate: str
) -> None:
    sim, base_url = atom_http
    sim.faults.latency = 0.3  # widen the windows a kill can land in
    results = await kill_during_batch(dev_env, sim, base_url, purchases_count=8, kills=3, seed=7, rate=rate)
    assert len(sim.calls) > 8 * 8  # kills did interrupt steps, which ran again
    assert [r.state for r in results] == [PurchaseState.FULFILLED] * 8
    ledger = sim.ledger()
    keys = [o["clientRequestId"] for o in ledger["orders"]]
    assert len(keys) == len(set(keys)) == 8  # one order per purchase, however often a step re-ran
    assert sorted(ledger["sold"]) == sorted(t.seat for r in results for t in r.tickets)
    assert {r.provider_order_id for r in results} == {o["orderId"] for o in ledger["orders"]}
