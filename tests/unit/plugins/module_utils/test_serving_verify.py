# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/_serving_verify.py: the request builder, quantities, and the checks against scripted answers."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import (
    Response,
    Transport,
    Verifier,
    failure_message,
    parse_quantity,
    pod_ready,
    zero_request,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0.0), ("1500m", 1.5), ("2", 2.0), ("1.5k", 1500.0), ("50k", 50000.0), ("12345678m", 12345.678), ("250u", 0.00025),
        ("3n", 3e-9), ("64Mi", 64 * 2**20), ("1Ki", 1024.0), ("1e3", 1000.0), ("1E3", 1000.0), ("2E", 2e18), ("-5m", -0.005),
        (".5", 0.5), ("+7", 7.0), ("1G", 1e9),
    ],
)
def test_parse_quantity(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "m", "1.5.2", "1x", "1Kib", "abc", "1 k", "1e", "NaN", "inf", "--1"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="quantity"):
        parse_quantity(text)


def test_zero_request_every_datatype_and_variable_dimensions() -> None:
    metadata = {
        "name": "m",
        "inputs": [
            {"name": "F", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "I", "datatype": "INT64", "shape": [2]},
            {"name": "S", "datatype": "BYTES", "shape": [-1]},
            {"name": "B", "datatype": "BOOL", "shape": [1, -1]},
            {"name": "H", "datatype": "fp16", "shape": ["2", "-1"]},  # strings, lower case: as some clients give them
            {"name": "Z", "datatype": "UINT8", "shape": []},  # a scalar: one element
        ],
    }
    request = zero_request(metadata)
    assert request["inputs"] == [
        {"name": "F", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 0.0, 0.0]},
        {"name": "I", "datatype": "INT64", "shape": [2], "data": [0, 0]},
        {"name": "S", "datatype": "BYTES", "shape": [1], "data": [""]},
        {"name": "B", "datatype": "BOOL", "shape": [1, 1], "data": [False]},
        {"name": "H", "datatype": "FP16", "shape": [2, 1], "data": [0.0, 0.0]},
        {"name": "Z", "datatype": "UINT8", "shape": [], "data": [0]},
    ]
    json.dumps(request)  # serialisable as the request body


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"name": "m", "inputs": []}, "model 'm' declares no inputs"),
        ({"name": "m"}, "model 'm' declares no inputs"),
        ({"name": "m", "inputs": [{"name": "X", "datatype": "COMPLEX", "shape": [1]}]}, "input 'X' has an unknown datatype 'COMPLEX'"),
        ({"name": "m", "inputs": [{"name": "X", "datatype": "FP32", "shape": [-2]}]}, "bad dimension -2"),
        ({"name": "m", "inputs": [{"name": "X", "datatype": "FP32", "shape": 3}]}, "shape must be a list"),
    ],
)
def test_zero_request_rejects(metadata: Dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        zero_request(metadata)


def test_pod_ready() -> None:
    ready = {"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    assert pod_ready(ready)
    assert not pod_ready({"metadata": {"deletionTimestamp": "x"}, "status": ready["status"]})
    assert not pod_ready({"metadata": {}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    assert not pod_ready({"metadata": {}, "status": {}})


# --- the checks against scripted answers -------------------------------------------------------------------

SELECTOR = "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton"
POD = {"metadata": {"name": "triton-a"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
POD_B = {"metadata": {"name": "triton-b"}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
DEPLOYMENT = {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton"}}}}


def apiservice(version: str, priority: int, available: bool, message: str = "all checks passed") -> Dict[str, Any]:
    return {"metadata": {"name": f"{version}.custom.metrics.k8s.io"},
            "spec": {"group": "custom.metrics.k8s.io", "version": version, "versionPriority": priority, "service": {"namespace": "monitoring", "name": "pa"}},
            "status": {"conditions": [{"type": "Available", "status": "True" if available else "False",
                                       "reason": "Passed" if available else "FailedDiscoveryCheck", "message": message}]}}


def metric_list(version: str, values: Mapping[str, str]) -> Dict[str, Any]:
    items = []
    for pod, value in values.items():
        item: Dict[str, Any] = {"describedObject": {"kind": "Pod", "name": pod, "namespace": "triton"}, "value": value, "timestamp": "t"}
        item.update({"metricName": "avg_time_queue_us"} if version == "v1beta1" else {"metric": {"name": "avg_time_queue_us"}})
        items.append(item)
    return {"kind": "MetricValueList", "items": items}


def hpa(metric: str = "avg_time_queue_us", kind: str = "Pods", active: Optional[str] = "True", current: Optional[str] = "1500m") -> Dict[str, Any]:
    key = kind.lower()
    status: Dict[str, Any] = {"currentReplicas": 2, "desiredReplicas": 1, "conditions": [{"type": "AbleToScale", "status": "True"}]}
    if active is not None:
        status["conditions"].append({"type": "ScalingActive", "status": active, "reason": "R", "message": "why"})
    if current is not None:
        status["currentMetrics"] = [{"type": kind, key: {"metric": {"name": metric}, "current": {"averageValue": current}}}]
    return {"spec": {"minReplicas": 1, "maxReplicas": 8, "metrics": [{"type": kind, key: {"metric": {"name": metric}}}]}, "status": status}


class Scripted(Transport):
    """Answers by (method, path); a list answers successive calls in turn (the last one repeats)."""

    def __init__(self, answers: Mapping[Tuple[str, str], Any]) -> None:
        self.answers = {k: (v if isinstance(v, list) else [v]) for k, v in answers.items()}
        self.calls: List[Tuple[str, str, Optional[Mapping[str, str]], Any, Optional[str]]] = []

    def request(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                base: Optional[str] = None) -> Response:
        self.calls.append((method, path, query, body, base))
        queue = self.answers.get((method, path))
        if queue is None:
            return Response(404, json.dumps({"kind": "Status", "reason": "NotFound", "message": f"{path} not scripted"}).encode())
        status, body_out = queue[0] if len(queue) == 1 else queue.pop(0)
        return Response(status, json.dumps(body_out).encode())


PODS_PATH = ("GET", "/api/v1/namespaces/triton/pods")
DEP_PATH = ("GET", "/apis/apps/v1/namespaces/triton/deployments/triton")
APISVC_PATH = ("GET", "/apis/apiregistration.k8s.io/v1/apiservices")
HPA_PATH = ("GET", "/apis/autoscaling/v2/namespaces/triton/horizontalpodautoscalers/triton")


def params(**overrides: Any) -> Dict[str, Any]:
    base = {"namespace": "triton", "triton_deployment": "triton", "triton_selector": {}, "metric_name": "avg_time_queue_us", "hpa_name": "triton",
            "keda_scaled_object": "", "lb_service": "nginx-lb", "lb_namespace": "", "lb_port": "http", "lb_url": "", "model": "",
            "check_custom_metrics": True, "check_hpa": True, "check_lb": False, "retries": 0, "delay": 0}
    base.update(overrides)
    return base


def stack(version: str = "v1beta2", values: Optional[Mapping[str, str]] = None, metrics: Any = None) -> Dict[Tuple[str, str], Any]:
    return {
        DEP_PATH: (200, DEPLOYMENT),
        PODS_PATH: (200, {"items": [POD, POD_B]}),
        APISVC_PATH: (200, {"items": [apiservice("v1beta1", 100, True), apiservice("v1beta2", 200, True)]}),
        ("GET", f"/apis/custom.metrics.k8s.io/{version}/namespaces/triton/pods/*/avg_time_queue_us"):
            metrics if metrics is not None else (200, metric_list(version, values or {"triton-a": "1500m", "triton-b": "0"})),
        HPA_PATH: (200, hpa()),
    }


def test_pass_with_v1beta2_preferred() -> None:
    t = Scripted(stack())
    out = Verifier(t, params()).run()
    assert out["errors"] == {}
    assert out["reports"]["custom_metrics"]["api_version"] == "custom.metrics.k8s.io/v1beta2"
    assert out["reports"]["custom_metrics"]["pods"]["triton-a"]["value"] == 1.5
    assert out["reports"]["hpa"]["current_value"] == 1.5
    assert out["reports"]["hpa"]["scaling_active"] is True
    metric_call = next(c for c in t.calls if "custom.metrics" in c[1] and "pods" in c[1])
    assert metric_call[2] == {"labelSelector": SELECTOR}


def test_v1beta1_format_when_only_it_is_available() -> None:
    answers = stack("v1beta1")
    answers[APISVC_PATH] = (200, {"items": [apiservice("v1beta1", 100, True), apiservice("v1beta2", 200, False, "down")]})
    out = Verifier(Scripted(answers), params()).run()
    assert out["errors"] == {}
    assert out["reports"]["custom_metrics"]["api_version"] == "custom.metrics.k8s.io/v1beta1"


def test_missing_pod_named() -> None:
    out = Verifier(Scripted(stack(values={"triton-a": "3"})), params()).run()
    assert out["errors"]["custom_metrics"] == "custom metrics API lists avg_time_queue_us for 1 of 2 Triton pods: missing triton-b"


def test_aggregator_503_when_the_apiservice_still_says_available() -> None:
    unavailable = (503, {"kind": "Status", "reason": "ServiceUnavailable", "message": "the server is currently unable to handle the request"})
    out = Verifier(Scripted(stack(metrics=unavailable)), params(check_hpa=False)).run()
    assert out["errors"] == {"custom_metrics": "custom metrics API (custom.metrics.k8s.io/v1beta2) answered 503 ServiceUnavailable: "
                                               "the server is currently unable to handle the request"}


def test_no_apiservice_and_unavailable_apiservice() -> None:
    answers = stack()
    answers[APISVC_PATH] = (200, {"items": []})
    out = Verifier(Scripted(answers), params(check_hpa=False)).run()
    assert out["errors"]["custom_metrics"].startswith("no APIService registers custom.metrics.k8s.io")
    answers[APISVC_PATH] = (200, {"items": [apiservice("v1beta1", 100, False, "service/pa in \"monitoring\" is not present")]})
    out = Verifier(Scripted(answers), params(check_hpa=False)).run()
    assert out["errors"]["custom_metrics"] == ('APIService v1beta1.custom.metrics.k8s.io not available: FailedDiscoveryCheck: '
                                               'service/pa in "monitoring" is not present')


def test_no_ready_pod() -> None:
    answers = stack()
    answers[PODS_PATH] = (200, {"items": [{"metadata": {"name": "triton-c"}, "status": {}}]})
    out = Verifier(Scripted(answers), params(check_hpa=False)).run()
    assert out["errors"]["custom_metrics"] == f"no ready Triton pod in triton ({SELECTOR}); not ready: triton-c"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((200, hpa(metric="other")), "HPA triton/triton does not scale on Pods avg_time_queue_us: its metrics are Pods other"),
        ((200, hpa(active="False")), "HPA triton/triton ScalingActive is False (R): why"),
        ((200, hpa(active=None)), "HPA triton/triton has no ScalingActive condition yet (the controller has not synced it)"),
        ((200, hpa(current=None)), "HPA triton/triton reports no current value of Pods metric avg_time_queue_us (status.currentMetrics)"),
        ((404, {"kind": "Status", "reason": "NotFound", "message": 'horizontalpodautoscalers.autoscaling "triton" not found'}),
         'reading HPA triton/triton: 404 NotFound: horizontalpodautoscalers.autoscaling "triton" not found'),
    ],
)
def test_hpa_failures(answer: Tuple[int, Any], message: str) -> None:
    answers = stack()
    answers[HPA_PATH] = answer
    out = Verifier(Scripted(answers), params(check_custom_metrics=False)).run()
    assert out["errors"] == {"hpa": message}


def test_keda_hpa_named_by_the_scaled_object() -> None:
    so = {"spec": {}, "status": {"hpaName": "keda-hpa-triton", "externalMetricNames": ["s0-prometheus"]}}
    answers = {
        ("GET", "/apis/keda.sh/v1alpha1/namespaces/triton/scaledobjects/triton"): (200, so),
        ("GET", "/apis/autoscaling/v2/namespaces/triton/horizontalpodautoscalers/keda-hpa-triton"): (200, hpa("s0-prometheus", "External", current="20k")),
    }
    out = Verifier(Scripted(answers), params(check_custom_metrics=False, hpa_name="", keda_scaled_object="triton")).run()
    assert out["errors"] == {}
    assert out["reports"]["hpa"]["name"] == "keda-hpa-triton"
    assert out["reports"]["hpa"]["current_value"] == 20000.0
    so["status"] = {}  # not reconciled yet: the name KEDA will give it
    not_found = {"kind": "Status", "reason": "NotFound", "message": "not found"}
    answers[("GET", "/apis/autoscaling/v2/namespaces/triton/horizontalpodautoscalers/keda-hpa-triton")] = (404, not_found)
    out = Verifier(Scripted(answers), params(check_custom_metrics=False, hpa_name="", keda_scaled_object="triton")).run()
    assert out["errors"] == {"hpa": "reading HPA triton/keda-hpa-triton: 404 NotFound: not found"}


def lb_answers(prefix: str, infer: Tuple[int, Any]) -> Dict[Tuple[str, str], Any]:
    return {
        ("POST", f"{prefix}/v2/repository/index"): (200, [{"name": "a", "state": "UNAVAILABLE"}, {"name": "echo", "version": "1", "state": "READY"}]),
        ("GET", f"{prefix}/v2/models/echo"): (200, {"name": "echo", "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}]}),
        ("POST", f"{prefix}/v2/models/echo/infer"): infer,
    }


PROXY = "/api/v1/namespaces/triton/services/nginx-lb:http/proxy"


def test_lb_through_the_service_proxy_first_ready_model() -> None:
    t = Scripted(lb_answers(PROXY, (200, {"outputs": [{"name": "OUTPUT0", "data": [0.0]}]})))
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True)).run()
    assert out["errors"] == {}
    assert out["reports"]["lb"]["model"] == "echo"
    assert out["reports"]["lb"]["outputs"] == ["OUTPUT0"]
    infer = t.calls[-1]
    assert infer[0] == "POST"
    assert infer[3] == {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [0.0]}]}


def test_lb_direct_url_and_failures() -> None:
    t = Scripted(lb_answers("", (400, {"error": "bad input"})))
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True, lb_url="http://lb:8000/")).run()
    assert out["errors"] == {"lb": 'load balancer (http://lb:8000/): inference on model echo answered 400: {"error": "bad input"}'}
    assert {c[4] for c in t.calls} == {"http://lb:8000"}
    t = Scripted(lb_answers("", (200, {"outputs": []})))
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True, lb_url="http://lb:8000")).run()
    assert out["errors"]["lb"] == 'load balancer (http://lb:8000): inference on model echo returned no outputs: {"outputs": []}'


