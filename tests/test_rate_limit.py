"""A rate-limited provider (Atom's default: 25 requests/s, "with a 50 requests/sec burst", 429 above:
https://partner-docs-95q.pages.dev/getting-started/rate-limits) at the speed of an unlimited one:
reads and rerun-safe writes run as local activities on the worker's share of the limit
(activities/ratelimit.py), and the limit still holds across all workers."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.taskqueue.v1 import PollerInfo, TaskQueueTypeInfo, TaskQueueVersionInfo
from temporalio.api.workflowservice.v1 import DescribeTaskQueueResponse
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities import ratelimit
from activities.atom import AtomActivities
from activities.http import ProviderHttp
from activities.ratelimit import NoShare, SharedLimit
from simulators.atom import AtomSimulator
from simulators.ratelimit import RateLimited
from tests.conftest import atom_request, atom_settings, tevo_worker
from tests.fault_model import PROVIDERS, Run, Schedule, run_purchase
from workers.client import purchase_outcome, start_purchase
from workers.worker import provider_task_queue, serving
from workflows.models import PurchaseResult, PurchaseState

QUEUE = "limited"


def seats(n: int) -> list[dict[str, Any]]:
    return [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"{'ABCDEFGHIJ'[n // 20]}{n % 20 + 1}"]}]


def big_house() -> AtomSimulator:
    sim = AtomSimulator(api_key="test-atom-key", fulfil_after_polls=0)
    sim.showtimes["ST-20260214-1930-AMC4"].seats = {f"{r}{n}": "available" for r in "ABCDEFGHIJ" for n in range(1, 21)}
    return sim


@contextlib.asynccontextmanager
async def worker_process(env: WorkflowEnvironment, name: str, app: Any) -> AsyncIterator[AtomActivities]:
    """One worker process as `boxoffice worker` runs it (all roles, Atom at its default limit): a
    client of its own (a process's identity, and the SDK takes one worker per queue per client)."""
    client = await Client.connect(
        env.client.service_client.config.target_host, data_converter=env.client.data_converter, identity=name
    )
    atom = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=app))
    try:
        async with serving(client, QUEUE, [atom], sandboxed=False):
            yield atom
    finally:
        await atom.aclose()


async def history(handle: WorkflowHandle[Any, Any]) -> tuple[list[str], list[str]]:
    """The activities the purchase ran as regular activities (type and queue), and its local ones."""
    regular, local = [], []
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            attributes = event.activity_task_scheduled_event_attributes
            regular.append(f"{attributes.activity_type.name}@{attributes.task_queue.name}")
        elif event.marker_recorded_event_attributes.marker_name == "core_local_activity":
            data = event.marker_recorded_event_attributes.details["data"].payloads[0].data
            local.append(json.loads(data)["activity_type"])
    return regular, local


async def test_three_workers_hold_atoms_limit_under_a_burst(dev_env: WorkflowEnvironment) -> None:
    """Three worker processes (the third joins mid-burst) each run Atom's reads and rerun-safe writes
    locally on their share; a burst of purchases over the limit queues and completes, and Atom never
    sees more than its documented 50 requests in a second, nor a 429-worthy rate."""
    sim = big_house()
    atom = RateLimited(sim.app, per_second=25, burst=50)
    count = 40  # 7 requests each: 280 requests, 11 s at 25/s
    async with contextlib.AsyncExitStack() as workers:
        shares = [await workers.enter_async_context(worker_process(dev_env, f"worker-{n}", atom)) for n in range(2)]
        handles = [await start_purchase(dev_env.client, atom_request(f"burst-{n}", items=seats(n)), QUEUE) for n in range(count)]
        await asyncio.sleep(2)
        shares.append(await workers.enter_async_context(worker_process(dev_env, "worker-2", atom)))
        outcomes = await asyncio.gather(*(purchase_outcome(handle) for handle in handles))
        counted = [share.http.limit.workers for share in shares if isinstance(share.http.limit, SharedLimit)]
    assert [outcome.state for outcome in outcomes] == [PurchaseState.FULFILLED] * count
    assert counted == [3, 3, 3]  # each process saw the others, the latecomer included
    assert len(sim.orders) == count and atom.refused == 0
    assert atom.busiest_second() <= 50
    span = max(atom.requests) - min(atom.requests)
    assert len(atom.requests) == 7 * count and len(atom.requests) / span <= 25 * 1.1
    regular, local = await history(handles[0])
    assert "atom.lease" in local and "atom.order_summary" in local


