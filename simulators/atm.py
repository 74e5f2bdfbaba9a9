"""A stateful stand-in for ATM Tickets: XRPC ticket holds with expiry and idempotency keys, a
checkout endpoint that "pays" (or fails), and a webhook sender that signs events as ATM does, keeps
undelivered ones for redelivery, and can send every delivery twice (at-least-once).

Shapes the docs show more than one of, each a mode: `release_shape` "hold" (the lexicon's
`{"hold": {"id", "status"}}`) or "flat" (`{"holdId", "status"}`); `envelope`, how a webhook is
wrapped: "public" (atmosphere.money/docs/events, /docs/event-payload-examples: `id` = the stable event
id `evt_…`, `deliveryId` = `del_…`, new on every redelivery, no `apiVersion` in the body, every `atm-*`
header), "console" (the same body with only `ATM-Signature`, as /docs/webhook-test-console sends it)
or "fixture" (the testing package's: `id` = the delivery id, `apiVersion` in the body); `event_shape`,
where an event names its purchase: "public" (the public pages' payment.completed: `paymentId`,
`status: "succeeded"`, `appOrderId` echoed from our `metadata.appOrderId`, `checkoutToken` = the hold's
`token`, no hold id or metadata), "metadata" (`data.holdId` + `data.metadata`), "hold" (`data.hold.id`
only), "holdId" (`data.holdId` only), "payment" (`data.payment.metadata` only).

With `strict` (the default) XRPC input the lexicons refuse (atmosphere.money/.well-known/atproto-lexicon/
tickets.atmosphere.createTicketHold, .releaseTicketHold) answers 400 `{"error": "InvalidRequest",
"message"}`, and an XRPC method not served here 501 `MethodNotImplemented`.

`network.attested.payment.status` (a GET query, parameter `token`; lexicon network.attested.payment.status,
atmosphere.money/docs/api "Strict broker status lookup by token") answers `{"status"}` for a hold's
checkout token: `completed` once paid, `pending` while the hold is active, `failed` otherwise. *Assumed*:
it takes the ticket hold's token, and an unknown token answers 400 InvalidRequest (the lexicon lists no
error names).

Admin endpoints under /_sim: GET state, POST faults, POST redeliver, POST refund/{hold_id}.
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

from simulators.faults import Effect, Fault, Faults

API_VERSION = "2026-10-01"
ENVIRONMENTS = ("test", "live")
# Lexicon string limits of createTicketHold's input (None: any length).
CREATE_STRINGS = {
    "eventId": 300,
    "idempotencyKey": 200,
    "customerEmail": 320,
    "returnUrl": 2000,
    "cancelUrl": 2000,
    "buyerDid": None,
    "buyerAssertionJwt": 8192,
    "eventUri": None,
}
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

    @property
    def token(self) -> str:
        return f"tok_{self.hold_id}"

    @property
    def payment_id(self) -> str:
        return f"pay_{self.hold_id}"


@dataclass
class Outgoing:
    """An event ATM owes the app: `number` names it (evt_/dlv_), `attempts` counts its deliveries."""

    number: int
    type: str
    data: dict[str, Any]
    created: float
    attempts: int = 0


@dataclass
class AtmSimulator:
    service_token: str = "dev-atm-service-token"  # noqa: S105 — the simulator's public dev credential
    webhook_secret: str = "dev-atm-webhook-secret"  # noqa: S105 — the simulator's public dev credential
    webhook_url: str = "http://127.0.0.1:8780/webhooks/atm"
    checkout_base: str = "http://127.0.0.1:8704/checkout"
    environment: str = "test"
    hold_seconds: int = 600
    duplicate_sends: bool = False
    release_shape: str = "hold"
    envelope: str = "public"
    event_shape: str = "public"
    strict: bool = True
    app_did: str = "did:plc:boxoffice-dev"
    clock: Callable[[], float] = time.time
    webhook_transport: httpx.AsyncBaseTransport | None = None
    faults: Faults = field(default_factory=Faults)
    sold: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    holds: dict[str, HeldTickets] = field(default_factory=dict)
    outbox: list[Outgoing] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/xrpc/tickets.atmosphere.createTicketHold", self.create_hold, methods=["POST"]),
                Route("/xrpc/tickets.atmosphere.releaseTicketHold", self.release_hold, methods=["POST"]),
                Route("/xrpc/network.attested.payment.status", self.payment_status, methods=["GET"]),
                Route("/checkout/{hold_id}", self.checkout, methods=["POST"]),
                Route("/_sim/state", lambda _: JSONResponse(self.ledger()), methods=["GET"]),
                Route("/_sim/faults", self.admin_faults, methods=["POST"]),
                Route("/_sim/redeliver", self.admin_redeliver, methods=["POST"]),
                Route("/_sim/refund/{hold_id}", self.admin_refund, methods=["POST"]),
                Route("/xrpc/{nsid}", self.unknown_method, methods=["GET", "POST"]),
            ]
        )

    def _expire(self) -> None:
        for hold in self.holds.values():
            if hold.status == "active" and hold.expires_at <= self.clock():
                hold.status = "expired"
                self._free(hold)

    def _free(self, hold: HeldTickets) -> None:
        for item in hold.items:
            self.sold[item["tierId"]] -= item["quantity"]

    async def _xrpc(self, request: Request, endpoint: str, handle: Callable[[dict[str, Any]], Response]) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return error(400, "InvalidRequest", "the input is not JSON")
        self.calls.append({"endpoint": endpoint, "headers": dict(request.headers), "body": body})
        if request.headers.get("authorization") != f"Bearer {self.service_token}":
            return error(401, "AuthRequired", "service-auth token missing or wrong")
        if not isinstance(body, dict):
            return error(400, "InvalidRequest", "the input must be an object")
        self._expire()

        async def run() -> Response:
            return handle(body)

        return await self.faults.apply(endpoint, run)

    async def unknown_method(self, request: Request) -> Response:
        if not self.strict:
            return error(404, "NotFound", "no such endpoint")
        return error(501, "MethodNotImplemented", f"method {request.path_params['nsid']} not implemented")

    @staticmethod
    def _create_refused(body: dict[str, Any]) -> str | None:
        """What createTicketHold's lexicon refuses in `body`, or None. Unknown fields pass: lexicon
        objects are open. *Assumed*: an event is named (eventId or eventUri) and `environment`, whose
        lexicon lists knownValues, is test or live."""
        items = body.get("items")
        if not isinstance(items, list) or not 1 <= len(items) <= 20:
            return "items: 1 to 20 are required"
        for item in items:
            if not (
                isinstance(item, dict)
                and isinstance(item.get("tierId"), str)
                and item["tierId"]
                and type(item.get("quantity")) is int
                and item["quantity"] >= 1
            ):
                return "items[]: tierId (string) and quantity (integer, at least 1) are required"
        for name, limit in CREATE_STRINGS.items():
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or not value or (limit and len(value) > limit)):
                return f"{name}: a string of 1 to {limit or 'any number of'} characters"
        if body.get("environment") is not None and body["environment"] not in ENVIRONMENTS:
            return f"environment: one of {', '.join(ENVIRONMENTS)}"
        if not (body.get("eventId") or body.get("eventUri")):
            return "eventId or eventUri is required"
        return None

    async def create_hold(self, request: Request) -> Response:
        return await self._xrpc(request, "create", self._create)

    def _create(self, body: dict[str, Any]) -> Response:
        refused = self._create_refused(body) if self.strict else None
        if refused is not None:
            return error(400, "InvalidRequest", refused)
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
        hold = HeldTickets(
            hold_id=f"hold_{next(self._ids):04d}",
            key=key,
            items=items,
            metadata=body.get("metadata") or {},
            expires_at=self.clock() + self.hold_seconds,
            amount_cents=sum(TIERS[i["tierId"]][0] * i["quantity"] for i in items),
        )
        for item in items:
            self.sold[item["tierId"]] += item["quantity"]
        self.holds[hold.hold_id] = hold
        return JSONResponse(self._hold_json(hold, reused=False))

    def _hold_json(self, hold: HeldTickets, reused: bool) -> dict[str, Any]:
        return {
            "holdId": hold.hold_id,
            "token": hold.token,
            "url": f"{self.checkout_base}/{hold.hold_id}",
            "expiresAt": datetime.fromtimestamp(hold.expires_at, UTC).isoformat().replace("+00:00", "Z"),
            "amountCents": hold.amount_cents,
            "currency": "usd",
            "items": hold.items,
            "reused": reused,
            "environment": self.environment,
        }

    async def release_hold(self, request: Request) -> Response:
        return await self._xrpc(request, "release", self._release)

    def _release(self, body: dict[str, Any]) -> Response:
        hold_id, reason = body.get("holdId"), body.get("reason")
        if self.strict and not (
            isinstance(hold_id, str)
            and 1 <= len(hold_id) <= 300
            and (reason is None or (isinstance(reason, str) and len(reason) <= 200))
        ):
            return error(400, "InvalidRequest", "holdId (1 to 300 characters) is required; reason at most 200")
        hold = self.holds.get(hold_id if isinstance(hold_id, str) else "")
        if hold is None:
            return error(404, "TicketHoldNotFound", "no such hold")
        if hold.status == "active":
            hold.status = "released"
            self._free(hold)
        if self.release_shape == "flat":
            return JSONResponse({"holdId": hold.hold_id, "status": hold.status})
        return JSONResponse({"hold": {"id": hold.hold_id, "status": hold.status}})

    async def payment_status(self, request: Request) -> Response:
        token = request.query_params.get("token")
        return await self._xrpc(request, "payment status", lambda _: self._payment_status(token))

    def _payment_status(self, token: str | None) -> Response:
        if not token:
            return error(400, "InvalidRequest", "token is required")
        hold = next((h for h in self.holds.values() if h.token == token), None)
        if hold is None:
            return error(400, "InvalidRequest", "unknown token")
        status = {"completed": "completed", "active": "pending"}.get(hold.status, "failed")
        return JSONResponse({"status": status})

    async def checkout(self, request: Request) -> Response:
        """What the buyer's payment on the hosted checkout does: events to the app's webhook."""
        self._expire()
        hold = self.holds.get(request.path_params["hold_id"])
        if hold is None or hold.status != "active":
            return error(409, "HoldNotActive", "the hold is not active")
        outcome = (await request.json()).get("outcome", "paid")
        if outcome == "failed":
            hold.status = "failed"
            self._free(hold)
            await self.send("payment.failed", self._event_data(hold, "payment.failed"))
        else:
            hold.status = "completed"
            await self.send("payment.completed", self._event_data(hold, "payment.completed"))
            # The fixtures spell it both ways (FACTS.md); the public pages with a dot.
            await self.send(
                "tickets_issued" if self.envelope == "fixture" else "tickets.issued", self._event_data(hold, "tickets.issued")
            )
        return JSONResponse({"holdId": hold.hold_id, "status": hold.status})

    async def refund(self, hold_id: str) -> None:
        """ATM (the organizer, support) refunds a paid hold's payment: `payment.refunded`."""
        await self.send("payment.refunded", self._event_data(self.holds[hold_id], "payment.refunded"))

    def _event_data(self, hold: HeldTickets, kind: str) -> dict[str, Any]:
        """What an event of `kind` about `hold` carries, by `event_shape`."""
        tickets = [
            {"id": f"tkt_{hold.hold_id}_{n}", "tierId": item["tierId"]} for item in hold.items for n in range(item["quantity"])
        ]
        if self.event_shape == "public":
            # /docs/event-payload-examples; *assumed* for payment.failed and tickets.issued, which it
            # does not show: the same ids, and the hold as the lexicon's `ticketHold`.
            ids = {
                "checkoutToken": hold.token,
                **({"appOrderId": hold.metadata["appOrderId"]} if "appOrderId" in hold.metadata else {}),
            }
            return {
                "payment.completed": {
                    "paymentId": hold.payment_id,
                    "amount": hold.amount_cents,
                    "currency": "usd",
                    "paymentType": "ticket",
                    "status": "succeeded",
                    **ids,
                },
                "payment.failed": {"payment": {"id": hold.payment_id, "status": "failed"}, "reason": "card_declined", **ids},
                "tickets.issued": {
                    "ticketHold": {"id": hold.hold_id, "paymentId": hold.payment_id, "status": "completed"},
                    "tickets": tickets,
                    **ids,
                },
                "payment.refunded": {
                    "paymentId": hold.payment_id,
                    "refundId": f"refund_{hold.hold_id}",
                    "amountRefunded": hold.amount_cents,
                    "currency": "usd",
                    "reason": "requested_by_customer",
                    **ids,
                },
            }[kind]
        shapes: dict[str, dict[str, Any]] = {
            "metadata": {"holdId": hold.hold_id, "metadata": hold.metadata},
            "hold": {"hold": {"id": hold.hold_id, "status": hold.status}},
            "holdId": {"holdId": hold.hold_id},
            "payment": {"payment": {"id": hold.payment_id, "metadata": hold.metadata}},
        }
        extra: dict[str, dict[str, Any]] = {
            "payment.completed": {"amountCents": hold.amount_cents},
            "payment.failed": {"failureReason": "card_declined"},
            "tickets.issued": {"tickets": tickets},
            "payment.refunded": {"reason": "requested_by_customer"},
        }
        return {**shapes[self.event_shape], **extra[kind]}

    # -- webhooks ------------------------------------------------------------------------------

    def _delivery(self, event: Outgoing) -> tuple[str, bytes, dict[str, str]]:
        """The delivery id, body and headers of one attempt to deliver `event`, by `envelope`."""
        if self.envelope == "fixture":
            delivery_id = f"dlv_{event.number:05d}"  # the fixtures' id is the delivery's: one per event
            envelope: dict[str, Any] = {
                "id": delivery_id,
                "type": event.type,
                "apiVersion": API_VERSION,
                "environment": self.environment,
                "createdAt": int(event.created),
            }
        else:
            delivery_id = f"del_{event.number:05d}_{event.attempts}"  # a new one on each redelivery
            created = datetime.fromtimestamp(event.created, UTC).isoformat(timespec="milliseconds")
            envelope = {
                "id": f"evt_{event.number:05d}",
                "deliveryId": delivery_id,
                "environment": self.environment,
                "type": event.type,
                "appDid": self.app_did,
                "createdAt": created.replace("+00:00", "Z"),
            }
        body = json.dumps({**envelope, "data": event.data}).encode()
        stamp = str(int(self.clock()))
        v1 = hmac.new(self.webhook_secret.encode(), f"{stamp}.{delivery_id}.".encode() + body, hashlib.sha256)
        headers = {"content-type": "application/json", "atm-signature": f"t={stamp},v1={v1.hexdigest()}"}
        if self.envelope != "console":
            headers |= {
                "atm-delivery-id": delivery_id,
                "atm-event": event.type,
                "atm-api-version": API_VERSION,
                "atm-environment": self.environment,
            }
        return delivery_id, body, headers

    async def send(self, event_type: str, data: dict[str, Any]) -> None:
        event = Outgoing(number=next(self._ids), type=event_type, data=data, created=self.clock())
        if not await self._attempt(event):
            self.outbox.append(event)

    async def _attempt(self, event: Outgoing) -> bool:
        """One delivery (sent twice with `duplicate_sends`); False when the app did not take it."""
        event.attempts += 1
        delivery_id, body, headers = self._delivery(event)
        for _ in range(2 if self.duplicate_sends else 1):
            if not await self._post(delivery_id, body, headers, event.type):
                return False
        return True

    async def _post(self, delivery_id: str, body: bytes, headers: dict[str, str], event_type: str) -> bool:
        async with httpx.AsyncClient(transport=self.webhook_transport, timeout=10) as client:
            try:
                status = (await client.post(self.webhook_url, content=body, headers=headers)).status_code
            except httpx.HTTPError:
                status = 0
        self.deliveries.append({"delivery_id": delivery_id, "event": event_type, "status": status})
        return 200 <= status < 300

    async def redeliver(self) -> int:
        """Sends the undelivered events again (ATM retries on non-2xx); returns how many are left."""
        pending, self.outbox = self.outbox, []
        for event in pending:
            if not await self._attempt(event):
                self.outbox.append(event)
        return len(self.outbox)

    # -- admin ---------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        self._expire()
        return {
            "holds": [{"holdId": h.hold_id, "status": h.status, "key": h.key} for h in self.holds.values()],
            "sold": dict(self.sold),
            "undelivered": len(self.outbox),
        }

    def committed(self) -> list[Effect]:
        """Every hold, standing while active; a paid (completed) one is also an order and a payment."""
        self._expire()
        effects: list[Effect] = []
        for hold in self.holds.values():
            effects.append(Effect("hold", (hold.hold_id,), hold.status, hold.status == "active"))
            if hold.status == "completed":
                names = (hold.hold_id, hold.payment_id)
                effects += [Effect("order", names, hold.status, True), Effect("payment", names, hold.status, True)]
        return effects

    async def admin_faults(self, request: Request) -> Response:
        self.faults.add(Fault.model_validate(await request.json()))
        return JSONResponse({"pending": len(self.faults.pending)})

    async def admin_redeliver(self, request: Request) -> Response:
        return JSONResponse({"undelivered": await self.redeliver()})

    async def admin_refund(self, request: Request) -> Response:
        hold = self.holds.get(request.path_params["hold_id"])
        if hold is None or hold.status != "completed":
            return error(409, "HoldNotPaid", "only a paid hold can be refunded")
        await self.refund(hold.hold_id)
        return JSONResponse({"holdId": hold.hold_id, "refunded": True})
