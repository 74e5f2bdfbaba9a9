"""Bad input is refused before a workflow starts, with a clear error, whatever its shape (fuzzed)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.conftest import (
    acme_request,
    atm_request,
    atom_request,
    onebox_request,
    tevo_request,
)
from workers.client import parse_request

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