async def test_rate_limited_writes_that_must_not_rerun_stay_regular_activities(dev_env: WorkflowEnvironment) -> None:
    """On the local path, the guest account, the order and its cancel (writes a lost workflow task
    must not repeat) still run as regular activities on Atom's rate-limited queue; refresh, lease,
    preview and the first poll run in the workflow task."""
    sim = big_house()
    sim.fulfilment = "fail"  # the order fails at Atom: the purchase cancels it
    async with worker_process(dev_env, "worker-0", sim.app):
        handle = await start_purchase(dev_env.client, atom_request("writes-1", items=seats(0)), QUEUE)
        outcome = await purchase_outcome(handle)
    assert outcome.state == PurchaseState.FAILED
    assert [c.action for c in outcome.compensations] == ["cancel order"] and outcome.compensations[0].ok
    if os.environ.get("BOXOFFICE_RECORD_HISTORIES"):  # the replay fixture of this path (tests/test_replay.py)
        (Path(__file__).parent / "histories" / "atom_rate_limited_cancelled.json").write_text(
            (await handle.fetch_history()).to_json()
        )
    regular, local = await history(handle)
    queue = provider_task_queue(QUEUE, "atom")
    assert regular == [f"atom.create_guest_account@{queue}", f"atom.create_order@{queue}", f"atom.cancel_order@{queue}"]
    assert local == ["atom.policy", "atom.refresh_checkout", "atom.lease", "atom.preview_order", "atom.order_status"]


async def test_time_skipping_server_keeps_the_server_limit_only(env: WorkflowEnvironment) -> None:
    """A server that lists no pollers (the time-skipping test server) gives no share: every Atom call is a
    regular activity on its queue, limited by the server, as before the shares."""
    sim = big_house()
    atom = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=sim.app))
    async with serving(env.client, QUEUE, [atom]):
        assert isinstance(atom.http.limit, SharedLimit) and not atom.http.limit.available
        handle = await start_purchase(env.client, atom_request("ts-1", items=seats(0)), QUEUE)
        assert (await purchase_outcome(handle)).state == PurchaseState.FULFILLED
    await atom.aclose()
    _, local = await history(handle)
    assert local == ["atom.policy"]


class FakeService:
    """DescribeTaskQueue answering what it is given: default-mode pollers and enhanced-mode pollers."""

    def __init__(self) -> None:
        self.default: list[str] = []
        self.enhanced: list[str] = []
        self.error: RPCError | None = None

    async def describe_task_queue(self, request: Any) -> DescribeTaskQueueResponse:
        if self.error is not None:
            raise self.error
        if request.api_mode:
            pollers = [PollerInfo(identity=who) for who in self.enhanced]
            types = {2: TaskQueueTypeInfo(pollers=pollers)}
            return DescribeTaskQueueResponse(versions_info={"": TaskQueueVersionInfo(types_info=types)})
        return DescribeTaskQueueResponse(pollers=[PollerInfo(identity=who) for who in self.default])


class FakeClient:
    namespace = "default"

    def __init__(self) -> None:
        self.workflow_service = FakeService()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The shares' clock, moved on by the test."""
    now = [time.monotonic()]
    monkeypatch.setattr(ratelimit, "clock", lambda: now[0])
    return now


async def test_a_share_counts_every_poller_either_mode_lists_and_remembers_them(clock: list[float]) -> None:
    client = FakeClient()
    service = client.workflow_service
    limit = SharedLimit(client, "q-atom", "me", per_second=25, burst=50)
    service.default, service.enhanced = ["a"], ["b"]
    await limit.refresh()
    assert limit.workers == 3  # a, b and this process, not listed yet
    # 50/s burst less a second at 25/s less half a second's margin, split three ways.
    assert limit.bucket.capacity == pytest.approx(12.5 / 3)
    assert limit.bucket.rate == 0  # takes nothing before the others can have counted it
    service.default, service.enhanced = [], ["me"]
    clock[0] += 0.5
    await limit.refresh()
    assert limit.workers == 3 and limit.bucket.rate == 0  # a and b missing from one answer: still counted
    clock[0] += ratelimit.SETTLE_SECONDS
    await limit.refresh()
    assert limit.bucket.rate == pytest.approx(25 / 3)
    clock[0] += ratelimit.POLLER_MEMORY_SECONDS
    await limit.refresh()
    assert limit.workers == 1 and limit.bucket.rate == 25  # gone for longer than the server lists a poller
    assert limit.local_calls


