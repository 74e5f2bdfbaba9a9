"""Onebox distribution API (../shared/provider-docs/onebox-purchase-flow.txt, FACTS.md).

The excerpt gives requests, not answers: the order object parsed here (id, code, status, items
with seat and barcode, price) is *assumed* from Onebox's public docs and kept lenient. Also
*assumed*: `GET /distribution-api/v1/orders` with `ob-order-id` reads the basket (the excerpt
documents no read of a basket; a retried add-seats needs one to find what an unanswered attempt
added). The orders API answers only confirmed orders ("for confirmed orders, ... api-orders with
this code"): a 404 there means "not confirmed (yet)".
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http import ActivitiesPerSecond, ProviderHttp, attempt_timeout, not_yet, own_queue, utc_now
from workflows.models import (
    Buyer,
    FailureReason,
    Hold,
    OrderSummary,
    PreConfirmedOrder,
    ProviderOrder,
    PurchasePolicy,
    Receipt,
    Ticket,
)

ORDERS = "/distribution-api/v1/orders"
CONFIRMED = "CONFIRM"
PRE_CONFIRMED = "PRE_CONFIRM"
# Retryable: the basket changed while it was pre-confirmed (a late add); the retry reconciles again.
BASKET_CHANGED = "BASKET_CHANGED"
TRACE_HEADER = "ob-audit-trace-id"
# Refresh the cached token this long before Onebox says it expires.
TOKEN_SLACK_SECONDS = 60
ATTENDEE_DATA_REQUIRED = "ORDER_ATTENDEE_DATA_REQUIRED"
CODES = {
    "ORDER_SEAT_NOT_AVAILABLE": FailureReason.SEAT_UNAVAILABLE,
    # Some sessions need per-ticket attendee data whose fields the event defines (e.g. an ID
    # number): boxoffice cannot make it up from the buyer, so the purchase fails with the code kept.
    ATTENDEE_DATA_REQUIRED: FailureReason.PROVIDER_REJECTED,
    "SESSION_NOT_FOUND": FailureReason.OFFER_UNAVAILABLE,
    # A basket left idle is dropped by Onebox: the hold is gone.
    "ORDER_NOT_FOUND": FailureReason.HOLD_EXPIRED,
}


class OneboxSettings(BaseSettings):
    """From BOXOFFICE_ONEBOX_*. No defaults for where and who: unset (or empty), the worker does not
    serve Onebox; `boxoffice dev` sets the simulator's (workers/devstack.py)."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_ONEBOX_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "oauth_url", "channel_id", "client_id", "client_secret")

    base_url: str = ""
    # The OAuth server; Onebox runs it on its own domain.
    oauth_url: str = ""
    channel_id: str = ""
    client_id: str = ""
    client_secret: SecretStr = SecretStr("")
    timeout_seconds: float = Field(default=10, gt=0)
    # Activity tasks per second the provider's task queue hands out, across all workers. Unset: no limit.
    activities_per_second: ActivitiesPerSecond = None
    # *Assumed* (FACTS.md): a basket holds its seats about 10 minutes after its last change.
    basket_hold_seconds: float = Field(default=600, gt=0)
    hold_margin_seconds: float = Field(default=30, ge=0)


# -- wire formats (assumed, lenient) ---------------------------------------------------------------


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class TokenResponse(Wire):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 — the OAuth token type, not a secret
    expires_in: int = 43199


class SeatInfo(Wire):
    id: int | None = None
    row: str | None = None
    number: str | None = None


class ItemPrice(Wire):
    total: Decimal | None = None
    currency: str | None = None


class TicketInfo(Wire):
    barcode: str | None = None


class OrderItem(Wire):
    id: int | str
    session_id: int | None = None
    seat: SeatInfo | None = None
    price: ItemPrice | None = None
    ticket: TicketInfo | None = None
    barcode: str | None = None

    @property
    def label(self) -> str:
        if self.seat is None:
            return str(self.id)
        if self.seat.row and self.seat.number:
            return f"{self.seat.row}-{self.seat.number}"
        return str(self.seat.id)


