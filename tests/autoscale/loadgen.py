# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A load generator with perf_analyzer's concurrency semantics, on tritonclient (HTTP and gRPC).

perf_analyzer itself cannot be installed on these machines, so this stands in for it in the one-machine demo, and
writes the same CSV columns (``perf_analyzer -f``), so the same report code reads both. What it follows, from
triton-inference-server/client src/c++/perf_analyzer:

- concurrency mode with synchronous calls (concurrency_manager.cc, concurrency_worker.cc): N workers, each with its
  own client connection, each sending its next request as soon as its previous one completed, so exactly N
  requests are outstanding;
- one measurement per step (inference_profiler.cc Measure/MeasurementTimestamp/ValidLatencyMeasurement): the load
  runs 1.2 x the measurement window; the window lies in the middle of the span of the recorded requests; the
  requests that END inside it are the measured ones;
- throughput = measured requests / window (SummarizeClientStat, docs/measurements_metrics.md "How Throughput is
  Calculated"); average latency and the p50/p90/p95/p99 of the sorted measured latencies at index
  ``int(p / 100 * (n - 1) + 0.5)`` (SummarizeLatency);
- Client Send / Client Recv: the average send and receive time of the requests completed during the step; HTTP:
  writing the request (body built with tritonclient's generate_request_body) and reading the response body after
  its headers arrived; gRPC: marshalling the request into its protobuf and unmarshalling the response
  (docs/measurements_metrics.md "How Latency is Calculated");
- the server columns from Triton's statistics extension (GET /v2/models/<model>/stats), deltas between the start and
  the end of the step, averaged per count as report_writer.cc GenerateReport does (Server Queue = queue ns / queue
  count, ...; Network+Server Send/Recv = average latency - send - recv - queue - compute, capped at 0); all values in
  microseconds, truncated to integers as perf_analyzer writes them (ns / 1000 in integer arithmetic).

Through a load balancer, perf_analyzer would ask the LB for the statistics (our nginx refuses that path), so here the
statistics come from the pods themselves (``stats_urls``: the pods' HTTP addresses, summed; a pod that appears
during the step counts from 0, as a fresh server does).

Unlike perf_analyzer, a failed request does not end the run: it is counted (``failed``), and the caller asserts on it.
Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import http.client
import importlib
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

PERCENTILES = (50, 90, 95, 99)
# perf_analyzer -f header without the response cache and without --verbose-csv (report_writer.cc GenerateReport)
COLUMNS = ("Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", "Server Queue",
           "Server Compute Input", "Server Compute Infer", "Server Compute Output", "Client Recv",
           "p50 latency", "p90 latency", "p95 latency", "p99 latency")
# --verbose-csv adds "Avg latency" (percentile unset), "request/response" and "response wait"
VERBOSE_COLUMNS = ("Avg latency", "request/response", "response wait")
STAT_KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")
WINDOW_FACTOR = 1.2  # Measure(): the load runs 1.2 x the measurement window
StatsSource = Union[Sequence[str], Callable[[], Sequence[str]]]


@dataclass(frozen=True)
class Record:
    """One request as the client saw it (time.monotonic_ns()): start/end around the whole call, send and recv times,
    and whether it succeeded (HTTP 200 with the model's output / gRPC OK)."""

    start_ns: int
    end_ns: int
    ok: bool
    send_ns: int = 0
    recv_ns: int = 0
    error: str = ""


# --- the statistics, as perf_analyzer computes them (pure functions: unit-tested) ---------------------------


def measurement_window(records: Sequence[Record], window_ns: int) -> Tuple[int, int]:
    """[start, end) of the measurement window: ``window_ns`` long, in the middle of the span from the first request's
    start to the last one's end (MeasurementTimestamp); it starts at the first request when the span is shorter."""
    if not records:
        return (0, window_ns)
    first = min(r.start_ns for r in records)
    last = max(r.end_ns for r in records)
    offset = 0 if first + window_ns > last else (last - (first + window_ns)) // 2
    start = first + offset
    return (start, start + window_ns)


def percentile_index(percentile: float, count: int) -> int:
    """SummarizeLatency's index into the sorted latencies: ``(p / 100) * (n - 1) + 0.5``, truncated."""
    return int((percentile / 100.0) * (count - 1) + 0.5)


def latency_summary(latencies_ns: Sequence[int]) -> Dict[str, int]:
    """avg and p50/p90/p95/p99 (ns) of the measured latencies; ValueError without any (perf_analyzer: "No valid
    requests recorded within time interval")."""
    if not latencies_ns:
        raise ValueError("no valid requests recorded within the measurement window: use a longer step")
    ordered = sorted(latencies_ns)
    out = {"avg": sum(ordered) // len(ordered)}
    for p in PERCENTILES:
        out[f"p{p}"] = ordered[percentile_index(p, len(ordered))]
    return out


def stats_delta(start: Mapping[str, Mapping[str, int]], end: Mapping[str, Mapping[str, int]]) -> Dict[str, Dict[str, int]]:
    """Per kind {"count", "ns"}: end - start (a kind missing at the start counts from 0)."""
    out: Dict[str, Dict[str, int]] = {}
    for kind in STAT_KINDS:
        e = end.get(kind, {})
        s = start.get(kind, {})
        out[kind] = {key: int(e.get(key, 0)) - int(s.get(key, 0)) for key in ("count", "ns")}
    return out


def _avg(stat: Mapping[str, int]) -> int:
    return stat["ns"] // stat["count"] if stat["count"] > 0 else 0


def perf_row(concurrency: int, records: Sequence[Record], window_ns: int, server: Optional[Mapping[str, Mapping[str, int]]]) -> Dict[str, float]:
    """One perf_analyzer CSV row (COLUMNS + VERBOSE_COLUMNS) from a step's records and the server statistics' delta.

    Only successful requests are measured (perf_analyzer stops at a failure; here failures are reported apart)."""
    ok = [r for r in records if r.ok]
    lo, hi = measurement_window(ok, window_ns)
    measured = [r.end_ns - r.start_ns for r in ok if lo <= r.end_ns <= hi and r.start_ns <= r.end_ns]
    lat = latency_summary(measured)
    send = sum(r.send_ns for r in ok) // len(ok)
    recv = sum(r.recv_ns for r in ok) // len(ok)
    row: Dict[str, float] = {
        "Concurrency": float(concurrency),
        "Inferences/Second": len(measured) / (window_ns / 1e9),
        "Client Send": float(send // 1000),
        "Client Recv": float(recv // 1000),
    }
    for p in PERCENTILES:
        row[f"p{p} latency"] = float(lat[f"p{p}"] // 1000)
    stats = server or stats_delta({}, {})
    queue = _avg(stats["queue"])
    cin, cinf, cout = stats["compute_input"], stats["compute_infer"], stats["compute_output"]
    compute = (cin["ns"] + cinf["ns"] + cout["ns"]) // cin["count"] if cin["count"] > 0 else 0
    accounted = queue + compute + _avg(stats["cache_hit"]) + _avg(stats["cache_miss"])
    wait = lat["avg"] - send - recv
    row["Network+Server Send/Recv"] = float(max(0, wait - accounted) // 1000)
    row["Server Queue"] = float(queue // 1000)
    row["Server Compute Input"] = float(_avg(cin) // 1000)
    row["Server Compute Infer"] = float(_avg(cinf) // 1000)
    row["Server Compute Output"] = float(_avg(cout) // 1000)
    row["Avg latency"] = float(lat["avg"] // 1000)
    request_ns = sum(r.end_ns - r.start_ns for r in ok) // len(ok)
    row["request/response"] = float(send // 1000 + recv // 1000)
    row["response wait"] = float(request_ns // 1000 - send // 1000 - recv // 1000)
    return row


# --- Triton's statistics extension ---------------------------------------------------------------------------


def model_stats(host_port: str, model: str, timeout: float = 5.0) -> Dict[str, Dict[str, int]]:
    """inference_stats of ``model`` (all versions summed) from GET /v2/models/<model>/stats (Triton's statistics
    extension, docs/protocol/extension_statistics.md): {kind: {"count", "ns"}}."""
    with urllib.request.urlopen(f"http://{host_port}/v2/models/{model}/stats", timeout=timeout) as resp:
        body = json.loads(resp.read().decode())
    total: Dict[str, Dict[str, int]] = {kind: {"count": 0, "ns": 0} for kind in STAT_KINDS}
    for entry in body.get("model_stats", []):
        for kind in STAT_KINDS:
            stat = entry.get("inference_stats", {}).get(kind, {})
            total[kind]["count"] += int(stat.get("count", 0))
            total[kind]["ns"] += int(stat.get("ns", 0))
    return total


def _all_stats(urls: Sequence[str], model: str) -> Dict[str, Dict[str, Dict[str, int]]]:
    out = {}
    for url in urls:
        try:
            out[url] = model_stats(url, model)
        except (urllib.error.URLError, OSError, ValueError):
            continue  # a pod going away: its statistics are gone with it
    return out


def summed_delta(start: Mapping[str, Mapping[str, Mapping[str, int]]], end: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Dict[str, Dict[str, int]]:
    """The statistics' delta summed over the pods answering at the end (one that was not there at the start: from 0)."""
    total = stats_delta({}, {})
    for url, stats in end.items():
        delta = stats_delta(start.get(url, {}), stats)
        for kind in STAT_KINDS:
            for key in ("count", "ns"):
                total[kind][key] += max(0, delta[kind][key])  # a restarted server's counters start again at 0
    return total


# --- the clients -------------------------------------------------------------------------------------------


class _HttpWorker:
    """One keep-alive HTTP/1.1 connection; the body built with tritonclient (binary tensor data)."""

    def __init__(self, url: str, model: str, timeout: float) -> None:
        self.host, port = url.rsplit(":", 1)
        self.port, self.model, self.timeout = int(port), model, timeout
        self.httpclient: Any = importlib.import_module("tritonclient.http")
        numpy: Any = importlib.import_module("numpy")
        self.data = numpy.arange(16, dtype=numpy.float32)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def once(self) -> Record:
        start = time.monotonic_ns()
        try:
            inp = self.httpclient.InferInput("INPUT0", [16], "FP32")
            inp.set_data_from_numpy(self.data, binary_data=True)
            body, json_size = self.httpclient.InferenceServerClient.generate_request_body([inp])
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(json_size)}
            self.conn.request("POST", f"/v2/models/{self.model}/infer", body=body, headers=headers)
            sent = time.monotonic_ns()
            resp = self.conn.getresponse()
            first = time.monotonic_ns()
            payload = resp.read()
            header_length = resp.getheader("Inference-Header-Content-Length")
            if resp.status != 200:
                return Record(start, time.monotonic_ns(), False, error=f"http {resp.status}: {payload[:200]!r}")
            result = self.httpclient.InferResult.from_response_body(payload, header_length=int(header_length) if header_length else None)
            out = result.as_numpy("OUTPUT0")
            end = time.monotonic_ns()
            ok = out is not None and out.tolist() == self.data.tolist()
            return Record(start, end, ok, send_ns=sent - start, recv_ns=end - first, error="" if ok else "wrong output")
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            return Record(start, time.monotonic_ns(), False, error=f"http: {exc!r}")

    def close(self) -> None:
        self.conn.close()


class _GrpcWorker:
    """One tritonclient gRPC client (its own channel: one HTTP/2 connection), as a perf_analyzer context."""

    def __init__(self, url: str, model: str, timeout: float) -> None:
        self.grpcclient: Any = importlib.import_module("tritonclient.grpc")
        numpy: Any = importlib.import_module("numpy")
        self.data = numpy.arange(16, dtype=numpy.float32)
        self.client = self.grpcclient.InferenceServerClient(url=url)
        self.model, self.timeout = model, timeout

    def once(self) -> Record:
        start = time.monotonic_ns()
        try:
            inp = self.grpcclient.InferInput("INPUT0", [16], "FP32")
            inp.set_data_from_numpy(self.data)
            sent = time.monotonic_ns()
            result = self.client.infer(self.model, inputs=[inp], client_timeout=self.timeout)
            got = time.monotonic_ns()
            out = result.as_numpy("OUTPUT0")
            end = time.monotonic_ns()
            ok = out is not None and out.tolist() == self.data.tolist()
            return Record(start, end, ok, send_ns=sent - start, recv_ns=end - got, error="" if ok else "wrong output")
        except Exception as exc:  # every gRPC failure counts, whatever its kind (InferenceServerException, RpcError)
            return Record(start, time.monotonic_ns(), False, error=f"grpc: {exc}")

    def close(self) -> None:
        self.client.close()


class ConcurrencyLoad:
    """``concurrency`` requests outstanding on ``model`` at ``url`` (host:port) over ``protocol`` ("http" | "grpc").

    ``run_step(duration_s)`` runs the load for ``duration_s`` (= 1.2 x the measurement window) and returns one
    perf_analyzer CSV row plus "failed" (the requests that failed during the step), "requests" (all completed) and
    "errors" (the first few failure messages). ``stop()`` (from another thread) ends a running step early."""

    def __init__(self, url: str, protocol: str, model: str, concurrency: int, *, stats_urls: Optional[StatsSource] = None,
                 request_timeout_s: float = 30.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be http or grpc, got {protocol!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.url, self.protocol, self.model, self.concurrency = url, protocol, model, concurrency
        self.stats_urls = stats_urls
        self.request_timeout_s = request_timeout_s
        self.records: List[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _urls(self) -> Sequence[str]:
        if self.stats_urls is None:
            return []
        return list(self.stats_urls() if callable(self.stats_urls) else self.stats_urls)

    def _worker(self, deadline_ns: int, out: List[Record]) -> None:
        worker = (_HttpWorker if self.protocol == "http" else _GrpcWorker)(self.url, self.model, self.request_timeout_s)
        try:
            # concurrency_worker.cc: the next request goes out as soon as the previous one completed
            while not self._stop.is_set() and time.monotonic_ns() < deadline_ns:
                record = worker.once()
                with self._lock:
                    out.append(record)
                if not record.ok:
                    self._stop.wait(0.05)  # no busy loop against a refusing server
        finally:
            worker.close()

    def stop(self) -> None:
        self._stop.set()

    def run_step(self, duration_s: float) -> Dict[str, Any]:
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        self._stop.clear()
        urls = self._urls()
        start_stats = _all_stats(urls, self.model)
        step: List[Record] = []
        deadline = time.monotonic_ns() + int(duration_s * 1e9)
        threads = [threading.Thread(target=self._worker, args=(deadline, step), daemon=True) for _slot in range(self.concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:  # bounded: the deadline plus one request's timeout
            thread.join(timeout=duration_s + self.request_timeout_s + 10)
        end_stats = _all_stats(self._urls() or urls, self.model)
        with self._lock:
            records = list(step)
            self.records.extend(records)
        window_ns = int(duration_s / WINDOW_FACTOR * 1e9)
        failed = [r for r in records if not r.ok]
        row: Dict[str, Any] = perf_row(self.concurrency, records, window_ns, summed_delta(start_stats, end_stats) if urls else None)
        row["failed"] = len(failed)
        row["requests"] = len(records)
        row["errors"] = sorted({r.error for r in failed})[:5]
        return row


def csv_row(row: Mapping[str, Any], columns: Sequence[str] = COLUMNS) -> Dict[str, float]:
    """Only the CSV columns of a run_step row (the report's PERF_COLUMNS, in their order)."""
    return {column: float(row[column]) for column in columns if column in row}
