"""redact() (activities/http.py) on every shape a provider error or a log line carries: JSON, Python
reprs, form and query strings, headers, bearer tokens, names, phone numbers, e-mail addresses."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from activities.http import redact
from workers.logs import configure

# (shape, text, what must not survive, what must survive)
CASES: list[tuple[str, str, list[str], list[str]]] = [
    (
        "json secret fields",
        '{"authToken": "abc123", "password": "hunter2", "x-api-key": "k-9"}',
        ["abc123", "hunter2", "k-9"],
        ['"authToken": "***"'],
    ),
    ("json escaped quote in value", r'{"password": "hun\"ter2", "ok": 1}', ["hun", "ter2"], ['"ok": 1']),
    ("json card token and qr", '{"card_token": "tok_visa_4242", "vendorQrCodeData": "QR-1"}', ["tok_visa_4242", "QR-1"], []),
    (
        "json names",
        '{"first_name": "Jane", "lastName": "Doe", "contactFirstName": "Janet", "event": "Hamlet"}',
        ["Jane", "Doe", "Janet"],
        ["Hamlet"],
    ),
    (
        "json phone",
        '{"phoneNumber": "+1 555 010 9999", "phone": 5550109999, "quantity": 2}',
        ["555 010 9999", "5550109999"],
        ['"quantity": 2'],
    ),
    ("json email", '{"email": "jane.doe@example.com"}', ["jane.doe@"], ["j***@example.com"]),
    ("python repr dict", "{'password': 'x-secret', 'first_name': 'Jane', 'seat': 'A1'}", ["x-secret", "Jane"], ["'seat': 'A1'"]),
    ("python repr double-quoted", "{'client_secret': \"s3cr3t\"}", ["s3cr3t"], []),
    (
        "form body",
        "grant_type=client_credentials&client_id=cid&client_secret=s3cr3t&scope=read",
        ["s3cr3t"],
        ["grant_type=client_credentials", "scope=read"],
    ),
    ("query string", "GET /v1/events?api_key=k-123&page=2", ["k-123"], ["page=2"]),
    ("form phone and name", "phone_number=%2B15550109999&last_name=Doe", ["15550109999", "Doe"], []),
    ("log key=value", "request failed password='pw 1' attempt=3", ["pw 1"], ["attempt=3"]),
    ("bearer header", "Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig-1", ["eyJhbGciOi", "sig-1"], ["Authorization"]),
    ("bearer in prose", "sent bearer abc.def-ghi to onebox", ["abc.def-ghi"], ["to onebox"]),
    ("basic header", "authorization: Basic dXNlcjpwdw==", ["dXNlcjpwdw=="], []),
    ("api key header", "x-api-key: k-123\r\nx-request-id: r-1", ["k-123"], ["x-request-id: r-1"]),
    ("phone in prose", "buyer called from +44 20 7946 0958 about seat A1", ["7946 0958"], ["seat A1"]),
    ("email in prose", "no account for jane.doe@example.com", ["jane.doe@"], ["j***@example.com"]),
    (
        "ids and times stay",
        "order 30263798 at 2026-02-14T19:30:00+00:00 total 36.18",
        [],
        ["30263798", "2026-02-14T19:30:00+00:00", "36.18"],
    ),
]


@pytest.mark.parametrize(("shape", "text", "gone", "kept"), CASES, ids=[case[0] for case in CASES])
def test_redact_masks_every_shape(shape: str, text: str, gone: list[str], kept: list[str]) -> None:
    masked = redact(text)
    for value in gone:
        assert value not in masked, (shape, masked)
    for value in kept:
        assert value in masked, (shape, masked)


def test_known_secret_values_are_masked_anywhere() -> None:
    assert redact("signed with zz-top-secret-zz ok", ["zz-top-secret-zz"]) == "signed with *** ok"


def test_log_lines_mask_fields_and_nested_values(capsys: pytest.CaptureFixture[str]) -> None:
    """A log call's own fields are masked by name and value, nested dicts too: what an operator's log holds."""
    configure("json", "INFO")
    try:
        structlog.get_logger("t").info(
            "provider said no",
            password="hunter2",
            phone="+1 555 010 9999",
            body={"client_secret": "s3cr3t", "nested": {"first_name": "Jane"}},
            detail="Authorization: Bearer eyJabc",
        )
        logging.getLogger("t").warning("token=%s for %s", "tk-1", "jane@example.com")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    for value in ("hunter2", "555 010 9999", "s3cr3t", "Jane", "eyJabc", "tk-1", "jane@"):
        assert value not in err, (value, err)
    assert all(json.loads(line) for line in err.strip().splitlines())
