"""Reading ``serve_config.yaml``: the one place where the deployed model registry and the
deployment options live. The application builder gets the registry as its ``args``; Serve
applies the ``deployments:`` options itself under ``serve run``/``serve deploy``, and the local
harnesses (tests, benchmark) and evaluation read the same file through this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from config.registry import ModelSpec, Registry
from config.settings import REPO_ROOT

SERVE_CONFIG_PATH = REPO_ROOT / "serve_config.yaml"
APP_NAME = "primitives"


class AppArgs(BaseModel):
    """The ``args`` of the application in serve_config.yaml (the builder's typed input)."""

    models: list[ModelSpec] = Field(min_length=1)

    @property
    def registry(self) -> Registry:
        return Registry(self.models)


@dataclass(frozen=True)
class AppConfig:
    """One application of a Serve config file."""

    args: AppArgs
    # Serve's per-deployment options (replicas, autoscaling, user_config, ray_actor_options),
    # by deployment name, exactly as written in the file.
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    http_options: dict[str, Any] = field(default_factory=dict)
    logging_config: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> Registry:
        return self.args.registry

    def options_for(self, name: str) -> dict[str, Any]:
        """``Deployment.options(**...)`` keyword arguments for one deployment."""
        return dict(self.deployments.get(name, {}))


def load_app_config(path: Path | str | None = None, app: str = APP_NAME) -> AppConfig:
    """Parse one application of a Serve config file (``serve_config.yaml`` by default)."""
    path = Path(path) if path is not None else SERVE_CONFIG_PATH
    document = yaml.safe_load(path.read_text())
    apps = {a.get("name"): a for a in document.get("applications", [])}
    if app not in apps:
        raise ValueError(f"{path}: no application named {app!r} (found {sorted(apps)})")
    entry = apps[app]
    deployments = {d["name"]: {k: v for k, v in d.items() if k != "name"}
                   for d in entry.get("deployments", [])}
    return AppConfig(args=AppArgs.model_validate(entry.get("args") or {}),
                     deployments=deployments,
                     http_options=dict(document.get("http_options") or {}),
                     logging_config=dict(entry.get("logging_config")
                                         or document.get("logging_config") or {}))


RAY_ENV_PATH = REPO_ROOT / "config" / "ray.env"


def load_ray_env(path: Path | str | None = None) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of ``config/ray.env`` (comments and blank lines skipped)."""
    env: dict[str, str] = {}
    for line in Path(path or RAY_ENV_PATH).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env
