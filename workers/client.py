"""Starting and driving purchases from Python: what a backend service (or the CLI) calls."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from datetime import timedelta
from typing import Any, cast

from pydantic import TypeAdapter
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WithStartWorkflowOperation,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, CancelledError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.findings import AttentionDecision, AttentionView, SweepRequest
from workflows.models import (
    PROVIDER,
    PROVIDER_ORDER_ID,
    STATE,
    WORKFLOW_TYPE,
    CancelRequest,
    ConfirmRequest,
    OrderChange,
    OrderChangeResult,
    OrdersPage,
    OrdersQuery,
    PurchaseBase,
    PurchaseRequest,
    PurchaseResult,
    PurchaseStatus,
    RefundRequest,
    RefundResult,
    purchase_workflow_id,
    request_fingerprint,
)
from workflows.orders import refund_workflow_id
from workflows.reconcile import AMOUNT, ATTENTION_KIND, PURCHASE_ID
from workflows.sweep import sweep_workflow_id

REQUEST = TypeAdapter(PurchaseRequest)
# Memo key set when a purchase starts: the request's fingerprint.
REQUEST_SHA256 = "request_sha256"


async def purchase_outcome(handle: WorkflowHandle[Any, Any]) -> PurchaseResult:
    """The PurchaseResult however the purchase ended: only a fulfilled purchase completes its
    workflow; any other end fails it (so the Temporal UI's list shows it red) with the result as the
    failure's details (type = the reason, or COMPENSATION_FAILED). Other failures are raised."""
    try:
        result = await handle.result()
    except WorkflowFailureError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
            return PurchaseResult.model_validate(cause.details[0])
        raise
    return result if isinstance(result, PurchaseResult) else PurchaseResult.model_validate(result)


class PurchaseConflict(Exception):
    """The purchase id is taken by a purchase with a different request (like reusing an
    idempotency key with other parameters)."""


# Upserted by PurchaseWorkflow and the attention items (ReconcileWorkflow); a namespace must have
# them before the first purchase runs.
SEARCH_ATTRIBUTES = tuple(key.name for key in (PROVIDER, STATE, PROVIDER_ORDER_ID, ATTENTION_KIND, PURCHASE_ID, AMOUNT))


async def ensure_search_attributes(client: Client) -> None:
    """Registers boxoffice's Keyword search attributes (what `temporal operator search-attribute
    create` does); a no-op where they exist."""
    for name in SEARCH_ATTRIBUTES:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(
                    namespace=client.namespace,
                    search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD},
                )
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise


def parse_request(data: Any) -> PurchaseRequest:
    """Validates a request (dict or JSON text) before anything starts; raises pydantic.ValidationError."""
    return REQUEST.validate_json(data) if isinstance(data, str | bytes) else REQUEST.validate_python(data)


async def start_purchase(
    client: Client, request: PurchaseRequest | dict[str, Any] | str, task_queue: str, **options: Any
) -> WorkflowHandle[Any, PurchaseResult]:
    """Starts the purchase, or returns the one already started for this purchase id with the same
    request (see `start_or_find_purchase`)."""
    handle, _ = await start_or_find_purchase(client, request, task_queue, **options)
    return handle


async def start_or_find_purchase(
    client: Client, request: PurchaseRequest | dict[str, Any] | str, task_queue: str, **options: Any
) -> tuple[WorkflowHandle[Any, PurchaseResult], bool]:
    """Starts the purchase (True), or finds the one already started for this purchase id (False): a
    retried start never buys twice, while the purchase runs or after it ended. The start fails on any
    existing run (FAIL + REJECT_DUPLICATE), which is how the server tells which one happened; other
    languages get the same purchase with USE_EXISTING. The same id with a different request raises
    PurchaseConflict."""
    request = _validated(request)
    workflow_id = purchase_workflow_id(request.purchase_id)
    fingerprint = request_fingerprint(request)
    try:
        handle = await client.start_workflow(
            WORKFLOW_TYPE,
            request,
            id=workflow_id,
            task_queue=task_queue,
            result_type=PurchaseResult,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            memo={REQUEST_SHA256: fingerprint},
            # The line shown for the purchase in the UI's list (no buyer data).
            static_summary=f"{request.provider} purchase {request.purchase_id}",
            **options,
        )
        return handle, True
    except WorkflowAlreadyStartedError as existing:
        handle = client.get_workflow_handle(workflow_id, run_id=existing.run_id, result_type=PurchaseResult)
    if await _started_with(client, handle) != fingerprint:
        raise PurchaseConflict(
            f"purchase id {request.purchase_id!r} is already used by {workflow_id} with a different request; "
            "use a new purchase id for a new purchase"
        )
    return handle, False


