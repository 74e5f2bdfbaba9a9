"""Reliability under provider faults: a batch of purchases while the Atom simulator fails in every
way it can. Whatever happens, each purchase ends in a final state with a typed reason, each
purchase placed at most one order, and no order stays charged for a purchase that did not succeed."""

from __future__ import annotations

import random

from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker
from workers.client import start_purchase
from workflows.models import FailureReason, PurchaseState

ENDPOINTS = ["refresh", "guest", "lease", "preview", "create", "status", "summary"]


def inject(sim: AtomSimulator, rng: random.Random) -> None:
    for endpoint in ENDPOINTS:
        sim.faults.add(Fault(endpoint=endpoint, status=rng.choice([500, 502, 503]), times=rng.randint(1, 3)))
    sim.faults.add(Fault(endpoint="lease", status=429, retry_after=2, times=2))
    sim.faults.add(Fault(endpoint="create", status=502, lost=True, times=3))  # placed, answer lost
    sim.faults.add(Fault(endpoint="preview", status=None, delay=1.5, times=2))  # slower than the client waits
    sim.faults.add(Fault(endpoint="summary", status=500, lost=True, times=2))


async def test_batch_under_faults_keeps_the_invariants(env: WorkflowEnvironment) -> None:
    rng = random.Random(20261122)
    sim = AtomSimulator()
    inject(sim, rng)
    sim.fulfilment = "ok"
    purchases = 8

    async def batch(numbers: range) -> list:
        handles = [
            await start_purchase(env.client, atom_request(f"fault-{n}", items=[
                {"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"C{n + 1}"]}]), tq)
            for n in numbers
        ]
        # One at a time: the time-skipping server refuses concurrent result waits. The others run on.
        return [await h.result() for h in handles]

    async with atom_worker(env.client, sim, timeout_seconds=1.0) as tq:
        first = await batch(range(4))
        sim.fulfilment = "never"  # the second half never gets its tickets: timed out and cancelled
        rest = await batch(range(4, purchases))
    results = first + rest

    assert all(r.state.final for r in results)
    for result in results:
        if result.state != PurchaseState.FULFILLED:
            assert result.failure is not None and isinstance(result.failure.reason, FailureReason)
    ledger = sim.ledger()
    keys = [o["clientRequestId"] for o in ledger["orders"]]
    assert len(keys) == len(set(keys)) <= purchases  # at most one order per purchase
    fulfilled = {r.provider_order_id for r in results if r.state == PurchaseState.FULFILLED}
    for order in ledger["orders"]:
        assert order["status"] == ("fulfilled" if order["orderId"] in fulfilled else "cancelled"), order
    assert sorted(ledger["sold"]) == sorted(t.seat for r in results for t in r.tickets)
    assert all(r.state == PurchaseState.FULFILLED for r in first)
    assert all(r.failure and r.failure.reason == FailureReason.FULFILLMENT_TIMEOUT for r in rest)
    assert len(sim.faults.pending) == 0  # every injected fault was met
