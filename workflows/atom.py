"""Atom Tickets: refresh checkout → account → lease → preview → [confirm] → create → poll → summary."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        AtomItem,
        AtomPurchaseRequest,
        EventInfo,
        Failure,
        FailureReason,
        Hold,
        OrderCancellation,
        ProviderOrder,
        ProviderSession,
        PurchaseFailed,
        PurchaseResult,
        PurchaseState,
        Receipt,
    )
    from workflows.outcomes import failure_from, outcome_known, outcome_unknown

if TYPE_CHECKING:
    from workflows.purchase import PurchaseWorkflow

T = TypeVar("T")


async def purchase(request: AtomPurchaseRequest, flow: PurchaseWorkflow) -> PurchaseResult:
    policy = await flow.policy("atom")

    flow.step("refresh checkout")
    flow.event = await flow.call(
        "atom.refresh_checkout", request.showtime_id, request.promotions, request.items, result_type=EventInfo,
        read=True,
    )

    items = request.items
    if any(not item.seat_ids for item in items):
        flow.step("choose seats")
        wanted = sum(item.count for item in items)
        seats = await flow.call("atom.recommend_seats", request.showtime_id, wanted, result_type=list[str], read=True)
        items = _assign_seats(items, seats)

    flow.step("account")
    if request.login is not None:
        session = await flow.call("atom.authenticate", request.login, result_type=ProviderSession, rerun_safe=True)
    else:
        session = await flow.call("atom.create_guest_account", request.buyer, result_type=ProviderSession,
                                  rerun_safe=True)
    flow.record_provider_id("account_id", session.account_id)

    # One clientRequestId for lease, preview and create: Atom's idempotency key for this purchase,
    # the same across replays, activity retries and workflow resets.
    client_request_id = f"req-{flow.idempotency_key('order')}"
    flow.record_provider_id("client_request_id", client_request_id)
    is_guest = request.login is None

    def key_used(err: ActivityError) -> str | None:
        """What DUPLICATE_CLIENT_REQUEST_ID says (None for any other failure): the key's flow has
        ended (partner-docs-95q.pages.dev/guides/ordering). An earlier flow of this purchase (a reset,
        a re-run, or this run's unanswered create) placed an order with it, or leased and lapsed.
        Atom returns no order id and documents no lookup by clientRequestId: the order stays unnamed."""
        if not flow.patch_2026_12_01 or failure_from(err).reason != FailureReason.DUPLICATE_REQUEST:
            return None
        return (f"Atom answered DUPLICATE_CLIENT_REQUEST_ID: clientRequestId {client_request_id} (account "
                f"{session.account_id}) was used by an earlier flow; an order placed with it may exist, id unknown")

    async def refused_for_an_earlier_flow(call: Awaitable[T]) -> T:
        """Lease or preview: a used key means nothing new is held, yet an earlier order may stand:
        never "nothing ordered", and nothing of it is undone here."""
        try:
            return await call
        except ActivityError as err:
            if (used := key_used(err)) is not None:
                flow.saga.unsettled("cancel order", f"not done: {used}")
            raise

    flow.step("lease seats")
    hold = await refused_for_an_earlier_flow(
        flow.call("atom.lease", session, items, client_request_id, result_type=Hold, rerun_safe=True))
    # Atom has no call that ends a lease early; an abandoned lease lapses after leaseDurationSeconds.
    flow.record_hold(hold)

    flow.step("preview order")
    flow.receipt = await refused_for_an_earlier_flow(flow.call(
        "atom.preview_order", session, items, client_request_id, is_guest, result_type=Receipt, read=True
    ))

    if request.confirmation == "manual":
        await flow.await_confirmation(hold, policy)

    async def cancel_order(order: ProviderOrder) -> str:
        flow.record_provider_id("order_id", order.order_id)  # also when a cancel cut the create short
        cancelled = await flow.call(
            "atom.cancel_order", session, order.order_id, result_type=OrderCancellation, undo=True
        )
        refund = f", refund {cancelled.refund_amount}" if cancelled.refund_amount is not None else ""
        return f"order {cancelled.order_id} {cancelled.status}{refund}"

    async def create_order() -> ProviderOrder:
        try:
            return await flow.call("atom.create_order", session, items, client_request_id, is_guest,
                                   result_type=ProviderOrder)
        except ActivityError as err:
            if (used := key_used(err)) is not None:
                raise outcome_unknown(f"create order: {used}") from err
            raise

    async def placed_order() -> ProviderOrder | None:
        # Atom has no read by clientRequestId: the read-back is the create again. Answered, the first
        # attempt had placed nothing and this one placed the order; refused (lease gone, seats taken),
        # nothing was placed (assumed: Atom checks the key first); DUPLICATE_CLIENT_REQUEST_ID: an
        # order exists, id unknown.
        try:
            return await flow.call("atom.create_order", session, items, client_request_id, is_guest,
                                   result_type=ProviderOrder, undo=True, summary="read back: create order")
        except ActivityError as err:
            if (used := key_used(err)) is not None:
                raise outcome_unknown(f"create order: {used}") from err
            if outcome_known(err) and failure_from(err).reason != FailureReason.DUPLICATE_REQUEST:
                return None
            raise

    order = await flow.act(
        "create order",
        create_order,
        "cancel order",
        cancel_order,
        PurchaseState.COMMITTING,
        find=placed_order,
    )
    flow.record_provider_id("order_id", order.order_id)

    summary = await flow.await_fulfilment(
        order.order_id,
        "atom.order_status",
        "atom.order_summary",
        [session, order.order_id],
        policy,
        FailureReason.FULFILLMENT_FAILED,
        ended_is_final=False,  # a failed Atom order is still cancelled, in case money moved
    )
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=order.order_id,
        provider_status=summary.status,
        tickets=summary.tickets,
    )


def _assign_seats(items: list[AtomItem], seats: list[str]) -> list[AtomItem]:
    """Gives items without seat ids Atom's recommended seats, in order."""
    free = [seat for seat in seats if all(seat not in item.seat_ids for item in items)]
    assigned = []
    for item in items:
        if not item.seat_ids:
            take, free = free[: item.count], free[item.count :]
            if len(take) < item.count:
                raise PurchaseFailed(
                    PurchaseState.FAILED,
                    Failure(
                        reason=FailureReason.SEAT_UNAVAILABLE,
                        message=f"only {len(take)} seats recommended for {item.count} wanted",
                    ),
                )
            item = item.model_copy(update={"seat_ids": take, "quantity": None})
        assigned.append(item)
    return assigned
