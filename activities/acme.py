"""ACME Ticketing (../shared/provider-docs/acme-b2c-orders.txt, FACTS.md, and the public pages on
developers.acmeticketing.com): reservations, carts, checkout with `x-acme-request-uuid`, and order
management (search, by event, get, update, delete, refund). Amounts are strings in ACME's JSON;
they are parsed as decimals.

Documented and followed: the Reservation Object (integer `id`, `expirationTimestamp`;
POST, GET by id, PUT, DELETE, no list), the CheckoutInput's top-level Order Contact
(`contactFirstName`, `contactLastName`, `email`) and billing contact (the billing email sends the
order confirmation), the Refund Input (`incidentReasonCode` `Cancelled Event` | `Miscellaneous`,
`refundItems[].ticketUUIDs`) and Refund Result (`incidentNumber`, `refundAmount`, `order`).

*Assumed* where the pages are silent: the cart answer's amounts, the checkout's `reservationId`,
`payment.cardToken` and `notes`, and the error body `{errorCode|code, message}`.

reCAPTCHA: ACME requires every B2C checkout to carry the buyer's Google reCAPTCHA token, made by
Google's JS in the buyer's browser and relayed by the integrator's server (developers 33000250711,
support 33000248940). Where it travels is *assumed*: the pages' header list could not be read, and a
public ACME client (Barnes Foundation's) sends it as the `x-acme-captcha-token` header; the setting
`recaptcha_header` changes it. The request uuid
is written into the order's `notes`, so a checkout whose answer was lost can be found again by the
documented search by e-mail (every page of it).

Not findable: a reservation whose answer was lost. Nothing documented lists reservations or takes
a client reference (`x-acme-request-uuid` guards checkout calls only, and a 409 would not give the
id back), and GET and DELETE need the id that was lost: a retry reserves again and the lost one
holds its seats until its `expirationTimestamp`. What is bounded instead: every earlier attempt
counts as one such reservation (`Hold.unknown_attempts`; an attempt answered 5xx is counted too, the
next attempt cannot tell how it ended), and each expires no later than the retry's own (the pages:
reservations hold "approximately 10 mins"; *assumed*: a lost request reached ACME before its retry,
and the hold length is the same for both). The workflow names them and waits them out before a
failed or cancelled purchase says its seats are free (workflows/acme.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http import ActivitiesPerSecond, ProviderHttp, ProviderTimestamp, attempt_timeout, own_queue
from workflows.models import (
    AcmePurchaseRequest,
    FailureReason,
    Hold,
    OrderRecord,
    OrdersPage,
    OrdersQuery,
    PurchasePolicy,
    Receipt,
    RefundRequest,
    RefundResult,
    Ticket,
)

CODES = {
    "16003": FailureReason.DUPLICATE_REQUEST,  # DUPLICATE_TRANSACTION_FOUND: same card + amount within 5 min
    "DUPLICATE_TRANSACTION_FOUND": FailureReason.DUPLICATE_REQUEST,
    "PAYMENT_DECLINED": FailureReason.PAYMENT_FAILED,
    "SOLD_OUT": FailureReason.SEAT_UNAVAILABLE,
    "RESERVATION_EXPIRED": FailureReason.HOLD_EXPIRED,
}
SEARCH_PAGE_SIZE = 100
NORMAL = "Normal"  # ticketStatus: Normal, Rebook, Refund or Void


class AcmeSettings(BaseSettings):
    """From BOXOFFICE_ACME_*. No defaults for where and who: unset (or empty), the worker does not
    serve ACME; `boxoffice dev` sets the simulator's (workers/devstack.py)."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_ACME_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "tenant_id", "api_key")

    base_url: str = ""
    tenant_id: str = ""
    api_key: SecretStr = SecretStr("")
    timeout_seconds: float = Field(default=10, gt=0)
    # Activity tasks per second the provider's task queue hands out, across all workers. Unset: no limit.
    activities_per_second: ActivitiesPerSecond = None
    hold_margin_seconds: float = Field(default=30, ge=0)
    # Where checkout carries the reCAPTCHA token: *assumed* (module docstring).
    recaptcha_header: str = Field(default="x-acme-captcha-token", min_length=1)


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class Reservation(Wire):
    id: int | str  # an integer in the Reservation Object sample (10754)
    expiration_timestamp: ProviderTimestamp


