"""The reconciliation sweep's activities: one page of what a provider holds, matched to purchases.

Each provider's `{provider}.sweep_page` lists what the provider holds for this account through its
documented listing, or — where the docs offer none — reads at the provider the ids the purchases
started in the window recorded (visibility, then each purchase's `status` query). Every item is
matched to a purchase (the purchase id the provider keeps — TEvo `reference`, ACME `notes`, ATM
`metadata` — else `BoxofficeProviderOrderId`) and classified (`classify`); only what nobody accounts
for leaves the activity. An answer the docs do not describe becomes a BAD_ANSWER finding of its
own, never a failed page (which would be retried for ever).

Approvals of attention items act here too (`sweep.cancel`, `sweep.refund`): an ACME refund through
`workers.client.refund`, the path of `boxoffice orders refund` (RefundWorkflow `refund-{order}`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workers import client as purchases
from workflows.findings import Finding, FindingKind, ItemKind, ProviderItem, Standing, SweepPage, SweepPageRequest
from workflows.models import (
    PROVIDER,
    PROVIDER_ORDER_ID,
    STATE,
    WORKFLOW_TYPE,
    ProviderSession,
    PurchaseState,
    PurchaseStatus,
    RefundRequest,
)
from workflows.reconcile import AMOUNT, ATTENTION_KIND, NEEDS_ATTENTION, PURCHASE_ID

log = structlog.get_logger("boxoffice.sweep")

PROVIDERS = ("acme", "atm", "atom", "onebox", "tevo")


class SweepSettings(BaseSettings):
    """From BOXOFFICE_SWEEP_*: which providers the schedules sweep, how often, how far back."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_SWEEP_")

    enabled: bool = True
    providers: str = ",".join(PROVIDERS)  # of these, only the ones configured on the worker
    interval_minutes: float = Field(default=60, gt=0)
    window_hours: float = Field(default=48, gt=0)
    pages_per_run: int = Field(default=20, ge=1, le=500)
    page_size: int = Field(default=50, ge=1, le=1000)
    # Items younger than this are left to the next sweep: their purchase may not be visible yet.
    settle_seconds: float = Field(default=300, ge=0)
    # ACME lists orders only by event or buyer: events to sweep besides those the purchases named.
    acme_event_ids: str = ""

    def provider_list(self) -> list[str]:
        """The providers named that have a sweep."""
        return [p for p in (name.strip() for name in self.providers.split(",")) if p in SWEEPS]


@dataclass(frozen=True)
class PurchaseView:
    """A purchase as visibility and describe show it."""

    workflow_id: str
    purchase_id: str
    running: bool
    state: str | None
    order_id: str | None
    provider_ids: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)

    @property
    def fulfilled(self) -> bool:
        return self.state == PurchaseState.FULFILLED


def classify(item: ProviderItem, purchase: PurchaseView | None) -> tuple[Finding | None, bool]:
    """What an item means for its purchase: (finding, repair). `repair`: release it now (a hold or
    basket nobody needs). A running purchase owns what it holds: nothing to say."""
    base = {
        "provider": item.provider,
        "item_kind": item.kind,
        "item_id": item.item_id,
        "status": item.status,
        "purchase_id": purchase.purchase_id if purchase else item.purchase_id,
        "purchase_state": purchase.state if purchase else None,
        "amount": item.amount,
        "currency": item.currency,
    }
    if item.standing == "unknown" and not item.problem:
        return Finding(
            kind=FindingKind.UNKNOWN_ORDER,
            proposed_action="none",
            detail=f"{item.status}: find the order at the provider (cancel it there if no tickets were issued), then dismiss.",
            **base,
        ), False
    if item.problem or item.standing is None:
        return Finding(
            kind=FindingKind.BAD_ANSWER,
            proposed_action="none",
            detail=item.problem or f"state {item.status!r} is not one the provider documents",
            **base,
        ), False
    if purchase is not None and purchase.running:
        return None, False
    ended = "no purchase names it" if purchase is None else f"its purchase ended {purchase.state}"
    if item.kind in ("hold", "basket"):
        if item.standing == "active":
            return Finding(
                kind=FindingKind.ACTIVE_HOLD, proposed_action="release", detail=f"{item.kind} still active; {ended}.", **base
            ), True
        if item.standing == "live" and item.provider == "atm" and not (purchase and purchase.fulfilled):
            return Finding(
                kind=FindingKind.PAYMENT_WITHOUT_TICKETS,
                proposed_action="none",
                detail=f"hold paid for ({item.status}); {ended}: refund the buyer at ATM or issue the "
                "tickets by hand, then dismiss.",
                **base,
            ), False
        return None, False
    if item.standing == "live":
        action = REFUNDS_ORDERS.get(item.provider, "cancel")
        if purchase is None or not purchase.fulfilled:
            kind = FindingKind.PAYMENT_WITHOUT_TICKETS if item.kind == "payment" else FindingKind.ORPHAN_ORDER
            return Finding(kind=kind, proposed_action=action, detail=f"{item.kind} {item.status}; {ended}.", **base), False
        if purchase.order_id not in (None, item.item_id):
            return Finding(
                kind=FindingKind.ORPHAN_ORDER,
                proposed_action=action,
                detail=f"a second {item.kind}: purchase {purchase.purchase_id} was fulfilled with {purchase.order_id}.",
                **base,
            ), False
        return None, False
    if item.standing == "cancelled" and purchase is not None and purchase.fulfilled and purchase.order_id in (None, item.item_id):
        return Finding(
            kind=FindingKind.CANCELLED_AFTER_FULFILMENT,
            proposed_action="none",
            detail=f"the provider reads the order {item.status} after the purchase was fulfilled: "
            "the buyer's tickets may be void; tell the buyer, then dismiss.",
            **base,
        ), False
    return None, False


