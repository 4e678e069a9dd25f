# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/_loadtest_sample.py: one sample read off the API objects' documented shapes (autoscaling/v2 HPA status,
custom.metrics.k8s.io MetricValueList, Prometheus' /api/v1/query vector, the NGINX Plus API's upstream peers, batch/v1 Job
conditions), the bounded sampling loop, the events read off consecutive samples, and the module's option checks."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._loadtest_sample import (
    Sampler,
    derive_events,
    hpa_settings,
    plus_peers,
    sample_until,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import Response, Transport
from ansible_collections.gpu_ops.mig_serving.plugins.modules.loadtest_sample import check_params

NS = "triton"
SELECTOR = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton"}
PODS = {"triton-7c9d8b6f5-x2k4p": "10.1.0.11", "triton-7c9d8b6f5-m8q3z": "10.1.0.12"}
HPA = {  # as the HPA controller writes it (pkg/controller/podautoscaler: currentMetrics with the average as a Quantity)
    "spec": {"minReplicas": 1, "maxReplicas": 7, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
             "metrics": [{"type": "Pods", "pods": {"metric": {"name": "avg_time_queue_us"}, "target": {"type": "AverageValue", "averageValue": "2k"}}}]},
    "status": {"currentReplicas": 2, "desiredReplicas": 3,
               "currentMetrics": [{"type": "Pods", "pods": {"metric": {"name": "avg_time_queue_us"}, "current": {"averageValue": "2500500m"}}}]},
}


