"""deploy/ checked statically (no Docker engine or cluster runs here): the files parse, images are
pinned, every setting the code reads is provided, no secret is written in them, the workers run as
versions of a Worker Deployment under the Temporal Worker Controller (scaled on backlog by KEDA), and
every pod meets the Kubernetes "restricted" Pod Security profile behind a default-deny NetworkPolicy.
The controller's and KEDA's kinds are unknown to schema validators: checked here field by field.
Docs: https://github.com/temporalio/temporal-worker-controller/tree/main/docs (WorkerDeployment,
Connection, WorkerResourceTemplate), https://keda.sh/docs/2.22/scalers/temporal/ (trigger metadata),
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices, SecretStr
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
SETTINGS: list[type[BaseSettings]] = [
    WorkerSettings,
    WebhookSettings,
    CodecSettings,
    AtomSettings,
    OneboxSettings,
    TevoSettings,
    AtmSettings,
    AcmeSettings,
]


def variables(settings: type[BaseSettings]) -> dict[str, bool]:
    """Every environment variable a settings class reads → whether it holds a secret."""
    prefix = settings.model_config.get("env_prefix", "")
    found = {}
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):  # boxoffice's own name is the last; earlier ones a platform injects
            alias = alias.choices[-1]
        env = alias if isinstance(alias, str) else f"{prefix}{name}".upper()
        found[env] = SecretStr in (getattr(info.annotation, "__args__", None) or (info.annotation,))
    return found


# Temporal's connection variables are read by the SDK's environment configuration, not by a settings class.
ALL = {name: secret for settings in SETTINGS for name, secret in variables(settings).items()} | TEMPORAL_VARIABLES
SECRETS = {name for name, secret in ALL.items() if secret}


def load(path: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / path).read_text()) if doc]


K8S = ["k8s/namespace.yaml", "k8s/config.yaml", "k8s/workers.yaml", "k8s/edge.yaml", "k8s/network.yaml", "k8s/monitoring.yaml"]
# What a pod template is found in: the controller's WorkerDeployment takes a Deployment's pod template.
POD_OWNERS = {"Deployment", "WorkerDeployment", "StatefulSet", "DaemonSet", "Job"}
# Set in the worker pods by the Temporal Worker Controller, for the version it runs them as; the worker
# reads them before boxoffice's own names (workers/settings.py).
CONTROLLER_VARIABLES = {"TEMPORAL_DEPLOYMENT_NAME": "BOXOFFICE_DEPLOYMENT_NAME", "TEMPORAL_WORKER_BUILD_ID": "BOXOFFICE_BUILD_ID"}


def kubernetes() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in load(path)]


def pod_templates() -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"] for d in kubernetes() if d["kind"] in POD_OWNERS}


def config() -> dict[str, str]:
    return load("k8s/config.yaml")[0]["data"]


def worker_deployment() -> dict[str, Any]:
    [deployment] = [d for d in load("k8s/workers.yaml") if d["kind"] == "WorkerDeployment"]
    return deployment


def worker_containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in worker_deployment()["spec"]["template"]["spec"]["containers"]}


def resource_templates(kind: str) -> list[dict[str, Any]]:
    """What the controller renders once per version of the WorkerDeployment named in workerDeploymentRef."""
    return [
        d for d in load("k8s/workers.yaml") if d["kind"] == "WorkerResourceTemplate" and d["spec"]["template"]["kind"] == kind
    ]


def test_settings_inventory_is_complete() -> None:
    # The inventory this file checks against, so a new setting cannot slip past it.
    assert {"TEMPORAL_ADDRESS", "BOXOFFICE_ATOM_API_KEY", "BOXOFFICE_CODEC_KEYS", "BOXOFFICE_WORKER_ROLES"} <= set(ALL)
    assert {
        "BOXOFFICE_ATOM_API_KEY",
        "BOXOFFICE_ONEBOX_CLIENT_SECRET",
        "BOXOFFICE_TEVO_API_SECRET",
        "BOXOFFICE_ATM_WEBHOOK_SECRETS",
        "BOXOFFICE_ACME_API_KEY",
        "BOXOFFICE_CODEC_AUTH_TOKEN",
    } <= SECRETS


def test_compose_sets_every_variable_and_writes_no_secret() -> None:
    compose = load("compose.yaml")[0]
    for service in ("worker", "webhooks", "codec-server"):
        env = compose["services"][service]["environment"]
        assert set(ALL) <= set(env), f"{service} lacks {sorted(set(ALL) - set(env))}"
        for name in SECRETS:
            assert str(env[name]).startswith("${"), f"{name} must come from the environment"
    assert str(compose["services"]["postgresql"]["environment"]["POSTGRES_PASSWORD"]).startswith("${")
    assert compose["services"]["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"]


def test_compose_serves_the_ui_through_the_codec_server_on_one_origin() -> None:
    """As `boxoffice dev` (tests/test_ui_compose.py): the browser's origin, localhost:8080, is the codec
    server's port, which serves the UI server (not published) with the codec under /codec."""
    services = load("compose.yaml")[0]["services"]
    ui, codec = services["temporal-ui"], services["codec-server"]
    assert "ports" not in ui
    assert codec["ports"] == [f"8080:{codec['environment']['BOXOFFICE_CODEC_PORT']}"]
    assert codec["environment"]["BOXOFFICE_CODEC_UI_UPSTREAM"] == "http://temporal-ui:8080"  # the UI image's port
    origin = "http://localhost:8080"
    assert codec["environment"]["BOXOFFICE_CODEC_CORS_ORIGINS"] == origin == ui["environment"]["TEMPORAL_CORS_ORIGINS"]
    assert ui["environment"]["TEMPORAL_CODEC_ENDPOINT"] == f"{origin}/codec"
    # The UI is not deployed by boxoffice on Kubernetes: its codec server stays the bare codec.
    assert not config()["BOXOFFICE_CODEC_UI_UPSTREAM"]


