"""Onebox: create basket → seats → buyer data → pre-confirm → [confirm update] → confirm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        Hold,
        OneboxPurchaseRequest,
        OrderSummary,
        PreConfirmedOrder,
        ProviderOrder,
        PurchaseResult,
        PurchaseState,
    )
    from workflows.outcomes import outcome_unknown

if TYPE_CHECKING:
    from workflows.purchase import PurchaseWorkflow


async def purchase(request: OneboxPurchaseRequest, flow: PurchaseWorkflow) -> PurchaseResult:
    policy = await flow.policy("onebox")

    flow.step("create basket")
    basket = await flow.call("onebox.create_order", result_type=ProviderOrder)
    flow.record_provider_id("basket_id", basket.order_id)

    async def release_seats(hold: Hold) -> str:
        return await flow.call("onebox.release_seats", basket.order_id, hold.item_ids, result_type=str, undo=True)

    how: list[object]  # the seats, or a price type and quantity
    if request.seat_ids:
        adding, how = "onebox.add_seats", [request.seat_ids]
    else:
        adding, how = "onebox.add_seats_auto", [request.price_type_id, request.quantity]
    hold = await flow.act(
        "add seats",
        lambda: flow.call(adding, basket.order_id, request.session_id, *how, result_type=Hold),
        "release seats",
        release_seats,
    )
    flow.record_hold(hold)

    flow.step("buyer data")
    await flow.call("onebox.buyer_data", basket.order_id, request.buyer, result_type=type(None))

    flow.step("pre-confirm")
    priced = await flow.call("onebox.pre_confirm", basket.order_id, result_type=PreConfirmedOrder)
    # From PRE_CONFIRM on, the code identifies the order (what an operator searches for).
    flow.record_provider_id("order_id", priced.code)
    flow.record_hold(priced.hold)
    flow.receipt = priced.receipt

    if request.confirmation == "manual":
        await flow.await_confirmation(priced.hold, policy)

    async def confirmed() -> OrderSummary | None:
        # Onebox's orders API shows confirmed orders only: not found there yet is not "not confirmed".
        order = await flow.find("onebox.find_order", priced.code, result_type=OrderSummary)
        if order is None:
            raise outcome_unknown(f"order {priced.code} is not readable by its code: the confirm may have succeeded")
        return order if order.fulfilled else None

    order = await flow.commit(
        "confirm",
        lambda: flow.call("onebox.confirm", basket.order_id, priced.code, result_type=OrderSummary),
        find=confirmed,
    )
    if order.receipt is not None:
        flow.receipt = order.receipt
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=priced.code,
        provider_status=order.status,
        tickets=order.tickets,
    )
