"""Ticket Evolution (../shared/provider-docs/ticketevolution-create-order.txt, FACTS.md): signed
requests, ticket group re-read (TEvo has no holds), clients, affiliate orders, state, undo.

Orders / Index (https://ticketevolution.atlassian.net/wiki/pages/viewpage.action?pageId=4751395)
documents `reference` ("exact match") and pagination with at most 10 per page; every page is read,
and an order counts only if its own `reference` matches. Orders / Reject (…/pages/9470108) applies
to a *pending* order, Orders / Cancel (…/pages/4129637) only *proposes* cancelling an *accepted*
one (both sides must cancel); both take `reason` (an enum) and `reviewer_id`, "ID of user belonging
to brokerage", and answer the order (Orders / Show, …/pages/4129639).

*Assumed* where the docs are silent: the ticket group fields read (`available_quantity`,
`retail_price`, `splits`); the client filter `GET /v9/clients?email=`; the search's answer fields
`total_entries`, `per_page`; that an order reaches the search within `create_settle_seconds`; that
`state` is the seller's side and `buyer_state` the buyer's, and a cancellation is done once `state`
reads cancelled (no page shows a proposal's own state).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http import ActivitiesPerSecond, ProviderHttp, attempt_timeout, not_yet, own_queue
from workflows.models import (
    Buyer,
    EventInfo,
    FailureReason,
    OrderCancellation,
    OrderProgress,
    OrderSummary,
    ProviderOrder,
    PurchasePolicy,
    Receipt,
    TevoPurchaseRequest,
    Ticket,
)

SUCCEEDED = frozenset({"accepted", "completed"})
ENDED = frozenset({"rejected", "cancelled", "canceled", "expired"})
# pending, open (fraud review), pending_substitution, pending_consignment: still in progress.
ORDERS_PER_PAGE = 10  # Orders / Index: "10 per_page max"
UNDO_REASON = "Other"  # one of the reasons Orders / Reject and Orders / Cancel accept
# The undo proposed cancelling an accepted order and TEvo does not show it done: for an operator.
CANCELLATION_UNCONFIRMED = "CANCELLATION_UNCONFIRMED"


class TevoSettings(BaseSettings):
    """From BOXOFFICE_TEVO_*. No defaults for where and who: unset (or empty, or a reviewer 0), the
    worker does not serve TEvo, since it could not undo an order; `boxoffice dev` sets the
    simulator's (workers/devstack.py)."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_TEVO_", env_ignore_empty=True)
    required: ClassVar[tuple[str, ...]] = ("base_url", "api_token", "api_secret", "reviewer_id")

    base_url: str = ""
    api_token: SecretStr = SecretStr("")
    api_secret: SecretStr = SecretStr("")
    # `reviewer_id` of Orders / Reject and Orders / Cancel: a user of the brokerage (required there).
    reviewer_id: int | None = None
    timeout_seconds: float = Field(default=10, gt=0)
    # Activity tasks per second the provider's task queue hands out, across all workers. Unset: no limit.
    activities_per_second: ActivitiesPerSecond = None
    # Affiliate orders wait for the seller to accept: minutes, sometimes longer.
    poll_interval_seconds: float = Field(default=15, gt=0)
    poll_budget_seconds: float = Field(default=1800, gt=0)
    confirm_window_seconds: float = Field(default=600, gt=0)
    # After an unanswered create, TEvo may still be processing it and its order may reach the
    # search late: a retry orders again only once this long has passed since the first attempt,
    # and the read-back after the step takes "not found" as proof only after as long. Below the
    # workflow's 2-minute step (workflows/flow.py STEP_TIMEOUT), so the step can still order again.
    create_settle_seconds: float = Field(default=60, ge=0, le=90)


