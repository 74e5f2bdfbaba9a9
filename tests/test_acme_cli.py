"""`boxoffice orders update|delete|refund --item` against a dev server and the strict ACME simulator:
the excerpt's Update an Order (PUT) and Delete an Order reach ACME through the worker, like
search/show/refund; mistakes are one line and exit 1."""

from __future__ import annotations

import json

import httpx
from temporalio.testing import WorkflowEnvironment

from activities.acme import AcmeActivities
from simulators.acme import AcmeSimulator
from tests.conftest import acme_request, acme_settings, provider_worker
from tests.test_cli import boxoffice, refused
from workers.client import purchase_outcome, start_purchase


async def test_orders_update_delete_and_partial_refund_from_the_shell(dev_env: WorkflowEnvironment) -> None:
    address = dev_env.client.service_client.config.target_host
    sim = AcmeSimulator(api_key="test-acme-key")
    activities = AcmeActivities(acme_settings(), transport=httpx.ASGITransport(app=sim.app))
    async with provider_worker(dev_env.client, activities) as tq:
        bought = await purchase_outcome(await start_purchase(dev_env.client, acme_request("cli-upd"), tq))
        order_id = bought.provider_order_id
        assert order_id is not None, bought.failure
        [item] = sim.orders[order_id]["orderItems"]

        async def orders(*args: str) -> tuple[int, str, str]:
            ran = await boxoffice("orders", *args, address=address, BOXOFFICE_TASK_QUEUE=tq)
            return ran.code, ran.out, ran.err

        code, out, err = await orders("update", order_id, "--last-name", "Roe", "--phone", "+15551234")
        assert code == 0, err
        assert json.loads(out)["order"]["order_id"] == order_id
        assert (sim.orders[order_id]["contactLastName"], sim.orders[order_id]["phoneNumber"]) == ("Roe", "+15551234")

        code, out, err = await orders("refund", order_id, "--item", f"{item['itemId']}=1", "--refund-id", "r1")
        assert code == 0, err
        assert json.loads(out)["amount"] == "100.00" and sim.refunds[0]["amount"] == "100.00"

        refused(await boxoffice("orders", "delete", order_id, address=address, BOXOFFICE_TASK_QUEUE=tq), 1, "--yes")
        assert order_id in sim.orders
        code, out, err = await orders("delete", order_id, "--yes")
        assert code == 0 and json.loads(out)["deleted"] is True, err
        assert order_id not in sim.orders

        for args in (["update", "42", "--notes", "x"], ["delete", "42", "--yes"]):
            refused(await boxoffice("orders", *args, address=address, BOXOFFICE_TASK_QUEUE=tq), 1, "no ACME order 42")
    undocumented = await boxoffice("orders", "refund", "42", "--reason-code", "CUSTOMER_REQUEST")
    assert undocumented.code == 2 and "invalid choice: 'CUSTOMER_REQUEST'" in undocumented.err
