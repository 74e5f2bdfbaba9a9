"""Onebox activities send exactly the excerpt's requests (../shared/provider-docs/onebox-purchase-flow.txt)
and FACTS.md's token call; the token is cached and refreshed, never returned to the workflow."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from datetime import timedelta
from typing import Any

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.http import utc_now
from activities.onebox import OneboxActivities
from tests.conftest import onebox_settings
from workflows.models import Buyer

ORDER_ID = "5f1c0a7e9b2d4c6e8f0a1b2c"
BASKET: dict[str, Any] = {
    "id": ORDER_ID,
    "code": None,
    "status": "BASKET",
    "items": [
        {
            "id": 501,
            "session_id": 1001,
            "seat": {"id": 11, "row": "B", "number": "1"},
            "price": {"total": 26.5, "currency": "EUR"},
        },
        {
            "id": 502,
            "session_id": 1001,
            "seat": {"id": 12, "row": "B", "number": "2"},
            "price": {"total": 26.5, "currency": "EUR"},
        },
    ],
    "price": {"total": 53.0, "charges": 3.0, "currency": "EUR"},
}
EMPTY: dict[str, Any] = {**BASKET, "items": [], "price": {"total": 0, "charges": 0, "currency": "EUR"}}
LATE: list[dict[str, Any]] = [
    {"id": 503, "session_id": 1001, "seat": {"id": 13, "row": "B", "number": "3"}, "price": {"total": 26.5, "currency": "EUR"}},
    {"id": 504, "session_id": 1001, "seat": {"id": 14, "row": "B", "number": "4"}, "price": {"total": 26.5, "currency": "EUR"}},
]
TOKEN = {"access_token": "tok-abc", "token_type": "bearer", "refresh_token": "r-1", "expires_in": 43199}


class FakeOnebox:
    """Answers the token call and then `answers` in order; records every request."""

    def __init__(self, *answers: tuple[int, Any]) -> None:
        self.requests: list[httpx.Request] = []
        self.answers = list(answers)
        self.tokens = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/oauth/token":
            self.tokens += 1
            return httpx.Response(200, json={**TOKEN, "access_token": f"tok-{self.tokens}"})
        status, body = self.answers.pop(0)
        return httpx.Response(status, json=body, headers={"ob-audit-trace-id": "audit-42"})

    @property
    def api(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/oauth/token"]


def acts(fake: FakeOnebox) -> OneboxActivities:
    return OneboxActivities(onebox_settings(), transport=httpx.MockTransport(fake))


async def run(fn: Any, *args: Any) -> Any:
    return await ActivityEnvironment().run(fn, *args)


async def retry(fn: Any, *args: Any) -> Any:
    """Runs `fn` as attempt 2, scheduled 3 s after the first."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=2, current_attempt_scheduled_time=env.info.scheduled_time + timedelta(seconds=3)
    )
    return await env.run(fn, *args)


def assert_basket_call(request: httpx.Request, method: str, path: str, token: str = "tok-1") -> None:
    assert (request.method, request.url.host, request.url.path) == (method, "onebox.test", path)
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Authorization"] == f"Bearer {token}"
    assert request.headers["ob-order-id"] == ORDER_ID


async def test_token_is_form_encoded_client_credentials_and_cached() -> None:
    fake = FakeOnebox((200, BASKET), (200, BASKET))
    activities = acts(fake)
    await run(activities.create_order)
    await run(activities.create_order)
    token_call = fake.requests[0]
    assert (token_call.method, str(token_call.url)) == ("POST", "http://oauth.onebox.test/oauth/token")
    assert token_call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(urllib.parse.parse_qsl(token_call.content.decode())) == {
        "grant_type": "client_credentials",
        "channel_id": "test-channel",
        "client_id": "test-client",
        "client_secret": "test-onebox-secret",
    }
    assert fake.tokens == 1  # cached for its expires_in


