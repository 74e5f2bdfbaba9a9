"""ACME: exact requests, the excerpt's Order object verbatim, purchases and order management."""

from __future__ import annotations

import asyncio
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.acme import AcmeActivities, Order, OrderList
from simulators.acme import AcmeSimulator
from simulators.faults import Fault
from tests.conftest import (
    acme_request,
    acme_settings,
    acme_worker,
    purchase_duration,
    wait_for_state,
)
from tests.test_atom_workflow import record
from workers import client as purchases
from workers.client import parse_request, purchase_outcome, start_purchase
from workflows.models import CancelRequest, OrdersQuery, PurchaseState, PurchaseStatus, RefundRequest

# The excerpt's example answers (shared/provider-docs/acme-b2c-orders.txt), copied verbatim.
FIXTURES = Path(__file__).parent / "fixtures"


def excerpt_json(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"acme_{name}.json").read_text())


def test_the_excerpts_order_and_search_answers_parse_verbatim() -> None:
    order = Order.model_validate(excerpt_json("get_order"))
    assert (order.id, order.order_number, order.total_amount) == ("30263798", "100148401", Decimal("255.00"))
    assert [i.item_id for i in order.order_items][:2] == ["43371676", "43371677"]
    assert order.order_items[1].unit_price == Decimal("100.00") and order.order_items[1].event_name == "Sailing"
    found = OrderList.model_validate(excerpt_json("search_orders"))
    assert found.orders[0].email == "janedoe@gmail.com" and found.pagination.has_more is False


class Recorder:
    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.requests: list[httpx.Request] = []
        self.answers = list(answers)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, body = self.answers.pop(0)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)


def acts(recorder: Recorder) -> AcmeActivities:
    return AcmeActivities(acme_settings(), transport=httpx.MockTransport(recorder))


async def run(fn: Any, *args: Any) -> Any:
    return await ActivityEnvironment().run(fn, *args)


def assert_acme_headers(request: httpx.Request) -> None:
    assert request.headers["x-b2c-tenant-id"] == "107" and request.headers["x-acme-api-key"] == "test-acme-key"


async def test_search_sends_the_documented_parameters() -> None:
    rec = Recorder((200, excerpt_json("search_orders")))
    page = await run(acts(rec).search_orders, OrdersQuery(email="janedoe@gmail.com", page=2, page_size=10))
    request = rec.requests[0]
    assert_acme_headers(request)
    assert "x-acme-browser-ip" not in request.headers  # optional outside checkout
    assert (request.method, request.url.path) == ("GET", "/v2/b2c/orders/search")
    assert dict(request.url.params) == {
        "email": "janedoe@gmail.com",
        "page": "2",
        "pageSize": "10",
        "sortField": "createdOn",
        "sortDirection": "desc",
    }
    assert page.orders[0].order_id == "30263798"


async def test_orders_for_an_event_get_update_delete() -> None:
    order = excerpt_json("get_order")
    rec = Recorder(
        (200, {"list": [], "pagination": {"page": 1, "hasMore": False}}),
        (200, order),
        (200, {**order, "notes": "VIP"}),
        (204, None),
    )
    activities = acts(rec)
    await run(activities.search_orders, OrdersQuery(event_id="5ff74342210cbe0c44913be2"))
    updated = await run(activities.update_order, "30263798", {"notes": "VIP"})
    await run(activities.delete_order, "30263798")
    event, get, put, delete = rec.requests
    assert event.url.path == "/v2/b2c/orders/event/5ff74342210cbe0c44913be2"
    assert (get.method, get.url.path) == ("GET", "/v2/b2c/orders/30263798")
    assert (put.method, put.url.path) == ("PUT", "/v2/b2c/orders/30263798")
    assert json.loads(put.content) == {**order, "notes": "VIP"}  # the whole Order object, changed
    assert (delete.method, delete.url.path) == ("DELETE", "/v2/b2c/orders/30263798")
    assert updated.order_id == "30263798"


async def test_refund_posts_the_documented_body_once() -> None:
    """https://developers.acmeticketing.com/support/solutions/articles/33000250661-order-refund: the
    Refund Input, a documented reason code, and the Refund Result's `incidentNumber`/`refundAmount`."""
    order = excerpt_json("get_order")
    refunded = {**order, "refundAmount": "255.00"}
    rec = Recorder((200, order), (200, {"incidentNumber": 5501, "refundAmount": "255.00", "order": refunded}), (200, refunded))
    activities = acts(rec)
    result = await run(activities.refund, RefundRequest(order_id="30263798", notes="n", no_email=True))
    refund = rec.requests[1]
    assert (refund.method, refund.url.path) == ("POST", "/v2/b2b/b2b/refunds")
    body = json.loads(refund.content)
    assert body["orderId"] == "30263798" and body["incidentReasonCode"] == "Miscellaneous"
    assert body["noEmail"] is True and body["notes"] == "n"
    assert body["refundItems"][:2] == [{"orderItemId": "43371676", "quantity": 1}, {"orderItemId": "43371677", "quantity": 2}]
    assert (result.refunded, result.amount, result.incident_number) == (Decimal("255.00"), Decimal("255.00"), "5501")
    again = await run(activities.refund, RefundRequest(order_id="30263798"))
    assert again.already_refunded and len(rec.requests) == 3  # read only, no second refund


