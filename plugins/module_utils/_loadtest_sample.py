# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: what playbooks/loadtest.yml samples while perf_analyzer runs, and the run it assembles.

Not a public API; may change without notice.

One sample, read-only, through the API server:

* the HPA (``autoscaling/v2``): ``status.currentReplicas``, ``status.desiredReplicas`` and the current average value
  of the Pods metric (``status.currentMetrics``); its ``spec`` gives min/max replicas and the target;
* the Triton pods of the Deployment (its ``spec.selector.matchLabels``): the ready ones, and their pod IPs;
* the metric per pod from the custom metrics API (``custom.metrics.k8s.io``, as prometheus-adapter serves it), or with
  KEDA (no custom metric) the recorded series per pod from Prometheus;
* the requests the load balancer sent to each Triton pod: with NGINX Plus the API's per-peer counters
  (``GET /api/<version>/http/upstreams/<upstream>``: ``peers[].server`` and ``peers[].requests``, summed over the load
  balancer's pods, reached through the API server's pod proxy); with NGINX open source, which counts nothing per
  upstream server, Triton's own per-pod counter ``nv_inference_request_success`` from Prometheus (every request
  reaches Triton through the load balancer, so what each pod served is what the load balancer sent it);
* the load generator: the Job's conditions and its pod's phase.

