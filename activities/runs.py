"""Reads Temporal itself: what earlier runs of a purchase recorded. A workflow reset or a second run
under the same workflow id starts again at step 1, while the provider may already hold an order from
the earlier run; where the provider cannot tell (Atom answers DUPLICATE_CLIENT_REQUEST_ID without
the order, Onebox takes no key), the earlier run's own record names it."""

from __future__ import annotations

from typing import Any, cast

from temporalio import activity
from temporalio.client import Client, WorkflowExecution, WorkflowQueryFailedError
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import PurchaseState, PurchaseStatus
from workflows.outcomes import EARLIER_RUNS_NOT_LISTABLE

PROVIDER = SearchAttributeKey.for_keyword("BoxofficeProvider")
STATE = SearchAttributeKey.for_keyword("BoxofficeState")
PROVIDER_ORDER_ID = SearchAttributeKey.for_keyword("BoxofficeProviderOrderId")


class EarlierRuns:
    """Activities on the worker's own Temporal client (its data converter decodes the runs' payloads)."""

    name = "runs"

    def __init__(self, client: Client) -> None:
        self.client = client

    def all(self) -> list[Any]:
        return [self.earlier_runs]

    @activity.defn(name="runs.earlier")
    async def earlier_runs(self, workflow_id: str, run_id: str) -> list[PurchaseStatus]:
        """The last status of every other run of `workflow_id`, newest first: runs a reset
        terminated or replaced (their status covers what they did after the reset point) and ended
        runs before a re-run under the same id. Runs are found through visibility, which lags the
        server by about a second: a run started within that second before this one may be missed."""
        try:
            found = [run async for run in self.client.list_workflows(f'WorkflowId = "{workflow_id}"') if run.run_id != run_id]
        except RPCError as err:
            if err.status != RPCStatusCode.UNIMPLEMENTED:
                raise
            # A server without visibility (the time-skipping test server): retrying will not help.
            raise ApplicationError(
                f"earlier runs not listable: {err.message}", type=EARLIER_RUNS_NOT_LISTABLE, non_retryable=True
            ) from None
        found.sort(key=lambda run: run.start_time, reverse=True)
        return [await self._status(run) for run in found]

    async def _status(self, run: WorkflowExecution) -> PurchaseStatus:
        """The run's `status` query (a worker replays the closed run); when no worker can answer it
        (e.g. a build that is gone), what its search attributes say."""
        try:
            return cast(
                PurchaseStatus,
                await self.client.get_workflow_handle(run.id, run_id=run.run_id).query("status", result_type=PurchaseStatus),
            )
        except (WorkflowQueryFailedError, RPCError) as err:
            activity.logger.warning(
                "earlier run not queryable; reading its search attributes",
                extra={"earlier_run_id": run.run_id, "error": str(err)},
            )
        attributes = run.typed_search_attributes
        order_id = attributes.get(PROVIDER_ORDER_ID)
        try:
            state = PurchaseState(attributes.get(STATE) or PurchaseState.HOLDING)
        except ValueError:  # a state only operators see: taken as needing attention
            state = PurchaseState.COMPENSATION_FAILED
        return PurchaseStatus(
            purchase_id=run.id.removeprefix("purchase-"),
            provider=attributes.get(PROVIDER) or "",
            state=state,
            step="unknown: read from search attributes",
            provider_ids={"order_id": order_id} if order_id else {},
        )
