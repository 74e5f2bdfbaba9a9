"""`boxoffice webhooks`: the receiver for ATM's signed webhooks (FACTS.md, ATM section).

Two envelopes are documented and both are accepted:
- the testing package's fixtures: body `id` = the delivery id (= `atm-delivery-id`), `apiVersion`
  in the body, every `atm-*` header sent;
- ATM's public events pages (atmosphere.money/docs/events, /docs/event-payload-examples,
  /docs/webhook-test-console): body `id` = the stable event id `evt_…`, `deliveryId` = the delivery
  `del_…`, no `apiVersion` in the body; the test console sends only `ATM-Signature`, so the delivery
  id and the type are read from the body.
A header that is sent must agree with the body. Before reading a body: `atm-signature` is present and
well formed, the Content-Length is a number within MAX_BODY_BYTES (the body is capped there). The
signature is hex HMAC-SHA256 over `"{t}.{deliveryId}.{rawBody}"`, any of several `v1=`, any of our
secrets while one rotates, |now - t| ≤ 300 s. *Assumed*: in the public envelope the signed id is the
delivery id, as in the fixtures; a signature over the event id is accepted too (either way it covers
the whole body).

Delivery is at least once and a redelivery of an event may carry a new delivery id: an event is
taken once by its event id (the delivery id where the envelope has no separate one). The receiver's
memory of it is a fast path; what survives a restart and is shared by every receiver is the purchase's
and ReconcileWorkflow's own (each takes an event id once, a resolved item's events included). A
purchase takes a payment or tickets event as a hint only (workflows/atm.py, `Evidence`). The purchase is
found by every id an event can carry: our metadata (`workflowId`, `purchaseId`, `appOrderId`), the
event's `appOrderId` (we send the purchase id as `metadata.appOrderId`), else its hold id (the
BoxofficeProviderOrderId search attribute). A checkout token alone names no purchase: 503, logged.
It never starts a purchase. A payment or ticket event no running purchase can take, and any change to
money already taken (refund, dispute, void) of any purchase, running (which lists it in `money_events`
too) or not, goes to a ReconcileWorkflow (needs attention); an event that names no purchase (yet) and anything that cannot
reach Temporal get 503, so ATM delivers again. Unknown event types get 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workers.servers import capped_body, loads_bounded, without_slash_redirect
from workflows.atm import HOLD_EXPIRED, ISSUED, MONEY_TAKEN_CHANGED, PAID, PAYMENT_FAILED
from workflows.models import STATE, AtmEvent, PurchaseState, Ticket, purchase_workflow_id
from workflows.reconcile import reconcile_workflow_id

log = structlog.get_logger("boxoffice.webhooks")

MAX_SKEW_SECONDS = 300
REMEMBERED_DELIVERIES = 10_000
# What a purchase takes; other event types are acknowledged and dropped.
EVENTS = {PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED} | MONEY_TAKEN_CHANGED
# Money moved or tickets were issued: never dropped, even when the purchase is no longer running.
MONEY_EVENTS = {PAID, ISSUED}
# ATM's events are a few KB; a larger body is refused before it is buffered.
MAX_BODY_BYTES = 256 * 1024
DIGITS = re.compile(r"[0-9]{1,15}")
ID = re.compile(r"[A-Za-z0-9_.:-]{1,300}")


class Unroutable(LookupError):
    """No purchase can be named for the event (yet): answered 503, so ATM delivers it again."""


# Delivers a verified event: `workflow_id` when the event's metadata or appOrderId names the purchase,
# else None (the event's hold id names it). Returns what became of it, for the answer and the log.
Deliver = Callable[[str | None, AtmEvent], Awaitable[str]]


def temporal_delivery(client: Client, task_queue: str) -> Deliver:
    """Signals the purchase; an event no running purchase can take goes to reconciliation
    (ReconcileWorkflow on `task_queue`), except a repeat of what a fulfilled purchase already had;
    a change to money already taken goes there also when the purchase runs (it lists it too)."""

    async def by_hold(hold_id: str) -> str | None:
        # The hold id is the purchase's BoxofficeProviderOrderId (visibility lags a second or so).
        query = f'BoxofficeProvider = "atm" AND BoxofficeProviderOrderId = "{hold_id}"'
        async for execution in client.list_workflows(query, limit=1):
            return execution.id
        return None

    async def reconcile(workflow_id: str, event: AtmEvent, running: bool) -> str:
        # Signal-with-start: one ReconcileWorkflow per purchase, which takes each event id once. Once an
        # operator resolved it, a repeat of an event it had (a replay, or a redelivery after a receiver
        # restart) is known from that run's events; only a new event opens a new item.
        item = reconcile_workflow_id(workflow_id)

        async def start(reuse: WorkflowIDReusePolicy) -> None:
            await client.start_workflow(
                "ReconcileWorkflow",
                workflow_id,
                id=item,
                task_queue=task_queue,
                id_reuse_policy=reuse,
                start_signal="atm_event",
                start_signal_args=[event],
                static_summary=f"ATM {event.kind} for {workflow_id}{'' if running else ', which is not running'}: "
                "needs attention",
            )

        try:
            await start(WorkflowIDReusePolicy.REJECT_DUPLICATE)
        except WorkflowAlreadyStartedError:
            resolved = await client.get_workflow_handle(item).query("events", result_type=list[AtmEvent])
            if any(seen.identity == event.identity for seen in resolved):
                return "duplicate: reconciled already"
            await start(WorkflowIDReusePolicy.ALLOW_DUPLICATE)
        log.error(
            "webhook sent to reconciliation: needs attention",
            event_type=event.type,
            workflow_id=workflow_id,
            hold_id=event.hold_id,
            purchase_running=running,
        )
        return "reconciliation"

    async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
        if workflow_id is None and event.hold_id:
            workflow_id = await by_hold(event.hold_id)
        if workflow_id is None:
            raise Unroutable(f"no purchase names hold {event.hold_id} / checkout token {event.checkout_token}")
        handle = client.get_workflow_handle(workflow_id)
        try:
            await handle.signal("atm_event", event)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: never started, or already ended
                raise
        else:
            if event.kind not in MONEY_TAKEN_CHANGED:
                return "delivered"
            # The purchase lists it, but may still end FULFILLED and nobody would look: an operator's item now.
            # Sent after the signal, so a failure here (503, ATM delivers again) repeats only what is deduplicated.
            return f"delivered; {await reconcile(workflow_id, event, running=True)}"
        if event.kind not in MONEY_EVENTS | MONEY_TAKEN_CHANGED:
            return "ignored: purchase not running"
        if event.kind in MONEY_EVENTS:
            try:
                state = (await handle.describe()).search_attributes.get(STATE.name) or []
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                state = []
            if state == [PurchaseState.FULFILLED]:
                return "duplicate: purchase fulfilled"
        # A refund, dispute or void of an ended purchase is never a duplicate: its tickets or money changed.
        return await reconcile(workflow_id, event, running=False)

    return deliver


def signature_valid(stamp: int, signatures: list[str], delivery_id: str, raw: bytes, secrets: list[str], now: float) -> bool:
    if abs(now - stamp) > MAX_SKEW_SECONDS:
        return False
    signed = f"{stamp}.{delivery_id}.".encode() + raw
    expected = [hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() for secret in secrets]
    return any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in signatures)


def parse_signature(header: str) -> tuple[int, list[str]] | None:
    """`t=<unix>,v1=<hex>[,v1=...]`; None when it is not that shape (e.g. `t=²`)."""
    fields = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in fields if key == "t"]
    if len(stamps) != 1 or not DIGITS.fullmatch(stamps[0]):
        return None
    return int(stamps[0]), [value for key, value in fields if key == "v1"]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _id(value: Any) -> str | None:
    return value if isinstance(value, str) and ID.fullmatch(value) else None


def route(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(workflow id, hold id) from every shape ATM's docs and SDK show: metadata in `data.metadata`,
    `data.hold.metadata`, `data.payment.metadata`; `data.appOrderId` (ATM's public events echo our
    `metadata.appOrderId`, the purchase id); the hold as `data.holdId`, `data.hold.id`,
    `data.hold.holdId`, `data.ticketHold.id` (the lexicon's `ticketHold`)."""
    hold, payment, ticket_hold = _dict(data.get("hold")), _dict(data.get("payment")), _dict(data.get("ticketHold"))
    metadata = _dict(data.get("metadata")) or _dict(hold.get("metadata")) or _dict(payment.get("metadata"))
    workflow_id = metadata.get("workflowId") if isinstance(metadata.get("workflowId"), str) else None
    purchase_id = _id(metadata.get("purchaseId")) or _id(metadata.get("appOrderId")) or _id(data.get("appOrderId"))
    if workflow_id is None and purchase_id is not None:
        workflow_id = purchase_workflow_id(purchase_id)
    hold_id = _id(data.get("holdId") or hold.get("id") or hold.get("holdId") or ticket_hold.get("id") or metadata.get("holdId"))
    return workflow_id, hold_id


