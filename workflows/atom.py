"""Atom Tickets: refresh checkout → account → lease → preview → [confirm] → create → poll → summary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

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
        PurchaseStatus,
        Receipt,
    )
    from workflows.outcomes import failure_from, outcome_known, outcome_unknown

if TYPE_CHECKING:
    from workflows.flow import Flow

T = TypeVar("T")


async def purchase(request: AtomPurchaseRequest, flow: Flow) -> PurchaseResult:
    policy = await flow.policy("atom")

    flow.step("refresh checkout")
    flow.event = await flow.call(
        "atom.refresh_checkout",
        request.showtime_id,
        request.promotions,
        request.items,
        result_type=EventInfo,
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
        # Not rerun-safe: a repeat makes another account with the buyer's name and email. A regular
        # activity is repeated only as a counted retry (a local one runs again, uncounted, when its
        # workflow task is lost), so each account a lost answer left behind is named.
        account = asyncio.ensure_future(flow.call("atom.create_guest_account", request.buyer, result_type=ProviderSession))
        try:
            session = await asyncio.shield(account)
        except asyncio.CancelledError:
            # A cancel does not unmake an account already asked for (one that arrived while the
            # checkout was read in the same workflow task comes only once this call is on its way):
            # the account is named, then the purchase ends.
            with contextlib.suppress(ActivityError):
                name_guest_account(flow, await account)
            raise
        name_guest_account(flow, session)
    flow.record_provider_id("account_id", session.account_id)

    # One clientRequestId for lease, preview and create: Atom's idempotency key for this purchase,
    # the same across replays, activity retries and workflow resets.
    client_request_id = f"req-{flow.idempotency_key('order')}"
    flow.record_provider_id("client_request_id", client_request_id)
    is_guest = request.login is None

    def key_used(
        err: ActivityError | ApplicationError, order: str = "an order placed with it may exist, id unknown"
    ) -> str | None:
        """What DUPLICATE_CLIENT_REQUEST_ID says (None for any other failure): the key's flow has
        ended (partner-docs-95q.pages.dev/guides/ordering). An earlier flow of this purchase (a reset,
        a re-run, or this run's unanswered create) placed an order with it, or leased and lapsed.
        Atom returns no order id and documents no lookup by clientRequestId: only an earlier run's
        own record names the order (`from_an_earlier_run`)."""
        if failure_from(err).reason != FailureReason.DUPLICATE_REQUEST:
            return None
        return (
            f"Atom answered DUPLICATE_CLIENT_REQUEST_ID: clientRequestId {client_request_id} (account "
            f"{session.account_id}) was used by an earlier flow; {order}"
        )

    async def from_an_earlier_run(err: ActivityError | ApplicationError) -> PurchaseStatus | None:
        """On DUPLICATE_CLIENT_REQUEST_ID, the earlier run of this purchase (before a workflow reset, or
        ended before this re-run) that recorded the order placed with the key: this run carries on with
        that order instead of naming an unknown one. Usable when this run's account can read and cancel
        it (a returning customer signs in to the same account), or when that run saw it fulfilled."""
        if key_used(err) is None:
            return None
        try:
            runs = await flow.earlier_runs()
        except (ActivityError, ApplicationError) as unreadable:  # a local activity's failure may come as either
            # Nothing new is held: the order stays unnamed for an operator, as before this lookup.
            workflow.logger.warning("earlier runs not readable", extra={"error": str(unreadable)})
            return None
        earlier = next((run for run in runs if run.provider_ids.get("order_id")), None)
        if earlier is None:
            return None
        order_id, account_id = earlier.provider_ids["order_id"], earlier.provider_ids.get("account_id")
        if account_id != session.account_id and earlier.state != PurchaseState.FULFILLED:
            raise NotOurs(
                f"order {order_id} placed by an earlier run under account {account_id}, which this "
                f"run's account cannot read or cancel"
            )
        return earlier

    def refused(err: ActivityError | ApplicationError, order: str | None = None) -> None:
        """Lease, preview or create: a used key means nothing new is held, yet an earlier order may
        stand: never "nothing ordered", and nothing of it is undone here."""
        if (used := key_used(err, *([order] if order else []))) is not None:
            flow.saga.unsettled("cancel order", f"not done: {used}")

    async def refused_for_an_earlier_flow(call: Awaitable[T]) -> T:
        try:
            return await call
        except (ActivityError, ApplicationError) as err:  # lease and preview are local where they can be: either comes
            try:
                earlier = await from_an_earlier_run(err)
            except NotOurs as not_ours:
                refused(err, str(not_ours))
                raise err from None
            if earlier is not None:
                raise TakenFromEarlierRun(earlier) from None
            refused(err)
            raise

    async def cancel_order(order: ProviderOrder) -> str:
        flow.record_provider_id("order_id", order.order_id)  # also when a cancel cut the create short
        cancelled = await flow.call("atom.cancel_order", session, order.order_id, result_type=OrderCancellation, undo=True)
        refund = f", refund {cancelled.refund_amount}" if cancelled.refund_amount is not None else ""
        return f"order {cancelled.order_id} {cancelled.status}{refund}"

    async def created_earlier(err: ActivityError) -> ProviderOrder:
        """The create answered DUPLICATE_CLIENT_REQUEST_ID: the earlier run's order, or an unknown outcome."""
        try:
            earlier = await from_an_earlier_run(err)
        except NotOurs as not_ours:
            raise outcome_unknown(f"create order: {key_used(err, str(not_ours))}") from err
        if earlier is None:
            raise outcome_unknown(f"create order: {key_used(err)}") from err
        if earlier.provider_ids.get("account_id") != session.account_id:
            raise TakenFromEarlierRun(earlier) from None  # fulfilled there, not readable here
        flow.receipt = earlier.receipt or flow.receipt
        return ProviderOrder(order_id=earlier.provider_ids["order_id"])

    async def create_order() -> ProviderOrder:
        try:
            return await flow.call("atom.create_order", session, items, client_request_id, is_guest, result_type=ProviderOrder)
        except ActivityError as err:
            if key_used(err) is not None:
                return await created_earlier(err)
            raise

    async def placed_order() -> ProviderOrder | None:
        # Atom has no read by clientRequestId: the read-back is the create again. Answered, the first
        # attempt had placed nothing and this one placed the order; refused (lease gone, seats taken),
        # nothing was placed (assumed: Atom checks the key first); DUPLICATE_CLIENT_REQUEST_ID: an
        # order exists, named only by an earlier run's record.
        try:
            return await flow.call(
                "atom.create_order",
                session,
                items,
                client_request_id,
                is_guest,
                result_type=ProviderOrder,
                undo=True,
                summary="read back: create order",
            )
        except ActivityError as err:
            if key_used(err) is not None:
                return await created_earlier(err)
            if outcome_known(err) and failure_from(err).reason != FailureReason.DUPLICATE_REQUEST:
                return None
            raise

    try:
        flow.step("lease seats")
        hold = await refused_for_an_earlier_flow(
            flow.call("atom.lease", session, items, client_request_id, result_type=Hold, rerun_safe=True)
        )
        # Atom has no call that ends a lease early; an abandoned lease lapses after leaseDurationSeconds.
        flow.record_hold(hold)

        flow.step("preview order")
        flow.receipt = await refused_for_an_earlier_flow(
            flow.call("atom.preview_order", session, items, client_request_id, is_guest, result_type=Receipt, read=True)
        )

        if request.confirmation == "manual":
            await flow.await_confirmation(hold, policy)

        order = await flow.act(
            "create order",
            create_order,
            "cancel order",
            cancel_order,
            PurchaseState.COMMITTING,
            find=placed_order,
        )
    except TakenFromEarlierRun as taken:
        earlier = taken.run
        if earlier.provider_ids.get("account_id") != session.account_id:
            # A guest buyer's earlier run, under another guest account: it saw the order fulfilled.
            flow.receipt = earlier.receipt
            flow.record_provider_id("order_id", earlier.provider_ids["order_id"])
            return result_of(request, earlier)
        # The earlier run's order is this purchase's: confirmed then, followed (or undone) from here.
        order = ProviderOrder(order_id=earlier.provider_ids["order_id"])
        flow.receipt = earlier.receipt or flow.receipt
        flow.step("take earlier order", PurchaseState.COMMITTING)
        flow.saga.add("cancel order", lambda: cancel_order(order))
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


def name_guest_account(flow: Flow, session: ProviderSession) -> None:
    """The guest account and each earlier attempt's of unknown outcome: they hold the buyer's name and email."""
    for attempt in range(1, session.unknown_attempts + 1):
        flow.record_provider_id(
            f"unknown_guest_account_{attempt}",
            f"guest account attempt {attempt}: outcome unknown; an account it made holds the buyer's name and email at Atom",
        )
    flow.record_provider_id("account_id", session.account_id)


class TakenFromEarlierRun(Exception):
    """An earlier run of this purchase placed the order under this clientRequestId: it is taken."""

    def __init__(self, run: PurchaseStatus) -> None:
        super().__init__(run.provider_ids.get("order_id"))
        self.run = run


class NotOurs(Exception):
    """An earlier run's order this run can neither follow nor cancel: its message names it."""


def result_of(request: AtomPurchaseRequest, earlier: PurchaseStatus) -> PurchaseResult:
    """The purchase as an earlier run fulfilled it."""
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=earlier.provider_ids["order_id"],
        tickets=earlier.tickets,
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
