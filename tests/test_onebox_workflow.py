"""PurchaseWorkflow for Onebox against the Onebox simulator, on the time-skipping test server."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError
from temporalio.testing import WorkflowEnvironment

from simulators.faults import Fault
from simulators.onebox import OneboxSimulator
from tests.conftest import (
    onebox_request,
    onebox_worker,
    purchase_duration,
    wait_for_state,
)
from tests.test_atom_workflow import record
from workers import client as purchases
from workers.client import parse_request, purchase_outcome, start_purchase
from workflows.models import ConfirmRequest, PurchaseState


def endpoints(sim: OneboxSimulator) -> list[str]:
    return [c["endpoint"] for c in sim.calls]


async def test_numbered_seats_purchase(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    async with onebox_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, onebox_request("ob-1"), tq)
        result = await purchase_outcome(handle)
        await record(handle, "onebox_numbered_fulfilled")
    assert result.state == PurchaseState.FULFILLED
    code = sim.ledger()["baskets"][0]["code"]
    assert result.provider_order_id == code and result.provider_status == "CONFIRM"
    assert [(t.seat, t.barcode) for t in result.tickets] == [("B-1", f"OBX{code}011"), ("B-2", f"OBX{code}012")]
    assert result.receipt is not None and (result.receipt.total, result.receipt.currency) == (Decimal("53.0"), "EUR")
    # Each step that adds or commits reads the basket first (an earlier attempt or run may have done it).
    assert endpoints(sim) == ["token", "create", "basket", "seats", "buyer-data", "basket", "pre-confirm", "basket", "confirm"]
    assert sim.ledger()["sold"] == [11, 12] and sim.confirmations == 1
    attributes = (await handle.describe()).search_attributes
    assert attributes["BoxofficeProviderOrderId"] == [code] and attributes["BoxofficeProvider"] == ["onebox"]


async def test_automatic_seats_purchase(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    request = onebox_request("ob-auto", seat_ids=[], price_type_id=1, quantity=3)
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, request, tq))
    assert result.state == PurchaseState.FULFILLED
    assert [t.seat for t in result.tickets] == ["A-1", "A-2", "A-3"]
    auto = next(c for c in sim.calls if c["endpoint"] == "seats-auto")
    assert auto["body"] == {"price_type_id": 1, "session_id": 1001, "quantity": 3}


async def test_seat_unavailable(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request("ob-taken", seat_ids=[6, 7]), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "SEAT_UNAVAILABLE"
    assert result.failure.provider_code == "ORDER_SEAT_NOT_AVAILABLE"
    assert result.failure.trace_id is not None and result.failure.trace_id.startswith("trace-")
    assert result.compensations == [] and sim.ledger()["held"] == []


async def test_hold_expiry_releases_seats(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    async with onebox_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, onebox_request("ob-exp", confirmation="manual"), tq)
        result = await purchase_outcome(handle)
        waited = await purchase_duration(handle)
        await record(handle, "onebox_manual_expired")
    assert result.state == PurchaseState.EXPIRED
    assert result.failure is not None and result.failure.reason == "HOLD_EXPIRED"
    assert timedelta(seconds=560) <= waited < timedelta(seconds=600)  # default 600 s basket, 30 s margin
    release = next(c for c in sim.calls if c["endpoint"] == "release")
    assert release["method"] == "DELETE" and [k for k, _ in release["query"]] == ["id", "id"]
    assert sim.ledger()["held"] == [] and "confirm" not in endpoints(sim)
    assert [(c.action, c.ok) for c in result.compensations] == [("release seats", True)]


async def test_cancel_after_pre_confirm_releases_seats(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    async with onebox_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, onebox_request("ob-cancel", confirmation="manual"), tq)
        status = await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        assert status.provider_ids["order_id"] == sim.ledger()["baskets"][0]["code"]
        assert sim.ledger()["held"] == [11, 12]
        cancelled = await purchases.cancel(env.client, "ob-cancel", "buyer left")
        result = await purchase_outcome(handle)
    assert cancelled.state == result.state == PurchaseState.CANCELLED
    assert sim.ledger()["held"] == [] and sim.confirmations == 0
    assert [(c.action, c.ok) for c in result.compensations] == [("release seats", True)]


async def test_lost_confirm_response_confirms_once(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    sim.faults.add(Fault(endpoint="confirm", status=502, lost=True))
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request("ob-lost"), tq))
    assert result.state == PurchaseState.FULFILLED
    assert sim.confirmations == 1
    # The retry read the basket (confirmed) and the order by its code, and took it, instead of confirming again.
    assert endpoints(sim)[-3:] == ["confirm", "basket", "read"] and endpoints(sim).count("confirm") == 1
    assert len(result.tickets) == 2 and all(t.barcode for t in result.tickets)


async def test_expired_token_is_refreshed_mid_purchase(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    async with onebox_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, onebox_request("ob-token", confirmation="manual"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        sim.expire_tokens()
        await purchases.confirm(env.client, "ob-token", ConfirmRequest())
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED
    assert endpoints(sim).count("token") == 2
    # The refused call was repeated with the new token inside the same activity attempt.
    assert endpoints(sim)[-4:] == ["basket", "token", "basket", "confirm"] and sim.confirmations == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"seat_ids": [], "price_type_id": None, "quantity": None},
        {"seat_ids": [1], "price_type_id": 1, "quantity": 1},
        {"seat_ids": [1, 1]},
    ],
)
def test_onebox_request_needs_seats_or_automatic_choice(fields: dict) -> None:
    with pytest.raises(ValidationError):
        parse_request(onebox_request("ob-bad", **fields))


async def test_onebox_unanswered_confirm_is_resent_after_a_404_read_back(env: WorkflowEnvironment) -> None:
    sim = OneboxSimulator()
    sim.faults.add(Fault(endpoint="confirm", status=502))  # failed before confirming anything
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request("ob-resend"), tq))
    assert result.state == PurchaseState.FULFILLED and sim.confirmations == 1
    # The retry reads the basket: still PRE_CONFIRM, so the confirm is sent again.
    assert endpoints(sim)[-3:] == ["confirm", "basket", "confirm"]
    assert sim.ledger()["sold"] == [11, 12]


@pytest.mark.parametrize(
    ("endpoint", "fields"),
    [
        ("seats", {}),
        ("seats-auto", {"seat_ids": [], "price_type_id": 1, "quantity": 3}),
    ],
)
async def test_onebox_lost_add_seats_answer_leaks_no_hold(env: WorkflowEnvironment, endpoint: str, fields: dict) -> None:
    sim = OneboxSimulator()
    sim.faults.add(Fault(endpoint=endpoint, status=502, lost=True))  # seats added, answer lost
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request(f"ob-{endpoint}", **fields), tq))
    assert result.state == PurchaseState.FULFILLED
    # The retry read the basket and took the seats the lost attempt added, instead of adding more.
    assert endpoints(sim)[:5] == ["token", "create", "basket", endpoint, "basket"]
    assert endpoints(sim).count(endpoint) == 1
    [basket] = sim.ledger()["baskets"]
    assert sim.ledger()["held"] == [] and sim.ledger()["sold"] == basket["seats"]
    assert len(basket["seats"]) == len(result.tickets) == (fields.get("quantity") or 2)


async def test_session_needing_attendee_data_fails_typed_and_releases_seats(env: WorkflowEnvironment) -> None:
    """developer.oneboxtds.com/docs/api-distribution/purchase-flow: some events need attendee data
    before pre-confirm. boxoffice does not collect it: the purchase fails with Onebox's code kept,
    and the seats are released."""
    sim = OneboxSimulator(attendee_sessions={1001})
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request("ob-attendee"), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "PROVIDER_REJECTED"
    assert result.failure.provider_code == "ORDER_ATTENDEE_DATA_REQUIRED" and "attendee data" in result.failure.message
    assert sim.ledger()["held"] == [] and sim.confirmations == 0
    assert [(c.action, c.ok) for c in result.compensations] == [("release seats", True)]


async def test_add_seats_failing_with_seats_in_the_basket_still_releases_them(env: WorkflowEnvironment) -> None:
    """The add-seats step fails for good, yet its request added the seats (here: carried out, then
    answered 409). The release is registered before the step and releases what the basket holds
    (developer.oneboxtds.com/docs/api-distribution/purchase-flow: DELETE /orders/seats by item id)."""
    sim = OneboxSimulator()
    sim.faults.add(
        Fault(
            endpoint="seats", status=409, lost=True, body={"code": "ORDER_SEAT_NOT_AVAILABLE", "message": "seats not available"}
        )
    )
    async with onebox_worker(env.client, sim) as tq:
        result = await purchase_outcome(await start_purchase(env.client, onebox_request("ob-add-failed"), tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "SEAT_UNAVAILABLE"
    assert sim.ledger()["held"] == [] and sim.confirmations == 0
    assert [(c.action, c.ok) for c in result.compensations] == [("release seats", True)]
