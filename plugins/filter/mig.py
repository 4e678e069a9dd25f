# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Filters on the collection's MIG model: mig_plan, mig_resources (documented in mig_plan.yml, mig_resources.yml)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import MigPlanError, plan, resources


def mig_plan(config: Any, config_name: str, gpus: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    try:
        return plan(config, config_name, gpus)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_plan: {exc}") from None


def mig_resources(plan_: Any, strategy: str = "mixed") -> Dict[str, int]:
    try:
        return resources(plan_, strategy)
    except (MigConfigError, MigPlanError) as exc:
        raise AnsibleFilterError(f"mig_resources: {exc}") from None


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"mig_plan": mig_plan, "mig_resources": mig_resources}
