"""What operators see of the worker: every activity log line bound to its purchase, and metrics.

Log lines from activities carry workflow_id, run_id, purchase_id, provider and step (structlog
contextvars, set per activity task). Workflow code logs through `workflow.logger`, which adds the
workflow's ids and stays silent during replay, so nothing is printed twice.

Metrics (Prometheus, on BOXOFFICE_METRICS_BIND next to the SDK's own): `boxoffice_step_latency`
per provider/step/outcome here; purchases started/finished and compensations in PurchaseWorkflow;
`boxoffice_http_requests` and `boxoffice_http_request_latency` of the HTTP servers (`RequestMetrics`).

The SDK core's (Rust) log lines are forwarded to the `temporalio.core` Python logger (`sdk_runtime`),
so they come out as every other line (JSON in production), not as the core's own coloured text.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection
from typing import Any

import structlog
from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

CORE_LOGGER = "temporalio.core"


def sdk_runtime(metrics_bind: str | None = None) -> Runtime:
    """A Runtime forwarding the core's log lines to CORE_LOGGER (its target and fields travel on the
    record, workers/logs.py makes them fields) and, with `metrics_bind`, exposing the SDK's and
    boxoffice's metrics at http://{metrics_bind}/metrics."""
    forwarding = LogForwardingConfig(
        logging.getLogger(CORE_LOGGER),
        append_target_to_name=False,
        prepend_target_on_message=False,
        append_log_fields_to_message=False,
    )
    return Runtime(
        telemetry=TelemetryConfig(
            # The SDK's default levels (core WARN, other ERROR), only no longer written by the core itself.
            logging=LoggingConfig(filter=TelemetryFilter(core_level="WARN", other_level="ERROR"), forwarding=forwarding),
            metrics=PrometheusConfig(bind_address=metrics_bind) if metrics_bind else None,
        )
    )


@functools.cache
def forwarding_runtime() -> Runtime:
    """The Runtime of a process's clients built without one (one per process, as the SDK's default)."""
    return sdk_runtime()


class RequestMetrics:
    """ASGI middleware counting an HTTP server's requests (`boxoffice_http_requests`) and timing them
    (`boxoffice_http_request_latency`, ms) by server, method, path and status. A path outside `paths`
    is counted as "other": a scanner's paths do not become series."""

    def __init__(self, app: Any, meter: MetricMeter, server: str, paths: Collection[str]) -> None:
        self.app = app
        self.server = server
        self.paths = frozenset(paths)
        self.requests = meter.create_counter("boxoffice_http_requests", "HTTP requests answered")
        self.latency = meter.create_histogram("boxoffice_http_request_latency", "Time an HTTP request took", "ms")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app answers

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            labels = {
                "server": self.server,
                "method": scope["method"],
                "status": str(status),
                "path": scope["path"] if scope["path"] in self.paths else "other",
            }
            self.requests.add(1, labels)
            self.latency.record(round((time.perf_counter() - started) * 1000), labels)


class Telemetry(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _BoundActivity(next)


class _BoundActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        provider, _, step = info.activity_type.partition(".")
        started = time.perf_counter()
        outcome = "ok"
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            purchase_id=(info.workflow_id or "").removeprefix("purchase-"),
            provider=provider,
            step=step,
            attempt=info.attempt,
        ):
            try:
                return await super().execute_activity(input)
            except BaseException:
                outcome = "error"
                raise
            finally:
                activity.metric_meter().create_histogram(
                    "boxoffice_step_latency", "Time a provider call (activity attempt) took", "ms"
                ).record(round((time.perf_counter() - started) * 1000), {"provider": provider, "step": step, "outcome": outcome})
