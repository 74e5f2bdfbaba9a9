"""With BOXOFFICE_LOG_FORMAT=json a worker writes JSON lines only: the SDK core's (Rust) log lines are
forwarded into the same stream instead of its own ANSI-coloured text (issue 22).

Forwarding as the SDK documents it: https://python.temporal.io/temporalio.runtime.LogForwardingConfig.html
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from simulators.atom import AtomSimulator
from tests.conftest import atom_request, free_port
from tests.test_server_restart import connect, dev_server
from workers.client import ensure_search_attributes, purchase_outcome, start_purchase
from workflows.models import PurchaseState


async def test_json_format_writes_json_lines_only_core_lines_included(
    tmp_path: Path, atom_http: tuple[AtomSimulator, str]
) -> None:
    _, atom_url = atom_http
    port = free_port()
    server = await dev_server(port, tmp_path / "temporal.db")
    client = await connect(port)
    await ensure_search_attributes(client)
    environment = dict(
        os.environ,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        BOXOFFICE_ENV="dev",
        BOXOFFICE_LOG_FORMAT="json",
        BOXOFFICE_TASK_QUEUE="logs",
        BOXOFFICE_ATOM_BASE_URL=atom_url,
        BOXOFFICE_ATOM_API_KEY="test-atom-key",
        BOXOFFICE_SWEEP_ENABLED="false",
        BOXOFFICE_SHUTDOWN_GRACE_SECONDS="1",
    )
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        "worker",
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    lines: list[str] = []

    async def collect(stream: asyncio.StreamReader) -> None:
        async for line in stream:
            lines.append(line.decode().rstrip("\n"))

    assert worker.stdout is not None and worker.stderr is not None
    readers = [asyncio.create_task(collect(worker.stdout)), asyncio.create_task(collect(worker.stderr))]
    try:
        result = await asyncio.wait_for(purchase_outcome(await start_purchase(client, atom_request("logs-1"), "logs")), 60)
        assert result.state == PurchaseState.FULFILLED
        # The server goes away: the core's pollers complain (the lines that came out coloured).
        server.kill()
        await server.wait()
        for _ in range(200):
            if any("temporalio_client" in line or "sdk_core" in line for line in lines):
                break
            await asyncio.sleep(0.1)
        server = await dev_server(port, tmp_path / "temporal.db")
        await connect(port)
        await asyncio.sleep(1)
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
        await asyncio.gather(*readers)
        server.terminate()
        await server.wait()
    assert lines
    parsed = []
    for line in lines:
        assert "\x1b[" not in line, line
        parsed.append(json.loads(line))  # every line, or this fails naming it
    core = [entry for entry in parsed if entry["logger"].startswith("temporalio.core")]
    assert core, lines
    assert all(entry["level"] in ("warning", "error") and entry["event"] and entry["target"] for entry in core)
