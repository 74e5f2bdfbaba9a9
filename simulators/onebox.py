"""A stateful stand-in for Onebox's distribution API: OAuth client-credentials tokens that expire
(an expired or unknown token answers 403 AUTH001, developer.oneboxtds.com/docs/authentication/troubleshooting),
baskets BASKET → PRE_CONFIRM → CONFIRM (adding or removing seats falls back to BASKET), seat
inventory, idle expiry of baskets, `ob-audit-trace-id` on every answer, and fault injection
(simulators/faults.py; `lost` on confirm is "confirmed, but the answer was lost"). The orders API
(`GET /orders-mgmt-api/v1/orders/{code}`) knows confirmed orders only; the basket is read with
`GET /distribution-api/v1/orders` and `ob-order-id` (as activities/onebox.py assumes).

Strict (the default) refuses what the docs refuse: a basket call without `ob-order-id` or a body
without its documented fields answers 400 PARAMETER_REQUIRED (code *assumed*: the docs list none),
and sessions in `attendee_sessions` need attendee data, which this stand-in has no endpoint for:
their pre-confirm answers 409 ORDER_ATTENDEE_DATA_REQUIRED (status *assumed*). Unknown paths 404.
`status_object` answers the order status as Onebox's public client code models it, `{type,
expires_in}` (seconds until the idle basket expires), instead of the state's name.

Admin endpoints under /_sim: GET state (the ledger), POST faults, POST expire-tokens, POST reset.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import Effect, Fault, Faults

SESSION = 1001
PRICE_TYPES = {1: ("General", Decimal("25.00"))}
CHARGE_PER_SEAT = Decimal("1.50")
CURRENCY = "EUR"
ORDERS = "/distribution-api/v1/orders"
BASKET_ENDPOINTS = {"basket", "seats", "seats-auto", "buyer-data", "pre-confirm", "confirm", "release"}
# The curl bodies of the purchase-flow page: field → type (bool is not an int here).
BODIES: dict[str, dict[str, type]] = {
    "seats-auto": {"price_type_id": int, "session_id": int, "quantity": int},
    "buyer-data": {"email": str},
}
SEAT_FIELDS = {"id": int, "session_id": int}


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


def missing_fields(body: Any, fields: dict[str, type]) -> list[str]:
    if not isinstance(body, dict):
        return list(fields)
    return [name for name, kind in fields.items() if not isinstance(body.get(name), kind) or isinstance(body.get(name), bool)]


@dataclass
class Item:
    id: int
    seat: int
    price_type: int
    session: int = SESSION
    refunded: bool = False


@dataclass
class Basket:
    id: str
    touched: float
    status: str = "BASKET"
    code: str | None = None
    email: str | None = None
    items: list[Item] = field(default_factory=list)
    purchased_at: float | None = None  # when it was confirmed: the orders list's purchase date

    def total(self) -> Decimal:
        return sum((PRICE_TYPES[i.price_type][1] + CHARGE_PER_SEAT for i in self.items), Decimal(0))


def seat_label(seat: int) -> tuple[str, str]:
    return "ABCD"[(seat - 1) // 10], str((seat - 1) % 10 + 1)


@dataclass
class OneboxSimulator:
    client_id: str = "dev-client"
    client_secret: str = "dev-onebox-secret"  # noqa: S105 — the simulator's public dev credential
    channel_id: str = "dev-channel"
    token_seconds: int = 43199
    basket_seconds: float = 600
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    seats: dict[int, str] = field(default_factory=lambda: {s: "sold" if s == 7 else "free" for s in range(1, 41)})
    tokens: dict[str, float] = field(default_factory=dict)  # token → expiry
    baskets: dict[str, Basket] = field(default_factory=dict)
    confirmations: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    strict: bool = True
    # Sessions whose tickets need attendee data before pre-confirm.
    attendee_sessions: set[int] = field(default_factory=set)
    status_object: bool = False
    # REFUND orders of the Orders Management API (POST .../orders/{code}/refund makes one).
    refunds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def app(self) -> Starlette:
        route = self._route
        return Starlette(
            routes=[
                Route("/oauth/token", self.token, methods=["POST"]),
                route("POST", ORDERS, "create", self.create),
                route("GET", ORDERS, "basket", self.show_basket),
                route("POST", f"{ORDERS}/seats", "seats", self.add_seats),
                route("DELETE", f"{ORDERS}/seats", "release", self.release),
                route("POST", f"{ORDERS}/seats-auto", "seats-auto", self.add_seats_auto),
                route("POST", f"{ORDERS}/buyer-data", "buyer-data", self.buyer_data),
                route("POST", f"{ORDERS}/pre-confirm", "pre-confirm", self.pre_confirm),
                route("POST", f"{ORDERS}/confirm", "confirm", self.confirm),
                route("GET", "/orders-mgmt-api/v1/orders/{code}", "read", self.read),
                route("GET", "/orders-mgmt-api/v1/orders", "orders", self.list_orders),
                route("POST", "/orders-mgmt-api/v1/orders/{code}/refund", "refund", self.refund),
                Route("/_sim/state", lambda _: JSONResponse(self.ledger()), methods=["GET"]),
                Route("/_sim/faults", self.admin_faults, methods=["POST"]),
                Route("/_sim/expire-tokens", self.admin_expire_tokens, methods=["POST"]),
            ]
        )

    def _trace(self, response: Response) -> Response:
        response.headers["ob-audit-trace-id"] = f"trace-{secrets.token_hex(6)}"
        return response

    def _route(
        self, method: str, path: str, endpoint: str, handler: Callable[[Request, Any, Basket | None], Awaitable[Response]]
    ) -> Route:
        async def serve(request: Request) -> Response:
            raw = await request.body()
            body = json.loads(raw) if raw else None
            self.calls.append(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "path": request.url.path,
                    "query": request.query_params.multi_items(),
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            if self.tokens.get(token, 0) <= self.clock():
                return self._trace(error(403, "AUTH001", "Invalid JWT signature"))
            refused = self._refuse(endpoint, request, body)
            if refused is not None:
                return self._trace(refused)
            self._expire_baskets()
            basket = None
            if endpoint in BASKET_ENDPOINTS:
                order_id = request.headers.get("ob-order-id")
                basket = self.baskets.get(order_id or "")
                if basket is None:
                    return self._trace(error(404, "ORDER_NOT_FOUND", f"no order {order_id}"))

            async def handle() -> Response:
                response = await handler(request, body, basket)
                if basket is not None and response.status_code < 300 and method != "GET":
                    basket.touched = self.clock()
                return response

            return self._trace(await self.faults.apply(endpoint, handle))

        return Route(path, serve, methods=[method])

    def _refuse(self, endpoint: str, request: Request, body: Any) -> Response | None:
        """What strict mode refuses before looking at any state: a missing header or field."""
        if not self.strict:
            return None
        if endpoint in BASKET_ENDPOINTS and not request.headers.get("ob-order-id"):
            return error(400, "PARAMETER_REQUIRED", "header ob-order-id is required")
        if endpoint == "seats":
            seats = body.get("seats") if isinstance(body, dict) else None
            if not isinstance(seats, list) or not seats or any(missing_fields(s, SEAT_FIELDS) for s in seats):
                return error(400, "PARAMETER_REQUIRED", "seats[].id and seats[].session_id are required")
        missing = missing_fields(body, BODIES.get(endpoint, {}))
        if missing:
            return error(400, "PARAMETER_REQUIRED", f"required: {', '.join(missing)}")
        if endpoint in ("pre-confirm", "confirm") and not isinstance(body, dict):
            return error(400, "PARAMETER_REQUIRED", "a JSON body is required")
        return None

    def _expire_baskets(self) -> None:
        now = self.clock()
        for basket in list(self.baskets.values()):
            if basket.status != "CONFIRM" and now - basket.touched > self.basket_seconds:
                self._free(basket, basket.items)
                del self.baskets[basket.id]

    def _free(self, basket: Basket, items: list[Item]) -> None:
        for item in items:
            self.seats[item.seat] = "free"
            basket.items.remove(item)

    def order(self, basket: Basket) -> dict[str, Any]:
        items = []
        for item in basket.items:
            row, number = seat_label(item.seat)
            name, price = PRICE_TYPES[item.price_type]
            entry: dict[str, Any] = {
                "id": item.id,
                "session_id": item.session,
                "seat": {"id": item.seat, "row": row, "number": number},
                "price_type": {"id": item.price_type, "name": name},
                "price": {"total": float(price + CHARGE_PER_SEAT), "currency": CURRENCY},
            }
            if basket.status == "CONFIRM":
                entry["ticket"] = {"barcode": f"OBX{basket.code}{item.seat:03d}"}
                entry["state"] = "REFUNDED" if item.refunded else "PURCHASE"  # *assumed* field name
            items.append(entry)
        charges = CHARGE_PER_SEAT * len(basket.items)
        status: Any = basket.status
        if self.status_object:
            status = {"type": basket.status}
            if basket.status != "CONFIRM":
                status["expires_in"] = max(int(basket.touched + self.basket_seconds - self.clock()), 0)
        return {
            "id": basket.id,
            "code": basket.code,
            "status": status,
            "items": items,
            "buyer_data": {"email": basket.email} if basket.email else {},
            "price": {"total": float(basket.total()), "charges": float(charges), "currency": CURRENCY},
        }

    # -- provider API ------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        form = dict(urllib.parse.parse_qsl((await request.body()).decode()))
        self.calls.append(
            {"endpoint": "token", "method": "POST", "path": "/oauth/token", "form": form, "headers": dict(request.headers)}
        )
        return await self.faults.apply("token", lambda: self._issue_token(form))

    async def _issue_token(self, form: dict[str, str]) -> Response:
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret"), form.get("channel_id")) != (
            "client_credentials",
            self.client_id,
            self.client_secret,
            self.channel_id,
        ):
            return error(401, "invalid_client", "bad client credentials")
        token = secrets.token_urlsafe(16)
        self.tokens[token] = self.clock() + self.token_seconds
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "bearer",
                "refresh_token": secrets.token_hex(8),
                "expires_in": self.token_seconds,
                "scope": "distribution",
            }
        )

    async def create(self, request: Request, body: Any, _: Basket | None) -> Response:
        basket = Basket(id=secrets.token_hex(12), touched=self.clock())
        self.baskets[basket.id] = basket
        return JSONResponse(self.order(basket))

    async def show_basket(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        return JSONResponse(self.order(basket))

    def _take(self, basket: Basket, seats: list[int], price_type: int, session: int = SESSION) -> Response:
        taken = [s for s in seats if self.seats.get(s) != "free"]
        if taken:
            return error(409, "ORDER_SEAT_NOT_AVAILABLE", f"seats not available: {taken}")
        for seat in seats:
            self.seats[seat] = "basket"
            basket.items.append(Item(id=next(self._ids), seat=seat, price_type=price_type, session=session))
        basket.status, basket.code = "BASKET", None  # a changed basket must be pre-confirmed again
        return JSONResponse(self.order(basket))

    async def add_seats(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        seats = (body or {}).get("seats") or []
        if any(s.get("session_id") != SESSION for s in seats):
            return error(404, "SESSION_NOT_FOUND", "unknown session")
        if len(basket.items) + len(seats) > 10:
            return error(400, "ORDER_ITEMS_LIMIT_EXCEEDED", "at most 10 items")
        return self._take(basket, [s["id"] for s in seats], 1)

    async def add_seats_auto(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        body = body or {}
        if body.get("session_id") != SESSION:
            return error(404, "SESSION_NOT_FOUND", "unknown session")
        if body.get("price_type_id") not in PRICE_TYPES:
            return error(400, "PRICE_TYPE_NOT_FOUND", "unknown price type")
        free = [s for s, state in self.seats.items() if state == "free"][: body.get("quantity", 1)]
        if len(free) < body.get("quantity", 1):
            return error(409, "ORDER_SEAT_NOT_AVAILABLE", "not enough seats")
        return self._take(basket, free, body["price_type_id"])

    async def buyer_data(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        if basket.status == "CONFIRM":
            return error(409, "ORDER_INVALID_STATUS", "a confirmed order cannot be modified")
        basket.email = (body or {}).get("email")
        return JSONResponse(self.order(basket))

    async def pre_confirm(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        if not basket.items:
            return error(400, "ORDER_EMPTY", "the basket has no items")
        if not basket.email:
            return error(400, "PARAMETER_REQUIRED", "buyer email is required")
        if any(item.session in self.attendee_sessions for item in basket.items):
            return error(409, "ORDER_ATTENDEE_DATA_REQUIRED", "Attendee data is not filled")
        if basket.status == "BASKET":
            basket.status, basket.code = "PRE_CONFIRM", secrets.token_hex(6).upper()
        return JSONResponse(self.order(basket))

    async def confirm(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        if basket.status != "PRE_CONFIRM":
            return error(409, "ORDER_INVALID_STATUS", f"order is {basket.status}, not PRE_CONFIRM")
        basket.status = "CONFIRM"
        basket.purchased_at = self.clock()
        self.confirmations += 1
        for item in basket.items:
            self.seats[item.seat] = "sold"
        return JSONResponse(self.order(basket))

    async def release(self, request: Request, body: Any, basket: Basket | None) -> Response:
        assert basket is not None  # noqa: S101 — narrows the type: the router answers 404 for an unknown basket
        if basket.status == "CONFIRM":
            return error(409, "ORDER_INVALID_STATUS", "a confirmed order keeps its seats")
        ids = {int(i) for i in request.query_params.getlist("id")}
        self._free(basket, [item for item in basket.items if item.id in ids])
        basket.status, basket.code = "BASKET", None
        return JSONResponse(self.order(basket))

    async def read(self, request: Request, body: Any, _: Basket | None) -> Response:
        code = request.path_params["code"]
        basket = next((b for b in self.baskets.values() if b.code == code), None)
        if basket is None or basket.status != "CONFIRM":
            return error(404, "ORDER_NOT_FOUND", f"no order {code}")
        return JSONResponse(self.order(basket))

    # -- admin -------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        self._expire_baskets()
        return {
            "baskets": [
                {"id": b.id, "code": b.code, "status": b.status, "seats": [i.seat for i in b.items]}
                for b in self.baskets.values()
            ],
            "held": sorted(s for s, state in self.seats.items() if state == "basket"),
            "sold": sorted(s for s, state in self.seats.items() if state == "sold" and s != 7),
            "confirmations": self.confirmations,
        }

    def committed(self) -> list[Effect]:
        """What Onebox holds to: a confirmed basket is an order, sold to the channel (its payment); a
        basket not confirmed with seats in it holds them. An empty basket holds nothing."""
        self._expire_baskets()
        effects: list[Effect] = []
        for basket in self.baskets.values():
            names = tuple(n for n in (basket.id, basket.code) if n)
            if basket.status == "CONFIRM":
                effects += [Effect("order", names, basket.status, True), Effect("payment", names, basket.status, True)]
            elif basket.items:
                effects.append(Effect("hold", names, basket.status, True))
        return effects

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})

    async def admin_expire_tokens(self, request: Request) -> Response:
        self.expire_tokens()
        return JSONResponse({"expired": True})

    def expire_tokens(self) -> None:
        self.tokens = dict.fromkeys(self.tokens, 0.0)

    # -- Orders Management API: orders by purchase date, refunds ------------------------------
    # developer.oneboxtds.com/docs/api-orders-mgmt/tutorials/get-purchases-by-time-range (and
    # get-refunds-by-time-range): GET /orders-mgmt-api/v1/orders?purchase_date_from=…&purchase_date_to=…&type=
    # PURCHASE|REFUND, dates exactly as 2021-03-08T00:00:00Z ("otherwise the validation will fail").
    # *Assumed* (the tutorials show no answer): `limit`/`offset` paging and the answer `{data, metadata:
    # {offset, limit, total}}`, the convention Onebox's own API clients read; a REFUND order names the
    # order it refunds in `related_original_code`; the validation error code AOMG0001.
    # refund-order-items: POST /orders-mgmt-api/v1/orders/{code}/refund with `items: [{id}]`; an item
    # already REFUNDED answers 409 PRODUCT_STATE_INVALID. Its answer body is not shown (*assumed*: the REFUND order).

    def _purchase_dates(self, request: Request) -> tuple[float, float] | Response:
        bounds = []
        for name in ("purchase_date_from", "purchase_date_to"):
            value = request.query_params.get(name, "")
            try:
                bounds.append(datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())
            except ValueError:
                return error(400, "AOMG0001", f"{name} must be a date like 2021-03-08T00:00:00Z")
        return bounds[0], bounds[1]

    async def list_orders(self, request: Request, body: Any, _: Basket | None) -> Response:
        dates = self._purchase_dates(request)
        if isinstance(dates, Response):
            return dates
        kind = request.query_params.get("type", "PURCHASE")
        if kind not in ("PURCHASE", "REFUND"):
            return error(400, "AOMG0001", "type must be PURCHASE or REFUND")
        try:
            limit, offset = int(request.query_params.get("limit", 50)), int(request.query_params.get("offset", 0))
        except ValueError:
            return error(400, "AOMG0001", "limit and offset are integers")
        if limit < 1 or offset < 0:
            return error(400, "AOMG0001", "limit >= 1, offset >= 0")
        since, until = dates
        if kind == "PURCHASE":
            orders = [
                {**self.order(b), "type": "PURCHASE", "purchase_date": iso(b.purchased_at)}
                for b in self.baskets.values()
                if b.status == "CONFIRM" and b.purchased_at is not None and since <= b.purchased_at <= until
            ]
        else:
            orders = [{k: v for k, v in r.items() if k != "at"} for r in self.refunds if since <= r["at"] <= until]
        return JSONResponse(
            {"data": orders[offset : offset + limit], "metadata": {"offset": offset, "limit": limit, "total": len(orders)}}
        )

    async def refund(self, request: Request, body: Any, _: Basket | None) -> Response:
        code = request.path_params["code"]
        basket = next((b for b in self.baskets.values() if b.code == code and b.status == "CONFIRM"), None)
        if basket is None:
            return error(404, "ORDER_NOT_FOUND", f"no order {code}")
        wanted = body.get("items") if isinstance(body, dict) else None
        if not isinstance(wanted, list) or not wanted or any(missing_fields(i, {"id": int}) for i in wanted):
            return error(400, "AOMG0001", "items[].id is required")
        by_id = {item.id: item for item in basket.items}
        unknown = [i["id"] for i in wanted if i["id"] not in by_id]
        if unknown:
            return error(404, "ORDER_ITEM_NOT_FOUND", f"no items {unknown} in order {code}")
        items = [by_id[i["id"]] for i in wanted]
        if any(item.refunded for item in items):
            return error(409, "PRODUCT_STATE_INVALID", "an item is already REFUNDED")
        return JSONResponse(self.refund_items(basket, items))

    def refund_items(self, basket: Basket, items: list[Item]) -> dict[str, Any]:
        for item in items:
            item.refunded = True
            self.seats[item.seat] = "free"
        amount = sum((PRICE_TYPES[i.price_type][1] + CHARGE_PER_SEAT for i in items), Decimal(0))
        now = self.clock()
        refund = {
            "code": f"R{secrets.token_hex(5).upper()}",
            "type": "REFUND",
            "related_original_code": basket.code,
            "purchase_date": iso(now),
            "price": {"total": float(amount), "currency": CURRENCY},
            "at": now,
        }
        self.refunds.append(refund)
        return {k: v for k, v in refund.items() if k != "at"}


def iso(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def seed_order(sim: OneboxSimulator, seats: list[int]) -> str:
    """A confirmed order nobody here placed (by hand at Onebox, or a basket confirmed after its purchase
    gave up): its code."""
    basket = Basket(
        id=secrets.token_hex(12),
        touched=sim.clock(),
        status="CONFIRM",
        code=secrets.token_hex(6).upper(),
        email="walk-in@example.com",
        purchased_at=sim.clock(),
    )
    for seat in seats:
        sim.seats[seat] = "sold"
        basket.items.append(Item(id=next(sim._ids), seat=seat, price_type=1))
    sim.baskets[basket.id] = basket
    return basket.code or ""


def hold_again(sim: OneboxSimulator, basket_id: str, seats: list[int]) -> None:
    """Puts seats back in a basket whose release was lost (a bug, an operator's reset)."""
    basket = sim.baskets.setdefault(basket_id, Basket(id=basket_id, touched=sim.clock()))
    basket.touched = sim.clock()
    for seat in seats:
        sim.seats[seat] = "basket"
        basket.items.append(Item(id=next(sim._ids), seat=seat, price_type=1))


def refund_at_onebox(sim: OneboxSimulator, code: str) -> None:
    """The whole order refunded at Onebox, not through boxoffice (its box office, the promoter)."""
    basket = next(b for b in sim.baskets.values() if b.code == code)
    sim.refund_items(basket, [item for item in basket.items if not item.refunded])
