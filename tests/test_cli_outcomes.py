"""Issue 22, the command line: each way a purchase can end has its own exit code (a script must not
read stuck money as success), the remaining tracebacks are one or two lines, and the serving
commands' --help names their settings."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from simulators.faults import Fault
from tests.conftest import atom_request, atom_worker
from tests.test_cli import Ran, boxoffice, refused
from workers.cli import EXIT_ATTENTION, EXIT_COMPENSATION_FAILED, EXIT_UNSUCCESSFUL, purchase_exit_code
from workers.client import purchase_outcome, start_purchase
from workers.codec import EncryptionCodec, data_converter
from workflows.models import PurchaseState

README = Path(__file__).resolve().parent.parent / "README.md"
# Atom refuses the create: the key's earlier flow placed an order, which cannot be named or undone.
DUPLICATE = {"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "clientRequestId was used by a previous flow"}


def codec_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_compensation_failed_exits_4_from_buy_wait_result_and_status(dev_env: WorkflowEnvironment) -> None:
    """Before, `buy --wait` and `result` exited 0 for COMPENSATION_FAILED: a script read money or seats
    stuck at the provider as success."""
    address = dev_env.client.service_client.config.target_host
    sim = AtomSimulator()
    sim.faults.add(Fault(endpoint="create", status=409, times=2, body=DUPLICATE))
    async with atom_worker(dev_env.client, sim) as tq:

        async def run(*args: str) -> Ran:
            return await boxoffice(*args, address=address, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev")

        ran = await run("buy", json.dumps(atom_request("stuck-1")), "--wait")
        assert ran.code == EXIT_COMPENSATION_FAILED == 4, (ran.code, ran.err)
        assert "COMPENSATION_FAILED" in ran.out and "compensated   cancel order: FAILED" in ran.out, ran.out
        assert "an operator must act" in ran.err and "Traceback" not in ran.err
        for args in (["result", "stuck-1"], ["result", "stuck-1", "--json"], ["status", "stuck-1"]):
            ran = await run(*args)
            assert ran.code == 4, (args, ran.code, ran.err)
        assert json.loads((await run("result", "stuck-1", "--json")).out)["state"] == "COMPENSATION_FAILED"


def test_each_state_has_its_documented_exit_code() -> None:
    """`result` / `buy --wait` wait for the end; `status`, `confirm`, `cancel` and `buy` show the state
    now and exit non-zero only where an operator must act."""
    ended = {state: purchase_exit_code(state, ended=True) for state in PurchaseState if state.final}
    assert ended == {
        PurchaseState.FULFILLED: 0,
        PurchaseState.FAILED: EXIT_UNSUCCESSFUL,
        PurchaseState.CANCELLED: EXIT_UNSUCCESSFUL,
        PurchaseState.EXPIRED: EXIT_UNSUCCESSFUL,
        PurchaseState.COMPENSATION_FAILED: 4,
    }
    now = {state: purchase_exit_code(state, ended=False) for state in PurchaseState}
    assert now.pop(PurchaseState.COMPENSATION_FAILED) == 4
    assert now.pop(PurchaseState.NEEDS_ATTENTION) == EXIT_ATTENTION == 5
    assert set(now.values()) == {0}  # FAILED etc.: `status` showed what was asked (as before)


async def test_result_help_documents_the_exit_codes() -> None:
    for command in (["result"], ["buy"], ["status"]):
        ran = await boxoffice(*command, "--help")
        assert ran.code == 0
        listed = {int(code) for code in re.findall(r"^  (\d)  ", ran.out, re.MULTILINE)}
        assert listed == {0, 1, 2, 3, 4, 5, 6}, (command, ran.out)
        assert "COMPENSATION_FAILED" in ran.out and "NEEDS_ATTENTION" in ran.out


async def test_a_reused_purchase_id_with_another_request_is_one_line(dev_env: WorkflowEnvironment) -> None:
    """Before: 18 lines of traceback ending in PurchaseConflict."""
    address = dev_env.client.service_client.config.target_host
    async with atom_worker(dev_env.client, AtomSimulator()) as tq:
        first = await boxoffice(
            "buy", json.dumps(atom_request("same-1")), address=address, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev"
        )
        assert first.code == 0, first.err
        other = atom_request("same-1", items=[{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "quantity": 3}])
        ran = await boxoffice("buy", json.dumps(other), address=address, BOXOFFICE_TASK_QUEUE=tq, BOXOFFICE_ENV="dev")
    refused(ran, 1, "same-1", "different request", "new purchase id")


async def test_encrypted_history_without_the_keys_is_one_line(dev_env: WorkflowEnvironment) -> None:
    """Before: 36 lines ending in `KeyError: 'Unknown payload encoding binary/encrypted'`."""
    target = dev_env.client.service_client.config.target_host
    key = codec_key()
    encrypted = await Client.connect(
        target, namespace=dev_env.client.namespace, data_converter=data_converter(EncryptionCodec.from_setting(f"k1:{key}"))
    )
    async with atom_worker(encrypted, AtomSimulator()) as tq:
        await purchase_outcome(await start_purchase(encrypted, atom_request("secret-1"), tq))
        for args in (["status", "secret-1"], ["result", "secret-1"]):
            ran = await boxoffice(*args, address=target, BOXOFFICE_TASK_QUEUE=tq)
            refused(ran, 1, "history is encrypted", "BOXOFFICE_CODEC_KEYS")
        ran = await boxoffice("result", "secret-1", address=target, BOXOFFICE_CODEC_KEYS=f"k2:{codec_key()}")
        refused(ran, 1, "k1", "BOXOFFICE_CODEC_KEYS")
        assert (await boxoffice("result", "secret-1", address=target, BOXOFFICE_CODEC_KEYS=f"k1:{key}")).code == 0


async def test_a_port_out_of_range_names_the_variable_and_the_range() -> None:
    """Before: a traceback ending in `OverflowError: bind(): port must be 0-65535`."""
    for port in ("99999", "-1", "0"):
        # A secret of its own: dev mode accepts the simulator's only with a simulator answering.
        ran = await boxoffice(
            "webhooks", BOXOFFICE_ENV="dev", BOXOFFICE_WEBHOOKS_PORT=port, BOXOFFICE_ATM_WEBHOOK_SECRETS="s" * 40
        )
        refused(ran, 1, "BOXOFFICE_WEBHOOKS_PORT", port, "1-65535")
    ran = await boxoffice(
        "codec-server",
        BOXOFFICE_ENV="dev",
        BOXOFFICE_CODEC_KEYS=f"k1:{codec_key()}",
        BOXOFFICE_CODEC_AUTH_TOKEN="t" * 40,
        BOXOFFICE_CODEC_PORT="70000",
    )
    refused(ran, 1, "BOXOFFICE_CODEC_PORT", "70000", "1-65535")


async def test_a_codec_key_pasted_without_its_id_is_not_echoed() -> None:
    """Issue 22 (fixed on main): the error quoted the whole key."""
    key = codec_key()
    ran = await boxoffice("status", "p-1", BOXOFFICE_CODEC_KEYS=key)
    refused(ran, 1, "BOXOFFICE_CODEC_KEYS", "id:base64")
    assert key not in ran.err and key[:12] not in ran.err


async def test_the_worker_refuses_the_simulators_public_credentials_outside_dev() -> None:
    """Issue 22 (fixed on main by the production refusals): the worker started silently."""
    ran = await boxoffice(
        "worker",
        BOXOFFICE_CODEC_KEYS=f"k1:{codec_key()}",
        BOXOFFICE_ATOM_BASE_URL="https://api-beta.atomtickets.com",
        BOXOFFICE_ATOM_API_KEY=AtomSimulator.api_key,
    )
    refused(ran, 1, "BOXOFFICE_ATOM_API_KEY", "public secret", "BOXOFFICE_ENV=dev")
    assert AtomSimulator.api_key not in ran.err


async def test_serving_commands_help_lists_options_and_the_settings_they_read() -> None:
    """Before, `dev`, `worker`, `webhooks` and `codec-server --help` showed only `-h`. Every variable
    named is one README's Configuration table documents."""
    documented = documented_variables()
    expected = {
        "dev": ["TEMPORAL_ADDRESS", "BOXOFFICE_SIMULATORS_PORT", "BOXOFFICE_WEBHOOKS_PORT", "BOXOFFICE_HOME"],
        "worker": [
            "TEMPORAL_ADDRESS",
            "TEMPORAL_NAMESPACE",
            "BOXOFFICE_TASK_QUEUE",
            "BOXOFFICE_WORKER_ROLES",
            "BOXOFFICE_CODEC_KEYS",
            "BOXOFFICE_ENV",
            "BOXOFFICE_SHUTDOWN_GRACE_SECONDS",
        ],
        "webhooks": [
            "BOXOFFICE_ATM_WEBHOOK_SECRETS",
            "BOXOFFICE_WEBHOOKS_HOST",
            "BOXOFFICE_WEBHOOKS_PORT",
            "TEMPORAL_ADDRESS",
            "BOXOFFICE_ENV",
        ],
        "codec-server": [
            "BOXOFFICE_CODEC_KEYS",
            "BOXOFFICE_CODEC_AUTH_TOKEN",
            "BOXOFFICE_CODEC_CORS_ORIGINS",
            "BOXOFFICE_CODEC_HOST",
            "BOXOFFICE_CODEC_PORT",
        ],
    }
    for command, variables in expected.items():
        ran = await boxoffice(command, "--help")
        assert ran.code == 0, ran.err
        assert "environment" in ran.out.lower(), ran.out
        for variable in variables:
            assert variable in ran.out, (command, variable, ran.out)
        named = set(re.findall(VARIABLE, ran.out))
        # A name ending in `_` stands for a family (BOXOFFICE_ATOM_*): some documented name must start so.
        undocumented = {
            name
            for name in named
            if not (name in documented if not name.endswith("_") else any(d.startswith(name) for d in documented))
        }
        assert not undocumented, (command, undocumented)


VARIABLE = r"\b((?:BOXOFFICE|TEMPORAL|OTEL)_[A-Z0-9_<>]+)"


def documented_variables() -> set[str]:
    """The variables README names; a table row's `_SUFFIX` shorthand completes the full name before it
    (`BOXOFFICE_CODEC_AUTH_TOKEN`, `_HOST`: BOXOFFICE_CODEC_HOST)."""
    names: set[str] = set()
    for line in README.read_text().splitlines():
        full = re.findall(r"`" + VARIABLE[2:], line)
        names.update(full)
        for suffix in re.findall(r"`(_[A-Z0-9_]+)`", line):
            for name in full:
                parts = name.split("_")
                names.update("_".join(parts[:cut]) + suffix for cut in range(2, len(parts)))
    return names


async def test_dev_checks_its_ports_before_starting_anything() -> None:
    refused(await boxoffice("dev", BOXOFFICE_WEBHOOKS_PORT="99999"), 1, "BOXOFFICE_WEBHOOKS_PORT", "1-65535")
    refused(await boxoffice("demo", BOXOFFICE_SIMULATORS_PORT="65533"), 1, "BOXOFFICE_SIMULATORS_PORT", "1-65531")
