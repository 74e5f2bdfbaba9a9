"""Money safety (issue 12): each test is named for the guarantee it proves, `i<N>` being the item of
README's "Guarantees" section. Time-skipping server unless a real server is needed (reset)."""

from __future__ import annotations

import uuid

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from tests.conftest import atom_request, atom_worker, wait_for_state
from workers import client as purchases
from workers.client import PurchaseConflict, start_or_find_purchase, start_purchase
from workflows.models import PurchaseResult, PurchaseState

LOGIN = {"identity_value": "moviefan@example.com", "password": "userpassword123"}
TWO_RECOMMENDED = [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "quantity": 2}]


async def test_i12_workflow_refuses_an_id_not_derived_from_the_purchase_id(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        # What `temporal workflow start --workflow-id anything` does: no purchase-{purchase_id} id.
        handle = await env.client.start_workflow("PurchaseWorkflow", atom_request("wid-1"), id="my-own-id",
                                                 task_queue=tq, result_type=PurchaseResult)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == "WRONG_WORKFLOW_ID" and "purchase-wid-1" in failed.value.cause.message
    assert sim.calls == []  # nothing was held or ordered


async def test_i6_idempotency_keys_survive_a_workflow_reset(dev_env: WorkflowEnvironment) -> None:
    """A reset re-runs the purchase from its start: the order key must be the first run's, so Atom
    answers the existing order instead of placing a second one on other recommended seats."""
    sim = AtomSimulator()
    client = dev_env.client
    request = atom_request("reset-1", items=TWO_RECOMMENDED, login=LOGIN)
    async with atom_worker(client, sim) as tq:
        handle = await start_purchase(client, request, tq)
        first = await handle.result()
        assert first.state == PurchaseState.FULFILLED
        first_task = next(iter([e async for e in handle.fetch_history_events()
                           if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED])).event_id
        description = await handle.describe()
        reset = await client.workflow_service.reset_workflow_execution(ResetWorkflowExecutionRequest(
            namespace=client.namespace, reason="operator re-runs the purchase",
            workflow_execution=WorkflowExecution(workflow_id=handle.id, run_id=description.run_id),
            workflow_task_finish_event_id=first_task, request_id=str(uuid.uuid4())))
        second = await client.get_workflow_handle(handle.id, run_id=reset.run_id, result_type=PurchaseResult).result()
    assert len(sim.orders) == 1, [o.client_request_id for o in sim.orders.values()]
    assert second.state == PurchaseState.FULFILLED and second.provider_order_id == first.provider_order_id


async def test_i11_same_purchase_id_with_a_different_request_is_refused(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle, started = await start_or_find_purchase(env.client, atom_request("same-1", confirmation="manual"), tq)
        assert started
        await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        # Retried start, same request (another field order, defaults spelt out): the same purchase.
        again, started = await start_or_find_purchase(
            env.client, {**atom_request("same-1", confirmation="manual"), "promotions": []}, tq)
        assert not started and again.id == handle.id
        other = atom_request("same-1", confirmation="manual", items=[
            {"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["B1"]}])
        with pytest.raises(PurchaseConflict, match="same-1.*different request"):
            await start_purchase(env.client, other, tq)
        await purchases.cancel(env.client, "same-1", "test over")
        # After the end too (REJECT_DUPLICATE keeps the id): still a conflict, still no new purchase.
        with pytest.raises(PurchaseConflict):
            await start_purchase(env.client, other, tq)
        found, started = await start_or_find_purchase(env.client, atom_request("same-1", confirmation="manual"), tq)
        assert not started and (await found.result()).state == PurchaseState.CANCELLED
    assert [c["body"]["leaseItems"][0]["seatIds"] for c in sim.calls if c["endpoint"] == "lease"] == [["A1", "A2"]]


async def test_cancel_sent_with_the_start_cancels_before_anything_is_held(env: WorkflowEnvironment) -> None:
    """The update can reach the workflow in its first activation, before `run` has begun."""
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        await start_purchase(env.client, atom_request("early-cancel", confirmation="manual"), tq)
        status = await purchases.cancel(env.client, "early-cancel", "changed my mind")
    assert status.state == PurchaseState.CANCELLED and status.cancel_reason == "changed my mind"
    assert [c["endpoint"] for c in sim.calls if c["endpoint"] in ("lease", "create")] == []
