"""Traces (observability/tracing.py); the Prometheus and Grafana files beside them."""
