"""PurchaseWorkflow: the entry point and what callers see (status query, held/confirm/cancel/resolve
updates, signals, the outcome). It is the Flow (flow.py) the provider sequences drive; the provider
modules hold the step sequences."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows import acme, atm, atom, onebox, tevo
    from workflows.flow import Flow
    from workflows.models import (
        PROVIDER,
        STATE,
        AtmEvent,
        CancelRequest,
        ConfirmRequest,
        Failure,
        FailureReason,
        PurchaseFailed,
        PurchaseRequest,
        PurchaseResult,
        PurchaseState,
        PurchaseStatus,
        purchase_workflow_id,
        request_fingerprint,
    )
    from workflows.outcomes import failure_from

WRONG_WORKFLOW_ID = "WRONG_WORKFLOW_ID"

SEQUENCES: dict[str, Any] = {
    "atom": atom.purchase,
    "onebox": onebox.purchase,
    "tevo": tevo.purchase,
    "atm": atm.purchase,
    "acme": acme.purchase,
}


# Bad input started by another language fails the workflow at once instead of retrying the task.
@workflow.defn(name="PurchaseWorkflow", failure_exception_types=[ValidationError])
class PurchaseWorkflow(Flow):
    @workflow.run
    async def run(self, request: PurchaseRequest) -> PurchaseResult:
        expected = purchase_workflow_id(request.purchase_id)
        if workflow.info().workflow_id != expected:
            # Two workflows for one purchase id would each place an order.
            raise ApplicationError(
                f"a purchase with purchase_id {request.purchase_id!r} must run as workflow {expected!r}, "
                f"not {workflow.info().workflow_id!r}",
                type=WRONG_WORKFLOW_ID,
                non_retryable=True,
            )
        self._purchase_id = request.purchase_id
        self._provider = request.provider
        self._request_sha256 = request_fingerprint(request)
        self._main = asyncio.current_task()
        self._meter().create_counter("boxoffice_purchases_started", "Purchases started").add(1)
        workflow.upsert_search_attributes([PROVIDER.value_set(request.provider), STATE.value_set(self._state)])
        result = PurchaseResult(purchase_id=request.purchase_id, provider=request.provider, state=self._state)
        try:
            async with self.saga:
                result = await SEQUENCES[request.provider](request, self)
            self._tickets = result.tickets
            self._set_state(result.state, "done")
        except PurchaseFailed as failed:
            self._fail(failed.state, failed.failure)
        except (ActivityError, ApplicationError, asyncio.CancelledError) as err:
            if not is_cancelled_exception(err):
                assert isinstance(err, ActivityError | ApplicationError)  # noqa: S101 — narrows the type: not a cancel
                self._fail(PurchaseState.FAILED, failure_from(err))
            else:
                message = self._cancel_reason or "workflow cancelled"
                self._fail(PurchaseState.CANCELLED, Failure(reason=FailureReason.CANCELLED, message=message))
                if self._cancel_reason is None:
                    self._count_outcome()
                    raise  # cancelled through Temporal (UI, CLI): the execution shows as Canceled
        self._count_outcome()
        await workflow.wait_condition(workflow.all_handlers_finished)
        final = result.model_copy(
            update={
                "state": self._state,
                # Also on failure: an order that was placed, then cancelled, is named.
                "provider_order_id": result.provider_order_id or self._provider_ids.get("order_id"),
                "failure": self._failure,
                "event": self.event,
                "receipt": self.receipt,
                "compensations": self.saga.outcomes,
                "money_events": list(self._money_events),
                "suspicious_events": list(self._suspicious),
            }
        )
        if self._state != PurchaseState.FULFILLED and self._failure is not None:
            # Only a fulfilled purchase completes: an operator tells outcomes apart in the UI's list
            # (Completed / Failed / Canceled). The result travels as the failure's details.
            attention = self._state == PurchaseState.COMPENSATION_FAILED
            raise ApplicationError(
                f"purchase ended {self._state}: {self._failure.message}",
                final,
                non_retryable=True,
                type=self._state.value if attention else self._failure.reason.value,
            )
        return final

    def _count_outcome(self) -> None:
        meter = self._meter()
        reason = self._failure.reason.value if self._failure else ""
        meter.create_counter("boxoffice_purchases_finished", "Purchases ended, by state and reason").add(
            1, {"state": self._state.value, "reason": reason}
        )
        undone = meter.create_counter("boxoffice_compensations", "Compensations run, by action and result")
        for outcome in self.saga.outcomes:
            undone.add(1, {"action": outcome.action, "ok": str(outcome.ok).lower()})

    # -- what callers see and do ------------------------------------------------------------

    @workflow.query
    def status(self) -> PurchaseStatus:
        return PurchaseStatus(
            purchase_id=self._purchase_id,
            provider=self._provider,
            state=self._state,
            step=self._step,
            steps_done=list(self._steps_done),
            hold_expires_at=self._hold_expires_at,
            provider_ids=dict(self._provider_ids),
            event=self.event,
            receipt=self.receipt,
            failure=self._failure,
            cancel_reason=self._cancel_reason,
            tickets=list(self._tickets),
            compensations=list(self.saga.outcomes),
            request_sha256=self._request_sha256,
            money_events=list(self._money_events),
            suspicious_events=list(self._suspicious),
        )

    @workflow.update
    async def held(self) -> PurchaseStatus:
        """Returns once the purchase has moved past holding: its seats are held and priced
        (AWAITING_CONFIRMATION for manual confirmation and ATM, with the checkout URL; COMMITTING
        for auto) or it has ended. Sent with the start (update-with-start), it is a caller's early
        return instead of polling `status`."""
        await workflow.wait_condition(lambda: self._state != PurchaseState.HOLDING)
        return self.status()

    @workflow.update
    async def confirm(self, confirmation: ConfirmRequest) -> PurchaseStatus:
        """Returns once the order is placed (AWAITING_FULFILLMENT) or the purchase has ended."""
        self._confirmation = confirmation
        await workflow.wait_condition(lambda: self._state not in (PurchaseState.AWAITING_CONFIRMATION, PurchaseState.COMMITTING))
        return self.status()

    @confirm.validator
    def _validate_confirm(self, confirmation: ConfirmRequest) -> None:
        if not self._awaiting_confirm or self._confirmation is not None:
            raise ValueError(f"purchase is {self._state}, not awaiting a confirm update")
        if (
            confirmation.accepted_total is not None
            and self.receipt is not None
            and confirmation.accepted_total != self.receipt.total
        ):
            raise ValueError(f"accepted total {confirmation.accepted_total} differs from the price {self.receipt.total}")

    @workflow.update
    async def cancel(self, request: CancelRequest) -> PurchaseStatus:
        """Returns once the purchase has ended and its compensation has run."""
        self._request_cancel(request.reason)
        await workflow.wait_condition(lambda: self._state.final)
        return self.status()

    @cancel.validator
    def _validate_cancel(self, request: CancelRequest) -> None:
        if self._state.final:
            raise ValueError(f"purchase already ended: {self._state}")
        if self._committed:
            raise ValueError("the order is committed at the provider and can no longer be cancelled")

    @workflow.signal(name="cancel")
    def cancel_signal(self, request: CancelRequest) -> None:
        """Fire-and-forget form of the `cancel` update, for callers that cannot wait."""
        self._request_cancel(request.reason)

    @workflow.update
    async def resolve(self, note: str) -> PurchaseStatus:
        """An operator ends a purchase that needs attention (e.g. after refunding the buyer by hand):
        it ends FAILED with its failure and `note`. Returns the final status."""
        self._resolution = note or "resolved"
        await workflow.wait_condition(lambda: self._state.final)
        return self.status()

    @resolve.validator
    def _validate_resolve(self, note: str) -> None:
        # A purchase alerting about a suspicious event goes on by itself: nothing to resolve.
        if self._state != PurchaseState.NEEDS_ATTENTION or not self._awaiting_operator:
            raise ValueError(f"purchase is {self._state}, not awaiting an operator")

    @workflow.signal(name="resolve")
    def resolve_signal(self, note: str) -> None:
        """Fire-and-forget form of the `resolve` update (as ReconcileWorkflow's `resolve`)."""
        if self._state != PurchaseState.NEEDS_ATTENTION or not self._awaiting_operator:
            workflow.logger.warning("resolve ignored: the purchase does not await an operator", extra={"state": self._state})
            return
        self._resolution = note or "resolved"

    @workflow.signal(name="atm_event")
    def atm_event(self, event: AtmEvent) -> None:
        """A verified ATM webhook (workers/webhooks.py). Events come at least once, a redelivery
        with a new delivery id but the same event id: kept once."""
        if event.identity in self._deliveries:
            return
        self._deliveries.add(event.identity)
        if event.payment_id:
            self._provider_ids.setdefault("payment_id", event.payment_id)
        if event.kind in atm.MONEY_TAKEN_CHANGED:
            self._money_events.append(event)
            workflow.logger.error(
                "ATM reports a change to money already taken: needs attention",
                extra={"event_type": event.type, "hold_id": event.hold_id},
            )
        else:
            self._events.append(event)

    def _request_cancel(self, reason: str) -> None:
        if self._state.final or self._committed or self._cancel_reason is not None:
            return
        self._cancel_reason = reason
        # Interrupt whatever step runs now; the saga compensates as for a Temporal cancellation.
        if self._main is not None:
            self._main.cancel()

    def _fail(self, state: PurchaseState, failure: Failure) -> None:
        self._failure = failure
        # The failure stays the purchase's reason; a failed undo decides how it ended.
        self._set_state(PurchaseState.COMPENSATION_FAILED if self.saga.failed else state, self._step)
