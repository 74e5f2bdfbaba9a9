"""ATM's webhook envelopes, event spellings and money events, as ATM's public pages show them
(atmosphere.money/docs/events, /docs/event-payload-examples, /docs/webhook-test-console), beside the
testing package's fixtures (tests/test_atm.py); and the simulator refusing what the lexicons refuse."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from simulators.atm import AtmSimulator
from tests.conftest import ATM_WEBHOOK_SECRET, atm_request, atm_worker, wait_for_state
from tests.test_atm import NOW, Recorder, buy_and, event_body, headers, pay, post, wire
from workers.client import purchase_outcome, start_purchase
from workers.webhooks import atm_receiver, temporal_delivery
from workflows.models import AtmEvent, PurchaseState, PurchaseStatus

# /docs/event-payload-examples, "Payment completed", as printed there.
PAYMENT_COMPLETED: dict[str, Any] = {
    "id": "evt_pay_completed_01",
    "deliveryId": "del_pay_completed_01",
    "environment": "test",
    "type": "payment.completed",
    "appDid": "did:plc:app",
    "createdAt": "2026-06-05T14:00:00.000Z",
    "data": {
        "paymentId": "pay_01HZYATM0001",
        "amount": 2500,
        "currency": "usd",
        "paymentType": "shop",
        "status": "succeeded",
        "recipientDid": "did:plc:creator",
        "recipientHandle": "creator.example",
        "payerDid": "did:plc:buyer",
        "payerHandle": "buyer.example",
        "listing": {"uri": "at://did:plc:creator/money.atmosphere.product/abc", "cid": "bafy..."},
        "appOrderId": "ord_123",
        "checkoutToken": "atm_checkout_123",
    },
}


def public(event: dict[str, Any] = PAYMENT_COMPLETED, **changes: Any) -> bytes:
    return json.dumps({**event, **changes}).encode()


def signature_only(body: bytes, delivery_id: str) -> dict[str, str]:
    """What the test console sends: `ATM-Signature` (and the content type), no other atm-* header."""
    signed = f"{int(NOW)}.{delivery_id}.".encode() + body
    v1 = hmac.new(ATM_WEBHOOK_SECRET.encode(), signed, hashlib.sha256).hexdigest()
    return {"ATM-Signature": f"t={int(NOW)},v1={v1}", "Content-Type": "application/json"}


async def test_public_envelope_payment_reaches_its_purchase_by_app_order_id() -> None:
    """https://www.atmosphere.money/docs/event-payload-examples: `id` is the event's, `deliveryId` the
    delivery's, no apiVersion in the body, no holdId or metadata: the purchase is the appOrderId's."""
    recorder, body = Recorder(), public()
    sent = {**headers(body, "del_pay_completed_01", "payment.completed")}
    response = await post(recorder, body, sent)
    assert response.status_code == 200, response.text
    [(workflow_id, event)] = recorder.events
    assert workflow_id == "purchase-ord_123"
    assert (event.kind, event.delivery_id, event.event_id) == (
        "payment.completed",
        "del_pay_completed_01",
        "evt_pay_completed_01",
    )
    assert (event.payment_id, event.checkout_token, event.status) == ("pay_01HZYATM0001", "atm_checkout_123", "succeeded")


async def test_console_delivery_with_only_the_signature_header_is_taken() -> None:
    """https://www.atmosphere.money/docs/webhook-test-console sends only `ATM-Signature`: the delivery
    id and the type come from the body."""
    recorder, body = Recorder(), public()
    response = await post(recorder, body, signature_only(body, "del_pay_completed_01"))
    assert response.status_code == 200, response.text
    assert [(w, e.kind) for w, e in recorder.events] == [("purchase-ord_123", "payment.completed")]


@pytest.mark.parametrize("tamper", ["header disagrees", "signed over another id", "no deliveryId nor id"])
async def test_public_envelope_is_still_checked(tamper: str) -> None:
    """https://www.atmosphere.money/docs/webhook-test-console: bad signature → 401; a header that is
    sent must name the same delivery as the body."""
    recorder = Recorder()
    body = public() if tamper != "no deliveryId nor id" else json.dumps({"type": "payment.completed"}).encode()
    sent = {
        "header disagrees": headers(body, "del_x", "payment.completed"),  # validly signed over the header's id
        "signed over another id": signature_only(body, "del_other"),
        "no deliveryId nor id": signature_only(body, "del_pay_completed_01"),
    }[tamper]
    response = await post(recorder, body, sent)
    assert response.status_code == {"header disagrees": 400, "signed over another id": 401, "no deliveryId nor id": 400}[tamper]
    assert recorder.events == []


async def test_redelivery_with_a_new_delivery_id_is_taken_once() -> None:
    """https://www.atmosphere.money/docs/event-payload-examples: `id` is the stable event id, `deliveryId`
    one delivery attempt: a redrive of the same event is known by its event id."""
    recorder = Recorder()
    app = atm_receiver([ATM_WEBHOOK_SECRET], recorder, clock=lambda: NOW)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        answers = []
        for delivery_id in ("del_1", "del_2"):
            body = public(deliveryId=delivery_id)
            answers.append(await client.post("/webhooks/atm", content=body, headers=signature_only(body, delivery_id)))
    assert [a.status_code for a in answers] == [200, 200] and answers[1].json()["duplicate"]
    assert len(recorder.events) == 1


@pytest.mark.parametrize("spelling", ["payment-completed", "tickets-issued", "payment_completed", "tickets_issued"])
async def test_hyphen_and_underscore_spellings_are_delivered(spelling: str) -> None:
    """FACTS.md (ATM): both spellings are seen in ATM's fixtures; all name the documented dotted type
    (https://www.atmosphere.money/docs/events)."""
    recorder, body = Recorder(), event_body(kind=spelling)
    response = await post(recorder, body, headers(body, kind=spelling))
    assert response.status_code == 200 and "ignored" not in response.json()
    [(_, event)] = recorder.events
    assert event.kind == spelling.replace("-", ".").replace("_", ".")


@pytest.mark.parametrize("kind", ["payment.refunded", "payment.disputed", "ticket.voided", "ticket.refunded"])
async def test_changes_to_money_taken_are_delivered_not_dropped(kind: str) -> None:
    """https://www.atmosphere.money/docs/events lists payment.refunded and payment.disputed;
    the receive lexicon (/.well-known/atproto-lexicon/money.atmosphere.event.receive) ticket.voided and
    ticket.refunded. Money already taken changed: never acknowledged and dropped."""
    recorder = Recorder()
    body = public(type=kind, data={"paymentId": "pay_1", "appOrderId": "ord_123", "reason": "requested_by_customer"})
    response = await post(recorder, body, signature_only(body, "del_pay_completed_01"))
    assert response.status_code == 200 and "ignored" not in response.json()
    assert [(w, e.kind, e.reason) for w, e in recorder.events] == [("purchase-ord_123", kind, "requested_by_customer")]


# -- purchases through the simulator and the real receiver ---------------------------------------


@pytest.mark.parametrize("envelope", ["public", "console", "fixture"])
async def test_purchase_is_fulfilled_in_every_envelope(env: WorkflowEnvironment, envelope: str) -> None:
    """https://www.atmosphere.money/docs/event-payload-examples (public: the payment names the purchase
    only by appOrderId and checkoutToken), /docs/webhook-test-console (console), /docs/testing-package
    (fixture). The hold's token and the payment id are recorded on the purchase."""
    sim = AtmSimulator(envelope=envelope)
    seen: dict[str, str] = {}

    async def pay_and_look(hold: str) -> None:
        await pay(sim, hold)
        handle = env.client.get_workflow_handle(f"purchase-atm-env-{envelope}")
        seen.update((await handle.query("status", result_type=PurchaseStatus)).provider_ids)

    _, result = await buy_and(env, sim, f"atm-env-{envelope}", pay_and_look)
    assert result.state == PurchaseState.FULFILLED and len(result.tickets) == 2
    assert (seen["checkout_token"], seen["payment_id"]) == ("tok_hold_0001", "pay_hold_0001")


async def test_refund_of_a_fulfilled_purchase_needs_attention(env: WorkflowEnvironment) -> None:
    """https://www.atmosphere.money/docs/event-payload-examples "Payment refunded": money already taken
    changed after the purchase ended: an operator sees it (ReconcileWorkflow, NEEDS_ATTENTION)."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        wire(sim, temporal_delivery(env.client, tq))
        handle = await start_purchase(env.client, atm_request("atm-refund"), tq)
        hold = (await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)).provider_ids["order_id"]
        await pay(sim, hold)
        assert (await purchase_outcome(handle)).state == PurchaseState.FULFILLED
        await sim.refund(hold)
        assert sim.deliveries[-1]["status"] == 200
        reconcile = env.client.get_workflow_handle(f"reconcile-{handle.id}")
        [kept] = await reconcile.query("events", result_type=list[AtmEvent])
        assert (kept.kind, kept.payment_id, kept.reason) == ("payment.refunded", f"pay_{hold}", "requested_by_customer")
        assert (await reconcile.describe()).search_attributes["BoxofficeState"] == ["NEEDS_ATTENTION"]
        await reconcile.signal("resolve", "tickets cancelled")
        assert await reconcile.result() == "tickets cancelled"


async def test_refund_while_the_purchase_runs_shows_in_its_status_and_result(env: WorkflowEnvironment) -> None:
    """https://www.atmosphere.money/docs/events: payment.refunded reaches a running purchase, which shows
    it (status and result `money_events`), once although ATM redelivers it with a new delivery id."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        delivery = temporal_delivery(env.client, tq)
        held_back = {"tickets.issued"}

        async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
            if event.kind in held_back:
                raise ConnectionError("temporal briefly unreachable")
            return await delivery(workflow_id, event)

        wire(sim, deliver)
        handle: WorkflowHandle[Any, Any] = await start_purchase(env.client, atm_request("atm-refund-running"), tq)
        hold = (await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)).provider_ids["order_id"]
        await pay(sim, hold)
        await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)
        await sim.refund(hold)
        [refund] = [d["delivery_id"] for d in sim.deliveries if d["event"] == "payment.refunded"]
        event_id = "evt_" + refund.split("_")[1]  # the simulator's del_<n>_<attempt> is event evt_<n>'s
        again = AtmEvent(delivery_id="del_again", event_id=event_id, type="payment.refunded")
        await handle.signal("atm_event", again)  # the same event, redelivered with a new delivery id
        status = await handle.query("status", result_type=PurchaseStatus)
        assert [e.kind for e in status.money_events] == ["payment.refunded"]
        held_back.clear()
        assert await sim.redeliver() == 0
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED
    assert [(e.kind, e.payment_id) for e in result.money_events] == [("payment.refunded", f"pay_{hold}")]