async def test_a_share_stops_calls_while_temporal_does_not_answer(clock: list[float]) -> None:
    client = FakeClient()
    client.workflow_service.default = ["me"]
    limit = SharedLimit(client, "q-atom", "me", per_second=1000, burst=None)
    await limit.refresh()
    clock[0] += ratelimit.SETTLE_SECONDS
    await limit.refresh()
    await asyncio.wait_for(limit.acquire(), 1)
    client.workflow_service.error = RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
    clock[0] += ratelimit.STALE_SECONDS
    await limit.refresh()
    assert not limit.local_calls  # new purchases go to the queue
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(limit.acquire(), 0.3)  # who joined meanwhile is unknown


async def test_no_share_refuses_a_call_instead_of_sending_it_unlimited() -> None:
    """A local call landing in a process without the provider's role (its workflow task moved there)."""
    with pytest.raises(ApplicationError) as refused:
        await NoShare().acquire()
    assert refused.value.type == ratelimit.NO_SHARE and not refused.value.non_retryable


class NeverYourTurn:
    """A share whose token never comes (a long queue behind the limit)."""

    local_calls = True

    async def acquire(self) -> None:
        await asyncio.Event().wait()


async def test_a_request_queued_past_its_attempts_time_is_not_sent() -> None:
    """Waiting for a token must not eat the time the request needs: sent late, an attempt's timeout
    would cut it off mid-flight (an unknown outcome). It fails unsent and retryable instead."""
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    http = ProviderHttp("atom", "http://atom.test", timeout=0.2, transport=httpx.MockTransport(answer))
    http.limit = NeverYourTurn()
    environment = ActivityEnvironment()
    environment.info = dataclasses.replace(
        environment.info, started_time=datetime.now(UTC), start_to_close_timeout=timedelta(seconds=0.5)
    )
    with pytest.raises(ApplicationError) as queued:
        await asyncio.wait_for(environment.run(http.request, "POST", "/ordering/v1/customer/orders"), 2)
    await http.aclose()
    assert queued.value.type == "PROVIDER_RATE_LIMITED" and not queued.value.non_retryable
    assert sent == []


def limited(worker: Any) -> Any:
    """A provider's test worker with its limit set (high: the path, not the limit, is under test)."""
    return lambda client, sim: worker(client, sim, timeout_seconds=1, activities_per_second=1000)


# Only Atom and TEvo have such calls in a purchase: Onebox's, ATM's and ACME's are writes without a key
# or reads of Temporal (earlier runs), the same on both paths (the policy still asks: activities/*.py).
async def test_tevo_rate_limited_runs_its_reads_on_the_workers_share(dev_env: WorkflowEnvironment) -> None:
    """Not Atom only: each provider's policy asks for local calls once the process holds a share.
    Its reads and rerun-safe writes run in the workflow task; its commit, and every regular activity,
    stays on its own rate-limited queue."""
    name = "tevo"
    provider = dataclasses.replace(PROVIDERS[name], worker=limited(tevo_worker))
    seen: dict[str, list[str]] = {}

    async def read_history(run: Run, result: PurchaseResult) -> PurchaseResult:
        assert run.handle is not None
        seen["regular"], seen["local"] = await history(run.handle)
        seen["queue"] = [provider_task_queue(run.task_queue, name)]
        return result

    outcome = await run_purchase(provider, Schedule(), env=dev_env, purchase_id=f"limited-{name}", then=read_history)
    assert outcome.result.state == PurchaseState.FULFILLED
    provider_calls = [call for call in seen["local"] if call.startswith(f"{name}.") and call != f"{name}.policy"]
    assert provider_calls, seen["local"]
    assert f"{provider.commit_activity}@{seen['queue'][0]}" in seen["regular"]
    assert {call.partition("@")[2] for call in seen["regular"]} == set(seen["queue"])
