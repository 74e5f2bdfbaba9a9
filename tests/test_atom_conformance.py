"""Atom as its public pages document it: what the simulator refuses in strict mode (the default), and
what boxoffice sends where the docs mark a field required."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError

from simulators.atom import AtomSimulator
from tests.test_atom_activities import GUEST, Recorder, activities, body, run
from workflows.models import Buyer

BUYER = Buyer(email="guest@example.com", first_name="Jane", last_name="Doe")
KEY = {"x-api-key": "dev-atom-key"}
LEASE_ITEMS = [{"productId": "PROD-ADULT-001", "offerId": "OFFER-STD-001", "seatIds": ["A1", "A2"]}]
LINE_ITEMS = [{"productId": "PROD-ADULT-001", "offerId": "OFFER-STD-001", "quantity": 2}]


def order_parameters(client_request_id: str) -> dict[str, Any]:
    return {
        "orderParameters": {
            "lineItems": LINE_ITEMS,
            "channel": "Partner",
            "clientVersion": "1.0.0",
            "clientRequestId": client_request_id,
            "isGuestOrder": True,
            "paymentProcessor": "PartnerPay",
        }
    }


class Atom:
    """A guest session against the simulator, as the examples page's calls."""

    def __init__(self, sim: AtomSimulator) -> None:
        self.sim = sim
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://atom.test")
        self.token = ""

    async def guest(self, **body: Any) -> httpx.Response:
        body = body or {"email": "guest@example.com", "firstName": "Jane", "lastName": "Doe", "attributionMap": {}}
        answer = await self.http.post("/ordering/v1/customer/account/guest", json=body, headers=KEY)
        if answer.status_code == 200:
            self.token = answer.json()["authToken"]
        return answer

    def headers(self) -> dict[str, str]:
        return {
            **KEY,
            "X-Atom-AuthToken": self.token,
            "X-Atom-Timestamp": "2026-02-13T12:00:00Z",
            "X-Atom-DeviceId": "partner-device-001",
        }

    async def lease(self, key: str) -> httpx.Response:
        return await self.http.post(
            "/ordering/v1/inventory/lease", headers=self.headers(), json={"clientRequestId": key, "leaseItems": LEASE_ITEMS}
        )

    async def preview(self, key: str) -> httpx.Response:
        return await self.http.post("/ordering/v2/customer/orders/preview", headers=self.headers(), json=order_parameters(key))

    async def create(self, key: str) -> httpx.Response:
        return await self.http.post("/ordering/v1/customer/orders", headers=self.headers(), json=order_parameters(key))


async def test_guest_account_sends_the_configured_attribution_map() -> None:
    """https://partner-docs-95q.pages.dev/models/ordering: CreateGuestAccountRequest.attributionMap,
    Map[String, String], required; the examples page sends affiliateName and campaign."""
    rec = Recorder(GUEST)
    await run(activities(rec).create_guest_account, BUYER)
    assert body(rec.only)["attributionMap"] == {"affiliateName": "fever", "campaign": "spring-2026"}


async def test_guest_account_without_attribution_settings_sends_an_empty_map() -> None:
    """https://partner-docs-95q.pages.dev/models/ordering marks attributionMap required: it is always
    sent; with no BOXOFFICE_ATOM_AFFILIATE_NAME / _CAMPAIGN it is empty (assumed accepted)."""
    rec = Recorder(GUEST)
    unattributed = activities(rec)
    unattributed.settings.affiliate_name = unattributed.settings.campaign = None
    await run(unattributed.create_guest_account, BUYER)
    assert body(rec.only)["attributionMap"] == {}


@pytest.mark.parametrize("attribution", [None, "fever", {"affiliateName": 7}])
async def test_strict_simulator_refuses_a_guest_account_without_a_string_map(attribution: Any) -> None:
    """https://partner-docs-95q.pages.dev/models/ordering: attributionMap Map[String, String], required."""
    sim = AtomSimulator()
    body: dict[str, Any] = {"email": "guest@example.com", "firstName": "Jane", "lastName": "Doe"}
    if attribution is not None:
        body["attributionMap"] = attribution
    answer = await Atom(sim).guest(**body)
    assert answer.status_code == 400 and answer.json()["errorCode"] == "INVALID_REQUEST"
    assert sim.tokens == {}


