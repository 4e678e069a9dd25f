# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: whether the cluster advertises what each GPU node's layout yields.

Not a public API; may change without notice.

Expectations come from the fleet model (``_mig_fleet``: the same planner and resource names as everything else); the
comparison reads Kubernetes Node objects as the API returns them (``status.allocatable`` and the labels
GPU feature discovery sets) and never re-derives a count.

GPU feature discovery (GFD) never labels a node itself: it hands its labels to Node Feature Discovery (NFD), as a
feature file for nfd-worker or as a NodeFeature object (``nfd.k8s-sigs.io/v1alpha1``), and nfd-master writes them
onto the Node (NVIDIA/k8s-device-plugin ``internal/lm/output.go``; NFD ``docs/usage/custom-resources.md``). A node
whose allocatable resources are right but that carries none of GFD's labels therefore points at NFD, and the
comparison says so.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import (
    GPU_RESOURCE,
    check_strategy,
    mig_resource_profile,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._nfd import NfdError, check_nfd, gfd_hint
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief, text_table

_MIG_COUNT_SUFFIX = ".count"
# Labels only GFD publishes, whatever the MIG strategy (NVIDIA/k8s-device-plugin internal/lm: the timestamp, machine,
# CUDA driver and GPU product labellers; tests/e2e/gpu-feature-discovery_test.go lists them). One of them on a node
# shows GFD's labels do reach it, so missing MIG counts are then not an NFD problem.
_GFD_LABEL = re.compile(
    r"^nvidia\.com/(gfd\.timestamp|gpu\.(product|count|memory|family|machine)|cuda\.driver\.major|mig\.(strategy|capable)"
    r"|mig-.+\.count)$"
)


def _int(value: Any) -> Optional[int]:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _mapping(value: Any, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MigPlanError(f"{what} must be a mapping, not {brief(value)}")
    return value


def node_view(node: Mapping[str, Any], strategy: str) -> Dict[str, Dict[str, int]]:
    """The GPU resources a Node object shows: ``{"allocatable": {...}, "labels": {...}}``, labels keyed
    by the resource they count (``nvidia.com/mig-1g.5gb.count`` -> ``nvidia.com/mig-1g.5gb``).
    A Node object of the wrong shape raises MigPlanError naming the field."""
    metadata = _mapping(node.get("metadata"), "Node metadata")
    name = metadata.get("name", "?")
    status = _mapping(node.get("status"), f"Node {name}: status")
    allocatable = _mapping(status.get("allocatable"), f"Node {name}: status.allocatable")
    labels = _mapping(metadata.get("labels"), f"Node {name}: metadata.labels")
    alloc: Dict[str, int] = {}
    for key, value in allocatable.items():
        if isinstance(key, str) and (key == GPU_RESOURCE or mig_resource_profile(key)):
            count = _int(value)
            if count is not None:
                alloc[key] = count
    counted: Dict[str, int] = {}
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        if key.endswith(_MIG_COUNT_SUFFIX) and mig_resource_profile(key[: -len(_MIG_COUNT_SUFFIX)]):
            count = _int(value)
            if count is not None:
                counted[key[: -len(_MIG_COUNT_SUFFIX)]] = count
        elif key == "nvidia.com/gpu.count":
            count = _int(value)
            if count is not None:
                counted[GPU_RESOURCE] = count
    return {"allocatable": alloc, "labels": counted}


def _check_inputs(k8s_nodes: Any, expected: Any) -> Tuple[Dict[str, Mapping[str, Any]], Dict[str, Dict[str, int]]]:
    """Node objects by name, and the expectations as ``{node: {resource: int}}``; MigPlanError for anything else."""
    if not isinstance(k8s_nodes, list):
        raise MigPlanError(
            f"the cluster's nodes must be a list of Node objects (k8s_info's resources), not {type(k8s_nodes).__name__} ({brief(k8s_nodes)})"
        )
    by_name: Dict[str, Mapping[str, Any]] = {}
    for n in k8s_nodes:
        meta = n.get("metadata") if isinstance(n, Mapping) else None
        if not isinstance(meta, Mapping) or not isinstance(meta.get("name"), str):
            raise MigPlanError(f"Node object {brief(n)} has no metadata.name; pass k8s_info's resources (kind Node)")
        by_name[meta["name"]] = n
    if not isinstance(expected, Mapping):
        raise MigPlanError(
            f"expected must be a mapping of node name to {{resource: count}} (mig_cluster_expected's result), not {brief(expected)}"
        )
    want: Dict[str, Dict[str, int]] = {}
    for name, resources_ in expected.items():
        if not isinstance(name, str):
            raise MigPlanError(f"expected: node name {brief(name)} must be a string")
        if not isinstance(resources_, Mapping):
            raise MigPlanError(f"expected: node {name}: must be a mapping of resource to count, not {brief(resources_)}")
        want[name] = {}
        for resource, count in resources_.items():
            value = None if isinstance(count, bool) or not isinstance(resource, str) else _int(count)
            if value is None or value < 0:
                raise MigPlanError(
                    f"expected: node {name}: resource {brief(resource)} needs a non-negative integer count, not {brief(count)}"
                )
            want[name][resource] = value
    return by_name, want


def compare_nodes(k8s_nodes: Any, expected: Any, strategy: str = "mixed", nfd: Any = None) -> Dict[str, Any]:
    """Compare each expected node with the cluster.

    Returns ``{ok, mismatches, stale, missing_nodes, checked, gfd_labels_missing, hint}``. A mismatch is
    ``{node, resource, source (allocatable|label), expected, actual}``; ``actual`` is None when the
    resource or label is absent. A resource type the layout does not yield is *stale*: reported, and a
    mismatch too when it still advertises a non-zero count (expected 0).
    With ``single``, GFD publishes ``nvidia.com/gpu.count`` for the number of GPUs, not MIG devices, so
    only allocatable is compared.
    ``gfd_labels_missing``: the nodes whose allocatable resources are right but that carry none of GFD's labels;
    ``hint`` then says so and names NFD, using ``nfd`` (what the cluster runs of NFD, see ``_nfd.check_nfd``)
    when given. Input of the wrong shape raises MigPlanError naming it.
    """
    check_strategy(strategy)
    by_name, expected_ = _check_inputs(k8s_nodes, expected)
    try:
        nfd_ = check_nfd(nfd)
    except NfdError as exc:
        raise MigPlanError(str(exc)) from None
    mismatches: List[Dict[str, Any]] = []
    stale: List[Dict[str, Any]] = []
    missing: List[str] = []
    gfd_missing: List[str] = []
    for name in sorted(expected_):
        want = expected_[name]
        node = by_name.get(name)
        if node is None:
            missing.append(name)
            continue
        first = len(mismatches)
        view = node_view(node, strategy)
        sources = ("allocatable",) if strategy == "single" else ("allocatable", "labels")
        for source in sources:
            have = view[source]
            if source == "labels":
                # GFD labels MIG profiles only; full GPUs are nvidia.com/gpu.count, which counts physical GPUs
                have = {k: v for k, v in have.items() if k != GPU_RESOURCE}
                want_here = {k: v for k, v in want.items() if k != GPU_RESOURCE}
            else:
                want_here = want
            for resource in sorted(want_here):
                actual = have.get(resource)
                if actual != want_here[resource]:
                    mismatches.append(
                        {"node": name, "resource": resource, "source": source.rstrip("s"), "expected": want_here[resource], "actual": actual}
                    )
            for resource in sorted(set(have) - set(want_here)):
                if not mig_resource_profile(resource) and resource != GPU_RESOURCE:
                    continue
                stale.append({"node": name, "resource": resource, "source": source.rstrip("s"), "actual": have[resource]})
                if have[resource]:
                    mismatches.append({"node": name, "resource": resource, "source": source.rstrip("s"), "expected": 0, "actual": have[resource]})
        if _lacks_gfd_labels(node, mismatches[first:]):
            gfd_missing.append(name)
    return {
        "ok": not mismatches and not missing,
        "mismatches": mismatches,
        "stale": stale,
        "missing_nodes": missing,
        "checked": sorted(n for n in expected_ if n not in missing),
        "gfd_labels_missing": gfd_missing,
        "hint": gfd_hint(gfd_missing, nfd_) if gfd_missing else "",
    }


def _lacks_gfd_labels(node: Mapping[str, Any], node_mismatches: List[Dict[str, Any]]) -> bool:
    """True when every mismatch of this node is a GFD count label that is absent, and the node carries no label GFD
    publishes at all: the device plugin did its part, GFD's labels never arrived."""
    if not node_mismatches or any(m["source"] != "label" or m["actual"] is not None for m in node_mismatches):
        return False
    labels = _mapping(node.get("metadata"), "Node metadata").get("labels") or {}
    return not any(isinstance(key, str) and _GFD_LABEL.match(key) for key in labels)


def report_table(result: Mapping[str, Any]) -> str:
    """Mismatches and missing nodes as a small table, for failure messages."""
    rows = [("NODE", "RESOURCE", "SOURCE", "EXPECTED", "ACTUAL")]
    for m in result.get("mismatches", []):
        rows.append((m["node"], m["resource"], m["source"], str(m["expected"]), "absent" if m["actual"] is None else str(m["actual"])))
    for name in result.get("missing_nodes", []):
        rows.append((name, "-", "node", "present", "absent"))
    return text_table(rows)
