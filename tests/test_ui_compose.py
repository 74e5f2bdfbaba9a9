"""`boxoffice codec-server` with BOXOFFICE_CODEC_UI_UPSTREAM (deploy/compose.yaml): the browser's origin
is the codec server's, which serves `ui_front` there as `boxoffice dev` does (the columns page at /,
the codec under /codec, everything else forwarded to the Temporal UI server), keeping the codec's
refusals. Without the setting it is the bare codec (tests/test_codec.py, tests/test_ui_codec.py)."""

from __future__ import annotations

import base64
import os
from urllib.parse import urlsplit

import httpx

from tests.test_ui_front import fake_ui_server
from workers.cli import codec_server_app
from workers.codec import SESSION_COOKIE, CodecSettings
from workers.devstack import LIST_COLUMNS

UI = "http://localhost:8080"  # the browser's origin: the codec server's port, as compose publishes it
TOKEN = "t" * 32
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def settings(upstream: str | None) -> CodecSettings:
    return CodecSettings(
        BOXOFFICE_CODEC_KEYS=f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        BOXOFFICE_CODEC_AUTH_TOKEN=TOKEN,
        BOXOFFICE_CODEC_CORS_ORIGINS=UI,
        BOXOFFICE_CODEC_UI_UPSTREAM=upstream,
    )


def browser(upstream: str | None) -> httpx.AsyncClient:
    app = codec_server_app(settings(upstream), "shop", meter=None)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=UI)


async def test_with_the_ui_upstream_the_codec_server_is_the_uis_origin() -> None:
    body = '{"payloads": []}'
    async with fake_ui_server() as upstream, browser(upstream) as http:
        page = await http.get("/")
        forwarded = await http.get("/api/v1/namespaces/shop/workflows?query=x%3D1")
        stranger = await http.post("/codec/decode", content=body, headers={"Origin": UI})
        other_origin = await http.post("/codec/decode", content=body, headers={"Origin": "http://evil.example", **BEARER})
        minted = await http.post("/codec/login-link", headers=BEARER)
        link = urlsplit(minted.json()["url"])
        signed_in = await http.get(f"{link.path}?{link.query}")
        decoded = await http.post("/codec/decode", content=body, headers={"Origin": UI})
    assert page.status_code == 200 and '"BoxofficeState"' in page.text and 'namespace = "shop"' in page.text
    assert all(f'"{column}"' in page.text for column in LIST_COLUMNS)
    assert forwarded.status_code == 207 and forwarded.json()["path"] == "/api/v1/namespaces/shop/workflows"
    assert forwarded.json()["query"] == "query=x%3D1"
    assert (stranger.status_code, other_origin.status_code, decoded.status_code) == (401, 403, 200)
    # The sign-in link is the codec's on this origin, and lands on the UI (the columns page at /).
    assert f"{link.scheme}://{link.netloc}{link.path}" == f"{UI}/codec/login"
    assert signed_in.status_code == 303 and signed_in.headers["location"].rstrip("/") == UI
    assert "Path=/codec" in signed_in.headers["set-cookie"] and f"{SESSION_COOKIE}=" in signed_in.headers["set-cookie"]


async def test_without_the_ui_upstream_it_is_the_bare_codec() -> None:
    async with browser(None) as http:
        assert (await http.get("/")).status_code == 404
        assert (await http.post("/decode", content='{"payloads": []}', headers=BEARER)).status_code == 200
        link = (await http.post("/login-link", headers=BEARER)).json()["url"]
    assert link.startswith(f"{UI}/login?code=")