async def test_strict_simulator_refuses_a_missing_api_key_and_unknown_endpoints() -> None:
    """https://partner-docs-95q.pages.dev/getting-started/authentication: x-api-key on every request."""
    atom = Atom(AtomSimulator())
    assert (await atom.http.get("/partner/ping")).status_code == 401
    assert (await atom.http.get("/partner/ping", headers=KEY)).status_code == 200
    assert (await atom.http.get("/ordering/v1/customer/orders", headers=KEY)).status_code in (404, 405)
    assert (await atom.http.get("/ordering/v1/customer/orders/by-client-request-id/x", headers=KEY)).status_code == 404


async def test_strict_simulator_answers_a_reused_client_request_id_with_duplicate() -> None:
    """https://partner-docs-95q.pages.dev/guides/ordering ("The clientRequestId Rule"): one
    clientRequestId for lease, preview and create; reusing one from a previous flow answers
    DUPLICATE_CLIENT_REQUEST_ID. The docs do not say a repeated create returns the order: it does not here."""
    atom = Atom(AtomSimulator())
    await atom.guest()
    assert (await atom.lease("req-1")).status_code == 200
    assert (await atom.lease("req-1")).status_code == 200  # the same flow's retried lease (assumed)
    assert (await atom.preview("req-1")).status_code == 200
    created = await atom.create("req-1")
    assert created.status_code == 200
    for again in (atom.create("req-1"), atom.lease("req-1"), atom.preview("req-1")):
        answer = await again
        assert answer.status_code == 409 and answer.json()["errorCode"] == "DUPLICATE_CLIENT_REQUEST_ID"
    assert len(atom.sim.orders) == 1


async def test_strict_simulator_answers_a_key_whose_lease_lapsed_with_duplicate() -> None:
    """https://partner-docs-95q.pages.dev/guides/ordering: a timeout is a terminal state of the flow;
    its clientRequestId is not leased again."""
    now = [1000.0]
    atom = Atom(AtomSimulator(clock=lambda: now[0]))
    await atom.guest()
    assert (await atom.lease("req-2")).status_code == 200
    now[0] += 601
    assert (await atom.create("req-2")).json()["errorCode"] == "LEASE_EXPIRED"
    answer = await atom.lease("req-2")
    assert answer.status_code == 409 and answer.json()["errorCode"] == "DUPLICATE_CLIENT_REQUEST_ID"
    assert (await atom.lease("req-3")).status_code == 200  # a new flow's key leases the same seats


async def test_lax_simulator_keeps_answering_a_repeated_create_with_its_order() -> None:
    atom = Atom(AtomSimulator(strict=False))
    await atom.guest(email="guest@example.com", firstName="Jane", lastName="Doe")
    await atom.lease("req-4")
    first, second = await atom.create("req-4"), await atom.create("req-4")
    assert first.json() == second.json()


@pytest.mark.parametrize("step", ["lease", "preview_order", "create_order"])
async def test_duplicate_client_request_id_is_typed_at_every_step_that_carries_it(step: str) -> None:
    """https://partner-docs-95q.pages.dev/guides/ordering: lease, preview and create carry the
    clientRequestId; a used one answers DUPLICATE_CLIENT_REQUEST_ID (HTTP status assumed 409), which
    must not read as a taken seat."""
    from tests.test_atom_activities import CLIENT_REQUEST_ID, ITEMS, SESSION

    rec = Recorder({"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "used"}, status=409)
    call = getattr(activities(rec), step)
    args = (SESSION, ITEMS, CLIENT_REQUEST_ID) if step == "lease" else (SESSION, ITEMS, CLIENT_REQUEST_ID, True)
    with pytest.raises(ApplicationError) as err:
        await run(call, *args)
    assert err.value.type == "DUPLICATE_REQUEST" and err.value.non_retryable
