# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The queue-time metric: our recording rule against the seed article's query, side by side, same traffic.

One Prometheus 2.42 (Debian) scrapes the same two real Triton servers (CPU, python backend, one instance, a
fixed service time per request, so concurrent requests queue) twice: job "ours" with the settings of our rendered
PodMonitor (1 s) evaluating our rendered PrometheusRule (the only change: a job matcher, so it reads its own
job's samples), and job "seed" every 10 s for the seed's adapter query
``avg(delta(queue[30s]) / (1 + delta(requests[30s]))) by (pod)``. Ours is read as the HPA reads it: the adapter's
metricsQuery expanded for the two pods. Both are polled every 0.25 s.

Per trial: idle (values must be 0, never NaN), overload (CLIENTS closed-loop clients per pod; reaction = load
start until the value crosses the target, per pod; error at steady overload), load stop (return = until back
under the target), low rate (a pair of simultaneous requests every 2 s per pod: 1 request/s per pod; error),
and an in-place restart of one Triton under steady load (counter reset; error after it). Errors compare a
value with the queue time the clients observed (latency minus the unqueued service time) over exactly the
requests its window covered (between the window's first and last sample, read back from Prometheus).

    .venv/bin/python benchmarks/queue_metric.py --trials 3 --out benchmarks/results/queue_metric-DATE.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

if TYPE_CHECKING:
    from tests.servers.prometheus import PrometheusProcess, pod_monitor_job, prometheus_server
    from tests.servers.triton import Completed, Load, TritonProcess, mean_wait_us, queue_waits, service_time, triton_server, write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from servers.prometheus import PrometheusProcess, pod_monitor_job, prometheus_server
    from servers.triton import Completed, Load, TritonProcess, mean_wait_us, queue_waits, service_time, triton_server, write_model_repository
    from vault_vars import VAULT_ARGS

NAMESPACE = "triton"
PODS = ("triton-7c9d8b6f5-x2k4p", "triton-7c9d8b6f5-m8q3z")
DELAY_MS = 20.0
CLIENTS = 6
TARGET_US = 20_000.0
OURS_JOB = f"{NAMESPACE}/triton"
SEED_JOB = "seed"
SEED_WINDOW = "30s"
POLL_S = 0.25
REFERENCE = "reconstructed"
REFERENCES = ("reconstructed", "latency_minus_service")


def render_rule_and_monitor(workdir: Path) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """PodMonitor, PrometheusRule and the adapter's custom rule, as playbooks/serving.yml renders them."""
    out = workdir / "render"
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", HOME=str(workdir))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", *VAULT_ARGS,
            "--tags", "triton,custom_metrics", "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}", "-e", "ansible_connection=local",
            "-e", f"ansible_python_interpreter={sys.executable}"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-4000:] + proc.stderr[-2000:])
    import yaml

    monitor = yaml.safe_load(next((out / "triton").glob("*-podmonitor-*.yaml")).read_text())
    rule = yaml.safe_load(next((out / "custom_metrics").glob("*-prometheusrule-*.yaml")).read_text())
    values = yaml.safe_load((out / "custom_metrics" / "prometheus-adapter.values.yaml").read_text())
    return monitor, rule, values["rules"]["custom"][0]


def adapter_query(custom: Dict[str, Any], pods: Tuple[str, ...]) -> str:
    series = re.search(r'__name__="([^"]+)"', custom["seriesQuery"])
    assert series is not None
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    return str(custom["metricsQuery"]).replace("<<.Series>>", series.group(1)).replace("<<.LabelMatchers>>", matchers).replace("<<.GroupBy>>", "pod")


def seed_query(pods: Tuple[str, ...]) -> str:
    sel = f'job="{SEED_JOB}",namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    return (f"avg(delta(nv_inference_queue_duration_us{{{sel}}}[{SEED_WINDOW}])"
            f" / (1 + delta(nv_inference_request_success{{{sel}}}[{SEED_WINDOW}]))) by (pod)")


