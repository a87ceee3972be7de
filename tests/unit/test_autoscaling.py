"""The backlog policy's arithmetic (Serve applies bounds and delays around it)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from deployments.autoscaling import backlog_policy


def _context(
    *,
    replicas: int,
    ongoing: float,
    backlog: dict[str, float] | None,
    target: float = 8,
    target_replicas: int = 1,
) -> Any:
    """A stand-in for Serve's AutoscalingContext with the fields the policy reads."""
    return SimpleNamespace(
        current_num_replicas=replicas,
        target_num_replicas=target_replicas,
        total_num_requests=ongoing,
        aggregated_metrics={"backlog": backlog} if backlog is not None else {},
        config=SimpleNamespace(get_target_ongoing_requests=lambda: target),
    )


def test_the_backlog_counts_as_work_waiting_for_replicas():
    # 16 in flight (the queue's whole window) and 300 waiting: 316 / 8 replicas wanted.
    desired, _ = backlog_policy(_context(replicas=2, ongoing=16, backlog={"r1": 300, "r2": 300}))
    assert desired == 316 / 8


def test_without_a_backlog_it_is_serves_own_rule():
    assert backlog_policy(_context(replicas=3, ongoing=4, backlog={"r1": 0}))[0] == 0.5
    assert backlog_policy(_context(replicas=3, ongoing=12, backlog=None))[0] == 1.5


def test_with_no_replica_it_keeps_the_target():
    assert backlog_policy(_context(replicas=0, ongoing=0, backlog={}, target_replicas=1))[0] == 1
