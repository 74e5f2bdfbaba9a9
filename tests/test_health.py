"""/healthz (the workers' readiness probe in deploy/k8s) says whether the workers can poll the Temporal
server: 503 soon after the server went away, 200 again once it is back (issue 22: it answered 200
fifteen seconds after the server was killed).

GetSystemInfo as the liveness question: https://python.temporal.io/temporalio.service.WorkflowService.html
(the call Client.connect makes); Worker.is_running: https://python.temporal.io/temporalio.worker.Worker.html
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.test_server_restart import connect, dev_server
from workers.settings import WorkerSettings
from workers.worker import HEALTH_CHECK_SECONDS, HEALTHY_WITHIN_SECONDS, run_worker


async def status_within(url: str, status: int, seconds: float) -> float:
    """Seconds until GET `url` answered `status`; fails after `seconds`."""
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() - started < seconds:
            try:
                if (await http.get(url)).status_code == status:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {seconds} s")


async def test_healthz_is_503_while_the_server_is_gone_and_200_once_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port, health_port = free_port(), free_port()
    server = await dev_server(port, tmp_path / "temporal.db")
    await connect(port)
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    settings = WorkerSettings(
        BOXOFFICE_TASK_QUEUE="health", BOXOFFICE_HEALTH_BIND=f"127.0.0.1:{health_port}", BOXOFFICE_SHUTDOWN_GRACE_SECONDS=1
    )
    monkeypatch.setenv("BOXOFFICE_SWEEP_ENABLED", "false")
    stop = asyncio.Event()
    running = asyncio.create_task(run_worker(settings, stop=stop))
    url = f"http://127.0.0.1:{health_port}/healthz"
    bound = HEALTHY_WITHIN_SECONDS + 2 * HEALTH_CHECK_SECONDS + 1
    try:
        await status_within(url, 200, 30)
        server.kill()
        await server.wait()
        assert await status_within(url, 503, bound) <= bound
        async with httpx.AsyncClient() as http:
            assert "Temporal server" in (await http.get(url)).text
        server = await dev_server(port, tmp_path / "temporal.db")
        await status_within(url, 200, 60)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        server.terminate()
        await server.wait()
