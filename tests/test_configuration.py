"""Fail closed: provider settings have no simulator defaults; an unconfigured provider is not
served (its purchases fail at once, typed); only `boxoffice dev`/`demo` or BOXOFFICE_ENV=dev point
providers at the simulators. ACME order management runs where ACME's credentials are."""

from __future__ import annotations

import uuid

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities, AcmeSettings
from activities.atm import AtmSettings
from activities.atom import AtomActivities, AtomSettings
from activities.onebox import OneboxSettings
from activities.tevo import TevoSettings
from simulators.acme import AcmeSimulator
from simulators.atom import AtomSimulator
from tests.conftest import acme_request, acme_settings, atom_request
from workers import client as purchases
from workers.client import purchase_outcome
from workers.devstack import use_simulators
from workers.worker import missing_settings, serving
from workflows.models import FailureReason, OrdersQuery, PurchaseState, RefundRequest

PROVIDER_SETTINGS = (AtomSettings, OneboxSettings, TevoSettings, AtmSettings, AcmeSettings)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Every variable use_simulators may set, empty (= unset): monkeypatch restores them after."""
    names = [f"{s.model_config['env_prefix']}{name}".upper() for s in PROVIDER_SETTINGS for name in s.required]
    for name in [*names, "BOXOFFICE_ENV", "BOXOFFICE_ATM_WEBHOOK_SECRETS", "BOXOFFICE_SIMULATORS_PORT"]:
        monkeypatch.setenv(name, "")
    return monkeypatch


def test_no_provider_talks_to_anything_unless_configured(clean_env: pytest.MonkeyPatch) -> None:
    assert missing_settings(AtomSettings()) == ["BOXOFFICE_ATOM_BASE_URL", "BOXOFFICE_ATOM_API_KEY"]
    assert missing_settings(OneboxSettings()) == [
        "BOXOFFICE_ONEBOX_BASE_URL", "BOXOFFICE_ONEBOX_OAUTH_URL", "BOXOFFICE_ONEBOX_CHANNEL_ID",
        "BOXOFFICE_ONEBOX_CLIENT_ID", "BOXOFFICE_ONEBOX_CLIENT_SECRET"]
    assert missing_settings(TevoSettings()) == ["BOXOFFICE_TEVO_BASE_URL", "BOXOFFICE_TEVO_API_TOKEN",
                                                "BOXOFFICE_TEVO_API_SECRET", "BOXOFFICE_TEVO_REVIEWER_ID"]
    assert missing_settings(AtmSettings()) == ["BOXOFFICE_ATM_BASE_URL", "BOXOFFICE_ATM_SERVICE_TOKEN"]
    assert missing_settings(AcmeSettings()) == ["BOXOFFICE_ACME_BASE_URL", "BOXOFFICE_ACME_TENANT_ID",
                                                "BOXOFFICE_ACME_API_KEY"]
    clean_env.setenv("BOXOFFICE_ATOM_API_KEY", "")  # empty, as deploy/ writes unused options, is unset
    assert missing_settings(AtomSettings()) == ["BOXOFFICE_ATOM_BASE_URL", "BOXOFFICE_ATOM_API_KEY"]


def test_dev_points_unset_providers_at_the_simulators(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("BOXOFFICE_SIMULATORS_PORT", "9901")
    clean_env.setenv("BOXOFFICE_TEVO_BASE_URL", "https://api.sandbox.ticketevolution.com")  # set: kept
    use_simulators()
    assert all(missing_settings(settings()) == [] for settings in PROVIDER_SETTINGS)
    assert AtomSettings().base_url == "http://127.0.0.1:9901"
    assert AcmeSettings().base_url == "http://127.0.0.1:9905"
    assert AtomSettings().api_key.get_secret_value() == AtomSimulator.api_key
    assert TevoSettings().base_url == "https://api.sandbox.ticketevolution.com"


async def test_unconfigured_provider_fails_its_purchases_at_once(env: WorkflowEnvironment) -> None:
    unconfigured = AtomActivities(AtomSettings(base_url="", api_key="", activities_per_second=None))
    task_queue = f"tq-{uuid.uuid4()}"
    async with serving(env.client, task_queue, [unconfigured]):
        handle = await purchases.start_purchase(env.client, atom_request("unconfigured-1"), task_queue)
        result = await purchase_outcome(handle)
    await unconfigured.aclose()
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == FailureReason.PROVIDER_NOT_CONFIGURED
    assert "BOXOFFICE_ATOM_BASE_URL" in result.failure.message
    assert len((await handle.fetch_history()).events) < 20  # failed at the first step, no retries


async def test_workflow_pods_route_acme_to_the_pods_with_its_credentials(env: WorkflowEnvironment) -> None:
    """deploy/k8s: the workflows role has no ACME credentials; the acme role has them. Purchases
    and order management (search, show, refund) both reach ACME through the acme role."""
    sim = AcmeSimulator(api_key="test-acme-key")
    no_credentials = AcmeActivities(AcmeSettings(base_url="", tenant_id="", api_key="", activities_per_second=50))
    credentials = AcmeActivities(acme_settings(activities_per_second=50), transport=httpx.ASGITransport(app=sim.app))
    task_queue = f"tq-{uuid.uuid4()}"
    async with serving(env.client, task_queue, [no_credentials], roles={"workflows"}), \
            serving(env.client, task_queue, [credentials], roles={"acme"}):
        handle = await purchases.start_purchase(env.client, acme_request("routed-1"), task_queue)
        order_id = (await purchase_outcome(handle)).provider_order_id
        assert order_id is not None
        found = await purchases.orders(env.client, OrdersQuery(order_id=order_id), task_queue)
        refunded = await purchases.refund(env.client, RefundRequest(order_id=order_id), task_queue)
    await no_credentials.aclose()
    await credentials.aclose()
    assert [o.order_id for o in found.orders] == [order_id]
    assert refunded.refunded == refunded.total
    assert len(sim.refunds) == 1
