"""The `boxoffice` command: dev, demo, worker, and buy|status|confirm|cancel from the shell."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from decimal import Decimal
from typing import Any

import httpx
import uvicorn
from pydantic import ValidationError
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError

from workers import client as purchases
from workers.codec import CodecSettings, codec_server
from workers.devstack import dev_stack, port_open, split_address
from workers.logs import configure
from workers.settings import WebhookSettings, WorkerSettings
from workers.webhooks import atm_receiver, temporal_delivery
from workers.worker import Providers, connect, run_worker, serving
from workflows.models import (
    ConfirmRequest,
    OrdersQuery,
    PurchaseResult,
    PurchaseState,
    PurchaseStatus,
    RefundRequest,
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
    "acme": {"provider": "acme", "browser_ip": "127.0.0.1",
             "items": [{"event_id": "5ff74342210cbe0c44913be2", "ticketing_type_id": "54248ac8e4b01cd228b007a4",
                        "quantity": 2}]},
}
DEMO_BUYER = {"email": "guest@example.com", "first_name": "Jane", "last_name": "Doe"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="boxoffice", description="Durable ticket purchases on Temporal.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the Temporal dev server + UI, the simulators and a worker")
    demo = commands.add_parser("demo", help="buy tickets from the Atom simulator, step by step")
    demo.add_argument("--auto", action="store_true", help="auto confirmation instead of confirming after the price")
    demo.add_argument("--provider", choices=sorted(DEMO_REQUESTS), default="atom")
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
    refund = order_commands.add_parser("refund", help="refund an order in full (once, however often asked)")
    refund.add_argument("order_id")
    refund.add_argument("--reason-code", default="CUSTOMER_REQUEST")
    refund.add_argument("--notes", default="refunded from the command line")
    refund.add_argument("--no-email", action="store_true", help="do not e-mail the buyer")
    buy = commands.add_parser("buy", help="start a purchase from a JSON request")
    buy.add_argument("request", help="the PurchaseRequest as JSON, or @file, or - for standard input")
    buy.add_argument("--wait", action="store_true", help="wait for the result")
    for name, text in (("status", "show a purchase"), ("confirm", "confirm a held purchase"),
                       ("cancel", "cancel a purchase and compensate")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("purchase_id")
        if name == "confirm":
            sub.add_argument("--total", type=Decimal, help="the total the buyer accepted (must match the preview)")
        if name == "cancel":
            sub.add_argument("--reason", default="cancelled from the command line")
    args = parser.parse_args(argv)

    settings = WorkerSettings()
    configure(settings.log_format, settings.log_level if args.command in ("dev", "worker") else "WARNING")
    problem: str | None = None
    try:
        asyncio.run(COMMANDS[args.command](args, settings))
    except KeyboardInterrupt:
        pass
    except SystemExit as err:
        problem = str(err.code) if err.code else None
    except ValidationError as err:
        problem = f"invalid request:\n{err}"
    except WorkflowUpdateFailedError as err:
        problem = f"refused: {err.cause}"
    except RPCError as err:
        problem = f"Temporal said: {err.message}"
    if problem:
        print(problem, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # The SDK's Rust threads can abort the interpreter teardown of a short-lived client process
    # ("PyGILState_Release ... must be current", temporalio/sdk-python#300): skip the teardown.
    os._exit(1 if problem else 0)


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
        print(f"Temporal UI: {stack.ui_url}  (the purchase stays there while the stack runs)")
        providers = Providers()
        try:
            async with serving(stack.client, settings.task_queue, providers.providers):
                await _demo(stack.client, settings, args)
        finally:
            await providers.aclose()


async def _demo(client: Client, settings: WorkerSettings, args: argparse.Namespace) -> None:
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
    _print_result(await handle.result())


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


def _print_result(result: PurchaseResult) -> None:
    print(f"{result.state}: order {result.provider_order_id or '-'}")
    if result.receipt:
        print(f"  charged {result.receipt.total} {result.receipt.currency}")
    for ticket in result.tickets:
        print(f"  seat {ticket.seat:<5} {ticket.ticket_type or '':<8} barcode {ticket.barcode or '(e-ticket to follow)'}")
    if result.failure:
        print(f"  {result.failure.reason}: {result.failure.message}")
    for undo in result.compensations:
        print(f"  compensated: {undo.action} ({'ok' if undo.ok else 'FAILED'}: {undo.detail})")


async def cmd_worker(args: argparse.Namespace, settings: WorkerSettings) -> None:
    await run_worker(settings)


async def cmd_webhooks(args: argparse.Namespace, settings: WorkerSettings) -> None:
    webhooks = WebhookSettings()
    app = atm_receiver(webhooks.atm_secret_list(), temporal_delivery(await connect(settings)))
    await uvicorn.Server(uvicorn.Config(app, host=webhooks.host, port=webhooks.port, log_level="warning")).serve()


async def cmd_codec_server(args: argparse.Namespace, settings: WorkerSettings) -> None:
    codec_settings = CodecSettings()
    codec = codec_settings.codec()
    if codec is None or codec_settings.auth_token is None:
        raise SystemExit("set BOXOFFICE_CODEC_KEYS and BOXOFFICE_CODEC_AUTH_TOKEN")
    origins = [o.strip() for o in codec_settings.cors_origins.split(",") if o.strip()]
    app = codec_server(codec, codec_settings.auth_token.get_secret_value(), origins)
    print(f"codec server on http://{codec_settings.host}:{codec_settings.port} for {', '.join(origins)}", flush=True)
    config = uvicorn.Config(app, host=codec_settings.host, port=codec_settings.port, log_level="warning")
    await uvicorn.Server(config).serve()


async def cmd_orders(args: argparse.Namespace, settings: WorkerSettings) -> None:
    client = await connect(settings)
    if args.orders_command == "refund":
        request = RefundRequest(order_id=args.order_id, reason_code=args.reason_code, notes=args.notes,
                                no_email=args.no_email)
        print((await purchases.refund(client, request, settings.task_queue)).model_dump_json(indent=2))
        return
    if args.orders_command == "show":
        query = OrdersQuery(order_id=args.order_id)
    else:
        query = OrdersQuery(email=args.email, phone=args.phone, event_id=args.event_id, page=args.page,
                            page_size=args.page_size)
    print((await purchases.orders(client, query, settings.task_queue)).model_dump_json(indent=2))


async def cmd_buy(args: argparse.Namespace, settings: WorkerSettings) -> None:
    if args.request == "-":
        text = sys.stdin.read()
    elif args.request.startswith("@"):
        with open(args.request[1:]) as file:
            text = file.read()
    else:
        text = args.request
    request = purchases.parse_request(text)
    client = await connect(settings)
    # Returns once the seats are held (or the purchase failed): the hold is printed at once.
    handle, held = await purchases.hold_purchase(client, request, settings.task_queue)
    print(handle.id)
    print(held.model_dump_json(indent=2))
    if args.wait:
        result = await handle.result()
        print(result.model_dump_json(indent=2))


async def cmd_status(args: argparse.Namespace, settings: WorkerSettings) -> None:
    status = await purchases.status(await connect(settings), args.purchase_id)
    print(status.model_dump_json(indent=2))


async def cmd_confirm(args: argparse.Namespace, settings: WorkerSettings) -> None:
    confirmation = ConfirmRequest(accepted_total=args.total)
    status = await purchases.confirm(await connect(settings), args.purchase_id, confirmation)
    print(status.model_dump_json(indent=2))


async def cmd_cancel(args: argparse.Namespace, settings: WorkerSettings) -> None:
    status = await purchases.cancel(await connect(settings), args.purchase_id, args.reason)
    print(status.model_dump_json(indent=2))


COMMANDS = {
    "dev": cmd_dev,
    "demo": cmd_demo,
    "worker": cmd_worker,
    "webhooks": cmd_webhooks,
    "orders": cmd_orders,
    "codec-server": cmd_codec_server,
    "buy": cmd_buy,
    "status": cmd_status,
    "confirm": cmd_confirm,
    "cancel": cmd_cancel,
}

if __name__ == "__main__":
    main()
