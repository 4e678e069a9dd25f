# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""module_utils/_loadtest_sample.py: one sample read off the API objects' documented shapes (autoscaling/v2 HPA status,
custom.metrics.k8s.io MetricValueList, Prometheus' /api/v1/query vector, the NGINX Plus API's upstream peers, batch/v1 Job
conditions), the bounded sampling loop, the events read off consecutive samples, and the module's option checks."""
from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._loadtest_sample import (
    Sampler,
    derive_events,
    hpa_settings,
    plus_peers,
    pool_of_pod,
    profile_weight,
    sample_until,
)
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import Response, Transport, VerifyError
from ansible_collections.gpu_ops.mig_serving.plugins.modules.loadtest_sample import check_params

NS = "triton"
SELECTOR = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton"}
SHARED = "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton"
POOL_LABEL = "gpu-ops.io/serving-pool"
# two serving pools (role triton: Deployment <pool>, pods <pool>-<pod-template-hash>-<suffix> labelled with their pool)
P1, P3 = "triton-1g-5gb", "triton-3g-20gb"
PODS = {"triton-1g-5gb-7c9d8b6f5-x2k4p": ("10.1.0.11", P1), "triton-1g-5gb-7c9d8b6f5-m8q3z": ("10.1.0.12", P1),
        "triton-3g-20gb-5d8f7c6b9-q7w2e": ("10.1.0.21", P3)}
A, B, C = PODS  # A: 10.1.0.11 and B of the 1g pool, C of the 3g pool


