# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Whole playbook runs given bad input (tests/data/bad_inputs/playbooks.yaml): each exits non-zero naming the input,
before any stage has changed anything: the render directory, holding a user's file beforehand, is byte for byte what it
was, and no task of a stage ran (the validation plays of playbooks/validate.yml are the only plays that ran tasks)."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CASES: List[Dict[str, Any]] = yaml.safe_load((ROOT / "tests/data/bad_inputs/playbooks.yaml").read_text())

pytestmark = pytest.mark.slow


def snapshot(directory: Path) -> Dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*"))}


def nodes_only_inventory(tmp: Path) -> Path:
    """inventories/dgx's GPU nodes and their settings, without the k8s_control group."""
    hosts = yaml.safe_load((ROOT / "inventories/dgx/hosts.yml").read_text())
    hosts["all"]["children"].pop("k8s_control")
    inventory = tmp / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    (inventory / "group_vars").symlink_to(ROOT / "inventories/dgx/group_vars")
    return inventory


class Run:
    """One case's playbook run, and its render directory's contents before and after."""

    def __init__(self, case: Dict[str, Any], work: Path) -> None:
        render = work / "render"
        (render / "triton").mkdir(parents=True)
        (render / "triton" / "sealed-secret.yaml").write_text("kind: SealedSecret  # the user's own\n")
        self.before = snapshot(render)
        inventory = case.get("inventory", "inventories/dgx")
        if inventory == "NODES_ONLY":
            inventory = str(nodes_only_inventory(work))
        args = [str(a).replace("RENDER", str(render)) for a in case["args"]]
        env = ansible_env(work, ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
        self.proc = subprocess.run([str(BIN / "ansible-playbook"), case["playbook"], "-i", inventory, *VAULT_ARGS, *args], cwd=ROOT, env=env,
                                   capture_output=True, text=True, timeout=300, check=False)
        self.after = snapshot(render)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Run]:
    """Every case run once, in a directory of its own, two at a time (two cores; ansible-playbook uses one)."""
    base = tmp_path_factory.mktemp("bad-playbooks")

    def one(case: Dict[str, Any]) -> Run:
        work = base / case["id"]
        work.mkdir()
        return Run(case, work)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((c["id"] for c in CASES), pool.map(one, CASES)))


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_fails_before_anything_changes(case: Dict[str, Any], runs: Dict[str, Run]) -> None:
    run = runs[case["id"]]
    proc = run.proc
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"{case['input']}: exited 0\n{out[-3000:]}"
    assert case["message"] in out, out[-4000:]
    assert "Unexpected Exception" not in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    # only validation plays ran: no play of a stage started
    plays = re.findall(r"^PLAY \[(.*)\] \*+$", proc.stdout, flags=re.M)
    stage_plays = [p for p in plays if not p.startswith(("Validate", "Remember"))]
    assert stage_plays == [], f"stage plays started: {stage_plays}"
    if case.get("render_untouched"):
        assert run.after == run.before
