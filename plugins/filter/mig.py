# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on the collection's MIG model (each documented in its own .yml next to this file).

Every filter turns bad input into an AnsibleFilterError that starts with the filter's name and says which
argument was wrong and how; no other exception leaves a filter.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, TypeVar, cast

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_cluster import compare_nodes, expected_resources, report_table
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, compare, plan, resources

_F = TypeVar("_F", bound=Callable[..., Any])


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
            except (MigConfigError, MigPlanError) as exc:
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
        raise AnsibleFilterError(f"mig_compare: input must be a plan (the mig_plan filter's list), not {type(plan_).__name__} ({_brief(plan_)})")
    if not isinstance(gpus, list):
        raise AnsibleFilterError(f"mig_compare: gpus must be a list of GPUs as mig_info returns them, not {type(gpus).__name__} ({_brief(gpus)})")
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


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {
            "mig_plan": mig_plan,
            "mig_compare": mig_compare,
            "mig_resources": mig_resources,
            "mig_cluster_expected": mig_cluster_expected,
            "mig_cluster_compare": mig_cluster_compare,
        }
