"""A Ray cluster on this machine whose worker nodes come and go: Ray's fake multi-node
provider (shipped with Ray) behind the real autoscaler. The head runs no models; worker
nodes carry the `model_node` resource that config/cluster.yaml makes model replicas ask for.

Ray 2.60's wheel lacks the provider's example config, so it is written here; its GCS address
is given explicitly, since Redis holds 6379, where the provider looks by default.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from config.settings import REPO_ROOT
from harness.local_platform import wait_for

__all__ = ["wait_for"]  # the cluster tests import it from here

HEAD = "ray.head.default"
CPU_WORKER = "cpu_worker"
GPU_WORKER = "gpu_worker"


def cluster_config(
    gcs_address: str, *, cpu_workers: int = 4, idle_timeout_minutes: float = 0.2
) -> dict[str, Any]:
    """The autoscaler's cluster config: a head with no `model_node`, a CPU worker type with
    one unit, and a GPU worker type (fake GPUs: the GPU profile's shape) with two."""
    return {
        "cluster_name": "primitives-fake",
        "max_workers": cpu_workers + 1,
        "upscaling_speed": 2.0,
        "idle_timeout_minutes": idle_timeout_minutes,
        "docker": {},
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "auth": {"ssh_user": "ubuntu"},
        "available_node_types": {
            HEAD: {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            CPU_WORKER: {
                "resources": {"CPU": 1, "model_node": 1},
                "node_config": {},
                "min_workers": 0,
                "max_workers": cpu_workers,
            },
            GPU_WORKER: {
                "resources": {"CPU": 2, "GPU": 1, "model_node": 2},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 1,
            },
        },
        "head_node_type": HEAD,
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def ray_bin() -> str:
    return str(Path(sys.executable).parent / "ray")


def start_head(
    folder: Path, port: int, env: dict[str, str], *, dashboard_port: int, **options: Any
) -> str:
    """Start the head with the autoscaler on the fake provider and the dashboard on loopback
    (the state API the tests read replicas' nodes through); its GCS address."""
    from ray._private.services import get_node_ip_address

    address = f"{get_node_ip_address()}:{port}"
    config = folder / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(address, **options)))
    from config.serve_config import load_ray_env

    # config/ray.env (the fast path) for every node's processes, as deploy/cluster.yaml does.
    head_env = {
        **os.environ,
        **load_ray_env(),
        **env,
        "RAY_FAKE_CLUSTER": "1",
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        # Worker nodes' processes import the platform from this checkout.
        "PYTHONPATH": str(REPO_ROOT),
    }
    subprocess.run(
        [
            ray_bin(),
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            f"--autoscaling-config={config}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard_port}",
            "--disable-usage-stats",
        ],
        env=head_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    return address


def stop_cluster() -> None:
    subprocess.run([ray_bin(), "stop", "--force"], capture_output=True, timeout=120)


def alive_workers() -> dict[str, str]:
    """Alive worker nodes: node id -> node type."""
    import ray

    return {
        n["NodeID"]: n.get("Labels", {}).get("ray.io/node-group", "") or _node_type(n)
        for n in ray.nodes()
        if n["Alive"] and "model_node" in n.get("Resources", {})
    }


def _node_type(node: dict[str, Any]) -> str:
    return GPU_WORKER if node.get("Resources", {}).get("GPU") else CPU_WORKER
