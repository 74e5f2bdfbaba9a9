"""`boxoffice dev` as an operator runs it, with codec keys: it prints a one-time sign-in link; its UI
origin serves the list's columns page, points the Temporal UI's codec at its own /codec, and decodes
there only for the browser that opened the link; Ctrl-C stops it all.

The dev server's UI takes its codec endpoint from `--ui-codec-endpoint` (`temporal server start-dev
--help`) and serves it to the browser in its settings (GET /api/v1/settings, field `Codec.Endpoint`,
as UI 2.54.1 reads it)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from tests.conftest import free_port
from workers.codec import EncryptionCodec

PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email": "guest@example.com"}')


async def test_dev_prints_a_sign_in_link_and_decodes_in_the_ui_for_that_browser_only(tmp_path: Path) -> None:
    keys = f"dev:{base64.b64encode(os.urandom(32)).decode()}"
    port = free_port()
    environment = dict(
        os.environ,
        TEMPORAL_ADDRESS=f"127.0.0.1:{port}",
        BOXOFFICE_HOME=str(tmp_path),
        BOXOFFICE_SIMULATORS_PORT=str(free_port()),
        BOXOFFICE_WEBHOOKS_PORT=str(free_port()),
        BOXOFFICE_CODEC_KEYS=keys,
        BOXOFFICE_TASK_QUEUE=f"ui-dev-{port}",
    )
    environment.pop("BOXOFFICE_CODEC_AUTH_TOKEN", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "dev", env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not any(line.startswith("Try `boxoffice demo`") for line in lines):
                line = (await process.stdout.readline()).decode()
                assert line, f"boxoffice dev stopped: {lines}"
                lines.append(line.strip())
        ui_url = next(line.split()[-1] for line in lines if line.startswith("Temporal UI:"))
        link = next(
            word for line in lines if line.startswith("Decode in the UI:") for word in line.split() if word.startswith("http")
        )
        assert link.startswith(f"{ui_url}/codec/login?code=")
        sealed = await EncryptionCodec.from_setting(keys).encode([PLAIN])
        body = json_format.MessageToJson(Payloads(payloads=sealed))
        origin = {"Origin": ui_url}
        async with httpx.AsyncClient(timeout=10) as http:
            settings = (await http.get(f"{ui_url}/api/v1/settings")).json()
            columns = await http.get(f"{ui_url}/")
            stranger = await http.post(f"{ui_url}/codec/decode", content=body, headers=origin)
            signed_in = await http.get(link)
            decoded = await http.post(f"{ui_url}/codec/decode", content=body, headers=origin)
            spent = await httpx.AsyncClient().get(link)
        assert settings["Codec"]["Endpoint"] == f"{ui_url}/codec"
        assert "BoxofficeState" in columns.text
        assert (stranger.status_code, decoded.status_code, spent.status_code) == (401, 200, 403)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == f"{ui_url}/"  # the columns page
        assert list(json_format.Parse(decoded.content, Payloads()).payloads) == [PLAIN]
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
