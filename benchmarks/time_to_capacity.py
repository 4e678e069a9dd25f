# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Time to capacity: the same load step with our rendered settings and with the seed article's, alternating, in one run.

Each round runs the closed loop of tests/autoscale/loop.py (real Triton pods, nginx with the rendered nginx_lb config,
dnsmasq as the cluster DNS, Prometheus with the rendered PodMonitor/PrometheusRule, the HPA and Deployment stand-ins)
with the profile "step": one pod, then 3 outstanding requests of 40 ms (about 80 ms queue time on one pod against the
50 ms target: exactly one more pod needed), held until the new pod serves and 8 s more, then a low load until the HPA
is back at one pod. Variants (each round runs every variant once, in turn):

- ours: the roles' defaults as rendered now;
- ours-before: the same with the defaults before issue 16's tuning (startup probe period 10 s / threshold 60,
  nginx resolver valid=5s), as ``-e`` overrides;
- article: the seed article's set-up (tests/autoscale/loop.py VARIANTS["article"]): 10 s scrape, its
  ``avg(delta(queue[30s]) / (1 + delta(requests[30s])))`` adapter query, Kubernetes' probe defaults (readiness every
  10 s, no startup probe), and the ClusterIP Service's name in the load balancer's upstream (a kube-proxy stand-in).

Per run, the first scale-up split into stages (seconds): signal (load start -> metric over target), HPA wait (-> scale-up
decided), scheduling (-> pod started), Triton start-up (-> /v2/health/ready answers, polled every 50 ms from outside),
readiness (-> the kubelet stand-in marks it ready), endpoints (-> published in DNS / the EndpointSlice), LB pick-up
(-> first request through the LB on the new pod). Our pipeline's own share = signal + readiness + LB pick-up; the HPA
wait (its sync period) and Triton's start-up are the cluster's and the model's. Seconds over target: the time from the
load start to the end of the step during which the pods' real queue time (their own Triton counters, read directly
every 0.5 s, the same for every variant) was over the target. Failed requests: through scale-up and scale-down.

    .venv/bin/python benchmarks/time_to_capacity.py --rounds 3 --out benchmarks/results/2026-12-05-time-to-capacity.json
    .venv/bin/python benchmarks/time_to_capacity.py --summary --out benchmarks/results/2026-12-05-time-to-capacity.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
if TYPE_CHECKING:
    from benchmarks.autoscale_demo import _collection_path
else:
    from autoscale_demo import _collection_path

PROFILE = "step"
# the defaults before issue 16's tuning, for "ours-before"
BEFORE = ("triton_startup_probe_period=10", "triton_startup_probe_failure_threshold=60", "nginx_lb_resolver_valid=5s")
# inventories/dgx sets nginx_lb_resolver_valid explicitly: "ours" renders it with the role's default
OURS = ("nginx_lb_resolver_valid=1s",)
VARIANTS: Dict[str, Tuple[str, Tuple[str, ...]]] = {  # name -> (loop variant, render extra vars)
    "ours": ("ours", OURS),
    "ours-before": ("ours", BEFORE),
    "article": ("article", BEFORE),
}
STAGES = (  # (key, label, from event, to event); pod events are the new pod's
    ("signal", "load start -> metric over target", "load_start", "metric_over_target"),
    ("hpa_wait", "metric over target -> scale-up decided (HPA sync, cluster's)", "metric_over_target", "scale_up_decided"),
    ("scheduling", "scale-up decided -> pod started", "scale_up_decided", "pod_started"),
    ("triton_start", "pod started -> Triton ready (model's)", "pod_started", "triton_up"),
    ("readiness", "Triton ready -> pod Ready (probes)", "triton_up", "pod_ready"),
    ("endpoints", "pod Ready -> in DNS / endpoints", "pod_ready", "pod_in_dns"),
    ("lb_pickup", "in DNS -> first request through the LB", "pod_in_dns", "first_request_new_pod"),
)
OWN = ("signal", "readiness", "lb_pickup")


