"""Fail closed: provider settings have no simulator defaults; an unconfigured provider is not
served (its purchases fail at once, typed); only `boxoffice dev`/`demo` or BOXOFFICE_ENV=dev point
providers at the simulators. ACME order management runs where ACME's credentials are."""

from __future__ import annotations

import base64
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
from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from simulators.onebox import OneboxSimulator
from simulators.tevo import TevoSimulator
from tests.conftest import acme_request, acme_settings, atom_request
from tests.test_cli import boxoffice
from workers import client as purchases
from workers.client import purchase_outcome
from workers.devstack import use_simulators
from workers.settings import production_refusals
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
        "BOXOFFICE_ONEBOX_BASE_URL",
        "BOXOFFICE_ONEBOX_OAUTH_URL",
        "BOXOFFICE_ONEBOX_CHANNEL_ID",
        "BOXOFFICE_ONEBOX_CLIENT_ID",
        "BOXOFFICE_ONEBOX_CLIENT_SECRET",
    ]
    assert missing_settings(TevoSettings()) == [
        "BOXOFFICE_TEVO_BASE_URL",
        "BOXOFFICE_TEVO_API_TOKEN",
        "BOXOFFICE_TEVO_API_SECRET",
        "BOXOFFICE_TEVO_REVIEWER_ID",
    ]
    assert missing_settings(AtmSettings()) == ["BOXOFFICE_ATM_BASE_URL", "BOXOFFICE_ATM_SERVICE_TOKEN"]
    assert missing_settings(AcmeSettings()) == ["BOXOFFICE_ACME_BASE_URL", "BOXOFFICE_ACME_TENANT_ID", "BOXOFFICE_ACME_API_KEY"]
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
    async with (
        serving(env.client, task_queue, [no_credentials], roles={"workflows"}),
        serving(env.client, task_queue, [credentials], roles={"acme"}),
    ):
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


# Production fails closed (issue 25 item 2): a process that serves refuses to start, one line per setting.
CODEC_KEY = f"k1:{base64.b64encode(bytes(range(32))).decode()}"
STRONG = "s" * 32


