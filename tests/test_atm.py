"""ATM Tickets: the webhook receiver on its own, and purchases whose payment and tickets arrive
as signed webhooks through the real receiver (time-skipping server)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from simulators.atm import AtmSimulator
from tests.conftest import (
    ATM_WEBHOOK_SECRET,
    atm_request,
    atm_worker,
    purchase_duration,
    wait_for_state,
)
from tests.test_atom_workflow import record
from workers import client as purchases
from workers.client import purchase_outcome, start_purchase
from workers.webhooks import Deliver, atm_receiver, temporal_delivery
from workflows.models import AtmEvent, ConfirmRequest, PurchaseState

NOW = 1_800_000_000.0


def event_body(delivery_id: str = "dlv_1", kind: str = "tickets.issued", **data: object) -> bytes:
    return json.dumps(
        {
            "id": delivery_id,
            "type": kind,
            "apiVersion": "2026-10-01",
            "environment": "test",
            "data": {"holdId": "hold_1", "metadata": {"workflowId": "purchase-p-1"}, **data},
        }
    ).encode()


def headers(
    body: bytes,
    delivery_id: str = "dlv_1",
    kind: str = "tickets.issued",
    stamp: float = NOW,
    secrets: tuple[str, ...] = (ATM_WEBHOOK_SECRET,),
) -> dict[str, str]:
    signed = f"{int(stamp)}.{delivery_id}.".encode() + body
    v1s = ",".join(f"v1={hmac.new(s.encode(), signed, hashlib.sha256).hexdigest()}" for s in secrets)
    return {
        "atm-signature": f"t={int(stamp)},{v1s}",
        "atm-delivery-id": delivery_id,
        "atm-event": kind,
        "atm-api-version": "2026-10-01",
        "atm-environment": "test",
    }


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.events: list[tuple[str | None, AtmEvent]] = []
        self.failures = failures

    async def __call__(self, workflow_id: str | None, event: AtmEvent) -> str:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("temporal unreachable")
        self.events.append((workflow_id, event))
        return "delivered"


async def post(deliver: Deliver, body: bytes, sent: dict[str, str], secrets: list[str] | None = None) -> httpx.Response:
    app = atm_receiver(secrets or [ATM_WEBHOOK_SECRET], deliver, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        return await client.post("/webhooks/atm", content=body, headers=sent)


async def test_receiver_signals_a_verified_event() -> None:
    recorder = Recorder()
    body = event_body(tickets=[{"id": "tkt_1", "tierId": "GA"}])
    response = await post(recorder, body, headers(body))
    assert response.status_code == 200
    [(workflow_id, event)] = recorder.events
    assert workflow_id == "purchase-p-1" and event.kind == "tickets.issued" and event.delivery_id == "dlv_1"
    assert [(t.seat, t.booking_id) for t in event.tickets] == [("GA", "tkt_1")]


@pytest.mark.parametrize("tamper", ["bad signature", "other secret", "stale", "future"])
async def test_receiver_refuses_bad_signatures(tamper: str) -> None:
    recorder, body = Recorder(), event_body()
    sent = {
        "bad signature": {**headers(body), "atm-signature": f"t={int(NOW)},v1={'0' * 64}"},
        "other secret": headers(body, secrets=("not-our-secret",)),
        "stale": headers(body, stamp=NOW - 301),
        "future": headers(body, stamp=NOW + 301),
    }[tamper]
    response = await post(recorder, body, sent)
    assert response.status_code == 401 and recorder.events == []


async def test_receiver_accepts_any_valid_v1_and_rotated_secrets() -> None:
    recorder, body = Recorder(), event_body()
    # ATM signs with the old and the new secret while rotating; we know only the new one.
    assert (await post(recorder, body, headers(body, secrets=("old", ATM_WEBHOOK_SECRET)))).status_code == 200
    # We still accept the old secret while our side rotates.
    body2 = event_body("dlv_2")
    sent = headers(body2, "dlv_2", secrets=("old",))
    assert (await post(recorder, body2, sent, secrets=[ATM_WEBHOOK_SECRET, "old"])).status_code == 200
    assert len(recorder.events) == 2


@pytest.mark.parametrize("field", ["id", "type", "apiVersion", "environment"])
async def test_receiver_refuses_a_body_that_disagrees_with_headers(field: str) -> None:
    recorder = Recorder()
    body = json.loads(event_body())
    body[field] = "something-else"
    raw = json.dumps(body).encode()
    response = await post(recorder, raw, headers(raw))
    assert response.status_code == 400 and recorder.events == []


async def test_receiver_acknowledges_unknown_events_without_signalling() -> None:
    recorder, body = Recorder(), event_body(kind="ticket.scanned")
    response = await post(recorder, body, headers(body, kind="ticket.scanned"))
    assert response.status_code == 200 and response.json()["ignored"] and recorder.events == []


async def test_receiver_signals_a_duplicate_delivery_once() -> None:
    recorder, body = Recorder(), event_body()
    app = atm_receiver([ATM_WEBHOOK_SECRET], recorder, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        first = await client.post("/webhooks/atm", content=body, headers=headers(body))
        second = await client.post("/webhooks/atm", content=body, headers=headers(body))
    assert (first.status_code, second.status_code) == (200, 200) and second.json()["duplicate"]
    assert len(recorder.events) == 1


async def test_receiver_answers_503_while_temporal_is_unreachable() -> None:
    recorder, body = Recorder(failures=1), event_body()
    app = atm_receiver([ATM_WEBHOOK_SECRET], recorder, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        failed = await client.post("/webhooks/atm", content=body, headers=headers(body))
        retried = await client.post("/webhooks/atm", content=body, headers=headers(body))
    assert (failed.status_code, retried.status_code) == (503, 200) and len(recorder.events) == 1


# -- purchases through the real receiver ---------------------------------------------------------


def wire(sim: AtmSimulator, deliver: Deliver) -> None:
    """The simulator sends its webhooks to the receiver, which signals the test server."""
    sim.webhook_transport = httpx.ASGITransport(app=atm_receiver([ATM_WEBHOOK_SECRET], deliver))
    sim.webhook_url = "http://hooks/webhooks/atm"


async def pay(sim: AtmSimulator, hold_id: str, outcome: str = "paid") -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://atm.test") as c:
        (await c.post(f"/checkout/{hold_id}", json={"outcome": outcome})).raise_for_status()


async def signals(handle) -> int:
    return len(
        [e async for e in handle.fetch_history_events() if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    )


async def buy_and(
    env: WorkflowEnvironment,
    sim: AtmSimulator,
    purchase_id: str,
    then: Callable[[str], Awaitable[None]],
    deliver: Deliver | None = None,
):
    async with atm_worker(env.client, sim) as tq:
        wire(sim, deliver or temporal_delivery(env.client, tq))
        handle = await start_purchase(env.client, atm_request(purchase_id), tq)
        status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        assert status.provider_ids["checkout_url"].endswith(status.provider_ids["order_id"])
        assert status.hold_expires_at is not None and status.receipt.total == Decimal("50")
        await then(status.provider_ids["order_id"])
        return handle, await purchase_outcome(handle)


async def test_paid_purchase_gets_its_tickets(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()
    handle, result = await buy_and(env, sim, "atm-1", lambda hold: pay(sim, hold))
    await record(handle, "atm_paid")
    assert result.state == PurchaseState.FULFILLED and result.provider_order_id == "hold_0001"
    assert [t.booking_id for t in result.tickets] == ["tkt_hold_0001_0", "tkt_hold_0001_1"]
    create = next(c for c in sim.calls if c["endpoint"] == "create")
    assert create["headers"]["authorization"] == "Bearer test-atm-token"
    assert create["body"] == {
        "items": [{"tierId": "GA", "quantity": 2}],
        "eventId": "evt_123",
        "customerEmail": "guest@example.com",
        "idempotencyKey": "atm-1",
        "metadata": {"workflowId": "purchase-atm-1", "purchaseId": "atm-1", "appOrderId": "atm-1"},
        "environment": "test",
        "returnUrl": "https://shop.example/done",
    }
    assert sim.ledger()["holds"][0]["status"] == "completed" and result.compensations == []


async def test_failed_payment_releases_the_hold(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()
    _, result = await buy_and(env, sim, "atm-2", lambda hold: pay(sim, hold, "failed"))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "PAYMENT_FAILED"
    assert result.failure.message == "card_declined"
    assert [(c.action, c.ok) for c in result.compensations] == [("release hold", True)]
    assert sim.ledger()["sold"]["GA"] == 0


async def test_unpaid_hold_expires_and_is_released(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()

    async def nothing(hold: str) -> None:
        return None

    handle, result = await buy_and(env, sim, "atm-3", nothing)
    await record(handle, "atm_expired")
    assert result.state == PurchaseState.EXPIRED and result.failure.reason == "HOLD_EXPIRED"
    assert [c["endpoint"] for c in sim.calls] == ["create", "release"]
    assert sim.ledger()["holds"][0]["status"] == "released" and sim.ledger()["sold"]["GA"] == 0
    waited = await purchase_duration(handle)
    assert 715 <= waited.total_seconds() <= 725  # ATM's expiresAt (600 s) + the grace for late webhooks (120 s)


async def test_duplicate_deliveries_signal_once(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator(duplicate_sends=True)
    handle, result = await buy_and(env, sim, "atm-4", lambda hold: pay(sim, hold))
    assert result.state == PurchaseState.FULFILLED
    assert len(sim.deliveries) == 4  # each of the 2 events sent twice
    assert await signals(handle) == 2


async def test_receiver_outage_then_redelivery_completes(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()
    flaky = temporal_delivery(env.client, "no-reconciliation-here")
    down = {"left": 2}

    async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
        if down["left"]:
            down["left"] -= 1
            raise ConnectionError("temporal briefly unreachable")
        return await flaky(workflow_id, event)

    async def pay_then_redeliver(hold: str) -> None:
        await pay(sim, hold)
        assert sim.ledger()["undelivered"] == 2  # both answered 503: kept by ATM
        assert await sim.redeliver() == 0

    _, result = await buy_and(env, sim, "atm-5", pay_then_redeliver, deliver)
    assert result.state == PurchaseState.FULFILLED and len(result.tickets) == 2


async def test_cancel_releases_the_hold_and_confirm_is_refused(env: WorkflowEnvironment) -> None:
    sim = AtmSimulator()

    async def try_confirm_then_cancel(hold: str) -> None:
        with pytest.raises(WorkflowUpdateFailedError):  # ATM's payment is the confirmation
            await purchases.confirm(env.client, "atm-6", ConfirmRequest())
        await purchases.cancel(env.client, "atm-6", "buyer left")

    _, result = await buy_and(env, sim, "atm-6", try_confirm_then_cancel)
    assert result.state == PurchaseState.CANCELLED
    assert sim.ledger()["holds"][0]["status"] == "released"
