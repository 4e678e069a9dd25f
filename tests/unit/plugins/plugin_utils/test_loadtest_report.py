# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugin_utils/_loadtest_report.py: perf_analyzer's CSV, the run's validation, its summary and the report directory
(the action is tests/integration/test_loadtest_report_action.py)."""
from __future__ import annotations

import copy
import csv
import io
import json
import re
import struct
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils import _loadtest_report as lr

# perf_analyzer's own output, as its documentation shows it: triton-inference-server/client,
# src/c++/perf_analyzer/docs/measurements_metrics.md ("Visualizing Latency vs. Throughput",
# `perf_analyzer -m inception_graphdef --concurrency-range 1:4 -f perf.csv`). Rows are sorted by throughput.
DOC_CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,\
Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency
1,69.2,225,2148,64,206,11781,19,0,13891,18795,19753,21018
3,84.2,237,1768,21673,209,11742,17,0,35398,43984,47085,51701
4,84.2,279,1604,33669,233,11731,18,1,47045,56545,59225,64886
2,87.2,235,1973,9151,190,11346,17,0,21874,28557,29768,34766
"""

# With --verbose-csv and --collect-metrics: the sample triton-inference-server/model_analyzer feeds its perf_analyzer
# CSV reader (tests/test_perf_analyzer.py, test_run): three more numeric columns, then four GPU metric columns whose
# cells are `uuid:value;` lists (report_writer.cc, ReportWriter::WriteGpuMetrics), one with a trailing ';'.
VERBOSE_CSV = (
    "Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,"
    "Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency,request/response,response wait,"
    "Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,Total GPU Memory\n"
    "1,46.8,2,187,18,34,65,16,1,4600,4700,4800,4900,5000,3,314,"
    "GPU-aaf4fea0:0.809;GPU-aaf4fea1:0.901;GPU-aaf4fea2:0.745;,GPU-aaf4fea0:91.2;GPU-aaf4fea1:100;,"
    "GPU-aaf4fea0:1000000000;GPU-aaf4fea1:2000000000,GPU-aaf4fea0:1500000000;GPU-aaf4fea2:3000000000\n"
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TARGET = 1000.0


def perf_row(concurrency: int, ips: float, p50_us: int, p99_us: int) -> Dict[str, float]:
    row = dict.fromkeys(lr.PERF_COLUMNS, 10.0)
    row.update({"Concurrency": concurrency, "Inferences/Second": ips, "p50 latency": p50_us, "p99 latency": p99_us})
    return row


def make_run() -> Dict[str, Any]:
    """21 samples 2 s apart; the metric is over target from t=4 to t=12 (5 samples: 10 s); a second pod appears at t=14
    and the first pod's counter restarts at t=30; the HPA reaches max_replicas (2) at t=10."""
    samples: List[Dict[str, Any]] = []
    a_total, b_total = 500, 0
    for n in range(21):
        t = 2.0 * n
        over = 4 <= t <= 12
        current = 2 if t >= 10 else 1
        queue = {"triton-a": 1800.0 if over else 200.0}
        requests = {"triton-a": a_total}
        if t >= 14:
            queue["triton-b"] = 100.0
            requests["triton-b"] = b_total
        samples.append({"t": t, "hpa_current": current, "hpa_desired": 2 if t >= 8 else 1, "metric_us": 1800.0 if over else 200.0,
                        "queue_us": queue, "requests": requests, "ready_pods": 2 if t >= 14 else 1})
        a_total = 20 if t == 28 else a_total + 40  # at t=30 the pod restarted: its counter starts again from 0 (+20)
        if t >= 14:
            b_total += 30
    return {
        "title": "Load test: simple through nginx-lb (HTTP, gRPC)",
        "source": "demo",
        "started": "2026-01-31T12:00:00Z",
        "settings": {"target_queue_us": TARGET, "min_replicas": 1, "max_replicas": 2, "model": "simple", "metric": "avg_time_queue_us"},
        "samples": samples,
        "steps": [
            {"protocol": "http", "concurrency": 4, "start": 0.0, "end": 20.0, "perf": perf_row(4, 250.5, 3000, 9000)},
            {"protocol": "grpc", "concurrency": 8, "start": 20.0, "end": 40.0, "perf": perf_row(8, 410.0, 4000, 12500)},
        ],
        "events": [{"t": 8.0, "event": "scale_up_decided", "detail": "1 -> 2"}, {"t": 14.0, "event": "pod_ready", "detail": "triton-b | x"}],
        "stages": [{"stage": "metric over target", "seconds": 4.0}, {"stage": "scale-up decided", "seconds": 4.0},
                   {"stage": "new pod ready", "seconds": 6.0}],
        "failed_requests": 0,
        "extra": {"kept": True},
    }


# ---------------------------------------------------------------------------------------------------------------------
# perf_analyzer CSV

def test_perf_columns_are_perf_analyzers_header() -> None:
    assert ",".join(lr.PERF_COLUMNS) == DOC_CSV.splitlines()[0]


def test_parse_the_documented_csv() -> None:
    rows = lr.parse_perf_csv(DOC_CSV)
    assert [r["Concurrency"] for r in rows] == [1, 3, 4, 2]
    assert rows[0]["Inferences/Second"] == 69.2
    assert rows[2]["Server Queue"] == 33669
    assert rows[3]["p99 latency"] == 34766
    assert set(rows[0]) == set(lr.PERF_COLUMNS)


def test_format_writes_the_same_bytes_perf_analyzer_wrote() -> None:
    assert lr.format_perf_csv(lr.parse_perf_csv(DOC_CSV)) == DOC_CSV


def test_verbose_csv_keeps_known_columns_and_ignores_gpu_metrics() -> None:
    (row,) = lr.parse_perf_csv(VERBOSE_CSV)
    assert row["Avg latency"] == 5000
    assert row["response wait"] == 314
    assert row["p90 latency"] == 4700
    assert not any("GPU" in key for key in row)
    assert lr.format_perf_csv([row]).splitlines()[1] == "1,46.8,2,187,18,34,65,16,1,4600,4700,4800,4900"


@pytest.mark.parametrize("column", ["p99 latency", "Server Queue", "Inferences/Second"])
def test_a_missing_column_fails_with_its_name(column: str) -> None:
    header, *rows = DOC_CSV.splitlines()
    cut = header.split(",").index(column)
    text = "\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != cut) for line in [header, *rows])
    with pytest.raises(lr.PerfCsvError, match=re.escape(repr(column))):
        lr.parse_perf_csv(text)


def test_request_rate_mode_is_named() -> None:
    with pytest.raises(lr.PerfCsvError, match="request-rate mode"):
        lr.parse_perf_csv(DOC_CSV.replace("Concurrency", "Request Rate", 1))


def test_a_cell_that_is_not_a_number_names_row_and_column() -> None:
    with pytest.raises(lr.PerfCsvError, match=r"row 3, column 'Client Send': 'n/a'"):
        lr.parse_perf_csv(DOC_CSV.replace("3,84.2,237", "3,84.2,n/a"))
    with pytest.raises(lr.PerfCsvError, match="empty"):
        lr.parse_perf_csv("\n\n")
    with pytest.raises(lr.PerfCsvError, match="column 'p50 latency' must be a number"):
        lr.format_perf_csv([{k: v for k, v in perf_row(1, 1.0, 1, 1).items() if k != "p50 latency"}])


# ---------------------------------------------------------------------------------------------------------------------
# validation

def test_a_valid_run_has_no_problems() -> None:
    assert lr.validate_run(make_run()) == []


def test_every_problem_is_reported_at_once_with_its_field() -> None:
    run = make_run()
    run["samples"][3]["t"] = "soon"
    run["samples"][5]["requests"]["triton-a"] = -1
    run["samples"][6]["queue_us"] = [1.0]
    run["steps"][0]["protocol"] = "udp"
    del run["steps"][1]["perf"]["p99 latency"]
    del run["settings"]["max_replicas"]
    run["source"] = "laptop"
    run["started"] = "yesterday"
    run["failed_requests"] = -2
    run["events"][0] = {"t": 1.0, "event": "", "detail": 3}
    run["stages"][1]["seconds"] = -1.0
    problems = lr.validate_run(run)
    expected = [
        "run.samples[3].t must be a number, got 'soon'",
        "run.samples[5].requests.triton-a must be an integer >= 0, got -1",
        "run.samples[6].queue_us must be a mapping of pod names to values, got list",
        "run.steps[0].protocol must be one of http, grpc, got 'udp'",
        "run.steps[1].perf['p99 latency'] is required (a perf_analyzer CSV column)",
        "run.settings.max_replicas is required",
        "run.source must be one of cluster, demo, got 'laptop'",
        "run.started must be an ISO 8601 time",
        "run.failed_requests must be an integer >= 0, got -2",
        "run.events[0].event must be a non-empty string",
        "run.events[0].detail must be a string, got 3",
        "run.stages[1].seconds must be >= 0 or null, got -1.0",
    ]
    for text in expected:
        assert any(p.startswith(text) for p in problems), (text, problems)
    assert len(problems) == len(expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["samples"][4].update(t=1.0), "run.samples[4].t (1.0) must not be before the previous sample's (6.0)"),
        (lambda r: r.update(samples=[]), "run.samples must hold at least one sample"),
        (lambda r: r["settings"].update(min_replicas=3), "run.settings.max_replicas (2) must be >= run.settings.min_replicas (3)"),
        (lambda r: r["settings"].update(target_queue_us=0), "run.settings.target_queue_us must be a number > 0"),
        (lambda r: r["samples"][0].update(metric_us=float("nan")), "run.samples[0].metric_us must be a number or null, got nan"),
        (lambda r: r["samples"][0].update(hpa_current=True), "run.samples[0].hpa_current must be an integer >= 0 or null, got True"),
        (lambda r: r["steps"][0].update(end=-1.0), "run.steps[0].end (-1.0) must not be before run.steps[0].start (0.0)"),
        (lambda r: r.update(extra={1, 2}), "run must be JSON-serialisable"),
    ],
)
def test_single_problems(change: Any, message: str) -> None:
    run = make_run()
    change(run)
    assert any(p.startswith(message) for p in lr.validate_run(run)), lr.validate_run(run)


