# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`promtool test rules` on the recording rule as role custom_metrics renders it.

queue_time.test.yml: steady traffic, a counter reset (in-place restart) with the queue time changing across it,
two models in one pod (request-weighted), idle pods (0, not NaN, not absent), traffic stopping. The rule is
rendered by playbooks/serving.yml (tag custom_metrics, render mode) and its PrometheusRule groups written as the
rule file. seed_query.test.yml pins down what the seed article's query returns on similar counters.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

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


@pytest.fixture(scope="module")
def rendered_rule(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("promtool-render") / "out"
    env = ansible_env(out.parent)
    argv = [
        str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", "--tags", "custom_metrics",
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}",
    ]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rules = sorted((out / "custom_metrics").glob("*-prometheusrule-*.yaml"))
    assert len(rules) == 1, rules
    rule = yaml.safe_load(rules[0].read_text())
    assert isinstance(rule, dict)
    return rule


def promtool(workdir: Path, rule: Dict[str, Any], *tests: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} is missing: `apt-get install prometheus` (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    for name in ("queue_time.test.yml", "seed_query.test.yml", "rules_seed.yml"):
        shutil.copy(HERE / name, workdir / name)
    check = subprocess.run([PROMTOOL, "check", "rules", "rules.yml"], cwd=workdir, capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    return subprocess.run([PROMTOOL, "test", "rules", *tests], cwd=workdir, capture_output=True, text=True, timeout=120, check=False)


def test_recording_rule_unit_tests(rendered_rule: Dict[str, Any], tmp_path: Path) -> None:
    proc = promtool(tmp_path, rendered_rule, "queue_time.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_the_seed_query_does_what_we_say(rendered_rule: Dict[str, Any], tmp_path: Path) -> None:
    proc = promtool(tmp_path, rendered_rule, "seed_query.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("(rate(nv_inference_request_success{pod!=\"\"}[4s])) > 0)", "(rate(nv_inference_request_success{pod!=\"\"}[4s])) + 1)", "a 1+ denominator"),
        ("rate(nv_inference_queue_duration_us", "delta(nv_inference_queue_duration_us", "delta() on the counter"),
        ("or on (namespace, pod)", "and on (namespace, pod)", "no 0 for idle pods"),
    ],
)
def test_the_unit_tests_catch_a_broken_rule(rendered_rule: Dict[str, Any], tmp_path: Path, old: str, new: str, why: str) -> None:
    broken = yaml.safe_load(yaml.safe_dump(rendered_rule))
    expr: str = broken["spec"]["groups"][0]["rules"][0]["expr"]
    assert old in expr, (old, expr)
    broken["spec"]["groups"][0]["rules"][0]["expr"] = expr.replace(old, new, 1)
    proc = promtool(tmp_path, broken, "queue_time.test.yml")
    assert proc.returncode != 0, f"the unit tests pass with {why}:\n{proc.stdout}"
    assert "FAILED" in proc.stdout + proc.stderr
