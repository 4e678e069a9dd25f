# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Static checks as tests, so `make test` reports them with everything else.

Each runs the real tool on the working tree and fails with the tool's output.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def run(argv: List[str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", NO_COLOR="1")
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def assert_clean(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited {proc.returncode}:\n{proc.stdout[-8000:]}\n{proc.stderr[-4000:]}"


def test_ruff() -> None:
    assert_clean(run([str(BIN / "ruff"), "check", "plugins", "tests", "benchmarks"]))


def test_mypy_plugins_and_tests() -> None:
    # build/pytest-collections holds the ansible_collections/gpu_ops/mig_serving link (tests/conftest.py)
    assert_clean(run([str(BIN / "mypy"), "-p", "ansible_collections.gpu_ops.mig_serving.plugins"]))
    assert_clean(run([str(BIN / "mypy"), "tests", "benchmarks"]))


def test_yamllint() -> None:
    assert_clean(run([str(BIN / "yamllint"), "--strict", "."]))


def test_ansible_lint_production_profile() -> None:
    proc = run([str(BIN / "ansible-lint"), "--offline", "--profile", "production"])
    assert_clean(proc)


def test_no_lint_skips_anywhere() -> None:
    offenders = []
    for path in ROOT.rglob("*"):
        if any(part in (".venv", "build", ".git") for part in path.parts) or not path.is_file():
            continue
        if path.suffix in (".yml", ".yaml", ".j2") or path.name in (".ansible-lint",):
            text = path.read_text(errors="replace")
            if "noqa" in text or "skip_list" in text or "warn_list" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"lint skips are not allowed: {offenders}"


def test_changelog_fragments_lint() -> None:
    assert_clean(run([str(BIN / "antsibull-changelog"), "lint"]))


def test_ansible_test_sanity() -> None:
    proc = run(["bash", str(ROOT / "scripts" / "ansible-test-sanity.sh")], timeout=1800)
    assert_clean(proc)