class OrderPrice(Wire):
    total: Decimal
    currency: str
    charges: Decimal = Decimal(0)


class Order(Wire):
    id: str | None = None
    code: str | None = None
    # The state's name (BASKET, PRE_CONFIRM, CONFIRM: the purchase-flow page). Onebox's public client
    # code models the status as an object `{type, expires_in}`: both shapes are read.
    status: str | None = None
    # The object shape's `expires_in`: seconds (*assumed*, like the token's) the basket is still held.
    expires_in: float | None = None
    items: list[OrderItem] = Field(default_factory=list)
    price: OrderPrice | None = None

    @model_validator(mode="before")
    @classmethod
    def _status_object(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("status"), dict):
            status = data["status"]
            return {**data, "status": status.get("type"), "expires_in": status.get("expires_in")}
        return data

    def receipt(self) -> Receipt | None:
        if self.price is None:
            return None
        return Receipt(
            subtotal=self.price.total - self.price.charges,
            fees=self.price.charges,
            total=self.price.total,
            currency=self.price.currency,
        )

    def summary(self) -> OrderSummary:
        return OrderSummary(
            order_id=self.code or self.id or "",
            status=self.status or "",
            fulfilled=self.status == CONFIRMED,
            receipt=self.receipt(),
            tickets=[
                Ticket(
                    seat=item.label,
                    barcode=(item.ticket.barcode if item.ticket else None) or item.barcode or "",
                    price=item.price.total if item.price else None,
                    booking_id=self.code,
                )
                for item in self.items
            ],
        )


# -- activities ------------------------------------------------------------------------------------


