"""ATM Tickets XRPC (../shared/provider-docs/atm-tickets-overview.txt, FACTS.md): create and release
ticket holds, and read whether a hold is paid. Payment and issuance arrive as signed webhooks
(workers/webhooks.py), which the purchase takes as hints: before money moves it asks ATM.

The read: ATM documents no query of a ticket hold (the lexicons under atmosphere.money/.well-known/
atproto-lexicon/ have only createTicketHold and releaseTicketHold). It documents "status polling"
(atmosphere.money/docs/payment-lifecycle, /docs/checkout) through `network.attested.payment.status`, a
query by checkout token answering `{"status": "pending" | "completed" | "failed", "ref"?}`
(atmosphere.money/docs/api, lexicon network.attested.payment.status). *Assumed*: it answers for the
`token` createTicketHold returns (the checkout token ATM's payment events echo as `checkoutToken`), with
the app's service-auth like the other calls.

*Assumed*: XRPC error names for sold-out tiers and unknown events (`TierSoldOut`,
`InsufficientInventory`, `EventNotFound`); the docs name only `TicketHoldNotFound`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.http import ActivitiesPerSecond, ProviderHttp, ProviderTimestamp, attempt_timeout, own_queue
from workflows.models import (
    AtmHold,
    AtmPurchaseRequest,
    FailureReason,
    Hold,
    PurchasePolicy,
)

CREATE_HOLD = "/xrpc/tickets.atmosphere.createTicketHold"
RELEASE_HOLD = "/xrpc/tickets.atmosphere.releaseTicketHold"
PAYMENT_STATUS = "/xrpc/network.attested.payment.status"
HOLD_NOT_FOUND = "TicketHoldNotFound"
CODES = {
    "TierSoldOut": FailureReason.SEAT_UNAVAILABLE,
    "InsufficientInventory": FailureReason.SEAT_UNAVAILABLE,
    "EventNotFound": FailureReason.OFFER_UNAVAILABLE,
    HOLD_NOT_FOUND: FailureReason.HOLD_EXPIRED,
}


class AtmSettings(BaseSettings):
    """From BOXOFFICE_ATM_*. No defaults for where and who: unset (or empty), the worker does not
    serve ATM; `boxoffice dev` sets the simulator's (workers/devstack.py)."""

    model_config = SettingsConfigDict(env_prefix="BOXOFFICE_ATM_")
    required: ClassVar[tuple[str, ...]] = ("base_url", "service_token")

    base_url: str = ""  # the XRPC broker
    service_token: SecretStr = SecretStr("")  # service-auth JWT
    environment: str = Field(default="test", pattern="^(test|live)$")
    timeout_seconds: float = Field(default=10, gt=0)
    # Activity tasks per second the provider's task queue hands out, across all workers. Unset: no limit.
    activities_per_second: ActivitiesPerSecond = None
    # After payment, how long ATM may take to issue the tickets before the purchase fails.
    issue_budget_seconds: float = Field(default=600, gt=0)
    # How long past `expiresAt` a payment event may still arrive (webhooks trail ATM's clock) before
    # the hold is released; the release's answer then still says whether it was paid.
    expiry_grace_seconds: float = Field(default=120, ge=0)


class Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class CreateHoldResponse(Wire):
    hold_id: str
    token: str | None = None  # the checkout token ATM's public payment events carry as `checkoutToken`
    url: str
    environment: str | None = None
    expires_at: ProviderTimestamp
    amount_cents: int
    currency: str
    reused: bool = False


class ReleasedHold(Wire):
    id: str | None = None
    status: str


class ReleaseHoldResponse(Wire):
    """The lexicon and SDK answer `{"hold": {"id", "status"}}`; a flat `{"status"}` is accepted too."""

    hold: ReleasedHold | None = None
    status: str | None = None

    @property
    def hold_status(self) -> str | None:
        return self.hold.status if self.hold is not None else self.status


class PaymentStatusResponse(Wire):
    status: str


