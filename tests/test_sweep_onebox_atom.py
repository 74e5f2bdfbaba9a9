"""The reconciliation sweep of Onebox (its orders listed by purchase date) and Atom (no listing: the
orders its purchases recorded, read one by one). Dev server: the sweep finds purchases through visibility."""

from __future__ import annotations

import re
import time

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from simulators import onebox as onebox_sim
from simulators.atom import AtomSimulator
from simulators.faults import Fault
from simulators.onebox import OneboxSimulator
from tests.conftest import atom_request, atom_worker, onebox_request, onebox_worker
from tests.test_sweep import fulfilled, open_items, sweep, visible
from workers.client import approve_attention, attention_item, dismiss_attention, purchase_outcome, start_purchase
from workflows.findings import AttentionDecision, FindingKind, SweepRequest, SweepResult
from workflows.findings import attention_workflow_id as item_id
from workflows.models import PurchaseState, PurchaseStatus


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_SWEEP_SETTLE_SECONDS", "0")


# -- Onebox: developer.oneboxtds.com/docs/api-orders-mgmt/tutorials/get-purchases-by-time-range --


async def test_onebox_clean_sweep_opens_nothing(dev_env: WorkflowEnvironment) -> None:
    """The orders list by purchase date (type=PURCHASE) holds the one order, its purchase FULFILLED;
    no REFUND order, no basket left: nothing is opened. The dates go as 2021-03-08T00:00:00Z."""
    sim = OneboxSimulator()
    async with onebox_worker(dev_env.client, sim) as tq:
        await fulfilled(dev_env.client, tq, onebox_request("ob-clean"))
        await visible(dev_env.client, 'BoxofficeProvider = "onebox" AND ExecutionStatus != "Running"', 1)
        result = await sweep(dev_env.client, tq, "onebox")
    assert (result.totals.seen, result.totals.findings, result.totals.repaired) == (1, 0, 0)
    assert await open_items(dev_env.client, 0, timeout=1) == []
    listed = [c for c in sim.calls if c["endpoint"] == "orders"]
    assert [dict(c["query"])["type"] for c in listed] == ["PURCHASE", "REFUND"]
    dates = [dict(c["query"])[name] for c in listed for name in ("purchase_date_from", "purchase_date_to")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", date) for date in dates), dates


async def test_onebox_orphan_refunded_order_and_left_basket(dev_env: WorkflowEnvironment) -> None:
    """Orders by purchase date (get-purchases-by-time-range), refunds by purchase date
    (get-refunds-by-time-range), refund (refund-order-items: POST /orders/{code}/refund, items[].id):
    an order no purchase names is an orphan whose approved refund refunds its items once; a FULFILLED
    purchase's order refunded at Onebox is a finding; a failed purchase's basket holding seats again is
    released by the sweep (repaired, no item)."""
    sim = OneboxSimulator()
    async with onebox_worker(dev_env.client, sim) as tq:
        kept = await fulfilled(dev_env.client, tq, onebox_request("ob-kept"))
        onebox_sim.refund_at_onebox(sim, kept.provider_order_id)
        handle = await start_purchase(dev_env.client, onebox_request("ob-failed", seat_ids=[7, 8]), tq)
        assert (await purchase_outcome(handle)).state == PurchaseState.FAILED  # seat 7 is sold
        basket_id = (await handle.query("status", result_type=PurchaseStatus)).provider_ids["basket_id"]
        onebox_sim.hold_again(sim, basket_id, [30])  # its release was lost
        orphan = onebox_sim.seed_order(sim, [20, 21])
        await visible(dev_env.client, 'BoxofficeProvider = "onebox" AND ExecutionStatus != "Running"', 2)

        started = time.perf_counter()
        done = await sweep(dev_env.client, tq, "onebox")
        print(f"onebox sweep of {done.totals.seen} items: {time.perf_counter() - started:.2f}s")
        assert (done.totals.seen, done.totals.findings, done.totals.repaired) == (4, 2, 1)
        assert sim.seats[30] == "free" and done.repaired and basket_id in done.repaired[0]
        items = {i["id"]: i for i in await open_items(dev_env.client, 2)}
        orphan_id = item_id("onebox", FindingKind.ORPHAN_ORDER, orphan)
        refunded_id = item_id("onebox", FindingKind.CANCELLED_AFTER_FULFILMENT, kept.provider_order_id)
        assert set(items) == {orphan_id, refunded_id}
        assert (items[orphan_id]["amount"], items[refunded_id]["purchase_id"]) == ("53.0 EUR", "ob-kept")
        assert (await attention_item(dev_env.client, orphan_id)).proposed_action == "refund"

        with pytest.raises(WorkflowUpdateFailedError):  # a confirmed Onebox order is refunded, not cancelled
            await approve_attention(dev_env.client, orphan_id, AttentionDecision(action="cancel"))
        approved = await approve_attention(dev_env.client, orphan_id, AttentionDecision(action="refund"))
        assert approved.state == "APPROVED" and "refunded 2 items" in (approved.outcome or "")
        refund_calls = [c for c in sim.calls if c["endpoint"] == "refund"]
        assert [c["body"]["items"] for c in refund_calls] == [
            [{"id": i.id} for i in sim.baskets[next(b for b, v in sim.baskets.items() if v.code == orphan)].items]
        ]
        assert sim.seats[20] == sim.seats[21] == "free"
        await dismiss_attention(dev_env.client, refunded_id, AttentionDecision(note="buyer told"))

        again = await sweep(dev_env.client, tq, "onebox")
        # the refunded orphan is no finding; the refund at Onebox is seen again (its item stays dismissed)
        assert (again.totals.findings, again.totals.repaired) == (1, 0)
        assert await open_items(dev_env.client, 0, timeout=1) == []


async def test_onebox_list_refuses_dates_not_in_the_documented_format() -> None:
    """get-purchases-by-time-range: "dates must be submitted in the following format: 2021-03-08T00:00:00Z,
    otherwise the validation will fail"."""
    import httpx

    sim = OneboxSimulator()
    sim.tokens["t"] = time.time() + 60
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://onebox.test") as http:
        bad = await http.get(
            "/orders-mgmt-api/v1/orders",
            headers={"Authorization": "Bearer t"},
            params={
                "purchase_date_from": "2021-03-08T00:00:00.123456Z",
                "purchase_date_to": "2021-03-09T00:00:00Z",
                "type": "PURCHASE",
            },
        )
        good = await http.get(
            "/orders-mgmt-api/v1/orders",
            headers={"Authorization": "Bearer t"},
            params={"purchase_date_from": "2021-03-08T00:00:00Z", "purchase_date_to": "2021-03-09T00:00:00Z", "type": "PURCHASE"},
        )
    assert bad.status_code == 400 and good.json() == {"data": [], "metadata": {"offset": 0, "limit": 50, "total": 0}}


# -- Atom: no order listing (partner-docs-95q.pages.dev/guides/ordering): recorded order ids --------


async def test_atom_clean_sweep_opens_nothing(dev_env: WorkflowEnvironment) -> None:
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim, poll_interval_seconds=0.2) as tq:
        await fulfilled(dev_env.client, tq, atom_request("atom-clean"))
        await visible(dev_env.client, 'BoxofficeProvider = "atom" AND ExecutionStatus != "Running"', 1)
        result = await sweep(dev_env.client, tq, "atom")
    assert (result.totals.seen, result.totals.findings) == (1, 0)
    assert await open_items(dev_env.client, 0, timeout=1) == []


