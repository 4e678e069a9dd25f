# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action plugin for gpu_ops.mig_serving.preflight: a role's input checks, in the controller process.

Thin: the argument spec here, the logic in plugin_utils/_preflight.py."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import yaml
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils import _preflight as preflight

ARGUMENT_SPEC: Dict[str, Any] = {
    "rules": {"type": "dict"},
    "checks": {"type": "list", "elements": "raw"},
}


class ActionModule(ActionBase):  # type: ignore[misc]  # ansible-core ships no type information
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Any = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        task_vars = task_vars or {}
        result: Dict[str, Any] = super().run(tmp, task_vars)
        _dummy, args = self.validate_argument_spec(
            argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("rules", "checks")], required_one_of=[("rules", "checks")])
        try:
            if args["rules"] is not None:
                role_path = task_vars.get("role_path")
                if not role_path:
                    raise preflight.PreflightError("rules are checked with the argument spec of a role: run it in a role's tasks")
                options = preflight.role_options(str(role_path), yaml.safe_load)
                values = self._templar.template({name: task_vars[name] for name in options if name in task_vars})
                found: List[str] = preflight.spec_and_rules(options, args["rules"], values)
            else:
                found = preflight.failed_checks(args["checks"])
        except preflight.PreflightError as exc:
            raise AnsibleActionFail(f"preflight: {exc}") from None
        result.update(changed=False, problems=found)
        if found:
            result.update(failed=True, msg="; ".join(found))
        else:
            result["msg"] = "All checks passed"
        return result