class Poller:
    """Both values for both pods every POLL_S seconds, in a thread, bounded by max_s."""

    def __init__(self, prom: PrometheusProcess, queries: Dict[str, str], max_s: float) -> None:
        self.prom, self.queries, self.max_s = prom, queries, max_s
        self.samples: List[Tuple[float, str, Dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            for name, query in self.queries.items():
                with contextlib.suppress(Exception):
                    self.samples.append((time.time(), name, self.prom.query(query)))
            self._stop.wait(POLL_S)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def series(self, name: str, pod: str, since: float, until: float) -> List[Tuple[float, float]]:
        return [(t, v[pod]) for t, n, v in self.samples if n == name and since <= t <= until and pod in v]


def first_crossing(points: List[Tuple[float, float]], start: float, above: bool) -> Optional[float]:
    for t, v in points:
        if (v > TARGET_US) if above else (v < TARGET_US):
            return t - start
    return None


def observed(loads: Dict[str, List[Load]], service: Dict[str, float], pod: str, since: float, until: float, how: str = REFERENCE) -> Optional[float]:
    """The clients' queue time per request (us) over the requests of ``pod`` completed in (since, until].

    reconstructed: from the clients' timestamps alone (a request waited until the one before it completed; one
    model instance runs them in order). latency_minus_service: latency minus the median unqueued latency measured
    before the trial (sensitive to the service time drifting with the machine's load)."""
    if how == "reconstructed":
        waits = [w for load in loads[pod] for w in queue_waits(load.snapshot())]
        return mean_wait_us(waits, since, until + 0.05)
    done: List[Completed] = [c for load in loads[pod] for c in load.snapshot() if c.ok and since < c.end <= until + 0.05]
    if not done:
        return None
    return 1e6 * statistics.fmean(max(0.0, c.latency - service[pod]) for c in done)


def window_errors(prom: PrometheusProcess, loads: Dict[str, List[Load]], service: Dict[str, float], exprs: Dict[str, Tuple[str, str, str]],
                  times: List[float]) -> Dict[str, Dict[str, Dict[str, List[float]]]]:
    """errors[reference][expression][pod]: relative error at each time against the clients, over exactly the
    requests its window covered (completed between the window's first and last sample)."""
    errors: Dict[str, Dict[str, Dict[str, List[float]]]] = {ref: {name: {pod: [] for pod in PODS} for name in exprs} for ref in REFERENCES}
    for at in times:
        for name, (expr, job, window) in exprs.items():
            values = prom.query(expr, at=at)
            bounds = prom.window_samples(f'nv_inference_request_success{{job="{job}",namespace="{NAMESPACE}"}}', window, at)
            for pod in PODS:
                if pod not in values or len(bounds.get(pod, [])) < 2 or math.isnan(values[pod]):
                    continue
                for ref in REFERENCES:
                    seen = observed(loads, service, pod, bounds[pod][0][0], bounds[pod][-1][0], ref)
                    if seen is not None and seen > 0:
                        errors[ref][name][pod].append((values[pod] - seen) / seen)
    return errors


def summary(errs: Dict[str, Dict[str, Dict[str, List[float]]]], name: str) -> Dict[str, Any]:
    return {
        ref: {
            "median": {pod: statistics.median(e) if e else None for pod, e in errs[ref][name].items()},
            "mean": {pod: statistics.fmean(e) if e else None for pod, e in errs[ref][name].items()},
            "max_abs": {pod: max((abs(x) for x in e), default=None) for pod, e in errs[ref][name].items()},
            "samples": {pod: len(e) for pod, e in errs[ref][name].items()},
        }
        for ref in REFERENCES
    }


def trial(work: Path, monitor: Dict[str, Any], rule: Dict[str, Any], custom: Dict[str, Any], delay_ms: float) -> Dict[str, Any]:
    repo = write_model_repository(work / "models", delay_ms=delay_ms)
    result: Dict[str, Any] = {"loadavg_start": os.getloadavg()}
    record = rule["spec"]["groups"][0]["rules"][0]
    window_match = re.search(r"\[(\w+)\]", record["expr"])
    assert window_match is not None
    window = window_match.group(1)
    ours_expr = record["expr"].replace('{pod!=""}', f'{{pod!="",job="{OURS_JOB}"}}')
    groups = [{**rule["spec"]["groups"][0], "rules": [{"record": record["record"], "expr": ours_expr}]}]
    with contextlib.ExitStack() as stack:
        tritons: Dict[str, TritonProcess] = {pod: stack.enter_context(triton_server(repo)) for pod in PODS}
        service = {pod: service_time(t.http_url) for pod, t in tritons.items()}
        result["service_time_ms"] = {pod: 1e3 * s for pod, s in service.items()}
        ours_job = pod_monitor_job(monitor, {pod: f"{t.host}:{t.metrics_port}" for pod, t in tritons.items()}, job_name=OURS_JOB)
        seed_job = {**ours_job, "job_name": SEED_JOB, "scrape_interval": "10s", "scrape_timeout": "10s",
                    "static_configs": [{**c, "labels": {**c["labels"], "job": SEED_JOB}} for c in ours_job["static_configs"]]}
        prom = stack.enter_context(prometheus_server(work / "prometheus", [ours_job, seed_job], rule_groups=groups))
        queries = {"ours": adapter_query(custom, PODS), "seed": seed_query(PODS)}
        poller = stack.enter_context(Poller(prom, queries, max_s=600))

        # idle
        time.sleep(25)
        now = time.time()
        idle = {name: [v for pod in PODS for _t, v in poller.series(name, pod, now - 10, now)] for name in queries}
        result["idle"] = {
            name: {"samples": len(vals), "max": max(vals) if vals else None, "nan": sum(math.isnan(v) for v in vals)} for name, vals in idle.items()
        }

        # overload, then stop
        loads: Dict[str, List[Load]] = {pod: [Load(t.http_url, concurrency=CLIENTS, max_s=120)] for pod, t in tritons.items()}
        start = time.time()
        for pod_loads in loads.values():
            for load in pod_loads:
                load.start()
        time.sleep(45)
        steady_times = [time.time() - k for k in range(1, 14)]
        for pod_loads in loads.values():
            for load in pod_loads:
                load.stop()
        stop = time.time()
        exprs = {"ours": (ours_expr, OURS_JOB, window), "seed": (seed_query(PODS), SEED_JOB, SEED_WINDOW)}
        errs = window_errors(prom, loads, service, exprs, steady_times)
        result["overload"] = {
            name: {
                "reaction_s": {pod: first_crossing(poller.series(name, pod, start, stop), start, True) for pod in PODS},
                "error": summary(errs, name),
            }
            for name in queries
        }
        result["overload_observed_us"] = {ref: {pod: observed(loads, service, pod, stop - 14, stop, ref) for pod in PODS} for ref in REFERENCES}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = time.time()
            if all(first_crossing(poller.series(n, p, stop, now), stop, False) is not None for n in queries for p in PODS):
                break
            time.sleep(0.5)
        now = time.time()
        for name in queries:
            result["overload"][name]["return_s"] = {pod: first_crossing(poller.series(name, pod, stop, now), stop, False) for pod in PODS}

        # low rate: a pair of simultaneous requests every 2 s per pod (1 request/s per pod), for 60 s
        time.sleep(max(0.0, 35 - (time.time() - stop)))  # both windows free of the overload
        low = {pod: [Load(t.http_url, concurrency=2, period_s=2.0, max_s=120)] for pod, t in tritons.items()}
        low_start = time.time()
        for pod_loads in low.values():
            for load in pod_loads:
                load.start()
        time.sleep(60)
        low_times = [time.time() - k for k in range(1, 25)]
        for pod_loads in low.values():
            for load in pod_loads:
                load.stop()
        errs = window_errors(prom, low, service, exprs, low_times)
        result["low_rate"] = {
            "requests_per_s_per_pod": {pod: len(low[pod][0].snapshot()) / (time.time() - low_start) for pod in PODS},
            **{name: {"error": summary(errs, name)} for name in queries},
        }

        # in-place restart of one Triton under steady load (2 clients per pod): its counters restart at 0
        steady = {pod: [Load(t.http_url, concurrency=2, max_s=120)] for pod, t in tritons.items()}
        for pod_loads in steady.values():
            for load in pod_loads:
                load.start()
        time.sleep(35)
        victim = PODS[0]
        old = tritons[victim]
        old.stop()
        restarted_at = time.time()
        stack.enter_context(triton_server(repo, host=old.host, http_port=old.http_port, grpc_port=old.grpc_port, metrics_port=old.metrics_port))
        time.sleep(40)
        after_times = [restarted_at + k for k in range(2, 38)]
        for pod_loads in steady.values():
            for load in pod_loads:
                load.stop()
        errs = window_errors(prom, steady, service, exprs, after_times)
        result["restart"] = {
            "pod": victim,
            **{name: {"error": summary(errs, name),
                      "values_after": [v for _t, v in poller.series(name, victim, restarted_at, restarted_at + 40)][::4],
                      "negative_values": sum(v < 0 for _t, v in poller.series(name, victim, restarted_at, restarted_at + 40))} for name in queries},
        }
        result["loadavg_end"] = os.getloadavg()
    return result


def _pct(values: List[float]) -> str:
    return f"{100 * statistics.median(values):+.1f} %" if values else "n/a"


def summarize(report: Dict[str, Any]) -> str:
    """A Markdown table of the medians over trials and pods (worst case where it says so)."""
    trials = report["trials"]
    rows = []
    for name in ("ours", "seed"):
        react = [v for t in trials for v in t["overload"][name]["reaction_s"].values() if v is not None]
        ret = [v for t in trials for v in t["overload"][name]["return_s"].values() if v is not None]
        cells = [name, f"{statistics.median(react):.1f} s / {max(react):.1f} s" if react else "n/a",
                 f"{statistics.median(ret):.1f} s / {max(ret):.1f} s" if ret else "n/a"]
        for phase in ("overload", "low_rate"):
            for ref in REFERENCES:
                cells.append(_pct([v for t in trials for v in t[phase][name]["error"][ref]["median"].values() if v is not None]))
        for stat in ("median", "max_abs"):
            victim = [t["restart"][name]["error"]["reconstructed"][stat][t["restart"]["pod"]] for t in trials]
            other = [v for t in trials for pod, v in t["restart"][name]["error"]["reconstructed"][stat].items() if pod != t["restart"]["pod"]]
            cells.append(f"{_pct([v for v in victim if v is not None])} (other pod {_pct([v for v in other if v is not None])})")
        idle_max = max((t["idle"][name]["max"] or 0.0) for t in trials)
        idle_nan = sum(t["idle"][name]["nan"] for t in trials)
        cells.append(f"max {idle_max:g}, NaN {idle_nan}")
        rows.append("| " + " | ".join(cells) + " |")
    head = ("| query | reaction median / worst | return median / worst | overload error (reconstructed) | overload error (latency - service) "
            "| low-rate error (reconstructed) | low-rate error (latency - service) | after restart: median error, restarted pod (reconstructed) "
            "| after restart: largest error, restarted pod (reconstructed) | idle |")
    loads = [t["loadavg_start"][0] for t in trials] + [t["loadavg_end"][0] for t in trials]
    return "\n".join([head, "|" + "---|" * 10, *rows, "", f"trials: {len(trials)}, load average (1 min) {min(loads):.1f} to {max(loads):.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--delay-ms", type=float, default=DELAY_MS, help="the model's service time per request")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", action="store_true", help="print the Markdown summary of an existing --out file and exit")
    args = parser.parse_args()
    if args.summary:
        print(summarize(json.loads(args.out.read_text())))
        return
    with tempfile.TemporaryDirectory(prefix="queue-metric-") as tmp:
        monitor, rule, custom = render_rule_and_monitor(Path(tmp))
        trials = []
        for index in range(args.trials):
            trials.append(trial(Path(tmp) / f"trial{index}", monitor, rule, custom, args.delay_ms))
            print(json.dumps(trials[-1]), flush=True)
    report = {
        "what": "queue time per request per pod: our recording rule (rendered) vs the seed article's query, same Prometheus, same traffic",
        "setup": {"tritons": len(PODS), "service_time_ms": args.delay_ms, "clients_per_pod_overload": CLIENTS, "target_us": TARGET_US,
                  "ours": {"scrape": monitor["spec"]["podMetricsEndpoints"][0]["interval"], "expr": rule["spec"]["groups"][0]["rules"][0]["expr"]},
                  "seed": {"scrape": "10s", "query": seed_query(PODS)}, "poll_s": POLL_S,
                  "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "trials": trials,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
