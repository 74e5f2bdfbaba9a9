"""deploy/ checked statically (no Docker engine runs here): the files parse, images are pinned,
every setting the code reads is provided, and no secret is written in them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from pydantic_settings import BaseSettings

from activities.acme import AcmeSettings
from activities.atm import AtmSettings
from activities.atom import AtomSettings
from activities.onebox import OneboxSettings
from activities.tevo import TevoSettings
from workers.client import SEARCH_ATTRIBUTES
from workers.codec import CodecSettings
from workers.devstack import DISPATCH_CONFIG, dev_server_args
from workers.settings import ROLES, TEMPORAL_VARIABLES, WebhookSettings, WorkerSettings

DEPLOY = Path(__file__).parents[1] / "deploy"
SETTINGS: list[type[BaseSettings]] = [WorkerSettings, WebhookSettings, CodecSettings, AtomSettings, OneboxSettings,
                                      TevoSettings, AtmSettings, AcmeSettings]


def variables(settings: type[BaseSettings]) -> dict[str, bool]:
    """Every environment variable a settings class reads → whether it holds a secret."""
    prefix = settings.model_config.get("env_prefix", "")
    found = {}
    for name, info in settings.model_fields.items():
        env = info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{name}".upper()
        found[env] = SecretStr in (getattr(info.annotation, "__args__", None) or (info.annotation,))
    return found


# Temporal's connection variables are read by the SDK's environment configuration, not by a settings class.
ALL = {name: secret for settings in SETTINGS for name, secret in variables(settings).items()} | TEMPORAL_VARIABLES
SECRETS = {name for name, secret in ALL.items() if secret}


def load(path: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / path).read_text()) if doc]


def test_settings_inventory_is_complete() -> None:
    # The inventory this file checks against, so a new setting cannot slip past it.
    assert {"TEMPORAL_ADDRESS", "BOXOFFICE_ATOM_API_KEY", "BOXOFFICE_CODEC_KEYS", "BOXOFFICE_WORKER_ROLES"} <= set(ALL)
    assert {"BOXOFFICE_ATOM_API_KEY", "BOXOFFICE_ONEBOX_CLIENT_SECRET", "BOXOFFICE_TEVO_API_SECRET",
            "BOXOFFICE_ATM_WEBHOOK_SECRETS", "BOXOFFICE_ACME_API_KEY", "BOXOFFICE_CODEC_AUTH_TOKEN"} <= SECRETS


def test_compose_sets_every_variable_and_writes_no_secret() -> None:
    compose = load("compose.yaml")[0]
    for service in ("worker", "webhooks", "codec-server"):
        env = compose["services"][service]["environment"]
        assert set(ALL) <= set(env), f"{service} lacks {sorted(set(ALL) - set(env))}"
        for name in SECRETS:
            assert str(env[name]).startswith("${"), f"{name} must come from the environment"
    assert str(compose["services"]["postgresql"]["environment"]["POSTGRES_PASSWORD"]).startswith("${")
    assert compose["services"]["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]


def images(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image"] + [i for v in node.values() for i in images(v)]
    if isinstance(node, list):
        return [i for v in node for i in images(v)]
    return []


# boxoffice's own image in compose is tagged with the build being deployed (its Worker Deployment build id).
BUILD_IMAGE = "boxoffice:${BOXOFFICE_BUILD_ID:?the build being deployed, e.g. the git commit}"


@pytest.mark.parametrize("path", ["compose.yaml", "k8s/config.yaml", "k8s/workers.yaml", "k8s/edge.yaml"])
def test_images_are_pinned(path: str) -> None:
    for image in images(load(path)):
        if image == BUILD_IMAGE:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)


def test_kubernetes_provides_every_variable_from_config_or_secret() -> None:
    config = load("k8s/config.yaml")[0]["data"]
    assert not SECRETS & set(config), "a secret in the ConfigMap"
    deployments = [d for d in load("k8s/workers.yaml") + load("k8s/edge.yaml") if d["kind"] == "Deployment"]
    referenced = set()
    for deployment in deployments:
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": "boxoffice-config"}}]
        for entry in container.get("env", []):
            if "valueFrom" in entry:
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "boxoffice-secrets"
            else:
                assert entry["name"] not in SECRETS
            referenced.add(entry["name"])
    assert set(ALL) <= set(config) | referenced, sorted(set(ALL) - set(config) - referenced)


def test_one_worker_deployment_per_role_with_readiness_and_autoscaling() -> None:
    documents = load("k8s/workers.yaml")
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    scalers = {d["spec"]["scaleTargetRef"]["name"] for d in documents if d["kind"] == "HorizontalPodAutoscaler"}
    assert set(deployments) == {f"boxoffice-{role}" for role in ROLES} == scalers
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        role = next(e["value"] for e in container["env"] if e["name"] == "BOXOFFICE_WORKER_ROLES")
        assert name == f"boxoffice-{role}"
        assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
        secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
        provider = {"atom": AtomSettings, "onebox": OneboxSettings, "tevo": TevoSettings, "atm": AtmSettings,
                    "acme": AcmeSettings}.get(role)
        needed = {n for n, secret in variables(provider).items() if secret} if provider else set()
        assert needed | {"BOXOFFICE_CODEC_KEYS"} <= secrets, f"{name} lacks its provider's credentials"


def test_compose_runs_the_current_temporal_server_with_admin_tools_jobs() -> None:
    services = load("compose.yaml")[0]["services"]
    assert not [i for i in images(services) if "auto-setup" in i], "temporalio/auto-setup is deprecated"
    server, schema, namespace = services["temporal"], services["temporal-schema"], services["temporal-namespace"]
    version = server["image"].removeprefix("temporalio/server:")
    # Worker Versioning (Worker Deployments) needs server 1.29.1 or later; tools match the server.
    assert tuple(int(n) for n in version.split(".")) >= (1, 29, 1)
    assert schema["image"] == namespace["image"] == services["worker-set-current"]["image"] == (
        f"temporalio/admin-tools:{version}")
    assert server["depends_on"] == {"temporal-schema": {"condition": "service_completed_successfully"}}
    assert server["environment"]["DB"] == schema["environment"]["DB"] == "postgres12"
    [script] = schema["command"]
    for step in ("create", "setup-schema -v 0.0", "update-schema"):
        assert f'--db "$$db" {step}' in script
    assert "temporal temporal_visibility" in script and "v12/$$dir/versioned" in script
    # The server reads its dynamic config from the file in deploy/temporal/.
    mount = next(v for v in server["volumes"] if "dynamicconfig" in v)
    source, target, _ = mount.split(":")
    assert (DEPLOY / source).is_file()
    assert target == "/etc/temporal/config/" + server["environment"]["DYNAMIC_CONFIG_FILE_PATH"].removeprefix("config/")


def test_compose_registers_the_namespace_and_every_search_attribute_the_code_upserts() -> None:
    compose = load("compose.yaml")[0]
    services = compose["services"]
    job = services["temporal-namespace"]
    assert job["environment"]["NAMESPACE"] == compose["x-boxoffice"]["environment"]["TEMPORAL_NAMESPACE"]
    [script] = job["command"]
    registered = set(re.search(r"for name in ([\w ]+); do", script)[1].split())  # type: ignore[index]
    assert registered == set(SEARCH_ATTRIBUTES)
    assert "--type Keyword" in script and "namespace create" in script
    for name in ("worker", "webhooks", "codec-server"):
        assert services[name]["depends_on"] == {"temporal-namespace": {"condition": "service_completed_successfully"}}


def test_workers_are_one_build_of_a_worker_deployment() -> None:
    compose = load("compose.yaml")[0]
    worker = compose["services"]["worker"]
    env = worker["environment"]
    assert env["BOXOFFICE_DEPLOYMENT_NAME"] == "boxoffice"
    assert env["BOXOFFICE_BUILD_ID"].startswith("${BOXOFFICE_BUILD_ID:?")
    assert worker["image"] == BUILD_IMAGE  # a new build is a new image
    promote = compose["services"]["worker-set-current"]
    [script] = promote["command"]
    assert "set-current-version" in script and "--deployment-name boxoffice" in script
    assert promote["environment"]["BUILD_ID"] == "${BOXOFFICE_BUILD_ID:?}"
    assert load("k8s/config.yaml")[0]["data"]["BOXOFFICE_DEPLOYMENT_NAME"] == "boxoffice"
    for deployment in (d for d in load("k8s/workers.yaml") if d["kind"] == "Deployment"):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        build_id = next(e["value"] for e in container["env"] if e["name"] == "BOXOFFICE_BUILD_ID")
        assert container["image"].rpartition(":")[2] == build_id, deployment["metadata"]["name"]


def test_provider_calls_run_only_where_their_credentials_are() -> None:
    """Fail closed: the workflows pods hold no provider credentials, so every provider's calls,
    ACME's order management included, must go to its own role's queue (a rate limit set), and
    each provider role must get every setting its provider requires."""
    config = load("k8s/config.yaml")[0]["data"]
    deployments = {d["metadata"]["name"]: d for d in load("k8s/workers.yaml") if d["kind"] == "Deployment"}
    for settings in (AtomSettings, OneboxSettings, TevoSettings, AtmSettings, AcmeSettings):
        prefix = settings.model_config["env_prefix"]
        assert config.get(f"{prefix}ACTIVITIES_PER_SECOND"), f"{prefix}*: calls would run in the workflows pods"
        [container] = deployments[f"boxoffice-{prefix.split('_')[1].lower()}"]["spec"]["template"]["spec"]["containers"]
        given = {e["name"] for e in container["env"]} | {name for name, value in config.items() if value}
        required = {f"{prefix}{name}".upper() for name in settings.required}
        assert required <= given, sorted(required - given)
    [workflows] = deployments["boxoffice-workflows"]["spec"]["template"]["spec"]["containers"]
    assert not any(e["name"].startswith(("BOXOFFICE_ATOM", "BOXOFFICE_ONEBOX", "BOXOFFICE_TEVO", "BOXOFFICE_ATM",
                                         "BOXOFFICE_ACME")) for e in workflows["env"])


def test_cluster_dynamic_config_matches_the_dev_servers() -> None:
    # A self-hosted cluster gets the dispatch settings every dev server here runs with.
    config = load("temporal/dynamicconfig.yaml")[0]
    assert {key: [{"value": value}] for key, value in DISPATCH_CONFIG.items()} == config


def test_dev_server_arguments_set_the_dispatch_config() -> None:
    args = dev_server_args()
    assert args[0::2] == ["--dynamic-config-value"] * len(DISPATCH_CONFIG)
    assert args[1::2] == ["history.transferProcessorMaxPollRPS=1000", "history.timerProcessorMaxPollRPS=1000",
                          "frontend.enableExecuteMultiOperation=true"]
    # A database file is written in WAL mode, without a disk sync per write.
    assert dev_server_args(Path("/tmp/t.db"))[len(args):] == [
        "--db-filename", "/tmp/t.db", "--sqlite-pragma", "journal_mode=wal", "--sqlite-pragma", "synchronous=normal"]
