"""A stateful stand-in for ATM Tickets: XRPC ticket holds with expiry and idempotency keys, a
checkout endpoint that "pays" (or fails), and a webhook sender that signs events as ATM does, keeps
undelivered ones for redelivery, and can send every delivery twice (at-least-once).

Shapes the docs show more than one of, each a mode: `release_shape` "hold" (the lexicon's
`{"hold": {"id", "status"}}`) or "flat" (`{"holdId", "status"}`); `event_shape`, where an event
names its hold and metadata: "metadata" (`data.holdId` + `data.metadata`), "hold" (`data.hold.id`
only), "holdId" (`data.holdId` only), "payment" (`data.payment.metadata` only).

Admin endpoints under /_sim: GET state, POST faults, POST redeliver.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import Fault, Faults

API_VERSION = "2026-10-01"
TIERS = {"GA": (2500, 100), "VIP": (9000, 4)}  # price in cents, capacity


def error(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"error": name, "message": message}, status_code=status)


@dataclass
class HeldTickets:
    hold_id: str
    key: str
    items: list[dict[str, Any]]
    metadata: dict[str, Any]
    expires_at: float
    amount_cents: int
    status: str = "active"  # active | released | expired | completed | failed


@dataclass
class AtmSimulator:
    service_token: str = "dev-atm-service-token"
    webhook_secret: str = "dev-atm-webhook-secret"
    webhook_url: str = "http://127.0.0.1:8780/webhooks/atm"
    checkout_base: str = "http://127.0.0.1:8704/checkout"
    environment: str = "test"
    hold_seconds: int = 600
    duplicate_sends: bool = False
    release_shape: str = "hold"
    event_shape: str = "metadata"
    clock: Callable[[], float] = time.time
    webhook_transport: httpx.AsyncBaseTransport | None = None
    faults: Faults = field(default_factory=Faults)
    sold: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    holds: dict[str, HeldTickets] = field(default_factory=dict)
    outbox: list[tuple[str, bytes, str]] = field(default_factory=list)  # (delivery id, body, event type)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/xrpc/tickets.atmosphere.createTicketHold", self.create_hold, methods=["POST"]),
            Route("/xrpc/tickets.atmosphere.releaseTicketHold", self.release_hold, methods=["POST"]),
            Route("/checkout/{hold_id}", self.checkout, methods=["POST"]),
            Route("/_sim/state", lambda _: JSONResponse(self.ledger()), methods=["GET"]),
            Route("/_sim/faults", self.admin_faults, methods=["POST"]),
            Route("/_sim/redeliver", self.admin_redeliver, methods=["POST"]),
        ])

    def _expire(self) -> None:
        for hold in self.holds.values():
            if hold.status == "active" and hold.expires_at <= self.clock():
                hold.status = "expired"
                self._free(hold)

    def _free(self, hold: HeldTickets) -> None:
        for item in hold.items:
            self.sold[item["tierId"]] -= item["quantity"]

    async def _xrpc(self, request: Request, endpoint: str, handle: Callable[[dict[str, Any]], Response]) -> Response:
        body = json.loads(await request.body() or b"{}")
        self.calls.append({"endpoint": endpoint, "headers": dict(request.headers), "body": body})
        if request.headers.get("authorization") != f"Bearer {self.service_token}":
            return error(401, "AuthRequired", "service-auth token missing or wrong")
        self._expire()

        async def run() -> Response:
            return handle(body)

        return await self.faults.apply(endpoint, run)

    async def create_hold(self, request: Request) -> Response:
        return await self._xrpc(request, "create", self._create)

    def _create(self, body: dict[str, Any]) -> Response:
        key, items = body.get("idempotencyKey") or "", body.get("items") or []
        existing = next((h for h in self.holds.values() if key and h.key == key), None)
        if existing is not None:
            return JSONResponse(self._hold_json(existing, reused=True))
        if not 1 <= len(items) <= 20 or not body.get("eventId"):
            return error(400, "InvalidRequest", "eventId and 1-20 items are required")
        for item in items:
            tier = TIERS.get(item.get("tierId"))
            if tier is None:
                return error(400, "InvalidRequest", f"unknown tier {item.get('tierId')}")
            if self.sold[item["tierId"]] + item["quantity"] > tier[1]:
                return error(409, "TierSoldOut", f"tier {item['tierId']} has not enough tickets")
        hold = HeldTickets(hold_id=f"hold_{next(self._ids):04d}", key=key, items=items,
                           metadata=body.get("metadata") or {}, expires_at=self.clock() + self.hold_seconds,
                           amount_cents=sum(TIERS[i["tierId"]][0] * i["quantity"] for i in items))
        for item in items:
            self.sold[item["tierId"]] += item["quantity"]
        self.holds[hold.hold_id] = hold
        return JSONResponse(self._hold_json(hold, reused=False))

    def _hold_json(self, hold: HeldTickets, reused: bool) -> dict[str, Any]:
        return {"holdId": hold.hold_id, "token": f"tok_{hold.hold_id}", "url": f"{self.checkout_base}/{hold.hold_id}",
                "expiresAt": datetime.fromtimestamp(hold.expires_at, UTC).isoformat().replace("+00:00", "Z"),
                "amountCents": hold.amount_cents, "currency": "usd", "items": hold.items, "reused": reused}

    async def release_hold(self, request: Request) -> Response:
        return await self._xrpc(request, "release", self._release)

    def _release(self, body: dict[str, Any]) -> Response:
        hold = self.holds.get(body.get("holdId") or "")
        if hold is None:
            return error(404, "TicketHoldNotFound", "no such hold")
        if hold.status == "active":
            hold.status = "released"
            self._free(hold)
        if self.release_shape == "flat":
            return JSONResponse({"holdId": hold.hold_id, "status": hold.status})
        return JSONResponse({"hold": {"id": hold.hold_id, "status": hold.status}})

    async def checkout(self, request: Request) -> Response:
        """What the buyer's payment on the hosted checkout does: events to the app's webhook."""
        self._expire()
        hold = self.holds.get(request.path_params["hold_id"])
        if hold is None or hold.status != "active":
            return error(409, "HoldNotActive", "the hold is not active")
        outcome = (await request.json()).get("outcome", "paid")
        data = self._event_data(hold)
        if outcome == "failed":
            hold.status = "failed"
            self._free(hold)
            await self.send("payment.failed", {**data, "failureReason": "card_declined"})
        else:
            hold.status = "completed"
            await self.send("payment.completed", {**data, "amountCents": hold.amount_cents})
            tickets = [{"id": f"tkt_{hold.hold_id}_{n}", "tierId": item["tierId"]}
                       for item in hold.items for n in range(item["quantity"])]
            await self.send("tickets_issued", {**data, "tickets": tickets})  # ATM uses both spellings
        return JSONResponse({"holdId": hold.hold_id, "status": hold.status})

    def _event_data(self, hold: HeldTickets) -> dict[str, Any]:
        """Where the event names its hold and our metadata, by `event_shape`."""
        shapes: dict[str, dict[str, Any]] = {
            "metadata": {"holdId": hold.hold_id, "metadata": hold.metadata},
            "hold": {"hold": {"id": hold.hold_id, "status": hold.status}},
            "holdId": {"holdId": hold.hold_id},
            "payment": {"payment": {"id": f"pay_{hold.hold_id}", "metadata": hold.metadata}},
        }
        return shapes[self.event_shape]

    # -- webhooks ------------------------------------------------------------------------------

    def signed(self, delivery_id: str, body: bytes, event_type: str) -> dict[str, str]:
        stamp = str(int(self.clock()))
        v1 = hmac.new(self.webhook_secret.encode(), f"{stamp}.{delivery_id}.".encode() + body, hashlib.sha256)
        return {"content-type": "application/json", "atm-signature": f"t={stamp},v1={v1.hexdigest()}",
                "atm-delivery-id": delivery_id, "atm-event": event_type, "atm-api-version": API_VERSION,
                "atm-environment": self.environment}

    async def send(self, event_type: str, data: dict[str, Any]) -> None:
        delivery_id = f"dlv_{next(self._ids):05d}"
        body = json.dumps({"id": delivery_id, "type": event_type, "apiVersion": API_VERSION,
                           "environment": self.environment, "createdAt": int(self.clock()), "data": data}).encode()
        for _ in range(2 if self.duplicate_sends else 1):
            if not await self._post(delivery_id, body, event_type):
                self.outbox.append((delivery_id, body, event_type))
                return

    async def _post(self, delivery_id: str, body: bytes, event_type: str) -> bool:
        async with httpx.AsyncClient(transport=self.webhook_transport, timeout=10) as client:
            try:
                response = await client.post(self.webhook_url, content=body,
                                             headers=self.signed(delivery_id, body, event_type))
                status = response.status_code
            except httpx.HTTPError:
                status = 0
        self.deliveries.append({"delivery_id": delivery_id, "event": event_type, "status": status})
        return 200 <= status < 300

    async def redeliver(self) -> int:
        """Sends the undelivered events again (ATM retries on non-2xx); returns how many are left."""
        pending, self.outbox = self.outbox, []
        for delivery_id, body, event_type in pending:
            if not await self._post(delivery_id, body, event_type):
                self.outbox.append((delivery_id, body, event_type))
        return len(self.outbox)

    # -- admin ---------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        self._expire()
        return {"holds": [{"holdId": h.hold_id, "status": h.status, "key": h.key} for h in self.holds.values()],
                "sold": dict(self.sold), "undelivered": len(self.outbox)}

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})

    async def admin_redeliver(self, request: Request) -> Response:
        return JSONResponse({"undelivered": await self.redeliver()})
