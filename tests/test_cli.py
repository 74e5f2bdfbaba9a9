"""The `boxoffice` command as a newcomer meets it: ordinary mistakes give one or two lines and a
non-zero exit code, never a traceback; results and statuses read at a glance."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass

import httpx
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities
from simulators.acme import AcmeSimulator
from simulators.atm import AtmSimulator
from simulators.atom import AtomSimulator
from tests.conftest import (
    acme_request,
    acme_settings,
    acme_worker,
    atom_request,
    atom_worker,
    free_port,
    provider_worker,
)

# Set in a developer's shell, these would change what the commands under test do.
SHELL_SETTINGS = ("BOXOFFICE_ENV", "BOXOFFICE_ATM_WEBHOOK_SECRETS", "BOXOFFICE_CODEC_KEYS")


@dataclass
class Ran:
    code: int
    out: str
    err: str


async def boxoffice(*args: str, address: str | None = None, stdin: str = "", **env: str) -> Ran:
    environment = {k: v for k, v in os.environ.items() if k not in SHELL_SETTINGS}
    environment.update(TEMPORAL_ADDRESS=address or f"127.0.0.1:{free_port()}", **env)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers.cli",
        *args,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), 60)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def refused(ran: Ran, code: int, *words: str) -> None:
    """Exit `code`, one or two lines on stderr naming `words`, no traceback."""
    assert ran.code == code, (ran.code, ran.err)
    lines = ran.err.strip().splitlines()
    assert 1 <= len(lines) <= 2, ran.err
    assert "Traceback" not in ran.err
    for word in words:
        assert word in ran.err, (word, ran.err)


async def test_no_server_is_one_line_for_every_client_command() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    request = json.dumps(atom_request("p-1"))
    for args in (
        ["status", "p-1"],
        ["result", "p-1"],
        ["confirm", "p-1"],
        ["cancel", "p-1"],
        ["buy", request],
        ["orders", "show", "30263798"],
        ["orders", "refund", "42"],
    ):
        # buy outside dev without codec keys is refused before connecting (tests/test_cli_fail_closed.py).
        dev = {"BOXOFFICE_ENV": "dev"} if args[0] == "buy" else {}
        refused(await boxoffice(*args, address=address, **dev), 1, f"no Temporal server at {address}", "boxoffice dev")


async def test_ordinary_mistakes_before_any_server() -> None:
    refused(await boxoffice("buy", "@/nonexistent/request.json"), 1, "cannot read", "/nonexistent/request.json")
    refused(await boxoffice("confirm", "p-1", "--total", "abc"), 2, "--total", "not a number")
    bad_key = "k1:" + base64.b64encode(b"too short").decode()
    ran = await boxoffice("status", "p-1", BOXOFFICE_CODEC_KEYS=bad_key)
    refused(ran, 1, "BOXOFFICE_CODEC_KEYS", "k1")
    assert bad_key[3:] not in ran.err  # the key itself is never printed
    # A bad request names the fields, not the values given (a card token here).
    bad = acme_request(
        "p-5",
        items=[{"event_id": "e", "ticketing_type_id": "t", "quantity": 0}],
        buyer={"email": "not-an-email", "first_name": "Jane", "last_name": "Doe"},
    )
    ran = await boxoffice("buy", "-", stdin=json.dumps(bad))
    refused(ran, 1, "invalid request", "acme.items.0.quantity", "acme.buyer.email")
    assert "tok_visa_4242" not in ran.err and "not-an-email" not in ran.err


async def test_webhook_receiver_fails_closed_and_names_a_busy_port() -> None:
    refused(await boxoffice("webhooks"), 1, "BOXOFFICE_ATM_WEBHOOK_SECRETS")
    public = AtmSimulator.webhook_secret  # published in this repository
    refused(await boxoffice("webhooks", BOXOFFICE_ATM_WEBHOOK_SECRETS=public), 1, "public secret", "BOXOFFICE_ENV=dev")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        ran = await boxoffice(
            "webhooks",
            BOXOFFICE_ENV="dev",
            BOXOFFICE_WEBHOOKS_PORT=port,
            BOXOFFICE_ATM_WEBHOOK_SECRETS="whsec_not_the_simulators",
        )
    refused(ran, 1, f"127.0.0.1:{port}", "BOXOFFICE_WEBHOOKS_PORT")


async def test_worker_refuses_a_named_provider_it_cannot_serve() -> None:
    ran = await boxoffice(
        "worker", BOXOFFICE_WORKER_ROLES="workflows,atom", BOXOFFICE_ATOM_BASE_URL="", BOXOFFICE_ATOM_API_KEY=""
    )
    refused(ran, 1, "atom is not configured", "BOXOFFICE_ATOM_BASE_URL", "BOXOFFICE_ATOM_API_KEY")


async def test_purchases_through_the_cli_read_at_a_glance(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    sim = AtomSimulator()
    async with atom_worker(dev_env.client, sim, activities_per_second=None) as tq:

        async def run(*args: str, stdin: str = "") -> Ran:
            return await boxoffice(*args, address=address, stdin=stdin, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev")

        # Unknown purchase: one line, whatever the command.
        for args in (["status", "nope"], ["result", "nope"], ["confirm", "nope"], ["cancel", "nope"]):
            refused(await run(*args), 1, "no purchase nope")

        # Fulfilled: result prints state, order, total and tickets; exit 0.
        ran = await run("buy", json.dumps(atom_request("ok-1")), "--wait")
        assert ran.code == 0, ran.err
        assert ran.out.splitlines()[0] == "purchase-ok-1"
        assert "FULFILLED" in ran.out and "seat A1" in ran.out and "36.18 USD" in ran.out
        again = await run("result", "ok-1")
        assert again.code == 0 and "seat A2" in again.out and "order" in again.out

        # Buying again under the same id shows the existing purchase instead of a new one.
        ran = await run("buy", json.dumps(atom_request("ok-1")))
        assert ran.code == 0, ran.err
        assert "purchase-ok-1 already exists (started earlier); showing it" in ran.out
        assert "FULFILLED" in ran.out
        assert len(sim.ledger()["orders"]) == 1
        refused(await run("confirm", "ok-1"), 1, "purchase ok-1 has ended", "boxoffice result ok-1")

        # A seat that cannot be had: buy --wait exits 3 and names the reason.
        ran = await run(
            "buy",
            json.dumps(
                atom_request("taken-1", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "seat_ids": ["A3"]}])
            ),
            "--wait",
        )
        assert ran.code == 3, ran.err
        assert "FAILED" in ran.out and "SEAT_UNAVAILABLE" in ran.out

    # Held, then cancelled: status shows the hold; result exits 3 and lists what was undone.
    async with acme_worker(dev_env.client, AcmeSimulator()) as tq:

        async def acme(*args: str) -> Ran:
            return await boxoffice(*args, address=address, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev")

        assert (await acme("buy", json.dumps(acme_request("held-1", confirmation="manual")))).code == 0
        for _ in range(100):
            status = await acme("status", "held-1")
            if "AWAITING_CONFIRMATION" in status.out:
                break
            await asyncio.sleep(0.1)
        assert status.code == 0 and "held until" in status.out and "total" in status.out, status.out
        assert "{" not in status.out  # text, not JSON
        refused(await acme("confirm", "held-1", "--total", "1.00"), 1, "refused")
        assert (await acme("cancel", "held-1", "--reason", "buyer left")).code == 0
        ran = await acme("result", "held-1")
        assert ran.code == 3, ran.err
        assert "CANCELLED" in ran.out and "buyer left" in ran.out
        assert "compensated   delete reservation: ok" in ran.out, ran.out
        assert json.loads((await acme("result", "held-1", "--json")).out)["state"] == "CANCELLED"


async def test_unknown_acme_order_is_one_line(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    sim = AcmeSimulator(api_key="test-acme-key")
    activities = AcmeActivities(acme_settings(), transport=httpx.ASGITransport(app=sim.app))
    async with provider_worker(dev_env.client, activities) as tq:
        for args in (["orders", "show", "42"], ["orders", "refund", "42"]):
            refused(await boxoffice(*args, address=address, BOXOFFICE_TASK_QUEUE=tq), 1, "no ACME order 42")


async def test_confirm_relays_a_fresh_recaptcha_token(dev_env: WorkflowEnvironment) -> None:
    """ACME's checkout needs the buyer's reCAPTCHA token, which lives two minutes: the token given to
    `confirm` is the one checkout sends, not the (stale) one the purchase was started with."""
    address = dev_env.client.service_client.config.target_host
    sim = AcmeSimulator()
    async with acme_worker(dev_env.client, sim) as tq:

        async def acme(*args: str) -> Ran:
            return await boxoffice(*args, address=address, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev")

        assert (await acme("buy", json.dumps(acme_request("fresh-1", confirmation="manual")))).code == 0
        for _ in range(100):
            if "AWAITING_CONFIRMATION" in (await acme("status", "fresh-1")).out:
                break
            await asyncio.sleep(0.1)
        confirmed = await acme("confirm", "fresh-1", "--recaptcha-token", "fresh-token-1")
        assert confirmed.code == 0, confirmed.err
        assert "fresh-token-1" not in confirmed.out + confirmed.err
    [checkout] = [c for c in sim.calls if c["endpoint"] == "checkout"]
    assert checkout["headers"]["x-acme-captcha-token"] == "fresh-token-1"