def analyse(run: Mapping[str, Any]) -> Dict[str, Any]:
    """The stages, our pipeline's share, seconds over target and failures of one run."""
    events = run["events"]

    def first(name: str, after: float, detail: Optional[str] = None) -> Optional[float]:
        return next((float(e["t"]) for e in events if e["event"] == name and float(e["t"]) >= after
                     and (detail is None or e["detail"] == detail)), None)

    times: Dict[str, Optional[float]] = {"load_start": first("load_start", -1e9)}
    t_load = times["load_start"]
    assert t_load is not None
    times["metric_over_target"] = first("metric_over_target", t_load)
    times["scale_up_decided"] = first("scale_up_decided", t_load)
    t_up = times["scale_up_decided"]
    pod = next((str(e["detail"]) for e in events if t_up is not None and e["event"] == "pod_started" and e["t"] >= t_up), None)
    times["pod_started"] = first("pod_started", t_up, pod) if t_up is not None and pod else None
    for name in ("triton_up", "pod_ready", "pod_in_dns", "first_request_new_pod"):
        times[name] = first(name, t_up, pod) if t_up is not None and pod else None
    stages: Dict[str, Optional[float]] = {}
    for key, _label, a, b in STAGES:
        ta, tb = times[a], times[b]
        stages[key] = None if ta is None or tb is None else round(max(0.0, tb - ta), 3)
    own = [stages[k] for k in OWN]
    end_first = times["first_request_new_pod"]
    target = float(run["settings"]["target_queue_us"])
    t_down = next((float(e["t"]) for e in events if e["event"] == "load_step" and str(e["detail"]).startswith("down")), None)
    over = over_hpa = 0.0
    last_over: Optional[float] = None
    previous = t_load
    for sample in run["samples"]:
        t = float(sample["t"])
        if t <= t_load or (t_down is not None and t > t_down):
            continue
        dt = t - previous
        previous = t
        if (sample.get("queue_ref_us") or 0.0) > target:
            over += dt
            last_over = t
        if (sample.get("metric_us") or 0.0) > target:
            over_hpa += dt
    requests = sum(run["samples"][-1]["requests"].values()) if run["samples"] else 0
    return {
        "stages": stages,
        "own_share": None if any(v is None for v in own) else round(sum(v for v in own if v is not None), 3),
        "load_to_first_request": None if end_first is None else round(end_first - t_load, 3),
        "seconds_over_target": round(over, 2),
        "last_over_target_after_load": None if last_over is None else round(last_over - t_load, 2),
        "hpa_metric_seconds_over_target": round(over_hpa, 2),
        "failed_requests": int(run["failed_requests"]),
        "requests": int(requests),
        "peak_replicas": max((int(s["hpa_current"]) for s in run["samples"]), default=0),
        "back_to_min": bool(run["samples"]) and int(run["samples"][-1]["hpa_current"]) == int(run["settings"]["min_replicas"]),
        "new_pod": pod,
    }


def _compact(run: Mapping[str, Any]) -> Dict[str, Any]:
    def sample(s: Mapping[str, Any]) -> Dict[str, Any]:
        out = {k: s.get(k) for k in ("t", "hpa_current", "hpa_desired", "ready_pods")}
        out.update({k: None if s.get(k) is None else round(float(s[k]), 1) for k in ("metric_us", "queue_ref_us")})
        out["requests_total"] = sum((s.get("requests") or {}).values())
        return out

    return {"settings": run["settings"], "events": run["events"], "failed_requests": run["failed_requests"],
            "failed_errors": run.get("failed_errors", []), "steps": run["steps"], "samples": [sample(s) for s in run["samples"]]}


def _median_range(values: Sequence[Optional[float]]) -> Dict[str, Any]:
    have = [float(v) for v in values if v is not None]
    if not have:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(have), 2), "min": round(min(have), 2), "max": round(max(have), 2), "n": len(have)}


