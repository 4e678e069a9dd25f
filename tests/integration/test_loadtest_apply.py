# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""playbooks/loadtest.yml in apply mode, end to end, against the fake API server in tests/kube_fake (no Kubernetes API
server can run here), with the sandbox inventory (gpu_ops_lb_model_statistics on) and short steps.

The fake serves what a cluster after site.yml would: two serving pools (role triton's Deployment per MIG profile, with
the shared labels, the pool label and the profile annotation; 1g.5gb with two Ready pods, 3g.20gb with one), an HPA
per pool (their status computed by kube_fake's HPA controller from the custom metrics API: the 1g pool's queue time is
twice its target, the 3g pool's half of it, so one pool wants more replicas and the other does not; the 3g pool's HPA
has KEDA's name, found by its scaleTargetRef), the custom metrics API (kube_fake's
prometheus-adapter with the rule role custom_metrics renders), the load balancer's and Prometheus' Services behind the
API server's service proxy. Behind them a stand-in answers as Prometheus' HTTP API (/api/v1/series, /api/v1/query:
instant vectors) and as Triton's statistics endpoint through the load balancer (200, or the load balancer's 403). The
Job's pod is run by kube_fake's Job hook (FakeKube.complete_job): its rendered bash script runs here with the stand-in
perf_analyzer of test_loadtest_render.py, its output becomes the pod's log, the pod and the Job finish as the kubelet
and the Job controller finish them.

