# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``ansible-playbook site.yml --check --diff`` end to end: it says what would change on the nodes and in the
cluster, and changes nothing.

The bed (one module fixture):
- three GPU nodes: two fresh ones (8 x A100-SXM4-40GB and 8 x H200, MIG disabled, nvidia-mig-manager not installed)
  are inventory hosts with the local connection and a GPU simulator state of their own (tests/gpu_sim from the
  source tree, as benchmarks/check_fleet.py runs them), their config and textfile dirs in a temporary directory; the
  third is a systemd container of the test bed (tests/testbed) that playbooks/mig.yml converges for real first
  (package, config, drop-in, layout all-balanced), so check mode must report nothing for it;
- the cluster: tests/kube_fake (TLS, token, server-side apply, dryRun) with the three Nodes; the GPU layer applied
  for real (playbooks/cluster.yml: namespace nvidia-device-plugin, release nvdp), so those are identical; the
  namespace triton applied earlier by the same field manager with another pod-security level, so it differs;
- helm: no helm binary can be installed here (not on PyPI nor in Debian), so tests/fake_helm answers the commands
  kubernetes.core.helm runs and records them; release kube-prometheus-stack is installed at an older chart version
  (would be upgraded), prometheus-adapter is not installed (would be installed).

The verification plays run too: in check mode each one that can only fail because nothing was applied says
"Check mode: would verify ... after apply" instead of failing (gpu_plugins' cluster check, the serving play, and the
node play of playbooks/verify.yml, whose check-mode handling this test requires).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.fake_helm import FakeHelm
    from tests.kube_fake.server import FakeKube
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from fake_helm import FakeHelm
    from kube_fake.server import FakeKube
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SIM = ROOT / "tests" / "gpu_sim" / "bin"
NODE_PYTHON = "/usr/bin/python3"  # the fresh nodes' python (with python3-apt, as Debian nodes have)
IMAGE = "localhost/gpu-ops-node:test"
CONF = ROOT / "tests" / "testbed" / "containers.conf"
DEB = ROOT / "build" / "testbed" / "debs" / "nvidia-mig-manager_0.13.0-1_amd64.deb"
DROPIN_DIR = "/etc/systemd/system/nvidia-mig-manager.service.d"
CONTROL = "k8s-admin-01"
FIELD_MANAGER = "gpu-ops-mig-serving"
A100, H200 = "0x20B010DE", "0x233510DE"
TRITON_READ = re.compile(r"^/api/v1/namespaces/[^/]+/services/[^/]+/proxy/v2/repository/index$")

pytestmark = pytest.mark.slow

# What the fake chart repositories hold: the versions the inventory and the roles pin, and an older one.
CHARTS: List[Dict[str, Any]] = [
    {"repository": "https://nvidia.github.io/k8s-device-plugin", "name": "nvidia-device-plugin", "version": "0.18.0", "appVersion": "0.18.0",
     "description": "A Helm chart for the nvidia-device-plugin on Kubernetes"},
    {"repository": "https://nvidia.github.io/dcgm-exporter/helm-charts", "name": "dcgm-exporter", "version": "4.8.4", "appVersion": "4.8.4",
     "description": "A Helm chart for DCGM exporter"},
    {"repository": "https://prometheus-community.github.io/helm-charts", "name": "kube-prometheus-stack", "version": "67.8.0",
     "appVersion": "v0.79.2", "description": "kube-prometheus-stack collects Kubernetes manifests, Grafana dashboards, and Prometheus rules"},
    {"repository": "https://prometheus-community.github.io/helm-charts", "name": "kube-prometheus-stack", "version": "66.2.1",
     "appVersion": "v0.78.1", "description": "kube-prometheus-stack collects Kubernetes manifests, Grafana dashboards, and Prometheus rules"},
    {"repository": "https://prometheus-community.github.io/helm-charts", "name": "prometheus-adapter", "version": "5.3.0", "appVersion": "v0.12.0",
     "description": "A Helm chart for k8s prometheus adapter"},
]


