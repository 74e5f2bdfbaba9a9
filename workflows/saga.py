"""Compensation stack: register the undo before acting, unwind in reverse, shielded from cancellation.

Modelled on temporalio/temporal-compensating-transactions: `BaseException` is caught so a
cancelled workflow compensates too, and a second cancellation while unwinding does not cut the
unwinding short.

An undo that fails is never silently given up: a failure that may pass (its retries ran out on
timeouts, 5xx, 429) is reported through `alert` and the undo is tried again after a pause, for as
long as it takes; a failure that will not pass (the provider refused, or what was done is unknown)
is reported and kept as a failed outcome, for an operator.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, RetryState

with workflow.unsafe.imports_passed_through():
    from workflows.models import Compensation

T = TypeVar("T")
Undo = Callable[[], Awaitable[str | None]]
# (action, what went wrong, whether it is tried again)
Alert = Callable[[str, str, bool], None]
# Between rounds of an undo whose retries ran out: growing, then hourly.
PAUSE = timedelta(minutes=5)
MAX_PAUSE = timedelta(hours=1)


class Saga:
    def __init__(self, alert: Alert | None = None) -> None:
        self._stack: list[tuple[str, Undo]] = []
        self.outcomes: list[Compensation] = []
        self._alert = alert

    def add(self, action: str, undo: Undo) -> None:
        """Register `undo` before doing what it undoes. It returns a detail for the result, or
        None when there turned out to be nothing to undo."""
        self._stack.append((action, undo))

    def discard(self) -> None:
        """Past a point of no return: what is registered must no longer be undone."""
        self._stack.clear()

    def hold_back(self, reason: str) -> None:
        """What is registered must not be undone, yet is not settled either (e.g. seats of an order
        that may be confirmed): each becomes a failed outcome for an operator, without running."""
        while self._stack:
            action, _ = self._stack.pop()
            self._failed(action, f"not done: {reason}", retrying=False)

    @property
    def failed(self) -> bool:
        return any(not outcome.ok for outcome in self.outcomes)

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # GeneratorExit: the SDK is evicting the workflow from its cache (the worker stops, or the
        # cache is full); nothing may run now, and a replay elsewhere carries the purchase on.
        if exc is not None and not isinstance(exc, GeneratorExit):
            await self.compensate()

    async def compensate(self) -> None:
        undo_all = self._unwind()
        try:
            unwinding = asyncio.ensure_future(undo_all)
        except BaseException:  # the workflow is being evicted from the cache: nothing may run
            undo_all.close()
            raise
        while not unwinding.done():
            try:
                await asyncio.shield(unwinding)
            except asyncio.CancelledError:
                # Cancelled again while unwinding: keep waiting, the undo must finish.
                continue

    async def _unwind(self) -> None:
        while self._stack:
            action, undo = self._stack.pop()
            try:
                detail = await self.keep_trying(action, undo)
            except Exception as err:  # noqa: BLE001 — one failed undo, whatever its error, must not stop the others
                self._failed(action, _describe(err), retrying=False)
                continue
            self.withdraw(action)
            if detail is not None:
                self.outcomes.append(Compensation(action=action, ok=True, detail=detail))

    async def keep_trying(self, action: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt` until it succeeds, or raises a failure that will not pass. One that may pass is
        alerted (`action` retrying) and tried again after a pause, for as long as it takes."""
        rounds = 0
        while True:
            try:
                return await attempt()
            except Exception as err:
                if not _may_pass(err):
                    raise
                self._failed(action, _describe(err), retrying=True)
                rounds += 1
                await workflow.sleep(min(PAUSE * rounds, MAX_PAUSE), summary=f"retry {action}")

    def withdraw(self, action: str) -> None:
        """Drops what was said of `action`: it is settled, or a later outcome speaks for it."""
        self.outcomes = [o for o in self.outcomes if o.action != action]

    def unsettled(self, action: str, detail: str) -> None:
        """Something may have been done that nothing here can undo or name: a failed outcome for
        an operator, without running anything."""
        self._failed(action, detail, retrying=False)

    def _failed(self, action: str, detail: str, retrying: bool) -> None:
        self.withdraw(action)  # one outcome per action: the latest word on it
        self.outcomes.append(Compensation(action=action, ok=False, detail=detail, retrying=retrying))
        workflow.logger.error(
            "compensation failed; needs attention", extra={"action": action, "error": detail, "retrying": retrying}
        )
        if self._alert is not None:
            self._alert(action, detail, retrying)


def _may_pass(err: BaseException) -> bool:
    """Retries that ran out on timeouts or provider errors that were retryable: worth another round.
    A refusal (non-retryable) or an unknown outcome is not."""
    if isinstance(err, ActivityError):
        return err.retry_state in (RetryState.TIMEOUT, RetryState.MAXIMUM_ATTEMPTS_REACHED)
    return not (isinstance(err, ApplicationError) and err.non_retryable)


def _describe(err: BaseException) -> str:
    # An activity's failure says what happened in its cause; the workflow's own errors in their message.
    if isinstance(err, ActivityError) and err.cause is not None:
        return str(err.cause)
    return str(err)
