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
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.sweep import SweepSettings
from activities.tevo import TevoActivities, TevoSettings, order_body
from workers import client as purchases
from workers.codec import CodecSettings, codec_server, validation_summary
from workers.devstack import dev_mode, dev_stack, port_open, split_address, use_simulators
from workers.logs import configure
from workers.servers import server_config
from workers.settings import (
    NO_CODEC_KEYS,
    WebhookSettings,
    WorkerSettings,
    production_refusals,
    temporal_refusals,
)
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
    "tevo": {"provider": "tevo", "ticket_group_id": 324466901, "quantity": 2, "price": "145.48",
             "payment": {"credit_card_id": 327284}},
    "atm": {"provider": "atm", "event_id": "evt_demo", "items": [{"tier_id": "GA", "quantity": 2}]},
    "acme": {"provider": "acme", "browser_ip": "127.0.0.1", "recaptcha_token": "dev-recaptcha-token",
             "items": [{"event_id": "5ff74342210cbe0c44913be2", "ticketing_type_id": "54248ac8e4b01cd228b007a4",
                        "quantity": 2}]},
}
DEMO_BUYER = {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"}


# Commands that serve: outside dev, they refuse to start on unsafe settings (refuse_to_serve).
SERVERS = frozenset({"worker", "webhooks", "codec-server"})

# Exit codes (README, "The command line"); argparse exits 2 on a usage mistake.
EXIT_ERROR = 1  # the command could not do what was asked: no server, unknown id, refused, bad input
EXIT_UNSUCCESSFUL = 3  # the purchase ended FAILED, CANCELLED or EXPIRED (`result`, `buy --wait`)
UNSUCCESSFUL = frozenset({PurchaseState.FAILED, PurchaseState.CANCELLED, PurchaseState.EXPIRED})


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
ORDER_FLAGS = {"email": "email", "first-name": "contactFirstName", "last-name": "contactLastName",
               "phone": "phoneNumber", "zip-code": "zipCode", "notes": "notes"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="boxoffice", description="Durable ticket purchases on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the Temporal dev server + UI, the simulators and a worker")
    demo = commands.add_parser("demo", help="buy tickets from the Atom simulator, step by step")
    demo.add_argument("--auto", action="store_true", help="auto confirmation instead of confirming after the price")
    demo.add_argument("--provider", choices=sorted(DEMO_REQUESTS), default="atom")
    demo.add_argument("--orphan", action="store_true", help="show the reconciliation sweep: an order at the TEvo "
                      "simulator no purchase accounts for becomes an attention item")
    commands.add_parser("worker", help="run a worker against TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE")
    commands.add_parser("webhooks", help="receive ATM's signed webhooks and signal the purchases")
    commands.add_parser("codec-server", help="decrypt payloads for the Temporal UI and CLI (--codec-endpoint)")
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
    refund = order_commands.add_parser("refund", help="refund an order, in full or --item by item (once, however "
                                       "often asked; another --refund-id is another refund)")
    refund.add_argument("order_id")
    refund.add_argument("--reason-code", choices=get_args(RefundReason), default="Miscellaneous")
    refund.add_argument("--notes", default="refunded from the command line")
    refund.add_argument("--no-email", action="store_true", help="do not e-mail the buyer")
    refund.add_argument("--item", dest="items", action="append", type=refund_item, default=[],
                        metavar="ITEM_ID=QUANTITY", help="refund this many tickets of an order item (repeatable)")
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
    buy = commands.add_parser("buy", help="start a purchase from a JSON request")
    buy.add_argument("request", help="the PurchaseRequest as JSON, or @file, or - for standard input")
    buy.add_argument("--wait", action="store_true", help="wait for the result (exit 3 if it ends unsuccessfully)")
    buy.add_argument("--json", action="store_true", help="print the result as JSON")
    for name, text in (("status", "show a purchase"), ("result", "wait for a purchase's outcome: tickets, "
                       "failure, compensations (exit 3 if it ended unsuccessfully)"),
                       ("confirm", "confirm a held purchase"), ("cancel", "cancel a purchase and compensate")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("purchase_id")
        sub.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "confirm":
            sub.add_argument("--total", type=decimal_argument,
                             help="the total the buyer accepted (must match the preview)")
            sub.add_argument("--recaptcha-token", help="ACME: a fresh reCAPTCHA token from the buyer's browser "
                             "(tokens live two minutes; it replaces the request's)")
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
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can abort the interpreter teardown of a short-lived client process
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300): skip the teardown.
    os._exit(code)


def explain(err: Exception, args: argparse.Namespace, address: str) -> tuple[str, int] | None:
    """One or two lines and the exit code for an ordinary mistake; None for anything else."""
    purchase_id = getattr(args, "purchase_id", None)
    if isinstance(err, CommandError):
        return str(err), err.code
    if isinstance(err, ValidationError):
        # Settings classes are named *Settings; everything else validated here is a request.
        what = "configuration" if err.title.endswith("Settings") else "request"
        return f"invalid {what}: {validation_summary(err)}", EXIT_ERROR
    if isinstance(err, RuntimeError) and str(err).startswith("Failed client connect"):
        return (f"no Temporal server at {address}: start one with `boxoffice dev`, "
                "or set TEMPORAL_ADDRESS to yours"), EXIT_ERROR
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
    async with dev_stack(settings) as stack:
        print(f"Temporal UI:      {stack.ui_url}")
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
    print("Starting the dev stack (Temporal dev server, simulators, worker)...", flush=True)
    async with dev_stack(settings) as stack:
        providers = Providers()
        try:
            async with serving(stack.client, settings.task_queue, providers.providers):
                await _demo(stack.client, settings, args)
        finally:
            await providers.aclose()
    # The UI stopped with the stack: say how to keep one to look at.
    print(f"The dev stack stopped with the demo. To see purchases in the Temporal UI ({stack.ui_url}),\n"
          "run `boxoffice dev` in another shell and `boxoffice demo` again.")


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
        new_steps = [*status.steps_done, status.step][len(shown):]
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
        print(f"  price {receipt.total} {receipt.currency} (subtotal {receipt.subtotal}, fees {receipt.fees}, "
              f"tax {receipt.tax}); hold until {status.hold_expires_at:%H:%M:%S} UTC — confirming")
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
        print(f"  ticket        seat {ticket.seat:<5} {ticket.ticket_type or '':<8} "
              f"barcode {ticket.barcode or '(e-ticket to follow)'}")
    if view.failure:
        f = view.failure
        extra = ", ".join(f"{label} {value}" for label, value in
                          (("code", f.provider_code), ("HTTP", f.provider_status), ("trace", f.trace_id)) if value)
        print(f"  failure       {f.reason}: {f.message}" + (f" ({extra})" if extra else ""))
    for undo in getattr(view, "compensations", []):
        print(f"  compensated   {undo.action}: {'ok' if undo.ok else 'FAILED'}" + (f" ({undo.detail})" if undo.detail else ""))


def show_or_dump(view: PurchaseStatus | PurchaseResult, as_json: bool) -> None:
    if as_json:
        print(view.model_dump_json(indent=2))
    else:
        show(view)


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


def bound_socket(host: str, port: int, variable: str) -> socket.socket:
    """Binds before serving, so a port in use is one clear line instead of uvicorn's exit."""
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
    sock = bound_socket(webhooks.host, webhooks.port, "BOXOFFICE_WEBHOOKS_PORT")
    await serve(atm_receiver(secrets, temporal_delivery(await connect(settings), settings.task_queue)), sock)


async def cmd_codec_server(args: argparse.Namespace, settings: WorkerSettings) -> None:
    codec_settings = CodecSettings()
    codec = codec_settings.codec()
    refuse_to_serve(*([] if codec else [NO_CODEC_KEYS]), *([] if codec_settings.auth_token else [
        "BOXOFFICE_CODEC_AUTH_TOKEN is not set: the token the Temporal UI and CLI send"]))
    assert codec is not None and codec_settings.auth_token is not None
    origins = [o.strip() for o in codec_settings.cors_origins.split(",") if o.strip()]
    app = codec_server(codec, codec_settings.auth_token.get_secret_value(), origins)
    sock = bound_socket(codec_settings.host, codec_settings.port, "BOXOFFICE_CODEC_PORT")
    print(f"codec server on http://{codec_settings.host}:{codec_settings.port} for {', '.join(origins)}", flush=True)
    await serve(app, sock)


async def cmd_orders(args: argparse.Namespace, settings: WorkerSettings) -> None:
    if args.orders_command == "delete" and not args.yes:
        raise CommandError(f"deleting order {args.order_id} cannot be undone: add --yes")
    if args.orders_command == "update":
        changes = {name: value for name in ORDER_FLAGS.values() if (value := getattr(args, name)) is not None}
        if not changes:
            raise CommandError(f"nothing to change: give one of {', '.join('--' + f for f in ORDER_FLAGS)}")
    client = await connect(settings)
    if args.orders_command == "refund":
        request = RefundRequest(order_id=args.order_id, reason_code=args.reason_code, notes=args.notes,
                                no_email=args.no_email, items=dict(args.items), refund_id=args.refund_id)
        print((await purchases.refund(client, request, settings.task_queue)).model_dump_json(indent=2))
        return
    if args.orders_command in ("update", "delete"):
        change = OrderChange(order_id=args.order_id, changes=changes) if args.orders_command == "update" else (
            OrderChange(order_id=args.order_id, delete=True))
        print((await purchases.change_order(client, change, settings.task_queue)).model_dump_json(indent=2))
        return
    if args.orders_command == "show":
        query = OrdersQuery(order_id=args.order_id)
    else:
        query = OrdersQuery(email=args.email, phone=args.phone, event_id=args.event_id, page=args.page,
                            page_size=args.page_size)
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
    client = await connect(settings)
    handle, started = await purchases.start_or_find_purchase(client, request, settings.task_queue)
    if started:
        print(handle.id)
        # Returns once the seats are held (or the purchase failed): the hold is shown at once.
        held = await purchases.held(client, request.purchase_id)
    else:
        print(f"{handle.id} already exists (started earlier); showing it")
        held = await purchases.status(client, request.purchase_id)
    if not args.wait:
        show_or_dump(held, args.json)
    if args.wait:
        await print_result(client, request.purchase_id, args.json)


async def print_result(client: Client, purchase_id: str, as_json: bool) -> None:
    result = await purchases.purchase_result(client, purchase_id)
    show_or_dump(result, as_json)
    if result.state in UNSUCCESSFUL:
        raise SystemExit(EXIT_UNSUCCESSFUL)


async def cmd_result(args: argparse.Namespace, settings: WorkerSettings) -> None:
    await print_result(await connect(settings), args.purchase_id, args.json)


async def cmd_status(args: argparse.Namespace, settings: WorkerSettings) -> None:
    show_or_dump(await purchases.status(await connect(settings), args.purchase_id), args.json)


async def cmd_confirm(args: argparse.Namespace, settings: WorkerSettings) -> None:
    confirmation = ConfirmRequest(accepted_total=args.total, recaptcha_token=args.recaptcha_token)
    show_or_dump(await purchases.confirm(await connect(settings), args.purchase_id, confirmation), args.json)


async def cmd_cancel(args: argparse.Namespace, settings: WorkerSettings) -> None:
    show_or_dump(await purchases.cancel(await connect(settings), args.purchase_id, args.reason), args.json)


async def _demo_orphan(client: Client, settings: WorkerSettings) -> None:
    """An order placed at TEvo behind boxoffice's back (POST /v10/orders, as a lost create would leave
    it), then a sweep of TEvo: one finding, an attention item."""
    reference = f"demo-orphan-{int(time.time() * 1000)}"
    request = purchases.parse_request(dict(DEMO_REQUESTS["tevo"], purchase_id=reference, buyer=DEMO_BUYER))
    assert isinstance(request, TevoPurchaseRequest)
    tevo = TevoActivities(TevoSettings())
    try:
        client_id = await tevo.find_or_create_client(request.buyer)
        await tevo._call("POST", "/v10/orders", json_body=order_body(request, client_id))
    finally:
        await tevo.aclose()
    print(f"Placed a TEvo order with reference {reference} outside boxoffice: no purchase has that id.")
    sweep = SweepRequest(provider="tevo", window_seconds=SweepSettings().window_hours * 3600)
    handle = await client.start_workflow("SweepWorkflow", sweep, id=f"sweep-tevo-demo-{reference}",
                                         task_queue=settings.task_queue, result_type=SweepResult)
    result = await handle.result()
    print(f"Swept TEvo: {result.totals.seen} order(s) seen, {result.totals.findings} finding(s), "
          f"{result.totals.repaired} repaired.")
    for item in await purchases.attention_items(client, provider="tevo"):
        if item["purchase_id"] == reference:
            print(f"Attention item {item['id']}: {item['kind']}, order {item['order_id']}, {item['amount']}")
            print(f"  boxoffice attention show {item['id']}")
            print(f"  boxoffice attention approve {item['id']} --action cancel")
            return
    print("The item is not in the list yet (visibility lags a second): boxoffice attention list")


async def cmd_attention(args: argparse.Namespace, settings: WorkerSettings) -> None:
    client = await connect(settings)
    command = args.attention_command
    if command == "list":
        items = await purchases.attention_items(client, include_closed=args.all, provider=args.provider, kind=args.kind)
        if args.json:
            print(json.dumps(items, indent=2))
            return
        for item in items:
            print(f"{item['id']}  {item['state'] or '-'}  {item['provider'] or '-'}  {item['kind'] or '-'}  "
                  f"order {item['order_id'] or '-'}  purchase {item['purchase_id'] or '-'}  {item['amount'] or ''}")
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
        await connect(settings), settings.task_queue, sweep.provider_list(), timedelta(minutes=sweep.interval_minutes),
        timedelta(hours=sweep.window_hours), sweep.pages_per_run, sweep.page_size)
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
