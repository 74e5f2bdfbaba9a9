"""The Temporal UI as an operator sees it, in a real headless browser (Debian's chromium driven by
Playwright; Playwright's own browser download is not used).

Starts the `boxoffice dev` stack (dev server and UI behind `ui_front`, simulators, codec with fresh
keys, a worker) in a temporary home on free ports, runs purchases that end differently (FULFILLED,
FAILED, cancelled by the buyer, COMPENSATION_FAILED, one held), then in chromium:

- opens the one-time sign-in link `boxoffice dev` prints: it lands on the Workflows list, whose rows
  must show each purchase's state and provider without any column set up by hand;
- opens a purchase: its input must be decoded (the buyer's e-mail shown, no `binary/encrypted`);
- as a stranger (a fresh browser, no sign-in) the same page must not show the decoded input, and a
  page of another origin in the signed-in browser must not get an answer from the codec;
- as deploy/compose.yaml has it: a codec server on an origin of its own, the UI sending credentials
  (the dev server's UI cannot be told TEMPORAL_CODEC_INCLUDE_CREDENTIALS, so the browser's own
  codec settings, which the UI keeps in local storage, stand in for it): decoded after the link
  minted with the token (POST /login-link), not before.

Prints what it saw as a table; exits 1 if anything is off. Screenshots go to --shots (/tmp).

    apt-get install -y chromium && pip install playwright
    python bench/ui_check.py
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
TASK_QUEUE = "boxoffice"
# purchase id -> (provider, confirmation, what happens, the state the list must show)
PURCHASES: dict[str, tuple[str, str, str, str]] = {
    "ui-fulfilled": ("atom", "auto", "completes", "FULFILLED"),
    "ui-failed": ("atom", "auto", "the provider fails the order", "FAILED"),
    "ui-cancelled": ("onebox", "manual", "held, then cancelled by the buyer", "CANCELLED"),
    "ui-stuck": ("atom", "auto", "the order's undo fails", "COMPENSATION_FAILED"),
    "ui-held": ("acme", "manual", "held, waiting for the buyer", "AWAITING_CONFIRMATION"),
}
# Atom refuses the create as a duplicate: the order can be neither named nor undone (tests/test_cli_outcomes.py).
DUPLICATE = {
    "endpoint": "create",
    "status": 409,
    "times": 2,
    "body": {"errorCode": "DUPLICATE_CLIENT_REQUEST_ID", "message": "clientRequestId was used by a previous flow"},
}
BUYER_EMAIL = "ui-check@example.com"
ROWS_JS = """() => [...document.querySelectorAll('table tr')]
  .map(tr => [...tr.querySelectorAll('th,td')].map(cell => cell.innerText.trim()))"""
# The UI's own codec settings in this browser (UI 2.54.1 keeps them in local storage under these names),
# as the UI server's TEMPORAL_CODEC_ENDPOINT and TEMPORAL_CODEC_INCLUDE_CREDENTIALS=true would set them.
COMPOSE_CODEC_JS = """for (const [key, value] of Object.entries(%s)) localStorage.setItem(key, JSON.stringify(value));"""
STRANGER_FETCH_JS = """async ([url, body]) => {
  try {
    const answer = await fetch(url, {method: "POST", credentials: "include",
                                     headers: {"content-type": "application/json"}, body});
    return "answered " + answer.status;
  } catch (err) { return "blocked: " + err.message; }
}"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(home: Path) -> None:
    """A stack of its own: temporary home, free ports, fresh codec keys."""
    os.environ.update(
        TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}", TEMPORAL_NAMESPACE="default", BOXOFFICE_HOME=str(home),
        BOXOFFICE_SIMULATORS_PORT=str(free_port()), BOXOFFICE_WEBHOOKS_PORT=str(free_port()),
        BOXOFFICE_TASK_QUEUE=TASK_QUEUE,
        BOXOFFICE_CODEC_KEYS="ui:" + base64.b64encode(os.urandom(32)).decode(),
    )  # fmt: skip
    os.environ.pop("BOXOFFICE_CODEC_AUTH_TOKEN", None)


