# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on the collection's MIG model (each documented in its own .yml next to this file).

Every filter turns bad input into an AnsibleFilterError that starts with the filter's name and says which
argument was wrong and how; no other exception leaves a filter.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, TypeVar, cast

from ansible.errors import AnsibleError, AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import compare_nodes, report_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_compare import compare
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, MigConfigFile
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_fleet import expected_resources, plan_fleet
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_layout_file import find_layout_file, read_layout_file
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import check_strategy, resources
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_pools import PoolError, plan_pools
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief

_F = TypeVar("_F", bound=Callable[..., Any])


def _named(name: str, prefix: str = "") -> Callable[[_F], _F]:
    """Errors of the MIG model become AnsibleFilterError("<name>: ..."). Anything else escaping the model on
    odd input is reported the same way, naming the filter, rather than as a Python traceback."""

    def wrap(func: _F) -> _F:
        @functools.wraps(func)
        def filtered(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except AnsibleFilterError:
                raise
            except (MigConfigError, MigPlanError, PoolError) as exc:
                raise AnsibleFilterError(f"{name}: {prefix}{exc}") from None
            except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as exc:
                raise AnsibleFilterError(
                    f"{name}: cannot use this input ({type(exc).__name__}: {exc}); see the filter's documentation "
                    f"(ansible-doc -t filter gpu_ops.mig_serving.{name}) for the shape of each argument"
                ) from None

        return cast(_F, filtered)

    return wrap


@_named("mig_plan")
def mig_plan(config: Any, config_name: Any = None, gpus: Any = None) -> List[Dict[str, Any]]:
    if config_name is None or gpus is None:
        raise AnsibleFilterError(
            "mig_plan: give the config name and the GPUs: config | gpu_ops.mig_serving.mig_plan(config_name, gpus)"
        )
    return plan(config, config_name, gpus)


@_named("mig_compare", "malformed plan or GPU list: ")
def mig_compare(plan_: Any, gpus: Any = None) -> List[Dict[str, Any]]:
    if not isinstance(plan_, list):
        raise AnsibleFilterError(f"mig_compare: input must be a plan (the mig_plan filter's list), not {type(plan_).__name__} ({brief(plan_)})")
    if not isinstance(gpus, list):
        raise AnsibleFilterError(f"mig_compare: gpus must be a list of GPUs as mig_info returns them, not {type(gpus).__name__} ({brief(gpus)})")
    return compare(plan_, gpus)


@_named("mig_resources")
def mig_resources(plan_: Any, strategy: Any = "mixed") -> Dict[str, int]:
    return resources(plan_, strategy)


@_named("mig_cluster_expected")
def mig_cluster_expected(nodes: Any, strategy: Any = "mixed") -> Dict[str, Dict[str, int]]:
    return expected_resources(nodes, strategy)


@_named("mig_cluster_compare")
def mig_cluster_compare(k8s_nodes: Any, expected: Any = None, strategy: Any = "mixed", nfd: Any = None) -> Dict[str, Any]:
    result = compare_nodes(k8s_nodes, expected, strategy, nfd)
    result["table"] = report_table(result)
    return result


# What a GPU host of the inventory gives the fleet (the variables roles/mig_layout and the inventories use).
_NEEDS = (
    "mig_layout_config (the layout's name), mig_layout_config_file (the mig-parted config on the controller) and "
    'gpu_ops_node_gpus (its GPUs, e.g. {count: 8, pci_device_id: "0x20B010DE"})'
)


def _host_vars(hostvars: Any, host: str) -> Tuple[Optional[Dict[str, Any]], List[str]]:
    """The fleet's variables of one GPU host, templated (``gpu_ops_k8s_node_name`` defaults to the host), or the problems."""
    if host not in hostvars:
        return None, [f"GPU node {host}: not in the inventory"]
    hv = hostvars[host]
    values: Dict[str, Any] = {}
    problems: List[str] = []
    for name in ("mig_layout_config", "mig_layout_config_file", "gpu_ops_node_gpus", "gpu_ops_k8s_node_name", "playbook_dir"):
        if name not in hv:
            continue
        try:
            values[name] = hv[name]
        except AnsibleError as exc:  # an undefined variable in its template, say
            problems.append(f"GPU node {host}: {name}: {exc.message}")
    missing = [n for n in ("mig_layout_config", "mig_layout_config_file", "gpu_ops_node_gpus") if n not in values]
    if missing and not problems:
        problems.append(f"GPU node {host} needs {_NEEDS}; it lacks {', '.join(missing)}")
    for name in ("mig_layout_config", "mig_layout_config_file", "gpu_ops_k8s_node_name"):
        if name in values and (not isinstance(values[name], str) or not values[name]):
            problems.append(f"GPU node {host}: {name} must be a non-empty string, not {brief(values[name])}")
    return (None if problems else values), problems


def _layout(values: Mapping[str, Any], loader: Any, cache: Dict[str, Any]) -> MigConfigFile:
    """The host's layout file, read once per file for the whole fleet; its config must define mig_layout_config."""
    term = values["mig_layout_config_file"]
    path = find_layout_file(term, [str(values["playbook_dir"])] if values.get("playbook_dir") else [])
    if path is None:
        raise MigConfigError(
            f"layout file {term!r} (variable mig_layout_config_file) not found (a relative path is searched in the playbook "
            "directory's files/, then the playbook directory)"
        )
    if path not in cache:
        try:
            cache[path] = read_layout_file(path, path, loader)[0]
        except MigConfigError as exc:
            cache[path] = MigConfigError(f"MIG layout file (variable mig_layout_config_file): {exc}")
        except AnsibleError as exc:  # vault decryption
            cache[path] = MigConfigError(f"MIG layout file {path} (variable mig_layout_config_file): {exc.message}")
    found = cache[path]
    if isinstance(found, MigConfigError):
        raise found
    config = values["mig_layout_config"]
    if config not in found.configs:
        raise MigConfigError(f"mig_layout_config {config!r} is not in {path} (it has: {', '.join(sorted(found.configs))})")
    return cast(MigConfigFile, found)


@_named("mig_fleet")
def mig_fleet(hostvars: Any, hosts: Any = None, strategy: Any = "mixed") -> Dict[str, Any]:
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError(f"mig_fleet: input must be hostvars, not {type(hostvars).__name__} ({brief(hostvars)})")
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise AnsibleFilterError(
            "mig_fleet: give the GPU hosts as a list of inventory names: "
            f"hostvars | gpu_ops.mig_serving.mig_fleet(groups['gpu_nodes'], gpu_ops_mig_strategy), not {brief(hosts)}"
        )
    if not hosts:
        raise AnsibleFilterError("mig_fleet: the list of GPU hosts is empty: the inventory has no GPU node (group gpu_nodes)")
    check_strategy(strategy)
    loader = getattr(hostvars, "_loader", None)  # HostVars' DataLoader: it holds the run's vault secrets
    cache: Dict[str, Any] = {}
    nodes: List[Dict[str, Any]] = []
    problems: List[str] = []
    for host in hosts:
        values, host_problems = _host_vars(hostvars, host)
        problems.extend(host_problems)
        if values is None:
            continue
        try:
            config = _layout(values, loader, cache)
        except MigConfigError as exc:
            problems.append(f"GPU node {host}: {exc}")
            continue
        nodes.append({"host": host, "node": values.get("gpu_ops_k8s_node_name", host), "config": config,
                      "config_name": values["mig_layout_config"], "gpus": values["gpu_ops_node_gpus"]})
    if problems:
        raise AnsibleFilterError(f"mig_fleet: {'; '.join(problems)}")
    return plan_fleet(nodes, strategy)


@_named("serving_pools")
def serving_pools(fleet: Any, pools: Any = None, name: Any = "triton") -> List[Dict[str, Any]]:
    return plan_pools(fleet, pools, name)


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {
            "mig_plan": mig_plan,
            "mig_compare": mig_compare,
            "mig_resources": mig_resources,
            "mig_cluster_expected": mig_cluster_expected,
            "mig_cluster_compare": mig_cluster_compare,
            "mig_fleet": mig_fleet,
            "serving_pools": serving_pools,
        }