async def test_create_order() -> None:
    fake = FakeOnebox((200, BASKET))
    order = await run(acts(fake).create_order)
    request = fake.api[0]
    assert (request.method, request.url.path) == ("POST", "/distribution-api/v1/orders")
    assert request.headers["Authorization"] == "Bearer tok-1" and "ob-order-id" not in request.headers
    assert order.order_id == ORDER_ID


async def test_add_numbered_seats() -> None:
    fake = FakeOnebox((200, EMPTY), (200, BASKET))
    hold = await run(acts(fake).add_seats, ORDER_ID, 1001, [11, 12])
    assert_basket_call(fake.api[0], "GET", "/distribution-api/v1/orders")
    assert_basket_call(fake.api[1], "POST", "/distribution-api/v1/orders/seats")
    assert fake.api[1].headers["Content-Type"] == "application/json"
    assert json.loads(fake.api[1].content) == {"seats": [{"id": 11, "session_id": 1001}, {"id": 12, "session_id": 1001}]}
    assert hold.item_ids == ["501", "502"] and hold.seat_ids == ["B-1", "B-2"]


async def test_add_seats_automatically() -> None:
    fake = FakeOnebox((200, EMPTY), (200, BASKET))
    await run(acts(fake).add_seats_auto, ORDER_ID, 1001, 0, 2)
    assert_basket_call(fake.api[1], "POST", "/distribution-api/v1/orders/seats-auto")
    assert json.loads(fake.api[1].content) == {"price_type_id": 0, "session_id": 1001, "quantity": 2}


async def test_buyer_data() -> None:
    fake = FakeOnebox((200, BASKET))
    await run(acts(fake).buyer_data, ORDER_ID, Buyer(email="email@email.com", first_name="J", last_name="D"))
    assert_basket_call(fake.api[0], "POST", "/distribution-api/v1/orders/buyer-data")
    assert json.loads(fake.api[0].content) == {"email": "email@email.com"}


@pytest.mark.parametrize("name", ["pre_confirm", "confirm"])
async def test_pre_confirm_and_confirm_send_an_empty_object(name: str) -> None:
    status = {"pre_confirm": "PRE_CONFIRM", "confirm": "CONFIRM"}[name]
    # Each reads the basket first: not yet priced before pre-confirm, pre-confirmed before confirm.
    before = BASKET if name == "pre_confirm" else {**BASKET, "status": "PRE_CONFIRM", "code": "AX59SJ29392X"}
    fake = FakeOnebox((200, before), (200, {**BASKET, "status": status, "code": "AX59SJ29392X"}))
    args = (ORDER_ID, ["501", "502"]) if name == "pre_confirm" else (ORDER_ID, "AX59SJ29392X", ["501", "502"])
    result = await run(getattr(acts(fake), name), *args)
    assert_basket_call(fake.api[0], "GET", "/distribution-api/v1/orders")
    assert_basket_call(fake.api[1], "POST", f"/distribution-api/v1/orders/{name.replace('_', '-')}")
    assert fake.api[1].content == b"{}"
    if name == "pre_confirm":
        assert result.code == "AX59SJ29392X" and result.receipt.total == 53 and result.receipt.fees == 3
    else:
        assert result.fulfilled and result.order_id == "AX59SJ29392X"


async def test_release_seats_names_each_item() -> None:
    fake = FakeOnebox((200, BASKET))
    await run(acts(fake).release_seats, ORDER_ID, ["501", "502"])
    assert_basket_call(fake.api[0], "DELETE", "/distribution-api/v1/orders/seats")
    assert fake.api[0].url.query == b"id=501&id=502"


async def test_read_order_by_code() -> None:
    fake = FakeOnebox((200, {**BASKET, "status": "CONFIRM", "code": "AX59SJ29392X"}))
    await run(acts(fake).read_order, "AX59SJ29392X")
    request = fake.api[0]
    assert (request.method, request.url.path) == ("GET", "/orders-mgmt-api/v1/orders/AX59SJ29392X")


async def test_expired_token_is_replaced_once() -> None:
    fake = FakeOnebox((401, {"code": "INVALID_TOKEN"}), (200, BASKET))
    await run(acts(fake).create_order)
    assert fake.tokens == 2
    assert [r.headers["Authorization"] for r in fake.api] == ["Bearer tok-1", "Bearer tok-2"]


