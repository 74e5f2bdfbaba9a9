"""Ticket Evolution: signatures, exact requests, and the purchase on the time-skipping server."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.tevo import TevoActivities, TevoSettings, order_body, sign
from simulators.faults import Fault
from simulators.tevo import Order, TevoSimulator
from tests.conftest import on_loopback, tevo_request, tevo_worker, wait_for_state
from tests.test_atom_workflow import record
from workers import client as purchases
from workers.client import parse_request, purchase_outcome, start_purchase
from workflows.models import Buyer, ConfirmRequest, PurchaseState

SECRET = "0123456789012345678901234567890123456789"


def reference_signature(message: str) -> str:
    return base64.b64encode(hmac.new(SECRET.encode(), message.encode(), hashlib.sha256).digest()).decode()


def test_get_signature_sorts_the_query() -> None:
    unsorted = sign(SECRET, "GET", "api.sandbox.ticketevolution.com", "/v9/clients?per_page=2&email=a%40b.c&page=1", b"")
    expected = reference_signature("GET api.sandbox.ticketevolution.com/v9/clients?email=a%40b.c&page=1&per_page=2")
    assert unsorted == expected
    # Pinned from `openssl dgst -sha256 -hmac SECRET -binary | base64` over the same string.
    assert expected == "vX3gY7y4mumXiPxt8mzuePBVXgMfSmPnzvIiyLl2XFU="


def test_post_signature_covers_the_exact_body() -> None:
    body = b'{"order":{"ticket_group":{"id":324466901}}}'
    assert sign(SECRET, "POST", "api.sandbox.ticketevolution.com", "/v10/orders", body) == reference_signature(
        'POST api.sandbox.ticketevolution.com/v10/orders?{"order":{"ticket_group":{"id":324466901}}}'
    )
    # A GET with no query still ends in "?".
    assert sign(SECRET, "GET", "h.test", "/v9/orders/1", b"") == reference_signature("GET h.test/v9/orders/1?")


def test_order_body_matches_the_excerpt() -> None:
    request = parse_request(
        tevo_request(
            "p-9",
            session_id="riskified_session_id_123",
            discount="5.00",
            promo_code="TAKE5",
            instructions="Instructions are visible to buyer and seller, and are considered a request.",
        )
    )
    assert order_body(request, "1507094") == {
        "ticket_group": {"id": 324466901, "price": 145.48, "quantity": 2},
        "payments": [{"type": "credit_card", "credit_card_id": 327284, "address_id": 5070352}],
        "delivery": {"type": "Eticket", "cost": 5.0, "email_address_id": 1965046},
        "client_id": 1507094,
        "service_fee": 10.0,
        "additional_expense": 0.0,
        "tax": 0.0,
        "discount": 5.0,
        "reference": "p-9",
        "session_id": "riskified_session_id_123",
        "promo_code": "TAKE5",
        "instructions": "Instructions are visible to buyer and seller, and are considered a request.",
    }


async def test_signed_requests_are_accepted_by_the_simulator_and_bytes_sent_are_signed() -> None:
    sim = TevoSimulator(token="tok", secret=SECRET)
    settings = TevoSettings(base_url="https://api.tevo.test:8443", api_token="tok", api_secret=SECRET)
    activities = TevoActivities(settings, transport=httpx.ASGITransport(app=sim.app))
    env = ActivityEnvironment()
    client_id = await env.run(
        activities.find_or_create_client, Buyer(email="jane@example.com", first_name="Jane", last_name="Doe")
    )
    again = await env.run(activities.find_or_create_client, Buyer(email="jane@example.com", first_name="Jane", last_name="Doe"))
    assert client_id == again and len(sim.clients) == 1  # found, not created twice
    create = next(c for c in sim.calls if c["endpoint"] == "create-client")
    assert json.loads(create["raw"]) == {
        "clients": [{"name": "Jane Doe", "email_addresses": [{"address": "jane@example.com", "is_primary": True}]}]
    }
    # The port is not signed; the simulator answered 200, so the signature held.
    assert create["headers"]["x-signature"] == sign(SECRET, "POST", "api.tevo.test", "/v9/clients", create["raw"])
    await activities.aclose()


async def test_wrong_secret_is_refused_with_401() -> None:
    sim = TevoSimulator(token="tok", secret=SECRET)
    settings = TevoSettings(base_url="https://api.tevo.test", api_token="tok", api_secret="not-the-secret")
    activities = TevoActivities(settings, transport=httpx.ASGITransport(app=sim.app))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(activities.check_ticket_group, 324466901, 2, Decimal("145.48"))
    assert refused.value.type == "AUTHENTICATION_FAILED" and refused.value.details[0]["status"] == 401
    await activities.aclose()


async def test_tevo_purchase(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    async with tevo_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, tevo_request("tevo-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "tevo_accepted")
    assert result.state == PurchaseState.FULFILLED and result.provider_status == "accepted"
    assert result.provider_order_id == "819976"
    assert [t.seat for t in result.tickets] == ["sec 23 row a 9", "sec 23 row a 10"]
    assert result.receipt is not None and result.receipt.total == Decimal("305.96")
    order = next(c for c in sim.calls if c["endpoint"] == "create")
    assert json.loads(order["raw"])["order"]["reference"] == "tevo-1"
    # The order is looked up by reference before the create, on every attempt.
    assert [c["endpoint"] for c in sim.calls] == ["group", "clients", "create-client", "orders", "create", "show", "show", "show"]


async def test_price_changed(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-2", price="120.00"), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "PRICE_CHANGED"
    assert sim.orders == {}


async def test_quantity_no_longer_available(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-3", quantity=3), tq))
    assert result.failure is not None and result.failure.reason == "SEAT_UNAVAILABLE"


async def test_rejected_order_fails_with_the_sellers_reason(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator(outcome="reject")
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-4"), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "ORDER_REJECTED"
    assert result.failure.message == "Tickets No Longer Available"
    assert result.compensations == [] and "cancel" not in [c["endpoint"] for c in sim.calls]


async def test_never_accepted_order_is_rejected(env: WorkflowEnvironment) -> None:
    """A pending order is undone by Orders / Reject with the configured reviewer
    (https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108), not by cancel."""
    sim = TevoSimulator(outcome="never")
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-5"), tq))
    assert result.failure is not None and result.failure.reason == "FULFILLMENT_TIMEOUT"
    # Polled every 15 s for 60 s (5 reads), the fallback read, the undo's read, then rejected.
    assert [c["endpoint"] for c in sim.calls].count("show") == 7
    assert sim.ledger()["orders"][0]["state"] == "rejected"
    assert sim.calls[-1]["endpoint"] == "reject"
    assert json.loads(sim.calls[-1]["raw"]) == {"reason": "Other", "reviewer_id": 12345}
    assert [(c.action, c.ok, c.detail) for c in result.compensations] == [("cancel order", True, "order 819976 rejected")]


async def test_lost_create_response_makes_one_order(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    sim.faults.add(Fault(endpoint="create", status=504, lost=True))
    async with tevo_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, tevo_request("tevo-6"), tq))
    assert result.state == PurchaseState.FULFILLED
    assert len(sim.orders) == 1
    endpoints = [c["endpoint"] for c in sim.calls]
    assert endpoints.count("create") == 1 and "orders" in endpoints  # the retry looked it up by reference


async def test_manual_confirmation_rereads_the_group(env: WorkflowEnvironment) -> None:
    sim = TevoSimulator()
    async with tevo_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, tevo_request("tevo-7", confirmation="manual"), tq)
        status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        assert status.receipt is not None and status.receipt.total == Decimal("305.96")
        sim.groups[324466901].price = Decimal("150.00")  # the price moves while the buyer decides
        await purchases.confirm(env.client, "tevo-7", ConfirmRequest(accepted_total=Decimal("305.96")))
        result = await purchase_outcome(handle)
    assert result.failure is not None and result.failure.reason == "PRICE_CHANGED"
    assert [c["endpoint"] for c in sim.calls].count("group") == 2 and sim.orders == {}


# -- unknown create outcome: read back by reference, settle before ordering again -------------


@asynccontextmanager
async def served(sim: TevoSimulator) -> AsyncIterator[TevoActivities]:
    """TEvo activities talking to `sim` over a real socket, so the client's timeout applies."""
    async with on_loopback(sim.app) as url:
        settings = TevoSettings(base_url=url, api_token="tok", api_secret=SECRET, timeout_seconds=0.3)
        activities = TevoActivities(settings)
        try:
            yield activities
        finally:
            await activities.aclose()


