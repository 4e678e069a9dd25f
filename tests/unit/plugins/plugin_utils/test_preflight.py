# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugin_utils/_preflight.py: the logic of the action gpu_ops.mig_serving.preflight (the roles' input checks)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._preflight import (
    PreflightError,
    failed_checks,
    role_options,
    spec_and_rules,
)

OPTIONS: Dict[str, Any] = {
    "demo_namespace": {"type": "str"},
    "demo_replicas": {"type": "int"},
    "demo_mode": {"type": "str", "choices": ["a", "b"]},
}
RULES = {"demo_namespace": "namespace", "demo_replicas": "int:1.."}


def test_every_problem_at_once_spec_then_rules() -> None:
    found = spec_and_rules(OPTIONS, RULES, {"demo_namespace": "Bad_NS", "demo_replicas": 0, "demo_mode": "c"})
    assert len(found) == 3, found
    assert "demo_mode" in found[0]
    assert "one of" in found[0]
    assert found[1].startswith("demo_namespace: 'Bad_NS' is not an RFC 1123 DNS label")
    assert found[2] == "demo_replicas: 0 is below the minimum 1"


def test_a_variable_of_the_wrong_type_is_reported_once_by_its_type() -> None:
    found = spec_and_rules(OPTIONS, RULES, {"demo_namespace": "ok", "demo_replicas": "many"})
    assert len(found) == 1, found
    assert "demo_replicas" in found[0]
    assert "int" in found[0]


def test_values_are_checked_after_the_spec_converts_them() -> None:
    assert spec_and_rules(OPTIONS, RULES, {"demo_namespace": "ok", "demo_replicas": "3", "demo_mode": "a"}) == []
    assert spec_and_rules(OPTIONS, RULES, {"demo_replicas": "0"}) == ["demo_replicas: 0 is below the minimum 1"]


def test_a_rule_for_an_undeclared_variable_is_a_request_error() -> None:
    with pytest.raises(PreflightError, match="does not declare: demo_other"):
        spec_and_rules(OPTIONS, {"demo_other": "namespace"}, {})


def test_an_unknown_rule_kind_is_a_request_error() -> None:
    with pytest.raises(PreflightError, match=r"unknown rule kind .no_such_rule."):
        spec_and_rules(OPTIONS, {"demo_namespace": "no_such_rule"}, {"demo_namespace": "ok"})


def test_failed_checks_keep_order_and_drop_repeats() -> None:
    checks = [{"fail": True, "msg": "b wrong "}, {"fail": False, "msg": "never"}, {"fail": True, "msg": "a wrong"},
              {"fail": "True", "msg": "b wrong"}]
    assert failed_checks(checks) == ["b wrong", "a wrong"]
    assert failed_checks([{"fail": False, "msg": "x"}]) == []


@pytest.mark.parametrize("check", [{"fail": True}, {"fail": "maybe", "msg": "m"}, {"fail": 1, "msg": "m"}, "x"])
def test_malformed_checks_are_request_errors(check: Any) -> None:
    with pytest.raises(PreflightError, match=r"checks\[0\]"):
        failed_checks([check])


def test_role_options_reads_the_main_entry_point(tmp_path: Path) -> None:
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "argument_specs.yml").write_text(yaml.safe_dump({"argument_specs": {"main": {"options": OPTIONS}}}))
    assert role_options(str(tmp_path), yaml.safe_load) == OPTIONS
    with pytest.raises(PreflightError, match=r"no argument_specs\.other\.options"):
        role_options(str(tmp_path), yaml.safe_load, "other")
    with pytest.raises(PreflightError, match="cannot read"):
        role_options(str(tmp_path / "missing"), yaml.safe_load)