def k8s_node(name: str, resources: Dict[str, int]) -> Dict[str, Any]:
    """A Node as the API returns it, with what the device plugin (allocatable) and GFD (labels) publish."""
    labels = {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true"}
    labels.update({f"{res}.count": str(n) for res, n in resources.items() if res.startswith("nvidia.com/mig-")})
    alloc = {"cpu": "255", "memory": "2113445440Ki", "pods": "110", **{res: str(n) for res, n in resources.items()}}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}, "status": {"allocatable": alloc, "capacity": dict(alloc)}}


def podman(*args: str, check: bool = True, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=dict(os.environ, CONTAINERS_CONF=str(CONF)), capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc


def wait_booted(name: str) -> None:
    for _attempt in range(120):  # 60 s at most
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        subprocess.run(["sleep", "0.5"], check=True)
    raise AssertionError(f"{name}: systemd did not finish booting")


def sim(state: Path, *argv: str) -> str:
    return subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), *argv], env=dict(os.environ, GPU_SIM_STATE=str(state)), check=True,
                          capture_output=True, text=True).stdout


def container_snapshot(name: str) -> Dict[str, str]:
    """What the node role writes on a node, and the GPUs' history: the simulator's log, our files, the package."""
    files = podman("exec", name, "sh", "-c", f"find /etc/gpu-ops /var/lib/node_exporter {DROPIN_DIR} -type f -exec sha256sum {{}} + | sort").stdout
    return {"log": podman("exec", name, "gpu-sim", "log").stdout, "files": files,
            "package": podman("exec", name, "dpkg-query", "-W", "-f=${Version} ${Status}", "nvidia-mig-manager", check=False).stdout}


def apply_object(kube: Any, obj: Dict[str, Any]) -> None:
    """Server-side apply as our field manager (what an earlier run of the collection left), through the API."""
    path = f"/api/v1/namespaces/{obj['metadata']['name']}" if obj["kind"] == "Namespace" else ""
    assert path, "only namespaces are seeded this way"
    req = urllib.request.Request(f"{kube.url}{path}?fieldManager={FIELD_MANAGER}", data=yaml.safe_dump(obj).encode(), method="PATCH",
                                 headers={"Authorization": f"Bearer {kube.token}", "Content-Type": "application/apply-patch+yaml"})
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=str(kube.ca_path)), timeout=30) as resp:
        assert resp.status in (200, 201)


