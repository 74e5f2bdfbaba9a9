"""Order management for operators, run by the worker so every call to ACME is durable, retried and
visible in the Temporal UI: RefundWorkflow (one per order and refund id, idempotent),
OrdersWorkflow (reads) and OrderChangeWorkflow (update or delete an order).
Their calls go where ACME's purchase calls go (ACME's `policy`): to its own queue when it has a
rate limit, whose workers hold the ACME credentials."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from temporalio import workflow
from temporalio.common import VersioningBehavior

with workflow.unsafe.imports_passed_through():
    from workflows.flow import (
        CALL_TIMEOUT,
        STEP_RETRY,
        STEP_TIMEOUT,
        UNDO_RETRY,
        UNDO_TIMEOUT,
    )
    from workflows.models import (
        OrderChange,
        OrderChangeResult,
        OrderRecord,
        OrdersPage,
        OrdersQuery,
        PurchasePolicy,
        RefundRequest,
        RefundResult,
    )


def refund_workflow_id(order_id: str, refund_id: str | None = None) -> str:
    """`refund-{order_id}`: the order's refund; with a refund id, one of several refunds of it."""
    return f"refund-{order_id}" if refund_id is None else f"refund-{order_id}-{refund_id}"


async def acme_queue() -> str | None:
    """ACME's activity queue. Runs started before this change called on the workflow's own queue
    (patch "acme-queue"), so their histories replay."""
    if not workflow.patched("acme-queue"):
        return None
    policy = cast(
        PurchasePolicy,
        await workflow.execute_local_activity(
            "acme.policy", result_type=PurchasePolicy, start_to_close_timeout=timedelta(seconds=5)
        ),
    )
    return policy.activity_task_queue


# AUTO_UPGRADE, not pinned: a refund keeps retrying for up to UNDO_TIMEOUT (6 h) through a provider
# outage, which would keep its build from draining that long. It holds no seats or buyer to answer,
# and each step is one idempotent activity, so it may continue on the current build (changes patched).
@workflow.defn(name="RefundWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class RefundWorkflow:
    @workflow.run
    async def run(self, request: RefundRequest) -> RefundResult:
        queue = await acme_queue()
        # A partial refund's tickets are chosen once and recorded here, so a retry after a lost
        # answer checks those tickets instead of refunding others (runs started before: patch).
        if request.items and not request.tickets and workflow.patched("refund-tickets"):
            request = await workflow.execute_activity(
                "acme.plan_refund",
                request,
                result_type=RefundRequest,
                task_queue=queue,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            )
        # Keeps trying like a compensation: a refund that was asked for must happen. The activity
        # skips what is already refunded, so a retry never refunds twice.
        return cast(
            RefundResult,
            await workflow.execute_activity(
                "acme.refund",
                request,
                result_type=RefundResult,
                task_queue=queue,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=UNDO_TIMEOUT,
                retry_policy=UNDO_RETRY,
                summary=f"refund {request.order_id}",
            ),
        )


# AUTO_UPGRADE: one read; nothing ties it to the build that started it, so it never delays a drain.
@workflow.defn(name="OrdersWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class OrdersWorkflow:
    @workflow.run
    async def run(self, query: OrdersQuery) -> OrdersPage:
        return cast(
            OrdersPage,
            await workflow.execute_activity(
                "acme.search_orders",
                query,
                result_type=OrdersPage,
                task_queue=await acme_queue(),
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
            ),
        )


# AUTO_UPGRADE: one idempotent write (a PUT of the whole order, or a delete), safe on any build.
@workflow.defn(name="OrderChangeWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class OrderChangeWorkflow:
    @workflow.run
    async def run(self, change: OrderChange) -> OrderChangeResult:
        # Both are safe to retry: PUT sends the whole order, and a delete finds it gone.
        queue = await acme_queue()
        if change.delete:
            await workflow.execute_activity(
                "acme.delete_order",
                change.order_id,
                task_queue=queue,
                start_to_close_timeout=CALL_TIMEOUT,
                schedule_to_close_timeout=STEP_TIMEOUT,
                retry_policy=STEP_RETRY,
                summary=f"delete {change.order_id}",
            )
            return OrderChangeResult(order_id=change.order_id, deleted=True)
        order = await workflow.execute_activity(
            "acme.update_order",
            args=[change.order_id, change.changes],
            result_type=OrderRecord,
            task_queue=queue,
            start_to_close_timeout=CALL_TIMEOUT,
            schedule_to_close_timeout=STEP_TIMEOUT,
            retry_policy=STEP_RETRY,
            summary=f"update {change.order_id}",
        )
        return OrderChangeResult(order_id=change.order_id, order=order)
