"""ACME Ticketing (../shared/provider-docs/acme-b2c-orders.txt, FACTS.md): reservations, carts,
checkout with `x-acme-request-uuid`, and order management (search, by event, get, update, delete,
refund). Amounts are strings in ACME's JSON; they are parsed as decimals.

*Assumed* where the docs are silent: the reservation, cart and checkout answers' fields, the checkout
body (`shoppingCartId`, `reservationId`, `contact`, `payment.cardToken`, `notes`), and the error body
`{errorCode, message}`. The request uuid is also written into the order's `notes`, so a checkout
whose answer was lost can be found again by a documented search (every page of it).

Also *assumed*, to make the non-idempotent calls safe to retry: a reservation keeps a
`clientReference` given at creation and can be listed by it (`GET /v2/b2b/reservations?clientReference=`),
and a refund's `notes` are copied onto the tickets it refunds (`ticketVos[].notes`, documented as
"notes associated with the ticket").
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

from activities.http import ActivitiesPerSecond, ProviderHttp, ProviderTimestamp, attempt_timeout, own_queue, utc_now
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
REFUNDED = "Refund"


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


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class Reservation(Wire):
    id: str
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
            Ticket(seat=item.ticketing_type_name or item.display_name or item.item_id, barcode=vo.uuid,
                   ticket_type=item.event_name, price=item.unit_price, booking_id=self.order_number)
            for item in self.order_items
            for vo in item.ticket_vos
        ]

    def record(self) -> OrderRecord:
        return OrderRecord(order_id=self.id, order_number=self.order_number, email=self.email,
                           total=self.total_amount, refunded=self.refund_amount, created_on=self.created_on,
                           tickets=self.tickets())


class Pagination(Wire):
    page: int = 1
    has_more: bool = False


class OrderList(Wire):
    orders: list[Order] = Field(default_factory=list, alias="list")
    pagination: Pagination = Pagination()


class ReservationList(Wire):
    reservations: list[Reservation] = Field(default_factory=list, alias="list")


class AcmeActivities:
    name = "acme"

    def __init__(self, settings: AcmeSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = ProviderHttp("acme", settings.base_url, timeout=settings.timeout_seconds,
                                 secrets=[settings.api_key.get_secret_value()], transport=transport)

    async def aclose(self) -> None:
        await self.http.aclose()

    def all(self) -> list[Any]:
        return [self.policy, self.reserve, self.release_reservation, self.create_cart, self.checkout,
                self.find_checkout, self.search_orders, self.get_order, self.update_order, self.delete_order,
                self.refund]

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
            hold_margin_seconds=self.settings.hold_margin_seconds,
        )

    @activity.defn(name="acme.reserve")
    async def reserve(self, request: AcmePurchaseRequest) -> Hold:
        """Tagged with the purchase id: a retry after a lost answer takes the reservation the
        earlier attempt made (if still unexpired) instead of holding the seats twice."""
        if activity.info().attempt > 1:
            earlier = await self._reservation_for(request.purchase_id)
            if earlier is not None:
                return Hold(expires_at=earlier.expiration_timestamp, item_ids=[earlier.id])
        body = {"reservationItems": [{"eventId": i.event_id, "quantity": i.quantity} for i in request.items],
                "clientReference": request.purchase_id}
        data = await self._call("POST", "/v2/b2b/reservations", json_body=body,
                                errors={409: FailureReason.SEAT_UNAVAILABLE})
        reservation = self.http.parse(Reservation, data, "create reservation")
        return Hold(expires_at=reservation.expiration_timestamp, item_ids=[reservation.id])

    async def _reservation_for(self, reference: str) -> Reservation | None:
        data = await self._call("GET", "/v2/b2b/reservations", params={"clientReference": reference})
        found = self.http.parse(ReservationList, data, "list reservations").reservations
        return next((r for r in found if r.expiration_timestamp > utc_now()), None)

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
        body = {"items": [{"eventId": i.event_id, "ticketingTypeId": i.ticketing_type_id, "quantity": i.quantity}
                          for i in request.items]}
        cart = self.http.parse(Cart, await self._call("POST", "/v2/b2c/carts", json_body=body), "create cart")
        total = cart.total if cart.total is not None else Decimal(0)
        subtotal = cart.subtotal if cart.subtotal is not None else total
        return cart.id, Receipt(subtotal=subtotal, fees=cart.fees, tax=cart.tax, total=total, currency=cart.currency)

    @activity.defn(name="acme.checkout")
    async def checkout(self, request: AcmePurchaseRequest, cart_id: str, reservation_id: str, request_uuid: str,
                       card_token: str | None) -> OrderRecord:
        """`x-acme-request-uuid` makes a repeat answer 409; then the order placed by the first
        attempt is fetched instead of failing."""
        body: dict[str, Any] = {
            "shoppingCartId": cart_id,
            "reservationId": reservation_id,
            "contact": {"email": request.buyer.email, "firstName": request.buyer.first_name,
                        "lastName": request.buyer.last_name},
            "notes": f"boxoffice purchase {request.purchase_id} request {request_uuid}",
        }
        if request.buyer.phone:
            body["contact"]["phoneNumber"] = request.buyer.phone
        if card_token:
            body["payment"] = {"cardToken": card_token}
        try:
            checkout = {"x-acme-browser-ip": str(request.browser_ip), "x-acme-request-uuid": request_uuid}
            data = await self._call("POST", "/v2/b2c/checkout", checkout, json_body=body,
                                    errors={402: FailureReason.PAYMENT_FAILED, 410: FailureReason.HOLD_EXPIRED})
        except ApplicationError as err:
            if not err.details or err.details[0].get("status") != 409 or err.type != FailureReason.PROVIDER_REJECTED:
                raise
            found = await self._find_checkout(request.buyer.email, request_uuid)
            if found is None:
                raise ApplicationError(f"acme: checkout {request_uuid} answered 409 but no order carries it",
                                       type=FailureReason.PROVIDER_ERROR) from None
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
            params = {"email": email, "sortField": "createdOn", "sortDirection": "desc", "page": page,
                      "pageSize": SEARCH_PAGE_SIZE}
            found = self.http.parse(OrderList, await self._call("GET", "/v2/b2c/orders/search", params=params),
                                    "search orders")
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
        return OrdersPage(orders=[o.record() for o in found.orders], page=found.pagination.page,
                          has_more=found.pagination.has_more)

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
        await self._call("DELETE", f"/v2/b2c/orders/{order_id}")

    @activity.defn(name="acme.refund")
    async def refund(self, request: RefundRequest) -> RefundResult:
        """Idempotent: an order already refunded in full is not refunded again, and a refund whose
        mark (`refund_id`, in its notes) is on the order's tickets was applied by an earlier attempt
        whose answer was lost: repeating a partial refund would refund other tickets too."""
        info = activity.info()
        mark = f"[boxoffice refund {request.refund_id or f'{info.workflow_id}/{info.activity_id}'}]"
        order = await self._order(request.order_id)
        total = order.total_amount or Decimal(0)
        applied = any(vo.ticket_status == REFUNDED and vo.notes and mark in vo.notes
                      for item in order.order_items for vo in item.ticket_vos)
        if applied or (order.refund_amount is not None and order.refund_amount >= total):
            return RefundResult(order_id=order.id, refunded=order.refund_amount or Decimal(0), total=total,
                                already_refunded=True)
        items = request.items or {item.item_id: item.quantity for item in order.order_items if item.quantity}
        body = {"orderId": order.id, "incidentReasonCode": request.reason_code, "notes": f"{request.notes} {mark}",
                "noEmail": request.no_email,
                "refundItems": [{"orderItemId": item, "quantity": quantity} for item, quantity in items.items()]}
        await self._call("POST", "/v2/b2b/b2b/refunds", json_body=body)  # the documented path, b2b twice
        after = await self._order(request.order_id)
        return RefundResult(order_id=after.id, refunded=after.refund_amount or Decimal(0), total=total)