async def test_error_codes_are_typed_with_the_audit_trace_id() -> None:
    fake = FakeOnebox((409, {"code": "ORDER_SEAT_NOT_AVAILABLE", "message": "taken"}))
    with pytest.raises(ApplicationError) as err:
        await run(acts(fake).add_seats, ORDER_ID, 1001, [7])
    assert err.value.type == "SEAT_UNAVAILABLE" and err.value.non_retryable
    # A refusal of the first attempt: the workflow knows nothing was done (workflows/outcomes.py).
    assert err.value.details[0] == {
        "provider": "onebox",
        "status": 409,
        "code": "ORDER_SEAT_NOT_AVAILABLE",
        "trace_id": "audit-42",
        "attempt": 1,
    }


async def test_release_of_a_basket_already_gone_is_done() -> None:
    fake = FakeOnebox((404, {"code": "ORDER_NOT_FOUND", "message": "gone"}))
    assert "already gone" in await run(acts(fake).release_seats, ORDER_ID, ["501"])


CONFIRMED = {**BASKET, "status": "CONFIRM", "code": "AX59SJ29392X"}
NOT_FOUND = (404, {"code": "ORDER_NOT_FOUND", "message": "no order AX59SJ29392X"})


async def test_find_order_is_none_on_404_and_raises_other_errors() -> None:
    fake = FakeOnebox(NOT_FOUND, (200, CONFIRMED), (500, {"code": "INTERNAL"}))
    activities = acts(fake)
    assert await run(activities.find_order, "AX59SJ29392X") is None
    found = await run(activities.find_order, "AX59SJ29392X")
    assert found is not None and found.fulfilled and found.order_id == "AX59SJ29392X"
    with pytest.raises(ApplicationError) as failed:
        await run(activities.find_order, "AX59SJ29392X")
    assert failed.value.type == "PROVIDER_UNAVAILABLE"
    assert {(r.method, r.url.path) for r in fake.api} == {("GET", "/orders-mgmt-api/v1/orders/AX59SJ29392X")}


PRE_CONFIRMED = {**BASKET, "status": "PRE_CONFIRM", "code": "AX59SJ29392X"}


async def test_confirm_retry_confirms_a_basket_still_pre_confirmed() -> None:
    fake = FakeOnebox((200, PRE_CONFIRMED), (200, CONFIRMED))
    result = await retry(acts(fake).confirm, ORDER_ID, "AX59SJ29392X", ["501", "502"])
    read, confirm = fake.api
    assert_basket_call(read, "GET", "/distribution-api/v1/orders")
    assert_basket_call(confirm, "POST", "/distribution-api/v1/orders/confirm")
    assert result.fulfilled


async def test_confirm_retry_takes_a_confirmed_order_without_confirming() -> None:
    fake = FakeOnebox((200, CONFIRMED), (200, CONFIRMED))
    assert (await retry(acts(fake).confirm, ORDER_ID, "AX59SJ29392X", ["501", "502"])).fulfilled
    assert [r.method for r in fake.api] == ["GET", "GET"]


async def test_confirm_retry_answered_409_is_an_unknown_outcome_not_a_failure() -> None:
    fake = FakeOnebox((200, PRE_CONFIRMED), (409, {"code": "ORDER_INVALID_STATUS", "message": "order is CONFIRM"}))
    with pytest.raises(ApplicationError) as unknown:
        await retry(acts(fake).confirm, ORDER_ID, "AX59SJ29392X", ["501", "502"])
    assert unknown.value.type == "ORDER_PENDING" and not unknown.value.non_retryable


async def test_add_seats_retry_reads_the_basket_and_adds_only_what_is_missing() -> None:
    half = {**BASKET, "items": BASKET["items"][:1]}
    fake = FakeOnebox((200, half), (200, BASKET))
    hold = await retry(acts(fake).add_seats, ORDER_ID, 1001, [11, 12])
    read, add = fake.api
    assert_basket_call(read, "GET", "/distribution-api/v1/orders")
    assert_basket_call(add, "POST", "/distribution-api/v1/orders/seats")
    assert json.loads(add.content) == {"seats": [{"id": 12, "session_id": 1001}]}
    assert hold.item_ids == ["501", "502"]


