#!/usr/bin/env bash
# make observe: a real Prometheus on 127.0.0.1:9090 that scrapes every Ray node of the local
# cluster through Ray's service-discovery file. Start the platform first (make run); Ctrl-C
# stops Prometheus. Import observability/grafana-dashboard.json into Grafana for the views.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v prometheus >/dev/null || bash scripts/ensure-test-tools.sh
promtool check config observability/prometheus.yml
[ -f /tmp/ray/prom_metrics_service_discovery.json ] ||
  echo "note: no Ray cluster has written /tmp/ray/prom_metrics_service_discovery.json yet (make run)"
mkdir -p var/prometheus
echo "Prometheus on http://127.0.0.1:9090 (try: ray_primitives_tasks_total)"
exec prometheus --config.file=observability/prometheus.yml --storage.tsdb.path=var/prometheus \
  --web.listen-address=127.0.0.1:9090 "$@"