SVC_PATH = ("GET", "/api/v1/namespaces/triton/services/nginx-lb")


def service(kind: str, ingress: Optional[List[Dict[str, Any]]] = None, external_ips: Optional[List[str]] = None) -> Dict[str, Any]:
    """A Service as the API server returns it: node ports allocated for NodePort and LoadBalancer (allocateLoadBalancerNodePorts
    defaults to true), status.loadBalancer empty until a provider writes ingress."""
    node = kind in ("NodePort", "LoadBalancer")
    spec: Dict[str, Any] = {"type": kind, "clusterIP": "10.96.12.7", "ports": [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", **({"nodePort": 31080} if node else {})},
        {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP", **({"nodePort": 31081} if node else {})},
    ]}
    if external_ips:
        spec["externalIPs"] = external_ips
    return {"kind": "Service", "metadata": {"name": "nginx-lb", "namespace": "triton"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": ingress} if ingress is not None else {}}}


ADDRESS_ONLY = {"check_custom_metrics": False, "check_hpa": False, "check_lb_address": True}


def test_lb_address_pending_fails_naming_the_service_and_is_waited_for() -> None:
    answers = {SVC_PATH: [(200, service("LoadBalancer")), (200, service("LoadBalancer", ingress=[]))]}
    slept: List[float] = []
    out = Verifier(Scripted(answers), params(**ADDRESS_ONLY, retries=1, delay=5)).run(sleep=slept.append)
    assert out["checks"] == ["lb_address"]
    assert (out["attempts"], slept) == (2, [5.0])  # a provider may still assign it: waited for, bounded
    assert out["errors"]["lb_address"].startswith(
        "Service triton/nginx-lb is of type LoadBalancer, but no load-balancer provider has assigned it an external address "
        "(status.loadBalancer.ingress is empty: kubectl shows EXTERNAL-IP <pending>)")
    assert "MetalLB" in out["errors"]["lb_address"]
    assert out["reports"]["lb_address"]["external"] == []
    assert failure_message(out["errors"], 2).splitlines()[1].startswith("load balancer address: Service triton/nginx-lb is of type LoadBalancer")


@pytest.mark.parametrize(
    ("svc", "external"),
    [
        (service("LoadBalancer", ingress=[{"ip": "10.0.20.10", "ipMode": "VIP"}]), ["10.0.20.10"]),
        (service("LoadBalancer", ingress=[{"hostname": "lb-123.elb.example"}]), ["lb-123.elb.example"]),
        (service("LoadBalancer", external_ips=["192.0.2.7"]), ["192.0.2.7"]),  # kubectl: not <pending> either
        (service("LoadBalancer", ingress=[{"ip": "10.0.20.10"}], external_ips=["10.0.20.10", "192.0.2.7"]), ["10.0.20.10", "192.0.2.7"]),
    ],
)
def test_lb_address_reported_when_assigned(svc: Dict[str, Any], external: List[str]) -> None:
    out = Verifier(Scripted({SVC_PATH: (200, svc)}), params(**ADDRESS_ONLY)).run()
    assert out["errors"] == {}
    report = out["reports"]["lb_address"]
    assert report["external"] == external
    assert report["type"] == "LoadBalancer"
    assert report["ports"] == [{"name": "http", "port": 8000, "node_port": 31080}, {"name": "grpc", "port": 8001, "node_port": 31081}]


def test_lb_address_node_ports_and_cluster_ip_pass() -> None:
    out = Verifier(Scripted({SVC_PATH: (200, service("NodePort"))}), params(**ADDRESS_ONLY)).run()
    assert out["errors"] == {}
    assert out["reports"]["lb_address"] == {
        "service": "triton/nginx-lb", "type": "NodePort", "cluster_ip": "10.96.12.7", "external": [],
        "ports": [{"name": "http", "port": 8000, "node_port": 31080}, {"name": "grpc", "port": 8001, "node_port": 31081}],
    }
    out = Verifier(Scripted({SVC_PATH: (200, service("ClusterIP"))}), params(**ADDRESS_ONLY)).run()
    assert out["errors"] == {}
    assert [p["node_port"] for p in out["reports"]["lb_address"]["ports"]] == [None, None]


def test_lb_address_missing_service_is_not_waited_for_and_other_namespace() -> None:
    not_found = (404, {"kind": "Status", "reason": "NotFound", "message": 'services "nginx-lb" not found'})
    slept: List[float] = []
    t = Scripted({("GET", "/api/v1/namespaces/edge-lb/services/nginx-lb"): not_found})
    out = Verifier(t, params(**ADDRESS_ONLY, lb_namespace="edge-lb", retries=3, delay=5)).run(sleep=slept.append)
    assert (out["attempts"], slept) == (1, [])
    assert out["errors"] == {"lb_address": "Service edge-lb/nginx-lb not found (is the load balancer deployed? playbooks/load_balancer.yml)"}
    forbidden = (403, {"kind": "Status", "reason": "Forbidden", "message": 'services "nginx-lb" is forbidden: User "v" cannot get resource "services"'})
    out = Verifier(Scripted({SVC_PATH: forbidden}), params(**ADDRESS_ONLY)).run()
    assert out["errors"]["lb_address"] == ('reading Service triton/nginx-lb: 403 Forbidden: services "nginx-lb" is forbidden: '
                                           'User "v" cannot get resource "services"')


def test_lb_address_is_off_unless_asked() -> None:
    # callers that predate it (three checks) do not get it
    out = Verifier(Scripted(stack()), params(check_lb=False)).run()
    assert out["checks"] == ["custom_metrics", "hpa"]
    assert "lb_address" not in out["reports"]


def test_lb_refusing_the_repository_index_asks_for_the_model_and_is_not_waited_for() -> None:
    refused = (403, {"error": "forbidden by the load balancer: it passes only inference, model metadata and health endpoints to Triton"})
    slept: List[float] = []
    t = Scripted({("POST", f"{PROXY}/v2/repository/index"): refused})
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True, retries=4, delay=2)).run(sleep=slept.append)
    assert (out["attempts"], slept) == (1, [])
    assert out["errors"] == {"lb": (
        'load balancer (service proxy triton/nginx-lb:http): POST /v2/repository/index answered 403: {"error": "forbidden by the load '
        'balancer: it passes only inference, model metadata and health endpoints to Triton"}; the model repository is not served to '
        "clients, so name the model to infer on (option model; gpu_ops_verify_serving_model in playbooks/verify.yml)")}
    # with the model named, the index is not asked at all
    t = Scripted(lb_answers(PROXY, (200, {"outputs": [{"name": "OUTPUT0", "data": [0.0]}]})))
    t.answers[("POST", f"{PROXY}/v2/repository/index")] = [refused]
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True, model="echo")).run()
    assert out["errors"] == {}
    assert [c[1] for c in t.calls] == [f"{PROXY}/v2/models/echo", f"{PROXY}/v2/models/echo/infer"]


