"""Onebox: create basket → seats → buyer data → pre-confirm → [confirm update] → confirm."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Optional

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
        PurchaseStatus,
    )
    from workflows.outcomes import outcome_unknown

if TYPE_CHECKING:
    from workflows.flow import Flow


async def purchase(request: OneboxPurchaseRequest, flow: Flow) -> PurchaseResult:
    policy = await flow.policy("onebox")

    # Onebox takes no idempotency key: a reset run, or a new run under the id of an ended purchase,
    # starting again here would open a second basket and could confirm a second order. The earlier
    # run recorded its basket and order code. A re-run cannot be told from a first run but by
    # visibility, so every run looks.
    earlier = await earlier_basket(flow)
    if earlier is not None and (code := earlier.provider_ids.get("order_id")):
        flow.step("read earlier order")
        placed = await flow.find("onebox.find_order", code, result_type=OrderSummary)
        if placed is not None and placed.fulfilled:
            flow.point_of_no_return()
            flow.receipt = placed.receipt or earlier.receipt
            flow.record_provider_id("basket_id", earlier.provider_ids["basket_id"])
            flow.record_provider_id("order_id", code)
            return PurchaseResult(
                purchase_id=request.purchase_id,
                provider=request.provider,
                state=PurchaseState.FULFILLED,
                provider_order_id=code,
                provider_status=placed.status,
                tickets=placed.tickets,
            )

    flow.step("create basket")
    if earlier is not None:
        # Not readable as an order: the steps below read the basket and take what it holds (seats,
        # pre-confirmation, a confirmation not yet readable as an order) instead of adding again.
        basket = ProviderOrder(order_id=earlier.provider_ids["basket_id"])
    else:
        basket = await flow.call("onebox.create_order", result_type=ProviderOrder)
    flow.record_provider_id("basket_id", basket.order_id)

    how: list[object]  # the seats, or a price type and quantity
    if request.seat_ids:
        adding, how = "onebox.add_seats", [request.seat_ids]
    else:
        adding, how = "onebox.add_seats_auto", [request.price_type_id, request.quantity]
    hold = await add_seats(flow, basket.order_id, adding, [request.session_id, *how])
    flow.record_hold(hold)

    flow.step("buyer data")
    await flow.call("onebox.buyer_data", basket.order_id, request.buyer, result_type=type(None))

    flow.step("pre-confirm")
    # Pre-confirm and confirm check the basket against the items this purchase holds.
    priced = await flow.call("onebox.pre_confirm", basket.order_id, hold.item_ids, result_type=PreConfirmedOrder)
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
        lambda: flow.call("onebox.confirm", basket.order_id, priced.code, hold.item_ids, result_type=OrderSummary),
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


async def earlier_basket(flow: Flow) -> PurchaseStatus | None:
    """The newest earlier run that recorded a basket (before a reset, or an ended run before a
    re-run), if that basket may still hold seats or an order: the run ended fulfilled or needing
    attention, or a reset cut it short. A run that ended otherwise had its basket released by its
    compensation (a reset run carries on with the basket before it, so its end speaks for that one
    too): this run opens its own. None as well on a server without visibility (the time-skipping
    test server): nothing to list."""
    newest = next((run for run in await flow.earlier_runs() if run.provider_ids.get("basket_id")), None)
    if newest is None or (
        newest.state.final and newest.state not in (PurchaseState.FULFILLED, PurchaseState.COMPENSATION_FAILED)
    ):
        return None
    return newest


async def add_seats(flow: Flow, basket_id: str, adding: str, args: list[object]) -> Hold:
    """Adds the seats with the release of the whole basket registered first: a step that fails
    (all retries spent) may still have left seats in it, which are released with the rest. A
    cancel meanwhile waits for the step's outcome, so nothing lands after the release."""
    flow.step("add seats")
    attempt = asyncio.ensure_future(flow.call(adding, basket_id, *args, result_type=Hold))

    async def release_basket() -> str | None:
        try:
            await attempt
        except Exception:  # noqa: BLE001, S110 — failed or not, the basket says what it holds
            pass
        released: str | None = await flow.call(
            "onebox.release_basket",
            basket_id,
            result_type=Optional[str],  # type: ignore[arg-type]  # noqa: UP045
            undo=True,
        )
        return released

    flow.saga.add("release seats", release_basket)
    return await asyncio.shield(attempt)
