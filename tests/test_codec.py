"""Payload encryption: what Temporal stores holds no buyer PII or secret in clear; key rotation;
the codec server for the UI."""

from __future__ import annotations

import base64
import os

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from simulators.atom import AtomSimulator
from tests.conftest import atom_request, atom_worker
from workers.client import purchase_outcome, start_purchase
from workers.codec import EncryptionCodec, codec_server, data_converter
from workflows.models import PurchaseState


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


K1, K2 = f"k1:{key()}", f"k2:{key()}"
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email": "guest@example.com"}')


async def test_rotation_old_keys_still_decrypt() -> None:
    old = EncryptionCodec.from_setting(K1)
    [sealed] = await old.encode([PLAIN])
    assert sealed.metadata["encryption-key-id"] == b"k1" and b"guest@example.com" not in sealed.data
    rotated = EncryptionCodec.from_setting(f"{K2},{K1}")  # k2 encrypts now, k1 still decrypts
    assert await rotated.decode([sealed]) == [PLAIN]
    [resealed] = await rotated.encode([PLAIN])
    assert resealed.metadata["encryption-key-id"] == b"k2"
    with pytest.raises(ValueError, match="unknown key 'k2'"):
        await old.decode([resealed])
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    with pytest.raises(InvalidTag):
        await old.decode([tampered])
    assert await old.decode([PLAIN]) == [PLAIN]  # payloads from before encryption still read


def test_bad_keys_are_refused() -> None:
    for setting in ("k1:" + base64.b64encode(b"short").decode(), ":" + key()):
        with pytest.raises(ValueError):
            EncryptionCodec.from_setting(setting)


async def test_history_holds_no_buyer_email_or_tokens(env: WorkflowEnvironment) -> None:
    codec = EncryptionCodec.from_setting(K1)
    sealed_client = Client(env.client.service_client, namespace=env.client.namespace, data_converter=data_converter(codec))
    sim = AtomSimulator()
    async with atom_worker(sealed_client, sim) as tq:
        handle = await start_purchase(sealed_client, atom_request("sealed-1"), tq)
        result = await purchase_outcome(handle)
    assert result.state == PurchaseState.FULFILLED  # the codec's own client reads it
    raw = (await env.client.get_workflow_handle(handle.id).fetch_history()).to_json()  # no codec: as stored
    token = next(iter(sim.tokens))
    for secret in ("guest@example.com", "Jane", token, "VNDR-QR-A1", "36.18"):
        assert secret not in raw
    assert base64.b64encode(b"binary/encrypted").decode() in raw  # metadata is base64 in history JSON


async def test_codec_server_decodes_for_the_ui_with_the_token_only() -> None:
    codec = EncryptionCodec.from_setting(K1)
    sealed = await codec.encode([PLAIN])
    app = codec_server(codec, "ui-token", ["http://localhost:8233"])
    body = json_format.MessageToJson(Payloads(payloads=sealed))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://codec") as client:
        refused = await client.post("/decode", content=body)
        wrong = await client.post("/decode", content=body, headers={"Authorization": "Bearer nope"})
        decoded = await client.post("/decode", content=body, headers={"Authorization": "Bearer ui-token"})
        preflight = await client.options(
            "/decode",
            headers={
                "Origin": "http://localhost:8233",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type,x-namespace",
            },
        )
        stranger = await client.options(
            "/decode", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
    assert (refused.status_code, wrong.status_code, decoded.status_code) == (401, 401, 200)
    assert list(json_format.Parse(decoded.content, Payloads()).payloads) == [PLAIN]
    assert preflight.headers["access-control-allow-origin"] == "http://localhost:8233"
    assert "access-control-allow-origin" not in stranger.headers


def test_a_key_pasted_without_its_id_is_not_echoed() -> None:
    bare = key()
    for setting in (bare, f"k1:{key()},{bare}"):
        with pytest.raises(ValueError) as refused:
            EncryptionCodec.from_setting(setting)
        assert bare not in str(refused.value) and bare[:8] not in str(refused.value)
        assert "id:" in str(refused.value)
