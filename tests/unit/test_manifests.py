"""The deployment manifests: the RayService carries serve_config.yaml (never a stale copy),
validates against the RayService schema, and both clusters keep models off the head."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jsonschema
import yaml

from config.serve_config import SERVE_CONFIG_PATH, read_config
from config.settings import REPO_ROOT
from deploy.render import CLUSTER_OVERLAY, MANIFEST, render

KUBERAY = REPO_ROOT / "deploy" / "kuberay"


def test_the_committed_manifest_is_what_serve_config_renders_to():
    assert MANIFEST.read_text() == render(), (
        "deploy/kuberay/rayservice.yaml is stale: run `python -m deploy.render`"
    )


def test_serve_config_v2_is_serve_config_yaml_with_the_cluster_overlay():
    manifest = yaml.safe_load(MANIFEST.read_text())
    served = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    expected = read_config(SERVE_CONFIG_PATH, [CLUSTER_OVERLAY])
    expected["http_options"]["host"] = "0.0.0.0"
    assert served == expected
    # No single process caps the cluster: the queue is several dispatchers there (the `ray
    # up` cluster deploys the same overlay).
    assert served["applications"][0]["args"]["queue"]["dispatchers"] > 1
    deployments = {d["name"]: d for d in served["applications"][0]["deployments"]}
    for name in ("YOLO", "SSD", "model_v1"):
        assert deployments[name]["ray_actor_options"]["resources"] == {"model_node": 1}
        assert (
            deployments[name]["autoscaling_config"]["policy"]["policy_function"]
            == "deployments.autoscaling:backlog_policy"
        )


def test_the_manifest_validates_against_the_rayservice_schema():
    schema = json.loads((KUBERAY / "rayservice.schema.json").read_text())
    manifest = yaml.safe_load(MANIFEST.read_text())
    jsonschema.validate(manifest, schema)
    broken = yaml.safe_load(MANIFEST.read_text())
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] = "many"
    try:
        jsonschema.validate(broken, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("the schema let a string replica count through")


def test_the_cluster_has_a_cpu_and_a_gpu_group_autoscaled_with_secrets_from_a_secret():
    cluster = yaml.safe_load(MANIFEST.read_text())["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    head = cluster["headGroupSpec"]
    assert "model_node" not in head["rayStartParams"].get("resources", "")
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert json.loads(groups["cpu-workers"]["rayStartParams"]["resources"])["model_node"] >= 1
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == 1
    for spec in [head["template"]["spec"]] + [g["template"]["spec"] for g in groups.values()]:
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        for name in ("PRIMITIVES_JWT_SECRET", "PRIMITIVES_DATABASE_URL"):
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "primitives-secrets"
            assert "value" not in env[name]


def test_the_vm_cluster_keeps_models_on_workers():
    config = yaml.safe_load((REPO_ROOT / "deploy" / "cluster.yaml").read_text())
    types = config["available_node_types"]
    assert "model_node" not in types[config["head_node_type"]]["resources"]
    assert all(types[t]["resources"]["model_node"] >= 1 for t in ("cpu_worker", "gpu_worker"))
    assert types["gpu_worker"]["resources"]["GPU"] == 1
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_ray_on_kubernetes_answers_only_with_its_token():
    """Any pod could otherwise submit a job to the dashboard that reads the secrets."""
    cluster = yaml.safe_load(MANIFEST.read_text())["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token"}
    major, minor, _ = (int(p) for p in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52)  # the first Ray with token authentication


def test_the_vm_cluster_keeps_its_secrets_in_a_file_and_ray_behind_its_token():
    config = yaml.safe_load((REPO_ROOT / "deploy" / "cluster.yaml").read_text())
    commands = [
        c
        for key in (
            "setup_commands",
            "head_setup_commands",
            "head_start_ray_commands",
            "worker_start_ray_commands",
        )
        for c in config[key]
    ]
    text = (REPO_ROOT / "deploy" / "cluster.yaml").read_text()
    assert "bashrc" not in " ".join(commands) and "${PRIMITIVES_" not in text
    assert config["file_mounts"]["/home/ubuntu/primitives.env"] == "~/.primitives/cluster.env"
    # The repository is copied to every node without this machine's secrets and database.
    assert {".env", ".env.*", "var/"} <= set(config["rsync_exclude"])
    assert "chmod 600 ~/primitives.env" in config["setup_commands"]
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert command.startswith("set -a && . ~/primitives.env && ")
    assert "RAY_AUTH_MODE=token" in text
    # GCS fault tolerance: the head reads Redis's address from the file (exported by set -a)
    # and its password from there too, never from this file.
    assert "RAY_REDIS_ADDRESS=" in text and "RAY_REDIS_PASSWORD=" in text
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert '--redis-password="$RAY_REDIS_PASSWORD"' in head


def test_the_kubernetes_head_keeps_the_gcs_in_redis_with_its_password_from_the_secret():
    cluster = yaml.safe_load(MANIFEST.read_text())["spec"]["rayClusterConfig"]
    options = cluster["gcsFaultToleranceOptions"]
    assert options["redisAddress"].rpartition(":")[2].isdigit()
    assert options["redisPassword"] == {
        "valueFrom": {"secretKeyRef": {"name": "primitives-secrets", "key": "redis-password"}}
    }
    secret = yaml.safe_load((KUBERAY / "secret.example.yaml").read_text())
    assert secret["stringData"]["redis-password"] == ""  # yours to fill, never ours


JWT = "Zq3v8Rk1xW9pL2mN7bT4cY6hJ0sF5dA1gE8uK3iO9rV2wX7n"
REDIS = "u7Hk2Qp9Lx4Vm1Rz8Tc3"


def check_secrets(**env: str) -> subprocess.CompletedProcess[str]:
    """``python -m deploy.check_secrets`` as a head runs it, with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "deploy.check_secrets"],
        env={"PATH": os.environ["PATH"], **env},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_head_with_the_example_secrets_empty_redis_password_does_not_start():
    example = yaml.safe_load((KUBERAY / "secret.example.yaml").read_text())["stringData"]
    refused = check_secrets(
        PRIMITIVES_JWT_SECRET=JWT,
        RAY_REDIS_ADDRESS="primitives-redis:6379",
        RAY_REDIS_PASSWORD=example["redis-password"],
    )
    assert refused.returncode == 1
    assert "RAY_REDIS_PASSWORD is empty" in refused.stderr
    for weak in ("redis", "the password of the Redis", "aaaaaaaaaaaaaaaaaaaa"):
        refused = check_secrets(
            PRIMITIVES_JWT_SECRET=JWT, RAY_REDIS_ADDRESS="r:6379", RAY_REDIS_PASSWORD=weak
        )
        assert refused.returncode == 1 and "RAY_REDIS_PASSWORD" in refused.stderr
        assert weak not in refused.stderr  # never printed
    started = check_secrets(
        PRIMITIVES_JWT_SECRET=JWT, RAY_REDIS_ADDRESS="r:6379", RAY_REDIS_PASSWORD=REDIS
    )
    assert (started.returncode, started.stderr) == (0, "")
    # Without Redis (no GCS fault tolerance) the password is not needed; the JWT secret is.
    assert check_secrets(PRIMITIVES_JWT_SECRET=JWT).returncode == 0
    refused = check_secrets(PRIMITIVES_JWT_SECRET="", RAY_REDIS_ADDRESS="r:6379")
    assert refused.returncode == 1
    assert "PRIMITIVES_JWT_SECRET is not set" in refused.stderr
    assert "RAY_REDIS_PASSWORD is empty" in refused.stderr


