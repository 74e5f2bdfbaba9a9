"""Atom Tickets ordering API (../shared/provider-docs/atom-ordering-examples.txt): every endpoint of
the excerpt, with its exact paths, headers and bodies."""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar, cast

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http import (
    ActivitiesPerSecond,
    ProviderHttp,
    Signer,
    attempt_timeout,
    not_yet,
    own_queue,
    utc_now,
)
from workflows.models import (
    AtomItem,
    AtomLogin,
    Buyer,
    EventInfo,
    FailureReason,
    Hold,
    OrderCancellation,
    OrderProgress,
    OrderSummary,
    ProviderOrder,
    ProviderSession,
    PurchasePolicy,
    Receipt,
    ReceiptLine,
    Ticket,
)

FULFILLED = "fulfilled"
# Assumed (FACTS.md): only "fulfilled" is success; these end an order without it. Any other
# status is taken as still in progress and polled again.
UNFULFILLED_FINAL = frozenset({"failed", "cancelled", "canceled", "rejected", "refunded", "expired"})


class AtomSettings(BaseSettings):
    """From BOXOFFICE_ATOM_*. No defaults for where and who: unset (or empty), the worker does not
    serve Atom; `boxoffice dev` sets the simulator's (workers/devstack.py)."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_ATOM_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_key")

    base_url: str = ""
    api_key: SecretStr = SecretStr("")
    device_id: str = "boxoffice"
    ad_id: str | None = None
    channel: str = "Partner"
    client_version: str = "1.0.0"
    payment_processor: str = "PartnerPay"
    # Attribution sent as attributionMap (guest account; an empty map when unset) and associateTags
    # (preview, create).
    affiliate_name: str | None = None
    campaign: str | None = None
    # "package.module:factory": factory(settings) returns a Signer for X-Atom-Signature /
    # X-Atom-DeviceSignature. Atom does not publish how those are computed, so off unless set.
    signer: str | None = None
    timeout_seconds: float = Field(default=10, gt=0)
    # Atom beta allows 25 requests/s (bursts to 50): queue above that instead of meeting 429s. `off`
    # trades that for latency (calls on the workflow's queue, local where a re-run is harmless).
    activities_per_second: ActivitiesPerSecond = 25
    # Atom beta's documented burst: the most its limit lets through at once.
    requests_burst: int | None = Field(default=50, gt=0)
    poll_interval_seconds: float = Field(default=2, gt=0)
    poll_budget_seconds: float = Field(default=10, gt=0)
    hold_margin_seconds: float = Field(default=30, ge=0)

    @model_validator(mode="after")
    def _budget_covers_interval(self) -> AtomSettings:
        if self.poll_budget_seconds < self.poll_interval_seconds:
            raise ValueError("poll_budget_seconds must be at least poll_interval_seconds")
        return self


def load_signer(settings: AtomSettings) -> Signer | None:
    if not settings.signer:
        return None
    module, _, factory = settings.signer.partition(":")
    return cast(Signer, getattr(importlib.import_module(module), factory)(settings))


# -- wire formats (accept the excerpt's examples verbatim; unknown fields are kept) ----------------


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class Offer(Wire):
    offer_id: str
    name: str | None = None
    price: Decimal | None = None


class Product(Wire):
    product_id: str
    name: str | None = None
    price: Decimal | None = None
    offers: list[Offer] = Field(default_factory=list)


class ShowtimesResponse(Wire):
    showtime_id: str
    movie_title: str | None = None
    venue_name: str | None = None
    start_time: str | None = None
    products: list[Product] = Field(default_factory=list)


class CheckoutRefreshResponse(Wire):
    showtimes_response: ShowtimesResponse
    max_ticket_quantity: int | None = None


class SeatLayoutResponse(Wire):
    recommended_seats: list[str] = Field(default_factory=list)
    num_available: int | None = None


class GuestAccountResponse(Wire):
    auth_token: str
    account_id: str


class AuthenticateResponse(Wire):
    token: str
    account_id: str


class LeaseResponse(Wire):
    lease_duration_seconds: int


class AtomReceiptLine(Wire):
    product_name: str
    quantity: int
    unit_price: Decimal
    subtotal: Decimal


class AtomReceipt(Wire):
    subtotal: Decimal
    service_fee: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    total_amount: Decimal
    currency: str
    line_items: list[AtomReceiptLine] = Field(default_factory=list)

    def to_receipt(self) -> Receipt:
        return Receipt(
            subtotal=self.subtotal,
            fees=self.service_fee,
            tax=self.tax,
            total=self.total_amount,
            currency=self.currency,
            lines=[
                ReceiptLine(name=l.product_name, quantity=l.quantity, unit_price=l.unit_price, subtotal=l.subtotal)
                for l in self.line_items
            ],
        )


class PreviewResponse(Wire):
    receipt: AtomReceipt


class CreateOrderResponse(Wire):
    order_id: str
    event_id: str | None = None


class OrderStatusResponse(Wire):
    order_status: str
    order_status_reason: str | None = None
    order_status_reason_code: str | None = None


class AtomTicket(Wire):
    seat_label: str
    ticket_type: str | None = None
    price: Decimal | None = None
    vendor_qr_code_data: str
    vendor_booking_id: str | None = None


class OrderSummaryResponse(Wire):
    order_id: str
    order_status: str
    receipt: AtomReceipt | None = None
    tickets: list[AtomTicket] = Field(default_factory=list)


class CancelOrderResponse(Wire):
    order_id: str
    cancellation_status: str
    refund_amount: Decimal | None = None
    cancellation_reason: str | None = None


# -- activities ------------------------------------------------------------------------------------


class AtomActivities:
    name = "atom"

    def __init__(self, settings: AtomSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = ProviderHttp(
            "atom",
            settings.base_url,
            timeout=settings.timeout_seconds,
            secrets=[settings.api_key.get_secret_value()],
            transport=transport,
        )
        self._sign = load_signer(settings)

    async def aclose(self) -> None:
        await self.http.aclose()

    def all(self) -> list[Any]:
        return [
            self.policy,
            self.refresh_checkout,
            self.recommend_seats,
            self.create_guest_account,
            self.authenticate,
            self.lease,
            self.preview_order,
            self.create_order,
            self.order_status,
            self.order_summary,
            self.cancel_order,
        ]

    def _headers(self, session: ProviderSession | None = None) -> dict[str, str]:
        headers = {"x-api-key": self.settings.api_key.get_secret_value()}
        if session is not None:
            headers["X-Atom-Timestamp"] = utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
            headers["X-Atom-AuthToken"] = session.token
            headers["X-Atom-DeviceId"] = self.settings.device_id
            if self.settings.ad_id:
                headers["X-Atom-AdId"] = self.settings.ad_id
        return headers

    async def _call(self, method: str, path: str, session: ProviderSession | None = None, **kwargs: Any) -> Any:
        return await self.http.request(
            method, path, headers=lambda: self._headers(session), sign=self._sign if session else None, **kwargs
        )

    def _order_parameters(self, items: list[AtomItem], client_request_id: str, is_guest: bool) -> dict[str, Any]:
        parameters: dict[str, Any] = {
            "lineItems": [{"productId": item.product_id, "offerId": item.offer_id, "quantity": item.count} for item in items],
            "channel": self.settings.channel,
            "clientVersion": self.settings.client_version,
            "clientRequestId": client_request_id,
            "isGuestOrder": is_guest,
            "paymentProcessor": self.settings.payment_processor,
        }
        if self.settings.affiliate_name:
            parameters["associateTags"] = {"affiliateName": self.settings.affiliate_name}
        return {"orderParameters": parameters}

    @activity.defn(name="atom.policy")
    async def policy(self) -> PurchasePolicy:
        return PurchasePolicy(
            call_timeout_seconds=attempt_timeout(self.settings.timeout_seconds),
            activity_task_queue=own_queue(self.name, self.settings.activities_per_second),
            local_calls=self.http.local_calls,
            poll_interval_seconds=self.settings.poll_interval_seconds,
            poll_budget_seconds=self.settings.poll_budget_seconds,
            hold_margin_seconds=self.settings.hold_margin_seconds,
        )

    @activity.defn(name="atom.refresh_checkout")
    async def refresh_checkout(self, showtime_id: str, promotions: list[str], items: list[AtomItem]) -> EventInfo:
        """Opens the checkout and checks that every product/offer is sold and the quantity allowed."""
        body = {"showtimeId": showtime_id, "promotions": promotions, "includeAreaCategory": True}
        data = await self._call(
            "POST",
            "/ordering/v2/aggregation/checkout/refresh",
            json_body=body,
            errors={404: FailureReason.OFFER_UNAVAILABLE},
        )
        checkout = self.http.parse(CheckoutRefreshResponse, data, "checkout refresh")
        offers = {
            (product.product_id, offer.offer_id) for product in checkout.showtimes_response.products for offer in product.offers
        }
        missing = [f"{i.product_id}/{i.offer_id}" for i in items if (i.product_id, i.offer_id) not in offers]
        if missing:
            raise ApplicationError(
                f"atom: showtime {showtime_id} does not sell {', '.join(missing)}",
                type=FailureReason.OFFER_UNAVAILABLE,
                non_retryable=True,
            )
        wanted = sum(item.count for item in items)
        if checkout.max_ticket_quantity is not None and wanted > checkout.max_ticket_quantity:
            raise ApplicationError(
                f"atom: {wanted} tickets wanted, showtime allows {checkout.max_ticket_quantity}",
                type=FailureReason.OFFER_UNAVAILABLE,
                non_retryable=True,
            )
        showtime = checkout.showtimes_response
        return EventInfo(title=showtime.movie_title, venue=showtime.venue_name, starts_at=showtime.start_time)

    @activity.defn(name="atom.recommend_seats")
    async def recommend_seats(self, showtime_id: str, tickets: int) -> list[str]:
        data = await self._call(
            "GET", "/ordering/v1/discovery/auditoriums", params={"showtimeId": showtime_id, "tickets": tickets}
        )
        return self.http.parse(SeatLayoutResponse, data, "seat layout").recommended_seats

    @activity.defn(name="atom.create_guest_account")
    async def create_guest_account(self, buyer: Buyer) -> ProviderSession:
        """A retry creates another account: the guest account page documents no idempotency key,
        no password (so no sign-in to an earlier one), no lookup and no delete
        (partner-docs-95q.pages.dev/api/ordering, llms-full.txt). Each earlier attempt is counted
        as an account of unknown id holding the buyer's name and email, for the workflow to name."""
        # attributionMap is required (partner-docs-95q.pages.dev/models/ordering): always sent, empty
        # when no attribution is configured (assumed accepted: the docs set no minimum).
        attribution = {"affiliateName": self.settings.affiliate_name, "campaign": self.settings.campaign}
        body: dict[str, Any] = {
            "email": buyer.email,
            "firstName": buyer.first_name,
            "lastName": buyer.last_name,
            "attributionMap": {k: v for k, v in attribution.items() if v},
        }
        data = await self._call("POST", "/ordering/v1/customer/account/guest", json_body=body)
        account = self.http.parse(GuestAccountResponse, data, "guest account")
        # Outside an activity (bench/throughput.py's direct calls) there is no earlier attempt.
        earlier = activity.info().attempt - 1 if activity.in_activity() else 0
        return ProviderSession(token=account.auth_token, account_id=account.account_id, unknown_attempts=earlier)

    @activity.defn(name="atom.authenticate")
    async def authenticate(self, login: AtomLogin) -> ProviderSession:
        body = {"identityValue": login.identity_value, "password": login.password}
        data = await self._call(
            "POST",
            "/ordering/v1/customer/account/authenticate",
            json_body=body,
            errors={400: FailureReason.AUTHENTICATION_FAILED, 404: FailureReason.AUTHENTICATION_FAILED},
        )
        account = self.http.parse(AuthenticateResponse, data, "authenticate")
        return ProviderSession(token=account.token, account_id=account.account_id)

    @activity.defn(name="atom.lease")
    async def lease(self, session: ProviderSession, items: list[AtomItem], client_request_id: str) -> Hold:
        body = {
            "clientRequestId": client_request_id,
            "leaseItems": [{"productId": item.product_id, "offerId": item.offer_id, "seatIds": item.seat_ids} for item in items],
        }
        # The lease runs from before the request is sent: the expiry we keep is never late.
        sent_at = utc_now()
        data = await self._call(
            "POST",
            "/ordering/v1/inventory/lease",
            session,
            json_body=body,
            errors={409: FailureReason.SEAT_UNAVAILABLE, 410: FailureReason.SEAT_UNAVAILABLE},
            codes={"DUPLICATE_CLIENT_REQUEST_ID": FailureReason.DUPLICATE_REQUEST},
        )
        lease = self.http.parse(LeaseResponse, data, "lease")
        return Hold(
            expires_at=sent_at + timedelta(seconds=lease.lease_duration_seconds),
            seat_ids=[seat for item in items for seat in item.seat_ids],
        )

    @activity.defn(name="atom.preview_order")
    async def preview_order(
        self, session: ProviderSession, items: list[AtomItem], client_request_id: str, is_guest: bool
    ) -> Receipt:
        data = await self._call(
            "POST",
            "/ordering/v2/customer/orders/preview",
            session,
            json_body=self._order_parameters(items, client_request_id, is_guest),
            errors={409: FailureReason.SEAT_UNAVAILABLE, 410: FailureReason.HOLD_EXPIRED},
            codes={"LEASE_EXPIRED": FailureReason.HOLD_EXPIRED, "DUPLICATE_CLIENT_REQUEST_ID": FailureReason.DUPLICATE_REQUEST},
        )
        return self.http.parse(PreviewResponse, data, "preview").receipt.to_receipt()

    @activity.defn(name="atom.create_order")
    async def create_order(
        self, session: ProviderSession, items: list[AtomItem], client_request_id: str, is_guest: bool
    ) -> ProviderOrder:
        """A repeat with the same clientRequestId answers DUPLICATE_CLIENT_REQUEST_ID once the first
        placed an order (partner-docs-95q.pages.dev/guides/ordering), not the order: the workflow reads
        that answer (workflows/atom.py)."""
        data = await self._call(
            "POST",
            "/ordering/v1/customer/orders",
            session,
            json_body=self._order_parameters(items, client_request_id, is_guest),
            errors={
                402: FailureReason.PAYMENT_FAILED,
                409: FailureReason.SEAT_UNAVAILABLE,
                410: FailureReason.HOLD_EXPIRED,
            },
            codes={
                "LEASE_EXPIRED": FailureReason.HOLD_EXPIRED,
                "DUPLICATE_CLIENT_REQUEST_ID": FailureReason.DUPLICATE_REQUEST,
                "PAYMENT_DECLINED": FailureReason.PAYMENT_FAILED,
            },
        )
        order = self.http.parse(CreateOrderResponse, data, "create order")
        return ProviderOrder(order_id=order.order_id, event_id=order.event_id)

    @activity.defn(name="atom.order_status")
    async def order_status(self, session: ProviderSession, order_id: str) -> OrderProgress:
        """One poll: raises `not_yet` while the order is in progress."""
        data = await self._call("GET", f"/ordering/v1/customer/orders/{order_id}/status", session)
        status = self.http.parse(OrderStatusResponse, data, "order status")
        if status.order_status != FULFILLED and status.order_status.lower() not in UNFULFILLED_FINAL:
            raise not_yet(f"atom: order {order_id} is {status.order_status}")
        return OrderProgress(
            status=status.order_status,
            fulfilled=status.order_status == FULFILLED,
            reason=status.order_status_reason,
            reason_code=status.order_status_reason_code,
        )

    @activity.defn(name="atom.order_summary")
    async def order_summary(self, session: ProviderSession, order_id: str) -> OrderSummary:
        data = await self._call("GET", f"/ordering/v2/customer/orders/{order_id}/summary", session)
        summary = self.http.parse(OrderSummaryResponse, data, "order summary")
        return OrderSummary(
            order_id=summary.order_id,
            status=summary.order_status,
            fulfilled=summary.order_status == FULFILLED,
            receipt=summary.receipt.to_receipt() if summary.receipt else None,
            tickets=[
                Ticket(
                    seat=t.seat_label,
                    barcode=t.vendor_qr_code_data,
                    ticket_type=t.ticket_type,
                    price=t.price,
                    booking_id=t.vendor_booking_id,
                )
                for t in summary.tickets
            ],
        )

    @activity.defn(name="atom.cancel_order")
    async def cancel_order(self, session: ProviderSession, order_id: str) -> OrderCancellation:
        # The documented path has no /ordering prefix, unlike every other call.
        data = await self._call("DELETE", f"/v1/customer/orders/{order_id}", session)
        cancelled = self.http.parse(CancelOrderResponse, data, "cancel order")
        return OrderCancellation(
            order_id=cancelled.order_id, status=cancelled.cancellation_status, refund_amount=cancelled.refund_amount
        )
