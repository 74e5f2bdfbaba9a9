"""Process settings. Temporal's own variable names where they exist, BOXOFFICE_* for ours."""

from __future__ import annotations

import hashlib
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr
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
    "TEMPORAL_ADDRESS": False,
    "TEMPORAL_NAMESPACE": False,
    "TEMPORAL_API_KEY": True,
    "TEMPORAL_TLS_CLIENT_CERT_PATH": False,
    "TEMPORAL_TLS_CLIENT_KEY_PATH": False,
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
    # host:port for GET /healthz (200 while the workers can poll the server, else 503): the readiness probe in deploy/.
    health_bind: str | None = Field(default=None, validation_alias="BOXOFFICE_HEALTH_BIND")
    # What this process serves: "all", or a comma list of "workflows" and provider names.
    roles: str = Field(default="all", validation_alias="BOXOFFICE_WORKER_ROLES")
    # Worker Versioning: this process serves build `build_id` of the Worker Deployment `deployment_name`
    # (both set), or runs unversioned (both unset: `boxoffice dev`, the tests). On Kubernetes the Temporal
    # Worker Controller injects TEMPORAL_DEPLOYMENT_NAME and TEMPORAL_WORKER_BUILD_ID into the pods of the
    # version it runs them as, and the worker must register as exactly that: those win (deploy/README.md).
    deployment_name: str | None = Field(
        default=None, validation_alias=AliasChoices("TEMPORAL_DEPLOYMENT_NAME", "BOXOFFICE_DEPLOYMENT_NAME"), pattern=r"^[^.]+$"
    )
    build_id: str | None = Field(default=None, validation_alias=AliasChoices("TEMPORAL_WORKER_BUILD_ID", "BOXOFFICE_BUILD_ID"))

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
        """PINNED by default: a purchase holds seats for minutes and runs to its end on the build that
        started it. The workflows that must not hold a build (attention items, refunds, order reads and
        changes, sweeps) declare AUTO_UPGRADE on their definitions, each saying why."""
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


# Outside dev (BOXOFFICE_ENV=dev), a process that serves refuses to start on any of these.
MIN_SECRET_CHARS = 32
NO_CODEC_KEYS = (
    "BOXOFFICE_CODEC_KEYS is not set: buyer data, passwords and tokens would reach Temporal's history "
    "in clear; set id:base64(32-byte key)"
)
# A refusal message, not a secret.
PUBLIC_SECRET = (
    "{} is a simulator's public secret, published in this repository: set the provider's, or "  # noqa: S105
    "BOXOFFICE_ENV=dev for the simulators"
)


# SHA-256 of the simulators' credentials (what `boxoffice dev` uses: anyone can read them in
# simulators/). Digests: production installs leave the simulators out, yet must recognize their
# credentials; tests/test_packaging.py checks these against the simulators. Their ids (Onebox
# channel, ACME tenant, TEvo reviewer) are not secrets and may well equal a real one.
PUBLIC_CREDENTIAL_DIGESTS = frozenset(
    {
        "9546cb42ef30a70943bcd2ad2bb0e3dd15cc38672b109c32bfd029ffe26fea12",  # Atom API key
        "af66a07406116382ac972a0702deecf6905b367af946baf1b72e1c1b2311c25a",  # Onebox client id
        "5102ad2ccdf7bc1981ea07051ca9abf55317b8af7378907398e12027723c5209",  # Onebox client secret
        "d4d729ad7ca10e1b8838a521fd00a9e98fd754b3638a9b9db4a2fe343d70dfba",  # TEvo token
        "ff35c2c45b33e54fba495c673382c441b29aa10dbd81377e7aaf44ae83afc0eb",  # TEvo secret
        "53f5ccddc8453088168cf84404dfeaee000008a0f32cfd6c0ec3647a110f4954",  # ATM service token
        "7642f373b030da323efab0f0c2152f83b667f265533e656f168ceedb9ca3cd11",  # ATM webhook secret
        "62c2fc277ab4261d4243be7b5cf49bdab2c39fed01ae2d4ce1cf9a38ec4e793c",  # ACME API key
    }
)


def is_public_credential(value: str) -> bool:
    """A simulator's credential, published in this repository."""
    return hashlib.sha256(value.encode()).hexdigest() in PUBLIC_CREDENTIAL_DIGESTS


def temporal_refusals(environ: Mapping[str, str] | None = None) -> list[str]:
    config = temporal_connect_config(environ)
    if config.get("api_key") and not config.get("tls"):
        return ["TEMPORAL_TLS is off while TEMPORAL_API_KEY is set: the key would travel in clear; turn TLS on"]
    return []


def production_refusals() -> list[str]:
    """What makes a process unsafe to serve production, one line per setting, naming it and never
    its value: no codec keys; a simulator's credential; a provider URL that is not https:// (loopback
    too: a simulator's address); an API key over plaintext; a webhook secret or codec token shorter
    than MIN_SECRET_CHARS; a wildcard CORS origin on the codec server (which allows credentials)."""
    # Imported here: the provider settings and the codec import much, and this runs once, at start.
    from activities.acme import AcmeSettings
    from activities.atm import AtmSettings
    from activities.atom import AtomSettings
    from activities.onebox import OneboxSettings
    from activities.tevo import TevoSettings
    from workers.codec import CodecSettings

    lines = temporal_refusals()
    codec = CodecSettings()
    if codec.codec() is None:
        lines.append(NO_CODEC_KEYS)
    for settings in (AtomSettings(), OneboxSettings(), TevoSettings(), AtmSettings(), AcmeSettings()):
        prefix = settings.model_config.get("env_prefix", "")
        for name in type(settings).model_fields:
            value = getattr(settings, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            variable = f"{prefix}{name}".upper()
            if name.endswith("_url") and text and urllib.parse.urlsplit(text).scheme != "https":
                lines.append(f"{variable} is not an https:// URL: credentials and buyer data would travel in clear")
            elif isinstance(text, str) and is_public_credential(text):
                lines.append(PUBLIC_SECRET.format(variable))
    webhook_secrets = WebhookSettings().atm_secret_list()
    if any(is_public_credential(secret) for secret in webhook_secrets):
        lines.append(PUBLIC_SECRET.format("BOXOFFICE_ATM_WEBHOOK_SECRETS"))
    elif any(len(secret) < MIN_SECRET_CHARS for secret in webhook_secrets):
        lines.append(f"BOXOFFICE_ATM_WEBHOOK_SECRETS holds a secret shorter than {MIN_SECRET_CHARS} characters")
    if codec.auth_token is not None and len(codec.auth_token.get_secret_value()) < MIN_SECRET_CHARS:
        lines.append(f"BOXOFFICE_CODEC_AUTH_TOKEN is shorter than {MIN_SECRET_CHARS} characters")
    if "*" in (origin.strip() for origin in codec.cors_origins.split(",")):
        lines.append("BOXOFFICE_CODEC_CORS_ORIGINS allows any origin (*), with credentials: name the Temporal UI's")
    return lines
