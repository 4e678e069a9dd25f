# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on the collection's MIG model (each documented in its own .yml next to this file)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import compare_nodes, expected_resources, report_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, compare, plan, resources


def mig_plan(config: Any, config_name: str, gpus: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    try:
        return plan(config, config_name, gpus)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_plan: {exc}") from None


def mig_compare(plan_: Any, gpus: Any) -> List[Dict[str, Any]]:
    if not isinstance(plan_, list) or not isinstance(gpus, list):
        raise AnsibleFilterError("mig_compare: input must be a plan (the mig_plan filter's list) and gpus a list of GPUs as mig_info returns them")
    try:
        return compare(plan_, gpus)
    except (KeyError, TypeError, ValueError, MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_compare: malformed plan or GPU list: {exc!r}") from None


def mig_resources(plan_: Any, strategy: str = "mixed") -> Dict[str, int]:
    try:
        return resources(plan_, strategy)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_resources: {exc}") from None


def mig_cluster_expected(nodes: Any, strategy: str = "mixed") -> Dict[str, Dict[str, int]]:
    try:
        return expected_resources(nodes, strategy)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_cluster_expected: {exc}") from None


def mig_cluster_compare(k8s_nodes: Any, expected: Any, strategy: str = "mixed") -> Dict[str, Any]:
    if not isinstance(k8s_nodes, list) or not isinstance(expected, dict):
        raise AnsibleFilterError("mig_cluster_compare: input must be a list of Node objects and expected a dict of node -> resources")
    try:
        result = compare_nodes(k8s_nodes, expected, strategy)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_cluster_compare: {exc}") from None
    result["table"] = report_table(result)
    return result


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {
            "mig_plan": mig_plan,
            "mig_compare": mig_compare,
            "mig_resources": mig_resources,
            "mig_cluster_expected": mig_cluster_expected,
            "mig_cluster_compare": mig_cluster_compare,
        }
