# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node Feature Discovery (NFD) and the gpu_plugins role, against tests/kube_fake and tests/fake_helm.

GPU feature discovery (GFD) labels nothing itself: it publishes its labels as a NodeFeature object
(``nvidia-features-for-<node>`` in its namespace, label ``nfd.node.kubernetes.io/node-name``; NVIDIA/k8s-device-plugin
``internal/lm/output.go``) or a feature file, and only nfd-master writes them onto the Node. So:

- ``gpu_plugins_nfd_enabled: auto`` (the default) deploys NFD with the device plugin chart when the cluster runs none
  (the values kubernetes.core.helm hands to helm say ``nfd.enabled: true``), keeps deploying it on a re-run that finds
  only this release's own NFD, and reuses an NFD the cluster runs (the GPU Operator's: CRD + nfd-master), saying where;
- ``true`` with another NFD running, ``false`` with none, and ``auto`` when the cluster cannot be read are refused
  before anything is applied;
- the cluster verification passes once nfd-master (kube_fake's ``nfd_master``) has turned GFD's NodeFeature objects
  into node labels; without NFD it fails naming NFD, and with an nfd-master that refuses the nvidia.com label namespace
  it fails naming that nfd-master.

The NFD objects seeded here are what NFD's Helm chart creates (kubernetes-sigs/node-feature-discovery
deployment/helm/node-feature-discovery/templates/master.yaml and worker.yaml: ``<release>-node-feature-discovery-master``
Deployment, ``-worker`` DaemonSet, labels ``app.kubernetes.io/name: node-feature-discovery``, ``app.kubernetes.io/instance:
<release>``, ``role: master|worker``); the GPU Operator and the device plugin chart deploy NFD through that chart.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.fake_helm import FakeHelm
    from tests.kube_fake.crds import load_crds
    from tests.kube_fake.server import FakeKube
else:
    from ansible_run import ansible_env
    from fake_helm import FakeHelm
    from kube_fake.crds import load_crds
    from kube_fake.server import FakeKube

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RELEASE = "nvidia-device-plugin/nvdp"
CRD = "nodefeatures.nfd.k8s-sigs.io"

pytestmark = pytest.mark.slow

CHARTS: List[Dict[str, Any]] = [
    {"repository": "https://nvidia.github.io/k8s-device-plugin", "name": "nvidia-device-plugin", "version": "0.18.0", "appVersion": "0.18.0",
     "description": "A Helm chart for the nvidia-device-plugin on Kubernetes"},
    {"repository": "https://nvidia.github.io/dcgm-exporter/helm-charts", "name": "dcgm-exporter", "version": "4.8.4", "appVersion": "4.8.4",
     "description": "A Helm chart for DCGM exporter"},
]

# What inventories/dgx promises (tests/integration/test_render.py: mig-capacity.yaml)
EXPECTED = {
    "dgx-a100-01": {"nvidia.com/mig-1g.5gb": 56},
    "dgx-a100-02": {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8},
    "dgx-h200-01": {"nvidia.com/mig-1g.18gb": 56},
}


def node(name: str, resources: Dict[str, int]) -> Dict[str, Any]:
    """A GPU node as the kubelet registers it once the device plugin runs: the MIG resources allocatable, no GFD label
    (nothing has written them yet), our node role's mig.config label."""
    alloc = {"cpu": "255", "memory": "2113445440Ki", "pods": "110", **{res: str(n) for res, n in resources.items()}}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "nvidia.com/mig.config": "x"}},
            "status": {"allocatable": alloc, "capacity": dict(alloc)}}


def gfd_labels(resources: Dict[str, int]) -> Dict[str, str]:
    """The labels GFD publishes for a node under the mixed strategy (a subset: the counts and three it always sets)."""
    labels = {"nvidia.com/gfd.timestamp": "1764892800", "nvidia.com/mig.strategy": "mixed", "nvidia.com/gpu.count": "8"}
    labels.update({f"{res}.count": str(n) for res, n in resources.items() if res.startswith("nvidia.com/mig-")})
    return labels


