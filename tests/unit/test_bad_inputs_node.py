# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The bad-input table of the node side (tests/data/bad_inputs/node.yaml): the modules' timeout option and file
descriptions, hung commands and a hung NVML, and the mig_layout role's input rules, time bounds and GPU client list.

Module cases run main() on a node whose commands are real processes, with AnsibleModule's real run_command: a hung
command must fail the module within its bound, naming the command and the limit, and be gone afterwards; a refused
timeout must fail before any command runs. Role cases run the role's preflight through ansible-playbook on localhost
(read-only: nvidia-smi replays the real H200 capture, no cluster), and must fail with the case's message.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "plugins" / "modules"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripted_node import RunReal, ScriptedNode, hanging_nvml, run_real

if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.h200_replay import write_replay_nvidia_smi
else:
    from ansible_run import ansible_env
    from h200_replay import write_replay_nvidia_smi

from ansible_collections.gpu_ops.mig_serving.plugins.modules import mig_info, mig_node_files, mig_node_state, mig_verify

__all__ = ["run_real"]  # the fixture, for the module cases

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TABLE = ROOT / "tests" / "data" / "bad_inputs" / "node.yaml"
CASES: List[Dict[str, Any]] = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
MODULES = {"mig_info": mig_info, "mig_verify": mig_verify, "mig_node_state": mig_node_state, "mig_node_files": mig_node_files}
GPU_MODULES = ("mig_info", "mig_verify", "mig_node_state")  # the ones taking the GPU backend options
SLACK = 4  # seconds over the bound a hung case may take (SIGKILL, reaping, Python)


def _assert_message(case: Dict[str, Any], message: str) -> None:
    for part in [case["message"], *case.get("also", [])]:
        assert part in message, f"{case['id']}: {part!r} not in:\n{message}"


def test_table_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    for case in CASES:
        assert case["id"].startswith("node-"), case["id"]
        assert {"id", "area", "input", "message", "via"} <= set(case), case["id"]
        assert case["via"] in ("module", "role"), case["id"]
        assert case["via"] != "module" or case["module"] in MODULES, case["id"]
    assert 12 <= len(CASES) <= 30


@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "module"], ids=lambda c: c["id"])
def test_module_case(case: Dict[str, Any], run_real: RunReal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mig_node_state, "read_os_family", lambda: "Debian")  # dpkg-query, whatever runs the test
    node = ScriptedNode(tmp_path, hang=case.get("hang"))
    args = dict(case["args"])
    if case["module"] in GPU_MODULES:
        args.setdefault("nvidia_smi_path", node.nvidia_smi)
        args.setdefault("backend", "nvidia_smi")
    nvml = hanging_nvml(case["nvml_hang"]) if "nvml_hang" in case else None
    res = run_real(MODULES[case["module"]].main, args, node, nvml=nvml)
    assert res.failed, f"{case['id']}: accepted: {res.result}"
    _assert_message(case, res.result["msg"])
    if "hang" in case or "nvml_hang" in case:
        assert res.result["_seconds"] < args["timeout"] + SLACK, f"{case['id']}: took {res.result['_seconds']:.1f} s"
    if "hang" in case:
        assert node.hung_pid() is not None, f"{case['id']}: the command never hung"
        assert not node.hung_process_left(), f"{case['id']}: the hung command is still there"
    else:
        assert node.hung_pid() is None


@pytest.fixture(scope="module")
def role_inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("node-role")
    smi = write_replay_nvidia_smi(tmp / "nvidia-smi")
    package = tmp / "nvidia-mig-manager_0.13.0-1_amd64.deb"
    package.write_bytes(b"not read in preflight")
    node_vars = {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_become": False,
        "mig_layout_config": "all-1g.18gb", "mig_layout_config_file": str(ROOT / "inventories" / "layouts" / "dgx.yaml"),
        "mig_layout_backend": "nvidia_smi", "mig_layout_nvidia_smi_path": str(smi), "mig_layout_package_file": str(package),
        "mig_layout_k8s_delegate_to": "",
    }
    (tmp / "inventory.yml").write_text(yaml.safe_dump({"all": {"hosts": {"gpu-node": node_vars}}}), encoding="utf-8")
    (tmp / "play.yml").write_text(
        yaml.safe_dump([{"name": "Preflight", "hosts": "gpu-node", "gather_facts": False, "roles": [{"role": "gpu_ops.mig_serving.mig_layout"}]}]),
        encoding="utf-8",
    )
    return tmp


def _preflight(tmp: Path, extra: Dict[str, Any]) -> subprocess.CompletedProcess[str]:
    env = ansible_env(tmp)
    argv = [str(BIN / "ansible-playbook"), str(tmp / "play.yml"), "-i", str(tmp / "inventory.yml"), "--tags", "mig_layout_preflight",
            "-e", json.dumps(extra)]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_role_preflight_accepts_the_defaults(role_inventory: Path) -> None:
    """The role cases can fail only through their variables: the same run with none of them passes."""
    proc = _preflight(role_inventory, {})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in CASES if c["via"] == "role"], ids=lambda c: c["id"])
def test_role_case(case: Dict[str, Any], role_inventory: Path) -> None:
    proc = _preflight(role_inventory, case["vars"])
    assert proc.returncode != 0, f"{case['id']}: accepted:\n{proc.stdout[-3000:]}"
    _assert_message(case, proc.stdout)
    assert "Read the node's GPUs, package, files and units" not in proc.stdout, f"{case['id']}: the node was read before the input was refused"
