# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE: the load-test report, on the controller (the action plugin loadtest_report and the one-machine demo call it).

A run (one JSON-serialisable dict: settings, samples taken every few seconds, the load steps with one perf_analyzer CSV
row each, events, optional time-to-capacity stages, failed requests) becomes a report directory: ``report.md``, three
PNG plots, ``samples.csv``, ``perf-<protocol>.csv`` in perf_analyzer's own CSV format, and ``run.json``.

perf_analyzer's CSV (``perf_analyzer -f FILE``), as triton-inference-server/client
``src/c++/perf_analyzer/report_writer.cc`` (``ReportWriter::GenerateReport``) writes it against Triton (server
statistics on): ``Concurrency`` (``Request Rate`` in request-rate mode), ``Inferences/Second``, then the client and
server latency components and the client-side percentiles 50, 90, 95 and 99 (``InferenceProfiler::Summarize`` always
computes those four; ``--percentile=N`` adds a ``pN latency`` column). Latencies are whole microseconds (nanoseconds
divided by 1000), throughput is inferences per second. ``--verbose-csv`` appends ``Avg latency`` (without
``--percentile``), ``request/response`` and ``response wait``, and with ``--collect-metrics`` four GPU columns whose
cells are ``uuid:value;...`` lists; a model with the response cache adds ``Server Cache Hit``/``Server Cache Miss``.

Serving pools (one Triton Deployment and HPA per MIG profile): a run may describe them (``pools``: name, profile,
weight, hpa, min_replicas, max_replicas, target_queue_us) and each sample may hold each pool's HPA reading
(``samples[i].pools``: {pool: hpa_current, hpa_desired, metric_us, ready_pods, pods}); the top-level ``hpa_*`` fields
of a sample are then the totals over the pools (replicas summed, the metric averaged over the pools' replicas), so
runs without pools (earlier releases, the one-machine demo with one pool) read as before. The report adds a table per
pool (replicas, seconds over its target, requests against its load-balancer weight, time to capacity) and draws each
pool's replicas and its pods in its colour.

Everything is checked first (:func:`validate_run`, every problem at once, each naming its field); :func:`write_report`
writes nothing for an invalid run or without matplotlib.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

# The -f header against Triton without the response cache and without --verbose-csv, in perf_analyzer's order.
PERF_COLUMNS: Tuple[str, ...] = (
    "Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue", "Server Compute Input",
    "Server Compute Infer", "Server Compute Output", "Client Recv", "p50 latency", "p90 latency", "p95 latency", "p99 latency",
)
# Numeric columns perf_analyzer writes in other configurations, kept when present.
OPTIONAL_PERF_COLUMNS: Tuple[str, ...] = ("Server Cache Hit", "Server Cache Miss", "Avg latency", "request/response", "response wait")

MATPLOTLIB_PIN = "matplotlib==3.11.2"
SOURCES = ("cluster", "demo")
PROTOCOLS = ("http", "grpc")
REQUIRED_SETTINGS = ("target_queue_us", "min_replicas", "max_replicas", "model", "metric")
# Pixel sizes of the plots (inches x dpi; savefig without bbox_inches="tight" keeps them exact).
DPI = 100
PLOT_SIZES: Dict[str, Tuple[int, int]] = {"replicas.png": (1200, 800), "latency.png": (1200, 500), "requests.png": (1200, 500)}

Number = Union[int, float]


class ReportError(Exception):
    """A report refused (invalid run, missing matplotlib, unusable destination) or a write that failed, with why."""


class PerfCsvError(ValueError):
    """perf_analyzer CSV text that cannot be read, naming the column or row."""


# ---------------------------------------------------------------------------------------------------------------------
# perf_analyzer CSV

def parse_perf_csv(text: str) -> List[Dict[str, float]]:
    """Rows of a perf_analyzer ``-f`` CSV, each with every PERF_COLUMNS value and the OPTIONAL_PERF_COLUMNS present.

    Unknown columns (GPU metrics, an extra ``pN latency``) are ignored; a missing PERF_COLUMNS column fails naming it.
    """
    records = [rec for rec in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in rec)]
    if not records:
        raise PerfCsvError("perf_analyzer CSV is empty: expected the header line " + ",".join(PERF_COLUMNS))
    header = [cell.strip() for cell in records[0]]
    missing = [col for col in PERF_COLUMNS if col not in header]
    if missing:
        hint = (" (this CSV is from request-rate mode: the load test runs perf_analyzer with --concurrency-range)"
                if "Request Rate" in header and "Concurrency" in missing else "")
        raise PerfCsvError("perf_analyzer CSV lacks column(s) {}{}; its header is: {}".format(
            ", ".join(repr(c) for c in missing), hint, ",".join(header)))
    wanted = [(index, name) for index, name in enumerate(header) if name in PERF_COLUMNS or name in OPTIONAL_PERF_COLUMNS]
    rows: List[Dict[str, float]] = []
    for line, rec in enumerate(records[1:], 2):
        row: Dict[str, float] = {}
        for index, name in wanted:
            cell = rec[index].strip() if index < len(rec) else ""
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                raise PerfCsvError(f"perf_analyzer CSV row {line}, column {name!r}: {cell!r} is not a number")
            row[name] = value
        rows.append(row)
    return rows