# -- the simulator refuses what the lexicon refuses -------------------------------------------


def create_input(**changes: Any) -> dict[str, Any]:
    return {
        "items": [{"tierId": "GA", "quantity": 1}],
        "eventId": "evt_1",
        "idempotencyKey": "k-1",
        "environment": "test",
        **changes,
    }


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        ({"items": []}, True),
        ({"items": [{"tierId": "GA", "quantity": 1}] * 21}, True),
        ({"items": [{"tierId": "GA", "quantity": "1"}]}, True),
        ({"items": [{"quantity": 1}]}, True),
        ({"idempotencyKey": "k" * 201}, True),
        ({"idempotencyKey": "k" * 200}, False),
        ({"environment": "staging"}, True),
        ({"customerEmail": "x" * 321}, True),
        ({"returnUrl": 5}, True),
        ({"somethingNew": 1}, False),  # lexicon objects are open
    ],
)
async def test_simulator_refuses_create_input_the_lexicon_refuses(change: dict[str, Any], refused: bool) -> None:
    """https://www.atmosphere.money/.well-known/atproto-lexicon/tickets.atmosphere.createTicketHold:
    items 1–20 of {tierId, quantity}, idempotencyKey ≤ 200, customerEmail ≤ 320, environment test|live;
    XRPC errors are `{error, message}`."""
    sim = AtmSimulator(service_token="t")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://atm.test") as client:
        response = await client.post(
            "/xrpc/tickets.atmosphere.createTicketHold", json=create_input(**change), headers={"authorization": "Bearer t"}
        )
    if refused:
        assert response.status_code == 400 and response.json()["error"] == "InvalidRequest"
        assert response.json()["message"]
    else:
        assert response.status_code == 200, response.text


async def test_simulator_answers_xrpc_errors_in_the_documented_shape() -> None:
    """https://www.atmosphere.money/.well-known/atproto-lexicon/tickets.atmosphere.releaseTicketHold:
    holdId is required; errors are `{error, message}`; a method not served is not a 200."""
    sim = AtmSimulator(service_token="t")
    auth = {"authorization": "Bearer t"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://atm.test") as client:
        no_hold = await client.post("/xrpc/tickets.atmosphere.releaseTicketHold", json={}, headers=auth)
        not_json = await client.post("/xrpc/tickets.atmosphere.createTicketHold", content=b"{", headers=auth)
        unknown = await client.post("/xrpc/tickets.atmosphere.buyEverything", json={}, headers=auth)
    assert (no_hold.status_code, no_hold.json()["error"]) == (400, "InvalidRequest")
    assert (not_json.status_code, not_json.json()["error"]) == (400, "InvalidRequest")
    assert (unknown.status_code, unknown.json()["error"]) == (501, "MethodNotImplemented")