async def run_purchases(stack: Any) -> None:
    import httpx

    from workers import client as purchases
    from workers.cli import DEMO_REQUESTS
    from workers.devstack import DevSettings

    atom = f"http://127.0.0.1:{DevSettings().simulator_ports()['atom']}/_sim"
    buyer = {"email": BUYER_EMAIL, "first_name": "Ada", "last_name": "Check"}
    client = stack.client

    def request(purchase_id: str) -> dict[str, Any]:
        provider, confirmation, _, _ = PURCHASES[purchase_id]
        return dict(DEMO_REQUESTS[provider], purchase_id=purchase_id, buyer=buyer, confirmation=confirmation)

    async with httpx.AsyncClient() as http:
        await purchases.purchase_result(
            client, (await purchases.start_purchase(client, request("ui-fulfilled"), TASK_QUEUE)).id.removeprefix("purchase-")
        )
        await http.post(f"{atom}/fulfilment", json={"fulfilment": "fail"})
        await purchases.start_purchase(client, request("ui-failed"), TASK_QUEUE)
        await purchases.purchase_result(client, "ui-failed")
        await http.post(f"{atom}/fulfilment", json={"fulfilment": "ok"})
        await http.post(f"{atom}/faults", json=DUPLICATE)
        await purchases.start_purchase(client, request("ui-stuck"), TASK_QUEUE)
        await purchases.purchase_result(client, "ui-stuck")
    await purchases.hold_purchase(client, request("ui-cancelled"), TASK_QUEUE)
    await purchases.cancel(client, "ui-cancelled", "the buyer changed their mind")
    await purchases.purchase_result(client, "ui-cancelled")
    await purchases.hold_purchase(client, request("ui-held"), TASK_QUEUE)


def list_rows(rows: list[list[str]]) -> dict[str, dict[str, str]]:
    """The Workflows table as {workflow id: {column: text}}."""
    header = next((row for row in rows if "Workflow ID" in row), [])
    table = {}
    for row in rows:
        cells = row[-len(header) :] if header else []
        if len(row) >= len(header) and header and row != header:
            named = dict(zip(header, cells, strict=True))
            table[named.get("Workflow ID", "")] = named
    return table


async def page_text(page: Any, done: Callable[[str], bool], seconds: float = 30) -> str:
    """The page's text once `done` says so, or after `seconds` (the UI fills its cards as its
    fetches and the codec's answers arrive)."""
    text = ""
    for _ in range(int(seconds * 4)):
        text = await page.inner_text("body")
        if done(text):
            break
        await page.wait_for_timeout(250)
    return text


async def browse(stack: Any, shots: Path) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    from playwright.async_api import async_playwright

    from workers.devstack import DevSettings

    seen: dict[str, str] = {}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM)
        operator = await browser.new_context(viewport={"width": 1500, "height": 800})
        page = await operator.new_page()
        await page.goto(stack.codec_login_url)  # the link `boxoffice dev` prints
        table: dict[str, dict[str, str]] = {}
        for _ in range(40):  # visibility lags a little behind the workflows
            await page.wait_for_selector("table tr >> text=purchase-", timeout=30_000)
            table = list_rows(await page.evaluate(ROWS_JS))
            if all(table.get(f"purchase-{pid}", {}).get("BoxofficeState") == want[3] for pid, want in PURCHASES.items()):
                break
            await page.wait_for_timeout(500)
            await page.reload()
        seen["list url"] = page.url
        await page.screenshot(path=str(shots / "ui-list.png"))

        await page.goto(f"{stack.ui_url}/namespaces/default/workflows/purchase-ui-fulfilled")
        body = await page_text(page, lambda text: BUYER_EMAIL in text)
        seen["operator: input decoded"] = str(BUYER_EMAIL in body and '"purchase_id": "ui-fulfilled"' in body)
        seen["operator: binary/encrypted shown"] = str("binary/encrypted" in body)
        await page.screenshot(path=str(shots / "ui-purchase.png"), full_page=False)

        # A page of another origin (the ATM simulator's) in the signed-in browser asks the codec.
        other = f"http://127.0.0.1:{DevSettings().simulator_ports()['atm']}/_sim/state"
        await page.goto(other)
        seen["other origin: codec fetch"] = await page.evaluate(
            STRANGER_FETCH_JS, [f"{stack.ui_url}/codec/decode", '{"payloads": []}']
        )

        stranger = await browser.new_context(viewport={"width": 1500, "height": 800})
        strange_page = await stranger.new_page()
        await strange_page.goto(f"{stack.ui_url}/namespaces/default/workflows/purchase-ui-fulfilled")
        strange_body = await page_text(strange_page, lambda text: BUYER_EMAIL in text, seconds=8)
        seen["stranger: input decoded"] = str(BUYER_EMAIL in strange_body)
        seen["stranger: codec answer"] = await strange_page.evaluate(
            STRANGER_FETCH_JS, [f"{stack.ui_url}/codec/decode", '{"payloads": []}']
        )
        await strange_page.screenshot(path=str(shots / "ui-stranger.png"))
        seen.update(await compose_style(browser, stack))
        await browser.close()
    return table, seen


