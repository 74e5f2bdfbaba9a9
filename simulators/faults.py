"""Fault injection shared by the simulators (per-endpoint latency, error answers, lost, dropped and
late requests, hooks that race a request), and the ledger of committed effects they keep."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response


class Fault(BaseModel):
    """`times` requests to `endpoint` ("*": any endpoint) answer `status` (after `delay` seconds).
    With `lost`, the request is carried out first and only its answer is replaced: the "response was
    lost" case. Without a status, the request is only slowed down by `delay`. `answer_delay` holds
    the answer back after the request was carried out: longer than the client's timeout, the work is
    done but the client never hears of it. `drop` closes the connection instead of answering (with
    `lost`, after carrying the request out). `late`: the request is answered (`status`, or dropped)
    without being carried out, and lands only after the next request to the same endpoint (its
    retry) has been answered, or when `Faults.land` is called. `hang` carries the request out and
    never answers: the attempt lives until its timeout, as one whose worker was killed does."""

    endpoint: str
    status: int | None = 500
    times: int = Field(default=1, ge=1)
    lost: bool = False
    retry_after: int | None = None
    delay: float = Field(default=0, ge=0)
    answer_delay: float = Field(default=0, ge=0)
    body: dict[str, str] | None = None
    drop: bool = False
    late: bool = False
    hang: bool = False


Hook = Callable[[], Awaitable[None]]


@dataclass
class Faults:
    pending: list[Fault] = field(default_factory=list)
    latency: float = 0.0
    # endpoint → (run after the request was carried out?, hook): run once, on the next request to it.
    hooks: dict[str, tuple[bool, Hook]] = field(default_factory=dict)
    # Requests that have not landed yet (`Fault.late`): endpoint → their handling.
    late: list[tuple[str, Callable[[], Awaitable[Response]]]] = field(default_factory=list)

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def on(self, endpoint: str, hook: Hook, after: bool = False) -> None:
        """Runs `hook` once, when the next request to `endpoint` arrives (`after`: once it is
        carried out, before it is answered): what races that request."""
        self.hooks[endpoint] = (after, hook)

    def take(self, endpoint: str) -> Fault | None:
        for fault in self.pending:
            if fault.endpoint in (endpoint, "*"):
                fault.times -= 1
                if fault.times == 0:
                    self.pending.remove(fault)
                return fault
        return None

    async def land(self, endpoint: str | None = None) -> int:
        """Carries out the late requests (to `endpoint`, or all); returns how many landed."""
        landing = [late for late in self.late if endpoint is None or late[0] == endpoint]
        for late in landing:
            self.late.remove(late)
            await late[1]()
        return len(landing)

    async def apply(self, endpoint: str, handle: Callable[[], Awaitable[Response]]) -> Response:
        """Answers a call to `endpoint` through the next fault for it, if any: instead of
        `handle`, or (a lost answer) after `handle` has done its work."""
        if self.latency:
            await asyncio.sleep(self.latency)
        hook = self.hooks.pop(endpoint, None)
        if hook is not None and not hook[0]:
            await hook[1]()
        fault = self.take(endpoint)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.late:
            self.late.append((endpoint, handle))
            return answer(fault)
        if fault is not None and (fault.status is not None or fault.drop) and not fault.lost and not fault.hang:
            return answer(fault)
        response = await handle()
        if hook is not None and hook[0]:
            await hook[1]()
        await self.land(endpoint)  # what was sent before this request lands after it
        if fault is not None and fault.hang:
            await asyncio.Event().wait()
        if fault is not None and fault.answer_delay:
            await asyncio.sleep(fault.answer_delay)
        return response if fault is None or (fault.status is None and not fault.drop) else answer(fault)


def answer(fault: Fault) -> Response:
    if fault.drop:
        # What a client sees of a connection closed before any answer. In process (httpx's
        # ASGITransport re-raises the app's exception) the client gets exactly this; over a real
        # server (uvicorn) it becomes a 500.
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
    assert fault.status is not None  # noqa: S101 — narrows the type: a fault that answers has a status
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    body = fault.body or {"errorCode": "SIMULATED_FAULT", "message": f"simulated {fault.status}"}
    return JSONResponse(body, status_code=fault.status, headers=headers)


EffectKind = Literal["order", "hold", "payment"]


@dataclass(frozen=True)
class Effect:
    """Something a provider committed to: an order, a hold of seats, a payment taken. `names` are
    the ids an operator may know it by; `standing`: still in force (a hold not released or expired,
    an order not cancelled or rejected, a payment not refunded)."""

    kind: EffectKind
    names: tuple[str, ...]
    state: str
    standing: bool
