"""ReconcileWorkflow: a provider's payment or ticket event an operator must look at.

The purchase ended (expired, cancelled, failed) or never existed here, yet ATM says money moved or
tickets were issued: the buyer may be charged for seats boxoffice released. Or ATM says money already
taken changed (refunded, disputed, tickets voided or refunded), whether the purchase still runs (it
lists the event in `money_events` too, and may yet end FULFILLED) or ended: the tickets boxoffice
hands out may no longer be valid. Such an event is never
acknowledged and dropped: the webhook receiver signal-starts this workflow (`reconcile-{purchase
workflow id}`), which logs at error level, counts `boxoffice_reconciliations`, shows
`BoxofficeState = "NEEDS_ATTENTION"` and stays open until an operator signals `resolve`.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.models import AtmEvent, PurchaseState
    from workflows.purchase import PROVIDER, PROVIDER_ORDER_ID, STATE

# The purchases' own attention state: one BoxofficeState filter lists both.
NEEDS_ATTENTION = PurchaseState.NEEDS_ATTENTION


def reconcile_workflow_id(purchase_workflow_id: str) -> str:
    return f"reconcile-{purchase_workflow_id}"


@workflow.defn(name="ReconcileWorkflow")
class ReconcileWorkflow:
    def __init__(self) -> None:
        self._events: list[AtmEvent] = []
        self._resolution: str | None = None

    @workflow.run
    async def run(self, purchase_workflow_id: str) -> str:
        workflow.upsert_search_attributes([PROVIDER.value_set("atm"), STATE.value_set(NEEDS_ATTENTION)])
        workflow.set_current_details(f"ATM events for {purchase_workflow_id}: an operator must check the payment "
                                     "and tickets, and refund, issue or answer (signal `resolve` when done)")
        await workflow.wait_condition(lambda: self._resolution is not None)
        workflow.upsert_search_attributes([STATE.value_set("RESOLVED")])
        return self._resolution or ""

    @workflow.signal(name="atm_event")
    def atm_event(self, event: AtmEvent) -> None:
        if any(seen.identity == event.identity for seen in self._events):
            return  # the same event again, perhaps with a new delivery id
        self._events.append(event)
        if event.hold_id:
            workflow.upsert_search_attributes([PROVIDER_ORDER_ID.value_set(event.hold_id)])
        workflow.logger.error("provider event needs attention",
                              extra={"event_type": event.type, "hold_id": event.hold_id,
                                     "delivery_id": event.delivery_id})
        workflow.metric_meter().create_counter(
            "boxoffice_reconciliations", "Provider events an operator must look at"
        ).add(1, {"provider": "atm", "event": event.kind})

    @workflow.signal
    def resolve(self, note: str) -> None:
        self._resolution = note or "resolved"

    @workflow.query
    def events(self) -> list[AtmEvent]:
        return list(self._events)