class Cart(Wire):
    id: str
    subtotal: Decimal | None = None
    fees: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    total: Decimal | None = None
    currency: str = "USD"


class TicketVo(Wire):
    id: int | str | None = None
    uuid: str
    ticket_status: str | None = None
    notes: str | None = None


class OrderItem(Wire):
    item_id: str
    event_id: str | None = None
    event_name: str | None = None
    ticketing_type_name: str | None = None
    display_name: str | None = None
    quantity: int = 0
    unit_price: Decimal | None = None
    amount: Decimal | None = None
    item_type: str | None = None
    ticket_vos: list[TicketVo] = Field(default_factory=list)


class Order(Wire):
    id: str
    order_number: str | None = None
    email: str | None = None
    total_amount: Decimal | None = None
    paid_amount: Decimal | None = None
    refund_amount: Decimal | None = None
    notes: str | None = None
    created_on: str | None = None
    order_items: list[OrderItem] = Field(default_factory=list)

    def tickets(self) -> list[Ticket]:
        return [
            Ticket(
                seat=item.ticketing_type_name or item.display_name or item.item_id,
                barcode=vo.uuid,
                ticket_type=item.event_name,
                price=item.unit_price,
                booking_id=self.order_number,
            )
            for item in self.order_items
            for vo in item.ticket_vos
        ]

    def record(self) -> OrderRecord:
        return OrderRecord(
            order_id=self.id,
            order_number=self.order_number,
            email=self.email,
            total=self.total_amount,
            refunded=self.refund_amount,
            created_on=self.created_on,
            tickets=self.tickets(),
        )


class Pagination(Wire):
    page: int = 1
    has_more: bool = False


class OrderList(Wire):
    orders: list[Order] = Field(default_factory=list, alias="list")
    pagination: Pagination = Pagination()


class RefundAnswer(Wire):
    """The Refund Result object."""

    incident_number: int | str | None = None
    refund_amount: Decimal | None = None
    order: Order | None = None