def hpa(name: str, target: str, current: int, desired: int, value: str, maximum: int = 7, kind: str = "Pods") -> Dict[str, Any]:
    """As the HPA controller writes it (pkg/controller/podautoscaler: currentMetrics with the average as a Quantity)."""
    body = "pods" if kind == "Pods" else "external"
    return {"metadata": {"name": name},
            "spec": {"minReplicas": 1, "maxReplicas": maximum, "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                     "metrics": [{"type": kind, body: {"metric": {"name": "avg_time_queue_us"}, "target": {"type": "AverageValue", "averageValue": "2k"}}}]},
            "status": {"currentReplicas": current, "desiredReplicas": desired,
                       "currentMetrics": [{"type": kind, body: {"metric": {"name": "avg_time_queue_us"}, "current": {"averageValue": value}}}]}}


# pool 1g: 2 pods at 2500.5 us, wants 3; pool 3g: KEDA's HPA (named keda-hpa-<ScaledObject>, found by its scaleTargetRef), 1 pod at 1000 us
HPAS = [hpa(P1, P1, 2, 3, "2500500m"), hpa("keda-hpa-triton-3g-20gb", P3, 1, 1, "1k", maximum=2, kind="External")]


def deployment(name: str, profile: str) -> Dict[str, Any]:
    labels = {**SELECTOR, POOL_LABEL: name}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": {"gpu-ops.io/mig-profile": profile}}}}}


def pod(name: str, ip: str, ready: bool = True, phase: str = "Running", pool: Optional[str] = None) -> Dict[str, Any]:
    labels = {**SELECTOR, POOL_LABEL: pool} if pool else dict(SELECTOR)
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": "2026-01-31T12:00:00Z"},
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


def deployments(query: Mapping[str, str]) -> Dict[str, Any]:
    # the API server filters a list by labelSelector; the pools' Deployments carry the shared labels, the LB's do not
    assert query == {"labelSelector": SHARED}
    return {"kind": "DeploymentList", "items": [deployment(P1, "1g.5gb"), deployment(P3, "3g.20gb")]}


def triton_pods(query: Mapping[str, str]) -> Dict[str, Any]:
    assert query == {"labelSelector": SHARED}
    return {"items": [pod(n, ip, pool=pool) for n, (ip, pool) in PODS.items()]
            + [pod("triton-1g-5gb-7c9d8b6f5-new01", "10.1.0.13", ready=False, pool=P1)]}


def base_routes() -> Dict[str, Tuple[int, Any]]:
    return {
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers": (200, {"kind": "HorizontalPodAutoscalerList", "items": HPAS}),
        f"/apis/apps/v1/namespaces/{NS}/deployments": (200, deployments),
        f"/api/v1/namespaces/{NS}/pods": (200, triton_pods),
        "/apis/apiregistration.k8s.io/v1/apiservices": (200, {"items": [{
            "metadata": {"name": "v1beta1.custom.metrics.k8s.io"}, "spec": {"group": "custom.metrics.k8s.io", "version": "v1beta1", "versionPriority": 100},
            "status": {"conditions": [{"type": "Available", "status": "True"}]}}]}),
        f"/apis/custom.metrics.k8s.io/v1beta1/namespaces/{NS}/pods/*/avg_time_queue_us": (200, {"kind": "MetricValueList", "items": [
            {"describedObject": {"kind": "Pod", "namespace": NS, "name": A}, "metricName": "avg_time_queue_us", "value": "3k"},
            {"describedObject": {"kind": "Pod", "namespace": NS, "name": B}, "metricName": "avg_time_queue_us", "value": "2001m"},
            {"describedObject": {"kind": "Pod", "namespace": NS, "name": C}, "metricName": "avg_time_queue_us", "value": "1k"}]}),
    }


PARAMS: Dict[str, Any] = {"namespace": NS, "instance": "triton", "pools": [], "pool_names": [], "deployment": "", "hpa_name": "",
                          "metric_name": "avg_time_queue_us",
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
        # a pod of the 1g pool that stopped before this sample still has its series (Prometheus keeps it 5 minutes)
        result = [{"metric": {"pod": A}, "value": [1.0, "1532"]}, {"metric": {"pod": B}, "value": [1.0, "17"]},
                  {"metric": {"pod": C}, "value": [1.0, "4610"]}, {"metric": {"pod": "triton-1g-5gb-7c9d8b6f5-gone1"}, "value": [1.0, "40"]}]
    elif "nv_inference_request_failure" in q:
        result = [{"metric": {"pod": A}, "value": [1.0, "2"]}, {"metric": {"pod": C}, "value": [1.0, "1"]}]
    else:
        result = [{"metric": {"pod": A}, "value": [1.0, "NaN"]}]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


def test_one_sample_oss_follows_every_pool_found_by_its_labels() -> None:
    routes = base_routes()
    routes[PROM] = (200, prometheus)
    api = FakeApi(routes)
    sampler = Sampler(api, PARAMS, clock=lambda: 1012.5)
    s = sampler.sample(started=1000.0)
    assert s == {"t": 12.5, "hpa_current": 3, "hpa_desired": 4,
                 # the pools' HPA values averaged over their current replicas: (2 x 2500.5 + 1 x 1000) / 3
                 "metric_us": 2000.333,
                 "queue_us": {A: 3000.0, B: 2.001, C: 1000.0},
                 "requests": {A: 1532, B: 17, C: 4610, "triton-1g-5gb-7c9d8b6f5-gone1": 40}, "ready_pods": 3, "failed": 3,
                 "pools": {P1: {"hpa_current": 2, "hpa_desired": 3, "metric_us": 2500.5, "ready_pods": 2, "pods": [B, A]},
                           P3: {"hpa_current": 1, "hpa_desired": 1, "metric_us": 1000.0, "ready_pods": 1, "pods": [C]}}}
    # the custom metric is read for every pool's pods (the shared labels), as one list
    metric_calls = [q for p, q in api.calls if "custom.metrics" in p and p.endswith("avg_time_queue_us")]
    assert metric_calls == [{"labelSelector": SHARED}]
    # the pools are found once per call, the HPAs are one list per sample
    sampler.sample(started=1000.0)
    assert [p for p, _q in api.calls].count(f"/apis/apps/v1/namespaces/{NS}/deployments") == 1
    assert [p for p, _q in api.calls].count(f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers") == 2
    assert sampler.pool_descriptions() == [
        {"name": P1, "profile": "1g.5gb", "weight": 1, "hpa": P1, "min_replicas": 1, "max_replicas": 7, "target_queue_us": 2000.0},
        {"name": P3, "profile": "3g.20gb", "weight": 3, "hpa": "keda-hpa-triton-3g-20gb", "min_replicas": 1, "max_replicas": 2,
         "target_queue_us": 2000.0}]
    # the run's settings: min and max summed over the pools, their shared target
    assert sampler.hpa_spec == {"min_replicas": 2, "max_replicas": 9, "target_queue_us": 2000.0, "metric": "avg_time_queue_us"}
    assert sampler.errors == {}


def test_pool_names_restrict_the_pools_and_their_pods() -> None:
    routes = base_routes()
    routes[PROM] = (200, prometheus)
    s = Sampler(FakeApi(routes), {**PARAMS, "pool_names": [P3]}, clock=lambda: 5.0).sample(started=0.0)
    assert list(s["pools"]) == [P3]
    assert (s["hpa_current"], s["hpa_desired"], s["metric_us"], s["ready_pods"]) == (1, 1, 1000.0, 1)
    assert s["queue_us"] == {C: 1000.0}
    assert s["requests"] == {C: 4610}
    assert s["failed"] == 1
    with pytest.raises(VerifyError, match=re.escape("pool_names (loadtest_pools) names triton-7g-80gb, not among the Triton Deployments of "
                                                    "triton labelled app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton: "
                                                    "triton-1g-5gb, triton-3g-20gb")):
        Sampler(FakeApi(routes), {**PARAMS, "pool_names": ["triton-7g-80gb"]}).sample(started=0.0)


def test_pools_given_as_gpu_ops_pools_are_not_discovered() -> None:
    """The fact gpu_ops_pools (plugins/module_utils/_serving_pools.py) as the role passes it: its weight is the LB's."""
    routes = base_routes()
    routes[PROM] = (200, prometheus)
    del routes[f"/apis/apps/v1/namespaces/{NS}/deployments"]
    given = [{"name": P1, "headless": f"{P1}-headless", "profile": "1g.5gb", "resource": "nvidia.com/mig-1g.5gb", "slices": 1, "weight": 1,
              "capacity": 7, "max_replicas": 7},
             {"name": P3, "headless": f"{P3}-headless", "profile": "3g.20gb", "resource": "nvidia.com/mig-3g.20gb", "slices": 3, "weight": 5,
              "capacity": 2, "max_replicas": 2}]
    sampler = Sampler(FakeApi(routes), {**PARAMS, "pools": given})
    s = sampler.sample(started=0.0)
    assert sorted(s["pools"]) == [P1, P3]
    assert [(p["name"], p["weight"], p["hpa"]) for p in sampler.pool_descriptions()] == [(P1, 1, P1), (P3, 5, "keda-hpa-triton-3g-20gb")]


def test_discovered_pools_take_the_weight_their_deployment_carries() -> None:
    """Run alone (no gpu_ops_pools), the weight validate.yml gave a pool comes from its Deployment's annotation
    gpu-ops.io/lb-weight (role triton); a Deployment without one, or with one that is not a weight, falls back to
    the profile's compute slices."""
    def with_weight(dep: Dict[str, Any], weight: str) -> Dict[str, Any]:
        return {**dep, "metadata": {**dep["metadata"], "annotations": {"gpu-ops.io/lb-weight": weight}}}

    for weights, expected in ((("2", "5"), [(P1, 2), (P3, 5)]), (("0", "x"), [(P1, 1), (P3, 3)])):
        routes = base_routes()
        routes[PROM] = (200, prometheus)
        items = [with_weight(deployment(P1, "1g.5gb"), weights[0]), with_weight(deployment(P3, "3g.20gb"), weights[1])]
        routes[f"/apis/apps/v1/namespaces/{NS}/deployments"] = (200, {"items": items})
        sampler = Sampler(FakeApi(routes), PARAMS, clock=lambda: 1.0)
        sampler.sample(started=0.0)
        assert [(p["name"], p["weight"]) for p in sampler.pool_descriptions()] == expected


def test_no_pool_found_fails_naming_the_labels() -> None:
    routes = base_routes()
    routes[f"/apis/apps/v1/namespaces/{NS}/deployments"] = (200, {"items": []})
    with pytest.raises(VerifyError, match=re.escape("no serving pool to follow: the Triton Deployments of triton labelled "
                                                    "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton found none")):
        Sampler(FakeApi(routes), PARAMS).sample(started=0.0)


def test_the_single_deployment_of_earlier_releases() -> None:
    """deployment + hpa_name: one pool, its pods by the Deployment's own selector, its HPA by name."""
    old = [pod("triton-7c9d8b6f5-x2k4p", "10.1.0.11"), pod("triton-7c9d8b6f5-m8q3z", "10.1.0.12")]
    routes = {
        f"/apis/apps/v1/namespaces/{NS}/deployments/triton": (200, {"spec": {"selector": {"matchLabels": SELECTOR}}}),
        f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers": (200, {"items": [hpa("triton", "triton", 2, 3, "2500500m")]}),
        f"/api/v1/namespaces/{NS}/pods": (200, {"items": old}),
    }
    params = {**PARAMS, "deployment": "triton", "hpa_name": "triton", "queue_source": "prometheus", "lb_edition": "plus", "lb_upstreams": []}
    routes[PROM] = (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": "triton-7c9d8b6f5-x2k4p"}, "value": [1.0, "2400"]}]}})
    s = Sampler(FakeApi(routes), params, clock=lambda: 1.0).sample(started=0.0)
    assert (s["hpa_current"], s["hpa_desired"], s["metric_us"], s["ready_pods"]) == (2, 3, 2500.5, 2)
    assert s["pools"] == {"triton": {"hpa_current": 2, "hpa_desired": 3, "metric_us": 2500.5, "ready_pods": 2,
                                     "pods": ["triton-7c9d8b6f5-m8q3z", "triton-7c9d8b6f5-x2k4p"]}}
    assert s["queue_us"] == {"triton-7c9d8b6f5-x2k4p": 2400.0}


def test_pool_of_pod_by_the_replicaset_pod_name() -> None:
    pools = ["triton", "triton-3g-20gb"]
    assert pool_of_pod("triton-3g-20gb-5d8f7c6b9-q7w2e", pools) == "triton-3g-20gb"
    assert pool_of_pod("triton-7c9d8b6f5-x2k4p", pools) == "triton"
    assert pool_of_pod("nginx-lb-7c9d8b6f5-x2k4p", pools) is None
    assert (profile_weight("3g.20gb"), profile_weight("1c.3g.20gb"), profile_weight("1g.10gb+me"), profile_weight("bogus"), profile_weight(None)) \
        == (3, 1, 1, None, None)


def test_one_sample_plus_sums_peers_over_the_lb_pods() -> None:
    routes = base_routes()
    routes[f"/apis/apps/v1/namespaces/{NS}/deployments/nginx-lb"] = (200, {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "nginx-lb"}}}})
    lb_pods = [pod("nginx-lb-1", "10.1.1.1"), pod("nginx-lb-2", "10.1.1.2"), pod("nginx-lb-3", "10.1.1.3", phase="Pending")]

    def pods(query: Mapping[str, str]) -> Dict[str, Any]:
        if query.get("labelSelector") == "app.kubernetes.io/name=nginx-lb":
            return {"items": lb_pods}
        return triton_pods(query)

    routes[f"/api/v1/namespaces/{NS}/pods"] = (200, pods)
    # GET /api/9/http/upstreams/<name>: peers with server (address:port), requests and responses by class
    for lb in ("nginx-lb-1", "nginx-lb-2"):
        for upstream, port in (("triton_http", 8000), ("triton_grpc", 8001)):
            routes[f"/api/v1/namespaces/{NS}/pods/{lb}:8080/proxy/api/9/http/upstreams/{upstream}"] = (200, {"zone": upstream, "peers": [
                {"id": 0, "server": f"10.1.0.11:{port}", "name": f"{P1}-headless.triton.svc.cluster.local:{port}", "state": "up", "requests": 100,
                 "responses": {"1xx": 0, "2xx": 99, "3xx": 0, "4xx": 0, "5xx": 1, "total": 100}},
                {"id": 1, "server": f"10.1.0.21:{port}", "requests": 300, "responses": {"5xx": 0}},
                {"id": 2, "server": f"10.1.0.99:{port}", "requests": 5, "responses": {"5xx": 0}},
            ]})
    params = {**PARAMS, "lb_edition": "plus"}
    s = Sampler(FakeApi(routes), params, clock=lambda: 5.0).sample(started=0.0)
    # 2 running LB pods x 2 upstreams; an address no ready Triton pod has is kept as the address
    assert s["requests"] == {"10.1.0.99:8000": 10, "10.1.0.99:8001": 10, A: 400, C: 1200}
    assert s["failed"] == 4
    # restricted to the 3g pool, the 1g pod's peer (named by its pod) is left out, with its failures
    s = Sampler(FakeApi(routes), {**params, "pool_names": [P3]}, clock=lambda: 5.0).sample(started=0.0)
    assert s["requests"] == {"10.1.0.99:8000": 10, "10.1.0.99:8001": 10, C: 1200}
    assert s["failed"] == 0


def test_a_source_that_fails_leaves_its_values_empty_and_says_why() -> None:
    routes = base_routes()
    routes[PROM] = (503, {"kind": "Status", "message": "no endpoints available for service"})
    del routes[f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"]
    sampler = Sampler(FakeApi(routes), PARAMS, clock=lambda: 1.0)
    s = sampler.sample(started=0.0)
    assert (s["hpa_current"], s["hpa_desired"], s["metric_us"], s["requests"], s["failed"]) == (None, None, None, {}, None)
    assert s["ready_pods"] == 3
    assert s["pools"][P1] == {"hpa_current": None, "hpa_desired": None, "metric_us": None, "ready_pods": 2, "pods": [B, A]}
    assert len(s["queue_us"]) == 3
    assert "answered 404" in sampler.errors["hpa"]
    # a pool no HPA scales (triton_autoscaled false, or its HPA not created yet): named, the other pool still read
    routes[f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"] = (200, {"items": HPAS[:1]})
    sampler = Sampler(FakeApi(routes), PARAMS, clock=lambda: 1.0)
    s = sampler.sample(started=0.0)
    assert (s["hpa_current"], s["pools"][P3]["hpa_current"]) == (2, None)
    assert sampler.errors["hpa"] == "no HPA scales Deployment triton/triton-3g-20gb"
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

    def pods(query: Mapping[str, str]) -> Any:
        if query.get("labelSelector") == "job-name=triton-loadtest":
            return {"items": [pod("triton-loadtest-abcde", "", phase=next(phases))]}
        return triton_pods(query)

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
    assert out["hpa_settings"] == {"min_replicas": 2, "max_replicas": 9, "target_queue_us": 2000.0, "metric": "avg_time_queue_us"}
    assert [p["name"] for p in out["pools"]] == [P1, P3]
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


def test_events_of_two_pools_are_each_pools_own() -> None:
    """With two pools the HPA events come from each pool's HPA, against its own target; the totals would hide them."""
    def s(t: float, one: Tuple[int, int, float], three: Tuple[int, int, float], ready: int) -> Dict[str, Any]:
        pools = {P1: {"hpa_current": one[0], "hpa_desired": one[1], "metric_us": one[2]},
                 P3: {"hpa_current": three[0], "hpa_desired": three[1], "metric_us": three[2]}}
        return {"t": t, "hpa_current": one[0] + three[0], "hpa_desired": one[1] + three[1], "metric_us": 0.0, "ready_pods": ready,
                "requests": {}, "pools": pools}

    samples = [s(0, (1, 1, 100.0), (1, 1, 100.0), 2), s(5, (1, 2, 2500.0), (1, 1, 1500.0), 2), s(10, (2, 2, 1000.0), (1, 1, 1500.0), 3)]
    events = [(e["t"], e["event"], e.get("pool")) for e in derive_events(samples, 2000.0, {P3: 1000.0})]
    assert events == [(5, "metric_over_target", P1), (5, "scale_up_decided", P1), (5, "metric_over_target", P3),
                      (10, "metric_under_target", P1), (10, "replicas_changed", P1), (10, "pod_ready", None)]


@pytest.mark.parametrize(("pools", "message"), [
    ([{"profile": "1g.5gb"}], "pools[0].name must name the pool's Deployment, got None"),
    ([{"name": "triton-1g-5gb", "weight": 0}], "pools[0].weight must be an integer >= 1, got 0"),
])
def test_pool_option_checks(pools: List[Dict[str, Any]], message: str) -> None:
    params = {**PARAMS, "stop_when": "duration", "duration": 60.0, "interval": 5.0, "timeout": 15, "finish": False, "pools": pools}
    assert check_params(params) == message
