"""How processes find Temporal: the SDK's environment configuration (profiles, TLS), with the
variables deploy/ and Temporal Cloud users already set."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.envconfig import ClientConfigProfile
from temporalio.service import TLSConfig

from workers.settings import WorkerSettings, temporal_connect_config


def test_defaults_to_a_local_server_without_tls() -> None:
    assert temporal_connect_config({}) == {"target_host": "localhost:7233", "namespace": "default"}


def test_the_variables_deploy_sets_keep_working_and_empty_ones_mean_unset() -> None:
    config = temporal_connect_config(
        {
            "TEMPORAL_ADDRESS": "ns.acct.tmprl.cloud:7233",
            "TEMPORAL_NAMESPACE": "ns.acct",
            "TEMPORAL_API_KEY": "key-1",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": "",
            "TEMPORAL_TLS_CLIENT_KEY_PATH": "",
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": "",
        }
    )
    # An API key turns TLS on (Temporal Cloud); the empty paths are ignored, not read as files.
    assert config == {"target_host": "ns.acct.tmprl.cloud:7233", "namespace": "ns.acct", "api_key": "key-1", "tls": True}
    assert temporal_connect_config({"TEMPORAL_API_KEY": ""}) == temporal_connect_config({})


def test_mtls_with_a_private_ca(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_bytes(f"-----{name}-----".encode())
    config = temporal_connect_config(
        {
            "TEMPORAL_ADDRESS": "temporal.internal:7233",
            "TEMPORAL_TLS_CLIENT_CERT_PATH": str(tmp_path / "client.pem"),
            "TEMPORAL_TLS_CLIENT_KEY_PATH": str(tmp_path / "client.key"),
            "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(tmp_path / "ca.pem"),
            "TEMPORAL_TLS_SERVER_NAME": "temporal.internal",
        }
    )
    tls = config["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.server_root_ca_cert == b"-----ca.pem-----"
    assert (tls.client_cert, tls.client_private_key) == (b"-----client.pem-----", b"-----client.key-----")
    assert tls.domain == "temporal.internal"


def test_a_profile_file_picked_by_temporal_profile_and_overridden_by_variables(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"private ca")
    config_file = tmp_path / "temporal.toml"
    config_file.write_text(f"""
[profile.default]
address = "localhost:7233"

[profile.prod]
address = "temporal.prod.internal:7233"
namespace = "boxoffice"

[profile.prod.tls]
server_ca_cert_path = "{tmp_path / "ca.pem"}"
""")
    env = {"TEMPORAL_CONFIG_FILE": str(config_file), "TEMPORAL_PROFILE": "prod"}
    config = temporal_connect_config(env)
    assert (config["target_host"], config["namespace"]) == ("temporal.prod.internal:7233", "boxoffice")
    tls = config["tls"]
    assert isinstance(tls, TLSConfig) and tls.server_root_ca_cert == b"private ca"
    assert temporal_connect_config({**env, "TEMPORAL_NAMESPACE": "other"})["namespace"] == "other"
    # The same file is what the `temporal` CLI reads: one place for both.
    assert ClientConfigProfile.load("prod", config_source=config_file).address == "temporal.prod.internal:7233"


def test_worker_settings_read_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "boxoffice")
    settings = WorkerSettings()
    assert (settings.temporal_address, settings.temporal_namespace) == ("temporal:7233", "boxoffice")
    assert settings.temporal == {"target_host": "temporal:7233", "namespace": "boxoffice"}
