# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action gpu_ops.mig_serving.loadtest_report in ansible-playbook: check mode writes nothing and predicts what a real
run writes, a relative dest is taken from the directory ansible-playbook was started in, run and run_file give the same
report, and an invalid run fails naming its fields (one playbook run, its task results collected into a file)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "plugins" / "plugin_utils"))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.unit.plugins.plugin_utils.test_loadtest_report import make_pool_run, make_run
else:
    from ansible_run import ansible_env
    from test_loadtest_report import make_pool_run, make_run  # the reference runs of the unit tests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _env(home: Path) -> Dict[str, str]:
    return ansible_env(home, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))


def test_loadtest_report_action(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    run = make_run()
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "pools.json").write_text(json.dumps(make_pool_run()))  # two serving pools, one scales
    bad = make_run()
    bad["samples"][3]["t"] = "soon"
    bad["steps"][0]["protocol"] = "udp"
    action = "gpu_ops.mig_serving.loadtest_report"
    tasks = [
        {"name": "Check mode", "check_mode": True, "register": "r_check", action: {"run": run, "dest": "out"}},
        {"name": "Look", "register": "r_look", "ansible.builtin.stat": {"path": "out"}},
        {"name": "Real", "register": "r_real", action: {"run": run, "dest": "out"}},
        {"name": "From the file", "register": "r_file", action: {"run_file": str(tmp_path / "run.json"), "dest": str(tmp_path / "fromfile")}},
        {"name": "Pools", "register": "r_pools", action: {"run_file": str(tmp_path / "pools.json"), "dest": str(tmp_path / "pools")}},
        {"name": "Invalid", "register": "r_bad", "ignore_errors": True, action: {"run": bad, "dest": "bad"}},
        {"name": "Both", "register": "r_both", "ignore_errors": True, action: {"run": run, "run_file": "x.json", "dest": "both"}},
        {"name": "Collect", "ansible.builtin.copy": {
            "dest": str(tmp_path / "results.json"), "mode": "0644",
            "content": "{{ {'check': r_check, 'look': r_look.stat.exists, 'real': r_real, 'file': r_file, 'pools': r_pools, 'bad': r_bad, "
                       "'both': r_both} | to_json }}"}},
    ]
    play = [{"name": "Report", "hosts": "localhost", "connection": "local", "gather_facts": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = subprocess.run([str(BIN / "ansible-playbook"), str(tmp_path / "play.yml"), "-e", f"ansible_python_interpreter={sys.executable}"],
                          cwd=work, env=_env(tmp_path), capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    r: Dict[str, Any] = json.loads((tmp_path / "results.json").read_text())

    out = work / "out"
    assert r["look"] is False, "check mode wrote the report directory"
    assert r["check"]["changed"] is True
    assert r["real"]["changed"] is True
    assert r["check"]["files"] == r["real"]["files"]
    assert r["check"]["summary"] == r["real"]["summary"]
    assert r["real"]["report"] == str(out.resolve() / "report.md")
    assert sorted(Path(f).name for f in r["real"]["files"]) == sorted(p.name for p in out.iterdir())
    assert r["real"]["summary"]["seconds_over_target"] == 10.0
    assert r["real"]["summary"]["requests_per_pod"] == {"triton-a": 780, "triton-b": 390}
    assert json.loads((out / "run.json").read_text()) == run
    assert (out / "report.md").read_text() == (tmp_path / "fromfile" / "report.md").read_text()
    assert (out / "replicas.png").read_bytes() == (tmp_path / "fromfile" / "replicas.png").read_bytes()

    pools = {p["name"]: p for p in r["pools"]["summary"]["pools"]}
    assert (pools["triton-1g-5gb"]["time_to_capacity_s"], pools["triton-3g-20gb"]["time_to_capacity_s"]) == (6.0, None)
    assert (pools["triton-1g-5gb"]["peak_replicas"], pools["triton-3g-20gb"]["peak_replicas"]) == (2, 1)
    assert "## Pools" in (tmp_path / "pools" / "report.md").read_text()

    assert r["bad"]["failed"] is True
    assert "run is not a valid load-test run (2 problem(s))" in r["bad"]["msg"]
    assert "run.samples[3].t must be a number, got 'soon'" in r["bad"]["msg"]
    assert "run.steps[0].protocol must be one of http, grpc, got 'udp'" in r["bad"]["msg"]
    assert not (work / "bad").exists()
    assert r["both"]["failed"] is True
    assert "mutually exclusive: run|run_file" in r["both"]["msg"]
