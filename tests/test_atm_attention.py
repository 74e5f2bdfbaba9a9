"""ATM paid, tickets not (yet) issued (issue 26, item 5): a charged buyer without tickets is an attention
state an operator sees, not a plain FAILED ending. https://www.atmosphere.money/docs/tickets "Developer
flow": "ATM checkout collects payment for paid tickets. ATM issues tickets after payment succeeds." — the
tickets are owed, however late their `tickets.issued` (ATM redrives events: /docs/events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from simulators.atm import AtmSimulator
from tests.conftest import SERVER_STARTUP, atm_request, atm_worker, binary, free_port, wait_for_state
from tests.test_atm import pay, wire
from tests.test_atom_workflow import record
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase
from workers.telemetry import sdk_runtime
from workers.webhooks import temporal_delivery
from workflows.models import AtmEvent, FailureReason, PurchaseState, PurchaseStatus

BUDGET = 600  # BOXOFFICE_ATM_ISSUE_BUDGET_SECONDS' default


@asynccontextmanager
async def paid_without_tickets(env: WorkflowEnvironment, purchase_id: str) -> AsyncIterator[SimpleNamespace]:
    """An ATM purchase the buyer has paid whose `tickets.issued` ATM keeps (answered 503) until
    `issue()` ends the outage and redelivers it."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        delivery = temporal_delivery(env.client, tq)

        async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
            if event.kind == "tickets.issued" and not issued["now"]:
                raise ConnectionError("temporal briefly unreachable")
            return await delivery(workflow_id, event)

        issued = {"now": False}
        wire(sim, deliver)
        handle = await start_purchase(env.client, atm_request(purchase_id), tq)
        hold = (await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)).provider_ids["order_id"]
        await pay(sim, hold)
        await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)

        async def issue() -> None:
            issued["now"] = True
            assert await sim.redeliver() == 0

        yield SimpleNamespace(sim=sim, handle=handle, hold=hold, issue=issue)


async def needs_attention(env: WorkflowEnvironment, handle: Any) -> PurchaseStatus:
    await env.sleep(timedelta(seconds=BUDGET + 10))
    return await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)


async def test_paid_without_tickets_needs_attention_and_late_tickets_fulfil(env: WorkflowEnvironment) -> None:
    async with paid_without_tickets(env, "atm-late-tickets") as paid:
        handle = paid.handle
        status = await needs_attention(env, handle)
        assert status.failure is not None and status.failure.reason == FailureReason.FULFILLMENT_TIMEOUT
        assert f"hold {paid.hold} paid" in status.failure.message
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.RUNNING
        assert description.search_attributes["BoxofficeState"] == ["NEEDS_ATTENTION"]
        # Days on, and a cancel from the Temporal UI meanwhile: still waiting for the tickets, still visible.
        await handle.cancel()
        await env.sleep(timedelta(days=3))
        status = await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await paid.issue()
        result = await purchase_outcome(handle)
        await record(handle, "atm_needs_attention_then_issued")
    assert result.state == PurchaseState.FULFILLED and result.failure is None
    assert [t.booking_id for t in result.tickets] == [f"tkt_{paid.hold}_0", f"tkt_{paid.hold}_1"]
    assert [c["endpoint"] for c in paid.sim.calls] == ["create", "payment status"]  # never released
    history = [e async for e in handle.fetch_history_events()]
    assert len(history) < 100  # days of waiting in a few timers


@pytest.mark.parametrize("how", ["update", "signal"])
async def test_operator_resolves_a_paid_purchase_without_tickets(env: WorkflowEnvironment, how: str) -> None:
    async with paid_without_tickets(env, f"atm-resolve-{how}") as paid:
        handle = paid.handle
        with pytest.raises(WorkflowUpdateFailedError):  # still within the budget: nothing to resolve yet
            await handle.execute_update("resolve", "too early", result_type=PurchaseStatus)
        await needs_attention(env, handle)
        if how == "update":
            status = await handle.execute_update("resolve", "refunded by hand (ticket 4711)", result_type=PurchaseStatus)
            assert status.state == PurchaseState.FAILED
        else:
            await handle.signal("resolve", "refunded by hand (ticket 4711)")
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FAILED and result.tickets == [] and result.compensations == []
    assert result.failure is not None and result.failure.reason == FailureReason.FULFILLMENT_TIMEOUT
    assert "refunded by hand (ticket 4711)" in result.failure.message
    assert [c["endpoint"] for c in paid.sim.calls] == ["create", "payment status"]  # a paid hold is never released


async def test_attention_is_counted_in_a_metric() -> None:
    port = free_port()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP,
        runtime=sdk_runtime(f"127.0.0.1:{port}"),
    )
    try:
        await ensure_search_attributes(env.client)
        async with paid_without_tickets(env, "atm-attention-metric") as paid:
            await needs_attention(env, paid.handle)
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await env.shutdown()
    assert any(
        line.startswith("boxoffice_attention") and 'provider="atm"' in line and 'reason="tickets_not_issued"' in line
        for line in text.splitlines()
    )
