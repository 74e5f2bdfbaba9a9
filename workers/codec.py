"""Payload encryption: buyer PII, tokens and card data never reach Temporal's history in clear.

AES-256-GCM per payload; the key id travels in the payload's metadata, so after a rotation the new
key encrypts and every old key still decrypts. Keys come from BOXOFFICE_CODEC_KEYS
(`id:base64key,...`, the first one encrypts); without keys, payloads stay plain JSON.

`boxoffice codec-server` serves Temporal's remote codec protocol (POST /encode, /decode) for the
Temporal UI and CLI (`--codec-endpoint`), with CORS for the UI and a bearer-token check.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
NONCE_BYTES = 12


class CodecSettings(BaseSettings):
    keys: SecretStr | None = Field(default=None, validation_alias="BOXOFFICE_CODEC_KEYS")
    # The codec server: who may call it, and from which browser origin (the Temporal UI).
    auth_token: SecretStr | None = Field(default=None, validation_alias="BOXOFFICE_CODEC_AUTH_TOKEN")
    cors_origins: str = Field(default="http://localhost:8233", validation_alias="BOXOFFICE_CODEC_CORS_ORIGINS")
    host: str = Field(default="127.0.0.1", validation_alias="BOXOFFICE_CODEC_HOST")
    port: int = Field(default=8081, validation_alias="BOXOFFICE_CODEC_PORT")

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
        keys = []
        for entry in filter(None, (part.strip() for part in value.split(","))):
            key_id, _, encoded = entry.partition(":")
            key = base64.b64decode(encoded)
            if not key_id or len(key) != 32:
                raise ValueError(f"codec key {key_id or '?'}: need `id:base64(32 bytes)`")
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
                raise ValueError(f"payload encrypted with unknown key {key_id!r}: add it to BOXOFFICE_CODEC_KEYS")
            plain = self._keys[key_id].decrypt(payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:], None)
            decoded.append(Payload.FromString(plain))
        return decoded


def data_converter(codec: PayloadCodec | None) -> DataConverter:
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec) if codec else pydantic_data_converter


def codec_server(codec: EncryptionCodec, auth_token: str, cors_origins: Sequence[str]) -> Starlette:
    """Temporal's remote codec protocol: JSON `{"payloads": [...]}` in and out."""

    def authorized(request: Request) -> bool:
        sent = request.headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {auth_token}".encode())

    def endpoint(encode: bool):  # noqa: ANN202
        async def handle(request: Request) -> Response:
            if not authorized(request):
                return JSONResponse({"error": "unauthorized"}, status_code=401)
            payloads = json_format.Parse(await request.body(), Payloads())
            done = await (codec.encode if encode else codec.decode)(payloads.payloads)
            return Response(json_format.MessageToJson(Payloads(payloads=done)), media_type="application/json")

        return handle

    return Starlette(
        routes=[Route("/encode", endpoint(True), methods=["POST"]), Route("/decode", endpoint(False), methods=["POST"])],
        middleware=[Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["POST"],
                               allow_headers=["authorization", "content-type", "x-namespace"],
                               allow_credentials=True)],
    )
