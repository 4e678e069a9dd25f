# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Measure mig_info / mig_verify per node and the planner on a 64-GPU inventory.

Three steps, because the GPU machine has no network and no Ansible:

``prepare`` (on the control node) builds the exact payloads Ansible sends to a node: it runs each case
with ``ANSIBLE_KEEP_REMOTE_FILES=1`` against localhost and keeps the ``AnsiballZ_*.py`` files (module,
module_utils and arguments in one self-contained Python file), plus ``pynvml.py`` for the NVML backend.

``run`` (on the GPU node) executes every payload ``--runs`` times with the node's ``python3``, exactly as
Ansible's connection plugin would, and records wall time and the module's JSON result.

``plan`` (anywhere) times the planner on a 64-GPU inventory (8 nodes x 8 GPUs, several models and layouts).

Results are JSON; docs/benchmarks.md reports medians and says how they were made.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[1]

NODE_STATE_ARGS: Dict[str, Any] = {
    "package": "nvidia-mig-manager",
    "files": ["/etc/gpu-ops/mig", "/etc/gpu-ops/mig/config.yaml", "/etc/gpu-ops/mig/hooks.yaml", "/etc/gpu-ops/mig/report.sh",
              "/var/lib/node_exporter/textfile_collector", "/var/lib/node_exporter/textfile_collector/gpu_ops_mig_layout.prom",
              "/etc/systemd/system/nvidia-mig-manager.service.d", "/etc/systemd/system/nvidia-mig-manager.service.d/zz-gpu-ops.conf"],
    "units": ["nvidia-mig-manager.service"],
    "compute_apps": True,
}
# name -> (module, args). The config file path is fixed so the payload finds it on the GPU node.
NODE_CONFIG = "/tmp/gpu-ops-bench/mig-config.yaml"
CASES: Dict[str, Any] = {
    # the floor: what any module costs on this node (python3 start-up, AnsiballZ unpacking, AnsibleModule)
    "baseline-ansible.builtin.ping": ("ansible.builtin.ping", {}),
    "mig_info-nvml": ("gpu_ops.mig_serving.mig_info", {"backend": "nvml"}),
    "mig_info-nvidia_smi": ("gpu_ops.mig_serving.mig_info", {"backend": "nvidia_smi"}),
    "mig_verify-all-disabled-nvml": (
        "gpu_ops.mig_serving.mig_verify",
        {"backend": "nvml", "config_file": NODE_CONFIG, "config": "all-disabled"},
    ),
    "mig_verify-all-disabled-nvidia_smi": (
        "gpu_ops.mig_serving.mig_verify",
        {"backend": "nvidia_smi", "config_file": NODE_CONFIG, "config": "all-disabled"},
    ),
    "mig_verify-all-1g.18gb-nvml": (
        "gpu_ops.mig_serving.mig_verify",
        {"backend": "nvml", "config_file": NODE_CONFIG, "config": "all-1g.18gb"},
    ),
    "mig_verify-all-1g.18gb-nvidia_smi": (
        "gpu_ops.mig_serving.mig_verify",
        {"backend": "nvidia_smi", "config_file": NODE_CONFIG, "config": "all-1g.18gb"},
    ),
    # the mig_layout role's one read of a node: GPUs, OS family, package, its files and units, GPU processes
    "mig_node_state-nvml": ("gpu_ops.mig_serving.mig_node_state", {"backend": "nvml", **NODE_STATE_ARGS}),
    "mig_node_state-nvidia_smi": ("gpu_ops.mig_serving.mig_node_state", {"backend": "nvidia_smi", **NODE_STATE_ARGS}),
}