FIRST = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def attempt(number: int, after_seconds: float) -> ActivityEnvironment:
    """An activity environment for retry `number`, scheduled `after_seconds` after the first."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=number, scheduled_time=FIRST, current_attempt_scheduled_time=FIRST + timedelta(seconds=after_seconds)
    )
    return env


def search_queries(sim: TevoSimulator) -> list[dict[str, str]]:
    return [dict(urllib.parse.parse_qsl(c["query"])) for c in sim.calls if c["endpoint"] == "orders"]


async def test_tevo_retry_after_timeout_places_one_order() -> None:
    now = [1000.0]
    sim = TevoSimulator(token="tok", secret=SECRET, search_delay=60, clock=lambda: now[0])
    sim.clients[1507094] = {"id": 1507094}
    # TEvo places the order but answers after the client gave up; the search shows it a minute later.
    sim.faults.add(Fault(endpoint="create", status=None, answer_delay=1.0))
    request = parse_request(tevo_request("tevo-late"))
    async with served(sim) as activities:
        with pytest.raises(ApplicationError) as timed_out:
            await attempt(1, 0).run(activities.create_order, request, "1507094")
        assert timed_out.value.type == "PROVIDER_UNREACHABLE" and len(sim.orders) == 1
        with pytest.raises(ApplicationError) as settling:
            await attempt(2, 20).run(activities.create_order, request, "1507094")
        assert settling.value.type == "ORDER_PENDING" and not settling.value.non_retryable
        now[0] += 60
        order = await attempt(3, 45).run(activities.create_order, request, "1507094")
    [placed] = sim.orders.values()
    assert order.order_id == str(placed.id) and placed.reference == "tevo-late"
    assert [c["endpoint"] for c in sim.calls] == ["orders", "create", "orders", "orders"]
    assert search_queries(sim) == [{"page": "1", "per_page": "10", "reference": "tevo-late"}] * 3


async def test_tevo_retry_orders_again_once_the_settle_window_passed() -> None:
    sim = TevoSimulator(token="tok", secret=SECRET)
    sim.clients[1507094] = {"id": 1507094}
    sim.faults.add(Fault(endpoint="create", status=503))  # refused before anything was placed
    request = parse_request(tevo_request("tevo-refused"))
    async with served(sim) as activities:
        with pytest.raises(ApplicationError):
            await attempt(1, 0).run(activities.create_order, request, "1507094")
        with pytest.raises(ApplicationError) as settling:
            await attempt(2, 59).run(activities.create_order, request, "1507094")
        assert settling.value.type == "ORDER_PENDING"
        order = await attempt(3, 61).run(activities.create_order, request, "1507094")
    assert [c["endpoint"] for c in sim.calls] == ["orders", "create", "orders", "orders", "create"]
    assert list(sim.orders) == [int(order.order_id)]


async def test_tevo_find_order_reads_every_page() -> None:
    sim = TevoSimulator(token="tok", secret=SECRET, reference_filter=False)
    for n in range(25):  # other purchases' orders come first, and the search ignores the filter
        sim.orders[n] = Order(id=n, reference=f"other-{n}", group=1, quantity=1, price=Decimal(1), body={}, seats=[])
    sim.orders[500] = Order(id=500, reference="tevo-mine", group=1, quantity=1, price=Decimal(1), body={}, seats=[])
    async with served(sim) as activities:
        found = await ActivityEnvironment().run(activities.find_order, "tevo-mine")
        missing = await attempt(2, 60).run(activities.find_order, "tevo-none")  # once the search caught up
    assert found is not None and found.order_id == "500" and found.event_id == "388214-500"
    assert missing is None
    pages = [(q["page"], q["per_page"], q["reference"]) for q in search_queries(sim)]
    assert pages == [(p, "10", r) for r in ("tevo-mine", "tevo-none") for p in ("1", "2", "3")]
    search = next(c for c in sim.calls if c["endpoint"] == "orders")
    assert (search["method"], search["path"], search["query"]) == ("GET", "/v9/orders", "page=1&per_page=10&reference=tevo-mine")


async def test_tevo_retry_answered_409_takes_the_earlier_order() -> None:
    # Clock reads: a search, the first create, then two searches; the order reaches the search between them.
    times = iter([990.0, 1000.0, 1010.0, 1100.0])
    sim = TevoSimulator(token="tok", secret=SECRET, search_delay=60, clock=lambda: next(times))
    sim.groups[324466901].available = 2  # the first order takes every ticket
    sim.clients[1507094] = {"id": 1507094}
    sim.faults.add(Fault(endpoint="create", status=None, answer_delay=1.0))
    request = parse_request(tevo_request("tevo-409"))
    async with served(sim) as activities:
        with pytest.raises(ApplicationError):
            await attempt(1, 0).run(activities.create_order, request, "1507094")
        order = await attempt(2, 121).run(activities.create_order, request, "1507094")
    [placed] = sim.orders.values()
    assert order.order_id == str(placed.id)
    assert [c["endpoint"] for c in sim.calls] == ["orders", "create", "orders", "create", "orders"]


def test_read_back_activities_are_registered() -> None:
    """The workflow calls these by name after a commit with an unknown outcome."""
    from temporalio.activity import _Definition

    from activities.acme import AcmeActivities, AcmeSettings
    from activities.onebox import OneboxActivities, OneboxSettings

    providers: list[Any] = [OneboxActivities(OneboxSettings()), TevoActivities(TevoSettings()), AcmeActivities(AcmeSettings())]
    names = {_Definition.from_callable(fn).name for provider in providers for fn in provider.all()}
    assert {"onebox.find_order", "tevo.find_order", "acme.find_checkout"} <= names
