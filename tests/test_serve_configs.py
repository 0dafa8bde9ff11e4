"""Every Serve config names real deployments, and batches can fill."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "serve_config.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_a_valid_serve_config(path: Path) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text()))
    (app,) = config.applications
    assert app.import_path == "serve_app.app:app"
    names = {d.name for d in app.deployments}
    assert names == {"Gateway", "FaceEmbedder", "FaceStore"}
    embedder = next(d for d in app.deployments if d.name == "FaceEmbedder")
    # @serve.batch never fills a batch larger than the requests a replica may hold.
    assert embedder.max_ongoing_requests >= embedder.user_config["max_batch_size"]


def test_local_profile_serves_on_8001_with_one_store_replica() -> None:
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert config["http_options"] == {**config["http_options"], "host": "127.0.0.1", "port": 8001}
    store = next(d for d in config["applications"][0]["deployments"] if d["name"] == "FaceStore")
    assert store["num_replicas"] == 1  # the embedded engine allows one process per shard


def test_production_profile_turns_auth_on() -> None:
    config = yaml.safe_load((ROOT / "configs" / "production.yaml").read_text())
    env_vars = config["applications"][0]["runtime_env"]["env_vars"]
    assert env_vars["AUTH_ENABLED"] == "true" and env_vars["API_KEYS_FILE"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_request_is_access_logged_once_by_the_gateway(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    default = config["logging_config"]["enable_access_log"]
    assert default is False  # the proxy's line and the internal hops' would repeat it
    deployments = config["applications"][0]["deployments"]
    logged = {d["name"] for d in deployments if d.get("logging_config", {}).get("enable_access_log", default)}
    assert logged == {"Gateway"}
