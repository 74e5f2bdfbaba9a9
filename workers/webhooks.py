"""`boxoffice webhooks`: the receiver for ATM's signed webhooks (FACTS.md, ATM section).

Checks the headers, the signature's shape and the Content-Length before reading a body (capped at
MAX_BODY_BYTES); verifies `atm-signature` (hex HMAC-SHA256 over `"{t}.{deliveryId}.{rawBody}"`, any
of several `v1=`, any of our secrets while one rotates, |now − t| ≤ 300 s) and that the body's id,
type, apiVersion and environment agree with the headers; then signals the purchase (`atm_event`),
found by the event's metadata or, failing that, by its hold id. It never starts a purchase. A
payment or ticket event no running purchase can take goes to a ReconcileWorkflow (needs
attention); an event that names no purchase (yet) and anything that cannot reach Temporal get 503,
so ATM delivers again. Unknown event types get 2xx.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from workflows.atm import HOLD_EXPIRED, ISSUED, PAID, PAYMENT_FAILED
from workflows.models import AtmEvent, PurchaseState, Ticket, purchase_workflow_id
from workflows.purchase import STATE
from workflows.reconcile import reconcile_workflow_id

log = structlog.get_logger("boxoffice.webhooks")

MAX_SKEW_SECONDS = 300
REMEMBERED_DELIVERIES = 10_000
# What a purchase waits for; other event types are acknowledged and dropped.
EVENTS = {PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED}
# Money moved or tickets were issued: never dropped, even when the purchase is no longer running.
MONEY_EVENTS = {PAID, ISSUED}
HEADERS = ("atm-signature", "atm-delivery-id", "atm-event", "atm-api-version", "atm-environment")
# ATM's events are a few KB; a larger body is refused before it is buffered.
MAX_BODY_BYTES = 256 * 1024
DIGITS = re.compile(r"[0-9]{1,15}")
HOLD_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")


class Unroutable(LookupError):
    """No purchase can be named for the event (yet): answered 503, so ATM delivers it again."""


# Delivers a verified event: `workflow_id` when the event's metadata names the purchase, else None
# (the event's hold id names it). Returns what became of it, for the answer and the log.
Deliver = Callable[[str | None, AtmEvent], Awaitable[str]]


def temporal_delivery(client: Client, task_queue: str) -> Deliver:
    """Signals the purchase; an event no running purchase can take goes to reconciliation
    (ReconcileWorkflow on `task_queue`), except a repeat of what a fulfilled purchase already had."""

    async def by_hold(hold_id: str) -> str | None:
        # The hold id is the purchase's BoxofficeProviderOrderId (visibility lags a second or so).
        query = f'BoxofficeProvider = "atm" AND BoxofficeProviderOrderId = "{hold_id}"'
        async for execution in client.list_workflows(query, limit=1):
            return execution.id
        return None

    async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
        if workflow_id is None and event.hold_id:
            workflow_id = await by_hold(event.hold_id)
        if workflow_id is None:
            raise Unroutable(f"no purchase names hold {event.hold_id}")
        handle = client.get_workflow_handle(workflow_id)
        try:
            await handle.signal("atm_event", event)
            return "delivered"
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # NOT_FOUND: never started, or already ended
                raise
        if event.kind not in MONEY_EVENTS:
            return "ignored: purchase not running"
        try:
            state = (await handle.describe()).search_attributes.get(STATE.name) or []
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            state = []
        if state == [PurchaseState.FULFILLED]:
            return "duplicate: purchase fulfilled"
        await client.start_workflow(
            "ReconcileWorkflow", workflow_id, id=reconcile_workflow_id(workflow_id), task_queue=task_queue,
            start_signal="atm_event", start_signal_args=[event],
            static_summary=f"ATM {event.kind} for {workflow_id}, which is not running: needs attention",
        )
        log.error("webhook for a purchase that is not running: sent to reconciliation", event_type=event.type,
                  workflow_id=workflow_id, hold_id=event.hold_id)
        return "reconciliation"

    return deliver


def signature_valid(stamp: int, signatures: list[str], delivery_id: str, raw: bytes, secrets: list[str],
                    now: float) -> bool:
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


def route(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(workflow id, hold id) from every shape ATM's docs and SDK show: `data.metadata`,
    `data.hold.metadata`, `data.payment.metadata`; `data.holdId`, `data.hold.id`, `data.hold.holdId`."""
    hold, payment = _dict(data.get("hold")), _dict(data.get("payment"))
    metadata = _dict(data.get("metadata")) or _dict(hold.get("metadata")) or _dict(payment.get("metadata"))
    workflow_id = metadata.get("workflowId") or (
        purchase_workflow_id(metadata["purchaseId"]) if metadata.get("purchaseId") else None)
    hold_id = data.get("holdId") or hold.get("id") or hold.get("holdId") or metadata.get("holdId")
    if not isinstance(hold_id, str) or not HOLD_ID.fullmatch(hold_id):
        hold_id = None
    return (workflow_id if isinstance(workflow_id, str) else None), hold_id