class AtmActivities:
    name = "atm"

    def __init__(self, settings: AtmSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.http = ProviderHttp(
            "atm",
            settings.base_url,
            timeout=settings.timeout_seconds,
            secrets=[settings.service_token.get_secret_value()],
            transport=transport,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def all(self) -> list[Any]:
        return [self.policy, self.create_hold, self.release_hold, self.payment_status]

    async def _xrpc(self, path: str, body: dict[str, Any]) -> Any:
        headers = {"authorization": f"Bearer {self.settings.service_token.get_secret_value()}"}
        return await self.http.request("POST", path, headers=headers, json_body=body, codes=CODES)

    @activity.defn(name="atm.policy")
    async def policy(self) -> PurchasePolicy:
        return PurchasePolicy(
            call_timeout_seconds=attempt_timeout(self.settings.timeout_seconds),
            activity_task_queue=own_queue(self.name, self.settings.activities_per_second),
            local_calls=self.http.local_calls,
            poll_budget_seconds=self.settings.issue_budget_seconds,
            hold_margin_seconds=0,
            expiry_grace_seconds=self.settings.expiry_grace_seconds,
        )

    @activity.defn(name="atm.create_hold")
    async def create_hold(self, request: AtmPurchaseRequest, workflow_id: str) -> AtmHold:
        """The purchase id is the idempotency key: a retried create answers the same hold."""
        body: dict[str, Any] = {
            "items": [{"tierId": item.tier_id, "quantity": item.quantity} for item in request.items],
            "eventId": request.event_id,
            "customerEmail": request.buyer.email,
            "idempotencyKey": request.purchase_id,
            # Lets the webhook receiver find this purchase from any event about the hold. `appOrderId` is
            # what ATM's public payment events echo (atmosphere.money/docs/checkout, /docs/event-payload-
            # examples); *assumed*: it does so for ticket holds too.
            "metadata": {"workflowId": workflow_id, "purchaseId": request.purchase_id, "appOrderId": request.purchase_id},
            "environment": self.settings.environment,
        }
        for name, value in (("returnUrl", request.return_url), ("cancelUrl", request.cancel_url)):
            if value:
                body[name] = value
        hold = self.http.parse(CreateHoldResponse, await self._xrpc(CREATE_HOLD, body), "create ticket hold")
        if hold.reused:
            activity.logger.info("ATM answered an existing hold for this purchase", extra={"hold": hold.hold_id})
        return AtmHold(
            hold_id=hold.hold_id,
            checkout_url=hold.url,
            checkout_token=hold.token,
            hold=Hold(expires_at=hold.expires_at),
            amount=Decimal(hold.amount_cents).scaleb(-2),  # cents → 50.00
            currency=hold.currency.upper(),
            environment=hold.environment or self.settings.environment,
        )

    @activity.defn(name="atm.release_hold")
    async def release_hold(self, hold_id: str) -> str:
        """Returns ATM's hold status: released, or expired/completed/failed when it already ended.
        `completed` means the buyer paid: nothing was released, and the tickets are owed."""
        try:
            data = await self._xrpc(RELEASE_HOLD, {"holdId": hold_id, "reason": "purchase not completed"})
        except ApplicationError as err:
            if not err.details or err.details[0].get("code") != HOLD_NOT_FOUND:
                raise
            return "not found (nothing held)"
        status = self.http.parse(ReleaseHoldResponse, data, "release ticket hold").hold_status
        if status is None:
            raise ApplicationError(
                f"atm: release ticket hold {hold_id}: the answer has no hold status",
                {"provider": "atm"},
                type=FailureReason.PROVIDER_BAD_RESPONSE,
                non_retryable=True,
            )
        return status

    @activity.defn(name="atm.payment_status")
    async def payment_status(self, token: str) -> str:
        """ATM's word on the hold's payment: `completed` (paid), `pending` or `failed`. A webhook is a
        hint; this read is what the purchase believes before it takes a payment or tickets as real."""
        headers = {"authorization": f"Bearer {self.settings.service_token.get_secret_value()}"}
        data = await self.http.request("GET", PAYMENT_STATUS, headers=headers, params={"token": token}, codes=CODES)
        return self.http.parse(PaymentStatusResponse, data, "payment status").status
