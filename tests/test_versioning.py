"""Worker Versioning on the real dev server: the rollout deploy/README.md ("Rolling out a build")
describes and the Temporal Worker Controller performs. Build A holds a purchase; build B becomes
current while A's workers keep running (draining); the purchase held on A finishes on A; new purchases
run on B; an AUTO_UPGRADE workflow started on A moves to B; A reports drained once its last pinned
purchase ended, and only then are its workers stopped.
Docs: https://docs.temporal.io/production-deployment/worker-deployments/worker-versioning
(drainage statuses, `temporal worker deployment`), https://docs.temporal.io/worker-versioning
(PINNED and AUTO_UPGRADE behaviours)."""

from __future__ import annotations

import asyncio
import json
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.atom import AtomActivities
from simulators.atom import AtomSimulator
from tests.conftest import atom_request, binary, local_dev_server, wait_for_state
from tests.conftest import atom_settings as atom_test_settings
from workers import client as purchases
from workers.client import purchase_outcome
from workers.settings import WorkerSettings
from workers.worker import serving
from workflows.models import ConfirmRequest
from workflows.reconcile import reconcile_workflow_id

DEPLOYMENT = "boxoffice"
TASK_QUEUE = "versioned"
# The server re-checks a draining version every 3 minutes and counts a version left current as
# active for 3 more (visibility lag): 1 s each here, so "drained" shows within the test.
DRAINAGE_CONFIG = (
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusRefreshInterval="1s"',
    "--dynamic-config-value",
    'matching.wv.VersionDrainageStatusVisibilityGracePeriod="1s"',
)


@pytest.fixture
async def drain_env() -> AsyncIterator[WorkflowEnvironment]:
    async with local_dev_server(*DRAINAGE_CONFIG) as env:
        yield env


@asynccontextmanager
async def build(client: Client, build_id: str, sim: AtomSimulator) -> AsyncIterator[None]:
    """One worker build, configured as `boxoffice worker` is, with Atom on its own (rate-limited) queue."""
    settings = WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME=DEPLOYMENT, BOXOFFICE_BUILD_ID=build_id)
    sim.api_key = "test-atom-key"
    activities = AtomActivities(atom_test_settings(), transport=httpx.ASGITransport(app=sim.app))
    try:
        async with serving(client, TASK_QUEUE, [activities], deployment_config=settings.deployment_config()):
            yield
    finally:
        await activities.aclose()


