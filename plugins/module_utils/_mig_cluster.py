# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: what the cluster must advertise for each GPU node, and whether it does.

Not a public API; may change without notice.

Expectations come from the same planner as everything else (``_mig_plan.plan`` + ``resources``); the
comparison reads Kubernetes Node objects as the API returns them (``status.allocatable`` and the labels
GPU feature discovery sets) and never re-derives a count.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import (
    STRATEGIES,
    MigPlanError,
    plan,
    resources,
)

_MIG_RESOURCE = re.compile(r"^nvidia\.com/mig-(?P<profile>.+)$")
_MIG_COUNT_LABEL = re.compile(r"^nvidia\.com/mig-(?P<profile>.+)\.count$")
GPU_RESOURCE = "nvidia.com/gpu"


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise MigPlanError(f"unknown MIG strategy {strategy!r}; the device plugin knows {', '.join(STRATEGIES)}")


def expected_resources(nodes: Any, strategy: str = "mixed") -> Dict[str, Dict[str, int]]:
    """``{node: {resource: count}}`` for nodes given as a list of
    ``{node, config, config_name, gpus}`` (config: a mig-parted config mapping or text, gpus: as mig_plan takes).
    Errors name the node."""
    _check_strategy(strategy)
    if not isinstance(nodes, list):
        raise MigPlanError("nodes must be a list of {node, config, config_name, gpus}")
    out: Dict[str, Dict[str, int]] = {}
    for item in nodes:
        if not isinstance(item, Mapping) or not all(k in item for k in ("node", "config", "config_name", "gpus")):
            raise MigPlanError(f"node entry {item!r} needs node, config, config_name and gpus")
        name = str(item["node"])
        if name in out:
            raise MigPlanError(f"node {name!r} is listed twice")
        try:
            out[name] = resources(plan(item["config"], item["config_name"], item["gpus"]), strategy)
        except (MigConfigError, MigPlanError) as exc:
            raise MigPlanError(f"node {name}: {exc}") from None
    return out


def _int(value: Any) -> Optional[int]:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def node_view(node: Mapping[str, Any], strategy: str) -> Dict[str, Dict[str, int]]:
    """The GPU resources a Node object shows: ``{"allocatable": {...}, "labels": {...}}``, labels keyed
    by the resource they count (``nvidia.com/mig-1g.5gb.count`` -> ``nvidia.com/mig-1g.5gb``)."""
    status = node.get("status") or {}
    allocatable = status.get("allocatable") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    alloc: Dict[str, int] = {}
    for key, value in allocatable.items():
        if key == GPU_RESOURCE or _MIG_RESOURCE.match(key):
            count = _int(value)
            if count is not None:
                alloc[key] = count
    counted: Dict[str, int] = {}
    for key, value in labels.items():
        m = _MIG_COUNT_LABEL.match(key)
        if m:
            count = _int(value)
            if count is not None:
                counted[f"nvidia.com/mig-{m.group('profile')}"] = count
        elif key == "nvidia.com/gpu.count":
            count = _int(value)
            if count is not None:
                counted[GPU_RESOURCE] = count
    return {"allocatable": alloc, "labels": counted}


def compare_nodes(k8s_nodes: Sequence[Mapping[str, Any]], expected: Mapping[str, Mapping[str, int]], strategy: str = "mixed") -> Dict[str, Any]:
    """Compare each expected node with the cluster.

    Returns ``{ok, mismatches, stale, missing_nodes, checked}``. A mismatch is
    ``{node, resource, source (allocatable|label), expected, actual}``; ``actual`` is None when the
    resource or label is absent. A resource type the layout does not yield is *stale*: reported, and a
    mismatch too when it still advertises a non-zero count (expected 0).
    With ``single``, GFD publishes ``nvidia.com/gpu.count`` for the number of GPUs, not MIG devices, so
    only allocatable is compared.
    """
    _check_strategy(strategy)
    by_name = {str((n.get("metadata") or {}).get("name")): n for n in k8s_nodes}
    mismatches: List[Dict[str, Any]] = []
    stale: List[Dict[str, Any]] = []
    missing: List[str] = []
    for name in sorted(expected):
        want = {k: int(v) for k, v in expected[name].items()}
        node = by_name.get(name)
        if node is None:
            missing.append(name)
            continue
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
                if not _MIG_RESOURCE.match(resource) and resource != GPU_RESOURCE:
                    continue
                stale.append({"node": name, "resource": resource, "source": source.rstrip("s"), "actual": have[resource]})
                if have[resource]:
                    mismatches.append({"node": name, "resource": resource, "source": source.rstrip("s"), "expected": 0, "actual": have[resource]})
    return {
        "ok": not mismatches and not missing,
        "mismatches": mismatches,
        "stale": stale,
        "missing_nodes": missing,
        "checked": sorted(n for n in expected if n not in missing),
    }


def report_table(result: Mapping[str, Any]) -> str:
    """Mismatches and missing nodes as a small table, for failure messages."""
    rows = [("NODE", "RESOURCE", "SOURCE", "EXPECTED", "ACTUAL")]
    for m in result.get("mismatches", []):
        rows.append((m["node"], m["resource"], m["source"], str(m["expected"]), "absent" if m["actual"] is None else str(m["actual"])))
    for name in result.get("missing_nodes", []):
        rows.append((name, "-", "node", "present", "absent"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
