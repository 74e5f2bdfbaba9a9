"""A workflow reset or a second run of the same purchase starts again at step 1 while the provider
may hold the earlier run's order. Where the provider cannot name it (Atom answers a reused
clientRequestId with DUPLICATE_CLIENT_REQUEST_ID and no order, https://partner-docs-95q.pages.dev/guides/ordering,
"The clientRequestId Rule"; Onebox takes no idempotency key and shows only confirmed orders by code,
its orders API), the run reads what the earlier run recorded (activities/runs.py) and carries on with
that order. Resets and re-runs need the dev server (the time-skipping server has no visibility)."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDReusePolicy
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from simulators.onebox import OneboxSimulator
from tests.conftest import atom_request, atom_worker, onebox_request, onebox_worker, wait_for_state
from workers.client import parse_request, purchase_outcome, start_purchase
from workflows.models import PurchaseState, PurchaseStatus
from workflows.onebox import earlier_basket
from workflows.purchase import PurchaseWorkflow

LOGIN = {"identity_value": "moviefan@example.com", "password": "userpassword123"}


async def reset(client: Client, handle: WorkflowHandle[Any, Any], before_activity: str | None = None) -> WorkflowHandle[Any, Any]:
    """Resets the purchase's latest run to its first workflow task, or to the task that scheduled
    `before_activity`, so the new run does that step again; returns the new run's handle."""
    events = [e async for e in handle.fetch_history_events()]
    if before_activity is None:
        point = next(e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED)
    else:
        scheduled = scheduled_event(events, before_activity)
        point = max(
            e.event_id for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED and e.event_id < scheduled
        )
    return await reset_to(client, handle, point)


def scheduled_event(events: list[Any], activity: str) -> int:
    """The id of the event that first scheduled `activity` (a regular activity) in a history."""
    return next(
        e.event_id
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and e.activity_task_scheduled_event_attributes.activity_type.name == activity
    )


async def reset_to(client: Client, handle: WorkflowHandle[Any, Any], event_id: int) -> WorkflowHandle[Any, Any]:
    """Resets the purchase's latest run to the workflow task completed at `event_id`, as an operator
    does; returns the new run's handle."""
    run_id = (await handle.describe()).run_id
    answer = await client.workflow_service.reset_workflow_execution(
        ResetWorkflowExecutionRequest(
            namespace=client.namespace,
            reason="operator re-runs the purchase",
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=run_id),
            workflow_task_finish_event_id=event_id,
            request_id=str(uuid.uuid4()),
        )
    )
    return client.get_workflow_handle(handle.id, run_id=answer.run_id)


async def rerun(client: Client, request: dict[str, Any], task_queue: str) -> WorkflowHandle[Any, Any]:
    """A second run under the id of an ended purchase: what a caller gets from Temporal's default
    reuse policy (ALLOW_DUPLICATE), e.g. `temporal workflow start` without --id-reuse-policy."""
    return await client.start_workflow(
        PurchaseWorkflow.run,
        parse_request(request),
        id=f"purchase-{request['purchase_id']}",
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
    )


def orders(sim: AtomSimulator) -> list[tuple[str, str]]:
    return [(o.order_id, o.status) for o in sim.orders.values()]


async def test_atom_reset_before_the_create_takes_the_earlier_order(dev_env: WorkflowEnvironment) -> None:
    """Reset to the task that ordered: the run before the reset recorded ORD-n, so this run follows
    that order to FULFILLED instead of alerting. That task also ran the lease and the preview (local
    activities, Atom's rate limit held by the worker's share): re-run, the lease meets
    DUPLICATE_CLIENT_REQUEST_ID first, and the create is not sent again."""
    sim, client = AtomSimulator(), dev_env.client
    async with atom_worker(client, sim) as tq:
        handle = await start_purchase(client, atom_request("reset-create", login=LOGIN), tq)
        first = await purchase_outcome(handle)
        assert first.state == PurchaseState.FULFILLED
        second = await purchase_outcome(await reset(client, handle, before_activity="atom.create_order"))
    assert second.state == PurchaseState.FULFILLED, second.failure
    assert second.provider_order_id == first.provider_order_id and second.compensations == []
    assert orders(sim) == [(first.provider_order_id, "fulfilled")]
    endpoints = [c["endpoint"] for c in sim.calls]
    assert (endpoints.count("lease"), endpoints.count("create")) == (2, 1)  # the lease refused, no second create


async def test_atom_rerun_of_an_ended_purchase_takes_the_earlier_order(dev_env: WorkflowEnvironment) -> None:
    """A second run under the same id (ALLOW_DUPLICATE): the lease meets DUPLICATE_CLIENT_REQUEST_ID,
    the earlier run's order is followed with the returning customer's session: no lease, no preview,
    no second order; the result names the same order and tickets."""
    sim, client = AtomSimulator(), dev_env.client
    request = atom_request("rerun-ended", login=LOGIN)
    async with atom_worker(client, sim) as tq:
        first = await purchase_outcome(await start_purchase(client, request, tq))
        assert first.state == PurchaseState.FULFILLED
        before = len(sim.calls)
        second = await purchase_outcome(await rerun(client, request, tq))
    assert second.state == PurchaseState.FULFILLED, second.failure
    assert (second.provider_order_id, second.tickets) == (first.provider_order_id, first.tickets)
    assert orders(sim) == [(first.provider_order_id, "fulfilled")]
    again = [c["endpoint"] for c in sim.calls[before:]]
    assert "preview" not in again and "create" not in again and again.count("lease") == 1


