# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Apply mode and the cluster-side verification, through the real kubernetes.core modules, against the
fake API server in tests/kube_fake (no Kubernetes API server can run here; see docs/testing.md).

- k8s_objects applies the very objects render mode writes (server-side apply, field manager), and a
  second run changes nothing;
- playbooks/verify.yml's cluster play passes when every node advertises its layout, fails with the
  node/resource/expected/actual table when one does not, waits (with a retry message per attempt) for a
  node that catches up, and gives up after the bounded number of attempts.
The Helm half of apply mode needs the helm binary and a chart repository; neither is available here.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.kube_fake.crds import load_crds
    from tests.kube_fake.server import FakeKube
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from kube_fake.crds import load_crds
    from kube_fake.server import FakeKube
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

# What inventories/dgx promises (see tests/integration/test_render.py: mig-capacity.yaml)
EXPECTED = {
    "dgx-a100-01": {"nvidia.com/mig-1g.5gb": 56},
    "dgx-a100-02": {"nvidia.com/mig-1g.5gb": 16, "nvidia.com/mig-2g.10gb": 8, "nvidia.com/mig-3g.20gb": 8},
    "dgx-h200-01": {"nvidia.com/mig-1g.18gb": 56},
}


def node(name: str, resources: Dict[str, int]) -> Dict[str, Any]:
    """A Node as the API returns it, with what the device plugin (allocatable) and GFD (labels) publish."""
    labels = {"kubernetes.io/hostname": name, "nvidia.com/mig.config": "x", "nvidia.com/gpu.present": "true"}
    labels.update({f"{res}.count": str(n) for res, n in resources.items() if res.startswith("nvidia.com/mig-")})
    alloc = {"cpu": "255", "memory": "2113445440Ki", "pods": "110"}
    alloc.update({res: str(n) for res, n in resources.items()})
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": alloc, "capacity": dict(alloc)},
    }


@pytest.fixture
def kube() -> Iterator[Any]:
    with FakeKube() as server:
        for name, resources in EXPECTED.items():
            server.add_node(node(name, resources))
        yield server


def inventory(tmp_path: Path, kubeconfig: str, **control_vars: Any) -> Path:
    inv_dir = tmp_path / "inv"
    shutil.copytree(ROOT / "inventories" / "dgx", inv_dir)
    shutil.copytree(ROOT / "inventories" / "layouts", tmp_path / "layouts")
    hosts = yaml.safe_load((inv_dir / "hosts.yml").read_text())
    hosts["all"]["children"]["k8s_control"]["hosts"] = {
        "k8s-admin-01": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **control_vars}
    }
    (inv_dir / "hosts.yml").write_text(yaml.safe_dump(hosts))
    all_vars = yaml.safe_load((inv_dir / "group_vars" / "all.yml").read_text())
    all_vars["gpu_ops_kubeconfig"] = kubeconfig
    (inv_dir / "group_vars" / "all.yml").write_text(yaml.safe_dump(all_vars))
    return inv_dir


def playbook(tmp_path: Path, argv: List[str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = ansible_env(tmp_path)
    return subprocess.run([str(BIN / "ansible-playbook"), *argv, *VAULT_ARGS], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_apply_path_sends_the_rendered_objects_with_server_side_apply(kube: Any, tmp_path: Path) -> None:
    # dcgm-exporter's PodMonitor: its CRD comes with the Prometheus Operator (kube-prometheus-stack)
    load_crds(kube, ["PodMonitor"])
    out = tmp_path / "rendered"
    proc = playbook(tmp_path, ["playbooks/render.yml", "-i", "inventories/dgx", "-e", f"gpu_ops_render_dir={out}"])
    assert proc.returncode == 0, proc.stdout[-3000:]
    rendered = [yaml.safe_load(p.read_text()) for p in sorted((out / "gpu_plugins").glob("[0-9]*.yaml"))]
    play = tmp_path / "apply.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "Apply the rendered objects",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Apply",
                            "ansible.builtin.include_role": {"name": "gpu_ops.mig_serving.k8s_objects"},
                            "vars": {
                                "k8s_objects_mode": "apply",
                                "k8s_objects_component": "gpu_plugins",
                                "k8s_objects_manifests": rendered,
                                "k8s_objects_kubeconfig": str(kube.kubeconfig_path),
                                "k8s_objects_wait_timeout": 20,
                            },
                        }
                    ],
                }
            ]
        )
    )
    first = playbook(tmp_path, [str(play), "-e", f"ansible_python_interpreter={sys.executable}"])
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert "changed=1" in first.stdout
    patches = [r for r in kube.requests if r.method == "PATCH"]
    assert patches, kube.requests
    assert all(r.content_type == "application/apply-patch+yaml" for r in patches)
    assert {r.field_manager for r in patches} == {"gpu-ops-mig-serving"}
    stored = kube.get_object("v1", "Namespace", "nvidia-device-plugin")
    assert stored is not None
    # the API server adds kubernetes.io/metadata.name to every namespace; ours are all there
    assert rendered[0]["metadata"]["labels"].items() <= stored["metadata"]["labels"].items()
    second = playbook(tmp_path, [str(play), "-e", f"ansible_python_interpreter={sys.executable}"])
    assert second.returncode == 0
    assert "changed=0" in second.stdout, second.stdout[-3000:]


