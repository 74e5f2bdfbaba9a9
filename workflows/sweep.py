"""SweepWorkflow: one reconciliation sweep of one provider, run by a Temporal Schedule (`sweep-{provider}`).

Each page of what the provider holds for this account in the window is read and matched to the
purchases by one activity on the provider's own queue (its rate limit holds: one listing call per
page), which returns only what nobody accounts for. Holds and baskets of ended purchases are
released at once (safe: the seats were to be given back anyway) and recorded; everything else
opens or updates an attention item (ReconcileWorkflow, one per finding, signal-with-start) for a
person. Every `pages_per_run` pages the sweep continues as new with its cursor, so a large account
never fills one history; a sweep that failed half-way is rerun by the next schedule and finds the
same items again — the attention ids are deterministic, so nothing is opened twice.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, VersioningBehavior
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows.findings import Finding, FindingKind, SweepPage, SweepPageRequest, SweepRequest, SweepResult
    from workflows.models import PurchasePolicy

PAGE_TIMEOUT = timedelta(minutes=2)
PAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=10,
    non_retryable_error_types=["PROVIDER_NOT_CONFIGURED"],
)
RELEASE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5)


def sweep_workflow_id(provider: str) -> str:
    return f"sweep-{provider}"


# AUTO_UPGRADE: a large account's sweep pages on through continue-as-new; each run and each page may
# follow the current build (it reads, matches and releases only what ended purchases left, idempotently),
# so a build is never held by the sweep schedules, which start one run after another.
@workflow.defn(name="SweepWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class SweepWorkflow:
    def __init__(self) -> None:
        self._repaired: list[str] = []

    @workflow.run
    async def run(self, request: SweepRequest) -> SweepResult:
        until = request.until or workflow.now()
        since = until - timedelta(seconds=request.window_seconds)
        policy = await workflow.execute_local_activity(
            f"{request.provider}.policy", result_type=PurchasePolicy, start_to_close_timeout=timedelta(seconds=5)
        )
        queue = policy.activity_task_queue  # the provider's rate-limited queue, or this one
        totals = request.totals
        cursor = request.cursor
        for _ in range(request.pages_per_run):
            page = await workflow.execute_activity(
                f"{request.provider}.sweep_page",
                SweepPageRequest(provider=request.provider, since=since, until=until, cursor=cursor, page_size=request.page_size),
                result_type=SweepPage,
                task_queue=queue,
                start_to_close_timeout=PAGE_TIMEOUT,
                retry_policy=PAGE_RETRY,
                summary=f"sweep {request.provider} page {totals.pages + 1}",
            )
            stamp = {"observed_at": workflow.now(), "sweep_id": workflow.info().workflow_id}
            findings = [f.model_copy(update=stamp) for f in page.findings]
            for repair in page.repairs:
                failed = await self._release(repair.model_copy(update=stamp), queue)
                if failed is not None:
                    findings.append(failed)
            if findings:
                await workflow.execute_activity(
                    "sweep.open_attention",
                    findings,
                    result_type=int,
                    start_to_close_timeout=PAGE_TIMEOUT,
                    retry_policy=PAGE_RETRY,
                    summary=f"{len(findings)} finding(s)",
                )
            totals = totals.model_copy(
                update={
                    "pages": totals.pages + 1,
                    "seen": totals.seen + page.seen,
                    "findings": totals.findings + len(findings),
                    "repaired": totals.repaired + len(page.repairs) - sum(f.kind == FindingKind.ACTIVE_HOLD for f in findings),
                }
            )
            cursor = page.next_cursor
            if cursor is None:
                workflow.logger.info("sweep done", extra={"provider": request.provider, **totals.model_dump()})
                return SweepResult(provider=request.provider, since=since, until=until, totals=totals, repaired=self._repaired)
        # A fresh history for the next pages: the cursor and the totals are all it needs.
        workflow.continue_as_new(
            request.model_copy(
                update={"until": until, "cursor": cursor, "totals": totals.model_copy(update={"runs": totals.runs + 1})}
            )
        )

    async def _release(self, hold: Finding, queue: str | None) -> Finding | None:
        """Releases a hold or basket nobody needs; None when done, else the finding a person must see."""
        try:
            outcome = await workflow.execute_activity(
                f"{hold.provider}.sweep_release",
                hold,
                result_type=str,
                task_queue=queue,
                start_to_close_timeout=PAGE_TIMEOUT,
                retry_policy=RELEASE_RETRY,
                summary=f"release {hold.item_kind} {hold.item_id}",
            )
        except ActivityError as err:
            cause = getattr(err.cause, "message", None) or str(err.cause)
            return hold.model_copy(update={"proposed_action": "cancel", "detail": f"{hold.detail} Release failed: {cause}"})
        self._repaired.append(f"{hold.item_kind} {hold.item_id}: {outcome}")
        workflow.logger.warning(
            "sweep released a hold nobody needs",
            extra={"provider": hold.provider, "item_id": hold.item_id, "outcome": outcome, "purchase_id": hold.purchase_id},
        )
        workflow.metric_meter().create_counter(
            "boxoffice_sweep_repairs", "Holds and baskets of ended purchases the sweep released"
        ).add(1, {"provider": hold.provider, "item_kind": hold.item_kind})
        return None
