"""Payload encryption: buyer PII, tokens and card data never reach Temporal's history in clear.

AES-256-GCM per payload; the key id travels in the payload's metadata, so after a rotation the new
key encrypts and every old key still decrypts. Keys come from BOXOFFICE_CODEC_KEYS
(`id:base64key,...`, the first one encrypts); without keys, payloads stay plain JSON.

With keys set, failures (messages and stack traces) are encrypted too: an error can quote input.
Independently of keys, a payload that does not validate (a request started from another language)
fails as one line naming the bad fields, never quoting their values (card tokens, e-mails).

`boxoffice codec-server` serves Temporal's remote codec protocol (POST /encode, /decode) for the
Temporal UI and CLI (`--codec-endpoint`), and its request metrics on BOXOFFICE_METRICS_BIND
(workers/telemetry.py). Who may call it: the CLI with the bearer token; a browser with the session
cookie a one-time sign-in link (GET /login?code=..., minted with the token by POST /login-link;
`boxoffice dev` prints one) sets, which the Temporal UI sends when its
codec settings include credentials (TEMPORAL_CODEC_INCLUDE_CREDENTIALS) or when the codec is on the
UI's own origin (`boxoffice dev`). A browser request from an origin not allowed is refused (403).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.common import MetricMeter
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)
from temporalio.exceptions import ApplicationError

from workers.servers import capped_body, loads_bounded, without_slash_redirect
from workers.telemetry import RequestMetrics
from workflows.models import PurchaseRequest

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12
# What a refusal may echo as a key id; anything else before the `:` may be a pasted key.
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# /encode and /decode bodies: the UI sends one workflow's payloads at a time (*assumed* below 4 MiB,
# Temporal's default gRPC message limit).
MAX_BODY_BYTES = 4 * 1024 * 1024
# The `type` of the ApplicationError a payload that does not validate raises (never retried).
INVALID_REQUEST = "INVALID_REQUEST"
# Fields named in a validation failure's one line; the rest are counted.
FIELDS_SHOWN = 5
REQUEST_UNION = get_args(PurchaseRequest)[0]
# The browser session a sign-in link opens: HttpOnly, SameSite=Strict, only on the codec's path.
SESSION_COOKIE = "boxoffice_codec_session"
SESSION_SECONDS = 12 * 3600
# How long a sign-in link minted with the token (POST /login-link) may wait to be opened.
CODE_SECONDS = 600


class UnknownCodecKey(ValueError):
    """A payload encrypted with a key id the keys here lack: the message is all a caller needs."""


class CodecSettings(BaseSettings):
    # An empty variable (as deploy/ sets for unused options) means "not set".
    model_config = SettingsConfigDict(env_ignore_empty=True)

    keys: SecretStr | None = Field(default=None, validation_alias="BOXOFFICE_CODEC_KEYS")
    # The codec server: who may call it, and from which browser origin (the Temporal UI).
    auth_token: SecretStr | None = Field(default=None, validation_alias="BOXOFFICE_CODEC_AUTH_TOKEN")
    cors_origins: str = Field(default="http://localhost:8233", validation_alias="BOXOFFICE_CODEC_CORS_ORIGINS")
    host: str = Field(default="127.0.0.1", validation_alias="BOXOFFICE_CODEC_HOST")
    port: int = Field(default=8081, validation_alias="BOXOFFICE_CODEC_PORT")
    # The Temporal UI server (e.g. http://temporal-ui:8080 in compose): with it, the codec server is the
    # UI's origin as under `boxoffice dev` (workers/devstack.py `ui_front`), the codec under /codec.
    ui_upstream: str | None = Field(default=None, validation_alias="BOXOFFICE_CODEC_UI_UPSTREAM")

    @field_validator("keys")
    @classmethod
    def _keys_parse(cls, keys: SecretStr | None) -> SecretStr | None:
        # Refused when the settings load, before any client connects.
        if keys is not None and keys.get_secret_value().strip():
            EncryptionCodec.from_setting(keys.get_secret_value())
        return keys

    def codec(self) -> EncryptionCodec | None:
        if self.keys is None or not self.keys.get_secret_value().strip():
            return None
        return EncryptionCodec.from_setting(self.keys.get_secret_value())


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("at least one key")
        self._active_id = keys[0][0]
        self._keys = {key_id: AESGCM(key) for key_id, key in keys}

    @classmethod
    def from_setting(cls, value: str) -> EncryptionCodec:
        """`id:base64key,id:base64key`; each key 32 bytes (AES-256)."""
        keys: list[tuple[str, bytes]] = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            key_id, colon, encoded = entry.partition(":")
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                key = b""
            if not colon or not key_id or len(key) != 32:
                # Named by position unless the id is plainly one: a key pasted without its id is no id to echo.
                name = key_id if colon and KEY_ID_PATTERN.fullmatch(key_id) else f"number {len(keys) + 1}"
                raise ValueError(f"codec key {name}: need `id:base64(32 bytes)`")
            keys.append((key_id, key))
        return cls(keys)

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        cipher = self._keys[self._active_id]
        encoded = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self._active_id.encode()}, data=data))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)  # written before encryption was on
                continue
            key_id = payload.metadata[KEY_ID].decode()
            if key_id not in self._keys:
                raise UnknownCodecKey(
                    f"payload encrypted with unknown key {key_id!r}: add it to BOXOFFICE_CODEC_KEYS (the keys the workers use)"
                )
            plain = self._keys[key_id].decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
            decoded.append(Payload.FromString(plain))
        return decoded


def validation_summary(err: ValidationError) -> str:
    """One line naming each bad field and what is wrong, without the values given (pydantic's
    own message quotes them: card tokens, e-mails)."""
    problems = [
        f"{'.'.join(str(part) for part in error['loc']) or '(value)'}: {error['msg']}"
        for error in err.errors(include_url=False, include_input=False, include_context=False)
    ]
    more = len(problems) - FIELDS_SHOWN
    return "; ".join(problems[:FIELDS_SHOWN]) + (f"; and {more} more" if more > 0 else "")


class PayloadConverter(PydanticPayloadConverter):
    """The pydantic converter, where a payload that does not validate raises a non-retryable
    ApplicationError (type INVALID_REQUEST) of one line: for a workflow's input it fails the
    workflow at once with that line instead of pydantic's message with the input values."""

    def from_payloads(self, payloads: Sequence[Payload], type_hints: list[type] | None = None) -> list[Any]:
        # The SDK reads a workflow's type hints without their Annotated extras: the request union
        # arrives without its discriminator. Validated as the tagged union, a bad request names its
        # bad fields, not every field of every provider's request.
        if type_hints:
            type_hints = [PurchaseRequest if hint == REQUEST_UNION else hint for hint in type_hints]  # type: ignore[misc]
        try:
            return super().from_payloads(payloads, type_hints)
        except ValidationError as err:
            # `from None`: the ValidationError, values and all, must not travel as the cause.
            # A union's title lists its members: name it plainly.
            what = err.title if err.title.isidentifier() else "request"
            raise ApplicationError(
                f"invalid {what}: {validation_summary(err)}", type=INVALID_REQUEST, non_retryable=True
            ) from None


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    if codec is None:
        return DataConverter(payload_converter_class=PayloadConverter)
    return DataConverter(
        payload_converter_class=PayloadConverter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


class UiSessions:
    """One-time sign-in codes and the browser sessions they open, in this process's memory (one
    codec server: `boxoffice dev`, compose; behind a load balancer each replica would need its own
    sign-in, so production puts the codec behind the UI's own sign-in: README)."""

    def __init__(self, after_login: str, seconds: float = SESSION_SECONDS) -> None:
        self.after_login = after_login  # where a signed-in browser goes: the Temporal UI
        self.seconds = seconds
        self._codes: dict[str, float] = {}  # code -> expiry (monotonic)
        self._sessions: dict[str, float] = {}  # session id -> expiry (monotonic)

    def new_code(self, seconds: float = CODE_SECONDS) -> str:
        code = secrets.token_urlsafe(32)
        now = time.monotonic()
        self._codes = {key: until for key, until in self._codes.items() if until > now}
        self._codes[code] = now + seconds
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for an unused, unexpired code (the code is spent), else None."""
        now = time.monotonic()
        if self._codes.pop(code, 0.0) <= now:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions = {key: until for key, until in self._sessions.items() if until > now}
        self._sessions[session] = now + self.seconds
        return session

    def valid(self, session: str | None) -> bool:
        return session is not None and self._sessions.get(session, 0.0) > time.monotonic()


def codec_server(
    codec: EncryptionCodec,
    auth_token: str,
    cors_origins: Sequence[str],
    meter: MetricMeter | None = None,
    sessions: UiSessions | None = None,
) -> Starlette:
    """Temporal's remote codec protocol: JSON `{"payloads": [...]}` in and out. The caller (bearer
    token, or with `sessions` a signed-in browser's cookie) and its origin are checked before the
    body is read; a body over MAX_BODY_BYTES is 413; anything that does not parse, decode or decrypt
    is 400, naming what, never quoting it. With `meter`, every request is counted and timed
    (refusals and CORS preflights too)."""
    allowed_origins = frozenset(cors_origins)

    def bearer(request: Request) -> bool:
        sent = request.headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {auth_token}".encode())

    def authorized(request: Request) -> bool:
        return bearer(request) or (sessions is not None and sessions.valid(request.cookies.get(SESSION_COOKIE)))

    def foreign(request: Request) -> bool:
        # Browsers name the page's origin on every POST; the CLI sends none.
        origin = request.headers.get("origin")
        return origin is not None and origin not in allowed_origins

    def refuse(status: int, error: str) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status)

    def endpoint(encode: bool) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            if foreign(request):
                return refuse(403, "origin not allowed")
            if not authorized(request):
                return refuse(401, "unauthorized")
            length = request.headers.get("content-length", "0")
            raw = None if not length.isdigit() or int(length) > MAX_BODY_BYTES else (await capped_body(request, MAX_BODY_BYTES))
            if raw is None:
                return refuse(413, f"body over {MAX_BODY_BYTES} bytes")
            try:
                payloads = json_format.ParseDict(loads_bounded(raw), Payloads())
            except (ValueError, json_format.ParseError):  # json_format's errors quote no payload data
                return refuse(400, 'not a JSON {"payloads": [...]} object')
            try:
                done = await (codec.encode if encode else codec.decode)(payloads.payloads)
            except (InvalidTag, KeyError, ValueError, DecodeError) as err:
                # Wrong key, tampered or truncated data: the input's fault, not the server's.
                return refuse(400, f"cannot decode: {type(err).__name__}" + (f" ({err})" if isinstance(err, ValueError) else ""))
            return Response(json_format.MessageToJson(Payloads(payloads=done)), media_type="application/json")

        return handle

    async def login(request: Request) -> Response:
        assert sessions is not None  # noqa: S101 — narrows the type: these routes exist only with sessions
        session = sessions.redeem(request.query_params.get("code", ""))
        if session is None:
            return refuse(403, "sign-in link unknown or already used")
        answer = RedirectResponse(sessions.after_login, status_code=303)
        answer.set_cookie(
            SESSION_COOKIE,
            session,
            max_age=int(sessions.seconds),
            path=request.scope.get("root_path") or "/",
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return answer

    async def login_link(request: Request) -> Response:
        # Only the token mints a link: a browser session cannot hand out more.
        assert sessions is not None  # noqa: S101 — narrows the type: these routes exist only with sessions
        if foreign(request):
            return refuse(403, "origin not allowed")
        if not bearer(request):
            return refuse(401, "unauthorized")
        # With the path the codec is mounted under (`ui_front`'s /codec), which base_url leaves out.
        base = str(request.url.replace(path=request.scope.get("root_path", ""), query="")).rstrip("/")
        return JSONResponse({"url": f"{base}/login?code={sessions.new_code()}", "expires_in_seconds": CODE_SECONDS})

    routes = [Route("/encode", endpoint(True), methods=["POST"]), Route("/decode", endpoint(False), methods=["POST"])]
    if sessions is not None:
        routes += [Route("/login", login, methods=["GET"]), Route("/login-link", login_link, methods=["POST"])]
    return without_slash_redirect(
        Starlette(
            routes=routes,
            middleware=[
                *(
                    [
                        Middleware(
                            RequestMetrics, meter=meter, server="codec", paths=("/encode", "/decode", "/login", "/login-link")
                        )
                    ]
                    if meter
                    else []
                ),
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(cors_origins),
                    allow_methods=["POST"],
                    allow_headers=["authorization", "content-type", "x-namespace"],
                    allow_credentials=True,
                ),
            ],
        )
    )
