# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated GPU nodes: Debian systemd containers (podman) carrying the GPU simulator.

Two nodes with different GPUs (8 x A100-SXM4-40GB and 8 x H200) boot systemd, the simulator answers
nvidia-smi and nvidia-mig-parted inside them, a reboot loses the MIG instances as real GPUs do, and our
playbooks/verify.yml runs against them for real over the podman connection. This is the test bed the
node role's Molecule scenarios and the sandbox build on.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE = "localhost/gpu-ops-node:test"
CONF = ROOT / "tests" / "testbed" / "containers.conf"
LAYOUTS = ROOT / "inventories" / "layouts" / "dgx.yaml"

pytestmark = pytest.mark.slow


def podman(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, CONTAINERS_CONF=str(CONF))
    proc = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def in_node(name: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, *argv, check=check)


def wait_booted(name: str, timeout: float = 60.0) -> str:
    """Until systemd in the container reports running (or degraded, which the test then shows)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = in_node(name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return state
        time.sleep(0.5)
    raise AssertionError(f"{name}: systemd did not finish booting in {timeout} s (state {state!r})")


@pytest.fixture(scope="module")
def nodes() -> Iterator[Dict[str, str]]:
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.fail("the test bed needs root and podman; `make test` installs podman, runc and debootstrap")
    build = subprocess.run([str(ROOT / "tests" / "testbed" / "build-node-image.sh"), IMAGE], capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    tag = uuid.uuid4().hex[:8]
    names = {"a100": f"gpu-ops-test-{tag}-a100", "h200": f"gpu-ops-test-{tag}-h200"}
    models = {"a100": "A100-SXM4-40GB", "h200": "H200"}
    try:
        for key, name in names.items():
            podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", "--network=none", IMAGE)
            wait_booted(name)
            in_node(name, "gpu-sim", "init", "--model", models[key], "--count", "8")
        yield names
    finally:
        for name in names.values():
            podman("rm", "-f", "-t", "0", name, check=False)


def test_systemd_boots_and_the_simulator_answers(nodes: Dict[str, str]) -> None:
    for key, name in nodes.items():
        failed = in_node(name, "systemctl", "--failed", "--no-legend", "--plain").stdout.strip()
        assert failed == "", f"{name}: failed units: {failed}"
        listing = in_node(name, "nvidia-smi", "-L").stdout
        gpus = [line for line in listing.splitlines() if line.startswith("GPU ")]
        assert len(gpus) == 8, listing
        assert ("A100-SXM4-40GB" if key == "a100" else "H200") in gpus[0]


def test_mig_parted_apply_then_reboot_loses_instances(nodes: Dict[str, str]) -> None:
    name = nodes["a100"]
    podman("cp", str(LAYOUTS), f"{name}:/tmp/layouts.yaml")
    apply = in_node(name, "nvidia-mig-parted", "apply", "-f", "/tmp/layouts.yaml", "-c", "all-1g.5gb", check=False)
    assert apply.returncode == 0, apply.stdout + apply.stderr
    assert in_node(name, "nvidia-mig-parted", "assert", "-f", "/tmp/layouts.yaml", "-c", "all-1g.5gb", check=False).returncode == 0
    devices = [line for line in in_node(name, "nvidia-smi", "-L").stdout.splitlines() if line.strip().startswith("MIG ")]
    assert len(devices) == 56
    podman("restart", "-t", "5", name)
    wait_booted(name)
    after = in_node(name, "nvidia-mig-parted", "assert", "-f", "/tmp/layouts.yaml", "-c", "all-1g.5gb", check=False)
    assert after.returncode != 0, "MIG instances must not survive a reboot"
    mode = in_node(name, "nvidia-smi", "--query-gpu=mig.mode.current", "--format=csv,noheader").stdout.split()
    assert mode == ["Enabled"] * 8  # the mode persists across a reboot, the instances do not


def test_verify_playbook_runs_on_the_simulated_nodes(nodes: Dict[str, str], tmp_path: Path) -> None:
    hosts: Dict[str, Dict[str, object]] = {}
    for name in nodes.values():
        hosts[name] = {
            "ansible_connection": "containers.podman.podman",
            "ansible_python_interpreter": "/usr/bin/python3",
            "mig_layout_config": "all-disabled",
            "mig_backend": "nvidia_smi",
        }
    inventory = {"all": {"children": {"gpu_nodes": {"hosts": hosts, "vars": {"mig_layout_config_file": str(LAYOUTS)}}}}}
    inv = tmp_path / "inventory.yml"
    inv.write_text(yaml.safe_dump(inventory))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp_path), CONTAINERS_CONF=str(CONF))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    # the H200 node is in its layout (MIG disabled); the A100 node has MIG enabled from the previous test
    argv: List[str] = [str(BIN / "ansible-playbook"), "playbooks/verify.yml", "-i", str(inv), "--limit", nodes["h200"]]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "all-disabled verified on 8 GPU(s): {'nvidia.com/gpu': 8}" in proc.stdout
    argv[-1] = nodes["a100"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "MIG layout 'all-disabled' does not match this node (8 difference(s))" in proc.stdout
