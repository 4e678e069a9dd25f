# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`promtool test rules` on role monitoring's PrometheusRule (pools, MIG slice headroom, alerts) as the role renders it.

The role is rendered by playbooks/serving.yml (tag monitoring, render mode) with its defaults and with
monitoring_alert_lb_edition=plus; the PrometheusRule's groups, annotations removed, become the rule file of
alerts.test.yml / alerts_plus.test.yml (every alert fires in one case and stays quiet in another). `promtool check
rules` on the full groups parses the annotation templates. Broken variants of the rules must fail the unit tests.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
else:  # tests/ansible_run.py, importable once tests/ is on sys.path
    from ansible_run import ansible_env

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PROMTOOL = "/usr/bin/promtool"
VAULT = ["-e", "vault_grafana_admin_password=promtool-test-Pa55", "-e", "vault_triton_restricted_api_key=promtool-test-key-0123456789"]


def render_rule(out: Path, *extra: str) -> Dict[str, Any]:
    env = ansible_env(out.parent)
    argv = [
        str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", "--tags", "monitoring", *VAULT,
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", *extra,
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rules = sorted((out / "monitoring_rules").glob("*-prometheusrule-*.yaml"))
    assert len(rules) == 1, rules
    rule = yaml.safe_load(rules[0].read_text())
    assert isinstance(rule, dict)
    return rule


@pytest.fixture(scope="module")
def rule(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return render_rule(tmp_path_factory.mktemp("alerts-render") / "out")


@pytest.fixture(scope="module")
def plus_rule(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    return render_rule(tmp_path_factory.mktemp("alerts-render-plus") / "out", "-e", "monitoring_alert_lb_edition=plus")


def rules_of(rule: Dict[str, Any]) -> List[Dict[str, Any]]:
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def promtool(workdir: Path, rule: Dict[str, Any], test: str, rules_file: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} is missing: `apt-get install prometheus` (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    full = workdir / "full.yml"
    full.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    check = subprocess.run([PROMTOOL, "check", "rules", str(full)], capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    groups = yaml.safe_load(yaml.safe_dump(rule["spec"]["groups"]))
    for group in groups:
        for item in group["rules"]:
            item.pop("annotations", None)
    (workdir / rules_file).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    shutil.copy(HERE / test, workdir / test)
    return subprocess.run([PROMTOOL, "test", "rules", test], cwd=workdir, capture_output=True, text=True, timeout=120, check=False)


def test_rule_is_selected_and_complete(rule: Dict[str, Any], plus_rule: Dict[str, Any]) -> None:
    # the labels kube-prometheus-stack's Prometheus selects rules by (monitoring_monitor_labels' default)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"] for r in rules_of(rule) if "alert" in r}
    assert alerts == {
        "GpuOpsTritonQueueTimeOverTarget", "GpuOpsNoSliceHeadroom", "GpuOpsMigLayoutMismatch", "GpuOpsTritonDeploymentUnavailable",
        "GpuOpsTritonPodNotReady", "GpuOpsTritonQueueMetricMissing", "GpuOpsTritonPodFailingRequests", "GpuOpsLbExporterDown",
    }
    plus = {r["alert"] for r in rules_of(plus_rule) if "alert" in r}
    assert plus - alerts == {"GpuOpsLbUpstreamServerDown", "GpuOpsLbUpstreamServerErrors"}
    # the headroom alert says which variable changes the layout
    headroom = next(r for r in rules_of(rule) if r.get("alert") == "GpuOpsNoSliceHeadroom")
    text = headroom["annotations"]["description"]
    for needle in ("mig_layout_config", "{{ $labels.resource }}", "{{ $labels.horizontalpodautoscaler }}"):
        assert needle in text, needle
    records = {r["record"] for r in rules_of(rule) if "record" in r}
    assert {"gpu_ops:mig_slices_advertised", "gpu_ops:mig_slices_requested", "gpu_ops:mig_slices_free"} <= records


def test_alert_and_headroom_unit_tests(rule: Dict[str, Any], tmp_path: Path) -> None:
    proc = promtool(tmp_path, rule, "alerts.test.yml", "alerts_rules.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_plus_unit_tests(plus_rule: Dict[str, Any], tmp_path: Path) -> None:
    proc = promtool(tmp_path, plus_rule, "alerts_plus.test.yml", "alerts_rules_plus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("name", "old", "new", "why"),
    [
        ("GpuOpsTritonQueueTimeOverTarget", "* 1.1", "* 1.0", "no tolerance: abc-2 (52000 against 50000) fires"),
        ("GpuOpsNoSliceHeadroom", ">= on (namespace, horizontalpodautoscaler)", "< on (namespace, horizontalpodautoscaler)",
         "headroom taken for none"),
        ("GpuOpsTritonQueueMetricMissing", "unless on (namespace, pod)", "and on (namespace, pod)", "and for unless"),
        ("GpuOpsMigLayoutMismatch", "== 0", "== 1", "the wrong value"),
        ("GpuOpsTritonPodNotReady", 'condition="false"', 'condition="true"', "the ready condition"),
        ("gpu_ops:mig_slices_requested", ',node!=""', "", "unscheduled pods counted"),
        ("gpu_ops:mig_slices_requested", "Pending|Running", "Pending|Running|Succeeded", "finished pods counted"),
        ("GpuOpsTritonPodFailingRequests", "+ sum by", "* sum by", "a wrong denominator"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(rule: Dict[str, Any], tmp_path: Path, name: str, old: str, new: str, why: str) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rule))
    target = next(r for r in rules_of(broken) if name in (r.get("alert"), r.get("record")))
    assert old in target["expr"], (old, target["expr"])
    target["expr"] = target["expr"].replace(old, new, 1)
    proc = promtool(tmp_path, broken, "alerts.test.yml", "alerts_rules.yml")
    assert proc.returncode != 0, f"the unit tests pass with {why}:\n{proc.stdout}"
    assert "FAILED" in proc.stdout + proc.stderr
