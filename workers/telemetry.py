"""What operators see of the worker: every activity log line bound to its purchase, and metrics.

Log lines from activities carry workflow_id, run_id, purchase_id, provider and step (structlog
contextvars, set per activity task). Workflow code logs through `workflow.logger`, which adds the
workflow's ids and stays silent during replay, so nothing is printed twice.

Metrics (Prometheus, on BOXOFFICE_METRICS_BIND next to the SDK's own): `boxoffice_step_latency`
per provider/step/outcome here; purchases started/finished and compensations in PurchaseWorkflow.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from temporalio import activity
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Runtime exposing the SDK's and boxoffice's metrics at http://{bind_address}/metrics."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=bind_address)))


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
                ).record(round((time.perf_counter() - started) * 1000),
                         {"provider": provider, "step": step, "outcome": outcome})