def images(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "image"] + [i for v in node.values() for i in images(v)]
    if isinstance(node, list):
        return [i for v in node for i in images(v)]
    return []


# boxoffice's own image in compose is tagged with the build being deployed (its Worker Deployment build id).
BUILD_IMAGE = "boxoffice:${BOXOFFICE_BUILD_ID:?the build being deployed, e.g. the git commit}"


@pytest.mark.parametrize("path", ["compose.yaml", *K8S])
def test_images_are_pinned(path: str) -> None:
    for image in images(load(path)):
        if image == BUILD_IMAGE:
            continue
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11\.\d+-slim", dockerfile, re.M)


def test_kubernetes_provides_every_variable_from_config_or_secret() -> None:
    data = config()
    assert not SECRETS & set(data), "a secret in the ConfigMap"
    referenced = set()
    for name, template in pod_templates().items():
        for container in template["spec"]["containers"]:
            assert container["envFrom"] == [{"configMapRef": {"name": "boxoffice-config"}}], name
            for entry in container.get("env", []):
                if "valueFrom" in entry:
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == "boxoffice-secrets"
                else:
                    assert entry["name"] not in SECRETS
                referenced.add(entry["name"])
    # The build id is the controller's TEMPORAL_WORKER_BUILD_ID (test_workers_are_one_build_of_a_worker_deployment).
    injected = {"BOXOFFICE_BUILD_ID"}
    assert set(ALL) - injected <= set(data) | referenced, sorted(set(ALL) - injected - set(data) - referenced)


def test_one_worker_container_per_role_in_each_version_pod() -> None:
    """Each role is a container of the version's pod, on a port of its own (the pod shares one network),
    ready once its worker polls; provider roles hold their provider's credentials."""
    data = config()
    containers = worker_containers()
    assert set(containers) == set(ROLES)
    ports: list[int] = []
    for role, container in containers.items():
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["BOXOFFICE_WORKER_ROLES"] == role
        health = int((env.get("BOXOFFICE_HEALTH_BIND") or data["BOXOFFICE_HEALTH_BIND"]).rpartition(":")[2])
        metrics = int((env.get("BOXOFFICE_METRICS_BIND") or data["BOXOFFICE_METRICS_BIND"]).rpartition(":")[2])
        ports += [health, metrics]
        assert {p["containerPort"] for p in container["ports"]} == {health, metrics}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/healthz", "port": health}, role
        secrets = {e["name"] for e in container["env"] if "valueFrom" in e}
        provider = {
            "atom": AtomSettings,
            "onebox": OneboxSettings,
            "tevo": TevoSettings,
            "atm": AtmSettings,
            "acme": AcmeSettings,
        }.get(role)
        needed = {n for n, secret in variables(provider).items() if secret} if provider else set()
        assert needed | {"BOXOFFICE_CODEC_KEYS"} <= secrets, f"{role} lacks its provider's credentials"
    assert len(ports) == len(set(ports)), "two containers of the pod on one port"
    # Every process's metrics are scraped: the PodMonitor names each container's metrics port.
    [monitor] = load("k8s/monitoring.yaml")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= worker_deployment()["spec"]["template"]["metadata"]["labels"].items()
    )
    scraped = {endpoint["port"] for endpoint in monitor["spec"]["podMetricsEndpoints"]}
    for role, container in containers.items():
        [metrics] = [p for p in container["ports"] if p["name"].startswith("metrics")]
        assert metrics["name"] in scraped, role


