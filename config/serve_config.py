"""Reading ``serve_config.yaml``: the one place where the deployed model registry and the
deployment options live. The application builder gets the registry as its ``args``; Serve
applies the ``deployments:`` options itself under ``serve run``/``serve deploy``, and the local
harnesses (tests, benchmark) and evaluation read the same file through this module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field

from config.registry import ModelSpec, Registry
from config.settings import REPO_ROOT

SERVE_CONFIG_PATH = REPO_ROOT / "serve_config.yaml"
APP_NAME = "primitives"


class QueueOptions(BaseModel):
    """The task queue's scaling: how many tasks it runs at once, all dispatchers together
    (enough for a full batch on every detector replica), and how many dispatchers (Ray
    actors, each claiming from the database) share them."""

    concurrency: int = Field(default=16, ge=1, le=4096)
    dispatchers: int = Field(default=1, ge=1, le=64)
    # Send the images of tasks claimed together to each model as one handle call with a list,
    # rather than one call per task (bench/RESULTS.md measures both).
    coalesce_calls: bool = False

    @property
    def per_dispatcher(self) -> int:
        """The tasks each dispatcher runs at once (the concurrency shared out, rounded up)."""
        return -(-self.concurrency // self.dispatchers)


class AppArgs(BaseModel):
    """The ``args`` of the application in serve_config.yaml (the builder's typed input)."""

    models: list[ModelSpec] = Field(min_length=1)
    queue: QueueOptions = Field(default_factory=QueueOptions)

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


def _merge(base: Any, over: Any) -> Any:
    """``over`` laid on ``base``: mappings key by key; lists of named entries (deployments)
    entry by name; anything else replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    if (
        isinstance(base, list)
        and isinstance(over, list)
        and all(isinstance(e, dict) and "name" in e for e in [*base, *over])
    ):
        merged = {e["name"]: e for e in base}
        for entry in over:
            merged[entry["name"]] = _merge(merged.get(entry["name"], {}), entry)
        return list(merged.values())
    return over


def read_config(
    path: Path | str | None = None, overlays: Sequence[Path | str] = (), app: str = APP_NAME
) -> dict[str, Any]:
    """The Serve config document, with each overlay's ``args`` and ``deployments`` merged
    into application ``app`` (an overlay holds only what differs, e.g. config/gpu.yaml)."""
    document = yaml.safe_load(Path(path or SERVE_CONFIG_PATH).read_text())
    for overlay in overlays:
        extra = yaml.safe_load(Path(overlay).read_text()) or {}
        for entry in document.get("applications", []):
            if entry.get("name") == app:
                for key in ("args", "deployments"):
                    if key in extra:
                        entry[key] = _merge(entry.get(key, {} if key == "args" else []), extra[key])
    return document


def load_app_config(
    path: Path | str | None = None, app: str = APP_NAME, overlays: Sequence[Path | str] = ()
) -> AppConfig:
    """Parse one application of a Serve config file (``serve_config.yaml`` by default)."""
    path = Path(path) if path is not None else SERVE_CONFIG_PATH
    document = read_config(path, overlays, app)
    apps = {a.get("name"): a for a in document.get("applications", [])}
    if app not in apps:
        raise ValueError(f"{path}: no application named {app!r} (found {sorted(apps)})")
    entry = apps[app]
    deployments = {
        d["name"]: {k: v for k, v in d.items() if k != "name"} for d in entry.get("deployments", [])
    }
    return AppConfig(
        args=AppArgs.model_validate(entry.get("args") or {}),
        deployments=deployments,
        http_options=dict(document.get("http_options") or {}),
        logging_config=dict(entry.get("logging_config") or document.get("logging_config") or {}),
    )


RAY_ENV_PATH = REPO_ROOT / "config" / "ray.env"
# Variables of config/ray.env that name a file of the repository: Ray needs them whole.
RAY_ENV_PATHS = ("RAY_SERVE_HAPROXY_BINARY_PATH",)


def load_ray_env(path: Path | str | None = None, root: Path = REPO_ROOT) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of ``config/ray.env`` (comments and blank lines skipped), a
    relative path among them (``RAY_ENV_PATHS``) made whole against ``root`` (the repository
    here; the image's folder for its manifests)."""
    env: dict[str, str] = {}
    for line in Path(path or RAY_ENV_PATH).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    for key in RAY_ENV_PATHS:
        if key in env and not Path(env[key]).is_absolute():
            env[key] = str(root / env[key])
    return env


def main(argv: list[str] | None = None) -> None:
    """``python -m config.serve_config --overlay config/gpu.yaml --out FILE``: write the merged
    config that ``serve run``/``serve deploy`` take."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", type=Path, default=SERVE_CONFIG_PATH)
    parser.add_argument("--overlay", type=Path, action="append", default=[])
    parser.add_argument("--out", type=Path, default=None, help="default: standard output")
    args = parser.parse_args(argv)
    document = read_config(args.config, args.overlay)
    load_app_config(args.config, overlays=args.overlay)  # validate before writing
    text = yaml.safe_dump(document, sort_keys=False)
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
