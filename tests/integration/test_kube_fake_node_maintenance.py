# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node maintenance through the real kubernetes.core modules against tests/kube_fake: what the node role
mig_layout does around a MIG layout change (cordon, drain, labels and annotations, device-plugin/GFD pod
restarts, uncordon), in-process and through the standalone server (python -m tests.kube_fake serve).

The API rules the modules depend on are checked first with the official client (eviction answers, budgets,
graceful deletion, field selectors), each against what the Kubernetes API documents; the playbooks then show
what the modules do with them: k8s_drain's own pod filters, its failure when a budget forbids an eviction,
cordon/uncordon idempotence, k8s state=patched labels changing once, server-side apply on a Node's labels.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.kube_fake.server import FakeKube, RecordedRequest
else:
    from kube_fake.server import FakeKube, RecordedRequest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
Obj = Dict[str, Any]

pytestmark = pytest.mark.slow

NODE = "dgx-h200-01"
RS_UID = "5b6c2f0e-3a52-4c39-9a57-0d3f6b0e2c11"  # the ReplicaSet of the Triton Deployment (not served: only its uid matters)


def node(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "nvidia.com/gpu.present": "true",
                                                  "nvidia.com/mig.config": "all-disabled"}},
            "status": {"allocatable": {"cpu": "220", "nvidia.com/gpu": "8"}, "capacity": {"cpu": "224", "nvidia.com/gpu": "8"}}}


def pod(name: str, namespace: str, node_name: str, labels: Optional[Dict[str, str]] = None, owner: Optional[Obj] = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": labels or {}}
    if owner is not None:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "controller": True, "blockOwnerDeletion": True, **owner}]
    meta.update(extra.pop("metadata", {}))
    spec: Obj = {"nodeName": node_name, "containers": [{"name": "main", "image": "registry.invalid/main:1"}], **extra.pop("spec", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, **extra}


def daemonset(name: str) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": "gpu-operator"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": "registry.invalid/x:1"}]}}}}


TRITON = {"kind": "ReplicaSet", "name": "triton-7d9f8", "uid": RS_UID}


def cluster_objects(pdb: Optional[Obj] = None) -> List[Obj]:
    """A GPU node as the drain finds it: plugin/GFD DaemonSet pods, a mirror pod, Triton replicas, a cache pod with emptyDir, a finished job."""
    objects: List[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "gpu-operator"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton"}},
        node(NODE), node("dgx-h200-02"),
        daemonset("nvidia-device-plugin"), daemonset("gpu-feature-discovery"),
        pod(f"nvidia-device-plugin-{NODE}", "gpu-operator", NODE, {"app": "nvidia-device-plugin"}, {"kind": "DaemonSet", "name": "nvidia-device-plugin"}),
        pod(f"gpu-feature-discovery-{NODE}", "gpu-operator", NODE, {"app": "gpu-feature-discovery"}, {"kind": "DaemonSet", "name": "gpu-feature-discovery"}),
        pod(f"kube-proxy-{NODE}", "kube-system", NODE, {"k8s-app": "kube-proxy"},
            {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "0"}, metadata={"annotations": {"kubernetes.io/config.mirror": "0f3c"}}),
        pod("triton-7d9f8-a", "triton", NODE, {"app": "triton"}, TRITON),
        pod("triton-7d9f8-b", "triton", "dgx-h200-02", {"app": "triton"}, TRITON),
        pod("model-cache-0", "triton", NODE, {"app": "cache"}, {"kind": "StatefulSet", "name": "model-cache", "uid": "7e0b2c55-0000-4000-8000-000000000001"},
            spec={"volumes": [{"name": "scratch", "emptyDir": {}}]}),
        pod("warmup-job-x1", "triton", NODE, {"job-name": "warmup"}, status={"phase": "Succeeded"}),
    ]
    if pdb is not None:
        objects.append({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "triton", "namespace": "triton"},
                        "spec": {"selector": {"matchLabels": {"app": "triton"}}, **pdb}})
    return objects


@pytest.fixture
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server
    assert not server.running


