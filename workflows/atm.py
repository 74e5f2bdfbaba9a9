"""ATM Tickets: create hold → buyer pays on ATM's checkout → signed webhooks → tickets."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
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


async def purchase(request: AtmPurchaseRequest, flow: PurchaseWorkflow) -> PurchaseResult:
    policy = await flow.policy("atm")

    async def release_hold(held: AtmHold) -> str:
        status = await flow.call("atm.release_hold", held.hold_id, result_type=str, undo=True)
        return f"hold {held.hold_id} {status}"

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
    flow.receipt = Receipt(subtotal=held.amount, total=held.amount, currency=held.currency)

    # The buyer pays on the checkout page; ATM tells us through webhooks, until the hold expires.
    flow.step("await payment", PurchaseState.AWAITING_CONFIRMATION)
    event = await flow.next_event({PAID, PAYMENT_FAILED, ISSUED, HOLD_EXPIRED}, held.hold.expires_at)
    if event is None or event.kind == HOLD_EXPIRED:
        raise PurchaseFailed(
            PurchaseState.EXPIRED,
            Failure(reason=FailureReason.HOLD_EXPIRED, message=f"hold {held.hold_id} expired unpaid"),
        )
    if event.kind == PAYMENT_FAILED:
        raise PurchaseFailed(
            PurchaseState.FAILED,
            Failure(reason=FailureReason.PAYMENT_FAILED, message=event.reason or "payment failed at ATM checkout"),
        )
    if event.kind == PAID:
        # Money moved: ATM issues the tickets. Releasing the hold now would strand the payment.
        flow.point_of_no_return()
        flow.step("await tickets", PurchaseState.AWAITING_FULFILLMENT)
        deadline = workflow.now() + timedelta(seconds=policy.poll_budget_seconds)
        event = await flow.next_event({ISSUED}, deadline)
        if event is None:
            raise PurchaseFailed(
                PurchaseState.FAILED,
                Failure(reason=FailureReason.FULFILLMENT_TIMEOUT,
                        message=f"paid, but no tickets issued within {policy.poll_budget_seconds:g} s"),
            )
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=held.hold_id,
        provider_status="issued",
        tickets=event.tickets,
    )
