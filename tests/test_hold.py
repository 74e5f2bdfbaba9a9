"""Early return for callers: `hold_purchase` starts a purchase and returns once its seats are held
(update-with-start), on the dev server (multi-operation starts are not in the time-skipping server)."""

from __future__ import annotations

from temporalio.testing import WorkflowEnvironment

from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from tests.conftest import atm_request, atm_worker, atom_request, atom_worker
from workers import client as purchases
from workers.client import purchase_outcome
from workflows.models import ConfirmRequest, PurchaseState


async def test_manual_purchase_returns_held_with_receipt_and_expiry(dev_env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim) as tq:
        handle, held = await purchases.hold_purchase(dev_env.client, atom_request("hold-1", confirmation="manual"), tq)
        assert held.state == PurchaseState.AWAITING_CONFIRMATION
        assert held.receipt is not None and held.receipt.total > 0
        assert held.hold_expires_at is not None
        assert [lease["seats"] for lease in sim.ledger()["leases"]] == [["A1", "A2"]]
        assert sim.ledger()["orders"] == []  # nothing is bought before the confirm

        confirmed = await purchases.confirm(dev_env.client, "hold-1", ConfirmRequest())
        assert confirmed.state in (PurchaseState.AWAITING_FULFILLMENT, PurchaseState.FULFILLED)
        assert (await purchase_outcome(handle)).state == PurchaseState.FULFILLED


async def test_repeated_call_returns_the_same_purchase(dev_env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim) as tq:
        request = atom_request("hold-2", confirmation="manual")
        first_handle, first = await purchases.hold_purchase(dev_env.client, request, tq)
        again_handle, again = await purchases.hold_purchase(dev_env.client, request, tq)
        assert again_handle.id == first_handle.id == "purchase-hold-2"
        assert again.state == PurchaseState.AWAITING_CONFIRMATION and again.hold_expires_at == first.hold_expires_at
        assert len(sim.ledger()["leases"]) == 1

        await purchases.cancel(dev_env.client, "hold-2", "buyer left")
        await purchase_outcome(first_handle)
        # Ended: the same purchase answers with how it ended, nothing starts again.
        ended_handle, ended = await purchases.hold_purchase(dev_env.client, request, tq)
        assert ended_handle.id == first_handle.id and ended.state == PurchaseState.CANCELLED
    assert len([c for c in sim.calls if c["endpoint"] == "lease"]) == 1


async def test_auto_purchase_returns_once_committing(dev_env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim) as tq:
        handle, held = await purchases.hold_purchase(dev_env.client, atom_request("hold-3"), tq)
        assert held.state not in (PurchaseState.HOLDING, PurchaseState.AWAITING_CONFIRMATION)
        assert held.hold_expires_at is not None and held.receipt is not None
        assert (await purchase_outcome(handle)).state == PurchaseState.FULFILLED


async def test_taken_seats_return_the_failure(dev_env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    items = [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["A2", "A3"]}]
    async with atom_worker(dev_env.client, sim) as tq:
        _, held = await purchases.hold_purchase(dev_env.client, atom_request("hold-4", items=items), tq)
    assert held.state == PurchaseState.FAILED
    assert held.failure is not None and held.failure.reason == "SEAT_UNAVAILABLE"
    assert held.hold_expires_at is None and sim.ledger()["orders"] == []


async def test_atm_purchase_returns_the_checkout_url(dev_env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()
    async with atm_worker(dev_env.client, sim) as tq:
        handle, held = await purchases.hold_purchase(dev_env.client, atm_request("hold-5"), tq)
        assert held.state == PurchaseState.AWAITING_CONFIRMATION
        assert held.provider_ids["checkout_url"].endswith(held.provider_ids["order_id"])
        assert held.hold_expires_at is not None and held.receipt is not None
        await purchases.cancel(dev_env.client, "hold-5", "test over")
