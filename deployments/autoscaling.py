"""Autoscaling on the backlog: Serve's own policy sees only the requests the task queue has
in flight (at most its window), so a deep backlog in the database would never add a replica.
Each model replica reports that model's backlog (tasks queued for it, counted by the queue)
as a custom autoscaling metric; this policy adds it to the ongoing requests:

    desired replicas = (ongoing requests + backlog) / target_ongoing_requests

Serve applies the deployment's ``min_replicas``/``max_replicas``, ``upscale_delay_s`` and
``downscale_delay_s`` around it, as for its default policy (which is this without the
backlog). Replicas that cannot be placed stay pending, which is what makes Ray's cluster
autoscaler add a node. Named in serve_config.yaml:

    autoscaling_config:
      policy: {policy_function: deployments.autoscaling:backlog_policy}
"""

from __future__ import annotations

from typing import Any

from ray.serve.config import AutoscalingContext

BACKLOG = "backlog"


def backlog_policy(ctx: AutoscalingContext) -> tuple[float, dict[str, Any]]:
    """The replicas the requests in flight and the tasks waiting call for."""
    if ctx.current_num_replicas == 0:
        return ctx.target_num_replicas, {}
    reported = (ctx.aggregated_metrics or {}).get(BACKLOG, {})
    backlog = max(reported.values(), default=0.0)  # every replica reports the same count
    target = ctx.config.get_target_ongoing_requests() if ctx.config is not None else 1.0
    return (ctx.total_num_requests + backlog) / target, {}