class AcmeActivities:
    name = "acme"

    def __init__(self, settings: AcmeSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = ProviderHttp(
            "acme",
            settings.base_url,
            timeout=settings.timeout_seconds,
            secrets=[settings.api_key.get_secret_value()],
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def all(self) -> list[Any]:
        return [
            self.policy,
            self.reserve,
            self.release_reservation,
            self.create_cart,
            self.checkout,
            self.find_checkout,
            self.search_orders,
            self.get_order,
            self.update_order,
            self.delete_order,
            self.plan_refund,
            self.refund,
        ]

    async def _call(self, method: str, path: str, checkout: Mapping[str, str] | None = None, **kwargs: Any) -> Any:
        """`checkout`: the headers only checkout takes (browser IP, request uuid)."""
        headers = {"x-b2c-tenant-id": self.settings.tenant_id, "x-acme-api-key": self.settings.api_key.get_secret_value()}
        return await self.http.request(method, path, headers={**headers, **(checkout or {})}, codes=CODES, **kwargs)

    async def _order(self, order_id: str) -> Order:
        return self.http.parse(Order, await self._call("GET", f"/v2/b2c/orders/{order_id}"), "get order")

    @activity.defn(name="acme.policy")
    async def policy(self) -> PurchasePolicy:
        return PurchasePolicy(
            call_timeout_seconds=attempt_timeout(self.settings.timeout_seconds),
            activity_task_queue=own_queue(self.name, self.settings.activities_per_second),
            local_calls=self.http.local_calls,
            hold_margin_seconds=self.settings.hold_margin_seconds,
        )

    @activity.defn(name="acme.reserve")
    async def reserve(self, request: AcmePurchaseRequest) -> Hold:
        """A retry reserves again: nothing documented finds the reservation of an attempt whose
        answer was lost (module docstring). The earlier attempts are counted as reservations of
        unknown id, lapsing by this one's `expirationTimestamp`."""
        body = {"reservationItems": [{"eventId": i.event_id, "quantity": i.quantity} for i in request.items]}
        data = await self._call("POST", "/v2/b2b/reservations", json_body=body, errors={409: FailureReason.SEAT_UNAVAILABLE})
        reservation = self.http.parse(Reservation, data, "create reservation")
        return Hold(
            expires_at=reservation.expiration_timestamp,
            item_ids=[str(reservation.id)],
            unknown_attempts=activity.info().attempt - 1,
        )

    @activity.defn(name="acme.release_reservation")
    async def release_reservation(self, reservation_id: str) -> str:
        try:
            await self._call("DELETE", f"/v2/b2b/reservations/{reservation_id}")
        except ApplicationError as err:
            if not err.details or err.details[0].get("status") != 404:
                raise
            return f"reservation {reservation_id} already gone"  # expired, or used by the checkout
        return f"reservation {reservation_id} deleted"

    @activity.defn(name="acme.create_cart")
    async def create_cart(self, request: AcmePurchaseRequest) -> tuple[str, Receipt]:
        """The shopping cart page lists the create answer as the "Shopping Cart ID": a bare id is
        read back (GET) for its amounts (*assumed* field names)."""
        body = {
            "items": [
                {"eventId": i.event_id, "ticketingTypeId": i.ticketing_type_id, "quantity": i.quantity} for i in request.items
            ]
        }
        data = await self._call("POST", "/v2/b2c/carts", json_body=body)
        if isinstance(data, str | int):
            data = await self._call("GET", f"/v2/b2c/carts/{data}")
        cart = self.http.parse(Cart, data, "create cart")
        total = cart.total if cart.total is not None else Decimal(0)
        subtotal = cart.subtotal if cart.subtotal is not None else total
        return cart.id, Receipt(subtotal=subtotal, fees=cart.fees, tax=cart.tax, total=total, currency=cart.currency)

    @activity.defn(name="acme.checkout")
    async def checkout(
        self, request: AcmePurchaseRequest, cart_id: str, reservation_id: str, request_uuid: str, card_token: str | None
    ) -> OrderRecord:
        """`x-acme-request-uuid` makes a repeat answer 409; then the order placed by the first
        attempt is fetched instead of failing. A retry repeats the reCAPTCHA token: should ACME
        refuse it as stale, that refusal of a later attempt leaves the outcome unknown, and the
        workflow reads back by the request uuid."""
        token = request.recaptcha_token
        if not token:
            # Refused before anything is sent: ACME requires it on every B2C checkout.
            raise ApplicationError(
                "acme: checkout needs the buyer's Google reCAPTCHA token (recaptcha_token in the request or the confirm update)",
                type=FailureReason.RECAPTCHA_REQUIRED,
                non_retryable=True,
            )
        buyer = request.buyer
        body: dict[str, Any] = {
            "shoppingCartId": cart_id,
            # The Reservation Object's id is an integer.
            "reservationId": int(reservation_id) if reservation_id.isdigit() else reservation_id,
            # The Order Contact, and the billing contact: its e-mail sends the order confirmation.
            "contactFirstName": buyer.first_name,
            "contactLastName": buyer.last_name,
            "email": buyer.email,
            "billingFirstName": buyer.first_name,
            "billingLastName": buyer.last_name,
            "billingEmail": buyer.email,
            "notes": f"boxoffice purchase {request.purchase_id} request {request_uuid}",
        }
        if buyer.phone:
            body["phoneNumber"] = body["billingPhoneNumber"] = buyer.phone
        if card_token:
            body["payment"] = {"cardToken": card_token}
        try:
            checkout = {
                "x-acme-browser-ip": str(request.browser_ip),
                "x-acme-request-uuid": request_uuid,
                self.settings.recaptcha_header: token,
            }
            data = await self._call(
                "POST",
                "/v2/b2c/checkout",
                checkout,
                json_body=body,
                secrets=[token],
                errors={402: FailureReason.PAYMENT_FAILED, 410: FailureReason.HOLD_EXPIRED},
            )
        except ApplicationError as err:
            if not err.details or err.details[0].get("status") != 409 or err.type != FailureReason.PROVIDER_REJECTED:
                raise
            found = await self._find_checkout(request.buyer.email, request_uuid)
            if found is None:
                raise ApplicationError(
                    f"acme: checkout {request_uuid} answered 409 but no order carries it", type=FailureReason.PROVIDER_ERROR
                ) from None
            return found
        return self.http.parse(Order, data, "checkout").record()

    @activity.defn(name="acme.find_checkout")
    async def find_checkout(self, email: str, request_uuid: str) -> OrderRecord | None:
        """The order a checkout with `request_uuid` placed, or None: the read-back after a
        checkout whose outcome is unknown."""
        return await self._find_checkout(email, request_uuid)

    async def _find_checkout(self, email: str, request_uuid: str) -> OrderRecord | None:
        """From the documented search by e-mail, newest first, page by page: a buyer with many
        orders may have this one beyond the first page (and a server may cap `pageSize=-1`)."""
        page = 1
        while True:
            params = {
                "email": email,
                "sortField": "createdOn",
                "sortDirection": "desc",
                "page": page,
                "pageSize": SEARCH_PAGE_SIZE,
            }
            found = self.http.parse(OrderList, await self._call("GET", "/v2/b2c/orders/search", params=params), "search orders")
            match = next((o for o in found.orders if o.notes and request_uuid in o.notes), None)
            if match is not None:
                return (await self._order(match.id)).record()
            if not found.orders or not found.pagination.has_more:
                return None
            page += 1

    @activity.defn(name="acme.search_orders")
    async def search_orders(self, query: OrdersQuery) -> OrdersPage:
        if query.order_id:
            return OrdersPage(orders=[(await self._order(query.order_id)).record()])
        params: dict[str, Any]
        if query.event_id:
            path, params = f"/v2/b2c/orders/event/{query.event_id}", {}
        else:
            path = "/v2/b2c/orders/search"
            params = {"email": query.email} if query.email else {"phoneNumber": query.phone}
        params |= {"page": query.page, "pageSize": query.page_size, "sortField": "createdOn", "sortDirection": "desc"}
        found = self.http.parse(OrderList, await self._call("GET", path, params=params), "list orders")
        return OrdersPage(
            orders=[o.record() for o in found.orders], page=found.pagination.page, has_more=found.pagination.has_more
        )

    @activity.defn(name="acme.get_order")
    async def get_order(self, order_id: str) -> OrderRecord:
        return (await self._order(order_id)).record()

    @activity.defn(name="acme.update_order")
    async def update_order(self, order_id: str, changes: dict[str, Any]) -> OrderRecord:
        """PUT takes the whole Order object: read it, apply `changes` (wire field names), send it."""
        current = await self._call("GET", f"/v2/b2c/orders/{order_id}")
        data = await self._call("PUT", f"/v2/b2c/orders/{order_id}", json_body={**current, **changes})
        return self.http.parse(Order, data, "update order").record()

    @activity.defn(name="acme.delete_order")
    async def delete_order(self, order_id: str) -> None:
        try:
            await self._call("DELETE", f"/v2/b2c/orders/{order_id}")
        except ApplicationError as err:
            # Gone on a retry: the earlier attempt, whose answer was lost, deleted it.
            if activity.info().attempt == 1 or not err.details or err.details[0].get("status") != 404:
                raise

    @activity.defn(name="acme.plan_refund")
    async def plan_refund(self, request: RefundRequest) -> RefundRequest:
        """The request with the tickets its `items` repay, chosen once (RefundWorkflow records
        them), so every attempt of the refund means the same tickets."""
        return request.model_copy(update={"tickets": _pick_tickets(await self._order(request.order_id), request.items)})

    @activity.defn(name="acme.refund")
    async def refund(self, request: RefundRequest) -> RefundResult:
        """Idempotent by what the refund page documents: tickets named in `ticketUUIDs` take the
        status Refund. A full refund repays what is not refunded yet (nothing left: an earlier
        attempt did it); a partial one repays its chosen `tickets`, those already refunded were
        repaid by an earlier attempt whose answer was lost."""
        order = await self._order(request.order_id)
        total = order.total_amount or Decimal(0)
        tickets = request.tickets
        if request.items and not tickets:
            # A RefundWorkflow started before plan_refund: tickets chosen now cannot tell a lost
            # earlier attempt's tickets from others.
            if activity.info().attempt > 1:
                raise ApplicationError(
                    f"acme: partial refund of order {order.id}: an earlier attempt's outcome is "
                    "unknown; check the order's tickets before refunding again",
                    type=FailureReason.PROVIDER_ERROR,
                    non_retryable=True,
                )
            tickets = _pick_tickets(order, request.items)
        lines = _refund_lines(order, tickets) if request.items else _whole_refund_lines(order)
        if not lines:
            return RefundResult(order_id=order.id, refunded=order.refund_amount or Decimal(0), total=total, already_refunded=True)
        body = {
            "orderId": order.id,
            "incidentReasonCode": request.reason_code,
            "notes": request.notes,
            "noEmail": request.no_email,
            "refundItems": lines,
        }
        data = await self._call("POST", "/v2/b2b/b2b/refunds", json_body=body)  # the documented path, b2b twice
        answer = self.http.parse(RefundAnswer, data, "refund")
        after = answer.order or await self._order(request.order_id)
        return RefundResult(
            order_id=after.id,
            refunded=after.refund_amount or Decimal(0),
            total=total,
            incident_number=None if answer.incident_number is None else str(answer.incident_number),
            amount=answer.refund_amount,
        )


def _pick_tickets(order: Order, items: Mapping[str, int]) -> list[str]:
    """The first `quantity` unrefunded tickets of each item. An item without tickets (add-on,
    donation) cannot be checked after a lost answer, so it is refunded in full refunds only."""
    picked: list[str] = []
    for item_id, quantity in items.items():
        item = next((i for i in order.order_items if i.item_id == item_id), None)
        left = [vo.uuid for vo in item.ticket_vos if vo.ticket_status == NORMAL] if item else []
        if len(left) < quantity:
            raise ApplicationError(
                f"acme: order {order.id} item {item_id} has {len(left)} ticket(s) to refund, not {quantity}",
                type=FailureReason.PROVIDER_REJECTED,
                non_retryable=True,
            )
        picked += left[:quantity]
    return picked


def _refund_lines(order: Order, tickets: list[str]) -> list[dict[str, Any]]:
    """Refund items for the `tickets` not refunded yet."""
    lines = []
    for item in order.order_items:
        uuids = [vo.uuid for vo in item.ticket_vos if vo.uuid in tickets and vo.ticket_status == NORMAL]
        if uuids:
            lines.append({"orderItemId": item.item_id, "quantity": len(uuids), "ticketUUIDs": uuids})
    return lines


def _whole_refund_lines(order: Order) -> list[dict[str, Any]]:
    """Every unrefunded ticket, and the items without tickets; nothing once the order is refunded
    in full or all its tickets are (an earlier attempt did it)."""
    if order.refund_amount is not None and order.total_amount is not None and order.refund_amount >= order.total_amount:
        return []
    ticketed = [item for item in order.order_items if item.ticket_vos]
    lines = _refund_lines(order, [vo.uuid for item in ticketed for vo in item.ticket_vos])
    if ticketed and not lines:
        return []
    return lines + [
        {"orderItemId": item.item_id, "quantity": item.quantity}
        for item in order.order_items
        if not item.ticket_vos and item.quantity
    ]
