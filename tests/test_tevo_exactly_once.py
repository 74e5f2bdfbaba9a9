"""Ticket Evolution exactly once: the order is looked up by `reference` on every attempt (a reset or
a new run starts at attempt 1), and "not found" right after an unanswered create is no proof.
`reference` is an exact-match filter of Orders / Index
(https://ticketevolution.atlassian.net/wiki/pages/viewpage.action?pageId=4751395)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.tevo import TevoSettings
from simulators.faults import Fault
from simulators.tevo import Order, TevoSimulator
from tests.conftest import tevo_request, tevo_worker
from tests.test_tevo import SECRET, attempt, served
from workers.client import parse_request, purchase_outcome, start_purchase
from workflows.flow import STEP_TIMEOUT
from workflows.models import PurchaseState


def test_settle_window_is_shorter_than_the_step_that_waits_for_it() -> None:
    """Otherwise "order again after settling" never runs: the step times out first."""
    limit = TevoSettings.model_fields["create_settle_seconds"].metadata
    assert TevoSettings().create_settle_seconds < STEP_TIMEOUT.total_seconds()
    assert any(getattr(m, "le", None) is not None and m.le < STEP_TIMEOUT.total_seconds() for m in limit)


async def test_first_attempt_finds_an_order_an_earlier_run_placed() -> None:
    """A workflow reset or a new run of the purchase starts at attempt 1: it looks the order up
    by reference (https://ticketevolution.atlassian.net/wiki/pages/viewpage.action?pageId=4751395)
    before ordering, so no second order is placed."""
    sim = TevoSimulator(token="tok", secret=SECRET)
    sim.clients[1507094] = {"id": 1507094}
    sim.orders[700] = Order(
        id=700, reference="tevo-rerun", group=324466901, quantity=2, price=Decimal("145.48"), body={}, seats=["9", "10"]
    )
    async with served(sim) as activities:
        order = await ActivityEnvironment().run(activities.create_order, parse_request(tevo_request("tevo-rerun")), "1507094")
    assert order.order_id == "700" and list(sim.orders) == [700]
    assert "create" not in [c["endpoint"] for c in sim.calls]


async def test_rerun_of_a_purchase_keeps_its_one_order(env: WorkflowEnvironment) -> None:
    """The same purchase run again (its earlier order already at TEvo): one accepted order."""
    sim = TevoSimulator()
    sim.clients[1] = {"id": 1, "email_addresses": [{"address": "guest@example.com"}]}
    sim.orders[700] = Order(
        id=700, reference="tevo-again", group=324466901, quantity=2, price=Decimal("145.48"), body={}, seats=["9", "10"]
    )
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-again"), tq))
    assert result.state == PurchaseState.FULFILLED and result.provider_order_id == "700"
    assert list(sim.orders) == [700]


async def test_one_503_on_create_ends_fulfilled_with_one_order(env: WorkflowEnvironment) -> None:
    """A 503 answered before anything was placed: the retry waits `create_settle_seconds` (below
    the step's 2 minutes) for the search, then orders again."""
    sim = TevoSimulator()
    sim.faults.add(Fault(endpoint="create", status=503))
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-503"), tq))
    assert result.state == PurchaseState.FULFILLED
    assert len(sim.orders) == 1 and [c["endpoint"] for c in sim.calls].count("create") == 2


async def test_lost_create_answer_with_a_lagging_search_makes_one_order(env: WorkflowEnvironment) -> None:
    """The order is placed, the answer lost, and the search leaves it out twice: not found is not
    proof inside the settle window; the retry finds it."""
    sim = TevoSimulator(search_misses=2)
    sim.faults.add(Fault(endpoint="create", status=504, lost=True))
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-lag"), tq))
    assert result.state == PurchaseState.FULFILLED
    assert len(sim.orders) == 1 and [c["endpoint"] for c in sim.calls].count("create") == 1


async def test_order_slower_to_reach_the_search_than_the_step_is_kept(env: WorkflowEnvironment) -> None:
    """The create step ends unanswered (its order placed, every search of the step failing), and
    the order reaches the search only after: the read-back keeps reading inside the settle window
    instead of taking "not found" as proof. One order, kept, purchase FULFILLED."""
    sim = TevoSimulator(search_misses=2)
    sim.faults.add(Fault(endpoint="orders", status=None))  # the first attempt's search answers
    sim.faults.add(Fault(endpoint="create", status=504, lost=True))
    sim.faults.add(Fault(endpoint="orders", status=503, times=12))  # the step's retries, until its 2 minutes end
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-slow"), tq))
    assert result.state == PurchaseState.FULFILLED, result.failure
    [order] = sim.orders
    assert result.provider_order_id == str(order)
    assert [c["endpoint"] for c in sim.calls].count("create") == 1


async def test_read_back_not_found_is_proof_only_after_the_settle_window() -> None:
    sim = TevoSimulator(token="tok", secret=SECRET)
    async with served(sim) as activities:
        with pytest.raises(ApplicationError) as early:
            await attempt(3, 59).run(activities.find_order, "tevo-none")
        assert early.value.type == "ORDER_PENDING" and not early.value.non_retryable
        assert await attempt(4, 60).run(activities.find_order, "tevo-none") is None