def test_not_a_mapping() -> None:
    assert lr.validate_run([1]) == ["run must be a mapping, got list"]


# ---------------------------------------------------------------------------------------------------------------------
# summary

def test_summary_of_the_reference_run() -> None:
    s = lr.summarize(make_run())
    assert s["seconds_over_target"] == 10.0
    assert s["first_over_target_t"] == 4.0
    assert (s["peak_replicas"], s["peak_replicas_t"]) == (2, 10.0)
    assert (s["max_replicas_reached"], s["max_replicas_reached_t"]) == (True, 10.0)
    assert s["peak_ready_pods"] == 2
    assert s["failed_requests"] == 0
    # triton-a: 7 intervals of 40 up to t=14, ... 40 each until t=28 (14 intervals = 560), restart: 20, then 5 x 40
    assert s["requests_per_pod"] == {"triton-a": 14 * 40 + 20 + 5 * 40, "triton-b": 13 * 30}
    assert s["requests_total"] == 780 + 390
    assert s["request_share"]["triton-b"] == pytest.approx(390 / 1170)
    assert s["steps"][1] == {"protocol": "grpc", "concurrency": 8, "start": 20.0, "end": 40.0, "inferences_per_s": 410.0,
                             "p50_ms": 4.0, "p99_ms": 12.5}
    assert s["time_to_capacity_s"] == 14.0
    assert s["duration_s"] == 40.0