Proven: the pools are found by their labels (playbooks/loadtest.yml alone, no gpu_ops_pools); the report directory
(report.md with its per-pool tables, the PNG plots, run.json) is written with each pool's HPA values, the queue times
per pod and the requests per pod the fake served and the steps perf_analyzer's CSV reported; one task item per step; the
Job (and its pod) deleted at the end, also when a step fails (the play then fails naming the step); the statistics
preflight and the probe through the service proxy refuse to start anything when the load balancer would refuse
perf_analyzer's statistics requests. Not proven: a real API server, kubelet, Job controller, image pull or
perf_analyzer; the values' dynamics (they are what the stand-in serves, not a loaded Triton's: the closed loop is
tests/integration/test_autoscale_loop.py).
"""
from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Tuple
from urllib.parse import parse_qs, urlsplit

import pytest

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._loadtest_report import PERF_COLUMNS, validate_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.integration.test_loadtest_render import STUB
    from tests.kube_fake.metrics import MetricsAdapter
    from tests.kube_fake.server import FakeKube
else:
    from ansible_run import ansible_env
    from kube_fake.metrics import MetricsAdapter
    from kube_fake.server import FakeKube
    from test_loadtest_render import STUB

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NS = "triton"
JOB = "triton-loadtest"
LABELS = {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton"}
P1, P3 = "triton-1g-5gb", "triton-3g-20gb"
PROFILES = {P1: "1g.5gb", P3: "3g.20gb"}
MAXIMA = {P1: 7, P3: 2}
HPA_NAMES = {P1: P1, P3: f"keda-hpa-{P3}"}
POD_POOL = {"triton-1g-5gb-7c9d8b6f5-x2k4p": P1, "triton-1g-5gb-7c9d8b6f5-m8q3z": P1, "triton-3g-20gb-5d8f7c6b9-q7w2e": P3}
PODS = {"triton-1g-5gb-7c9d8b6f5-x2k4p": "10.244.1.11", "triton-1g-5gb-7c9d8b6f5-m8q3z": "10.244.2.12", "triton-3g-20gb-5d8f7c6b9-q7w2e": "10.244.2.13"}
# 1g: average 4000, twice the target 2000 (wants 4); 3g: 1000, half of it (ratio 0.5: ceil(0.5 x 1) = 1, stays)
QUEUE_US = {"triton-1g-5gb-7c9d8b6f5-x2k4p": 3000.0, "triton-1g-5gb-7c9d8b6f5-m8q3z": 5000.0, "triton-3g-20gb-5d8f7c6b9-q7w2e": 1000.0}
SERIES = "namespace_pod:nv_inference_queue_duration_us:per_request"
# the rule role custom_metrics renders for prometheus-adapter (roles/custom_metrics/templates/adapter-values.yaml.j2)
RULE = {"seriesQuery": f'{{__name__="{SERIES}",namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{re.escape(SERIES)}$", "as": "avg_time_queue_us"},
        "metricsQuery": "max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"}
PROMETHEUS_SVC = ("monitoring", "kube-prometheus-stack-prometheus", "http-web")
POOL_LABEL = "gpu-ops.io/serving-pool"

pytestmark = pytest.mark.slow


class Backend:
    """What the service proxy and the adapter reach: Prometheus' HTTP API and Triton's statistics through the LB."""

    def __init__(self) -> None:
        self.stats_status = 200
        self.requests_served: Dict[str, List[int]] = {pod: [] for pod in PODS}
        self.lock = threading.Lock()
        self.rounds = 0

    def answer(self, path: str, query: Dict[str, List[str]]) -> Tuple[int, Dict[str, Any]]:
        now = time.time()
        if path == "/api/v1/series":  # the adapter's relist: the series exist
            return 200, {"status": "success", "data": [{"__name__": SERIES, "namespace": NS, "pod": pod} for pod in PODS]}
        if path == "/api/v1/query":  # an instant vector per pod (Prometheus HTTP API, resultType vector)
            expr = (query.get("query") or [""])[0]
            values: Dict[str, float] = {}
            if "nv_inference_request_success" in expr:
                with self.lock:
                    self.rounds += 1
                    for index, pod in enumerate(sorted(PODS)):
                        count = self.rounds * (10 + 5 * index)
                        self.requests_served[pod].append(count)
                        values[pod] = float(count)
            elif "nv_inference_request_failure" in expr:
                values = {pod: 0.0 for pod in PODS}
            elif SERIES in expr:
                values = dict(QUEUE_US)
            result = [{"metric": {"namespace": NS, "pod": pod}, "value": [now, repr(v)]} for pod, v in values.items()]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}
        match = re.fullmatch(r"/v2/models/([^/]+)/stats", path)
        if match:
            if self.stats_status == 403:  # role nginx_lb's refusal (nginx.conf.j2)
                return 403, {"error": "forbidden by the load balancer: it passes only inference, model metadata and health endpoints to Triton"}
            if match.group(1) != "demo":  # Triton's answer for a model it does not serve
                return 400, {"error": f"requested model '{match.group(1)}' is not available"}
            return 200, {"model_stats": [{"name": "demo", "version": "1", "inference_count": 0, "execution_count": 0}]}
        return 404, {"error": "not found"}


class _Handler(BaseHTTPRequestHandler):
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        status, body = self.server.backend.answer(split.path, parse_qs(split.query))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = False

    def __init__(self, backend: Backend) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.backend = backend


@contextlib.contextmanager
def backend_server(backend: Backend) -> Iterator[str]:
    server = _Server(backend)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="loadtest-backend")
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
        assert not thread.is_alive()


def cluster_objects() -> List[Dict[str, Any]]:
    """What site.yml leaves that the load test reads (names and shapes of the rendered objects)."""
    restricted = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    container = {"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.10-py3", "ports": [{"name": "http", "containerPort": 8000}],
                 "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
                                     "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": restricted}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "monitoring"}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1", "labels": {"kubernetes.io/hostname": "cpu-1"}},
         "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"}, "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"}}},
        # role triton's pools: Deployment <pool>, the shared labels and the pool's, the profile as a pod template annotation
        *[{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": pool, "namespace": NS, "labels": {**LABELS, POOL_LABEL: pool}},
           "spec": {"replicas": 2 if pool == P1 else 1, "selector": {"matchLabels": {**LABELS, POOL_LABEL: pool}},
                    "template": {"metadata": {"labels": {**LABELS, POOL_LABEL: pool}, "annotations": {"gpu-ops.io/mig-profile": profile}},
                                 "spec": {"containers": [container]}}}} for pool, profile in PROFILES.items()],
        # a Deployment of another instance in the namespace: not a pool of this one (its labels differ)
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other-1g-5gb", "namespace": NS,
                                                                     "labels": {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "other"}},
         "spec": {"replicas": 0, "selector": {"matchLabels": {"app.kubernetes.io/instance": "other"}},
                  "template": {"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}, "spec": {"containers": [container]}}}},
        *[{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": HPA_NAMES[pool], "namespace": NS},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool}, "minReplicas": 1, "maxReplicas": MAXIMA[pool],
                    "metrics": [{"type": "Pods", "pods": {"metric": {"name": "avg_time_queue_us"}, "target": {"type": "AverageValue", "averageValue": "2k"}}}]}}
          for pool in PROFILES],
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nginx-lb", "namespace": NS},
         "spec": {"selector": {"app.kubernetes.io/name": "nginx-lb"},
                  "ports": [{"name": "http", "port": 8000, "targetPort": 8000}, {"name": "grpc", "port": 8001, "targetPort": 8001}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": PROMETHEUS_SVC[1], "namespace": PROMETHEUS_SVC[0]},
         "spec": {"selector": {"app.kubernetes.io/name": "prometheus"}, "ports": [{"name": PROMETHEUS_SVC[2], "port": 9090, "targetPort": 9090}]}},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1beta1.custom.metrics.k8s.io"},
         "spec": {"service": {"name": "prometheus-adapter", "namespace": "monitoring", "port": 443}, "group": "custom.metrics.k8s.io",
                  "version": "v1beta1", "insecureSkipTLSVerify": True, "groupPriorityMinimum": 100, "versionPriority": 100}},
        *[{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NS, "labels": {**LABELS, POOL_LABEL: POD_POOL[pod]}},
           "spec": {"nodeName": "cpu-1", "containers": [container]},
           "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}} for pod, ip in PODS.items()],
    ]


class Bed:
    def __init__(self, work: Path, kube: FakeKube, backend: Backend) -> None:
        self.work, self.kube, self.backend = work, kube, backend
        self.runs: List[Any] = []
        self.errors: List[BaseException] = []

    def playbook(self, *extra: str, run_job: bool = True) -> subprocess.CompletedProcess[str]:
        """Run playbooks/loadtest.yml; meanwhile a watcher runs the Job's pod once the playbook created the Job."""
        bin_dir = self.work / "bin"
        bin_dir.mkdir(exist_ok=True)
        stub = bin_dir / "perf_analyzer"
        stub.write_text(STUB.replace("HEADER", ",".join(PERF_COLUMNS)))
        stub.chmod(0o755)
        stop = threading.Event()

        def watch() -> None:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                if self.kube.get_object("batch/v1", "Job", JOB, NS) is not None:
                    try:
                        self.runs.append(self.kube.complete_job(NS, JOB, bin_dirs=[str(bin_dir)], node="cpu-1", pending_seconds=1.5, timeout=60,
                                                                extra_env={"STUB_ARGS": str(self.work / "stub-args"), "STUB_SECONDS": "1"}))
                    except BaseException as exc:  # reported by the test
                        self.errors.append(exc)
                    return
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, name="job-hook", daemon=True)
        if run_job:
            watcher.start()
        env = ansible_env(self.work)
        env.pop("K8S_AUTH_KUBECONFIG", None)
        argv = [str(BIN / "ansible-playbook"), "playbooks/loadtest.yml", "-i", "inventories/sandbox",
                "-e", "gpu_ops_k8s_mode=apply", "-e", f"gpu_ops_kubeconfig={self.kube.kubeconfig_path}",
                "-e", f"loadtest_report_dir={self.work / 'reports'}", "-e", "loadtest_step_seconds=10", "-e", "loadtest_sample_interval=1",
                "-e", "loadtest_start_timeout=60", *extra]
        try:
            return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
        finally:
            stop.set()
            if run_job:
                watcher.join(90)
                assert not watcher.is_alive()
            assert not self.errors, self.errors


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    backend = Backend()
    with backend_server(backend) as url, FakeKube() as kube:
        kube.seed(cluster_objects())
        kube.metrics_adapter = MetricsAdapter(url, [RULE])
        kube.service_backends[(NS, "nginx-lb", "http")] = url
        kube.service_backends[PROMETHEUS_SVC] = url
        yield Bed(tmp_path, kube, backend)