def verify(tmp_path: Path, kube: Any, retries: int = 3, delay: int = 1) -> subprocess.CompletedProcess[str]:
    inv = inventory(tmp_path, str(kube.kubeconfig_path), gpu_plugins_verify_retries=retries, gpu_plugins_verify_delay=delay)
    # the serving play (serving_verify) is tested end to end in test_e2e_verify.py; these objects have no Triton
    return playbook(tmp_path, ["playbooks/verify.yml", "-i", str(inv), "--limit", "k8s_control", "--skip-tags", "serving"])


def test_verification_passes_when_every_node_advertises_its_layout(kube: Any, tmp_path: Path) -> None:
    proc = verify(tmp_path, kube)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "3 GPU node(s) advertise their layouts" in proc.stdout


def test_verification_fails_with_the_table(kube: Any, tmp_path: Path) -> None:
    kube.set_node("dgx-h200-01", node("dgx-h200-01", {"nvidia.com/mig-1g.18gb": 49, "nvidia.com/mig-3g.71gb": 1}))
    started = time.monotonic()
    proc = verify(tmp_path, kube, retries=2, delay=1)
    assert proc.returncode != 0
    assert time.monotonic() - started < 120
    out = proc.stdout
    assert "FAILED - RETRYING" in out  # one message per attempt
    assert "dgx-h200-01  nvidia.com/mig-1g.18gb  allocatable  56        49" in out
    assert "dgx-h200-01  nvidia.com/mig-3g.71gb  allocatable  0         1" in out  # a stale type still advertising devices


def test_verification_waits_for_a_node_that_catches_up(kube: Any, tmp_path: Path) -> None:
    kube.set_node("dgx-a100-01", node("dgx-a100-01", {"nvidia.com/gpu": 8}))  # before the new layout shows

    def catch_up() -> None:
        # the node catches up only after the playbook has asked for it once (however slowly ansible starts)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any("/nodes" in r.path and r.method == "GET" for r in kube.requests):
            time.sleep(0.2)
        time.sleep(1)
        kube.set_node("dgx-a100-01", node("dgx-a100-01", {"nvidia.com/mig-1g.5gb": 56, "nvidia.com/gpu": 0}))

    worker = threading.Thread(target=catch_up, daemon=True)
    worker.start()
    proc = verify(tmp_path, kube, retries=20, delay=2)
    worker.join(timeout=250)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "FAILED - RETRYING" in proc.stdout
    assert "dgx-a100-01: nvidia.com/gpu (allocatable) = 0, not part of its layout" in proc.stdout


def test_absent_removes_only_our_objects_after_the_apply(kube: Any, tmp_path: Path) -> None:
    """k8s_objects_absent: an object labelled as ours goes (after the objects are applied), someone else's object of a listed
    name stays (reported), an object this run applies is never removed, a missing one is no error; render mode writes
    nothing for them."""
    ours = {"app.kubernetes.io/managed-by": "gpu-ops.mig-serving"}
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton"}})
    for name, labels in (("old", ours), ("theirs", {"app.kubernetes.io/managed-by": "helm"})):
        kube.add_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "triton", "labels": labels},
                         "data": {"k": "v"}})
    new = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "triton", "labels": ours}, "data": {"k": "v"}}
    absent = [{"apiVersion": "v1", "kind": "ConfigMap", "name": name, "namespace": "triton"} for name in ("old", "theirs", "new", "missing")]

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        play = tmp_path / f"{mode}.yml"
        play.write_text(yaml.safe_dump([{
            "name": "Apply and remove", "hosts": "localhost", "gather_facts": False,
            "tasks": [{"name": "Objects", "ansible.builtin.include_role": {"name": "gpu_ops.mig_serving.k8s_objects"},
                       "vars": {"k8s_objects_mode": mode, "k8s_objects_component": "triton", "k8s_objects_manifests": [new],
                                "k8s_objects_absent": absent, "k8s_objects_kubeconfig": str(kube.kubeconfig_path),
                                "k8s_objects_render_dir": str(tmp_path / "render"), "k8s_objects_wait_timeout": 20}}],
        }]))
        return playbook(tmp_path, [str(play), "-e", f"ansible_python_interpreter={sys.executable}"])

    rendered = run("render")
    assert rendered.returncode == 0, rendered.stdout[-4000:]
    assert sorted(p.name for p in (tmp_path / "render" / "triton").iterdir()) == ["01-configmap-new.yaml"]
    assert kube.get_object("v1", "ConfigMap", "old", "triton") is not None, "render mode touched the cluster"
    applied = run("apply")
    assert applied.returncode == 0, applied.stdout[-4000:] + applied.stderr[-2000:]
    assert kube.get_object("v1", "ConfigMap", "old", "triton") is None
    assert kube.get_object("v1", "ConfigMap", "theirs", "triton") is not None
    assert kube.get_object("v1", "ConfigMap", "new", "triton") is not None
    assert "Kept ConfigMap theirs: it is not labelled app.kubernetes.io/managed-by=gpu-ops.mig-serving" in applied.stdout
    # the delete came after the apply
    methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in kube.requests if r.method in ("PATCH", "DELETE")]
    assert methods.index(("PATCH", "new")) < methods.index(("DELETE", "old"))
    assert ("DELETE", "theirs") not in methods
    assert ("DELETE", "new") not in methods


