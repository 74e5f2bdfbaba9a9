"""The reconciliation sweep (issue 21): what each provider holds that no purchase accounts for becomes
an attention item (one per finding, however many sweeps see it), holds of ended purchases are
released on their own, and an operator approves or dismisses. The dev server runs these tests: the
sweep matches items to purchases through visibility, which the time-skipping server lacks."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from simulators import acme as acme_sim
from simulators import tevo as tevo_sim
from simulators.acme import AcmeSimulator
from simulators.faults import Fault
from simulators.tevo import TevoSimulator
from tests.conftest import acme_request, acme_worker, tevo_request, tevo_worker
from workers.client import (
    approve_attention,
    attention_item,
    attention_items,
    dismiss_attention,
    purchase_outcome,
    start_purchase,
)
from workflows.findings import AttentionDecision, FindingKind, SweepRequest, SweepResult
from workflows.findings import attention_workflow_id as item_id
from workflows.models import PurchaseState


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # The simulators' items are seconds old: sweep them instead of leaving them to the next sweep.
    monkeypatch.setenv("BOXOFFICE_SWEEP_SETTLE_SECONDS", "0")


async def sweep(client: Client, tq: str, provider: str, **options: Any) -> SweepResult:
    request = SweepRequest(provider=provider, window_seconds=3600, **options)
    return await client.execute_workflow(
        "SweepWorkflow", request, id=f"sweep-{provider}-{uuid.uuid4()}", task_queue=tq, result_type=SweepResult
    )


async def open_items(client: Client, expected: int, timeout: float = 10) -> list[dict[str, Any]]:
    """The open attention items once visibility shows `expected` of them (it lags a little)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        items = [i for i in await attention_items(client) if i["id"].startswith("attention-")]
        whole = all(i["kind"] and i["order_id"] for i in items)  # attributes listed with the item
        if (len(items) >= expected and whole) or asyncio.get_running_loop().time() > deadline:
            return items
        await asyncio.sleep(0.2)


async def visible(client: Client, query: str, count: int) -> None:
    """Waits until visibility lists `count` workflows for `query` (it lags the workflows a little)."""
    for _ in range(100):
        if len([e async for e in client.list_workflows(query)]) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"visibility never listed {count} for {query}")


async def fulfilled(client: Client, tq: str, request: dict[str, Any]) -> Any:
    handle = await start_purchase(client, request, tq)
    result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED, result
    return result


# -- TEvo: Orders / Index https://ticketevolution.atlassian.net/wiki/pages/viewpage.action?pageId=4751395 --


async def test_tevo_clean_sweep_opens_nothing(dev_env: WorkflowEnvironment) -> None:
    """Orders / Index lists the one order, which its fulfilled purchase (`reference`) accounts for."""
    sim = TevoSimulator()
    async with tevo_worker(dev_env.client, sim) as tq:
        await fulfilled(dev_env.client, tq, tevo_request("tevo-clean"))
        result = await sweep(dev_env.client, tq, "tevo")
    assert (result.totals.seen, result.totals.findings, result.totals.repaired) == (1, 0, 0)
    assert await open_items(dev_env.client, 0, timeout=1) == []


async def test_tevo_orphan_cancelled_and_bad_orders_become_items_an_operator_decides(dev_env: WorkflowEnvironment) -> None:
    """Orders / Index (pageId=4751395) states: an accepted order no purchase names (orphan), a fulfilled
    purchase's order TEvo reads `canceled`, an order in a state the page does not list (a bad answer).
    Approving the orphan's cancel undoes it through Orders / Reject|Cancel (tevo.cancel_order)."""
    sim = TevoSimulator()
    async with tevo_worker(dev_env.client, sim) as tq:
        result = await fulfilled(dev_env.client, tq, tevo_request("tevo-kept"))
        sim.orders[int(result.provider_order_id)].state = "canceled"
        orphan = tevo_sim.seed_order(sim, "tevo-ghost", state="pending")
        weird = tevo_sim.seed_order(sim, None, state="teleported")
        done = await sweep(dev_env.client, tq, "tevo")
        assert (done.totals.seen, done.totals.findings) == (3, 3)
        items = {i["id"]: i for i in await open_items(dev_env.client, 3)}
        orphan_id = item_id("tevo", FindingKind.ORPHAN_ORDER, str(orphan))
        assert set(items) == {
            orphan_id,
            item_id("tevo", FindingKind.BAD_ANSWER, str(weird)),
            item_id("tevo", FindingKind.CANCELLED_AFTER_FULFILMENT, result.provider_order_id),
        }
        assert (
            items[orphan_id]["provider"],
            items[orphan_id]["kind"],
            items[orphan_id]["purchase_id"],
            items[orphan_id]["amount"],
        ) == ("tevo", "orphan_order", "tevo-ghost", "145.48 USD")
        shown = await attention_item(dev_env.client, orphan_id)
        assert (shown.state, shown.proposed_action, shown.times_seen) == ("OPEN", "cancel", 1)

        with pytest.raises(WorkflowUpdateFailedError):  # TEvo orders are undone by cancel, not refund
            await approve_attention(dev_env.client, orphan_id, AttentionDecision(action="refund"))
        approved = await approve_attention(dev_env.client, orphan_id, AttentionDecision(action="cancel", note="ops-1"))
        assert approved.state == "APPROVED" and "rejected" in (approved.outcome or "")
        assert sim.orders[orphan].state == "rejected"
        bad = item_id("tevo", FindingKind.BAD_ANSWER, str(weird))
        dismissed = await dismiss_attention(dev_env.client, bad, AttentionDecision(note="test order of the broker"))
        assert dismissed.state == "DISMISSED"
        with pytest.raises(RPCError, match="completed"):  # answered once: the item has ended
            await dismiss_attention(dev_env.client, bad, AttentionDecision(note="again"))

        # The next sweep: the cancelled orphan is no finding, the dismissed one stays closed.
        again = await sweep(dev_env.client, tq, "tevo")
        assert again.totals.findings == 2  # bad answer (closed: not reopened) and cancelled-after-fulfilment
        remaining = await open_items(dev_env.client, 1)
        assert [i["id"] for i in remaining] == [item_id("tevo", FindingKind.CANCELLED_AFTER_FULFILMENT, result.provider_order_id)]
        assert (await attention_item(dev_env.client, remaining[0]["id"])).times_seen == 2