def test_lb_through_the_service_proxy_over_tls() -> None:
    prefix = "/api/v1/namespaces/triton/services/https:nginx-lb:https/proxy"
    t = Scripted(lb_answers(prefix, (200, {"outputs": [{"name": "OUTPUT0", "data": [0.0]}]})))
    out = Verifier(t, params(check_custom_metrics=False, check_hpa=False, check_lb=True, lb_port="https", lb_scheme="https", model="echo")).run()
    assert out["errors"] == {}
    assert out["reports"]["lb"]["via"] == "service proxy triton/https:nginx-lb:https"
    assert {c[1].rsplit("/v2/", 1)[0] for c in t.calls} == {prefix}


def test_retries_repeat_only_failing_checks_and_are_bounded() -> None:
    answers = stack()
    answers[HPA_PATH] = [(200, hpa(active=None)), (200, hpa())]
    t = Scripted(answers)
    slept: List[float] = []
    out = Verifier(t, params(retries=5, delay=7)).run(sleep=slept.append)
    assert out["errors"] == {}
    assert out["attempts"] == 2
    assert slept == [7.0]
    assert sum(1 for c in t.calls if c[1] == DEP_PATH[1]) == 1  # the metric check passed at once and was not repeated
    answers = stack()
    answers[HPA_PATH] = (200, hpa(active="False"))
    slept = []
    out = Verifier(Scripted(answers), params(retries=2, delay=1)).run(sleep=slept.append)
    assert out["attempts"] == 3
    assert slept == [1.0, 1.0]
    assert failure_message(out["errors"], out["attempts"]) == ("serving stack verification failed after 3 attempt(s):\n"
                                                               "HPA: HPA triton/triton ScalingActive is False (R): why")


