"""Ticket Evolution undo and poll, as the docs define them: Orders / Reject for a pending order,
Orders / Cancel (a proposal) for an accepted one, both with a configured reviewer; `buyer_state`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.tevo import TevoActivities, TevoSettings
from simulators.tevo import TevoSimulator
from tests.conftest import tevo_request, tevo_worker
from workers.client import purchase_outcome, start_purchase
from workers.worker import missing_settings
from workflows.models import PurchaseState

CANCEL_PAGE = "https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129637"
REJECT_PAGE = "https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108"


def activities_for(sim: TevoSimulator, **settings: Any) -> TevoActivities:
    config = TevoSettings(
        **{
            "base_url": "https://api.tevo.test",
            "api_token": sim.token,
            "api_secret": sim.secret,
            "reviewer_id": sim.reviewer_id,
            **settings,
        }
    )
    return TevoActivities(config, transport=httpx.ASGITransport(app=sim.app))


async def placed_order(sim: TevoSimulator, activities: TevoActivities) -> int:
    """An order placed through the simulator's create endpoint, still pending."""
    from tests.test_tevo import parse_request

    sim.clients[1507094] = {"id": 1507094}
    order = await ActivityEnvironment().run(activities.create_order, parse_request(tevo_request("tevo-u")), "1507094")
    return int(order.order_id)


def endpoints(sim: TevoSimulator) -> list[str]:
    return [c["endpoint"] for c in sim.calls]


async def test_accepted_order_cancellation_is_proposed_and_needs_attention(env: WorkflowEnvironment) -> None:
    """Orders / Cancel only proposes cancelling an accepted order; both sides must cancel
    (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129637). An order that does not
    read cancelled afterwards is not a done undo: COMPENSATION_FAILED for an operator."""
    sim = TevoSimulator(buyer_cancels=True)  # accepted by the seller, the buyer's side cancelled
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-u1"), tq))
    assert result.state == PurchaseState.COMPENSATION_FAILED
    assert result.failure is not None and result.failure.reason == "FULFILLMENT_TIMEOUT"
    [undo] = result.compensations
    assert (undo.action, undo.ok, undo.retrying) == ("cancel order", False, False)
    assert "proposed" in (undo.detail or "") and "confirm it in TEvo" in (undo.detail or "")
    cancel = next(c for c in sim.calls if c["endpoint"] == "cancel")
    assert json.loads(cancel["raw"]) == {"reason": "Other", "reviewer_id": 12345}
    assert sim.ledger()["orders"][0]["state"] == "accepted"


async def test_accepted_order_cancelled_by_both_sides_is_a_done_undo(env: WorkflowEnvironment) -> None:
    """Cancel answers the order (Orders / Show); read cancelled, the undo is done
    (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129637)."""
    sim = TevoSimulator(buyer_cancels=True, other_side_cancels=True)
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-u2"), tq))
    assert result.state == PurchaseState.FAILED
    assert [(c.action, c.ok, c.detail) for c in result.compensations] == [("cancel order", True, "order 819976 canceled")]
    assert sim.ledger()["available"][324466901] == 4  # the seats went back


async def test_poll_does_not_take_an_order_the_buyer_side_cancelled_as_fulfilled(env: WorkflowEnvironment) -> None:
    """`buyer_state` is the order's status from the buyer's side
    (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129639): seller "accepted" with
    buyer "cancelled" is no fulfilled order."""
    sim = TevoSimulator(buyer_cancels=True, other_side_cancels=True)
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-u3"), tq))
    assert result.state != PurchaseState.FULFILLED


async def test_pending_with_buyer_accepted_is_still_pending() -> None:
    """The create example answers state "pending" with buyer_state "accepted"
    (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129639): still waiting."""
    sim = TevoSimulator(outcome="never")
    activities = activities_for(sim)
    order_id = await placed_order(sim, activities)
    with pytest.raises(ApplicationError) as waiting:
        await ActivityEnvironment().run(activities.order_state, str(order_id))
    assert waiting.value.type == "ORDER_PENDING" and "buyer: accepted" in waiting.value.message
    await activities.aclose()


async def test_undo_of_an_ended_order_does_nothing() -> None:
    """A rejected order is final: nothing to reject or cancel (a retried undo finds its own work done)."""
    sim = TevoSimulator(outcome="never")
    activities = activities_for(sim)
    order_id = await placed_order(sim, activities)
    first = await ActivityEnvironment().run(activities.cancel_order, str(order_id))
    again = await ActivityEnvironment().run(activities.cancel_order, str(order_id))
    assert (first.status, again.status) == ("rejected", "already rejected")
    assert endpoints(sim).count("reject") == 1 and "cancel" not in endpoints(sim)
    await activities.aclose()


async def test_undo_without_a_reviewer_refuses_to_send_anything() -> None:
    """`reviewer_id` is required by Orders / Reject and Cancel (a user of the brokerage,
    https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108): no meaningless 0."""
    sim = TevoSimulator(outcome="never")
    activities = activities_for(sim)
    order_id = await placed_order(sim, activities)
    unconfigured = activities_for(sim, reviewer_id=0)
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(unconfigured.cancel_order, str(order_id))
    assert refused.value.type == "PROVIDER_NOT_CONFIGURED" and refused.value.non_retryable
    assert "reject" not in endpoints(sim) and "cancel" not in endpoints(sim)
    assert "BOXOFFICE_TEVO_REVIEWER_ID" in missing_settings(TevoSettings(reviewer_id=0))
    await activities.aclose()
    await unconfigured.aclose()


@pytest.mark.parametrize(
    ("action", "body", "status"),
    [
        ("reject", {"reason": "Other"}, 400),  # no reviewer_id
        ("reject", {"reason": "Changed my mind", "reviewer_id": 12345}, 400),  # not in the enum
        ("reject", {"reason": "Other", "reviewer_id": "12345"}, 400),  # not an integer
        ("reject", {"reason": "Other", "reviewer_id": 0}, 422),  # no user of the brokerage
        ("cancel", {"reason": "Other", "reviewer_id": 12345}, 422),  # a pending order is rejected, not cancelled
    ],
)
async def test_strict_simulator_refuses_what_the_docs_refuse(action: str, body: dict[str, Any], status: int) -> None:
    """Orders / Reject (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108) and
    Orders / Cancel (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/4129637): `reason`
    from the enum and `reviewer_id` (integer) required; reject a pending order, cancel an accepted one."""
    sim = TevoSimulator(outcome="never")
    activities = activities_for(sim)
    order_id = await placed_order(sim, activities)
    with pytest.raises(ApplicationError) as refused:
        await activities._call("POST", f"/v9/orders/{order_id}/{action}", json_body=body)
    assert refused.value.details[0]["status"] == status
    assert sim.orders[order_id].state == "pending"
    await activities.aclose()


async def test_strict_simulator_refuses_rejecting_an_accepted_order() -> None:
    """Reject applies to "an order ... in the pending state" (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108)."""
    sim = TevoSimulator()
    activities = activities_for(sim)
    order_id = await placed_order(sim, activities)
    sim.orders[order_id].state = "accepted"
    with pytest.raises(ApplicationError) as refused:
        await activities._call("POST", f"/v9/orders/{order_id}/reject", json_body={"reason": "Other", "reviewer_id": 12345})
    assert refused.value.details[0]["status"] == 422
    await activities.aclose()
