"""Atom activities send exactly the excerpt's requests and accept its example responses verbatim
(../shared/provider-docs/atom-ordering-examples.txt)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.atom import AtomActivities, AtomSettings
from workflows.models import AtomItem, AtomLogin, Buyer, ProviderSession

API_KEY = "partner-key-123"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJHVUVTVC01NTAxMiJ9.signature"
CLIENT_REQUEST_ID = "req-a1b2c3d4-5678-90ef-ghij-klmnopqrstuv"
ITEMS = [AtomItem(product_id="PROD-ADULT-001", offer_id="OFFER-STD-001", seat_ids=["A1", "A2"])]
SESSION = ProviderSession(token=TOKEN, account_id="GUEST-55012")

# The excerpt's example responses, verbatim ("surveyDetailResponse": { ... } made an empty object).
REFRESH = {
    "surveyDetailResponse": {},
    "showtimesResponse": {
        "showtimeId": "ST-20260214-1930-AMC4",
        "movieTitle": "The Last Frontier",
        "venueName": "AMC Loews Broadway 4",
        "startTime": "2026-02-14T19:30:00Z",
        "products": [
            {
                "productId": "PROD-ADULT-001",
                "name": "Adult",
                "price": 14.99,
                "offers": [{"offerId": "OFFER-STD-001", "name": "Standard", "price": 14.99}],
            }
        ],
    },
    "maxTicketQuantity": 10,
    "agePolicyLink": {"url": "https://www.atomtickets.com/age-policy", "label": "Age Policy"},
}  # noqa: E501
LAYOUT = {
    "layoutArea": {
        "rows": [
            {
                "rowLabel": "A",
                "seats": [
                    {"seatId": "A1", "label": "A1", "status": "available", "seatType": "standard"},
                    {"seatId": "A2", "label": "A2", "status": "available", "seatType": "standard"},
                    {"seatId": "A3", "label": "A3", "status": "occupied", "seatType": "standard"},
                ],
            }
        ]
    },
    "legend": [
        {"type": "standard", "label": "Standard", "color": "#4CAF50"},
        {"type": "premium", "label": "Premium", "color": "#FF9800"},
    ],
    "occupiedSeats": {"A3": {"firstName": "J", "lastName": "D"}},
    "recommendedSeats": ["A1", "A2"],
    "numAvailable": 42,
}  # noqa: E501
GUEST = {"authToken": TOKEN, "accountId": "GUEST-55012", "identityId": "ID-99201", "identityValue": "guest@example.com"}
AUTHENTICATE = {
    "token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJVU1ItODgyMzQifQ.signature",
    "accountId": "USR-88234",
    "identities": [{"identityId": "ID-44102", "identityValue": "moviefan@example.com", "type": "email"}],
    "customer": {"firstName": "Jane", "lastName": "Doe"},
    "atomToken": "atom-token-value",
    "privateKey": "private-key-value",
    "signupPromoId": "PROMO-SIGNUP-001",
}  # noqa: E501
LEASE = {"leaseDurationSeconds": 600}
PREVIEW = {
    "receipt": {
        "subtotal": 29.98,
        "serviceFee": 3.5,
        "tax": 2.7,
        "totalAmount": 36.18,
        "currency": "USD",
        "lineItems": [{"productName": "Adult", "quantity": 2, "unitPrice": 14.99, "subtotal": 29.98}],
    },
    "autoAddedItems": [],
}  # noqa: E501
CREATE = {"orderId": "ORD-12345", "eventId": "EVT-67890"}
STATUS = {"orderStatus": "fulfilled", "orderStatusReason": None, "orderStatusReasonCode": None}
SUMMARY = {
    "orderId": "ORD-12345",
    "eventId": "EVT-67890",
    "orderStatus": "fulfilled",
    "receipt": {"subtotal": 29.98, "serviceFee": 3.5, "tax": 2.7, "totalAmount": 36.18, "currency": "USD"},
    "venueInfo": {"name": "AMC Loews Broadway 4", "address": "1441 Third Street Promenade, Santa Monica, CA 90401"},
    "showtime": {"startTime": "2026-02-14T19:30:00Z", "auditorium": "Auditorium 7", "screenType": "IMAX"},
    "tickets": [
        {
            "seatLabel": "A1",
            "ticketType": "Adult",
            "price": 14.99,
            "vendorQrCodeData": "VNDR-QR-A1-ENC-7f8g9h0i1j2k3l4m5n6o",
            "vendorBookingId": "VNDR-BK-90210",
        },
        {
            "seatLabel": "A2",
            "ticketType": "Adult",
            "price": 14.99,
            "vendorQrCodeData": "VNDR-QR-A2-ENC-9k0l1m2n3o4p5q6r7s8t",
            "vendorBookingId": "VNDR-BK-90210",
        },
    ],
    "concessions": [],
}  # noqa: E501
CANCEL = {
    "orderId": "ORD-12345",
    "cancellationStatus": "cancelled",
    "refundAmount": 36.18,
    "cancellationReason": "Customer requested cancellation",
}  # noqa: E501

ORDER_PARAMETERS = {
    "orderParameters": {
        "lineItems": [{"productId": "PROD-ADULT-001", "offerId": "OFFER-STD-001", "quantity": 2}],
        "channel": "Partner",
        "clientVersion": "1.0.0",
        "clientRequestId": CLIENT_REQUEST_ID,
        "isGuestOrder": True,
        "paymentProcessor": "PartnerPay",
        "associateTags": {"affiliateName": "fever"},
    }
}  # noqa: E501


class Recorder:
    def __init__(self, answer: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answer, self.status, self.headers = answer, status, headers or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        content = self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode()
        return httpx.Response(self.status, content=content, headers=self.headers)

    @property
    def only(self) -> httpx.Request:
        assert len(self.requests) == 1
        return self.requests[0]


def activities(recorder: Recorder, **settings: Any) -> AtomActivities:
    config = AtomSettings(
        base_url="https://api-beta.atomtickets.com",
        api_key=API_KEY,
        device_id="partner-device-001",
        ad_id="partner-ad-001",
        affiliate_name="fever",
        campaign="spring-2026",
        **settings,
    )
    return AtomActivities(config, transport=httpx.MockTransport(recorder))


async def run(fn: Callable[..., Any], *args: Any) -> Any:
    return await ActivityEnvironment().run(fn, *args)


def assert_authenticated(request: httpx.Request) -> None:
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["X-Atom-AuthToken"] == TOKEN
    assert request.headers["X-Atom-DeviceId"] == "partner-device-001"
    assert request.headers["X-Atom-AdId"] == "partner-ad-001"
    assert len(request.headers["X-Atom-Timestamp"]) == len("2026-02-13T12:00:00Z")
    assert request.headers["X-Atom-Timestamp"].endswith("Z")
    # No signer configured: Atom's signature scheme is not public, so none is invented.
    assert "X-Atom-Signature" not in request.headers and "X-Atom-DeviceSignature" not in request.headers


def body(request: httpx.Request) -> Any:
    assert request.headers["Content-Type"] == "application/json"
    return json.loads(request.content)


async def test_checkout_refresh() -> None:
    rec = Recorder(REFRESH)
    event = await run(activities(rec).refresh_checkout, "ST-20260214-1930-AMC4", ["PARTNER10OFF"], ITEMS)
    request = rec.only
    assert (request.method, str(request.url)) == (
        "POST",
        "https://api-beta.atomtickets.com/ordering/v2/aggregation/checkout/refresh",
    )
    assert request.headers["x-api-key"] == API_KEY
    assert body(request) == {"showtimeId": "ST-20260214-1930-AMC4", "promotions": ["PARTNER10OFF"], "includeAreaCategory": True}
    assert event.title == "The Last Frontier" and event.venue == "AMC Loews Broadway 4"


async def test_checkout_refresh_rejects_unsold_offer_and_quantity() -> None:
    other = [AtomItem(product_id="PROD-ADULT-001", offer_id="OFFER-VIP", seat_ids=["A1"])]
    with pytest.raises(ApplicationError) as unsold:
        await run(activities(Recorder(REFRESH)).refresh_checkout, "ST-20260214-1930-AMC4", [], other)
    assert unsold.value.type == "OFFER_UNAVAILABLE" and unsold.value.non_retryable
    many = [AtomItem(product_id="PROD-ADULT-001", offer_id="OFFER-STD-001", quantity=11)]
    with pytest.raises(ApplicationError) as too_many:
        await run(activities(Recorder(REFRESH)).refresh_checkout, "ST-20260214-1930-AMC4", [], many)
    assert "allows 10" in too_many.value.message


async def test_seat_layout() -> None:
    rec = Recorder(LAYOUT)
    seats = await run(activities(rec).recommend_seats, "ST-20260214-1930-AMC4", 2)
    assert rec.only.method == "GET"
    assert str(rec.only.url) == (
        "https://api-beta.atomtickets.com/ordering/v1/discovery/auditoriums?showtimeId=ST-20260214-1930-AMC4&tickets=2"
    )
    assert rec.only.headers["x-api-key"] == API_KEY
    assert seats == ["A1", "A2"]


async def test_guest_account() -> None:
    rec = Recorder(GUEST)
    buyer = Buyer(email="guest@example.com", first_name="Jane", last_name="Doe")
    session = await run(activities(rec).create_guest_account, buyer)
    assert str(rec.only.url).endswith("/ordering/v1/customer/account/guest") and rec.only.method == "POST"
    assert rec.only.headers["x-api-key"] == API_KEY
    assert body(rec.only) == {
        "email": "guest@example.com",
        "firstName": "Jane",
        "lastName": "Doe",
        "attributionMap": {"affiliateName": "fever", "campaign": "spring-2026"},
    }
    assert session == ProviderSession(token=TOKEN, account_id="GUEST-55012")


async def test_authenticate() -> None:
    rec = Recorder(AUTHENTICATE)
    login = AtomLogin(identity_value="moviefan@example.com", password="userpassword123")
    session = await run(activities(rec).authenticate, login)
    assert str(rec.only.url).endswith("/ordering/v1/customer/account/authenticate") and rec.only.method == "POST"
    assert body(rec.only) == {"identityValue": "moviefan@example.com", "password": "userpassword123"}
    # authenticate answers `token` where the guest call answers `authToken`.
    assert session.token == AUTHENTICATE["token"] and session.account_id == "USR-88234"


async def test_lease() -> None:
    rec = Recorder(LEASE)
    hold = await run(activities(rec).lease, SESSION, ITEMS, CLIENT_REQUEST_ID)
    request = rec.only
    assert (request.method, request.url.path) == ("POST", "/ordering/v1/inventory/lease")
    assert_authenticated(request)
    assert body(request) == {
        "clientRequestId": CLIENT_REQUEST_ID,
        "leaseItems": [{"productId": "PROD-ADULT-001", "offerId": "OFFER-STD-001", "seatIds": ["A1", "A2"]}],
    }
    assert hold.seat_ids == ["A1", "A2"]


@pytest.mark.parametrize(
    ("name", "path", "answer"),
    [
        ("preview_order", "/ordering/v2/customer/orders/preview", PREVIEW),
        ("create_order", "/ordering/v1/customer/orders", CREATE),
    ],
)
async def test_preview_and_create_send_the_same_order_parameters(name: str, path: str, answer: Any) -> None:
    rec = Recorder(answer)
    result = await run(getattr(activities(rec), name), SESSION, ITEMS, CLIENT_REQUEST_ID, True)
    assert (rec.only.method, rec.only.url.path) == ("POST", path)
    assert_authenticated(rec.only)
    assert body(rec.only) == ORDER_PARAMETERS
    if name == "preview_order":
        assert (result.subtotal, result.fees, result.tax, result.total, result.currency) == (
            Decimal("29.98"),
            Decimal("3.5"),
            Decimal("2.7"),
            Decimal("36.18"),
            "USD",
        )
        assert result.lines[0].name == "Adult" and result.lines[0].quantity == 2
    else:
        assert (result.order_id, result.event_id) == ("ORD-12345", "EVT-67890")


async def test_order_status() -> None:
    rec = Recorder(STATUS)
    progress = await run(activities(rec).order_status, SESSION, "ORD-12345")
    assert (rec.only.method, rec.only.url.path) == ("GET", "/ordering/v1/customer/orders/ORD-12345/status")
    assert_authenticated(rec.only)
    assert progress.fulfilled and progress.status == "fulfilled"


async def test_order_status_in_progress_is_a_retryable_not_yet() -> None:
    rec = Recorder({"orderStatus": "processing", "orderStatusReason": None, "orderStatusReasonCode": None})
    with pytest.raises(ApplicationError) as pending:
        await run(activities(rec).order_status, SESSION, "ORD-12345")
    assert pending.value.type == "ORDER_PENDING" and not pending.value.non_retryable


async def test_order_summary() -> None:
    rec = Recorder(SUMMARY)
    summary = await run(activities(rec).order_summary, SESSION, "ORD-12345")
    assert (rec.only.method, rec.only.url.path) == ("GET", "/ordering/v2/customer/orders/ORD-12345/summary")
    assert_authenticated(rec.only)
    assert summary.fulfilled and summary.receipt is not None and summary.receipt.total == Decimal("36.18")
    assert [(t.seat, t.barcode, t.booking_id) for t in summary.tickets] == [
        ("A1", "VNDR-QR-A1-ENC-7f8g9h0i1j2k3l4m5n6o", "VNDR-BK-90210"),
        ("A2", "VNDR-QR-A2-ENC-9k0l1m2n3o4p5q6r7s8t", "VNDR-BK-90210"),
    ]


async def test_cancel_order_uses_the_documented_path() -> None:
    rec = Recorder(CANCEL)
    cancelled = await run(activities(rec).cancel_order, SESSION, "ORD-12345")
    # As documented: /v1/customer/orders/{id}, without the /ordering prefix of the other calls.
    assert (rec.only.method, str(rec.only.url)) == ("DELETE", "https://api-beta.atomtickets.com/v1/customer/orders/ORD-12345")
    assert_authenticated(rec.only)
    assert cancelled.status == "cancelled" and cancelled.refund_amount == Decimal("36.18")


async def test_pluggable_signer_signs_the_bytes_sent() -> None:
    rec = Recorder(LEASE)
    acts = activities(rec, signer="tests.test_atom_activities:example_signer")
    await run(acts.lease, SESSION, ITEMS, CLIENT_REQUEST_ID)
    assert rec.only.headers["X-Atom-Signature"] == f"POST /ordering/v1/inventory/lease {len(rec.only.content)}"
    assert rec.only.headers["X-Atom-DeviceSignature"] == "partner-device-001"


def example_signer(settings: AtomSettings) -> Callable[[str, str, bytes], dict[str, str]]:
    def sign(method: str, path: str, content: bytes) -> dict[str, str]:
        return {"X-Atom-Signature": f"{method} {path} {len(content)}", "X-Atom-DeviceSignature": settings.device_id}

    return sign


async def test_lease_conflict_is_a_typed_business_error() -> None:
    rec = Recorder({"errorCode": "SEAT_UNAVAILABLE", "message": "A2 taken"}, status=409, headers={"x-amzn-requestid": "trace-77"})
    with pytest.raises(ApplicationError) as err:
        await run(activities(rec).lease, SESSION, ITEMS, CLIENT_REQUEST_ID)
    assert err.value.type == "SEAT_UNAVAILABLE" and err.value.non_retryable
    assert err.value.details[0] == {
        "provider": "atom",
        "status": 409,
        "code": "SEAT_UNAVAILABLE",
        "trace_id": "trace-77",
        "attempt": 1,
    }  # a refusal of the first attempt: nothing was done


async def test_duplicate_client_request_id_is_typed() -> None:
    rec = Recorder({"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "finished"}, status=409)
    with pytest.raises(ApplicationError) as err:
        await run(activities(rec).create_order, SESSION, ITEMS, CLIENT_REQUEST_ID, True)
    assert err.value.type == "DUPLICATE_REQUEST" and err.value.non_retryable