def test_missing_objects_that_apply_creates_at_once_are_not_waited_for() -> None:
    answers = stack()
    answers[DEP_PATH] = (404, {"kind": "Status", "reason": "NotFound", "message": 'deployments.apps "triton" not found'})
    answers[HPA_PATH] = (404, {"kind": "Status", "reason": "NotFound", "message": 'horizontalpodautoscalers.autoscaling "triton" not found'})
    answers[("POST", f"{PROXY}/v2/repository/index")] = (404, {"kind": "Status", "reason": "NotFound", "message": 'services "nginx-lb" not found'})
    slept: List[float] = []
    out = Verifier(Scripted(answers), params(retries=5, delay=3, check_lb=True)).run(sleep=slept.append)
    assert (out["attempts"], slept) == (1, [])
    assert out["errors"] == {
        "custom_metrics": "Deployment triton/triton not found (is the serving stack deployed? playbooks/serving.yml)",
        "hpa": 'reading HPA triton/triton: 404 NotFound: horizontalpodautoscalers.autoscaling "triton" not found',
        "lb": 'load balancer (service proxy triton/nginx-lb:http): POST /v2/repository/index answered 404 NotFound: services "nginx-lb" not found',
    }


# --- serving pools: a Deployment and an HPA per pool ----------------------------------------------------------

