# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the Kubernetes extended resources MIG devices are advertised as.

Not a public API; may change without notice.

The one place that names a MIG profile's resource and knows the device plugin's MIG strategies
(NVIDIA/k8s-device-plugin ``internal/rm``, ``docs/mig``): under ``mixed`` every MIG device is
``nvidia.com/mig-<profile>`` with ``+`` spelled ``.`` (``1g.10gb+me`` -> ``nvidia.com/mig-1g.10gb.me``), a GPU without
MIG is ``nvidia.com/gpu``; under ``single`` every device is ``nvidia.com/gpu`` and a node must be uniform.
Profiles are parsed by ``_mig_config.parse_profile`` only.
"""
from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, MigProfile, parse_profile
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._text import brief, is_int

RESOURCE_PREFIX = "nvidia.com/"
GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = RESOURCE_PREFIX + "mig-"
STRATEGIES = ("mixed", "single")
_RESOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


def check_strategy(strategy: Any) -> str:
    """The strategy when the device plugin knows it, else MigPlanError."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise MigPlanError(f"unknown MIG strategy {brief(strategy)}; the device plugin knows {', '.join(STRATEGIES)}")
    return strategy


def resource_name(profile: Union[str, MigProfile]) -> str:
    """The device plugin's ``mixed``-strategy resource for a profile: ``1g.10gb+me`` -> ``nvidia.com/mig-1g.10gb.me``."""
    prof = profile if isinstance(profile, MigProfile) else parse_profile(profile)
    name = "mig-" + str(prof).replace("+", ".")
    if not _RESOURCE_NAME_RE.match(name):  # pragma: no cover - the profile grammar keeps names valid
        raise MigPlanError(f"profile {prof} yields an invalid Kubernetes resource name {name!r}")
    return RESOURCE_PREFIX + name


def profile_resource(profile: Union[str, MigProfile], strategy: str) -> str:
    """The resource a pod requests for one device of ``profile`` under ``strategy``."""
    return resource_name(profile) if check_strategy(strategy) == "mixed" else GPU_RESOURCE


def mig_resource_profile(resource: str) -> Optional[str]:
    """The profile part of a ``nvidia.com/mig-...`` resource or label name as written (``1g.10gb.me``), else None."""
    if isinstance(resource, str) and resource.startswith(MIG_RESOURCE_PREFIX) and len(resource) > len(MIG_RESOURCE_PREFIX):
        return resource[len(MIG_RESOURCE_PREFIX):]
    return None


def _check_plan_item(item: Mapping[str, Any]) -> None:
    """A plan entry as mig_plan returns it: mig_enabled a bool, devices a mapping of profile to count."""
    gpu = f"plan entry for GPU {item['index']}" if "index" in item else f"plan entry {brief(dict(item))}"
    if not isinstance(item["mig_enabled"], bool):
        raise MigPlanError(f"{gpu}: 'mig_enabled' must be true or false, not {brief(item['mig_enabled'])}")
    devices = item["devices"]
    if not isinstance(devices, Mapping):
        raise MigPlanError(f"{gpu}: 'devices' must be a mapping of MIG profile to count, not {brief(devices)}")
    for prof, n in devices.items():
        try:
            parse_profile(prof)
        except MigConfigError as exc:
            raise MigPlanError(f"{gpu}: 'devices': {exc}") from None
        if not is_int(n) or n < 0:
            raise MigPlanError(f"{gpu}: 'devices': count for {prof!r} must be a non-negative integer, not {brief(n)}")


def check_plan_entry(item: Any) -> Mapping[str, Any]:
    """One GPU's plan entry (``index``, ``mig_enabled``, ``devices``), checked; MigPlanError naming it otherwise."""
    if not isinstance(item, Mapping) or not is_int(item.get("index")) or "mig_enabled" not in item or "devices" not in item:
        raise MigPlanError(f"plan entry {brief(item)} needs index, mig_enabled and devices; pass what mig_plan returns")
    _check_plan_item(item)
    return item


def _plan_items(plan_: Any, depth: int = 0) -> List[Mapping[str, Any]]:
    if isinstance(plan_, Mapping):
        plan_ = [plan_]
    if not isinstance(plan_, list):
        raise MigPlanError(f"a plan must be the list mig_plan returns, not {type(plan_).__name__} ({brief(plan_)})")
    items: List[Mapping[str, Any]] = []
    for item in plan_:
        if isinstance(item, list) and depth == 0:  # a list of node plans
            items.extend(_plan_items(item, depth + 1))
        elif isinstance(item, Mapping) and "mig_enabled" in item and "devices" in item:
            _check_plan_item(item)
            items.append(item)
        else:
            raise MigPlanError(f"plan entry {brief(item)} lacks 'mig_enabled'/'devices'; pass what mig_plan returns")
    return items


def resources(plan_: Any, strategy: str = "mixed") -> Dict[str, int]:
    """Extended resources a plan (or a list of node plans) yields under the device plugin's MIG strategy."""
    check_strategy(strategy)
    items = _plan_items(plan_)
    out: Dict[str, int] = {}
    if strategy == "mixed":
        for item in items:
            if not item["mig_enabled"]:
                out[GPU_RESOURCE] = out.get(GPU_RESOURCE, 0) + 1
                continue
            for prof, n in item["devices"].items():
                if n:
                    key = resource_name(prof)
                    out[key] = out.get(key, 0) + int(n)
        return dict(sorted(out.items()))

    enabled = [i for i in items if i["mig_enabled"]]
    if not enabled:
        return {GPU_RESOURCE: len(items)} if items else {}
    disabled = [i for i in items if not i["mig_enabled"]]
    if disabled:
        raise MigPlanError(
            "strategy 'single' needs every GPU MIG-enabled or every GPU MIG-disabled; MIG is disabled on GPU(s) "
            f"{_gpu_list(disabled)} and enabled on GPU(s) {_gpu_list(enabled)}; use strategy 'mixed'"
        )
    kinds = sorted({str(parse_profile(p)) for i in enabled for p, n in i["devices"].items() if n})
    empty = [i for i in enabled if not any(i["devices"].values())]
    if empty:
        raise MigPlanError(
            f"strategy 'single' needs MIG devices on every GPU; GPU(s) {_gpu_list(empty)} have MIG enabled with none; "
            "use strategy 'mixed'"
        )
    if len(kinds) > 1:
        raise MigPlanError(
            f"strategy 'single' needs one MIG profile on every GPU, the layout has {', '.join(kinds)}; use strategy 'mixed'"
        )
    return {GPU_RESOURCE: sum(int(n) for i in enabled for n in i["devices"].values())}


def _gpu_list(items: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(str(i.get("index", "?")) for i in items)