def test_compose_runs_the_current_temporal_server_with_admin_tools_jobs() -> None:
    services = load("compose.yaml")[0]["services"]
    assert not [i for i in images(services) if "auto-setup" in i], "temporalio/auto-setup is deprecated"
    server, schema, namespace = services["temporal"], services["temporal-schema"], services["temporal-namespace"]
    version = server["image"].removeprefix("temporalio/server:")
    # Worker Versioning (Worker Deployments) needs server 1.29.1 or later; tools match the server.
    assert tuple(int(n) for n in version.split(".")) >= (1, 29, 1)
    assert (
        schema["image"] == namespace["image"] == services["worker-set-current"]["image"] == (f"temporalio/admin-tools:{version}")
    )
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
    # Kubernetes: one WorkerDeployment, whose Temporal name is <k8s namespace>/<name>; the controller
    # names each version (image tag + pod template hash) and tells the pods, which must not say otherwise.
    deployment = worker_deployment()
    assert (deployment["apiVersion"], deployment["kind"]) == ("temporal.io/v1alpha1", "WorkerDeployment")
    meta = deployment["metadata"]
    assert config()["BOXOFFICE_DEPLOYMENT_NAME"] == f"{meta['namespace']}/{meta['name']}"
    for container in worker_containers().values():
        assert not {e["name"] for e in container["env"]} & (set(CONTROLLER_VARIABLES) | set(CONTROLLER_VARIABLES.values()))
    # One build is one image: the controller derives the build id from the first container's tag.
    assert len({c["image"] for c in worker_containers().values()}) == 1
    for settings_name, ours in CONTROLLER_VARIABLES.items():
        field = next(
            f
            for f in WorkerSettings.model_fields.values()
            if f.validation_alias is not None and ours in getattr(f.validation_alias, "choices", [])
        )
        assert field.validation_alias == AliasChoices(settings_name, ours), "the controller's name must win"


def test_the_worker_controller_keeps_each_build_until_it_drains() -> None:
    """The WorkerDeployment's fields, as the controller's CRD (v1alpha1, chart 0.27) defines them."""
    documents = load("k8s/workers.yaml")
    [connection] = [d for d in documents if d["kind"] == "Connection"]
    assert connection["apiVersion"] == "temporal.io/v1alpha1"
    assert connection["spec"]["hostPort"] == config()["TEMPORAL_ADDRESS"]
    spec = worker_deployment()["spec"]
    assert set(spec) <= {
        "replicas",
        "template",
        "workerOptions",
        "rollout",
        "sunset",
        "minReadySeconds",
        "progressDeadlineSeconds",
    }
    assert spec["workerOptions"] == {
        "connectionRef": {"name": connection["metadata"]["name"]},
        "temporalNamespace": config()["TEMPORAL_NAMESPACE"],
    }
    rollout = spec["rollout"]
    assert rollout["strategy"] in {"Manual", "AllAtOnce", "Progressive"}
    if rollout["strategy"] == "Progressive":
        assert rollout["steps"]
        for step in rollout["steps"]:
            assert set(step) == {"rampPercentage", "pauseDuration"} and 1 <= step["rampPercentage"] <= 99
            assert seconds(step["pauseDuration"]) >= 30
    sunset = spec["sunset"]
    assert set(sunset) == {"scaledownDelay", "deleteDelay"}
    # A drained version is one no open pinned purchase needs: its pods may go, but not at once.
    assert 0 < seconds(sunset["scaledownDelay"]) <= seconds(sunset["deleteDelay"])
    for document in documents:
        assert document["metadata"]["namespace"] == "boxoffice"
    assert len(worker_deployment()["metadata"]["name"]) <= 63


