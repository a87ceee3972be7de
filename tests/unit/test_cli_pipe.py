"""`primitives list | head`: the reader leaving early is not an error (it printed
`error: [Errno 32] Broken pipe` before)."""

from __future__ import annotations

import subprocess
import sys

from config.settings import REPO_ROOT

# The CLI with a client whose listing is long (no server needed: what is under test is the
# CLI's output into a pipe whose reader goes away).
PROGRAM = """
import sys
from primitives_client import cli
cli.Client.list = lambda self, **kw: ({"id": i, "status": "done"} for i in range(200_000))
sys.exit(cli.main(["list"]))
"""


def test_listing_into_a_pipe_that_closes_early_ends_quietly():
    head = subprocess.run(
        f"{sys.executable} -c '{PROGRAM}' | head -n 1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={
            "PRIMITIVES_TOKEN": "t",
            "PRIMITIVES_URL": "http://127.0.0.1:9",
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO_ROOT),
        },
    )
    assert head.stdout.strip() == '{"id": 0, "status": "done"}'
    assert head.returncode == 0, head.stderr
    assert "Broken pipe" not in head.stderr and "Traceback" not in head.stderr
