# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The simulated GPU nodes: Debian systemd containers (podman) carrying the GPU simulator.

Two nodes with different GPUs (8 x A100-SXM4-40GB and 8 x H200) boot systemd, the simulator answers
nvidia-smi inside them, nvidia-mig-parted comes from the simulated nvidia-mig-manager .deb (dpkg -i, as the
node role installs it on air-gapped sites), a reboot loses the MIG instances as real GPUs do, and our
playbooks/verify.yml runs against them for real over the podman connection. A third node goes through the
package's life: install 0.12.1, upgrade to 0.13.0 keeping an edited override.conf, the packaged service
applying the selected layout at boot, purge. This is the test bed the node role's Molecule scenarios and the
sandbox build on.
"""
from __future__ import annotations

import json
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
DEBS = ROOT / "build" / "testbed" / "debs"
OLD, NEW = "0.12.1", "0.13.0"
DROPIN_DIR = "/etc/systemd/system/nvidia-mig-manager.service.d"

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


def deb(version: str) -> Path:
    return DEBS / f"nvidia-mig-manager_{version}-1_amd64.deb"


def dpkg_install(name: str, version: str) -> subprocess.CompletedProcess[str]:
    podman("cp", str(deb(version)), f"{name}:/tmp/{deb(version).name}")
    return in_node(name, "dpkg", "-i", f"/tmp/{deb(version).name}")


def restart(name: str) -> None:
    podman("restart", "-t", "5", name)
    wait_booted(name)


def ops(name: str) -> List[Dict[str, object]]:
    return [json.loads(line) for line in in_node(name, "gpu-sim", "log").stdout.splitlines()]


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.fail("the test bed needs root and podman; `make test` installs podman, runc and debootstrap")
    build = subprocess.run([str(ROOT / "tests" / "testbed" / "build-node-image.sh"), IMAGE], capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    for version in (OLD, NEW):
        assert deb(version).is_file(), f"build-node-image.sh did not build {deb(version)}"
    return IMAGE


def start_node(name: str, model: str) -> None:
    podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", "--network=none", IMAGE)
    wait_booted(name)
    in_node(name, "gpu-sim", "init", "--model", model, "--count", "8")


@pytest.fixture(scope="module")
def nodes(image: str) -> Iterator[Dict[str, str]]:
    tag = uuid.uuid4().hex[:8]
    names = {"a100": f"gpu-ops-test-{tag}-a100", "h200": f"gpu-ops-test-{tag}-h200"}
    models = {"a100": "A100-SXM4-40GB", "h200": "H200"}
    try:
        for key, name in names.items():
            start_node(name, models[key])
            dpkg_install(name, NEW)
            # These two nodes show the driver's own behaviour across reboots; the packaged unit (enabled by the
            # package, all-disabled by default) would re-apply MIG at boot. Its boot apply is tested on pkg_node.
            in_node(name, "systemctl", "disable", "nvidia-mig-manager.service")
        yield names
    finally:
        for name in names.values():
            podman("rm", "-f", "-t", "0", name, check=False)


@pytest.fixture(scope="module")
def pkg_node(image: str) -> Iterator[str]:
    name = f"gpu-ops-test-{uuid.uuid4().hex[:8]}-pkg"
    try:
        start_node(name, "A100-SXM4-40GB")
        yield name
    finally:
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
            "gpu_ops_mig_backend": "nvidia_smi",
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


def test_the_image_has_no_mig_parted_until_the_package_is_installed(pkg_node: str) -> None:
    name = pkg_node
    assert in_node(name, "sh", "-c", "command -v nvidia-mig-parted", check=False).returncode != 0
    assert in_node(name, "nvidia-smi", "-L").stdout.count("GPU ") == 8  # the driver is there
    installed = dpkg_install(name, OLD)
    assert "Setting up nvidia-mig-manager (0.12.1-1)" in installed.stdout
    assert in_node(name, "nvidia-mig-parted", "--version").stdout == f"nvidia-mig-parted version {OLD} (simulated)\n"
    assert in_node(name, "systemctl", "is-enabled", "nvidia-mig-manager.service").stdout.strip() == "enabled"
    # enabled but not started by the package (only at the next boot)
    assert in_node(name, "systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value", "nvidia-mig-manager.service").stdout.strip() == "0"
    links = in_node(name, "sh", "-c", "readlink /etc/nvidia-mig-manager/hooks.yaml /etc/nvidia-mig-manager/config.yaml").stdout.split()
    assert links == ["hooks-default.yaml", "config-default.yaml"]  # A100: compute capability 8.0
    assert [e["op"] for e in ops(name)] == ["init"]  # installing touched no GPU


def test_upgrade_keeps_an_edited_override_conf(pkg_node: str) -> None:
    name = pkg_node
    edited = '[Service]\nEnvironment="MIG_PARTED_SELECTED_CONFIG=all-1g.5gb"\n# edited on this node\n'
    in_node(name, "sh", "-c", f"printf '{edited}' > {DROPIN_DIR}/override.conf")
    upgraded = dpkg_install(name, NEW)
    assert "Unpacking nvidia-mig-manager (0.13.0-1) over (0.12.1-1)" in upgraded.stdout
    assert in_node(name, "nvidia-mig-parted", "--version").stdout == f"nvidia-mig-parted version {NEW} (simulated)\n"
    assert in_node(name, "dpkg-query", "-W", "-f", "${Version}", "nvidia-mig-manager").stdout == "0.13.0-1"
    assert in_node(name, "cat", f"{DROPIN_DIR}/override.conf").stdout == edited
    assert in_node(name, "systemctl", "is-enabled", "nvidia-mig-manager.service").stdout.strip() == "enabled"
    env = in_node(name, "systemctl", "show", "-p", "Environment", "--value", "nvidia-mig-manager.service").stdout
    assert "MIG_PARTED_SELECTED_CONFIG=all-1g.5gb" in env  # daemon-reload ran


def test_the_packaged_service_applies_the_selected_layout_at_boot(pkg_node: str) -> None:
    name = pkg_node
    podman("cp", str(LAYOUTS), f"{name}:/etc/gpu-ops-layouts.yaml")
    # Drop-ins apply in name order: to win over override.conf's MIG_PARTED_SELECTED_CONFIG, ours sorts after it.
    dropin = '[Service]\nEnvironment="MIG_PARTED_CONFIG_FILE=/etc/gpu-ops-layouts.yaml" "MIG_PARTED_SELECTED_CONFIG=all-balanced"\n'
    in_node(name, "sh", "-c", f"printf '{dropin}' > {DROPIN_DIR}/zz-layout.conf")
    before = len(ops(name))
    restart(name)
    result = in_node(name, "systemctl", "show", "-p", "Result", "-p", "ExecMainStatus", "nvidia-mig-manager.service").stdout.split()
    assert result == ["Result=success", "ExecMainStatus=0"], in_node(name, "journalctl", "-u", "nvidia-mig-manager", "--no-pager", check=False).stdout
    applied = in_node(name, "nvidia-mig-parted", "assert", "-f", "/etc/gpu-ops-layouts.yaml", "-c", "all-balanced", check=False)
    assert applied.returncode == 0, applied.stderr
    devices = [line for line in in_node(name, "nvidia-smi", "-L").stdout.splitlines() if line.strip().startswith("MIG ")]
    assert len(devices) == 8 * 4
    done = [e["op"] for e in ops(name)[before:]]
    assert done[0] == "boot"
    assert "mig-mode" in done
    assert done.count("create-gi") == 32
    # config.yaml was regenerated from the GPUs at boot (the package's link replaced by a generated file)
    config = in_node(name, "sh", "-c", "test ! -L /etc/nvidia-mig-manager/config.yaml && head -1 /etc/nvidia-mig-manager/config.yaml").stdout
    assert config.startswith("# Generated from the GPUs at every boot")
    # An injected apply failure makes the unit fail at the next boot, with the message in the journal.
    in_node(name, "gpu-sim", "set-apply-failure", "on", "--message", "boom from the test")
    restart(name)
    result = in_node(name, "systemctl", "show", "-p", "Result", "nvidia-mig-manager.service").stdout.split()
    assert result == ["Result=exit-code"]
    journal = in_node(name, "journalctl", "-b", "-u", "nvidia-mig-manager", "--no-pager").stdout
    assert "boom from the test" in journal
    assert "Error applying MIG config" in journal
    in_node(name, "gpu-sim", "set-apply-failure", "off")


def test_purge_removes_the_package_and_its_generated_files(pkg_node: str) -> None:
    name = pkg_node
    in_node(name, "dpkg", "--purge", "nvidia-mig-manager")
    assert in_node(name, "sh", "-c", "command -v nvidia-mig-parted", check=False).returncode != 0
    assert in_node(name, "test", "-e", "/etc/nvidia-mig-manager", check=False).returncode != 0
    # our own drop-in stays; override.conf (the conffile) is purged
    assert in_node(name, "ls", "-A", DROPIN_DIR).stdout.split() == ["zz-layout.conf"]
    assert in_node(name, "systemctl", "is-enabled", "nvidia-mig-manager.service", check=False).returncode != 0
