"""ACME against its public developer pages (issue 20): what boxoffice sends and expects, each test
citing the page that decides it. The simulator is strict (refuses what the pages do not define)."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from simulators.acme import AcmeSimulator
from simulators.faults import Fault
from tests.conftest import acme_request, acme_worker
from tests.test_acme import Recorder, acts, run
from workers import client as purchases
from workers.client import purchase_outcome, start_purchase
from workflows.models import AcmePurchaseRequest, OrderChange, PurchaseState, RefundRequest

# The reservations page's sample answer, verbatim.
RESERVATION_SAMPLE = {
    "id": 10754,
    "expirationTimestamp": "2020-01-09T17:07:30-05:00",
    "reservationItems": [{"id": 10536, "reservationId": 10754, "eventId": "5d96453460309f26d082bd11", "quantity": 3}],
}


def purchase_request(purchase_id: str) -> AcmePurchaseRequest:
    return AcmePurchaseRequest.model_validate(acme_request(purchase_id))


async def test_the_reservation_samples_integer_id_is_a_hold() -> None:
    """The Reservation Object's `id` is an integer (10754); the create request is `{"reservationItems": [{eventId,
    quantity}]}` and nothing else.

    https://developers.acmeticketing.com/support/solutions/articles/33000250677-reservations
    """
    rec = Recorder((200, RESERVATION_SAMPLE))
    hold = await run(acts(rec).reserve, purchase_request("p-int"))
    assert hold.item_ids == ["10754"]
    [request] = rec.requests
    assert (request.method, request.url.path) == ("POST", "/v2/b2b/reservations")
    assert json.loads(request.content) == {"reservationItems": [{"eventId": "5ff74342210cbe0c44913be2", "quantity": 2}]}


async def test_a_cart_answered_with_its_id_alone_is_read_back() -> None:
    """The shopping cart page lists the create answer's payload as the "Shopping Cart ID": the cart
    is then read (GET) for its amounts.

    https://developers.acmeticketing.com/support/solutions/articles/33000250678-shopping-cart
    """
    cart = {"id": "2c4c51184a61494cbdd148a278844175", "subtotal": "200.00", "fees": "5.00", "total": "205.00"}
    rec = Recorder((200, "2c4c51184a61494cbdd148a278844175"), (200, cart))
    cart_id, receipt = await run(acts(rec).create_cart, purchase_request("p-cart"))
    assert cart_id == "2c4c51184a61494cbdd148a278844175" and receipt.total == Decimal("205.00")
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("POST", "/v2/b2c/carts"),
        ("GET", "/v2/b2c/carts/2c4c51184a61494cbdd148a278844175"),
    ]


async def test_purchase_against_the_strict_simulator(env: WorkflowEnvironment) -> None:
    """Integer reservation ids; the Order Contact is top-level `contactFirstName`, `contactLastName`, `email`, and the
    billing email (which sends the order confirmation) is given too; no nested `contact`.

    https://developers.acmeticketing.com/support/solutions/articles/33000250677-reservations
    https://developers.acmeticketing.com/support/solutions/articles/33000277687-checkout-object
    """
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, acme_request("acme-strict"), tq))
    assert result.state == PurchaseState.FULFILLED, result.failure
    assert all(isinstance(key, int) for key in sim.reservations)
    checkout = next(c for c in sim.calls if c["endpoint"] == "checkout")["body"]
    assert "contact" not in checkout
    assert (checkout["contactFirstName"], checkout["contactLastName"], checkout["email"]) == ("Jane", "Doe", "janedoe@gmail.com")
    assert (checkout["billingFirstName"], checkout["billingLastName"], checkout["billingEmail"]) == (
        "Jane",
        "Doe",
        "janedoe@gmail.com",
    )
    [order] = sim.orders.values()
    assert (order["email"], order["contactFirstName"], order["contactLastName"]) == ("janedoe@gmail.com", "Jane", "Doe")


async def test_strict_simulator_refuses_the_nested_contact_and_unknown_fields() -> None:
    """The body is a CheckoutInput Object; `contact` is not one of its fields.

    https://developers.acmeticketing.com/support/solutions/articles/33000250712-b2c-checkout-e-commerce-
    """
    sim = AcmeSimulator(api_key="test-acme-key")
    headers = {
        "x-b2c-tenant-id": "107",
        "x-acme-api-key": "test-acme-key",
        "x-acme-browser-ip": "203.0.113.7",
        "x-acme-captcha-token": "test-recaptcha-token",
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://acme.test") as http:
        cart = (
            await http.post(
                "/v2/b2c/carts",
                headers=headers,
                json={
                    "items": [
                        {"eventId": "5ff74342210cbe0c44913be2", "ticketingTypeId": "54248ac8e4b01cd228b007a4", "quantity": 1}
                    ]
                },
            )
        ).json()
        nested = await http.post(
            "/v2/b2c/checkout", headers=headers, json={"shoppingCartId": cart["id"], "contact": {"email": "a@b.c"}}
        )
        listed = await http.get("/v2/b2b/reservations", headers=headers, params={"clientReference": "p"})
        reserve = await http.post(
            "/v2/b2b/reservations",
            headers=headers,
            json={"reservationItems": [{"eventId": "5ff74342210cbe0c44913be2", "quantity": 1}], "clientReference": "p"},
        )
    assert nested.status_code == 400 and "contact" in nested.json()["message"]
    assert listed.status_code == 405  # only POST is documented on /v2/b2b/reservations
    assert reserve.status_code == 400


async def test_reserve_answered_503_reserves_again(env: WorkflowEnvironment) -> None:
    """No way to list reservations is documented; a refused (503) reservation made nothing, so the retry simply reserves.

    https://developers.acmeticketing.com/support/solutions/articles/33000250677-reservations
    """
    sim = AcmeSimulator()
    sim.faults.add(Fault(endpoint="reserve", status=503))
    async with acme_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, acme_request("acme-503"), tq))
    assert result.state == PurchaseState.FULFILLED, result.failure
    assert list(sim.ledger()["reservations"].values()) == ["used"]
    assert not [c for c in sim.calls if c["method"] == "GET" and "reservations" in c["path"]]


async def test_lost_reserve_answer_lapses_at_its_expiry(env: WorkflowEnvironment) -> None:
    """Nothing documented finds a reservation whose answer was lost (GET needs its id; no list, no client reference): the
    retry reserves again and the lost one holds its seats until its `expirationTimestamp`.

    https://developers.acmeticketing.com/support/solutions/articles/33000250677-reservations
    """
    sim = AcmeSimulator()
    sim.faults.add(Fault(endpoint="reserve", status=502, lost=True))
    async with acme_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, acme_request("acme-lost-res"), tq))
    assert result.state == PurchaseState.FULFILLED, result.failure
    assert list(sim.ledger()["reservations"].values()) == ["active", "used"]
    now = sim.clock()
    sim.clock = lambda: now + sim.reservation_seconds
    assert list(sim.ledger()["reservations"].values()) == ["expired", "used"]


async def test_lost_checkout_answer_is_found_by_the_orders_email(env: WorkflowEnvironment) -> None:
    """The order's `email` is the Order Contact's; the read-back searches it.

    https://developers.acmeticketing.com/support/solutions/articles/33000277687-checkout-object
    """
    sim = AcmeSimulator()
    sim.faults.add(Fault(endpoint="checkout", status=502, lost=True))
    async with acme_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, acme_request("acme-lost-co"), tq))
    assert result.state == PurchaseState.FULFILLED, result.failure
    assert len(sim.orders) == 1 and result.provider_order_id in sim.orders
    assert [c["endpoint"] for c in sim.calls].count("search") >= 1


def test_refund_reason_codes_are_the_documented_two() -> None:
    """`incidentReasonCode` is one of `Cancelled Event` or `Miscellaneous`. A refund recorded before (the old default
    `CUSTOMER_REQUEST`) still decodes, as `Miscellaneous`.

    https://developers.acmeticketing.com/support/solutions/articles/33000250661-order-refund
    """
    assert RefundRequest(order_id="1").reason_code == "Miscellaneous"
    assert RefundRequest.model_validate({"order_id": "1", "reason_code": "CUSTOMER_REQUEST"}).reason_code == "Miscellaneous"
    assert RefundRequest(order_id="1", reason_code="Cancelled Event").reason_code == "Cancelled Event"
    with pytest.raises(ValueError):
        RefundRequest(order_id="1", reason_code="Refund")


async def bought(env: WorkflowEnvironment, sim: AcmeSimulator, tq: str, purchase_id: str) -> tuple[str, str]:
    result = await purchase_outcome(await start_purchase(env.client, acme_request(purchase_id), tq))
    assert result.provider_order_id is not None, result.failure
    [item] = sim.orders[result.provider_order_id]["orderItems"]
    return result.provider_order_id, item["itemId"]


async def test_partial_refund_with_lost_answer_refunds_once_by_ticket(env: WorkflowEnvironment) -> None:
    """Refund items may name `ticketUUIDs`, whose status becomes Refund: the retry of a refund whose answer was lost sees
    its tickets refunded and does not post again.

    https://developers.acmeticketing.com/support/solutions/articles/33000250661-order-refund
    """
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        order_id, item_id = await bought(env, sim, tq, "acme-pr")
        sim.faults.add(Fault(endpoint="refund", status=502, lost=True))
        refunded = await purchases.refund(env.client, RefundRequest(order_id=order_id, items={item_id: 1}), tq)
    [order] = sim.ledger()["orders"]
    assert (order["total"], order["refunded"]) == ("205.00", "100.00")
    posted = [c["body"] for c in sim.calls if c["endpoint"] == "refund"]
    assert len(posted) == 1 and len(posted[0]["refundItems"][0]["ticketUUIDs"]) == 1
    assert posted[0]["incidentReasonCode"] == "Miscellaneous"
    assert refunded.already_refunded and refunded.refunded == Decimal("100.00")


async def test_two_partial_refunds_of_one_order_both_happen(env: WorkflowEnvironment) -> None:
    """A refund answers `incidentNumber` and `refundAmount`; another `refund_id` is another refund (its own workflow), the
    same one asked again returns the first.

    https://developers.acmeticketing.com/support/solutions/articles/33000250661-order-refund
    """
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        order_id, item_id = await bought(env, sim, tq, "acme-2pr")
        first = await purchases.refund(env.client, RefundRequest(order_id=order_id, items={item_id: 1}, refund_id="r1"), tq)
        second = await purchases.refund(env.client, RefundRequest(order_id=order_id, items={item_id: 1}, refund_id="r2"), tq)
        again = await purchases.refund(env.client, RefundRequest(order_id=order_id, items={item_id: 1}, refund_id="r1"), tq)
    assert len(sim.refunds) == 2 and again == first
    # The second repays the last ticket, and the simulator then the fees too: the whole order.
    assert (first.amount, second.amount, second.refunded) == (Decimal("100.00"), Decimal("105.00"), Decimal("205.00"))
    assert first.incident_number and second.incident_number and first.incident_number != second.incident_number
    tickets = [t["ticketStatus"] for t in sim.orders[order_id]["orderItems"][0]["ticketVos"]]
    assert tickets == ["Refund", "Refund"]


async def test_orders_update_and_delete_run_as_workflows(env: WorkflowEnvironment) -> None:
    """The excerpt's Update an Order (PUT, the whole Order object) and Delete an Order, through the
    worker like search/show/refund."""
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        order_id, _ = await bought(env, sim, tq, "acme-upd")
        updated = await purchases.change_order(
            env.client, OrderChange(order_id=order_id, changes={"contactLastName": "Roe", "phoneNumber": "+15551234"}), tq
        )
        assert updated.order is not None and updated.order.order_id == order_id
        assert (sim.orders[order_id]["contactLastName"], sim.orders[order_id]["phoneNumber"]) == ("Roe", "+15551234")
        put = next(c for c in sim.calls if c["endpoint"] == "update")["body"]
        assert put["id"] == order_id and put["email"] == "janedoe@gmail.com"  # the whole object, changed
        deleted = await purchases.change_order(env.client, OrderChange(order_id=order_id, delete=True), tq)
    assert deleted.deleted and order_id not in sim.orders


def test_order_change_takes_documented_contact_fields_only() -> None:
    with pytest.raises(ValueError):
        OrderChange(order_id="1", changes={"totalAmount": "0.00"})
    with pytest.raises(ValueError):
        OrderChange(order_id="1")  # neither changes nor delete