def playbook(bed: Dict[str, Any], argv: List[str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = ansible_env(bed["tmp"], bed["helm"].bin_dir, CONTAINERS_CONF=str(CONF), ANSIBLE_FORKS="4")
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(bed["inventory"]), *VAULT_ARGS, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def recap(stdout: str) -> Dict[str, Dict[str, int]]:
    out: Dict[str, Dict[str, int]] = {}
    for m in re.finditer(r"^(\S+)\s+: ((?:\w+=\d+\s*)+)$", stdout, re.M):
        out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def task_blocks(stdout: str) -> List[Tuple[str, str]]:
    """(task title, its output) for every TASK block."""
    parts = re.split(r"^TASK \[(.*?)\] \*+$", stdout, flags=re.M)
    return [(parts[i], parts[i + 1]) for i in range(1, len(parts) - 1, 2)]


def host_state(bed: Dict[str, Any]) -> Dict[str, Any]:
    local = {name: sim(state, "log") for name, state in bed["states"].items()}
    return {"local": local, "node_dirs": sorted(str(p) for p in bed["node_root"].rglob("*")), "container": container_snapshot(bed["converged"]),
            "host_dropin": Path(DROPIN_DIR).exists(),
            "host_package": subprocess.run(["dpkg", "-s", "nvidia-mig-manager"], capture_output=True, check=False).returncode,
            "kube": json.dumps(bed["kube"].state(), sort_keys=True), "releases": json.dumps(bed["helm"].releases(), sort_keys=True)}


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    if shutil.which("podman") is None or os.geteuid() != 0:
        pytest.fail("the converged node is a test-bed container: needs root and podman (`make test` installs podman, runc and debootstrap)")
    build = subprocess.run([str(ROOT / "tests" / "testbed" / "build-node-image.sh"), IMAGE], capture_output=True, text=True, timeout=900, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    assert DEB.is_file(), f"build-node-image.sh did not build {DEB}"
    tmp = tmp_path_factory.mktemp("site-check")
    converged = f"gpu-ops-check-{uuid.uuid4().hex[:8]}"
    with FakeKube() as kube:
        try:
            podman("run", "-d", "--name", converged, "--hostname", converged, "--systemd=always", "--network=none", IMAGE)
            wait_booted(converged)
            podman("exec", converged, "gpu-sim", "init", "--model", "A100-SXM4-40GB", "--count", "8")
            node_root = tmp / "nodes"
            states: Dict[str, Path] = {}
            hosts: Dict[str, Dict[str, Any]] = {}
            for name, model, pci, layout in (("sim-a100-fresh", "A100-SXM4-40GB", A100, "all-1g.5gb"), ("sim-h200-fresh", "H200", H200, "all-1g.18gb")):
                state = tmp / f"{name}.json"
                states[name] = state
                sim(state, "init", "--model", model, "--count", "8")
                smi = tmp / f"{name}-nvidia-smi"
                smi.write_text(f"#!/bin/sh\nGPU_SIM_STATE={state} exec {NODE_PYTHON} {SIM / 'nvidia-smi'} \"$@\"\n")
                smi.chmod(0o755)
                hosts[name] = {"ansible_connection": "local", "ansible_python_interpreter": NODE_PYTHON, "mig_layout_config": layout,
                               "gpu_ops_node_gpus": {"count": 8, "pci_device_id": pci}, "gpu_ops_nvidia_smi_path": str(smi), "mig_layout_gpu_clients": [],
                               "mig_layout_config_dir": str(node_root / name / "etc"), "mig_layout_textfile_dir": str(node_root / name / "textfile")}
                kube.add_node(k8s_node(name, {"nvidia.com/gpu": 8}))  # MIG disabled: whole GPUs
            hosts[converged] = {"ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3",
                                "mig_layout_config": "all-balanced", "gpu_ops_node_gpus": {"count": 8, "pci_device_id": A100}}
            kube.add_node(k8s_node(converged, {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8}))

            for host_vars in hosts.values():  # host variables: inventories/dgx/group_vars/gpu_nodes.yml sets some of these for the group
                host_vars.update({"ansible_user": "root", "ansible_become": False, "gpu_ops_mig_backend": "nvidia_smi", "mig_layout_package_file": str(DEB)})
            inv = tmp / "inv"
            shutil.copytree(ROOT / "inventories" / "dgx", inv)
            shutil.copytree(ROOT / "inventories" / "layouts", tmp / "layouts")
            inventory = {"all": {"children": {
                "gpu_nodes": {"hosts": hosts},
                "k8s_control": {"hosts": {CONTROL: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}
            (inv / "hosts.yml").write_text(yaml.safe_dump(inventory))
            all_vars = yaml.safe_load((inv / "group_vars" / "all.yml").read_text())
            all_vars["gpu_ops_kubeconfig"] = str(kube.kubeconfig_path)
            (inv / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars))
            helm = FakeHelm(tmp / "helm", CHARTS)
            bed: Dict[str, Any] = {"tmp": tmp, "inventory": inv, "kube": kube, "helm": helm, "states": states, "node_root": node_root,
                                   "converged": converged}

            # An earlier run of the collection: the converged node in its layout, the GPU layer of the cluster applied.
            prep = tmp / "prep.yml"
            prep.write_text(yaml.safe_dump([{"ansible.builtin.import_playbook": str(ROOT / "playbooks" / "mig.yml")},
                                            {"ansible.builtin.import_playbook": str(ROOT / "playbooks" / "cluster.yml")}]))
            proc = playbook(bed, [str(prep), "--limit", f"{converged},{CONTROL}", "-e", "gpu_plugins_verify=false"])
            assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
            assert recap(proc.stdout)[converged]["changed"] > 0
            assert [c for c in helm.calls() if c["argv"][:1] != ["version"] and "upgrade" in c["argv"]], "the GPU layer's release was not installed"
            assert "nvidia-device-plugin/nvdp" in helm.releases()
            # ... and, earlier still, the triton namespace at another pod-security level; the monitoring stack one chart behind
            apply_object(kube, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton", "labels": {
                "app.kubernetes.io/managed-by": "gpu-ops.mig-serving", "app.kubernetes.io/part-of": "serving", "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/audit": "restricted", "pod-security.kubernetes.io/warn": "restricted"}}})
            helm.set_release("kube-prometheus-stack", "monitoring", "kube-prometheus-stack", "66.2.1", "v0.78.1", {"grafana": {"enabled": True}})
            yield bed
        finally:
            podman("rm", "-f", "-t", "0", converged, check=False)


def test_site_check_diff_reports_and_changes_nothing(bed: Dict[str, Any]) -> None:
    kube, helm = bed["kube"], bed["helm"]
    converged = bed["converged"]
    before = host_state(bed)
    assert before["node_dirs"] == []
    assert before["host_package"] != 0
    calls_before = len(helm.calls())
    kube.clear_requests()

    proc = playbook(bed, ["site.yml", "--check", "--diff"])
    out = proc.stdout
    (bed["tmp"] / "site-check-diff.out").write_text(out)  # kept with the test's temporary files, to read after a failure
    assert proc.returncode == 0, out[-8000:] + proc.stderr[-2000:]
    stats = recap(out)
    # playbooks/validate.yml remembers the validation on every host of the run (a run_once set_fact): no connection for it
    assert set(stats) == {"sim-a100-fresh", "sim-h200-fresh", converged, CONTROL}, stats
    assert all(s["failed"] == 0 and s["unreachable"] == 0 for s in stats.values()), stats

    # the nodes: the fresh ones would change, shown; the converged one would not
    for fresh in ("sim-a100-fresh", "sim-h200-fresh"):
        assert stats[fresh]["changed"] > 0
        assert f"{fresh}" in out
        assert "Would install nvidia-mig-manager 0.13.0 (installed: none)" in out
    assert stats[converged]["changed"] == 0, [t for t, body in task_blocks(out) if f"changed: [{converged}]" in body]
    # the diff shows the drop-in the fresh nodes would get (the boot-time apply of their own layout)
    # (one task, module mig_node_files, writes the node's files and units: its diff has one entry per path)
    dropin_diffs = [body for title, body in task_blocks(out)
                    if title.endswith("Write our configuration and enable the boot-time apply")]
    assert len(dropin_diffs) == 1, dropin_diffs
    dropin = dropin_diffs[0]
    assert dropin.count("+++ after: /etc/systemd/system/nvidia-mig-manager.service.d/zz-gpu-ops.conf") == 2, dropin
    for host, layout in (("sim-a100-fresh", "all-1g.5gb"), ("sim-h200-fresh", "all-1g.18gb")):
        assert f"changed: [{host}]" in dropin
        assert f'+Environment="MIG_PARTED_SELECTED_CONFIG={layout}"' in dropin, f"the drop-in diff does not show {host}'s layout"
    assert f"changed: [{converged}]" not in dropin

    # nothing changed on any node
    after = host_state(bed)
    assert after["local"] == before["local"], "the simulated GPUs of a fresh node were touched (mode change, create or destroy)"
    assert after["node_dirs"] == [], f"files were written on a fresh node: {after['node_dirs']}"
    assert after["host_dropin"] == before["host_dropin"], "a drop-in landed on the fresh nodes' machine"
    assert after["host_package"] != 0, "the package was installed on the fresh nodes' machine"
    assert after["container"] == before["container"], "the converged node changed"

    # the cluster: only reads and dry runs reached the API server, and nothing it stores changed
    writes = [r for r in kube.requests if r.method not in ("GET", "HEAD")]
    assert writes, "check mode sent no dry run at all"
    # besides dry runs, only Triton's read-only repository index through the service proxy (the serving verify play
    # asks the load balancer which models it serves; a POST in Triton's API, not a write to the cluster)
    wet = [f"{r.method} {r.path} {r.query}" for r in writes if r.query.get("dryRun") != ["All"] and not TRITON_READ.search(r.path)]
    assert wet == [], wet
    assert after["kube"] == before["kube"]
    # the diff names the object that differs (and its field) and not the identical one
    applied = [body for title, body in task_blocks(out) if title.startswith("gpu_ops.mig_serving.k8s_objects : Apply, server-side")]
    joined = "\n".join(applied)
    assert re.search(r"^changed: \[k8s-admin-01\] => \(item=Namespace/triton\)", joined, re.M), joined[-3000:]
    assert re.search(r"^ok: \[k8s-admin-01\] => \(item=Namespace/nvidia-device-plugin\)", joined, re.M), joined[-3000:]
    assert re.search(r'^-\s+"?pod-security.kubernetes.io/enforce"?: "?baseline', joined, re.M), "the diff does not show the label that changes"
    assert "nvidia-device-plugin" not in "".join(re.findall(r"^[-+].*$", joined, re.M)), "a diff was shown for the identical namespace"
    # objects the API server cannot dry-run yet (a CRD of a release not installed, a namespace not created) are reported
    assert re.search(r"Would apply PodMonitor triton; not dry-run: monitoring.coreos.com/v1 PodMonitor is not served yet", out)

    # helm: asked, never installing or upgrading; the release that differs and the missing one would change
    calls = helm.calls()[calls_before:]
    assert calls, "helm was never asked"
    assert [c for c in calls if not c["reproduced"]] == []
    assert not [c for c in calls if c["argv"][:1] in (["install"], ["upgrade"]) or "upgrade" in c["argv"]], calls
    assert after["releases"] == before["releases"]
    helm_tasks = "\n".join(body for title, body in task_blocks(out) if title.endswith("Install or upgrade the Helm releases of monitoring")
                           or title.endswith("Install or upgrade the Helm releases of custom_metrics")
                           or title.endswith("Install or upgrade the Helm releases of gpu_plugins"))
    assert re.search(r"^changed: \[k8s-admin-01\] => \(item=kube-prometheus-stack kube-prometheus-stack 67\.8\.0\)", helm_tasks, re.M), helm_tasks
    assert re.search(r"^changed: \[k8s-admin-01\] => \(item=prometheus-adapter prometheus-adapter 5\.3\.0\)", helm_tasks, re.M), helm_tasks
    assert re.search(r"^ok: \[k8s-admin-01\] => \(item=nvdp nvidia-device-plugin 0\.18\.0\)", helm_tasks, re.M), helm_tasks

    # the verifications say what they would verify instead of failing: the fresh nodes, the cluster, the serving stack
    assert re.search(r"Check mode: would verify all-1g\.5gb after apply; not applied yet \(16 difference", out)
    assert re.search(r"all-balanced verified on 8 GPU\(s\)", out), "the converged node was not verified"
    assert "Check mode: would verify the serving stack after apply" in out
    assert "Check mode: would verify after apply" in out
    report = re.search(r"Check mode: would verify after apply\. Not advertised yet.*", out)
    assert report, "no check-mode report of the cluster verification"
    assert re.search(r"sim-a100-fresh\s+nvidia\.com/mig-1g\.5gb\s+allocatable\s+56\s+absent", report.group(0)), report.group(0)
    assert converged not in report.group(0), "the converged node, which advertises its layout, is in the report"


def test_check_with_tags_cluster_touches_no_node(bed: Dict[str, Any]) -> None:
    kube, helm = bed["kube"], bed["helm"]
    before = host_state(bed)
    calls_before = len(helm.calls())
    kube.clear_requests()
    proc = playbook(bed, ["site.yml", "--check", "--diff", "--tags", "cluster"])
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    stats = recap(proc.stdout)
    # on the GPU nodes only checks that run on the controller and open no connection: playbooks/validate.yml's (tagged
    # always) and the node role's argument validation (tagged always by Ansible); nothing changed there, as the
    # snapshots below show
    nodes = set(stats) - {CONTROL, "localhost"}
    assert all(stats[n]["changed"] == 0 for n in nodes), stats
    node_tasks = {title for title, body in task_blocks(proc.stdout) if any(f"[{n}]" in body for n in nodes)}
    validation = {"Check the node names its layout", "Load the layout file strictly and check the layout is in it",
                  "Plan the layout on the GPUs the inventory gives the node", "Check the mode and the stages",
                  "Check the run has hosts to work on", "Check the rollout's batch size", "Remember the run is validated"}
    assert all(title.startswith("gpu_ops.mig_serving.mig_layout : Validating arguments against arg spec") or title in validation
               for title in node_tasks), node_tasks
    after = host_state(bed)
    assert after == before
    assert [r for r in kube.requests if r.method not in ("GET", "HEAD") and r.query.get("dryRun") != ["All"] and not TRITON_READ.search(r.path)] == []
    # node lookups only: no drain, no label patch, not even as a dry run, for any node
    assert not [r for r in kube.requests if "/nodes/" in r.path and r.method != "GET"]
    calls = helm.calls()[calls_before:]
    assert calls
    assert all(c["reproduced"] for c in calls)
    assert not [c for c in calls if "upgrade" in c["argv"]]
    assert re.search(r"^ok: \[k8s-admin-01\] => \(item=nvdp nvidia-device-plugin 0\.18\.0\)", proc.stdout, re.M)


def test_check_on_a_fresh_cluster_reports_what_the_api_server_cannot_dry_run(bed: Dict[str, Any]) -> None:
    """The serving stack and the load balancer in check mode on a cluster with nothing of ours: their namespaces do not
    exist and kube-prometheus-stack's CRDs are not installed, so those objects are reported; the others are dry-run."""
    helm = bed["helm"]
    with FakeKube() as fresh:
        before = json.dumps(fresh.state(), sort_keys=True)
        stages = bed["tmp"] / "serving-stages.yml"
        imports = [{"ansible.builtin.import_playbook": str(ROOT / "playbooks" / name)} for name in ("serving.yml", "load_balancer.yml")]
        stages.write_text(yaml.safe_dump(imports))
        calls_before = len(helm.calls())
        proc = playbook(bed, [str(stages), "--check", "--diff", "-e", f"gpu_ops_kubeconfig={fresh.kubeconfig_path}"])
        out = proc.stdout
        assert proc.returncode == 0, out[-8000:] + proc.stderr[-2000:]
        assert recap(out)[CONTROL]["failed"] == 0
        for kind, name in (("Deployment", "triton-1g-5gb"), ("Service", "triton-1g-5gb-headless"), ("HorizontalPodAutoscaler", "triton-1g-5gb"),
                           ("ConfigMap", "nginx-lb-config")):
            assert f"Would apply {kind} {name}; not dry-run: namespace triton does not exist yet (this run would create it)" in out, kind
        assert "Would apply PrometheusRule triton-queue-time; not dry-run: monitoring.coreos.com/v1 PrometheusRule is not served yet" in out
        # the namespaces themselves are dry-run (cluster-scoped, served), and shown as new
        applied = "\n".join(body for title, body in task_blocks(out) if title.startswith("gpu_ops.mig_serving.k8s_objects : Apply, server-side"))
        for namespace in ("monitoring", "triton"):
            assert re.search(rf"^changed: \[k8s-admin-01\] => \(item=Namespace/{namespace}\)", applied, re.M), applied[-3000:]
        wet = [f"{r.method} {r.path}" for r in fresh.requests if r.method not in ("GET", "HEAD") and r.query.get("dryRun") != ["All"]]
        assert wet == []
        assert [r for r in fresh.requests if r.method == "PATCH"], "no dry run was sent"
        assert json.dumps(fresh.state(), sort_keys=True) == before
        calls = helm.calls()[calls_before:]
        assert calls, "helm was never asked"
        assert not [c for c in calls if "upgrade" in c["argv"] or not c["reproduced"]], calls
