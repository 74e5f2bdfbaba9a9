"""Process settings. Temporal's own variable names where they exist, BOXOFFICE_* for ours."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.common import VersioningBehavior, WorkerDeploymentVersion
from temporalio.envconfig import ClientConfigProfile, ClientConnectConfig
from temporalio.worker import WorkerDeploymentConfig

from workflows.models import DEFAULT_TASK_QUEUE

# What a worker process can serve: the workflows' task queue, and each provider's activity queue.
ROLES = frozenset({"workflows", "acme", "atm", "atom", "onebox", "tevo"})
DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
# The variables of Temporal's environment configuration that deploy/ sets (→ whether secret). The SDK
# reads more: TEMPORAL_CONFIG_FILE, TEMPORAL_PROFILE, TEMPORAL_TLS_SERVER_NAME, TEMPORAL_GRPC_META_*, ...
TEMPORAL_VARIABLES = {
    "TEMPORAL_ADDRESS": False, "TEMPORAL_NAMESPACE": False, "TEMPORAL_API_KEY": True,
    "TEMPORAL_TLS_CLIENT_CERT_PATH": False, "TEMPORAL_TLS_CLIENT_KEY_PATH": False,
    "TEMPORAL_TLS_SERVER_CA_CERT_PATH": False,
}


def temporal_connect_config(environ: Mapping[str, str] | None = None) -> ClientConnectConfig:
    """Client.connect arguments from the SDK's environment configuration, as the `temporal` CLI reads
    them: profile TEMPORAL_PROFILE (default "default") of the TOML file TEMPORAL_CONFIG_FILE (default
    ~/.config/temporalio/temporal.toml), overridden by TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
    TEMPORAL_API_KEY (turns TLS on) and TEMPORAL_TLS_* (client cert and key, private server CA)."""
    env = os.environ if environ is None else environ
    # An empty variable (as deploy/ sets for unused options) means "not set", as for our own settings.
    profile = ClientConfigProfile.load(override_env_vars={k: v for k, v in env.items() if v})
    config = profile.to_client_connect_config()
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    config.setdefault("namespace", "default")
    return config


class WorkerSettings(BaseSettings):
    # An empty variable (as deploy/ sets for unused options) means "not set".
    model_config = SettingsConfigDict(env_ignore_empty=True)

    # Where Temporal is and how to authenticate (temporal_connect_config), read once.
    _temporal: ClientConnectConfig = PrivateAttr(default_factory=temporal_connect_config)
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
    # Worker Versioning: this process serves build `build_id` of the Worker Deployment `deployment_name`
    # (both set), or runs unversioned (both unset: `boxoffice dev`, the tests).
    deployment_name: str | None = Field(default=None, validation_alias="BOXOFFICE_DEPLOYMENT_NAME",
                                        pattern=r"^[^.]+$")
    build_id: str | None = Field(default=None, validation_alias="BOXOFFICE_BUILD_ID")

    @property
    def temporal(self) -> ClientConnectConfig:
        return self._temporal

    @property
    def temporal_address(self) -> str:
        return self._temporal["target_host"]

    @property
    def temporal_namespace(self) -> str:
        return self._temporal["namespace"]

    def deployment_config(self) -> WorkerDeploymentConfig | None:
        """Every workflow is PINNED: it runs to its end on the build that started it. A purchase holds
        seats for minutes and must not meet code it did not start with; refunds and order reads last
        seconds, so pinning them too delays retiring a build by no more than that."""
        if (self.deployment_name is None) != (self.build_id is None):
            raise ValueError("set both BOXOFFICE_DEPLOYMENT_NAME and BOXOFFICE_BUILD_ID, or neither")
        if self.deployment_name is None or self.build_id is None:
            return None
        return WorkerDeploymentConfig(
            version=WorkerDeploymentVersion(deployment_name=self.deployment_name, build_id=self.build_id),
            use_worker_versioning=True,
            default_versioning_behavior=VersioningBehavior.PINNED,
        )

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
