# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`playbooks/mig.yml --check` on a fleet of simulated GPU nodes: seconds in all and per node.

Each node is an inventory host with the local connection and its own GPU simulator state (tests/gpu_sim, run from
the source tree with GPU_SIM_STATE per host). Two fleets (--state):

- fresh: half 8 x A100-SXM4-40GB with all-1g.5gb, half 8 x H200 with all-1g.18gb, MIG disabled, the package not
  installed, so check mode has everything to predict on every node (install, configure, drain, apply);
- converged: 8 x H200 in all-1g.18gb on every node, the package installed and configured, so check mode must find
  nothing to do (changed=0). The nodes share this machine's file system, so this runs as root in a private mount
  namespace with overlays on /etc, /usr and /var (nothing reaches the real ones): the simulated nvidia-mig-manager
  .deb is installed there with dpkg, one node is configured by a real (not check) run, and every node's simulated
  GPUs are put in the layout with the simulated nvidia-mig-parted.

Nothing changes in the measured runs (check mode; the simulator logs are compared before and after, and no file
appears under the nodes' directories in the fresh fleet).

    .venv/bin/python benchmarks/check_fleet.py --state fresh|converged --nodes 64 --runs 3 --forks 16 [--out X.json] [-e VARS]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
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
LAYOUTS = ROOT / "inventories" / "layouts" / "dgx.yaml"
DEB = ROOT / "build" / "testbed" / "debs" / "nvidia-mig-manager_0.13.0-1_amd64.deb"


EXTRA_VARS: List[str] = []  # --extra-vars, passed to every run (a variant to compare, e.g. a step forced on)


def play(inventory: Path, env: Dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    extra_vars = [arg for value in EXTRA_VARS for arg in ("-e", value)]
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/mig.yml", *extra_vars, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def sim_log(state: Path) -> str:
    return subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), "log"], env=dict(os.environ, GPU_SIM_STATE=str(state)),
                          check=True, capture_output=True, text=True).stdout


