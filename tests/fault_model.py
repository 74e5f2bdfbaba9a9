"""One fault model for every provider (issue 26): the faults a provider call can meet, a table of
what differs per provider (simulator, worker, request, the calls a purchase makes), one driver that
runs a purchase under a schedule of faults and races, and one check of the invariants over the
simulator's ledger of committed effects (`committed()`) and the purchase's result.

Adding a provider is one `PROVIDERS` entry."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.sweep import SweepSettings, TevoSweep
from activities.tevo import TevoActivities, TevoSettings
from simulators.acme import AcmeSimulator
from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from simulators.faults import Effect, Fault
from simulators.onebox import OneboxSimulator
from simulators.tevo import TevoSimulator
from tests.conftest import (
    acme_request,
    acme_worker,
    atm_request,
    atm_worker,
    atom_request,
    atom_worker,
    onebox_request,
    onebox_worker,
    tevo_request,
    tevo_worker,
    time_skipping,
)
from tests.test_atm import pay, wire
from workers.client import purchase_outcome, start_purchase
from workers.webhooks import temporal_delivery
from workflows.findings import Finding, SweepPageRequest
from workflows.models import CancelRequest, PurchaseResult, PurchaseState, PurchaseStatus

PURCHASE = "fault-1"  # one purchase per example, each on its own server
# A purchase that has not ended this long (real time) after its schedule ran never will; the big run's
# slow faults wait out real time (an outage at a local read: its step's 2 minutes).
END_TIMEOUT = 400.0 if os.environ.get("BOXOFFICE_FAULT_EXAMPLES") else 60.0
# How often `watch` asks a purchase's status. A query that meets a workflow task in flight sometimes
# leaves the time-skipping server's clock unlocked for good (the task then times out in skipped time
# and the next jump goes to the 10-year execution timeout): asked every 50 ms, 1 example in ~20 of
# ATM's release outage failed so; every 250 ms, 0 in 100.
STATUS_EVERY = 0.25
# Requests an outage refuses: more than a step's retries take in its 2 minutes (1, 2, 4, 8, then 15 s
# apart: about 12), so the step fails and the provider is back for what follows (read-back, undo).
OUTAGE_REQUESTS = 20

# The faults one provider call can meet, each as simulators/faults.py injects it.
FAULTS: dict[str, Callable[[str], Fault]] = {
    "answer lost after commit": lambda endpoint: Fault(endpoint=endpoint, lost=True, drop=True),
    "lands late, after its retry": lambda endpoint: Fault(endpoint=endpoint, late=True, drop=True),
    "5xx before commit": lambda endpoint: Fault(endpoint=endpoint, status=503),
    "connection dropped": lambda endpoint: Fault(endpoint=endpoint, drop=True),
    # Carried out, never answered: to Temporal the attempt is one whose worker was killed mid-step
    # (it times out and is retried). A real SIGKILL of a worker process: tests/test_crash.py.
    "worker killed mid-step": lambda endpoint: Fault(endpoint=endpoint, hang=True),
}
OUTAGE = "outage longer than the step"  # from this call on, every call to the provider answers 503
KINDS = [*FAULTS, OUTAGE]
KILLED = "worker killed mid-step"
# Calls run as local activities (reads, rerun-safe writes): their retries back off in the worker, in real time.
LOCAL_READS = {"tevo": {"group", "show"}, "atom": {"refresh", "lease", "preview", "status", "summary"}, "acme": {"get"}}


def slow(provider: str, endpoint: str, kind: str) -> bool:
    """Faults that cost real time, left to the big run: a killed worker's attempt times out in real
    time (the test server skips time only while no activity runs), and so does an outage at a
    local read."""
    return kind == KILLED or (kind == OUTAGE and endpoint in LOCAL_READS.get(provider, set()))


@dataclass(frozen=True)
class Schedule:
    """One fault on one call; a cancel racing one call (sent as it arrives or once it is carried
    out); what the buyer does where the buyer acts at the provider (ATM's checkout)."""

    fault: tuple[str, str] | None = None  # (endpoint, kind)
    cancel: tuple[str, bool] | None = None  # (endpoint, after it was carried out)
    buyer: str = "pays"


@dataclass
class Run:
    env: WorkflowEnvironment
    sim: Any
    task_queue: str
    schedule: Schedule
    purchase_id: str
    handle: WorkflowHandle[Any, PurchaseResult] | None = None
    cancels: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Provider:
    name: str
    simulator: Callable[[], Any]
    worker: Callable[[Client, Any], AbstractAsyncContextManager[str]]
    request: Callable[[str], dict[str, Any]]
    # The calls a purchase makes (its steps, read-backs and undos), as the simulator names them.
    endpoints: tuple[str, ...]
    # Calls a cancel can race (a cancel can only race what runs before the point of no return).
    cancellable: tuple[str, ...]
    # The activity that commits: a reset goes to before and after it.
    commit_activity: str
    # What the buyer may do at the provider, and the driver doing it once the purchase started.
    buyers: tuple[str, ...] = ("pays",)
    buyer: Callable[[Run], Awaitable[None]] | None = None
    # The reconciliation sweep's scan of the provider (activities/sweep.py), run once after the
    # purchase ended and late requests landed: what it finds it opens as attention items.
    sweep: Callable[[Any, Client], Awaitable[list[Finding]]] | None = None


async def tevo_sweep(sim: TevoSimulator, client: Client) -> list[Finding]:
    """TEvo's sweep over every page of Orders / Index, as the schedule runs it (settle time 0: the
    late order is seconds old)."""
    activities = TevoActivities(
        TevoSettings(base_url="https://api.tevo.test", api_token=sim.token, api_secret=sim.secret, reviewer_id=sim.reviewer_id),
        transport=httpx.ASGITransport(app=sim.app),
    )
    sweep = TevoSweep(activities, client, SweepSettings(settle_seconds=0))
    findings: list[Finding] = []
    cursor: str | None = None
    try:
        while True:
            page = await sweep.sweep_page(
                SweepPageRequest(
                    provider="tevo", since=datetime(2000, 1, 1, tzinfo=UTC), until=datetime(2100, 1, 1, tzinfo=UTC), cursor=cursor
                )
            )
            findings += page.findings + page.repairs
            cursor = page.next_cursor
            if cursor is None:
                return findings
    finally:
        await activities.aclose()


async def atm_buyer(run: Run) -> None:
    """The buyer pays on ATM's checkout, fails to, never does, or pays just as the hold is
    released (before or after the release is carried out), the release set going by a cancel."""
    sim, handle, how = run.sim, run.handle, run.schedule.buyer
    assert handle is not None
    wire(sim, temporal_delivery(run.env.client, run.task_queue))
    status = await held_or_ended(handle)
    if status.state != PurchaseState.AWAITING_CONFIRMATION:
        return  # the hold step failed: nothing to pay
    hold = status.provider_ids["order_id"]

    async def checkout(outcome: str = "paid") -> None:
        with contextlib.suppress(httpx.HTTPStatusError):  # the hold is no longer active
            await pay(sim, hold, outcome)

    if how in ("pays", "payment fails"):
        await checkout("paid" if how == "pays" else "failed")
    elif how.startswith("pays racing release"):
        sim.faults.on("release", checkout, after=how.endswith("after"))
        await cancel(handle)
    elif how == "never":
        await run.env.sleep(timedelta(seconds=sim.hold_seconds + 200))  # past expiresAt and its grace


async def watch(handle: WorkflowHandle[Any, PurchaseResult], until: Callable[[PurchaseStatus], bool]) -> PurchaseStatus:
    """The purchase's status once `until` holds or the purchase has ended. Awaits its result
    meanwhile: only then does the time-skipping server skip time."""
    ending = asyncio.ensure_future(purchase_outcome(handle))
    try:
        while True:
            with contextlib.suppress(RPCError):  # not started yet
                status = await handle.query("status", result_type=PurchaseStatus)
                if until(status) or ending.done():
                    return status
            await asyncio.wait([ending], timeout=STATUS_EVERY)
    finally:
        ending.cancel()


async def held_or_ended(handle: WorkflowHandle[Any, PurchaseResult]) -> PurchaseStatus:
    """The purchase's status once it awaits the buyer, or is past it, or has ended."""
    return await watch(handle, lambda status: status.state != PurchaseState.HOLDING)


# Timeouts: 1 s per HTTP call makes an attempt's start-to-close 8 s (activities/http.py
# attempt_timeout): what a killed worker's attempt waits in real time.
PROVIDERS: dict[str, Provider] = {
    "onebox": Provider(
        "onebox",
        OneboxSimulator,
        lambda client, sim: onebox_worker(client, sim, timeout_seconds=1),
        onebox_request,
        endpoints=("token", "create", "basket", "seats", "buyer-data", "pre-confirm", "confirm", "read", "release"),
        cancellable=("create", "basket", "seats", "buyer-data", "pre-confirm", "confirm"),
        commit_activity="onebox.confirm",
    ),
    "tevo": Provider(
        "tevo",
        TevoSimulator,
        lambda client, sim: tevo_worker(client, sim, timeout_seconds=1, poll_interval_seconds=1),
        tevo_request,
        endpoints=("group", "clients", "create-client", "create", "orders", "show", "reject", "cancel"),
        cancellable=("group", "clients", "create-client", "create", "orders", "show"),
        commit_activity="tevo.create_order",
        sweep=tevo_sweep,
    ),
    "atm": Provider(
        "atm",
        AtmSimulator,
        lambda client, sim: atm_worker(client, sim, timeout_seconds=1),
        atm_request,
        endpoints=("create", "release"),
        cancellable=("create",),
        commit_activity="atm.create_hold",
        buyers=("pays", "payment fails", "never", "pays racing release, before", "pays racing release, after"),
        buyer=atm_buyer,
    ),
    "atom": Provider(
        "atom",
        AtomSimulator,
        lambda client, sim: atom_worker(client, sim, timeout_seconds=1),
        atom_request,
        endpoints=("refresh", "guest", "lease", "preview", "create", "status", "summary", "cancel"),
        cancellable=("refresh", "guest", "lease", "preview", "create", "status"),
        commit_activity="atom.create_order",
    ),
    "acme": Provider(
        "acme",
        AcmeSimulator,
        lambda client, sim: acme_worker(client, sim, timeout_seconds=1),
        acme_request,
        endpoints=("reserve", "cart", "checkout", "search", "get", "release", "refund"),
        cancellable=("reserve", "cart", "checkout", "get"),
        commit_activity="acme.checkout",
    ),
}


async def cancel(handle: WorkflowHandle[Any, PurchaseResult], how: str = "signal") -> None:
    """A caller's cancel; a refusal (committed, ended) is an answer, not an error."""
    request = CancelRequest(reason=f"cancel by {how}")
    with contextlib.suppress(WorkflowUpdateFailedError, RPCError):
        if how == "signal":
            await handle.signal("cancel", request)
        else:
            await handle.start_update("cancel", request, wait_for_stage=WorkflowUpdateStage.ACCEPTED)


def inject(run: Run) -> None:
    """Sets the schedule's fault and cancel on the simulator, before the purchase starts."""
    faults = run.sim.faults
    if run.schedule.fault is not None:
        endpoint, kind = run.schedule.fault
        if kind == OUTAGE:

            async def outage() -> None:
                faults.add(Fault(endpoint="*", status=503, times=OUTAGE_REQUESTS))

            faults.on(endpoint, outage)
        else:
            faults.add(FAULTS[kind](endpoint))
    if run.schedule.cancel is not None:
        endpoint, after = run.schedule.cancel

        async def cancel_now() -> None:
            assert run.handle is not None
            run.cancels.append(endpoint)
            await cancel(run.handle)

        faults.on(endpoint, cancel_now, after=after)


@dataclass(frozen=True)
class Outcome:
    result: PurchaseResult
    status: PurchaseStatus
    effects: list[Effect]
    landed_after_end: int
    # What the provider's sweep found afterwards (an attention item each), when the provider has one here.
    swept: list[Finding] = field(default_factory=list)
    # Accounts holding the buyer's details that no order was placed from (Atom's guest accounts).
    orphan_accounts: list[str] = field(default_factory=list)


async def outcome_or_attention(handle: WorkflowHandle[Any, PurchaseResult]) -> PurchaseResult:
    """The purchase's result once it ends, or its status as a result once it needs attention (it
    then waits for an operator: it does not end by itself)."""
    status = await watch(handle, lambda status: status.state == PurchaseState.NEEDS_ATTENTION)
    if status.state == PurchaseState.NEEDS_ATTENTION:
        return PurchaseResult(
            purchase_id=status.purchase_id,
            provider=status.provider,
            state=status.state,
            provider_order_id=status.provider_ids.get("order_id"),
            tickets=status.tickets,
            failure=status.failure,
            compensations=status.compensations,
        )
    return await purchase_outcome(handle)


Then = Callable[[Run, PurchaseResult], Awaitable[PurchaseResult]]


async def run_purchase(
    provider: Provider,
    schedule: Schedule,
    env: WorkflowEnvironment | None = None,
    purchase_id: str = PURCHASE,
    then: Then | None = None,
) -> Outcome:
    """Runs one purchase under `schedule` (on `env`, else its own time-skipping server) to its end;
    `then` does what follows its end (a reset, a re-run) and answers the result to check."""
    async with contextlib.AsyncExitStack() as stack:
        if env is None:
            env = await stack.enter_async_context(time_skipping())
        sim = provider.simulator()
        task_queue = await stack.enter_async_context(provider.worker(env.client, sim))
        run = Run(env, sim, task_queue, schedule, purchase_id)
        inject(run)
        run.handle = await start_purchase(env.client, provider.request(purchase_id), task_queue)
        if provider.buyer is not None:
            await provider.buyer(run)
        result = await asyncio.wait_for(outcome_or_attention(run.handle), END_TIMEOUT)
        if then is not None:
            result = await then(run, result)
        status = await run.handle.query("status", result_type=PurchaseStatus)
        # The ledger is read as of the server's clock (the time-skipping server runs ahead of the
        # simulator's): what lapsed while the purchase waited is no longer held.
        ahead = (await env.get_current_time()).timestamp() - time.time()
        sim.clock = lambda: time.time() + max(ahead, 0)
        # A late request whose retry never came lands now, after the purchase ended: what it committed
        # is in the ledger too.
        landed = await sim.faults.land()
        # The sweep runs later (hourly): an outage the purchase met is over by then.
        sim.faults.pending.clear()
        swept = await provider.sweep(sim, env.client) if provider.sweep is not None else []
    orphans = sim.orphan_guests() if isinstance(sim, AtomSimulator) else []
    return Outcome(result, status, sim.committed(), landed, swept, orphans)


ATTENTION = (PurchaseState.COMPENSATION_FAILED, PurchaseState.NEEDS_ATTENTION)
# The provider-id names of holds the provider cannot find again (workflows/acme.py).
UNKNOWN_HOLD = "unknown_hold_"
UNKNOWN_ACCOUNT = "unknown_guest_account_"  # workflows/atom.py


def attention(result: PurchaseResult) -> bool:
    """The purchase ended, or waits, telling an operator to act."""
    return result.state in ATTENTION


def check(outcome: Outcome) -> None:
    """The invariants of issue 26 over the ledger of committed effects and the purchase's end."""
    result, effects = outcome.result, outcome.effects
    assert result.state.final or result.state == PurchaseState.NEEDS_ATTENTION, result.state
    failed_undos = [c for c in result.compensations if not c.ok]
    assert not failed_undos or attention(result), ("failed undo, no attention state", result.state, failed_undos)
    assert not any(c.retrying for c in result.compensations), ("ended with an undo still retrying", result.compensations)
    # What the sweep found is named by an attention item it opens: an operator undoes it. Nothing
    # else is, and a fulfilled purchase still needs its own order standing, named by its result.
    flagged = {f.item_id for f in outcome.swept}
    effects = [e for e in effects if not flagged & set(e.names)]
    orders = [e for e in effects if e.kind == "order"]
    assert len(orders) <= 1, ("more than one order for the purchase", orders, outcome.swept)
    # Every order, and every hold and payment still in force, is named by the purchase or flagged.
    # A hold the provider cannot find again (ACME lists no reservations) is named by the attempt
    # that may have made it: one such name stands for one hold, and for nothing else.
    ids = outcome.status.provider_ids
    names = {result.provider_order_id, *(v for k, v in ids.items() if not k.startswith(UNKNOWN_HOLD))} - {None}
    unknown_holds = sum(k.startswith(UNKNOWN_HOLD) for k in ids)
    unnamed = [e for e in effects if (e.kind == "order" or e.standing) and not names & set(e.names)]
    unnamed_holds = [e for e in unnamed if e.kind == "hold"]
    if len(unnamed_holds) <= unknown_holds:
        unnamed = [e for e in unnamed if e.kind != "hold"]
    assert not unnamed or attention(result), ("held by the provider, named by nobody", unnamed, result)
    # Every account holding the buyer's details is named: by its id, or as an attempt's of unknown id.
    unnamed_accounts = [a for a in outcome.orphan_accounts if a not in names]
    assert len(unnamed_accounts) <= sum(k.startswith(UNKNOWN_ACCOUNT) for k in ids), (
        "an account with the buyer's details, named by nobody",
        unnamed_accounts,
        ids,
    )
    paid = [e for e in effects if e.kind == "payment" and e.standing]
    if paid and not attention(result):
        assert result.state == PurchaseState.FULFILLED and result.tickets, ("paid, ended without tickets", paid, result)
    # A named hold of unknown id stands only beside a fulfilled purchase (a failed or cancelled one
    # waits it out) or one that landed after the purchase ended.
    holds = [
        e
        for e in effects
        if e.kind == "hold"
        and e.standing
        and not (
            e in unnamed_holds
            and len(unnamed_holds) <= unknown_holds
            and (result.state == PurchaseState.FULFILLED or outcome.landed_after_end)
        )
    ]
    assert not holds or attention(result), ("a hold outlived its purchase", holds, result.state, result.compensations)
    if result.state == PurchaseState.FULFILLED:
        standing = [e for e in orders if e.standing]
        assert len(standing) == 1 and result.provider_order_id in standing[0].names, ("fulfilled, which order?", orders)
