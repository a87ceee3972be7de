"""The Grafana dashboard asks only for metrics that exist, and the Prometheus config reads
Ray's discovery file."""

from __future__ import annotations

import json
import re

import yaml

from config.settings import REPO_ROOT

OURS = {
    "ray_primitives_tasks_total",
    "ray_primitives_queue_depth",
    "ray_primitives_task_seconds_bucket",
    "ray_primitives_batch_size_bucket",
    "ray_primitives_batch_size_sum",
    "ray_primitives_batch_size_count",
}
SERVE = {"ray_serve_deployment_replica_healthy", "ray_serve_num_http_requests_total"}


def test_the_dashboard_covers_throughput_backlog_latency_batches_and_replicas():
    dashboard = json.loads((REPO_ROOT / "observability" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bray_[a-z_]+", e)}
    assert used <= OURS | SERVE
    assert {
        "ray_primitives_tasks_total",
        "ray_primitives_queue_depth",
        "ray_primitives_task_seconds_bucket",
        "ray_primitives_batch_size_bucket",
        "ray_serve_deployment_replica_healthy",
    } <= used
    latency = " ".join(e for e in exprs if "task_seconds" in e)
    assert all(f"histogram_quantile({q}" in latency for q in ("0.5", "0.95", "0.99"))


def test_prometheus_reads_rays_service_discovery_file():
    config = yaml.safe_load((REPO_ROOT / "observability" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/tmp/ray/prom_metrics_service_discovery.json"]
