"""A clientRequestId whose flow has ended answers DUPLICATE_CLIENT_REQUEST_ID
(https://partner-docs-95q.pages.dev/guides/ordering, "The clientRequestId Rule"); the docs do not say
a repeated create returns the order, nor offer a lookup by clientRequestId. Whatever step meets that
answer, the purchase must not end as "nothing ordered": it needs attention, naming the key."""

from __future__ import annotations

import uuid
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator, Order
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker
from workers.client import purchase_outcome, start_purchase
from workflows.flow import KEYS
from workflows.models import PurchaseResult, PurchaseState

DUPLICATE = {"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "clientRequestId was used by a previous flow"}


def client_request_id(purchase_id: str) -> str:
    return f"req-{uuid.uuid5(KEYS, f'{purchase_id}:order')}"


def assert_needs_attention(result: PurchaseResult, key: str) -> None:
    assert result.state == PurchaseState.COMPENSATION_FAILED
    [unsettled] = result.compensations
    assert (unsettled.action, unsettled.ok, unsettled.retrying) == ("cancel order", False, False)
    assert "DUPLICATE_CLIENT_REQUEST_ID" in (unsettled.detail or "") and key in (unsettled.detail or "")
    assert result.failure is not None and "DUPLICATE" in result.failure.message


def calls(sim: AtomSimulator, endpoint: str) -> list[dict]:
    return [c for c in sim.calls if c["endpoint"] == endpoint]


async def test_create_whose_answer_was_lost_meets_duplicate_and_needs_attention(env: WorkflowEnvironment) -> None:
    """The create placed ORD-3 and its answer was lost; its retry and the read-back meet
    DUPLICATE_CLIENT_REQUEST_ID: the order exists, unnamed. Nothing is cancelled or released."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=502, lost=True))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("lost-create"), tq))
    key = client_request_id("lost-create")
    assert_needs_attention(result, key)
    assert [(o.order_id, o.status) for o in sim.orders.values()] == [("ORD-3", "processing")]
    assert calls(sim, "cancel") == []


async def test_duplicate_to_the_first_create_is_never_nothing_ordered(env: WorkflowEnvironment) -> None:
    """Atom refuses the first create with DUPLICATE_CLIENT_REQUEST_ID (the key's earlier flow placed an
    order): before, this ended FAILED as if nothing had been ordered."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=409, times=2, body=DUPLICATE))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("dup-first"), tq))
    assert_needs_attention(result, client_request_id("dup-first"))


async def test_rerun_of_a_purchase_that_ordered_meets_duplicate_at_the_lease(env: WorkflowEnvironment) -> None:
    """A reset or re-run derives the same clientRequestId from the purchase id; the earlier flow placed
    an order with it, so the lease answers DUPLICATE_CLIENT_REQUEST_ID: nothing new is held or ordered,
    and the purchase names the key for an operator instead of ending as a plain failure."""
    sim = AtomSimulator()
    key = client_request_id("rerun-1")
    sim.orders["ORD-90"] = Order(
        "ORD-90",
        "EVT-90",
        key,
        "earlier-token",
        ["A1", "A2"],
        [("PROD-ADULT-001", "OFFER-STD-001", 2)],
        {"totalAmount": 36.18},
        status="fulfilled",
    )
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("rerun-1"), tq))
    assert_needs_attention(result, key)
    assert result.failure is not None and result.failure.reason == "DUPLICATE_REQUEST"
    assert calls(sim, "preview") == calls(sim, "create") == [] and list(sim.orders) == ["ORD-90"]


async def test_rerun_after_a_lapsed_lease_meets_duplicate_at_the_lease(env: WorkflowEnvironment) -> None:
    """The earlier flow leased and timed out (a terminal state): its key is spent."""
    sim = AtomSimulator()
    key = client_request_id("rerun-2")
    sim.lapsed.add(key)
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("rerun-2"), tq))
    assert_needs_attention(result, key)
    assert calls(sim, "create") == [] and sim.orders == {}


async def test_retried_lease_of_the_same_flow_is_not_a_duplicate(env: WorkflowEnvironment) -> None:
    """A lease whose answer was lost is retried with the same key in the same flow (assumed accepted,
    as the simulator does): the purchase completes."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="lease", status=502, lost=True))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("lease-retry"), tq))
    assert result.state == PurchaseState.FULFILLED and result.receipt is not None
    assert result.receipt.total == Decimal("36.18") and len(calls(sim, "lease")) == 2
