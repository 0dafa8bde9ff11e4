"""The face-pipeline Grafana dashboard, as code (grafana-foundation-sdk).

    .venv/bin/python deploy/grafana/dashboard.py     # rewrites dashboards/face-pipeline.json

The first seven panels are the deployment plan's "Example Grafana Dashboard", in its
order; the rest are the system metrics the plan lists (request rate, Qdrant latency,
the embedder's batches). tests/test_monitoring_config.py checks that the committed JSON
is what this file generates; tests/e2e/test_prometheus.py runs every panel's query
against a real Prometheus scraping the running service.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, gauge, piechart, stat, timeseries
from grafana_foundation_sdk.builders.common import GraphThresholdsStyleConfig, ReduceDataOptions
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, GraphTresholdsStyleMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import DataSourceRef, Panel, RowPanel, Threshold, ThresholdsMode
from grafana_foundation_sdk.models.piechart import PieChartLabels, PieChartType
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "face-pipeline.json"
# The uid deploy/grafana/provisioning/datasources/prometheus.yml gives the data source.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="prometheus")
QUANTILES = (0.5, 0.95, 0.99)
# Ray Serve's own batch metrics of the embedder's batched method.
EMBED_BATCH = 'deployment="FaceEmbedder",function_name="embed"'


def query(expr: str, legend: str = "", ref: str = "A") -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref)


def instant(expr: str, legend: str = "", ref: str = "A") -> Dataquery:
    """A value over the dashboard's whole time range (gauges, pie, distribution)."""
    return query(expr, legend, ref).instant()


def steps(*pairs: tuple[float | None, str]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in pairs])


def ratio(numerator: str, denominator: str) -> str:
    return f"sum(increase({numerator}[$__range])) / sum(increase({denominator}[$__range]))"


def last_value() -> ReduceDataOptions:
    return ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def timeseries_panel(title: str, unit: str, description: str) -> timeseries.Panel:
    return timeseries.Panel().title(title).unit(unit).min(0).span(12).height(8).description(description)


def with_limits(panel: timeseries.Panel, *pairs: tuple[float | None, str]) -> timeseries.Panel:
    """Threshold lines drawn on the chart (the targets the alerts use)."""
    return panel.thresholds(steps(*pairs)).thresholds_style(
        GraphThresholdsStyleConfig().mode(GraphTresholdsStyleMode.LINE))


def latency_panel(title: str, histogram: str, target_s: float) -> timeseries.Panel:
    panel = with_limits(
        timeseries_panel(title, "s", f"P50/P95/P99 of every answer, refusals and failures included "
                                     f"(plan target: P95 < {target_s * 1000:.0f} ms; 1 s is the rollback line)."),
        (None, "green"), (target_s, "orange"), (1.0, "red"))
    for index, q in enumerate(QUANTILES):
        expr = f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket[$__rate_interval])))"
        panel = panel.with_target(query(expr, f"P{round(q * 100)}", "ABC"[index]))
    return panel


def plan_panels() -> list[Builder[Panel]]:
    """The plan's "Example Grafana Dashboard", panels 1-7 in its order and with its titles."""
    return [
        # 1. Enrollment success rate (gauge, green if >95%)
        gauge.Panel().title("Enrollment success rate").unit("percentunit").min(0).max(1).span(6).height(8)
        .description("Enrollments stored / enrollment requests over the time range; target > 95%.")
        .reduce_options(last_value())
        .thresholds(steps((None, "red"), (0.95, "green")))
        .with_target(instant(ratio("enrollment_success_total", "enrollment_attempts_total"), "success rate")),
        # 2. Verification pass rate (gauge, green if 85-92%)
        gauge.Panel().title("Verification pass rate").unit("percentunit").min(0).max(1).span(6).height(8)
        .description("Verified / verification requests over the time range; expected 85-92% "
                     "(below: false rejects, above: false accepts likely).")
        .reduce_options(last_value())
        # Grafana colours a value by the last step it reaches: 92.0% itself stays green.
        .thresholds(steps((None, "red"), (0.85, "green"), (0.9201, "orange")))
        .with_target(instant(ratio("verification_verified_total", "verification_attempts_total"), "pass rate")),
        # 3. Enrollment latency (line chart, P50/P95/P99)
        latency_panel("Enrollment latency", "enrollment_latency_seconds", 0.5),
        # 4. Verification latency (line chart, P50/P95/P99)
        latency_panel("Verification latency", "verification_latency_seconds", 0.3),
        # 5. Similarity score distribution (histogram): the buckets of the similarity
        # histogram over the time range, one bar per upper bound.
        bargauge.Panel().title("Similarity score distribution").unit("short").span(12).height(8)
        .description("Verifications by similarity bucket (upper bound) over the time range.")
        .display_mode(BarGaugeDisplayMode.BASIC).orientation(VizOrientation.VERTICAL)
        .reduce_options(last_value())
        .with_target(instant("sum by (le) (increase(verification_similarity_bucket[$__range]))", "{{le}}")
                     .format(PromQueryFormat.HEATMAP)),
        # 6. Error rate by type (pie chart)
        piechart.Panel().title("Error rate by type").unit("short").span(12).height(8)
        .description("Refused and failed requests by code over the time range (4xx and 5xx).")
        .pie_type(PieChartType.PIE).display_labels([PieChartLabels.PERCENT])
        .reduce_options(last_value())
        .with_target(instant("sum by (code) (increase(api_errors_total[$__range]))", "{{code}}")),
        # 7. Collection sizes (gauge, identities_v1 count)
        gauge.Panel().title("Collection sizes").unit("short").min(0).span(12).height(8)
        .description("Enrolled identities: points in identities_v1, as the FaceStore last counted them.")
        .reduce_options(last_value())
        .thresholds(steps((None, "green")))
        .with_target(instant('max by (collection) (collection_points{collection="identities_v1"})',
                             "{{collection}}")),
    ]


