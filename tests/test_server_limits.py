"""The HTTP servers (webhook receiver, codec server) bound what a client can hold: the time to send a
whole request, its size, its JSON nesting; every malformed input is a 4xx; errors log as JSON; the
slash redirect never builds a URL from the Host header (issue 25 item 3)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from tests.conftest import free_port
from workers.codec import MAX_BODY_BYTES as CODEC_MAX_BODY_BYTES
from workers.codec import EncryptionCodec, codec_server
from workers.logs import configure
from workers.servers import MAX_JSON_DEPTH, server_config
from workers.webhooks import atm_receiver

SECRET = "s" * 32
TOKEN = "t" * 32
CODEC = EncryptionCodec.from_setting(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def nowhere(workflow_id: str | None, event: Any) -> str:
    return "delivered"


def receiver() -> Starlette:
    return atm_receiver([SECRET], nowhere)


def codec_app() -> Starlette:
    return codec_server(CODEC, TOKEN, ["http://localhost:8233"])


@contextlib.asynccontextmanager
async def listening(app: Any, **limits: Any) -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(server_config(app, host="127.0.0.1", port=port, **limits))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        await task


def signed(body: bytes, delivery_id: str = "del_1") -> dict[str, str]:
    stamp = int(time.time())
    v1 = hmac.new(SECRET.encode(), f"{stamp}.{delivery_id}.".encode() + body, hashlib.sha256).hexdigest()
    return {"atm-signature": f"t={stamp},v1={v1}", "atm-delivery-id": delivery_id, "content-type": "application/json"}


async def test_half_sent_requests_are_closed_within_the_read_deadline() -> None:
    """Slowloris: connections that never finish their head, or their body, or send nothing, are closed
    once the read deadline passes (a request that arrives whole is still served)."""
    read_seconds = 1.0
    half_head = b"POST /webhooks/atm HTTP/1.1\r\nHost: x\r\natm-signature: t=1,v1=00\r\n"
    half_body = b'POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"payloads": ['
    for app, partial in ((receiver(), half_head), (codec_app(), half_body), (receiver(), b"")):
        async with listening(app, read_seconds=read_seconds) as port:
            started = time.monotonic()
            streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]
            for _, writer in streams:
                writer.write(partial)
                await writer.drain()
            async with httpx.AsyncClient() as http:  # meanwhile, a whole request is answered
                answered = await http.post(f"http://127.0.0.1:{port}/decode", content="{}")
            assert answered.status_code in (400, 401, 404)
            # Every read ends (EOF, or the 408 then EOF) within the deadline plus scheduling slack.
            await asyncio.wait_for(asyncio.gather(*(reader.read() for reader, _ in streams)), read_seconds + 4)
            assert time.monotonic() - started < read_seconds + 4
            for _, writer in streams:
                writer.close()


async def test_codec_server_caps_the_body_after_the_token() -> None:
    big = b"x" * (CODEC_MAX_BODY_BYTES + 1)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length to check
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=codec_app()), base_url="http://codec") as http:
        assert (await http.post("/encode", content=big)).status_code == 401  # nobody unauthorized is read
        assert (await http.post("/encode", content=big, headers=AUTH)).status_code == 413
        assert (await http.post("/encode", content=chunked(), headers=AUTH)).status_code == 413


async def test_codec_server_answers_4xx_for_every_malformed_input() -> None:
    [sealed] = await CODEC.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"{}")])
    other = EncryptionCodec.from_setting(f"k9:{base64.b64encode(os.urandom(32)).decode()}")
    [foreign] = await other.encode([Payload(metadata={"encoding": b"json/plain"}, data=b"{}")])
    tampered = Payload(metadata=sealed.metadata, data=sealed.data[:-1] + bytes([sealed.data[-1] ^ 1]))
    bodies = [
        b'{"payloads": [',  # not JSON
        b"\xff\xfe",  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,  # nested past any depth
        b'{"payloads": [{"data": "not base64!"}]}',
        b'{"payloads": "no"}',
        b'{"unknown": 1}',
        json_format.MessageToJson(Payloads(payloads=[foreign])).encode(),  # a key we do not hold
        json_format.MessageToJson(Payloads(payloads=[tampered])).encode(),
        json.dumps(
            {
                "payloads": [
                    {
                        "metadata": {"encoding": base64.b64encode(b"binary/encrypted").decode()},
                        "data": base64.b64encode(b"short").decode(),
                    }
                ]
            }
        ).encode(),  # no key id
    ]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=codec_app(), raise_app_exceptions=False), base_url="http://codec"
    ) as http:
        for body in bodies:
            answer = await http.post("/decode", content=body, headers=AUTH)
            assert answer.status_code == 400, (body[:40], answer.status_code, answer.text)
            assert "error" in answer.json()


async def test_webhook_json_nested_too_deep_is_400() -> None:
    deep = b'{"a":' * 30_000 + b"1" + b"}" * 30_000
    shallow_enough = json.dumps({"id": "del_1", "type": "x", "data": {"a": [[[[1]]]]}}).encode()
    too_deep = json.dumps({"id": "del_2", "type": "x", "data": json.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=receiver(), raise_app_exceptions=False), base_url="http://hooks"
    ) as http:
        answer = await http.post("/webhooks/atm", content=deep, headers=signed(deep))
        assert answer.status_code == 400, answer.text
        answer = await http.post("/webhooks/atm", content=too_deep.encode(), headers=signed(too_deep.encode(), "del_2"))
        assert answer.status_code == 400, answer.text
        answer = await http.post("/webhooks/atm", content=shallow_enough, headers=signed(shallow_enough))
        assert answer.status_code == 200, answer.text


async def test_a_trailing_slash_is_404_never_a_redirect_built_from_host() -> None:
    for app, path in ((receiver(), "/webhooks/atm/"), (codec_app(), "/decode/")):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
            answer = await http.post(path, content=b"{}", headers={"Host": "evil.example", **AUTH})
        assert answer.status_code == 404 and "location" not in answer.headers, (path, answer.headers)


async def test_server_errors_log_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """An unforeseen error is logged through the JSON pipeline, not uvicorn's plain-text traceback."""

    async def broken(request: Any) -> Any:
        raise RuntimeError("boom")

    configure("json", "INFO")
    try:
        async with listening(Starlette(routes=[Route("/", broken)])) as port, httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/")).status_code == 500
    finally:
        logging.getLogger().handlers.clear()
    lines = capsys.readouterr().err.strip().splitlines()
    logged = [json.loads(line) for line in lines]  # every line is JSON
    assert any("boom" in entry.get("exception", "") for entry in logged), lines
