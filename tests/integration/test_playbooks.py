# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""site.yml and playbooks/verify.yml from a checkout, for real with ansible-playbook.

The node is localhost; its nvidia-smi is a replay of our real H200 capture (test equipment: it prints
the captured output for the read-only listings the modules run, and fails on anything else).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import plan, resources

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.h200_replay import CAPTURE, write_replay_nvidia_smi
else:  # tests/h200_replay.py, importable by its file name once tests/ is on sys.path
    from h200_replay import CAPTURE, write_replay_nvidia_smi

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def playbook(args: List[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp), ANSIBLE_LOCALHOST_WARNING="0")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)  # resolution must come from the checkout's ansible.cfg
    return subprocess.run([str(BIN / "ansible-playbook"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_site_yml_parses_from_a_checkout(tmp_path: Path) -> None:
    proc = playbook(["site.yml", "-i", "inventories/dgx", "--syntax-check"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = playbook(["site.yml", "-i", "inventories/dgx", "--list-tasks"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Compare the node with its layout" in proc.stdout
    plays = [line.split("play #", 1)[1].split(": ", 1)[1].split("TAGS:")[0].strip()
             for line in proc.stdout.splitlines() if "play #" in line]
    # playbooks/validate.yml first (site.yml's, then each stage playbook's own import, which skips once validated)
    assert plays[:4] == ["Validate the run", "Validate the GPU nodes' layouts (on the controller)",
                         "Validate the cluster stages' inputs (on the controller)", "Remember the run is validated"], plays
    plays = [p for p in plays if not p.startswith(("Validate ", "Remember the run"))]
    assert plays == ["Apply MIG layouts on the GPU nodes", "Cluster GPU layer", "Serving stack", "Layer-7 load balancer for Triton",
                     "Verify MIG layouts", "Verify the cluster advertises every node's layout", "Verify the serving stack end to end"], plays


def test_dgx_inventory_layouts_plan_on_their_models(tmp_path: Path) -> None:
    """Every host's layout in the example inventory is realisable on the GPUs its name says it has."""
    proc = playbook(["playbooks/verify.yml", "-i", "inventories/dgx", "--list-hosts"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    hosts = yaml.safe_load((ROOT / "inventories/dgx/hosts.yml").read_text())["all"]["children"]["gpu_nodes"]["hosts"]
    config = (ROOT / "inventories/layouts/dgx.yaml").read_text()
    device = {"dgx-a100": "0x20B010DE", "dgx-h200": "0x233510DE"}
    for host, hv in hosts.items():
        gpus = [{"index": i, "pci_device_id": device[host.rsplit("-", 1)[0]]} for i in range(8)]
        assert resources(plan(config, hv["mig_layout_config"], gpus)), host


@pytest.fixture
def h200_node(tmp_path: Path) -> Path:
    if not CAPTURE.is_dir():
        pytest.skip(f"H200 capture not found at {CAPTURE}")
    smi = write_replay_nvidia_smi(tmp_path / "nvidia-smi")
    inv = tmp_path / "inventory.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "children": {
                        "gpu_nodes": {
                            "hosts": {
                                "h200-replay": {
                                    "ansible_connection": "local",
                                    "ansible_python_interpreter": sys.executable,
                                    "mig_layout_config_file": str(ROOT / "inventories/layouts/dgx.yaml"),
                                    "mig_backend": "nvidia_smi",
                                    "mig_nvidia_smi_path": str(smi),
                                }
                            }
                        }
                    }
                }
            }
        )
    )
    return inv


def test_verify_passes_when_the_node_matches(h200_node: Path, tmp_path: Path) -> None:
    proc = playbook(["playbooks/verify.yml", "-i", str(h200_node), "-e", "mig_layout_config=all-disabled"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all-disabled verified on 1 GPU(s): {'nvidia.com/gpu': 1}" in proc.stdout
    assert "changed=0" in proc.stdout


def test_verify_fails_with_the_mismatch_table(h200_node: Path, tmp_path: Path) -> None:
    proc = playbook(["playbooks/verify.yml", "-i", str(h200_node), "-e", "mig_layout_config=all-1g.18gb"], tmp_path)
    assert proc.returncode != 0
    assert "MIG layout 'all-1g.18gb' does not match this node (2 difference(s))" in proc.stdout
    assert "1g.18gb" in proc.stdout
    assert "failed=1" in proc.stdout


def test_unrealisable_layout_fails_in_planning_naming_gpu_and_profile(h200_node: Path, tmp_path: Path) -> None:
    proc = playbook(["playbooks/verify.yml", "-i", str(h200_node), "-e", "mig_layout_config=all-1g.5gb"], tmp_path)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "mig_plan: config 'all-1g.5gb': GPU 0 (NVIDIA H200, 0x233510DE) is not covered by any entry" in out
    assert "Compare the node with its layout" not in out  # stopped before the comparison
