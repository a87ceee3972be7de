"""Shared fixtures: a fresh PostgreSQL database per test run, users and tokens via the API."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

FOLDER_MARKERS = {"unit": "unit", "api": "api", "integration": "integration", "gpu": "gpu"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers follow folders: tests/unit -> unit, tests/integration -> integration..."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, FOLDER_MARKERS[folder]))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database, migrated to head, dropped after the run."""
    from harness.scratch_db import create_scratch_database, drop_scratch_database

    url = create_scratch_database("primitives_test")
    try:
        yield url
    finally:
        drop_scratch_database(url)


@pytest.fixture(scope="session")
def app_config():
    """serve_config.yaml's application: the deployed registry and deployment options."""
    from config.serve_config import load_app_config

    return load_app_config()


@pytest.fixture(scope="session")
def registry(app_config):
    return app_config.registry


@pytest.fixture(scope="session")
def sample_jpeg() -> bytes:
    """A scene rendered by our generator (seed 7), as JPEG bytes."""
    from training.render import render_jpeg

    return render_jpeg(7)[0]


# The session, read at the very end for the status pytest exits with (after every plugin's
# sessionfinish, which may change it).
_SESSIONS: list[pytest.Session] = []
# Skips that are expected on a machine that runs the suite as the README says (a fresh Debian
# machine, as root, without a GPU); with PRIMITIVES_TESTS_STRICT_SKIPS=1 (make test, CI) any
# other skip fails the run: a test that quietly did not run proved nothing.
EXPECTED_SKIPS = ("needs CUDA",)
_SKIPPED: list[tuple[str, str]] = []


def _reason(longrepr: object) -> str:
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionstart(session: pytest.Session) -> None:
    _SESSIONS.append(session)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _reason(report.longrepr)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """A whole module skipped (``pytest.skip(..., allow_module_level=True)``, a module-level
    ``importorskip``) is a skip too: its tests never ran."""
    if report.skipped:
        _SKIPPED.append((report.nodeid, _reason(report.longrepr)))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    unexpected = [
        (test, reason)
        for test, reason in _SKIPPED
        if not any(expected in reason for expected in EXPECTED_SKIPS)
    ]
    if unexpected and os.environ.get("PRIMITIVES_TESTS_STRICT_SKIPS") == "1":
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        for test, reason in unexpected:
            if reporter is not None:
                reporter.write_line(f"UNEXPECTED SKIP (fails the run): {test}: {reason}", red=True)
        if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the process with pytest's final status once every report is written, without the
    interpreter's teardown of native modules, in runs that imported Ray: after Ray had shut
    down and every test had passed, that teardown (Ray's core worker, gRPC, torch) once ended
    in a segmentation fault, and CI read the crash, not the result. Runs without Ray tear down
    as usual, so a crash there still shows; a crash during the tests shows in every run
    (faulthandler prints its trace, the Makefile turns it on)."""
    if not _SESSIONS or "ray" not in sys.modules:
        return
    if os.environ.get("PRIMITIVES_TESTS_NATIVE_TEARDOWN") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(_SESSIONS[-1].exitstatus))
