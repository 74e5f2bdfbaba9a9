"""Bad input is refused before a workflow starts, with a clear error, whatever its shape (fuzzed);
started from elsewhere, it fails the workflow in one line that quotes no value."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from simulators.acme import AcmeSimulator
from tests.conftest import (
    acme_request,
    acme_worker,
    atm_request,
    atom_request,
    onebox_request,
    tevo_request,
)
from workers.client import parse_request, purchase_outcome
from workers.codec import EncryptionCodec, data_converter

EXAMPLES = [atom_request("p-1"), onebox_request("p-2"), tevo_request("p-3"), atm_request("p-4"), acme_request("p-5")]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def parses_or_refuses(data: Any) -> None:
    try:
        request = parse_request(data)
    except ValidationError as err:
        assert err.errors(), "a refusal names what is wrong"
        return
    # Accepted: it survives the trip through JSON, as it will through Temporal.
    assert parse_request(request.model_dump_json()) == request


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_is_parsed_or_refused(data: Any) -> None:
    parses_or_refuses(data)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_requests_are_parsed_or_refused(example: dict[str, Any], data: st.DataObject) -> None:
    request = json.loads(json.dumps(example))
    key = data.draw(st.sampled_from(sorted(request)))
    if data.draw(st.booleans()):
        del request[key]
    else:
        request[key] = data.draw(JSON)
    parses_or_refuses(request)
    parses_or_refuses(json.dumps(request))


def test_examples_are_valid_and_provider_is_required() -> None:
    for example in EXAMPLES:
        assert parse_request(example).provider == example["provider"]
    missing = {k: v for k, v in EXAMPLES[0].items() if k != "provider"}
    try:
        parse_request(missing)
    except ValidationError as err:
        assert "provider" in str(err)
    else:
        raise AssertionError("a request without provider was accepted")


async def test_bad_request_from_another_language_fails_in_one_line_without_values(env: WorkflowEnvironment) -> None:
    """Started as plain JSON, bypassing start_purchase's validation: the workflow fails at once,
    typed, naming the field; the failure Temporal stores quotes none of the request's values."""
    bad = acme_request("other-1")
    del bad["browser_ip"]  # pydantic's own message would quote the whole request, card token included
    elsewhere = Client(env.client.service_client, namespace=env.client.namespace, data_converter=pydantic_data_converter)
    async with acme_worker(env.client, AcmeSimulator()) as tq:
        handle = await elsewhere.start_workflow("PurchaseWorkflow", bad, id="purchase-other-1", task_queue=tq)
        with pytest.raises(WorkflowFailureError) as failed:
            await purchase_outcome(handle)
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "INVALID_REQUEST" and cause.non_retryable
    assert cause.message == "invalid request: acme.browser_ip: Field required"
    assert cause.cause is None
    history = await handle.fetch_history()
    after_start = [json_format.MessageToJson(event) for event in history.events[1:]]
    assert len(after_start) <= 4  # task scheduled, started, completed, execution failed: no retries
    assert not any("tok_visa_4242" in event or "janedoe" in event for event in after_start)


async def test_failures_are_encrypted_with_codec_keys(env: WorkflowEnvironment) -> None:
    codec = EncryptionCodec.from_setting(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
    sealed = Client(env.client.service_client, namespace=env.client.namespace, data_converter=data_converter(codec))
    bad = acme_request("sealed-bad")
    del bad["browser_ip"]
    async with acme_worker(sealed, AcmeSimulator()) as tq:
        handle = await sealed.start_workflow("PurchaseWorkflow", bad, id="purchase-sealed-bad", task_queue=tq)
        with pytest.raises(WorkflowFailureError) as failed:
            await purchase_outcome(handle)
    # The codec's own client reads the failure; Temporal stores it encrypted.
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.message == "invalid request: acme.browser_ip: Field required"
    raw = (await env.client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert "browser_ip" not in raw and "invalid request" not in raw
    assert "Encoded failure" in raw