The Job's pod prints marker lines (``LOADTEST step-start ...``, ``LOADTEST step-end ... rc=N``, the CSV perf_analyzer
wrote with ``-f`` between ``LOADTEST csv-begin`` and ``LOADTEST csv-end``); ``parse_job_log`` turns its log into the
run's steps and ``build_run`` assembles the run (the schema the report code reads).
"""
from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import (
    CUSTOM_METRICS_GROUP,
    Transport,
    Verifier,
    VerifyError,
    parse_quantity,
    pod_ready,
    selector_string,
)

MARKER = "LOADTEST"
_STEP = re.compile(r"^LOADTEST (?P<kind>step-start|step-end) (?P<fields>.*)$")
_FIELD = re.compile(r"(?P<key>[a-z_]+)=(?P<value>\S+)")


class SampleError(Exception):
    """Bad input the module refuses before any request."""


# What the load test needs of the load balancer: perf_analyzer reads the model's statistics between its measurements
# (inference_profiler.cc: with the server's "statistics" extension it asks for them in every Measure() and stops on
# an error), which role nginx_lb refuses unless the shared variable turns them on.
STATISTICS_ADVICE = ("playbooks/loadtest.yml needs the load balancer to pass model statistics (perf_analyzer reads them between "
                     "measurements): set gpu_ops_lb_model_statistics: true and run playbooks/load_balancer.yml (or site.yml) first")


# --- the pieces of one sample --------------------------------------------------------------------------------


class Sampler:
    """Reads one sample at a time through ``transport`` (the module's KubeTransport, a fake one in unit tests).

    ``params``: the module's options (namespace, deployment, hpa_name, metric_name, queue_source,
    metric_series, model, lb_edition, lb_namespace, lb_deployment, lb_status_port, lb_plus_api_version,
    lb_upstreams, prometheus_service, job_name, job_namespace)."""

    def __init__(self, transport: Transport, params: Mapping[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.t = transport
        self.p = params
        self.ns = str(params["namespace"])
        self.clock = clock
        self.verifier = Verifier(transport, {"namespace": self.ns, "triton_deployment": params["deployment"],
                                             "triton_selector": params.get("triton_selector") or {}, "metric_name": params["metric_name"]})
        self.metrics_version: Optional[str] = None
        self.errors: Dict[str, str] = {}  # source -> the last error seen (reported as warnings)
        self.hpa_spec: Dict[str, Any] = {}

    def _get(self, path: str, query: Optional[Mapping[str, str]] = None) -> Tuple[int, Any]:
        resp = self.t.request("GET", path, query)
        return resp.status, resp.json()

    def _error(self, source: str, message: str) -> None:
        self.errors[source] = message

    # -- the HPA

    def hpa(self) -> Tuple[Optional[int], Optional[int], Optional[float]]:
        name = str(self.p.get("hpa_name") or "")
        if not name:
            return None, None, None
        status, hpa = self._get(f"/apis/autoscaling/v2/namespaces/{self.ns}/horizontalpodautoscalers/{quote(name, safe='')}")
        if status != 200 or not isinstance(hpa, dict):
            self._error("hpa", f"reading HPA {self.ns}/{name}: answered {status}")
            return None, None, None
        spec, st = hpa.get("spec") or {}, hpa.get("status") or {}
        self.hpa_spec = hpa_settings(spec)
        value: Optional[float] = None
        for entry in st.get("currentMetrics") or []:
            kind = str(entry.get("type", ""))
            body = entry.get(kind.lower()) or {}
            if kind in ("Pods", "External", "Object") and body:
                current = body.get("current") or {}
                quantity = current.get("averageValue", current.get("value"))
                if quantity is not None:
                    try:
                        value = parse_quantity(quantity)
                    except ValueError as exc:
                        self._error("hpa", f"HPA {self.ns}/{name}: {exc}")
                    break
        current_replicas = st.get("currentReplicas")
        desired = st.get("desiredReplicas")
        return (int(current_replicas) if current_replicas is not None else None,
                int(desired) if desired is not None else None, value)

    # -- the Triton pods

    def triton_pods(self) -> Optional[Dict[str, str]]:
        """{ready pod: pod IP} of the Triton Deployment; None when they cannot be read."""
        _ready, _unready, error = self.verifier.triton_pods()
        if error:
            self._error("pods", error)
            return None
        status, pods = self._get(f"/api/v1/namespaces/{self.ns}/pods", {"labelSelector": selector_string(self.verifier.selector)})
        ips: Dict[str, str] = {}
        if status == 200 and isinstance(pods, dict):
            for pod in pods.get("items") or []:
                if pod_ready(pod):
                    ips[str(pod["metadata"]["name"])] = str((pod.get("status") or {}).get("podIP") or "")
        return ips

    # -- the metric per pod

    def queue_us(self) -> Dict[str, float]:
        if self.p.get("queue_source") == "prometheus":
            series = str(self.p["metric_series"])
            query = f'{series}{{namespace="{self.ns}"}}'
            return self.prometheus_by_pod(query, "queue")
        if self.metrics_version is None:
            version, _apiservice, error = self.verifier.metrics_api_version()
            if error or not version:
                self._error("queue", error or "custom metrics API: no version")
                return {}
            self.metrics_version = version
        metric = str(self.p["metric_name"])
        path = f"/apis/{CUSTOM_METRICS_GROUP}/{self.metrics_version}/namespaces/{self.ns}/pods/*/{quote(metric, safe='')}"
        status, body = self._get(path, {"labelSelector": selector_string(self.verifier.selector)})
        if status != 200 or not isinstance(body, dict):
            self._error("queue", f"custom metrics API {path}: answered {status}")
            return {}
        out: Dict[str, float] = {}
        for item in body.get("items") or []:
            obj = item.get("describedObject") or {}
            if obj.get("kind") != "Pod":
                continue
            try:
                out[str(obj.get("name"))] = parse_quantity(item.get("value"))
            except ValueError as exc:
                self._error("queue", f"custom metrics API, pod {obj.get('name')}: {exc}")
        return out

    # -- Prometheus, through the API server's service proxy

    def prometheus_query(self, query: str) -> List[Dict[str, Any]]:
        svc = self.p.get("prometheus_service") or {}
        scheme = "https:" if svc.get("scheme") == "https" else ""  # the service proxy's [scheme:]name:port
        path = f"/api/v1/namespaces/{svc['namespace']}/services/{scheme}{svc['name']}:{svc['port']}/proxy/api/v1/query"
        status, body = self._get(path, {"query": query})
        if status != 200 or not isinstance(body, dict) or body.get("status") != "success":
            detail = body.get("error") if isinstance(body, dict) else str(body)[:200]
            raise VerifyError(f"Prometheus {svc.get('namespace')}/{svc.get('name')}:{svc.get('port')} query {query!r}: answered {status} {detail}")
        return list((body.get("data") or {}).get("result") or [])

    def prometheus_by_pod(self, query: str, source: str) -> Dict[str, float]:
        try:
            result = self.prometheus_query(query)
        except VerifyError as exc:
            self._error(source, str(exc))
            return {}
        out: Dict[str, float] = {}
        for item in result:
            pod = (item.get("metric") or {}).get("pod")
            try:
                value = float(item["value"][1])
            except (KeyError, IndexError, TypeError, ValueError):
                continue
            if pod and not math.isnan(value):  # NaN (no requests in the window) is no value
                out[str(pod)] = value
        return out

    # -- the load balancer's requests per Triton pod

    def requests(self, ips: Mapping[str, str]) -> Tuple[Dict[str, int], Optional[int]]:
        """({Triton pod: requests so far}, failed requests so far or None)."""
        if self.p.get("lb_edition") == "plus":
            return self.plus_requests(ips)
        model = str(self.p.get("model") or "")
        matcher = f'namespace="{self.ns}"' + (f',model="{model}"' if model else "")
        served = self.prometheus_by_pod(f"sum by (pod) (nv_inference_request_success{{{matcher}}})", "requests")
        failed = self.prometheus_by_pod(f"sum by (pod) (nv_inference_request_failure{{{matcher}}})", "requests")
        return {pod: round(v) for pod, v in sorted(served.items())}, (round(sum(failed.values())) if failed or served else None)

    def plus_requests(self, ips: Mapping[str, str]) -> Tuple[Dict[str, int], Optional[int]]:
        lb_ns = str(self.p.get("lb_namespace") or self.ns)
        lb_name = str(self.p["lb_deployment"])
        status, dep = self._get(f"/apis/apps/v1/namespaces/{lb_ns}/deployments/{quote(lb_name, safe='')}")
        if status != 200 or not isinstance(dep, dict):
            self._error("requests", f"reading the load balancer's Deployment {lb_ns}/{lb_name}: answered {status}")
            return {}, None
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        status, pods = self._get(f"/api/v1/namespaces/{lb_ns}/pods", {"labelSelector": selector_string(labels)})
        if status != 200 or not isinstance(pods, dict):
            self._error("requests", f"listing the load balancer's pods: answered {status}")
            return {}, None
        by_ip = {ip: pod for pod, ip in ips.items() if ip}
        counts: Dict[str, int] = {}
        failed = 0
        version = int(self.p.get("lb_plus_api_version") or 9)
        for pod in pods.get("items") or []:
            if (pod.get("status") or {}).get("phase") != "Running":
                continue
            name = str(pod["metadata"]["name"])
            for upstream in self.p.get("lb_upstreams") or []:
                path = (f"/api/v1/namespaces/{lb_ns}/pods/{name}:{self.p['lb_status_port']}/proxy/api/{version}/http/upstreams/"
                        f"{quote(str(upstream), safe='')}")
                status, body = self._get(path)
                if status != 200 or not isinstance(body, dict):
                    self._error("requests", f"NGINX Plus API of {lb_ns}/{name}, upstream {upstream}: answered {status}")
                    continue
                for peer, requests, errors in plus_peers(body):
                    key = by_ip.get(peer.rsplit(":", 1)[0], peer)
                    counts[key] = counts.get(key, 0) + requests
                    failed += errors
        return dict(sorted(counts.items())), failed

    # -- the load generator

    def job(self) -> Dict[str, Any]:
        name = str(self.p.get("job_name") or "")
        if not name:
            return {"phase": "none", "finished": False, "pod": None}
        ns = str(self.p.get("job_namespace") or self.ns)
        status, job = self._get(f"/apis/batch/v1/namespaces/{ns}/jobs/{quote(name, safe='')}")
        if status == 404:
            return {"phase": "missing", "finished": True, "pod": None, "message": f"Job {ns}/{name} not found"}
        if status != 200 or not isinstance(job, dict):
            self._error("job", f"reading Job {ns}/{name}: answered {status}")
            return {"phase": "unknown", "finished": False, "pod": None}
        conditions = {str(c.get("type")): c for c in (job.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"}
        labels = ((job.get("spec") or {}).get("selector") or {}).get("matchLabels") or {"job-name": name}
        status, pods = self._get(f"/api/v1/namespaces/{ns}/pods", {"labelSelector": selector_string(labels)})
        items = (pods.get("items") or []) if status == 200 and isinstance(pods, dict) else []
        items.sort(key=lambda p: str(p["metadata"].get("creationTimestamp") or ""))
        pod = items[-1] if items else None
        pod_phase = str((pod.get("status") or {}).get("phase") or "Pending") if pod else "Pending"
        out: Dict[str, Any] = {"pod": pod["metadata"]["name"] if pod else None, "pod_phase": pod_phase}
        waiting = [((c.get("state") or {}).get("waiting") or {}) for c in ((pod or {}).get("status") or {}).get("containerStatuses") or []]
        reasons = [f"{w.get('reason')}: {w.get('message', '')}".strip() for w in waiting if w.get("reason")]
        if reasons:
            out["waiting"] = "; ".join(reasons)
        if "Failed" in conditions or pod_phase == "Failed":
            cond = conditions.get("Failed") or {}
            out.update(phase="failed", finished=True, message=f"{cond.get('reason', '')} {cond.get('message', '')}".strip())
        elif "Complete" in conditions or pod_phase == "Succeeded":
            out.update(phase="succeeded", finished=True)
        else:
            out.update(phase="running" if pod_phase == "Running" else "pending", finished=False)
        return out

    def job_log(self, pod: str) -> str:
        ns = str(self.p.get("job_namespace") or self.ns)
        container = str(self.p.get("job_container") or "perf-analyzer")
        resp = self.t.request("GET", f"/api/v1/namespaces/{ns}/pods/{quote(pod, safe='')}/log", {"container": container})
        text = resp.body.decode("utf-8", errors="replace")
        if resp.status != 200:
            raise VerifyError(f"reading the log of pod {ns}/{pod}: answered {resp.status} {text[:300]}")
        return text

    # -- before the load: does the load balancer pass the model's statistics, and does Triton have the model?

    def probe_statistics(self) -> str:
        """GET /v2/models/<model>/stats through the load balancer's client Service, by the API server's service proxy
        (/api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH, the path the API documents for proxying to a Service).
        '' when Triton answered 200; otherwise the problem: the load balancer refused it (403, role nginx_lb's
        allow-list), Triton does not know or serve the model (404, or 400 as Triton answers an unknown or unready model),
        or the API server could not reach the Service (its own Status object)."""
        lb_ns = str(self.p.get("lb_namespace") or self.ns)
        service = str(self.p["lb_deployment"])
        port = str(self.p.get("lb_http_port_name") or "http")
        model = str(self.p.get("model") or "")
        stats = f"/v2/models/{quote(model, safe='')}/stats"
        resp = self.t.request("GET", f"/api/v1/namespaces/{lb_ns}/services/{quote(service, safe='')}:{quote(port, safe='')}/proxy{stats}")
        if resp.status == 200:
            return ""
        body = resp.json()
        if isinstance(body, dict) and body.get("kind") == "Status":  # the API server's own answer, not the backend's
            return (f"The load balancer's Service {lb_ns}/{service} (port {port}) cannot be reached through the API server's service "
                    f"proxy: {resp.status} {body.get('message', '')}".rstrip())
        detail = str(body.get("error", "")) if isinstance(body, dict) else str(body)[:300]
        if resp.status == 403:
            return f"The load balancer {lb_ns}/{service} refused GET {stats} (403 {detail}): {STATISTICS_ADVICE}"
        if resp.status in (400, 404):
            return (f"Triton has no model {model!r} ready behind the load balancer {lb_ns}/{service}: GET {stats} answered "
                    f"{resp.status} {detail}. Set loadtest_model to a READY model of the repository (role triton's demo model "
                    "'demo' with triton_demo_model: true)")
        return f"GET {stats} through the load balancer {lb_ns}/{service} answered {resp.status} {detail}".rstrip()

    # -- one sample

    def sample(self, started: float) -> Dict[str, Any]:
        now = self.clock()
        current, desired, metric = self.hpa()
        ips = self.triton_pods()
        queue = self.queue_us() if ips is not None else {}
        counts, failed = self.requests(ips or {})
        return {"t": round(now - started, 3), "hpa_current": current, "hpa_desired": desired, "metric_us": metric,
                "queue_us": dict(sorted(queue.items())), "requests": counts, "ready_pods": len(ips) if ips is not None else None,
                "failed": failed}


def hpa_settings(spec: Mapping[str, Any]) -> Dict[str, Any]:
    """min/max replicas and the first metric's target (AverageValue or Value) of an autoscaling/v2 HPA spec."""
    out: Dict[str, Any] = {"min_replicas": int(spec.get("minReplicas", 1)), "max_replicas": spec.get("maxReplicas"), "target_queue_us": None}
    for entry in spec.get("metrics") or []:
        body = entry.get(str(entry.get("type", "")).lower()) or {}
        target = body.get("target") or {}
        quantity = target.get("averageValue", target.get("value"))
        if quantity is not None:
            with contextlib.suppress(ValueError):
                out["target_queue_us"] = parse_quantity(quantity)
            out["metric"] = ((body.get("metric") or {}).get("name"))
            break
    return out


