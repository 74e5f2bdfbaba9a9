"""Process settings. Temporal's own variable names where they exist, BOXOFFICE_* for ours."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows.models import DEFAULT_TASK_QUEUE

# What a worker process can serve: the workflows' task queue, and each provider's activity queue.
ROLES = frozenset({"workflows", "acme", "atm", "atom", "onebox", "tevo"})


class WorkerSettings(BaseSettings):
    # An empty variable (as deploy/ sets for unused options) means "not set".
    model_config = SettingsConfigDict(env_ignore_empty=True)

    temporal_address: str = Field(default="localhost:7233", validation_alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", validation_alias="TEMPORAL_NAMESPACE")
    # Temporal Cloud or a TLS cluster: an API key, or mTLS client certificate and key (file paths).
    temporal_api_key: SecretStr | None = Field(default=None, validation_alias="TEMPORAL_API_KEY")
    temporal_tls_cert: Path | None = Field(default=None, validation_alias="TEMPORAL_TLS_CLIENT_CERT_PATH")
    temporal_tls_key: Path | None = Field(default=None, validation_alias="TEMPORAL_TLS_CLIENT_KEY_PATH")
    task_queue: str = Field(default=DEFAULT_TASK_QUEUE, validation_alias="BOXOFFICE_TASK_QUEUE")
    # Where `boxoffice dev` keeps the dev server's SQLite file.
    home: Path = Field(default=Path(".boxoffice"), validation_alias="BOXOFFICE_HOME")
    # dev: readable console logs; json: one JSON object a line (production).
    log_format: str = Field(default="dev", validation_alias="BOXOFFICE_LOG_FORMAT", pattern="^(dev|json)$")
    log_level: str = Field(default="INFO", validation_alias="BOXOFFICE_LOG_LEVEL")
    shutdown_grace_seconds: float = Field(default=30, validation_alias="BOXOFFICE_SHUTDOWN_GRACE_SECONDS")
    # host:port for the worker's Prometheus /metrics (SDK and boxoffice metrics); unset: none.
    metrics_bind: str | None = Field(default=None, validation_alias="BOXOFFICE_METRICS_BIND")
    # host:port for GET /healthz (200 once the workers poll): the readiness probe in deploy/.
    health_bind: str | None = Field(default=None, validation_alias="BOXOFFICE_HEALTH_BIND")
    # What this process serves: "all", or a comma list of "workflows" and provider names.
    roles: str = Field(default="all", validation_alias="BOXOFFICE_WORKER_ROLES")

    def role_set(self) -> frozenset[str]:
        if self.roles.strip() == "all":
            return ROLES
        chosen = frozenset(r.strip() for r in self.roles.split(",") if r.strip())
        if not chosen or chosen - ROLES:
            raise ValueError(f"BOXOFFICE_WORKER_ROLES: unknown {sorted(chosen - ROLES)}; known: {sorted(ROLES)}")
        return chosen


class WebhookSettings(BaseSettings):
    """`boxoffice webhooks`: where the receiver listens (put it behind TLS in production)."""

    host: str = Field(default="127.0.0.1", validation_alias="BOXOFFICE_WEBHOOKS_HOST")
    port: int = Field(default=8780, validation_alias="BOXOFFICE_WEBHOOKS_PORT")
    # ATM's webhook signing secrets, comma-separated: more than one while a secret is rotated.
    # No default: `boxoffice webhooks` refuses to start without one (BOXOFFICE_ENV=dev: the simulator's).
    atm_secrets: SecretStr | None = Field(default=None, validation_alias="BOXOFFICE_ATM_WEBHOOK_SECRETS")

    def atm_secret_list(self) -> list[str]:
        value = self.atm_secrets.get_secret_value() if self.atm_secrets else ""
        return [s.strip() for s in value.split(",") if s.strip()]
