# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Node Feature Discovery: what runs of it (from k8s_info results) and whether the device plugin chart deploys it.

The workloads are what NFD's Helm chart creates (kubernetes-sigs/node-feature-discovery
deployment/helm/node-feature-discovery/templates/master.yaml, worker.yaml: ``<release>-node-feature-discovery-master``
Deployment and ``-worker`` DaemonSet, labels ``app.kubernetes.io/name: node-feature-discovery``,
``app.kubernetes.io/instance: <release>``, ``role: master|worker``) and what its kustomize deployment names
(deployment/base/master/master-deployment.yaml: ``nfd-master``, no chart labels)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.filter.nfd import FilterModule
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nfd import NfdError, decision, mode_of, running

FILTERS = FilterModule().filters()
NAMESPACE, RELEASE = "nvidia-device-plugin", "nvdp"
# k8s_info's failure for a kubeconfig the API server refuses, as ansible-core 2.19+ words a failed module result
UNAUTHORIZED = {"failed": True, "msg": "Task failed: Module failed: Failed to get client due to 401\nReason: Unauthorized\nHTTP body"}


def chart_workload(kind: str, role: str, release: str, namespace: str) -> Dict[str, Any]:
    labels = {"app.kubernetes.io/name": "node-feature-discovery", "app.kubernetes.io/instance": release, "role": role}
    return {"kind": kind, "metadata": {"name": f"{release}-node-feature-discovery-{role}", "namespace": namespace, "labels": labels}}


def looked(kind: str, *workloads: Dict[str, Any]) -> Dict[str, Any]:
    return {"item": kind, "resources": list(workloads), "changed": False}


def found(crd: bool = False, masters: Optional[List[str]] = None, workers: Optional[List[str]] = None, errors: Optional[List[str]] = None,
          own: Optional[List[str]] = None) -> Dict[str, Any]:
    return {"crd": crd, "masters": masters or [], "workers": workers or [], "own_masters": own or [], "own_workers": [], "errors": errors or []}


GPU_OPERATOR = "Deployment gpu-operator/gpu-operator-node-feature-discovery-master"


