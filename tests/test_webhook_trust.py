"""Issue 25, items 1 and 4: what a signed ATM webhook may make a purchase do.

1. A webhook is a hint, not proof. Before a `payment.completed` or `tickets.issued` moves a purchase, it
   must agree with the purchase's hold and ATM must say the hold is paid: ATM documents "status polling"
   (https://www.atmosphere.money/docs/payment-lifecycle, https://www.atmosphere.money/docs/checkout)
   through `network.attested.payment.status`, a query by checkout token answering `pending | completed |
   failed` (https://www.atmosphere.money/docs/api, lexicon network.attested.payment.status); no query of a
   ticket hold is documented (https://atmosphere.money/.well-known/atproto-lexicon/ has only
   createTicketHold and releaseTicketHold). Dev mode, whose receiver takes the simulator's published
   secret, cannot be switched on by accident in production.
4. A signed delivery replayed after the receiver restarts (a new instance: its in-memory dedup is empty)
   changes nothing: the purchase and its reconciliation item deduplicate by event identity
   (https://www.atmosphere.money/docs/events: delivery is at least once, an event keeps its `id`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from simulators.atm import AtmSimulator
from simulators.faults import Fault
from tests.conftest import ATM_WEBHOOK_SECRET, atm_request, atm_worker, free_port, wait_for_state
from tests.test_atm import pay, wire
from tests.test_atom_workflow import record
from tests.test_cli import boxoffice, refused
from workers.client import purchase_outcome, start_purchase
from workers.webhooks import atm_receiver, temporal_delivery
from workflows.models import AtmEvent, PurchaseState, PurchaseStatus


def signed(
    data: dict[str, Any], kind: str, number: int, environment: str = "test", secret: str = ATM_WEBHOOK_SECRET
) -> tuple[bytes, dict[str, str]]:
    """A delivery in ATM's public envelope (/docs/events), signed with `secret` now."""
    delivery_id = f"del_forged_{number}"
    body = json.dumps(
        {"id": f"evt_forged_{number}", "deliveryId": delivery_id, "environment": environment, "type": kind, "data": data}
    ).encode()
    stamp = str(int(time.time()))
    v1 = hmac.new(secret.encode(), f"{stamp}.{delivery_id}.".encode() + body, hashlib.sha256).hexdigest()
    return body, {"content-type": "application/json", "atm-signature": f"t={stamp},v1={v1}"}


