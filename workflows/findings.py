"""What the reconciliation sweep reads at a provider, what it finds, and the attention items an
operator decides on (workflows/sweep.py, workflows/reconcile.py, activities/sweep.py)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import Field

from workflows.models import AtmEvent, Request, Response

ItemKind = Literal["order", "hold", "basket", "payment"]
# What an item means for money or seats, whatever the provider calls its state:
# live: an order or payment that holds the buyer's money (pending, accepted, confirmed, paid, processing);
# active: a hold or basket that holds seats; cancelled: cancelled or refunded; gone: expired, released, failed.
Standing = Literal["live", "active", "cancelled", "gone"]
Action = Literal["cancel", "refund", "release", "none"]


class FindingKind(StrEnum):
    # An order or payment no fulfilled purchase accounts for: none names it, its purchase ended
    # without FULFILLED, or the fulfilled purchase has another order (a re-run's second order).
    ORPHAN_ORDER = "orphan_order"
    # A FULFILLED purchase whose order the provider cancelled or refunded: the buyer's tickets may be void.
    CANCELLED_AFTER_FULFILMENT = "cancelled_after_fulfilment"
    # A hold or basket still active for an ended purchase (or none): released by the sweep itself;
    # a finding for a person only when the release fails.
    ACTIVE_HOLD = "active_hold"
    # ATM: a hold that was paid for (status completed) while its purchase did not end FULFILLED.
    PAYMENT_WITHOUT_TICKETS = "payment_without_tickets"
    # The provider answered what its docs do not describe (missing fields, an unknown state).
    BAD_ANSWER = "bad_answer"
    # ATM's webhook events for a purchase that is not running, or changing money already taken.
    PROVIDER_EVENT = "provider_event"


class ProviderItem(Response):
    """One thing the provider holds for this account, as a sweep page lists it."""

    provider: str
    kind: ItemKind
    item_id: str
    status: str  # the provider's own word for its state
    standing: Standing | None = None  # None: a state the docs do not list (a BAD_ANSWER finding)
    amount: Decimal | None = None
    currency: str | None = None
    purchase_id: str | None = None  # from reference / notes / metadata, where the provider keeps one
    created_at: datetime | None = None
    problem: str | None = None  # what is wrong with the provider's answer for this item


class Finding(Response):
    provider: str
    kind: FindingKind
    item_kind: ItemKind
    item_id: str
    status: str
    purchase_id: str | None = None
    purchase_state: str | None = None  # the purchase's BoxofficeState; None: no purchase names the item
    amount: Decimal | None = None
    currency: str | None = None
    proposed_action: Action = "none"
    detail: str = ""
    observed_at: datetime | None = None  # set by the sweep (workflow time)
    sweep_id: str | None = None

    @property
    def attention_id(self) -> str:
        """One attention item per finding, however often sweeps see it."""
        return attention_workflow_id(self.provider, self.kind, self.item_id)


def attention_workflow_id(provider: str, kind: str, item_id: str) -> str:
    return f"attention-{provider}-{kind}-{re.sub(r'[^A-Za-z0-9_.-]', '_', item_id)}"


class SweepTotals(Response):
    pages: int = 0
    seen: int = 0
    findings: int = 0
    repaired: int = 0
    runs: int = 1


class SweepRequest(Request):
    """One sweep of one provider over [until - window, until]. `cursor` and `totals` carry a sweep
    across continue-as-new (a fresh run every `pages_per_run` pages keeps histories small)."""

    provider: Literal["acme", "atm", "atom", "onebox", "tevo"]
    window_seconds: float = Field(default=48 * 3600, gt=0)
    until: datetime | None = None  # set by the first run (workflow time)
    cursor: str | None = None
    pages_per_run: int = Field(default=20, ge=1, le=500)
    page_size: int = Field(default=50, ge=1, le=1000)
    totals: SweepTotals = SweepTotals()


class SweepPageRequest(Request):
    provider: str
    since: datetime
    until: datetime
    cursor: str | None = None
    page_size: int = 50


class SweepPage(Response):
    """What one page of the provider's listing holds that nobody accounts for, and where the next starts."""

    seen: int = 0
    findings: list[Finding] = Field(default_factory=list)
    repairs: list[Finding] = Field(default_factory=list)  # safe to do at once: releases
    next_cursor: str | None = None


class SweepResult(Response):
    provider: str
    since: datetime
    until: datetime
    totals: SweepTotals
    repaired: list[str] = Field(default_factory=list)  # the last run's, "kind item_id: outcome"


class AttentionDecision(Request):
    """An operator's answer to an attention item: `approve` takes `action` (cancel or refund), `dismiss` a note."""

    action: Literal["cancel", "refund"] | None = None
    note: str = Field(default="", max_length=500)
    operator: str | None = Field(default=None, max_length=100)


AttentionState = Literal["OPEN", "APPROVED", "DISMISSED", "RESOLVED"]


class AttentionView(Response):
    """An attention item as `boxoffice attention show` and the `item` query show it."""

    id: str
    subject: str
    state: AttentionState
    provider: str | None = None
    kind: str | None = None
    item_id: str | None = None
    purchase_id: str | None = None
    amount: Decimal | None = None
    proposed_action: Action = "none"
    observations: list[Finding] = Field(default_factory=list)
    times_seen: int = 0
    events: list[AtmEvent] = Field(default_factory=list)
    decision: AttentionDecision | None = None
    outcome: str | None = None
