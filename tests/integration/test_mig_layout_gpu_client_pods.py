# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The node role's apply (roles/mig_layout/tasks/apply.yml) stopping the cluster's GPU clients (dcgm-exporter) around a
re-layout, for real: the role's own tasks on localhost, the GPU simulator (tests/gpu_sim) as nvidia-smi and
nvidia-mig-parted, the real kubernetes.core modules against tests/kube_fake with the DaemonSet placement stand-in
(tests/kube_fake/daemon_placement.py). As the GPU Operator's mig-manager does it: the DaemonSet's node label is paused,
the pod is waited on until it has left the node, the layout applied, the label set back to "true" (also when the apply
fails), and the DaemonSet controller puts a pod on the node again."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.kube_fake import daemon_placement
    from tests.kube_fake.server import FakeKube
else:
    from kube_fake import daemon_placement
    from kube_fake.server import FakeKube

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIM = ROOT / "tests" / "gpu_sim" / "bin"
NODE = "gpu-sim-01"
NS = "nvidia-device-plugin"
LABEL = "gpu-ops.io/dcgm-exporter"
Obj = Dict[str, Any]

pytestmark = pytest.mark.slow


def exporter(node_selector: Dict[str, str]) -> Obj:
    """dcgm-exporter's DaemonSet as the chart makes it (NVIDIA/dcgm-exporter deployment/templates/daemonset.yaml:
    selector labels app.kubernetes.io/name and instance), with the node selector role gpu_plugins gives it."""
    labels = {"app.kubernetes.io/name": "dcgm-exporter", "app.kubernetes.io/instance": "dcgm-exporter"}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "dcgm-exporter", "namespace": NS},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"nodeSelector": node_selector, "terminationGracePeriodSeconds": 30,
                                           "containers": [{"name": "exporter", "image": "nvcr.io/nvidia/k8s/dcgm-exporter:4.6.1-4.8.4-ubuntu22.04"}]}}}}


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    state = tmp_path / "gpu-sim" / "state.json"
    state.parent.mkdir()
    env = dict(os.environ, GPU_SIM_STATE=str(state), PATH=f"{SIM}:{BIN}:{os.environ['PATH']}")
    subprocess.run([str(SIM / "gpu-sim"), "init", "--model", "A100-SXM4-40GB", "--count", "2"], env=env, check=True, capture_output=True)
    config_dir = tmp_path / "mig"
    config_dir.mkdir()
    shutil.copy(ROOT / "inventories" / "layouts" / "dgx.yaml", config_dir / "config.yaml")
    (config_dir / "hooks.yaml").write_text("version: v1\nhooks: {}\n")
    # a graceful delete takes 6 s on the fake's kubelet: the wait must really poll a terminating pod
    with FakeKube(pod_exit_seconds=6.0) as kube:
        yield {"kube": kube, "env": env, "tmp": tmp_path, "config_dir": config_dir}


def seed(kube: FakeKube, label: Optional[str], node_selector: Dict[str, str]) -> daemon_placement.DaemonPlacement:
    labels = {"kubernetes.io/hostname": NODE, "nvidia.com/gpu.present": "true", "nvidia.com/mig.config": "all-disabled"}
    if label is not None:
        labels[LABEL] = label
    kube.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, exporter(node_selector)])
    kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": labels},
                   "status": {"allocatable": {"cpu": "64"}, "capacity": {"cpu": "64"}}})
    return daemon_placement.enable(kube)