def test_request_needs_a_valid_browser_ip() -> None:
    with pytest.raises(ValidationError):
        parse_request(acme_request("bad", browser_ip="not-an-ip"))


# -- purchases -------------------------------------------------------------------------------


async def test_acme_purchase(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "acme_paid")
    assert result.state == PurchaseState.FULFILLED
    assert len(result.tickets) == 2 and all(re.fullmatch(r"at[0-9a-f]{6}-[0-9a-f]{10}", t.barcode or "") for t in result.tickets)
    assert result.receipt is not None and result.receipt.total == Decimal("205.00")
    checkout = next(c for c in sim.calls if c["endpoint"] == "checkout")
    assert checkout["headers"]["x-acme-browser-ip"] == "203.0.113.7"
    assert re.fullmatch(r"[0-9a-f-]{36}", checkout["headers"]["x-acme-request-uuid"])
    assert checkout["body"]["payment"] == {"cardToken": "tok_visa_4242"}
    reserve = next(c for c in sim.calls if c["endpoint"] == "reserve")
    assert reserve["body"] == {"reservationItems": [{"eventId": "5ff74342210cbe0c44913be2", "quantity": 2}]}
    assert list(sim.ledger()["reservations"].values()) == ["used"]


async def test_reservation_expiry_deletes_it(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-2", confirmation="manual"), tq)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.EXPIRED
    assert 560 <= (await purchase_duration(handle)).total_seconds() < 600
    assert list(sim.ledger()["reservations"].values()) == ["deleted"] and sim.orders == {}


async def test_naive_reservation_timestamp_still_expires(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator(naive_timestamps=True)
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-naive", confirmation="manual"), tq)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.EXPIRED
    assert 560 <= (await purchase_duration(handle)).total_seconds() < 600
    assert list(sim.ledger()["reservations"].values()) == ["deleted"]


async def test_failed_purchase_waits_out_a_reservation_of_unknown_id(env: WorkflowEnvironment) -> None:
    """The reserve's answer is lost: ACME holds reservation 10754, which nothing documented finds
    again (developers.acmeticketing.com/support/solutions/articles/33000250677: POST, GET by id, PUT,
    DELETE by id; no list, no client reference). The retry's 10755 is used; the card is declined.
    The purchase deletes 10755 and ends FAILED only once 10754 has lapsed (the retry's
    expirationTimestamp + the hold margin), naming it in the compensation."""
    sim = AcmeSimulator()
    sim.faults.add(Fault(endpoint="reserve", lost=True, drop=True))
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-unknown", payment_token="tok_declined"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "acme_declined_unknown_reservation")
        status = await handle.query("status", result_type=PurchaseStatus)
    assert result.state == PurchaseState.FAILED and result.failure is not None
    assert result.failure.reason == "PAYMENT_FAILED"
    assert sim.ledger()["reservations"] == {10754: "active", 10755: "deleted"}  # as the simulator's clock sees it
    [undo] = result.compensations
    assert undo.ok and undo.action == "delete reservation"
    assert undo.detail is not None and "1 reservation(s) of reserve attempts whose outcome is unknown lapsed by" in undo.detail
    assert status.provider_ids["unknown_hold_1"].startswith("reserve attempt 1: outcome unknown")
    # 10754 expires 600 s after it was made, 10755 a little later: the purchase ended after both (+ 30 s margin).
    assert (await purchase_duration(handle)).total_seconds() >= 600 + 30


async def test_a_reserve_failing_after_a_lost_answer_waits_out_the_reservation(env: WorkflowEnvironment) -> None:
    """The reserve's first answer is lost (ACME made reservation 10754); the retry is refused
    (409 SOLD_OUT: 10754 took the last seats). Nothing finds 10754 again (reservations page,
    developers.acmeticketing.com/support/solutions/articles/33000250677): the purchase names it and
    fails only once it has lapsed, ~10 minutes ("approximately 10 mins", OTA reseller checkout
    guide, article 33000257544) + the hold margin."""
    sim = AcmeSimulator()
    sim.events["5ff74342210cbe0c44913be2"].capacity = 2
    sim.faults.add(Fault(endpoint="reserve", lost=True, drop=True))
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-sold-out"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "acme_reserve_failed_after_lost_answer")
        status = await handle.query("status", result_type=PurchaseStatus)
    assert result.state == PurchaseState.FAILED and result.failure is not None
    assert result.failure.reason == "SEAT_UNAVAILABLE"
    assert sim.ledger()["reservations"] == {10754: "active"}  # as the simulator's clock sees it
    assert status.provider_ids["unknown_hold_1"].startswith("reserve attempt 1: outcome unknown")
    assert (await purchase_duration(handle)).total_seconds() >= 600 + 30


async def test_lost_checkout_answer_gives_one_order(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    sim.faults.add(Fault(endpoint="checkout", status=502, lost=True))
    async with acme_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, acme_request("acme-3"), tq))
    assert result.state == PurchaseState.FULFILLED
    assert len(sim.orders) == 1 and result.provider_order_id in sim.orders
    endpoints = [c["endpoint"] for c in sim.calls]
    assert endpoints.count("checkout") == 2 and "search" in endpoints  # the repeat answered 409


async def test_same_card_and_amount_twice_is_a_typed_duplicate(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        first = await purchase_outcome(await start_purchase(env.client, acme_request("acme-4a"), tq))
        second = await purchase_outcome(await start_purchase(env.client, acme_request("acme-4b"), tq))
    assert first.state == PurchaseState.FULFILLED
    assert second.failure is not None and second.failure.reason == "DUPLICATE_REQUEST"
    assert second.failure.provider_code == "16003"
    # The first reservation became the order; the second purchase's was deleted.
    assert list(sim.ledger()["reservations"].values()) == ["used", "deleted"]


async def test_cancel_during_checkout_refunds(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    original = sim.checkout

    async def slow_checkout(request, body):
        await asyncio.sleep(1.0)
        return await original(request, body)

    sim.checkout = slow_checkout  # type: ignore[method-assign]
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("acme-5"), tq)
        await wait_for_state(handle, PurchaseState.COMMITTING)
        await handle.signal("cancel", CancelRequest(reason="changed mind"))
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.CANCELLED
    [order] = sim.ledger()["orders"]
    assert order["refunded"] == order["total"] == "205.00"
    assert [c.action for c in result.compensations] == ["refund order", "delete reservation"]
    refund = next(c for c in sim.calls if c["endpoint"] == "refund")["body"]
    assert refund["incidentReasonCode"] == "Miscellaneous"  # one of the two the refund page allows
    assert len(refund["refundItems"][0]["ticketUUIDs"]) == 2


async def test_refund_workflow_is_idempotent_and_orders_paginate(env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        for n in range(3):
            await purchase_outcome(await start_purchase(env.client, acme_request(f"acme-6{n}", payment_token=f"tok_{n}"), tq))
        first = await purchases.orders(env.client, OrdersQuery(email="janedoe@gmail.com", page_size=2), tq)
        second = await purchases.orders(env.client, OrdersQuery(email="janedoe@gmail.com", page=2, page_size=2), tq)
        assert (len(first.orders), first.has_more, len(second.orders), second.has_more) == (2, True, 1, False)
        order_id = second.orders[0].order_id
        refunded = await purchases.refund(env.client, RefundRequest(order_id=order_id), tq)
        again = await purchases.refund(env.client, RefundRequest(order_id=order_id), tq)
        shown = await purchases.orders(env.client, OrdersQuery(order_id=order_id), tq)
    assert refunded.refunded == refunded.total == Decimal("205.00") and again == refunded
    assert len(sim.refunds) == 1 and shown.orders[0].refunded == Decimal("205.00")


# -- unknown outcomes: read back before acting again ------------------------------------------


async def test_acme_find_checkout_reads_every_page() -> None:
    sim = AcmeSimulator(api_key="test-acme-key", max_page_size=2)  # any pageSize answers 2 per page
    for n in range(5):
        sim.orders[str(n)] = {
            "id": str(n),
            "email": "janedoe@gmail.com",
            "createdOn": f"2026-11-0{n + 1}",
            "notes": f"boxoffice purchase p-{n} request uuid-{n}",
            "orderItems": [],
        }
    activities = AcmeActivities(acme_settings(), transport=httpx.ASGITransport(app=sim.app))
    oldest = await run(activities.find_checkout, "janedoe@gmail.com", "uuid-0")
    missing = await run(activities.find_checkout, "janedoe@gmail.com", "uuid-9")
    assert oldest is not None and oldest.order_id == "0" and missing is None
    searches = [c for c in sim.calls if c["endpoint"] == "search"]
    assert [c["query"] for c in searches[:3]] == [
        f"email=janedoe%40gmail.com&sortField=createdOn&sortDirection=desc&page={p}&pageSize=100" for p in (1, 2, 3)
    ]
    assert len(searches) == 6 and [c["endpoint"] for c in sim.calls].count("get") == 1