async def test_atom_guest_rerun_takes_the_fulfilled_result_it_cannot_read(dev_env: WorkflowEnvironment) -> None:
    """A guest buyer's re-run gets a new guest account, which cannot read the earlier order (orders
    belong to their account): the earlier run saw it fulfilled, so that result is the purchase's."""
    sim, client = AtomSimulator(), dev_env.client
    request = atom_request("rerun-guest")
    async with atom_worker(client, sim) as tq:
        first = await purchase_outcome(await start_purchase(client, request, tq))
        second = await purchase_outcome(await rerun(client, request, tq))
    assert second.state == PurchaseState.FULFILLED, second.failure
    assert (second.provider_order_id, second.tickets) == (first.provider_order_id, first.tickets)
    assert second.receipt == first.receipt and second.receipt is not None
    assert orders(sim) == [(first.provider_order_id, "fulfilled")]


async def test_onebox_reset_to_the_start_takes_the_confirmed_order(dev_env: WorkflowEnvironment) -> None:
    """Reset to before "create basket" after the earlier run confirmed: the new run reads the
    earlier order code, finds it confirmed and takes it: one basket, one confirmation."""
    sim, client = OneboxSimulator(), dev_env.client
    async with onebox_worker(client, sim) as tq:
        handle = await start_purchase(client, onebox_request("ob-reset"), tq)
        first = await purchase_outcome(handle)
        assert first.state == PurchaseState.FULFILLED
        second = await purchase_outcome(await reset(client, handle))
    assert second.state == PurchaseState.FULFILLED, second.failure
    assert (second.provider_order_id, len(second.tickets)) == (first.provider_order_id, len(first.tickets))
    assert len(sim.baskets) == 1 and sim.confirmations == 1


async def test_onebox_reset_before_the_confirm_confirms_once(dev_env: WorkflowEnvironment) -> None:
    """Manual confirmation; the reset cuts the run short while it waits: the new run continues with
    the earlier basket (its seats stay held), and is confirmed once."""
    sim, client = OneboxSimulator(), dev_env.client
    async with onebox_worker(client, sim) as tq:
        handle = await start_purchase(client, onebox_request("ob-wait", confirmation="manual"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        second = await reset(client, handle)
        await wait_for_state(second, PurchaseState.AWAITING_CONFIRMATION)
        await second.execute_update(PurchaseWorkflow.confirm, {"accepted_total": None})
        result = await purchase_outcome(second)
    assert result.state == PurchaseState.FULFILLED, result.failure
    assert len(sim.baskets) == 1 and sim.confirmations == 1


async def test_onebox_rerun_of_an_ended_purchase_takes_the_confirmed_order(dev_env: WorkflowEnvironment) -> None:
    """A second run under the id of a fulfilled Onebox purchase (issue 26, defect 2: two confirmed
    orders): Onebox takes no key, so the run reads the earlier run's order code and takes that order."""
    sim, client = OneboxSimulator(), dev_env.client
    async with onebox_worker(client, sim) as tq:
        request = onebox_request("ob-rerun")
        first = await purchase_outcome(await start_purchase(client, request, tq))
        assert first.state == PurchaseState.FULFILLED
        second = await purchase_outcome(await rerun(client, request, tq))
    assert second.state == PurchaseState.FULFILLED, second.failure
    assert (second.provider_order_id, len(second.tickets)) == (first.provider_order_id, len(first.tickets))
    assert len(sim.baskets) == 1 and sim.confirmations == 1


async def test_onebox_run_after_a_reset_that_expired_opens_its_own_basket() -> None:
    """Run A was cut short by a reset; run B carried on with A's basket and ended EXPIRED (the basket
    had lapsed; B's compensation released it). A later run must not take A's basket again (it would
    fail HOLD_EXPIRED every time): the newest run with a basket speaks for it."""
    a = PurchaseStatus(
        purchase_id="ob",
        provider="onebox",
        state=PurchaseState.AWAITING_CONFIRMATION,
        step="await confirmation",
        provider_ids={"basket_id": "b-1"},
    )
    b = a.model_copy(update={"state": PurchaseState.EXPIRED, "step": "done"})

    class Flow:
        def __init__(self, runs: list[PurchaseStatus]) -> None:
            self.runs = runs

        async def earlier_runs(self) -> list[PurchaseStatus]:
            return self.runs

    assert await earlier_basket(Flow([b, a])) is None
    assert await earlier_basket(Flow([a])) == a
    fulfilled = b.model_copy(update={"state": PurchaseState.FULFILLED})
    assert await earlier_basket(Flow([fulfilled, a])) == fulfilled