def sign(secret: str, method: str, host: str, path_and_query: str, body: bytes) -> str:
    """base64(HMAC-SHA256(secret, "{METHOD} {host}{path}?{rest}")): `rest` is the exact body sent,
    or, without one, the query sorted by key. Scheme and port are not signed."""
    path, _, query = path_and_query.partition("?")
    if body:
        rest = body.decode()
    else:
        rest = "&".join(sorted(filter(None, query.split("&")), key=lambda pair: pair.split("=", 1)[0]))
    string_to_sign = f"{method} {host}{path}?{rest}"
    return base64.b64encode(hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()).decode()


# -- wire formats (the excerpt's order verbatim; others lenient) -----------------------------------


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Venue(Wire):
    name: str | None = None


class Event(Wire):
    name: str | None = None
    occurs_at: str | None = None
    venue: Venue | None = None


class TicketGroup(Wire):
    id: int | str
    available_quantity: int | None = None
    quantity: int | None = None
    retail_price: Decimal
    splits: list[int] = Field(default_factory=list)
    section: str | None = None
    row: str | None = None
    event: Event | None = None


class Client(Wire):
    id: int


class Clients(Wire):
    clients: list[Client] = Field(default_factory=list)


class ItemTicket(Wire):
    seat: str | None = None


class ItemGroup(Wire):
    section: str | None = None
    row: str | None = None
    seats: list[str] = Field(default_factory=list)
    tickets: list[ItemTicket] = Field(default_factory=list)


class Item(Wire):
    id: int
    price: Decimal | None = None
    ticket_group: ItemGroup | None = None


class Order(Wire):
    id: int
    oid: str | None = None
    state: str
    buyer_state: str | None = None
    subtotal: Decimal | None = None
    total: Decimal | None = None
    shipping: Decimal = Decimal(0)
    service_fee: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    reference: str | None = None
    seller_rejection_reason: str | None = None
    seller_cancellation_reason: str | None = None
    buyer_cancellation_reason: str | None = None
    buyer_rejection_reason: str | None = None
    items: list[Item] = Field(default_factory=list)

    @property
    def reason(self) -> str | None:
        return (
            self.seller_rejection_reason
            or self.seller_cancellation_reason
            or self.buyer_rejection_reason
            or self.buyer_cancellation_reason
        )

    @property
    def ended(self) -> bool:
        """Rejected, cancelled or expired: final (the seller's `state`)."""
        return self.state in ENDED

    @property
    def fulfilled(self) -> bool:
        # The create example answers state "pending" with buyer_state "accepted": only `state` accepts.
        return self.state in SUCCEEDED and self.buyer_state not in ENDED

    def progress(self) -> str:
        return self.state if self.buyer_state in (None, self.state) else f"{self.state} (buyer: {self.buyer_state})"

    def summary(self) -> OrderSummary:
        tickets = []
        for item in self.items:
            group = item.ticket_group or ItemGroup()
            seats = [t.seat for t in group.tickets if t.seat] or group.seats or [""]
            for seat in seats:
                label = " ".join(
                    p
                    for p in (f"sec {group.section}" if group.section else "", f"row {group.row}" if group.row else "", seat)
                    if p
                )
                tickets.append(Ticket(seat=label or str(item.id), barcode=None, price=item.price, booking_id=self.oid))
        receipt = None
        if self.total is not None and self.subtotal is not None:
            receipt = Receipt(
                subtotal=self.subtotal, fees=self.service_fee + self.shipping, tax=self.tax, total=self.total, currency="USD"
            )  # TEvo prices in USD
        return OrderSummary(order_id=str(self.id), status=self.state, fulfilled=self.fulfilled, receipt=receipt, tickets=tickets)


class OrderList(Wire):
    orders: list[Order] = Field(default_factory=list)
    total_entries: int | None = None
    per_page: int | None = None


# -- activities ------------------------------------------------------------------------------------


