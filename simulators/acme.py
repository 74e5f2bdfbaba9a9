"""A stateful stand-in for ACME Ticketing: events with capacity, reservations that expire, carts,
checkout with `x-acme-request-uuid` idempotency (a repeat answers 409) and the 16003
DUPLICATE_TRANSACTION_FOUND error (same card and amount within 5 minutes), orders in the documented
Order shape (amounts as strings), search with pagination, update, delete, refunds, and fault
injection (simulators/faults.py). Pages it follows (developers.acmeticketing.com): reservations
(33000250677: integer ids, POST / GET by id / PUT / DELETE, no list), B2C checkout and the checkout
object (33000250712, 33000277687: a CheckoutInput with top-level contact and billing fields; contact
taken from billing when missing), order refund (33000250661: two reason codes, `ticketUUIDs`, answer
`incidentNumber`/`refundAmount`/`order`), checkout APIs best practices and security (33000250711:
every B2C checkout carries the buyer's Google reCAPTCHA token). `strict` (default) refuses what those
pages do not define or require: unknown body fields, a nested `contact`, other reason codes, wrong
types, a checkout without the reCAPTCHA token, with 400.
*Assumed* where they are silent: the error body `{errorCode, message}` (16003 adds `type`), the
checkout's `reservationId`, `notes` and `payment.cardToken`, the cart's answer fields, the reCAPTCHA
token's header (`x-acme-captcha-token`, as a public ACME client sends it) and its refusal's status.
Any non-empty token passes (ACME asks Google to score it; the simulator cannot).
Fault modes besides faults.py: `naive_timestamps`, and `max_page_size` (a server that caps search
pages, `pageSize=-1` included).

Admin endpoints under /_sim: GET state, POST faults.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
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

EVENT = "5ff74342210cbe0c44913be2"
FEE_PER_TICKET = Decimal("2.50")
DUPLICATE_WINDOW_SECONDS = 300
FIRST_RESERVATION_ID = 10754  # the reservations page's sample id
REFUND_REASONS = ("Cancelled Event", "Miscellaneous")
RESERVATION_FIELDS = frozenset({"id", "expirationTimestamp", "reservationItems"})
# CheckoutInput: the shopping cart, the Order Contact and the billing contact (the Order object's
# names); `reservationId`, `notes` and `payment` are assumed (see the module docstring).
CHECKOUT_FIELDS = frozenset(
    {
        "shoppingCartId",
        "shoppingCart",
        "contactFirstName",
        "contactLastName",
        "email",
        "phoneNumber",
        "zipCode",
        "address1",
        "city",
        "state",
        "country",
        "billingFirstName",
        "billingLastName",
        "billingEmail",
        "billingPhoneNumber",
        "billingAddress1",
        "billingCity",
        "billingState",
        "billingZipCode",
        "billingCountry",
        "reservationId",
        "notes",
        "payment",
    }
)
REFUND_FIELDS = frozenset({"orderId", "incidentReasonCode", "notes", "noEmail", "refundItems"})
REFUND_ITEM_FIELDS = frozenset({"orderItemId", "quantity", "ticketUUIDs", "incidentReasonCode"})


def error(status: int, code: str | int, message: str) -> JSONResponse:
    return JSONResponse({"errorCode": code, "message": message}, status_code=status)


def money(value: Decimal) -> str:
    return f"{value:.2f}"


@dataclass
class Event:
    name: str
    capacity: int
    types: dict[str, tuple[str, Decimal]]


@dataclass
class AcmeSimulator:
    tenant_id: str = "107"
    api_key: str = "dev-acme-key"
    reservation_seconds: int = 600
    # Refuse what the pages do not define (unknown fields, nested contact, other reason codes) or
    # require (the reCAPTCHA token on checkout).
    strict: bool = True
    recaptcha_header: str = "x-acme-captcha-token"
    # Fault mode: `expirationTimestamp` in UTC but without a zone, a shape some APIs send.
    naive_timestamps: bool = False
    max_page_size: int | None = None
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    events: dict[str, Event] = field(
        default_factory=lambda: {
            EVENT: Event(
                "Sailing",
                20,
                {
                    "54248ac8e4b01cd228b007a4": ("Adulting", Decimal("100.00")),
                    "54248ac8e4b01cd228b007a5": ("Child", Decimal("50.00")),
                },
            )
        }
    )
    reservations: dict[int, dict[str, Any]] = field(default_factory=dict)
    carts: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    request_uuids: dict[str, str] = field(default_factory=dict)  # request uuid → order id
    charges: list[tuple[str, str, float]] = field(default_factory=list)  # (card, amount, when)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _reservation_ids: Any = field(default_factory=lambda: itertools.count(FIRST_RESERVATION_ID))

    @property
    def app(self) -> Starlette:
        route = self._route
        return Starlette(
            routes=[
                route("POST", "/v2/b2b/reservations", "reserve", self.reserve),
                route("GET", "/v2/b2b/reservations/{id:int}", "get-reservation", self.get_reservation),
                route("DELETE", "/v2/b2b/reservations/{id:int}", "release", self.release),
                route("POST", "/v2/b2c/carts", "cart", self.create_cart),
                route("GET", "/v2/b2c/carts/{id}", "get-cart", self.get_cart),
                route("POST", "/v2/b2c/checkout", "checkout", self.checkout),
                route("GET", "/v2/b2c/orders/search", "search", self.search),
                route("GET", "/v2/b2c/orders/event/{event_id}", "by-event", self.by_event),
                route("GET", "/v2/b2c/orders/{id}", "get", self.get_order),
                route("PUT", "/v2/b2c/orders/{id}", "update", self.update_order),
                route("DELETE", "/v2/b2c/orders/{id}", "delete", self.delete_order),
                route("POST", "/v2/b2b/b2b/refunds", "refund", self.refund),
                Route("/_sim/state", lambda _: JSONResponse(self.ledger()), methods=["GET"]),
                Route("/_sim/faults", self.admin_faults, methods=["POST"]),
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
                    "query": request.url.query,
                    "headers": dict(request.headers),
                    "body": body,
                }
            )
            if (request.headers.get("x-b2c-tenant-id"), request.headers.get("x-acme-api-key")) != (self.tenant_id, self.api_key):
                return error(401, "UNAUTHORIZED", "x-b2c-tenant-id / x-acme-api-key missing or wrong")
            self._expire()
            return await self.faults.apply(endpoint, lambda: handler(request, body))

        return Route(path, serve, methods=[method])

    def _expire(self) -> None:
        for reservation in list(self.reservations.values()):
            if reservation["status"] == "active" and reservation["expires"] <= self.clock():
                reservation["status"] = "expired"

    def _held(self, event_id: str) -> int:
        reserved = sum(
            i["quantity"]
            for r in self.reservations.values()
            if r["status"] == "active"
            for i in r["items"]
            if i["eventId"] == event_id
        )
        sold = sum(i["quantity"] for o in self.orders.values() for i in o["orderItems"] if i.get("eventId") == event_id)
        return reserved + sold

    # -- purchase --------------------------------------------------------------------------------

    def _unknown(self, body: dict[str, Any], known: frozenset[str], what: str) -> Response | None:
        unknown = sorted(set(body) - known) if self.strict else []
        return error(400, "INVALID_REQUEST", f"unknown {what} field(s): {', '.join(unknown)}") if unknown else None

    async def reserve(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not isinstance(body.get("reservationItems"), list) or not body["reservationItems"]:
            return error(400, "INVALID_REQUEST", "reservationItems is required")
        if refused := self._unknown(body, RESERVATION_FIELDS, "reservation"):
            return refused
        items = body["reservationItems"]
        for item in items:
            if not isinstance(item.get("eventId"), str) or not isinstance(item.get("quantity"), int) or item["quantity"] < 1:
                return error(400, "INVALID_REQUEST", "reservationItems[] take eventId (string) and quantity (integer)")
            event = self.events.get(item["eventId"])
            if event is None:
                return error(404, "EVENT_NOT_FOUND", "unknown event")
            if self._held(item["eventId"]) + item["quantity"] > event.capacity:
                return error(409, "SOLD_OUT", f"not enough capacity for {item['eventId']}")
        reservation_id = next(self._reservation_ids)
        self.reservations[reservation_id] = {
            "id": reservation_id,
            "items": items,
            "expires": self.clock() + self.reservation_seconds,
            "status": "active",
        }
        return JSONResponse(self._reservation_json(self.reservations[reservation_id]))

    def _reservation_json(self, reservation: dict[str, Any]) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(reservation["expires"], UTC).isoformat().replace("+00:00", "Z")
        if self.naive_timestamps:
            stamp = stamp.removesuffix("Z")
        items = [
            {"id": reservation["id"] * 10 + n, "reservationId": reservation["id"], **item}
            for n, item in enumerate(reservation["items"])
        ]
        return {"id": reservation["id"], "expirationTimestamp": stamp, "reservationItems": items}

    async def get_reservation(self, request: Request, body: Any) -> Response:
        reservation = self.reservations.get(request.path_params["id"])
        if reservation is None or reservation["status"] != "active":
            return error(404, "RESERVATION_NOT_FOUND", "no active reservation")
        return JSONResponse(self._reservation_json(reservation))

    async def release(self, request: Request, body: Any) -> Response:
        reservation = self.reservations.get(request.path_params["id"])
        if reservation is None or reservation["status"] != "active":
            return error(404, "RESERVATION_NOT_FOUND", "no active reservation")
        reservation["status"] = "deleted"
        return JSONResponse(self._reservation_json(reservation))  # the deleted reservation, as documented

    async def create_cart(self, request: Request, body: Any) -> Response:
        lines, subtotal, tickets = [], Decimal(0), 0
        for item in (body or {}).get("items") or []:
            event = self.events.get(item.get("eventId"))
            if event is None or item.get("ticketingTypeId") not in event.types:
                return error(400, "INVALID_ITEM", "unknown event or ticketing type")
            name, price = event.types[item["ticketingTypeId"]]
            lines.append({**item, "ticketingTypeName": name, "unitPrice": money(price)})
            subtotal += price * item["quantity"]
            tickets += item["quantity"]
        cart_id = f"cart_{next(self._ids)}"
        fees = FEE_PER_TICKET * tickets
        self.carts[cart_id] = {
            "id": cart_id,
            "items": lines,
            "subtotal": money(subtotal),
            "fees": money(fees),
            "tax": "0.00",
            "total": money(subtotal + fees),
            "currency": "USD",
        }
        return JSONResponse(self.carts[cart_id])

    async def get_cart(self, request: Request, body: Any) -> Response:
        cart = self.carts.get(request.path_params["id"])
        return JSONResponse(cart) if cart else error(404, "CART_NOT_FOUND", "no such cart")

    async def checkout(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return error(400, "INVALID_REQUEST", "the body is a CheckoutInput object")
        if not request.headers.get("x-acme-browser-ip"):
            return error(400, "BROWSER_IP_REQUIRED", "x-acme-browser-ip is required for checkout")
        if self.strict and not request.headers.get(self.recaptcha_header):
            return error(400, "RECAPTCHA_REQUIRED", f"the reCAPTCHA token ({self.recaptcha_header}) is required")
        if refused := self._unknown(body, CHECKOUT_FIELDS, "CheckoutInput"):
            return refused
        request_uuid = request.headers.get("x-acme-request-uuid")
        if request_uuid in self.request_uuids:
            return error(409, "DUPLICATE_REQUEST", "this x-acme-request-uuid was already processed")
        cart = self.carts.get(body.get("shoppingCartId", ""))
        if cart is None:
            return error(400, "CART_NOT_FOUND", "no such cart")
        reservation_id = body.get("reservationId")
        reservation = self.reservations.get(int(reservation_id)) if str(reservation_id).isdigit() else None
        if reservation is None or reservation["status"] != "active":
            return error(410, "RESERVATION_EXPIRED", "the reservation expired or was deleted")
        card = (body.get("payment") or {}).get("cardToken", "")
        if card == "tok_declined":
            return error(402, "PAYMENT_DECLINED", "the card was declined")
        now = self.clock()
        if card and any(c == card and a == cart["total"] and now - t < DUPLICATE_WINDOW_SECONDS for c, a, t in self.charges):
            return JSONResponse(
                {"errorCode": 16003, "message": "Duplicate transaction found", "type": "DUPLICATE_TRANSACTION_FOUND"},
                status_code=400,
            )
        self.charges.append((card, cart["total"], now))
        reservation["status"] = "used"
        order_id = str(30263798 + next(self._ids))
        items = []
        for line in cart["items"]:
            item_id = str(43371676 + next(self._ids))
            price = Decimal(line["unitPrice"])
            items.append(
                {
                    "itemId": item_id,
                    "eventId": line["eventId"],
                    "eventName": self.events[line["eventId"]].name,
                    "ticketingTypeId": line["ticketingTypeId"],
                    "ticketingTypeName": line["ticketingTypeName"],
                    "quantity": line["quantity"],
                    "originalQuantity": line["quantity"],
                    "unitPrice": money(price),
                    "amount": money(price * line["quantity"]),
                    "itemType": "Event",
                    "ticketVos": [
                        {
                            "id": next(self._ids),
                            "tenantId": int(self.tenant_id),
                            "uuid": f"at{uuid.uuid4().hex[:6]}-{uuid.uuid4().hex[:10]}",
                            "ticketStatus": "Normal",
                            "printed": False,
                        }
                        for _ in range(line["quantity"])
                    ],
                }
            )
        created = datetime.fromtimestamp(now, UTC).isoformat()
        # Contact details not given are taken from billing (CheckoutInput, individual orders).
        contact = {
            "email": body.get("email") or body.get("billingEmail"),
            "contactFirstName": body.get("contactFirstName") or body.get("billingFirstName"),
            "contactLastName": body.get("contactLastName") or body.get("billingLastName"),
            "phoneNumber": body.get("phoneNumber") or body.get("billingPhoneNumber"),
        }
        billing = {k: body[k] for k in ("billingEmail", "billingFirstName", "billingLastName", "billingPhoneNumber") if k in body}
        self.orders[order_id] = {
            "id": order_id,
            "tenantId": int(self.tenant_id),
            **contact,
            **billing,
            "orderNumber": str(100148401 + len(self.orders)),
            "totalAmount": cart["total"],
            "paidAmount": cart["total"],
            "balanceAmount": "0.00",
            "refundAmount": "0.00",
            "saleChannel": "Online",
            "checkInStatus": "NotCheckedIn",
            "notes": body.get("notes"),
            "createdOn": created,
            "orderItems": items,
        }
        if request_uuid:
            self.request_uuids[request_uuid] = order_id
        return JSONResponse(self.orders[order_id])

    # -- order management ------------------------------------------------------------------------

    def _page(self, request: Request, orders: list[dict[str, Any]]) -> Response:
        params = request.query_params
        field_name, direction = params.get("sortField", "createdOn"), params.get("sortDirection", "asc")
        orders = sorted(orders, key=lambda o: str(o.get(field_name, "")), reverse=direction == "desc")
        page, size = int(params.get("page", 1)), int(params.get("pageSize", 100))
        if self.max_page_size is not None and (size == -1 or size > self.max_page_size):
            size = self.max_page_size
        chunk = orders if size == -1 else orders[(page - 1) * size : page * size]
        has_more = size != -1 and page * size < len(orders)
        return JSONResponse(
            {
                "list": chunk,
                "pagination": {
                    "page": page,
                    "pageSize": size,
                    "sortDirection": direction,
                    "sortField": field_name,
                    "count": len(chunk),
                    "hasMore": has_more,
                },
            }
        )

    async def search(self, request: Request, body: Any) -> Response:
        email, phone = request.query_params.get("email"), request.query_params.get("phoneNumber")
        if not email and not phone:
            return self._page(request, [])
        found = [o for o in self.orders.values() if (email and o["email"] == email) or (phone and o.get("phoneNumber") == phone)]
        return self._page(request, found)

    async def by_event(self, request: Request, body: Any) -> Response:
        event_id = request.path_params["event_id"]
        return self._page(
            request, [o for o in self.orders.values() if any(i.get("eventId") == event_id for i in o["orderItems"])]
        )

    async def get_order(self, request: Request, body: Any) -> Response:
        order = self.orders.get(request.path_params["id"])
        return JSONResponse(order) if order else error(404, "ORDER_NOT_FOUND", "no such order")

    async def update_order(self, request: Request, body: Any) -> Response:
        order = self.orders.get(request.path_params["id"])
        if order is None:
            return error(404, "ORDER_NOT_FOUND", "no such order")
        if not body or body.get("id") != order["id"]:
            return error(400, "INVALID_ORDER", "PUT takes the whole order object")
        for name in ("contactFirstName", "contactLastName", "email", "phoneNumber", "zipCode", "notes"):
            if name in body:
                order[name] = body[name]
        return JSONResponse(order)

    async def delete_order(self, request: Request, body: Any) -> Response:
        if self.orders.pop(request.path_params["id"], None) is None:
            return error(404, "ORDER_NOT_FOUND", "no such order")
        return Response(status_code=204)

    async def refund(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return error(400, "INVALID_REFUND", "the body is a Refund Input object")
        if refused := self._unknown(body, REFUND_FIELDS, "Refund Input"):
            return refused
        order = self.orders.get(str(body.get("orderId")))
        if order is None:
            return error(404, "ORDER_NOT_FOUND", "no such order")
        lines = body.get("refundItems")
        if not isinstance(lines, list) or not lines:
            return error(400, "INVALID_REFUND", "refundItems is required")
        reasons = [body.get("incidentReasonCode")] + [
            line.get("incidentReasonCode") for line in lines if "incidentReasonCode" in line
        ]
        if self.strict and any(reason not in REFUND_REASONS for reason in reasons):
            return error(400, "INVALID_REFUND", f"incidentReasonCode must be one of {', '.join(REFUND_REASONS)}")
        amount, refunded_events = Decimal(0), []
        for line in lines:
            if refused := self._unknown(line, REFUND_ITEM_FIELDS, "refundItems[]"):
                return refused
            item = next((i for i in order["orderItems"] if i["itemId"] == line.get("orderItemId")), None)
            if item is None or not isinstance(line.get("quantity"), int) or line["quantity"] < 1:
                return error(400, "INVALID_REFUND", f"refundItems[] need an order item id and a quantity: {line}")
            normal = [t for t in item["ticketVos"] if t["ticketStatus"] == "Normal"]
            if line["quantity"] > len(normal):
                return error(400, "INVALID_REFUND", "more than was bought is refunded")
            named = [t for t in normal if t["uuid"] in (line.get("ticketUUIDs") or [])]
            # Named tickets become Refund; without (valid) uuids the quantity is refunded, and, as the
            # page says, no ticket's status changes.
            for ticket in named[: line["quantity"]]:
                ticket["ticketStatus"] = "Refund"
            amount += Decimal(item["unitPrice"]) * line["quantity"]
            refunded_events.append(
                {
                    "eventName": item.get("eventName"),
                    "refundedItems": [
                        {
                            "ticketType": item.get("ticketingTypeName"),
                            "pricePerTicket": item["unitPrice"],
                            "refundedCount": line["quantity"],
                            "totalRefunded": money(Decimal(item["unitPrice"]) * line["quantity"]),
                        }
                    ],
                }
            )
        if all(t["ticketStatus"] == "Refund" for i in order["orderItems"] for t in i["ticketVos"]):
            amount = Decimal(order["totalAmount"]) - Decimal(order["refundAmount"])  # fees too
        order["refundAmount"] = money(Decimal(order["refundAmount"]) + amount)
        refund = {
            "incidentNumber": next(self._ids),
            "refundAmount": money(amount),
            "order": order,
            "refundedEvents": refunded_events,
        }
        self.refunds.append({"incidentNumber": refund["incidentNumber"], "orderId": order["id"], "amount": money(amount)})
        return JSONResponse(refund)

    def ledger(self) -> dict[str, Any]:
        self._expire()
        return {
            "reservations": {k: r["status"] for k, r in self.reservations.items()},
            "orders": [{"id": o["id"], "total": o["totalAmount"], "refunded": o["refundAmount"]} for o in self.orders.values()],
            "refunds": len(self.refunds),
        }

    def committed(self) -> list[Effect]:
        """ACME's active reservations (holds) and its orders, paid at checkout, standing until refunded
        in full."""
        self._expire()
        effects = [
            Effect("hold", (str(r["id"]),), r["status"], True) for r in self.reservations.values() if r["status"] == "active"
        ]
        for order in self.orders.values():
            standing = Decimal(str(order["refundAmount"] or 0)) < Decimal(str(order["totalAmount"]))
            state = "paid" if standing else "refunded"
            names = (str(order["id"]),)
            effects += [Effect("order", names, state, standing), Effect("payment", names, state, standing)]
        return effects

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})


def seed_order(
    sim: AcmeSimulator, notes: str | None, event_id: str = EVENT, total: str = "212.00", refunded: str = "0.00"
) -> str:
    """An order as if bought outside boxoffice's view, or by a purchase that lost its answer: for sweep tests."""
    order_id = str(30263798 + next(sim._ids))
    sim.orders[order_id] = {
        "id": order_id,
        "tenantId": int(sim.tenant_id),
        "email": "janedoe@gmail.com",
        "orderNumber": str(100148401 + len(sim.orders)),
        "totalAmount": total,
        "paidAmount": total,
        "balanceAmount": "0.00",
        "refundAmount": refunded,
        "saleChannel": "Online",
        "checkInStatus": "NotCheckedIn",
        "notes": notes,
        "createdOn": datetime.fromtimestamp(sim.clock(), UTC).isoformat(),
        "orderItems": [
            {
                "itemId": str(43371676 + next(sim._ids)),
                "eventId": event_id,
                "eventName": "Sailing",
                "ticketingTypeId": "54248ac8e4b01cd228b007a4",
                "ticketingTypeName": "Adulting",
                "quantity": 2,
                "originalQuantity": 2,
                "unitPrice": "100.00",
                "amount": "200.00",
                "itemType": "Event",
                "ticketVos": [{"id": next(sim._ids), "uuid": f"seed-{order_id}-{n}", "ticketStatus": "Normal"} for n in range(2)],
            }
        ],
    }
    return order_id


def seed_reservation(sim: AcmeSimulator, event_id: str = EVENT, quantity: int = 2) -> int:
    """An active reservation nobody releases (a purchase's that outlived it)."""
    reservation_id = next(sim._reservation_ids)
    sim.reservations[reservation_id] = {
        "id": reservation_id,
        "items": [{"eventId": event_id, "quantity": quantity}],
        "expires": sim.clock() + sim.reservation_seconds,
        "status": "active",
    }
    return reservation_id