def _event(envelope: Envelope, data: dict[str, Any], hold_id: str | None) -> AtmEvent:
    hold, payment = _dict(data.get("hold")), _dict(data.get("payment"))
    tickets = [
        Ticket(seat=str(t.get("tierName") or t.get("tierId") or ""), barcode=None, booking_id=t.get("id"))
        for t in data.get("tickets") or hold.get("tickets") or _dict(data.get("ticketHold")).get("tickets") or []
        if isinstance(t, dict)
    ]
    payment_id = _id(data.get("paymentId")) or _id(payment.get("id")) or _id(_dict(data.get("ticketHold")).get("paymentId"))
    status = data.get("status") or payment.get("status")
    reason = data.get("failureReason") or data.get("reason")
    # What was paid, where the event says: `amount` (public payment.completed, cents), `amountCents`.
    amount = next((v for v in (data.get("amount"), data.get("amountCents"), payment.get("amount")) if type(v) is int), None)
    currency = data.get("currency") or payment.get("currency")
    return AtmEvent(
        delivery_id=envelope.delivery_id,
        event_id=envelope.event_id,
        type=envelope.type,
        hold_id=hold_id,
        tickets=tickets,
        reason=reason if isinstance(reason, str) else None,
        payment_id=payment_id,
        checkout_token=_id(data.get("checkoutToken")),
        status=status if isinstance(status, str) else None,
        amount_cents=amount,
        currency=currency if isinstance(currency, str) else None,
        environment=envelope.environment,
    )


