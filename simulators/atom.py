"""A stateful stand-in for Atom's ordering API: seats, leases that expire, orders whose status moves
with each poll, enforced headers, and fault injection (simulators/faults.py).

Strict (the default) refuses what Atom's pages refuse: a missing x-api-key, a guest account without
its required attributionMap (partner-docs-95q.pages.dev/models/ordering), missing order fields, and a
clientRequestId reused after its flow ended (an order was placed with it, or its lease lapsed):
DUPLICATE_CLIENT_REQUEST_ID (partner-docs-95q.pages.dev/guides/ordering). The pages do not say that a
repeated create answers the order it placed, so strict does not. `strict=False` keeps the lax
behaviour: a repeated create answers its order.

Admin endpoints under /_sim: GET state (the ledger), POST faults, POST fulfilment, POST reset.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import Effect, Fault, Faults

SHOWTIME = "ST-20260214-1930-AMC4"
FEE_PER_TICKET = Decimal("1.75")
TAX_RATE = Decimal("0.09")
CENT = Decimal("0.01")
USERS = {"moviefan@example.com": ("userpassword123", "USR-88234")}
AUTH_ENDPOINTS = {"lease", "preview", "create", "status", "summary", "cancel"}

Fulfilment = Literal["ok", "never", "fail"]


@dataclass
class Showtime:
    showtime_id: str
    prices: dict[tuple[str, str], Decimal]
    names: dict[str, str]
    seats: dict[str, str]  # seat id → available | occupied | sold
    max_tickets: int = 10


@dataclass
class Lease:
    client_request_id: str
    token: str
    seat_ids: list[str]
    expires_at: float


@dataclass
class Order:
    order_id: str
    event_id: str
    client_request_id: str
    token: str
    seat_ids: list[str]
    lines: list[tuple[str, str, int]]
    receipt: dict[str, Any]
    status: str = "processing"
    polls: int = 0
    refund: Decimal | None = None


def money(value: Decimal) -> float:
    return float(value.quantize(CENT, ROUND_HALF_UP))


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status)


def default_showtime() -> Showtime:
    seats = {f"{row}{n}": "available" for row in "ABCDE" for n in range(1, 11)}
    seats["A3"] = "occupied"
    return Showtime(
        showtime_id=SHOWTIME,
        prices={("PROD-ADULT-001", "OFFER-STD-001"): Decimal("14.99"), ("PROD-CHILD-001", "OFFER-STD-001"): Decimal("11.99")},
        names={"PROD-ADULT-001": "Adult", "PROD-CHILD-001": "Child"},
        seats=seats,
    )


@dataclass
class AtomSimulator:
    api_key: str = "dev-atom-key"
    strict: bool = True
    lease_seconds: int = 600
    fulfil_after_polls: int = 1
    fulfilment: Fulfilment = "ok"
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    showtimes: dict[str, Showtime] = field(default_factory=lambda: {SHOWTIME: default_showtime()})
    tokens: dict[str, str] = field(default_factory=dict)  # auth token → account id
    leases: dict[str, Lease] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    # clientRequestIds whose lease lapsed without an order: their flow timed out.
    lapsed: set[str] = field(default_factory=set)
    guests: dict[str, str] = field(default_factory=dict)  # guest account id → its email (buyer PII)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def app(self) -> Starlette:
        route = self._route
        return Starlette(
            routes=[
                route("POST", "/ordering/v2/aggregation/checkout/refresh", "refresh", self.refresh),
                route("GET", "/ordering/v1/discovery/auditoriums", "layout", self.layout),
                route("POST", "/ordering/v1/customer/account/guest", "guest", self.guest),
                route("POST", "/ordering/v1/customer/account/authenticate", "authenticate", self.authenticate),
                route("POST", "/ordering/v1/inventory/lease", "lease", self.lease),
                route("POST", "/ordering/v2/customer/orders/preview", "preview", self.preview),
                route("POST", "/ordering/v1/customer/orders", "create", self.create),
                route("GET", "/ordering/v1/customer/orders/{order_id}/status", "status", self.status),
                route("GET", "/ordering/v2/customer/orders/{order_id}/summary", "summary", self.summary),
                route("DELETE", "/v1/customer/orders/{order_id}", "cancel", self.cancel),
                route("GET", "/partner/ping", "ping", self.ping),
                Route("/_sim/state", self.admin_state, methods=["GET"]),
                Route("/_sim/faults", self.admin_faults, methods=["POST"]),
                Route("/_sim/fulfilment", self.admin_fulfilment, methods=["POST"]),
                Route("/_sim/reset", self.admin_reset, methods=["POST"]),
            ]
        )

    def _route(self, method: str, path: str, endpoint: str, handler: Callable[[Request, Any], Awaitable[Response]]) -> Route:
        async def serve(request: Request) -> Response:
            raw = await request.body()
            body = json.loads(raw) if raw else None
            self.calls.append(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "path": request.url.path,
                    "query": dict(request.query_params),
                    "headers": dict(request.headers),
                    "body": body,
                    "at": self.clock(),
                }
            )
            if request.headers.get("x-api-key") != self.api_key:
                return error(401, "UNAUTHORIZED", "missing or wrong x-api-key")
            if endpoint in AUTH_ENDPOINTS:
                if request.headers.get("x-atom-authtoken") not in self.tokens:
                    return error(401, "INVALID_AUTH_TOKEN", "missing or unknown X-Atom-AuthToken")
                if not request.headers.get("x-atom-timestamp") or not request.headers.get("x-atom-deviceid"):
                    return error(400, "MISSING_HEADERS", "X-Atom-Timestamp and X-Atom-DeviceId are required")
            return await self.faults.apply(endpoint, lambda: handler(request, body))

        return Route(path, serve, methods=[method])

    def _expire_leases(self) -> None:
        now = self.clock()
        for key, lease in list(self.leases.items()):
            if lease.expires_at <= now and self._order_for(key) is None:
                del self.leases[key]
                self.lapsed.add(key)

    def _order_for(self, client_request_id: str | None) -> Order | None:
        return next((o for o in self.orders.values() if o.client_request_id == client_request_id), None)

    def _duplicate(self, client_request_id: str | None, lapsed_too: bool) -> Response | None:
        """Strict: the answer to a clientRequestId whose flow has ended (the HTTP status is assumed)."""
        ended = self._order_for(client_request_id) is not None or (lapsed_too and client_request_id in self.lapsed)
        if self.strict and ended:
            return error(409, "DUPLICATE_CLIENT_REQUEST_ID", "clientRequestId was used by a previous flow")
        return None

    def _showtime(self, showtime_id: str | None) -> Showtime | None:
        return self.showtimes.get(showtime_id or "")

    def _seat_taken(self, showtime: Showtime, seat: str, client_request_id: str) -> bool:
        if showtime.seats.get(seat) != "available":
            return True
        return any(seat in l.seat_ids and l.client_request_id != client_request_id for l in self.leases.values())

    # -- provider API ------------------------------------------------------------------------

    async def ping(self, request: Request, body: Any) -> Response:
        return Response(status_code=200)  # "HTTP 200 with no body"

    async def refresh(self, request: Request, body: Any) -> Response:
        if self.strict and not isinstance((body or {}).get("promotions"), list):
            return error(400, "INVALID_REQUEST", "showtimeId and promotions are required")
        showtime = self._showtime(body.get("showtimeId"))
        if showtime is None:
            return error(404, "SHOWTIME_NOT_FOUND", "unknown showtime")
        products: dict[str, dict[str, Any]] = {}
        for (product_id, offer_id), price in showtime.prices.items():
            product = products.setdefault(
                product_id,
                {"productId": product_id, "name": showtime.names[product_id], "price": float(price), "offers": []},
            )
            product["offers"].append({"offerId": offer_id, "name": "Standard", "price": float(price)})
        return JSONResponse(
            {
                "surveyDetailResponse": {},
                "showtimesResponse": {
                    "showtimeId": showtime.showtime_id,
                    "movieTitle": "The Last Frontier",
                    "venueName": "AMC Loews Broadway 4",
                    "startTime": "2026-02-14T19:30:00Z",
                    "products": list(products.values()),
                },
                "maxTicketQuantity": showtime.max_tickets,
            }
        )

    async def layout(self, request: Request, body: Any) -> Response:
        showtime = self._showtime(request.query_params.get("showtimeId"))
        if showtime is None:
            return error(404, "SHOWTIME_NOT_FOUND", "unknown showtime")
        self._expire_leases()
        wanted = int(request.query_params.get("tickets", "1"))
        free = [s for s in showtime.seats if not self._seat_taken(showtime, s, "")]
        return JSONResponse(
            {
                "layoutArea": {
                    "rows": [
                        {
                            "rowLabel": "A",
                            "seats": [
                                {
                                    "seatId": s,
                                    "label": s,
                                    "status": "available" if s in free else "occupied",
                                    "seatType": "standard",
                                }
                                for s in showtime.seats
                            ],
                        }
                    ]
                },
                "recommendedSeats": free[:wanted],
                "numAvailable": len(free),
            }
        )

    def _new_token(self, account_id: str) -> str:
        token = f"sim-token-{next(self._ids)}"
        self.tokens[token] = account_id
        return token

    async def guest(self, request: Request, body: Any) -> Response:
        if not body or not body.get("email") or not body.get("firstName") or not body.get("lastName"):
            return error(400, "INVALID_REQUEST", "email, firstName and lastName are required")
        attribution = body.get("attributionMap")
        if self.strict and not (isinstance(attribution, dict) and all(isinstance(v, str) for v in attribution.values())):
            return error(400, "INVALID_REQUEST", "attributionMap (a map of strings) is required")
        account_id = f"GUEST-{next(self._ids)}"
        self.guests[account_id] = body["email"]
        return JSONResponse(
            {
                "authToken": self._new_token(account_id),
                "accountId": account_id,
                "identityId": f"ID-{account_id}",
                "identityValue": body["email"],
            }
        )

    async def authenticate(self, request: Request, body: Any) -> Response:
        if self.strict and not ((body or {}).get("identityValue") and body.get("password")):
            return error(400, "INVALID_REQUEST", "identityValue and password are required")
        user = USERS.get((body or {}).get("identityValue", ""))
        if user is None or user[0] != body.get("password"):
            return error(401, "INVALID_CREDENTIALS", "identity or password is wrong")
        return JSONResponse({"token": self._new_token(user[1]), "accountId": user[1], "identities": []})

    async def lease(self, request: Request, body: Any) -> Response:
        self._expire_leases()
        key = body.get("clientRequestId")
        if not key or (self.strict and not body.get("leaseItems")):
            return error(400, "INVALID_REQUEST", "clientRequestId and leaseItems are required")
        if duplicate := self._duplicate(key, lapsed_too=True):
            return duplicate
        if key in self.leases:  # a retried lease: same seats, same answer
            return JSONResponse({"leaseDurationSeconds": self.lease_seconds})
        showtime = self.showtimes[SHOWTIME]
        seats = [s for item in body.get("leaseItems", []) for s in item.get("seatIds", [])]
        taken = [s for s in seats if self._seat_taken(showtime, s, key)]
        if taken:
            return error(409, "SEAT_UNAVAILABLE", f"seats not available: {', '.join(taken)}")
        token = request.headers["x-atom-authtoken"]
        self.leases[key] = Lease(key, token, seats, self.clock() + self.lease_seconds)
        return JSONResponse({"leaseDurationSeconds": self.lease_seconds})

    def _check_order(self, body: Any) -> tuple[dict[str, Any], Lease | None, Response | None]:
        parameters = (body or {}).get("orderParameters") or {}
        for name in ("lineItems", "channel", "clientVersion", "clientRequestId", "isGuestOrder", "paymentProcessor"):
            if name not in parameters:
                return parameters, None, error(400, "INVALID_REQUEST", f"orderParameters.{name} is required")
        lease = self.leases.get(parameters["clientRequestId"])
        if lease is None or lease.expires_at <= self.clock():
            return parameters, None, error(410, "LEASE_EXPIRED", "no live lease for this clientRequestId")
        return parameters, lease, None

    def _receipt(self, line_items: list[dict[str, Any]]) -> dict[str, Any]:
        showtime = self.showtimes[SHOWTIME]
        lines, subtotal, tickets = [], Decimal(0), 0
        for item in line_items:
            price = showtime.prices[(item["productId"], item["offerId"])]
            lines.append(
                {
                    "productName": showtime.names[item["productId"]],
                    "quantity": item["quantity"],
                    "unitPrice": float(price),
                    "subtotal": money(price * item["quantity"]),
                }
            )
            subtotal += price * item["quantity"]
            tickets += item["quantity"]
        fee, tax = FEE_PER_TICKET * tickets, (subtotal * TAX_RATE).quantize(CENT, ROUND_HALF_UP)
        return {
            "subtotal": money(subtotal),
            "serviceFee": money(fee),
            "tax": money(tax),
            "totalAmount": money(subtotal + fee + tax),
            "currency": "USD",
            "lineItems": lines,
        }

    async def preview(self, request: Request, body: Any) -> Response:
        if duplicate := self._duplicate(((body or {}).get("orderParameters") or {}).get("clientRequestId"), False):
            return duplicate
        parameters, _, problem = self._check_order(body)
        if problem:
            return problem
        return JSONResponse({"receipt": self._receipt(parameters["lineItems"]), "autoAddedItems": []})

    async def create(self, request: Request, body: Any) -> Response:
        parameters = (body or {}).get("orderParameters") or {}
        key = parameters.get("clientRequestId")
        if duplicate := self._duplicate(key, lapsed_too=False):
            return duplicate
        existing = self._order_for(key)
        if existing is not None:  # lax: a repeat answers the order while it is live
            if existing.status in ("fulfilled", "processing"):
                return JSONResponse({"orderId": existing.order_id, "eventId": existing.event_id})
            return error(409, "DUPLICATE_CLIENT_REQUEST_ID", "clientRequestId belongs to a finished order")
        parameters, lease, problem = self._check_order(body)
        if problem:
            return problem
        assert lease is not None  # noqa: S101 — narrows the type: _check_order returns a lease when it finds no problem
        n = next(self._ids)
        order = Order(
            # The order belongs to the account placing it (its X-Atom-AuthToken).
            order_id=f"ORD-{n}",
            event_id=f"EVT-{n}",
            client_request_id=key,
            token=request.headers["x-atom-authtoken"],
            seat_ids=list(lease.seat_ids),
            lines=[(i["productId"], i["offerId"], i["quantity"]) for i in parameters["lineItems"]],
            receipt=self._receipt(parameters["lineItems"]),
        )
        self.orders[order.order_id] = order
        for seat in order.seat_ids:
            self.showtimes[SHOWTIME].seats[seat] = "sold"
        return JSONResponse({"orderId": order.order_id, "eventId": order.event_id})

    def _order(self, request: Request) -> Order | Response:
        order = self.orders.get(request.path_params["order_id"])
        # Orders belong to the account: any live token of it sees them (a returning customer logs in again).
        if order is None or self.tokens.get(order.token) != self.tokens.get(request.headers["x-atom-authtoken"]):
            return error(404, "ORDER_NOT_FOUND", "no such order for this account")
        return order

    async def status(self, request: Request, body: Any) -> Response:
        order = self._order(request)
        if isinstance(order, Response):
            return order
        if order.status == "processing":
            order.polls += 1
            if self.fulfilment == "fail":
                order.status = "failed"
            elif self.fulfilment == "ok" and order.polls > self.fulfil_after_polls:
                order.status = "fulfilled"
        failed = order.status == "failed"
        return JSONResponse(
            {
                "orderStatus": order.status,
                "orderStatusReason": "Vendor rejected the booking" if failed else None,
                "orderStatusReasonCode": "VENDOR_REJECTED" if failed else None,
            }
        )

    async def summary(self, request: Request, body: Any) -> Response:
        order = self._order(request)
        if isinstance(order, Response):
            return order
        fulfilled = order.status == "fulfilled"
        tickets = (
            [
                {
                    "seatLabel": seat,
                    "ticketType": "Adult",
                    "price": 14.99,
                    "vendorQrCodeData": f"VNDR-QR-{seat}-ENC-{order.order_id}",
                    "vendorBookingId": f"VNDR-BK-{order.order_id}",
                }
                for seat in order.seat_ids
            ]
            if fulfilled
            else []
        )
        receipt = {k: v for k, v in order.receipt.items() if k != "lineItems"}
        return JSONResponse(
            {
                "orderId": order.order_id,
                "eventId": order.event_id,
                "orderStatus": order.status,
                "receipt": receipt,
                "venueInfo": {"name": "AMC Loews Broadway 4"},
                "tickets": tickets,
                "concessions": [],
            }
        )

    async def cancel(self, request: Request, body: Any) -> Response:
        order = self._order(request)
        if isinstance(order, Response):
            return order
        if order.status != "cancelled":
            order.status = "cancelled"
            order.refund = Decimal(str(order.receipt["totalAmount"]))
            for seat in order.seat_ids:
                self.showtimes[SHOWTIME].seats[seat] = "available"
        return JSONResponse(
            {
                "orderId": order.order_id,
                "cancellationStatus": "cancelled",
                "refundAmount": float(order.refund or 0),
                "cancellationReason": "Customer requested cancellation",
            }
        )

    # -- admin -------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        self._expire_leases()
        return {
            "orders": [
                {
                    "orderId": o.order_id,
                    "clientRequestId": o.client_request_id,
                    "status": o.status,
                    "seats": o.seat_ids,
                    "refund": None if o.refund is None else float(o.refund),
                }
                for o in self.orders.values()
            ],
            "leases": [{"clientRequestId": l.client_request_id, "seats": l.seat_ids} for l in self.leases.values()],
            "sold": sorted(s for s, v in self.showtimes[SHOWTIME].seats.items() if v == "sold"),
        }

    async def admin_state(self, request: Request) -> Response:
        return JSONResponse(self.ledger())

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})

    async def admin_fulfilment(self, request: Request) -> Response:
        body = await request.json()
        self.fulfilment = body.get("fulfilment", self.fulfilment)
        self.fulfil_after_polls = body.get("fulfil_after_polls", self.fulfil_after_polls)
        return JSONResponse({"fulfilment": self.fulfilment, "fulfil_after_polls": self.fulfil_after_polls})

    async def admin_reset(self, request: Request) -> Response:
        self.showtimes = {SHOWTIME: default_showtime()}
        self.tokens.clear()
        self.leases.clear()
        self.orders.clear()
        self.lapsed.clear()
        self.guests.clear()
        self.calls.clear()
        self.faults.pending.clear()
        return JSONResponse({"reset": True})

    def committed(self) -> list[Effect]:
        """Atom's orders, standing until cancelled or failed; one not refunded has the buyer's money
        (*assumed*: Atom charges at create). Leases are not holds here: Atom has no call to end one
        early, they lapse on their own (10 minutes); `unordered_leases` lists them."""
        effects: list[Effect] = []
        for order in self.orders.values():
            standing = order.status not in ("cancelled", "failed")
            effects.append(Effect("order", (order.order_id,), order.status, standing))
            if standing and order.refund is None:
                effects.append(Effect("payment", (order.order_id,), order.status, True))
        return effects

    def unordered_leases(self) -> list[Lease]:
        """Leases still holding seats that no order was placed with."""
        self._expire_leases()
        return [lease for key, lease in self.leases.items() if self._order_for(key) is None]

    def orphan_guests(self) -> list[str]:
        """Guest accounts (each holding a buyer's name and email) no order was placed from."""
        ordering = {self.tokens.get(order.token) for order in self.orders.values()}
        return [account for account in self.guests if account not in ordering]
