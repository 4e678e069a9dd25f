# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``make autoscale-demo``: the autoscaling loop closed on one machine, and its load-test report.

Real Triton pods (CPU), dnsmasq as the headless Service, nginx with the rendered nginx_lb config, Prometheus with the
rendered PodMonitor settings and PrometheusRule, the adapter's rendered query; the HPA controller and the
Deployment/EndpointSlice controllers are the stand-ins of tests/autoscale (see docs/testing.md). The load generator
keeps perf_analyzer's concurrency semantics and writes its CSV columns; the report is written by the same code as
playbooks/loadtest.yml's (plugins/plugin_utils/_loadtest_report.py).

    .venv/bin/python benchmarks/autoscale_demo.py [--profile demo|short] [--out build/autoscale-demo]

writes ``<out>/<UTC timestamp>/`` (report.md, PNG plots, samples.csv, perf-<protocol>.csv, run.json) and prints its
path. Progress lines go to stdout while it runs; nothing it started is left running when it ends, however it ends.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
_TREE = ROOT / "build" / "pytest-collections"
_LINK = _TREE / "ansible_collections" / "gpu_ops" / "mig_serving"


def _collection_path() -> None:
    """The repository importable as ansible_collections.gpu_ops.mig_serving (as tests/conftest.py makes it)."""
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    if not _LINK.is_symlink():
        if _LINK.exists():
            raise SystemExit(f"{_LINK} exists and is not a symlink")
        os.symlink(ROOT, _LINK)
    if str(_TREE) not in sys.path:
        sys.path.insert(0, str(_TREE))


def _stage_lines(run: Dict[str, Any]) -> List[str]:
    return [f"  {s['stage']}: {'-' if s['seconds'] is None else format(s['seconds'], '.1f') + ' s'}" for s in run.get("stages", [])]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("demo", "short"), default="demo", help="demo: a few minutes, 1 -> 3 -> 1 pods; short: 1 -> 2 -> 1")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "autoscale-demo", help="the report goes to OUT/<UTC timestamp>/")
    parser.add_argument("--variant", choices=("ours", "article"), default="ours",
                        help="ours: the rendered settings; article: the seed article's scrape interval, query, probe defaults and "
                             "ClusterIP upstream (behind a kube-proxy stand-in)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the servers' logs and configs (under OUT/<timestamp>/work)")
    args = parser.parse_args(argv)

    _collection_path()
    from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._loadtest_report import validate_run, write_report

    if TYPE_CHECKING:
        from tests.autoscale.loop import run_closed_loop
    else:
        from autoscale.loop import run_closed_loop

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = args.out / stamp
    dest.mkdir(parents=True, exist_ok=False)
    start = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)

    progress(f"autoscale demo, profile {args.profile}, variant {args.variant}: report to {dest}")
    if args.keep_workdir:
        run = run_closed_loop(dest / "work", profile=args.profile, variant=args.variant, log=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="autoscale-demo-") as tmp:
            run = run_closed_loop(Path(tmp), profile=args.profile, variant=args.variant, log=progress)
    problems = validate_run(run)
    if problems:
        print("the run does not validate:\n" + "\n".join(problems), file=sys.stderr)
        return 1
    result = write_report(dest, run)
    summary = result["summary"]
    progress(f"done: peak {summary['peak_replicas']} replicas (max {summary['max_replicas']}), {summary['seconds_over_target']:.0f} s over the target, "
             f"{summary['failed_requests']} failed requests of {summary['requests_total']}")
    for line in ["time to capacity (first scale-up):", *_stage_lines(run)]:
        progress(line)
    print(result["report"], flush=True)
    return 0 if run["failed_requests"] == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
