"""Order management for operators, run by the worker so every call to ACME is durable, retried and
visible in the Temporal UI: RefundWorkflow (one per order, idempotent) and OrdersWorkflow (reads).
Their calls go where ACME's purchase calls go (ACME's `policy`): to its own queue when it has a
rate limit, whose workers hold the ACME credentials."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        OrdersPage,
        OrdersQuery,
        PurchasePolicy,
        RefundRequest,
        RefundResult,
    )
    from workflows.purchase import (
        CALL_TIMEOUT,
        STEP_RETRY,
        STEP_TIMEOUT,
        UNDO_RETRY,
        UNDO_TIMEOUT,
    )


def refund_workflow_id(order_id: str) -> str:
    return f"refund-{order_id}"


async def acme_queue() -> str | None:
    """ACME's activity queue. Runs started before this change called on the workflow's own queue
    (patch "acme-queue"), so their histories replay."""
    if not workflow.patched("acme-queue"):
        return None
    policy = await workflow.execute_local_activity(
        "acme.policy", result_type=PurchasePolicy, start_to_close_timeout=timedelta(seconds=5)
    )
    return policy.activity_task_queue


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.run
    async def run(self, request: RefundRequest) -> RefundResult:
        # Keeps trying like a compensation: a refund that was asked for must happen. The activity
        # skips an order already refunded in full, so a retry never refunds twice.
        return await workflow.execute_activity(
            "acme.refund", request, result_type=RefundResult, task_queue=await acme_queue(),
            start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=UNDO_TIMEOUT, retry_policy=UNDO_RETRY, summary=f"refund {request.order_id}",
        )


@workflow.defn(name="OrdersWorkflow")
class OrdersWorkflow:
    @workflow.run
    async def run(self, query: OrdersQuery) -> OrdersPage:
        return await workflow.execute_activity(
            "acme.search_orders", query, result_type=OrdersPage, task_queue=await acme_queue(),
            start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY,
        )
