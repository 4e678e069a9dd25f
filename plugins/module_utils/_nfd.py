# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: what a cluster runs of Node Feature Discovery (NFD), and whether the device plugin chart
deploys it.

Not a public API; may change without notice.

GPU feature discovery (GFD) labels nothing itself: it publishes its labels as a NodeFeature object
(``nfd.k8s-sigs.io/v1alpha1``) or as a feature file for nfd-worker, and only nfd-master writes them onto the Node
(NVIDIA/k8s-device-plugin ``internal/lm/output.go``; NFD ``docs/usage/custom-resources.md``). NFD is recognised as its
Helm chart deploys it (kubernetes-sigs/node-feature-discovery ``deployment/helm/node-feature-discovery/templates``:
labels ``app.kubernetes.io/name: node-feature-discovery`` and ``role: master|worker``, names
``<release>-node-feature-discovery-master|-worker``; the device plugin chart's and the GPU Operator's NFD are that
chart) and as its kustomize and operator deployments name it (``nfd-master``, ``nfd-worker``).
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief

# The CRD GFD and nfd-worker write NodeFeature objects through (NFD >= 0.14; always served since 0.17).
NFD_CRD = "nodefeatures.nfd.k8s-sigs.io"
NFD_MODES = ("auto", "true", "false")
_NAMED = {
    "masters": re.compile(r"^(.+-)?(nfd|node-feature-discovery)-master$"),
    "workers": re.compile(r"^(.+-)?(nfd|node-feature-discovery)-worker$"),
}
_TASK_FAILED = re.compile(r"^Task failed: (Module failed: )?")


class NfdError(ValueError):
    """Input of the wrong shape (not a k8s_info result, an unknown mode)."""


def _answer(result: Mapping[str, Any]) -> str:
    """The API server's answer in brief, from a failed k8s_info result: its status line and reason
    (``401, Reason: Unauthorized``)."""
    lines = str(result.get("msg", "?")).splitlines()[:2]
    return _TASK_FAILED.sub("", ", ".join(lines))


