"""The sweep in the production shape of deploy/k8s: every provider rate-limited, its calls on its own task
queue `{task_queue}-{provider}` in the pods of its role (which alone hold its credentials); the workflows
pods hold no provider credentials. Their schedules, sweeps and approvals still reach each provider."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities, AcmeSettings
from activities.tevo import TevoActivities, TevoSettings
from simulators import acme as acme_sim
from simulators import tevo as tevo_sim
from simulators.acme import AcmeSimulator
from simulators.tevo import TevoSimulator
from tests.conftest import acme_settings
from tests.test_attention_cli import schedule_ids
from tests.test_sweep import open_items, sweep
from workers.client import approve_attention
from workers.settings import WorkerSettings
from workers.worker import run_worker, serving
from workflows.findings import AttentionDecision, FindingKind
from workflows.findings import attention_workflow_id as item_id


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_SWEEP_SETTLE_SECONDS", "0")


async def test_workflows_pods_schedule_the_sweeps_of_the_providers_they_route(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/k8s/config.yaml: a workflows pod without provider credentials routes the rate-limited
    providers (TEvo and ACME here, Atom by its default limit) to their queues, so it schedules their sweeps;
    Onebox and ATM, neither configured nor rate-limited, are served nowhere and get no schedule."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    for provider, names in {
        "TEVO": ("BASE_URL", "API_TOKEN", "API_SECRET", "REVIEWER_ID"),
        "ACME": ("BASE_URL", "TENANT_ID", "API_KEY"),
        "ATM": ("BASE_URL", "SERVICE_TOKEN"),
        "ATOM": ("BASE_URL", "API_KEY"),
        "ONEBOX": ("BASE_URL", "OAUTH_URL", "CLIENT_ID", "CLIENT_SECRET", "CHANNEL_ID"),
    }.items():
        for name in (*names, "ACTIVITIES_PER_SECOND"):
            monkeypatch.delenv(f"BOXOFFICE_{provider}_{name}", raising=False)
    monkeypatch.delenv("BOXOFFICE_SWEEP_PROVIDERS", raising=False)
    monkeypatch.setenv("BOXOFFICE_TEVO_ACTIVITIES_PER_SECOND", "10")
    monkeypatch.setenv("BOXOFFICE_ACME_ACTIVITIES_PER_SECOND", "20")
    stop = asyncio.Event()
    settings = WorkerSettings(BOXOFFICE_TASK_QUEUE="k8s-sweeps", BOXOFFICE_WORKER_ROLES="workflows")
    running = asyncio.create_task(run_worker(settings, stop=stop))
    try:
        for _ in range(100):
            if await schedule_ids(dev_env) == ["sweep-acme", "sweep-atom", "sweep-tevo"]:
                break
            await asyncio.sleep(0.2)
        assert await schedule_ids(dev_env) == ["sweep-acme", "sweep-atom", "sweep-tevo"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_sweep_and_approvals_reach_the_providers_through_their_queues(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One process per role as in deploy/k8s: the workflows role has no TEvo or ACME credentials, the tevo
    and acme roles have them. A TEvo orphan's approved cancel (Orders / Reject, ticketevolution.atlassian.net
    pageId=4751395's orders) and an ACME orphan's approved refund (B2C Orders, developers.acmeticketing.com
    .../33000250659-b2c-orders) reach the simulators through the providers' own queues."""
    monkeypatch.setenv("BOXOFFICE_SWEEP_ACME_EVENT_IDS", acme_sim.EVENT)  # no purchase names the orphan's event
    tevo = TevoSimulator()
    tevo.token, tevo.secret = "test-tevo-token", "test-tevo-secret"
    acme = AcmeSimulator(api_key="test-acme-key")
    tevo_routed = TevoActivities(
        TevoSettings(base_url="", api_token="", api_secret="", reviewer_id=None, activities_per_second=10)
    )
    acme_routed = AcmeActivities(AcmeSettings(base_url="", tenant_id="", api_key="", activities_per_second=20))
    tevo_served = TevoActivities(
        TevoSettings(
            base_url="https://api.tevo.test",
            api_token="test-tevo-token",
            api_secret="test-tevo-secret",
            reviewer_id=tevo.reviewer_id,
            activities_per_second=10,
        ),
        transport=httpx.ASGITransport(app=tevo.app),
    )
    acme_served = AcmeActivities(acme_settings(activities_per_second=20), transport=httpx.ASGITransport(app=acme.app))
    tq = f"tq-{uuid.uuid4()}"
    try:
        async with (
            serving(dev_env.client, tq, [tevo_routed, acme_routed], roles={"workflows"}),
            serving(dev_env.client, tq, [tevo_served], roles={"tevo"}),
            serving(dev_env.client, tq, [acme_served], roles={"acme"}),
        ):
            tevo_orphan = tevo_sim.seed_order(tevo, "k8s-tevo-ghost", state="pending")
            acme_orphan = acme_sim.seed_order(acme, "boxoffice purchase k8s-acme-ghost request 1234")
            assert (await sweep(dev_env.client, tq, "tevo")).totals.findings == 1
            assert (await sweep(dev_env.client, tq, "acme")).totals.findings == 1
            await open_items(dev_env.client, 2)

            tevo_item = item_id("tevo", FindingKind.ORPHAN_ORDER, str(tevo_orphan))
            cancelled = await asyncio.wait_for(
                approve_attention(dev_env.client, tevo_item, AttentionDecision(action="cancel")), 30
            )
            assert cancelled.state == "APPROVED" and tevo.orders[tevo_orphan].state == "rejected"

            acme_item = item_id("acme", FindingKind.ORPHAN_ORDER, acme_orphan)
            refunded = await asyncio.wait_for(
                approve_attention(dev_env.client, acme_item, AttentionDecision(action="refund")), 30
            )
            assert refunded.state == "APPROVED"
            assert acme.orders[acme_orphan]["refundAmount"] == acme.orders[acme_orphan]["totalAmount"]
    finally:
        for activities in (tevo_routed, acme_routed, tevo_served, acme_served):
            await activities.aclose()