class ByQuery(Scripted):
    """Scripted, and the pod and custom-metric lists answered by their labelSelector (the API server filters by it)."""

    def __init__(self, answers: Mapping[Tuple[str, str], Any], by_selector: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__(answers)
        self.by_selector = by_selector

    def request(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                base: Optional[str] = None) -> Response:
        selector = (query or {}).get("labelSelector", "")
        for suffix, answer in self.by_selector.get(selector, {}).items():
            if path.endswith(suffix):
                self.calls.append((method, path, query, body, base))
                return Response(200, json.dumps(answer).encode())
        return super().request(method, path, query, body, base)


def pool_deployment(pool: str) -> Dict[str, Any]:
    return {"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton",
                                                  "gpu-ops.io/serving-pool": pool}}}}


def ready_pod(name: str, ready: bool = True) -> Dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pools_stack(small_ready: bool = True, large_metric: bool = True) -> ByQuery:
    small, large = "triton-1g-5gb", "triton-3g-20gb"
    answers: Dict[Tuple[str, str], Any] = {
        ("GET", f"/apis/apps/v1/namespaces/triton/deployments/{small}"): (200, pool_deployment(small)),
        ("GET", f"/apis/apps/v1/namespaces/triton/deployments/{large}"): (200, pool_deployment(large)),
        APISVC_PATH: (200, {"items": [apiservice("v1beta2", 200, True)]}),
        ("GET", f"/apis/autoscaling/v2/namespaces/triton/horizontalpodautoscalers/{small}"): (200, hpa(current="2")),
        ("GET", f"/apis/autoscaling/v2/namespaces/triton/horizontalpodautoscalers/{large}"): (200, hpa(active="False")),
    }
    base = "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton,gpu-ops.io/serving-pool="
    by_selector = {
        base + small: {"/pods": {"items": [ready_pod("small-a", small_ready)]},
                       "/avg_time_queue_us": metric_list("v1beta2", {"small-a": "2"} if small_ready else {})},
        base + large: {"/pods": {"items": [ready_pod("large-a"), ready_pod("large-b")]},
                       "/avg_time_queue_us": metric_list("v1beta2", {"large-a": "1", **({"large-b": "3"} if large_metric else {})})},
    }
    return ByQuery(answers, by_selector)