async def temporal(client: Client, *args: str) -> tuple[int, str]:
    """The `temporal` CLI against the test's server, as an operator runs it."""
    process = await asyncio.create_subprocess_exec(
        binary("temporal"),
        *args,
        "--address",
        client.service_client.config.target_host,
        "--namespace",
        client.namespace,
        stdout=PIPE,
        stderr=PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, (out + err).decode()


async def set_routing(client: Client, build_id: str, ramp: int | None = None) -> None:
    """A rollout step the controller takes (deploy/README.md): the build becomes ramping (`ramp` % of
    new workflows) or current. The server refuses it until the build's workers poll."""
    step = ["set-current-version"] if ramp is None else ["set-ramping-version", "--percentage", str(ramp)]
    for _ in range(100):
        code, output = await temporal(
            client, "worker", "deployment", *step, "--yes", "--deployment-name", DEPLOYMENT, "--build-id", build_id
        )
        if code == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{build_id} never became {step[0]}: {output}")


async def set_current(client: Client, build_id: str) -> None:
    await set_routing(client, build_id)


async def routing(client: Client) -> tuple[str, str]:
    """(current build, ramping build) as `temporal worker deployment describe` shows them."""
    code, output = await temporal(client, "worker", "deployment", "describe", "--output", "json", "--name", DEPLOYMENT)
    assert code == 0, output
    config = json.loads(output)["routingConfig"]
    return config.get("currentVersionBuildID", ""), config.get("rampingVersionBuildID", "")


async def describe_version(client: Client, build_id: str) -> dict[str, Any]:
    code, output = await temporal(
        client,
        "worker",
        "deployment",
        "describe-version",
        "--output",
        "json",
        "--deployment-name",
        DEPLOYMENT,
        "--build-id",
        build_id,
    )
    assert code == 0, output
    return json.loads(output)


async def drainage(client: Client, build_id: str) -> str:
    return str((await describe_version(client, build_id)).get("drainageInfo", {}).get("drainageStatus", ""))


async def builds_that_ran(handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    return [
        event.workflow_task_completed_event_attributes.deployment_version.build_id
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    ]


async def behavior(handle: WorkflowHandle[Any, Any]) -> int:
    description = await handle.describe()
    return description.raw_description.workflow_execution_info.versioning_info.behavior


async def test_rollout_a_held_purchase_finishes_on_its_draining_build_and_the_build_then_drains(
    drain_env: WorkflowEnvironment,
) -> None:
    client = drain_env.client
    # Each build talks to its own simulator: a call routed to the wrong build finds no lease there.
    sim_a, sim_b = AtomSimulator(), AtomSimulator()
    async with AsyncExitStack() as build_a:
        await build_a.enter_async_context(build(client, "build-a", sim_a))
        await set_current(client, "build-a")
        held = await purchases.start_purchase(client, atom_request("v-1", confirmation="manual"), TASK_QUEUE)
        await wait_for_state(held, "AWAITING_CONFIRMATION")
        # An attention item (AUTO_UPGRADE) opened on A: it stays open across the rollout.
        item = await client.start_workflow(
            "ReconcileWorkflow", "purchase-x", id=reconcile_workflow_id("purchase-x"), task_queue=TASK_QUEUE
        )
        while not await builds_that_ran(item):
            await asyncio.sleep(0.1)

        async with build(client, "build-b", sim_b):
            # The controller's Progressive rollout: B ramps (A stays current), then becomes current;
            # A is no longer current and drains, its workers still running.
            await set_routing(client, "build-b", ramp=10)
            assert await routing(client) == ("build-a", "build-b")
            assert await drainage(client, "build-a") == ""
            await set_current(client, "build-b")
            assert await routing(client) == ("build-b", "")
            assert await drainage(client, "build-a") == "draining"
            new = await purchases.start_purchase(client, atom_request("v-2"), TASK_QUEUE)
            assert (await purchase_outcome(new)).state == "FULFILLED"
            # The buyer confirms the purchase held on A: it ends on A, not on B.
            await purchases.confirm(client, "v-1", ConfirmRequest())
            assert (await purchase_outcome(held)).state == "FULFILLED"
            # A drains once its last pinned workflow ended; the open attention item does not hold it.
            for _ in range(150):
                if (status := await drainage(client, "build-a")) == "drained":
                    break
                await asyncio.sleep(0.1)
            assert status == "drained"
            await build_a.aclose()  # only now are A's workers scaled down
            # The attention item's next task runs on B, the current build, with A gone.
            await item.signal("resolve", "checked")
            assert await asyncio.wait_for(item.result(), 10) == "checked"

    assert set(await builds_that_ran(held)) == {"build-a"}
    assert set(await builds_that_ran(new)) == {"build-b"}
    ran = await builds_that_ran(item)
    assert ran[0] == "build-a" and ran[-1] == "build-b"
    assert [c["endpoint"] for c in sim_a.calls].count("create") == 1
    assert [c["endpoint"] for c in sim_b.calls].count("create") == 1
    assert await behavior(held) == VersioningBehavior.VERSIONING_BEHAVIOR_PINNED
    assert await behavior(item) == VersioningBehavior.VERSIONING_BEHAVIOR_AUTO_UPGRADE


async def test_an_unversioned_worker_runs_the_auto_upgrade_workflows(dev_env: WorkflowEnvironment) -> None:
    """`boxoffice dev` and most tests run unversioned workers. The server refuses a task completion that
    reports a versioning behaviour without versioned deployment options ("versioning behavior cannot be
    specified without deployment options being set with versioned mode"), and the SDK reports what
    @workflow.defn declares: an attention item (AUTO_UPGRADE) would never get past its first task."""
    client = dev_env.client
    async with serving(client, "unversioned", []):
        item = await client.start_workflow(
            "ReconcileWorkflow", "purchase-u", id=reconcile_workflow_id("purchase-u"), task_queue="unversioned"
        )
        await item.signal("resolve", "checked")
        assert await asyncio.wait_for(item.result(), 10) == "checked"
    assert await behavior(item) == VersioningBehavior.VERSIONING_BEHAVIOR_UNSPECIFIED


def test_versioning_is_off_unless_both_settings_are_given() -> None:
    assert WorkerSettings().deployment_config() is None
    config = WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME="boxoffice", BOXOFFICE_BUILD_ID="2026.11.23-ab12").deployment_config()
    assert config is not None and config.use_worker_versioning
    assert config.version.to_canonical_string() == "boxoffice.2026.11.23-ab12"
    with pytest.raises(ValueError, match="both"):
        WorkerSettings(BOXOFFICE_BUILD_ID="ab12").deployment_config()
    with pytest.raises(ValidationError):
        WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME="box.office", BOXOFFICE_BUILD_ID="ab12")


def test_the_worker_controllers_version_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Temporal Worker Controller injects TEMPORAL_DEPLOYMENT_NAME and TEMPORAL_WORKER_BUILD_ID into
    each version's pods; a worker registering as anything else would never be the version it promotes
    (https://github.com/temporalio/temporal-worker-controller/blob/main/docs/concepts.md, Environment Variables)."""
    monkeypatch.setenv("BOXOFFICE_DEPLOYMENT_NAME", "boxoffice")
    monkeypatch.setenv("BOXOFFICE_BUILD_ID", "0.1.0")
    monkeypatch.setenv("TEMPORAL_DEPLOYMENT_NAME", "boxoffice/boxoffice")
    monkeypatch.setenv("TEMPORAL_WORKER_BUILD_ID", "0.1.0-5d4c9f")
    config = WorkerSettings().deployment_config()
    assert config is not None
    assert (config.version.deployment_name, config.version.build_id) == ("boxoffice/boxoffice", "0.1.0-5d4c9f")