def test_both_clusters_check_their_secrets_before_ray_starts():
    head = yaml.safe_load(MANIFEST.read_text())["spec"]["rayClusterConfig"]["headGroupSpec"]
    (check,) = head["template"]["spec"]["initContainers"]
    assert check["command"] == ["python", "-m", "deploy.check_secrets"]
    env = {e["name"]: e for e in check["env"]}
    assert env["RAY_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "redis-password"
    assert env["PRIMITIVES_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["key"] == "jwt-secret"
    assert env["RAY_REDIS_ADDRESS"]["value"]
    assert "deploy/check_secrets.py" in (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    config = yaml.safe_load((REPO_ROOT / "deploy" / "cluster.yaml").read_text())
    (start,) = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert start.index("-m deploy.check_secrets && ") < start.index("ray start")


def test_make_run_starts_ray_behind_its_token_with_private_files():
    """Ray's gRPC ports listen on every interface; the token is what guards them, and the
    token file Ray writes on the first start is readable by its user only."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = makefile.split("\nrun:", 1)[1].split("\n\n", 1)[0]
    command = recipe.replace("\\\n", " ")
    assert "umask 077 && " in command and "RAY_AUTH_MODE=token" in command
    assert command.index("RAY_AUTH_MODE=token") < command.index("serve run serve_config.yaml")