def _csv_number(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else repr(number)


def format_perf_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """perf_analyzer's ``-f`` CSV (PERF_COLUMNS header, one line per row, in the order given)."""
    out = [",".join(PERF_COLUMNS)]
    for number, row in enumerate(rows, 1):
        cells = []
        for col in PERF_COLUMNS:
            if not _is_number(row.get(col)):
                raise PerfCsvError(f"perf row {number}: column {col!r} must be a number, got {row.get(col)!r}")
            cells.append(_csv_number(row[col]))
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# validation

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_int(out: List[str], path: str, value: Any, minimum: int = 0, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        out.append(f"{path} must be an integer >= {minimum}{' or null' if optional else ''}, got {value!r}")


def _check_number(out: List[str], path: str, value: Any, optional: bool = False) -> bool:
    if optional and value is None:
        return True
    if not _is_number(value):
        out.append(f"{path} must be a number{' or null' if optional else ''}, got {value!r}")
        return False
    return True


def _check_str(out: List[str], path: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        out.append(f"{path} must be a non-empty string, got {value!r}")


def _list_of_mappings(out: List[str], path: str, value: Any) -> List[Tuple[str, Mapping[str, Any]]]:
    if not isinstance(value, list):
        out.append(f"{path} must be a list, got {type(value).__name__}")
        return []
    items = []
    for index, item in enumerate(value):
        if isinstance(item, Mapping):
            items.append((f"{path}[{index}]", item))
        else:
            out.append(f"{path}[{index}] must be a mapping, got {type(item).__name__}")
    return items


def _validate_settings(out: List[str], settings: Any) -> None:
    if not isinstance(settings, Mapping):
        out.append(f"run.settings must be a mapping of names to scalars, got {type(settings).__name__}")
        return
    for key, value in settings.items():
        if not isinstance(key, str) or (value is not None and not isinstance(value, (str, int, float, bool))):
            out.append(f"run.settings.{key} must be a scalar (string, number, boolean or null), got {type(value).__name__}")
    for key in REQUIRED_SETTINGS:
        if key not in settings:
            out.append(f"run.settings.{key} is required")
    if "target_queue_us" in settings and (not _is_number(settings["target_queue_us"]) or settings["target_queue_us"] <= 0):
        out.append(f"run.settings.target_queue_us must be a number > 0 (the HPA target, microseconds), got {settings['target_queue_us']!r}")
    if "min_replicas" in settings:
        _check_int(out, "run.settings.min_replicas", settings["min_replicas"], 0)
    if "max_replicas" in settings:
        _check_int(out, "run.settings.max_replicas", settings["max_replicas"], 1)
    low: Any = settings.get("min_replicas")
    high: Any = settings.get("max_replicas")
    if _is_int(low) and _is_int(high) and low > high:
        out.append(f"run.settings.max_replicas ({high}) must be >= run.settings.min_replicas ({low})")
    for key in ("model", "metric"):
        if key in settings:
            _check_str(out, f"run.settings.{key}", settings[key])


def _validate_samples(out: List[str], samples: Any) -> None:
    items = _list_of_mappings(out, "run.samples", samples)
    if isinstance(samples, list) and not samples:
        out.append("run.samples must hold at least one sample")
    previous: Optional[float] = None
    for path, sample in items:
        t: Any = sample.get("t")
        if _check_number(out, f"{path}.t", t):
            if previous is not None and t < previous:
                out.append(f"{path}.t ({t}) must not be before the previous sample's ({previous}): samples are in time order")
            previous = t
        for key in ("hpa_current", "hpa_desired", "ready_pods"):
            _check_int(out, f"{path}.{key}", sample.get(key), 0, optional=True)
        _check_number(out, f"{path}.metric_us", sample.get("metric_us"), optional=True)
        for key, is_ok, what in (("queue_us", _is_number, "a number"), ("requests", lambda v: _is_int(v) and v >= 0, "an integer >= 0")):
            per_pod = sample.get(key)
            if not isinstance(per_pod, Mapping):
                out.append(f"{path}.{key} must be a mapping of pod names to values, got {type(per_pod).__name__}")
                continue
            for pod, value in per_pod.items():
                if not isinstance(pod, str) or not pod:
                    out.append(f"{path}.{key} has a key that is not a pod name: {pod!r}")
                elif not is_ok(value):
                    out.append(f"{path}.{key}.{pod} must be {what}, got {value!r}")
        _validate_sample_pools(out, path, sample.get("pools"))


def _validate_sample_pools(out: List[str], path: str, pools: Any) -> None:
    if pools is None:
        return
    if not isinstance(pools, Mapping):
        out.append(f"{path}.pools must be a mapping of pool names to the pool's HPA reading, got {type(pools).__name__}")
        return
    for name, entry in pools.items():
        where = f"{path}.pools.{name}"
        if not isinstance(name, str) or not name:
            out.append(f"{path}.pools has a key that is not a pool name: {name!r}")
            continue
        if not isinstance(entry, Mapping):
            out.append(f"{where} must be a mapping (hpa_current, hpa_desired, metric_us, ready_pods, pods), got {type(entry).__name__}")
            continue
        for key in ("hpa_current", "hpa_desired", "ready_pods"):
            _check_int(out, f"{where}.{key}", entry.get(key), 0, optional=True)
        _check_number(out, f"{where}.metric_us", entry.get("metric_us"), optional=True)
        pods = entry.get("pods", [])
        if not isinstance(pods, list) or not all(isinstance(pod, str) and pod for pod in pods):
            out.append(f"{where}.pods must be a list of pod names, got {pods!r}")


def _validate_pools(out: List[str], pools: Any) -> None:
    if pools is None:
        return
    seen: List[str] = []
    for path, pool in _list_of_mappings(out, "run.pools", pools):
        _check_str(out, f"{path}.name", pool.get("name"))
        if pool.get("name") in seen:
            out.append(f"{path}.name {pool.get('name')!r} is another pool's too: each pool once")
        seen.append(str(pool.get("name")))
        if pool.get("profile") is not None:
            _check_str(out, f"{path}.profile", pool.get("profile"))
        _check_int(out, f"{path}.weight", pool.get("weight"), 1, optional=True)
        _check_int(out, f"{path}.min_replicas", pool.get("min_replicas"), 0, optional=True)
        _check_int(out, f"{path}.max_replicas", pool.get("max_replicas"), 1, optional=True)
        target = pool.get("target_queue_us")
        if target is not None and (not _is_number(target) or target <= 0):
            out.append(f"{path}.target_queue_us must be a number > 0 or null, got {target!r}")


def _validate_steps(out: List[str], steps: Any) -> None:
    for path, step in _list_of_mappings(out, "run.steps", steps):
        if step.get("protocol") not in PROTOCOLS:
            out.append(f"{path}.protocol must be one of {', '.join(PROTOCOLS)}, got {step.get('protocol')!r}")
        _check_int(out, f"{path}.concurrency", step.get("concurrency"), 1)
        start_ok = _check_number(out, f"{path}.start", step.get("start"))
        if _check_number(out, f"{path}.end", step.get("end")) and start_ok and step["end"] < step["start"]:
            out.append(f"{path}.end ({step['end']}) must not be before {path}.start ({step['start']})")
        perf = step.get("perf")
        if not isinstance(perf, Mapping):
            out.append(f"{path}.perf must be a mapping of perf_analyzer CSV columns to numbers, got {type(perf).__name__}")
            continue
        for col in PERF_COLUMNS:
            if col not in perf:
                out.append(f"{path}.perf[{col!r}] is required (a perf_analyzer CSV column)")
            elif not _is_number(perf[col]):
                out.append(f"{path}.perf[{col!r}] must be a number, got {perf[col]!r}")


def validate_run(run: Any) -> List[str]:
    """Every problem of a run (SCHEMA: title, source, started, settings, optional pools, samples, steps, events, stages,
    failed_requests), each naming its field, e.g. ``run.samples[3].t must be a number``; [] when it is valid."""
    if not isinstance(run, Mapping):
        return [f"run must be a mapping, got {type(run).__name__}"]
    out: List[str] = []
    try:
        json.dumps(run, allow_nan=False)
    except (TypeError, ValueError) as exc:
        out.append(f"run must be JSON-serialisable (it is written as run.json): {exc}")
    _check_str(out, "run.title", run.get("title"))
    if run.get("source") not in SOURCES:
        out.append(f"run.source must be one of {', '.join(SOURCES)}, got {run.get('source')!r}")
    started = run.get("started")
    try:
        if not isinstance(started, str):
            raise TypeError
        datetime.fromisoformat(started)
    except (TypeError, ValueError):
        out.append(f"run.started must be an ISO 8601 time (e.g. 2026-01-31T12:00:00Z), got {started!r}")
    _validate_settings(out, run.get("settings"))
    _validate_pools(out, run.get("pools"))
    _validate_samples(out, run.get("samples"))
    _validate_steps(out, run.get("steps"))
    for path, event in _list_of_mappings(out, "run.events", run.get("events")):
        _check_number(out, f"{path}.t", event.get("t"))
        _check_str(out, f"{path}.event", event.get("event"))
        if not isinstance(event.get("detail"), str):
            out.append(f"{path}.detail must be a string, got {event.get('detail')!r}")
    if run.get("stages") is not None:
        for path, stage in _list_of_mappings(out, "run.stages", run.get("stages")):
            _check_str(out, f"{path}.stage", stage.get("stage"))
            if _check_number(out, f"{path}.seconds", stage.get("seconds"), optional=True) and _is_number(stage.get("seconds")) \
                    and stage["seconds"] < 0:
                out.append(f"{path}.seconds must be >= 0 or null, got {stage['seconds']!r}")
    _check_int(out, "run.failed_requests", run.get("failed_requests"), 0)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# summary

def hpa_metric(sample: Mapping[str, Any]) -> Optional[float]:
    """The HPA's metric at a sample: its own current value, else the mean of the per-pod values (what an AverageValue
    Pods metric averages), else None."""
    if sample.get("metric_us") is not None:
        return float(sample["metric_us"])
    values = [float(v) for v in (sample.get("queue_us") or {}).values()]
    return sum(values) / len(values) if values else None


def request_deltas(samples: Sequence[Mapping[str, Any]]) -> Tuple[List[str], List[Dict[str, int]]]:
    """Pods seen, in first-seen order, and per sample the requests each pod got since the sample before.

    Counter resets are handled as Prometheus' ``increase()`` does (prometheus/prometheus ``promql/functions.go``,
    ``extrapolatedRate``): a value lower than the one before means the counter restarted from 0, so the new value is
    the increase. A pod in the first sample counts from that sample on (what it had served before the run is not
    the run's); a pod first seen later started during the run and counts from 0.
    """
    pods: List[str] = []
    last: Dict[str, int] = {}
    deltas: List[Dict[str, int]] = []
    for index, sample in enumerate(samples):
        step: Dict[str, int] = {}
        for pod, value in (sample.get("requests") or {}).items():
            if pod not in pods:
                pods.append(pod)
            if pod in last:
                step[pod] = value - last[pod] if value >= last[pod] else value
            elif index > 0:
                step[pod] = value
            last[pod] = value
        deltas.append(step)
    return pods, deltas


def _pods(samples: Sequence[Mapping[str, Any]], key: str) -> List[str]:
    seen: List[str] = []
    for sample in samples:
        seen += [pod for pod in (sample.get(key) or {}) if pod not in seen]
    return seen


def pool_names(run: Mapping[str, Any]) -> List[str]:
    """The run's pools: those it describes, in order, then any other a sample holds, in first-seen order."""
    names = [str(p["name"]) for p in run.get("pools") or []]
    for sample in run["samples"]:
        names += [name for name in sample.get("pools") or {} if name not in names]
    return names


def _pool_of_name(pod: str, pools: Sequence[str]) -> Optional[str]:
    # a Deployment's pods are named <deployment>-<pod-template-hash>-<suffix>
    return next((name for name in pools if re.fullmatch(re.escape(name) + r"-[a-z0-9]+-[a-z0-9]+", pod)), None)


def pod_pools(run: Mapping[str, Any]) -> Dict[str, str]:
    """{pod: pool} for the pods of the samples: the pods a sample lists under a pool, else by the pod's name (a pod
    that served or queued but was never seen ready); with one pool, every pod is its. Pods of no pool are left out."""
    names = pool_names(run)
    out: Dict[str, str] = {}
    for sample in run["samples"]:
        for name, entry in (sample.get("pools") or {}).items():
            for pod in entry.get("pods") or []:
                out.setdefault(pod, name)
    for pod in _pods(run["samples"], "queue_us") + _pods(run["samples"], "requests"):
        if pod not in out:
            pool = _pool_of_name(pod, names) or (names[0] if len(names) == 1 else None)
            if pool:
                out[pod] = pool
    return out


def _pool_metric(sample: Mapping[str, Any], name: str, members: Sequence[str]) -> Optional[float]:
    """A pool's HPA metric at a sample: its HPA's value, else the mean of its pods' values."""
    entry = (sample.get("pools") or {}).get(name) or {}
    if entry.get("metric_us") is not None:
        return float(entry["metric_us"])
    values = [float(v) for pod, v in (sample.get("queue_us") or {}).items() if pod in members]
    return sum(values) / len(values) if values else None


def _pool_capacity(samples: Sequence[Mapping[str, Any]], name: str, target: float, members: Sequence[str],
                   deltas: Sequence[Mapping[str, int]]) -> Dict[str, Optional[float]]:
    """A pool's first scale-up, at the samples' resolution: its metric first over its target, then its HPA's desired
    above its current, then more of its pods ready than then, then the first request to one of its new pods; the
    times (s since the start) and the time to capacity (over target -> first request on the new pod)."""
    times: Dict[str, Optional[float]] = {"over_target_t": None, "decided_t": None, "ready_t": None, "first_request_t": None}
    base_ready: Optional[int] = None
    before: List[str] = []
    for index, sample in enumerate(samples):
        entry = (sample.get("pools") or {}).get(name) or {}
        t = float(sample["t"])
        if times["over_target_t"] is None:
            value = _pool_metric(sample, name, members)
            if value is not None and value > target:
                times["over_target_t"], base_ready, before = t, entry.get("ready_pods"), list(entry.get("pods") or [])
            continue
        if times["decided_t"] is None:
            desired, current = entry.get("hpa_desired"), entry.get("hpa_current")
            if desired is not None and current is not None and desired > current:
                times["decided_t"] = t
            else:
                continue
        if times["ready_t"] is None:
            ready = entry.get("ready_pods")
            if ready is None or base_ready is None or ready <= base_ready:
                continue
            times["ready_t"] = t
        new = [pod for pod in members if pod not in before]
        if any(deltas[index].get(pod, 0) > 0 for pod in new):
            times["first_request_t"] = t
            break
    start, end = times["over_target_t"], times["first_request_t"]
    return {**times, "time_to_capacity_s": end - start if start is not None and end is not None else None}


def summarize_pools(run: Mapping[str, Any], pods: Sequence[str], deltas: Sequence[Mapping[str, int]]) -> List[Dict[str, Any]]:
    """Per pool: profile, weight, min/max replicas, peak replicas, seconds its metric stayed over its target, requests
    (total, share) against what its load-balancer weight gives it, and its time to capacity.

    What the weights give: in each sampling interval the requests served are spread over the pods ready at its end in
    proportion to their pool's weight (nginx's weighted round robin: a server's share is its weight over the sum of
    the weights, ngx_http_upstream_round_robin.c); summed per pool, against what the pool's pods served. Known only
    when every pool's weight is."""
    samples: List[Mapping[str, Any]] = list(run["samples"])
    names = pool_names(run)
    info = {str(p["name"]): p for p in run.get("pools") or []}
    members = pod_pools(run)
    settings = run["settings"]
    weights = {name: (info.get(name) or {}).get("weight") for name in names}
    weighted = bool(names) and all(w is not None for w in weights.values())
    expected: Dict[str, float] = {name: 0.0 for name in names}
    for index in range(1, len(samples)):
        served = sum(deltas[index].values())
        ready = [(pod, name) for name, entry in (samples[index].get("pools") or {}).items() for pod in entry.get("pods") or []]
        total_weight = sum(float(weights.get(name) or 0) for _pod, name in ready)
        if weighted and served > 0 and total_weight > 0:
            for _pod, name in ready:
                expected[name] += served * float(weights[name] or 0) / total_weight
    totals = {pod: sum(d.get(pod, 0) for d in deltas) for pod in pods}
    total = sum(totals.values())
    expected_total = sum(expected.values())
    out: List[Dict[str, Any]] = []
    for name in names:
        pool = info.get(name) or {}
        target = float(pool.get("target_queue_us") or settings["target_queue_us"])
        mine = [pod for pod, owner in members.items() if owner == name]
        current = [(float(s["t"]), int(e["hpa_current"])) for s in samples
                   for e in [(s.get("pools") or {}).get(name) or {}] if e.get("hpa_current") is not None]
        peak = max((c for _t, c in current), default=None)
        max_replicas = pool.get("max_replicas") if pool.get("max_replicas") is not None else (settings["max_replicas"] if len(names) == 1 else None)
        over = 0.0
        for index, sample in enumerate(samples):
            value = _pool_metric(sample, name, mine)
            if value is not None and value > target and index + 1 < len(samples):
                over += float(samples[index + 1]["t"]) - float(sample["t"])
        requests = sum(totals.get(pod, 0) for pod in mine)
        share = requests / total if total else 0.0
        weight_share = expected[name] / expected_total if weighted and expected_total else None
        out.append({
            "name": name, "profile": pool.get("profile"), "weight": weights.get(name),
            "min_replicas": pool.get("min_replicas"), "max_replicas": max_replicas,
            "target_queue_us": target, "peak_replicas": peak, "peak_replicas_t": next((t for t, c in current if c == peak), None),
            "max_replicas_reached_t": next((t for t, c in current if max_replicas is not None and c >= max_replicas), None),
            "seconds_over_target": over, "pods": sorted(mine), "requests": requests, "request_share": share,
            "weight_share": weight_share,
            # 1.0: the pool's pods got what their weight gives them
            "share_vs_weight": share / weight_share if weight_share else None,
            **_pool_capacity(samples, name, target, mine, deltas),
        })
    return out


def summarize(run: Mapping[str, Any]) -> Dict[str, Any]:
    """The numbers of a valid run (validate_run first): replicas, time over target, requests per pod, steps, stages."""
    samples: List[Mapping[str, Any]] = list(run["samples"])
    settings = run["settings"]
    target = float(settings["target_queue_us"])
    max_replicas = int(settings["max_replicas"])
    times = [float(s["t"]) for s in samples]

    current = [(float(s["t"]), int(s["hpa_current"])) for s in samples if s.get("hpa_current") is not None]
    peak = max((c for _t, c in current), default=None)
    peak_t = next((t for t, c in current if c == peak), None)
    reached_t = next((t for t, c in current if c >= max_replicas), None)
    ready = [int(s["ready_pods"]) for s in samples if s.get("ready_pods") is not None]

    # Integrate over the sampling intervals: an interval counts whole when the sample that starts it is over target.
    over = 0.0
    first_over: Optional[float] = None
    for index, sample in enumerate(samples):
        value = hpa_metric(sample)
        if value is not None and value > target:
            if first_over is None:
                first_over = times[index]
            if index + 1 < len(samples):
                over += times[index + 1] - times[index]
    metric_values = [v for v in (hpa_metric(s) for s in samples) if v is not None]

    pods, deltas = request_deltas(samples)
    totals = {pod: sum(d.get(pod, 0) for d in deltas) for pod in pods}
    total = sum(totals.values())

    steps = [{
        "protocol": step["protocol"], "concurrency": int(step["concurrency"]),
        "start": float(step["start"]), "end": float(step["end"]),
        "inferences_per_s": float(step["perf"]["Inferences/Second"]),
        "p50_ms": float(step["perf"]["p50 latency"]) / 1000.0, "p99_ms": float(step["perf"]["p99 latency"]) / 1000.0,
    } for step in run.get("steps") or []]

    stages = [{"stage": s["stage"], "seconds": None if s.get("seconds") is None else float(s["seconds"])} for s in run.get("stages") or []]
    to_capacity = sum(s["seconds"] for s in stages) if stages and all(s["seconds"] is not None for s in stages) else None
    return {
        "duration_s": times[-1] - times[0] if times else 0.0,
        "samples": len(samples),
        "target_queue_us": target,
        "peak_replicas": peak,
        "peak_replicas_t": peak_t,
        "peak_ready_pods": max(ready, default=None),
        "max_replicas": max_replicas,
        "max_replicas_reached": reached_t is not None,
        "max_replicas_reached_t": reached_t,
        "peak_metric_us": max(metric_values, default=None),
        "seconds_over_target": over,
        "first_over_target_t": first_over,
        "failed_requests": int(run["failed_requests"]),
        "requests_total": total,
        "requests_per_pod": totals,
        "request_share": {pod: (n / total if total else 0.0) for pod, n in totals.items()},
        "steps": steps,
        "stages": stages,
        "time_to_capacity_s": to_capacity,
        "pools": summarize_pools(run, pods, deltas),
        "pod_pools": pod_pools(run),
    }


# ---------------------------------------------------------------------------------------------------------------------
# report

def fmt(value: Any, digits: int = 3) -> str:
    """A number as report.md shows it: integers as they are, other numbers to ``digits`` decimals, trailing zeros cut."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_int(value):
        return str(value)
    if isinstance(value, float):
        text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
        return "0" if text in ("", "-0") else text
    return str(value)


def _cell(value: Any) -> str:
    return " ".join(fmt(value).split()).replace("|", "\\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _h in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return [*out, ""]


def protocols(run: Mapping[str, Any]) -> List[str]:
    """The protocols of the run's steps, in first-step order."""
    seen: List[str] = []
    for step in run.get("steps") or []:
        if step["protocol"] not in seen:
            seen.append(step["protocol"])
    return seen


def report_files(run: Mapping[str, Any]) -> List[str]:
    """The file names write_report writes for this run, in the order it writes them."""
    return ["run.json", "samples.csv"] + [f"perf-{p}.csv" for p in protocols(run)] + list(PLOT_SIZES) + ["report.md"]


def _csv_cell(value: Any) -> str:
    return "" if value is None else _csv_number(value)


def samples_csv(run: Mapping[str, Any]) -> str:
    samples = run["samples"]
    queue_pods, request_pods = _pods(samples, "queue_us"), _pods(samples, "requests")
    pool_keys = ("hpa_current", "hpa_desired", "metric_us", "ready_pods")
    names = [name for name in pool_names(run) if any(name in (s.get("pools") or {}) for s in samples)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["t", "hpa_current", "hpa_desired", "metric_us", "ready_pods"] + [f"{k}:{n}" for n in names for k in pool_keys]
                    + [f"queue_us:{p}" for p in queue_pods] + [f"requests:{p}" for p in request_pods])
    for s in samples:
        writer.writerow([_csv_cell(s["t"])] + [_csv_cell(s.get(k)) for k in pool_keys]
                        + [_csv_cell(((s.get("pools") or {}).get(n) or {}).get(k)) for n in names for k in pool_keys]
                        + [_csv_cell(s["queue_us"].get(p)) for p in queue_pods] + [_csv_cell(s["requests"].get(p)) for p in request_pods])
    return buf.getvalue()


def report_markdown(run: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    target = summary["target_queue_us"]
    lines = [f"# {run['title']}", "",
             f"Started {run['started']} ({'cluster: playbooks/loadtest.yml' if run['source'] == 'cluster' else 'one-machine demo'}); "
             f"{fmt(summary['duration_s'])} s sampled in {summary['samples']} samples.", "", "## Settings", ""]
    lines += _table(["setting", "value"], sorted(run["settings"].items()))
    reached = summary["max_replicas_reached"]
    lines += ["## Summary", ""]
    if len(summary["pools"]) > 1:
        lines += [f"Over all {len(summary['pools'])} pools: replicas summed, the HPA metric averaged over the pools' replicas "
                  "(each pool's own: the pools table).", ""]
    lines += _table(["measure", "value"], [
        ("peak HPA replicas", summary["peak_replicas"]),
        ("peak HPA replicas first at (s)", summary["peak_replicas_t"]),
        (f"max_replicas ({summary['max_replicas']}) reached", reached),
        ("max_replicas reached at (s)", summary["max_replicas_reached_t"]),
        ("peak ready pods", summary["peak_ready_pods"]),
        (f"peak HPA metric ({run['settings']['metric']}, us)", summary["peak_metric_us"]),
        (f"seconds the HPA metric stayed above target ({fmt(target)} us)", summary["seconds_over_target"]),
        ("first over target at (s)", summary["first_over_target_t"]),
        ("failed requests", summary["failed_requests"]),
        ("requests served (all pods)", summary["requests_total"]),
        ("time to capacity (s, sum of the stages)", summary["time_to_capacity_s"]),
    ])
    lines += pools_markdown(summary)
    lines += ["## Load steps", "", "One perf_analyzer measurement per step; latencies are client-side.", ""]
    lines += _table(["step", "protocol", "concurrency", "start (s)", "end (s)", "inferences/s", "p50 latency (ms)", "p99 latency (ms)"],
                    [(n, s["protocol"], s["concurrency"], s["start"], s["end"], s["inferences_per_s"], s["p50_ms"], s["p99_ms"])
                     for n, s in enumerate(summary["steps"], 1)])
    if summary["stages"]:
        lines += ["## Time to capacity", ""]
        lines += _table(["stage", "seconds"], [(s["stage"], s["seconds"]) for s in summary["stages"]]
                        + [("total", summary["time_to_capacity_s"])])
    lines += ["## Events", ""]
    if run["events"]:
        lines += _table(["t (s)", "event", "detail"], [(float(e["t"]), e["event"], e["detail"]) for e in run["events"]])
    else:
        lines += ["No events recorded.", ""]
    lines += ["## Requests per pod", "", "From the cumulative per-pod counters (a drop is a restart from 0).", ""]
    if summary["pools"]:
        lines += _table(["pod", "pool", "requests", "share (%)"],
                        [(pod, summary["pod_pools"].get(pod, "-"), n, 100.0 * summary["request_share"][pod])
                         for pod, n in summary["requests_per_pod"].items()])
    else:
        lines += _table(["pod", "requests", "share (%)"],
                        [(pod, n, 100.0 * summary["request_share"][pod]) for pod, n in summary["requests_per_pod"].items()])
    lines += ["## Plots", "",
              "![HPA replicas, ready pods and queue time over time](replicas.png)", "",
              "![Throughput and latency per load step](latency.png)", "",
              "![Requests per second per pod](requests.png)", "",
              "## Raw files", "",
              "- [run.json](run.json): the whole run as recorded",
              "- [samples.csv](samples.csv): one row per sample, pods as columns"]
    lines += [f"- [perf-{p}.csv](perf-{p}.csv): the {p.upper() if p == 'http' else 'gRPC'} steps in perf_analyzer's CSV format "
              "(latencies in us)" for p in protocols(run)]
    return "\n".join(lines) + "\n"


def pools_markdown(summary: Mapping[str, Any]) -> List[str]:
    """The per-pool sections of report.md ([] for a run without pools)."""
    pools = summary["pools"]
    if not pools:
        return []

    def pct(value: Optional[float]) -> Optional[float]:
        return None if value is None else 100.0 * value

    lines = ["## Pools", "",
             "One Triton Deployment and HPA per MIG profile. Seconds over target: the pool's HPA metric against its own "
             "target. Requests: what the pool's pods served, as a share of all, against the share its load-balancer "
             "weight gives it over the pods ready in each sampling interval (share / weight share: 1 is as weighted).", ""]
    lines += _table(["pool", "profile", "weight", "min", "max", "peak replicas", "peak at (s)", "max reached at (s)",
                     "target (us)", "seconds over target", "requests", "share (%)", "weight share (%)", "share / weight share"],
                    [(p["name"], p["profile"], p["weight"], p["min_replicas"], p["max_replicas"], p["peak_replicas"], p["peak_replicas_t"],
                      p["max_replicas_reached_t"], p["target_queue_us"], p["seconds_over_target"], p["requests"], pct(p["request_share"]),
                      pct(p["weight_share"]), p["share_vs_weight"]) for p in pools])
    lines += ["## Time to capacity per pool", "",
              "The pool's first scale-up at the samples' resolution: its metric over its target, its HPA deciding more "
              "replicas, more of its pods ready, the first request one of its new pods served.", ""]
    lines += _table(["pool", "over target at (s)", "scale-up decided at (s)", "new pod ready at (s)", "first request on it at (s)",
                     "time to capacity (s)"],
                    [(p["name"], p["over_target_t"], p["decided_t"], p["ready_t"], p["first_request_t"], p["time_to_capacity_s"])
                     for p in pools])
    return lines


def matplotlib_problem() -> Optional[str]:
    """None when matplotlib can be imported, else what to install."""
    try:
        import matplotlib  # noqa: F401, PLC0415  # pylint: disable=unused-import  # optional: only the report plots need it
    except ImportError as exc:
        return (f"the load-test report draws its plots with matplotlib, which this Python ({exc}) lacks: install it on the "
                f"controller (in its execution environment under AWX) with `pip install {MATPLOTLIB_PIN}` "
                "(requirements/runtime.txt)")
    return None


def _shade_steps(axes: Any, steps: Sequence[Mapping[str, Any]], label: bool) -> None:
    for index, step in enumerate(steps):
        axes.axvspan(step["start"], step["end"], color="tab:gray", alpha=0.08 if index % 2 else 0.16, linewidth=0)
        if label:
            axes.annotate(f"{step['protocol']} c={step['concurrency']}", xy=((step["start"] + step["end"]) / 2, 1.0),
                          xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7, color="dimgray")


def _figure(name: str) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415  # optional dependency, checked first
    from matplotlib.figure import Figure  # noqa: PLC0415

    width, height = PLOT_SIZES[name]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    # No "Software" text chunk (it names the matplotlib version) and no bbox_inches="tight" (it would change the size).
    fig.savefig(str(path), format="png", dpi=DPI, metadata={"Software": None})


def _pool_colours(names: Sequence[str]) -> Dict[str, Any]:
    from matplotlib import colormaps  # noqa: PLC0415  # optional dependency, checked first

    cmap = colormaps["tab10"]
    return {name: cmap(index % 10) for index, name in enumerate(names)}


def plot_replicas(run: Mapping[str, Any], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  # optional dependency, checked first

    samples, steps, settings = run["samples"], run["steps"], run["settings"]
    fig = _figure("replicas.png")
    top, bottom = fig.subplots(2, 1, sharex=True)
    times = [s["t"] for s in samples]
    names = [n for n in pool_names(run) if any(n in (s.get("pools") or {}) for s in samples)]
    colours = _pool_colours(names)
    info = {str(p["name"]): p for p in run.get("pools") or []}
    members = pod_pools(run)

    def series(key: str) -> List[float]:
        return [math.nan if s.get(key) is None else s[key] for s in samples]

    def pool_series(name: str, key: str) -> List[float]:
        values = [((s.get("pools") or {}).get(name) or {}).get(key) for s in samples]
        return [math.nan if v is None else float(v) for v in values]

    ceiling = int(settings["max_replicas"])
    if len(names) > 1:  # each pool's replicas against its own max
        for name in names:
            colour = colours[name]
            top.step(times, pool_series(name, "hpa_current"), where="post", color=colour, linewidth=2, label=f"{name} current")
            top.step(times, pool_series(name, "hpa_desired"), where="post", color=colour, linewidth=1, linestyle="--", alpha=0.7)
            maximum = (info.get(name) or {}).get("max_replicas")
            if maximum is not None:
                top.axhline(maximum, color=colour, linewidth=1, linestyle=":", label=f"{name} max ({maximum})")
        ceiling = max([*(int((info.get(n) or {}).get("max_replicas") or 0) for n in names),
                       *(int(v) for n in names for v in pool_series(n, "hpa_current") if not math.isnan(v))], default=ceiling)
        top.step(times, series("ready_pods"), where="post", color="black", linestyle=":", label="ready pods behind the LB (all pools)")
    else:
        top.step(times, series("hpa_current"), where="post", label="HPA current replicas", linewidth=2)
        top.step(times, series("hpa_desired"), where="post", label="HPA desired replicas", linestyle="--")
        top.step(times, series("ready_pods"), where="post", label="ready pods behind the LB", linestyle=":")
        top.axhline(settings["max_replicas"], color="tab:red", linewidth=1, label=f"max_replicas ({settings['max_replicas']})")
    top.set_ylabel("replicas / pods")
    top.set_ylim(bottom=0, top=ceiling + 1)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.legend(loc="upper left", fontsize=7, ncol=2 if len(names) > 1 else 1)
    _shade_steps(top, steps, label=True)
    queue_pods = _pods(samples, "queue_us")
    labelled: List[str] = []
    for pod in queue_pods:
        owner = members.get(pod) if len(names) > 1 else None
        label = pod if len(queue_pods) <= 12 else (owner if owner and owner not in labelled else None)
        if owner and label == owner:
            labelled.append(owner)
        bottom.step(times, [s["queue_us"].get(pod, math.nan) for s in samples], where="post", linewidth=1, alpha=0.7, label=label,
                    **({"color": colours[owner]} if owner else {}))
    # A sample's value holds until the next sample: the same rule seconds_over_target integrates with.
    bottom.step(times, [math.nan if v is None else v for v in (hpa_metric(s) for s in samples)], where="post", color="black",
                linewidth=2, label="HPA metric" if len(names) <= 1 else "HPA metric (all pools)")
    targets = sorted({float((info.get(n) or {}).get("target_queue_us") or settings["target_queue_us"]) for n in names}
                     or {float(settings["target_queue_us"])})
    for target in targets:
        bottom.axhline(target, color="tab:red", linestyle="--", label=f"target ({fmt(target)} us)")
    bottom.set_ylabel(f"{settings['metric']} (us)")
    bottom.set_xlabel("seconds since the run started")
    bottom.legend(loc="upper left", fontsize=7, ncol=2)
    _shade_steps(bottom, steps, label=False)
    fig.suptitle(str(run["title"]), fontsize=10)
    _save(fig, path)


def plot_latency(run: Mapping[str, Any], summary: Mapping[str, Any], path: Path) -> None:
    fig = _figure("latency.png")
    left, right = fig.subplots(1, 2)
    steps = summary["steps"]
    for proto in protocols(run):
        mine = [(n, s) for n, s in enumerate(steps, 1) if s["protocol"] == proto]
        xs = [n for n, _s in mine]
        left.plot(xs, [s["inferences_per_s"] for _n, s in mine], marker="o", label=proto)
        right.plot(xs, [s["p50_ms"] for _n, s in mine], marker="o", label=f"{proto} p50")
        right.plot(xs, [s["p99_ms"] for _n, s in mine], marker="^", linestyle="--", label=f"{proto} p99")
    ticks = list(range(1, len(steps) + 1))
    labels = [f"{n}\nc={s['concurrency']}" for n, s in enumerate(steps, 1)]
    for axes, ylabel in ((left, "inferences/s"), (right, "latency (ms)")):
        axes.set_xticks(ticks)
        axes.set_xticklabels(labels, fontsize=7)
        axes.set_xlabel("load step")
        axes.set_ylabel(ylabel)
        axes.set_ylim(bottom=0)
        axes.grid(alpha=0.3)
        if steps:
            axes.legend(fontsize=8)
    left.set_title("throughput per step", fontsize=9)
    right.set_title("client latency per step", fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_requests(run: Mapping[str, Any], path: Path) -> None:
    samples = run["samples"]
    pods, deltas = request_deltas(samples)
    names = pool_names(run)
    members = pod_pools(run) if len(names) > 1 else {}
    colours = _pool_colours(names) if members else {}
    styles = ("-", "--", "-.", ":")
    fig = _figure("requests.png")
    axes = fig.subplots(1, 1)
    labelled: List[str] = []
    for pod in pods:
        xs, ys = [], []
        for index in range(1, len(samples)):
            span = samples[index]["t"] - samples[index - 1]["t"]
            xs.append(samples[index]["t"])
            ys.append(deltas[index][pod] / span if pod in deltas[index] and span > 0 else math.nan)
        owner = members.get(pod)
        style: Dict[str, Any] = {}
        label: Optional[str] = pod
        if owner:  # the pool's colour; its pods told apart by the line style
            siblings = [p for p in pods if members.get(p) == owner]
            style = {"color": colours[owner], "linestyle": styles[siblings.index(pod) % len(styles)]}
            label = f"{pod} ({owner})" if len(pods) <= 12 else (owner if owner not in labelled else None)
            if label == owner:
                labelled.append(owner)
        axes.step(xs, ys, where="pre", label=label, linewidth=1.2, **style)  # a rate covers the interval that ends at its sample
    _shade_steps(axes, run["steps"], label=True)
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("requests/s")
    axes.set_title("requests per second per pod (from the cumulative counters)" + (", coloured by pool" if members else ""), fontsize=9)
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    if pods:
        axes.legend(loc="upper left", fontsize=7, ncol=2)
    _save(fig, path)


def _write(path: Path, content: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    os.replace(tmp, path)


def check_dest(dest: Union[str, Path]) -> Path:
    """The destination as a Path; raises ReportError when it exists and is not a directory."""
    path = Path(dest)
    if path.exists() and not path.is_dir():
        raise ReportError(f"dest {path} exists and is not a directory: give the path of a directory (it is created when missing)")
    return path


def write_report(dest: Union[str, Path], run: Mapping[str, Any]) -> Dict[str, Any]:
    """Write the report of a run into dest (created). Refuses an invalid run, a missing matplotlib or a dest that is not
    a directory before writing anything. Returns {"report": path of report.md, "files": [paths], "summary": ...}."""
    problems = validate_run(run)
    if problems:
        raise ReportError("invalid load-test run ({} problem(s)): {}".format(len(problems), "; ".join(problems)))
    missing = matplotlib_problem()
    if missing:
        raise ReportError(missing)
    path = check_dest(dest)
    summary = summarize(run)
    try:
        path.mkdir(parents=True, exist_ok=True)
        _write(path / "run.json", json.dumps(run, indent=2, sort_keys=True, allow_nan=False) + "\n")
        _write(path / "samples.csv", samples_csv(run))
        for proto in protocols(run):
            _write(path / f"perf-{proto}.csv", format_perf_csv([s["perf"] for s in run["steps"] if s["protocol"] == proto]))
        plot_replicas(run, path / "replicas.png")
        plot_latency(run, summary, path / "latency.png")
        plot_requests(run, path / "requests.png")
        _write(path / "report.md", report_markdown(run, summary))
    except OSError as exc:
        raise ReportError(f"writing the load-test report into {path} failed: {exc}") from None
    return {"report": str(path / "report.md"), "files": [str(path / name) for name in report_files(run)], "summary": summary}
