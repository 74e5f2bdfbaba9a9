"""Operators' view: activity log lines bound to their purchase (JSON, redacted) and metrics."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from simulators.atom import AtomSimulator
from tests.conftest import atom_request, atom_worker, binary
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase
from workers.logs import configure
from workers.telemetry import sdk_runtime
from workers.worker import SANDBOX, WORKFLOWS


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
        "purchase-log-1", "log-1", "atom", "lease")
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_prometheus_metrics_per_provider_and_outcome() -> None:
    port = free_port()
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=binary("temporal-test-server"), data_converter=pydantic_data_converter,
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