def apply_play(bed: Dict[str, Any], **extra: Any) -> subprocess.CompletedProcess[str]:
    """apply.yml as converge.yml includes it, with what preflight.yml found (a node out of its layout, no host GPU client)."""
    kube: FakeKube = bed["kube"]
    variables = {
        "mig_layout_config": "all-1g.5gb", "mig_layout_config_file": str(ROOT / "inventories" / "layouts" / "dgx.yaml"),
        "mig_layout_config_dir": str(bed["config_dir"]), "mig_layout_textfile_dir": "", "mig_layout_k8s_delegate_to": "localhost",
        "mig_layout_k8s_node_name": NODE, "mig_layout_device_plugin_namespace": NS, "mig_layout_drain_timeout": 20,
        "__mig_layout_node_state": {"units": {}, "compute_apps": []}, "__mig_layout_mismatches": [{"gpu": 0, "what": "mig mode"}],
        **extra,
    }
    play = [{
        "name": "The node role's apply", "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/kubernetes.core.k8s": {"kubeconfig": str(kube.kubeconfig_path)},
                            "group/gpu_ops.mig_serving.mig": {"backend": "nvidia_smi", "nvidia_smi_path": str(SIM / "nvidia-smi"), "timeout": 60}},
        "vars": variables,
        "tasks": [
            {"name": "Look the node up", "kubernetes.core.k8s_info": {"api_version": "v1", "kind": "Node", "name": NODE},
             "register": "__mig_layout_node"},
            {"name": "Apply", "ansible.builtin.include_role": {"name": "gpu_ops.mig_serving.mig_layout", "tasks_from": "apply.yml"}},
        ],
    }]
    path = bed["tmp"] / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = {k: v for k, v in bed["env"].items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", HOME=str(bed["tmp"]), ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"))
    return subprocess.run([str(BIN / "ansible-playbook"), str(path), "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def label_patches(kube: FakeKube) -> List[str]:
    """The values the role wrote into the client label, in order."""
    out = []
    for r in kube.requests:
        if r.method == "PATCH" and r.path == f"/api/v1/nodes/{NODE}" and isinstance(r.body, dict) and r.status < 300:
            labels = (r.body.get("metadata") or {}).get("labels") or {}
            if LABEL in labels:
                out.append(str(labels[LABEL]))
    return out


def exporter_pods(kube: FakeKube) -> List[Obj]:
    return [p for p in kube.objects("v1", "Pod", NS) if p["spec"].get("nodeName") == NODE and not p["metadata"].get("deletionTimestamp")]


def sim_ops(bed: Dict[str, Any]) -> List[Obj]:
    proc = subprocess.run([str(SIM / "gpu-sim"), "log"], env=bed["env"], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_the_exporter_leaves_the_node_before_the_apply_and_comes_back(bed: Dict[str, Any]) -> None:
    kube: FakeKube = bed["kube"]
    placement = seed(kube, "true", {LABEL: "true"})
    first = exporter_pods(kube)
    assert len(first) == 1  # the stand-in placed the exporter on the labelled node
    kube.clear_requests()
    proc = apply_play(bed)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert label_patches(kube) == ["paused-for-mig-change", "true"]
    name = f"{NS}/{first[0]['metadata']['name']}"
    kinds = [(e[1], e[2]) for e in placement.events]
    assert ("delete", name) in kinds
    assert ("gone", name) in kinds
    # the wait saw the terminating pod, then none: it polled until the pod had left the node
    polls = [r for r in kube.requests if r.method == "GET" and r.path == f"/api/v1/namespaces/{NS}/pods"
             and r.query.get("fieldSelector") == [f"spec.nodeName={NODE}"] and r.query.get("labelSelector") == ["app.kubernetes.io/name=dcgm-exporter"]]
    assert len(polls) >= 2, polls
    # the layout was applied (the order against the wait is checked below)
    ops = [o["op"] for o in sim_ops(bed)]
    assert "create-gi" in ops
    assert "mig-mode" in ops
    # after the run a new exporter pod runs on the node, the label says true
    again = exporter_pods(kube)
    assert len(again) == 1
    assert again[0]["metadata"]["name"] != first[0]["metadata"]["name"]
    node = kube.get_object("v1", "Node", NODE)
    assert node is not None
    assert node["metadata"]["labels"][LABEL] == "true"


def test_gpu_ops_happen_only_after_the_exporter_is_gone(bed: Dict[str, Any]) -> None:
    """Order across both systems: the stand-in's removal time against the wait's last poll, and the apply after it."""
    kube: FakeKube = bed["kube"]
    placement = seed(kube, "true", {LABEL: "true"})
    proc = apply_play(bed)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    gone = [e[0] for e in placement.events if e[1] == "gone"]
    created_again = [e[0] for e in placement.events if e[1] == "create"][1:]
    assert gone
    assert created_again
    # the pod came back only after it had gone, i.e. after the label went back to true at the end of the apply
    assert min(created_again) > max(gone)
    out = proc.stdout
    assert out.index("Wait until the cluster's GPU clients have left the node") < out.index("Apply the layout with nvidia-mig-parted")
    assert out.index("Apply the layout with nvidia-mig-parted") < out.index("Start the cluster's GPU clients again")


def test_a_failed_apply_leaves_the_label_true_and_the_exporter_back(bed: Dict[str, Any]) -> None:
    kube: FakeKube = bed["kube"]
    seed(kube, "true", {LABEL: "true"})
    subprocess.run([str(SIM / "gpu-sim"), "set-apply-failure", "on"], env=bed["env"], check=True, capture_output=True)
    proc = apply_play(bed)
    assert proc.returncode != 0
    assert "was not applied on localhost" in proc.stdout
    assert label_patches(kube) == ["paused-for-mig-change", "true"]
    node = kube.get_object("v1", "Node", NODE)
    assert node is not None
    assert node["metadata"]["labels"]["nvidia.com/mig.config.state"] == "failed"
    assert node["metadata"]["labels"][LABEL] == "true"
    assert node["spec"].get("unschedulable") is True  # left cordoned, as before
    assert len(exporter_pods(kube)) == 1


def test_a_pod_that_does_not_leave_fails_the_apply_naming_it(bed: Dict[str, Any]) -> None:
    """A DaemonSet whose node selector ignores the label keeps its pod: the bounded wait fails, naming the pod, before
    any GPU operation, and the label is set back."""
    kube: FakeKube = bed["kube"]
    seed(kube, "true", {"nvidia.com/gpu.present": "true"})
    pod = exporter_pods(kube)[0]["metadata"]["name"]
    before = [o["op"] for o in sim_ops(bed)]
    proc = apply_play(bed, mig_layout_drain_timeout=4)
    assert proc.returncode != 0
    assert f"GPU client pods still on node {NODE} 4 s (mig_layout_drain_timeout)" in proc.stdout
    assert f"{NS}/{pod}" in proc.stdout
    assert [o["op"] for o in sim_ops(bed)] == before  # the GPUs were not touched
    assert label_patches(kube) == ["paused-for-mig-change", "true"]


def test_a_label_set_to_false_is_left_alone(bed: Dict[str, Any]) -> None:
    kube: FakeKube = bed["kube"]
    seed(kube, "false", {LABEL: "true"})
    assert exporter_pods(kube) == []
    proc = apply_play(bed)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert label_patches(kube) == ["false", "false"]  # written as it is (mig-manager's maybeSetPaused/maybeSetTrue)
    node = kube.get_object("v1", "Node", NODE)
    assert node is not None
    assert node["metadata"]["labels"][LABEL] == "false"
    waits = [r for r in kube.requests if r.method == "GET" and r.query.get("labelSelector") == ["app.kubernetes.io/name=dcgm-exporter"]]
    assert waits == []  # nothing to wait for
    assert exporter_pods(kube) == []
