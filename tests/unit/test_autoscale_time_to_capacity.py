# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pieces of the time-to-capacity benchmark that need no servers: the article's set-up (probes, query, the
kube-proxy stand-in's config), the queue-time reference read from Triton's counters, and the stage split."""
from __future__ import annotations

import http.server
import importlib.util
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Iterator, List

import pytest

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
if TYPE_CHECKING:
    from tests.autoscale.loop import CLUSTER_IP, KubeProxy, QueueReference, article_query, with_default_probes
    from tests.servers.nginx import check_config
else:
    from autoscale.loop import CLUSTER_IP, KubeProxy, QueueReference, article_query, with_default_probes
    from servers.nginx import check_config

_SPEC = importlib.util.spec_from_file_location("time_to_capacity", TESTS.parent / "benchmarks" / "time_to_capacity.py")
assert _SPEC is not None
assert _SPEC.loader is not None
ttc: Any = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ttc)

DEPLOYMENT = {"spec": {"template": {"spec": {"containers": [{
    "name": "triton",
    "startupProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 600},
    "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2},
}]}}}}


def test_the_article_runs_with_kubernetes_probe_defaults_and_no_startup_probe() -> None:
    out = with_default_probes(DEPLOYMENT)
    container = out["spec"]["template"]["spec"]["containers"][0]
    assert "startupProbe" not in container
    assert container["readinessProbe"] == {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 10,
                                           "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 1}
    assert "startupProbe" in DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]  # not changed in place


def test_the_article_query_is_the_seed_delta_with_one_plus() -> None:
    query = article_query("triton", ["a", "b"])
    assert query == ('avg(delta(nv_inference_queue_duration_us{namespace="triton",pod=~"a|b"}[30s])'
                     ' / (1 + delta(nv_inference_request_success{namespace="triton",pod=~"a|b"}[30s]))) by (pod)')


def test_the_kube_proxy_stand_in_picks_a_random_ready_endpoint_per_connection(tmp_path: Path) -> None:
    proxy = KubeProxy(tmp_path / "kp", {"http": 18000, "grpc": 18001}, 18080)
    empty = proxy.config()
    assert "server 127.0.0.1:9 max_fails=0;" in empty  # no endpoint: refused
    proxy.endpoints = ("127.0.0.32", "127.0.0.31")
    conf = proxy.config()
    assert conf.count("random;") == 2
    assert "server 127.0.0.32:18000 max_fails=0;" in conf
    assert "server 127.0.0.31:18001 max_fails=0;" in conf
    assert f"listen {CLUSTER_IP}:18000;" in conf
    assert f"listen {CLUSTER_IP}:18001 http2;" in conf
    assert "proxy_next_upstream off;" in conf  # kube-proxy never retries on another endpoint
    assert "grpc_next_upstream off;" in conf
    assert "keepalive" not in conf
    check = check_config(conf, tmp_path / "kp")
    assert check.returncode == 0, check.stderr


class _Metrics(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[List[str]] = []

    def do_GET(self) -> None:
        body = self.bodies.pop(0).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        return


@pytest.fixture
def metrics_server() -> Iterator[http.server.HTTPServer]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=5)


def _body(queue_us: float, success: float) -> str:
    return (f'nv_inference_queue_duration_us{{model="sleeper",version="1"}} {queue_us}\n'
            f'nv_inference_request_success{{model="sleeper",version="1"}} {success}\n'
            f'nv_inference_queue_duration_us{{model="other",version="1"}} 999999\n'
            f'nv_inference_request_success{{model="other",version="1"}} 1\n')


def test_the_queue_reference_is_the_counters_delta_per_request(metrics_server: http.server.HTTPServer) -> None:
    _Metrics.bodies = [_body(1000, 10), _body(1000 + 6 * 80_000, 16), _body(1000 + 6 * 80_000, 16), _body(5_000, 2)]
    reference = QueueReference(int(metrics_server.server_address[1]))
    assert reference.read(["127.0.0.1"]) is None  # the first read: nothing to compare with
    assert reference.read(["127.0.0.1"]) == pytest.approx(80_000.0)  # 6 requests waited 80 ms each
    assert reference.read(["127.0.0.1"]) is None  # no request since
    assert reference.read(["127.0.0.1"]) is None  # counters reset (a restarted pod): skipped once


def _run(events: List[Dict[str, Any]], queue: List[float]) -> Dict[str, Any]:
    samples = [{"t": 10.0 + 0.5 * i, "hpa_current": 2 if i > 8 else 1, "metric_us": q, "queue_ref_us": q,
                "ready_pods": 1, "requests": {"a": i}} for i, q in enumerate(queue)]
    return {"events": events, "samples": samples, "failed_requests": 0,
            "settings": {"target_queue_us": 50_000.0, "min_replicas": 1}}


def test_the_stages_split_the_first_scale_up_and_count_the_seconds_over_target() -> None:
    events = [
        {"t": 10.0, "event": "load_start", "detail": ""},
        {"t": 10.0, "event": "load_step", "detail": "up: http 2"},
        {"t": 12.5, "event": "metric_over_target", "detail": ""},
        {"t": 13.0, "event": "scale_up_decided", "detail": ""},
        {"t": 12.9, "event": "pod_started", "detail": "old"},  # a pod started before the decision: not the new one
        {"t": 13.1, "event": "pod_started", "detail": "new"},
        {"t": 14.6, "event": "triton_up", "detail": "new"},
        {"t": 15.2, "event": "pod_ready", "detail": "new"},
        {"t": 15.2, "event": "pod_in_dns", "detail": "new"},
        {"t": 16.2, "event": "first_request_new_pod", "detail": "new"},
        {"t": 20.0, "event": "load_step", "detail": "down: http 1"},
    ]
    # 0.5 s samples from t=10: over the target at 10.5 .. 14.0 (8 samples = 4 s), under afterwards; after the down
    # step nothing counts
    queue = [0.0] + [80_000.0] * 8 + [20_000.0] * 12 + [90_000.0] * 3
    result = ttc.analyse(_run(events, queue))
    assert result["new_pod"] == "new"
    assert result["stages"] == {"signal": 2.5, "hpa_wait": 0.5, "scheduling": 0.1, "triton_start": 1.5, "readiness": 0.6,
                                "endpoints": 0.0, "lb_pickup": 1.0}
    assert result["own_share"] == pytest.approx(4.1)
    assert result["load_to_first_request"] == pytest.approx(6.2)
    assert result["seconds_over_target"] == pytest.approx(4.0)
    assert result["last_over_target_after_load"] == pytest.approx(4.0)
    assert result["peak_replicas"] == 2
    assert result["back_to_min"] is False


def test_the_summary_gives_medians_and_ranges() -> None:
    rounds = [{"variant": "ours", "result": {"stages": {k: float(i) for k, _l, _a, _b in ttc.STAGES}, "own_share": 3.0 + i,
                                             "load_to_first_request": 6.0, "seconds_over_target": 5.0 + 2 * i,
                                             "last_over_target_after_load": None, "hpa_metric_seconds_over_target": 1.0,
                                             "failed_requests": 0, "requests": 100, "peak_replicas": 2, "back_to_min": True}}
              for i in range(3)]
    summary = ttc.summarise(rounds, ["ours"])["ours"]
    assert summary["own_share"] == {"median": 4.0, "min": 3.0, "max": 5.0, "n": 3}
    assert summary["seconds_over_target"]["median"] == 7.0
    assert summary["last_over_target_after_load"]["n"] == 0
    assert summary["requests"] == 300
    assert "| **our pipeline's share** (signal + readiness + LB pick-up) | 4.0 (3.0-5.0) |" in ttc.table({"ours": summary}, ["ours"])