# Providers whose orders are undone by a refund rather than a cancel.
REFUNDS_ORDERS = {"acme": "refund", "onebox": "refund", "atm": "none"}


def encode_cursor(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, sort_keys=True).encode()).decode()


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    return json.loads(base64.urlsafe_b64decode(cursor.encode())) if cursor else {}


def stamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")  # RFC 3339, to the microsecond


def money(value: Any) -> Decimal | None:
    try:
        return None if value is None else Decimal(str(value))
    except InvalidOperation:
        return None


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class Purchases:
    """Finds the purchase an item belongs to, through Temporal (describe and visibility)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def by_id(self, purchase_id: str) -> PurchaseView | None:
        return await self.describe(f"purchase-{purchase_id}")

    async def describe(self, workflow_id: str) -> PurchaseView | None:
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise
        attributes = described.typed_search_attributes
        return PurchaseView(
            workflow_id=workflow_id,
            purchase_id=workflow_id.removeprefix("purchase-"),
            running=described.status == WorkflowExecutionStatus.RUNNING,
            state=attributes.get(STATE),
            order_id=attributes.get(PROVIDER_ORDER_ID),
        )

    async def by_order(self, provider: str, order_id: str) -> PurchaseView | None:
        query = (
            f'WorkflowType = "{WORKFLOW_TYPE}" AND BoxofficeProvider = "{provider}" AND BoxofficeProviderOrderId = "{order_id}"'
        )
        async for execution in self.client.list_workflows(query, limit=1):
            return await self.describe(execution.id)
        return None

    async def find(self, item: ProviderItem) -> PurchaseView | None:
        if item.purchase_id:
            found = await self.by_id(item.purchase_id)
            if found is not None:
                return found
        return await self.by_order(item.provider, item.item_id)

    async def started(
        self, provider: str, since: datetime, until: datetime, token: str | None, page_size: int
    ) -> tuple[list[PurchaseView], str | None]:
        """One page of the provider's purchases started in the window, with the ids they recorded
        (their `status` query) and their request (the first event's input)."""
        query = (
            f'WorkflowType = "{WORKFLOW_TYPE}" AND BoxofficeProvider = "{provider}" '
            f'AND StartTime >= "{stamp(since)}" AND StartTime <= "{stamp(until)}"'
        )
        listing = self.client.list_workflows(
            query, page_size=page_size, next_page_token=base64.b64decode(token) if token else None
        )
        await listing.fetch_next_page()

        views = []
        for execution in listing.current_page or []:
            view = await self.describe(execution.id)
            if view is None:
                continue
            handle = self.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                status = await handle.query("status", result_type=PurchaseStatus)
                ids = dict(status.provider_ids)
            except Exception as err:  # noqa: BLE001 -- an unreadable purchase is swept by what visibility shows
                log.warning("sweep: purchase status unreadable", workflow_id=execution.id, error=str(err))
                ids = {"order_id": view.order_id} if view.order_id else {}
            request: dict[str, Any] = {}
            async for event in handle.fetch_history_events():
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                if payloads:
                    [started] = await self.client.data_converter.decode(payloads, [dict])
                    request = started if isinstance(started, dict) else {}
                break
            views.append(PurchaseView(**{**view.__dict__, "provider_ids": ids, "request": request}))
        next_token = listing.next_page_token
        return views, base64.b64encode(next_token).decode() if next_token else None


class ProviderSweep:
    """A provider's sweep activities. Subclasses read one page (`items`) and release a hold (`release`)."""

    name: ClassVar[str]

    def __init__(self, provider: Any, client: Client, settings: SweepSettings | None = None) -> None:
        self.provider = provider
        self.purchases = Purchases(client)
        self.settings = settings or SweepSettings()

    def all(self) -> list[Any]:
        async def sweep_page(request: SweepPageRequest) -> SweepPage:
            return await self.sweep_page(request)

        async def sweep_release(finding: Finding) -> str:
            return await self.release(finding)

        return [
            activity.defn(name=f"{self.name}.sweep_page")(sweep_page),
            activity.defn(name=f"{self.name}.sweep_release")(sweep_release),
        ]

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        """One page: each item with its purchase when the page already knows it (else None: looked up)."""
        raise NotImplementedError

    async def release(self, finding: Finding) -> str:
        raise ApplicationError(f"{self.name} has no holds to release", type="INVALID_REQUEST", non_retryable=True)

    async def cancel(self, finding: Finding) -> str:
        """An approved cancel of an order: the provider's own undo, as the purchase's saga uses it."""
        cancelled = await self.provider.cancel_order(finding.item_id)
        return str(getattr(cancelled, "status", cancelled))

    async def refund(self, finding: Finding) -> str:
        raise ApplicationError(
            f"refunds of {self.name} orders are not automated here", type="INVALID_REQUEST", non_retryable=True
        )

    async def sweep_page(self, request: SweepPageRequest) -> SweepPage:
        pairs, next_cursor = await self.items(request)
        settled = datetime.now(UTC).timestamp() - self.settings.settle_seconds
        findings: list[Finding] = []
        repairs: list[Finding] = []
        for item, known in pairs:
            if item.created_at is not None and item.created_at.timestamp() > settled and not item.problem:
                continue  # too young: its purchase may not show in visibility yet
            purchase = known or await self.purchases.find(item)
            finding, repair = classify(item, purchase)
            if finding is not None:
                (repairs if repair else findings).append(finding)
        return SweepPage(seen=len(pairs), findings=findings, repairs=repairs, next_cursor=next_cursor)


def bad_item(provider: str, kind: ItemKind, key: str, raw: Any, problem: str) -> ProviderItem:
    """An item whose answer is not what the docs show: a finding of its own, named by what is known of it."""
    excerpt = json.dumps(raw, default=str)[:200] if raw is not None else "nothing"
    return ProviderItem(provider=provider, kind=kind, item_id=key, status="unreadable", problem=f"{problem}: {excerpt}")


# -- TEvo -----------------------------------------------------------------------------------------

TEVO_STANDING: dict[str, Standing] = {
    "pending": "live",
    "open": "live",
    "pending_substitution": "live",
    "pending_consignment": "live",
    "accepted": "live",
    "completed": "live",
    "rejected": "cancelled",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "expired": "gone",
}
TEVO_PER_PAGE = 10  # Orders / Index: "Supports Pagination Yes (10 per_page max)"


class TevoSweep(ProviderSweep):
    """Orders / Index (https://ticketevolution.atlassian.net/wiki/pages/viewpage.action?pageId=4751395):
    GET /v9/orders?type=Order, 10 per page. It documents no date filter: every page is read and an
    order counts when its `created_at` is in the window (or it has none). The purchase id is the order's `reference`."""

    name = "tevo"

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        page = int(decode_cursor(request.cursor).get("page", 1))
        data = await self.provider._call("GET", "/v9/orders", params={"type": "Order", "page": page, "per_page": TEVO_PER_PAGE})
        raw_orders = data.get("orders") if isinstance(data, dict) else None
        if not isinstance(raw_orders, list):
            return [(bad_item("tevo", "order", f"page-{page}", data, "no `orders` list"), None)], None
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for index, raw in enumerate(raw_orders):
            item = self._item(raw, f"page-{page}-{index}")
            if item.created_at is None or request.since <= item.created_at <= request.until:
                items.append((item, None))
        more = len(raw_orders) >= TEVO_PER_PAGE
        return items, encode_cursor({"page": page + 1}) if more else None

    def _item(self, raw: Any, key: str) -> ProviderItem:
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), int) or not isinstance(raw.get("state"), str):
            return bad_item("tevo", "order", key, raw, "an order without an integer `id` and a `state`")
        state = raw["state"]
        return ProviderItem(
            provider="tevo",
            kind="order",
            item_id=str(raw["id"]),
            status=state,
            standing=TEVO_STANDING.get(state),
            amount=money(raw.get("total")),
            currency="USD",
            purchase_id=raw.get("reference") or None,
            created_at=timestamp(raw.get("created_at")),
        )


