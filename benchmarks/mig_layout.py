# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure the node role on the two simulated nodes (8 x A100-SXM4-40GB, 8 x H200): a converge and a no-op re-run
of playbooks/mig.yml (wall time, tasks changed, what the simulator log says was done), then reboots (boot to
layout, and our boot-time overhead over mig-parted's own apply, from systemd's timestamps).

    sudo .venv/bin/python benchmarks/mig_layout.py --rounds 3 [--reboots 3] [--out benchmarks/results/X.json]

Each round uses fresh containers (tests/testbed image, simulated nvidia-mig-manager .deb). Needs root and podman.
No cluster: the cluster steps are skipped, as for a node not in a cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IMAGE = "localhost/gpu-ops-node:test"
CONF = ROOT / "tests" / "testbed" / "containers.conf"
NODES = {"a100": ("A100-SXM4-40GB", "all-1g.5gb"), "h200": ("H200", "all-1g.18gb")}
BOOT_PROPS = ["ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "InactiveEnterTimestampMonotonic", "Result"]


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["podman", *args], env=dict(os.environ, CONTAINERS_CONF=str(CONF)), capture_output=True, text=True, timeout=300, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


def wait_running(name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = podman("exec", name, "systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not boot")


def playbook(inventory: Path, home: Path) -> Dict[str, Any]:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", HOME=str(home), CONTAINERS_CONF=str(CONF))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/mig.yml"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200, check=False)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-4000:] + proc.stderr[-2000:])
    changed = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", proc.stdout, re.M)}
    return {"wall_s": round(wall, 3), "changed": changed}


def ops(name: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for line in podman("exec", name, "gpu-sim", "log").stdout.splitlines():
        op = json.loads(line)["op"]
        counts[op] = counts.get(op, 0) + 1
    return counts


def boot_times(name: str) -> Dict[str, Any]:
    """Seconds from systemd's start in the container to: mig-parted's apply finished (ExecMain exit), our report
    finished (unit inactive); and the report's own duration (our overhead)."""
    manager = podman("exec", name, "systemctl", "show", "--property=UserspaceTimestampMonotonic").stdout
    start = int(manager.strip().split("=", 1)[1])
    unit = podman("exec", name, "systemctl", "show", "nvidia-mig-manager.service", *(f"--property={p}" for p in BOOT_PROPS)).stdout
    props = dict(line.split("=", 1) for line in unit.strip().splitlines())
    main_start, main_exit, inactive = (int(props[p]) for p in BOOT_PROPS[:3])
    return {"result": props["Result"], "apply_s": (main_exit - main_start) / 1e6, "boot_to_applied_s": (main_exit - start) / 1e6,
            "boot_to_reported_s": (inactive - start) / 1e6, "report_overhead_s": (inactive - main_exit) / 1e6}


def one_round(reboots: int, work: Path) -> Dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    names = {key: f"gpu-ops-bench-{tag}-{key}" for key in NODES}
    hosts: Dict[str, Any] = {}
    try:
        for name in names.values():
            podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", "--network=none", "--restart=always", IMAGE)
        for key, name in names.items():
            wait_running(name)
            podman("exec", name, "gpu-sim", "init", "--model", NODES[key][0], "--count", "8")
            hosts[name] = {"mig_layout_config": NODES[key][1]}
        inventory = work / f"inventory-{tag}.yml"
        inventory.write_text(json.dumps({"all": {"children": {"gpu_nodes": {"hosts": hosts, "vars": {
            "ansible_connection": "containers.podman.podman", "ansible_python_interpreter": "/usr/bin/python3", "ansible_become": False,
            "mig_layout_config_file": str(ROOT / "inventories" / "layouts" / "dgx.yaml"),
            "mig_layout_package_file": str(ROOT / "build" / "testbed" / "debs" / "nvidia-mig-manager_0.13.0-1_amd64.deb"),
            "mig_layout_backend": "nvidia_smi", "mig_layout_k8s_delegate_to": ""}}}}}))
        converge = playbook(inventory, work)
        after_converge = {name: ops(name) for name in names.values()}
        noop = playbook(inventory, work)
        after_noop = {name: ops(name) for name in names.values()}
        boots: List[Dict[str, Any]] = []
        for _reboot in range(reboots):
            for name in names.values():
                podman("restart", "-t", "10", name)
            for name in names.values():
                wait_running(name)
                deadline = time.monotonic() + 60
                state = ["systemctl", "show", "--property=ActiveState", "--value", "nvidia-mig-manager.service"]
                while podman("exec", name, *state).stdout.strip() == "activating":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{name}: boot-time apply did not finish")
                    time.sleep(0.2)
                boots.append({"node": name, **boot_times(name)})
        noop_ops = {n: {k: after_noop[n].get(k, 0) - after_converge[n].get(k, 0) for k in after_noop[n]} for n in names.values()}
        return {"converge": converge, "noop": noop, "noop_gpu_ops": noop_ops, "boots": boots}
    finally:
        for name in names.values():
            podman("rm", "-f", "-t", "0", name, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reboots", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    build = subprocess.run([str(ROOT / "tests" / "testbed" / "build-node-image.sh"), IMAGE], capture_output=True, text=True, check=False)
    if build.returncode != 0:
        print(build.stdout + build.stderr, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        rounds = [one_round(args.reboots, Path(tmp)) for _round in range(args.rounds)]
    boots = [b for r in rounds for b in r["boots"]]
    summary = {
        "converge_wall_s_median": statistics.median(r["converge"]["wall_s"] for r in rounds),
        "noop_wall_s_median": statistics.median(r["noop"]["wall_s"] for r in rounds),
        "converge_changed": [r["converge"]["changed"] for r in rounds],
        "noop_changed": [r["noop"]["changed"] for r in rounds],
        "noop_gpu_ops": [r["noop_gpu_ops"] for r in rounds],
        "boots": len(boots),
        "boots_failed": sum(1 for b in boots if b["result"] != "success"),
        "boot_to_applied_s_median": statistics.median(b["boot_to_applied_s"] for b in boots),
        "apply_s_median": statistics.median(b["apply_s"] for b in boots),
        "report_overhead_s_median": statistics.median(b["report_overhead_s"] for b in boots),
        "report_overhead_s_max": max(b["report_overhead_s"] for b in boots),
    }
    result = {"date": time.strftime("%Y-%m-%d"), "machine": {"cpus": os.cpu_count(), "load": os.getloadavg(), "python": platform.python_version()},
              "summary": summary, "rounds": rounds}
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