def nfd_workloads(release: str, namespace: str) -> List[Dict[str, Any]]:
    """nfd-master (Deployment) and nfd-worker (DaemonSet) as NFD's Helm chart names and labels them for a release."""
    out: List[Dict[str, Any]] = []
    for kind, role in (("Deployment", "master"), ("DaemonSet", "worker")):
        selector = {"app.kubernetes.io/name": "node-feature-discovery", "app.kubernetes.io/instance": release, "role": role}
        labels = {**selector, "helm.sh/chart": "node-feature-discovery-0.17.3", "app.kubernetes.io/version": "v0.17.3",
                  "app.kubernetes.io/managed-by": "Helm"}
        out.append({"apiVersion": "apps/v1", "kind": kind,
                    "metadata": {"name": f"{release}-node-feature-discovery-{role}", "namespace": namespace, "labels": labels},
                    "spec": {"selector": {"matchLabels": selector},
                             "template": {"metadata": {"labels": selector},
                                          "spec": {"containers": [{"name": role, "image": "registry.k8s.io/nfd/node-feature-discovery:v0.17.3",
                                                                   "command": [f"nfd-{role}"]}]}}}})
    return out


def namespace(name: str) -> Dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def node_feature(name: str, labels: Dict[str, str]) -> Dict[str, Any]:
    """The NodeFeature object GFD writes for a node (NVIDIA/k8s-device-plugin internal/lm/output.go nodeFeatureObject)."""
    return {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature",
            "metadata": {"name": f"nvidia-features-for-{name}", "namespace": "nvidia-device-plugin",
                         "labels": {"nfd.node.kubernetes.io/node-name": name}},
            "spec": {"features": {"flags": {}, "attributes": {}, "instances": {}}, "labels": labels}}


@pytest.fixture
def bed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """kube_fake with the three GPU nodes (FakeKube arguments from an indirect parameter) and a fake helm."""
    with FakeKube(**getattr(request, "param", {})) as kube:
        for name, resources in EXPECTED.items():
            kube.add_node(node(name, resources))
        yield {"kube": kube, "helm": FakeHelm(tmp_path / "helm", CHARTS), "tmp": tmp_path}


def inventory(bed: Dict[str, Any], **control_vars: Any) -> Path:
    tmp: Path = bed["tmp"]
    inv = tmp / "inv"
    if not inv.exists():
        shutil.copytree(ROOT / "inventories" / "dgx", inv)
        shutil.copytree(ROOT / "inventories" / "layouts", tmp / "layouts")
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["children"]["k8s_control"]["hosts"] = {
        "k8s-admin-01": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **control_vars}}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    all_vars = yaml.safe_load((inv / "group_vars" / "all.yml").read_text())
    all_vars["gpu_ops_kubeconfig"] = str(bed["kube"].kubeconfig_path)
    (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars))
    return inv


