"""`boxoffice attention`, `boxoffice schedules apply` and `boxoffice demo --orphan` as an operator meets
them (run as a subprocess against the dev server, like tests/test_cli.py): results read at a glance,
mistakes are one line and exit 1, never a traceback."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.testing import WorkflowEnvironment

from simulators import tevo as tevo_sim
from simulators.tevo import TevoSimulator
from tests.conftest import on_loopback, tevo_worker
from tests.test_cli import Ran, boxoffice, refused
from tests.test_sweep import open_items, sweep
from workers.settings import WorkerSettings
from workers.worker import run_worker
from workflows.findings import FindingKind
from workflows.findings import attention_workflow_id as item_id


@pytest.fixture(autouse=True)
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXOFFICE_SWEEP_SETTLE_SECONDS", "0")


async def schedule_ids(env: WorkflowEnvironment) -> list[str]:
    return sorted([s.id async for s in await env.client.list_schedules()])


async def test_attention_list_show_approve_and_dismiss(dev_env: WorkflowEnvironment) -> None:
    """Items of a TEvo sweep (Orders / Index, ticketevolution.atlassian.net/wiki/pages/viewpage.action?
    pageId=4751395): an orphan order and an answer in an undocumented state."""
    address = dev_env.client.service_client.config.target_host
    sim = TevoSimulator()
    async with tevo_worker(dev_env.client, sim) as tq:
        orphan = tevo_sim.seed_order(sim, "cli-ghost", state="pending")
        weird = tevo_sim.seed_order(sim, None, state="teleported")
        await sweep(dev_env.client, tq, "tevo")
        await open_items(dev_env.client, 2)
        orphan_item, bad_item = (
            item_id("tevo", FindingKind.ORPHAN_ORDER, str(orphan)),
            item_id("tevo", FindingKind.BAD_ANSWER, str(weird)),
        )

        async def run(*args: str) -> Ran:
            return await boxoffice("attention", *args, address=address, BOXOFFICE_TASK_QUEUE=tq)

        listed = await run("list")
        assert listed.code == 0, listed.err
        [line] = [line for line in listed.out.splitlines() if line.startswith(orphan_item)]
        assert "orphan_order" in line and f"order {orphan}" in line and "purchase cli-ghost" in line and "145.48 USD" in line
        as_json = json.loads((await run("list", "--json", "--kind", "bad_answer")).out)
        assert [i["id"] for i in as_json] == [bad_item]

        shown = await run("show", orphan_item)
        assert shown.code == 0, shown.err
        view = json.loads(shown.out)
        assert (view["state"], view["proposed_action"], view["times_seen"]) == ("OPEN", "cancel", 1)

        refused(await run("show", "attention-tevo-orphan_order-nope"), 1, "no attention item attention-tevo-orphan_order-nope")
        refused(await run("approve", "attention-nope", "--action", "cancel"), 1, "no attention item attention-nope")
        refused(await run("approve", orphan_item, "--action", "refund"), 1, "refused", "refund is not possible")
        usage = await run("approve", orphan_item)  # a usage mistake: argparse's usage and exit 2
        assert usage.code == 2 and "required: --action" in usage.err and "Traceback" not in usage.err

        approved = await run("approve", orphan_item, "--action", "cancel", "--note", "case 4711")
        assert approved.code == 0, approved.err
        assert json.loads(approved.out)["state"] == "APPROVED" and sim.orders[orphan].state == "rejected"

        dismissed = await run("dismiss", bad_item, "--note", "the broker's test order")
        assert dismissed.code == 0 and json.loads(dismissed.out)["state"] == "DISMISSED"
        refused(await run("dismiss", bad_item, "--note", "again"), 1, f"attention item {bad_item} has been answered")
        assert (await run("list")).out.strip() == "nothing needs attention"
        closed = await run("list", "--all")
        assert orphan_item in closed.out and bad_item in closed.out


async def test_schedules_apply_twice_keeps_one_schedule_per_provider(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    for _ in range(2):
        ran = await boxoffice(
            "schedules",
            "apply",
            address=address,
            BOXOFFICE_SWEEP_PROVIDERS="tevo,onebox,atom",
            BOXOFFICE_SWEEP_INTERVAL_MINUTES="30",
        )
        assert ran.code == 0, ran.err
        assert ran.out.splitlines() == [f"sweep-{p}: every 30 min, window 48 h" for p in ("tevo", "onebox", "atom")]
    for _ in range(50):  # the schedule list is read from visibility
        if await schedule_ids(dev_env) == ["sweep-atom", "sweep-onebox", "sweep-tevo"]:
            break
        await asyncio.sleep(0.2)
    assert await schedule_ids(dev_env) == ["sweep-atom", "sweep-onebox", "sweep-tevo"]


async def test_worker_applies_the_schedules_of_the_providers_it_serves(
    dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BOXOFFICE_SWEEP_PROVIDERS names all five by default: a worker serving Onebox and Atom schedules both."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    for provider in ("TEVO", "ACME", "ATM"):
        monkeypatch.delenv(f"BOXOFFICE_{provider}_BASE_URL", raising=False)
    monkeypatch.delenv("BOXOFFICE_SWEEP_PROVIDERS", raising=False)
    for name, value in {
        "ONEBOX_BASE_URL": "https://onebox.test",
        "ONEBOX_OAUTH_URL": "https://oauth.onebox.test",
        "ONEBOX_CLIENT_ID": "c",
        "ONEBOX_CLIENT_SECRET": "s",
        "ONEBOX_CHANNEL_ID": "ch",
        "ATOM_BASE_URL": "https://atom.test",
        "ATOM_API_KEY": "k",
    }.items():
        monkeypatch.setenv(f"BOXOFFICE_{name}", value)
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(WorkerSettings(BOXOFFICE_TASK_QUEUE="sweeps"), stop=stop))
    try:
        for _ in range(100):
            if await schedule_ids(dev_env) == ["sweep-atom", "sweep-onebox"]:
                break
            await asyncio.sleep(0.2)
        assert await schedule_ids(dev_env) == ["sweep-atom", "sweep-onebox"]
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def test_demo_orphan_prints_the_finding_and_how_to_answer_it(dev_env: WorkflowEnvironment) -> None:
    """`boxoffice demo --orphan` against a running stack (here: the dev server, a TEvo simulator over HTTP
    and a worker). Without a stack it starts its own (`boxoffice dev`'s), which this test does not time."""
    address = dev_env.client.service_client.config.target_host
    sim = TevoSimulator()
    async with on_loopback(sim.app) as url, tevo_worker(dev_env.client, sim) as tq:
        ran = await boxoffice(
            "demo",
            "--orphan",
            address=address,
            BOXOFFICE_TASK_QUEUE=tq,
            BOXOFFICE_TEVO_BASE_URL=url,
            BOXOFFICE_TEVO_API_TOKEN=sim.token,
            BOXOFFICE_TEVO_API_SECRET=sim.secret,
            BOXOFFICE_TEVO_REVIEWER_ID=str(sim.reviewer_id),
        )
    assert ran.code == 0, ran.err
    assert f"Using the stack at {address}" in ran.out
    assert "Swept TEvo: 1 order(s) seen, 1 finding(s), 0 repaired." in ran.out, ran.out
    [order] = sim.orders.values()
    orphan = item_id("tevo", "orphan_order", str(order.id))
    assert f"Attention item {orphan}: orphan_order, order {order.id}, 290.96 USD" in ran.out, ran.out
    assert f"boxoffice attention approve {orphan} --action cancel" in ran.out