class TevoActivities:
    name = "tevo"

    def __init__(self, settings: TevoSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        secrets = [settings.api_token.get_secret_value(), settings.api_secret.get_secret_value()]
        self.http = ProviderHttp(
            "tevo", settings.base_url, timeout=settings.timeout_seconds, secrets=secrets, transport=transport
        )
        host = urllib.parse.urlsplit(settings.base_url).hostname or ""
        secret = settings.api_secret.get_secret_value()
        self._sign: Callable[[str, str, bytes], Mapping[str, str]] = lambda method, path, body: {
            "X-Token": settings.api_token.get_secret_value(),
            "X-Signature": sign(secret, method, host, path, body),
        }

    async def aclose(self) -> None:
        await self.http.aclose()

    def all(self) -> list[Any]:
        return [
            self.policy,
            self.check_ticket_group,
            self.find_or_create_client,
            self.create_order,
            self.find_order,
            self.order_state,
            self.show_order,
            self.cancel_order,
        ]

    async def _call(self, method: str, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        # Sorted, so the query sent is the query signed.
        ordered = sorted(params.items()) if params else None
        return await self.http.request(
            method, path, params=ordered, sign=self._sign, headers={"Accept": "application/json"}, **kwargs
        )

    @activity.defn(name="tevo.policy")
    async def policy(self) -> PurchasePolicy:
        return PurchasePolicy(
            call_timeout_seconds=attempt_timeout(self.settings.timeout_seconds),
            activity_task_queue=own_queue(self.name, self.settings.activities_per_second),
            local_calls=self.http.local_calls,
            poll_interval_seconds=self.settings.poll_interval_seconds,
            poll_budget_seconds=self.settings.poll_budget_seconds,
            hold_margin_seconds=0,
            confirm_window_seconds=self.settings.confirm_window_seconds,
        )

    @activity.defn(name="tevo.check_ticket_group")
    async def check_ticket_group(self, ticket_group_id: int, quantity: int, price: Decimal) -> EventInfo:
        """TEvo has no holds: re-read the group right before ordering."""
        data = await self._call("GET", f"/v9/ticket_groups/{ticket_group_id}", errors={404: FailureReason.SEAT_UNAVAILABLE})
        group = self.http.parse(TicketGroup, data, "ticket group")
        available = group.available_quantity if group.available_quantity is not None else group.quantity or 0
        if quantity > available or (group.splits and quantity not in group.splits):
            raise ApplicationError(
                f"tevo: ticket group {ticket_group_id} sells {group.splits or available}, not {quantity}",
                {"provider": "tevo", "available": available},
                type=FailureReason.SEAT_UNAVAILABLE,
                non_retryable=True,
            )
        if group.retail_price != price:
            raise ApplicationError(
                f"tevo: ticket group {ticket_group_id} now costs {group.retail_price}, not {price}",
                {"provider": "tevo", "price": str(group.retail_price)},
                type=FailureReason.PRICE_CHANGED,
                non_retryable=True,
            )
        event = group.event or Event()
        return EventInfo(title=event.name, venue=event.venue.name if event.venue else None, starts_at=event.occurs_at)

    @activity.defn(name="tevo.find_or_create_client")
    async def find_or_create_client(self, buyer: Buyer) -> str:
        found = self.http.parse(Clients, await self._call("GET", "/v9/clients", params={"email": buyer.email}), "client search")
        if found.clients:
            return str(found.clients[0].id)
        client: dict[str, Any] = {
            "name": f"{buyer.first_name} {buyer.last_name}",  # TEvo wants a space in the name
            "email_addresses": [{"address": buyer.email, "is_primary": True}],
        }
        if buyer.phone:
            client["phone_numbers"] = [{"number": buyer.phone, "is_primary": True}]
        data = await self._call("POST", "/v9/clients", json_body={"clients": [client]})
        return str(self.http.parse(Clients, data, "create client").clients[0].id)

    @activity.defn(name="tevo.create_order")
    async def create_order(self, request: TevoPurchaseRequest, client_id: str) -> ProviderOrder:
        """TEvo has no idempotency key: the purchase id goes in `reference`, and every attempt first
        looks for an order with that reference (a workflow reset or a new run of the purchase starts
        again at attempt 1), so an order already placed is not placed again. On a retry, not found
        yet, it orders again only after `create_settle_seconds` since the first attempt (server
        times, so time-skipping tests see the same clock); until then it raises a retryable
        ORDER_PENDING: the search may not show an unanswered create's order yet."""
        info = activity.info()
        existing = await self._find_order(request.purchase_id)
        if existing is not None:
            return ProviderOrder(order_id=str(existing.id), event_id=existing.oid)
        waited = info.current_attempt_scheduled_time - info.scheduled_time
        if info.attempt > 1 and waited < timedelta(seconds=self.settings.create_settle_seconds):
            raise not_yet(
                f"tevo: no order with reference {request.purchase_id} yet, {waited} after the "
                f"first create; waiting {self.settings.create_settle_seconds} s before ordering again"
            )
        try:
            data = await self._call(
                "POST",
                "/v10/orders",
                json_body={"order": order_body(request, client_id)},
                errors={402: FailureReason.PAYMENT_FAILED, 409: FailureReason.SEAT_UNAVAILABLE},
            )
        except ApplicationError as err:
            # On a retry, "no longer available" may mean our own earlier order took the tickets.
            if info.attempt > 1 and err.type == FailureReason.SEAT_UNAVAILABLE:
                existing = await self._find_order(request.purchase_id)
                if existing is not None:
                    return ProviderOrder(order_id=str(existing.id), event_id=existing.oid)
            raise
        order = self.http.parse(Order, data, "create order")
        return ProviderOrder(order_id=str(order.id), event_id=order.oid)

    @activity.defn(name="tevo.find_order")
    async def find_order(self, reference: str) -> ProviderOrder | None:
        """The order created with `reference` (the purchase id), or None: the read-back after a
        create step whose outcome is unknown. Right after such a create the search may not show its
        order yet: "not found" is an answer only once `create_settle_seconds` have passed since this
        read-back began; until then it raises a retryable ORDER_PENDING."""
        order = await self._find_order(reference)
        if order is not None:
            return ProviderOrder(order_id=str(order.id), event_id=order.oid)
        info = activity.info()
        waited = info.current_attempt_scheduled_time - info.scheduled_time
        if waited < timedelta(seconds=self.settings.create_settle_seconds):
            raise not_yet(
                f"tevo: no order with reference {reference} yet, {waited} into the read-back; "
                f"the search may lag a create by up to {self.settings.create_settle_seconds} s"
            )
        return None

    async def _find_order(self, reference: str) -> Order | None:
        page, seen = 1, 0
        while True:
            data = await self._call(
                "GET", "/v9/orders", params={"reference": reference, "page": page, "per_page": ORDERS_PER_PAGE}
            )
            found = self.http.parse(OrderList, data, "order search")
            match = next((o for o in found.orders if o.reference == reference), None)
            if match is not None:
                return match
            seen += len(found.orders)
            # TEvo may cap per_page; without total_entries, a short page is the last.
            full_page = found.per_page or ORDERS_PER_PAGE
            last = seen >= found.total_entries if found.total_entries is not None else len(found.orders) < full_page
            if not found.orders or last:
                return None
            page += 1

    async def _show(self, order_id: str) -> Order:
        return self.http.parse(Order, await self._call("GET", f"/v9/orders/{order_id}"), "show order")

    @activity.defn(name="tevo.order_state")
    async def order_state(self, order_id: str) -> OrderProgress:
        """One poll: raises `not_yet` while the order is pending or in review, and while only the
        buyer's side has ended it (TEvo ends an order once both sides do: the undo finishes it if
        the seller's side never does)."""
        order = await self._show(order_id)
        if order.ended:
            return OrderProgress(status=order.state, fulfilled=False, reason=order.reason)
        if order.fulfilled:
            return OrderProgress(status=order.state, fulfilled=True)
        raise not_yet(f"tevo: order {order_id} is {order.progress()}")

    @activity.defn(name="tevo.show_order")
    async def show_order(self, order_id: str) -> OrderSummary:
        return (await self._show(order_id)).summary()

    @activity.defn(name="tevo.cancel_order")
    async def cancel_order(self, order_id: str) -> OrderCancellation:
        """The undo of an order, by the call its state allows, read first (a retry after an
        unanswered call acts on what that call did): pending → Orders / Reject; accepted →
        Orders / Cancel, which only proposes it: not shown cancelled after, it needs an operator
        (non-retryable CANCELLATION_UNCONFIRMED); already ended → nothing to do; completed →
        delivered, for an operator; in review or substitution → retried until one applies."""
        reviewer_id = self.settings.reviewer_id
        if not reviewer_id:
            raise ApplicationError(
                f"tevo: BOXOFFICE_TEVO_REVIEWER_ID is not set: order {order_id} cannot be undone",
                type=FailureReason.PROVIDER_NOT_CONFIGURED,
                non_retryable=True,
            )
        order = await self._show(order_id)
        if order.ended:
            return OrderCancellation(order_id=order_id, status=f"already {order.state}")
        if order.state == "pending":
            done = await self._act(order, "reject", reviewer_id)
            if not done.ended:
                raise not_yet(f"tevo: order {order_id} rejected, yet reads {done.progress()}")
            return OrderCancellation(order_id=order_id, status=done.state)
        if order.state == "accepted":
            done = await self._act(order, "cancel", reviewer_id)
            if not done.ended:
                raise ApplicationError(
                    f"tevo: cancellation of accepted order {order_id} proposed, order reads {done.progress()}: "
                    "TEvo cancels it only once both sides cancel; confirm it in TEvo",
                    {"provider": "tevo", "order_id": order_id, "state": done.state, "buyer_state": done.buyer_state},
                    type=CANCELLATION_UNCONFIRMED,
                    non_retryable=True,
                )
            return OrderCancellation(order_id=order_id, status=done.state)
        if order.state == "completed":
            raise ApplicationError(
                f"tevo: order {order_id} is completed (tickets delivered): neither reject nor cancel applies",
                {"provider": "tevo", "order_id": order_id, "state": order.state},
                type=CANCELLATION_UNCONFIRMED,
                non_retryable=True,
            )
        raise not_yet(f"tevo: order {order_id} is {order.progress()}: neither reject (pending) nor cancel (accepted) applies yet")

    async def _act(self, order: Order, action: str, reviewer_id: int) -> Order:
        """POST reject or cancel, answered by the order. Refused, the order is read again: moved on
        meanwhile (e.g. accepted just now), the retry acts on its new state; otherwise the refusal stands."""
        body = {"reason": UNDO_REASON, "reviewer_id": reviewer_id}
        try:
            data = await self._call("POST", f"/v9/orders/{order.id}/{action}", json_body=body)
        except ApplicationError as err:
            if not err.non_retryable:
                raise
            now = await self._show(str(order.id))
            if now.state != order.state:
                raise not_yet(f"tevo: {action} of order {order.id} refused; it moved on to {now.progress()}") from err
            raise
        return self.http.parse(Order, data, f"{action} order")


def order_body(request: TevoPurchaseRequest, client_id: str) -> dict[str, Any]:
    payment: dict[str, Any] = {"type": "credit_card"}
    if request.payment.credit_card_id is not None:
        payment["credit_card_id"] = request.payment.credit_card_id
    else:
        payment["token"] = request.payment.token
    if request.payment.address_id is not None:
        payment["address_id"] = request.payment.address_id
    delivery: dict[str, Any] = {"type": request.delivery.type, "cost": float(request.delivery.cost)}
    if request.delivery.email_address_id is not None:
        delivery["email_address_id"] = request.delivery.email_address_id
    body: dict[str, Any] = {
        "ticket_group": {"id": request.ticket_group_id, "price": float(request.price), "quantity": request.quantity},
        "payments": [payment],
        "delivery": delivery,
        "client_id": int(client_id),
        "service_fee": float(request.service_fee),
        "additional_expense": 0.0,
        "tax": float(request.tax),
        "discount": float(request.discount),
        "reference": request.purchase_id,
    }
    for name in ("session_id", "promo_code", "instructions"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    return body