# -- ACME -----------------------------------------------------------------------------------------

ACME_NOTE = re.compile(r"boxoffice purchase (\S+) request")


class AcmeSweep(ProviderSweep):
    """ACME lists orders only by buyer or by event (B2C Orders, developers.acmeticketing.com/support/
    solutions/articles/33000250659): the sweep lists the orders of the events its purchases named (and
    BOXOFFICE_SWEEP_ACME_EVENT_IDS), `pageSize` at a time, and reads the reservation each purchase
    recorded (no reservation listing is documented; a reservation whose create answer was lost is
    known to nobody and lapses at its `expirationTimestamp`). The purchase id is in the order's `notes`."""

    name = "acme"

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        cursor = decode_cursor(request.cursor)
        if cursor.get("phase", "purchases") == "purchases":
            return await self._purchases_page(request, cursor)
        return await self._event_page(request, cursor)

    async def _purchases_page(
        self, request: SweepPageRequest, cursor: dict[str, Any]
    ) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        events = list(cursor.get("events") or [e.strip() for e in self.settings.acme_event_ids.split(",") if e.strip()])
        views, token = await self.purchases.started("acme", request.since, request.until, cursor.get("token"), request.page_size)
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for view in views:
            for item in view.request.get("items") or []:
                if isinstance(item, dict) and item.get("event_id") and item["event_id"] not in events:
                    events.append(item["event_id"])
            reservation_id = view.provider_ids.get("reservation_id")
            if reservation_id and not view.running:
                items.append((await self._reservation(reservation_id, view), view))
        if token:
            return items, encode_cursor({"phase": "purchases", "token": token, "events": events})
        return items, encode_cursor({"phase": "events", "events": events, "page": 1}) if events else None

    async def _reservation(self, reservation_id: str, view: PurchaseView) -> ProviderItem:
        try:
            data = await self.provider._call("GET", f"/v2/b2b/reservations/{reservation_id}")
        except ApplicationError as err:
            if err.details and isinstance(err.details[0], dict) and err.details[0].get("status") == 404:
                return ProviderItem(
                    provider="acme",
                    kind="hold",
                    item_id=reservation_id,
                    status="not found",
                    standing="gone",
                    purchase_id=view.purchase_id,
                )
            raise
        if not isinstance(data, dict) or "id" not in data:
            return bad_item("acme", "hold", reservation_id, data, "a reservation without `id`")
        return ProviderItem(
            provider="acme", kind="hold", item_id=reservation_id, status="active", standing="active", purchase_id=view.purchase_id
        )

    async def _event_page(
        self, request: SweepPageRequest, cursor: dict[str, Any]
    ) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        events, page = list(cursor["events"]), int(cursor.get("page", 1))
        data = await self.provider._call(
            "GET",
            f"/v2/b2c/orders/event/{events[0]}",
            params={"page": page, "pageSize": request.page_size, "sortField": "createdOn", "sortDirection": "desc"},
        )
        raw_orders = data.get("list") if isinstance(data, dict) else None
        if not isinstance(raw_orders, list):
            return [(bad_item("acme", "order", f"event-{events[0]}-page-{page}", data, "no `list` of orders"), None)], None
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for index, raw in enumerate(raw_orders):
            item = self._order(raw, f"event-{events[0]}-page-{page}-{index}")
            if item.created_at is None or request.since <= item.created_at <= request.until:
                items.append((item, None))
        has_more = bool((data.get("pagination") or {}).get("hasMore"))
        if has_more:
            return items, encode_cursor({"phase": "events", "events": events, "page": page + 1})
        return items, encode_cursor({"phase": "events", "events": events[1:], "page": 1}) if events[1:] else None

    def _order(self, raw: Any, key: str) -> ProviderItem:
        if not isinstance(raw, dict) or not raw.get("id"):
            return bad_item("acme", "order", key, raw, "an order without `id`")
        total, refunded = money(raw.get("totalAmount")), money(raw.get("refundAmount")) or Decimal(0)
        if total is None:
            return bad_item("acme", "order", str(raw["id"]), raw, "an order without `totalAmount`")
        note = ACME_NOTE.search(str(raw.get("notes") or ""))
        standing: Standing = "cancelled" if total > 0 and refunded >= total else "live"
        return ProviderItem(
            provider="acme",
            kind="order",
            item_id=str(raw["id"]),
            status="refunded" if standing == "cancelled" else "paid",
            standing=standing,
            amount=total - refunded,
            currency="USD",
            purchase_id=note.group(1) if note else None,
            created_at=timestamp(raw.get("createdOn")),
        )

    async def release(self, finding: Finding) -> str:
        return str(await self.provider.release_reservation(finding.item_id))


