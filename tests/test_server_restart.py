"""The Temporal dev server (SQLite file) restarts in the middle of a batch: purchases resume from
its file and finish, each with one order."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.atom import AtomActivities
from simulators.atom import SHOWTIME, AtomSimulator
from tests.conftest import atom_request, atom_settings, binary, free_port
from workers import client as purchases
from workers.client import ensure_search_attributes, purchase_outcome
from workers.devstack import dev_server_args
from workers.worker import serving
from workflows.models import PurchaseState


async def dev_server(port: int, db: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        binary("temporal"),
        "server",
        "start-dev",
        "--headless",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        *dev_server_args(db),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def connect(port: int) -> Client:
    for _ in range(200):
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        except RuntimeError:
            await asyncio.sleep(0.1)
    raise AssertionError("dev server did not start")


async def restart_during_batch(db: Path, sim: AtomSimulator, count: int, restarts: int) -> list:
    """Runs `count` purchases and kills/restarts the server `restarts` times, each after a further
    share of the orders was placed. Seats R1..R{count} must exist in `sim`."""
    port = free_port()
    server = await dev_server(port, db)
    client = await connect(port)
    await ensure_search_attributes(client)
    atom = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=sim.app))
    try:
        async with serving(client, "restart", [atom]):
            handles = [
                await purchases.start_purchase(
                    client,
                    atom_request(
                        f"restart-{n}",
                        items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": [f"R{n + 1}"]}],
                    ),
                    "restart",
                )
                for n in range(count)
            ]
            for restart in range(1, restarts + 1):
                while len(sim.orders) < count * restart // (restarts + 1):  # mid-batch
                    await asyncio.sleep(0.02)
                server.kill()
                await server.wait()
                server = await dev_server(port, db)  # same file, same port: the worker reconnects
            return await asyncio.wait_for(asyncio.gather(*(purchase_outcome(h) for h in handles)), 300)
    finally:
        await atom.aclose()
        server.terminate()
        await server.wait()


async def test_purchases_resume_after_a_server_restart(tmp_path: Path) -> None:
    sim = AtomSimulator(api_key="test-atom-key", fulfil_after_polls=2)  # each purchase polls for ~4 s
    sim.showtimes[SHOWTIME].seats |= {f"R{n}": "available" for n in range(1, 7)}
    results = await restart_during_batch(tmp_path / "temporal.db", sim, count=6, restarts=1)
    assert [r.state for r in results] == [PurchaseState.FULFILLED] * 6
    keys = [o["clientRequestId"] for o in sim.ledger()["orders"]]
    assert len(keys) == len(set(keys)) == 6
