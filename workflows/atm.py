"""ATM Tickets: create hold → buyer pays on ATM's checkout → signed webhooks → tickets."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        AtmEvent,
        AtmHold,
        AtmPurchaseRequest,
        Failure,
        FailureReason,
        PurchaseFailed,
        PurchaseResult,
        PurchaseState,
        Receipt,
    )

if TYPE_CHECKING:
    from workflows.flow import Flow

PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED = "payment.completed", "payment.failed", "tickets.issued", "ticket.hold.expired"
# Money already taken changed (atmosphere.money/docs/events): the purchase shows them (`money_events`);
# they also go to reconciliation (an operator), whether the purchase still runs or not.
MONEY_TAKEN_CHANGED = frozenset({"payment.refunded", "payment.disputed", "ticket.voided", "ticket.refunded"})
# ATM's answer to a release of a hold the buyer has paid: nothing was released, the tickets are owed.
# Also what ATM's payment status read answers for a paid hold (activities/atm.py).
COMPLETED = "completed"


class Evidence:
    """A webhook is a hint, not proof (issue 25): before a payment or tickets event moves the purchase,
    it must agree with our hold (hold id, checkout token, amount, currency, environment, where the event
    names them) and ATM must say the hold is paid (its payment status read, or a release answered
    `completed`). An event that fails is `suspicious` (attention) and the purchase waits on as if it had
    not come."""

    def __init__(self, flow: Flow, held: AtmHold) -> None:
        self.flow, self.held = flow, held
        self.paid_at_atm = False
        # A cancel that arrived while ATM was being asked (see _ask_atm).
        self.cancel_pending = False
        # Events naming our hold that ATM did not (yet) back: taken once ATM says the hold is paid.
        self.unbacked: list[AtmEvent] = []

    def disagreement(self, event: AtmEvent) -> str | None:
        held, why = self.held, []
        if event.hold_id and event.hold_id != held.hold_id:
            why.append(f"names hold {event.hold_id}, ours is {held.hold_id}")
        if event.checkout_token and held.checkout_token and event.checkout_token != held.checkout_token:
            why.append("carries another hold's checkout token")
        if event.amount_cents is not None and event.amount_cents != held.amount.scaleb(2):
            why.append(f"says {event.amount_cents} cents were paid, our hold is {held.amount} {held.currency}")
        if event.currency and event.currency.upper() != held.currency:
            why.append(f"says {event.currency.upper()}, our hold is in {held.currency}")
        if event.environment and held.environment and event.environment != held.environment:
            why.append(f"comes from ATM's {event.environment} environment, our hold is in {held.environment}")
        return "; ".join(why) or None

    def names_our_hold(self, event: AtmEvent) -> bool:
        return event.hold_id == self.held.hold_id or (
            self.held.checkout_token is not None and event.checkout_token == self.held.checkout_token
        )

    async def believed(self, event: AtmEvent) -> bool:
        why = self.disagreement(event)
        if why is None and event.kind in (PAID, ISSUED) and not self.paid_at_atm:
            status = await self._ask_atm()
            self.paid_at_atm = status == COMPLETED
            if not self.paid_at_atm:
                why = f"ATM says the hold's payment is {status}"
                if self.names_our_hold(event):
                    self.unbacked.append(event)
        if why is not None:
            self.flow.suspicious(event, f"{event.type} {event.identity}: {why}")
        if self.cancel_pending and not self.paid_at_atm:
            self.cancel_pending = False
            raise asyncio.CancelledError("cancelled while ATM was asked whether the hold is paid")
        return why is None

    async def _ask_atm(self) -> str:
        token = self.held.checkout_token
        if not token:
            return "unknown (the hold has no checkout token to ask by)"
        # A regular activity: its retries wait on server timers, not in a workflow task.
        asking = asyncio.ensure_future(
            self.flow.call("atm.payment_status", token, result_type=str, summary="ask ATM whether the hold is paid")
        )
        try:
            try:
                return await asyncio.shield(asking)
            except asyncio.CancelledError:
                # A cancel while ATM is asked waits for the answer: paid, the cancel is refused (as after
                # any payment); not paid, `believed` raises it once the event is set aside.
                self.cancel_pending = True
                return await asking
        except ActivityError as err:
            # Not proof either way. Failing the purchase would release a hold that may be paid: it waits
            # on, and the release's answer at the deadline says whether it was.
            return f"unknown (ATM could not be asked: {err.cause})"

    def _backed(self, kinds: set[str]) -> AtmEvent | None:
        """An event ATM did not back when it came, now that ATM says the hold is paid."""
        event = next((e for e in self.unbacked if e.kind in kinds), None) if self.paid_at_atm else None
        if event is not None:
            self.unbacked.remove(event)
        return event

    async def next_event(self, kinds: set[str], deadline: datetime) -> AtmEvent | None:
        """The next believed event of `kinds` (flow.next_event), or None at `deadline`."""
        while True:
            event = self._backed(kinds) or await self.flow.next_event(kinds, deadline)
            if event is None or await self.believed(event):
                return event

    async def take_event(self, kinds: set[str]) -> AtmEvent | None:
        """A believed event of `kinds` already arrived (flow.take_event), or None."""
        while True:
            event = self._backed(kinds) or self.flow.take_event(kinds)
            if event is None or await self.believed(event):
                return event


async def purchase(request: AtmPurchaseRequest, flow: Flow) -> PurchaseResult:
    policy = await flow.policy("atm")
    released: list[str] = []

    async def release_hold(held: AtmHold) -> str:
        status = await flow.call("atm.release_hold", held.hold_id, result_type=str, undo=True)
        released.append(status)
        return f"hold {held.hold_id} {status}" + (" (paid: nothing released)" if status == COMPLETED else "")

    held = await flow.act(
        "create hold",
        lambda: flow.call("atm.create_hold", request, workflow.info().workflow_id, result_type=AtmHold),
        "release hold",
        release_hold,
    )
    flow.record_hold(held.hold)
    # ATM's hold id is the purchase's identity there (the search attribute operators use).
    flow.record_provider_id("order_id", held.hold_id)
    flow.record_provider_id("checkout_url", held.checkout_url)
    if held.checkout_token:
        flow.record_provider_id("checkout_token", held.checkout_token)
    flow.receipt = Receipt(subtotal=held.amount, total=held.amount, currency=held.currency)
    evidence = Evidence(flow, held)

    # The buyer pays on the checkout page; ATM tells us through webhooks. They may trail ATM's
    # clock, so the wait runs a grace period past the hold's expiry.
    flow.step("await payment", PurchaseState.AWAITING_CONFIRMATION)
    deadline = held.hold.expires_at + timedelta(seconds=policy.expiry_grace_seconds)
    cancelled: asyncio.CancelledError | None = None
    try:
        event = await evidence.next_event({PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED}, deadline)
    except asyncio.CancelledError as cancel:
        event, cancelled = None, cancel
    if event is None or event.kind in (PAYMENT_FAILED, HOLD_EXPIRED):
        # Unpaid as far as the events say. Releasing settles it: ATM answers `completed` for a hold
        # that was paid after all, and then the tickets are owed, whatever else happened.
        paid = await evidence.take_event({PAID, ISSUED})
        if paid is None:
            await flow.saga.compensate()
            # ATM's answer to the release is its word: `completed`, the hold is paid.
            evidence.paid_at_atm = evidence.paid_at_atm or released[-1:] == [COMPLETED]
            paid = await evidence.take_event({PAID, ISSUED})
        if paid is None and released[-1:] != [COMPLETED]:
            if cancelled is not None:
                raise cancelled
            if event is not None and event.kind == PAYMENT_FAILED:
                raise PurchaseFailed(
                    PurchaseState.FAILED,
                    Failure(reason=FailureReason.PAYMENT_FAILED, message=event.reason or "payment failed at ATM checkout"),
                )
            raise PurchaseFailed(
                PurchaseState.EXPIRED,
                Failure(reason=FailureReason.HOLD_EXPIRED, message=f"hold {held.hold_id} expired unpaid"),
            )
        workflow.logger.warning(
            "hold paid although unpaid events or a cancel came first; awaiting tickets",
            extra={"hold": held.hold_id, "cancel_refused": cancelled is not None},
        )
        event = paid
    if event is None or event.kind != ISSUED:
        event = await _await_tickets(flow, evidence, policy.poll_budget_seconds)
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=held.hold_id,
        provider_status="issued",
        tickets=event.tickets,
    )


async def _await_tickets(flow: Flow, evidence: Evidence, budget_seconds: float) -> AtmEvent:
    # Money moved: ATM issues the tickets. Releasing the hold now would strand the payment.
    hold_id = evidence.held.hold_id
    flow.point_of_no_return()
    flow.step("await tickets", PurchaseState.AWAITING_FULFILLMENT)
    deadline = workflow.now() + timedelta(seconds=budget_seconds)
    try:
        event = await evidence.next_event({ISSUED}, deadline)
    except asyncio.CancelledError:
        # A cancellation through Temporal (the UI) cannot take back a payment either.
        workflow.logger.warning("cancel refused: the hold is paid; awaiting its tickets", extra={"hold": hold_id})
        event = await evidence.next_event({ISSUED}, deadline)
    if event is None:
        late = Failure(
            reason=FailureReason.FULFILLMENT_TIMEOUT,
            message=f"hold {hold_id} paid, but no tickets issued within {budget_seconds:g} s",
        )
        # The buyer is charged: giving up would leave them without tickets and nobody told. ATM issues
        # the tickets after payment and redrives its events, so they may still come; an operator decides.
        event = await flow.attend("tickets_not_issued", late, {ISSUED})
        while not await evidence.believed(event):
            event = await flow.attend("tickets_not_issued", late, {ISSUED})
    return event