# -- ATM ------------------------------------------------------------------------------------------

ATM_STANDING: dict[str, Standing] = {"released": "gone", "completed": "live", "expired": "gone", "failed": "gone"}


class AtmSweep(ProviderSweep):
    """ATM documents no listing and no read of ticket holds or payments for an app (atmosphere.money/docs/api:
    the tickets.atmosphere methods create and release holds; payment listings are per payer or subscription).
    The sweep reads the holds its ended, unfulfilled purchases recorded through releaseTicketHold, whose
    answer is the hold's status (lexicon tickets.atmosphere.releaseTicketHold: released | expired | failed |
    completed): a hold still active is released by that read (the repair; ATM's answer `released` cannot tell
    it from a hold released before, so it is not counted); `completed` means the buyer paid although the
    purchase did not end FULFILLED: a payment without tickets, for a person."""

    name = "atm"

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        views, token = await self.purchases.started(
            "atm", request.since, request.until, decode_cursor(request.cursor).get("token"), request.page_size
        )
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for view in views:
            hold_id = view.provider_ids.get("order_id") or view.order_id
            if view.running or view.fulfilled or not hold_id:
                continue
            status = await self.provider.release_hold(hold_id)
            items.append(
                (
                    ProviderItem(
                        provider="atm",
                        kind="hold",
                        item_id=hold_id,
                        status=status,
                        standing="gone" if status.startswith("not found") else ATM_STANDING.get(status),
                        purchase_id=view.purchase_id,
                    ),
                    view,
                )
            )
        return items, encode_cursor({"token": token}) if token else None

    async def release(self, finding: Finding) -> str:
        return str(await self.provider.release_hold(finding.item_id))