def prepare(out: Path, config: Path) -> None:
    """Build AnsiballZ payloads for every case into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    bindir = Path(sys.executable).parent
    for name, (module, args) in CASES.items():
        with tempfile.TemporaryDirectory() as home:
            env = dict(
                os.environ,
                HOME=home,
                ANSIBLE_KEEP_REMOTE_FILES="1",
                ANSIBLE_REMOTE_TMP=f"{home}/remote",
                ANSIBLE_LOCALHOST_WARNING="0",
                ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "pytest-collections"),
            )
            subprocess.run(
                [str(bindir / "ansible"), "localhost", "-m", module, *(["-a", json.dumps(args)] if args else [])],
                env=env, capture_output=True, text=True, timeout=120, check=False,
            )
            found = glob.glob(f"{home}/remote/ansible-tmp-*/AnsiballZ_*.py")
            if len(found) != 1:
                raise SystemExit(f"prepare {name}: expected one AnsiballZ payload, found {found}")
            shutil.copy(found[0], out / f"{name}.py")
    import pynvml  # the pure-Python NVML bindings the nvml backend imports on the node
    import yaml  # PyYAML, for mig_verify's config_file; its pure-Python part works on any python3

    # Fallbacks only: `run` uses the node's own PyYAML and nvidia-ml-py when it has them.
    fallback = out / "fallback"
    shutil.rmtree(fallback, ignore_errors=True)
    fallback.mkdir()
    shutil.copy(pynvml.__file__, fallback / "pynvml.py")
    shutil.copytree(Path(yaml.__file__).parent, fallback / "yaml", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(config, out / "mig-config.yaml")
    print(f"prepared {len(CASES)} payloads in {out}")


def run(src: Path, out: Path, runs: int) -> None:
    """Execute every payload ``runs`` times with python3; write results.json into ``out``."""
    os.makedirs(os.path.dirname(NODE_CONFIG), exist_ok=True)
    if os.path.exists(NODE_CONFIG):
        os.remove(NODE_CONFIG)
    shutil.copyfile(src / "mig-config.yaml", NODE_CONFIG)
    out.mkdir(parents=True, exist_ok=True)
    py = shutil.which("python3") or sys.executable
    native = {
        mod: subprocess.run([py, "-c", f"import {mod}"], capture_output=True, check=False).returncode == 0
        for mod in ("yaml", "pynvml")
    }
    env = dict(os.environ, LC_ALL="C")
    if not all(native.values()):
        env["PYTHONPATH"] = str((src / "fallback").resolve())
    results: Dict[str, Any] = {
        "python": subprocess.run([py, "-V"], capture_output=True, text=True, check=False).stdout.strip(),
        "host": platform.node(),
        "runs": runs,
        "node_has": native,
        "libyaml": subprocess.run(
            [py, "-c", "import yaml; print(yaml.__with_libyaml__)"], env=env, capture_output=True, text=True, check=False
        ).stdout.strip(),
        "cases": {},
    }
    # Round-robin: every round runs each case once, so drift on the node (other load, caches) hits all
    # cases alike and the medians can be compared side by side.
    times: Dict[str, List[float]] = {name: [] for name in CASES}
    last: Dict[str, Any] = {}
    for _round in range(runs):
        for name in CASES:
            t0 = time.perf_counter()
            proc = subprocess.run([py, str(src / f"{name}.py")], env=env, capture_output=True, text=True, timeout=120, check=False)
            times[name].append(time.perf_counter() - t0)
            try:
                last[name] = json.loads(proc.stdout)
            except ValueError:
                last[name] = {"unparsed_stdout": proc.stdout[-4000:], "stderr": proc.stderr[-4000:], "rc": proc.returncode}
    base = statistics.median(times["baseline-ansible.builtin.ping"])
    for name, ts in times.items():
        med = statistics.median(ts)
        results["cases"][name] = {"seconds": ts, "median_s": med, "over_baseline_s": med - base, "result": last[name]}
        print(f"{name:40s} median {med:.3f} s  (+{med - base:.3f} over ping)  min {min(ts):.3f}  max {max(ts):.3f}")
    results["in_process"] = in_process(src, runs)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def _import_tree() -> None:
    """Make this checkout importable as ansible_collections.gpu_ops.mig_serving (as tests/conftest.py does)."""
    tree = Path(tempfile.mkdtemp(prefix="gpu-ops-bench-"))
    link = tree / "ansible_collections" / "gpu_ops" / "mig_serving"
    link.parent.mkdir(parents=True)
    link.symlink_to(ROOT)
    sys.path.insert(0, str(tree))


def in_process(src: Path, runs: int) -> Dict[str, Any]:
    """The modules' own work without Python start-up and AnsiballZ: read the GPUs (per backend), then
    plan the layout on the GPUs' reported table and compare, as mig_verify does."""
    sys.path.append(str((src / "fallback").resolve()))  # pynvml.py and PyYAML carried, if the node lacks them
    _import_tree()
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils import _nvidia_smi, _nvml
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_compare import compare
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import parse_config
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import plan

    smi = shutil.which("nvidia-smi") or "nvidia-smi"

    def run_smi(argv: List[str]) -> Any:
        p = subprocess.run([smi, *argv], capture_output=True, text=True, env=dict(os.environ, LC_ALL="C"), check=False)
        return p.returncode, p.stdout, p.stderr

    readers: Dict[str, Callable[[], List[Any]]] = {
        "nvml": lambda: list(_nvml.collect()),
        "nvidia_smi": lambda: list(_nvidia_smi.collect(run_smi)),
    }
    cfg = parse_config(Path(NODE_CONFIG).read_text(), source=NODE_CONFIG)
    out: Dict[str, Any] = {}
    for name, read in readers.items():
        read_t: List[float] = []
        verify_t: List[float] = []
        try:
            read()
        except Exception as exc:
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"in-process {name}: {out[name]['error']}")
            continue
        mismatches: List[Any] = []
        for _round in range(runs):
            t0 = time.perf_counter()
            gpus = read()
            t1 = time.perf_counter()
            mismatches = compare(plan(cfg, "all-disabled", gpus), gpus)
            t2 = time.perf_counter()
            read_t.append(t1 - t0)
            verify_t.append(t2 - t0)
        out[name] = {
            "read_median_s": statistics.median(read_t),
            "verify_median_s": statistics.median(verify_t),
            "verify_all_disabled_matched": not mismatches,
        }
        print(f"in-process {name:11s} read median {out[name]['read_median_s']:.4f} s, read+plan+compare {out[name]['verify_median_s']:.4f} s")
    return out


