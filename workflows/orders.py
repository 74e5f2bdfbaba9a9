"""Order management for operators, run by the worker so every call to ACME is durable, retried and
visible in the Temporal UI: RefundWorkflow (one per order, idempotent) and OrdersWorkflow (reads).
Their few calls run on the workflow's queue, outside ACME's rate limit."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import (
        OrdersPage,
        OrdersQuery,
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


@workflow.defn(name="RefundWorkflow")
class RefundWorkflow:
    @workflow.run
    async def run(self, request: RefundRequest) -> RefundResult:
        # Keeps trying like a compensation: a refund that was asked for must happen. The activity
        # skips an order already refunded in full, so a retry never refunds twice.
        return await workflow.execute_activity(
            "acme.refund", request, result_type=RefundResult, start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=UNDO_TIMEOUT, retry_policy=UNDO_RETRY, summary=f"refund {request.order_id}",
        )


@workflow.defn(name="OrdersWorkflow")
class OrdersWorkflow:
    @workflow.run
    async def run(self, query: OrdersQuery) -> OrdersPage:
        return await workflow.execute_activity(
            "acme.search_orders", query, result_type=OrdersPage, start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=STEP_TIMEOUT, retry_policy=STEP_RETRY,
        )
