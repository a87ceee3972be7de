"""API keys from the Python client and the CLI (docs/api.md §E12), against the API served
over real HTTP: a program holds a key, never a password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from config.settings import REPO_ROOT
from harness.api_server import Server
from harness.no_queue import NoQueue
from primitives_client import Client, PrimitivesError
from serve_app.main import create_app


@pytest.fixture
def server(settings, registry, sessions, read_sessions) -> Iterator[Server]:
    app = create_app(
        settings=settings,
        registry=registry,
        session_factory=sessions,
        read_session_factory=read_sessions,
        queue=NoQueue(),
    )
    with Server(app) as running:
        yield running


def cli(
    server: Server, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    """``primitives --url <server> ARGS`` in another process, with only ``env`` set."""
    return subprocess.run(
        [sys.executable, "-m", "primitives_client.cli", "--url", server.url, *args],
        env={
            "PATH": os.environ["PATH"],
            "PYTHONPATH": str(REPO_ROOT),
            "XDG_CONFIG_HOME": env.pop("XDG_CONFIG_HOME"),
            **env,
        },
        input=stdin + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_client_makes_lists_uses_and_revokes_a_key(server, make_user, sample_jpeg):
    owner = Client(server.url)
    owner.login(*make_user("alice"))
    made = owner.create_key("nightly")
    program = Client(server.url, api_key=made["key"])
    task = program.submit(sample_jpeg)
    assert [t["id"] for t in owner.list()] == [task["id"]]
    assert [k["name"] for k in owner.list_keys()] == ["nightly"]
    with pytest.raises(PrimitivesError) as refused:
        program.list_keys()
    assert refused.value.status_code == 403
    owner.revoke_key(made["id"])
    with pytest.raises(PrimitivesError) as gone:
        program.me()
    assert gone.value.status_code == 401
    with pytest.raises(ValueError):
        Client(server.url, "token", api_key=made["key"])


def test_the_cli_manages_keys_and_runs_with_primitives_api_key(
    server, make_user, sample_jpeg, tmp_path
):
    name, password = make_user("alice")
    home = str(tmp_path / "config")
    logged_in = cli(
        server, "login", "-u", name, "--password-stdin", XDG_CONFIG_HOME=home, stdin=password
    )
    assert logged_in.returncode == 0, logged_in.stderr
    created = cli(server, "keys", "create", "ci job", XDG_CONFIG_HOME=home)
    assert created.returncode == 0, created.stderr
    made = json.loads(created.stdout)
    assert "shown this once" in created.stderr
    listed = cli(server, "keys", "list", XDG_CONFIG_HOME=home)
    assert made["key"] not in listed.stdout
    assert json.loads(listed.stdout)["name"] == "ci job"
    image = tmp_path / "a.jpg"
    image.write_bytes(sample_jpeg)
    # Another machine: no login, only the key.
    elsewhere = str(tmp_path / "elsewhere")
    submitted = cli(
        server, "submit", str(image), XDG_CONFIG_HOME=elsewhere, PRIMITIVES_API_KEY=made["key"]
    )
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["id"] > 0
    refused = cli(server, "keys", "list", XDG_CONFIG_HOME=elsewhere, PRIMITIVES_API_KEY=made["key"])
    assert refused.returncode == 1 and "error 403" in refused.stderr
    revoked = cli(server, "keys", "revoke", str(made["id"]), XDG_CONFIG_HOME=home)
    assert revoked.returncode == 0, revoked.stderr
    after = cli(server, "me", XDG_CONFIG_HOME=elsewhere, PRIMITIVES_API_KEY=made["key"])
    assert after.returncode == 1 and "error 401" in after.stderr
