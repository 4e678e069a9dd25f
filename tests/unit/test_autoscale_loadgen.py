# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/autoscale/loadgen.py: perf_analyzer's statistics on synthetic latencies, and a short real run on one Triton.

The expected values are computed by hand from perf_analyzer's definitions (inference_profiler.cc SummarizeLatency,
MeasurementTimestamp, ValidLatencyMeasurement; report_writer.cc GenerateReport), not by the code under test.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.autoscale.loadgen import (
        COLUMNS,
        ConcurrencyLoad,
        Record,
        latency_summary,
        measurement_window,
        percentile_index,
        perf_row,
        stats_delta,
        summed_delta,
    )
    from tests.servers.triton import triton_server, write_model_repository
else:
    from autoscale.loadgen import (
        COLUMNS,
        ConcurrencyLoad,
        Record,
        latency_summary,
        measurement_window,
        percentile_index,
        perf_row,
        stats_delta,
        summed_delta,
    )
    from servers.triton import triton_server, write_model_repository

MS = 1_000_000  # ns


def test_percentile_index_is_perf_analyzers() -> None:
    # (p / 100) * (n - 1) + 0.5, truncated: 100 samples -> p50 at index 50 (49.5 + 0.5), p99 at 98 (98.01 + 0.5)
    assert [percentile_index(p, 100) for p in (50, 90, 95, 99)] == [50, 89, 94, 98]
    assert [percentile_index(p, 1) for p in (50, 99)] == [0, 0]
    assert percentile_index(50, 4) == 2  # 1.5 + 0.5 = 2.0: the upper middle, not an interpolation


def test_latency_summary_on_known_latencies() -> None:
    latencies = [(k + 1) * MS for k in range(100)]  # 1 .. 100 ms, shuffled order must not matter
    summary = latency_summary(list(reversed(latencies)))
    assert summary["avg"] == 50_500_000  # mean of 1..100 ms = 50.5 ms
    assert (summary["p50"], summary["p90"], summary["p95"], summary["p99"]) == (51 * MS, 90 * MS, 95 * MS, 99 * MS)
    with pytest.raises(ValueError, match="no valid requests"):
        latency_summary([])


def test_measurement_window_sits_in_the_middle() -> None:
    # requests from t=0 to t=12 s, a 10 s window: offset (12 - 10) / 2 = 1 s -> [1 s, 11 s]
    records = [Record(0, 500 * MS, True), Record(11_500 * MS, 12_000 * MS, True)]
    assert measurement_window(records, 10_000 * MS) == (1_000 * MS, 11_000 * MS)
    # a span shorter than the window: the window starts at the first request
    assert measurement_window(records, 20_000 * MS) == (0, 20_000 * MS)


def _steady(concurrency: int, latency_ms: int, span_s: int) -> List[Record]:
    """concurrency closed-loop workers, each request latency_ms long, back to back, for span_s seconds."""
    out = []
    for _worker in range(concurrency):
        t = 0
        while t + latency_ms * MS <= span_s * 1000 * MS:
            out.append(Record(t, t + latency_ms * MS, True, send_ns=100_000, recv_ns=50_000))
            t += latency_ms * MS
    return out


def test_throughput_counts_requests_ending_in_the_window() -> None:
    # 4 workers x 20 ms requests = 200 requests/s; 12 s of load, a 10 s window in the middle
    records = _steady(4, 20, 12)
    row = perf_row(4, records, 10_000 * MS, None)
    # window [1 s, 11 s]: ends at 1.00, 1.02, ..., 11.00 s -> 501 per worker (both edges included, as upstream)
    assert row["Inferences/Second"] == pytest.approx(4 * 501 / 10.0)
    assert row["Concurrency"] == 4
    assert row["p50 latency"] == row["p99 latency"] == 20_000  # us
    assert row["Client Send"] == 100
    assert row["Client Recv"] == 50
    assert row["Avg latency"] == 20_000