def test_load_balancer_retires_the_single_deployments_headless_service_after_its_rollout(kube: Any, tmp_path: Path) -> None:
    """The serving pools replace the single Deployment's headless Service "<triton name>-headless", which the running
    nginx config resolved: playbooks/load_balancer.yml removes it only after the load balancer's new objects (upstream
    on the pools' Services) are applied and rolled out, and only when it is ours."""
    load_crds(kube, ["PodMonitor"])
    ours = {"app.kubernetes.io/managed-by": "gpu-ops.mig-serving"}
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton"}})
    kube.add_object({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "triton-headless", "namespace": "triton", "labels": ours},
                     "spec": {"clusterIP": "None", "selector": {"app.kubernetes.io/name": "triton"}, "ports": [{"name": "http", "port": 8000}]}})
    inv = inventory(tmp_path, str(kube.kubeconfig_path), nginx_lb_service_type="ClusterIP", k8s_objects_wait=False)
    proc = playbook(tmp_path, ["playbooks/load_balancer.yml", "-i", str(inv), "--limit", "k8s_control"])
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert kube.get_object("v1", "Service", "triton-headless", "triton") is None
    methods = [(r.method, r.path.rsplit("/", 1)[-1]) for r in kube.requests if r.method in ("PATCH", "DELETE")]
    assert methods.index(("PATCH", "nginx-lb")) < methods.index(("DELETE", "triton-headless")), methods


def test_serving_stage_applies_dcgm_exporters_podmonitor_once_its_crd_is_served(kube: Any, tmp_path: Path) -> None:
    """On a fresh cluster the cluster stage runs before role monitoring installs the Prometheus Operator's CRDs, so
    gpu_plugins cannot apply dcgm-exporter's PodMonitor then; playbooks/serving.yml applies it after role monitoring
    (gpu_plugins tasks/dcgm_monitor.yml): nothing while the CRD is not served, the PodMonitor once it is."""
    kube.add_object({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "nvidia-device-plugin"}})
    inv = inventory(tmp_path, str(kube.kubeconfig_path))
    play = tmp_path / "dcgm.yml"
    play.write_text(yaml.safe_dump([{
        "name": "The serving stage's post task", "hosts": "k8s_control", "gather_facts": False,
        "tasks": [{"name": "Have dcgm-exporter scraped",
                   "ansible.builtin.include_role": {"name": "gpu_ops.mig_serving.gpu_plugins", "tasks_from": "dcgm_monitor.yml"}}],
    }]))
    before = playbook(tmp_path, [str(play), "-i", str(inv)])
    assert before.returncode == 0, before.stdout[-4000:] + before.stderr[-2000:]
    assert "dcgm-exporter: no PodMonitor yet" in before.stdout
    load_crds(kube, ["PodMonitor"])
    after = playbook(tmp_path, [str(play), "-i", str(inv)])
    assert after.returncode == 0, after.stdout[-4000:] + after.stderr[-2000:]
    monitor = kube.get_object("monitoring.coreos.com/v1", "PodMonitor", "dcgm-exporter", "nvidia-device-plugin")
    assert monitor is not None, after.stdout[-3000:]
    assert monitor["spec"]["podMetricsEndpoints"][0]["honorLabels"] is True
    assert kube.get_object("v1", "ConfigMap", "dcgm-exporter-counters", "nvidia-device-plugin") is None, "only the PodMonitor is applied here"
