"""`boxoffice webhooks`: the receiver for ATM's signed webhooks (FACTS.md, ATM section).

Verifies `atm-signature` (hex HMAC-SHA256 over `"{t}.{deliveryId}.{rawBody}"`, any of several `v1=`,
any of our secrets while one rotates, |now − t| ≤ 300 s) and that the body's id, type, apiVersion
and environment agree with the headers; then signals the purchase workflow (`atm_event`). Never
starts one: an event for an unknown or finished purchase is logged and acknowledged. When the
signal cannot be delivered (Temporal unreachable) it answers 503, so ATM delivers again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
from workflows.models import AtmEvent, Ticket, purchase_workflow_id

log = structlog.get_logger("boxoffice.webhooks")

MAX_SKEW_SECONDS = 300
REMEMBERED_DELIVERIES = 10_000
# What a purchase waits for; other event types are acknowledged and dropped.
EVENTS = {PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED}
HEADERS = ("atm-signature", "atm-delivery-id", "atm-event", "atm-api-version", "atm-environment")


class UnknownPurchase(LookupError):
    pass


Deliver = Callable[[str, AtmEvent], Awaitable[None]]


def temporal_delivery(client: Client) -> Deliver:
    async def deliver(workflow_id: str, event: AtmEvent) -> None:
        try:
            await client.get_workflow_handle(workflow_id).signal("atm_event", event)
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:  # never started, or already ended
                raise UnknownPurchase(workflow_id) from err
            raise

    return deliver


def signature_valid(header: str, delivery_id: str, raw: bytes, secrets: list[str], now: float) -> bool:
    fields = [part.strip().split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for key, value in fields if key == "t"]
    signatures = [value for key, value in fields if key == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > MAX_SKEW_SECONDS:
        return False
    signed = f"{stamps[0]}.{delivery_id}.".encode() + raw
    expected = [hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() for secret in secrets]
    return any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in signatures)


def _event(delivery_id: str, kind: str, data: dict[str, Any]) -> AtmEvent:
    tickets = [
        Ticket(seat=str(t.get("tierName") or t.get("tierId") or ""), barcode=None, booking_id=t.get("id"))
        for t in data.get("tickets") or []
    ]
    return AtmEvent(delivery_id=delivery_id, type=kind, hold_id=data.get("holdId"), tickets=tickets,
                    reason=data.get("failureReason") or data.get("reason"))


def atm_receiver(secrets: list[str], deliver: Deliver, clock: Callable[[], float] = time.time) -> Starlette:
    delivered: OrderedDict[str, None] = OrderedDict()

    def remember(delivery_id: str) -> None:
        delivered[delivery_id] = None
        while len(delivered) > REMEMBERED_DELIVERIES:
            delivered.popitem(last=False)

    async def receive(request: Request) -> JSONResponse:
        raw = await request.body()
        if any(name not in request.headers for name in HEADERS):
            return JSONResponse({"error": "missing atm-* headers"}, status_code=400)
        signature, delivery_id, kind, api_version, environment = (request.headers[h] for h in HEADERS)
        if not signature_valid(signature, delivery_id, raw, secrets, clock()):
            log.warning("webhook refused: bad signature or stale timestamp", delivery_id=delivery_id)
            return JSONResponse({"error": "invalid signature"}, status_code=401)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict) or (body.get("id"), body.get("type"), body.get("apiVersion"),
                                          body.get("environment")) != (delivery_id, kind, api_version, environment):
            log.warning("webhook refused: body disagrees with headers", delivery_id=delivery_id)
            return JSONResponse({"error": "body id/type/apiVersion/environment disagree with headers"},
                                status_code=400)
        if delivery_id in delivered:
            return JSONResponse({"ok": True, "duplicate": True})
        normalised = kind.replace("_", ".")
        data: dict[str, Any] = body["data"] if isinstance(body.get("data"), dict) else {}
        metadata: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
        workflow_id = metadata.get("workflowId") or (
            purchase_workflow_id(metadata["purchaseId"]) if metadata.get("purchaseId") else None)
        if normalised not in EVENTS or workflow_id is None:
            log.info("webhook acknowledged, nothing to do", event_type=kind, delivery_id=delivery_id)
            remember(delivery_id)
            return JSONResponse({"ok": True, "ignored": True})
        try:
            await deliver(workflow_id, _event(delivery_id, kind, data))
        except UnknownPurchase:
            log.warning("webhook for no running purchase", event_type=kind, workflow_id=workflow_id)
        except Exception as err:  # Temporal unreachable: say so, ATM delivers again
            log.error("webhook not delivered; asking ATM to retry", event_type=kind, error=str(err))
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503)
        remember(delivery_id)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/webhooks/atm", receive, methods=["POST"])])
