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

Everything is checked first (:func:`validate_run`, every problem at once, each naming its field); :func:`write_report`
writes nothing for an invalid run or without matplotlib.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
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
    """Every problem of a run (SCHEMA: title, source, started, settings, samples, steps, events, stages,
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
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["t", "hpa_current", "hpa_desired", "metric_us", "ready_pods"] + [f"queue_us:{p}" for p in queue_pods]
                    + [f"requests:{p}" for p in request_pods])
    for s in samples:
        writer.writerow([_csv_cell(s["t"])] + [_csv_cell(s.get(k)) for k in ("hpa_current", "hpa_desired", "metric_us", "ready_pods")]
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


def plot_replicas(run: Mapping[str, Any], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415  # optional dependency, checked first

    samples, steps, settings = run["samples"], run["steps"], run["settings"]
    fig = _figure("replicas.png")
    top, bottom = fig.subplots(2, 1, sharex=True)
    times = [s["t"] for s in samples]

    def series(key: str) -> List[float]:
        return [math.nan if s.get(key) is None else s[key] for s in samples]

    top.step(times, series("hpa_current"), where="post", label="HPA current replicas", linewidth=2)
    top.step(times, series("hpa_desired"), where="post", label="HPA desired replicas", linestyle="--")
    top.step(times, series("ready_pods"), where="post", label="ready pods behind the LB", linestyle=":")
    top.axhline(settings["max_replicas"], color="tab:red", linewidth=1, label=f"max_replicas ({settings['max_replicas']})")
    top.set_ylabel("replicas / pods")
    top.set_ylim(bottom=0, top=settings["max_replicas"] + 1)
    top.yaxis.set_major_locator(MaxNLocator(integer=True))
    top.legend(loc="upper left", fontsize=8)
    _shade_steps(top, steps, label=True)
    for pod in _pods(samples, "queue_us"):
        bottom.step(times, [s["queue_us"].get(pod, math.nan) for s in samples], where="post", linewidth=1, alpha=0.7, label=pod)
    # A sample's value holds until the next sample: the same rule seconds_over_target integrates with.
    bottom.step(times, [math.nan if v is None else v for v in (hpa_metric(s) for s in samples)], where="post", color="black",
                linewidth=2, label="HPA metric")
    bottom.axhline(settings["target_queue_us"], color="tab:red", linestyle="--", label=f"target ({fmt(float(settings['target_queue_us']))} us)")
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
    fig = _figure("requests.png")
    axes = fig.subplots(1, 1)
    for pod in pods:
        xs, ys = [], []
        for index in range(1, len(samples)):
            span = samples[index]["t"] - samples[index - 1]["t"]
            xs.append(samples[index]["t"])
            ys.append(deltas[index][pod] / span if pod in deltas[index] and span > 0 else math.nan)
        axes.step(xs, ys, where="pre", label=pod, linewidth=1.2)  # a rate covers the interval that ends at its sample
    _shade_steps(axes, run["steps"], label=True)
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("requests/s")
    axes.set_title("requests per second per pod (from the cumulative counters)", fontsize=9)
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
