"""Ticket Evolution: re-read ticket group → client → [confirm] → create order → poll state → order."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        EventInfo,
        FailureReason,
        Hold,
        OrderCancellation,
        ProviderOrder,
        PurchaseResult,
        PurchaseState,
        Receipt,
        TevoPurchaseRequest,
    )

if TYPE_CHECKING:
    from workflows.flow import Flow


async def purchase(request: TevoPurchaseRequest, flow: Flow) -> PurchaseResult:
    policy = await flow.policy("tevo")

    async def check_group() -> None:
        flow.step("check ticket group")
        flow.event = await flow.call(
            "tevo.check_ticket_group",
            request.ticket_group_id,
            request.quantity,
            request.price,
            result_type=EventInfo,
            read=True,
        )

    await check_group()
    subtotal = request.price * request.quantity
    fees = request.service_fee + request.delivery.cost
    flow.receipt = Receipt(
        subtotal=subtotal, fees=fees, tax=request.tax, total=subtotal + fees + request.tax - request.discount, currency="USD"
    )

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
        flow.record_provider_id("order_id", order.order_id)  # also when a cancel cut the create short
        cancelled = await flow.call("tevo.cancel_order", order.order_id, result_type=OrderCancellation, undo=True)
        return f"order {cancelled.order_id} {cancelled.status}"

    order = await flow.act(
        "create order",
        lambda: flow.call("tevo.create_order", request, client_id, result_type=ProviderOrder),
        "cancel order",
        cancel_order,
        PurchaseState.COMMITTING,
        # The purchase id is the order's `reference`: what an unanswered create placed is found by it.
        find=lambda: flow.find("tevo.find_order", request.purchase_id, result_type=ProviderOrder),
    )
    flow.record_provider_id("order_id", order.order_id)

    # Accepted or completed counts as fulfilled; rejected, cancelled or expired is final at TEvo.
    summary = await flow.await_fulfilment(
        order.order_id,
        "tevo.order_state",
        "tevo.show_order",
        [order.order_id],
        policy,
        FailureReason.ORDER_REJECTED,
        ended_is_final=True,
    )
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=order.order_id,
        provider_status=summary.status,
        tickets=summary.tickets,
    )