class Envelope:
    """The ids and type of a delivery, in either documented envelope, checked against the headers sent."""

    def __init__(self, body: dict[str, Any], headers: Mapping[str, str]) -> None:
        public = "deliveryId" in body  # ATM's events pages; the fixtures have no `deliveryId`
        delivery_id = body.get("deliveryId") if public else body.get("id")
        self.event_id: str | None = body.get("id") if public else None
        self.type: Any = body.get("type")
        if not (isinstance(delivery_id, str) and delivery_id and isinstance(self.type, str) and self.type):
            raise ValueError("body has no delivery id or type")
        if public and not (isinstance(self.event_id, str) and self.event_id):
            raise ValueError("body has no event id")
        self.delivery_id: str = delivery_id
        sent = {
            "atm-delivery-id": delivery_id,
            "atm-event": self.type,
            "atm-api-version": body.get("apiVersion"),
            "atm-environment": body.get("environment"),
        }
        for header, value in sent.items():
            # Only what both carry is compared: the test console sends no atm-* header but the signature,
            # and the public envelope no apiVersion.
            if header in headers and value is not None and headers[header] != value:
                raise ValueError(f"{header} disagrees with the body")
        self.api_version = headers.get("atm-api-version") or body.get("apiVersion")
        environment = headers.get("atm-environment") or body.get("environment")
        self.environment: str | None = environment if isinstance(environment, str) else None

    @property
    def signed_ids(self) -> list[str]:
        return [self.delivery_id] + ([self.event_id] if self.event_id else [])


