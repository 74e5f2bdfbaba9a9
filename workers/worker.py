"""The worker process: the workflows with the activities of providers without a rate limit on one
task queue, rate-limited providers on queues of their own (`serving`); health endpoint, graceful
drain on SIGTERM (`run_worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import timedelta
from typing import Any

import structlog
import uvicorn
from pydantic import SecretStr
from pydantic_settings import BaseSettings
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from temporalio import activity
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.service import RPCError
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import (
    SandboxedWorkflowRunner,
    SandboxRestrictions,
)

from activities.acme import AcmeActivities, AcmeSettings
from activities.atm import AtmActivities, AtmSettings
from activities.atom import AtomActivities, AtomSettings
from activities.onebox import OneboxActivities, OneboxSettings
from activities.ratelimit import NoShare, SharedLimit
from activities.runs import EarlierRuns
from activities.sweep import SweepActivities, SweepSettings, provider_sweeps
from activities.tevo import TevoActivities, TevoSettings
from workers import tracing
from workers.client import ensure_schedules, ensure_search_attributes
from workers.codec import CodecSettings, data_converter
from workers.servers import server_config
from workers.settings import ROLES, WorkerSettings
from workers.telemetry import Telemetry, forwarding_runtime, sdk_runtime
from workers.versioning import Unversioned
from workflows.models import FailureReason, PurchasePolicy, provider_task_queue
from workflows.orders import OrderChangeWorkflow, OrdersWorkflow, RefundWorkflow
from workflows.purchase import PurchaseWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.sweep import SweepWorkflow

log = structlog.get_logger("boxoffice.worker")

WORKFLOWS: Sequence[type] = [
    PurchaseWorkflow,
    RefundWorkflow,
    OrdersWorkflow,
    OrderChangeWorkflow,
    ReconcileWorkflow,
    SweepWorkflow,
]
# Imported once outside the sandbox instead of for every workflow run: pydantic, the models, and the
# step sequences (plain code without module state; they do no I/O by the project's rules). The
# sandbox re-imports only the workflow modules (purchase, orders). Measured: ~10 % less CPU per purchase (bench/README.md).
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "pydantic",
        "pydantic_core",
        "opentelemetry",
        "workflows.models",
        "workflows.saga",
        "workflows.outcomes",
        "workflows.atom",
        "workflows.onebox",
        "workflows.tevo",
        "workflows.atm",
        "workflows.acme",
        "workflows.findings",
    )
)


async def connect(settings: WorkerSettings, runtime: Runtime | None = None) -> Client:
    # Encrypted payloads when BOXOFFICE_CODEC_KEYS is set (workers/codec.py); traces when OTEL_* ask
    # (workers/tracing.py), for this client's calls and every worker built on it. The SDK core's log
    # lines go through our logging (workers/telemetry.py), unless `runtime` says otherwise.
    return await Client.connect(
        **settings.temporal,
        data_converter=data_converter(CodecSettings().codec()),
        interceptors=tracing.interceptors(),
        runtime=runtime or forwarding_runtime(),
    )


class Providers:
    """The activity objects of every provider, with their HTTP clients, from the environment."""

    def __init__(self) -> None:
        self.providers: list[Any] = [
            AcmeActivities(AcmeSettings()),
            AtmActivities(AtmSettings()),
            AtomActivities(AtomSettings()),
            OneboxActivities(OneboxSettings()),
            TevoActivities(TevoSettings()),
        ]

    async def aclose(self) -> None:
        for provider in self.providers:
            await provider.aclose()


def missing_settings(settings: BaseSettings) -> list[str]:
    """The environment variables a provider needs (its settings' `required`) and lacks; empty is unset."""
    prefix = settings.model_config.get("env_prefix", "")

    def unset(value: Any) -> bool:
        return not (value.get_secret_value() if isinstance(value, SecretStr) else value)

    return [f"{prefix}{name}".upper() for name in getattr(settings, "required", ()) if unset(getattr(settings, name))]


def not_configured(provider: str, missing: Sequence[str]) -> Callable[[], Awaitable[PurchasePolicy]]:
    """Stands in for an unconfigured provider's `policy`, the first call of each of its purchases:
    they fail at once, naming what to set, and nothing is sent anywhere."""

    @activity.defn(name=f"{provider}.policy")
    async def policy() -> PurchasePolicy:
        raise ApplicationError(
            f"{provider} is not configured on this worker: set {', '.join(missing)}",
            type=FailureReason.PROVIDER_NOT_CONFIGURED,
            non_retryable=True,
        )

    return policy


@contextlib.asynccontextmanager
async def serving(
    client: Client,
    task_queue: str,
    providers: Sequence[Any],
    roles: Collection[str] = ROLES,
    sandboxed: bool = True,
    **options: Any,
) -> AsyncIterator[list[Worker]]:
    """Yields the workers it started. The "workflows" role runs the workflows on `task_queue` with every provider's activities
    (unlimited providers' calls land there: local ones in the workflows' worker, regular ones in a
    worker of its own, in this process). A rate-limited provider's role runs
    its activities on `{task_queue}-{provider}`, where the server enforces `activities_per_second`
    across all workers; each process with the role also holds a share of that limit, which every
    request it sends waits on, so its reads and rerun-safe writes may run as local activities in this
    process's workflows (activities/ratelimit.py). `roles` picks what this process serves, e.g. one deployment per role.
    A provider whose settings lack URL or credentials is not served here (fail closed): its
    purchases fail at once, unless it is rate-limited and this process lacks its role: then its
    calls go to its queue, for the processes that have the role (the workflows pods in deploy/k8s).
    `sandboxed`: workflows run in the SDK's sandbox, which fails a non-deterministic call at once;
    the tests run so. The worker process (`run_worker`) runs them without it: the sandbox costs
    about a third of a purchase's CPU (bench/README.md)."""
    workers = []
    # What earlier runs of a purchase recorded, read by the workflow that needs it as a local activity.
    activities: list[Any] = EarlierRuns(client).all()
    # The reconciliation sweep's activities go where the provider's go (its rate limit holds).
    sweeps = provider_sweeps(providers, client)
    for provider in providers:
        missing = missing_settings(provider.settings)
        own_queue = provider.settings.activities_per_second is not None
        if missing and (not own_queue or provider.name in roles):
            activities.append(not_configured(provider.name, missing))
        else:  # configured, or here only its `policy` runs, routing the calls to its queue
            activities += provider.all() + (sweeps[provider.name].all() if provider.name in sweeps else [])
    sweep_activities = SweepActivities(client, task_queue, sweeps)
    activities += sweep_activities.all()
    runner: WorkflowRunner = SANDBOX if sandboxed else UnsandboxedWorkflowRunner()
    deployment = options.get("deployment_config")
    if deployment is None or not deployment.use_worker_versioning:
        runner = Unversioned(runner)  # the definitions' versioning behaviour is only for versioned workers
    if "workflows" in roles:
        workers.append(
            Worker(
                client,
                task_queue=task_queue,
                workflows=WORKFLOWS,
                activities=activities,
                workflow_runner=runner,
                interceptors=[Telemetry()],
                no_remote_activities=True,
                **options,
            )
        )
        # The SDK core hands a worker its pending local activities before any regular activity task:
        # on a worker busy with holds (local calls) an order waited until the holds stopped
        # (bench/busy.py). Regular activities of this queue therefore have a worker of their own.
        workers.append(
            Worker(
                client,
                task_queue=task_queue,
                activities=activities,
                interceptors=[Telemetry()],
                **options,
            )
        )
    for provider in providers:
        if (
            provider.name in roles
            and provider.settings.activities_per_second is not None
            and not missing_settings(provider.settings)
        ):
            workers.append(
                Worker(
                    client,
                    task_queue=provider_task_queue(task_queue, provider.name),
                    # An approved cancel or refund calls the provider too: with the credentials, which only these workers hold.
                    activities=provider.all()
                    + (sweeps[provider.name].all() if provider.name in sweeps else [])
                    + sweep_activities.approvals(),
                    interceptors=[Telemetry()],
                    max_task_queue_activities_per_second=provider.settings.activities_per_second,
                    **options,
                )
            )
    async with contextlib.AsyncExitStack() as stack:
        # Shares first: they outlive the workers' shutdown (activities still running then wait on them).
        for provider in providers:
            if provider.settings.activities_per_second is None or missing_settings(provider.settings):
                continue
            stack.callback(setattr, provider.http, "limit", None)
            if provider.name not in roles:
                provider.http.limit = NoShare()
                continue
            # This process counts itself among the queue's pollers before its worker first polls.
            provider.http.limit = await stack.enter_async_context(
                SharedLimit(
                    client,
                    provider_task_queue(task_queue, provider.name),
                    options.get("identity") or client.identity,
                    provider.settings.activities_per_second,
                    getattr(provider.settings, "requests_burst", None),
                ).running()
            )
        for worker in workers:
            await stack.enter_async_context(worker)
        yield workers


# The server is asked every HEALTH_CHECK_SECONDS (each ask given as long to answer); /healthz is 503
# once it has not answered for HEALTHY_WITHIN_SECONDS: at most ~8 s after it went away.
HEALTH_CHECK_SECONDS = 2.0
HEALTHY_WITHIN_SECONDS = 6.0


class Health:
    """Whether the workers can poll: each still running, and the Temporal server answered lately
    (GetSystemInfo, the call every SDK makes on connecting: any namespace's credentials may make it)."""

    def __init__(self, client: Client, workers: Sequence[Worker]) -> None:
        self.client = client
        self.workers = workers
        self.answered_at: float | None = None

    async def check_forever(self) -> None:
        was = None
        while True:
            try:
                await self.client.workflow_service.get_system_info(
                    GetSystemInfoRequest(), retry=False, timeout=timedelta(seconds=HEALTH_CHECK_SECONDS)
                )
                self.answered_at = time.monotonic()
            except RPCError:
                pass  # stale answered_at says it; the core logs why
            problem = self.problem()
            if problem != was and problem is None:
                log.info("healthy")
            elif problem != was:
                log.warning("not healthy", problem=problem)
            was = problem
            await asyncio.sleep(HEALTH_CHECK_SECONDS)

    def problem(self) -> str | None:
        if not all(worker.is_running for worker in self.workers):
            return "a worker stopped"
        if self.answered_at is None or time.monotonic() - self.answered_at > HEALTHY_WITHIN_SECONDS:
            return f"the Temporal server has not answered for {HEALTHY_WITHIN_SECONDS:g} s"
        return None

    async def endpoint(self, _: Any) -> PlainTextResponse:
        problem = self.problem()
        return PlainTextResponse("ok" if problem is None else problem, status_code=200 if problem is None else 503)


@contextlib.asynccontextmanager
async def health(bind: str | None, client: Client, workers: Sequence[Worker]) -> AsyncIterator[None]:
    """GET /healthz: 200 while the workers can poll (Health), else 503 naming why."""
    if bind is None:
        yield
        return
    host, _, port = bind.rpartition(":")
    state = Health(client, workers)
    checking = asyncio.create_task(state.check_forever())
    app = Starlette(routes=[Route("/healthz", state.endpoint)])
    server = uvicorn.Server(server_config(app, host=host or "0.0.0.0", port=int(port)))  # noqa: S104 — probes come from outside the pod
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        checking.cancel()
        await task


async def apply_sweep_schedules(client: Client, settings: WorkerSettings, routed: list[str]) -> None:
    """The reconciliation sweeps' schedules, created or updated by every workflows worker (idempotent), of
    the providers it `routed`: configured here, or rate-limited (served by their role's workers)."""
    sweep = SweepSettings()
    if not sweep.enabled or "workflows" not in settings.role_set():
        return
    providers = [p for p in sweep.provider_list() if p in routed]
    try:
        ids = await ensure_schedules(
            client,
            settings.task_queue,
            providers,
            timedelta(minutes=sweep.interval_minutes),
            timedelta(hours=sweep.window_hours),
            sweep.pages_per_run,
            sweep.page_size,
        )
    except RPCError as err:
        log.error("cannot create the sweep schedules; run `boxoffice schedules apply`", error=err.message)
        return
    log.info("sweep schedules applied", schedules=ids, interval_minutes=sweep.interval_minutes, window_hours=sweep.window_hours)


async def run_worker(
    settings: WorkerSettings, client: Client | None = None, stop: asyncio.Event | None = None, refusals: Sequence[str] = ()
) -> None:
    """Runs until SIGTERM/SIGINT (or `stop`), then drains: running activities get
    shutdown_grace_seconds to finish before they are cancelled and retried elsewhere.
    Refuses to start when a provider named in BOXOFFICE_WORKER_ROLES is not configured, or on
    `refusals` (the command line's, outside dev: workers.settings.production_refusals), one line each."""
    providers = Providers()
    unconfigured = {p.name: missing for p in providers.providers if (missing := missing_settings(p.settings))}
    named = {role.strip() for role in settings.roles.split(",")} & set(unconfigured)
    lines = [f"{name} is not configured: set {', '.join(unconfigured[name])}" for name in sorted(named)]
    if lines or refusals:
        await providers.aclose()
        raise SystemExit("\n".join([*lines, *refusals]))
    for name, missing in unconfigured.items():
        log.warning("provider not configured: not served here", provider=name, missing=missing)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        client = client or await connect(settings, sdk_runtime(settings.metrics_bind))
        try:
            await ensure_search_attributes(client)
        except RPCError as err:  # e.g. no operator permission: purchases would stall, say so loudly
            log.error("cannot register search attributes; register them as README says", error=err.message)
        # As `serving` routes them: a provider not configured here but rate-limited runs on its own queue, in
        # the workers of its role (deploy/k8s: the workflows pods hold no provider credentials).
        await apply_sweep_schedules(
            client,
            settings,
            [p.name for p in providers.providers if p.name not in unconfigured or p.settings.activities_per_second is not None],
        )
        worker = serving(
            client,
            settings.task_queue,
            providers.providers,
            settings.role_set(),
            sandboxed=False,
            graceful_shutdown_timeout=timedelta(seconds=settings.shutdown_grace_seconds),
            deployment_config=settings.deployment_config(),
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info(
            "worker started",
            address=settings.temporal_address,
            namespace=settings.temporal_namespace,
            task_queue=settings.task_queue,
            roles=sorted(settings.role_set()),
            deployment=settings.deployment_name,
            build_id=settings.build_id,
        )
        async with worker as workers, health(settings.health_bind, client, workers):
            await stop.wait()
            log.info("worker stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await providers.aclose()
    log.info("worker stopped")
