"""The `boxoffice` command: dev, demo, worker, and buy|status|confirm|cancel from the shell."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
import traceback
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, get_args

import httpx
import uvicorn
from pydantic import ValidationError
from temporalio.client import Client, WorkflowFailureError, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.common import MetricMeter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.atm import AtmSettings
from activities.sweep import SweepSettings
from activities.tevo import TevoActivities, TevoSettings, order_body
from workers import client as purchases
from workers import tracing
from workers.codec import ENCODING, CodecSettings, UiSessions, UnknownCodecKey, codec_server, validation_summary
from workers.devstack import (
    SIMULATOR_NAMES,
    DevSettings,
    dev_mode,
    dev_stack,
    dev_webhooks_refusal,
    port_open,
    split_address,
    ui_front,
    use_simulators,
    warn_dev_mode,
)
from workers.logs import configure
from workers.servers import server_config
from workers.settings import (
    NO_CODEC_KEYS,
    WebhookSettings,
    WorkerSettings,
    production_refusals,
    temporal_refusals,
)
from workers.telemetry import RequestMetrics, sdk_runtime
from workers.webhooks import atm_receiver, temporal_delivery
from workers.worker import Providers, connect, run_worker, serving
from workflows.findings import AttentionDecision, SweepRequest, SweepResult
from workflows.models import (
    ConfirmRequest,
    OrderChange,
    OrdersQuery,
    PurchaseResult,
    PurchaseState,
    PurchaseStatus,
    RefundReason,
    RefundRequest,
    TevoPurchaseRequest,
    purchase_workflow_id,
)

# No seat ids: the simulators choose free seats, so repeated demos do not collide.
DEMO_REQUESTS: dict[str, dict[str, Any]] = {
    "atom": {
        "provider": "atom",
        "showtime_id": "ST-20260214-1930-AMC4",
        "items": [{"product_id": "PROD-ADULT-001", "offer_id": "OFFER-STD-001", "quantity": 2}],
    },
    "onebox": {"provider": "onebox", "session_id": 1001, "price_type_id": 1, "quantity": 2},
    "tevo": {
        "provider": "tevo",
        "ticket_group_id": 324466901,
        "quantity": 2,
        "price": "145.48",
        "payment": {"credit_card_id": 327284},
    },
    "atm": {"provider": "atm", "event_id": "evt_demo", "items": [{"tier_id": "GA", "quantity": 2}]},
    "acme": {
        "provider": "acme",
        "browser_ip": "127.0.0.1",
        "recaptcha_token": "dev-recaptcha-token",
        "items": [{"event_id": "5ff74342210cbe0c44913be2", "ticketing_type_id": "54248ac8e4b01cd228b007a4", "quantity": 2}],
    },
}
DEMO_BUYER = {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"}


# Commands that serve: outside dev, they refuse to start on unsafe settings (refuse_to_serve).
SERVERS = frozenset({"worker", "webhooks", "codec-server"})

# Exit codes (README, "The command line"); argparse exits 2 on a usage mistake. One per way a
# purchase can stand, so a script never reads money or seats stuck at a provider as success.
EXIT_ERROR = 1  # the command could not do what was asked: no server, unknown id, refused, bad input
EXIT_UNSUCCESSFUL = 3  # the purchase ended FAILED, CANCELLED or EXPIRED: no tickets, nothing owed
EXIT_COMPENSATION_FAILED = 4  # an undo failed: money or seats may be stuck; an operator must act
EXIT_ATTENTION = 5  # NEEDS_ATTENTION: still running, owed tickets (ATM paid); an operator must look
# Refused outside dev: the request would reach Temporal's history in clear (no codec keys), as a
# worker refuses to serve without them.
EXIT_IN_CLEAR = 6
UNSUCCESSFUL = frozenset({PurchaseState.FAILED, PurchaseState.CANCELLED, PurchaseState.EXPIRED})

EXIT_CODES = """\
exit codes:
  0  done; for result and buy --wait: the purchase ended FULFILLED
  1  could not do it: no Temporal server, unknown id, refused, bad input or settings
  2  usage: unknown command or option, malformed option value
  3  result, buy --wait: the purchase ended FAILED, CANCELLED or EXPIRED (no tickets, nothing owed)
  4  the purchase is COMPENSATION_FAILED: an undo failed, money or seats may be stuck at the
     provider; an operator must act (see its compensations)
  5  the purchase NEEDS_ATTENTION (still running; ATM paid without tickets): an operator must look
  6  buy, outside BOXOFFICE_ENV=dev without BOXOFFICE_CODEC_KEYS: refused, nothing sent (buyer data
     and card token would reach Temporal's history in clear)"""

# What each serving command reads (README, "Configuration", has them all).
DEV_HELP = """\
Runs the Temporal dev server and UI, the five provider simulators, ATM's webhook receiver and a
worker in one process; Ctrl-C stops all. Providers not otherwise configured use the simulators.

environment:
  TEMPORAL_ADDRESS           the dev server (localhost:7233); its UI listens on that port + 1000
  TEMPORAL_NAMESPACE         namespace (default)
  BOXOFFICE_TASK_QUEUE       task queue of workflows and activities (boxoffice)
  BOXOFFICE_HOME             where the dev server's SQLite file and log live (.boxoffice)
  BOXOFFICE_SIMULATORS_PORT  the first of five simulator ports: Atom, Onebox, TEvo, ATM, ACME (8701)
  BOXOFFICE_WEBHOOKS_HOST, BOXOFFICE_WEBHOOKS_PORT   the webhook receiver (127.0.0.1, 8780)
  BOXOFFICE_CODEC_KEYS       payload encryption keys id:base64,... (unset: plain JSON); with keys the UI
                             decodes at its /codec once the browser opened the one-time link printed
  BOXOFFICE_LOG_FORMAT, BOXOFFICE_LOG_LEVEL          dev or json (dev); INFO
  BOXOFFICE_<PROVIDER>_*     a provider's settings, where set, instead of its simulator's"""

WORKER_HELP = """\
Serves purchases (workflows and provider activities) until SIGTERM or Ctrl-C, which drain the running
activities. Outside BOXOFFICE_ENV=dev it refuses to start on unsafe settings, one line each: no
codec keys, a simulator's public credentials, a provider URL that is not https://, ...

environment:
  TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE  Temporal frontend and namespace (localhost:7233, default)
  TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE  a temporal.toml profile shared with the temporal CLI
  TEMPORAL_API_KEY, TEMPORAL_TLS*       Temporal Cloud / mTLS
  BOXOFFICE_TASK_QUEUE                  task queue of workflows and activities (boxoffice)
  BOXOFFICE_WORKER_ROLES                workflows and/or the providers this process serves (all)
  BOXOFFICE_CODEC_KEYS                  payload encryption keys id:base64,... (required outside dev)
  BOXOFFICE_ENV                         dev: unset provider settings take the simulators' values
  BOXOFFICE_SHUTDOWN_GRACE_SECONDS      how long running activities may finish on SIGTERM (30)
  BOXOFFICE_METRICS_BIND, BOXOFFICE_HEALTH_BIND  host:port of /metrics and /healthz (none)
  BOXOFFICE_DEPLOYMENT_NAME, BOXOFFICE_BUILD_ID  this worker's Worker Deployment version
  TEMPORAL_DEPLOYMENT_NAME, TEMPORAL_WORKER_BUILD_ID  the same, set by the Worker Controller (preferred)
  BOXOFFICE_LOG_FORMAT, BOXOFFICE_LOG_LEVEL      dev or json (dev); INFO
  BOXOFFICE_<PROVIDER>_*                a provider's URL, credentials and tuning (ATOM, ONEBOX, TEVO, ATM, ACME)
  OTEL_*                                OpenTelemetry tracing (the tracing extra)"""

WEBHOOKS_HELP = """\
Receives ATM's signed webhooks and signals the purchases. Refuses to start without
BOXOFFICE_ATM_WEBHOOK_SECRETS, and outside BOXOFFICE_ENV=dev on unsafe settings (the simulator's
public secret, a secret shorter than 32 characters, no codec keys, ...).

environment:
  BOXOFFICE_ATM_WEBHOOK_SECRETS  ATM's signing secrets, comma-separated while rotating (required)
  BOXOFFICE_WEBHOOKS_HOST        where it listens (127.0.0.1; put it behind TLS)
  BOXOFFICE_WEBHOOKS_PORT        (8780)
  TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, BOXOFFICE_TASK_QUEUE   the purchases' Temporal (as the worker's)
  BOXOFFICE_CODEC_KEYS           payload encryption keys, as the workers'
  BOXOFFICE_ENV                  dev: the simulator's secret is accepted"""

CODEC_SERVER_HELP = """\
Decrypts payloads for the Temporal UI and the temporal CLI (--codec-endpoint): Temporal's remote
codec protocol, POST /encode and /decode, with a bearer token (CLI) or a browser session (UI): a
one-time sign-in link from `curl -X POST -H "Authorization: Bearer $TOKEN" http://HOST:8081/login-link`
sets it; the UI sends it when its codec setting includeCredentials is on. With
BOXOFFICE_CODEC_UI_UPSTREAM it serves the Temporal UI on its own origin as `boxoffice dev` does: the
codec under /codec (link: POST /codec/login-link), the list's columns set on a browser's first visit
to /. Refuses to start without keys or token, and outside BOXOFFICE_ENV=dev on unsafe settings (a
short token, a * origin, ...).

environment:
  BOXOFFICE_CODEC_KEYS          the workers' keys, id:base64,... (required)
  BOXOFFICE_CODEC_AUTH_TOKEN    the token the CLI sends and UI sign-in links are minted with (required; 32+ chars)
  BOXOFFICE_CODEC_CORS_ORIGINS  the Temporal UI's origin(s), comma-separated (http://localhost:8233)
  BOXOFFICE_CODEC_HOST          where it listens (127.0.0.1)
  BOXOFFICE_CODEC_PORT          (8081)
  BOXOFFICE_CODEC_UI_UPSTREAM   the Temporal UI server to serve on this origin, e.g. http://temporal-ui:8080 (unset)
  TEMPORAL_NAMESPACE            the namespace the UI opens (default)
  BOXOFFICE_ENV                 dev: the checks for production are off"""


class CommandError(Exception):
    """An ordinary mistake or refusal: its message is printed, without a traceback."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


def decimal_argument(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def refund_item(text: str) -> tuple[str, int]:
    item_id, _, quantity = text.partition("=")
    if not item_id or not quantity.isdigit() or int(quantity) < 1:
        raise argparse.ArgumentTypeError(f"not ITEM_ID=QUANTITY: {text!r}")
    return item_id, int(quantity)


# `orders update` flags → the Order object's fields.
ORDER_FLAGS = {
    "email": "email",
    "first-name": "contactFirstName",
    "last-name": "contactLastName",
    "phone": "phoneNumber",
    "zip-code": "zipCode",
    "notes": "notes",
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="boxoffice",
        description="Durable ticket purchases on Temporal.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str, epilog: str | None = None) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)

    command("dev", "run the Temporal dev server + UI, the simulators and a worker", DEV_HELP)
    demo = commands.add_parser("demo", help="buy tickets from the Atom simulator, step by step")
    demo.add_argument("--auto", action="store_true", help="auto confirmation instead of confirming after the price")
    demo.add_argument("--provider", choices=sorted(DEMO_REQUESTS), default="atom")
    demo.add_argument(
        "--orphan",
        action="store_true",
        help="show the reconciliation sweep: an order at the TEvo simulator no purchase accounts for becomes an attention item",
    )
    command("worker", "run a worker against TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE", WORKER_HELP)
    command("webhooks", "receive ATM's signed webhooks and signal the purchases", WEBHOOKS_HELP)
    command("codec-server", "decrypt payloads for the Temporal UI and CLI (--codec-endpoint)", CODEC_SERVER_HELP)
    orders = commands.add_parser("orders", help="ACME order management, run by the worker")
    order_commands = orders.add_subparsers(dest="orders_command", required=True)
    search = order_commands.add_parser("search", help="orders by buyer e-mail or phone, or by event")
    criteria = search.add_mutually_exclusive_group(required=True)
    criteria.add_argument("--email")
    criteria.add_argument("--phone")
    criteria.add_argument("--event", dest="event_id")
    search.add_argument("--page", type=int, default=1)
    search.add_argument("--page-size", type=int, default=100, help="-1 for all")
    order_commands.add_parser("show", help="one order").add_argument("order_id")
    refund = order_commands.add_parser(
        "refund",
        help="refund an order, in full or --item by item (once, however often asked; another --refund-id is another refund)",
    )
    refund.add_argument("order_id")
    refund.add_argument("--reason-code", choices=get_args(RefundReason), default="Miscellaneous")
    refund.add_argument("--notes", default="refunded from the command line")
    refund.add_argument("--no-email", action="store_true", help="do not e-mail the buyer")
    refund.add_argument(
        "--item",
        dest="items",
        action="append",
        type=refund_item,
        default=[],
        metavar="ITEM_ID=QUANTITY",
        help="refund this many tickets of an order item (repeatable)",
    )
    refund.add_argument("--refund-id", help="names one of several refunds of the order")
    update = order_commands.add_parser("update", help="change an order's contact fields or notes")
    update.add_argument("order_id")
    for flag, name in ORDER_FLAGS.items():
        update.add_argument(f"--{flag}", dest=name, metavar=flag.upper().replace("-", "_"))
    delete = order_commands.add_parser("delete", help="delete an order (needs --yes)")
    delete.add_argument("order_id")
    delete.add_argument("--yes", action="store_true", help="yes, delete it")
    attention = commands.add_parser("attention", help="items an operator must decide on (sweep findings, ATM events)")
    attention_commands = attention.add_subparsers(dest="attention_command", required=True)
    listing = attention_commands.add_parser("list", help="open items (--all: decided ones too)")
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--provider")
    listing.add_argument("--kind")
    listing.add_argument("--json", action="store_true")
    attention_commands.add_parser("show", help="one item: its observations and proposed action").add_argument("item_id")
    approve = attention_commands.add_parser("approve", help="do the item's action: cancel or refund the order")
    approve.add_argument("item_id")
    approve.add_argument("--action", choices=["cancel", "refund"], required=True)
    approve.add_argument("--note", default="")
    dismiss = attention_commands.add_parser("dismiss", help="close the item without acting (settled by hand)")
    dismiss.add_argument("item_id")
    dismiss.add_argument("--note", required=True)
    schedules = commands.add_parser("schedules", help="the reconciliation sweeps' Temporal Schedules")
    schedule_commands = schedules.add_subparsers(dest="schedules_command", required=True)
    schedule_commands.add_parser("apply", help="create or update one schedule per provider (BOXOFFICE_SWEEP_*)")
    buy = command("buy", "start a purchase from a JSON request", EXIT_CODES)
    buy.add_argument("request", help="the PurchaseRequest as JSON, or @file, or - for standard input")
    buy.add_argument("--wait", action="store_true", help="wait for the result (exit codes below)")
    buy.add_argument("--json", action="store_true", help="print the result as JSON")
    for name, text in (
        ("status", "show a purchase"),
        ("result", "wait for a purchase's outcome: tickets, failure, compensations"),
        ("confirm", "confirm a held purchase"),
        ("cancel", "cancel a purchase and compensate"),
    ):
        sub = command(name, text, EXIT_CODES)
        sub.add_argument("purchase_id")
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "confirm":
            sub.add_argument("--total", type=decimal_argument, help="the total the buyer accepted (must match the preview)")
            sub.usage = "%(prog)s purchase_id [--total TOTAL] [--recaptcha-token TOKEN] [--json]"
            sub.add_argument(
                "--recaptcha-token",
                metavar="TOKEN",
                help="ACME: a fresh reCAPTCHA token from the buyer's browser "
                "(tokens live two minutes; it replaces the request's)",
            )
        if name == "cancel":
            sub.add_argument("--reason", default="cancelled from the command line")
    args = parser.parse_args(argv)

    address = os.environ.get("TEMPORAL_ADDRESS", "localhost:7233")
    code = 0
    try:
        if args.command in ("dev", "demo") or dev_mode():
            use_simulators()
        settings = WorkerSettings()
        address = settings.temporal_address
        if args.command not in SERVERS and not dev_mode() and (refusals := temporal_refusals()):
            raise SystemExit("\n".join(refusals))  # an API key over plaintext, from any command
        configure(settings.log_format, settings.log_level if args.command in ("dev", "worker") else "WARNING")
        asyncio.run(COMMANDS[args.command](args, settings))
    except KeyboardInterrupt:
        pass
    except SystemExit as err:  # an int: the exit code; a message: a refusal to start
        if isinstance(err.code, int):
            code = err.code
        elif err.code:
            print(err.code, file=sys.stderr)
            code = EXIT_ERROR
    except Exception as err:  # noqa: BLE001 -- ordinary mistakes get a line, the unforeseen a traceback
        problem = explain(err, args, address)
        if problem is None:
            traceback.print_exc()
            code = EXIT_ERROR
        else:
            print(problem[0], file=sys.stderr)
            code = problem[1]
    tracing.flush()  # os._exit below skips OpenTelemetry's own flush at exit
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can abort the interpreter teardown of a short-lived client process
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300): skip the teardown.
    os._exit(code)


def explain(err: Exception, args: argparse.Namespace, address: str) -> tuple[str, int] | None:
    """One or two lines and the exit code for an ordinary mistake; None for anything else."""
    purchase_id = getattr(args, "purchase_id", None)
    if isinstance(err, CommandError | purchases.PurchaseConflict | UnknownCodecKey):
        return str(err), getattr(err, "code", EXIT_ERROR)
    if isinstance(err, KeyError) and err.args == (f"Unknown payload encoding {ENCODING.decode()}",):
        return "history is encrypted: set BOXOFFICE_CODEC_KEYS (the keys the workers use)", EXIT_ERROR
    if isinstance(err, ValidationError):
        # Settings classes are named *Settings; everything else validated here is a request.
        what = "configuration" if err.title.endswith("Settings") else "request"
        return f"invalid {what}: {validation_summary(err)}", EXIT_ERROR
    if isinstance(err, RuntimeError) and str(err).startswith("Failed client connect"):
        return (f"no Temporal server at {address}: start one with `boxoffice dev`, or set TEMPORAL_ADDRESS to yours"), EXIT_ERROR
    item_id = getattr(args, "item_id", None)
    if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND and item_id is not None:
        if "completed" in err.message:  # an update to an item that has ended
            return (f"attention item {item_id} has been answered: see `boxoffice attention show {item_id}`"), EXIT_ERROR
        return f"no attention item {item_id} (see `boxoffice attention list --all`)", EXIT_ERROR
    if isinstance(err, WorkflowQueryFailedError) and item_id is not None:
        return f"the worker could not answer for attention item {item_id}: {err.message}", EXIT_ERROR
    if isinstance(err, RPCError):
        if err.status == RPCStatusCode.NOT_FOUND and purchase_id is not None:
            if "completed" in err.message:  # an update to a purchase that has ended
                return f"purchase {purchase_id} has ended: see `boxoffice result {purchase_id}`", EXIT_ERROR
            return f"no purchase {purchase_id} (no workflow {purchase_workflow_id(purchase_id)})", EXIT_ERROR
        return f"Temporal refused: {err.message}", EXIT_ERROR
    if isinstance(err, WorkflowQueryFailedError):
        return f"the worker could not answer for {purchase_id or 'the purchase'}: {err.message}", EXIT_ERROR
    if isinstance(err, WorkflowUpdateFailedError):
        return f"refused: {getattr(err.cause, 'message', err.cause)}", EXIT_ERROR
    if isinstance(err, WorkflowFailureError):
        cause = root_cause(err.cause)
        details = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else {}
        order_id = getattr(args, "order_id", None)
        if order_id is not None and isinstance(details, dict) and details.get("status") == 404:
            return f"no ACME order {order_id}", EXIT_ERROR
        code = EXIT_UNSUCCESSFUL if purchase_id is not None else EXIT_ERROR
        return f"failed: {getattr(cause, 'message', None) or cause}", code
    return None


def root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None:
        err = err.__cause__
    return err


async def cmd_dev(args: argparse.Namespace, settings: WorkerSettings) -> None:
    check_dev_ports()
    async with dev_stack(settings) as stack:
        print(f"Temporal UI:      {stack.ui_url}")
        if stack.codec_login_url:
            print(f"Decode in the UI: open {stack.codec_login_url} once (a one-time sign-in for this browser)")
        print(f"Temporal server:  {settings.temporal_address} (namespace {settings.temporal_namespace})")
        print(f"State:            {settings.home / 'temporal.db'}")
        print("Try `boxoffice demo` in another shell. Ctrl-C stops everything.", flush=True)
        await run_worker(settings, client=stack.client)


async def cmd_demo(args: argparse.Namespace, settings: WorkerSettings) -> None:
    host, port = split_address(settings.temporal_address)
    if port_open(host, port):
        print(f"Using the stack at {settings.temporal_address}.")
        await _demo(await connect(settings), settings, args)
        return
    check_dev_ports()
    print("Starting the dev stack (Temporal dev server, simulators, worker)...", flush=True)
    async with dev_stack(settings) as stack:
        providers = Providers()
        try:
            async with serving(stack.client, settings.task_queue, providers.providers):
                await _demo(stack.client, settings, args)
        finally:
            await providers.aclose()
    # The UI stopped with the stack: say how to keep one to look at.
    print(
        f"The dev stack stopped with the demo. To see purchases in the Temporal UI ({stack.ui_url}),\n"
        "run `boxoffice dev` in another shell and `boxoffice demo` again."
    )


async def _demo(client: Client, settings: WorkerSettings, args: argparse.Namespace) -> None:
    if args.orphan:
        await _demo_orphan(client, settings)
        return
    request = dict(
        DEMO_REQUESTS[args.provider],
        purchase_id=f"demo-{int(time.time() * 1000)}",
        buyer=DEMO_BUYER,
        confirmation="auto" if args.auto else "manual",
    )
    handle = await purchases.start_purchase(client, request, settings.task_queue)
    print(f"Started {handle.id}")
    shown: list[str] = []
    state = None
    answered = False
    while True:
        status = await handle.query("status", result_type=PurchaseStatus)
        new_steps = [*status.steps_done, status.step][len(shown) :]
        for index, step in enumerate(new_steps, start=1):
            shown.append(step)
            # Steps passed between two queries show no state: only the current one is known.
            now = status.state if index == len(new_steps) and status.state != state else ""
            print(f"  {now:<22} {step}")
        if new_steps:
            state = status.state
        if status.state == PurchaseState.AWAITING_CONFIRMATION and not answered:
            answered = True
            await _answer(client, request["purchase_id"], status)
        if status.state.final:
            break
        await asyncio.sleep(0.2)
    show(await purchases.purchase_result(client, request["purchase_id"]))


async def _answer(client: Client, purchase_id: str, status: PurchaseStatus) -> None:
    """What the buyer does at AWAITING_CONFIRMATION: pay on ATM's checkout, or confirm the price."""
    receipt = status.receipt
    if "checkout_url" in status.provider_ids:
        url = status.provider_ids["checkout_url"]
        print(f"  paying {receipt.total if receipt else ''} at {url} (the simulator's checkout)")
        async with httpx.AsyncClient() as http:
            (await http.post(url, json={"outcome": "paid"})).raise_for_status()
    elif receipt is not None:
        print(
            f"  price {receipt.total} {receipt.currency} (subtotal {receipt.subtotal}, fees {receipt.fees}, "
            f"tax {receipt.tax}); hold until {status.hold_expires_at:%H:%M:%S} UTC — confirming"
        )
        await purchases.confirm(client, purchase_id, ConfirmRequest(accepted_total=receipt.total))


def show(view: PurchaseStatus | PurchaseResult) -> None:
    """A status or a result, one fact a line: what an operator reads at a glance."""
    print(f"{purchase_workflow_id(view.purchase_id)}  {view.provider}  {view.state}")
    if isinstance(view, PurchaseStatus):
        print(f"  step          {view.step}")
        print(f"  steps done    {', '.join(view.steps_done) or '-'}")
        if view.hold_expires_at and not view.state.final:
            print(f"  held until    {view.hold_expires_at:%Y-%m-%d %H:%M:%S} UTC")
        for name, value in view.provider_ids.items():
            print(f"  {name:<13} {value}")
    else:
        status = f" ({view.provider_status})" if view.provider_status else ""
        print(f"  order         {view.provider_order_id or '-'}{status}")
    if view.event:
        starts = f", {view.event.starts_at:%Y-%m-%d %H:%M}" if view.event.starts_at else ""
        print(f"  event         {view.event.title or '-'}, {view.event.venue or '-'}{starts}")
    if view.receipt:
        r = view.receipt
        print(f"  total         {r.total} {r.currency} (subtotal {r.subtotal}, fees {r.fees}, tax {r.tax})")
    # Tickets and compensations: shown for whichever of status and result carries them.
    for ticket in getattr(view, "tickets", []):
        print(
            f"  ticket        seat {ticket.seat:<5} {ticket.ticket_type or '':<8} "
            f"barcode {ticket.barcode or '(e-ticket to follow)'}"
        )
    if view.failure:
        f = view.failure
        extra = ", ".join(
            f"{label} {value}"
            for label, value in (("code", f.provider_code), ("HTTP", f.provider_status), ("trace", f.trace_id))
            if value
        )
        print(f"  failure       {f.reason}: {f.message}" + (f" ({extra})" if extra else ""))
    for undo in getattr(view, "compensations", []):
        print(f"  compensated   {undo.action}: {'ok' if undo.ok else 'FAILED'}" + (f" ({undo.detail})" if undo.detail else ""))


def show_or_dump(view: PurchaseStatus | PurchaseResult, as_json: bool) -> None:
    if as_json:
        print(view.model_dump_json(indent=2))
    else:
        show(view)


def purchase_exit_code(state: PurchaseState, ended: bool) -> int:
    """The exit code of a command that showed a purchase in `state`: `ended` for `result` and `buy
    --wait`, which wait for the end; the others show the state now, non-zero only where an operator
    must act."""
    if state == PurchaseState.COMPENSATION_FAILED:
        return EXIT_COMPENSATION_FAILED
    if state == PurchaseState.NEEDS_ATTENTION:
        return EXIT_ATTENTION
    return EXIT_UNSUCCESSFUL if ended and state in UNSUCCESSFUL else 0


def show_purchase(view: PurchaseStatus | PurchaseResult, as_json: bool, ended: bool = False) -> None:
    """Shows the purchase, then exits with its code (README, "The command line"): a script must not
    read stuck money as success. Where an operator must act, one line on stderr says so."""
    show_or_dump(view, as_json)
    code = purchase_exit_code(view.state, ended)
    if code == EXIT_COMPENSATION_FAILED:
        raise CommandError(
            f"purchase {view.purchase_id} is COMPENSATION_FAILED: money or seats may be stuck at "
            f"{view.provider}; an operator must act (see its compensations)",
            code,
        )
    if code == EXIT_ATTENTION:
        raise CommandError(f'purchase {view.purchase_id} NEEDS_ATTENTION: an operator must act (README, "Operating it")', code)
    if code:
        raise SystemExit(code)


def refusals_outside_dev() -> list[str]:
    """Why this process must not serve production (workers.settings.production_refusals), unless dev."""
    return [] if dev_mode() else production_refusals()


def refuse_to_serve(*problems: str) -> None:
    """Refuses to start a server on its own `problems` and the production ones: one line each."""
    lines = [*problems, *(line for line in refusals_outside_dev() if line not in problems)]
    if lines:
        raise SystemExit("\n".join(lines))


async def cmd_worker(args: argparse.Namespace, settings: WorkerSettings) -> None:
    await run_worker(settings, refusals=refusals_outside_dev())


def check_port(port: int, variable: str, last: int = 65535) -> None:
    # 0 would bind a port chosen at random, which nothing could be told to call.
    if not 1 <= port <= last:
        raise CommandError(f"{variable}={port} is not a port: set it within 1-{last}")


def check_dev_ports() -> None:
    """The ports the dev stack listens on, checked before anything starts."""
    check_port(DevSettings().simulators_port, "BOXOFFICE_SIMULATORS_PORT", 65535 - len(SIMULATOR_NAMES) + 1)
    check_port(WebhookSettings().port, "BOXOFFICE_WEBHOOKS_PORT")


def bound_socket(host: str, port: int, variable: str) -> socket.socket:
    """Binds before serving, so a port in use is one clear line instead of uvicorn's exit."""
    check_port(port, variable)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise CommandError(f"cannot listen on {host}:{port}: {err.strerror}; set {variable} to another port") from None
    return sock


async def serve(app: Any, sock: socket.socket) -> None:
    await uvicorn.Server(server_config(app)).serve(sockets=[sock])


async def cmd_webhooks(args: argparse.Namespace, settings: WorkerSettings) -> None:
    webhooks = WebhookSettings()
    secrets = webhooks.atm_secret_list()
    refuse_to_serve(*([] if secrets else ["BOXOFFICE_ATM_WEBHOOK_SECRETS is not set: ATM's webhook signing secret(s)"]))
    if dev_mode():
        refusal = await dev_webhooks_refusal(webhooks.host, secrets, AtmSettings().base_url)
        if refusal is not None:
            raise CommandError(refusal)
        warn_dev_mode()
    sock = bound_socket(webhooks.host, webhooks.port, "BOXOFFICE_WEBHOOKS_PORT")
    # Its metrics (the SDK client's and its requests') where the manifests have them scraped (BOXOFFICE_METRICS_BIND).
    runtime = sdk_runtime(settings.metrics_bind) if settings.metrics_bind else None
    app: Any = atm_receiver(secrets, temporal_delivery(await connect(settings, runtime), settings.task_queue))
    if runtime:
        app = RequestMetrics(app, runtime.metric_meter, "webhooks", ("/webhooks/atm",))
    await serve(app, sock)


async def cmd_codec_server(args: argparse.Namespace, settings: WorkerSettings) -> None:
    codec_settings = CodecSettings()
    codec = codec_settings.codec()
    refuse_to_serve(
        *([] if codec else [NO_CODEC_KEYS]),
        *([] if codec_settings.auth_token else ["BOXOFFICE_CODEC_AUTH_TOKEN is not set: the token the Temporal UI and CLI send"]),
    )
    assert codec is not None and codec_settings.auth_token is not None  # noqa: S101 — narrows the type: refused above
    # Its metrics where the manifests have them scraped (BOXOFFICE_METRICS_BIND); the runtime lives while it serves.
    runtime = sdk_runtime(settings.metrics_bind) if settings.metrics_bind else None
    app = codec_server_app(codec_settings, settings.temporal_namespace, runtime.metric_meter if runtime else None)
    sock = bound_socket(codec_settings.host, codec_settings.port, "BOXOFFICE_CODEC_PORT")
    origins = codec_origins(codec_settings)
    upstream = codec_settings.ui_upstream
    fronting = f", serving the Temporal UI at {upstream} (codec under /codec)" if upstream else ""
    print(f"codec server on http://{codec_settings.host}:{codec_settings.port} for {', '.join(origins)}{fronting}", flush=True)
    await serve(app, sock)


def codec_origins(codec_settings: CodecSettings) -> list[str]:
    return [o.strip() for o in codec_settings.cors_origins.split(",") if o.strip()]


def codec_server_app(codec_settings: CodecSettings, namespace: str, meter: MetricMeter | None) -> Any:
    """The codec, or with BOXOFFICE_CODEC_UI_UPSTREAM the Temporal UI's origin (`ui_front`) with the
    codec under /codec. A browser signs in with a one-time link minted with the token (POST
    /login-link) that lands on the UI (the first origin); the UI sends the cookie with
    TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true, or, on its own origin, always."""
    codec = codec_settings.codec()
    if codec is None or codec_settings.auth_token is None:
        raise ValueError("the codec server needs BOXOFFICE_CODEC_KEYS and BOXOFFICE_CODEC_AUTH_TOKEN")
    origins = codec_origins(codec_settings)
    fronted = bool(codec_settings.ui_upstream)
    app = codec_server(
        codec,
        codec_settings.auth_token.get_secret_value(),
        origins,
        None if fronted else meter,
        sessions=UiSessions(after_login=origins[0]) if origins else None,
    )
    if not codec_settings.ui_upstream:
        return app
    front = ui_front(codec_settings.ui_upstream, namespace, codec=app)
    # Counted on the front: under the mount the codec's paths are /codec/..., the UI's own are "other".
    paths = ("/", *(f"/codec{path}" for path in ("/encode", "/decode", "/login", "/login-link")))
    return RequestMetrics(front, meter, "codec", paths) if meter else front


async def cmd_orders(args: argparse.Namespace, settings: WorkerSettings) -> None:
    if args.orders_command == "delete" and not args.yes:
        raise CommandError(f"deleting order {args.order_id} cannot be undone: add --yes")
    if args.orders_command == "update":
        changes = {name: value for name in ORDER_FLAGS.values() if (value := getattr(args, name)) is not None}
        if not changes:
            raise CommandError(f"nothing to change: give one of {', '.join('--' + f for f in ORDER_FLAGS)}")
    client = await connect(settings)
    if args.orders_command == "refund":
        request = RefundRequest(
            order_id=args.order_id,
            reason_code=args.reason_code,
            notes=args.notes,
            no_email=args.no_email,
            items=dict(args.items),
            refund_id=args.refund_id,
        )
        print((await purchases.refund(client, request, settings.task_queue)).model_dump_json(indent=2))
        return
    if args.orders_command in ("update", "delete"):
        change = (
            OrderChange(order_id=args.order_id, changes=changes)
            if args.orders_command == "update"
            else (OrderChange(order_id=args.order_id, delete=True))
        )
        print((await purchases.change_order(client, change, settings.task_queue)).model_dump_json(indent=2))
        return
    if args.orders_command == "show":
        query = OrdersQuery(order_id=args.order_id)
    else:
        query = OrdersQuery(email=args.email, phone=args.phone, event_id=args.event_id, page=args.page, page_size=args.page_size)
    print((await purchases.orders(client, query, settings.task_queue)).model_dump_json(indent=2))


def read_request(argument: str) -> str:
    if argument == "-":
        return sys.stdin.read()
    if argument.startswith("@"):
        try:
            with open(argument[1:]) as file:
                return file.read()
        except OSError as err:
            raise CommandError(f"cannot read the request from {argument[1:]}: {err.strerror}") from None
    return argument


async def cmd_buy(args: argparse.Namespace, settings: WorkerSettings) -> None:
    request = purchases.parse_request(read_request(args.request))
    if not dev_mode() and CodecSettings().codec() is None:
        raise CommandError(f"{NO_CODEC_KEYS}, or BOXOFFICE_ENV=dev against the simulators", EXIT_IN_CLEAR)
    client = await connect(settings)
    handle, started = await purchases.start_or_find_purchase(client, request, settings.task_queue)
    if started:
        print(handle.id)
        # Returns once the seats are held (or the purchase failed): the hold is shown at once.
        held = await purchases.held(client, request.purchase_id)
    else:
        print(f"{handle.id} already exists (started earlier); showing it")
        held = await purchases.status(client, request.purchase_id)
    if args.wait:
        show_purchase(await purchases.purchase_result(client, request.purchase_id), args.json, ended=True)
    else:
        show_purchase(held, args.json)


async def cmd_result(args: argparse.Namespace, settings: WorkerSettings) -> None:
    show_purchase(await purchases.purchase_result(await connect(settings), args.purchase_id), args.json, ended=True)


async def cmd_status(args: argparse.Namespace, settings: WorkerSettings) -> None:
    show_purchase(await purchases.status(await connect(settings), args.purchase_id), args.json)


async def cmd_confirm(args: argparse.Namespace, settings: WorkerSettings) -> None:
    confirmation = ConfirmRequest(accepted_total=args.total, recaptcha_token=args.recaptcha_token)
    show_purchase(await purchases.confirm(await connect(settings), args.purchase_id, confirmation), args.json)


async def cmd_cancel(args: argparse.Namespace, settings: WorkerSettings) -> None:
    show_purchase(await purchases.cancel(await connect(settings), args.purchase_id, args.reason), args.json)


async def _demo_orphan(client: Client, settings: WorkerSettings) -> None:
    """An order placed at TEvo behind boxoffice's back (POST /v10/orders, as a lost create would leave
    it), then a sweep of TEvo: one finding, an attention item."""
    reference = f"demo-orphan-{int(time.time() * 1000)}"
    request = purchases.parse_request(dict(DEMO_REQUESTS["tevo"], purchase_id=reference, buyer=DEMO_BUYER))
    assert isinstance(request, TevoPurchaseRequest)  # noqa: S101 — narrows the type: a TEvo demo request
    tevo = TevoActivities(TevoSettings())
    try:
        client_id = await tevo.find_or_create_client(request.buyer)
        await tevo._call("POST", "/v10/orders", json_body={"order": order_body(request, client_id)})
    finally:
        await tevo.aclose()
    print(f"Placed a TEvo order with reference {reference} outside boxoffice: no purchase has that id.")
    sweep = SweepRequest(provider="tevo", window_seconds=SweepSettings().window_hours * 3600)
    handle = await client.start_workflow(
        "SweepWorkflow", sweep, id=f"sweep-tevo-demo-{reference}", task_queue=settings.task_queue, result_type=SweepResult
    )
    result = await handle.result()
    print(
        f"Swept TEvo: {result.totals.seen} order(s) seen, {result.totals.findings} finding(s), {result.totals.repaired} repaired."
    )
    for _ in range(50):  # visibility lists the new item within a second or so
        for item in await purchases.attention_items(client, provider="tevo"):
            if item["purchase_id"] == reference:
                print(f"Attention item {item['id']}: {item['kind']}, order {item['order_id']}, {item['amount']}")
                print(f"  boxoffice attention show {item['id']}")
                print(f"  boxoffice attention approve {item['id']} --action cancel")
                return
        await asyncio.sleep(0.2)
    print("The item is not in the list yet (visibility lags): boxoffice attention list")


async def cmd_attention(args: argparse.Namespace, settings: WorkerSettings) -> None:
    client = await connect(settings)
    command = args.attention_command
    if command == "list":
        items = await purchases.attention_items(client, include_closed=args.all, provider=args.provider, kind=args.kind)
        if args.json:
            print(json.dumps(items, indent=2))
            return
        for item in items:
            print(
                f"{item['id']}  {item['state'] or '-'}  {item['provider'] or '-'}  {item['kind'] or '-'}  "
                f"order {item['order_id'] or '-'}  purchase {item['purchase_id'] or '-'}  {item['amount'] or ''}"
            )
        if not items:
            print("nothing needs attention")
        return
    if command == "show":
        view = await purchases.attention_item(client, args.item_id)
    elif command == "approve":
        decision = AttentionDecision(action=args.action, note=args.note, operator=os.environ.get("USER"))
        view = await purchases.approve_attention(client, args.item_id, decision)
    else:
        decision = AttentionDecision(note=args.note, operator=os.environ.get("USER"))
        view = await purchases.dismiss_attention(client, args.item_id, decision)
    print(view.model_dump_json(indent=2))


async def cmd_schedules(args: argparse.Namespace, settings: WorkerSettings) -> None:
    sweep = SweepSettings()
    ids = await purchases.ensure_schedules(
        await connect(settings),
        settings.task_queue,
        sweep.provider_list(),
        timedelta(minutes=sweep.interval_minutes),
        timedelta(hours=sweep.window_hours),
        sweep.pages_per_run,
        sweep.page_size,
    )
    for schedule_id in ids:
        print(f"{schedule_id}: every {sweep.interval_minutes:g} min, window {sweep.window_hours:g} h")


COMMANDS = {
    "attention": cmd_attention,
    "schedules": cmd_schedules,
    "dev": cmd_dev,
    "demo": cmd_demo,
    "worker": cmd_worker,
    "webhooks": cmd_webhooks,
    "orders": cmd_orders,
    "codec-server": cmd_codec_server,
    "buy": cmd_buy,
    "status": cmd_status,
    "result": cmd_result,
    "confirm": cmd_confirm,
    "cancel": cmd_cancel,
}

if __name__ == "__main__":
    main()