async def _started_with(client: Client, handle: WorkflowHandle[Any, Any]) -> str | None:
    """The fingerprint of the request a purchase was started with: from its memo, or, for a purchase
    started without one (the `temporal` CLI, another SDK), from the input of its first history event.
    None for an input that is no valid request (that purchase failed INVALID_REQUEST at once)."""
    memo = await (await handle.describe()).memo()
    if REQUEST_SHA256 in memo:
        return str(memo[REQUEST_SHA256])
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        try:
            [started] = await client.data_converter.decode(payloads, [dict])
            return request_fingerprint(parse_request(started))
        except (ValueError, TypeError):  # pydantic's ValidationError is a ValueError
            return None
    return None


async def hold_purchase(
    client: Client, request: PurchaseRequest | dict[str, Any] | str, task_queue: str, **options: Any
) -> tuple[WorkflowHandle[Any, PurchaseResult], PurchaseStatus]:
    """Starts the purchase and returns in the same call once its seats are held (the `held`
    update, sent with the start): AWAITING_CONFIRMATION with receipt and hold expiry (manual; ATM
    with `provider_ids["checkout_url"]`), COMMITTING (auto), or the failure. The same start
    semantics as `start_purchase`: a repeated call returns the same purchase's status (its current
    one, once it has ended)."""
    request = _validated(request)
    start: WithStartWorkflowOperation[Any, PurchaseResult] = WithStartWorkflowOperation(
        WORKFLOW_TYPE, request, result_type=PurchaseResult, **_start_options(request, task_queue), **options
    )
    try:
        held = await client.execute_update_with_start_workflow("held", start_workflow_operation=start, result_type=PurchaseStatus)
    except WorkflowAlreadyStartedError:
        # Ended, and REJECT_DUPLICATE keeps it so: its status says how.
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # the same error, retrieved so it is not reported as lost
        held = await status(client, request.purchase_id)
    # USE_EXISTING (which update-with-start needs) answers an existing purchase silently: the
    # workflow reports the fingerprint of the request it runs.
    if held.request_sha256 not in (None, request_fingerprint(request)):
        raise PurchaseConflict(
            f"purchase id {request.purchase_id!r} is already used by {purchase_workflow_id(request.purchase_id)} "
            "with a different request; use a new purchase id for a new purchase"
        )
    return purchase_handle(client, request.purchase_id), held


def _validated(request: PurchaseRequest | dict[str, Any] | str) -> PurchaseRequest:
    return request if isinstance(request, PurchaseBase) else parse_request(request)


def _start_options(request: PurchaseRequest, task_queue: str) -> dict[str, Any]:
    return {
        "id": purchase_workflow_id(request.purchase_id),
        "task_queue": task_queue,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "id_reuse_policy": WorkflowIDReusePolicy.REJECT_DUPLICATE,
        # The line shown for the purchase in the UI's list (no buyer data).
        "static_summary": f"{request.provider} purchase {request.purchase_id}",
        "memo": {REQUEST_SHA256: request_fingerprint(request)},
    }


def purchase_handle(client: Client, purchase_id: str) -> WorkflowHandle[Any, PurchaseResult]:
    return client.get_workflow_handle(purchase_workflow_id(purchase_id), result_type=PurchaseResult)


async def held(client: Client, purchase_id: str) -> PurchaseStatus:
    """The `held` update for a purchase already started: its status once its seats are held, or
    once it has ended, also when it ended before the update reached it (refused in its first task)."""
    try:
        return cast(PurchaseStatus, await purchase_handle(client, purchase_id).execute_update("held", result_type=PurchaseStatus))
    except RPCError:
        ended = await status(client, purchase_id)
        if not ended.state.final:
            raise
        return ended


async def status(client: Client, purchase_id: str) -> PurchaseStatus:
    return cast(PurchaseStatus, await purchase_handle(client, purchase_id).query("status", result_type=PurchaseStatus))


async def purchase_result(client: Client, purchase_id: str) -> PurchaseResult:
    """The purchase's outcome once it has ended (waits while it runs). A purchase cancelled through
    Temporal (UI, `temporal workflow cancel`) has no workflow result: its final status stands in."""
    handle = purchase_handle(client, purchase_id)
    try:
        return await purchase_outcome(handle)
    except WorkflowFailureError as err:
        if not isinstance(err.cause, CancelledError):
            raise
    final = await handle.query("status", result_type=PurchaseStatus)
    return PurchaseResult(
        purchase_id=final.purchase_id,
        provider=final.provider,
        state=final.state,
        provider_order_id=final.provider_ids.get("order_id"),
        event=final.event,
        receipt=final.receipt,
        failure=final.failure,
    )


async def confirm(client: Client, purchase_id: str, confirmation: ConfirmRequest) -> PurchaseStatus:
    return cast(
        PurchaseStatus,
        await purchase_handle(client, purchase_id).execute_update("confirm", confirmation, result_type=PurchaseStatus),
    )