# -- Onebox ---------------------------------------------------------------------------------------

ONEBOX_ORDERS = "/orders-mgmt-api/v1/orders"
ONEBOX_BASKETS = "/distribution-api/v1/orders"


def onebox_date(value: datetime, up: bool = False) -> str:
    """Exactly 2021-03-08T00:00:00Z ("otherwise the validation will fail"): whole seconds, the window widened."""
    value = value.astimezone(UTC)
    whole = value.replace(microsecond=0)
    if up and whole < value:
        whole = whole.fromtimestamp(whole.timestamp() + 1, UTC)
    return whole.strftime("%Y-%m-%dT%H:%M:%SZ")


def error_status(err: ApplicationError) -> tuple[int | None, str | None]:
    details = err.details[0] if err.details and isinstance(err.details[0], dict) else {}
    return details.get("status"), details.get("code")


class OneboxSweep(ProviderSweep):
    """Onebox's Orders Management API lists orders by purchase date (developer.oneboxtds.com/docs/api-orders-mgmt/
    tutorials/get-purchases-by-time-range and get-refunds-by-time-range): `GET /orders-mgmt-api/v1/orders?
    purchase_date_from=…&purchase_date_to=…&type=PURCHASE` (then `type=REFUND`). Onebox keeps no reference of
    ours: an order is matched to its purchase by its code (BoxofficeProviderOrderId). A PURCHASE order no
    fulfilled purchase accounts for is read (`GET …/orders/{code}`) to see whether its items are REFUNDED
    already; a REFUND order names the order it refunds, which for a FULFILLED purchase is a finding.
    Baskets are not listable: the sweep reads the basket each ended, unfulfilled purchase recorded and
    releases one still holding seats. *Assumed* (the tutorials show no answer): `limit`/`offset` paging, the
    answer `{data: [...], metadata: {total}}`, `purchase_date`, a REFUND's `related_original_code`, items' `state`."""

    name = "onebox"
    PHASES = ("PURCHASE", "REFUND", "baskets")

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        cursor = decode_cursor(request.cursor)
        phase = cursor.get("phase", "PURCHASE")
        if phase == "baskets":
            return await self._baskets(request, cursor)
        offset = int(cursor.get("offset", 0))
        data = await self.provider._call(
            "GET",
            ONEBOX_ORDERS,
            params={
                "purchase_date_from": onebox_date(request.since),
                "purchase_date_to": onebox_date(request.until, up=True),
                "type": phase,
                "limit": request.page_size,
                "offset": offset,
            },
        )
        raw_orders = data.get("data") if isinstance(data, dict) else None
        key = f"{phase.lower()}-offset-{offset}"
        if not isinstance(raw_orders, list):
            return [(bad_item("onebox", "order", key, data, "no `data` list of orders"), None)], self._next(phase)
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for index, raw in enumerate(raw_orders):
            items.append(
                await (self._order(raw, f"{key}-{index}") if phase == "PURCHASE" else self._refund(raw, f"{key}-{index}"))
            )
        total = (data.get("metadata") or {}).get("total")
        more = offset + len(raw_orders) < total if isinstance(total, int) else len(raw_orders) >= request.page_size
        if more and raw_orders:
            return items, encode_cursor({"phase": phase, "offset": offset + len(raw_orders)})
        return items, self._next(phase)

    def _next(self, phase: str) -> str:
        return encode_cursor({"phase": self.PHASES[self.PHASES.index(phase) + 1]})

    async def _order(self, raw: Any, key: str) -> tuple[ProviderItem, PurchaseView | None]:
        if not isinstance(raw, dict) or not raw.get("code"):
            return bad_item("onebox", "order", key, raw, "an order without `code`"), None
        code, purchased = str(raw["code"]), timestamp(raw.get("purchase_date"))
        purchase = await self.purchases.by_order("onebox", code)
        if purchase is not None and purchase.fulfilled and purchase.order_id == code:
            return self._item(raw, code, "live", purchased), purchase  # a refund of it shows in the REFUND list
        detail = await self.provider._call("GET", f"{ONEBOX_ORDERS}/{code}")  # its items' states: refunded yet?
        return self._item(detail, code, "live", purchased, item_states=True), purchase

    @staticmethod
    def _item(raw: Any, code: str, standing: Standing, purchased: datetime | None, item_states: bool = False) -> ProviderItem:
        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
        price = data.get("price") if isinstance(data.get("price"), dict) else {}
        items = [i for i in data.get("items") or [] if isinstance(i, dict)] if item_states else []
        refunded = bool(items) and all(i.get("state") == "REFUNDED" for i in items)
        status = "REFUNDED" if refunded else "CONFIRM" if standing == "live" else "refunded"
        return ProviderItem(
            provider="onebox",
            kind="order",
            item_id=code,
            status=status,
            standing="cancelled" if refunded else standing,
            amount=money((price or {}).get("total")),
            currency=(price or {}).get("currency"),
            created_at=purchased,
        )

    async def _refund(self, raw: Any, key: str) -> tuple[ProviderItem, PurchaseView | None]:
        if not isinstance(raw, dict) or not raw.get("related_original_code"):
            return bad_item("onebox", "order", key, raw, "a REFUND order without `related_original_code`"), None
        original = str(raw["related_original_code"])
        item = self._item(raw, original, "cancelled", timestamp(raw.get("purchase_date")))
        return item, await self.purchases.by_order("onebox", original)

    async def _baskets(
        self, request: SweepPageRequest, cursor: dict[str, Any]
    ) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        views, token = await self.purchases.started(
            "onebox", request.since, request.until, cursor.get("token"), request.page_size
        )
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for view in views:
            basket_id = view.provider_ids.get("basket_id")
            if view.running or view.fulfilled or not basket_id:
                continue
            items.append((await self._basket(basket_id, view), view))
        return items, encode_cursor({"phase": "baskets", "token": token}) if token else None

    async def _basket(self, basket_id: str, view: PurchaseView) -> ProviderItem:
        base = {"provider": "onebox", "kind": "basket", "item_id": basket_id, "purchase_id": view.purchase_id}
        try:
            data = await self.provider._call("GET", ONEBOX_BASKETS, basket_id)
        except ApplicationError as err:
            if error_status(err)[0] == 404:  # ORDER_NOT_FOUND: Onebox dropped the idle basket, seats free
                return ProviderItem(status="not found", standing="gone", **base)
            raise
        if not isinstance(data, dict):
            return bad_item("onebox", "basket", basket_id, data, "a basket that is not an object")
        status = data.get("status")
        status = status.get("type") if isinstance(status, dict) else status
        if status == "CONFIRM":  # an order now: the orders listing speaks for it
            return ProviderItem(status="CONFIRM", standing="gone", **base)
        held = [i for i in data.get("items") or [] if isinstance(i, dict)]
        return ProviderItem(status=f"{status} with {len(held)} items", standing="active" if held else "gone", **base)

    async def release(self, finding: Finding) -> str:
        return str(await self.provider.release_basket(finding.item_id) or f"basket {finding.item_id} held nothing")

    async def refund(self, finding: Finding) -> str:
        """Refund order items (developer.oneboxtds.com/docs/api-orders-mgmt/tutorials/refund-order-items): the
        order's items not REFUNDED yet, read first, so a repeated approval (or a retry after an unanswered
        refund) refunds nothing twice; Onebox refuses an item already REFUNDED (409 PRODUCT_STATE_INVALID)."""
        path = f"{ONEBOX_ORDERS}/{finding.item_id}"
        order = await self.provider._call("GET", path)
        items = [i for i in (order.get("items") or []) if isinstance(i, dict)] if isinstance(order, dict) else []
        left = [{"id": i["id"]} for i in items if i.get("state") != "REFUNDED" and "id" in i]
        if not left:
            return f"order {finding.item_id} already refunded"
        try:
            await self.provider._call(
                "POST",
                f"{path}/refund",
                json_body={"items": left, "type": "MANUAL", "include_surcharges": True, "include_delivery": False},
            )
        except ApplicationError as err:
            if error_status(err) != (409, "PRODUCT_STATE_INVALID"):
                raise
            return f"order {finding.item_id}: items already refunded"  # by an earlier, unanswered attempt
        return f"refunded {len(left)} items of order {finding.item_id}"


