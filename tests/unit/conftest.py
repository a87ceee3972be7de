"""Unit tests never start Ray: make any attempt fail loudly (as Ray Serve's own unit tests do)."""

import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    import ray

    def refuse(*_args, **_kwargs):
        raise RuntimeError("unit tests must not start Ray")

    monkeypatch.setattr(ray, "init", refuse)
