# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every Molecule scenario under molecule/ runs its full test sequence (create, converge, idempotence,
verify, destroy) as part of `make test`. A scenario is a directory holding molecule.yml."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCENARIOS = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))

pytestmark = pytest.mark.slow


IMAGE = "localhost/gpu-ops-node:test"


@pytest.fixture(scope="module")
def node_image() -> str:
    """The simulated GPU node image and the simulated nvidia-mig-manager .debs the scenarios install (tests/testbed)."""
    if os.geteuid() != 0:
        pytest.fail("the Molecule scenarios need root and podman (make test installs podman, runc and debootstrap)")
    build = subprocess.run([str(ROOT / "tests" / "testbed" / "build-node-image.sh"), IMAGE], capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    return IMAGE


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario: str, node_image: str) -> None:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", PY_COLORS="0")
    proc = subprocess.run(
        [str(BIN / "molecule"), "test", "-s", scenario], cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    assert proc.returncode == 0, f"molecule test -s {scenario} exited {proc.returncode}:\n{proc.stdout[-12000:]}\n{proc.stderr[-4000:]}"
