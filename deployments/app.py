"""The application builder: ``serve run serve_config.yaml`` calls ``build_app(args)`` once per
deploy, with the ``args`` of that file (the model registry). It prepares the database once
(the model catalog, and the demo user in development), then composes one ``ModelDeployment``
per registered model (named after it), the keeper of the background actors and the ingress
over them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from ray.serve import Application, Deployment

from config.registry import ModelType, Registry
from config.serve_config import AppArgs, load_app_config
from config.settings import Environment, Settings, get_settings
from deployments.ingress import Ingress
from deployments.keeper import Keeper
from deployments.model import FALLBACK_OPTIONS, ModelDeployment
from storage.catalog import sync_models
from storage.database import make_engine, make_session_factory
from storage.users import ensure_user

log = logging.getLogger(__name__)
INGRESS = "Ingress"
KEEPER = "Keeper"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def serve_http_host() -> str | None:
    """The address Serve's HTTP proxies listen on, asked of the running controller; None
    when there is none to ask."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        config: Any = ray.get(controller.get_http_config.remote(), timeout=30)
        return str(config.host)
    except Exception:  # noqa: BLE001 - no controller, or one of another version: nothing to judge
        return None


def check_exposure(settings: Settings, host: str | None) -> None:
    """Refuse to serve the network in development mode that nobody chose: the demo user's
    password is published and loopback webhooks are allowed there."""
    if host is None or host in LOOPBACK_HOSTS or settings.environment_is_explicit:
        return
    raise RuntimeError(
        f"Serve listens on {host}, beyond loopback, and PRIMITIVES_ENVIRONMENT is not set: "
        "set PRIMITIVES_ENVIRONMENT=production (with a random PRIMITIVES_JWT_SECRET), or "
        "=development explicitly to serve a development platform to the network"
    )


def prepare_database(settings: Settings, registry: Registry) -> None:
    """Once per deploy, not per replica: the catalog rows and the development demo user."""
    engine = make_engine(settings.database_url)
    try:
        with make_session_factory(engine)() as db:
            sync_models(db=db, registry=registry)
            if settings.environment is Environment.development and ensure_user(
                db=db,
                username=settings.demo_user,
                password=settings.demo_password.get_secret_value(),
            ):
                log.warning(
                    "development mode: created demo user %r (password from "
                    "PRIMITIVES_DEMO_PASSWORD, default '111'); the API must stay on "
                    "127.0.0.1",
                    settings.demo_user,
                )
    finally:
        engine.dispose()


def build_app(args: dict[str, Any]) -> Application:
    """The builder ``serve run``/``serve deploy`` call with the file's ``args`` (the registry;
    read from serve_config.yaml when none are given). Serve applies the file's
    ``deployments:`` options itself."""
    return compose_app(AppArgs.model_validate(args) if args else load_app_config().args)


def compose_app(
    args: AppArgs, *, deployment_options: Mapping[str, Mapping[str, Any]] | None = None
) -> Application:
    """The application for ``args``. ``deployment_options`` (by deployment name) are for
    callers that deploy without the config file, such as the tests' local platform."""
    registry = args.registry
    settings = get_settings()
    check_exposure(settings, serve_http_host())
    prepare_database(settings, registry)
    options = deployment_options or {}
    # mypy does not apply class decorators: these are the Deployments serve.deployment made.
    model_deployment, ingress = cast(Deployment, ModelDeployment), cast(Deployment, Ingress)
    detectors: dict[int, Application] = {}
    classifiers: dict[int, Application] = {}
    canaries: dict[int, Application] = {}  # by model id: the canary weights' deployment
    for spec in registry.models:
        opts = options.get(spec.name) or FALLBACK_OPTIONS
        bound = model_deployment.options(name=spec.name, **opts).bind(spec.model_dump(mode="json"))
        (detectors if spec.type is ModelType.detection else classifiers)[spec.id] = bound
        canary = spec.canary_spec()
        if canary is not None:  # the model's options unless the canary has its own
            canary_opts = options.get(spec.canary_name) or opts
            canaries[spec.id] = model_deployment.options(name=spec.canary_name, **canary_opts).bind(
                canary.model_dump(mode="json")
            )
    models = [m.model_dump(mode="json") for m in registry.models]
    # The keeper owns the task queue and the webhook sender (creates, configures, revives);
    # the ingress takes its handle only so that Serve deploys it with the application.
    keeper = (
        cast(Deployment, Keeper)
        .options(name=KEEPER, **options.get(KEEPER, {}))
        .bind(models, detectors, classifiers, args.queue.model_dump(), canaries)
    )
    return ingress.options(name=INGRESS, **options.get(INGRESS, {})).bind(
        models, detectors, classifiers, keeper, args.queue.dispatchers
    )
