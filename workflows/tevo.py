"""Ticket Evolution: re-read ticket group → client → [confirm] → create order → poll state → order."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        EventInfo,
        Failure,
        FailureReason,
        Hold,
        OrderCancellation,
        OrderProgress,
        OrderSummary,
        ProviderOrder,
        PurchaseFailed,
        PurchaseResult,
        PurchaseState,
        Receipt,
        TevoPurchaseRequest,
    )

if TYPE_CHECKING:
    from workflows.purchase import PurchaseWorkflow


async def purchase(request: TevoPurchaseRequest, flow: PurchaseWorkflow) -> PurchaseResult:
    policy = await flow.policy("tevo")

    async def check_group() -> None:
        flow.step("check ticket group")
        flow.event = await flow.call(
            "tevo.check_ticket_group", request.ticket_group_id, request.quantity, request.price, result_type=EventInfo
        )

    await check_group()
    subtotal = request.price * request.quantity
    fees = request.service_fee + request.delivery.cost
    flow.receipt = Receipt(subtotal=subtotal, fees=fees, tax=request.tax,
                           total=subtotal + fees + request.tax - request.discount, currency="USD")

    if request.confirmation == "manual":
        # TEvo holds nothing: the buyer gets a window, then the group is read again before ordering.
        window = Hold(expires_at=workflow.now() + timedelta(seconds=policy.confirm_window_seconds))
        flow.record_hold(window)
        await flow.await_confirmation(window, policy)
        await check_group()

    flow.step("client")
    client_id = await flow.call("tevo.find_or_create_client", request.buyer, result_type=str)
    flow.record_provider_id("client_id", client_id)

    async def cancel_order(order: ProviderOrder) -> str:
        cancelled = await flow.call("tevo.cancel_order", order.order_id, result_type=OrderCancellation, undo=True)
        return f"order {cancelled.order_id} {cancelled.status}"

    order = await flow.act(
        "create order",
        lambda: flow.call("tevo.create_order", request, client_id, result_type=ProviderOrder),
        "cancel order",
        cancel_order,
        PurchaseState.COMMITTING,
    )
    flow.record_provider_id("order_id", order.order_id)

    flow.step("await acceptance", PurchaseState.AWAITING_FULFILLMENT)
    progress = await flow.poll("tevo.order_state", [order.order_id], OrderProgress, policy)
    if progress is not None and not progress.fulfilled:
        flow.saga.discard()  # rejected, cancelled or expired at TEvo: nothing left to cancel
        raise PurchaseFailed(
            PurchaseState.FAILED,
            Failure(reason=FailureReason.ORDER_REJECTED,
                    message=progress.reason or f"order {order.order_id} {progress.status}",
                    provider_status=progress.status),
        )

    flow.step("order details")
    summary = await flow.call("tevo.show_order", order.order_id, result_type=OrderSummary)
    if not summary.fulfilled:
        raise PurchaseFailed(
            PurchaseState.FAILED,
            Failure(reason=FailureReason.FULFILLMENT_TIMEOUT,
                    message=f"order {order.order_id} not accepted within {policy.poll_budget_seconds:g} s",
                    provider_status=summary.status),
        )
    if summary.receipt is not None:
        flow.receipt = summary.receipt
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=order.order_id,
        provider_status=summary.status,
        tickets=summary.tickets,
    )