@pytest.fixture
def production(clean_env: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A production environment that passes every check: codec keys set, nothing else."""
    for name in (
        "TEMPORAL_API_KEY",
        "TEMPORAL_TLS",
        "TEMPORAL_PROFILE",
        "BOXOFFICE_CODEC_AUTH_TOKEN",
        "BOXOFFICE_CODEC_CORS_ORIGINS",
    ):
        clean_env.setenv(name, "")
    clean_env.setenv("TEMPORAL_CONFIG_FILE", "/nonexistent/temporal.toml")
    clean_env.setenv("BOXOFFICE_CODEC_KEYS", CODEC_KEY)
    return clean_env


PUBLIC_CREDENTIALS = [
    ("BOXOFFICE_ATOM_API_KEY", AtomSimulator.api_key),
    ("BOXOFFICE_ONEBOX_CLIENT_ID", OneboxSimulator.client_id),
    ("BOXOFFICE_ONEBOX_CLIENT_SECRET", OneboxSimulator.client_secret),
    ("BOXOFFICE_TEVO_API_TOKEN", TevoSimulator.token),
    ("BOXOFFICE_TEVO_API_SECRET", TevoSimulator.secret),
    ("BOXOFFICE_ATM_SERVICE_TOKEN", AtmSimulator.service_token),
    ("BOXOFFICE_ATM_WEBHOOK_SECRETS", f"{STRONG},{AtmSimulator.webhook_secret}"),  # mid-rotation
    ("BOXOFFICE_ACME_API_KEY", AcmeSimulator.api_key),
]
UNSAFE: list[tuple[dict[str, str], str, str | None]] = [
    # (environment, the setting the refusal names, a value it must not echo)
    ({"BOXOFFICE_CODEC_KEYS": ""}, "BOXOFFICE_CODEC_KEYS", None),
    *(({name: value}, name, value) for name, value in PUBLIC_CREDENTIALS),
    ({"BOXOFFICE_ATOM_BASE_URL": "http://api-beta.atomtickets.com"}, "BOXOFFICE_ATOM_BASE_URL", None),
    ({"BOXOFFICE_ONEBOX_OAUTH_URL": "http://127.0.0.1:8702"}, "BOXOFFICE_ONEBOX_OAUTH_URL", None),  # loopback too
    ({"BOXOFFICE_ACME_BASE_URL": "http://user:pw-123@acme.example"}, "BOXOFFICE_ACME_BASE_URL", "pw-123"),
    ({"TEMPORAL_API_KEY": "temporal-key-123", "TEMPORAL_TLS": "false"}, "TEMPORAL_TLS", "temporal-key-123"),
    ({"BOXOFFICE_ATM_WEBHOOK_SECRETS": "a"}, "BOXOFFICE_ATM_WEBHOOK_SECRETS", None),
    ({"BOXOFFICE_ATM_WEBHOOK_SECRETS": f"{STRONG},short-one"}, "BOXOFFICE_ATM_WEBHOOK_SECRETS", "short-one"),
    ({"BOXOFFICE_CODEC_AUTH_TOKEN": "x"}, "BOXOFFICE_CODEC_AUTH_TOKEN", None),
    ({"BOXOFFICE_CODEC_CORS_ORIGINS": "*"}, "BOXOFFICE_CODEC_CORS_ORIGINS", None),
    ({"BOXOFFICE_CODEC_CORS_ORIGINS": "https://ui.example, *"}, "BOXOFFICE_CODEC_CORS_ORIGINS", None),
]


def test_a_safe_production_environment_passes(production: pytest.MonkeyPatch) -> None:
    production.setenv("BOXOFFICE_ATOM_BASE_URL", "https://api-beta.atomtickets.com")
    production.setenv("BOXOFFICE_ATOM_API_KEY", "a-real-atom-key")
    production.setenv("BOXOFFICE_ATM_WEBHOOK_SECRETS", STRONG)
    production.setenv("BOXOFFICE_CODEC_AUTH_TOKEN", STRONG)
    production.setenv("BOXOFFICE_CODEC_CORS_ORIGINS", "https://temporal-ui.example")
    production.setenv("TEMPORAL_API_KEY", "temporal-key")  # TLS on by default with an API key
    assert production_refusals() == []


@pytest.mark.parametrize(("environment", "setting", "secret"), UNSAFE, ids=[case[1] for case in UNSAFE])
def test_production_refuses_unsafe_settings(
    production: pytest.MonkeyPatch, environment: dict[str, str], setting: str, secret: str | None
) -> None:
    for name, value in environment.items():
        production.setenv(name, value)
    [line] = production_refusals()
    assert line.startswith(setting) and "\n" not in line, line
    if secret is not None:
        assert secret not in line


async def test_every_serving_command_refuses_unsafe_production_in_one_line_each() -> None:
    """The refusals print before anything starts: exit 1, one line per setting, no traceback, no value."""
    unsafe = {
        "BOXOFFICE_ATOM_BASE_URL": "http://atom.example",
        "BOXOFFICE_ATOM_API_KEY": AtomSimulator.api_key,
        "TEMPORAL_API_KEY": "temporal-key-123",
        "TEMPORAL_TLS": "false",
        "BOXOFFICE_CODEC_AUTH_TOKEN": "x",
        "BOXOFFICE_CODEC_CORS_ORIGINS": "*",
    }
    named = [
        "BOXOFFICE_CODEC_KEYS",
        "BOXOFFICE_ATOM_BASE_URL",
        "BOXOFFICE_ATOM_API_KEY",
        "TEMPORAL_TLS",
        "BOXOFFICE_CODEC_AUTH_TOKEN",
        "BOXOFFICE_CODEC_CORS_ORIGINS",
    ]
    for command in ("worker", "webhooks", "codec-server"):
        ran = await boxoffice(command, BOXOFFICE_ATM_WEBHOOK_SECRETS="a", **unsafe)
        assert ran.code == 1 and "Traceback" not in ran.err, ran.err
        lines = ran.err.strip().splitlines()
        for setting in [*named, "BOXOFFICE_ATM_WEBHOOK_SECRETS"]:
            assert sum(line.startswith(setting) for line in lines) == 1, (setting, ran.err)
        for value in ("temporal-key-123", AtomSimulator.api_key):
            assert value not in ran.err