def core(kube: FakeKube, tmp_path: Path) -> client.CoreV1Api:
    path = tmp_path / "kubeconfig-client"
    path.write_text(yaml.safe_dump(kube.kubeconfig()))
    api: client.ApiClient = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
    return client.CoreV1Api(api)


def evict(api: client.CoreV1Api, namespace: str, name: str, grace: Optional[int] = None) -> Any:
    options = client.V1DeleteOptions(grace_period_seconds=grace) if grace is not None else None
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace), delete_options=options)
    return api.create_namespaced_pod_eviction(name=name, namespace=namespace, body=body)


def status_of(error: ApiException) -> Obj:
    body: Obj = json.loads(error.body or "null")
    return body


def item_names(listing: Any) -> List[str]:
    """The names of a client list answer's items."""
    return [str(item.metadata.name) for item in listing.items]


def names(kube: FakeKube, kind: str = "Pod", api_version: str = "v1") -> List[str]:
    return [f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}".lstrip("/") for o in kube.objects(api_version, kind)]


# ---------------------------------------------------------------------------------------------------------------
# The API rules, with the official client


def test_eviction_answers_and_budgets_as_the_api_documents(kube: FakeKube, tmp_path: Path) -> None:
    kube.seed(cluster_objects({"maxUnavailable": 1}))
    api = core(kube, tmp_path)
    budget = kube.get_object("policy/v1", "PodDisruptionBudget", "triton", "triton")
    assert budget is not None
    # the disruption controller's status: 2 replicas expected, 1 may be unavailable
    assert {k: budget["status"][k] for k in ("disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods", "observedGeneration")} == {
        "disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 2, "observedGeneration": 1}

    # an allowed eviction: 201 and a Success Status; the pod is deleted
    evict(api, "triton", "triton-7d9f8-a")
    answered = [r for r in kube.requests if r.path.endswith("/eviction")]
    assert [(r.method, r.path, r.status) for r in answered] == [("POST", "/api/v1/namespaces/triton/pods/triton-7d9f8-a/eviction", 201)]
    assert kube.get_object("v1", "Pod", "triton-7d9f8-a", "triton") is None
    budget = kube.get_object("policy/v1", "PodDisruptionBudget", "triton", "triton")
    assert budget is not None
    # the ReplicaSet still wants 2: the budget is spent (the real controller would count the replacement, not yet ready)
    assert (budget["status"]["disruptionsAllowed"], budget["status"]["currentHealthy"], budget["status"]["expectedPods"]) == (0, 1, 2)
    assert budget["status"]["conditions"][0]["reason"] == "InsufficientPods"

    # the next one would violate the budget: 429 TooManyRequests with the DisruptionBudget cause, the pod stays
    with pytest.raises(ApiException) as blocked:
        evict(api, "triton", "triton-7d9f8-b")
    assert blocked.value.status == 429
    assert status_of(blocked.value) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.", "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget triton needs 1 healthy pods and has 1 currently"}]},
        "code": 429}
    assert kube.get_object("v1", "Pod", "triton-7d9f8-b", "triton") is not None

    # a plain DELETE does not consult budgets (kubectl drain --disable-eviction)
    api.delete_namespaced_pod("triton-7d9f8-b", "triton", grace_period_seconds=0)
    assert kube.get_object("v1", "Pod", "triton-7d9f8-b", "triton") is None

    # a missing pod: 404 with the pods "x" not found Status
    with pytest.raises(ApiException) as missing:
        evict(api, "triton", "triton-7d9f8-b")
    assert (missing.value.status, status_of(missing.value)["message"]) == (404, 'pods "triton-7d9f8-b" not found')
    # the name in the body must be the one in the URL
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name="other", namespace="triton"))
    with pytest.raises(ApiException) as renamed:
        api.create_namespaced_pod_eviction(name="model-cache-0", namespace="triton", body=body)
    assert (renamed.value.status, status_of(renamed.value)["message"]) == (400, "name in URL does not match name in Eviction object")
    # discovery advertises the subresource as the real server does
    resources = api.get_api_resources().resources
    assert [(r.name, r.group, r.version, r.kind, r.verbs) for r in resources if r.name == "pods/eviction"] == [
        ("pods/eviction", "policy", "v1", "Eviction", ["create"])]