def test_running_sorts_nfd_of_other_releases_and_the_own_one() -> None:
    crd = {"resources": [{"metadata": {"name": "nodefeatures.nfd.k8s-sigs.io"}}]}
    deployments = looked("Deployment",
                         chart_workload("Deployment", "master", "gpu-operator", "gpu-operator"),
                         chart_workload("Deployment", "master", RELEASE, NAMESPACE),
                         {"metadata": {"name": "nfd-master", "namespace": "node-feature-discovery", "labels": {"app": "nfd-master"}}},
                         {"metadata": {"name": "coredns", "namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}})
    daemonsets = looked("DaemonSet", chart_workload("DaemonSet", "worker", "gpu-operator", "gpu-operator"),
                        chart_workload("DaemonSet", "worker", RELEASE, NAMESPACE))
    assert running(crd, [deployments, daemonsets], NAMESPACE, RELEASE) == {
        "crd": True,
        "masters": [GPU_OPERATOR, "Deployment node-feature-discovery/nfd-master"],
        "workers": ["DaemonSet gpu-operator/gpu-operator-node-feature-discovery-worker"],
        "own_masters": ["Deployment nvidia-device-plugin/nvdp-node-feature-discovery-master"],
        "own_workers": ["DaemonSet nvidia-device-plugin/nvdp-node-feature-discovery-worker"],
        "errors": [],
    }


def test_same_release_name_in_another_namespace_is_another_nfd() -> None:
    deployments = looked("Deployment", chart_workload("Deployment", "master", RELEASE, "other"))
    assert running({"resources": []}, [deployments], NAMESPACE, RELEASE)["masters"] == ["Deployment other/nvdp-node-feature-discovery-master"]


def test_running_lists_what_could_not_be_read() -> None:
    result = running(UNAUTHORIZED, [dict(UNAUTHORIZED, item="Deployment"), looked("DaemonSet")], NAMESPACE, RELEASE)
    assert result["crd"] is False
    assert result["errors"] == [
        "the CRD nodefeatures.nfd.k8s-sigs.io could not be read: Failed to get client due to 401, Reason: Unauthorized",
        "Deployments in all namespaces could not be listed: Failed to get client due to 401, Reason: Unauthorized",
    ]


@pytest.mark.parametrize(
    ("found_", "enabled", "gfd", "deploy", "api", "said"),
    [
        # not looked at (render mode, or nothing needs NFD): the settings alone
        (None, "auto", True, True, True, "render mode: there is no cluster to look for a running NFD, so auto renders nfd.enabled: true"),
        (None, True, False, True, True, "deploys NFD with the chart (gpu_plugins_nfd_enabled: true)"),
        (None, "auto", False, False, True, "GPU feature discovery is off (gpu_plugins_gfd_enabled: false): nothing needs NFD"),
        (None, "false", True, False, True, "does not deploy NFD (gpu_plugins_nfd_enabled: false): GFD's labels reach the nodes only if"),
        # looked at
        (found(), "auto", True, True, True,
         "no other NFD runs (no nfd-master in any namespace; the CRD nodefeatures.nfd.k8s-sigs.io does not exist): deploys NFD with the chart"),
        (found(crd=True, own=["Deployment nvidia-device-plugin/nvdp-node-feature-discovery-master"]), "auto", True, True, True,
         "(this release's own NFD: Deployment nvidia-device-plugin/nvdp-node-feature-discovery-master): deploys NFD with the chart"),
        (found(crd=True, masters=[GPU_OPERATOR]), "auto", True, False, True,
         f"reuses the NFD the cluster runs: {GPU_OPERATOR}; the CRD nodefeatures.nfd.k8s-sigs.io exists (GFD publishes NodeFeature objects); "
         "nfd.enabled: false"),
        (found(crd=False, masters=["Deployment nfd/nfd-master"]), "false", True, False, False, "(GFD publishes a feature file for nfd-worker)"),
        (found(workers=["DaemonSet x/nfd-worker"]), "true", True, True, True,
         "deploys NFD with the chart (gpu_plugins_nfd_enabled: true); no other NFD runs (no nfd-master in any namespace, nfd-worker without "
         "one: DaemonSet x/nfd-worker;"),
        (found(errors=["Deployments in all namespaces could not be listed: 403"]), "false", True, False, True,
         "does not deploy NFD (gpu_plugins_nfd_enabled: false); not checked: Deployments in all namespaces could not be listed: 403"),
    ],
)
def test_decision(found_: Any, enabled: Any, gfd: bool, deploy: bool, api: bool, said: str) -> None:
    result = decision(found_, enabled, gfd)
    assert result["problem"] == ""
    assert (result["deploy"], result["api"]) == (deploy, api)
    assert said in result["say"]


@pytest.mark.parametrize(
    ("found_", "enabled", "problem"),
    [
        (found(crd=True, masters=[GPU_OPERATOR]), "true",
         f"gpu_plugins_nfd_enabled is true, but NFD already runs: {GPU_OPERATOR}. A second NFD would label the same nodes"),
        (found(), False,
         "gpu_plugins_nfd_enabled is false and GPU feature discovery is on, but no other NFD runs (no nfd-master in any namespace; the CRD "
         "nodefeatures.nfd.k8s-sigs.io does not exist): GFD's labels (nvidia.com/mig-<profile>.count, ...) would never reach the nodes"),
        (found(errors=["the CRD nodefeatures.nfd.k8s-sigs.io could not be read: 401, Reason: Unauthorized"]), "auto",
         "gpu_plugins_nfd_enabled is auto, but whether NFD already runs cannot be told: the CRD nodefeatures.nfd.k8s-sigs.io could not be "
         "read: 401, Reason: Unauthorized. Allow this kubeconfig to get customresourcedefinitions and to list deployments and daemonsets in "
         "all namespaces, or set gpu_plugins_nfd_enabled to true (deploy NFD) or false (the cluster runs its own)"),
    ],
)
def test_refused(found_: Any, enabled: Any, problem: str) -> None:
    result = decision(found_, enabled, True)
    assert result["problem"].startswith(problem)
    assert result["deploy"] is False


@pytest.mark.parametrize(("value", "mode"), [(True, "true"), ("True", "true"), (False, "false"), ("AUTO", "auto")])
def test_booleans_are_settings(value: Any, mode: str) -> None:
    assert mode_of(value) == mode


def test_unknown_setting() -> None:
    with pytest.raises(NfdError, match="must be auto, true or false, not 'sometimes'"):
        decision(None, "sometimes", True)


def test_filters_name_themselves_on_bad_input() -> None:
    with pytest.raises(AnsibleFilterError, match=r"^nfd_running: the workload lookups must be a list of k8s_info results"):
        FILTERS["nfd_running"]({"resources": []}, "Deployment", NAMESPACE, RELEASE)
    with pytest.raises(AnsibleFilterError, match=r"^nfd_decision: gfd must be true or false"):
        FILTERS["nfd_decision"](None, "auto", "yes")
    with pytest.raises(AnsibleFilterError, match=r"^nfd_decision: what runs of NFD must be the registered result"):
        FILTERS["nfd_decision"]("cluster", "auto", True)
    assert FILTERS["nfd_decision"](found(), "auto", True)["deploy"] is True