def system_panels() -> list[Builder[Panel]]:
    """The plan's other system metrics: request rate, Qdrant latency, the embedder's batches."""
    return [
        timeseries_panel("Request rate", "reqps", "API requests per second by endpoint and HTTP status "
                                                  "(health probes and docs excluded).")
        .with_target(query("sum by (endpoint, status) (rate(api_requests_total[$__rate_interval]))",
                           "{{endpoint}} {{status}}")),
        with_limits(timeseries_panel("Server error ratio", "percentunit",
                                     "5xx answers / all requests; alerts at 1% (warning) and 5% (critical, "
                                     "the plan's rollback line)."),
                    (None, "green"), (0.01, "orange"), (0.05, "red"))
        # `or vector(0)`: no 5xx series yet is a ratio of 0, not "no data".
        .with_target(query('(sum(rate(api_requests_total{status=~"5.."}[$__rate_interval])) or vector(0)) '
                           "/ sum(rate(api_requests_total[$__rate_interval]))", "5xx ratio")),
        timeseries_panel("Store latency (Qdrant), P95", "s",
                         "Time of each storage call in the FaceStore deployment, by operation and collection.")
        .with_target(query("histogram_quantile(0.95, sum by (le, operation, collection) "
                           "(rate(store_operation_seconds_bucket[$__rate_interval])))",
                           "{{operation}} {{collection}}")),
        # Ray Serve measures each @serve.batch call (images per batch, batch time) as
        # histograms whose _sum Ray estimates from bucket midpoints: means come from the
        # service's exact counters, quantiles from Ray's buckets.
        timeseries_panel("Embedder batch size", "short",
                         "Images per FaceEmbedder batch (a 3-photo enrollment is 3 images), mean and P95, "
                         "and faces the recognizer embedded per batch, mean.")
        .with_target(query("sum(rate(embedder_images_total[$__rate_interval])) "
                           "/ sum(rate(embedder_batches_total[$__rate_interval]))", "images per batch", "A"))
        .with_target(query("histogram_quantile(0.95, sum by (le) "
                           f"(rate(ray_serve_actual_batch_size_bucket{{{EMBED_BATCH}}}[$__rate_interval])))",
                           "P95 images per batch", "B"))
        .with_target(query("sum(rate(embedder_faces_total[$__rate_interval])) "
                           "/ sum(rate(embedder_batches_total[$__rate_interval]))", "faces per batch", "C")),
        timeseries_panel("Embedder batch time, P95", "s",
                         "One FaceEmbedder batch: the whole call (Ray Serve) and each model stage.")
        .with_target(query("histogram_quantile(0.95, sum by (le) "
                           f"(rate(ray_serve_batch_execution_time_ms_bucket{{{EMBED_BATCH}}}[$__rate_interval])))"
                           " / 1000", "batch", "A"))
        .with_target(query("histogram_quantile(0.95, sum by (le, stage) "
                           "(rate(embedder_stage_seconds_bucket[$__rate_interval])))", "{{stage}}", "B")),
        stat.Panel().title("Gallery faces").unit("short").span(12).height(8)
        .description("Points in faces_v1 (gallery and enrollment faces), as the FaceStore last counted them.")
        .reduce_options(last_value())
        .with_target(instant('max by (collection) (collection_points{collection="faces_v1"})',
                             "{{collection}}")),
    ]


def build() -> Dashboard:
    dashboard = (
        Dashboard("face-pipeline")
        .uid("face-pipeline")
        .tags(["face-pipeline", "ray-serve"])
        .description("The deployment plan's monitoring dashboard (README \"Monitoring\").")
        .time("now-1h", "now")
        .refresh("30s")
        .with_row(Row("Deployment plan"))
    )
    for panel in plan_panels():
        dashboard = dashboard.with_panel(panel)
    dashboard = dashboard.with_row(Row("System"))
    for panel in system_panels():
        dashboard = dashboard.with_panel(panel)
    return dashboard


def render() -> str:
    dashboard = build().build()
    dashboard.panels = [_with_datasource(panel, index) for index, panel in enumerate(dashboard.panels or [], 1)]
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard) + "\n"


def _with_datasource(panel: Panel | RowPanel, panel_id: int) -> Panel | RowPanel:
    # Every panel on the provisioned Prometheus, by uid (not "default"), with a stable id.
    panel.id_val = panel_id
    if isinstance(panel, Panel):
        panel.datasource = DATASOURCE
        for target in panel.targets or []:
            target.datasource = DATASOURCE  # type: ignore[attr-defined]
    return panel


def main(argv: list[str]) -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