def test_budget_edge_cases(kube: FakeKube, tmp_path: Path) -> None:
    unready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    kube.seed([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "triton"}}, node(NODE),
        pod("a", "triton", NODE, {"app": "a"}), pod("b", "triton", NODE, {"app": "a"}),
        pod("sick", "triton", NODE, {"app": "s"}, status=unready), pod("pending", "triton", NODE, {"app": "p"}, status={"phase": "Pending"}),
        pod("two", "triton", NODE, {"app": "t", "tier": "x"}),
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "all-of-a", "namespace": "triton"},
         "spec": {"minAvailable": "100%", "selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "sick", "namespace": "triton"},
         "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "s"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "pending", "namespace": "triton"},
         "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "p"}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "t1", "namespace": "triton"},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "t"}}}},
        {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "t2", "namespace": "triton"},
         "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"tier": "x"}}}},
    ])
    api = core(kube, tmp_path)
    # unmanaged pods and a percentage: no controller, so 0 pods are expected and no disruption is allowed
    for name in ("a", "b"):
        with pytest.raises(ApiException) as blocked:
            evict(api, "triton", name)
        assert blocked.value.status == 429
    # an unready pod under unhealthyPodEvictionPolicy AlwaysAllow may go, though the budget allows no disruption
    evict(api, "triton", "sick")
    # a Pending pod is evicted without consulting its budget (canIgnorePDB)
    evict(api, "triton", "pending")
    # two budgets select the pod: the eviction subresource refuses with 500
    with pytest.raises(ApiException) as two:
        evict(api, "triton", "two")
    assert two.value.status == 500
    assert status_of(two.value)["message"] == "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    assert names(kube) == ["triton/a", "triton/b", "triton/two"]


def test_graceful_deletion_and_field_selectors(tmp_path: Path) -> None:
    with FakeKube(pod_exit_seconds=1.0) as kube:
        kube.seed(cluster_objects())
        api = core(kube, tmp_path)
        started = time.monotonic()
        answer: Any = api.delete_namespaced_pod("triton-7d9f8-a", "triton", grace_period_seconds=30)
        # the pod is answered terminating: deletionTimestamp = now + grace, deletionGracePeriodSeconds
        assert answer.metadata.deletion_grace_period_seconds == 30
        assert answer.metadata.deletion_timestamp is not None
        terminating = kube.get_object("v1", "Pod", "triton-7d9f8-a", "triton")
        assert terminating is not None
        assert terminating["metadata"]["deletionGracePeriodSeconds"] == 30
        # a second, longer grace period changes nothing; the kubelet removes it once its containers stopped (1 s)
        again: Any = api.delete_namespaced_pod("triton-7d9f8-a", "triton", grace_period_seconds=60)
        assert again.metadata.deletion_grace_period_seconds == 30
        for _attempt in range(300):  # bounded: 15 s
            if kube.get_object("v1", "Pod", "triton-7d9f8-a", "triton") is None:
                break
            time.sleep(0.05)
        assert kube.get_object("v1", "Pod", "triton-7d9f8-a", "triton") is None
        assert 0.9 <= time.monotonic() - started < 15
        # an unscheduled pod is deleted at once
        kube.add_object(pod("unbound", "triton", ""))
        assert kube.get_object("v1", "Pod", "unbound", "triton") is not None
        api.delete_namespaced_pod("unbound", "triton")
        assert kube.get_object("v1", "Pod", "unbound", "triton") is None

        on_node = api.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE}")
        assert sorted(item_names(on_node)) == sorted(
            [f"nvidia-device-plugin-{NODE}", f"gpu-feature-discovery-{NODE}", f"kube-proxy-{NODE}", "model-cache-0", "warmup-job-x1"])
        running = api.list_namespaced_pod("triton", field_selector=f"spec.nodeName={NODE},status.phase!=Succeeded", label_selector="app")
        assert item_names(running) == ["model-cache-0"]
        with pytest.raises(ApiException) as unknown:
            api.list_pod_for_all_namespaces(field_selector="spec.nodeNam=x")
        assert (unknown.value.status, status_of(unknown.value)["message"]) == (400, "field label not supported: spec.nodeNam")
        # cordon as k8s_drain sends it (strategic merge patch); the node lifecycle controller adds the taint
        api.patch_node(NODE, {"spec": {"unschedulable": True}})
        cordoned = kube.get_object("v1", "Node", NODE)
        assert cordoned is not None
        assert cordoned["spec"] == {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}
        assert item_names(api.list_node(field_selector="spec.unschedulable=true")) == [NODE]
        api.patch_node(NODE, {"spec": {"unschedulable": False}})
        uncordoned = kube.get_object("v1", "Node", NODE)
        assert uncordoned is not None
        assert uncordoned["spec"] == {}  # false is omitted (omitempty), the taint removed
        patches = [r for r in kube.requests if r.method == "PATCH"]
        assert {r.content_type for r in patches} == {"application/strategic-merge-patch+json"}