def test_every_pool_is_checked_and_reported() -> None:
    pools = ["triton-1g-5gb", "triton-3g-20gb"]
    t = pools_stack()
    out = Verifier(t, params(triton_deployments=pools, hpa_name="", hpa_names=pools)).run()
    # the pods and the metric per pool's own selector; the shared labels are what every pool selects by
    assert out["reports"]["triton_pods"]["ready"] == ["large-a", "large-b", "small-a"]
    assert out["reports"]["triton_pods"]["selector"] == "app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton"
    assert sorted(out["reports"]["custom_metrics"]["pods"]) == ["large-a", "large-b", "small-a"]
    assert "custom_metrics" not in out["errors"]
    # one HPA is not active: the error names it, the other's report is there too
    assert out["errors"]["hpa"] == "HPA triton/triton-3g-20gb ScalingActive is False (R): why"
    assert set(out["reports"]["hpa"]["all"]) == set(pools)
    assert out["reports"]["hpa"]["name"] == "triton-1g-5gb"
    assert out["reports"]["pools"]["triton-1g-5gb"] == {
        "ready": ["small-a"], "not_ready": [], "metric_missing": [],
        "hpa": {"name": "triton-1g-5gb", "current_quantity": "2", "current_replicas": 2, "desired_replicas": 1, "min_replicas": 1,
                "max_replicas": 8, "scaling_active": True, "scaling_limited": False}}
    assert out["reports"]["pools"]["triton-3g-20gb"]["hpa"]["scaling_active"] is False


