"""Operators' view: activity log lines bound to their purchase (JSON, redacted) and metrics."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from simulators.atom import AtomSimulator
from tests.conftest import SERVER_STARTUP, atom_request, atom_worker, binary, free_port
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase
from workers.logs import configure
from workers.telemetry import sdk_runtime
from workers.worker import SANDBOX, WORKFLOWS

DEPLOY_K8S = Path(__file__).parents[1] / "deploy" / "k8s"


async def test_activity_log_lines_carry_the_purchase_and_no_pii(
    env: WorkflowEnvironment, capsys: pytest.CaptureFixture[str]
) -> None:
    configure("json", "INFO")  # writes to the captured stderr
    sim = AtomSimulator()
    async with atom_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, atom_request("log-1"), tq)
        await purchase_outcome(handle)
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    calls = [line for line in lines if line.get("event") == "provider call"]
    assert len(calls) == 8
    lease = next(line for line in calls if line["path"] == "/ordering/v1/inventory/lease")
    assert (lease["workflow_id"], lease["purchase_id"], lease["provider"], lease["step"]) == (
        "purchase-log-1",
        "log-1",
        "atom",
        "lease",
    )
    assert lease["run_id"] and lease["attempt"] == 1
    for secret in ("guest@example.com", "test-atom-key", next(iter(sim.tokens)), "VNDR-QR"):
        assert secret not in err
    steps = [line for line in lines if line.get("event") == "purchase step"]
    assert [line["step"] for line in steps][:2] == ["refresh checkout", "account"]
    assert all(line["purchase_id"] == "log-1" and line["provider"] == "atom" for line in steps)
    assert all(line["temporal_workflow"]["workflow_id"] == "purchase-log-1" for line in steps)

    # Replaying the same history (as a worker does after a restart) prints nothing again.
    history = await handle.fetch_history()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter, workflow_runner=SANDBOX)
    await replayer.replay_workflow(history)
    assert "purchase step" not in capsys.readouterr().err


async def test_prometheus_metrics_per_provider_and_outcome() -> None:
    port = free_port()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
        test_server_startup_timeout=SERVER_STARTUP,
        runtime=sdk_runtime(f"127.0.0.1:{port}"),
    )
    try:
        await ensure_search_attributes(env.client)
        async with atom_worker(env.client, AtomSimulator(fulfilment="never")) as tq:
            await purchase_outcome(await start_purchase(env.client, atom_request("metrics-1"), tq))
        async with httpx.AsyncClient() as http:
            text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        await env.shutdown()
    metrics = [line for line in text.splitlines() if line.startswith("boxoffice_")]

    def has(name: str, *labels: str) -> bool:
        return any(line.startswith(name) and all(label in line for label in labels) for line in metrics)

    assert has("boxoffice_purchases_started", 'provider="atom"')
    assert has("boxoffice_purchases_finished", 'provider="atom"', 'state="FAILED"', 'reason="FULFILLMENT_TIMEOUT"')
    assert has("boxoffice_compensations", 'action="cancel order"', 'ok="true"')
    assert has("boxoffice_step_latency_bucket", 'provider="atom"', 'step="create_order"', 'outcome="ok"')
    assert has("boxoffice_step_latency_bucket", 'step="order_status"', 'outcome="error"')  # the "not yet" polls
    assert any(line.startswith("temporal_") for line in text.splitlines())  # the SDK's own metrics too


def scraped_deployments() -> dict[str, tuple[str, str]]:
    """deploy/k8s: each Deployment (or the workers' WorkerDeployment) Prometheus is told to scrape, its
    command and annotated port (a worker pod's first container: the other roles', deploy/k8s/monitoring.yaml)."""
    documents = [doc for path in sorted(DEPLOY_K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    scraped = {}
    for doc in documents:
        if doc["kind"] not in ("Deployment", "WorkerDeployment"):
            continue
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            container = doc["spec"]["template"]["spec"]["containers"][0]
            scraped[doc["metadata"]["name"]] = (container["command"][1], annotations["prometheus.io/port"])
    return scraped


def test_every_scraped_deployment_is_annotated_at_the_metrics_bind() -> None:
    """The ConfigMap's BOXOFFICE_METRICS_BIND is where every process listens; each scraped pod's port is it."""
    [config] = [doc for doc in yaml.safe_load_all((DEPLOY_K8S / "config.yaml").read_text()) if doc and doc["kind"] == "ConfigMap"]
    port = config["data"]["BOXOFFICE_METRICS_BIND"].rpartition(":")[2]
    scraped = scraped_deployments()
    assert {command for command, _ in scraped.values()} == {"worker", "webhooks", "codec-server"}
    assert all(annotated == port for _, annotated in scraped.values()), scraped


async def serving_command(command: str, environment: dict[str, str], ready: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        command,
        env=dict(os.environ, BOXOFFICE_ENV="dev", **environment),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                await http.get(ready)
                return process
            except httpx.TransportError:
                assert process.returncode is None, "exited"
                await asyncio.sleep(0.05)
    raise AssertionError(f"{command} never answered")


async def stopped(process: asyncio.subprocess.Process) -> None:
    process.terminate()
    await asyncio.wait_for(process.wait(), 30)


def series(text: str, name: str, *labels: str) -> bool:
    return any(line.startswith(name) and all(label in line for label in labels) for line in text.splitlines())


async def test_codec_server_serves_its_request_metrics_at_the_metrics_bind() -> None:
    """Issue 22: the codec server's pods are annotated for scraping on BOXOFFICE_METRICS_BIND; it served nothing there."""
    port, metrics = free_port(), free_port()
    process = await serving_command(
        "codec-server",
        {
            "BOXOFFICE_CODEC_KEYS": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
            "BOXOFFICE_CODEC_AUTH_TOKEN": "t" * 32,
            "BOXOFFICE_CODEC_PORT": str(port),
            "BOXOFFICE_METRICS_BIND": f"127.0.0.1:{metrics}",
        },
        f"http://127.0.0.1:{port}/decode",
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            token = {"authorization": f"Bearer {'t' * 32}"}
            assert (await http.post("/decode", json={"payloads": []}, headers=token)).status_code == 200
            assert (await http.post("/decode", json={"payloads": []})).status_code == 401
            assert (await http.get("/.env")).status_code == 404
            text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
    finally:
        await stopped(process)
    assert series(text, "boxoffice_http_requests", 'server="codec"', 'path="/decode"', 'method="POST"', 'status="200"')
    assert series(text, "boxoffice_http_requests", 'path="/decode"', 'status="401"')
    assert series(text, "boxoffice_http_requests", 'path="other"', 'status="404"')
    assert series(text, "boxoffice_http_request_latency_bucket", 'server="codec"', 'path="/decode"')


async def test_webhook_receiver_serves_its_metrics_at_the_metrics_bind(dev_env: WorkflowEnvironment) -> None:
    """The webhooks pods are annotated for scraping too: the receiver's requests and its Temporal client's metrics."""
    port, metrics = free_port(), free_port()
    process = await serving_command(
        "webhooks",
        {
            "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "BOXOFFICE_WEBHOOKS_PORT": str(port),
            "BOXOFFICE_ATM_WEBHOOK_SECRETS": "s" * 32,
            "BOXOFFICE_METRICS_BIND": f"127.0.0.1:{metrics}",
        },
        f"http://127.0.0.1:{port}/webhooks/atm",
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            assert (await http.post("/webhooks/atm", content=b"{}")).status_code in (400, 401)
            text = (await http.get(f"http://127.0.0.1:{metrics}/metrics")).text
    finally:
        await stopped(process)
    assert series(text, "boxoffice_http_requests", 'server="webhooks"', 'path="/webhooks/atm"', 'method="POST"')
    assert series(text, "temporal_")  # the SDK client's own