async def send(app: Any, body: bytes, sent: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hooks") as client:
        return await client.post("/webhooks/atm", content=body, headers=sent)


async def held(env: WorkflowEnvironment, sim: AtmSimulator, tq: str, purchase_id: str) -> tuple[WorkflowHandle, str]:
    handle = await start_purchase(env.client, atm_request(purchase_id), tq)
    status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
    return handle, status.provider_ids["order_id"]


# -- 1 (a): the purchase checks an event against its hold and asks ATM ------------------------------------


async def test_forged_tickets_issued_does_not_fulfil_an_unpaid_purchase(env: WorkflowEnvironment) -> None:
    """The issue's reproduction: a validly signed `tickets.issued` naming the purchase by
    `data.metadata.purchaseId`, with a fake ticket, while ATM's hold is `active` (never paid)."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        receiver = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        wire(sim, temporal_delivery(env.client, tq))
        handle, hold = await held(env, sim, tq, "atm-forged")
        body, sent = signed(
            {"metadata": {"purchaseId": "atm-forged"}, "tickets": [{"id": "tkt_fake", "tierId": "GA"}]}, "tickets.issued", 1
        )
        assert (await send(receiver, body, sent)).status_code == 200
        status = await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)
        [suspicious] = status.suspicious_events
        assert suspicious.event_id == "evt_forged_1" and "ATM says the hold's payment is pending" in (suspicious.suspicious or "")
        assert status.tickets == [] and sim.holds[hold].status == "active"
        assert (await handle.describe()).search_attributes["BoxofficeState"] == ["NEEDS_ATTENTION"]
        # The buyer's real payment still fulfils it, with ATM's tickets.
        await pay(sim, hold)
        result = await purchase_outcome(handle)
        await record(handle, "atm_forged_then_paid")
    assert result.state == PurchaseState.FULFILLED
    assert [t.booking_id for t in result.tickets] == [f"tkt_{hold}_0", f"tkt_{hold}_1"]
    assert [e.event_id for e in result.suspicious_events] == ["evt_forged_1"]


async def test_forged_payment_of_an_unpaid_purchase_expires_unpaid(env: WorkflowEnvironment) -> None:
    """No genuine payment follows the forged one: the hold's deadline ends it as before, released."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        receiver = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        handle, hold = await held(env, sim, tq, "atm-forged-paid")
        body, sent = signed(
            {"appOrderId": "atm-forged-paid", "paymentId": "pay_x", "status": "succeeded", "amount": 5000, "currency": "usd"},
            "payment.completed",
            2,
        )
        assert (await send(receiver, body, sent)).status_code == 200
        await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.EXPIRED and result.tickets == []
    assert sim.holds[hold].status == "released"
    assert [e.event_id for e in result.suspicious_events] == ["evt_forged_2"]


DISAGREEMENTS: dict[str, tuple[Callable[[str], dict[str, Any]], str, str]] = {
    "another hold": (lambda hold: {"ticketHold": {"id": "hold_9999"}}, "test", "names hold hold_9999"),
    "another checkout token": (lambda hold: {"checkoutToken": "tok_other"}, "test", "another hold's checkout token"),
    "another amount": (lambda hold: {"amount": 100, "currency": "usd"}, "test", "says 100 cents were paid"),
    "another currency": (lambda hold: {"amount": 5000, "currency": "eur"}, "test", "says EUR"),
    "another environment": (lambda hold: {}, "live", "ATM's live environment"),
}


@pytest.mark.parametrize("case", DISAGREEMENTS)
async def test_event_disagreeing_with_the_hold_is_not_taken_even_when_atm_says_paid(env: WorkflowEnvironment, case: str) -> None:
    """The hold is paid at ATM (its status read says `completed`), yet an event about another hold, amount,
    currency or environment is not this hold's: suspicious, and ATM's own events fulfil the purchase."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        receiver = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        handle, hold = await held(env, sim, tq, "atm-disagree")
        data, environment, why = DISAGREEMENTS[case]
        body, sent = signed(
            {"appOrderId": "atm-disagree", "tickets": [{"id": "tkt_fake"}], **data(hold)},
            "tickets.issued",
            3,
            environment=environment,
        )
        sim.holds[hold].status = "completed"  # paid, ATM's events still to come
        assert (await send(receiver, body, sent)).status_code == 200
        status = await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)
        assert why in (status.suspicious_events[0].suspicious or "")
        sim.holds[hold].status = "active"
        wire(sim, temporal_delivery(env.client, tq))
        await pay(sim, hold)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED
    assert [t.booking_id for t in result.tickets] == [f"tkt_{hold}_0", f"tkt_{hold}_1"]


async def test_forged_tickets_while_awaiting_real_ones_are_not_taken(env: WorkflowEnvironment) -> None:
    """Paid (ATM's own payment.completed), tickets not yet issued: fake tickets for another hold are not
    handed out; ATM's tickets are."""
    sim = AtmSimulator()
    async with atm_worker(env.client, sim) as tq:
        delivery = temporal_delivery(env.client, tq)
        receiver = atm_receiver([ATM_WEBHOOK_SECRET], delivery)
        held_back = {"issued": True}

        async def deliver(workflow_id: str | None, event: AtmEvent) -> str:
            if event.kind == "tickets.issued" and held_back["issued"]:
                raise ConnectionError("receiver briefly down")
            return await delivery(workflow_id, event)

        wire(sim, deliver)
        handle, hold = await held(env, sim, tq, "atm-fake-tickets")
        await pay(sim, hold)
        await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)
        body, sent = signed(
            {"appOrderId": "atm-fake-tickets", "ticketHold": {"id": "hold_0042"}, "tickets": [{"id": "tkt_fake"}]},
            "tickets.issued",
            4,
        )
        assert (await send(receiver, body, sent)).status_code == 200
        await wait_for_state(handle, PurchaseState.NEEDS_ATTENTION)
        held_back["issued"] = False
        assert await sim.redeliver() == 0
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED
    assert [t.booking_id for t in result.tickets] == [f"tkt_{hold}_0", f"tkt_{hold}_1"]
    assert [e.event_id for e in result.suspicious_events] == ["evt_forged_4"]


async def test_atm_unreachable_for_its_status_read_neither_fails_nor_fulfils_blindly(env: WorkflowEnvironment) -> None:
    """The buyer paid, but ATM's status read keeps failing: the events are not taken on their word, and the
    purchase is not failed either (that would release a paid hold). At the deadline ATM's `completed` answer
    to the release confirms the payment, and the tickets event already received fulfils the purchase."""
    sim = AtmSimulator()
    sim.faults.add(Fault(endpoint="payment status", status=503, times=10_000))
    async with atm_worker(env.client, sim) as tq:
        wire(sim, temporal_delivery(env.client, tq))
        handle, hold = await held(env, sim, tq, "atm-status-down")
        await pay(sim, hold)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED
    assert all("ATM could not be asked" in (e.suspicious or "") for e in result.suspicious_events)
    assert [t.booking_id for t in result.tickets] == [f"tkt_{hold}_0", f"tkt_{hold}_1"]
    assert [c["endpoint"] for c in sim.calls if c["endpoint"] != "payment status"] == ["create", "release"]
    assert sim.holds[hold].status == "completed"


async def test_simulator_serves_the_documented_payment_status_read() -> None:
    """GET /xrpc/network.attested.payment.status?token=… → {"status": pending|completed|failed}; the token is required."""
    sim = AtmSimulator()
    auth = {"authorization": f"Bearer {sim.service_token}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://atm.test") as http:
        created = (
            await http.post(
                "/xrpc/tickets.atmosphere.createTicketHold",
                headers=auth,
                json={"eventId": "evt_1", "items": [{"tierId": "GA", "quantity": 1}]},
            )
        ).json()

        async def status(**params: str) -> httpx.Response:
            return await http.get("/xrpc/network.attested.payment.status", params=params, headers=auth)

        assert (await status(token=created["token"])).json() == {"status": "pending"}
        await http.post(f"/checkout/{created['holdId']}", json={"outcome": "paid"})
        assert (await status(token=created["token"])).json() == {"status": "completed"}
        missing = await status()
        assert missing.status_code == 400 and missing.json()["error"] == "InvalidRequest"
        assert (await http.get("/xrpc/network.attested.payment.status", params={"token": created["token"]})).status_code == 401


# -- 1 (b): dev mode is not switched on by accident ----------------------------------------------------------


async def test_dev_mode_receiver_refuses_the_public_secret_without_a_simulator() -> None:
    """BOXOFFICE_ENV=dev picks the simulator's published secret: without an ATM simulator answering on
    loopback at BOXOFFICE_ATM_BASE_URL (as in production, where ATM is elsewhere), one line and exit 1."""
    for base_url in (f"http://127.0.0.1:{free_port()}", "https://api.atmosphere.money"):
        ran = await boxoffice("webhooks", BOXOFFICE_ENV="dev", BOXOFFICE_ATM_BASE_URL=base_url)
        refused(ran, 1, "BOXOFFICE_ATM_WEBHOOK_SECRETS", "public secret", "BOXOFFICE_ATM_BASE_URL")


async def test_dev_mode_receiver_refuses_to_listen_beyond_loopback() -> None:
    for host in ("0.0.0.0", "10.1.2.3"):
        ran = await boxoffice(
            "webhooks", BOXOFFICE_ENV="dev", BOXOFFICE_WEBHOOKS_HOST=host, BOXOFFICE_ATM_WEBHOOK_SECRETS="whsec_real"
        )
        refused(ran, 1, f"BOXOFFICE_WEBHOOKS_HOST={host}", "loopback")


async def test_dev_mode_receiver_with_a_simulator_starts_and_says_so_loudly() -> None:
    """With the ATM simulator answering on loopback it listens (on 127.0.0.1), after one WARNING line."""
    import uvicorn

    sim_port, hooks_port = free_port(), free_port()
    server = uvicorn.Server(uvicorn.Config(AtmSimulator().app, host="127.0.0.1", port=sim_port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    environment = {k: v for k, v in __import__("os").environ.items() if k != "BOXOFFICE_ATM_WEBHOOK_SECRETS"}
    environment.update(
        BOXOFFICE_ENV="dev",
        BOXOFFICE_ATM_BASE_URL=f"http://127.0.0.1:{sim_port}",
        BOXOFFICE_WEBHOOKS_PORT=str(hooks_port),
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
    )
    process = await asyncio.create_subprocess_exec(
        __import__("sys").executable,
        "-m",
        "workers.cli",
        "webhooks",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
    finally:
        process.kill()
        await process.wait()
        server.should_exit = True
        await serving
    assert "warn" in line.lower() and "DEV MODE" in line and "Never in production" in line


# -- 4: replays after a receiver restart ------------------------------------------------------------------


class Tap(httpx.AsyncBaseTransport):
    """Forwards the simulator's deliveries to a receiver, keeping each (body, headers) to replay."""

    def __init__(self) -> None:
        self.app: Any = None
        self.sent: list[tuple[bytes, dict[str, str]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        self.sent.append((body, {k: v for k, v in request.headers.items() if k.startswith(("atm-", "content-type"))}))
        return await httpx.ASGITransport(app=self.app).handle_async_request(request)


async def test_replay_after_a_receiver_restart_changes_nothing(env: WorkflowEnvironment) -> None:
    """Every delivery of a fulfilled purchase, replayed to a new receiver instance within the 300 s window:
    no state change, no second ATM read, no reconciliation item."""
    sim, tap = AtmSimulator(), Tap()
    async with atm_worker(env.client, sim) as tq:
        tap.app = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        sim.webhook_transport, sim.webhook_url = tap, "http://hooks/webhooks/atm"
        handle, hold = await held(env, sim, tq, "atm-replayed")
        await pay(sim, hold)
        await wait_for_state(handle, PurchaseState.FULFILLED)
        before = await handle.query("status", result_type=PurchaseStatus)
        asked = len(sim.calls)
        restarted = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        for body, sent in tap.sent:
            response = await send(restarted, body, sent)
            assert response.status_code == 200, response.text
        after = await handle.query("status", result_type=PurchaseStatus)
        with pytest.raises(RPCError) as none:
            await env.client.get_workflow_handle(f"reconcile-{handle.id}").describe()
    assert after == before and len(sim.calls) == asked
    assert none.value.status == RPCStatusCode.NOT_FOUND


async def test_replay_to_a_running_purchase_after_a_receiver_restart_is_taken_once(env: WorkflowEnvironment) -> None:
    """Paid, tickets not yet issued: the payment's delivery replayed to a new receiver instance reaches the
    purchase, which already has that event: no second ATM read, nothing changes."""
    sim, tap = AtmSimulator(), Tap()
    async with atm_worker(env.client, sim) as tq:
        delivery = temporal_delivery(env.client, tq)

        async def no_tickets_yet(workflow_id: str | None, event: AtmEvent) -> str:
            if event.kind == "tickets.issued":
                raise ConnectionError("receiver briefly down")
            return await delivery(workflow_id, event)

        tap.app = atm_receiver([ATM_WEBHOOK_SECRET], no_tickets_yet)
        sim.webhook_transport, sim.webhook_url = tap, "http://hooks/webhooks/atm"
        handle, hold = await held(env, sim, tq, "atm-replayed-running")
        await pay(sim, hold)
        before = await wait_for_state(handle, PurchaseState.AWAITING_FULFILLMENT)
        asked = len(sim.calls)
        paid_delivery = tap.sent[0]
        restarted = atm_receiver([ATM_WEBHOOK_SECRET], delivery)
        assert (await send(restarted, *paid_delivery)).json()["outcome"] == "delivered"
        await handle.query("status", result_type=PurchaseStatus)  # the signal is handled before the query
        after = await handle.query("status", result_type=PurchaseStatus)
    assert after == before and len(sim.calls) == asked


async def test_replay_to_an_ended_purchase_opens_no_second_reconciliation_item(env: WorkflowEnvironment) -> None:
    """A refund of a fulfilled purchase opens one reconciliation item; its delivery replayed to a new
    receiver instance, before and after an operator resolved the item, opens no other."""
    sim, tap = AtmSimulator(), Tap()
    async with atm_worker(env.client, sim) as tq:
        tap.app = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        sim.webhook_transport, sim.webhook_url = tap, "http://hooks/webhooks/atm"
        handle, hold = await held(env, sim, tq, "atm-refund-replayed")
        await pay(sim, hold)
        await wait_for_state(handle, PurchaseState.FULFILLED)
        await sim.refund(hold)
        refund = tap.sent[-1]
        reconcile = env.client.get_workflow_handle(f"reconcile-{handle.id}")
        assert len(await reconcile.query("events", result_type=list[AtmEvent])) == 1
        restarted = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        assert (await send(restarted, *refund)).status_code == 200
        assert len(await reconcile.query("events", result_type=list[AtmEvent])) == 1
        await reconcile.signal("resolve", "refund acknowledged")
        assert await reconcile.result() == "refund acknowledged"
        resolved = (await reconcile.describe()).run_id
        again = atm_receiver([ATM_WEBHOOK_SECRET], temporal_delivery(env.client, tq))
        assert (await send(again, *refund)).status_code == 200
        latest = await env.client.get_workflow_handle(f"reconcile-{handle.id}").describe()
    assert latest.run_id == resolved and latest.status == WorkflowExecutionStatus.COMPLETED