# ---------------------------------------------------------------------------------------------------------------
# The modules, through ansible-playbook


def playbook(tmp_path: Path, tasks: List[Obj], kubeconfig: Path, timeout: int = 300) -> Dict[str, Obj]:
    """Run tasks on localhost (each registered under its `register` name, errors ignored); their results."""
    results = tmp_path / "results.json"
    registered = [t["register"] for t in tasks]
    collect = "{{ {" + ", ".join(f"'{r}': {r}" for r in registered) + "} | to_json }}"
    play = [{
        "name": "Node maintenance against kube_fake",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/kubernetes.core.k8s": {"kubeconfig": str(kubeconfig)}},
        "tasks": [*({**t, "ignore_errors": True} for t in tasks),
                  {"name": "Keep the results", "ansible.builtin.copy": {"content": collect, "dest": str(results), "mode": "0644"}}],
    }]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(tmp_path), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0", ANSIBLE_DEPRECATION_WARNINGS="0")
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(path), "-e", f"ansible_python_interpreter={sys.executable}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    assert results.exists(), proc.stdout[-5000:]
    loaded: Dict[str, Obj] = json.loads(results.read_text())
    return loaded


def drain(register: str, state: str = "drain", **delete_options: Any) -> Obj:
    args: Obj = {"name": NODE, "state": state}
    if delete_options:
        args["delete_options"] = delete_options
    return {"name": f"k8s_drain {state}", "kubernetes.core.k8s_drain": args, "register": register}