class OneboxActivities:
    name = "onebox"

    def __init__(self, settings: OneboxSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        secrets = [settings.client_secret.get_secret_value()]
        self.http = ProviderHttp(
            "onebox",
            settings.base_url,
            timeout=settings.timeout_seconds,
            secrets=secrets,
            trace_headers=[TRACE_HEADER],
            transport=transport,
        )
        self.oauth = ProviderHttp(
            "onebox",
            settings.oauth_url,
            timeout=settings.timeout_seconds,
            secrets=secrets,
            trace_headers=[TRACE_HEADER],
            transport=transport,
        )
        # The token lives in the worker, never in workflow history; shared by concurrent activities.
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.oauth.aclose()

    def all(self) -> list[Any]:
        return [
            self.policy,
            self.create_order,
            self.add_seats,
            self.add_seats_auto,
            self.buyer_data,
            self.pre_confirm,
            self.confirm,
            self.release_seats,
            self.release_basket,
            self.read_order,
            self.find_order,
        ]

    async def _access_token(self, stale: str | None = None) -> str:
        async with self._token_lock:
            if self._token is not None and self._token != stale and time.monotonic() < self._token_expires:
                return self._token
            form = {
                "grant_type": "client_credentials",
                "channel_id": self.settings.channel_id,
                "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret.get_secret_value(),
            }
            data = await self.oauth.request("POST", "/oauth/token", form=form, headers={"Accept": "application/json"})
            token = self.oauth.parse(TokenResponse, data, "oauth token")
            self._token = token.access_token
            self._token_expires = time.monotonic() + max(token.expires_in - TOKEN_SLACK_SECONDS, 0)
            return self._token

    async def _call(self, method: str, path: str, order_id: str | None = None, **kwargs: Any) -> Any:
        """Calls with the cached token; refused as unauthenticated (it expired early, or was
        revoked), fetches a new one, once. Onebox answers an expired or bad token 403 with an
        `AUTH…` code (developer.oneboxtds.com/docs/authentication/troubleshooting: AUTH001
        "Invalid JWT signature"); a plain 401 is taken the same way. The refused request was not
        carried out, so repeating it is safe."""
        token = await self._access_token()
        try:
            return await self._send(token, method, path, order_id, **kwargs)
        except ApplicationError as err:
            if not _token_refused(err):
                raise
        return await self._send(await self._access_token(stale=token), method, path, order_id, **kwargs)

    async def _send(self, token: str, method: str, path: str, order_id: str | None, **kwargs: Any) -> Any:
        headers = {"Accept": "application/json", "Authorization": f"Bearer {token}"}
        if order_id is not None:
            headers["ob-order-id"] = order_id
        return await self.http.request(method, path, headers=headers, codes=CODES, **kwargs)

    def _hold(self, order: Order, sent_at: datetime) -> Hold:
        """Held from `sent_at` for the basket's `expires_in` when it answers one, at most the
        setting: an undocumented value may shorten the hold, never lengthen it."""
        held = self.settings.basket_hold_seconds
        if order.expires_in is not None and order.expires_in > 0:
            held = min(held, order.expires_in)
        return Hold(
            expires_at=sent_at + timedelta(seconds=held),
            seat_ids=[item.label for item in order.items],
            item_ids=[str(item.id) for item in order.items],
        )

    @activity.defn(name="onebox.policy")
    async def policy(self) -> PurchasePolicy:
        # Onebox confirm answers with the tickets: nothing to poll.
        return PurchasePolicy(
            call_timeout_seconds=attempt_timeout(self.settings.timeout_seconds),
            activity_task_queue=own_queue(self.name, self.settings.activities_per_second),
            local_calls=self.http.local_calls,
            hold_margin_seconds=self.settings.hold_margin_seconds,
        )

    @activity.defn(name="onebox.create_order")
    async def create_order(self) -> ProviderOrder:
        order = self.http.parse(Order, await self._call("POST", ORDERS), "create order")
        if not order.id:
            raise ApplicationError(
                "onebox: create order answered no id", type=FailureReason.PROVIDER_BAD_RESPONSE, non_retryable=True
            )
        return ProviderOrder(order_id=order.id)

    async def _basket_before_adding(self, order_id: str) -> tuple[Order, datetime]:
        """The basket as an earlier attempt, or a run before a workflow reset, may have left it
        (adding seats is not idempotent and Onebox takes no idempotency key), and when this
        attempt's work began, since seats added by an earlier attempt are held from then."""
        info = activity.info()
        started = utc_now() - (info.current_attempt_scheduled_time - info.scheduled_time)
        return self.http.parse(Order, await self._call("GET", ORDERS, order_id), "read basket"), started

    async def _keep(self, order_id: str, basket: Order, wanted: list[OrderItem], sent_at: datetime) -> Hold:
        """Holds `wanted` and releases any other item in the purchase's basket: an add whose
        answer was lost may land after its retry added seats of its own (an over-order otherwise)."""
        extras = [str(item.id) for item in basket.items if item not in wanted]
        if extras and basket.status != CONFIRMED:
            activity.logger.warning("releasing seats beyond the purchase", extra={"order_id": order_id, "items": extras})
            await self.release_seats(order_id, extras)
        return self._hold(Order(items=wanted, expires_in=basket.expires_in), sent_at)

    @activity.defn(name="onebox.add_seats")
    async def add_seats(self, order_id: str, session_id: int, seat_ids: list[int]) -> Hold:
        basket, sent_at = await self._basket_before_adding(order_id)
        in_basket = {item.seat.id for item in basket.items if item.seat is not None}
        missing = [seat for seat in seat_ids if seat not in in_basket]
        if missing and basket.status != CONFIRMED:
            body = {"seats": [{"id": seat, "session_id": session_id} for seat in missing]}
            basket = self.http.parse(Order, await self._call("POST", f"{ORDERS}/seats", order_id, json_body=body), "add seats")
        wanted = [item for item in basket.items if item.seat is not None and item.seat.id in seat_ids]
        return await self._keep(order_id, basket, wanted, sent_at)

    @activity.defn(name="onebox.add_seats_auto")
    async def add_seats_auto(self, order_id: str, session_id: int, price_type_id: int, quantity: int) -> Hold:
        basket, sent_at = await self._basket_before_adding(order_id)
        # Only this step adds seats to the purchase's basket: what is in it, an earlier attempt added.
        if len(basket.items) < quantity and basket.status != CONFIRMED:
            body = {"price_type_id": price_type_id, "session_id": session_id, "quantity": quantity - len(basket.items)}
            basket = self.http.parse(
                Order, await self._call("POST", f"{ORDERS}/seats-auto", order_id, json_body=body), "add seats automatically"
            )
        return await self._keep(order_id, basket, basket.items[:quantity], sent_at)

    @activity.defn(name="onebox.buyer_data")
    async def buyer_data(self, order_id: str, buyer: Buyer) -> None:
        """Refused (409) on a basket an earlier run, before a workflow reset, confirmed: the order
        cannot change any more (purchase-flow page), and the next steps take it as it is."""
        try:
            await self._call("POST", f"{ORDERS}/buyer-data", order_id, json_body={"email": buyer.email})
        except ApplicationError as err:
            if not err.details or err.details[0].get("status") != 409:
                raise
            basket = self.http.parse(Order, await self._call("GET", ORDERS, order_id), "read basket")
            if basket.status != CONFIRMED:
                raise err from None

    @activity.defn(name="onebox.pre_confirm")
    async def pre_confirm(self, order_id: str, item_ids: list[str]) -> PreConfirmedOrder:
        """Prices the basket holding `item_ids` (the purchase's items). It first reads the basket:
        items beyond them (a late add) are released, and a basket an earlier attempt or run already
        pre-confirmed or confirmed is taken as it is."""
        sent_at = utc_now()
        order: Order | None = None
        basket = self.http.parse(Order, await self._call("GET", ORDERS, order_id), "read basket")
        self._check_held(basket, item_ids)
        wanted = [item for item in basket.items if str(item.id) in item_ids]
        if len(wanted) < len(basket.items) and basket.status != CONFIRMED:
            await self._keep(order_id, basket, wanted, sent_at)
        elif basket.status in (PRE_CONFIRMED, CONFIRMED) and basket.code:
            order = basket
        if order is None:
            order = self.http.parse(Order, await self._send_pre_confirm(order_id), "pre-confirm")
        if not order.code:
            raise ApplicationError(
                "onebox: pre-confirm answered no order code", type=FailureReason.PROVIDER_BAD_RESPONSE, non_retryable=True
            )
        if sorted(str(item.id) for item in order.items) != sorted(item_ids):
            # Changed between the read and the pre-confirm: the retry reads and releases again.
            raise ApplicationError(f"onebox: basket {order_id} changed while it was pre-confirmed", type=BASKET_CHANGED)
        return PreConfirmedOrder(code=order.code, receipt=order.receipt(), hold=self._hold(order, sent_at))

    async def _send_pre_confirm(self, order_id: str) -> Any:
        try:
            return await self._call("POST", f"{ORDERS}/pre-confirm", order_id, json_body={})
        except ApplicationError as err:
            if not err.details or err.details[0].get("code") != ATTENDEE_DATA_REQUIRED:
                raise
            raise ApplicationError(
                f"onebox: the session needs attendee data for each ticket, which boxoffice does not collect ({err.message})",
                *err.details,
                type=err.type,
                non_retryable=True,
            ) from None

    @staticmethod
    def _check_held(basket: Order, item_ids: list[str]) -> None:
        missing = set(item_ids) - {str(item.id) for item in basket.items}
        if missing:
            raise ApplicationError(
                f"onebox: items {sorted(missing)} are no longer in the basket",
                type=FailureReason.HOLD_EXPIRED,
                non_retryable=True,
            )

    @activity.defn(name="onebox.confirm")
    async def confirm(self, order_id: str, code: str, item_ids: list[str]) -> OrderSummary:
        """Confirm has no idempotency key, so it reads the basket first: confirmed already (an
        earlier attempt whose answer was lost, or a run before a workflow reset), the order is taken
        instead of confirming twice; holding anything but `item_ids` pre-confirmed under `code` (a
        late add), it is not confirmed. A 409 to a repeated confirm may mean the first went through
        but is not readable yet: retried, never final."""
        retry = activity.info().attempt > 1
        basket = self.http.parse(Order, await self._call("GET", ORDERS, order_id), "read basket")
        if basket.status == CONFIRMED:
            return await self._confirmed(code)
        held = sorted(str(item.id) for item in basket.items)
        if (basket.status, basket.code, held) != (PRE_CONFIRMED, code, sorted(item_ids)):
            raise ApplicationError(
                f"onebox: basket {order_id} is {basket.status} {basket.code} with items {held}, not the "
                f"{sorted(item_ids)} pre-confirmed as {code}: not confirmed",
                type=FailureReason.ORDER_REJECTED,
                non_retryable=True,
            )
        try:
            data = await self._call("POST", f"{ORDERS}/confirm", order_id, json_body={})
        except ApplicationError as err:
            if not retry or not err.details or err.details[0].get("status") != 409:
                raise
            raise not_yet(
                f"onebox: confirm of {code} repeated after an unanswered one answered 409; its outcome is not known yet"
            ) from None
        return self.http.parse(Order, data, "confirm").summary()

    async def _confirmed(self, code: str) -> OrderSummary:
        activity.logger.info("order already confirmed by an earlier attempt or run", extra={"code": code})
        existing = await self._find_order(code)
        if existing is None or not existing.fulfilled:
            raise not_yet(f"onebox: basket of {code} is confirmed but the order is not readable yet")
        return existing

    @activity.defn(name="onebox.release_seats")
    async def release_seats(self, order_id: str, item_ids: list[str]) -> str:
        if not item_ids:
            return f"basket {order_id} held no seats"
        params = [("id", item) for item in item_ids]
        try:
            await self._call("DELETE", f"{ORDERS}/seats", order_id, params=params)
        except ApplicationError as err:
            if err.type != FailureReason.HOLD_EXPIRED:
                raise
            return f"basket {order_id} already gone: seats free"  # ORDER_NOT_FOUND
        return f"released {len(item_ids)} seats of basket {order_id}"

    @activity.defn(name="onebox.release_basket")
    async def release_basket(self, order_id: str) -> str | None:
        """Releases every item in the purchase's basket, whatever added it: the undo registered
        before seats are added, so seats a failed or unanswered add left behind are freed too.
        None: the basket held nothing (nothing was undone)."""
        try:
            basket = self.http.parse(Order, await self._call("GET", ORDERS, order_id), "read basket")
        except ApplicationError as err:
            if err.type != FailureReason.HOLD_EXPIRED:
                raise
            return f"basket {order_id} already gone: seats free"  # ORDER_NOT_FOUND
        if basket.status == CONFIRMED:
            raise ApplicationError(
                f"onebox: basket {order_id} is a confirmed order: its seats are not released",
                type=FailureReason.ORDER_REJECTED,
                non_retryable=True,
            )
        if not basket.items:
            return None
        return await self.release_seats(order_id, [str(item.id) for item in basket.items])

    @activity.defn(name="onebox.read_order")
    async def read_order(self, code: str) -> OrderSummary:
        data = await self._call("GET", f"/orders-mgmt-api/v1/orders/{code}")
        return self.http.parse(Order, data, "read order").summary()

    @activity.defn(name="onebox.find_order")
    async def find_order(self, code: str) -> OrderSummary | None:
        """The order by its code, or None (404): the read-back after a confirm whose outcome is
        unknown. None means not confirmed (yet); other errors are raised as usual."""
        return await self._find_order(code)

    async def _find_order(self, code: str) -> OrderSummary | None:
        try:
            return await self.read_order(code)
        except ApplicationError as err:
            if err.details and err.details[0].get("status") == 404:
                return None
            raise


def _token_refused(err: ApplicationError) -> bool:
    details = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
    status, code = details.get("status"), details.get("code") or ""
    return status == 401 or (status == 403 and code.startswith("AUTH"))