# -- Atom -----------------------------------------------------------------------------------------

ATOM_STANDING: dict[str, Standing] = {
    "fulfilled": "live",
    "cancelled": "cancelled",
    "canceled": "cancelled",
    "refunded": "cancelled",
    "failed": "gone",
    "rejected": "gone",
    "expired": "gone",
}
# Activities the purchase called with the buyer's session (an Atom order is read only by its account).
ATOM_SESSION_CALLS = ("atom.lease", "atom.preview_order", "atom.create_order", "atom.order_status", "atom.cancel_order")


class AtomSweep(ProviderSweep):
    """Atom documents no order listing (partner-docs-95q.pages.dev/guides/ordering): the sweep reads the
    status (`GET /ordering/v1/customer/orders/{id}/status`) of each order its ended purchases recorded, with
    the buyer's session the purchase used (from its history: Atom serves an order only to its account). An
    order still in progress or fulfilled for a purchase that did not end FULFILLED is an orphan (cancel:
    `DELETE /v1/customer/orders/{id}`, the purchase's own undo); a FULFILLED purchase's order Atom reads
    cancelled or refunded is a finding. A purchase that ended COMPENSATION_FAILED with a clientRequestId and
    no order id (DUPLICATE_CLIENT_REQUEST_ID: an order exists, id unknown) is an `unknown_order` item.
    *Assumed*: any status but the final ones is in progress (as activities/atom.py)."""

    name = "atom"

    async def items(self, request: SweepPageRequest) -> tuple[list[tuple[ProviderItem, PurchaseView | None]], str | None]:
        views, token = await self.purchases.started(
            "atom", request.since, request.until, decode_cursor(request.cursor).get("token"), request.page_size
        )
        items: list[tuple[ProviderItem, PurchaseView | None]] = []
        for view in views:
            if view.running:
                continue
            order_id = view.provider_ids.get("order_id") or view.order_id
            if order_id:
                items.append((await self._order(order_id, view), view))
            elif view.state == PurchaseState.COMPENSATION_FAILED and view.provider_ids.get("client_request_id"):
                key = view.provider_ids["client_request_id"]
                items.append(
                    (
                        ProviderItem(
                            provider="atom",
                            kind="order",
                            item_id=key,
                            status="unknown",
                            standing="unknown",
                            purchase_id=view.purchase_id,
                        ),
                        view,
                    )
                )
        return items, encode_cursor({"token": token}) if token else None

    async def _order(self, order_id: str, view: PurchaseView) -> ProviderItem:
        session = await self.session(view.workflow_id)
        if session is None:
            return bad_item("atom", "order", order_id, None, "no buyer session in the purchase's history to read it with")
        try:
            data = await self.provider._call("GET", f"/ordering/v1/customer/orders/{order_id}/status", session)
        except ApplicationError as err:
            status, code = error_status(err)
            if status in (401, 403, 404):  # the buyer's token lapsed, or Atom does not show it to that account
                return bad_item(
                    "atom",
                    "order",
                    order_id,
                    {"status": status, "code": code},
                    "the order could not be read with the purchase's session; look it up at Atom",
                )
            raise
        state = data.get("orderStatus") if isinstance(data, dict) else None
        if not isinstance(state, str):
            return bad_item("atom", "order", order_id, data, "a status without `orderStatus`")
        return ProviderItem(
            provider="atom",
            kind="order",
            item_id=order_id,
            status=state,
            standing=ATOM_STANDING.get(state.lower(), "live"),
            purchase_id=view.purchase_id,
        )

    async def session(self, workflow_id: str) -> ProviderSession | None:
        """The session the purchase called Atom with: the first argument of its first call that took one."""
        handle = self.purchases.client.get_workflow_handle(workflow_id)
        async for event in handle.fetch_history_events():
            scheduled = event.activity_task_scheduled_event_attributes
            if (
                event.HasField("activity_task_scheduled_event_attributes")
                and scheduled.activity_type.name in ATOM_SESSION_CALLS
                and scheduled.input.payloads
            ):
                [session] = await self.purchases.client.data_converter.decode(scheduled.input.payloads[:1], [ProviderSession])
                return session if isinstance(session, ProviderSession) else None
        return None

    async def cancel(self, finding: Finding) -> str:
        session = await self.session(f"purchase-{finding.purchase_id}") if finding.purchase_id else None
        if session is None:
            raise ApplicationError(
                f"no buyer session to cancel Atom order {finding.item_id} with: cancel it at Atom",
                type="INVALID_REQUEST",
                non_retryable=True,
            )
        cancelled = await self.provider.cancel_order(session, finding.item_id)
        return f"order {cancelled.order_id} {cancelled.status}"


