# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`playbooks/render.yml -i inventories/dgx` wall time: this checkout against another revision, side by side.

The other revision is checked out with `git worktree` into a temporary directory (and removed after). Runs
alternate (base, this, base, this, ...) so that a change in the machine's load falls on both; each run renders
into a fresh directory; the two renders' files must be identical (the comparison is about time only). Reports
the median, min and max of each and their ratio.

    .venv/bin/python benchmarks/render.py --base 0d5ee28 --runs 5 [--out benchmarks/results/X.json]
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
VAULT = ["-e", "@tests/data/vault_test_vars.yml"]


def render(checkout: Path, out: Path, home: Path) -> float:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", HOME=str(home), ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_CONFIG=str(checkout / "ansible.cfg"))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    start = time.monotonic()
    proc = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/render.yml", "-i", "inventories/dgx", *VAULT,
                           "-e", f"gpu_ops_render_dir={out}"], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"render in {checkout} failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return took


def same_tree(a: Path, b: Path) -> List[str]:
    """Paths whose presence or content differ between two render directories."""
    cmp = filecmp.dircmp(a, b)
    out = [str(Path(a.name) / p) for p in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += same_tree(a / sub, b / sub)
    return out


def summary(times: List[float]) -> Dict[str, Any]:
    return {"runs": len(times), "median_s": round(statistics.median(times), 2), "min_s": round(min(times), 2),
            "max_s": round(max(times), 2), "all_s": [round(t, 2) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp_name:
        tmp = Path(tmp_name)
        base = tmp / "base"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(base), args.base], cwd=ROOT, check=True)
        try:
            times: Dict[str, List[float]] = {"base": [], "this": []}
            for run in range(args.runs):
                for name, checkout in (("base", base), ("this", ROOT)):
                    out = tmp / f"{name}-{run}"
                    times[name].append(render(checkout, out, tmp))
                    print(f"run {run + 1}/{args.runs} {name}: {times[name][-1]:.1f} s", flush=True)
            differ = same_tree(tmp / "base-0", tmp / "this-0")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    result = {"what": "playbooks/render.yml -i inventories/dgx, wall seconds", "base": args.base,
              "this": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                     check=False).stdout.strip(),
              "cpus": os.cpu_count(), "load_before": os.getloadavg(),
              "base_s": summary(times["base"]), "this_s": summary(times["this"]),
              "ratio_median": round(statistics.median(times["base"]) / statistics.median(times["this"]), 2),
              "files_differ": differ}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
