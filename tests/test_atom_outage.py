"""The create's read-back during a provider outage longer than a round (issue: Atom down ~12 min).
A read-back decides what to keep or undo, so like an undo it keeps trying in rounds, alerting
COMPENSATION_FAILED (retrying) meanwhile, and names what it finds once the provider answers.
Endpoints and answers: https://partner-docs-95q.pages.dev/examples/ordering (create),
https://partner-docs-95q.pages.dev/guides/ordering (DUPLICATE_CLIENT_REQUEST_ID)."""

from __future__ import annotations

import json

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker, purchase_duration
from tests.test_atom_duplicate import client_request_id
from workers.client import purchase_outcome, start_purchase
from workflows.models import PurchaseState

# More 503s than the create's own retries (2 min) and one read-back round (10 min) meet, fewer than
# two rounds: Atom comes back during the read-back's second round (~12 minutes in).
OUTAGE = 30


async def states(handle: WorkflowHandle) -> list[str]:
    """The BoxofficeState values the purchase went through (its search-attribute upserts)."""
    seen = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields
            if "BoxofficeState" in fields:
                seen.append(json.loads(fields["BoxofficeState"].data))
    return seen


def creates(sim: AtomSimulator) -> int:
    return sum(1 for c in sim.calls if c["endpoint"] == "create")


async def test_read_back_keeps_trying_through_a_long_outage_and_names_the_order(env: WorkflowEnvironment) -> None:
    """The create never reached Atom; Atom is down past a read-back round. Before: one round, then
    COMPENSATION_FAILED not retrying. Now: alerted while retrying, then the order is placed and named."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=503, times=OUTAGE))
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("outage-1"), tq)
        result = await purchase_outcome(handle)
        took = await purchase_duration(handle)
        seen = await states(handle)
    assert creates(sim) == OUTAGE + 1 and took.total_seconds() > 12 * 60
    assert "COMPENSATION_FAILED" in seen and seen[-1] == "FULFILLED"  # alerted meanwhile, then carried on
    assert result.state == PurchaseState.FULFILLED and result.compensations == []
    [order] = sim.orders.values()
    assert result.provider_order_id == order.order_id and len(result.tickets) == 2


async def test_read_back_after_a_long_outage_names_the_order_a_lost_create_placed(env: WorkflowEnvironment) -> None:
    """The issue's case on a provider whose repeat create answers its order (lax simulator): the
    create placed ORD-3, its answer was lost, then Atom was down ~12 minutes. The read-back finds
    ORD-3 and the purchase carries on with it, named."""
    sim = AtomSimulator(strict=False)
    sim.faults.add(Fault(endpoint="create", status=502, lost=True))
    sim.faults.add(Fault(endpoint="create", status=503, times=OUTAGE))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("outage-2"), tq))
    assert result.state == PurchaseState.FULFILLED and result.compensations == []
    assert result.provider_order_id == "ORD-3" and list(sim.orders) == ["ORD-3"]


async def test_read_back_after_a_long_outage_meets_duplicate_and_says_so(env: WorkflowEnvironment) -> None:
    """Strict Atom: the create placed ORD-3 and its answer was lost, then Atom was down past a round.
    Once Atom answers, the read-back meets DUPLICATE_CLIENT_REQUEST_ID: an order exists, id unknown;
    the purchase needs attention, naming the clientRequestId, and the retrying alert is withdrawn."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=502, lost=True))
    sim.faults.add(Fault(endpoint="create", status=503, times=OUTAGE))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("outage-3"), tq))
    assert result.state == PurchaseState.COMPENSATION_FAILED
    [unsettled] = result.compensations
    assert (unsettled.action, unsettled.ok, unsettled.retrying) == ("cancel order", False, False)
    assert client_request_id("outage-3") in (unsettled.detail or "")
    assert "DUPLICATE_CLIENT_REQUEST_ID" in (unsettled.detail or "")
    assert creates(sim) == OUTAGE + 2 and [o.status for o in sim.orders.values()] == ["processing"]
