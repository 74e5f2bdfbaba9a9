"""`boxoffice buy` fails closed outside dev (issue 25 item 2): without codec keys the request (buyer
name, e-mail, phone, card token, an Atom password) would reach Temporal's history in clear, as a
worker without keys refuses to serve (workers/settings.py production_refusals)."""

from __future__ import annotations

import base64
import json
import os

from tests.conftest import acme_request, free_port
from tests.test_cli import boxoffice, refused


async def test_buy_outside_dev_without_codec_keys_is_refused_before_anything_is_sent() -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens: a refusal must come before connecting
    request = json.dumps(acme_request("clear-1"))
    ran = await boxoffice("buy", request, address=address)
    refused(ran, 6, "BOXOFFICE_CODEC_KEYS is not set", "BOXOFFICE_ENV=dev")
    assert "tok_visa_4242" not in ran.err and "janedoe@gmail.com" not in ran.err
    # With keys, or in dev, the refusal is gone: what remains is the missing server.
    key = "k1:" + base64.b64encode(os.urandom(32)).decode()
    refused(await boxoffice("buy", request, address=address, BOXOFFICE_CODEC_KEYS=key), 1, "no Temporal server")
    refused(await boxoffice("buy", request, address=address, BOXOFFICE_ENV="dev"), 1, "no Temporal server")
