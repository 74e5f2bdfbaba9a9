"""OpenTelemetry: one trace spans a purchase, from the client's start to the provider's HTTP calls;
nothing is traced unless the standard OTEL_* variables ask for it."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator, Sequence

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from temporalio.testing import WorkflowEnvironment

from activities.atom import AtomActivities, AtomSettings
from simulators.atom import AtomSimulator
from tests.conftest import atom_request, atom_settings, free_port
from workers import tracing
from workers.client import purchase_outcome, start_purchase
from workers.settings import WorkerSettings
from workers.worker import connect, serving

EXPORTER = InMemorySpanExporter()


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, exporting to memory: set before boxoffice's set-up, which keeps
    it (OpenTelemetry allows one per process)."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    monkeypatch.setattr(tracing, "_set_up", False)
    yield EXPORTER
    HTTPXClientInstrumentor().uninstrument()


@pytest.mark.parametrize(
    "environ, on",
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "boxoffice"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_tracing_is_on_only_when_the_standard_variables_ask(environ: dict[str, str], on: bool) -> None:
    assert tracing.enabled(environ) is on


def test_off_by_default_nothing_is_intercepted_or_instrumented(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert tracing.interceptors() == []
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry


def test_asking_for_traces_without_the_extra_says_which_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setitem(sys.modules, "temporalio.contrib.opentelemetry", None)  # as if not installed
    with pytest.raises(SystemExit, match=r"boxoffice\[tracing\]"):
        tracing.interceptors()


def by_name(spans: Sequence[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


async def test_one_trace_spans_a_purchase_from_start_to_provider_http_calls(
    dev_env: WorkflowEnvironment,
    atom_http: tuple[AtomSimulator, str],
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, atom_url = atom_http
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    client = await connect(WorkerSettings())  # as the worker and the CLI connect
    activities = AtomActivities(AtomSettings(base_url=atom_url, api_key="test-atom-key"))
    try:
        async with serving(client, "traced", [activities]):
            handle = await start_purchase(client, atom_request("traced-1"), "traced")
            assert (await purchase_outcome(handle)).state == "FULFILLED"
    finally:
        await activities.aclose()
    finished = spans.get_finished_spans()
    [start] = by_name(finished, "StartWorkflow:PurchaseWorkflow")
    in_trace = [s for s in finished if s.context.trace_id == start.context.trace_id]
    names = {s.name for s in in_trace}
    assert {
        "RunWorkflow:PurchaseWorkflow",
        "StartActivity:atom.lease",
        "RunActivity:atom.lease",
        "StartActivity:atom.create_order",
        "RunActivity:atom.create_order",
    } <= names, names
    http = {s: httpx.URL(str(s.attributes["http.url"])) for s in in_trace if s.attributes and "http.url" in s.attributes}
    assert all(str(url).startswith(atom_url) for url in http.values())
    paths = {url.path for url in http.values()}
    assert {"/ordering/v1/inventory/lease", "/ordering/v1/customer/orders"} <= paths, paths
    # Each provider call hangs under the activity attempt that made it.
    run_activity = {s.context.span_id: s.name for s in by_name(in_trace, "RunActivity:")}
    assert all(s.parent is not None and s.parent.span_id in run_activity for s in http)


async def test_the_cli_exports_its_spans_before_it_exits(dev_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI ends with os._exit (no interpreter teardown, so no OpenTelemetry atexit): its buffered
    spans are flushed first. The batch delay is a minute: only a flush sends them in time.
    OTLP/HTTP: https://opentelemetry.io/docs/specs/otlp/#otlphttp (POST protobuf to /v1/traces)."""
    received: list[bytes] = []

    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf")

    port = free_port()
    collector = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]), host="127.0.0.1", port=port, log_level="warning"
        )
    )
    collecting = asyncio.create_task(collector.serve())
    sim = AtomSimulator(api_key="test-atom-key")
    activities = AtomActivities(atom_settings(), transport=httpx.ASGITransport(app=sim.app))
    environment = dict(
        os.environ,
        TEMPORAL_ADDRESS=dev_env.client.service_client.config.target_host,
        BOXOFFICE_TASK_QUEUE="traced-cli",
        BOXOFFICE_ENV="dev",
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
        OTEL_BSP_SCHEDULE_DELAY="60000",
    )
    try:
        async with serving(dev_env.client, "traced-cli", [activities]):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "workers.cli",
                "buy",
                json.dumps(atom_request("traced-cli-1", confirmation="manual")),
                env=environment,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            assert process.returncode == 0, err.decode()
    finally:
        await activities.aclose()
        collector.should_exit = True
        await collecting
    exported = [ExportTraceServiceRequest.FromString(body) for body in received]
    names = {
        span.name
        for request in exported
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert "StartWorkflow:PurchaseWorkflow" in names, names
