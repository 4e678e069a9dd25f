# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The input_problems filter (documented in input_problems.yml next to this file)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List

from ansible.errors import AnsibleFilterError

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._inputs import InputRuleError, problems


def input_problems(rules: Any, values: Any) -> List[str]:
    try:
        return problems(rules, values)
    except InputRuleError as exc:
        raise AnsibleFilterError(f"input_problems: {exc}") from None


class FilterModule:
    def filters(self) -> Dict[str, Callable[..., Any]]:
        return {"input_problems": input_problems}