async def cancel(client: Client, purchase_id: str, reason: str) -> PurchaseStatus:
    return cast(
        PurchaseStatus,
        await purchase_handle(client, purchase_id).execute_update(
            "cancel", CancelRequest(reason=reason), result_type=PurchaseStatus
        ),
    )


async def refund(client: Client, request: RefundRequest, task_queue: str) -> RefundResult:
    """One refund workflow per order and refund id: asking again returns the same refund, never a
    second one; another `refund_id` is another refund of the order."""
    workflow_id = refund_workflow_id(request.order_id, request.refund_id)
    try:
        handle = await client.start_workflow(
            "RefundWorkflow",
            request,
            id=workflow_id,
            task_queue=task_queue,
            result_type=RefundResult,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        handle = client.get_workflow_handle(workflow_id, result_type=RefundResult)
    return cast(RefundResult, await handle.result())


async def orders(client: Client, query: OrdersQuery, task_queue: str) -> OrdersPage:
    return cast(
        OrdersPage,
        await client.execute_workflow(
            "OrdersWorkflow", query, id=f"orders-{uuid.uuid4()}", task_queue=task_queue, result_type=OrdersPage
        ),
    )


async def change_order(client: Client, change: OrderChange, task_queue: str) -> OrderChangeResult:
    """Updates or deletes an ACME order (OrderChangeWorkflow)."""
    return cast(
        OrderChangeResult,
        await client.execute_workflow(
            "OrderChangeWorkflow",
            change,
            id=f"order-change-{uuid.uuid4()}",
            task_queue=task_queue,
            result_type=OrderChangeResult,
        ),
    )


# -- reconciliation: sweep schedules and attention items ------------------------------------------


def sweep_schedule(provider: str, task_queue: str, interval: timedelta, request: SweepRequest) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "SweepWorkflow",
            request,
            id=sweep_workflow_id(provider),
            task_queue=task_queue,
            static_summary=f"reconciliation sweep of {provider}",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # A sweep still running when the next is due: the next is skipped, not stacked.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedules(
    client: Client,
    task_queue: str,
    providers: list[str],
    interval: timedelta,
    window: timedelta,
    pages_per_run: int = 20,
    page_size: int = 50,
) -> list[str]:
    """Creates each provider's sweep schedule (`sweep-{provider}`), or updates it to these settings;
    a pause set by an operator (`temporal schedule toggle --pause`) is kept. Returns the schedule ids."""
    ids = []
    for provider in providers:
        request = SweepRequest(
            provider=provider, window_seconds=window.total_seconds(), pages_per_run=pages_per_run, page_size=page_size
        )
        schedule = sweep_schedule(provider, task_queue, interval, request)
        schedule_id = sweep_workflow_id(provider)
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def keep_state(update: ScheduleUpdateInput, new: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=dataclasses.replace(new, state=update.description.schedule.state))

            await client.get_schedule_handle(schedule_id).update(keep_state)
        ids.append(schedule_id)
    return ids


ATTENTION_QUERY = 'WorkflowType = "ReconcileWorkflow"'


async def attention_items(
    client: Client, include_closed: bool = False, provider: str | None = None, kind: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Attention items from visibility (one line each): open ones unless `include_closed`."""
    query = ATTENTION_QUERY
    if not include_closed:
        query += ' AND ExecutionStatus = "Running"'
    if provider:
        query += f' AND BoxofficeProvider = "{provider}"'
    if kind:
        query += f' AND BoxofficeAttentionKind = "{kind}"'
    items = []
    async for execution in client.list_workflows(query, limit=limit):
        attributes = execution.search_attributes
        items.append(
            {
                "id": execution.id,
                "status": execution.status.name if execution.status else None,
                "state": (attributes.get(STATE.name) or [None])[0],
                "provider": (attributes.get(PROVIDER.name) or [None])[0],
                "kind": (attributes.get(ATTENTION_KIND.name) or [None])[0],
                "order_id": (attributes.get(PROVIDER_ORDER_ID.name) or [None])[0],
                "purchase_id": (attributes.get(PURCHASE_ID.name) or [None])[0],
                "amount": (attributes.get(AMOUNT.name) or [None])[0],
                "opened": execution.start_time.isoformat() if execution.start_time else None,
            }
        )
    return items


async def attention_item(client: Client, item_id: str) -> AttentionView:
    return cast(AttentionView, await client.get_workflow_handle(item_id).query("item", result_type=AttentionView))


async def approve_attention(client: Client, item_id: str, decision: AttentionDecision) -> AttentionView:
    return cast(
        AttentionView, await client.get_workflow_handle(item_id).execute_update("approve", decision, result_type=AttentionView)
    )


async def dismiss_attention(client: Client, item_id: str, decision: AttentionDecision) -> AttentionView:
    return cast(
        AttentionView, await client.get_workflow_handle(item_id).execute_update("dismiss", decision, result_type=AttentionView)
    )