def playbook(bed: Dict[str, Any], argv: List[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = ansible_env(bed["tmp"], bed["helm"].bin_dir)
    env.pop("K8S_AUTH_KUBECONFIG", None)
    return subprocess.run([str(BIN / "ansible-playbook"), *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def cluster(bed: Dict[str, Any], **control_vars: Any) -> subprocess.CompletedProcess[str]:
    """playbooks/cluster.yml, apply mode, without its verification (tested below on its own)."""
    inv = inventory(bed, gpu_plugins_verify=False, **control_vars)
    return playbook(bed, ["playbooks/cluster.yml", "-i", str(inv)])


def nfd_values(bed: Dict[str, Any]) -> Any:
    return bed["helm"].releases()[RELEASE]["values"]["nfd"]


def upgrades(bed: Dict[str, Any]) -> List[Dict[str, Any]]:
    """helm upgrade calls of the device plugin's release (the role also installs dcgm-exporter's)."""
    return [c for c in bed["helm"].calls() if "upgrade" in c["argv"] and "nvdp" in c["argv"]]


def said(proc: subprocess.CompletedProcess[str]) -> str:
    """The role's one line about NFD."""
    lines = [line for line in proc.stdout.splitlines() if '"msg": "Node Feature Discovery: ' in line]
    assert len(lines) == 1, proc.stdout[-6000:]
    return lines[0]


def test_auto_deploys_nfd_when_the_cluster_runs_none_and_keeps_it(bed: Dict[str, Any]) -> None:
    first = cluster(bed)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    assert "no other NFD runs (no nfd-master in any namespace; the CRD nodefeatures.nfd.k8s-sigs.io does not exist): deploys NFD with the chart" in said(first)
    # what kubernetes.core.helm gave helm (-f values file): NFD deployed, GFD publishing through NodeFeature objects
    assert nfd_values(bed) == {"enabled": True, "enableNodeFeatureApi": True, "master": {"config": {"extraLabelNs": ["nvidia.com"]}}}
    assert len(upgrades(bed)) == 1
    # the chart's NFD now runs in the release's namespace (what helm would have created); a re-run must not take it for
    # another NFD and switch its own off
    for obj in nfd_workloads("nvdp", "nvidia-device-plugin"):
        bed["kube"].add_object(obj, "helm")
    second = cluster(bed)
    assert second.returncode == 0, second.stdout[-6000:] + second.stderr[-2000:]
    line = said(second)
    assert ("this release's own NFD: Deployment nvidia-device-plugin/nvdp-node-feature-discovery-master, "
            "DaemonSet nvidia-device-plugin/nvdp-node-feature-discovery-worker") in line
    assert ": deploys NFD with the chart (nfd.enabled: true)" in line
    assert nfd_values(bed)["enabled"] is True
    assert len(upgrades(bed)) == 1, "the unchanged release was upgraded again"


def test_auto_reuses_the_gpu_operators_nfd(bed: Dict[str, Any]) -> None:
    kube = bed["kube"]
    load_crds(kube, ["NodeFeature"])  # what NFD's chart installs (crds/), vendored in tests/data/crds
    kube.add_object(namespace("gpu-operator"), "helm")
    for obj in nfd_workloads("gpu-operator", "gpu-operator"):
        kube.add_object(obj, "helm")
    proc = cluster(bed)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert ("reuses the NFD the cluster runs: Deployment gpu-operator/gpu-operator-node-feature-discovery-master; the CRD "
            "nodefeatures.nfd.k8s-sigs.io exists (GFD publishes NodeFeature objects); nfd.enabled: false") in said(proc)
    assert nfd_values(bed) == {"enabled": False, "enableNodeFeatureApi": True}


@pytest.mark.parametrize(
    ("setting", "seed_other", "message"),
    [
        ("true", True,
         "gpu_plugins_nfd_enabled is true, but NFD already runs: Deployment gpu-operator/gpu-operator-node-feature-discovery-master. "
         "A second NFD would label the same nodes and remove the labels the other one set; set gpu_plugins_nfd_enabled: auto (or false)"),
        ("false", False,
         "gpu_plugins_nfd_enabled is false and GPU feature discovery is on, but no other NFD runs (no nfd-master in any namespace; "
         "the CRD nodefeatures.nfd.k8s-sigs.io does not exist): GFD's labels (nvidia.com/mig-<profile>.count, ...) would never reach "
         "the nodes and the cluster verification would fail. Set gpu_plugins_nfd_enabled: auto"),
    ],
)
def test_contradicting_settings_are_refused_before_anything_is_applied(bed: Dict[str, Any], setting: str, seed_other: bool, message: str) -> None:
    kube = bed["kube"]
    if seed_other:
        kube.add_object(namespace("gpu-operator"), "helm")
        for obj in nfd_workloads("gpu-operator", "gpu-operator"):
            kube.add_object(obj, "helm")
    kube.clear_requests()
    proc = cluster(bed, gpu_plugins_nfd_enabled=setting)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-6000:]
    assert [r for r in kube.requests if r.method != "GET"] == [], "something was written to the cluster"
    assert upgrades(bed) == []
    assert bed["helm"].releases() == {}
    assert kube.get_object("v1", "Namespace", "nvidia-device-plugin") is None


def test_auto_refuses_to_guess_when_the_cluster_cannot_be_read(bed: Dict[str, Any]) -> None:
    # a kubeconfig the API server does not accept (401 Unauthorized for every lookup): auto cannot tell whether NFD runs
    wrong = bed["tmp"] / "wrong-kubeconfig"
    wrong.write_text(yaml.safe_dump(bed["kube"].kubeconfig(token="not-the-token")))
    proc = cluster(bed, gpu_ops_kubeconfig=str(wrong))
    assert proc.returncode != 0
    out = proc.stdout
    assert ("gpu_plugins_nfd_enabled is auto, but whether NFD already runs cannot be told: the CRD nodefeatures.nfd.k8s-sigs.io "
            "could not be read: 401, Reason: Unauthorized") in out, out[-6000:]
    assert "Deployments in all namespaces could not be listed" in out
    assert "Unauthorized" in out
    assert "or set gpu_plugins_nfd_enabled to true (deploy NFD) or false (the cluster runs its own)" in out
    assert upgrades(bed) == []


def verify(bed: Dict[str, Any]) -> subprocess.CompletedProcess[str]:
    inv = inventory(bed, gpu_plugins_verify_retries=1, gpu_plugins_verify_delay=1)
    # the cluster play only: the serving play (serving_verify) is tested in test_e2e_verify.py; these clusters run no Triton
    return playbook(bed, ["playbooks/verify.yml", "-i", str(inv), "--limit", "k8s_control", "--tags", "cluster"])


def test_verify_without_nfd_fails_naming_nfd(bed: Dict[str, Any]) -> None:
    proc = verify(bed)
    assert proc.returncode != 0
    out = proc.stdout
    assert "dgx-h200-01  nvidia.com/mig-1g.18gb  label   56        absent" in out, out[-6000:]
    assert ("GPU feature discovery's labels (nvidia.com/mig-<profile>.count, nvidia.com/gfd.timestamp, ...) are missing on "
            "dgx-a100-01, dgx-a100-02, dgx-h200-01, whose allocatable MIG resources are right") in out
    assert ("NFD is not running: no nfd-master runs in any namespace and the CRD nodefeatures.nfd.k8s-sigs.io does not exist. "
            "Set gpu_plugins_nfd_enabled: auto (or true) so the device plugin chart deploys NFD, or install NFD.") in out


def gfd_publishes(kube: Any) -> None:
    """What GFD does on each node once it runs: its NodeFeature object in the release's namespace."""
    load_crds(kube, ["NodeFeature"])
    kube.add_object(namespace("nvidia-device-plugin"), "helm")
    for name, resources in EXPECTED.items():
        kube.add_object(node_feature(name, gfd_labels(resources)), "gpu-feature-discovery")


@pytest.mark.parametrize("bed", [{"nfd_master": True, "nfd_namespace": "nvidia-device-plugin"}], indirect=True)
def test_verify_passes_once_nfd_master_labels_the_nodes(bed: Dict[str, Any]) -> None:
    kube = bed["kube"]
    gfd_publishes(kube)
    labels = kube.get_object("v1", "Node", "dgx-a100-02")["metadata"]["labels"]
    assert labels["nvidia.com/mig-3g.20gb.count"] == "8"  # nfd-master's part done by kube_fake
    proc = verify(bed)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert "3 GPU node(s) advertise their layouts" in proc.stdout
    assert "Node Feature Discovery (NFD)" not in proc.stdout


# An NFD whose nfd-master refuses the nvidia.com label namespace (denyLabelNs) runs, GFD's NodeFeature objects are there,
# and still no label arrives: the failure names the running nfd-master and what in its configuration to check.
@pytest.mark.parametrize("bed", [{"nfd_master": True, "nfd_namespace": "gpu-operator", "nfd_extra_label_ns": (),
                                  "nfd_deny_label_ns": ("nvidia.com",)}], indirect=True)
def test_verify_names_the_running_nfd_when_its_labels_do_not_arrive(bed: Dict[str, Any]) -> None:
    kube = bed["kube"]
    gfd_publishes(kube)
    kube.add_object(namespace("gpu-operator"), "helm")
    for obj in nfd_workloads("gpu-operator", "gpu-operator"):
        kube.add_object(obj, "helm")
    assert "nvidia.com/mig-1g.18gb.count" not in kube.get_object("v1", "Node", "dgx-h200-01")["metadata"]["labels"]
    proc = verify(bed)
    assert proc.returncode != 0
    assert ("NFD: nfd-master runs (Deployment gpu-operator/gpu-operator-node-feature-discovery-master) and the CRD "
            "nodefeatures.nfd.k8s-sigs.io exists. Check that nfd-master is ready and that its configuration lets GFD's labels "
            "through: the nvidia.com label namespace not in denyLabelNs") in proc.stdout, proc.stdout[-6000:]


def test_role_without_the_fleet_fails_in_preflight_writing_nothing(tmp_path: Path) -> None:
    """The role on its own, without playbooks/validate.yml: it asks for gpu_ops_fleet before rendering or applying."""
    play = tmp_path / "play.yml"
    out = tmp_path / "out"
    play.write_text(yaml.safe_dump([{"name": "Role alone", "hosts": "localhost", "gather_facts": False,
                                     "vars": {"gpu_ops_k8s_mode": "render", "gpu_ops_render_dir": str(out)},
                                     "roles": [{"role": "gpu_ops.mig_serving.gpu_plugins"}]}]))
    env = ansible_env(tmp_path, ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(play)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert ("gpu_ops_fleet is not set: import playbooks/validate.yml (or set it with the filter gpu_ops.mig_serving.mig_fleet)"
            in proc.stdout), proc.stdout[-4000:]
    assert not out.exists()