def _result(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise NfdError(f"{what} must be the registered result of kubernetes.core.k8s_info, not {brief(value)}")
    return value


def running(crd: Any, workloads: Any, namespace: str, release: str) -> Dict[str, Any]:
    """What runs of NFD, from the k8s_info results for the CRD and for Deployments and DaemonSets in all namespaces
    (``workloads``: the loop's ``results``, each with ``item`` the kind). A lookup that failed (no permission, no
    cluster) is listed in ``errors``. NFD of the release ``release`` in ``namespace`` (the device plugin chart's own)
    goes to ``own_masters``/``own_workers``, so that a re-run does not take it for another NFD.

    Returns ``{crd, masters, workers, own_masters, own_workers, errors}``; masters/workers as ``"<Kind> <ns>/<name>"``."""
    crd_ = _result(crd, "the CRD lookup")
    if not isinstance(workloads, list):
        raise NfdError(f"the workload lookups must be a list of k8s_info results (the loop's results), not {brief(workloads)}")
    out: Dict[str, Any] = {"crd": bool(crd_.get("resources")), "masters": [], "workers": [], "own_masters": [], "own_workers": [],
                           "errors": []}
    if "resources" not in crd_:
        out["errors"].append(f"the CRD {NFD_CRD} could not be read: {_answer(crd_)}")
    for raw in workloads:
        looked = _result(raw, "each workload lookup")
        kind = str(looked.get("item", "?"))
        if "resources" not in looked:
            out["errors"].append(f"{kind}s in all namespaces could not be listed: {_answer(looked)}")
            continue
        for workload in looked["resources"] or []:
            metadata = workload.get("metadata") or {} if isinstance(workload, Mapping) else {}
            labels = metadata.get("labels") or {}
            name = str(metadata.get("name", ""))
            chart = labels.get("app.kubernetes.io/name", "") == "node-feature-discovery"
            role = labels.get("role", labels.get("app.kubernetes.io/role", ""))
            part = next((p for p in ("masters", "workers") if (chart and role == p[:-1]) or _NAMED[p].match(name)), "")
            if not part:
                continue
            where = f"{kind} {metadata.get('namespace', '')}/{name}"
            own = metadata.get("namespace") == namespace and labels.get("app.kubernetes.io/instance", "") == release
            out[f"own_{part}" if own else part].append(where)
    return out


def mode_of(value: Any) -> str:
    """``gpu_plugins_nfd_enabled`` as one of auto/true/false (booleans and their strings accepted)."""
    mode = str(value).lower()
    if mode not in NFD_MODES:
        raise NfdError(f"the NFD setting must be auto, true or false, not {brief(value)}")
    return mode


def decision(found: Optional[Mapping[str, Any]], enabled: Any, gfd: bool) -> Dict[str, Any]:
    """Whether the device plugin chart deploys NFD (``deploy``) and GFD publishes NodeFeature objects (``api``), what to
    say about it (``say``), or why the settings contradict the cluster (``problem``, then nothing may be applied).

    ``found``: :func:`running`'s result, or None when the cluster was not looked at (render mode, or nothing needs NFD);
    ``enabled``: ``gpu_plugins_nfd_enabled``; ``gfd``: ``gpu_plugins_gfd_enabled``."""
    mode = mode_of(enabled)
    out: Dict[str, Any] = {"deploy": False, "api": True, "problem": "", "say": ""}
    if found is None:
        if mode == "true":
            out.update(deploy=True, say="deploys NFD with the chart (gpu_plugins_nfd_enabled: true)")
        elif not gfd:
            out["say"] = "GPU feature discovery is off (gpu_plugins_gfd_enabled: false): nothing needs NFD, nfd.enabled: false"
        elif mode == "auto":
            out.update(deploy=True, say="render mode: there is no cluster to look for a running NFD, so auto renders nfd.enabled: true "
                                        "(set gpu_plugins_nfd_enabled: false for a cluster that already runs NFD)")
        else:
            out["say"] = ("does not deploy NFD (gpu_plugins_nfd_enabled: false): GFD's labels reach the nodes only if the cluster runs "
                          "its own NFD (render mode cannot check)")
        return out
    found = _result(found, "what runs of NFD")
    errors: List[str] = list(found.get("errors") or [])
    masters: List[str] = list(found.get("masters") or [])
    workers: List[str] = list(found.get("workers") or [])
    own_runs: List[str] = list(found.get("own_masters") or []) + list(found.get("own_workers") or [])
    crd = f"the CRD {NFD_CRD} {'exists' if found.get('crd') else 'does not exist'}"
    none_runs = ("no other NFD runs (no nfd-master in any namespace"
                 + (f", nfd-worker without one: {', '.join(workers)}" if workers else "") + f"; {crd})")
    own = f" (this release's own NFD: {', '.join(own_runs)})" if own_runs else ""
    if errors and mode == "auto":
        out["problem"] = (f"gpu_plugins_nfd_enabled is auto, but whether NFD already runs cannot be told: {'; '.join(errors)}. Allow this "
                          "kubeconfig to get customresourcedefinitions and to list deployments and daemonsets in all namespaces, or set "
                          "gpu_plugins_nfd_enabled to true (deploy NFD) or false (the cluster runs its own)")
    elif errors and mode == "false":
        out["say"] = "does not deploy NFD (gpu_plugins_nfd_enabled: false)"
    elif mode == "true" and masters:
        out["problem"] = (f"gpu_plugins_nfd_enabled is true, but NFD already runs: {', '.join(masters)}. A second NFD would label the "
                          "same nodes and remove the labels the other one set; set gpu_plugins_nfd_enabled: auto (or false) to reuse "
                          "the running one")
    elif mode == "true":
        out.update(deploy=True, say=f"deploys NFD with the chart (gpu_plugins_nfd_enabled: true); {none_runs}{own}")
    elif masters:
        # auto or false, with an NFD of another release: reuse it. GFD writes NodeFeature objects where the CRD is served,
        # else a feature file for its nfd-worker (an NFD older than 0.14, without the NodeFeature API).
        publishes = "NodeFeature objects" if found.get("crd") else "a feature file for nfd-worker"
        out.update(api=bool(found.get("crd")),
                   say=f"reuses the NFD the cluster runs: {', '.join(masters)}; {crd} (GFD publishes {publishes}); nfd.enabled: false")
    elif mode == "auto":
        out.update(deploy=True, say=f"{none_runs}{own}: deploys NFD with the chart (nfd.enabled: true)")
    else:
        out["problem"] = (f"gpu_plugins_nfd_enabled is false and GPU feature discovery is on, but {none_runs}: GFD's labels "
                          "(nvidia.com/mig-<profile>.count, ...) would never reach the nodes and the cluster verification would fail. "
                          "Set gpu_plugins_nfd_enabled: auto (deploys NFD with the chart when none runs) or install NFD first")
    if errors and not out["problem"]:
        out["say"] = f"{out['say']}; not checked: {'; '.join(errors)}"
    return out


def _names(value: Any, what: str) -> List[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise NfdError(f"nfd: {what} must be a list of strings (where each runs), not {brief(value)}")
    return list(value)


def check_nfd(nfd: Any) -> Optional[Dict[str, Any]]:
    """``None``, or ``{crd: bool, masters: [str], workers: [str]}`` (masters/workers: where each runs, e.g.
    ``Deployment gpu-operator/gpu-operator-node-feature-discovery-master``)."""
    if nfd is None:
        return None
    if not isinstance(nfd, Mapping):
        raise NfdError(f"nfd must be a mapping {{crd, masters, workers}} (what the cluster runs of NFD), not {brief(nfd)}")
    unknown = sorted(str(k) for k in nfd if k not in ("crd", "masters", "workers"))
    if unknown:
        raise NfdError(f"nfd: unknown key(s) {', '.join(unknown)}; it takes crd, masters and workers")
    crd = nfd.get("crd", False)
    if not isinstance(crd, bool):
        raise NfdError(f"nfd: crd must be true or false (whether the CRD {NFD_CRD} exists), not {brief(crd)}")
    return {"crd": crd, "masters": _names(nfd.get("masters"), "masters"), "workers": _names(nfd.get("workers"), "workers")}


def nfd_summary(nfd: Mapping[str, Any]) -> str:
    """What runs of NFD, in one sentence, for messages."""
    crd = f"the CRD {NFD_CRD} {'exists' if nfd['crd'] else 'does not exist'}"
    if nfd["masters"]:
        return f"nfd-master runs ({'; '.join(nfd['masters'])}) and {crd}"
    workers = f", nfd-worker runs without one ({'; '.join(nfd['workers'])})" if nfd["workers"] else ""
    return f"no nfd-master runs in any namespace{workers} and {crd}"


def gfd_hint(nodes: List[str], nfd: Optional[Mapping[str, Any]]) -> str:
    """The explanation for nodes that advertise their MIG resources but lack GFD's labels."""
    head = (
        f"GPU feature discovery's labels (nvidia.com/mig-<profile>.count, nvidia.com/gfd.timestamp, ...) are missing on "
        f"{', '.join(nodes)}, whose allocatable MIG resources are right: GFD's labels reach a node only through Node Feature "
        f"Discovery (NFD), whose nfd-master writes them from GFD's NodeFeature objects."
    )
    if nfd is None:
        return f"{head} Is NFD running (CRD {NFD_CRD}, an nfd-master Deployment)?"
    if not nfd["masters"]:
        why = " (a CRD left behind by an uninstalled NFD: Helm never deletes CRDs)" if nfd["crd"] else ""
        return (
            f"{head} NFD is not running: {nfd_summary(nfd)}{why}. Set gpu_plugins_nfd_enabled: auto (or true) so the "
            f"device plugin chart deploys NFD, or install NFD."
        )
    return (
        f"{head} NFD: {nfd_summary(nfd)}. Check that nfd-master is ready and that its configuration lets GFD's labels "
        f"through: the nvidia.com label namespace not in denyLabelNs, GFD's NodeFeature objects not excluded by "
        f"restrictions.nodeFeatureNamespaceSelector or restrictions.denyNodeFeatureLabels."
    )
