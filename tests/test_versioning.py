"""Worker Versioning on the real dev server: a purchase holding seats finishes on the build that
started it while a new build takes the new purchases (deploy/README.md, "Rolling out a build")."""

from __future__ import annotations

import asyncio
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from pydantic import ValidationError
from temporalio.api.enums.v1 import EventType, VersioningBehavior
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.atom import AtomActivities
from simulators.atom import AtomSimulator
from tests.conftest import atom_request, atom_settings, binary, wait_for_state
from workers import client as purchases
from workers.client import purchase_outcome
from workers.settings import WorkerSettings
from workers.worker import serving
from workflows.models import ConfirmRequest

DEPLOYMENT = "boxoffice"
TASK_QUEUE = "versioned"


@asynccontextmanager
async def build(client: Client, build_id: str, sim: AtomSimulator) -> AsyncIterator[None]:
    """One worker build, configured as `boxoffice worker` is, with Atom on its own (rate-limited) queue."""
    settings = WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME=DEPLOYMENT, BOXOFFICE_BUILD_ID=build_id)
    sim.api_key = "test-atom-key"
    activities = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=sim.app))
    try:
        async with serving(client, TASK_QUEUE, [activities], deployment_config=settings.deployment_config()):
            yield
    finally:
        await activities.aclose()


async def set_current(client: Client, build_id: str) -> None:
    """The rollout step deploy/README.md documents, with the CLI; it fails until the build's workers poll."""
    command = [binary("temporal"), "worker", "deployment", "set-current-version", "--yes",
               "--address", client.service_client.config.target_host, "--namespace", client.namespace,
               "--deployment-name", DEPLOYMENT, "--build-id", build_id]
    for _ in range(100):
        process = await asyncio.create_subprocess_exec(*command, stdout=PIPE, stderr=PIPE)
        out, err = await process.communicate()
        if process.returncode == 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{build_id} never became current: {out.decode()} {err.decode()}")


async def builds_that_ran(client: Client, purchase_id: str) -> set[str]:
    history = await purchases.purchase_handle(client, purchase_id).fetch_history()
    return {event.workflow_task_completed_event_attributes.deployment_version.build_id
            for event in history.events if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED}


async def test_a_held_purchase_finishes_on_its_build_while_new_ones_run_on_the_next(
    dev_env: WorkflowEnvironment,
) -> None:
    client = dev_env.client
    # Each build talks to its own simulator: a call routed to the wrong build finds no lease there.
    sim_a, sim_b = AtomSimulator(), AtomSimulator()
    async with build(client, "build-a", sim_a):
        await set_current(client, "build-a")
        held = await purchases.start_purchase(client, atom_request("v-1", confirmation="manual"), TASK_QUEUE)
        await wait_for_state(held, "AWAITING_CONFIRMATION")
        async with build(client, "build-b", sim_b):
            await set_current(client, "build-b")
            new = await purchases.start_purchase(client, atom_request("v-2"), TASK_QUEUE)
            assert (await purchase_outcome(new)).state == "FULFILLED"
            await purchases.confirm(client, "v-1", ConfirmRequest())
            assert (await purchase_outcome(held)).state == "FULFILLED"
            # Only now may build A go: its last pinned purchase ended.
    assert await builds_that_ran(client, "v-1") == {"build-a"}
    assert await builds_that_ran(client, "v-2") == {"build-b"}
    assert [c["endpoint"] for c in sim_a.calls].count("create") == 1
    assert [c["endpoint"] for c in sim_b.calls].count("create") == 1
    description = await held.describe()
    assert description.raw_description.workflow_execution_info.versioning_info.behavior == (
        VersioningBehavior.VERSIONING_BEHAVIOR_PINNED)


def test_versioning_is_off_unless_both_settings_are_given() -> None:
    assert WorkerSettings().deployment_config() is None
    config = WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME="boxoffice", BOXOFFICE_BUILD_ID="2026.11.23-ab12").deployment_config()
    assert config is not None and config.use_worker_versioning
    assert config.version.to_canonical_string() == "boxoffice.2026.11.23-ab12"
    with pytest.raises(ValueError, match="both"):
        WorkerSettings(BOXOFFICE_BUILD_ID="ab12").deployment_config()
    with pytest.raises(ValidationError):
        WorkerSettings(BOXOFFICE_DEPLOYMENT_NAME="box.office", BOXOFFICE_BUILD_ID="ab12")