def test_a_pool_without_a_ready_pod_fails_naming_it() -> None:
    pools = ["triton-1g-5gb", "triton-3g-20gb"]
    out = Verifier(pools_stack(small_ready=False), params(triton_deployments=pools, check_hpa=False)).run()
    assert out["errors"] == {"custom_metrics": "no ready Triton pod in Deployment triton/triton-1g-5gb (not ready: small-a)"}
    assert out["reports"]["pools"]["triton-1g-5gb"]["not_ready"] == ["small-a"]


def test_a_pod_the_metric_misses_is_named_with_its_pool() -> None:
    pools = ["triton-1g-5gb", "triton-3g-20gb"]
    out = Verifier(pools_stack(large_metric=False), params(triton_deployments=pools, check_hpa=False)).run()
    assert out["errors"] == {"custom_metrics": "custom metrics API lists avg_time_queue_us for 2 of 3 Triton pods: missing large-b"}
    assert out["reports"]["pools"]["triton-3g-20gb"]["metric_missing"] == ["large-b"]
    assert out["reports"]["pools"]["triton-1g-5gb"]["metric_missing"] == []


def test_a_missing_pool_deployment_is_named() -> None:
    out = Verifier(pools_stack(), params(triton_deployments=["triton-1g-5gb", "triton-7g-80gb"], check_hpa=False)).run()
    assert out["errors"]["custom_metrics"] == ("Deployment triton/triton-7g-80gb not found (is the serving stack deployed? "
                                               "playbooks/serving.yml)")
