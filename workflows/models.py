"""The contract of boxoffice: what backend services send, what they get back, what they can query.

Shared by workflows and activities. Payloads are plain JSON through the pydantic data converter, so
field names here are the wire names other languages use.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    field_validator,
    model_validator,
)
from temporalio.common import SearchAttributeKey

WORKFLOW_TYPE = "PurchaseWorkflow"
DEFAULT_TASK_QUEUE = "boxoffice"

PROVIDER = SearchAttributeKey.for_keyword("BoxofficeProvider")
STATE = SearchAttributeKey.for_keyword("BoxofficeState")
PROVIDER_ORDER_ID = SearchAttributeKey.for_keyword("BoxofficeProviderOrderId")


def purchase_workflow_id(purchase_id: str) -> str:
    return f"purchase-{purchase_id}"


def request_fingerprint(request: BaseModel) -> str:
    """sha256 of a validated request: the same for the same purchase however its JSON was written
    (a purchase id reused with another request is refused by it). Without the ACME reCAPTCHA token:
    a start retried with a fresh one is the same purchase (and a request without one keeps the
    fingerprint it had before the field existed)."""
    return hashlib.sha256(request.model_dump_json(exclude={"recaptcha_token"}).encode()).hexdigest()


def provider_task_queue(task_queue: str, provider: str) -> str:
    """Where a rate-limited provider's activities run (`boxoffice-atom`, ...): a queue of their own,
    limited by the server. Unlimited providers' activities share the workflow's queue, in the same
    worker process (about half the latency, see bench/README.md)."""
    return f"{task_queue}-{provider}"


class Request(BaseModel):
    # Unknown fields are rejected so a misspelt option fails loudly instead of being ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Buyer(Request):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)
    first_name: str = Field(min_length=1, max_length=100)
    last_name: str = Field(min_length=1, max_length=100)
    phone: str | None = Field(default=None, max_length=32)


class PurchaseBase(Request):
    purchase_id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
    buyer: Buyer
    # auto: commit as soon as the seats are held; manual: hold, then wait for the `confirm` update.
    confirmation: Literal["auto", "manual"] = "auto"


class AtomItem(Request):
    product_id: str = Field(min_length=1)
    offer_id: str = Field(min_length=1)
    # Reserved seating names the seats; otherwise give a quantity and Atom's recommended seats are taken.
    seat_ids: list[str] = Field(default_factory=list, max_length=20)
    quantity: int | None = Field(default=None, ge=1, le=20)

    @model_validator(mode="after")
    def _seats_or_quantity(self) -> AtomItem:
        if not self.seat_ids and self.quantity is None:
            raise ValueError("give seat_ids or a quantity")
        if self.seat_ids and self.quantity not in (None, len(self.seat_ids)):
            raise ValueError("quantity must equal the number of seat_ids")
        if len(set(self.seat_ids)) != len(self.seat_ids):
            raise ValueError("seat_ids must be distinct")
        return self

    @property
    def count(self) -> int:
        return len(self.seat_ids) or self.quantity or 0


class AtomLogin(Request):
    """A returning Atom customer; without it the purchase uses a guest account."""

    identity_value: str = Field(min_length=1)
    password: str = Field(min_length=1, repr=False)


class AtomPurchaseRequest(PurchaseBase):
    provider: Literal["atom"]
    showtime_id: str = Field(min_length=1)
    items: list[AtomItem] = Field(min_length=1, max_length=10)
    promotions: list[str] = Field(default_factory=list)
    login: AtomLogin | None = None

    @field_validator("items")
    @classmethod
    def _distinct_seats(cls, items: list[AtomItem]) -> list[AtomItem]:
        seats = [s for item in items for s in item.seat_ids]
        if len(set(seats)) != len(seats):
            raise ValueError("a seat appears in more than one item")
        return items


class OneboxPurchaseRequest(PurchaseBase):
    provider: Literal["onebox"]
    session_id: int = Field(ge=1)
    # Numbered seats by id; or, without them, `quantity` seats of `price_type_id` chosen by Onebox.
    seat_ids: list[int] = Field(default_factory=list, max_length=20)
    price_type_id: int | None = Field(default=None, ge=0)
    quantity: int | None = Field(default=None, ge=1, le=20)

    @model_validator(mode="after")
    def _seats_or_auto(self) -> OneboxPurchaseRequest:
        if self.seat_ids and (self.price_type_id is not None or self.quantity is not None):
            raise ValueError("give seat_ids, or price_type_id with quantity, not both")
        if not self.seat_ids and (self.price_type_id is None or self.quantity is None):
            raise ValueError("give seat_ids, or price_type_id with quantity")
        if len(set(self.seat_ids)) != len(self.seat_ids):
            raise ValueError("seat_ids must be distinct")
        return self


class TevoPayment(Request):
    """A stored card (`credit_card_id`) or a Stripe `token`; TEvo computes the amount."""

    credit_card_id: int | None = None
    token: str | None = Field(default=None, repr=False)
    address_id: int | None = None

    @model_validator(mode="after")
    def _card_or_token(self) -> TevoPayment:
        if (self.credit_card_id is None) == (self.token is None):
            raise ValueError("give exactly one of credit_card_id and token")
        return self


class TevoDelivery(Request):
    type: str = "Eticket"
    email_address_id: int | None = None
    cost: Decimal = Decimal(0)


class TevoPurchaseRequest(PurchaseBase):
    provider: Literal["tevo"]
    ticket_group_id: int = Field(ge=1)
    quantity: int = Field(ge=1, le=50)
    # The unit price the buyer saw: a group now priced otherwise fails PRICE_CHANGED.
    price: Decimal = Field(gt=0)
    payment: TevoPayment
    delivery: TevoDelivery = TevoDelivery()
    service_fee: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    discount: Decimal = Decimal(0)
    promo_code: str | None = None
    instructions: str | None = Field(default=None, max_length=200)
    session_id: str | None = None  # Riskified session


class AtmItem(Request):
    tier_id: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=20)


class AtmPurchaseRequest(PurchaseBase):
    """The buyer pays on ATM's hosted checkout (`status.provider_ids.checkout_url`): that payment
    is the confirmation, so `confirmation` is not used and the `confirm` update is refused."""

    provider: Literal["atm"]
    event_id: str = Field(min_length=1)
    items: list[AtmItem] = Field(min_length=1, max_length=20)
    return_url: str | None = None
    cancel_url: str | None = None


class AcmeItem(Request):
    event_id: str = Field(min_length=1)
    ticketing_type_id: str = Field(min_length=1)
    quantity: int = Field(ge=1, le=50)


# Google's reCAPTCHA tokens are some hundreds of characters; a bound against garbage.
RECAPTCHA_TOKEN_CHARS = 4096


class AcmePurchaseRequest(PurchaseBase):
    provider: Literal["acme"]
    items: list[AcmeItem] = Field(min_length=1, max_length=20)
    # ACME requires the buyer's IP on checkout (x-acme-browser-ip).
    browser_ip: IPvAnyAddress
    # The card token to charge; a `confirm` update's payment_reference replaces it.
    payment_token: str | None = Field(default=None, repr=False)
    # The Google reCAPTCHA token the buyer's browser made (ACME requires one on every B2C checkout);
    # a `confirm` update's recaptcha_token replaces it. Optional here so runs started before it replay.
    recaptcha_token: str | None = Field(default=None, repr=False, max_length=RECAPTCHA_TOKEN_CHARS)


PurchaseRequest = Annotated[
    AtomPurchaseRequest | OneboxPurchaseRequest | TevoPurchaseRequest | AtmPurchaseRequest | AcmePurchaseRequest,
    Field(discriminator="provider"),
]


class PurchaseState(StrEnum):
    HOLDING = "HOLDING"
    AWAITING_CONFIRMATION = "AWAITING_CONFIRMATION"
    COMMITTING = "COMMITTING"
    AWAITING_FULFILLMENT = "AWAITING_FULFILLMENT"
    FULFILLED = "FULFILLED"
    FAILED = "FAILED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    # An undo failed: retried while its failure may pass (then the purchase ends as it would have),
    # else an operator must act. `compensations` says which and why.
    COMPENSATION_FAILED = "COMPENSATION_FAILED"
    # Cannot end by itself and must not be given up (ATM paid, no tickets within the budget): still
    # running, waiting for what is owed, until it arrives or an operator sends `resolve`.
    NEEDS_ATTENTION = "NEEDS_ATTENTION"

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        PurchaseState.FULFILLED,
        PurchaseState.FAILED,
        PurchaseState.EXPIRED,
        PurchaseState.CANCELLED,
        PurchaseState.COMPENSATION_FAILED,
    }
)


class FailureReason(StrEnum):
    """Machine-readable reasons; also the `type` of the ApplicationErrors activities raise."""

    SEAT_UNAVAILABLE = "SEAT_UNAVAILABLE"
    PRICE_CHANGED = "PRICE_CHANGED"
    ORDER_REJECTED = "ORDER_REJECTED"
    OFFER_UNAVAILABLE = "OFFER_UNAVAILABLE"
    HOLD_EXPIRED = "HOLD_EXPIRED"
    FULFILLMENT_TIMEOUT = "FULFILLMENT_TIMEOUT"
    FULFILLMENT_FAILED = "FULFILLMENT_FAILED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    DUPLICATE_REQUEST = "DUPLICATE_REQUEST"
    PROVIDER_REJECTED = "PROVIDER_REJECTED"
    PROVIDER_BAD_RESPONSE = "PROVIDER_BAD_RESPONSE"
    PROVIDER_ERROR = "PROVIDER_ERROR"
    CANCELLED = "CANCELLED"
    # The worker lacks the provider's URL or credentials (README, Configuration).
    PROVIDER_NOT_CONFIGURED = "PROVIDER_NOT_CONFIGURED"
    # An ACME checkout without the buyer's Google reCAPTCHA token, which ACME requires: send one.
    RECAPTCHA_REQUIRED = "RECAPTCHA_REQUIRED"


class Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReceiptLine(Response):
    name: str
    quantity: int
    unit_price: Decimal
    subtotal: Decimal


class Receipt(Response):
    subtotal: Decimal
    fees: Decimal = Decimal(0)
    tax: Decimal = Decimal(0)
    total: Decimal
    currency: str
    lines: list[ReceiptLine] = Field(default_factory=list)


class Ticket(Response):
    seat: str
    # None where the provider delivers tickets later as files (TEvo e-tickets).
    barcode: str | None
    ticket_type: str | None = None
    price: Decimal | None = None
    booking_id: str | None = None


class EventInfo(Response):
    title: str | None = None
    venue: str | None = None
    starts_at: datetime | None = None


class Hold(Response):
    """Seats held at the provider until `expires_at` (computed from the request's send time)."""

    expires_at: datetime
    seat_ids: list[str] = Field(default_factory=list)
    # The provider's ids of the held items, where releasing them needs those (Onebox).
    item_ids: list[str] = Field(default_factory=list)
    # Earlier attempts of the hold call whose outcome is unknown and which the provider cannot find
    # again (ACME lists no reservations): each may hold seats too, at most until `expires_at`.
    unknown_attempts: int = 0


class PreConfirmedOrder(Response):
    """An order priced and frozen for payment (Onebox PRE_CONFIRM): its code is its identity."""

    code: str
    receipt: Receipt | None = None
    hold: Hold


class ProviderSession(Response):
    """The buyer's account at the provider. The token is a secret: never logged."""

    token: str = Field(repr=False)
    account_id: str
    # Earlier attempts of the call whose outcome is unknown: each may have made an account nobody
    # can find again (Atom's guest accounts: no lookup, no delete documented).
    unknown_attempts: int = 0


class ProviderOrder(Response):
    order_id: str
    event_id: str | None = None


class OrderProgress(Response):
    status: str
    fulfilled: bool
    reason: str | None = None
    reason_code: str | None = None


class OrderSummary(Response):
    order_id: str
    status: str
    fulfilled: bool
    receipt: Receipt | None = None
    tickets: list[Ticket] = Field(default_factory=list)


class OrderCancellation(Response):
    order_id: str
    status: str
    refund_amount: Decimal | None = None


class AtmHold(Response):
    hold_id: str
    checkout_url: str
    # The hold's `token`: ATM's public payment events name the hold by it (`checkoutToken`).
    checkout_token: str | None = None
    hold: Hold
    amount: Decimal
    currency: str
    # The hold's `environment` (test|live): an event from the other one is not about this hold.
    environment: str | None = None


class AtmEvent(Response):
    """A verified ATM webhook, as the receiver signals it to the purchase (`atm_event`)."""

    delivery_id: str
    type: str
    hold_id: str | None = None
    tickets: list[Ticket] = Field(default_factory=list)
    reason: str | None = None
    # The stable event id (`evt_…`) of ATM's public envelope: the same on every delivery of the event.
    event_id: str | None = None
    payment_id: str | None = None
    checkout_token: str | None = None
    # What the event says of the payment or ticket, e.g. `needs_response` for a dispute.
    status: str | None = None
    # What the event says was paid, and where (the envelope's `environment`), when it says so.
    amount_cents: int | None = None
    currency: str | None = None
    environment: str | None = None
    # Why the purchase did not take it as proof (set by the purchase, shown in `suspicious_events`).
    suspicious: str | None = None

    @property
    def kind(self) -> str:
        # ATM's fixtures spell types three ways: tickets.issued / tickets_issued / tickets-issued.
        return self.type.replace("_", ".").replace("-", ".")

    @property
    def identity(self) -> str:
        """What makes two deliveries the same event: the event id, else (fixture envelope) the delivery id."""
        return self.event_id or self.delivery_id


class PurchasePolicy(Response):
    """Timing a provider's settings give the workflow (workflows cannot read the environment)."""

    poll_interval_seconds: float = 2
    poll_budget_seconds: float = 10
    # The confirmation wait ends this long before the hold expires, so commit still finds it held.
    hold_margin_seconds: float = 30
    # Providers without holds (TEvo): how long a buyer may take to confirm.
    confirm_window_seconds: float = 600
    # Providers whose payment events may trail the hold's expiry (ATM): how long to wait past it.
    expiry_grace_seconds: float = 0
    # How long one activity attempt may run before Temporal retries it elsewhere (e.g. its
    # worker died): a little more than the provider's HTTP timeouts allow.
    call_timeout_seconds: float = 30
    # The provider's own (rate-limited) task queue, or None for the workflow's.
    activity_task_queue: str | None = None
    # A rate-limited provider's reads and rerun-safe writes may run as local activities: the worker
    # deciding it holds a share of the limit, which every request waits on (activities/ratelimit.py).
    local_calls: bool = False


class Failure(Response):
    reason: FailureReason
    message: str
    provider_code: str | None = None
    provider_status: str | None = None
    trace_id: str | None = None


class PurchaseFailed(Exception):
    """Raised inside a provider sequence: ends the purchase in `state` (FAILED or EXPIRED) once
    the saga has compensated."""

    def __init__(self, state: PurchaseState, failure: Failure) -> None:
        super().__init__(failure.message)
        self.state = state
        self.failure = failure


class Compensation(Response):
    action: str
    ok: bool
    detail: str | None = None
    # A failed undo boxoffice keeps trying (its failure may pass); False once settled or given up.
    retrying: bool = False


class PurchaseStatus(Response):
    purchase_id: str
    provider: str
    state: PurchaseState
    step: str
    steps_done: list[str] = Field(default_factory=list)
    hold_expires_at: datetime | None = None
    provider_ids: dict[str, str] = Field(default_factory=dict)
    event: EventInfo | None = None
    receipt: Receipt | None = None
    failure: Failure | None = None
    cancel_reason: str | None = None
    tickets: list[Ticket] = Field(default_factory=list)
    compensations: list[Compensation] = Field(default_factory=list)
    request_sha256: str | None = None
    # ATM events about money already taken (refunded, disputed, tickets voided or refunded).
    money_events: list[AtmEvent] = Field(default_factory=list)
    # ATM payment or ticket events the purchase did not believe (they disagree with its hold, or ATM
    # says the hold is unpaid): each raised attention; none moved the purchase.
    suspicious_events: list[AtmEvent] = Field(default_factory=list)


class PurchaseResult(Response):
    purchase_id: str
    provider: str
    state: PurchaseState
    provider_order_id: str | None = None
    provider_status: str | None = None
    event: EventInfo | None = None
    receipt: Receipt | None = None
    tickets: list[Ticket] = Field(default_factory=list)
    failure: Failure | None = None
    compensations: list[Compensation] = Field(default_factory=list)
    # ATM events about money already taken (refunded, disputed, tickets voided or refunded).
    money_events: list[AtmEvent] = Field(default_factory=list)
    # ATM payment or ticket events the purchase did not believe (they disagree with its hold, or ATM
    # says the hold is unpaid): each raised attention; none moved the purchase.
    suspicious_events: list[AtmEvent] = Field(default_factory=list)


class ConfirmRequest(Request):
    """The buyer's go-ahead. `accepted_total`, when given, must equal the previewed total."""

    accepted_total: Decimal | None = None
    payment_reference: str | None = Field(default=None, max_length=200)
    # ACME: a fresh reCAPTCHA token (one lives two minutes), sent on checkout instead of the request's.
    recaptcha_token: str | None = Field(default=None, repr=False, max_length=RECAPTCHA_TOKEN_CHARS)


class CancelRequest(Request):
    reason: str = Field(default="cancelled by caller", max_length=500)


# ACME's two refund reasons (Refund Input `incidentReasonCode`, developers.acmeticketing.com order-refund).
RefundReason = Literal["Cancelled Event", "Miscellaneous"]
# The Order fields `boxoffice orders update` changes (the Order object's contact fields and notes).
ORDER_CONTACT_FIELDS = frozenset({"email", "contactFirstName", "contactLastName", "phoneNumber", "zipCode", "notes"})


class RefundRequest(Request):
    """Refund an ACME order, whole (no items) or by order item."""

    order_id: str = Field(min_length=1)
    # Miscellaneous: a buyer's or operator's cancellation is not a cancelled event.
    reason_code: RefundReason = "Miscellaneous"
    notes: str = Field(default="refunded by boxoffice", max_length=500)
    no_email: bool = False
    # order item id → quantity; empty refunds every item in full.
    items: dict[str, int] = Field(default_factory=dict)
    # Tells refunds of one order apart (workflow `refund-{order_id}-{refund_id}`); unset, the order's
    # one refund (`refund-{order_id}`).
    refund_id: str | None = Field(default=None, min_length=1, max_length=100)
    # The tickets (uuids) this refund repays, chosen once from `items` by RefundWorkflow: a retry
    # whose earlier answer was lost finds them refunded instead of refunding others.
    tickets: list[str] = Field(default_factory=list)

    @field_validator("reason_code", mode="before")
    @classmethod
    def _recorded_default(cls, value: object) -> object:
        # The default before 2026-12 (ACME refuses it): refunds recorded with it still run.
        return "Miscellaneous" if value == "CUSTOMER_REQUEST" else value


class RefundResult(Response):
    order_id: str
    # What the order has refunded in all, and its total.
    refunded: Decimal
    total: Decimal
    already_refunded: bool = False
    # This refund, from ACME's answer (`incidentNumber`, `refundAmount`); None when already refunded.
    incident_number: str | None = None
    amount: Decimal | None = None


class OrderChange(Request):
    """An ACME order's update (`changes`: Order field → value) or deletion, run by OrderChangeWorkflow."""

    order_id: str = Field(min_length=1)
    changes: dict[str, str] = Field(default_factory=dict)
    delete: bool = False

    @model_validator(mode="after")
    def _one_change(self) -> OrderChange:
        if bool(self.changes) == self.delete:
            raise ValueError("give either changes or delete")
        if unknown := sorted(set(self.changes) - ORDER_CONTACT_FIELDS):
            raise ValueError(f"not a changeable order field: {', '.join(unknown)}")
        return self


class OrderChangeResult(Response):
    order_id: str
    deleted: bool = False
    order: OrderRecord | None = None


class OrdersQuery(Request):
    """A read of ACME orders for operators, run by the worker (OrdersWorkflow)."""

    email: str | None = None
    phone: str | None = None
    event_id: str | None = None
    order_id: str | None = None
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=100, ge=-1, le=1000)

    @model_validator(mode="after")
    def _one_criterion(self) -> OrdersQuery:
        if sum(v is not None for v in (self.email or None, self.phone or None, self.event_id, self.order_id)) != 1:
            raise ValueError("give exactly one of email, phone, event_id, order_id")
        return self


class OrderRecord(Response):
    order_id: str
    order_number: str | None = None
    email: str | None = None
    total: Decimal | None = None
    refunded: Decimal | None = None
    created_on: str | None = None
    tickets: list[Ticket] = Field(default_factory=list)


class OrdersPage(Response):
    orders: list[OrderRecord]
    page: int = 1
    has_more: bool = False