def plus_peers(upstream: Mapping[str, Any]) -> List[Tuple[str, int, int]]:
    """(server address, requests, 5xx responses) of each peer of an NGINX Plus API upstream object.

    The NGINX Plus API (ngx_http_api_module) answers GET /api/<version>/http/upstreams/<name> with ``peers``, each
    with ``server`` (address:port), ``requests`` (total client requests forwarded to it) and ``responses`` (by class,
    ``5xx`` among them). A peer without ``requests`` is skipped."""
    out = []
    for peer in upstream.get("peers") or []:
        if not isinstance(peer, dict) or "server" not in peer or not isinstance(peer.get("requests"), int):
            continue
        errors = (peer.get("responses") or {}).get("5xx", 0)
        out.append((str(peer["server"]), int(peer["requests"]), int(errors) if isinstance(errors, int) else 0))
    return out


def sample_until(sampler: Sampler, *, started: float, until: str, duration: float, interval: float,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> Dict[str, Any]:
    """Samples every ``interval`` seconds until ``until`` holds (``duration``: the time is up; ``job_running``: the Job's
    pod runs or the Job finished; ``job_finished``: the Job finished) or ``duration`` seconds passed. Bounded: at most
    duration / interval + 1 samples."""
    deadline = monotonic() + duration
    samples: List[Dict[str, Any]] = []
    job: Dict[str, Any] = {}
    reached = False
    limit = int(duration / interval) + 2 if interval > 0 else 1
    for _round in range(limit):
        samples.append(sampler.sample(started))
        job = sampler.job()
        if (until == "job_running" and (job.get("phase") == "running" or job.get("finished"))) or (until == "job_finished" and job.get("finished")):
            reached = True
        if reached or monotonic() >= deadline:
            break
        sleep(max(0.0, min(interval, deadline - monotonic())))
    if until == "duration":
        reached = True
    return {"samples": samples, "job": job, "reached": reached, "hpa_settings": sampler.hpa_spec, "errors": dict(sampler.errors)}


# --- the Job's log -------------------------------------------------------------------------------------------


def _fields(text: str) -> Dict[str, str]:
    return {m.group("key"): m.group("value") for m in _FIELD.finditer(text)}


def parse_perf_rows(text: str) -> List[Dict[str, float]]:
    """perf_analyzer's ``-f`` CSV: a header line, then one line per concurrency (plus, with server-side stats of a
    composing model, lines that do not start with a number, skipped); every numeric cell as a float."""
    rows: List[Dict[str, float]] = []
    reader = csv.reader(io.StringIO(text.strip()))
    header: Optional[List[str]] = None
    for cells in reader:
        if not cells:
            continue
        if header is None:
            header = [c.strip() for c in cells]
            continue
        row: Dict[str, float] = {}
        for key, cell in zip(header, cells):
            try:
                row[key] = float(cell)
            except ValueError:
                continue
        if row and header[0] in row:
            rows.append(row)
    return rows


def parse_job_log(text: str, started: float) -> List[Dict[str, Any]]:
    """The steps of the Job's log, in order: ``protocol``, ``concurrency``, ``start``/``end`` (seconds since
    ``started``, from the pod's clock), ``rc`` (perf_analyzer's exit status; None when the step never ended) and
    ``perf`` (the CSV row of the step; {} when perf_analyzer wrote none)."""
    steps: List[Dict[str, Any]] = []
    current: Optional[Dict[str, Any]] = None
    csv_lines: Optional[List[str]] = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if csv_lines is not None:
            if line == f"{MARKER} csv-end":
                rows = parse_perf_rows("\n".join(csv_lines))
                if steps and rows:
                    steps[-1]["perf"] = rows[0]
                csv_lines = None
            else:
                csv_lines.append(line)
            continue
        if line == f"{MARKER} csv-begin":
            csv_lines = []
            continue
        match = _STEP.match(line)
        if not match:
            continue
        fields = _fields(match.group("fields"))
        try:
            at = round(float(fields["t"]) - started, 3)
            protocol, concurrency = fields["protocol"], int(fields["concurrency"])
        except (KeyError, ValueError):
            continue
        if match.group("kind") == "step-start":
            current = {"protocol": protocol, "concurrency": concurrency, "start": at, "end": None, "rc": None, "perf": {}}
            steps.append(current)
        elif current is not None and current["protocol"] == protocol and current["concurrency"] == concurrency:
            current["end"] = at
            try:
                current["rc"] = int(fields.get("rc", ""))
            except ValueError:
                current["rc"] = None
            current = None
    return steps


# --- the run ------------------------------------------------------------------------------------------------


def derive_events(samples: Sequence[Mapping[str, Any]], target: Optional[float]) -> List[Dict[str, Any]]:
    """Events read off consecutive samples: metric_over_target / metric_under_target (the HPA's value crossing the
    target), scale_up_decided / scale_down_decided (desiredReplicas moving), replicas_changed (currentReplicas),
    pod_ready (more ready pods) and first_request (a pod that had served nothing serves its first request)."""
    events: List[Dict[str, Any]] = []
    prev: Optional[Mapping[str, Any]] = None
    for s in samples:
        t = s.get("t")
        if prev is not None:
            m0, m1 = prev.get("metric_us"), s.get("metric_us")
            if target is not None and m0 is not None and m1 is not None:
                if m0 <= target < m1:
                    events.append({"t": t, "event": "metric_over_target", "detail": f"{m1:g} us > target {target:g} us"})
                elif m1 <= target < m0:
                    events.append({"t": t, "event": "metric_under_target", "detail": f"{m1:g} us <= target {target:g} us"})
            d0, d1 = prev.get("hpa_desired"), s.get("hpa_desired")
            if d0 is not None and d1 is not None and d1 != d0:
                events.append({"t": t, "event": "scale_up_decided" if d1 > d0 else "scale_down_decided", "detail": f"desired {d0} -> {d1}"})
            c0, c1 = prev.get("hpa_current"), s.get("hpa_current")
            if c0 is not None and c1 is not None and c1 != c0:
                events.append({"t": t, "event": "replicas_changed", "detail": f"current {c0} -> {c1}"})
            r0, r1 = prev.get("ready_pods"), s.get("ready_pods")
            if r0 is not None and r1 is not None and r1 > r0:
                events.append({"t": t, "event": "pod_ready", "detail": f"ready pods {r0} -> {r1}"})
            before = prev.get("requests") or {}
            for pod, count in sorted((s.get("requests") or {}).items()):
                if count > 0 and before.get(pod, 0) == 0:
                    events.append({"t": t, "event": "first_request", "detail": f"{pod} served its first request"})
        prev = s
    return events


def build_run(*, title: str, started_iso: str, started: float, samples: Sequence[Mapping[str, Any]], log_text: str,
              settings: Mapping[str, Any], hpa: Mapping[str, Any]) -> Dict[str, Any]:
    """The run (the report's schema) from the samples, the Job's log and the settings; the HPA's own spec fills
    target_queue_us, min_replicas and max_replicas where the settings leave them out."""
    ordered = sorted(samples, key=lambda s: float(s.get("t") or 0.0))
    merged: Dict[str, Any] = {**{k: v for k, v in hpa.items() if k in ("target_queue_us", "min_replicas", "max_replicas")}, **settings}
    steps = parse_job_log(log_text, started)
    last_t = float(ordered[-1].get("t") or 0.0) if ordered else 0.0
    for step in steps:  # a step the pod never finished (killed, deadline): it ran until the last sample at most
        if step["end"] is None:
            step["end"] = max(step["start"], last_t)
    failed_counts: List[int] = [int(s["failed"]) for s in ordered if isinstance(s.get("failed"), int)]
    failed = max(0, failed_counts[-1] - failed_counts[0]) if len(failed_counts) >= 2 else 0
    events = derive_events(ordered, merged.get("target_queue_us"))
    for step in steps:
        events.append({"t": step["start"], "event": "step_start", "detail": f"{step['protocol']} concurrency {step['concurrency']}"})
        if step["rc"] not in (0, None):
            events.append({"t": step["end"], "event": "perf_analyzer_failed",
                           "detail": f"{step['protocol']} concurrency {step['concurrency']}: exit {step['rc']}"})
    events.sort(key=lambda e: float(e["t"] if e["t"] is not None else 0.0))
    measured = [step for step in steps if step["perf"]]
    return {
        "title": title,
        "source": "cluster",
        "started": started_iso,
        "settings": merged,
        "samples": [dict(s) for s in ordered],
        # the report plots the steps perf_analyzer measured; one that wrote no CSV row is kept apart
        "steps": measured,
        "unmeasured_steps": [step for step in steps if not step["perf"]],
        "events": events,
        "stages": [],
        "failed_requests": failed,
        "perf_failures": [f"{s['protocol']} concurrency {s['concurrency']}: "
                          + (f"perf_analyzer exited {s['rc']}" if s["rc"] is not None else "perf_analyzer did not finish")
                          for s in steps if s["rc"] != 0],
        "job_log": log_text,
    }
