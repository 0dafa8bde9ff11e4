"""deploy/compose.yaml, checked without Docker (`docker compose config` validates it where
Docker is installed): every file it mounts is in the repository, every variable it sets
for the service is one something in the container reads, and the Qdrant server it starts
is the one the service talks to, with the same API key."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dotenv import dotenv_values

from serve_app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
START_SCRIPT = DEPLOY / "docker" / "start.sh"
SERVICE = "face-pipeline"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _bind_sources(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of each bind mount (short syntax, relative to deploy/)."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_every_mounted_file_is_in_the_repository(compose: dict[str, Any]) -> None:
    mounts = [m for service in compose["services"].values() for m in _bind_sources(service)]
    assert mounts, "Prometheus and Grafana get their configuration from the repository"
    for source, _ in mounts:
        path = (DEPLOY / source).resolve()
        assert path.is_relative_to(ROOT), f"{source} lies outside the repository"
        assert path.exists(), f"compose mounts {source}, which is not in the repository"
        if path.is_dir():
            assert any(p.is_file() for p in path.rglob("*")), f"{source} is an empty directory"


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> source (a ./path or a named volume)."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_prometheus_reads_its_rules_and_finds_the_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    prometheus = _mounts(services["prometheus"])
    assert prometheus["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    # rule_files are relative to the config file's directory; each must match mounted rules.
    assert config.get("rule_files"), "prometheus.yml loads no alert rules"
    for pattern in config["rule_files"]:
        container_path = Path("/etc/prometheus") / pattern
        mount = max((m for m in prometheus if container_path.is_relative_to(m)), key=len)
        local = DEPLOY / prometheus[mount] / container_path.relative_to(mount)
        assert list(local.parent.glob(local.name)), f"rule_files {pattern} matches no mounted file"
    # Targets: Ray's service-discovery file must lie in a volume the service writes at the same path.
    service = _mounts(services[SERVICE])
    jobs = config["scrape_configs"]
    sd_files = [f for job in jobs for sd in job.get("file_sd_configs", []) for f in sd["files"]]
    static = [t for job in jobs for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert sd_files or f"{SERVICE}:8080" in static, "Prometheus scrapes nothing of the service"
    for path in sd_files:
        mount = next((m for m in prometheus if Path(path).is_relative_to(m)), None)
        assert mount and service.get(mount) == prometheus[mount], f"{path} is not shared with {SERVICE}"


def test_grafana_is_provisioned_with_prometheus_and_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = _mounts(compose["services"]["grafana"])
    provisioning = DEPLOY / grafana["/etc/grafana/provisioning"]
    datasources = [yaml.safe_load(p.read_text()) for p in (provisioning / "datasources").glob("*.y*ml")]
    urls = {d.get("url") for doc in datasources for d in doc.get("datasources", [])}
    assert "http://prometheus:9090" in urls, f"no datasource for the compose Prometheus: {urls}"
    providers = [yaml.safe_load(p.read_text()) for p in (provisioning / "dashboards").glob("*.y*ml")]
    paths = {p.get("options", {}).get("path") for doc in providers for p in doc.get("providers", [])}
    assert "/var/lib/grafana/dashboards" in paths, f"dashboard providers read {paths}"
    assert sorted((DEPLOY / grafana["/var/lib/grafana/dashboards"]).glob("*.json"))


def test_secret_files_are_kept_out_of_the_repository(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        path = DEPLOY / secret["file"]
        ignored = subprocess.run(["git", "check-ignore", "--quiet", str(path)], cwd=ROOT).returncode == 0
        assert ignored, f"secret {name} ({secret['file']}) must be git-ignored"
    targets = {s["target"] for s in compose["services"][SERVICE]["secrets"]}
    production = yaml.safe_load((ROOT / "configs" / "production.yaml").read_text())
    assert production["applications"][0]["runtime_env"]["env_vars"]["API_KEYS_FILE"] in targets


def _start_script_vars() -> set[str]:
    return set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", START_SCRIPT.read_text()))


def _ray_vars() -> set[str]:
    # Ray reads these itself: Serve's process settings (configs/ray.env) and telemetry.
    return {*dotenv_values(ROOT / "configs" / "ray.env"), "RAY_USAGE_STATS_ENABLED"}


def test_every_variable_set_for_the_service_is_read_by_it(compose: dict[str, Any]) -> None:
    environment = compose["services"][SERVICE]["environment"]
    settings = {name.upper() for name in Settings.model_fields}
    readers = settings | _start_script_vars() | _ray_vars()
    unread = set(environment) - readers
    assert not unread, f"nothing in the container reads {sorted(unread)}"
    assert {"QDRANT_URL", "QDRANT_API_KEY"} <= set(environment) & settings


def test_the_service_uses_the_compose_qdrant_with_its_api_key(compose: dict[str, Any]) -> None:
    services = compose["services"]
    service, qdrant = services[SERVICE], services["qdrant"]
    assert qdrant["image"].startswith("qdrant/qdrant:v")
    assert service["environment"]["QDRANT_URL"] == "http://qdrant:6333"
    key = service["environment"]["QDRANT_API_KEY"]
    assert key.startswith("${QDRANT_API_KEY:?") and qdrant["environment"]["QDRANT__SERVICE__API_KEY"] == key
    assert "qdrant" in service["depends_on"]
    # Data lives in named volumes, not in the containers.
    assert any(v.split(":")[1] == "/qdrant/storage" for v in qdrant["volumes"])