def test_failed_requests_are_not_measured() -> None:
    records = [*_steady(1, 10, 3), Record(1500 * MS, 1501 * MS, False, error="http 502")]
    row = perf_row(1, records, int(3 / 1.2 * 1000) * MS, None)
    assert row["p50 latency"] == 10_000  # the 1 ms failure is not among the latencies


def test_server_columns_from_statistics_deltas() -> None:
    start = {"queue": {"count": 10, "ns": 10 * 5 * MS}, "compute_input": {"count": 10, "ns": 10_000},
             "compute_infer": {"count": 10, "ns": 10 * 20 * MS}, "compute_output": {"count": 10, "ns": 10_000}}
    end = {"queue": {"count": 110, "ns": 10 * 5 * MS + 100 * 30 * MS}, "compute_input": {"count": 110, "ns": 10_000 + 100 * 100_000},
           "compute_infer": {"count": 110, "ns": 10 * 20 * MS + 100 * 20 * MS}, "compute_output": {"count": 110, "ns": 10_000 + 100 * 50_000}}
    delta = stats_delta(start, end)
    assert delta["queue"] == {"count": 100, "ns": 100 * 30 * MS}
    # client: 60 ms per request, 0.1 ms send, 0.05 ms recv; server: 30 ms queue + 0.1 + 20 + 0.05 ms compute
    records = [Record(k * 60 * MS, (k + 1) * 60 * MS, True, send_ns=100_000, recv_ns=50_000) for k in range(100)]
    row = perf_row(1, records, 5_000 * MS, delta)
    assert row["Server Queue"] == 30_000
    assert row["Server Compute Input"] == 100
    assert row["Server Compute Infer"] == 20_000
    assert row["Server Compute Output"] == 50
    # 60 - 0.1 - 0.05 - (30 + 20.15) ms = 9.7 ms
    assert row["Network+Server Send/Recv"] == 9_700
    # more accounted on the server than the client waited: capped at 0, as perf_analyzer does
    slow = stats_delta({}, {"queue": {"count": 1, "ns": 100 * MS}})
    assert perf_row(1, records, 5_000 * MS, slow)["Network+Server Send/Recv"] == 0


def test_statistics_of_a_pod_that_appears_count_from_zero() -> None:
    a0 = {"queue": {"count": 5, "ns": 500}}
    a1 = {"queue": {"count": 15, "ns": 1500}}
    b1 = {"queue": {"count": 3, "ns": 900}}
    total = summed_delta({"a": a0}, {"a": a1, "b": b1})
    assert total["queue"] == {"count": 13, "ns": 1900}


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_real_run_against_one_triton(tmp_path: Path, protocol: str) -> None:
    """2 outstanding requests on a 20 ms model with one instance: one runs, one waits, so the server queue time per
    request is about the service time, and throughput about 1 / service time; all columns present, none failed."""
    repo = write_model_repository(tmp_path / "models", delay_ms=20, name="sleeper")
    with triton_server(repo) as triton:
        url = f"{triton.host}:{triton.http_port if protocol == 'http' else triton.grpc_port}"
        load = ConcurrencyLoad(url, protocol, "sleeper", 2, stats_urls=[triton.http_url])
        row: Dict[str, object] = load.run_step(3.0)
    assert row["failed"] == 0, row["errors"]
    assert set(COLUMNS) <= set(row)
    ips = float(row["Inferences/Second"])  # type: ignore[arg-type]
    assert 20 <= ips <= 52, row  # at most 1 / 20 ms = 50/s (+ the window's edge)
    queue = float(row["Server Queue"])  # type: ignore[arg-type]
    infer = float(row["Server Compute Infer"])  # type: ignore[arg-type]
    assert 18_000 <= infer <= 40_000, row
    assert 0.5 * infer <= queue <= 1.5 * infer, row  # one request waits while the other runs
    p50, p99 = float(row["p50 latency"]), float(row["p99 latency"])  # type: ignore[arg-type]
    assert infer <= p50 <= p99, row
