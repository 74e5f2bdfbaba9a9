"""PurchaseWorkflow for Atom against the Atom simulator, on the time-skipping test server."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    Interceptor,
    StartActivityInput,
    UnsandboxedWorkflowRunner,
    Worker,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from activities.atom import AtomActivities
from simulators.atom import AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_settings, atom_worker, purchase_duration, wait_for_state
from workers import client as purchases
from workers.client import purchase_outcome, start_purchase
from workers.worker import WORKFLOWS, provider_task_queue
from workflows.models import (
    CancelRequest,
    ConfirmRequest,
    PurchaseState,
    PurchaseStatus,
)

HISTORIES = Path(__file__).parent / "histories"


async def record(handle, name: str) -> None:
    """BOXOFFICE_RECORD_HISTORIES=1 pytest tests/test_atom_workflow.py refreshes the replay fixtures."""
    if os.environ.get("BOXOFFICE_RECORD_HISTORIES"):
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text((await handle.fetch_history()).to_json())


def create_calls(sim: AtomSimulator) -> list[dict]:
    return [c for c in sim.calls if c["endpoint"] == "create"]


async def test_auto_purchase_returns_tickets(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("auto-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "atom_auto_fulfilled")
    assert result.state == PurchaseState.FULFILLED
    assert result.provider_order_id == "ORD-3"
    assert result.receipt is not None and result.receipt.total == Decimal("36.18")
    assert result.receipt.currency == "USD"
    assert [(t.seat, t.barcode) for t in result.tickets] == [
        ("A1", "VNDR-QR-A1-ENC-ORD-3"),
        ("A2", "VNDR-QR-A2-ENC-ORD-3"),
    ]
    assert result.failure is None and result.compensations == []
    # The lease, preview and create carried one clientRequestId.
    keys = {c["body"]["clientRequestId"] for c in sim.calls if c["endpoint"] == "lease"}
    keys |= {c["body"]["orderParameters"]["clientRequestId"] for c in sim.calls if c["endpoint"] in ("preview", "create")}
    assert len(keys) == 1
    assert sim.ledger()["sold"] == ["A1", "A2"]


async def test_search_attributes_follow_the_purchase(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("sa-1"), tq)
        await purchase_outcome(handle)
    attributes = (await handle.describe()).search_attributes
    assert attributes["BoxofficeProvider"] == ["atom"]
    assert attributes["BoxofficeState"] == ["FULFILLED"]
    assert attributes["BoxofficeProviderOrderId"] == ["ORD-3"]


async def test_quantity_takes_recommended_seats(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    items = [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "quantity": 3}]
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("qty-1", items=items), tq))
    assert result.state == PurchaseState.FULFILLED
    # A3 is occupied in the simulator: the recommendation skips it.
    assert [t.seat for t in result.tickets] == ["A1", "A2", "A4"]


async def test_manual_purchase_waits_for_confirm(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("manual-1", confirmation="manual"), tq)
        status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        assert status.receipt is not None and status.receipt.total == Decimal("36.18")
        assert status.hold_expires_at is not None
        assert create_calls(sim) == []
        # The buyer accepted another price: refused, nothing placed.
        with pytest.raises(WorkflowUpdateFailedError):
            await purchases.confirm(env.client, "manual-1", ConfirmRequest(accepted_total=Decimal("30.00")))
        after = await purchases.confirm(env.client, "manual-1", ConfirmRequest(accepted_total=Decimal("36.18")))
        assert after.state in (PurchaseState.AWAITING_FULFILLMENT, PurchaseState.FULFILLED)
        result = await purchase_outcome(handle)
        await record(handle, "atom_manual_fulfilled")
    assert result.state == PurchaseState.FULFILLED
    assert len(create_calls(sim)) == 1


async def test_no_confirm_before_lease_expiry_expires(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("expire-1", confirmation="manual"), tq)
        result = await purchase_outcome(handle)  # the 10-minute lease passes in skipped time
        waited = await purchase_duration(handle)
        await record(handle, "atom_manual_expired")
    assert result.state == PurchaseState.EXPIRED
    assert result.failure is not None and result.failure.reason == "HOLD_EXPIRED"
    assert create_calls(sim) == []
    # The confirmation window closed the 30 s margin before the 600 s lease ran out.
    assert timedelta(seconds=560) <= waited < timedelta(seconds=600)
    # The simulator lets the lapsed lease go: the seats can be leased again.
    sim.clock = lambda: float("inf")
    assert sim.ledger()["leases"] == [] and sim.ledger()["sold"] == []


async def test_taken_seat_fails_with_nothing_to_compensate(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    items = [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["A2", "A3"]}]
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("taken-1", items=items), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "SEAT_UNAVAILABLE"
    assert result.failure.provider_code == "SEAT_UNAVAILABLE"
    assert result.failure.provider_status == "409"
    assert result.compensations == []
    assert sim.ledger()["orders"] == []
    # Business 4xx is not retried.
    assert len([c for c in sim.calls if c["endpoint"] == "lease"]) == 1


async def test_unknown_offer_fails_before_anything_is_held(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    items = [{"product_id": "PROD-VIP-9", "offer_id": "OFFER-STD-001", "seat_ids": ["A1"]}]
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("offer-1", items=items), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "OFFER_UNAVAILABLE"
    assert [c["endpoint"] for c in sim.calls] == ["refresh"]


async def test_fulfilment_that_never_completes_is_cancelled(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfilment="never")
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("never-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "atom_fulfilment_timeout")
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "FULFILLMENT_TIMEOUT"
    assert result.provider_order_id == "ORD-3"
    # Polled every 2 s for 10 s (t = 0, 2, 4, 6, 8, 10), then the summary once, then DELETE.
    assert len([c for c in sim.calls if c["endpoint"] == "status"]) == 6
    assert [c["endpoint"] for c in sim.calls][-2:] == ["summary", "cancel"]
    assert [o["status"] for o in sim.ledger()["orders"]] == ["cancelled"]
    assert sim.ledger()["sold"] == []
    assert [(c.action, c.ok) for c in result.compensations] == [("cancel order", True)]


async def test_failed_fulfilment_reports_provider_reason(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfilment="fail")
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("fail-1"), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "FULFILLMENT_FAILED"
    assert result.failure.provider_code == "VENDOR_REJECTED"
    assert [(c.action, c.ok) for c in result.compensations] == [("cancel order", True)]


async def test_cancel_while_awaiting_confirmation_places_nothing(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("cancel-1", confirmation="manual"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        status = await purchases.cancel(env.client, "cancel-1", "buyer changed their mind")
        result = await purchase_outcome(handle)
    assert status.state == PurchaseState.CANCELLED
    assert result.state == PurchaseState.CANCELLED
    assert result.failure is not None and result.failure.message == "buyer changed their mind"
    assert create_calls(sim) == []
    assert result.compensations == []


async def test_cancel_after_create_cancels_the_order(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfilment="never")
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("cancel-2"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)
        status = await purchases.cancel(env.client, "cancel-2", "buyer changed their mind")
        result = await purchase_outcome(handle)
        await record(handle, "atom_cancelled_after_create")
    assert status.state == PurchaseState.CANCELLED
    assert result.state == PurchaseState.CANCELLED
    assert [(c.action, c.ok) for c in result.compensations] == [("cancel order", True)]
    assert sim.ledger()["orders"][0]["status"] == "cancelled"
    assert sim.ledger()["orders"][0]["refund"] == 36.18


async def test_cancel_signal_while_create_is_in_flight_still_cancels(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfilment="never")
    original = sim.create

    async def slow_create(request, body):
        await asyncio.sleep(1.0)
        return await original(request, body)

    sim.create = slow_create  # type: ignore[method-assign]
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("cancel-3"), tq)
        await wait_for_state(handle, PurchaseState.COMMITTING)
        await handle.signal("cancel", CancelRequest(reason="changed mind mid-commit"))
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.CANCELLED
    # The order placed while the cancel arrived is not leaked.
    assert [o["status"] for o in sim.ledger()["orders"]] == ["cancelled"]
    assert [(c.action, c.ok) for c in result.compensations] == [("cancel order", True)]


async def test_temporal_cancellation_compensates(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfilment="never")
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("cancel-4"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await purchase_outcome(handle)
    assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
    assert [o["status"] for o in sim.ledger()["orders"]] == ["cancelled"]


async def test_provider_5xx_and_429_are_retried_into_one_order(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=503, times=2))
    sim.faults.add(Fault(endpoint="create", status=429, retry_after=3))
    async with atom_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, atom_request("retry-1"), tq))
    assert result.state == PurchaseState.FULFILLED
    calls = create_calls(sim)
    assert len(calls) == 4
    assert len({c["body"]["orderParameters"]["clientRequestId"] for c in calls}) == 1
    assert len(sim.ledger()["orders"]) == 1


async def test_duplicate_start_is_the_same_purchase(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        first = await start_purchase(env.client, atom_request("dup-1", confirmation="manual"), tq)
        second = await start_purchase(env.client, atom_request("dup-1", confirmation="manual"), tq)
        assert second.result_run_id == first.result_run_id
        await wait_for_state(first, PurchaseState.AWAITING_CONFIRMATION)
        await purchases.confirm(env.client, "dup-1", ConfirmRequest())
        result = await purchase_outcome(first)
        # Started again after it ended: still the same purchase, not a second order.
        third = await start_purchase(env.client, atom_request("dup-1", confirmation="manual"), tq)
        assert (await purchase_outcome(third)) == result
    assert len(sim.ledger()["orders"]) == 1


async def test_invalid_input_from_another_language_fails_fast(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await env.client.start_workflow(
            "PurchaseWorkflow", {"provider": "atom", "purchase_id": "bad-1"}, id="purchase-bad-1", task_queue=tq
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(purchase_outcome(handle), 10)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "INVALID_REQUEST"
    assert "atom.showtime_id: Field required" in cause.message
    assert sim.calls == []


async def test_status_query_shows_progress(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("status-1", confirmation="manual"), tq)
        status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        await purchases.cancel(env.client, "status-1", "done looking")
    assert isinstance(status, PurchaseStatus)
    assert status.step == "await confirmation"
    assert status.steps_done == ["start", "refresh checkout", "account", "lease seats", "preview order"]
    assert status.provider_ids["account_id"].startswith("GUEST-")
    assert status.event is not None and status.event.title == "The Last Frontier"


async def test_reads_and_rerun_safe_writes_of_an_unlimited_provider_run_as_local_activities(
    env: WorkflowEnvironment,
) -> None:
    sim = AtomSimulator()
    async with atom_worker(env.client, sim, activities_per_second=None) as tq:
        handle = await start_purchase(env.client, atom_request("local-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "atom_local_writes")
    assert result.state == PurchaseState.FULFILLED and len(sim.ledger()["orders"]) == 1
    events = [e async for e in handle.fetch_history_events()]
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # The call that takes money stays a regular activity, and so does the guest account (a repeat
    # makes another account: only a regular activity's repeats are counted retries). The lease
    # (keyed by clientRequestId) runs with the reads, the first fulfilment poll in the task after
    # the order. Not fulfilled yet there, the rest poll as a regular activity after a timer
    # (skipped by this test server).
    assert scheduled == ["atom.create_guest_account", "atom.create_order", "atom.order_status"]
    assert [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in events
        if e.HasField("timer_started_event_attributes")
    ] == [2]
    completed = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]
    assert len(completed) == 5 and len(events) < 52
    assert [c["endpoint"] for c in sim.calls].count("status") == 2


async def test_a_guest_account_whose_answer_was_lost_is_named(env: WorkflowEnvironment) -> None:
    """The guest account call (partner-docs-95q.pages.dev/api/ordering: email, firstName, lastName,
    attributionMap; no password, key, lookup or delete) is made, its answer lost: the retry makes a
    second account, which orders. The first, holding the buyer's name and email, is named."""
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="guest", lost=True, drop=True))
    async with atom_worker(env.client, sim, activities_per_second=None) as tq:
        handle = await start_purchase(env.client, atom_request("guest-lost"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "atom_guest_account_retried")
        status = await handle.query("status", result_type=PurchaseStatus)
    assert result.state == PurchaseState.FULFILLED
    [orphan] = sim.orphan_guests()
    assert orphan != status.provider_ids["account_id"]
    assert status.provider_ids["unknown_guest_account_1"] == (
        "guest account attempt 1: outcome unknown; an account it made holds the buyer's name and email at Atom"
    )


async def test_an_order_done_at_once_takes_two_workflow_tasks(env: WorkflowEnvironment) -> None:
    sim = AtomSimulator(fulfil_after_polls=0)
    async with atom_worker(env.client, sim, activities_per_second=None) as tq:
        handle = await start_purchase(env.client, atom_request("local-2"), tq)
        assert (await purchase_outcome(handle)).state == PurchaseState.FULFILLED
    events = [e async for e in handle.fetch_history_events()]
    assert [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.HasField("activity_task_scheduled_event_attributes")
    ] == ["atom.create_guest_account", "atom.create_order"]
    # Start, account made, order placed.
    assert len([e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED]) == 3


class CrashBeforeCreate(Interceptor):
    """Fails the workflow task that would schedule the order, once: as a worker dying after the
    first task's local activities ran but before the task completed. The next attempt replays
    from the start and runs them again."""

    crashed = False

    def workflow_interceptor_class(self, input: WorkflowInterceptorClassInput) -> type[WorkflowInboundInterceptor]:
        class Inbound(WorkflowInboundInterceptor):
            def init(self, outbound: WorkflowOutboundInterceptor) -> None:
                class Outbound(WorkflowOutboundInterceptor):
                    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
                        if input.activity == "atom.create_order" and not CrashBeforeCreate.crashed:
                            CrashBeforeCreate.crashed = True
                            raise RuntimeError("worker died")
                        return super().start_activity(input)

                super().init(Outbound(outbound))

        return Inbound


@pytest.mark.parametrize("login", [None, {"identity_value": "moviefan@example.com", "password": "userpassword123"}])
async def test_a_rerun_first_task_holds_and_orders_once(env: WorkflowEnvironment, login: Any) -> None:
    """The lease (and a sign-in) run again when the workflow task holding them is lost: the lease
    repeats its clientRequestId (Atom answers a repeat as the same lease) and one order is placed.
    A guest account is a regular activity, recorded once made: it is not made again."""
    sim = AtomSimulator()
    sim.api_key = "test-atom-key"
    atom = AtomActivities(atom_settings(activities_per_second=None), transport=httpx.ASGITransport(app=sim.app))
    CrashBeforeCreate.crashed = False
    async with Worker(
        env.client,
        task_queue="crash",
        workflows=WORKFLOWS,
        activities=atom.all(),
        interceptors=[CrashBeforeCreate()],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await start_purchase(env.client, atom_request("rerun-1", login=login), "crash")
        result = await asyncio.wait_for(purchase_outcome(handle), 30)
        if login is None:
            await record(handle, "atom_first_task_rerun")
    await atom.aclose()
    assert CrashBeforeCreate.crashed
    assert result.state == PurchaseState.FULFILLED, result.failure
    leases = [c for c in sim.calls if c["endpoint"] == "lease"]
    accounts = [c for c in sim.calls if c["endpoint"] in ("guest", "authenticate")]
    # The lost task's calls, and the replay's; one guest account.
    assert len(leases) == 2 and len(accounts) == (1 if login is None else 2)
    assert len({c["body"]["clientRequestId"] for c in leases}) == 1
    assert len(sim.ledger()["orders"]) == 1


async def test_unfulfilled_purchase_fails_its_workflow_and_names_its_steps(env: WorkflowEnvironment) -> None:
    """The UI's list tells outcomes apart: only a fulfilled purchase completes (green); an expired one
    fails (red) with its reason as the failure type and its result as details. Activities and the
    timer are labelled with the step they serve."""
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        expired = await start_purchase(env.client, atom_request("outcome-1", confirmation="manual"), tq)
        result = await purchase_outcome(expired)
        fulfilled = await start_purchase(
            env.client,
            atom_request("outcome-2", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["C1"]}]),
            tq,
        )
        assert (await purchase_outcome(fulfilled)).state == PurchaseState.FULFILLED
    assert result.state == PurchaseState.EXPIRED
    assert (await expired.describe()).status == WorkflowExecutionStatus.FAILED
    assert (await fulfilled.describe()).status == WorkflowExecutionStatus.COMPLETED
    with pytest.raises(WorkflowFailureError) as failed:
        await expired.result()
    assert failed.value.cause.type == "HOLD_EXPIRED"  # type: ignore[attr-defined]
    summaries = set()
    async for event in expired.fetch_history_events():
        if event.user_metadata.HasField("summary"):
            summaries.add(json.loads(event.user_metadata.summary.data))
    assert {"lease seats", "account", "hold expiry"} <= summaries


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
async def test_a_purchase_evicted_mid_order_does_not_compensate(env: WorkflowEnvironment) -> None:
    """A stopping worker evicts its purchases from its cache (GeneratorExit in workflow code). One
    waiting for its order must not start compensating: nothing can run then ("coroutine ignored
    GeneratorExit"), and the next worker's replay carries the purchase on. The workflows' worker also
    takes activity tasks here (as `serving` did before it gave them a worker of their own): the shape
    in which eviction reached the saga with the event loop still running."""
    sim = AtomSimulator()
    sim.api_key = "test-atom-key"
    sim.faults.add(Fault(endpoint="create", status=None, delay=1.0))
    atom = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=sim.app))
    async with (
        Worker(env.client, task_queue="evicted", workflows=WORKFLOWS, activities=atom.all()),
        Worker(env.client, task_queue=provider_task_queue("evicted", "atom"), activities=atom.all()),
    ):
        await start_purchase(env.client, atom_request("evicted-1"), "evicted")
        while not create_calls(sim):
            await asyncio.sleep(0.01)
    await atom.aclose()
    gc.collect()  # an exception a coroutine ignored is reported when it is collected
    assert [c["endpoint"] for c in sim.calls if c["endpoint"] in ("cancel", "release")] == []