async def test_add_seats_retry_takes_a_basket_already_complete() -> None:
    for name, args in (("add_seats", (ORDER_ID, 1001, [11, 12])), ("add_seats_auto", (ORDER_ID, 1001, 1, 2))):
        fake = FakeOnebox((200, BASKET))
        hold = await retry(getattr(acts(fake), name), *args)
        assert [(r.method, r.url.path) for r in fake.api] == [("GET", "/distribution-api/v1/orders")]
        assert hold.item_ids == ["501", "502"] and hold.seat_ids == ["B-1", "B-2"]
        # The hold runs from the first attempt, 3 s earlier, not from this one.
        assert hold.expires_at <= utc_now() + timedelta(seconds=600 - 3)


async def test_expired_token_answered_403_auth001_is_replaced_once() -> None:
    """developer.oneboxtds.com/docs/authentication/troubleshooting: an expired token answers
    {"code": "AUTH001", "message": "Invalid JWT signature"} (403, FACTS.md): fetch a new token."""
    fake = FakeOnebox((403, {"code": "AUTH001", "message": "Invalid JWT signature"}), (200, BASKET))
    order = await run(acts(fake).create_order)
    assert order.order_id == ORDER_ID and fake.tokens == 2
    assert [r.headers["Authorization"] for r in fake.api] == ["Bearer tok-1", "Bearer tok-2"]


async def test_403_refused_again_after_a_new_token_is_an_authentication_failure() -> None:
    """Same page: a new token that is refused too (wrong environment's credentials) is not retried."""
    refused = (403, {"code": "AUTH001", "message": "Invalid JWT signature"})
    fake = FakeOnebox(refused, refused)
    with pytest.raises(ApplicationError) as err:
        await run(acts(fake).create_order)
    assert err.value.type == "AUTHENTICATION_FAILED" and err.value.non_retryable
    assert err.value.details[0]["code"] == "AUTH001" and fake.tokens == 2


async def test_403_without_an_auth_code_does_not_fetch_a_token() -> None:
    """A 403 that is not about the token (a permission) is not cured by a new one (*assumed*: the
    troubleshooting page names `AUTH…` codes for token errors)."""
    fake = FakeOnebox((403, {"code": "ACCESS_DENIED", "message": "no permission"}))
    with pytest.raises(ApplicationError) as err:
        await run(acts(fake).create_order)
    assert err.value.type == "AUTHENTICATION_FAILED" and fake.tokens == 1


async def test_attendee_data_required_at_pre_confirm_fails_typed_with_the_code() -> None:
    """developer.oneboxtds.com/docs/api-distribution/purchase-flow ("Understanding Attendee
    Requirements"): some sessions need attendee data before pre-confirm; boxoffice does not send
    it, so the purchase fails PROVIDER_REJECTED with Onebox's code and trace id kept."""
    fake = FakeOnebox((200, BASKET), (409, {"code": "ORDER_ATTENDEE_DATA_REQUIRED", "message": "Attendee data is not filled"}))
    with pytest.raises(ApplicationError) as err:
        await run(acts(fake).pre_confirm, ORDER_ID, ["501", "502"])
    assert err.value.type == "PROVIDER_REJECTED" and err.value.non_retryable
    assert "attendee data" in err.value.message
    assert err.value.details[0]["code"] == "ORDER_ATTENDEE_DATA_REQUIRED"
    assert err.value.details[0]["trace_id"] == "audit-42"