def seconds(duration: str) -> float:
    """A Go duration such as 10m, 1h30m, 45s."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def test_workers_scale_on_task_queue_backlog_and_no_scaled_target_sets_replicas() -> None:
    data = config()
    documents = kubernetes()
    assert not [d for d in documents if d["kind"] == "HorizontalPodAutoscaler"], "CPU says nothing of a backlog"
    [scaler] = resource_templates("ScaledObject")
    assert scaler["spec"]["workerDeploymentRef"] == {"name": worker_deployment()["metadata"]["name"]}
    template = scaler["spec"]["template"]
    assert template["apiVersion"] == "keda.sh/v1alpha1"
    spec = template["spec"]
    assert spec["scaleTargetRef"] == {}  # the controller fills in each version's Deployment
    # A drained version idles to 0 (the controller's sunset scales it so; KEDA must not undo it).
    assert spec["idleReplicaCount"] == 0 < spec["minReplicaCount"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "temporal"
    metadata = trigger["metadata"]
    # The controller fills these in per version; a value written here would be refused by its webhook.
    assert metadata["workerDeploymentName"] == metadata["workerDeploymentBuildId"] == metadata["namespace"] == ""
    assert metadata["endpoint"] == data["TEMPORAL_ADDRESS"]
    assert metadata["taskQueue"] == data["BOXOFFICE_TASK_QUEUE"]
    assert set(metadata["queueTypes"].split(",")) == {"workflow", "activity"}
    assert int(metadata["targetQueueSize"]) > 0
    # Keeps a DRAINING version's pods while purchases pinned to it are open, even with no backlog.
    assert metadata["includeRunningWorkflowCount"] == "true"
    assert set(metadata) <= {
        "endpoint",
        "namespace",
        "taskQueue",
        "queueTypes",
        "targetQueueSize",
        "activationTargetQueueSize",
        "workerDeploymentName",
        "workerDeploymentBuildId",
        "includeRunningWorkflowCount",
        "workflowTaskQueueForCount",
        "minConnectTimeout",
        "unsafeSsl",
        "tlsServerName",
        "enableTLS",
    }
    # An autoscaled workload sets no replicas (each apply would reset what the scaler chose).
    assert "replicas" not in worker_deployment()["spec"]
    scaled = {d["spec"]["scaleTargetRef"].get("name") for d in documents if d["kind"] == "ScaledObject"}
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        assert deployment["metadata"]["name"] not in scaled or "replicas" not in deployment["spec"]


def test_every_pod_template_meets_the_restricted_pod_security_profile() -> None:
    """https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted), plus a
    read-only root filesystem (only emptyDir mounts are written) and no service-account token."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    [user] = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    templates = pod_templates()
    assert {"WorkerDeployment/boxoffice", "Deployment/boxoffice-webhooks", "Deployment/boxoffice-codec-server"} <= set(templates)
    for name, template in templates.items():
        pod = template["spec"]
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert (str(security["runAsUser"]), str(security["runAsGroup"])) == user, f"{name}: not the image's user"
        assert security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert not {"hostNetwork", "hostPID", "hostIPC", "hostUsers"} & set(pod), name
        allowed_volumes = {
            "configMap",
            "csi",
            "downwardAPI",
            "emptyDir",
            "ephemeral",
            "persistentVolumeClaim",
            "projected",
            "secret",
        }
        empty_dirs = set()
        for volume in pod.get("volumes", []):
            [source] = set(volume) - {"name"}
            assert source in allowed_volumes, f"{name}: {source} volume"
            if source == "emptyDir":
                empty_dirs.add(volume["name"])
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert not {"privileged", "runAsUser", "runAsNonRoot", "seccompProfile"} & set(context), (
                f"{where}: set once, for the pod"
            )
            assert not any("hostPort" in port for port in container.get("ports", [])), where
            assert {m["name"] for m in container.get("volumeMounts", [])} <= empty_dirs, f"{where}: writes outside an emptyDir"
        # Spread over zones and nodes, each rollout's pods apart from the previous one's.
        spread = pod["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}, name
        for constraint in spread:
            assert constraint["labelSelector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), name
    # compose's boxoffice services likewise.
    services = load("compose.yaml")[0]["services"]
    for service in ("worker", "webhooks", "codec-server"):
        hardened = services[service]
        assert hardened["user"] == ":".join(user) and hardened["read_only"] is True and hardened["tmpfs"] == ["/tmp"]
        assert hardened["cap_drop"] == ["ALL"] and hardened["security_opt"] == ["no-new-privileges:true"]
    [namespace] = load("k8s/namespace.yaml")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for document in kubernetes():
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == namespace["metadata"]["name"], document["metadata"]["name"]


def test_every_deployment_has_a_disruption_budget() -> None:
    documents = kubernetes()
    budgets = [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        assert [
            b
            for b in budgets
            if b["spec"]["selector"]["matchLabels"] == selector
            and ("maxUnavailable" in b["spec"]) != ("minAvailable" in b["spec"])
        ], deployment["metadata"]["name"]
    # The controller's versions: one budget each, rendered onto the version's pods.
    [budget] = resource_templates("PodDisruptionBudget")
    assert budget["spec"]["workerDeploymentRef"] == {"name": worker_deployment()["metadata"]["name"]}
    assert budget["spec"]["template"]["apiVersion"] == "policy/v1"
    spec = budget["spec"]["template"]["spec"]
    assert spec["selector"] == {"matchLabels": {}} and spec["maxUnavailable"] == 1


def test_network_policy_denies_by_default_and_allows_what_each_component_needs() -> None:
    data = config()
    policies = {p["metadata"]["name"]: p["spec"] for p in load("k8s/network.yaml")}
    assert all(p["kind"] == "NetworkPolicy" and p["apiVersion"] == "networking.k8s.io/v1" for p in load("k8s/network.yaml"))
    deny = policies["default-deny"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    def allowing(labels: dict[str, str]) -> list[dict[str, Any]]:
        return [
            p
            for name, p in policies.items()
            if name != "default-deny" and p["podSelector"].get("matchLabels", {}).items() <= labels.items()
        ]

    def ports(rules: list[dict[str, Any]]) -> set[int]:
        return {port["port"] for rule in rules for port in rule.get("ports", [])}

    temporal_port = int(data["TEMPORAL_ADDRESS"].rpartition(":")[2])
    templates = pod_templates()
    workers = allowing(templates["WorkerDeployment/boxoffice"]["metadata"]["labels"])
    egress = [rule for p in workers for rule in p.get("egress", [])]
    assert {temporal_port, 443, 53} <= ports(egress)
    # The providers are reached over the internet, never the cloud metadata address.
    [internet] = [rule for rule in egress for to in rule["to"] if "ipBlock" in to]
    assert "169.254.0.0/16" in internet["to"][0]["ipBlock"]["except"]
    webhooks = allowing(templates["Deployment/boxoffice-webhooks"]["metadata"]["labels"])
    assert int(data["BOXOFFICE_WEBHOOKS_PORT"]) in ports([r for p in webhooks for r in p.get("ingress", [])])
    assert temporal_port in ports([r for p in webhooks for r in p.get("egress", [])])
    codec = allowing(templates["Deployment/boxoffice-codec-server"]["metadata"]["labels"])
    assert int(data["BOXOFFICE_CODEC_PORT"]) in ports([r for p in codec for r in p.get("ingress", [])])
    assert ports([r for p in codec for r in p.get("egress", [])]) == {53}  # it only decodes what it is sent


def test_provider_calls_run_only_where_their_credentials_are() -> None:
    """Fail closed: the workflows container holds no provider credentials, so every provider's calls,
    ACME's order management included, must go to its own role's queue (a rate limit set), and
    each provider role must get every setting its provider requires."""
    data = config()
    containers = worker_containers()
    for settings in (AtomSettings, OneboxSettings, TevoSettings, AtmSettings, AcmeSettings):
        prefix = settings.model_config["env_prefix"]
        assert data.get(f"{prefix}ACTIVITIES_PER_SECOND"), f"{prefix}*: calls would run in the workflows container"
        container = containers[prefix.split("_")[1].lower()]
        given = {e["name"] for e in container["env"]} | {name for name, value in data.items() if value}
        required = {f"{prefix}{name}".upper() for name in settings.required}
        assert required <= given, sorted(required - given)
    assert not any(
        e["name"].startswith(("BOXOFFICE_ATOM", "BOXOFFICE_ONEBOX", "BOXOFFICE_TEVO", "BOXOFFICE_ATM", "BOXOFFICE_ACME"))
        for e in containers["workflows"]["env"]
    )


def test_cluster_dynamic_config_matches_the_dev_servers() -> None:
    # A self-hosted cluster gets the dispatch settings every dev server here runs with.
    config = load("temporal/dynamicconfig.yaml")[0]
    assert {key: [{"value": value}] for key, value in DISPATCH_CONFIG.items()} == config


def test_dev_server_arguments_set_the_dispatch_config() -> None:
    args = dev_server_args()
    assert args[0::2] == ["--dynamic-config-value"] * len(DISPATCH_CONFIG)
    assert args[1::2] == [
        "history.transferProcessorMaxPollRPS=1000",
        "history.timerProcessorMaxPollRPS=1000",
        "frontend.enableExecuteMultiOperation=true",
    ]
    # A database file is written in WAL mode, without a disk sync per write.
    assert dev_server_args(Path("/tmp/t.db"))[len(args) :] == [
        "--db-filename",
        "/tmp/t.db",
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
    ]
