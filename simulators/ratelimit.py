"""A provider's rate limit in front of a simulator's app: what Atom documents for its beta
(partner-docs-95q.pages.dev/getting-started/rate-limits): "25 requests/sec baseline with a 50
requests/sec burst", above that HTTP 429 Too Many Requests. *Assumed* model: a token bucket of
`per_second` tokens a second holding up to `burst - per_second` (so no second passes more than
`burst`, and the baseline holds over longer spans); the page shows no 429 body and no Retry-After,
so neither is sent. Every request is timed in `requests`, every refusal counted in `refused`."""

from __future__ import annotations

import json
import time
from typing import Any


class RateLimited:
    """ASGI app: `app` behind the limit."""

    def __init__(self, app: Any, per_second: float = 25, burst: int = 50) -> None:
        self.app = app
        self.per_second = per_second
        self.capacity = max(1.0, burst - per_second)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self.requests: list[float] = []
        self.refused = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.monotonic()
        self.requests.append(now)
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        if self._tokens < 1:
            self.refused += 1
            body = json.dumps({"message": "Too Many Requests"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self._tokens -= 1
        await self.app(scope, receive, send)

    def busiest_second(self) -> int:
        """The most requests that arrived within any one second."""
        times = sorted(self.requests)
        start, most = 0, 0
        for end, at in enumerate(times):
            while at - times[start] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
        return most