SWEEPS: dict[str, type[ProviderSweep]] = {
    "tevo": TevoSweep,
    "acme": AcmeSweep,
    "atm": AtmSweep,
    "onebox": OneboxSweep,
    "atom": AtomSweep,
}


def provider_sweeps(providers: Sequence[Any], client: Client) -> dict[str, ProviderSweep]:
    return {p.name: SWEEPS[p.name](p, client) for p in providers if p.name in SWEEPS}


def attention_attributes(finding: Finding) -> TypedSearchAttributes:
    """What the item upserts on its first finding, set at its start too: `attention list` run right after a
    sweep shows whole rows (visibility lists a new workflow before its first task has run)."""
    pairs = [
        SearchAttributePair(STATE, str(NEEDS_ATTENTION)),
        SearchAttributePair(PROVIDER, finding.provider),
        SearchAttributePair(ATTENTION_KIND, str(finding.kind)),
        SearchAttributePair(PROVIDER_ORDER_ID, finding.item_id),
    ]
    if finding.purchase_id:
        pairs.append(SearchAttributePair(PURCHASE_ID, finding.purchase_id))
    if finding.amount is not None:
        pairs.append(SearchAttributePair(AMOUNT, f"{finding.amount} {finding.currency or ''}".strip()))
    return TypedSearchAttributes(pairs)