async def compose_style(browser: Any, stack: Any) -> dict[str, str]:
    """The codec server on its own origin, as `boxoffice codec-server` in compose."""
    import httpx
    import uvicorn

    from workers.codec import CodecSettings, UiSessions, codec_server

    token = base64.b64encode(os.urandom(32)).decode()
    codec_url = f"http://127.0.0.1:{free_port()}"
    codec = CodecSettings().codec()
    assert codec is not None
    app = codec_server(codec, token, [stack.ui_url], sessions=UiSessions(after_login=stack.ui_url))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(codec_url.rsplit(":", 1)[1]), log_level="warning"))
    task = asyncio.create_task(server.serve())
    seen = {}
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient() as http:
            minted = await http.post(f"{codec_url}/login-link", headers={"Authorization": f"Bearer {token}"})
        settings = {
            "endpoint": codec_url,
            "includeCredentials": True,
            "passAccessToken": False,
            "overrideRemoteCodecConfiguration": True,
        }
        for who in ("compose, before the link", "compose, after the link"):
            context = await browser.new_context(viewport={"width": 1500, "height": 800})
            await context.add_init_script(COMPOSE_CODEC_JS % json.dumps(settings))
            page = await context.new_page()
            if who.endswith("after the link"):
                await page.goto(minted.json()["url"])
            await page.goto(f"{stack.ui_url}/namespaces/default/workflows/purchase-ui-fulfilled")
            text = await page_text(page, lambda text: BUYER_EMAIL in text, seconds=8 if "before" in who else 30)
            seen[f"{who}: input decoded"] = str(BUYER_EMAIL in text)
            await context.close()
    finally:
        server.should_exit = True
        await task
    return seen


def report(table: dict[str, dict[str, str]], seen: dict[str, str]) -> list[str]:
    """Prints the table; returns what is wrong."""
    wrong = []
    print(f"{'purchase':<14} {'what happened':<36} {'Status':<10} {'BoxofficeState':<22} {'Provider':<9} ok")
    for purchase_id, (provider, _, what, state) in PURCHASES.items():
        row = table.get(f"purchase-{purchase_id}", {})
        ok = row.get("BoxofficeState") == state and row.get("BoxofficeProvider") == provider
        print(
            f"{purchase_id:<14} {what:<36} {row.get('Status', '-'):<10} {row.get('BoxofficeState', '-'):<22} "
            f"{row.get('BoxofficeProvider', '-'):<9} {'yes' if ok else 'NO'}"
        )
        if not ok:
            wrong.append(f"{purchase_id}: the list shows {row or 'no row'}, not {state}/{provider}")
    print()
    for what, value in seen.items():
        print(f"{what:<40} {value}")
    expected = {
        "operator: input decoded": "True",
        "operator: binary/encrypted shown": "False",
        "stranger: input decoded": "False",
        "compose, before the link: input decoded": "False",
        "compose, after the link: input decoded": "True",
    }
    wrong += [f"{what}: {seen.get(what)}" for what, value in expected.items() if seen.get(what) != value]
    if not seen.get("other origin: codec fetch", "").startswith("blocked"):
        wrong.append(f"another origin got a codec answer: {seen.get('other origin: codec fetch')}")
    if seen.get("stranger: codec answer") != "answered 401":
        wrong.append(f"a stranger's codec call: {seen.get('stranger: codec answer')}")
    return wrong


async def main(shots: Path) -> int:
    if not Path(CHROMIUM).exists():
        print(f"no {CHROMIUM}: apt-get install -y chromium", file=sys.stderr)
        return 2
    home = Path(tempfile.mkdtemp(prefix="boxoffice-ui-"))
    environment(home)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from workers.devstack import dev_stack, use_simulators
    from workers.logs import configure
    from workers.settings import WorkerSettings
    from workers.worker import run_worker

    use_simulators()
    configure(level="WARNING")
    settings = WorkerSettings()
    shots.mkdir(parents=True, exist_ok=True)
    try:
        async with dev_stack(settings) as stack:
            stop = asyncio.Event()
            worker = asyncio.create_task(run_worker(settings, client=stack.client, stop=stop))
            try:
                await asyncio.wait_for(run_purchases(stack), 120)
                table, seen = await browse(stack, shots)
            finally:
                stop.set()
                await worker
    finally:
        shutil.rmtree(home, ignore_errors=True)
    wrong = report(table, seen)
    print(f"\nscreenshots: {', '.join(str(shots / name) for name in ('ui-list.png', 'ui-purchase.png', 'ui-stranger.png'))}")
    for line in wrong:
        print(f"WRONG: {line}", file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=Path, default=Path("/tmp/boxoffice-ui"), help="where screenshots go")
    sys.exit(asyncio.run(main(parser.parse_args().shots)))