def test_a_planted_interval_over_target_adds_its_length() -> None:
    run = make_run()
    run["samples"][15]["metric_us"] = TARGET + 1  # t=30; the next sample is 2 s later
    assert lr.summarize(run)["seconds_over_target"] == 12.0
    run["samples"][20]["metric_us"] = TARGET * 5  # the last sample starts no interval
    assert lr.summarize(run)["seconds_over_target"] == 12.0
    run["samples"][16]["metric_us"] = TARGET  # at target is not over it
    assert lr.summarize(run)["seconds_over_target"] == 12.0


def test_without_the_hpa_value_the_per_pod_mean_is_used() -> None:
    run = make_run()
    for sample in run["samples"]:
        sample["metric_us"] = None
    run["samples"][16]["queue_us"] = {"triton-a": 2500.0, "triton-b": 100.0}  # mean 1300 > 1000
    run["samples"][17]["queue_us"] = {"triton-a": 1500.0, "triton-b": 100.0}  # mean 800
    assert lr.summarize(run)["seconds_over_target"] == 12.0


def test_max_replicas_not_reached() -> None:
    run = make_run()
    run["settings"]["max_replicas"] = 3
    s = lr.summarize(run)
    assert (s["max_replicas_reached"], s["max_replicas_reached_t"]) == (False, None)