def atm_receiver(secrets: list[str], deliver: Deliver, clock: Callable[[], float] = time.time) -> Starlette:
    # Ids of events taken: event ids and delivery ids both, so a repeat is known by either.
    taken: OrderedDict[str, None] = OrderedDict()

    def remember(*ids: str | None) -> None:
        for seen in filter(None, ids):
            taken[seen] = None
        while len(taken) > REMEMBERED_DELIVERIES:
            taken.popitem(last=False)

    def refuse(status: int, error: str) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status)

    async def receive(request: Request) -> JSONResponse:
        # Everything that can be checked before reading the body is: nobody unsigned makes us buffer.
        if "atm-signature" not in request.headers:
            return refuse(400, "missing atm-signature")
        parsed = parse_signature(request.headers["atm-signature"])
        if parsed is None:
            return refuse(400, "malformed atm-signature")
        length = request.headers.get("content-length")
        if length is not None and not DIGITS.fullmatch(length):
            return refuse(400, "malformed content-length")
        if length is not None and int(length) > MAX_BODY_BYTES:
            return refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        raw = await capped_body(request, MAX_BODY_BYTES)
        if raw is None:
            return refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        # The signed delivery id may be only in the body (test console): it is read to check the
        # signature over the raw bytes, and nothing else of the body is used before that check.
        try:
            body = loads_bounded(raw)  # a ValueError, never a RecursionError
            envelope = Envelope(body if isinstance(body, dict) else {}, request.headers)
        except ValueError as err:
            header_id = request.headers.get("atm-delivery-id")
            if header_id is not None and not signature_valid(*parsed, header_id, raw, secrets, clock()):
                return refuse(401, "invalid signature")
            log.warning("webhook refused: not an ATM event envelope", delivery_id=header_id, error=str(err))
            return refuse(400, f"not an ATM event envelope: {err}")
        if not any(signature_valid(*parsed, signed, raw, secrets, clock()) for signed in envelope.signed_ids):
            log.warning("webhook refused: bad signature or stale timestamp", delivery_id=envelope.delivery_id)
            return refuse(401, "invalid signature")
        if envelope.delivery_id in taken or (envelope.event_id or "") in taken:
            return JSONResponse({"ok": True, "duplicate": True})
        data = _dict(body.get("data"))
        workflow_id, hold_id = route(data)
        event = _event(envelope, data, hold_id)
        if event.kind not in EVENTS:
            log.info("webhook acknowledged, nothing to do", event_type=event.type, delivery_id=event.delivery_id)
            remember(event.delivery_id, event.event_id)
            return JSONResponse({"ok": True, "ignored": True})
        try:
            outcome = await deliver(workflow_id, event)
        except Unroutable as err:
            # Not a 2xx: ATM keeps delivering while an operator looks (or visibility catches up).
            log.error(
                "webhook names no purchase; asking ATM to deliver again",
                event_type=event.type,
                delivery_id=event.delivery_id,
                event_id=event.event_id,
                error=str(err),
            )
            return refuse(503, "no purchase found for this event yet")
        except Exception as err:  # noqa: BLE001 — any failure to deliver (Temporal unreachable) answers 503: ATM delivers again
            log.error("webhook not delivered; asking ATM to retry", event_type=event.type, error=str(err))
            return refuse(503, "temporarily unavailable")
        remember(event.delivery_id, event.event_id)
        log.info(
            "webhook taken",
            event_type=event.type,
            delivery_id=event.delivery_id,
            event_id=event.event_id,
            api_version=envelope.api_version,
            outcome=outcome,
        )
        return JSONResponse({"ok": True, "outcome": outcome})

    return without_slash_redirect(Starlette(routes=[Route("/webhooks/atm", receive, methods=["POST"])]))
