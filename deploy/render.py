"""Render the KubeRay RayService manifest from serve_config.yaml, so the two never drift.

    python -m deploy.render                       # writes deploy/kuberay/rayservice.yaml
    python -m deploy.render --overlay config/gpu.yaml --out rayservice-gpu.yaml

``serveConfigV2`` is serve_config.yaml with config/cluster.yaml laid over it (model replicas
on worker nodes only; the API beside the controller on the head), plus any ``--overlay``. The
cluster: a head group (no models), a CPU worker group and a GPU worker group
(`nvidia.com/gpu`), each worker carrying the `model_node` resource the replicas ask for; Ray's
in-tree autoscaler adds and removes workers as replicas are pending or idle. Secrets come from
the Kubernetes Secret `primitives-secrets` (keys `jwt-secret`, `database-url`): PostgreSQL
lives outside the cluster. Ray's own ports (GCS, dashboard and its job API) answer only with
Ray's token (`authOptions`): the operator makes the token and hands it to every Ray container,
so no other pod can run code on the cluster. The GCS keeps its tables in an external Redis
(`gcsFaultToleranceOptions`, password from the same Secret, key `redis-password`): a head pod
that restarts reloads them, and the worker pods, their replicas and the application keep
serving meanwhile (tests/cluster/test_gcs_restart.py shows it on one machine).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from config.serve_config import SERVE_CONFIG_PATH, load_app_config, load_ray_env, read_config
from config.settings import REPO_ROOT

CLUSTER_OVERLAY = REPO_ROOT / "config" / "cluster.yaml"
MANIFEST = REPO_ROOT / "deploy" / "kuberay" / "rayservice.yaml"
RAY_VERSION = "2.60.0"
IMAGE = "ghcr.io/example/primitives:0.1.0"  # built from deploy/Dockerfile
IMAGE_ROOT = Path("/home/ray/primitives")  # its WORKDIR
SECRET = "primitives-secrets"
# An HA Redis you run beside the cluster (one shard; a managed one, or a chart with
# persistence): the GCS's tables, for a head that restarts.
REDIS_ADDRESS = "primitives-redis:6379"


def serve_config(overlays: list[Path]) -> dict[str, Any]:
    """The Serve config the cluster runs: serve_config.yaml with the overlays laid over."""
    paths = [CLUSTER_OVERLAY, *overlays]
    load_app_config(SERVE_CONFIG_PATH, overlays=paths)  # validate
    document = read_config(SERVE_CONFIG_PATH, paths)
    # On Kubernetes the proxy is reached through the Service: listen on every interface.
    document["http_options"] = {**document.get("http_options", {}), "host": "0.0.0.0"}
    return document


def _env() -> list[dict[str, Any]]:
    def secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}

    # config/ray.env on every node: Ray Serve's fast path (HAProxy, direct ingress) and the
    # switches the benchmark measured.
    ray_env = [{"name": k, "value": v} for k, v in load_ray_env(root=IMAGE_ROOT).items()]
    return [
        {"name": "PRIMITIVES_ENVIRONMENT", "value": "production"},
        secret("PRIMITIVES_JWT_SECRET", "jwt-secret"),
        secret("PRIMITIVES_DATABASE_URL", "database-url"),
        *ray_env,
    ]


def _secrets_check() -> dict[str, Any]:
    def secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key}}}

    return {
        "name": "check-secrets",
        "image": IMAGE,
        "command": ["python", "-m", "deploy.check_secrets"],
        "env": [
            secret("PRIMITIVES_JWT_SECRET", "jwt-secret"),
            {"name": "RAY_REDIS_ADDRESS", "value": REDIS_ADDRESS},
            secret("RAY_REDIS_PASSWORD", "redis-password"),
        ],
        "resources": {"limits": {"cpu": "100m", "memory": "128Mi"}},
    }


def _container(
    name: str, cpu: str, memory: str, gpus: int = 0, ports: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    container: dict[str, Any] = {
        "name": name,
        "image": IMAGE,
        "env": _env(),
        "resources": {"requests": dict(limits), "limits": limits},
    }
    if ports:
        container["ports"] = ports
    return container


def _worker(
    group: str,
    cpu: str,
    memory: str,
    model_slots: int,
    gpus: int,
    min_replicas: int,
    max_replicas: int,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [_container("ray-worker", cpu, memory, gpus)]}
    if gpus:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "groupName": group,
        "replicas": min_replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {"resources": json.dumps({"model_node": model_slots})},
        "template": {"spec": spec},
    }


def manifest(overlays: list[Path] | None = None) -> dict[str, Any]:
    head_ports = [
        {"containerPort": 6379, "name": "gcs"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 8000, "name": "serve"},
        {"containerPort": 8080, "name": "metrics"},
    ]
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "primitives", "labels": {"app.kubernetes.io/name": "primitives"}},
        "spec": {
            "serveConfigV2": yaml.safe_dump(serve_config(overlays or []), sort_keys=False),
            "rayClusterConfig": {
                "rayVersion": RAY_VERSION,
                "authOptions": {"mode": "token"},
                # KubeRay 1.3 or newer: RAY_REDIS_ADDRESS, the password and a storage
                # namespace (the cluster's uid) on the head, and readiness probes that wait
                # for a restarted GCS.
                "gcsFaultToleranceOptions": {
                    "redisAddress": REDIS_ADDRESS,
                    "redisPassword": {
                        "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "redis-password"}}
                    },
                },
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 120},
                "headGroupSpec": {
                    # The head runs Serve's controller, the API, the task queue and the
                    # webhook sender; no model (it has no model_node). The dashboard listens
                    # on the pod's address because the operator deploys through it; Ray's
                    # token guards it. Reach it with kubectl port-forward.
                    "rayStartParams": {"num-cpus": "2", "dashboard-host": "0.0.0.0"},
                    "template": {
                        "spec": {
                            # Before the GCS reaches Redis: no head with an empty Redis
                            # password or a weak JWT secret (deploy/check_secrets.py).
                            "initContainers": [_secrets_check()],
                            "containers": [_container("ray-head", "2", "6Gi", ports=head_ports)],
                        }
                    },
                },
                "workerGroupSpecs": [
                    _worker(
                        "cpu-workers",
                        "4",
                        "8Gi",
                        model_slots=3,
                        gpus=0,
                        min_replicas=1,
                        max_replicas=8,
                    ),
                    _worker(
                        "gpu-workers",
                        "8",
                        "24Gi",
                        model_slots=3,
                        gpus=1,
                        min_replicas=0,
                        max_replicas=2,
                    ),
                ],
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (serveConfigV2) as literal blocks, readable in the manifest."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def render(overlays: list[Path] | None = None) -> str:
    header = (
        "# Generated by `python -m deploy.render` from serve_config.yaml (with "
        "config/cluster.yaml\n# laid over it); do not edit: edit those and render "
        "again (a test checks they agree).\n"
    )
    return header + yaml.dump(manifest(overlays), Dumper=_Dumper, sort_keys=False, width=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(args.overlay))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
