"""deploy/kuberay/rayservice.yaml, checked without a Kubernetes cluster: the embedded Serve
config with Ray's own schema and against the profiles it comes from, the pod templates
with the Kubernetes client's models, and the RayService fields used against the shape
KubeRay's CRD (ray.io/v1 RayService) gives them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from dotenv import dotenv_values
from kubernetes.client import ApiClient, V1PodTemplateSpec
from ray.serve.schema import ServeDeploySchema

from serve_app import kuberay
from serve_app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy" / "kuberay" / "rayservice.yaml"
SECRETS = ROOT / "deploy" / "kuberay" / "secrets.example.yaml"

# The RayService fields this manifest uses and their types in KubeRay's CRD (ray.io/v1,
# ray-operator/config/crd/bases/ray.io_rayservices.yaml). `template` is a core/v1
# PodTemplateSpec, checked with the Kubernetes models below. "[]" marks a list item.
STR, INT, BOOL, STR_MAP, POD, OBJ, LIST = "string", "int32", "bool", "map[string]string", "pod", "object", "list"
FIELDS: dict[str, str] = {
    "apiVersion": STR, "kind": STR, "metadata": OBJ, "metadata.name": STR, "metadata.labels": STR_MAP,
    "spec": OBJ,
    "spec.serveConfigV2": STR,
    "spec.upgradeStrategy": OBJ,
    "spec.upgradeStrategy.type": STR,
    "spec.rayClusterConfig": OBJ,
    "spec.rayClusterConfig.rayVersion": STR,
    "spec.rayClusterConfig.enableInTreeAutoscaling": BOOL,
    "spec.rayClusterConfig.headGroupSpec": OBJ,
    "spec.rayClusterConfig.headGroupSpec.rayStartParams": STR_MAP,
    "spec.rayClusterConfig.headGroupSpec.template": POD,
    "spec.rayClusterConfig.workerGroupSpecs": LIST,
    "spec.rayClusterConfig.workerGroupSpecs[]": OBJ,
    "spec.rayClusterConfig.workerGroupSpecs[].groupName": STR,
    "spec.rayClusterConfig.workerGroupSpecs[].replicas": INT,
    "spec.rayClusterConfig.workerGroupSpecs[].minReplicas": INT,
    "spec.rayClusterConfig.workerGroupSpecs[].maxReplicas": INT,
    "spec.rayClusterConfig.workerGroupSpecs[].rayStartParams": STR_MAP,
    "spec.rayClusterConfig.workerGroupSpecs[].template": POD,
}
REQUIRED = ["spec.rayClusterConfig", "spec.rayClusterConfig.headGroupSpec",
            "spec.rayClusterConfig.headGroupSpec.template"]
REQUIRED_IN_WORKER_GROUP = ["groupName", "minReplicas", "maxReplicas", "template"]
UPGRADE_TYPES = {"NewCluster", "NewClusterWithIncrementalUpgrade", "None"}


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return dict(yaml.safe_load(MANIFEST.read_text()))


def _walk(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    yield path, node
    if FIELDS.get(path) in (POD, STR_MAP):
        return
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item, f"{path}[]")


def _is(kind: str, value: Any) -> bool:
    return {
        STR: isinstance(value, str),
        INT: isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31,
        BOOL: isinstance(value, bool),
        STR_MAP: isinstance(value, dict) and all(isinstance(v, str) for v in value.values()),
        POD: isinstance(value, dict),
        OBJ: isinstance(value, dict),
        LIST: isinstance(value, list),
    }[kind]


def _groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return {"head": cluster["headGroupSpec"], **{g["groupName"]: g for g in cluster["workerGroupSpecs"]}}


def _pod(group: dict[str, Any]) -> V1PodTemplateSpec:
    # The client's own deserializer: unknown fields are dropped, so compare the round trip.
    template: V1PodTemplateSpec = ApiClient()._ApiClient__deserialize(group["template"], "V1PodTemplateSpec")
    return template


def test_fields_are_rayservice_fields_of_the_right_type(manifest: dict[str, Any]) -> None:
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    for path, value in _walk(manifest):
        if not path:
            continue
        assert path in FIELDS, f"{path} is not a RayService field this check knows (typo?)"
        assert _is(FIELDS[path], value), f"{path} must be {FIELDS[path]}, is {value!r}"
    for path in REQUIRED:
        assert dict(_walk(manifest)).get(path) is not None, f"{path} is required"
    for group in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert all(key in group for key in REQUIRED_IN_WORKER_GROUP), group.get("groupName")
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert manifest["spec"]["upgradeStrategy"]["type"] in UPGRADE_TYPES
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == ray.__version__


def test_serve_config_is_a_valid_serve_config_derived_from_the_profiles(manifest: dict[str, Any]) -> None:
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded == kuberay.serve_config(), "run `python -m serve_app.kuberay`"
    assert kuberay.main(["--check"]) == 0


def test_the_check_catches_a_drifted_profile(tmp_path: Path) -> None:
    production = yaml.safe_load(kuberay.PRODUCTION.read_text())
    production["http_options"]["request_timeout_s"] = 99
    changed = tmp_path / "production.yaml"
    changed.write_text(yaml.safe_dump(production))
    stale = kuberay.rewrite(MANIFEST.read_text(), kuberay.serve_config())
    assert kuberay.embedded_config(stale) != kuberay.serve_config(production=changed)
    assert kuberay.embedded_config(kuberay.rewrite(stale, kuberay.serve_config(production=changed))) == \
        kuberay.serve_config(production=changed)


def test_pod_templates_are_valid_pod_templates(manifest: dict[str, Any]) -> None:
    client = ApiClient()
    for name, group in _groups(manifest).items():
        pod = _pod(group)
        # Nothing was dropped as unknown: the template is exactly what the models hold.
        assert client.sanitize_for_serialization(pod) == group["template"], name
        (container,) = pod.spec.containers
        assert container.image and container.name, name
        assert container.resources.requests["cpu"] and container.resources.requests["memory"], name
        assert container.resources.limits["memory"], name
        mounted = {m.name for m in container.volume_mounts or []}
        assert mounted <= {v.name for v in pod.spec.volumes or []}, name
        assert pod.spec.security_context.run_as_non_root and pod.spec.security_context.run_as_user != 0


def test_gpu_group_gets_a_gpu_and_the_embedder_asks_for_one(manifest: dict[str, Any]) -> None:
    groups = _groups(manifest)
    gpu = _pod(groups["gpu"]).spec.containers[0]
    assert gpu.resources.limits["nvidia.com/gpu"] == "1" and gpu.image.endswith("-gpu")
    for name in ("head", "cpu"):
        assert "nvidia.com/gpu" not in (_pod(groups[name]).spec.containers[0].resources.limits or {})
    assert groups["head"]["rayStartParams"]["num-cpus"] == "0"  # no replicas on the head
    app = yaml.safe_load(manifest["spec"]["serveConfigV2"])["applications"][0]
    embedder = next(d for d in app["deployments"] if d["name"] == "FaceEmbedder")
    options = embedder["ray_actor_options"]
    assert 0 < options["num_gpus"] <= 1
    # Every replica the GPU takes also finds its CPUs in the pod.
    per_gpu = round(1 / options["num_gpus"])
    assert per_gpu * options["num_cpus"] <= float(gpu.resources.requests["cpu"])


def _secret_keys() -> dict[str, set[str]]:
    return {doc["metadata"]["name"]: set(doc["stringData"]) for doc in yaml.safe_load_all(SECRETS.read_text())}


def test_secrets_and_environment(manifest: dict[str, Any]) -> None:
    secrets = _secret_keys()
    settings = {name.upper() for name in Settings.model_fields}
    ray_env = {k: v for k, v in dotenv_values(ROOT / "configs" / "ray.env").items()}
    api_keys_file = Path(yaml.safe_load(manifest["spec"]["serveConfigV2"])
                         ["applications"][0]["runtime_env"]["env_vars"]["API_KEYS_FILE"])
    for name, group in _groups(manifest).items():
        pod = _pod(group)
        container = pod.spec.containers[0]
        env = {e.name: e for e in container.env}
        for secret_env in ("QDRANT_URL", "QDRANT_API_KEY"):
            ref = env[secret_env].value_from.secret_key_ref
            assert ref.key in secrets[ref.name], f"{name}: {secret_env} from a key the Secrets lack"
        # Ray's process settings, exactly as the local profile has them.
        assert {k: env[k].value for k in ray_env} == ray_env, name
        assert set(env) <= settings | set(ray_env) | {"RAY_USAGE_STATS_ENABLED"}, name
        # The API-key file of production.yaml comes from the Secret, at that path.
        mount = next(m for m in container.volume_mounts if api_keys_file.is_relative_to(m.mount_path))
        volume = next(v for v in pod.spec.volumes if v.name == mount.name)
        item = str(api_keys_file.relative_to(mount.mount_path))
        assert any(i.path == item and i.key in secrets[volume.secret.secret_name] for i in volume.secret.items)
