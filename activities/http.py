"""Talking to providers over HTTP, once: client factory, error mapping, redaction.

Retryable (the activity's retry policy backs off): timeouts, connection errors, 5xx, 429 (with the
provider's Retry-After as the next delay). Non-retryable, typed: business 4xx and answers that are
not the JSON the provider documents. Every error carries provider, HTTP status, provider code and
trace id in its details, and no secret or e-mail address in clear.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Protocol, TypeVar

import httpx
import structlog
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from workflows.models import FailureReason, provider_task_queue

log = structlog.get_logger("boxoffice.http")

M = TypeVar("M", bound=BaseModel)
# (method, path with query, body bytes) -> headers to add, e.g. a request signature.
Signer = Callable[[str, str, bytes], Mapping[str, str]]

# Retryable error types (activity retry policy applies).
UNREACHABLE = "PROVIDER_UNREACHABLE"
UNAVAILABLE = "PROVIDER_UNAVAILABLE"
RATE_LIMITED = "PROVIDER_RATE_LIMITED"
PENDING = "ORDER_PENDING"

TRACE_HEADERS = ("x-request-id", "x-amzn-requestid", "x-amzn-trace-id", "x-trace-id")
EXCERPT_CHARS = 300

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# Names of fields whose values are secrets or personal data (a person's name, a phone number),
# wherever they appear: JSON, a Python repr, a form or query string, a header, a log field.
SENSITIVE_KEY = (
    r"[\w.-]*?(?:token|password|passwd|secret|key|signature|authorization|credential|cookie|cvv|cvc|card_?number"
    r"|(?:first|last|full|given|family|middle|holder|buyer|customer)_?name|phone|mobile|vendorQrCodeData)[\w.-]*"
)
_QUOTED_FIELD = re.compile(  # "key": "value" / 'key': 'value' / "key": 123
    rf"""(["'])({SENSITIVE_KEY})\1(\s*:\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,}}\]]+)""", re.IGNORECASE
)
_FORM_FIELD = re.compile(  # key=value in forms, queries and key=value log lines
    rf"""(?<![\w.-])({SENSITIVE_KEY})=(?:"[^"]*"|'[^']*'|[^&\s,;]*)""", re.IGNORECASE
)
_HEADER = re.compile(  # Key: value, the value's scheme (Bearer, Basic) included
    rf"""(?<![\w.-])({SENSITIVE_KEY})(\s*:[ \t]*)(?!["'\s])(?:(?:bearer|basic|digest)[ \t]+)?[^\s,;]+""", re.IGNORECASE
)
# A credential after its scheme anywhere; it has a digit or punctuation, unlike "basic seating".
_SCHEME_TOKEN = re.compile(r"\b([Bb]earer|Basic|Digest)\s+(?=[\w~+/=.-]*[0-9=+/._~-])[\w~+/=.-]+")
# An international phone number in prose; bare digit runs are left alone (order ids look the same).
_PHONE = re.compile(r"\+\d[\d ().-]{6,}\d")


def _masked_field(match: re.Match[str]) -> str:
    quote, key, separator, value = match.groups()
    masked = f"{value[0]}***{value[0]}" if value[0] in "\"'" else "***"
    return f"{quote}{key}{quote}{separator}{masked}"


def attempt_timeout(http_timeout: float) -> float:
    """An activity attempt's start-to-close timeout: room for a token fetch, the call and one
    repeat (Onebox's 401 refresh), then a margin. A dead worker's attempt is retried after it."""
    return 3 * http_timeout + 5


def _rate_or_off(value: Any) -> Any:
    return None if isinstance(value, str) and value.strip().lower() == "off" else value


# A provider's `activities_per_second`: activity tasks per second its own task queue hands out,
# across all workers; `off` (or unset, where that is the default) for no limit and no own queue.
ActivitiesPerSecond = Annotated[Annotated[float, Field(gt=0)] | None, BeforeValidator(_rate_or_off)]


def own_queue(provider: str, activities_per_second: float | None) -> str | None:
    """The provider's rate-limited task queue, named from the workflow's (this runs as a local
    activity), or None: its activities share the workflow's queue."""
    if activities_per_second is None:
        return None
    return provider_task_queue(activity.info().task_queue, provider)


def not_yet(message: str) -> ApplicationError:
    """What a polling activity raises while the answer is not final: retryable, so the workflow's
    retry policy is the poll loop, and BENIGN, so it is logged at debug level, not as a failure."""
    return ApplicationError(message, type=PENDING, category=ApplicationErrorCategory.BENIGN)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Masks known secret values; the values of secret or personal fields (SENSITIVE_KEY) in JSON,
    Python reprs, forms, queries, headers and key=value text; bearer/basic credentials; phone numbers
    in international form; e-mail addresses (but their first letter and domain)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _QUOTED_FIELD.sub(_masked_field, text)
    text = _FORM_FIELD.sub(r"\1=***", text)
    text = _HEADER.sub(r"\1\2***", text)
    text = _SCHEME_TOKEN.sub(r"\1 ***", text)
    text = _PHONE.sub("+***", text)
    return _EMAIL.sub(r"\1***@\2", text)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _assume_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# A provider timestamp; one sent without a zone is taken as UTC, since a naive value would make the
# workflow's `expires_at - workflow.now()` raise TypeError and fail its task forever.
ProviderTimestamp = Annotated[datetime, AfterValidator(_assume_utc)]


def retry_after(value: str | None) -> timedelta | None:
    """Retry-After is delta-seconds or an HTTP date."""
    if not value:
        return None
    if value.strip().isdigit():
        return timedelta(seconds=int(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when - utc_now(), timedelta(0))


class Limit(Protocol):
    """A rate-limited provider's limit as this process holds it (activities/ratelimit.py)."""

    local_calls: bool

    async def acquire(self) -> None: ...


class ProviderHttp:
    """An httpx client for one provider. `secrets` are the configured credentials, masked in every
    log line and error message (tokens obtained at run time are masked by their JSON keys). `limit`,
    set by the worker for a rate-limited provider, is waited on before each request is sent."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        timeout: float,
        secrets: Iterable[str] = (),
        trace_headers: Iterable[str] = TRACE_HEADERS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.client = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)
        self.timeout = timeout
        self._secrets = tuple(s for s in secrets if s)
        self._trace_headers = tuple(trace_headers)
        self.limit: Limit | None = None

    @property
    def local_calls(self) -> bool:
        """This process holds a share of the provider's limit: its reads and rerun-safe writes may run
        as local activities (PurchasePolicy.local_calls)."""
        return self.limit is not None and self.limit.local_calls

    async def aclose(self) -> None:
        await self.client.aclose()

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        params: Any = None,
        errors: Mapping[int, FailureReason] | None = None,
        codes: Mapping[str, FailureReason] | None = None,
        sign: Signer | None = None,
        secrets: Iterable[str] = (),
    ) -> Any:
        """Sends one request and returns its JSON. `errors` types 4xx statuses, `codes` types the
        provider's error codes (codes win); other 4xx are PROVIDER_REJECTED. `sign` sees the exact
        bytes sent and adds its headers. `secrets`: values of this call only (a buyer's token) that
        are masked like the configured ones. `headers` may be a function, called once the request's
        turn under the rate limit has come (a timestamp header stays the time it was sent)."""
        hide = tuple(s for s in secrets if s)
        if self.limit is not None:
            await self._turn(self.limit, method, path, hide)
        if callable(headers):
            headers = headers()
        started = time.perf_counter()
        if form is not None:
            content, content_type = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        else:
            content = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
            content_type = "application/json"
        request = self.client.build_request(method, path, content=content or None, params=params, headers=headers)
        if content:
            request.headers["Content-Type"] = content_type
        if sign is not None:
            request.headers.update(sign(method, request.url.raw_path.decode(), content))
        try:
            response = await self.client.send(request)
        except httpx.TimeoutException as err:
            raise self._error(
                f"{method} {path} timed out ({type(err).__name__})", UNREACHABLE, retryable=True, hide=hide
            ) from None
        except httpx.TransportError as err:
            raise self._error(
                f"{method} {path} failed: {type(err).__name__}: {err}", UNREACHABLE, retryable=True, hide=hide
            ) from None

        trace_id = next((response.headers[h] for h in self._trace_headers if h in response.headers), None)
        log.info(
            "provider call",
            provider=self.provider,
            method=method,
            path=self.redact(response.request.url.path),
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
            trace_id=trace_id,
        )
        if response.is_success:
            return self._json(response, trace_id, hide)

        code, message = _error_fields(response)
        where = f"{method} {response.request.url.path} → {response.status_code}"
        text = f"{where}: {code or ''} {message or response.reason_phrase}".strip()
        details = {"status": response.status_code, "code": code, "trace_id": trace_id}
        if response.status_code == 429:
            delay = retry_after(response.headers.get("retry-after"))
            raise self._error(text, RATE_LIMITED, retryable=True, details=details, next_retry_delay=delay, hide=hide)
        if response.status_code >= 500:
            raise self._error(text, UNAVAILABLE, retryable=True, details=details, hide=hide)
        reason = (codes or {}).get(code or "") or (errors or {}).get(response.status_code)
        if reason is None:
            reason = (
                FailureReason.AUTHENTICATION_FAILED if response.status_code in (401, 403) else FailureReason.PROVIDER_REJECTED
            )
        raise self._error(text, reason, retryable=False, details=details, hide=hide)

    async def _turn(self, limit: Limit, method: str, path: str, hide: tuple[str, ...]) -> None:
        """Waits for the rate limit's token; in an activity, only while its attempt keeps time for the
        request itself: a request is never sent to be cut off by the attempt's timeout (an unknown
        outcome), it waits in the next attempt instead."""
        info = activity.info() if activity.in_activity() else None
        if info is None or info.start_to_close_timeout is None:
            await limit.acquire()
            return
        deadline = info.started_time + info.start_to_close_timeout - timedelta(seconds=self.timeout)
        try:
            await asyncio.wait_for(limit.acquire(), max(0.0, (deadline - utc_now()).total_seconds()))
        except TimeoutError:
            raise self._error(
                f"{method} {path} not sent: queued behind the rate limit for this attempt's time",
                RATE_LIMITED,
                retryable=True,
                hide=hide,
            ) from None

    def parse(self, model: type[M], data: Any, what: str) -> M:
        """Validates a provider answer; one that is not the documented shape is not retried."""
        try:
            return model.model_validate(data)
        except ValidationError as err:
            excerpt = self.redact(json.dumps(data)[:EXCERPT_CHARS])
            raise self._error(
                f"{what}: unexpected answer ({err.error_count()} problems, first: "
                f"{err.errors()[0]['loc']} {err.errors()[0]['msg']}); body: {excerpt}",
                FailureReason.PROVIDER_BAD_RESPONSE,
                retryable=False,
            ) from None

    def _json(self, response: httpx.Response, trace_id: str | None, hide: tuple[str, ...]) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            excerpt = redact(response.text[:EXCERPT_CHARS], self._secrets + hide)
            raise self._error(
                f"{response.request.method} {response.request.url.path}: malformed JSON: {excerpt!r}",
                FailureReason.PROVIDER_BAD_RESPONSE,
                retryable=False,
                details={"status": response.status_code, "code": None, "trace_id": trace_id},
                hide=hide,
            ) from None

    def _error(
        self,
        message: str,
        type_: str,
        *,
        retryable: bool,
        details: dict[str, Any] | None = None,
        next_retry_delay: timedelta | None = None,
        hide: tuple[str, ...] = (),
    ) -> ApplicationError:
        message = f"{self.provider}: {redact(message, self._secrets + hide)}"
        log.warning("provider error", provider=self.provider, type=type_, retryable=retryable, error=message)
        # The attempt tells the workflow whether an earlier attempt may have done the work.
        attempt = activity.info().attempt if activity.in_activity() else None
        return ApplicationError(
            message,
            {"provider": self.provider, "attempt": attempt, **(details or {})},
            type=type_,
            non_retryable=not retryable,
            next_retry_delay=next_retry_delay,
        )


def _error_fields(response: httpx.Response) -> tuple[str | None, str | None]:
    """Provider error bodies vary: {code|errorCode|error, message|errorMessage|...}, maybe nested."""
    try:
        body = response.json()
    except ValueError:
        return None, response.text[:EXCERPT_CHARS] or None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if not isinstance(body, dict):
        return None, str(body)[:EXCERPT_CHARS]
    code = next((body[k] for k in ("code", "errorCode", "error_code", "error") if isinstance(body.get(k), str | int)), None)
    message = next(
        (body[k] for k in ("message", "errorMessage", "error_description", "detail") if isinstance(body.get(k), str)),
        None,
    )
    return (str(code) if code is not None else None), message
