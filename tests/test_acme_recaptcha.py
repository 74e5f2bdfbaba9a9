"""ACME's reCAPTCHA on B2C checkout: the buyer's browser makes the token (Google's JS), boxoffice relays
it on the checkout call; the strict simulator refuses a checkout without one, as ACME does.

https://developers.acmeticketing.com/support/solutions/articles/33000250711-checkout-apis-best-practices-and-security
https://support.acmeticketing.com/support/solutions/articles/33000248940-acme-security-for-online-sales
"""

from __future__ import annotations

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from simulators.acme import AcmeSimulator
from tests.conftest import acme_request, acme_settings, acme_worker, wait_for_state
from tests.test_acme import Recorder, acts, excerpt_json, run
from workers import client as purchases
from workers.client import purchase_outcome, start_purchase
from workflows.models import AcmePurchaseRequest, ConfirmRequest, PurchaseState, request_fingerprint

# The header the token travels in is *assumed* (the pages' header list could not be read): the one a
# public ACME client (Barnes Foundation's) sends.
HEADER = "x-acme-captcha-token"


def purchase_request(purchase_id: str, **overrides: object) -> AcmePurchaseRequest:
    return AcmePurchaseRequest.model_validate(acme_request(purchase_id, **overrides))


async def test_checkout_relays_the_token_in_a_header_not_the_body() -> None:
    """The server integration relays the token from Google's JS into ACME's checkout call.

    https://support.acmeticketing.com/support/solutions/articles/33000248940-acme-security-for-online-sales
    """
    rec = Recorder((200, excerpt_json("get_order")))
    await run(
        acts(rec).checkout,
        purchase_request("cap-1", recaptcha_token="03AGdBq25-token"),
        "cart_1",
        "10754",
        "8f14e45f-ceea-467a-9af0-2d7b5d8e1c21",
        "tok_visa_4242",
    )
    [checkout] = rec.requests
    assert checkout.headers[HEADER] == "03AGdBq25-token"
    assert b"03AGdBq25-token" not in checkout.content


async def test_the_header_name_is_a_setting() -> None:
    """*Assumed* header name, so it can be changed without a release.

    https://developers.acmeticketing.com/support/solutions/articles/33000250713-cors-checkout
    """
    rec = Recorder((200, excerpt_json("get_order")))
    activities = type(acts(rec))(acme_settings(recaptcha_header="x-recaptcha-token"), transport=httpx.MockTransport(rec))
    await run(
        activities.checkout,
        purchase_request("cap-2", recaptcha_token="t"),
        "cart_1",
        "10754",
        "8f14e45f-ceea-467a-9af0-2d7b5d8e1c21",
        None,
    )
    assert rec.requests[0].headers["x-recaptcha-token"] == "t" and HEADER not in rec.requests[0].headers


async def test_checkout_without_a_token_is_refused_before_anything_is_sent() -> None:
    """ACME requires every B2C implementation to pass the captcha token to the checkout API.

    https://developers.acmeticketing.com/support/solutions/articles/33000250711-checkout-apis-best-practices-and-security
    """
    rec = Recorder()
    with pytest.raises(ApplicationError) as refused:
        await run(
            acts(rec).checkout,
            purchase_request("cap-3", recaptcha_token=None),
            "cart_1",
            "10754",
            "8f14e45f-ceea-467a-9af0-2d7b5d8e1c21",
            None,
        )
    assert refused.value.type == "RECAPTCHA_REQUIRED" and refused.value.non_retryable
    assert rec.requests == []


async def test_a_token_echoed_in_an_error_is_masked() -> None:
    """The token is a credential of the buyer's session: never in a log line or an error message."""
    rec = Recorder((400, {"errorCode": "CAPTCHA_FAILED", "message": "captcha 03AGdBq25-secret rejected"}))
    with pytest.raises(ApplicationError) as refused:
        await run(
            acts(rec).checkout,
            purchase_request("cap-4", recaptcha_token="03AGdBq25-secret"),
            "cart_1",
            "10754",
            "8f14e45f-ceea-467a-9af0-2d7b5d8e1c21",
            None,
        )
    assert "03AGdBq25-secret" not in str(refused.value) and "***" in str(refused.value)
    assert "03AGdBq25-secret" not in repr(purchase_request("cap-4", recaptcha_token="03AGdBq25-secret"))


async def test_strict_simulator_refuses_a_checkout_without_the_token() -> None:
    """https://developers.acmeticketing.com/support/solutions/articles/33000250711-checkout-apis-best-practices-and-security"""
    sim = AcmeSimulator(api_key="test-acme-key")
    headers = {"x-b2c-tenant-id": "107", "x-acme-api-key": "test-acme-key", "x-acme-browser-ip": "203.0.113.7"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app), base_url="http://acme.test") as http:
        cart = (
            await http.post(
                "/v2/b2c/carts",
                headers=headers,
                json={
                    "items": [
                        {"eventId": "5ff74342210cbe0c44913be2", "ticketingTypeId": "54248ac8e4b01cd228b007a4", "quantity": 1}
                    ]
                },
            )
        ).json()
        refused = await http.post("/v2/b2c/checkout", headers=headers, json={"shoppingCartId": cart["id"]})
    assert refused.status_code == 400 and "captcha" in refused.json()["message"]
    assert sim.orders == {}


async def test_purchase_without_a_token_fails_typed_and_releases_the_hold(env: WorkflowEnvironment) -> None:
    """https://developers.acmeticketing.com/support/solutions/articles/33000250711-checkout-apis-best-practices-and-security"""
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        request = acme_request("cap-5")
        del request["recaptcha_token"]
        result = await purchase_outcome(await start_purchase(env.client, request, tq))
    assert result.state == PurchaseState.FAILED
    assert result.failure is not None and result.failure.reason == "RECAPTCHA_REQUIRED"
    assert [c["endpoint"] for c in sim.calls].count("checkout") == 0
    assert list(sim.ledger()["reservations"].values()) == ["deleted"]


async def test_the_confirms_fresh_token_wins(env: WorkflowEnvironment) -> None:
    """A token expires two minutes after it is made (Google's reCAPTCHA v3 docs): a manual confirmation
    brings a fresh one, which is the one sent.

    https://support.acmeticketing.com/support/solutions/articles/33000248940-acme-security-for-online-sales
    """
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        handle = await start_purchase(env.client, acme_request("cap-6", confirmation="manual", recaptcha_token="stale-token"), tq)
        await wait_for_state(handle, PurchaseState.AWAITING_CONFIRMATION)
        await purchases.confirm(env.client, "cap-6", ConfirmRequest(recaptcha_token="fresh-token"))
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED, result.failure
    checkout = next(c for c in sim.calls if c["endpoint"] == "checkout")
    assert checkout["headers"][HEADER] == "fresh-token"


async def test_a_start_repeated_with_a_fresh_token_is_the_same_purchase(env: WorkflowEnvironment) -> None:
    """A caller retrying its start after two minutes must get a new token: still the same purchase."""
    assert request_fingerprint(purchase_request("cap-7", recaptcha_token="a")) == request_fingerprint(
        purchase_request("cap-7", recaptcha_token="b")
    )
    sim = AcmeSimulator()
    async with acme_worker(env.client, sim) as tq:
        first = await start_purchase(env.client, acme_request("cap-7", recaptcha_token="a"), tq)
        again = await start_purchase(env.client, acme_request("cap-7", recaptcha_token="b"), tq)
        assert again.run_id == first.run_id or again.id == first.id
        assert (await purchase_outcome(first)).state == PurchaseState.FULFILLED
    assert len(sim.orders) == 1
