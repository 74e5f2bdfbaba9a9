"""The toolkit the provider step sequences drive: a purchase's state and what a step does with it
(step, call, act, commit, read back, await confirmation, poll, attend). PurchaseWorkflow (purchase.py)
is a Flow and adds what callers see; the provider modules receive it as a Flow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Optional, TypeVar, cast

from temporalio import workflow
from temporalio.common import MetricMeter, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
)
from temporalio.exceptions import TimeoutError as ActivityTimeoutError

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        PROVIDER_ORDER_ID,
        STATE,
        AtmEvent,
        ConfirmRequest,
        EventInfo,
        Failure,
        FailureReason,
        Hold,
        OrderProgress,
        OrderSummary,
        PurchaseFailed,
        PurchasePolicy,
        PurchaseState,
        PurchaseStatus,
        Receipt,
        Ticket,
    )
    from workflows.outcomes import (
        EARLIER_RUNS_NOT_LISTABLE,
        OUTCOME_UNKNOWN,
        outcome_known,
        outcome_unknown,
        raised_by_activity,
    )
    from workflows.saga import Saga

T = TypeVar("T")

# Calls that read or change provider state before money moves: a few minutes of retries at most,
# the hold would be gone by then anyway.
STEP_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=15))
STEP_TIMEOUT = timedelta(minutes=2)
# Undo keeps trying much longer: giving up leaks seats or leaves an order charged.
UNDO_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1))
UNDO_TIMEOUT = timedelta(hours=6)
# One round of an undo's retries: then the saga alerts (COMPENSATION_FAILED) and starts another.
UNDO_ROUND = timedelta(minutes=10)
CALL_TIMEOUT = timedelta(seconds=30)
# A purchase needing attention alerts again each round (one timer a round: history stays small).
ATTENTION_ROUND = timedelta(days=1)
# Idempotency keys are uuid5(KEYS, purchase id + purpose): the same after a workflow reset or a
# second run of the same purchase, so the provider recognises a repeat.
KEYS = uuid.UUID("6f1d7c3e-1b7a-4f0e-9a55-7c2d8b1e4a90")


async def local_activity(activity: str, *, args: Sequence[Any], result_type: type[T], **options: Any) -> T:
    """workflow.execute_local_activity, whose timeout fails the same live and on replay. Live, the SDK
    raises ActivityError("Local Activity timed out") caused by a TimeoutError; its marker records only
    the TimeoutError, raised bare on replay (a worker's cache eviction, a query): a handler catching
    ActivityError took another path there, issued other commands, and the replay failed with a
    non-determinism error (sdk-core issue 449: markers do not record the ActivityFailureInfo)."""
    try:
        return cast(T, await workflow.execute_local_activity(activity, args=args, result_type=result_type, **options))
    except ActivityTimeoutError as err:
        # The marker keeps no ids or retry state (live: CANCEL_REQUESTED), so none is made up here.
        raise ActivityError(
            "Local Activity timed out",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=activity,
            activity_id="",
            retry_state=None,
        ) from err


class Flow:
    def __init__(self) -> None:
        self.saga = Saga(alert=self._compensation_failed)
        self._purchase_id = ""
        self._request_sha256: str | None = None
        self._provider = ""
        self._state = PurchaseState.HOLDING
        self._step = "start"
        self._steps_done: list[str] = []
        self._hold_expires_at: datetime | None = None
        self._provider_ids: dict[str, str] = {}
        self.event: EventInfo | None = None
        self.receipt: Receipt | None = None
        self._failure: Failure | None = None
        self._confirmation: ConfirmRequest | None = None
        self._cancel_reason: str | None = None
        self._main: asyncio.Task[Any] | None = None
        # True only while await_confirmation waits: the `confirm` update is accepted then.
        self._awaiting_confirm = False
        # Past a point of no return the purchase can no longer be cancelled.
        self._committed = False
        self._call_timeout = CALL_TIMEOUT
        self._activity_queue: str | None = None
        # Calls may run locally though the provider has a queue of its own (PurchasePolicy.local_calls).
        self._limit_held_locally = False
        self._tickets: list[Ticket] = []
        self._events: list[AtmEvent] = []
        self._deliveries: set[str] = set()
        self._money_events: list[AtmEvent] = []
        # An operator's note ending a purchase that needs attention (`resolve`).
        self._resolution: str | None = None
        # ATM events the purchase did not believe (`suspicious`).
        self._suspicious: list[AtmEvent] = []
        # True only while `attend` waits for an operator: `resolve` is accepted then.
        self._awaiting_operator = False

    def _meter(self) -> MetricMeter:
        # Workflow metrics are not recorded again when a history is replayed.
        return workflow.metric_meter().with_additional_attributes({"provider": self._provider})

    # -- what provider sequences use --------------------------------------------------------

    def step(self, name: str, state: PurchaseState | None = None) -> None:
        if self._cancel_reason is not None and not self._committed:
            # A cancel whose task cancellation was lost (it arrived before `run` began, or while an
            # awaited call resolved in the same activation) still stops the purchase before its next step.
            raise asyncio.CancelledError(self._cancel_reason)
        if self._step != name:
            self._steps_done.append(self._step)
        self._set_state(state or self._state, name)
        # workflow.logger adds the workflow's ids and is silent while a history is replayed.
        workflow.logger.info(
            "purchase step",
            extra={"provider": self._provider, "purchase_id": self._purchase_id, "step": name, "state": self._state.value},
        )

    def _set_state(self, state: PurchaseState, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"{state} · {step}")  # shown on the purchase's page in the UI
        if state != self._state:
            self._state = state
            workflow.upsert_search_attributes([STATE.value_set(state)])

    def _compensation_failed(self, action: str, detail: str, retrying: bool) -> None:
        """The saga's alert: visible in the UI list (BoxofficeState), the status query and metrics."""
        self._set_state(PurchaseState.COMPENSATION_FAILED, f"retrying {action}" if retrying else f"{action} failed")
        self._meter().create_counter(
            "boxoffice_compensation_failures", "Undo rounds that failed, by action and whether retried"
        ).add(1, {"action": action, "retrying": str(retrying).lower()})

    def record_provider_id(self, name: str, value: str) -> None:
        if self._provider_ids.get(name) == value:
            return  # known already: no second search-attribute command
        self._provider_ids[name] = value
        if name == "order_id":
            workflow.upsert_search_attributes([PROVIDER_ORDER_ID.value_set(value)])

    def record_hold(self, hold: Hold) -> None:
        self._hold_expires_at = hold.expires_at

    async def call(
        self,
        activity: str,
        *args: Any,
        result_type: type[T],
        undo: bool = False,
        read: bool = False,
        rerun_safe: bool = False,
        summary: str | None = None,
    ) -> T:
        """Runs a provider call. `read`: a short idempotent read; `rerun_safe`: a write whose
        repeat is harmless (keyed by an idempotency key, or an account sign-in). Both run as local
        activities, in the workflow task (no matching round trip each: bench/README.md), unless the
        provider is rate-limited and the worker holds no share of its limit (a local activity bypasses
        the queue's limit). A local call runs again when its workflow task is lost (worker crash), hence
        only such calls."""
        # What the UI shows for the call: the step it serves, not the activity type.
        summary = summary or (f"undo: {activity.partition('.')[2].replace('_', ' ')}" if undo else self._step)
        if (read or rerun_safe) and self._runs_locally():
            return await local_activity(
                activity,
                args=args,
                result_type=result_type,
                start_to_close_timeout=self._call_timeout,
                schedule_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary=summary,
            )
        return cast(
            T,
            await workflow.execute_activity(
                activity,
                args=args,
                result_type=result_type,
                task_queue=self._activity_queue,
                start_to_close_timeout=self._call_timeout,
                schedule_to_close_timeout=UNDO_ROUND if undo else STEP_TIMEOUT,
                retry_policy=UNDO_RETRY if undo else STEP_RETRY,
                summary=summary,
            ),
        )

    async def find(self, activity: str, *args: Any, result_type: type[T]) -> T | None:
        """A read-back by idempotency key (None: not there), retried like an undo (one round here;
        `read_back` runs further rounds): it decides what to keep or undo."""
        found: T | None = await self.call(
            activity,
            *args,
            result_type=Optional[result_type],  # type: ignore[arg-type]  # noqa: UP045
            undo=True,
            summary=f"read back: {self._step}",
        )
        return found

    async def earlier_runs(self) -> list[PurchaseStatus]:
        """The last status of every other run of this purchase, newest first (activities/runs.py): what
        a run before a reset or an ended run before a re-run placed at the provider, after this run's
        history stops telling. A local activity: it reads Temporal, not the provider (no rate limit).
        None listed on a server without visibility (the time-skipping test server)."""
        try:
            runs: list[PurchaseStatus] = await local_activity(
                "runs.earlier",
                args=[workflow.info().workflow_id, workflow.info().run_id],
                result_type=list[PurchaseStatus],
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary="read earlier runs",
            )
        except (ActivityError, ApplicationError) as err:  # a local activity's failure may come as either
            raised = raised_by_activity(err)
            if raised is None or raised.type != EARLIER_RUNS_NOT_LISTABLE:
                raise
            return []
        return runs

    async def policy(self, provider: str) -> PurchasePolicy:
        policy = cast(
            PurchasePolicy,
            await workflow.execute_local_activity(
                f"{provider}.policy", result_type=PurchasePolicy, start_to_close_timeout=timedelta(seconds=5)
            ),
        )
        self._call_timeout = timedelta(seconds=policy.call_timeout_seconds)
        self._activity_queue = policy.activity_task_queue
        self._limit_held_locally = policy.local_calls
        return policy

    def _runs_locally(self) -> bool:
        """Local activities are allowed: no rate limit, or the limit held by the workers' shares."""
        return self._activity_queue is None or self._limit_held_locally

    async def await_confirmation(self, hold: Hold, policy: PurchasePolicy) -> None:
        """Waits for the `confirm` update until a margin before the hold expires (timer vs update)."""
        self.step("await confirmation", PurchaseState.AWAITING_CONFIRMATION)
        deadline = hold.expires_at - timedelta(seconds=policy.hold_margin_seconds)
        remaining = (deadline - workflow.now()).total_seconds()
        self._awaiting_confirm = True
        try:
            if remaining <= 0:
                raise TimeoutError
            await workflow.wait_condition(
                lambda: self._confirmation is not None, timeout=remaining, timeout_summary="hold expiry"
            )
        except TimeoutError:
            raise PurchaseFailed(
                PurchaseState.EXPIRED,
                Failure(
                    reason=FailureReason.HOLD_EXPIRED,
                    message=f"no confirmation before the hold expiring at {hold.expires_at.isoformat()}",
                ),
            ) from None
        finally:
            self._awaiting_confirm = False

    async def next_event(self, kinds: set[str], deadline: datetime) -> AtmEvent | None:
        """The next provider event of one of `kinds`, or None once `deadline` passes."""
        remaining = (deadline - workflow.now()).total_seconds()
        if remaining > 0:
            try:
                await workflow.wait_condition(
                    lambda: any(event.kind in kinds for event in self._events),
                    timeout=remaining,
                    timeout_summary=f"{self._step} deadline",
                )
            except TimeoutError:
                pass
        return self.take_event(kinds)

    def take_event(self, kinds: set[str]) -> AtmEvent | None:
        """A provider event of one of `kinds` that has already arrived, or None; without waiting."""
        event = next((event for event in self._events if event.kind in kinds), None)
        if event is not None:
            self._events.remove(event)
        return event

    async def attend(self, reason: str, failure: Failure, kinds: set[str]) -> AtmEvent:
        """For a purchase that cannot end by itself: NEEDS_ATTENTION (BoxofficeState, the status
        query with `failure` saying why, an error log line and the metric `boxoffice_attention`,
        again each ATTENTION_ROUND) until a provider event of `kinds` arrives (returned: the purchase
        goes on) or an operator sends `resolve` (it ends FAILED with `failure` and the note). A cancel
        cannot end it."""
        self._failure = failure
        self._set_state(PurchaseState.NEEDS_ATTENTION, self._step)
        self._awaiting_operator = True
        try:
            return await self._attend(reason, failure, kinds)
        finally:
            self._awaiting_operator = False

    async def _attend(self, reason: str, failure: Failure, kinds: set[str]) -> AtmEvent:
        while True:
            workflow.logger.error(
                "purchase needs attention",
                extra={"provider": self._provider, "purchase_id": self._purchase_id, "reason": reason, "why": failure.message},
            )
            self._meter().create_counter("boxoffice_attention", "Alerts for purchases an operator must look at, by reason").add(
                1, {"reason": reason}
            )
            try:
                await workflow.wait_condition(
                    lambda: self._resolution is not None or any(event.kind in kinds for event in self._events),
                    timeout=ATTENTION_ROUND,
                    timeout_summary="needs attention: alert again",
                )
            except TimeoutError:
                continue
            except asyncio.CancelledError:
                workflow.logger.warning("cancel refused: the purchase awaits an operator's `resolve`")
                continue
            event = self.take_event(kinds)
            if event is not None:
                self._failure = None
                return event
            raise PurchaseFailed(
                PurchaseState.FAILED,
                failure.model_copy(update={"message": f"{failure.message}; resolved by an operator: {self._resolution}"}),
            )

    def suspicious(self, event: AtmEvent, why: str) -> None:
        """A provider event the purchase does not take as proof (it disagrees with the purchase, or the
        provider says otherwise): listed in `suspicious_events` with `why`, NEEDS_ATTENTION (BoxofficeState)
        until the purchase moves on, an error log line and `boxoffice_attention`. The purchase goes on
        waiting as if it had not come."""
        self._suspicious.append(event.model_copy(update={"suspicious": why}))
        self._set_state(PurchaseState.NEEDS_ATTENTION, self._step)
        workflow.logger.error(
            "provider event not believed: needs attention",
            extra={
                "provider": self._provider,
                "purchase_id": self._purchase_id,
                "event_type": event.type,
                "event_id": event.identity,
                "why": why,
            },
        )
        self._meter().create_counter("boxoffice_attention", "Alerts for purchases an operator must look at, by reason").add(
            1, {"reason": "suspicious_event"}
        )

    def idempotency_key(self, purpose: str) -> str:
        """The provider's idempotency key for one `purpose` of this purchase."""
        return str(uuid.uuid5(KEYS, f"{self._purchase_id}:{purpose}"))

    @property
    def confirmation(self) -> ConfirmRequest | None:
        return self._confirmation

    def point_of_no_return(self) -> None:
        """What is done stands: nothing is undone any more and cancel is refused."""
        self._committed = True
        self.saga.discard()

    async def act(
        self,
        step: str,
        do: Callable[[], Awaitable[T]],
        undo_action: str,
        undo: Callable[[T], Awaitable[str]],
        state: PurchaseState | None = None,
        find: Callable[[], Awaitable[T | None]] | None = None,
    ) -> T:
        """Does a step with its undo registered first. A cancel arriving while the call is in
        flight waits for its outcome, so what was done at that moment is still undone. `find` reads
        back by the step's idempotency key when the outcome is unknown (see `read_back`)."""
        self.step(step, state)
        attempt = asyncio.ensure_future(self.read_back(step, do, find))

        async def undo_if_done() -> str | None:
            try:
                done = await attempt
            except ApplicationError as err:
                if err.type == OUTCOME_UNKNOWN:
                    raise  # something may have been done: a failed undo an operator sees
                return None
            except Exception:  # noqa: BLE001 — any other failure of the step: nothing was done, nothing to undo
                return None
            return await undo(done)

        self.saga.add(undo_action, undo_if_done)
        return await asyncio.shield(attempt)

    async def read_back(self, step: str, do: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[T | None]] | None) -> T:
        """`do`; when it fails with an unknown outcome, `find` says what it did: the order it placed
        (taken as its result), None (nothing: the failure stands), or raises OUTCOME_UNKNOWN."""
        try:
            return await do()
        except ActivityError as err:
            if find is None or outcome_known(err):
                raise
            workflow.logger.warning("outcome unknown; reading back", extra={"step": step, "error": str(err.cause)})
            try:
                found = await self._find_in_rounds(step, find)
            except ActivityError as unreadable:
                raise outcome_unknown(f"{step}: outcome unknown ({err.cause}); read-back failed: {unreadable.cause}") from err
            if found is None:
                raise
            return found

    async def _find_in_rounds(self, step: str, find: Callable[[], Awaitable[T | None]]) -> T | None:
        """The read-back decides what is kept or undone: like an undo, it keeps trying in rounds while
        its failures may pass (a provider down longer than a round), alerting COMPENSATION_FAILED
        meanwhile; once it has an answer the alert is withdrawn and the purchase carries on."""
        action = f"read back: {step}"
        state = self._state
        try:
            found = await self.saga.keep_trying(action, find)
        finally:
            self.saga.withdraw(action)  # settled, or a failed undo will say what is unknown
        self._set_state(state, step)
        return found

    async def commit(self, step: str, do: Callable[[], Awaitable[T]], find: Callable[[], Awaitable[T | None]] | None = None) -> T:
        """The point of no return for a provider whose commit cannot be undone by boxoffice
        (Onebox confirm): a cancel arriving meanwhile waits for the outcome instead of abandoning
        it. Committed, the purchase stands (the saga is dropped); failed, the saga compensates;
        of unknown outcome, nothing is undone (what is held may belong to a confirmed order)."""
        self.step(step, PurchaseState.COMMITTING)
        attempt = asyncio.ensure_future(self.read_back(step, do, find))
        try:
            try:
                committed = await asyncio.shield(attempt)
            except asyncio.CancelledError:
                committed = await attempt  # too late to cancel once the order is on its way
                workflow.logger.info("cancel arrived during commit; the order stands")
        except ApplicationError as err:
            if err.type == OUTCOME_UNKNOWN:
                self.saga.hold_back(f"{step} may have succeeded ({err.message})")
            raise
        self.point_of_no_return()
        return committed

    async def await_fulfilment(
        self,
        order_id: str,
        poll: str,
        final_read: str,
        args: Sequence[Any],
        policy: PurchasePolicy,
        ended: FailureReason,
        ended_is_final: bool,
    ) -> OrderSummary:
        """Polls `poll` until the order is fulfilled or ends otherwise, then reads it once with
        `final_read` (also the documented fallback once the budget is spent). An order that ended
        unfulfilled fails with `ended`; where that end is final at the provider (`ended_is_final`)
        nothing is left to cancel. Still unfulfilled after the budget: FULFILLMENT_TIMEOUT, and the
        saga cancels the order."""
        self.step("await fulfilment", PurchaseState.AWAITING_FULFILLMENT)
        progress = await self.poll(poll, args, OrderProgress, policy)
        if progress is not None and not progress.fulfilled:
            if ended_is_final:
                self.point_of_no_return()
            raise PurchaseFailed(
                PurchaseState.FAILED,
                Failure(
                    reason=ended,
                    message=progress.reason or f"order {order_id} ended {progress.status}",
                    provider_code=progress.reason_code,
                    provider_status=progress.status,
                ),
            )
        self.step("order summary")
        summary = await self.call(final_read, *args, result_type=OrderSummary, read=True)
        if not summary.fulfilled:
            raise PurchaseFailed(
                PurchaseState.FAILED,
                Failure(
                    reason=FailureReason.FULFILLMENT_TIMEOUT,
                    message=f"order {order_id} not fulfilled within {policy.poll_budget_seconds:g} s",
                    provider_status=summary.status,
                ),
            )
        if summary.receipt is not None and (self.receipt is None or summary.receipt.total != self.receipt.total):
            self.receipt = summary.receipt  # what was charged, when it differs from the preview
        return summary

    async def poll(self, activity: str, args: Sequence[Any], result_type: type[T], policy: PurchasePolicy) -> T | None:
        """Polls through the activity's retry policy: the activity raises a retryable error while
        the answer is not final. History holds one activity, however many polls; the server's retry
        timer is skipped by the time-skipping test server. None when the budget ran out. For a
        provider without a rate limit (or with its limit held by the workers' shares) the first poll is
        a local activity, in the workflow task that follows the order (an order done at once costs no
        round trip); if it is not final, the rest poll as before after one interval (a timer): history
        stays small however long it takes."""
        interval = timedelta(seconds=policy.poll_interval_seconds)
        attempts = int(policy.poll_budget_seconds // policy.poll_interval_seconds) + 1
        if self._runs_locally():
            try:
                return await local_activity(
                    activity,
                    args=args,
                    result_type=result_type,
                    start_to_close_timeout=self._call_timeout,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                    summary=self._step,
                )
            except (ActivityError, ApplicationError) as err:
                raised = raised_by_activity(err)
                if raised is not None and raised.non_retryable:
                    raise
            attempts -= 1
            if attempts == 0:
                return None
            await workflow.sleep(interval, summary="next poll")
        try:
            return cast(
                T | None,
                await workflow.execute_activity(
                    activity,
                    args=args,
                    result_type=result_type,
                    task_queue=self._activity_queue,
                    start_to_close_timeout=self._call_timeout,
                    retry_policy=RetryPolicy(initial_interval=interval, backoff_coefficient=1.0, maximum_attempts=attempts),
                    summary=self._step,
                ),
            )
        except ActivityError as err:
            if err.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED:
                return None
            raise
