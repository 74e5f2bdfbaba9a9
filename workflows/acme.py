"""ACME: reserve → cart → [confirm update] → checkout (idempotent by request uuid) → tickets."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        AcmePurchaseRequest,
        Hold,
        OrderRecord,
        PurchaseResult,
        PurchaseState,
        Receipt,
        RefundRequest,
        RefundResult,
    )
    from workflows.outcomes import outcome_known, raised_by_activity

if TYPE_CHECKING:
    from workflows.flow import Flow

# How long a reservation holds its seats: "approximately 10 mins" (OTA reseller checkout guide,
# developers.acmeticketing.com/support/solutions/articles/33000257544). Used only where no
# reservation's own expirationTimestamp was seen.
RESERVATION = timedelta(minutes=10)


async def purchase(request: AcmePurchaseRequest, flow: Flow) -> PurchaseResult:
    policy = await flow.policy("acme")
    # A new run under the id of a fulfilled purchase (a re-run): its order stands, and the
    # checkout's request uuid would find it anyway, but a reservation made first would hold seats
    # nobody releases (ACME lists none). Reading earlier runs costs one visibility call.
    done = next(
        (run for run in await flow.earlier_runs() if run.state == PurchaseState.FULFILLED and run.provider_ids.get("order_id")),
        None,
    )
    if done is not None:
        flow.receipt = done.receipt
        flow.record_provider_id("order_id", done.provider_ids["order_id"])
        return PurchaseResult(
            purchase_id=request.purchase_id,
            provider=request.provider,
            state=PurchaseState.FULFILLED,
            provider_order_id=done.provider_ids["order_id"],
            provider_status="paid",
            tickets=done.tickets,
        )

    margin = timedelta(seconds=policy.hold_margin_seconds)

    def name_unknown(attempts: int, lapse: datetime) -> None:
        """Named where an operator and the fault model look: ACME lists no reservations, so a reserve
        attempt whose answer was lost may hold seats nobody else can name until it lapses."""
        for attempt in range(1, attempts + 1):
            flow.record_provider_id(
                f"unknown_hold_{attempt}",
                f"reserve attempt {attempt}: outcome unknown, a reservation it made lapses by {lapse.isoformat()}",
            )

    async def release(hold: Hold) -> str:
        released = await flow.call("acme.release_reservation", hold.item_ids[0], result_type=str, undo=True)
        if not hold.unknown_attempts:
            return released
        # Reservations of unknown id cannot be deleted: their seats are free only once they lapse.
        lapsed = hold.expires_at + margin
        await wait_until(lapsed)
        return f"{released}; {unknown(hold)} lapsed by {lapsed.isoformat()}"

    try:
        hold = await flow.act(
            "reserve", lambda: flow.call("acme.reserve", request, result_type=Hold), "delete reservation", release
        )
    except ActivityError as err:
        if attempts := unknown_attempts(err):
            # The reserve failed, yet earlier attempts may have reserved: the purchase fails only once
            # they have lapsed (a reservation made just before the failure included).
            lapse = workflow.now() + RESERVATION + margin
            name_unknown(attempts, lapse)
            await wait_until(lapse)
        raise
    flow.record_hold(hold)
    flow.record_provider_id("reservation_id", hold.item_ids[0])
    name_unknown(hold.unknown_attempts, hold.expires_at)

    flow.step("cart")
    cart_id, flow.receipt = await flow.call("acme.create_cart", request, result_type=tuple[str, Receipt])
    flow.record_provider_id("cart_id", cart_id)

    if request.confirmation == "manual":
        await flow.await_confirmation(hold, policy)
    confirmation = flow.confirmation
    card_token = (confirmation.payment_reference if confirmation else None) or request.payment_token
    # A confirm's reCAPTCHA token is the fresher one (a token lives two minutes). It rides in the
    # request the checkout activity already takes: the same arguments as runs started before it.
    recaptcha_token = confirmation.recaptcha_token if confirmation else None
    checkout_request = request.model_copy(update={"recaptcha_token": recaptcha_token}) if recaptcha_token else request

    # ACME's idempotency key for this checkout: stable across replays, activity retries and resets.
    request_uuid = flow.idempotency_key("checkout")

    async def refund(order: OrderRecord) -> str:
        flow.record_provider_id("order_id", order.order_id)  # also when a cancel cut the checkout short
        refunded = await flow.call(
            "acme.refund",
            RefundRequest(order_id=order.order_id, notes=f"purchase {request.purchase_id} cancelled"),
            result_type=RefundResult,
            undo=True,
        )
        return f"order {refunded.order_id} refunded {refunded.refunded} of {refunded.total}"

    order = await flow.act(
        "checkout",
        lambda: flow.call(
            "acme.checkout", checkout_request, cart_id, hold.item_ids[0], request_uuid, card_token, result_type=OrderRecord
        ),
        "refund order",
        refund,
        PurchaseState.COMMITTING,
        # The request uuid is written into the order's notes: what an unanswered checkout placed is found by it.
        find=lambda: flow.find("acme.find_checkout", request.buyer.email, request_uuid, result_type=OrderRecord),
    )
    flow.record_provider_id("order_id", order.order_id)
    return PurchaseResult(
        purchase_id=request.purchase_id,
        provider=request.provider,
        state=PurchaseState.FULFILLED,
        provider_order_id=order.order_id,
        provider_status="paid",
        tickets=order.tickets,
    )


def unknown(hold: Hold) -> str:
    return f"{hold.unknown_attempts} reservation(s) of reserve attempts whose outcome is unknown"


def unknown_attempts(err: ActivityError) -> int:
    """How many attempts of a failed reserve may have reserved: those before a refusal; every one
    when the retries ran out (the last attempt's number; 1 when unknown, e.g. timeouts)."""
    if outcome_known(err):
        return 0
    cause = raised_by_activity(err)
    details = cause.details[0] if cause is not None and cause.details and isinstance(cause.details[0], dict) else {}
    attempt = details.get("attempt") or 1
    return attempt - 1 if cause is not None and cause.non_retryable else attempt


async def wait_until(when: datetime) -> None:
    """Sleeps until `when`, also through a cancel: what it waits for is not cancelled with the purchase."""
    while (left := when - workflow.now()) > timedelta(0):
        try:
            await workflow.sleep(left, summary="wait out reservations of unknown id")
        except asyncio.CancelledError:
            continue
