# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""site.yml and playbooks/verify.yml from a checkout, for real with ansible-playbook.

The node is localhost; its nvidia-smi is a replay of our real H200 capture (test equipment: it prints
the captured output for the read-only listings the modules run, and fails on anything else).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resources

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.h200_replay import CAPTURE, write_replay_nvidia_smi
else:  # tests/h200_replay.py, importable by its file name once tests/ is on sys.path
    from ansible_run import ansible_env
    from h200_replay import CAPTURE, write_replay_nvidia_smi

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def playbook(args: List[str], tmp: Path) -> subprocess.CompletedProcess[str]:
    env = ansible_env(tmp)
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
                                    "gpu_ops_mig_backend": "nvidia_smi",
                                    "gpu_ops_nvidia_smi_path": str(smi),
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


def _unreachable_dgx(tmp: Path, host_vars: Dict[str, Any]) -> Path:
    """inventories/dgx with every GPU node at a closed loopback port (a node task fails at once, UNREACHABLE)."""
    hosts = yaml.safe_load((ROOT / "inventories/dgx/hosts.yml").read_text())
    for node in hosts["all"]["children"]["gpu_nodes"]["hosts"].values():
        node.update(ansible_host="127.0.0.1", ansible_port=1)
    inventory = tmp / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars").symlink_to(ROOT / "inventories/dgx/group_vars")
    (tmp / "layouts").symlink_to(ROOT / "inventories/layouts")  # mig_layout_config_file is relative to the inventory
    for host, values in host_vars.items():
        (inventory / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(values))
    return inventory


def test_a_rollout_batch_size_set_in_the_inventory_is_refused_before_any_node_is_touched(tmp_path: Path) -> None:
    """Ansible sizes a play's batches before it reads inventory variables: gpu_ops_mig_serial: 2 in host_vars would
    silently roll one node at a time. The play refuses it; the same value as an extra variable rolls two at a time."""
    inventory = str(_unreachable_dgx(tmp_path, {"dgx-a100-01": {"gpu_ops_mig_serial": 2}}))
    proc = playbook(["playbooks/mig.yml", "-i", inventory], tmp_path)
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, out[-3000:]
    assert "gpu_ops_mig_serial is 2 but this batch has 1 node(s)" in out, out[-3000:]
    assert "set gpu_ops_mig_serial as an extra variable (-e gpu_ops_mig_serial=N" in out
    assert "UNREACHABLE" not in out, "no node may be contacted"

    proc = playbook(["playbooks/mig.yml", "-i", inventory, "-e", "gpu_ops_mig_serial=2"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "gpu_ops_mig_serial is" not in out, out[-3000:]
    # the check passed, and the first batch (two nodes) went on to the nodes, which are unreachable here
    assert len(re.findall(r"UNREACHABLE", out)) == 2, out[-3000:]