def pod(name: str, ip: str, ready: bool = True, phase: str = "Running") -> Dict[str, Any]:
    return {"metadata": {"name": name, "labels": SELECTOR, "creationTimestamp": "2026-01-31T12:00:00Z"},
            "status": {"phase": phase, "podIP": ip, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


class FakeApi(Transport):
    def __init__(self, routes: Mapping[str, Tuple[int, Any]]) -> None:
        self.routes = dict(routes)
        self.calls: List[Tuple[str, Optional[Mapping[str, str]]]] = []

    def request(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                base: Optional[str] = None) -> Response:
        self.calls.append((path, query))
        status, answer = self.routes.get(path, (404, {"kind": "Status", "reason": "NotFound", "message": "not found"}))
        if callable(answer):
            answer = answer(query or {})
        return Response(status, answer.encode() if isinstance(answer, str) else json.dumps(answer).encode())


def base_routes() -> Dict[str, Tuple[int, Any]]:
    return {
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/triton": (200, HPA),
        f"/apis/apps/v1/namespaces/{NS}/deployments/triton": (200, {"spec": {"selector": {"matchLabels": SELECTOR}}}),
        f"/api/v1/namespaces/{NS}/pods": (200, {"items": [pod(n, ip) for n, ip in PODS.items()] + [pod("triton-7c9d8b6f5-new01", "10.1.0.13", ready=False)]}),
        "/apis/apiregistration.k8s.io/v1/apiservices": (200, {"items": [{
            "metadata": {"name": "v1beta1.custom.metrics.k8s.io"}, "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1", "versionPriority": 100},
            "status": {"conditions": [{"type": "Available", "status": "True"}]}}]}),
        f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods/*/avg_time_queue_us": (200, {"kind": "MetricValueList", "items": [
            {"describedObject": {"kind": "Pod", "namespace": NS, "name": "triton-7c9d8b6f5-x2k4p"}, "metricName": "avg_time_queue_us", "value": "3k"},
            {"describedObject": {"kind": "Pod", "namespace": NS, "name": "triton-7c9d8b6f5-m8q3z"}, "metricName": "avg_time_queue_us", "value": "2001m"}]}),
    }


PARAMS: Dict[str, Any] = {"namespace": NS, "deployment": "triton", "hpa_name": "triton", "metric_name": "avg_time_queue_us",
                          "queue_source": "custom_metrics", "metric_series": "namespace_pod:nv_inference_queue_duration_us:per_request",
                          "model": "demo", "prometheus_service": {"namespace": "monitoring", "name": "kube-prometheus-stack-prometheus", "port": 9090},
                          "lb_edition": "oss", "lb_namespace": NS, "lb_deployment": "nginx-lb", "lb_status_port": 8080, "lb_plus_api_version": 9,
                          "lb_upstreams": ["triton_http", "triton_grpc"], "job_name": "triton-loadtest", "job_namespace": NS}
PROM = "/api/v1/namespaces/monitoring/services/kube-prometheus-stack-prometheus:9090/proxy/api/v1/query"


def prometheus(query: Mapping[str, str]) -> Dict[str, Any]:
    """Prometheus' instant query answer (a vector: metric labels and [time, "value"])."""
    q = query["query"]
    if "nv_inference_request_success" in q:
        assert 'namespace="triton",model="demo"' in q
        assert q.startswith("sum by (pod)")
        result = [{"metric": {"pod": "triton-7c9d8b6f5-x2k4p"}, "value": [1.0, "1532"]}, {"metric": {"pod": "triton-7c9d8b6f5-m8q3z"}, "value": [1.0, "17"]}]
    elif "nv_inference_request_failure" in q:
        result = [{"metric": {"pod": "triton-7c9d8b6f5-x2k4p"}, "value": [1.0, "2"]}]
    else:
        result = [{"metric": {"pod": "triton-7c9d8b6f5-x2k4p"}, "value": [1.0, "NaN"]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_one_sample_oss() -> None:
    routes = base_routes()
    routes[PROM] = (200, prometheus)
    api = FakeApi(routes)
    s = Sampler(api, PARAMS, clock=lambda: 1012.5).sample(started=1000.0)
    assert s == {"t": 12.5, "hpa_current": 2, "hpa_desired": 3, "metric_us": 2500.5,
                 "queue_us": {"triton-7c9d8b6f5-m8q3z": 2.001, "triton-7c9d8b6f5-x2k4p": 3000.0},
                 "requests": {"triton-7c9d8b6f5-m8q3z": 17, "triton-7c9d8b6f5-x2k4p": 1532}, "ready_pods": 2, "failed": 2}
    # the custom metric is read for the Deployment's pods (its selector), as the HPA controller reads it
    metric_calls = [q for p, q in api.calls if "custom.metrics" in p and p.endswith("avg_time_queue_us")]
    assert metric_calls == [{"labelSelector": "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton"}]


def test_one_sample_plus_sums_peers_over_the_lb_pods() -> None:
    routes = base_routes()
    routes[f"/apis/apps/v1/namespaces/{NS}/deployments/nginx-lb"] = (200, {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "nginx-lb"}}}})
    lb_pods = [pod("nginx-lb-1", "10.1.1.1"), pod("nginx-lb-2", "10.1.1.2"), pod("nginx-lb-3", "10.1.1.3", phase="Pending")]

    def pods(query: Mapping[str, str]) -> Dict[str, Any]:
        if query.get("labelSelector") == "app.kubernetes.io/name=nginx-lb":
            return {"items": lb_pods}
        return {"items": [pod(n, ip) for n, ip in PODS.items()]}

    routes[f"/api/v1/namespaces/{NS}/pods"] = (200, pods)
    # GET /api/9/http/upstreams/<name>: peers with server (address:port), requests and responses by class
    for lb in ("nginx-lb-1", "nginx-lb-2"):
        for upstream, port in (("triton_http", 8000), ("triton_grpc", 8001)):
            routes[f"/api/v1/namespaces/{NS}/pods/{lb}:8080/proxy/api/9/http/upstreams/{upstream}"] = (200, {"zone": upstream, "peers": [
                {"id": 0, "server": f"10.1.0.11:{port}", "name": f"triton-headless.triton.svc.cluster.local:{port}", "state": "up", "requests": 100,
                 "responses": {"1xx": 0, "2xx": 99, "3xx": 0, "4xx": 0, "5xx": 1, "total": 100}},
                {"id": 1, "server": f"10.1.0.99:{port}", "requests": 5, "responses": {"5xx": 0}},
            ]})
    params = {**PARAMS, "lb_edition": "plus"}
    s = Sampler(FakeApi(routes), params, clock=lambda: 5.0).sample(started=0.0)
    # 2 running LB pods x 2 upstreams x 100 to pod .11; an address no ready Triton pod has is kept as the address
    assert s["requests"] == {"10.1.0.99:8000": 10, "10.1.0.99:8001": 10, "triton-7c9d8b6f5-x2k4p": 400}
    assert s["failed"] == 4


def test_a_source_that_fails_leaves_its_values_empty_and_says_why() -> None:
    routes = base_routes()
    routes[PROM] = (503, {"kind": "Status", "message": "no endpoints available for service"})
    del routes[f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/triton"]
    sampler = Sampler(FakeApi(routes), PARAMS, clock=lambda: 1.0)
    s = sampler.sample(started=0.0)
    assert (s["hpa_current"], s["hpa_desired"], s["metric_us"], s["requests"], s["failed"]) == (None, None, None, {}, None)
    assert s["ready_pods"] == 2
    assert len(s["queue_us"]) == 2
    assert "answered 404" in sampler.errors["hpa"]
    assert "answered 503" in sampler.errors["requests"]


@pytest.mark.parametrize(("conditions", "phase", "expected"), [
    ([], "Pending", ("pending", False)),
    ([], "Running", ("running", False)),
    ([{"type": "Complete", "status": "True"}], "Succeeded", ("succeeded", True)),
    ([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}], "Failed",
     ("failed", True)),
    ([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}], "Running", ("failed", True)),
    ([], "Succeeded", ("succeeded", True)),  # the Job controller's condition lags the pod's phase
])
def test_job_state(conditions: List[Dict[str, Any]], phase: str, expected: Tuple[str, bool]) -> None:
    routes = {f"/apis/batch/v1/namespaces/{NS}/jobs/triton-loadtest": (200, {
        "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}}, "status": {"conditions": conditions}}),
        f"/api/v1/namespaces/{NS}/pods": (200, {"items": [pod("triton-loadtest-abcde", "10.1.2.3", phase=phase)]})}
    job = Sampler(FakeApi(routes), PARAMS).job()
    assert (job["phase"], job["finished"]) == expected
    assert job["pod"] == "triton-loadtest-abcde"


def test_job_pod_waiting_reason_is_reported() -> None:
    waiting = pod("triton-loadtest-abcde", "", phase="Pending")
    waiting["status"]["containerStatuses"] = [{"name": "perf-analyzer", "state": {"waiting": {"reason": "ErrImagePull", "message": "unauthorized"}}}]
    routes = {f"/apis/batch/v1/namespaces/{NS}/jobs/triton-loadtest": (200, {"spec": {}, "status": {}}),
              f"/api/v1/namespaces/{NS}/pods": (200, {"items": [waiting]})}
    job = Sampler(FakeApi(routes), PARAMS).job()
    assert job["phase"] == "pending"
    assert job["waiting"] == "ErrImagePull: unauthorized"


def test_sample_until_is_bounded_and_stops_when_the_job_finished() -> None:
    routes = base_routes()
    routes[PROM] = (200, prometheus)
    phases = iter(["Pending", "Running", "Running", "Succeeded"] + ["Succeeded"] * 50)
    routes[f"/apis/batch/v1/namespaces/{NS}/jobs/triton-loadtest"] = (200, {"spec": {"selector": {"matchLabels": {"job-name": "triton-loadtest"}}}})
    pods_route = routes[f"/api/v1/namespaces/{NS}/pods"][1]

    def pods(query: Mapping[str, str]) -> Any:
        if query.get("labelSelector") == "job-name=triton-loadtest":
            return {"items": [pod("triton-loadtest-abcde", "", phase=next(phases))]}
        return pods_route

    routes[f"/api/v1/namespaces/{NS}/pods"] = (200, pods)
    clock = {"now": 0.0}
    sleeps: List[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock["now"] += seconds

    sampler = Sampler(FakeApi(routes), PARAMS, clock=lambda: clock["now"])
    out = sample_until(sampler, started=0.0, until="job_running", duration=100, interval=5, sleep=sleep, monotonic=lambda: clock["now"])
    assert out["reached"]
    assert len(out["samples"]) == 2
    assert out["job"]["phase"] == "running"
    out = sample_until(sampler, started=0.0, until="job_finished", duration=100, interval=5, sleep=sleep, monotonic=lambda: clock["now"])
    assert out["reached"]
    assert [s["t"] for s in out["samples"]] == [5.0, 10.0]
    assert out["job"]["phase"] == "succeeded"
    assert out["hpa_settings"] == {"min_replicas": 1, "max_replicas": 7, "target_queue_us": 2000.0, "metric": "avg_time_queue_us"}
    # a Job that never finishes: at most duration / interval + 1 samples, then not reached
    never = Sampler(FakeApi({**routes, f"/api/v1/namespaces/{NS}/pods": (200, {"items": []})}), PARAMS, clock=lambda: clock["now"])
    out = sample_until(never, started=0.0, until="job_finished", duration=20, interval=5, sleep=sleep, monotonic=lambda: clock["now"])
    assert not out["reached"]
    assert len(out["samples"]) == 5


def test_hpa_settings_of_a_keda_hpa() -> None:
    """KEDA's HPA scales on an External metric with an AverageValue target (the ScaledObject's threshold)."""
    spec = {"minReplicas": 1, "maxReplicas": 4, "metrics": [{"type": "External", "external": {
        "metric": {"name": "s0-prometheus"}, "target": {"type": "AverageValue", "averageValue": "2k"}}}]}
    assert hpa_settings(spec) == {"min_replicas": 1, "max_replicas": 4, "target_queue_us": 2000.0, "metric": "s0-prometheus"}


def test_plus_peers_skips_peers_without_counters() -> None:
    assert plus_peers({"peers": [{"server": "10.0.0.1:8000", "requests": 3, "responses": {"5xx": 1}}, {"server": "backup"}, "junk"]}) == [
        ("10.0.0.1:8000", 3, 1)]


def test_events_read_off_the_samples() -> None:
    samples = [
        {"t": 0, "hpa_current": 1, "hpa_desired": 1, "metric_us": 100.0, "ready_pods": 1, "requests": {"a": 10}},
        {"t": 5, "hpa_current": 1, "hpa_desired": 2, "metric_us": 3000.0, "ready_pods": 1, "requests": {"a": 50}},
        {"t": 10, "hpa_current": 2, "hpa_desired": 2, "metric_us": 2500.0, "ready_pods": 2, "requests": {"a": 90, "b": 0}},
        {"t": 15, "hpa_current": 2, "hpa_desired": 2, "metric_us": 900.0, "ready_pods": 2, "requests": {"a": 120, "b": 12}},
    ]
    events = [(e["t"], e["event"]) for e in derive_events(samples, 2000.0)]
    assert events == [(5, "metric_over_target"), (5, "scale_up_decided"), (10, "replicas_changed"), (10, "pod_ready"),
                      (15, "metric_under_target"), (15, "first_request")]


@pytest.mark.parametrize(("change", "message"), [
    ({"interval": 0}, "interval must be > 0"),
    ({"stop_when": "job_finished", "job_name": ""}, "stop_when=job_finished needs job_name"),
    ({"finish": True, "job_name": ""}, "finish needs job_name"),
    ({"prometheus_service": {"namespace": "monitoring"}}, "prometheus_service needs namespace, name and port"),
    ({"prometheus_service": {"namespace": "m", "name": "p", "port": 9090, "scheme": "ftp"}}, "prometheus_service.scheme"),
])
def test_module_option_checks(change: Dict[str, Any], message: str) -> None:
    params = {**PARAMS, "stop_when": "duration", "duration": 60.0, "interval": 5.0, "timeout": 15, "finish": False, **change}
    assert message in check_params(params)
    assert check_params({**PARAMS, "stop_when": "duration", "duration": 60.0, "interval": 5.0, "timeout": 15, "finish": False}) == ""


STATS = f"/api/v1/namespaces/{NS}/services/nginx-lb:http/proxy/v2/models/demo/stats"
# what role nginx_lb answers to a path not on its allow-list (roles/nginx_lb/templates/nginx.conf.j2), and what Triton
# answers for a model it does not serve (its JSON {"error": ...}; HTTP 400 for an unknown model in Triton 24.x)
REFUSED = {"error": "forbidden by the load balancer: it passes only inference, model metadata and health endpoints to Triton"}


@pytest.mark.parametrize(("answer", "expected"), [
    ((200, {"model_stats": [{"name": "demo", "version": "1", "inference_count": 0}]}), ""),
    ((403, REFUSED), "refused GET /v2/models/demo/stats (403 forbidden by the load balancer"),
    ((400, {"error": "requested model 'demo' is not available"}), "Triton has no model 'demo' ready behind the load balancer triton/nginx-lb"),
    ((404, {"error": "Not Found"}), "answered 404 Not Found. Set loadtest_model"),
    ((503, {"kind": "Status", "message": 'no endpoints available for service "nginx-lb:http"'}),
     "cannot be reached through the API server's service proxy: 503 no endpoints available"),
])
def test_probe_statistics_through_the_service_proxy(answer: Tuple[int, Any], expected: str) -> None:
    api = FakeApi({STATS: answer})
    problem = Sampler(api, {**PARAMS, "lb_http_port_name": "http"}).probe_statistics()
    assert api.calls == [(STATS, None)]
    if not expected:
        assert problem == ""
    else:
        assert expected in problem
    if answer[0] == 403:
        assert problem.endswith("set gpu_ops_lb_model_statistics: true and run playbooks/load_balancer.yml (or site.yml) first")


def test_probe_statistics_option_checks() -> None:
    base = {**PARAMS, "stop_when": "duration", "duration": 60.0, "interval": 5.0, "timeout": 15, "finish": False, "probe_statistics": True}
    assert check_params({**base, "model": ""}) == "probe_statistics needs model (the model whose statistics perf_analyzer reads)"
    assert check_params({**base, "prometheus_service": {}}) == ""  # the probe reads no Prometheus
