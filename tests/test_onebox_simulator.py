"""The Onebox simulator refuses what Onebox's docs refuse (strict, the default): the requests are
the curl examples of developer.oneboxtds.com/docs/api-distribution/purchase-flow, the token errors
those of developer.oneboxtds.com/docs/authentication/troubleshooting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from simulators.onebox import OneboxSimulator

ORDERS = "/distribution-api/v1/orders"


async def client(sim: OneboxSimulator) -> tuple[httpx.AsyncClient, dict[str, str]]:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://onebox.test")
    form = {
        "grant_type": "client_credentials",
        "channel_id": sim.channel_id,
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
    }
    token = (await http.post("/oauth/token", data=form)).json()["access_token"]
    return http, {"Accept": "application/json", "Authorization": f"Bearer {token}"}


async def test_expired_token_answers_403_auth001() -> None:
    sim = OneboxSimulator()
    http, headers = await client(sim)
    sim.expire_tokens()
    answer = await http.post(ORDERS, headers=headers)
    assert answer.status_code == 403
    assert answer.json() == {"code": "AUTH001", "message": "Invalid JWT signature"}
    assert answer.headers["ob-audit-trace-id"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/seats", {"seats": [{"id": 11}]}),
        ("/seats", {"seats": []}),
        ("/seats-auto", {"session_id": 1001, "quantity": 2}),
        ("/seats-auto", {"price_type_id": 1, "session_id": "1001", "quantity": 2}),
        ("/buyer-data", {}),
        ("/pre-confirm", None),
    ],
)
async def test_missing_or_mistyped_fields_answer_400(path: str, body: Any) -> None:
    sim = OneboxSimulator()
    http, headers = await client(sim)
    basket = (await http.post(ORDERS, headers=headers)).json()["id"]
    answer = await http.post(ORDERS + path, headers={**headers, "ob-order-id": basket}, json=body)
    assert answer.status_code == 400 and answer.json()["code"] == "PARAMETER_REQUIRED"
    assert sim.ledger()["held"] == []


async def test_basket_call_without_ob_order_id_answers_400_and_unknown_paths_404() -> None:
    sim = OneboxSimulator()
    http, headers = await client(sim)
    answer = await http.post(ORDERS + "/seats", headers=headers, json={"seats": [{"id": 11, "session_id": 1001}]})
    assert answer.status_code == 400 and answer.json()["code"] == "PARAMETER_REQUIRED"
    assert (await http.post(ORDERS + "/attendees", headers=headers, json={})).status_code == 404


async def test_attendee_session_answers_order_attendee_data_required_at_pre_confirm() -> None:
    sim = OneboxSimulator(attendee_sessions={1001})
    http, headers = await client(sim)
    basket = (await http.post(ORDERS, headers=headers)).json()["id"]
    on_basket = {**headers, "ob-order-id": basket}
    await http.post(ORDERS + "/seats", headers=on_basket, json={"seats": [{"id": 11, "session_id": 1001}]})
    await http.post(ORDERS + "/buyer-data", headers=on_basket, json={"email": "email@email.com"})
    answer = await http.post(ORDERS + "/pre-confirm", headers=on_basket, json={})
    assert answer.status_code == 409 and answer.json()["code"] == "ORDER_ATTENDEE_DATA_REQUIRED"