async def test_atom_order_left_processing_cancelled_after_fulfilment_and_unknown_order(dev_env: WorkflowEnvironment) -> None:
    """GET /ordering/v1/customer/orders/{id}/status with the purchase's own session (Atom serves an order
    to its account only): an order `processing` after its purchase gave up is an orphan whose approved
    cancel is DELETE /v1/customer/orders/{id}; a FULFILLED purchase's order Atom reads cancelled is a
    finding; a purchase that ended COMPENSATION_FAILED on DUPLICATE_CLIENT_REQUEST_ID (an order exists,
    id unknown) is an `unknown_order` item naming the clientRequestId."""
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim, poll_interval_seconds=0.2) as tq:
        kept = await fulfilled(
            dev_env.client,
            tq,
            atom_request("atom-kept", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["B1"]}]),
        )
        sim.orders[kept.provider_order_id].status = "cancelled"  # cancelled at Atom after the tickets were issued

        sim.fulfilment = "fail"
        failed = await purchase_outcome(
            await start_purchase(
                dev_env.client,
                atom_request(
                    "atom-gave-up", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["C1"]}]
                ),
                tq,
            )
        )
        assert failed.state == PurchaseState.FAILED
        [given_up] = [o for o in sim.orders.values() if o.seat_ids == ["C1"]]
        given_up.status = "processing"  # Atom went on with it: its cancel did not hold
        sim.fulfilment = "never"

        sim.faults.add(Fault(endpoint="create", status=502, lost=True))
        unknown = await purchase_outcome(
            await start_purchase(
                dev_env.client,
                atom_request(
                    "atom-unknown", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["D1"]}]
                ),
                tq,
            )
        )
        assert unknown.state == PurchaseState.COMPENSATION_FAILED
        await visible(dev_env.client, 'BoxofficeProvider = "atom" AND ExecutionStatus != "Running"', 3)

        started = time.perf_counter()
        done = await sweep(dev_env.client, tq, "atom")
        print(f"atom sweep of {done.totals.seen} items: {time.perf_counter() - started:.2f}s")
        assert (done.totals.seen, done.totals.findings) == (3, 3)
        items = {i["id"]: i for i in await open_items(dev_env.client, 3)}
        orphan_id = item_id("atom", FindingKind.ORPHAN_ORDER, given_up.order_id)
        unknown_key = next(o.client_request_id for o in sim.orders.values() if o.seat_ids == ["D1"])
        assert set(items) == {
            orphan_id,
            item_id("atom", FindingKind.CANCELLED_AFTER_FULFILMENT, kept.provider_order_id),
            item_id("atom", FindingKind.UNKNOWN_ORDER, unknown_key),
        }
        assert items[orphan_id]["purchase_id"] == "atom-gave-up"
        shown = await attention_item(dev_env.client, orphan_id)
        assert (shown.proposed_action, shown.observations[0].status) == ("cancel", "processing")

        approved = await approve_attention(dev_env.client, orphan_id, AttentionDecision(action="cancel"))
        assert approved.state == "APPROVED" and given_up.status == "cancelled"
        with pytest.raises(WorkflowUpdateFailedError):  # an unknown order is looked up at Atom by a person
            await approve_attention(
                dev_env.client, item_id("atom", FindingKind.UNKNOWN_ORDER, unknown_key), AttentionDecision(action="cancel")
            )

        again = await sweep(dev_env.client, tq, "atom")
        assert again.totals.findings == 2  # the cancelled orphan is no finding any more


