"""OpenTelemetry traces: one trace per purchase, from the client's start through the workflow and
its activities to each provider HTTP call (SDK contrib TracingInterceptor + httpx instrumentation).

Off unless the standard variables ask for it: OTEL_TRACES_EXPORTER (`otlp`, `console`, comma
separated; `none` is off) or an OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); OTEL_SDK_DISABLED=true wins. The OpenTelemetry SDK reads the rest
itself (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER,
OTEL_BSP_*). OTLP goes over HTTP/protobuf (port 4318). Needs the `tracing` extra.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

EXTRA_MISSING = "OTEL_* variables ask for traces: install the tracing extra, pip install 'boxoffice[tracing]'"


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def interceptors() -> list[Any]:
    """Client interceptors ([] when tracing is off); workers built on the client inherit them. The
    first call sets up the process's tracer provider and instruments httpx."""
    if not enabled():
        return []
    try:
        from temporalio.contrib.opentelemetry import TracingInterceptor
    except ImportError as err:
        raise SystemExit(EXTRA_MISSING) from err
    _set_up_once()
    return [TracingInterceptor()]


_set_up = False
# How long `flush` may hold an exiting process for a collector that does not answer.
FLUSH_MILLIS = 5000


def flush() -> None:
    """Exports the spans still buffered (BatchSpanProcessor). For a process ending with os._exit
    (the CLI), which skips the OpenTelemetry SDK's own flush at interpreter exit."""
    if not _set_up:
        return
    from opentelemetry import trace

    force_flush = getattr(trace.get_tracer_provider(), "force_flush", None)  # the API's no-op provider has none
    if force_flush is not None:
        force_flush(FLUSH_MILLIS)


def _set_up_once() -> None:
    global _set_up
    if _set_up:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    # A provider someone set first (opentelemetry-instrument, an embedding service, a test) is kept.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "boxoffice"}))
        for name in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(","):
            if name.strip() == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
            elif name.strip() == "console":
                provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
            else:
                raise SystemExit(f"OTEL_TRACES_EXPORTER: {name!r} is not supported here (otlp, console, none)")
        trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    _set_up = True
