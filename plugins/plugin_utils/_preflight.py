# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE plugin_utils: the checks of a role's preflight (not a public API; may change without notice).

A role's variables are checked in two steps, each reporting every problem at once:

1. ``spec_and_rules``: the types and choices of the role's own ``meta/argument_specs.yml`` (what
   ``ansible.builtin.validate_argument_spec`` checks), then the formats and ranges of the role's rules table (the
   rule kinds of module_utils/_inputs.py), for the variables whose type was right;
2. ``failed_checks``: the checks across variables (capacity, combinations), each a condition and its message.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Mapping, Sequence

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._inputs import InputRuleError, problems

SPEC_FILE = os.path.join("meta", "argument_specs.yml")


class PreflightError(Exception):
    """The request itself is wrong (not the role's variables): no role, an unreadable spec, an unknown rule."""


def role_options(role_path: str, load_yaml: Callable[[str], Any], entry_point: str = "main") -> Dict[str, Any]:
    """The options of the role's argument spec entry point."""
    path = os.path.join(role_path, SPEC_FILE)
    try:
        with open(path, encoding="utf-8") as handle:
            data = load_yaml(handle.read())
    except OSError as exc:
        raise PreflightError(f"cannot read the role's argument spec {path}: {exc.strerror}") from None
    try:
        options = data["argument_specs"][entry_point]["options"]
    except (KeyError, TypeError):
        raise PreflightError(f"{path} has no argument_specs.{entry_point}.options") from None
    if not isinstance(options, dict):
        raise PreflightError(f"{path}: argument_specs.{entry_point}.options is not a mapping")
    return options


def spec_and_rules(options: Mapping[str, Any], rules: Mapping[str, str], values: Mapping[str, Any]) -> List[str]:
    """Every problem of ``values`` (the role's templated variables) by its argument spec, then by its rules table.

    A variable the spec refuses is not checked again by its rule (its message would only repeat the type error).
    """
    unknown = sorted(set(rules) - set(options))
    if unknown:
        raise PreflightError(f"the rules table names variables the role's argument spec does not declare: {', '.join(unknown)}")
    result = ArgumentSpecValidator(dict(options)).validate(
        {name: value for name, value in values.items() if name in options}, validate_role_argument_spec=True)
    out = list(result.error_messages)
    refused = {name for name in options if any(f"'{name}'" in message or f"{name}:" in message for message in out)}
    checked = {name: result.validated_parameters.get(name, values.get(name)) for name in rules
               if name not in refused and name in values}
    try:
        out += problems({name: rules[name] for name in checked}, checked)
    except InputRuleError as exc:
        raise PreflightError(str(exc)) from None
    return out


def failed_checks(checks: Sequence[Any]) -> List[str]:
    """The messages of the checks whose ``fail`` is true, each once, in order."""
    out: List[str] = []
    for index, check in enumerate(checks):
        if not isinstance(check, Mapping) or set(check) != {"fail", "msg"}:
            raise PreflightError(f"checks[{index}] must be a mapping with exactly the keys fail and msg")
        fail = check["fail"]
        if isinstance(fail, str) and fail.strip().lower() in ("true", "false"):
            fail = fail.strip().lower() == "true"
        if not isinstance(fail, bool):
            raise PreflightError(f"checks[{index}].fail must be a boolean, got {fail!r} (message: {check['msg']})")
        message = str(check["msg"]).strip()
        if fail and message not in out:
            out.append(message)
    return out
