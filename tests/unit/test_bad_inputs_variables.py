# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad role variables of tests/data/bad_inputs/variables.yaml, each checked the way the role's preflight checks it:
first the role's own meta/argument_specs.yml (types, choices), then the formats and ranges of the rules its
tasks/preflight.yml gives the action gpu_ops.mig_serving.preflight, through the action's own code. Both are read from the role's files,
so a rule dropped from a preflight or a spec fails here. That the preflights run before anything is written is proven
by tests/integration/test_bad_inputs_playbooks.py."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._inputs import problems
from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._preflight import spec_and_rules

ROOT = Path(__file__).resolve().parents[2]
CASES: List[Dict[str, Any]] = yaml.safe_load((ROOT / "tests/data/bad_inputs/variables.yaml").read_text())


def role_rules(role: str) -> Dict[str, str]:
    tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / "preflight.yml").read_text())
    for task in tasks:
        rules = (task.get("gpu_ops.mig_serving.preflight") or {}).get("rules")
        if rules:
            return dict(rules)
    raise AssertionError(f"roles/{role}/tasks/preflight.yml has no gpu_ops.mig_serving.preflight task with rules")


def role_spec(role: str) -> Dict[str, Any]:
    spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return dict(spec["argument_specs"]["main"]["options"])


def role_message(role: str, var: str, value: Any) -> str:
    """What the role's preflight (the action gpu_ops.mig_serving.preflight) says about one variable: its argument spec
    first, then its rule."""
    spec = role_spec(role)
    assert var in spec, f"{var} is not in roles/{role}/meta/argument_specs.yml"
    option = {k: v for k, v in spec[var].items() if k in ("type", "choices", "elements")}
    rules = role_rules(role)
    return "; ".join(spec_and_rules({var: option}, {var: rules[var]} if var in rules else {}, {var: value}))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_variable_is_refused_naming_it(case: Dict[str, Any]) -> None:
    message = role_message(case["role"], case["var"], case["value"])
    assert message, f"{case['var']}={case['value']!r} is accepted by role {case['role']}"
    assert case["message"] in message, message
    assert case["var"] in message


@pytest.mark.parametrize("role", sorted({c["role"] for c in CASES}))
def test_role_defaults_pass_their_own_rules(role: str) -> None:
    """The defaults a role ships pass its rules (a rule too strict for the defaults would break every run)."""
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    rules = role_rules(role)
    literal = {k: v for k, v in defaults.items() if k in rules and not (isinstance(v, str) and "{{" in v)}
    assert literal, f"no literal default of roles/{role} is covered by a rule"
    assert problems(rules, literal) == []
    assert set(rules) <= set(role_spec(role)), "a rule names a variable the argument spec does not declare"


@pytest.mark.parametrize("value", ["300s", "1m30s", "5", "2ms", "1h"])
def test_good_nginx_times_pass(value: str) -> None:
    assert problems({"t": "nginx_time"}, {"t": value}) == []


SERIALS = [(1, True), ("2", True), ("25%", True), ("100%", True), ([1, "50%"], True),
           (0, False), (-1, False), ("abc", False), ("0%", False), ("101%", False), (True, False)]


@pytest.mark.parametrize(("value", "ok"), SERIALS)
def test_serial_values(value: Any, ok: bool) -> None:
    assert (problems({"gpu_ops_mig_serial": "serial"}, {"gpu_ops_mig_serial": value}) == []) is ok


@pytest.mark.parametrize("value", [["10.0.0.0/8", "fd00::/8"], ["127.0.0.1"], ["::1"]])
def test_cluster_allow_lists_pass(value: List[str]) -> None:
    assert problems({"a": "allow_list"}, {"a": value}) == []
