# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`playbooks/mig.yml --check` on a fleet of simulated GPU nodes: seconds in all and per node.

Each node is an inventory host with the local connection and its own GPU simulator state (tests/gpu_sim, run from
the source tree with GPU_SIM_STATE per host): half 8 x A100-SXM4-40GB with all-1g.5gb, half 8 x H200 with
all-1g.18gb, MIG disabled, the package not installed, so check mode has something to predict on every node. Nothing
changes anywhere (check mode; the simulator log is compared before and after).

    .venv/bin/python benchmarks/check_fleet.py --nodes 64 --runs 3 --forks 16 [--out benchmarks/results/X.json]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIM = ROOT / "tests" / "gpu_sim" / "bin"
NODE_PYTHON = "/usr/bin/python3"  # the node's python (with python3-apt, as Debian nodes have)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--forks", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hosts: Dict[str, Dict[str, Any]] = {}
        logs: Dict[str, str] = {}
        for i in range(args.nodes):
            name = f"sim-node-{i:02d}"
            state = tmp / f"{name}.json"
            model, layout = ("A100-SXM4-40GB", "all-1g.5gb") if i % 2 == 0 else ("H200", "all-1g.18gb")
            env = dict(os.environ, GPU_SIM_STATE=str(state))
            subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), "init", "--model", model, "--count", "8"], env=env, check=True, capture_output=True)
            smi = tmp / f"{name}-nvidia-smi"
            smi.write_text(f"#!/bin/sh\nGPU_SIM_STATE={state} exec {NODE_PYTHON} {SIM / 'nvidia-smi'} \"$@\"\n")
            smi.chmod(0o755)
            hosts[name] = {"mig_layout_config": layout, "mig_layout_nvidia_smi_path": str(smi)}
            logs[name] = subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), "log"], env=env, check=True, capture_output=True, text=True).stdout
        inventory = tmp / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {"gpu_nodes": {"hosts": hosts, "vars": {
            "ansible_connection": "local", "ansible_python_interpreter": NODE_PYTHON, "ansible_become": False,
            "mig_layout_config_file": str(ROOT / "inventories" / "layouts" / "dgx.yaml"),
            "mig_layout_package_file": str(ROOT / "build" / "testbed" / "debs" / "nvidia-mig-manager_0.13.0-1_amd64.deb"),
            "mig_layout_backend": "nvidia_smi", "mig_layout_k8s_delegate_to": "", "mig_layout_gpu_clients": [],
            "mig_layout_config_dir": str(tmp / "etc"), "mig_layout_textfile_dir": str(tmp / "textfile"),
        }}}}}))
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS=str(args.forks), HOME=str(tmp))
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
        runs: List[Dict[str, Any]] = []
        for _run in range(args.runs):
            start = time.monotonic()
            proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/mig.yml", "--check",
                                   "-e", f"gpu_ops_mig_serial={args.nodes}"], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
            wall = time.monotonic() - start
            if proc.returncode != 0:
                print(proc.stdout[-5000:], proc.stderr[-2000:], file=sys.stderr)
                return 1
            changed = [int(m.group(1)) for m in re.finditer(r"^sim-node-\d+\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)]
            runs.append({"wall_s": round(wall, 2), "per_node_s": round(wall / args.nodes, 3), "nodes_reported": len(changed),
                         "changed_per_node": sorted(set(changed))})
        untouched = all(
            subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), "log"], env=dict(os.environ, GPU_SIM_STATE=str(tmp / f"{name}.json")),
                           check=True, capture_output=True, text=True).stdout == logs[name]
            for name in hosts)
        written = (tmp / "etc").exists() or (tmp / "textfile").exists()
    result = {"date": time.strftime("%Y-%m-%d"), "nodes": args.nodes, "forks": args.forks, "load": os.getloadavg(), "runs": runs,
              "median_wall_s": statistics.median(r["wall_s"] for r in runs), "median_per_node_s": statistics.median(r["per_node_s"] for r in runs),
              "gpus_untouched": untouched, "files_written": written}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if untouched and not written else 1


if __name__ == "__main__":
    sys.exit(main())
