# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/kube_fake/metrics.py and kube_fake's aggregation layer, HPA status and service proxy (without Prometheus:
the path through a real Prometheus is tests/integration/test_e2e_verify.py)."""
from __future__ import annotations

import json
import ssl
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Optional, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.kube_fake.metrics import MetricError, adapter_query, format_quantity, hpa_status, rule_metric
    from tests.kube_fake.server import FakeKube
else:
    from kube_fake.metrics import MetricError, adapter_query, format_quantity, hpa_status, rule_metric
    from kube_fake.server import FakeKube

RULE = {
    "seriesQuery": '{__name__="namespace_pod:nv_inference_queue_duration_us:per_request",namespace!="",pod!=""}',
    "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
    "name": {"matches": "^namespace_pod:nv_inference_queue_duration_us:per_request$", "as": "avg_time_queue_us"},
    "metricsQuery": "max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})",
}


@pytest.mark.parametrize(("value", "text"), [(0.0, "0"), (1.5, "1500m"), (2.0, "2"), (50000.0, "50k"), (12345.678, "12345678m"), (3e6, "3M")])
def test_format_quantity(value: float, text: str) -> None:
    assert format_quantity(value) == text


def test_adapter_query_and_metric_name() -> None:
    assert adapter_query(RULE, "triton", ["a"]) == 'max by (pod) (namespace_pod:nv_inference_queue_duration_us:per_request{namespace="triton",pod="a"})'
    assert adapter_query(RULE, "triton", ["a", "b"]).endswith('{namespace="triton",pod=~"a|b"})')
    assert rule_metric(RULE) == "avg_time_queue_us"
    with pytest.raises(ValueError, match="template fields"):
        adapter_query({**RULE, "metricsQuery": "<<.Series>>{<<.LabelValuesByName>>}"}, "triton", ["a"])


def _hpa(target: str = "100", minimum: int = 1, maximum: int = 4) -> Dict[str, Any]:
    return {"spec": {"minReplicas": minimum, "maxReplicas": maximum,
                     "metrics": [{"type": "Pods", "pods": {"metric": {"name": "m"}, "target": {"type": "AverageValue", "averageValue": target}}}]}}


def _conds(status: Dict[str, Any]) -> Dict[str, Tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_hpa_status_formula_tolerance_and_limits() -> None:
    st = hpa_status(_hpa(), ["a", "b"], lambda m: {"a": 150.0, "b": 150.0})
    assert st["desiredReplicas"] == 3  # ceil(1.5 x 2)
    assert st["currentMetrics"] == [{"type": "Pods", "pods": {"metric": {"name": "m"}, "current": {"averageValue": "150"}}}]
    assert _conds(st)["ScalingActive"] == ("True", "ValidMetricFound")
    assert _conds(st)["ScalingLimited"] == ("False", "DesiredWithinRange")
    assert hpa_status(_hpa(), ["a", "b"], lambda m: {"a": 105.0, "b": 105.0})["desiredReplicas"] == 2  # within 10 %
    high = hpa_status(_hpa(), ["a", "b"], lambda m: {"a": 1000.0, "b": 1000.0})
    assert (high["desiredReplicas"], _conds(high)["ScalingLimited"]) == (4, ("True", "TooManyReplicas"))
    low = hpa_status(_hpa(), ["a", "b"], lambda m: {"a": 0.0, "b": 0.0})
    assert (low["desiredReplicas"], _conds(low)["ScalingLimited"]) == (1, ("True", "TooFewReplicas"))
    assert hpa_status(_hpa("1500m"), ["a"], lambda m: {"a": 3.0})["desiredReplicas"] == 2


def test_hpa_status_metric_missing() -> None:
    def missing(metric: str) -> Dict[str, float]:
        raise MetricError(404, "NotFound", f"the server could not find the metric {metric} for pods")

    st = hpa_status(_hpa(), ["a"], missing)
    assert st["currentMetrics"] == [{"type": ""}]
    assert _conds(st)["ScalingActive"] == ("False", "FailedGetPodsMetric")
    assert "unable to get metric m: unable to fetch metrics from custom metrics API: the server could not find the metric m for pods" in str(st)


class _Echo(BaseHTTPRequestHandler):
    timeout = 10  # every read of a connection is bounded (HTTP/1.0: one request per connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        payload = json.dumps({"path": self.path, "type": self.headers.get("Content-Type"), "body": body.decode()}).encode()
        self.send_response(418)
        self.send_header("Content-Type", "application/x-test")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = False  # with block_on_close (the default), server_close() joins every connection thread


@pytest.fixture
def echo() -> Iterator[str]:
    server = _EchoServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="echo")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()  # joins the connection threads, each bounded by _Echo.timeout
        thread.join(5)
        assert not thread.is_alive()


def _call(kube: FakeKube, method: str, path: str, body: Optional[bytes] = None, content_type: str = "application/json") -> Tuple[int, str, bytes]:
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    request = urllib.request.Request(kube.url + path, data=body, method=method,
                                     headers={"Authorization": f"Bearer {kube.token}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            return int(resp.status), str(resp.headers.get("Content-Type")), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), str(exc.headers.get("Content-Type")), bytes(exc.read())


def test_service_proxy_passes_through_and_fails_like_the_api_server(echo: str) -> None:
    with FakeKube() as kube:
        kube.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}},
                   {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb", "namespace": "t"},
                    "spec": {"ports": [{"name": "http", "port": 8000}, {"name": "grpc", "port": 8001}]}}])
        status, _ctype, body = _call(kube, "POST", "/api/v1/namespaces/t/services/lb:http/proxy/v2/x?a=1", b'{"k": 1}')
        assert status == 503
        assert json.loads(body)["message"] == 'no endpoints available for service "lb:http"'
        kube.service_backends[("t", "lb", "http")] = echo
        status, ctype, body = _call(kube, "POST", "/api/v1/namespaces/t/services/lb:http/proxy/v2/x?a=1", b'{"k": 1}', "application/json")
        assert (status, ctype) == (418, "application/x-test")
        assert json.loads(body) == {"path": "/v2/x?a=1", "type": "application/json", "body": '{"k": 1}'}
        status, _ctype, body = _call(kube, "POST", "/api/v1/namespaces/t/services/missing:http/proxy/")
        assert (status, json.loads(body)["message"]) == (404, 'services "missing" not found')
        kube.service_backends[("t", "lb", "http")] = "http://127.0.0.1:1"
        status, _ctype, body = _call(kube, "POST", "/api/v1/namespaces/t/services/lb:http/proxy/v2/x", b"{}")
        assert status == 503
        assert json.loads(body)["message"] == "error trying to reach service: dial tcp 127.0.0.1:1: connect: connection refused"


def test_aggregated_custom_metrics_without_an_adapter() -> None:
    apiservice = {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta2.custom.metrics.k8s.io"},
                  "spec": {"service": {"name": "prometheus-adapter", "namespace": "monitoring"}, "group": "custom.metrics.k8s.io",
                           "version": "v1beta2", "versionPriority": 100, "groupPriorityMinimum": 100}}
    with FakeKube() as kube:
        assert _call(kube, "GET", "/apis/custom.metrics.k8s.io/v1beta2")[0] == 404  # no APIService: not served at all
        kube.add_object(apiservice)
        groups = json.loads(_call(kube, "GET", "/apis")[2])["groups"]
        metrics_group = next(g for g in groups if g["name"] == "custom.metrics.k8s.io")
        assert metrics_group["preferredVersion"] == {"groupVersion": "custom.metrics.k8s.io/v1beta2", "version": "v1beta2"}
        status, _ctype, body = _call(kube, "GET", "/apis/custom.metrics.k8s.io/v1beta2/namespaces/t/pods/*/m")
        assert (status, json.loads(body)["reason"]) == (503, "ServiceUnavailable")
        stored = json.loads(_call(kube, "GET", "/apis/apiregistration.k8s.io/v1/apiservices/v1beta2.custom.metrics.k8s.io")[2])
        assert stored["status"]["conditions"][0]["reason"] == "ServiceNotFound"
        assert stored["status"]["conditions"][0]["message"] == 'service/prometheus-adapter in "monitoring" is not present'
