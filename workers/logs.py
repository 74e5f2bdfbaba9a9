"""structlog set-up: readable in dev, JSON in production, secrets and e-mail addresses masked."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog
from temporalio import activity, workflow

from activities.http import SENSITIVE_KEY, redact

_SENSITIVE_FIELD = re.compile(SENSITIVE_KEY, re.IGNORECASE)


def _masked(key: Any, value: Any) -> Any:
    """A log field's value: masked whole under a secret or personal name, else its text redacted, nested too."""
    if isinstance(key, str) and _SENSITIVE_FIELD.fullmatch(key) and value is not None:
        return "***"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _masked(k, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(None, v) for v in value]
    return value


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return {k: _masked(k, v) for k, v in event.items()}


def _core_fields(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """A line the SDK core forwarded (workers/telemetry.py): its Rust target and fields as fields."""
    entry = event.pop("temporal_log", None)
    if entry is not None:
        event["target"] = entry.target
        if entry.fields:
            event["fields"] = entry.fields
    return event


def configure(log_format: str = "dev", level: str = "INFO") -> None:
    renderer: Any = structlog.processors.JSONRenderer() if log_format == "json" else structlog.dev.ConsoleRenderer(colors=False)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,
        _core_fields,
        _redact,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # The SDK's own loggers (workflow.logger, activity.logger, the core's forwarded lines) go through the same pipeline.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared, processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The workflow's and activity's ids travel as fields (temporal_workflow / temporal_activity),
    # not appended to every message.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
