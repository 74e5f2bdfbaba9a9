"""Reliability under provider faults: a batch of purchases while the Atom simulator fails in every
way it can. Whatever happens, each purchase ends in a final state with a typed reason, each
purchase placed at most one order, and no order stays charged for a purchase that did not succeed."""

from __future__ import annotations

import random

from temporalio.testing import WorkflowEnvironment

from simulators.atom import SHOWTIME, AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker
from workers.client import purchase_outcome, start_purchase
from workflows.models import FailureReason, PurchaseState

ENDPOINTS = ["refresh", "guest", "lease", "preview", "create", "status", "summary"]


def inject(sim: AtomSimulator, rng: random.Random) -> None:
    for endpoint in ENDPOINTS:
        sim.faults.add(Fault(endpoint=endpoint, status=rng.choice([500, 502, 503]), times=rng.randint(1, 3)))
    sim.faults.add(Fault(endpoint="lease", status=429, retry_after=2, times=2))
    sim.faults.add(Fault(endpoint="create", status=502, lost=True, times=3))  # placed, answer lost
    sim.faults.add(Fault(endpoint="preview", status=None, delay=1.5, times=2))  # slower than the client waits
    sim.faults.add(Fault(endpoint="summary", status=500, lost=True, times=2))


async def batch_under_faults(env: WorkflowEnvironment, sim: AtomSimulator, count: int, seed: int) -> tuple[list, list]:
    """`count` purchases (seats F1..F{count} must exist) while faults are injected again for each
    quarter of the batch; the first half is fulfilled, the second half's fulfilment never comes."""
    rng = random.Random(seed)

    async def batch(numbers: range) -> list:
        inject(sim, rng)
        handles = [
            await start_purchase(
                env.client,
                atom_request(
                    f"fault-{n}", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"F{n + 1}"]}]
                ),
                tq,
            )
            for n in numbers
        ]
        # One at a time: the time-skipping server refuses concurrent result waits. The others run on.
        return [await purchase_outcome(h) for h in handles]

    half, quarter = count // 2, max(count // 4, 1)
    async with atom_worker(env.client, sim, timeout_seconds=1.0) as tq:
        sim.fulfilment = "ok"
        first = [r for start in range(0, half, quarter) for r in await batch(range(start, min(start + quarter, half)))]
        sim.fulfilment = "never"  # the second half never gets its tickets: timed out and cancelled
        rest = [r for start in range(half, count, quarter) for r in await batch(range(start, min(start + quarter, count)))]
    return first, rest


def assert_invariants(sim: AtomSimulator, first: list, rest: list) -> None:
    results = first + rest
    assert all(r.state.final for r in results)
    for result in results:
        if result.state != PurchaseState.FULFILLED:
            assert result.failure is not None and isinstance(result.failure.reason, FailureReason)
    ledger = sim.ledger()
    keys = [o["clientRequestId"] for o in ledger["orders"]]
    assert len(keys) == len(set(keys)) <= len(results)  # at most one order per purchase
    fulfilled = {r.provider_order_id for r in results if r.state == PurchaseState.FULFILLED}
    for order in ledger["orders"]:
        assert order["status"] == ("fulfilled" if order["orderId"] in fulfilled else "cancelled"), order
    assert sorted(ledger["sold"]) == sorted(t.seat for r in results for t in r.tickets)
    assert all(r.state == PurchaseState.FULFILLED for r in first)
    assert all(r.failure and r.failure.reason == FailureReason.FULFILLMENT_TIMEOUT for r in rest)


def seats(sim: AtomSimulator, count: int) -> AtomSimulator:
    sim.showtimes[SHOWTIME].seats |= {f"F{n}": "available" for n in range(1, count + 1)}
    return sim


async def test_batch_under_faults_keeps_the_invariants(env: WorkflowEnvironment) -> None:
    # Lax: lost create answers are read back by a repeat create answering its order (strict Atom's
    # DUPLICATE_CLIENT_REQUEST_ID path: tests/test_atom_duplicate.py).
    sim = seats(AtomSimulator(strict=False), 8)
    first, rest = await batch_under_faults(env, sim, 8, seed=20261122)
    assert_invariants(sim, first, rest)
    assert len(sim.faults.pending) == 0  # every injected fault was met