def write_smi(path: Path, mode: str, state: Path) -> None:
    """The node's nvidia-smi: the simulator itself (sim), the simulator recording every answer (record), or the
    recorded answers only, failing on any call not recorded (replay)."""
    records = path.with_suffix(".records")
    records.mkdir(exist_ok=True)
    key = f"key=$(printf '%s' \"$*\" | sha1sum | cut -c1-16); r={records}/$key"
    sim = f"GPU_SIM_STATE={state} {NODE_PYTHON} {SIM / 'nvidia-smi'} \"$@\""
    body = {
        "sim": f"GPU_SIM_STATE={state} exec {NODE_PYTHON} {SIM / 'nvidia-smi'} \"$@\"",
        "record": f"{key}\n{sim} >\"$r.out\" 2>\"$r.err\"; rc=$?; echo $rc >\"$r.rc\"\ncat \"$r.out\"; cat \"$r.err\" >&2; exit $rc",
        "replay": f"{key}\n[ -f \"$r.rc\" ] || {{ echo \"replay: nothing recorded for: $*\" >&2; exit 99; }}\n"
                  "cat \"$r.out\"; cat \"$r.err\" >&2; exit \"$(cat \"$r.rc\")\"",
    }[mode]
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def overlay_system(tmp: Path) -> None:
    """Inside the private mount namespace: /etc, /usr and /var become overlays whose changes land in tmp, and the
    simulated nvidia-mig-manager is installed there (as on a node that got it from the role earlier)."""
    for top in ("etc", "usr", "var"):
        upper, work = tmp / "overlay" / top / "upper", tmp / "overlay" / top / "work"
        upper.mkdir(parents=True)
        work.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir=/{top},upperdir={upper},workdir={work}", f"/{top}"], check=True)
    subprocess.run(["dpkg", "-i", str(DEB)], check=True, capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--forks", type=int, default=16)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--state", choices=("fresh", "converged"), default="fresh")
    parser.add_argument("--smi", choices=("replay", "sim"), default="replay",
                        help="replay: each node's nvidia-smi answers from a recording of the simulator (a shell script, as fast as "
                             "a native binary is; check mode changes nothing, so the answers stay true); sim: run the Python simulator")
    parser.add_argument("--extra-vars", "-e", action="append", default=[],
                        help="passed to ansible-playbook as -e, in every run (repeatable): measure a variant against the same fleet")
    parser.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    EXTRA_VARS.extend(args.extra_vars)
    if args.state == "converged" and not args.in_namespace:
        if os.geteuid() != 0:
            print("--state converged needs root (a private mount namespace with overlays)", file=sys.stderr)
            return 2
        return subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, *sys.argv, "--in-namespace"],
                              check=False).returncode
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        hosts: Dict[str, Dict[str, Any]] = {}
        logs: Dict[str, str] = {}
        converged = args.state == "converged"
        if converged:
            overlay_system(tmp)
        for i in range(args.nodes):
            name = f"sim-node-{i:02d}"
            state = tmp / f"{name}.json"
            model, layout = ("A100-SXM4-40GB", "all-1g.5gb") if i % 2 == 0 and not converged else ("H200", "all-1g.18gb")
            env = dict(os.environ, GPU_SIM_STATE=str(state))
            subprocess.run([NODE_PYTHON, str(SIM / "gpu-sim"), "init", "--model", model, "--count", "8"], env=env, check=True, capture_output=True)
            if converged:
                subprocess.run([NODE_PYTHON, str(SIM / "nvidia-mig-parted"), "apply", "-f", str(LAYOUTS), "-c", layout],
                               env=env, check=True, capture_output=True)
            smi = tmp / f"{name}-nvidia-smi"
            write_smi(smi, "sim", state)
            hosts[name] = {"mig_layout_config": layout, "mig_layout_nvidia_smi_path": str(smi)}
            logs[name] = sim_log(state)
        inventory = tmp / "inventory.json"
        inventory.write_text(json.dumps({"all": {"children": {"gpu_nodes": {"hosts": hosts, "vars": {
            "ansible_connection": "local", "ansible_python_interpreter": NODE_PYTHON, "ansible_become": False,
            "mig_layout_config_file": str(LAYOUTS),
            "mig_layout_package_file": str(DEB),
            "mig_layout_backend": "nvidia_smi", "mig_layout_k8s_delegate_to": "", "mig_layout_gpu_clients": [],
            "mig_layout_config_dir": str(tmp / "etc"), "mig_layout_textfile_dir": str(tmp / "textfile"),
        }}}}}))
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", ANSIBLE_FORKS=str(args.forks), HOME=str(tmp))
        env.pop("ANSIBLE_COLLECTIONS_PATH", None)
        if converged:  # one real run configures what the nodes share (same layout, same directories)
            proc = play(inventory, env, "--limit", "sim-node-00")
            if proc.returncode != 0:
                print(proc.stdout[-5000:], proc.stderr[-2000:], file=sys.stderr)
                return 1
            logs = {name: sim_log(tmp / f"{name}.json") for name in hosts}
            listing = sorted(str(p) for p in (tmp / "etc").rglob("*")) + sorted(str(p) for p in (tmp / "textfile").rglob("*"))
            before = {p: Path(p).read_bytes() for p in listing if Path(p).is_file()}
        if args.smi == "replay":  # record what the simulator answers in one check run, then replay it
            for name in hosts:
                write_smi(tmp / f"{name}-nvidia-smi", "record", tmp / f"{name}.json")
            proc = play(inventory, env, "--check")
            if proc.returncode != 0:
                print(proc.stdout[-5000:], proc.stderr[-2000:], file=sys.stderr)
                return 1
            for name in hosts:
                write_smi(tmp / f"{name}-nvidia-smi", "replay", tmp / f"{name}.json")
        runs: List[Dict[str, Any]] = []
        for _run in range(args.runs):
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.monotonic()
            proc = play(inventory, env, "--check")
            wall = time.monotonic() - start
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
            if os.environ.get("CHECK_FLEET_OUTPUT"):  # e.g. with ANSIBLE_CALLBACKS_ENABLED=ansible.posix.profile_tasks
                Path(os.environ["CHECK_FLEET_OUTPUT"]).write_text(proc.stdout)
            if proc.returncode != 0:
                print(proc.stdout[-5000:], proc.stderr[-2000:], file=sys.stderr)
                return 1
            recap = re.findall(r"^sim-node-\d+\s+: ok=(\d+)\s+changed=(\d+).*?skipped=(\d+)", proc.stdout, re.M)
            runs.append({"wall_s": round(wall, 2), "per_node_s": round(wall / args.nodes, 3), "cpu_s": round(cpu, 1),
                         "cpu_per_node_s": round(cpu / args.nodes, 3), "nodes_reported": len(recap),
                         "changed_per_node": sorted({int(c) for _ok, c, _sk in recap}),
                         "tasks_per_node": sorted({int(ok) + int(sk) for ok, _c, sk in recap})})
        untouched = all(sim_log(tmp / f"{name}.json") == logs[name] for name in hosts)
        if converged:  # the check runs rewrote nothing
            after = {p: Path(p).read_bytes() for p in listing if Path(p).is_file()}
            written = after != before or any(r["changed_per_node"] != [0] for r in runs)
        else:
            written = (tmp / "etc").exists() or (tmp / "textfile").exists()
    result = {"date": time.strftime("%Y-%m-%d"), "state": args.state, "smi": args.smi, "nodes": args.nodes, "forks": args.forks,
              "extra_vars": args.extra_vars,
              "load": os.getloadavg(), "runs": runs,
              "median_wall_s": statistics.median(r["wall_s"] for r in runs), "median_per_node_s": statistics.median(r["per_node_s"] for r in runs),
              "median_cpu_per_node_s": statistics.median(r["cpu_per_node_s"] for r in runs), "cpus": os.cpu_count(),
              "gpus_untouched": untouched, "files_written": written}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0 if untouched and not written else 1


if __name__ == "__main__":
    sys.exit(main())