def test_counter_resets_count_like_prometheus_increase() -> None:
    samples = [{"t": float(t), "requests": r} for t, r in enumerate([{"a": 100}, {"a": 110}, {"a": 4}, {"a": 9, "b": 7}, {"b": 8}, {"a": 1}])]
    pods, deltas = lr.request_deltas(samples)
    assert pods == ["a", "b"]
    assert deltas == [{}, {"a": 10}, {"a": 4}, {"a": 5, "b": 7}, {"b": 1}, {"a": 1}]


# ---------------------------------------------------------------------------------------------------------------------
# the report directory

@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    dest = tmp_path_factory.mktemp("report") / "out"
    run = make_run()
    result = lr.write_report(dest, run)
    return {"dest": dest, "run": run, "result": result}


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_files(written: Dict[str, Any]) -> None:
    dest: Path = written["dest"]
    names = ["run.json", "samples.csv", "perf-http.csv", "perf-grpc.csv", "replicas.png", "latency.png", "requests.png", "report.md"]
    assert written["result"]["files"] == [str(dest / n) for n in names]
    assert written["result"]["report"] == str(dest / "report.md")
    assert sorted(p.name for p in dest.iterdir()) == sorted(names)
    for name, size in lr.PLOT_SIZES.items():
        assert png_size(dest / name) == size
    assert json.loads((dest / "run.json").read_text()) == written["run"]


def test_perf_files_are_perf_analyzer_csv(written: Dict[str, Any]) -> None:
    rows = lr.parse_perf_csv((written["dest"] / "perf-grpc.csv").read_text())
    assert rows == [{k: float(v) for k, v in written["run"]["steps"][1]["perf"].items()}]
    assert (written["dest"] / "perf-http.csv").read_text().splitlines()[0] == ",".join(lr.PERF_COLUMNS)


def test_samples_csv(written: Dict[str, Any]) -> None:
    rows = list(csv.DictReader(io.StringIO((written["dest"] / "samples.csv").read_text())))
    assert len(rows) == 21
    assert list(rows[0]) == ["t", "hpa_current", "hpa_desired", "metric_us", "ready_pods", "queue_us:triton-a", "queue_us:triton-b",
                             "requests:triton-a", "requests:triton-b"]
    assert (rows[0]["queue_us:triton-b"], rows[7]["queue_us:triton-b"], rows[15]["requests:triton-a"]) == ("", "100", "20")