def label(register: str, labels: Dict[str, str], annotations: Optional[Dict[str, Optional[str]]] = None) -> Obj:
    meta: Obj = {"name": NODE, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return {"name": "Label the node", "register": register,
            "kubernetes.core.k8s": {"state": "patched", "definition": {"apiVersion": "v1", "kind": "Node", "metadata": meta}}}


MAINTENANCE = [
    drain("refused"),  # plain pods are fine, but DaemonSet pods and emptyDir data need the options: the module refuses, and uncordons
    drain("cordon", "cordon"),
    drain("cordon_again", "cordon"),
    label("pending", {"nvidia.com/mig.config": "all-1g.18gb", "nvidia.com/mig.config.state": "pending"}),
    label("pending_again", {"nvidia.com/mig.config": "all-1g.18gb", "nvidia.com/mig.config.state": "pending"}),
    drain("drained", ignore_daemonsets=True, delete_emptydir_data=True, terminate_grace_period=20, wait_timeout=30, wait_sleep=1),
    {"name": "Find the device plugin pod on the node", "register": "plugin", "kubernetes.core.k8s_info": {
        "kind": "Pod", "namespace": "gpu-operator", "label_selectors": ["app in (nvidia-device-plugin, gpu-feature-discovery)"],
        "field_selectors": [f"spec.nodeName={NODE}"]}},
    {"name": "Restart the device plugin pod", "register": "restart", "kubernetes.core.k8s": {
        "state": "absent", "api_version": "v1", "kind": "Pod", "namespace": "gpu-operator", "name": f"nvidia-device-plugin-{NODE}"}},
    {"name": "Wait for the DaemonSet's new pod on the node", "register": "plugin_back", "kubernetes.core.k8s_info": {
        "kind": "Pod", "namespace": "gpu-operator", "label_selectors": ["app=nvidia-device-plugin"], "field_selectors": [f"spec.nodeName={NODE}"],
        "wait": True, "wait_condition": {"type": "Ready", "status": "True"}, "wait_timeout": 30, "wait_sleep": 1}},
    label("failed", {"nvidia.com/mig.config.state": "failed"}, {"gpu-ops.io/mig-layout-error": "nvidia-smi mig -cgi failed: Insufficient Resources"}),
    label("success", {"nvidia.com/mig.config.state": "success"}, {"gpu-ops.io/mig-layout-error": None}),
    drain("uncordon", "uncordon"),
    drain("uncordon_again", "uncordon"),
]


def check_maintenance(results: Dict[str, Obj], requests: List[RecordedRequest], state: Dict[str, List[Obj]]) -> None:
    """What the maintenance playbook must have done, from the module results, the recorded requests and the objects."""
    refused = results["refused"]
    assert refused["failed"], refused
    assert refused["msg"] == ("Pod deletion errors: cannot delete Pods with local storage: triton/model-cache-0. cannot delete DaemonSet-managed Pods "
                              f"(use option ignore_daemonset set to yes): gpu-operator/gpu-feature-discovery-{NODE},gpu-operator/nvidia-device-plugin-{NODE}.")
    assert (results["cordon"]["changed"], results["cordon"]["result"]) == (True, f"node {NODE} marked unschedulable.")
    assert (results["cordon_again"]["changed"], results["cordon_again"]["result"]) == (False, f"node {NODE} already marked unschedulable.")
    assert results["pending"]["changed"] is True
    assert results["pending_again"]["changed"] is False

    drained = results["drained"]
    assert not drained.get("failed"), drained
    assert drained["changed"] is True
    assert drained["result"] == f"node {NODE} already marked unschedulable. 3 Pod(s) deleted from node."
    assert drained["warnings"] == [f"cannot delete mirror Pods using API server: kube-system/kube-proxy-{NODE}."]
    assert sorted(p["metadata"]["name"] for p in results["plugin"]["resources"]) == [f"gpu-feature-discovery-{NODE}", f"nvidia-device-plugin-{NODE}"]
    assert results["restart"]["changed"] is True
    assert results["failed"]["changed"] is True
    assert results["success"]["changed"] is True
    assert (results["uncordon"]["changed"], results["uncordon"]["result"]) == (True, f"node {NODE} marked schedulable.")
    assert (results["uncordon_again"]["changed"], results["uncordon_again"]["result"]) == (False, f"node {NODE} already marked schedulable.")

    # the DaemonSet controller put a new device plugin pod on the node (generateName "nvidia-device-plugin-")
    back = results["plugin_back"]["resources"]
    assert len(back) == 1
    assert back[0]["metadata"]["generateName"] == "nvidia-device-plugin-"
    assert back[0]["metadata"]["name"] != f"nvidia-device-plugin-{NODE}"
    assert back[0]["status"]["phase"] == "Running"
    pods = sorted(f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in state["Pod"])
    assert pods == sorted([f"gpu-operator/gpu-feature-discovery-{NODE}", f"gpu-operator/{back[0]['metadata']['name']}", f"kube-system/kube-proxy-{NODE}",
                           "triton/triton-7d9f8-b"])
    gpu_node = next(o for o in state["Node"] if o["metadata"]["name"] == NODE)
    assert gpu_node["spec"] == {}  # uncordoned: unschedulable false is omitted, the taint is gone
    assert gpu_node["metadata"]["labels"]["nvidia.com/mig.config"] == "all-1g.18gb"
    assert gpu_node["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
    assert "gpu-ops.io/mig-layout-error" not in (gpu_node["metadata"].get("annotations") or {})

    node_patches = [(r.content_type, r.body, r.status) for r in requests if r.method == "PATCH" and r.path == f"/api/v1/nodes/{NODE}"]
    cordons = [p for p in node_patches if p[1] in ({"spec": {"unschedulable": True}}, {"spec": {"unschedulable": False}})]
    assert cordons == [("application/strategic-merge-patch+json", {"spec": {"unschedulable": v}}, 200) for v in (True, False, True, False)]
    lists = [r for r in requests if r.method == "GET" and r.path == "/api/v1/pods"]
    assert lists
    assert all(r.query["fieldSelector"] == [f"spec.nodeName={NODE}"] for r in lists)
    evictions = [(r.path.split("/")[-2], r.body, r.status) for r in requests if r.path.endswith("/eviction")]
    assert sorted(e[0] for e in evictions) == ["model-cache-0", "triton-7d9f8-a", "warmup-job-x1"]
    assert all(e[2] == 201 and e[1]["deleteOptions"] == {"gracePeriodSeconds": 20} for e in evictions), evictions
    polls = [r.status for r in requests if r.method == "GET" and r.path.startswith("/api/v1/namespaces/") and "/pods/" in r.path]
    assert 404 in polls  # wait_timeout: the module read each pod until it was gone
    deletes = [(r.path, r.status) for r in requests if r.method == "DELETE"]
    assert deletes == [(f"/api/v1/namespaces/gpu-operator/pods/nvidia-device-plugin-{NODE}", 200)]


def by_kind(items: List[Obj]) -> Dict[str, List[Obj]]:
    out: Dict[str, List[Obj]] = {}
    for item in items:
        out.setdefault(item["kind"], []).append(item)
    return out


def test_maintenance_cycle_in_process(kube: FakeKube, tmp_path: Path) -> None:
    kube.seed(cluster_objects())
    results = playbook(tmp_path, MAINTENANCE, kube.kubeconfig_path)
    check_maintenance(results, kube.requests, by_kind(kube.state()["items"]))


def test_drain_stops_where_the_budget_forbids_an_eviction(kube: FakeKube, tmp_path: Path) -> None:
    objects = cluster_objects({"maxUnavailable": 1})
    # both Triton replicas on the node being drained: the first eviction spends the budget, the second is refused
    next(o for o in objects if o["metadata"]["name"] == "triton-7d9f8-b")["spec"]["nodeName"] = NODE
    # the cache pod takes 2 s to stop after its delete
    next(o for o in objects if o["metadata"]["name"] == "model-cache-0")["metadata"]["annotations"] = {"kube-fake.test/exit-seconds": "2"}
    kube.seed(objects)
    options: Obj = {"ignore_daemonsets": True, "delete_emptydir_data": True, "wait_timeout": 30, "wait_sleep": 1}
    results = playbook(tmp_path, [
        drain("blocked", **options),
        drain("forced", **options, disable_eviction=True, terminate_grace_period=5),
    ], kube.kubeconfig_path)
    blocked = results["blocked"]
    assert blocked["failed"] is True
    assert blocked["msg"] == "Failed to delete pod triton/triton-7d9f8-b due to: Cannot evict pod as it would violate the pod's disruption budget."
    statuses = [(r.path.split("/")[-2], r.status) for r in kube.requests if r.path.endswith("/eviction")]
    # the module evicts in its own order (owned and finished pods, then emptyDir ones) and stops at the refusal
    assert statuses == [("triton-7d9f8-a", 201), ("triton-7d9f8-b", 429)]

    # disable_eviction deletes without consulting budgets; the module waits for the pods to go (the cache pod takes 2 s)
    forced = results["forced"]
    assert not forced.get("failed"), forced
    assert forced["result"] == f"node {NODE} already marked unschedulable. 3 Pod(s) deleted from node."
    deletes = [(r.path.rsplit("/", 1)[1], r.body, r.status) for r in kube.requests if r.method == "DELETE"]
    assert deletes == [(name, {"gracePeriodSeconds": 5}, 200) for name in ("triton-7d9f8-b", "warmup-job-x1", "model-cache-0")]
    polls = [r.status for r in kube.requests if r.method == "GET" and r.path == "/api/v1/namespaces/triton/pods/model-cache-0"]
    assert polls[0] == 200, polls  # terminating,
    assert polls[-1] == 404, polls  # then gone
    gpu_node = kube.get_object("v1", "Node", NODE)
    assert gpu_node is not None
    assert gpu_node["spec"]["unschedulable"] is True
    assert names(kube) == [f"gpu-operator/gpu-feature-discovery-{NODE}", f"gpu-operator/nvidia-device-plugin-{NODE}", f"kube-system/kube-proxy-{NODE}"]


def test_server_side_apply_of_node_labels(kube: FakeKube, tmp_path: Path) -> None:
    kube.seed(cluster_objects())

    def apply(register: str, labels: Dict[str, str], force: bool = False) -> Obj:
        ssa: Obj = {"field_manager": "gpu-ops-mig-layout", "force_conflicts": force}
        return {"name": "Apply the node labels", "register": register, "kubernetes.core.k8s": {
            "state": "present", "apply": True, "server_side_apply": ssa,
            "definition": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": labels}}}}

    results = playbook(tmp_path, [
        apply("new_key", {"nvidia.com/mig.config.state": "pending"}),
        apply("conflict", {"nvidia.com/mig.config.state": "pending", "nvidia.com/mig.config": "all-1g.18gb"}),
        apply("forced", {"nvidia.com/mig.config.state": "pending", "nvidia.com/mig.config": "all-1g.18gb"}, force=True),
        apply("again", {"nvidia.com/mig.config.state": "pending", "nvidia.com/mig.config": "all-1g.18gb"}, force=True),
        {"name": "Merge-patch the state label", "register": "merged", "kubernetes.core.k8s": {
            "state": "patched", "merge_type": "merge",
            "definition": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"nvidia.com/mig.config.state": "success"}}}}},
        *({"name": "JSON-patch a label", "register": register, "kubernetes.core.k8s_json_patch": {
            "kind": "Node", "name": NODE, "patch": [{"op": "add", "path": "/metadata/labels/gpu-ops.io~1drained", "value": "true"}]}}
          for register in ("json_patch", "json_patch_again")),
    ], kube.kubeconfig_path)
    assert results["new_key"]["changed"] is True
    # the kubelet registered the node with nvidia.com/mig.config: taking a field another manager set needs force
    conflict = results["conflict"]
    assert conflict["failed"] is True
    prefix = "Failed to apply object: "
    assert conflict["msg"].startswith(prefix), conflict["msg"]
    refusal = json.loads(conflict["msg"][len(prefix):])  # the module passes the API's Status on
    assert (refusal["code"], refusal["reason"]) == (409, "Conflict")
    assert refusal["message"].startswith('Apply failed with 1 conflict: conflict with "kubelet" using v1 at ')
    assert refusal["message"].endswith(": .metadata.labels.nvidia.com/mig.config")
    assert results["forced"]["changed"] is True
    assert results["again"]["changed"] is False
    stored = kube.get_object("v1", "Node", NODE)
    assert stored is not None
    owners = {(e["manager"], e["operation"]): e["fieldsV1"] for e in stored["metadata"]["managedFields"] if "f:metadata" in e["fieldsV1"]}
    # the applier owns what it applied, but the later merge patch changed the state label: its writer took it over
    assert owners[("gpu-ops-mig-layout", "Apply")] == {"f:metadata": {"f:labels": {"f:nvidia.com/mig.config": {}}}}
    # the python client's patches are Updates by "OpenAPI-Generator", the API server's manager from its User-Agent
    assert owners[("OpenAPI-Generator", "Update")] == {"f:metadata": {"f:labels": {"f:gpu-ops.io/drained": {}, "f:nvidia.com/mig.config.state": {}}}}
    assert "f:nvidia.com/mig.config" not in owners[("kubelet", "Update")]["f:metadata"]["f:labels"]
    assert stored["metadata"]["labels"]["kubernetes.io/hostname"] == NODE  # the kubelet's other labels stay
    assert stored["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    # a merge patch and a JSON patch (the "/" of the key escaped as ~1) land too; an identical JSON patch changes nothing
    assert results["merged"]["changed"] is True
    assert results["json_patch"]["changed"] is True
    assert results["json_patch_again"]["changed"] is False
    assert stored["metadata"]["labels"]["nvidia.com/mig.config.state"] == "success"
    assert stored["metadata"]["labels"]["gpu-ops.io/drained"] == "true"
    types = [(r.content_type, r.status) for r in kube.requests if r.method == "PATCH"]
    assert types[-3:] == [("application/merge-patch+json", 200), ("application/json-patch+json", 200), ("application/json-patch+json", 200)]


# ---------------------------------------------------------------------------------------------------------------
# The standalone server (what a Molecule scenario starts)


def wait_for(path: Path, proc: subprocess.Popen[str], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"kube_fake exited with {proc.returncode}"
        assert time.monotonic() < deadline, f"{path} not written within {seconds} s"
        time.sleep(0.1)


def test_standalone_server_serves_the_maintenance_cycle(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump_all(cluster_objects()))
    out = tmp_path / "kube"
    kubeconfig, requests, state, pid_file = out / "kubeconfig", out / "requests.jsonl", out / "state.json", out / "kube-fake.pid"
    argv = [sys.executable, "-m", "tests.kube_fake", "serve", "--kubeconfig-out", str(kubeconfig), "--requests-out", str(requests),
            "--state-out", str(state), "--seed", str(seed), "--pid-file", str(pid_file), "--max-seconds", "300"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(kubeconfig, proc, 30)
        assert int(pid_file.read_text()) == proc.pid
        assert oct(kubeconfig.stat().st_mode & 0o777) == "0o600"
        results = playbook(tmp_path, MAINTENANCE, kubeconfig)
        records = [json.loads(line) for line in requests.read_text().splitlines()]
        assert all(set(r) == {"time", "method", "path", "query", "content_type", "field_manager", "user_agent", "status", "body"} for r in records)
        recorded = [RecordedRequest(r["method"], r["path"], r["query"], r["content_type"], r["field_manager"], r["status"], r["body"], r["user_agent"],
                                    r["time"]) for r in records]
        check_maintenance(results, recorded, by_kind(json.loads(state.read_text())["items"]))
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=20)[0]
        assert proc.returncode == 0, output
        assert "kube_fake: stopped" in output
        assert not pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_standalone_script_form_stops_by_itself(tmp_path: Path) -> None:
    out = tmp_path / "kube"
    argv = [sys.executable, str(ROOT / "tests" / "kube_fake" / "__main__.py"), "serve", "--kubeconfig-out", str(out / "kubeconfig"),
            "--requests-out", str(out / "requests.jsonl"), "--state-out", str(out / "state.json"), "--max-seconds", "3"]
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 3 <= time.monotonic() - started < 30
    assert "--max-seconds 3.0 reached" in proc.stdout
    kubeconfig = yaml.safe_load((out / "kubeconfig").read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"].startswith("https://127.0.0.1:")
    assert [o["metadata"]["name"] for o in json.loads((out / "state.json").read_text())["items"]] == [
        "default", "kube-node-lease", "kube-public", "kube-system"]
    bad = subprocess.run([*argv[:2], "serve", "--kubeconfig-out", "x"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert "required" in bad.stderr


def test_standalone_background_mode_outlives_its_caller(tmp_path: Path) -> None:
    out = tmp_path / "kube"
    kubeconfig, pid_file, log = out / "kubeconfig", out / "kube-fake.pid", out / "kube-fake.log"
    seed = tmp_path / "seed.yaml"
    seed.write_text(yaml.safe_dump_all([node(NODE)]))
    argv = [sys.executable, "-m", "tests.kube_fake", "serve", "--kubeconfig-out", str(kubeconfig), "--requests-out", str(out / "requests.jsonl"),
            "--state-out", str(out / "state.json"), "--seed", str(seed), "--pid-file", str(pid_file), "--max-seconds", "120",
            "--background", "--log-out", str(log)]
    launcher = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=90, check=False)
    pid = int(pid_file.read_text()) if pid_file.exists() else 0
    try:
        assert launcher.returncode == 0, launcher.stdout + launcher.stderr
        assert f"pid {pid}," in launcher.stdout
        assert kubeconfig.exists()  # the launcher returns once the server listens
        os.kill(pid, 0)  # alive after its launcher exited
        path = tmp_path / "kubeconfig-copy"
        path.write_text(kubeconfig.read_text())
        api: client.ApiClient = config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        assert item_names(client.CoreV1Api(api).list_node()) == [NODE]
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(200):
            if not pid_file.exists():
                break
            time.sleep(0.1)
        assert not pid_file.exists()
        assert "kube_fake: stopped" in log.read_text()
    finally:
        if pid and pid_file.exists():
            os.kill(pid, signal.SIGKILL)