async def test_tevo_sweep_pages_continue_as_new_and_a_failed_sweep_reruns_without_duplicates(
    dev_env: WorkflowEnvironment,
) -> None:
    """Orders / Index pages 10 per page (pageId=4751395): 25 orphans are 3 pages, one run each
    (continue-as-new). A refused page (403) fails the sweep half-way; the next sweep opens the
    rest and adds an observation to the items the first opened, never a second item."""
    sim = TevoSimulator()
    async with tevo_worker(dev_env.client, sim) as tq:
        orphans = [tevo_sim.seed_order(sim, f"ghost-{n}") for n in range(25)]
        first_page = orphans[:10]
        calls = {"n": 0}
        original = sim.faults.apply

        async def flaky(endpoint: str, handle: Any) -> Any:
            if endpoint == "orders":
                calls["n"] += 1
                if calls["n"] == 1:  # page 1: an outage, retried within the sweep
                    sim.faults.add(Fault(endpoint="orders", status=503))
                if calls["n"] == 3:  # page 2: refused, the sweep fails half-way
                    sim.faults.add(Fault(endpoint="orders", status=403))
            return await original(endpoint, handle)

        sim.faults.apply = flaky  # type: ignore[method-assign]
        with pytest.raises(WorkflowFailureError):
            await sweep(dev_env.client, tq, "tevo", pages_per_run=1)
        assert sorted(int(i["order_id"]) for i in await open_items(dev_env.client, 10)) == first_page
        sim.faults.apply = original  # type: ignore[method-assign]

        handle = await dev_env.client.start_workflow(
            "SweepWorkflow",
            SweepRequest(provider="tevo", window_seconds=3600, pages_per_run=1),
            id="sweep-tevo-rerun",
            task_queue=tq,
            result_type=SweepResult,
        )
        done = await handle.result()
        assert (done.totals.pages, done.totals.runs, done.totals.seen, done.totals.findings) == (3, 3, 25, 25)
        history = [e async for e in handle.fetch_history_events()]
        print(f"last run of 3: {len(history)} history events")
        items = await open_items(dev_env.client, 25)
        assert sorted(int(i["order_id"]) for i in items) == sorted(orphans)
        assert (await attention_item(dev_env.client, item_id("tevo", "orphan_order", str(first_page[0])))).times_seen == 2


