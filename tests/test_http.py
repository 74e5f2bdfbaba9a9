"""The shared HTTP error mapping and redaction (activities/http.py)."""

from __future__ import annotations

import logging
from datetime import timedelta

import httpx
import pytest
from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from activities.http import ProviderHttp, redact, retry_after
from workers.logs import configure
from workflows.models import FailureReason

SECRET = "sk-live-very-secret"


def client(handler) -> ProviderHttp:
    return ProviderHttp("acme", "https://provider.test", timeout=1, secrets=[SECRET], transport=httpx.MockTransport(handler))


async def fail(handler, **kwargs) -> ApplicationError:
    with pytest.raises(ApplicationError) as err:
        await client(handler).request("POST", "/orders", json_body={"a": 1}, **kwargs)
    return err.value


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_is_retryable(status: int) -> None:
    err = await fail(lambda r: httpx.Response(status, json={"code": "DOWN", "message": "try later"}))
    assert err.type == "PROVIDER_UNAVAILABLE" and not err.non_retryable
    assert err.details[0]["status"] == status and err.details[0]["code"] == "DOWN"


async def test_429_retries_after_the_providers_delay() -> None:
    err = await fail(lambda r: httpx.Response(429, headers={"Retry-After": "7"}))
    assert err.type == "PROVIDER_RATE_LIMITED" and not err.non_retryable
    assert err.next_retry_delay == timedelta(seconds=7)


def test_retry_after_accepts_an_http_date() -> None:
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == timedelta(0)  # in the past: now
    assert retry_after("soon") is None and retry_after(None) is None


async def test_timeout_and_connection_errors_are_retryable() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    for handler in (timeout, refused):
        err = await fail(handler)
        assert err.type == "PROVIDER_UNREACHABLE" and not err.non_retryable


async def test_business_4xx_is_typed_and_not_retried() -> None:
    answer = {"error": {"code": "ORDER_SEAT_NOT_AVAILABLE", "message": "seat gone"}}
    err = await fail(
        lambda r: httpx.Response(409, json=answer, headers={"x-request-id": "t-1"}),
        codes={"ORDER_SEAT_NOT_AVAILABLE": FailureReason.SEAT_UNAVAILABLE},
    )
    assert err.type == "SEAT_UNAVAILABLE" and err.non_retryable
    # `attempt` is the activity attempt (None outside an activity): whether an earlier one may have done the work.
    assert err.details[0] == {
        "provider": "acme",
        "status": 409,
        "code": "ORDER_SEAT_NOT_AVAILABLE",
        "trace_id": "t-1",
        "attempt": None,
    }
    assert "seat gone" in err.message

    plain = await fail(lambda r: httpx.Response(422, json={"message": "bad"}))
    assert plain.type == "PROVIDER_REJECTED" and plain.non_retryable
    auth = await fail(lambda r: httpx.Response(401, text="no"))
    assert auth.type == "AUTHENTICATION_FAILED" and auth.non_retryable


async def test_malformed_json_is_not_retried_and_quotes_the_body() -> None:
    err = await fail(lambda r: httpx.Response(200, text="<html>gateway</html>"))
    assert err.type == "PROVIDER_BAD_RESPONSE" and err.non_retryable
    assert "<html>gateway</html>" in err.message


async def test_unexpected_shape_is_not_retried() -> None:
    class Order(BaseModel):
        orderId: str

    http = client(lambda r: httpx.Response(200, json={}))
    with pytest.raises(ApplicationError) as err:
        http.parse(Order, {"id": 1, "token": "abc"}, "create order")
    assert err.value.type == "PROVIDER_BAD_RESPONSE" and err.value.non_retryable
    assert "orderId" in err.value.message and "abc" not in err.value.message


async def test_errors_and_logs_carry_no_secret_or_email(caplog: pytest.LogCaptureFixture) -> None:
    configure("json", "INFO")
    answer = {"message": f"key {SECRET} invalid for jane.doe@example.com", "authToken": "tok-123"}
    with caplog.at_level(logging.INFO):
        err = await fail(lambda r: httpx.Response(400, json=answer))
        bad = await fail(lambda r: httpx.Response(200, text=f'{{"authToken": "tok-123", "password": "pw" {SECRET}'))
    text = err.message + bad.message + caplog.text
    for leaked in (SECRET, "jane.doe@example.com", "tok-123", '"pw"'):
        assert leaked not in text
    assert "j***@example.com" in err.message


def test_redact_masks_secret_fields_and_emails() -> None:
    text = '{"authToken": "abc", "password": "p", "x-api-key": "k", "vendorQrCodeData": "qr", "email": "a.b@c.io"}'
    assert redact(text) == (
        '{"authToken": "***", "password": "***", "x-api-key": "***", "vendorQrCodeData": "***", "email": "a***@c.io"}'
    )


def test_provider_timestamps_without_a_zone_are_utc() -> None:
    from datetime import UTC, datetime, timezone

    from activities.atm import CreateHoldResponse

    hold = {"holdId": "h", "url": "https://x", "amountCents": 1, "currency": "USD"}
    naive = CreateHoldResponse.model_validate({**hold, "expiresAt": "2026-11-23T12:10:00"})
    assert naive.expires_at == datetime(2026, 11, 23, 12, 10, tzinfo=UTC)
    offset = CreateHoldResponse.model_validate({**hold, "expiresAt": "2026-11-23T14:10:00+02:00"})
    assert offset.expires_at.utcoffset() == timezone(timedelta(hours=2)).utcoffset(None)
    assert offset.expires_at == naive.expires_at