def _rows(markdown: str, heading: str) -> List[List[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("|---")][1:]


def test_report_numbers_match_the_summary(written: Dict[str, Any]) -> None:
    md = (written["dest"] / "report.md").read_text()
    s = written["result"]["summary"]
    assert s == lr.summarize(written["run"])
    summary = {row[0]: row[1] for row in _rows(md, "Summary")}
    assert float(summary[f"seconds the HPA metric stayed above target ({lr.fmt(TARGET)} us)"]) == s["seconds_over_target"]
    assert int(summary["peak HPA replicas"]) == s["peak_replicas"]
    assert summary["max_replicas (2) reached"] == "yes"
    assert float(summary["max_replicas reached at (s)"]) == s["max_replicas_reached_t"]
    assert int(summary["failed requests"]) == s["failed_requests"]
    steps = _rows(md, "Load steps")
    assert [[r[1], int(r[2]), float(r[5]), float(r[6]), float(r[7])] for r in steps] == [
        [x["protocol"], x["concurrency"], x["inferences_per_s"], x["p50_ms"], x["p99_ms"]] for x in s["steps"]]
    pods = {r[0]: (int(r[1]), float(r[2])) for r in _rows(md, "Requests per pod")}
    assert {p: n for p, (n, _share) in pods.items()} == s["requests_per_pod"]
    for pod, (_n, share) in pods.items():
        assert share == pytest.approx(100 * s["request_share"][pod], abs=1e-3)
    assert _rows(md, "Time to capacity")[-1] == ["total", "14"]
    assert ["14", "pod_ready", "triton-b \\| x"] in _rows(md, "Events")
    for link in ("(replicas.png)", "(latency.png)", "(requests.png)", "(run.json)", "(samples.csv)", "(perf-http.csv)", "(perf-grpc.csv)"):
        assert link in md
    assert md.startswith("# Load test: simple through nginx-lb (HTTP, gRPC)\n")


def test_without_stages_there_is_no_stage_table(tmp_path: Path) -> None:
    run = make_run()
    del run["stages"]
    run["steps"] = run["steps"][:1]
    result = lr.write_report(tmp_path, run)
    md = Path(result["report"]).read_text()
    assert "## Time to capacity" not in md
    assert not (tmp_path / "perf-grpc.csv").exists()
    assert result["summary"]["time_to_capacity_s"] is None


def test_an_invalid_run_writes_nothing(tmp_path: Path) -> None:
    run = make_run()
    run["samples"][3]["t"] = None
    with pytest.raises(lr.ReportError, match=re.escape("run.samples[3].t must be a number, got None")):
        lr.write_report(tmp_path / "out", run)
    assert not (tmp_path / "out").exists()


def test_a_file_as_dest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(lr.ReportError, match="exists and is not a directory"):
        lr.write_report(tmp_path / "f", make_run())


def test_without_matplotlib_it_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(lr.ReportError, match=re.escape(f"pip install {lr.MATPLOTLIB_PIN}")):
        lr.write_report(tmp_path / "out", make_run())
    assert not (tmp_path / "out").exists()


def test_the_pin_is_the_tested_version() -> None:
    import matplotlib  # noqa: PLC0415  # the report's own optional dependency

    assert f"matplotlib=={matplotlib.__version__}" == lr.MATPLOTLIB_PIN
    runtime = (Path(__file__).resolve().parents[4] / "requirements" / "runtime.txt").read_text().splitlines()
    assert [ln for ln in runtime if ln.lower().startswith("matplotlib")] in ([], [lr.MATPLOTLIB_PIN])


def test_plots_are_deterministic(written: Dict[str, Any], tmp_path: Path) -> None:
    lr.write_report(tmp_path, copy.deepcopy(written["run"]))
    for name in lr.PLOT_SIZES:
        assert (tmp_path / name).read_bytes() == (written["dest"] / name).read_bytes(), name


# ---------------------------------------------------------------------------------------------------------------------
# serving pools: one pool scales, the other does not

P1, P3 = "triton-1g-5gb", "triton-3g-20gb"
A, NEW, C = "triton-1g-5gb-7c9d8b6f5-x2k4p", "triton-1g-5gb-7c9d8b6f5-n3w9q", "triton-3g-20gb-5d8f7c6b9-q7w2e"


def make_pool_run(three_g_per_interval: int = 30) -> Dict[str, Any]:
    """16 samples 2 s apart. Pool 1g (weight 1, target 1000 us, max 3): its metric is over target from t=4 to t=12,
    its HPA wants 2 at t=6, has 2 at t=8, the new pod is ready and serves from t=10. Pool 3g (weight 3, max 2) stays at
    1 replica, under target. Requests per interval as nginx's weighted round robin spreads them: 10 per 1g pod, 30
    per 3g pod (``three_g_per_interval`` otherwise)."""
    samples: List[Dict[str, Any]] = []
    served = {A: 0, C: 0}
    for n in range(16):
        t = 2.0 * n
        if n:
            served[A] += 10
            served[C] += three_g_per_interval
            if t >= 10:
                served[NEW] = served.get(NEW, 0) + 10
        current, desired, ready = 2 if t >= 8 else 1, 2 if t >= 6 else 1, 2 if t >= 10 else 1
        metric = 1500.0 if 4 <= t <= 12 else 200.0
        one = {"hpa_current": current, "hpa_desired": desired, "metric_us": metric, "ready_pods": ready, "pods": [A, NEW] if t >= 10 else [A]}
        three = {"hpa_current": 1, "hpa_desired": 1, "metric_us": 300.0, "ready_pods": 1, "pods": [C]}
        samples.append({"t": t, "hpa_current": current + 1, "hpa_desired": desired + 1, "metric_us": (current * metric + 300.0) / (current + 1),
                        "queue_us": {A: metric, C: 300.0, **({NEW: 100.0} if t >= 10 else {})},
                        "requests": dict(served), "ready_pods": ready + 1, "failed": 0, "pools": {P1: one, P3: three}})
    run = make_run()
    run.update(samples=samples, stages=[], events=[], source="cluster",
               settings={"target_queue_us": 1000.0, "min_replicas": 2, "max_replicas": 5, "model": "demo", "metric": "avg_time_queue_us"},
               pools=[{"name": P1, "profile": "1g.5gb", "weight": 1, "hpa": P1, "min_replicas": 1, "max_replicas": 3, "target_queue_us": 1000.0},
                      {"name": P3, "profile": "3g.20gb", "weight": 3, "hpa": P3, "min_replicas": 1, "max_replicas": 2, "target_queue_us": 1000.0}])
    run["steps"] = [{**run["steps"][0], "end": 30.0}]
    return run


def test_two_pools_one_scales_the_other_does_not(tmp_path: Path) -> None:
    run = make_pool_run()
    assert lr.validate_run(run) == []
    result = lr.write_report(tmp_path, run)
    pools = {p["name"]: p for p in result["summary"]["pools"]}
    one, three = pools[P1], pools[P3]
    assert (one["profile"], one["weight"], one["min_replicas"], one["max_replicas"], one["peak_replicas"], one["peak_replicas_t"]) == \
        ("1g.5gb", 1, 1, 3, 2, 8.0)
    assert one["max_replicas_reached_t"] is None
    assert one["seconds_over_target"] == 10.0  # t = 4, 6, 8, 10, 12: five 2 s intervals
    assert (one["over_target_t"], one["decided_t"], one["ready_t"], one["first_request_t"], one["time_to_capacity_s"]) == (4.0, 6.0, 10.0, 10.0, 6.0)
    assert one["pods"] == sorted([A, NEW])
    assert (three["peak_replicas"], three["seconds_over_target"], three["over_target_t"], three["time_to_capacity_s"]) == (1, 0.0, None, None)
    # the requests follow the weights exactly: each pool's share is what its weight gives it
    assert (one["requests"], three["requests"]) == (150 + 110, 450)
    assert one["share_vs_weight"] == pytest.approx(1.0)
    assert three["share_vs_weight"] == pytest.approx(1.0)
    assert three["weight_share"] == pytest.approx(450 / 710)
    md = (tmp_path / "report.md").read_text()
    rows = {r[0]: r for r in _rows(md, "Pools")}
    assert rows[P1][1:10] == ["1g.5gb", "1", "1", "3", "2", "8", "-", "1000", "10"]
    assert rows[P3][1:10] == ["3g.20gb", "3", "1", "2", "1", "0", "-", "1000", "0"]
    assert [float(rows[p][13]) for p in (P1, P3)] == [1.0, 1.0]
    capacity = {r[0]: r[1:] for r in _rows(md, "Time to capacity per pool")}
    assert capacity == {P1: ["4", "6", "10", "10", "6"], P3: ["-", "-", "-", "-", "-"]}
    per_pod = {r[0]: r[1] for r in _rows(md, "Requests per pod")}
    assert per_pod == {A: P1, C: P3, NEW: P1}
    header = next(csv.reader(io.StringIO((tmp_path / "samples.csv").read_text())))
    assert header[5:9] == [f"hpa_current:{P1}", f"hpa_desired:{P1}", f"metric_us:{P1}", f"ready_pods:{P1}"]
    assert f"hpa_current:{P3}" in header
    for name in lr.PLOT_SIZES:
        assert png_size(tmp_path / name) == lr.PLOT_SIZES[name]


def test_a_pool_served_less_than_its_weight_shows_it() -> None:
    # the 3g pod gets what a 1g pod gets (an upstream without weights): by weight it should have had 3/4 of the 20
    # requests of each of the first 4 intervals and 3/5 of the 30 of each of the 11 after (258), it served 150
    pools = {p["name"]: p for p in lr.summarize(make_pool_run(three_g_per_interval=10))["pools"]}
    assert pools[P3]["share_vs_weight"] == pytest.approx(150 / 258)
    assert pools[P1]["share_vs_weight"] == pytest.approx(260 / (4 * 5 + 11 * 12))
    # without every pool's weight, no comparison is made
    run = make_pool_run()
    run["pools"][1]["weight"] = None
    assert [p["share_vs_weight"] for p in lr.summarize(run)["pools"]] == [None, None]


def test_a_pod_never_seen_ready_is_mapped_by_its_name() -> None:
    run = make_pool_run()
    run["samples"][-1]["requests"]["triton-3g-20gb-5d8f7c6b9-old00"] = 7
    assert lr.pod_pools(run)["triton-3g-20gb-5d8f7c6b9-old00"] == P3


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["pools"][0].update(weight=0), "run.pools[0].weight must be an integer >= 1 or null, got 0"),
    (lambda r: r["pools"][1].update(name=P1), f"run.pools[1].name '{P1}' is another pool's too"),
    (lambda r: r["pools"][0].update(target_queue_us=-1), "run.pools[0].target_queue_us must be a number > 0 or null, got -1"),
    (lambda r: r["samples"][2]["pools"][P1].update(hpa_current=-1), f"run.samples[2].pools.{P1}.hpa_current must be an integer >= 0"),
    (lambda r: r["samples"][2]["pools"][P1].update(pods="x"), f"run.samples[2].pools.{P1}.pods must be a list of pod names"),
    (lambda r: r["samples"][2].update(pools=[]), "run.samples[2].pools must be a mapping of pool names"),
])
def test_pool_problems(change: Any, message: str) -> None:
    run = make_pool_run()
    change(run)
    assert any(p.startswith(message) for p in lr.validate_run(run)), lr.validate_run(run)
