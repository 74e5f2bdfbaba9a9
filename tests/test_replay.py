"""Replays the recorded histories of this build against its workflow code: a change that makes this
build's own runs non-deterministic fails here. PurchaseWorkflow is pinned to the build that started it,
so a change of its commands re-records the histories it changes (`BOXOFFICE_RECORD_HISTORIES=1 pytest
tests/test_<provider>_workflow.py ...`) instead of patching; the auto-upgrade workflows patch (README,
"Changing a workflow without breaking running purchases")."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workers.worker import SANDBOX, WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    names = {path.stem for path in HISTORIES}
    assert {
        "atom_auto_fulfilled",
        "atom_manual_fulfilled",
        "atom_manual_expired",
        "atom_fulfilment_timeout",
        "atom_cancelled_after_create",
        "onebox_numbered_fulfilled",
        "onebox_manual_expired",
        "tevo_accepted",
        "atm_paid",
        "atm_expired",
        "acme_paid",
        "atm_paid_then_cancelled",
        "atom_create_read_back",
        "atom_undo_retried",
        "atom_local_writes",
        "atom_first_task_rerun",
        "atm_needs_attention_then_issued",
        "atm_forged_then_paid",
        "acme_declined_unknown_reservation",
        "acme_reserve_failed_after_lost_answer",
        "atom_guest_account_retried",
        "tevo_first_poll_timed_out",
        "atom_rate_limited_cancelled",
    } <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    recorded = json.loads(path.read_text())
    # The id it ran under: a purchase runs only as purchase-{purchase_id} (checked by the workflow).
    started = recorded["events"][0]["workflowExecutionStartedEventAttributes"]
    request = json.loads(base64.b64decode(started["input"]["payloads"][0]["data"]))
    history = WorkflowHistory.from_json(f"purchase-{request['purchase_id']}", recorded)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=SANDBOX)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