def _report(work: Path) -> Path:
    reports = sorted((work / "reports").iterdir())
    assert len(reports) == 1, reports
    return reports[0]


def _job_gone(kube: FakeKube) -> None:
    assert kube.get_object("batch/v1", "Job", JOB, NS) is None
    assert [p["metadata"]["name"] for p in kube.objects("v1", "Pod", NS) if p["metadata"]["name"].startswith(JOB)] == []
    deletes = [r for r in kube.requests if r.method == "DELETE" and r.path == f"/apis/batch/v1/namespaces/{NS}/jobs/{JOB}" and r.status == 200]
    assert deletes
    assert (deletes[-1].body or {}).get("propagationPolicy") == "Background"


def test_loadtest_apply_mode_end_to_end(bed: Bed) -> None:
    proc = bed.playbook("-e", '{"loadtest_protocols": ["http"], "loadtest_concurrency": [1, 2]}')
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    # progress: one item of the step task per step, named by protocol and concurrency
    assert proc.stdout.count("TASK [gpu_ops.mig_serving.loadtest : Sample the load steps, one task per step of seconds 10]") == 1
    for label in ("step 1 of 2: http concurrency 1", "step 2 of 2: http concurrency 2"):
        assert proc.stdout.count(f"(item={label})") == 1, proc.stdout[-4000:]
    report = _report(bed.work)
    assert f"Load test report: {report}/report.md" in proc.stdout
    assert (report / "report.md").read_text().startswith("#")
    pngs = sorted(report.glob("*.png"))
    assert pngs
    assert all(p.stat().st_size > 1000 for p in pngs), pngs
    run = json.loads((report / "run.json").read_text())
    assert validate_run(run) == [], validate_run(run)
    # the samples hold what the fake served: each pool's HPA status its controller computed from the custom metrics API
    # (1g: two ready pods, average 4000 us against 2000: desired ceil(2 x 2) = 4; 3g: one pod at 1000: stays at 1), the
    # totals over the pools (replicas summed; the metric averaged over them: (2 x 4000 + 1000) / 3), the queue time per
    # pod, the requests
    samples = run["samples"]
    assert len(samples) >= 4
    one = {"hpa_current": 2, "hpa_desired": 4, "metric_us": 4000.0, "ready_pods": 2, "pods": sorted(p for p in POD_POOL if POD_POOL[p] == P1)}
    three = {"hpa_current": 1, "hpa_desired": 1, "metric_us": 1000.0, "ready_pods": 1, "pods": ["triton-3g-20gb-5d8f7c6b9-q7w2e"]}
    assert all(s["pools"] == {P1: one, P3: three} for s in samples), samples[-1]
    assert all(s["hpa_current"] == 3 and s["hpa_desired"] == 5 and s["metric_us"] == 3000.0 for s in samples), samples
    assert all(s["queue_us"] == QUEUE_US for s in samples), samples
    assert all(s["ready_pods"] == 3 for s in samples)
    assert run["pools"] == [
        {"name": P1, "profile": "1g.5gb", "weight": 1, "hpa": P1, "min_replicas": 1, "max_replicas": 7, "target_queue_us": 2000.0},
        {"name": P3, "profile": "3g.20gb", "weight": 3, "hpa": f"keda-hpa-{P3}", "min_replicas": 1, "max_replicas": 2, "target_queue_us": 2000.0}]
    # the pools were found by one list with the shared labels; no Deployment was read by the old single name
    lists = [r for r in bed.kube.requests if r.path == f"/apis/apps/v1/namespaces/{NS}/deployments" and r.method == "GET"]
    assert lists
    assert {tuple(r.query.get("labelSelector") or []) for r in lists} == {("app.kubernetes.io/instance=triton,app.kubernetes.io/name=triton",)}
    assert not [r for r in bed.kube.requests if r.path.endswith("/deployments/triton")]
    # report.md's table per pool: the 1g pool's metric stayed over its target, the 3g pool's never
    md = (report / "report.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in md.split("## Pools\n", 1)[1].split("\n## ", 1)[0].splitlines() if line.startswith(f"| {P1}") or line.startswith(f"| {P3}")}
    assert rows[P1][:5] == ["1g.5gb", "1", "1", "7", "2"]
    assert rows[P3][:5] == ["3g.20gb", "3", "1", "2", "1"]
    assert float(rows[P1][8]) > 0
    assert float(rows[P3][8]) == 0
    for pod in PODS:
        seen = [s["requests"][pod] for s in samples]
        assert set(seen) <= set(bed.backend.requests_served[pod]), (seen, bed.backend.requests_served[pod])
        assert seen == sorted(seen)
    assert run["settings"]["target_queue_us"] == 2000.0
    assert run["settings"]["max_replicas"] == 9  # summed over the pools
    # the steps the pod's log reported: perf_analyzer's CSV row per step (the stand-in writes concurrency x 100.5/s)
    assert [(s["protocol"], s["concurrency"], s["perf"]["Inferences/Second"]) for s in run["steps"]] == [("http", 1, 100.5), ("http", 2, 200.5)]
    assert run["perf_failures"] == []
    assert run["failed_requests"] == 0
    # the log read through pods/{name}/log is the script's output; the pod ran the rendered command
    assert len(bed.runs) == 1
    assert bed.runs[0].exit_code == 0
    assert run["job_log"] == bed.runs[0].log
    assert "LOADTEST end status=0" in run["job_log"]
    args = (bed.work / "stub-args").read_text().splitlines()
    assert len(args) == 2
    logs = [r for r in bed.kube.requests if r.path == f"/api/v1/namespaces/{NS}/pods/{bed.runs[0].pod}/log"]
    assert logs
    assert logs[-1].status == 200
    assert logs[-1].query.get("container") == ["perf-analyzer"]
    # the statistics were asked for through the load balancer's Service before the Job was created
    stats = next(i for i, r in enumerate(bed.kube.requests) if r.path == f"/api/v1/namespaces/{NS}/services/nginx-lb:http/proxy/v2/models/demo/stats")
    create = next(i for i, r in enumerate(bed.kube.requests) if r.method in ("PATCH", "POST") and r.path.startswith(f"/apis/batch/v1/namespaces/{NS}/jobs"))
    assert stats < create
    _job_gone(bed.kube)


def test_a_failing_step_fails_the_play_and_the_job_is_deleted(bed: Bed) -> None:
    # the stand-in perf_analyzer fails gRPC at concurrency 8 (no stable measurement: exit 2)
    proc = bed.playbook("-e", '{"loadtest_protocols": ["grpc"], "loadtest_concurrency": [1, 8]}')
    assert proc.returncode != 0
    assert "The load generator failed: BackoffLimitExceeded Job has reached the specified backoff limit" in proc.stdout, proc.stdout[-5000:]
    assert "grpc concurrency 8: perf_analyzer exited 2" in proc.stdout
    assert bed.runs[0].exit_code == 2
    run = json.loads((_report(bed.work) / "run.json").read_text())
    assert [s["concurrency"] for s in run["steps"]] == [1]
    assert [s["concurrency"] for s in run["unmeasured_steps"]] == [8]
    _job_gone(bed.kube)


def test_statistics_refused_by_the_load_balancer_fails_before_the_job(bed: Bed) -> None:
    bed.backend.stats_status = 403
    proc = bed.playbook(run_job=False)
    assert proc.returncode != 0
    assert "The load balancer triton/nginx-lb refused GET /v2/models/demo/stats (403" in proc.stdout, proc.stdout[-4000:]
    assert "set gpu_ops_lb_model_statistics: true and run playbooks/load_balancer.yml (or site.yml) first" in proc.stdout
    assert not [r for r in bed.kube.requests if r.method in ("PATCH", "POST", "PUT") and "/jobs" in r.path]


def test_unknown_model_fails_naming_it_before_the_job(bed: Bed) -> None:
    proc = bed.playbook("-e", "loadtest_model=resnet50", run_job=False)
    assert proc.returncode != 0
    assert "Triton has no model 'resnet50' ready behind the load balancer triton/nginx-lb" in proc.stdout, proc.stdout[-4000:]
    assert not [r for r in bed.kube.requests if r.method in ("PATCH", "POST", "PUT") and "/jobs" in r.path]


def test_statistics_off_fails_in_preflight(bed: Bed) -> None:
    proc = bed.playbook("-e", "gpu_ops_lb_model_statistics=false", run_job=False)
    assert proc.returncode != 0
    assert ("playbooks/loadtest.yml needs the load balancer to pass model statistics (perf_analyzer reads them between measurements): "
            "set gpu_ops_lb_model_statistics: true and run playbooks/load_balancer.yml (or site.yml) first") in proc.stdout, proc.stdout[-3000:]
    assert bed.kube.requests == [] or not [r for r in bed.kube.requests if r.method != "GET"]
