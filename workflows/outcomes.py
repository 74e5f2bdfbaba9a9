"""Reading an activity's failure: the purchase's typed reason, and whether the call certainly did nothing."""

from __future__ import annotations

from typing import Any

from temporalio.exceptions import ActivityError, ApplicationError

from workflows.models import Failure, FailureReason

# A commit whose outcome could not be read back: something may have been done.
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"

# runs.earlier on a server without visibility (the time-skipping test server): nothing to list.
EARLIER_RUNS_NOT_LISTABLE = "EARLIER_RUNS_NOT_LISTABLE"


def outcome_unknown(message: str) -> ApplicationError:
    """What a step raises when it cannot tell whether the provider did the work: never retried, and
    what it registered is neither undone nor given up silently (see Saga, Flow.commit)."""
    return ApplicationError(message, type=OUTCOME_UNKNOWN, non_retryable=True)


def outcome_known(err: ActivityError) -> bool:
    """Whether a failed call certainly changed nothing: the provider refused its first attempt.
    Retries that ran out (timeouts, 5xx, 429), or a refusal of a later attempt (a 409 because the
    first went through), leave the outcome unknown."""
    cause = err.cause
    if not isinstance(cause, ApplicationError) or not cause.non_retryable:
        return False
    details = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    attempt: object = details.get("attempt", 1)
    return attempt == 1


def raised_by_activity(err: BaseException) -> ApplicationError | None:
    """The ApplicationError an activity raised: the cause of an ActivityError, or the error itself
    when a local activity's failure arrives unwrapped."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__
    return cause


def failure_from(err: ActivityError | ApplicationError) -> Failure:
    """Reads the typed ApplicationError an activity raised (see activities/http.py)."""
    cause = raised_by_activity(err)
    if cause is None:
        return Failure(reason=FailureReason.PROVIDER_ERROR, message=str(getattr(err, "cause", None) or err))
    details: dict[str, Any] = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    reason = cause.type if cause.type and cause.type in FailureReason.__members__ else FailureReason.PROVIDER_ERROR
    return Failure(
        reason=FailureReason(reason),
        message=cause.message,
        provider_code=details.get("code"),
        provider_status=details.get("status") and str(details["status"]),
        trace_id=details.get("trace_id"),
    )