async def test_onebox_orders_are_read_page_by_page(dev_env: WorkflowEnvironment) -> None:
    """`limit`/`offset` paging (*assumed*, as Onebox's own API clients page the orders list; the answer's
    `metadata.total` says when to stop): 5 orphans at 2 a page are 3 PURCHASE pages, then the REFUND
    page and the baskets; one page a run (continue-as-new), each orphan opened once."""
    sim = OneboxSimulator()
    async with onebox_worker(dev_env.client, sim) as tq:
        orphans = [onebox_sim.seed_order(sim, [20 + n]) for n in range(5)]
        started = time.perf_counter()
        handle = await dev_env.client.start_workflow(
            "SweepWorkflow",
            SweepRequest(provider="onebox", window_seconds=3600, page_size=2, pages_per_run=1),
            id="sweep-onebox-pages",
            task_queue=tq,
            result_type=SweepResult,
        )
        done = await handle.result()
        elapsed = time.perf_counter() - started
        history = [e async for e in handle.fetch_history_events()]
        print(
            f"onebox sweep of {done.totals.seen} orders in {done.totals.pages} pages: {elapsed:.2f}s, "
            f"last run {len(history)} history events"
        )
    assert (done.totals.pages, done.totals.runs, done.totals.seen, done.totals.findings) == (5, 5, 5, 5)
    offsets = [dict(c["query"]).get("offset") for c in sim.calls if c["endpoint"] == "orders"]
    assert offsets == ["0", "2", "4", "0"]  # PURCHASE 0, 2, 4; REFUND 0
    items = await open_items(dev_env.client, 5)
    assert sorted(i["order_id"] for i in items) == sorted(orphans)