def plan_bench(runs: int) -> Dict[str, Any]:
    """Median time to plan a 64-GPU inventory: 8 nodes of 8 GPUs, one mig_plan call per node."""
    sys.path.insert(0, str(ROOT / "build" / "pytest-collections"))
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import parse_config
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_plan import plan
    from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_resources import resources

    shared = ROOT / "tests" / "data" / "shared" / "conformance" / "mig-parted" / "config-default.yaml"
    text = shared.read_text()
    nodes = [
        ("0x20B010DE", "all-balanced"),
        ("0x20B010DE", "all-1g.5gb"),
        ("0x20B210DE", "all-1g.10gb"),
        ("0x233010DE", "all-balanced"),
        ("0x233010DE", "all-3g.40gb"),
        ("0x233510DE", "all-1g.18gb"),
        ("0x233510DE", "all-balanced"),
        ("0x20B710DE", "all-balanced"),
    ]
    times: List[float] = []
    total: Dict[str, int] = {}
    for _round in range(runs):
        t0 = time.perf_counter()
        cfg = parse_config(text, source="config-default.yaml")  # parsing is part of the work
        plans = [plan(cfg, name, [{"index": i, "pci_device_id": dev} for i in range(8)]) for dev, name in nodes]
        total = resources(plans)
        times.append(time.perf_counter() - t0)
    return {"runs": runs, "gpus": 64, "median_s": statistics.median(times), "max_s": max(times), "resources": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "device")
    p.add_argument("--config", type=Path, default=ROOT / "tests" / "data" / "shared" / "conformance" / "mig-parted" / "config-default.yaml")
    r = sub.add_parser("run")
    r.add_argument("--src", type=Path, default=ROOT / "build" / "device")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--runs", type=int, default=9)
    b = sub.add_parser("plan")
    b.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    if a.cmd == "prepare":
        prepare(a.out, a.config)
    elif a.cmd == "run":
        run(a.src, a.out, a.runs)
    else:
        print(json.dumps(plan_bench(a.runs), indent=2))


if __name__ == "__main__":
    main()
