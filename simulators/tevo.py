"""A stateful stand-in for Ticket Evolution: verifies X-Token / X-Signature on every request (401 on
mismatch, as the API does), ticket groups, clients, affiliate orders whose state moves
pending → accepted | rejected with each poll, reject and cancel, and fault injection
(simulators/faults.py). The order search is paginated (`page`, `per_page` up to `max_per_page`, 10
as Orders / Index documents; `total_entries`); fault modes: `search_delay` (a new order reaches the
search `search_delay` seconds late), `search_misses` (a new order is left out of its first N
matching searches: lag for time-skipping tests) and `reference_filter=False` (the search ignores
`reference` and lists every order).

`strict` (default) refuses what the docs refuse: Orders / Reject
(https://ticketevolution.atlassian.net/wiki/spaces/API/pages/9470108) of an order that is not
pending, Orders / Cancel (…/pages/4129637) of one that is not accepted, either without a `reason`
from the enum or an integer `reviewer_id` (400), or with a reviewer who is not a user of the
brokerage (422). Cancel only proposes: the order reads cancelled once the other side cancels too
(`other_side_cancels`). `buyer_state` reads "accepted" from the start, as in the create example;
`buyer_cancels` makes the buyer's side cancel once the seller accepts.

Admin endpoints under /_sim: GET state, POST faults.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import Effect, Fault, Faults

Outcome = Literal["accept", "reject", "never"]
GROUP = 324466901
REASONS = (
    "Tickets No Longer Available",
    "Tickets Priced Incorrectly",
    "Duplicate Order",
    "Fraudulent Order",
    "Test Order",
    "Other",
)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def expected_signature(secret: str, method: str, host: str, path: str, query: str, body: bytes) -> str:
    # Written from FACTS.md on its own, not shared with the client's signer, so each checks the other.
    if body:
        rest = body.decode()
    else:
        pairs = [p for p in query.split("&") if p]
        rest = "&".join(sorted(pairs, key=lambda p: p.split("=", 1)[0]))
    message = f"{method} {host}{path}?{rest}".encode()
    return base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest()).decode()


@dataclass
class Group:
    id: int
    available: int
    price: Decimal
    splits: list[int]
    seats: list[str]


@dataclass
class Order:
    id: int
    reference: str | None
    group: int
    quantity: int
    price: Decimal
    body: dict[str, Any]
    seats: list[str]
    state: str = "pending"
    buyer_state: str = "accepted"
    polls: int = 0
    rejection: str | None = None
    cancellation: str | None = None
    created: float = 0.0
    hidden_searches: int = 0


@dataclass
class TevoSimulator:
    token: str = "dev-tevo-token"  # noqa: S105 — the simulator's public dev credential
    secret: str = "dev-tevo-secret"  # noqa: S105 — the simulator's public dev credential
    outcome: Outcome = "accept"
    accept_after_polls: int = 1
    reviewer_id: int = 12345
    strict: bool = True
    max_per_page: int = 10
    search_delay: float = 0.0
    search_misses: int = 0
    reference_filter: bool = True
    other_side_cancels: bool = False
    buyer_cancels: bool = False
    clock: Callable[[], float] = time.time
    faults: Faults = field(default_factory=Faults)
    groups: dict[int, Group] = field(
        default_factory=lambda: {GROUP: Group(GROUP, 4, Decimal("145.48"), [1, 2, 4], ["9", "10", "11", "12"])}
    )
    clients: dict[int, dict[str, Any]] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(819975))

    @property
    def app(self) -> Starlette:
        route = self._route
        return Starlette(
            routes=[
                route("GET", "/v9/ticket_groups/{group_id:int}", "group", self.show_group),
                route("GET", "/v9/clients", "clients", self.list_clients),
                route("POST", "/v9/clients", "create-client", self.create_client),
                route("POST", "/v10/orders", "create", self.create_order),
                route("GET", "/v9/orders", "orders", self.list_orders),
                route("GET", "/v9/orders/{order_id:int}", "show", self.show_order),
                route("POST", "/v9/orders/{order_id:int}/reject", "reject", self.reject_order),
                route("POST", "/v9/orders/{order_id:int}/cancel", "cancel", self.cancel_order),
                Route("/_sim/state", lambda _: JSONResponse(self.ledger()), methods=["GET"]),
                Route("/_sim/faults", self.admin_faults, methods=["POST"]),
            ]
        )

    def _route(self, method: str, path: str, endpoint: str, handler: Callable[[Request, Any], Awaitable[Response]]) -> Route:
        async def serve(request: Request) -> Response:
            raw = await request.body()
            query = request.url.query
            self.calls.append(
                {
                    "endpoint": endpoint,
                    "method": method,
                    "path": request.url.path,
                    "query": query,
                    "headers": dict(request.headers),
                    "raw": raw,
                }
            )
            signature = expected_signature(self.secret, method, request.url.hostname or "", request.url.path, query, raw)
            if request.headers.get("x-token") != self.token or not hmac.compare_digest(
                request.headers.get("x-signature", ""), signature
            ):
                return error(401, "Unauthorized: bad X-Token or X-Signature")
            body = json.loads(raw) if raw else None
            return await self.faults.apply(endpoint, lambda: handler(request, body))

        return Route(path, serve, methods=[method])

    def _order_json(self, order: Order) -> dict[str, Any]:
        subtotal = order.price * order.quantity
        fee = Decimal(str(order.body.get("service_fee", 0)))
        shipping = Decimal(str(order.body.get("delivery", {}).get("cost", 0)))
        tax = Decimal(str(order.body.get("tax", 0)))
        return {
            "id": order.id,
            "oid": f"388214-{order.id}",
            "order_type": "sale",
            "state": order.state,
            "buyer_state": order.buyer_state,
            "reference": order.reference,
            "subtotal": str(subtotal),
            "shipping": str(shipping),
            "service_fee": str(fee),
            "tax": str(tax),
            "total": str(subtotal + fee + shipping + tax),
            "seller_rejection_reason": order.rejection,
            "seller_cancellation_reason": order.cancellation,
            "items": [
                {
                    "id": order.id * 10,
                    "price": str(order.price),
                    "quantity": order.quantity,
                    "ticket_group": {
                        "id": str(order.group),
                        "section": "23",
                        "row": "a",
                        "seats": order.seats,
                        "tickets": [{"seat": s} for s in order.seats],
                    },
                }
            ],
        }

    # -- provider API ------------------------------------------------------------------------

    async def show_group(self, request: Request, body: Any) -> Response:
        group = self.groups.get(request.path_params["group_id"])
        if group is None:
            return error(404, "Ticket group not found")
        return JSONResponse(
            {
                "id": group.id,
                "available_quantity": group.available,
                "quantity": group.available,
                "retail_price": str(group.price),
                "splits": group.splits,
                "section": "23",
                "row": "a",
                "event": {
                    "id": "648825",
                    "name": "Massive Attack",
                    "occurs_at": "2027-10-20T19:00:00Z",
                    "venue": {"id": "1388", "name": "Santa Barbara Bowl"},
                },
            }
        )

    async def list_clients(self, request: Request, body: Any) -> Response:
        email = request.query_params.get("email")
        found = [c for c in self.clients.values() if any(e["address"] == email for e in c.get("email_addresses", []))]
        return JSONResponse({"clients": found, "total_entries": len(found)})

    async def create_client(self, request: Request, body: Any) -> Response:
        created = []
        for client in (body or {}).get("clients", []):
            if " " not in client.get("name", "").strip():
                return error(422, "name must be a first and a last name")
            client = {**client, "id": next(self._ids)}
            self.clients[client["id"]] = client
            created.append(client)
        return JSONResponse({"clients": created})

    async def create_order(self, request: Request, body: Any) -> Response:
        order_body = (body or {}).get("order") or {}
        group_spec = order_body.get("ticket_group") or {}
        group = self.groups.get(group_spec.get("id"))
        if group is None:
            return error(404, "Ticket group not found")
        if order_body.get("client_id") not in self.clients:
            return error(422, "client_id is unknown")
        payments = order_body.get("payments") or []
        if not payments or not any(p.get("credit_card_id") or p.get("token") for p in payments):
            return error(422, "a payment needs credit_card_id or token")
        quantity = group_spec.get("quantity", 0)
        if quantity > group.available or quantity not in group.splits:
            return error(409, "Tickets No Longer Available")
        if Decimal(str(group_spec.get("price"))) != group.price:
            return error(422, "Tickets Priced Incorrectly")
        seats, group.seats = group.seats[:quantity], group.seats[quantity:]
        group.available -= quantity
        order = Order(
            id=next(self._ids),
            reference=order_body.get("reference"),
            group=group.id,
            quantity=quantity,
            price=group.price,
            body=order_body,
            seats=seats,
            created=self.clock(),
            hidden_searches=self.search_misses,
        )
        self.orders[order.id] = order
        return JSONResponse(self._order_json(order))

    async def list_orders(self, request: Request, body: Any) -> Response:
        reference = request.query_params.get("reference") if self.reference_filter else None
        visible = self.clock() - self.search_delay
        matching = [o for o in self.orders.values() if o.created <= visible and (reference is None or o.reference == reference)]
        for order in matching:
            order.hidden_searches = max(order.hidden_searches - 1, -1)
        found = [self._order_json(o) for o in matching if o.hidden_searches < 0]
        page = int(request.query_params.get("page", 1))
        per_page = min(int(request.query_params.get("per_page", 100)), self.max_per_page)
        return JSONResponse(
            {
                "orders": found[(page - 1) * per_page : page * per_page],
                "total_entries": len(found),
                "current_page": page,
                "per_page": per_page,
            }
        )

    async def show_order(self, request: Request, body: Any) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        if order is None:
            return error(404, "Order not found")
        if order.state == "pending":
            order.polls += 1
            if order.polls > self.accept_after_polls and self.outcome == "accept":
                order.state = "accepted"
                if self.buyer_cancels:
                    order.buyer_state = "cancelled"
            elif order.polls > self.accept_after_polls and self.outcome == "reject":
                order.state, order.buyer_state = "rejected", "rejected"
                order.rejection = "Tickets No Longer Available"
                self._release(order)
        return JSONResponse(self._order_json(order))

    def _review(self, body: Any, order: Order | None, allowed_state: str, action: str) -> Response | None:
        """What Orders / Reject and Orders / Cancel refuse, or None."""
        if order is None:
            return error(404, "Order not found")
        if not self.strict:
            return None
        if not isinstance(body, dict) or body.get("reason") not in REASONS:
            return error(400, f"reason must be one of: {', '.join(REASONS)}")
        reviewer = body.get("reviewer_id")
        if not isinstance(reviewer, int) or isinstance(reviewer, bool):
            return error(400, "reviewer_id (integer) is required")
        if reviewer != self.reviewer_id:
            return error(422, f"reviewer_id {reviewer} is not a user of this brokerage")
        if order.state != allowed_state:
            return error(422, f"only a {allowed_state} order can be {action}ed; this one is {order.state}")
        return None

    def _release(self, order: Order) -> None:
        group = self.groups.get(order.group)
        if group is not None:
            group.available += order.quantity
            group.seats = order.seats + group.seats

    async def reject_order(self, request: Request, body: Any) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        refused = self._review(body, order, "pending", "reject")
        if refused is not None:
            return refused
        assert order is not None  # noqa: S101 — narrows the type: _review refused a missing order
        if order.state not in ("rejected", "canceled", "cancelled"):
            order.state, order.buyer_state, order.rejection = "rejected", "rejected", body.get("reason")
            self._release(order)
        return JSONResponse(self._order_json(order))

    async def cancel_order(self, request: Request, body: Any) -> Response:
        order = self.orders.get(request.path_params["order_id"])
        refused = self._review(body, order, "accepted", "cancel")
        if refused is not None:
            return refused
        assert order is not None  # noqa: S101 — narrows the type: _review refused a missing order
        order.cancellation = (body or {}).get("reason")
        if self.other_side_cancels or not self.strict:
            order.state = order.buyer_state = "canceled"  # TEvo spells it both ways; this one tests the other
            self._release(order)
        return JSONResponse(self._order_json(order))

    # -- admin -------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        return {
            "orders": [
                {"id": o.id, "reference": o.reference, "state": o.state, "buyer_state": o.buyer_state, "seats": o.seats}
                for o in self.orders.values()
            ],
            "clients": len(self.clients),
            "available": {g.id: g.available for g in self.groups.values()},
        }

    def committed(self) -> list[Effect]:
        """Every order placed, standing until rejected or cancelled; an accepted one has taken the
        buyer's payment (*assumed*: the card is charged when the seller accepts)."""
        effects: list[Effect] = []
        for order in self.orders.values():
            names = (str(order.id), f"388214-{order.id}")
            standing = order.state not in ("rejected", "canceled", "cancelled")
            effects.append(Effect("order", names, order.state, standing))
            if order.state in ("accepted", "completed"):
                effects.append(Effect("payment", names, order.state, True))
        return effects

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})


def seed_order(sim: TevoSimulator, reference: str | None, state: str = "accepted", quantity: int = 1) -> int:
    """An order as if placed outside boxoffice's view (a manual order, a lost create): for sweep tests."""
    order = Order(
        id=next(sim._ids),
        reference=reference,
        group=GROUP,
        quantity=quantity,
        price=Decimal("145.48"),
        body={"reference": reference},
        seats=[],
        state=state,
        created=sim.clock(),
        hidden_searches=-1,
    )
    sim.orders[order.id] = order
    return order.id