def summarise(rounds: Sequence[Mapping[str, Any]], variants: Sequence[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for name in variants:
        results = [r["result"] for r in rounds if r["variant"] == name]
        row: Dict[str, Any] = {key: _median_range([res["stages"][key] for res in results]) for key, _l, _a, _b in STAGES}
        for key in ("own_share", "load_to_first_request", "seconds_over_target", "last_over_target_after_load",
                    "hpa_metric_seconds_over_target"):
            row[key] = _median_range([res[key] for res in results])
        row["failed_requests"] = sum(res["failed_requests"] for res in results)
        row["requests"] = sum(res["requests"] for res in results)
        row["peak_replicas"] = sorted({res["peak_replicas"] for res in results})
        row["back_to_min"] = all(res["back_to_min"] for res in results)
        row["rounds"] = len(results)
        out[name] = row
    return out


def _cell(stat: Mapping[str, Any]) -> str:
    if stat["median"] is None:
        return "-"
    if stat["n"] == 1:
        return f"{stat['median']:.1f}"
    return f"{stat['median']:.1f} ({stat['min']:.1f}-{stat['max']:.1f})"


def table(summary: Mapping[str, Any], variants: Sequence[str]) -> str:
    head = "| stage (s), median (min-max) | " + " | ".join(variants) + " |"
    lines = [head, "|---|" + "---|" * len(variants)]
    for key, label, _a, _b in STAGES:
        mark = " **(ours)**" if key in OWN else ""
        lines.append(f"| {label}{mark} | " + " | ".join(_cell(summary[v][key]) for v in variants) + " |")
    extra = (("own_share", "**our pipeline's share** (signal + readiness + LB pick-up)"),
             ("load_to_first_request", "load start -> first request on the new pod"),
             ("seconds_over_target", "**seconds the pods' queue time was over target** (step)"),
             ("last_over_target_after_load", "last second over target, after load start"),
             ("hpa_metric_seconds_over_target", "seconds the HPA's own metric read over target"))
    for key, label in extra:
        lines.append(f"| {label} | " + " | ".join(_cell(summary[v][key]) for v in variants) + " |")
    lines.append("| failed requests / requests (all rounds, scale-up and scale-down) | "
                 + " | ".join(f"{summary[v]['failed_requests']} / {summary[v]['requests']}" for v in variants) + " |")
    lines.append("| peak replicas; back to 1 | " + " | ".join(
        f"{','.join(str(p) for p in summary[v]['peak_replicas'])}; {'yes' if summary[v]['back_to_min'] else 'NO'}" for v in variants) + " |")
    return "\n".join(lines)


def plots(data: Mapping[str, Any], dest: Path) -> List[Path]:
    """Stage bars (medians) and the queue time / replicas of each variant's median round against time."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = list(data["variants"])
    summary = data["summary"]
    dest.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(9, 2.2 + 0.7 * len(variants)))
    colours = ["#4c72b0", "#bbbbbb", "#55a868", "#999999", "#c44e52", "#dddddd", "#8172b2"]
    for row, name in enumerate(variants):
        left = 0.0
        for index, (key, label, _a, _b) in enumerate(STAGES):
            width = summary[name][key]["median"] or 0.0
            ax.barh(row, width, left=left, color=colours[index], edgecolor="black" if key in OWN else None,
                    label=label if row == 0 else None)
            left += width
    ax.set_yticks(range(len(variants)), variants)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from load start (medians per stage; outlined: our pipeline's own stages)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    ax.set_title("Time to capacity: load start -> first request served by the new pod")
    fig.tight_layout()
    path = dest / "time-to-capacity-stages.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    target = None
    for name in variants:
        runs = [r for r in data["rounds"] if r["variant"] == name and r["result"]["seconds_over_target"] is not None]
        if not runs:
            continue
        values = sorted(runs, key=lambda r: r["result"]["seconds_over_target"])
        run = values[len(values) // 2]["run"]
        target = run["settings"]["target_queue_us"]
        t_load = next(float(e["t"]) for e in run["events"] if e["event"] == "load_start")
        xs = [float(s["t"]) - t_load for s in run["samples"]]
        top.plot(xs, [(s["queue_ref_us"] or 0.0) / 1000 for s in run["samples"]], label=name, linewidth=1)
        bottom.step(xs, [s["ready_pods"] for s in run["samples"]], where="post", label=name)
    if target is not None:
        top.axhline(target / 1000, color="red", linestyle="--", linewidth=1, label="target")
    top.set_ylabel("pods' queue time (ms)")
    top.legend(fontsize=8)
    top.set_title("The median round of each set-up (by seconds over target), aligned at the load start")
    bottom.set_ylabel("pods in DNS / endpoints")
    bottom.set_xlabel("seconds after the load start")
    bottom.legend(fontsize=8)
    fig.tight_layout()
    path = dest / "time-to-capacity-timeline.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(path)
    return files


def _write(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, separators=(",", ":")) + "\n")
    tmp.replace(path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="ours,ours-before,article", help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--img", type=Path, default=ROOT / "docs" / "benchmarks" / "img")
    parser.add_argument("--summary", action="store_true", help="only print the tables (and redraw the plots) from --out")
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.rounds < 1:
        parser.error(f"--variants: unknown {unknown}" if unknown else "--rounds must be >= 1")

    if args.summary:
        saved = json.loads(args.out.read_text())
        print(table(saved["summary"], saved["variants"]))
        for path in plots(saved, args.img):
            print(path)
        return 0

    _collection_path()
    if TYPE_CHECKING:
        from tests.autoscale.loop import PROFILES, render_objects, run_closed_loop
    else:
        from autoscale.loop import PROFILES, render_objects, run_closed_loop

    start = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {line}", flush=True)

    data: Dict[str, Any] = {
        "benchmark": "time_to_capacity", "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "profile": PROFILE, "variants": variants, "render_extra": {v: list(VARIANTS[v][1]) for v in variants},
        "rounds": [], "summary": {},
    }
    with tempfile.TemporaryDirectory(prefix="time-to-capacity-") as tmp:
        work = Path(tmp)
        rendered: Dict[Tuple[str, ...], Any] = {}
        for name in variants:
            extra = VARIANTS[name][1]
            if extra not in rendered:
                log(f"rendering with {' '.join(extra) or 'the defaults'}")
                rendered[extra] = render_objects(work / f"render-{len(rendered)}", PROFILES[PROFILE], extra)
        for index in range(args.rounds):
            for name in variants:
                loop_variant, extra = VARIANTS[name]
                load_before = os.getloadavg()[0]
                log(f"round {index + 1}/{args.rounds}: {name} (load average {load_before:.1f})")
                run = run_closed_loop(work / f"r{index}-{name}", profile=PROFILE, variant=loop_variant, rendered=rendered[extra],
                                      log=lambda line: log(f"  {line}"))
                result = analyse(run)
                result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
                log(f"  stages {result['stages']}, own {result['own_share']}, over target {result['seconds_over_target']} s, "
                    f"failed {result['failed_requests']}")
                data["rounds"].append({"round": index + 1, "variant": name, "result": result, "run": _compact(run)})
                data["summary"] = summarise(data["rounds"], variants)
                _write(args.out, data)
    data["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    data["wall_s"] = round(time.monotonic() - start, 1)
    _write(args.out, data)
    print(table(data["summary"], variants))
    for path in plots(data, args.img):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
