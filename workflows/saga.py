"""Compensation stack: register the undo before acting, unwind in reverse, shielded from cancellation.

Modelled on temporalio/temporal-compensating-transactions: `BaseException` is caught so a
cancelled workflow compensates too, and a second cancellation while unwinding does not cut the
unwinding short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import Compensation

Undo = Callable[[], Awaitable[str | None]]


class Saga:
    def __init__(self) -> None:
        self._stack: list[tuple[str, Undo]] = []
        self.outcomes: list[Compensation] = []

    def add(self, action: str, undo: Undo) -> None:
        """Register `undo` before doing what it undoes. It returns a detail for the result, or
        None when there turned out to be nothing to undo."""
        self._stack.append((action, undo))

    def discard(self) -> None:
        """Past a point of no return: what is registered must no longer be undone."""
        self._stack.clear()

    async def __aenter__(self) -> Saga:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
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
                detail = await undo()
            except Exception as err:  # one failed undo must not stop the others
                workflow.logger.error("compensation failed", extra={"action": action, "error": str(err)})
                self.outcomes.append(Compensation(action=action, ok=False, detail=_describe(err)))
            else:
                if detail is not None:
                    self.outcomes.append(Compensation(action=action, ok=True, detail=detail))


def _describe(err: BaseException) -> str:
    cause = getattr(err, "cause", None)
    return str(cause or err)