def _event(delivery_id: str, kind: str, data: dict[str, Any], hold_id: str | None) -> AtmEvent:
    tickets = [
        Ticket(seat=str(t.get("tierName") or t.get("tierId") or ""), barcode=None, booking_id=t.get("id"))
        for t in data.get("tickets") or _dict(data.get("hold")).get("tickets") or [] if isinstance(t, dict)
    ]
    return AtmEvent(delivery_id=delivery_id, type=kind, hold_id=hold_id, tickets=tickets,
                    reason=data.get("failureReason") or data.get("reason"))


async def _capped_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_BODY_BYTES (a chunked upload has no length to check)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return None
    return bytes(body)


def atm_receiver(secrets: list[str], deliver: Deliver, clock: Callable[[], float] = time.time) -> Starlette:
    delivered: OrderedDict[str, None] = OrderedDict()

    def remember(delivery_id: str) -> None:
        delivered[delivery_id] = None
        while len(delivered) > REMEMBERED_DELIVERIES:
            delivered.popitem(last=False)

    def refuse(status: int, error: str) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status)

    async def receive(request: Request) -> JSONResponse:
        # Everything that can be checked before reading the body is: nobody unsigned makes us buffer.
        if any(name not in request.headers for name in HEADERS):
            return refuse(400, "missing atm-* headers")
        signature, delivery_id, kind, api_version, environment = (request.headers[h] for h in HEADERS)
        parsed = parse_signature(signature)
        if parsed is None:
            return refuse(400, "malformed atm-signature")
        length = request.headers.get("content-length")
        if length is not None and not DIGITS.fullmatch(length):
            return refuse(400, "malformed content-length")
        if length is not None and int(length) > MAX_BODY_BYTES:
            return refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        raw = await _capped_body(request)
        if raw is None:
            return refuse(413, f"body over {MAX_BODY_BYTES} bytes")
        if not signature_valid(*parsed, delivery_id, raw, secrets, clock()):
            log.warning("webhook refused: bad signature or stale timestamp", delivery_id=delivery_id)
            return refuse(401, "invalid signature")
        try:
            body = json.loads(raw)
        except ValueError:
            return refuse(400, "body is not JSON")
        if not isinstance(body, dict) or (body.get("id"), body.get("type"), body.get("apiVersion"),
                                          body.get("environment")) != (delivery_id, kind, api_version, environment):
            log.warning("webhook refused: body disagrees with headers", delivery_id=delivery_id)
            return refuse(400, "body id/type/apiVersion/environment disagree with headers")
        if delivery_id in delivered:
            return JSONResponse({"ok": True, "duplicate": True})
        if kind.replace("_", ".") not in EVENTS:
            log.info("webhook acknowledged, nothing to do", event_type=kind, delivery_id=delivery_id)
            remember(delivery_id)
            return JSONResponse({"ok": True, "ignored": True})
        data = _dict(body.get("data"))
        workflow_id, hold_id = route(data)
        try:
            outcome = await deliver(workflow_id, _event(delivery_id, kind, data, hold_id))
        except Unroutable as err:
            # Not a 2xx: ATM keeps delivering while an operator looks (or visibility catches up).
            log.error("webhook names no purchase; asking ATM to deliver again", event_type=kind,
                      delivery_id=delivery_id, error=str(err))
            return refuse(503, "no purchase found for this event yet")
        except Exception as err:  # Temporal unreachable: say so, ATM delivers again
            log.error("webhook not delivered; asking ATM to retry", event_type=kind, error=str(err))
            return refuse(503, "temporarily unavailable")
        remember(delivery_id)
        return JSONResponse({"ok": True, "outcome": outcome})

    return Starlette(routes=[Route("/webhooks/atm", receive, methods=["POST"])])
