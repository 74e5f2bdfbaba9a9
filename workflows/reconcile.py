"""ReconcileWorkflow: an attention item, something about money or seats an operator must decide on.

Two kinds of source open one, and both are the same kind of item (`BoxofficeState = "NEEDS_ATTENTION"`,
one list in the UI):

- ATM's webhook events an ended purchase cannot take (the purchase ended, or never existed here, yet
  ATM says money moved or tickets were issued), or that change money already taken (refunded,
  disputed, voided), whether the purchase still runs or not. The webhook receiver signal-starts
  `reconcile-{purchase workflow id}` with `atm_event`; each event id is kept once.
- The reconciliation sweep's findings (workflows/sweep.py): an orphan order, a fulfilled purchase's
  order the provider cancelled, a paid hold without tickets, a hold it could not release, an answer
  the provider's docs do not describe. The sweep signal-starts `attention-{provider}-{kind}-{item}`
  with `finding`: a finding seen again adds an observation to the same item, never a second item.

Each logs at error level and counts `boxoffice_reconciliations`, shows its provider, kind, order
id, purchase id and amount as search attributes, and stays open until an operator answers: the
`approve` update (cancel or refund, done through the provider's own undo on the provider's queue, whose
workers hold its credentials, or the same RefundWorkflow as `boxoffice orders refund`), `dismiss`, or the
`resolve` signal (the note only).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributeUpdate, VersioningBehavior
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.findings import AttentionDecision, AttentionState, AttentionView, Finding, FindingKind
    from workflows.models import PROVIDER, PROVIDER_ORDER_ID, STATE, AtmEvent, PurchasePolicy, PurchaseState

# The purchases' own attention state: one BoxofficeState filter lists both.
NEEDS_ATTENTION = PurchaseState.NEEDS_ATTENTION
ATTENTION_KIND = SearchAttributeKey.for_keyword("BoxofficeAttentionKind")
PURCHASE_ID = SearchAttributeKey.for_keyword("BoxofficePurchaseId")
# Keyword: "12.50 USD" as the provider stated it (a Double would lose the currency).
AMOUNT = SearchAttributeKey.for_keyword("BoxofficeAmount")
# Which (provider, kind) an approval may act on, and how: the provider's undo of an order, or a refund.
ACTIONS: dict[tuple[str, str], frozenset[str]] = {
    ("tevo", FindingKind.ORPHAN_ORDER): frozenset({"cancel"}),
    ("atom", FindingKind.ORPHAN_ORDER): frozenset({"cancel"}),
    ("onebox", FindingKind.ORPHAN_ORDER): frozenset({"refund"}),
    ("acme", FindingKind.ORPHAN_ORDER): frozenset({"refund"}),
    ("acme", FindingKind.ACTIVE_HOLD): frozenset({"cancel"}),
    ("onebox", FindingKind.ACTIVE_HOLD): frozenset({"cancel"}),
    ("atm", FindingKind.ACTIVE_HOLD): frozenset({"cancel"}),
}
ACT_TIMEOUT = timedelta(minutes=30)
ACT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["INVALID_REQUEST", "PROVIDER_BAD_RESPONSE", "PROVIDER_REJECTED"],
)


def reconcile_workflow_id(purchase_workflow_id: str) -> str:
    return f"reconcile-{purchase_workflow_id}"


# AUTO_UPGRADE, not pinned: an item stays open until a person answers, days perhaps, and a pinned one
# would keep the build it started on from ever draining. Its next task runs on the current build,
# which replays this history: changes to it are patched like every workflow's (tests/test_replay.py).
@workflow.defn(name="ReconcileWorkflow", versioning_behavior=VersioningBehavior.AUTO_UPGRADE)
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._subject = ""
        self._events: list[AtmEvent] = []
        self._observations: list[Finding] = []
        self._times_seen = 0
        self._resolution: str | None = None
        self._state: AttentionState = "OPEN"
        self._decision: AttentionDecision | None = None
        self._acting = False
        # Items opened before the sweep existed replay without its search attributes.
        self._attributes = False

    @workflow.run
    async def run(self, subject: str) -> str:
        """`subject`: the purchase's workflow id (ATM events) or the attention id (a sweep's finding)."""
        self._subject = subject
        self._attributes = workflow.patched("attention-item")
        updates: list[SearchAttributeUpdate[Any]] = [STATE.value_set(NEEDS_ATTENTION)]
        if not workflow.info().workflow_id.startswith("attention-"):  # ATM's events: the provider is ATM
            updates.append(PROVIDER.value_set("atm"))
            if self._attributes:
                updates += [
                    ATTENTION_KIND.value_set(FindingKind.PROVIDER_EVENT),
                    PURCHASE_ID.value_set(subject.removeprefix("purchase-")),
                ]
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details())
        await workflow.wait_condition(lambda: self._resolution is not None and not self._acting)
        workflow.upsert_search_attributes([STATE.value_set(self._state if self._state != "OPEN" else "RESOLVED")])
        return self._resolution or ""

    def _details(self) -> str:
        if self._observations:
            last = self._observations[-1]
            return (
                f"{last.kind} at {last.provider}: {last.item_kind} {last.item_id} ({last.status}), purchase "
                f"{last.purchase_id or 'none'} ({last.purchase_state or '-'}); proposed: {last.proposed_action}. "
                f"{last.detail} — approve (cancel/refund) or dismiss"
            )
        return (
            f"ATM events for {self._subject}: an operator must check the payment and tickets, and refund, "
            "issue or answer (signal `resolve` when done)"
        )

    @workflow.signal(name="atm_event")
    def atm_event(self, event: AtmEvent) -> None:
        if any(seen.identity == event.identity for seen in self._events):
            return  # the same event again, perhaps with a new delivery id
        self._events.append(event)
        if event.hold_id:
            workflow.upsert_search_attributes([PROVIDER_ORDER_ID.value_set(event.hold_id)])
        workflow.logger.error(
            "provider event needs attention",
            extra={"event_type": event.type, "hold_id": event.hold_id, "delivery_id": event.delivery_id},
        )
        workflow.metric_meter().create_counter("boxoffice_reconciliations", "Provider events an operator must look at").add(
            1, {"provider": "atm", "event": event.kind}
        )

    @workflow.signal
    def finding(self, finding: Finding) -> None:
        """A sweep saw the finding (again): the first opens the item, later ones are observations."""
        self._times_seen += 1
        if self._observations and _same(self._observations[-1], finding):
            return  # seen again unchanged (a later or overlapping sweep): counted, not repeated
        first = not self._observations
        self._observations.append(finding)
        updates: list[SearchAttributeUpdate[Any]] = [
            PROVIDER.value_set(finding.provider),
            ATTENTION_KIND.value_set(finding.kind),
            PROVIDER_ORDER_ID.value_set(finding.item_id),
        ]
        if finding.purchase_id:
            updates.append(PURCHASE_ID.value_set(finding.purchase_id))
        if finding.amount is not None:
            updates.append(AMOUNT.value_set(f"{finding.amount} {finding.currency or ''}".strip()))
        workflow.upsert_search_attributes(updates)
        workflow.set_current_details(self._details())
        workflow.logger.error(
            "sweep finding needs attention" if first else "sweep finding changed",
            extra={
                "provider": finding.provider,
                "kind": finding.kind,
                "item_id": finding.item_id,
                "purchase_id": finding.purchase_id,
                "status": finding.status,
                "proposed_action": finding.proposed_action,
            },
        )
        workflow.metric_meter().create_counter("boxoffice_reconciliations", "Provider events an operator must look at").add(
            1, {"provider": finding.provider, "event": finding.kind}
        )

    @workflow.signal
    def resolve(self, note: str) -> None:
        if self._state == "OPEN":
            self._resolution = note or "resolved"
            self._state = "RESOLVED"

    @workflow.update
    async def approve(self, decision: AttentionDecision) -> AttentionView:
        last = self._observations[-1]
        self._acting = True
        self._decision = decision
        try:
            queue = None  # approvals made before routing ran on this queue
            if workflow.patched("approval-on-provider-queue"):
                # Where the provider's calls run (its rate-limited queue, whose workers hold its credentials),
                # as the sweep and the purchases learn it.
                policy = await workflow.execute_local_activity(
                    f"{last.provider}.policy", result_type=PurchasePolicy, start_to_close_timeout=timedelta(seconds=5)
                )
                queue = policy.activity_task_queue
            outcome = await workflow.execute_activity(
                f"sweep.{decision.action}",
                last,
                result_type=str,
                task_queue=queue,
                start_to_close_timeout=ACT_TIMEOUT,
                retry_policy=ACT_RETRY,
                summary=f"{decision.action} {last.item_kind} {last.item_id}",
            )
        except Exception:
            self._decision = None
            raise
        finally:
            self._acting = False
        self._state = "APPROVED"
        self._resolution = f"approved {decision.action}: {outcome}" + (f"; {decision.note}" if decision.note else "")
        workflow.logger.info(
            "attention item approved", extra={"item": workflow.info().workflow_id, "action": decision.action, "outcome": outcome}
        )
        return self.item()

    @approve.validator
    def _approvable(self, decision: AttentionDecision) -> None:
        if self._state != "OPEN" or self._acting:
            raise ApplicationError(
                f"this item is {self._state if not self._acting else 'being acted on'}", type="INVALID_REQUEST"
            )
        if not self._observations:
            raise ApplicationError(
                "an item of ATM events is settled by hand: signal `resolve` with a note", type="INVALID_REQUEST"
            )
        last = self._observations[-1]
        allowed = ACTIONS.get((last.provider, last.kind), frozenset())
        if decision.action not in allowed:
            raise ApplicationError(
                f"{decision.action or 'no action'} is not possible for {last.kind} at {last.provider}"
                f" (possible: {', '.join(sorted(allowed)) or 'none: settle it by hand, then dismiss'})",
                type="INVALID_REQUEST",
            )

    @workflow.update
    def dismiss(self, decision: AttentionDecision) -> AttentionView:
        self._decision = decision
        self._state = "DISMISSED"
        self._resolution = f"dismissed: {decision.note or 'no note'}"
        return self.item()

    @dismiss.validator
    def _dismissable(self, decision: AttentionDecision) -> None:
        if self._state != "OPEN" or self._acting:
            raise ApplicationError(
                f"this item is {self._state if not self._acting else 'being acted on'}", type="INVALID_REQUEST"
            )

    @workflow.query
    def events(self) -> list[AtmEvent]:
        return list(self._events)

    @workflow.query
    def item(self) -> AttentionView:
        last = self._observations[-1] if self._observations else None
        return AttentionView(
            id=workflow.info().workflow_id,
            subject=self._subject,
            state=self._state,
            provider=last.provider if last else "atm",
            kind=last.kind if last else FindingKind.PROVIDER_EVENT,
            item_id=last.item_id if last else next((e.hold_id for e in self._events if e.hold_id), None),
            purchase_id=last.purchase_id if last else self._subject.removeprefix("purchase-"),
            amount=last.amount if last else None,
            proposed_action=last.proposed_action if last else "none",
            observations=list(self._observations),
            times_seen=self._times_seen,
            events=list(self._events),
            decision=self._decision,
            outcome=self._resolution,
        )


def _same(seen: Finding, new: Finding) -> bool:
    """The same finding: what the provider and the purchase say did not change (when or by which sweep aside)."""
    return seen.model_copy(update={"observed_at": None, "sweep_id": None}) == new.model_copy(
        update={"observed_at": None, "sweep_id": None}
    )
