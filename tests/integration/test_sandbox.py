# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make sandbox` for real (scripts/sandbox.sh): site.yml on two simulated GPU nodes, the cluster plays in render
mode, manifests validated, the report; a second run changes nothing on the nodes; `sandbox clean` removes it all."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODES = ("gpu-ops-sandbox-a100", "gpu-ops-sandbox-h200")

pytestmark = pytest.mark.slow


def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return subprocess.run([str(ROOT / "scripts" / "sandbox.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)


def podman_names() -> str:
    proc = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, check=False,
                          env=dict(os.environ, CONTAINERS_CONF=str(ROOT / "tests" / "testbed" / "containers.conf")))
    return proc.stdout


@pytest.fixture(scope="module")
def runs() -> Iterator[list[subprocess.CompletedProcess[str]]]:
    if os.geteuid() != 0:
        pytest.fail("the sandbox needs root and podman (make test installs podman, runc and debootstrap)")
    sandbox("clean")
    try:
        first = sandbox()
        second = sandbox() if first.returncode == 0 else first
        yield [first, second]
    finally:
        sandbox("clean")


def test_first_run_applies_and_reports(runs: list[subprocess.CompletedProcess[str]]) -> None:
    first = runs[0]
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    out = first.stdout
    assert "gpu-ops-sandbox-a100: layout all-1g.5gb, verified yes" in out
    assert "gpu-ops-sandbox-h200: layout all-1g.18gb, verified yes" in out
    assert re.search(r"nvidia\.com/mig-1g\.5gb: 56\b", out), out
    assert re.search(r"nvidia\.com/mig-1g\.18gb: 56\b", out), out
    # the HPA ceiling is the MIG capacity of Triton's profile (1g.5gb in the example settings): 56
    assert re.search(r"HPA \S+: replicas 1\.\.56 ", out), out
    assert "INVALID" not in out
    manifests = ROOT / "build" / "sandbox" / "manifests"
    assert (manifests / "mig-capacity.yaml").is_file()
    assert any(manifests.rglob("*horizontalpodautoscaler*")), sorted(str(p) for p in manifests.rglob("*.yaml"))


def test_second_run_changes_nothing_on_the_nodes(runs: list[subprocess.CompletedProcess[str]]) -> None:
    second = runs[1]
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-3000:]
    for node in NODES:
        assert re.search(rf"^{node}\s+: ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", second.stdout, re.M), second.stdout[-4000:]
        assert re.search(rf"{node}: layout \S+, verified yes, changed 0 in this run", second.stdout), second.stdout[-3000:]


def test_clean_removes_the_nodes(runs: list[subprocess.CompletedProcess[str]]) -> None:
    assert all(node in podman_names() for node in NODES)
    proc = sandbox("clean")
    assert proc.returncode == 0, proc.stderr
    names = podman_names()
    assert not any(node in names for node in NODES), names
    assert not (ROOT / "build" / "sandbox").exists()
