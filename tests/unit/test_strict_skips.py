"""The suite's own rules (tests/conftest.py): under PRIMITIVES_TESTS_STRICT_SKIPS=1 a skip that
is not expected fails the run, a whole module skipped included (review: it escaped)."""

from __future__ import annotations

import os
import subprocess
import sys

from config.settings import REPO_ROOT


def run_pytest(tmp_path, source: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(source)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            str(tmp_path / "test_sample.py"),
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PRIMITIVES_TESTS_STRICT_SKIPS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_module_skipped_whole_fails_a_strict_run(tmp_path):
    done = run_pytest(
        tmp_path,
        "import pytest\npytest.skip('no reason', allow_module_level=True)\n"
        "def test_never(): pass\n",
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "UNEXPECTED SKIP" in done.stdout


def test_a_skipped_test_fails_a_strict_run_and_a_clean_one_passes(tmp_path):
    skipped = run_pytest(tmp_path, "import pytest\ndef test_x():\n    pytest.skip('later')\n")
    assert skipped.returncode == 1 and "UNEXPECTED SKIP" in skipped.stdout
    clean = run_pytest(tmp_path, "def test_x():\n    assert True\n")
    assert clean.returncode == 0, clean.stdout + clean.stderr
