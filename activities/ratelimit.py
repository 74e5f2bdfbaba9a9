"""A rate-limited provider's limit shared by every worker process that calls it, with nothing but
Temporal: each process takes limit/N, N the processes polling the provider's task queue (only they
call the provider: they hold its credentials). Every request a process sends takes a token of its
share first, local activity or regular; the queue's server-side limit stays as a second bound on
the regular ones.

Why it holds (bench/README.md, "Rate-limited providers"):
- N counts every identity Temporal listed as a poller of the queue within POLLER_MEMORY, in either
  describe mode (the default mode reads one partition, the deprecated enhanced mode misses versions
  now and then: measured on the dev server), plus this process: a process that left is still
  counted for a while (its share goes unused), never the other way round.
- A process that joins takes no share until Temporal has listed it as a poller for SETTLE_SECONDS:
  by then every other process has refreshed since, and counts it. (Measured: two processes that
  started together and each took the whole limit until they saw the other sent 50 requests in their
  first second, and met 429s.) Its bucket starts empty. The bursts the shares allow leave room, in
  the provider's documented burst, for a process missing from another's answers for a refresh.
- Temporal not answering for STALE_SECONDS stops this process's calls until it answers again (it
  cannot see who joined meanwhile).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog
from temporalio.api.enums.v1 import DescribeTaskQueueMode, TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue, TaskQueueVersionSelection
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

log = structlog.get_logger("boxoffice.ratelimit")

REFRESH_SECONDS = 1.0
# Twice the refresh: a refresh's answer may be up to one interval old when it is read.
SETTLE_SECONDS = 2 * REFRESH_SECONDS
# The server lists a poller for minutes after its last poll; a process missing from one answer (a
# partition not read) is still counted for this long after it was last listed.
POLLER_MEMORY_SECONDS = 60.0
STALE_SECONDS = 5.0
NO_SHARE = "NO_RATE_LIMIT_SHARE"
# When pollers were listed and Temporal last answered (a test moves it on).
clock = time.monotonic


class TokenBucket:
    """Tokens at `rate` per second up to `capacity`, starting empty; `acquire` waits its turn (FIFO)."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.capacity = 1.0
        self._tokens = 0.0
        self._stamp = time.monotonic()
        self._turn = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def set(self, rate: float, capacity: float) -> None:
        self._refill()
        self.rate, self.capacity = rate, capacity
        self._tokens = min(self._tokens, capacity)

    async def acquire(self) -> None:
        async with self._turn:
            while True:
                self._refill()
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate if self.rate > 0 else REFRESH_SECONDS)


def burst_budget(per_second: float, burst: int | None) -> float:
    """What the shares together may send at once beyond the rate: the provider's documented burst
    (requests in a second) less one second at the rate, less half a second more as a margin for a
    process another has not counted yet; 1 without a documented burst."""
    if burst is None:
        return 1.0
    return max(1.0, burst - per_second * (1 + REFRESH_SECONDS / 2))


class SharedLimit:
    """This process's share of a provider's `per_second` (bursts to `burst`), sized from the pollers of
    the provider's `task_queue` and refreshed while `running`. `available` is False on a server that
    cannot list pollers (the time-skipping test server): then nothing is gated here, no call runs
    locally, and the queue's server-side limit alone holds (regular activities only)."""

    def __init__(self, client: Client, task_queue: str, identity: str, per_second: float, burst: int | None) -> None:
        self.client = client
        self.task_queue = task_queue
        self.identity = identity
        self.per_second = per_second
        self.burst = burst
        self.available = True
        self.workers = 0
        self.bucket = TokenBucket()
        self._seen: dict[str, float] = {}
        self._answered_at: float | None = None
        self._listed_since: float | None = None

    @property
    def fresh(self) -> bool:
        return self._answered_at is not None and clock() - self._answered_at < STALE_SECONDS

    @property
    def settled(self) -> bool:
        """Listed as a poller long enough for every other process to count this one."""
        return self._listed_since is not None and clock() - self._listed_since >= SETTLE_SECONDS

    @property
    def local_calls(self) -> bool:
        """Whether this process may run the provider's rerun-safe calls and reads as local activities."""
        return self.available and self.fresh

    async def acquire(self) -> None:
        """Waits for a token of this process's share (not at all where `available` is False)."""
        if not self.available:
            return
        if not self.fresh:
            self.bucket.set(0, 1)  # who joined meanwhile is unknown: no calls until Temporal answers
        await self.bucket.acquire()

    async def _pollers(self) -> set[str]:
        service = self.client.workflow_service
        queue = TaskQueue(name=self.task_queue)
        activities = TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
        default = await service.describe_task_queue(
            DescribeTaskQueueRequest(namespace=self.client.namespace, task_queue=queue, task_queue_type=activities)
        )
        enhanced = await service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=self.client.namespace,
                task_queue=queue,
                api_mode=DescribeTaskQueueMode.DESCRIBE_TASK_QUEUE_MODE_ENHANCED,
                task_queue_types=[activities],
                report_pollers=True,
                versions=TaskQueueVersionSelection(unversioned=True, all_active=True),
            )
        )
        listed = {poller.identity for poller in default.pollers}
        for version in enhanced.versions_info.values():
            listed |= {poller.identity for info in version.types_info.values() for poller in info.pollers}
        return listed

    async def refresh(self) -> None:
        """Counts the queue's pollers and resizes this process's share."""
        try:
            listed = await self._pollers()
        except RPCError as err:
            if err.status == RPCStatusCode.UNIMPLEMENTED:
                self.available = False
                log.warning("server lists no pollers: the task queue's limit alone holds", task_queue=self.task_queue)
            else:
                log.warning("pollers not listed", task_queue=self.task_queue, error=err.message)
            return
        now = clock()
        self._seen.update(dict.fromkeys(listed | {self.identity}, now))
        self._seen = {who: at for who, at in self._seen.items() if now - at < POLLER_MEMORY_SECONDS}
        self._answered_at = now
        if self.identity in listed and self._listed_since is None:
            self._listed_since = now
        if len(self._seen) != self.workers:
            log.info("rate limit shared", task_queue=self.task_queue, workers=len(self._seen), per_second=self.per_second)
        self.workers = len(self._seen)
        share = self.per_second / self.workers if self.settled else 0.0
        self.bucket.set(share, max(1.0, burst_budget(self.per_second, self.burst) / self.workers))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SharedLimit]:
        await self.refresh()

        async def keep_refreshing() -> None:
            while self.available:
                await asyncio.sleep(REFRESH_SECONDS)
                await self.refresh()

        task = asyncio.create_task(keep_refreshing())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class NoShare:
    """Stands in where a rate-limited provider's calls have no share: a process without the provider's
    role. Only a local activity gets here (a purchase whose workflow task moved from a process with
    the role); it fails, retryably, instead of calling the provider unlimited."""

    local_calls = False

    async def acquire(self) -> None:
        raise ApplicationError("this worker holds no share of the provider's rate limit", type=NO_SHARE)
