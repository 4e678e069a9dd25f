# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node role's preflight, for real through playbooks/mig.yml (--tags mig_layout_preflight): bad input and a node
the GPU Operator's mig-manager manages fail with a message naming what is wrong; the node is looked up in the cluster
through kubernetes.core, delegated, against tests/kube_fake. The node is localhost; its nvidia-smi replays our real
H200 capture (read-only listings only), so nothing can change on it."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.h200_replay import write_replay_nvidia_smi
    from tests.kube_fake.server import FakeKube
else:
    from ansible_run import ansible_env
    from h200_replay import write_replay_nvidia_smi
    from kube_fake.server import FakeKube

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NODE = "h200-replay"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kube() -> Iterator[Any]:
    with FakeKube() as server:
        server.add_node({"apiVersion": "v1", "kind": "Node",
                         "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "nvidia.com/gpu.deploy.mig-manager": "true"}},
                         "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
        yield server


@pytest.fixture(scope="module")
def inventory(kube: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("preflight")
    smi = write_replay_nvidia_smi(tmp / "nvidia-smi")
    package = tmp / "nvidia-mig-manager_0.13.0-1_amd64.deb"
    package.write_bytes(b"not read in preflight")
    node_vars: Dict[str, Any] = {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False,
        "mig_layout_config": "all-1g.18gb", "mig_layout_config_file": str(ROOT / "inventories/layouts/dgx.yaml"),
        "mig_layout_backend": "nvidia_smi", "mig_layout_nvidia_smi_path": str(smi), "mig_layout_package_file": str(package),
        "mig_layout_kubeconfig": str(kube.kubeconfig_path),
    }
    inv = tmp / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {
        "gpu_nodes": {"hosts": {NODE: node_vars}},
        "k8s_control": {"hosts": {"control": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}},
    }}}))
    return inv


def preflight(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(inventory.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/mig.yml", "-i", str(inventory), "--tags", "mig_layout_preflight", *extra]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_a_node_managed_by_the_gpu_operator_is_refused(inventory: Path, kube: Any) -> None:
    proc = preflight(inventory)
    assert proc.returncode != 0
    assert "managed by the GPU Operator's mig-manager" in proc.stdout, proc.stdout[-3000:]
    assert "mig_layout_take_over_from_gpu_operator" in proc.stdout
    assert any(r.method == "GET" and r.path.endswith(f"/nodes/{NODE}") for r in kube.requests)


def test_taking_over_is_explicit(inventory: Path) -> None:
    proc = preflight(inventory, "-e", "mig_layout_take_over_from_gpu_operator=true")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_a_node_not_in_the_cluster_skips_the_cluster_checks(inventory: Path, kube: Any) -> None:
    proc = preflight(inventory, "-e", "mig_layout_k8s_node_name=not-a-node")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "managed by the GPU Operator's mig-manager" not in proc.stdout
    assert any(r.method == "GET" and r.path.endswith("/nodes/not-a-node") for r in kube.requests)
    assert all(r.method == "GET" for r in kube.requests), "preflight only reads the cluster"


@pytest.mark.parametrize(("extra", "message"), [
    (["-e", "mig_layout_config=all-1g.5gb"], "1g.5gb"),  # an A100 profile on the H200
    (["-e", '{"mig_layout_config": "bad name"}'], "mig_layout_config 'bad name' is not in"),
    (["-e", "mig_layout_package_version=latest"], "mig_layout_package_version: 'latest' is not an exact package version such as 0.13.0"),
    (["-e", "mig_layout_backend=cuda"], "value of mig_layout_backend must be one of: auto, nvml, nvidia_smi, got: cuda"),
    (["-e", '{"mig_layout_gpu_clients": ["dcgm; rm -rf /"]}'], "mig_layout_gpu_clients"),
])
def test_bad_input_fails_naming_it(inventory: Path, extra: list[str], message: str) -> None:
    proc = preflight(inventory, "-e", "mig_layout_take_over_from_gpu_operator=true", *extra)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]


# The package source: this node has no nvidia-mig-manager (dpkg on the machine running the test), so it needs the
# install and its source is checked, after the node was read; each message names the node, the version and the source.
@pytest.mark.parametrize(("extra", "message"), [
    ({"mig_layout_package_file": ""}, "and has no package source: set mig_layout_package_url (the site mirror)"),
    ({"mig_layout_package_file": "files/nvidia-mig-manager_0.13.0-1_amd64.deb"},
     "mig_layout_package_file 'files/nvidia-mig-manager_0.13.0-1_amd64.deb' is not an absolute path on the controller"),
    # what inventories/dgx used to say, as an AWX job sees it: inventory_dir is AWX's copy of the inventory
    ({"mig_layout_package_file": "/runner/inventory/../packages/nvidia-mig-manager_0.13.0-1_amd64.deb"},
     "but mig_layout_package_file '/runner/inventory/../packages/nvidia-mig-manager_0.13.0-1_amd64.deb' is not a file on the controller"),
    ({"mig_layout_package_file": "", "mig_layout_package_url": "https://mirror.example.internal/x.deb"},
     "from https://mirror.example.internal/x.deb, and mig_layout_package_checksum must be its checksum as sha256:<64 hex digits>"),
    ({"mig_layout_package_file": "", "mig_layout_package_url": "https://mirror.example.internal/x.deb",
      "mig_layout_package_checksum": "sha256:REPLACE-WITH-THE-SHA256-OF-THE-MIRRORED-FILE"}, "got 'sha256:REPLACE-WITH-THE-SHA256-OF"),
    ({"mig_layout_package_file": "", "mig_layout_package_url": "ftp://mirror.example.internal/x.deb", "mig_layout_package_checksum": "sha256:" + "a" * 64},
     "mig_layout_package_url 'ftp://mirror.example.internal/x.deb' is not an http://, https:// or file:// URL"),
])
def test_a_node_that_needs_the_install_needs_a_good_source(inventory: Path, extra: Dict[str, Any], message: str) -> None:
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "nvidia-mig-manager"], capture_output=True, text=True, check=False)
    assert "install ok installed" not in installed.stdout, "this machine has nvidia-mig-manager: the node would need no install"
    proc = preflight(inventory, "-e", "mig_layout_take_over_from_gpu_operator=true", "-e", json.dumps(extra))
    assert proc.returncode != 0
    flat = " ".join(proc.stdout.split())
    assert f"{NODE} needs nvidia-mig-manager 0.13.0 (installed: none)" in flat, proc.stdout[-3000:]
    assert message in flat, proc.stdout[-3000:]
    # checked once the node was read (whether it needs the install), never before
    assert "Read the node's GPUs, package, files and units" in proc.stdout


def test_a_good_mirror_source_passes(inventory: Path) -> None:
    extra = {"mig_layout_package_file": "", "mig_layout_package_url": "https://mirror.example.internal/nvidia-mig-manager_0.13.0-1_amd64.deb",
             "mig_layout_package_checksum": "sha256:" + "0123456789abcdef" * 4}
    proc = preflight(inventory, "-e", "mig_layout_take_over_from_gpu_operator=true", "-e", json.dumps(extra))
    assert proc.returncode == 0, proc.stdout[-3000:]