class SweepActivities:
    """The sweep's activities that talk to Temporal: attention items (the workflows' queue) and approvals
    (where the provider's calls run: its own queue when it has one, whose workers alone hold its credentials)."""

    def __init__(self, client: Client, task_queue: str, sweeps: dict[str, ProviderSweep]) -> None:
        self.client = client
        self.task_queue = task_queue
        self.sweeps = sweeps

    def all(self) -> list[Any]:
        return [self.open_attention, *self.approvals()]

    def approvals(self) -> list[Any]:
        return [self.cancel, self.refund]

    @activity.defn(name="sweep.open_attention")
    async def open_attention(self, findings: list[Finding]) -> int:
        """Opens each finding's attention item, or adds the observation to the open one (signal-with-
        start). An item an operator already closed stays closed (REJECT_DUPLICATE): answered once."""
        opened = 0
        for finding in findings:
            try:
                await self.client.start_workflow(
                    "ReconcileWorkflow",
                    finding.attention_id,
                    id=finding.attention_id,
                    task_queue=self.task_queue,
                    start_signal="finding",
                    start_signal_args=[finding],
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    search_attributes=attention_attributes(finding),
                    static_summary=f"{finding.provider} {finding.kind}: {finding.item_kind} {finding.item_id}",
                )
            except WorkflowAlreadyStartedError:
                continue  # decided already
            opened += 1
            log.info(
                "sweep finding sent to its attention item",
                provider=finding.provider,
                kind=finding.kind,
                item_id=finding.item_id,
                purchase_id=finding.purchase_id,
                proposed_action=finding.proposed_action,
            )
        return opened

    @activity.defn(name="sweep.cancel")
    async def cancel(self, finding: Finding) -> str:
        sweep = self.sweeps.get(finding.provider)
        if sweep is None:
            raise ApplicationError(f"{finding.provider} is not served here", type="PROVIDER_NOT_CONFIGURED", non_retryable=True)
        if finding.item_kind in ("hold", "basket"):
            return await sweep.release(finding)
        return await sweep.cancel(finding)

    @activity.defn(name="sweep.refund")
    async def refund(self, finding: Finding) -> str:
        """ACME: the RefundWorkflow of `boxoffice orders refund` (one per order: asked again, the same refund).
        Others: the provider's refund call (Onebox), where one exists."""
        if finding.provider != "acme":
            sweep = self.sweeps.get(finding.provider)
            if sweep is None:
                raise ApplicationError(
                    f"{finding.provider} is not served here", type="PROVIDER_NOT_CONFIGURED", non_retryable=True
                )
            return await sweep.refund(finding)
        activity.heartbeat()
        request = RefundRequest(order_id=finding.item_id, notes=f"refunded by boxoffice: {finding.kind}"[:500])
        result = await purchases.refund(self.client, request, self.task_queue)
        return f"refunded {result.model_dump_json()}"[:500]