async def test_add_seats_auto_releases_seats_a_late_earlier_attempt_added() -> None:
    """The seats-auto request of a timed-out attempt lands after its retry read the basket: the
    retry's answer shows 4 items for a quantity of 2. The extras are released, 2 are held
    (developer.oneboxtds.com/docs/api-distribution/purchase-flow: DELETE /orders/seats by item id)."""
    fake = FakeOnebox((200, EMPTY), (200, {**BASKET, "items": BASKET["items"] + LATE}), (200, BASKET))
    hold = await retry(acts(fake).add_seats_auto, ORDER_ID, 1001, 1, 2)
    read, add, release = fake.api
    assert json.loads(add.content) == {"price_type_id": 1, "session_id": 1001, "quantity": 2}
    assert_basket_call(release, "DELETE", "/distribution-api/v1/orders/seats")
    assert release.url.query == b"id=503&id=504"
    assert hold.item_ids == ["501", "502"]


async def test_pre_confirm_releases_items_beyond_the_hold_before_pre_confirming() -> None:
    """A late add can land after the add step ended: pre-confirm first reads the basket and
    releases what the purchase did not ask for, so the order priced is what was asked."""
    pre_confirmed = {**BASKET, "status": "PRE_CONFIRM", "code": "AX59SJ29392X"}
    fake = FakeOnebox((200, {**BASKET, "items": BASKET["items"] + LATE[:1]}), (200, BASKET), (200, pre_confirmed))
    priced = await run(acts(fake).pre_confirm, ORDER_ID, ["501", "502"])
    assert [(r.method, r.url.path) for r in fake.api] == [
        ("GET", "/distribution-api/v1/orders"),
        ("DELETE", "/distribution-api/v1/orders/seats"),
        ("POST", "/distribution-api/v1/orders/pre-confirm"),
    ]
    assert fake.api[1].url.query == b"id=503"
    assert priced.code == "AX59SJ29392X" and priced.hold.item_ids == ["501", "502"]


async def test_confirm_refuses_a_basket_that_is_not_what_was_pre_confirmed() -> None:
    """A late add landing after pre-confirm: confirm reads the basket first and does not commit
    an order holding more than the purchase asked for."""
    changed = {**BASKET, "status": "BASKET", "items": BASKET["items"] + LATE[:1]}
    fake = FakeOnebox((200, changed))
    with pytest.raises(ApplicationError) as refused:
        await run(acts(fake).confirm, ORDER_ID, "AX59SJ29392X", ["501", "502"])
    assert refused.value.non_retryable and "not confirmed" in refused.value.message
    assert [r.method for r in fake.api] == ["GET"]


async def test_steps_rerun_after_a_workflow_reset_take_what_an_earlier_run_did() -> None:
    """A reset re-runs steps as first attempts on the same basket. Onebox takes no idempotency
    key (developer.oneboxtds.com/docs/api-distribution/purchase-flow), so each step reads the
    basket first: seats already there are not added again, a confirmed basket is not pre-confirmed,
    given buyer data (refused: a CONFIRM order cannot change) nor confirmed a second time."""
    confirmed = {**BASKET, "status": "CONFIRM", "code": "AX59SJ29392X"}
    fake = FakeOnebox((200, BASKET))
    hold = await run(acts(fake).add_seats, ORDER_ID, 1001, [11, 12])
    assert [r.method for r in fake.api] == ["GET"] and hold.item_ids == ["501", "502"]

    fake = FakeOnebox((409, {"code": "ORDER_INVALID_STATUS", "message": "order is CONFIRM"}), (200, confirmed))
    await run(acts(fake).buyer_data, ORDER_ID, Buyer(email="email@email.com", first_name="J", last_name="D"))

    fake = FakeOnebox((200, confirmed))
    priced = await run(acts(fake).pre_confirm, ORDER_ID, ["501", "502"])
    assert [r.method for r in fake.api] == ["GET"] and priced.code == "AX59SJ29392X"

    fake = FakeOnebox((200, confirmed), (200, confirmed))
    order = await run(acts(fake).confirm, ORDER_ID, "AX59SJ29392X", ["501", "502"])
    assert [(r.method, r.url.path) for r in fake.api] == [
        ("GET", "/distribution-api/v1/orders"),
        ("GET", "/orders-mgmt-api/v1/orders/AX59SJ29392X"),
    ]
    assert order.fulfilled and order.order_id == "AX59SJ29392X"
