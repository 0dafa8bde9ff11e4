"""The shipped monitoring files: Prometheus config and alert rules (checked and unit-tested
by promtool), the relabelling that gives the plan's metric names back, and the Grafana
dashboard (generated from deploy/grafana/dashboard.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import yaml
from ray.util.metrics import Metric

from serve_app.component_metrics import EmbedderMetrics, StoreMetrics
from serve_app.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules" / "face-pipeline.rules.yml"
RULES_TEST = PROMETHEUS / "rules" / "face-pipeline.rules.test.yml"
GRAFANA = ROOT / "deploy" / "grafana"
# A sample of Ray's own metric names (Ray 2.60, one node running this app): none may be renamed.
RAY_OWN = [
    "ray_serve_num_http_requests_total", "ray_serve_deployment_status", "ray_serve_actual_batch_size_bucket",
    "ray_serve_batch_execution_time_ms_bucket", "ray_component_cpu_percentage", "ray_component_rss_mb",
    "ray_health_check_rpc_latency_ms_bucket", "ray_operation_count_total", "ray_node_cpu_utilization",
    "ray_object_store_memory", "ray_grpc_server_req_finished_total", "ray_tasks", "ray_actors",
]


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install prometheus (README \"Monitoring\"; .ci/run installs it)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def service_metrics() -> list[Metric]:
    """Every metric the service's recorders define (Gateway, FaceStore, FaceEmbedder)."""
    recorders = (ServiceMetrics(), StoreMetrics(), EmbedderMetrics())
    return [value for recorder in recorders for value in vars(recorder).values() if isinstance(value, Metric)]


def exported_names(name: str, metric: Metric) -> list[str]:
    """What Ray's agent serves for one metric (before relabelling)."""
    kind = type(metric).__name__
    if kind == "Counter":
        return [f"ray_{name}_total"]
    if kind == "Histogram":
        return [f"ray_{name}_{suffix}" for suffix in ("bucket", "sum", "count")]
    return [f"ray_{name}"]


def relabel(name: str) -> str:
    """Apply the shipped metric_relabel_configs to a metric name, as Prometheus does."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    for rule in config["scrape_configs"][0]["metric_relabel_configs"]:
        assert rule["source_labels"] == ["__name__"] and rule["target_label"] == "__name__"
        match = re.fullmatch(rule["regex"], name)  # Prometheus anchors relabel regexes
        if match:
            name = match.expand(rule["replacement"].replace("$", "\\"))
    return name


def test_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", "prometheus.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name, cwd=RULES.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", RULES_TEST.name, cwd=RULES.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"] if "alert" in rule}
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for test in tests for case in test["alert_rule_test"] if not case["exp_alerts"]}
    assert alerts == fired, f"never shown firing: {sorted(alerts - fired)}"
    assert alerts == quiet, f"never shown quiet: {sorted(alerts - quiet)}"


def test_relabelling_gives_every_service_metric_its_plan_name() -> None:
    metrics = service_metrics()
    assert len(metrics) >= 14
    for metric in metrics:
        for exported in exported_names(metric._name, metric):
            assert relabel(exported) == exported.removeprefix("ray_"), exported


def test_relabelling_keeps_rays_own_metric_names() -> None:
    for name in RAY_OWN:
        assert relabel(name) == name


def test_plan_metric_names_are_what_the_service_exports() -> None:
    plan = ["enrollment_success_total", "enrollment_attempts_total", "verification_verified_total",
            "verification_attempts_total", "verification_similarity_score", "enrollment_latency_seconds_bucket",
            "verification_latency_seconds_bucket"]
    exported = {relabel(name) for metric in service_metrics() for name in exported_names(metric._name, metric)}
    assert set(plan) <= exported


def load_dashboard_code() -> ModuleType:
    spec = importlib.util.spec_from_file_location("face_pipeline_dashboard", GRAFANA / "dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_what_the_code_generates() -> None:
    committed = (GRAFANA / "dashboards" / "face-pipeline.json").read_text()
    assert committed == load_dashboard_code().render(), "run: .venv/bin/python deploy/grafana/dashboard.py"


def test_dashboard_has_the_plans_seven_panels_in_order() -> None:
    dashboard = json.loads((GRAFANA / "dashboards" / "face-pipeline.json").read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    plan = [("Enrollment success rate", "gauge"), ("Verification pass rate", "gauge"),
            ("Enrollment latency", "timeseries"), ("Verification latency", "timeseries"),
            ("Similarity score distribution", "bargauge"), ("Error rate by type", "piechart"),
            ("Collection sizes", "gauge")]
    assert [(panel["title"], panel["type"]) for panel in panels[:7]] == plan
    titles = {panel["title"] for panel in panels}
    assert {"Request rate", "Store latency (Qdrant), P95", "Embedder batch size"} <= titles

    def steps(panel: dict) -> list[tuple[float | None, str]]:
        return [(step["value"], step["color"]) for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]]

    assert steps(panels[0]) == [(None, "red"), (0.95, "green")]
    assert steps(panels[1]) == [(None, "red"), (0.85, "green"), (0.9201, "orange")]
    for latency in panels[2:4]:
        assert [target["legendFormat"] for target in latency["targets"]] == ["P50", "P95", "P99"]
    assert "identities_v1" in panels[6]["targets"][0]["expr"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}


def test_grafana_provisioning_points_at_the_dashboard_and_datasource() -> None:
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [entry["uid"] for entry in source["datasources"]] == ["prometheus"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "face-pipeline.yml").read_text())
    assert provider["providers"][0]["type"] == "file"
