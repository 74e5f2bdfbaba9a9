"""Fault injection shared by the simulators: per-endpoint latency, error answers, lost responses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from starlette.responses import JSONResponse, Response


class Fault(BaseModel):
    """`times` requests to `endpoint` answer `status` (after `delay` seconds). With `lost`, the
    request is carried out first and only its answer is replaced: the "response was lost" case.
    Without a status, the request is only slowed down by `delay`. `answer_delay` holds the answer
    back after the request was carried out: longer than the client's timeout, the work is done but
    the client never hears of it."""

    endpoint: str
    status: int | None = 500
    times: int = Field(default=1, ge=1)
    lost: bool = False
    retry_after: int | None = None
    delay: float = Field(default=0, ge=0)
    answer_delay: float = Field(default=0, ge=0)
    body: dict[str, str] | None = None


@dataclass
class Faults:
    pending: list[Fault] = field(default_factory=list)
    latency: float = 0.0

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def take(self, endpoint: str) -> Fault | None:
        for fault in self.pending:
            if fault.endpoint == endpoint:
                fault.times -= 1
                if fault.times == 0:
                    self.pending.remove(fault)
                return fault
        return None

    async def apply(self, endpoint: str, handle: Callable[[], Awaitable[Response]]) -> Response:
        """Answers a call to `endpoint` through the next fault for it, if any: instead of
        `handle`, or (a lost answer) after `handle` has done its work."""
        if self.latency:
            await asyncio.sleep(self.latency)
        fault = self.take(endpoint)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None and not fault.lost:
            return answer(fault)
        response = await handle()
        if fault is not None and fault.answer_delay:
            await asyncio.sleep(fault.answer_delay)
        return response if fault is None or fault.status is None else answer(fault)


def answer(fault: Fault) -> Response:
    assert fault.status is not None
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
    body = fault.body or {"errorCode": "SIMULATED_FAULT", "message": f"simulated {fault.status}"}
    return JSONResponse(body, status_code=fault.status, headers=headers)
