"""Unit tests never start Ray: make any attempt fail loudly (as Ray Serve's own unit tests do)."""

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    import ray

    def refuse(*_args, **_kwargs):
        raise RuntimeError("unit tests must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(autouse=True)
def _no_platform_settings(monkeypatch):
    """Settings read in a unit test come from the test alone, not from variables a running
    platform of the same session (the integration tests') put in the environment."""
    import os

    from config.settings import get_settings

    for name in [n for n in os.environ if n.startswith("PRIMITIVES_")]:
        monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
