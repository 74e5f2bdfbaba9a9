"""ATM Tickets: create hold → buyer pays on ATM's checkout → signed webhooks → tickets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

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
    from workflows.purchase import PurchaseWorkflow

PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED = "payment.completed", "payment.failed", "tickets.issued", "ticket.hold.expired"
# Money already taken changed (atmosphere.money/docs/events): the purchase shows them (`money_events`);
# they also go to reconciliation (an operator), whether the purchase still runs or not.
MONEY_TAKEN_CHANGED = frozenset({"payment.refunded", "payment.disputed", "ticket.voided", "ticket.refunded"})
# ATM's answer to a release of a hold the buyer has paid: nothing was released, the tickets are owed.
COMPLETED = "completed"


async def purchase(request: AtmPurchaseRequest, flow: PurchaseWorkflow) -> PurchaseResult:
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

    # The buyer pays on the checkout page; ATM tells us through webhooks. They may trail ATM's
    # clock, so the wait runs a grace period past the hold's expiry.
    flow.step("await payment", PurchaseState.AWAITING_CONFIRMATION)
    deadline = held.hold.expires_at + timedelta(seconds=policy.expiry_grace_seconds)
    cancelled: asyncio.CancelledError | None = None
    try:
        event = await flow.next_event({PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED}, deadline)
    except asyncio.CancelledError as cancel:
        event, cancelled = None, cancel
    if event is None or event.kind in (PAYMENT_FAILED, HOLD_EXPIRED):
        # Unpaid as far as the events say. Releasing settles it: ATM answers `completed` for a hold
        # that was paid after all, and then the tickets are owed, whatever else happened.
        paid = flow.take_event({PAID, ISSUED})
        if paid is None:
            await flow.saga.compensate()
            paid = flow.take_event({PAID, ISSUED})
        if paid is None and released[-1:] != [COMPLETED]:
            if cancelled is not None:
                raise cancelled
            if event is not None and event.kind == PAYMENT_FAILED:
                raise PurchaseFailed(
                    PurchaseState.FAILED,
                    Failure(reason=FailureReason.PAYMENT_FAILED,
                            message=event.reason or "payment failed at ATM checkout"),
                )
            raise PurchaseFailed(
                PurchaseState.EXPIRED,
                Failure(reason=FailureReason.HOLD_EXPIRED, message=f"hold {held.hold_id} expired unpaid"),
            )
        workflow.logger.warning("hold paid although unpaid events or a cancel came first; awaiting tickets",
                                extra={"hold": held.hold_id, "cancel_refused": cancelled is not None})
        event = paid
    if event is None or event.kind != ISSUED:
        event = await _await_tickets(flow, held.hold_id, policy.poll_budget_seconds)
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=held.hold_id,
        provider_status="issued",
        tickets=event.tickets,
    )


async def _await_tickets(flow: PurchaseWorkflow, hold_id: str, budget_seconds: float) -> AtmEvent:
    # Money moved: ATM issues the tickets. Releasing the hold now would strand the payment.
    flow.point_of_no_return()
    flow.step("await tickets", PurchaseState.AWAITING_FULFILLMENT)
    deadline = workflow.now() + timedelta(seconds=budget_seconds)
    try:
        event = await flow.next_event({ISSUED}, deadline)
    except asyncio.CancelledError:
        # A cancellation through Temporal (the UI) cannot take back a payment either.
        workflow.logger.warning("cancel refused: the hold is paid; awaiting its tickets", extra={"hold": hold_id})
        event = await flow.next_event({ISSUED}, deadline)
    if event is None:
        late = Failure(reason=FailureReason.FULFILLMENT_TIMEOUT,
                       message=f"hold {hold_id} paid, but no tickets issued within {budget_seconds:g} s")
        if not flow.patch_2026_12_01:
            raise PurchaseFailed(PurchaseState.FAILED, late)  # runs started before: their recorded ending
        # The buyer is charged: giving up would leave them without tickets and nobody told. ATM issues
        # the tickets after payment and redrives its events, so they may still come; an operator decides.
        event = await flow.attend("tickets_not_issued", late, {ISSUED})
    return event
