"""TEvo's order read (`GET /v9/orders/{id}`, Orders / Show: ticketevolution.atlassian.net, run as the
local activities tevo.order_state and tevo.show_order) carried out and never answered, as by a
worker killed mid-step: the first poll's local attempt times out (8 s of real time), the purchase
polls on and ends, and its history replays: the `status` query after the end, a worker's cache
eviction or restart all replay it. The recorded history is tests/histories/tevo_first_poll_timed_out.json
(tests/test_replay.py)."""

from __future__ import annotations

import time

from temporalio.worker import Replayer

from tests.fault_model import KILLED, PROVIDERS, Run, Schedule, check, run_purchase
from tests.test_atom_workflow import record
from workers.codec import data_converter
from workers.worker import SANDBOX, WORKFLOWS
from workflows.models import PurchaseResult, PurchaseState


async def replays(run: Run, result: PurchaseResult) -> PurchaseResult:
    assert run.handle is not None
    replayer = Replayer(workflows=WORKFLOWS, data_converter=data_converter(None), workflow_runner=SANDBOX)
    replayed = await replayer.replay_workflow(await run.handle.fetch_history(), raise_on_replay_failure=False)
    assert replayed.replay_failure is None, replayed.replay_failure
    await record(run.handle, "tevo_first_poll_timed_out")
    return result


async def test_tevo_show_hanging_in_a_killed_worker_replays() -> None:
    """Before the fix: `[TMPRL1100] Nondeterminism error: Activity machine does not handle this
    event: HistoryEvent(id: 32, TimerStarted)`, on the time-skipping and the dev server alike: the
    timed-out local poll came back as ActivityError live and as a bare TimeoutError on replay
    (workflows/flow.py `local_activity`)."""
    started = time.monotonic()
    outcome = await run_purchase(PROVIDERS["tevo"], Schedule(("show", KILLED)), then=replays)
    check(outcome)
    assert outcome.result.state == PurchaseState.FULFILLED
    assert time.monotonic() - started < 30  # one attempt's timeout (8 s), then polls at 1 s
