"""Cluster autoscaling, for real: Ray's autoscaler over the fake multi-node provider. A
backlog makes YOLO want another replica, the replica is pending (only worker nodes carry
`model_node`), the autoscaler launches a worker node, tasks complete on the workers, and idle
worker nodes are removed.

YOLO's target of ongoing requests is set above the queue's whole width (the most requests the
queue ever has in flight), so Serve's default policy could never ask for a second replica:
only the backlog policy, which also counts the tasks waiting in the database, can."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from config.settings import REPO_ROOT
from harness.local_platform import free_ports, replicas, start_local_platform, stop_local_platform
from tests.cluster.conftest import add_backlog, write_overlay
from tests.cluster.fake_cluster import alive_workers, start_head, stop_cluster, wait_for

FAST_SCALING = {
    "upscale_delay_s": 2,
    "downscale_delay_s": 5,
    "metrics_interval_s": 1,
    "look_back_period_s": 2,
}
MODELS = ("YOLO", "SSD", "model_v1")


def _replica_nodes(deployment: str, dashboard: str) -> set[str]:
    from ray.util.state import list_actors

    alive = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000)
    return {
        str(a.node_id) for a in alive if a.class_name == f"ServeReplica:primitives:{deployment}"
    }


def _actor_node(name: str, dashboard: str) -> str:
    from ray.util.state import list_actors

    (actor,) = list_actors(
        address=dashboard, filters=[("state", "=", "ALIVE"), ("name", "=", name)]
    )
    return str(actor.node_id)


def test_a_backlog_brings_worker_nodes_up_and_idle_ones_are_removed(
    tmp_path, platform_env, database_url, timings, app_config
):
    import ray

    from storage.database import make_engine, make_session_factory
    from storage.models import Task, TaskResult

    queue_width = app_config.args.queue.concurrency
    above_the_width = queue_width + 4
    overlay = write_overlay(
        tmp_path,
        [
            {
                "name": "YOLO",
                "autoscaling_config": {
                    "min_replicas": 1,
                    "max_replicas": 2,
                    "target_ongoing_requests": above_the_width,
                    **FAST_SCALING,
                },
            },
            {
                "name": "SSD",
                "autoscaling_config": {"min_replicas": 1, "initial_replicas": 1, "max_replicas": 1},
            },
            {"name": "model_v1", "autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
        ],
    )
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    try:
        started = time.monotonic()
        gcs_port, dashboard_port = free_ports(2)
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        address = start_head(
            tmp_path, gcs_port, platform_env, cpu_workers=4, dashboard_port=dashboard_port
        )
        start_local_platform(
            platform_env,
            namespace="primitives-cluster",
            address=address,
            overlays=[REPO_ROOT / "config" / "cluster.yaml", overlay],
        )
        # One replica per model, none on the head: three worker nodes were launched for them.
        timings["three_nodes_up_and_app_running_s"] = round(time.monotonic() - started, 1)
        assert len(alive_workers()) == 3
        head = ray.get_runtime_context().get_node_id()
        workers = set(alive_workers())
        for model in MODELS:  # models on workers only (they need model_node)
            nodes = _replica_nodes(model, dashboard)
            assert nodes and nodes <= workers and head not in nodes, (model, nodes)
        # The queue and the webhook sender stay on the head, beside the API.
        assert _actor_node(platform_env["PRIMITIVES_QUEUE_ACTOR_NAME"], dashboard) == head
        assert _actor_node(platform_env["PRIMITIVES_WEBHOOK_ACTOR_NAME"], dashboard) == head

        ids = add_backlog(sessions, username="cluster", count=400, seed=900)
        backlog_at = time.monotonic()
        timings["fourth_node_up_s"] = wait_for(
            lambda: len(alive_workers()) == 4, 120, "a fourth worker node for YOLO's second replica"
        )
        timings["second_yolo_replica_running_s"] = round(
            wait_for(lambda: replicas("YOLO") == 2, 180, "YOLO's second replica running")
            + timings["fourth_node_up_s"],
            1,
        )
        yolo_nodes = _replica_nodes("YOLO", dashboard)
        assert len(yolo_nodes) == 2 and yolo_nodes <= set(alive_workers())

        def settled() -> bool:
            with sessions() as db:
                return not db.scalar(
                    select(func.count())
                    .select_from(Task)
                    .where(Task.id.in_(ids), Task.status.in_(["queued", "in progress"]))
                )

        wait_for(settled, 300, "the backlog to be done", step=1)
        timings["backlog_of_400_done_s"] = round(time.monotonic() - backlog_at, 1)
        with sessions() as db:
            statuses = dict(
                db.execute(
                    select(Task.status, func.count()).where(Task.id.in_(ids)).group_by(Task.status)
                ).all()
            )
            results = db.scalar(
                select(func.count()).select_from(TaskResult).where(TaskResult.task_id.in_(ids))
            )
        assert statuses == {"done": 400} and results == 400

        drained = time.monotonic()
        wait_for(lambda: replicas("YOLO") == 1, 120, "YOLO back to one replica")
        timings["idle_node_removed_after_drain_s"] = wait_for(
            lambda: len(alive_workers()) == 3, 180, "the idle worker node removed"
        )
        timings["idle_node_removed_after_drain_s"] = round(time.monotonic() - drained, 1)

        from ray import serve

        serve.delete("primitives")
        gone = time.monotonic()
        wait_for(lambda: not alive_workers(), 180, "every worker node removed")
        timings["all_workers_removed_after_app_deleted_s"] = round(time.monotonic() - gone, 1)
    finally:
        engine.dispose()
        try:
            stop_local_platform(platform_env)
        finally:
            stop_cluster()