async def test_two_overlapping_sweeps_open_each_item_once(dev_env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    async with tevo_worker(dev_env.client, sim) as tq:
        orphans = [tevo_sim.seed_order(sim, f"twice-{n}") for n in range(3)]
        first, second = await asyncio.gather(sweep(dev_env.client, tq, "tevo"), sweep(dev_env.client, tq, "tevo"))
        assert first.totals.findings == second.totals.findings == 3
        items = await open_items(dev_env.client, 3)
        assert sorted(i["id"] for i in items) == sorted(item_id("tevo", "orphan_order", str(o)) for o in orphans)
        for order in orphans:
            assert (await attention_item(dev_env.client, item_id("tevo", "orphan_order", str(order)))).times_seen == 2


# -- ACME: B2C Orders https://developers.acmeticketing.com/support/solutions/articles/33000250659-b2c-orders --


async def test_acme_reservation_of_an_ended_purchase_is_released_and_an_orphan_order_refunded(
    dev_env: WorkflowEnvironment,
) -> None:
    """Orders by event (GET /v2/b2c/orders/event/{eventId}) of the events the purchases named; the
    reservation each purchase recorded (GET|DELETE /v2/b2b/reservations/{id}). A reservation still
    active for a failed purchase is released by the sweep itself (no item); an order whose notes
    name no purchase is an orphan, and its approved refund is `boxoffice orders refund`'s RefundWorkflow."""
    sim = AcmeSimulator()
    async with acme_worker(dev_env.client, sim) as tq:
        await fulfilled(dev_env.client, tq, acme_request("acme-kept"))
        declined = await purchase_outcome(
            await start_purchase(dev_env.client, acme_request("acme-declined", payment_token="tok_declined"), tq)
        )
        assert declined.state == PurchaseState.FAILED
        [reservation] = [r for r in sim.reservations.values() if r["status"] != "used"]
        reservation["status"] = "active"  # its release was lost (a bug, an operator's reset)
        orphan = acme_sim.seed_order(sim, "boxoffice purchase acme-ghost request 1234")
        await visible(dev_env.client, 'BoxofficeProvider = "acme"', 2)  # the sweep lists the purchases

        done = await sweep(dev_env.client, tq, "acme")
        assert (done.totals.findings, done.totals.repaired) == (1, 1)
        assert reservation["status"] == "deleted" and done.repaired == [
            f"hold {reservation['id']}: reservation {reservation['id']} deleted"
        ]
        [item] = await open_items(dev_env.client, 1)
        assert item["id"] == item_id("acme", "orphan_order", orphan) and item["purchase_id"] == "acme-ghost"
        approved = await approve_attention(dev_env.client, item["id"], AttentionDecision(action="refund"))
        assert approved.state == "APPROVED"
        assert sim.orders[orphan]["refundAmount"] == sim.orders[orphan]["totalAmount"]
        refund = await dev_env.client.get_workflow_handle(f"refund-{orphan}").describe()
        assert refund.workflow_type == "RefundWorkflow"

        clean = await sweep(dev_env.client, tq, "acme")
        assert (clean.totals.findings, clean.totals.repaired) == (0, 0)


async def test_sweep_schedules_are_created_once_and_updated(dev_env: WorkflowEnvironment) -> None:
    from workers.client import ensure_schedules

    ids = await ensure_schedules(dev_env.client, "tq-schedules", ["tevo", "acme"], timedelta(minutes=30), timedelta(hours=48))
    await dev_env.client.get_schedule_handle("sweep-tevo").pause(note="by an operator")
    again = await ensure_schedules(dev_env.client, "tq-schedules", ["tevo", "acme"], timedelta(minutes=10), timedelta(hours=24))
    assert ids == again == ["sweep-tevo", "sweep-acme"]
    described = await dev_env.client.get_schedule_handle("sweep-tevo").describe()
    assert described.schedule.spec.intervals[0].every == timedelta(minutes=10)
    assert described.schedule.state.paused  # the operator's pause is kept
    [request] = await dev_env.client.data_converter.decode(described.schedule.action.args, [SweepRequest])  # type: ignore[attr-defined]
    assert request.window_seconds == 24 * 3600


# -- ATM: lexicon tickets.atmosphere.releaseTicketHold (atmosphere.money/.well-known/atproto-lexicon/) --


async def test_atm_paid_hold_of_a_cancelled_purchase_is_a_payment_without_tickets(dev_env: WorkflowEnvironment) -> None:
    """releaseTicketHold answers the hold's status (released | expired | failed | completed): `completed`
    for a purchase that ended CANCELLED is a payment without tickets; a hold still active is released."""
    from simulators.atm import AtmSimulator
    from tests.conftest import atm_request, atm_worker, wait_for_state
    from workers.client import cancel

    sim = AtmSimulator()
    async with atm_worker(dev_env.client, sim) as tq:
        holds = []
        for name in ("atm-paid-late", "atm-left-active", "atm-clean"):
            handle = await start_purchase(dev_env.client, atm_request(name), tq)
            holds.append((await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)).provider_ids["order_id"])
            await cancel(dev_env.client, name, "buyer left")
        sim.holds[holds[0]].status = "completed"  # paid on the checkout page after the cancel, no webhook
        sim.holds[holds[1]].status = "active"  # its release was lost
        await visible(dev_env.client, 'BoxofficeProvider = "atm" AND ExecutionStatus != "Running"', 3)
        done = await sweep(dev_env.client, tq, "atm")
        assert (done.totals.seen, done.totals.findings) == (3, 1)
        assert sim.holds[holds[1]].status == "released"
        [item] = await open_items(dev_env.client, 1)
        assert item["id"] == item_id("atm", FindingKind.PAYMENT_WITHOUT_TICKETS, holds[0])
        assert item["purchase_id"] == "atm-paid-late"
        with pytest.raises(WorkflowUpdateFailedError):  # ATM refunds are made at ATM: settle by hand, then dismiss
            await approve_attention(dev_env.client, item["id"], AttentionDecision(action="refund"))
        assert (
            await dismiss_attention(dev_env.client, item["id"], AttentionDecision(note="refunded at ATM"))
        ).state == "DISMISSED"
