# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the fleet model, every GPU node's plan and the capacity per MIG profile.

Not a public API; may change without notice.

``plan_fleet`` plans each GPU node's layout with the one planner (``_mig_plan.plan``), names its resources with the
one naming (``_mig_resources``) and adds them up per profile. Its result is the collection's fact ``gpu_ops_fleet``
(computed once per run by ``playbooks/validate.yml`` with the ``mig_fleet`` filter): the roles read capacities,
resource names and the cluster-side expectations from it and compute none of them again.

Shape (JSON-able, keys sorted)::

    strategy: mixed
    nodes:        {<Kubernetes node>: {host, config, gpus, profiles: {profile: count}, resources: {resource: count}}}
    profiles:     {<profile>: {resource, capacity, slices, nodes: [<Kubernetes node>, ...]}}
    expected:     {<Kubernetes node>: {resource: count}}    (what the cluster-side verification compares)
    resources:    {resource: count}                         (what the whole cluster advertises)

``slices`` is the profile's compute slices (1 for ``1g.*``, 3 for ``3g.*`` and ``1`` for ``1c.3g.*``, 7 for ``7g.*``).
Under ``single`` a profile's resource is ``nvidia.com/gpu``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, parse_profile
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import check_strategy, profile_resource, resources
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief

NODE_KEYS = ("node", "config", "config_name", "gpus")


def node_label(host: str, node: str) -> str:
    """How messages name a GPU node: its inventory host, and its Kubernetes name where that differs."""
    return f"GPU node {host}" if host == node else f"GPU node {host} (Kubernetes node {node})"


def _entry(item: Any) -> Mapping[str, Any]:
    if not isinstance(item, Mapping):
        raise MigPlanError(f"node entry {brief(item)} must be a mapping with node, config, config_name and gpus")
    missing = [k for k in NODE_KEYS if k not in item]
    if missing:
        raise MigPlanError(f"node entry {brief(dict(item))} needs node, config, config_name and gpus; it lacks {', '.join(missing)}")
    for key in ("node", "host"):
        if key in item and (not isinstance(item[key], str) or not item[key]):
            what = "the Kubernetes node name" if key == "node" else "the inventory host"
            raise MigPlanError(f"node entry {brief(dict(item))}: '{key}' must be {what}, not {brief(item[key])}")
    return item


def _plan_node(item: Mapping[str, Any], strategy: str) -> Dict[str, Any]:
    """One node's entry of the fleet: its plan summed per profile and its resources."""
    gpu_plan = plan(item["config"], item["config_name"], item["gpus"])
    profiles: Dict[str, int] = {}
    for gpu in gpu_plan:
        if gpu["mig_enabled"]:
            for profile, count in gpu["devices"].items():
                profiles[profile] = profiles.get(profile, 0) + count
    return {
        "config": str(item["config_name"]),
        "gpus": len(gpu_plan),
        "host": item.get("host", item["node"]),
        "profiles": dict(sorted(profiles.items())),
        "resources": resources(gpu_plan, strategy),
    }


def plan_fleet(nodes: Any, strategy: Any = "mixed") -> Dict[str, Any]:
    """The fleet (see the module's docstring) of ``nodes``: a list of ``{node, config, config_name, gpus}`` and optionally
    ``host`` (the inventory host, for messages; default ``node``). ``config`` is a mig-parted config (mapping, text or
    MigConfigFile) and ``gpus`` what ``mig_plan`` takes. Every node is planned; MigPlanError lists each node that fails,
    naming it (``GPU node <host>: ...``), in one message."""
    check_strategy(strategy)
    if not isinstance(nodes, list):
        raise MigPlanError(f"nodes must be a list of {{node, config, config_name, gpus}}, not {type(nodes).__name__} ({brief(nodes)})")
    planned: Dict[str, Dict[str, Any]] = {}
    problems: List[str] = []
    for raw in nodes:
        item = _entry(raw)
        name, host = item["node"], item.get("host", item["node"])
        if name in planned:
            other = planned[name]["host"]
            problems.append(
                f"{node_label(host, name)}: Kubernetes node {name} is listed twice"
                + (f" (also GPU node {other}): give each its own gpu_ops_k8s_node_name" if other != host else "")
            )
            continue
        try:
            planned[name] = _plan_node(item, strategy)
        except (MigConfigError, MigPlanError) as exc:
            problems.append(f"{node_label(host, name)}: {exc}")
    if problems:
        raise MigPlanError("; ".join(problems))
    profiles: Dict[str, Dict[str, Any]] = {}
    totals: Dict[str, int] = {}
    for name in sorted(planned):
        for resource, count in planned[name]["resources"].items():
            totals[resource] = totals.get(resource, 0) + count
        for profile, count in planned[name]["profiles"].items():
            entry = profiles.setdefault(
                profile,
                {"capacity": 0, "nodes": [], "resource": profile_resource(profile, strategy), "slices": parse_profile(profile).compute},
            )
            entry["capacity"] += count
            entry["nodes"].append(name)
    return {
        "expected": {name: dict(planned[name]["resources"]) for name in sorted(planned)},
        "nodes": {name: planned[name] for name in sorted(planned)},
        "profiles": dict(sorted(profiles.items())),
        "resources": dict(sorted(totals.items())),
        "strategy": strategy,
    }


def expected_resources(nodes: Any, strategy: Any = "mixed") -> Dict[str, Dict[str, int]]:
    """``{node: {resource: count}}``: the fleet's ``expected`` (what ``mig_cluster_expected`` returns)."""
    expected: Dict[str, Dict[str, int]] = plan_fleet(nodes, strategy)["expected"]
    return expected
