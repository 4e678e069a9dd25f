# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 17, item 7: every query of every dashboard role monitoring renders returns series.

The serving stage (playbooks/serving.yml, render mode, inventories/dgx: a pool per MIG profile) and the load balancer
(playbooks/load_balancer.yml, two pools) are rendered; each panel query of each dashboard ConfigMap is sorted by the
exporters its series come from, recording rules (the rendered PrometheusRules of roles monitoring and custom_metrics)
expanded to what they read:

- Triton and the nginx exporter (and ``up`` of their targets): against a real serving test bed. Real Triton servers
  (tests/servers/triton.py) stand for the pods of two pools, triton-1g-5gb (two pods) and triton-3g-20gb (one pod),
  each pod with the labels and annotations of its rendered Deployment's pod template. Real Prometheus 2.42 (Debian)
  scrapes them with the job the Prometheus Operator generates from the rendered triton PodMonitor, its relabelings
  included (tests/servers/prometheus.py pod_monitor_job: pool and mig_profile from the pod label and annotation), and
  evaluates both rendered PrometheusRules. Real nginx 1.22 (Debian) runs the role nginx_lb's rendered config for the
  two pools (``resolve`` form: each pool's ``server`` line becomes one line per pod address with the pool's weight,
  which is what nginx makes of a name resolving to those addresses, ngx_http_upstream_init_round_robin); the real
  exporter, Debian's prometheus-nginx-exporter 0.11, runs with the rendered sidecar's arguments against nginx's
  stub_status and is scraped with the rendered nginx_lb PodMonitor's settings. Bounded inferences go through nginx;
  then each such query returns at least one series, the per-pool ones both pools and the per-pod ones every pod.
- kube-state-metrics, dcgm-exporter and node-exporter: ``promtool test rules`` with the rendered monitoring
  PrometheusRule as rule file (the recording rules are evaluated, not faked), series in the shape those exporters
  emit, and one promql_expr_test per query asserting the exact samples (EXPECTED below).

A query with no expected samples, a query mixing both kinds, or a query whose series come from no known exporter fails
the test, as does a live query that returns nothing: a new panel must come with its check.
"""
from __future__ import annotations

import contextlib
import copy
import json
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.servers.nginx import localize, nginx_server, render_role_config, version
    from tests.servers.ports import common_free_ports
    from tests.servers.processes import http_process
    from tests.servers.prometheus import PROMTOOL, PrometheusProcess, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from tests.servers.triton import TritonProcess, ensure_triton_venv, free_port, infer_http, triton_server, write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from servers.nginx import localize, nginx_server, render_role_config, version
    from servers.ports import common_free_ports
    from servers.processes import http_process
    from servers.prometheus import PROMTOOL, PrometheusProcess, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from servers.triton import TritonProcess, ensure_triton_venv, free_port, infer_http, triton_server, write_model_repository
    from vault_vars import VAULT_ARGS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NGINX_EXPORTER = Path("/usr/bin/prometheus-nginx-exporter")
NAMESPACE = "triton"
SVC_SUFFIX = ".triton.svc.cluster.local"
MODEL = "echo"
# two pools of the inventory's default (a pool per MIG profile): pod name -> loopback address
POOLS: Dict[str, Dict[str, str]] = {
    "triton-1g-5gb": {"triton-1g-5gb-6d5f8b7c9-2xkqp": "127.0.0.61", "triton-1g-5gb-6d5f8b7c9-h7w4m": "127.0.0.62"},
    "triton-3g-20gb": {"triton-3g-20gb-5c8d9f6b7-tq9zr": "127.0.0.63"},
}
TRITON_PODS = {pod for pods in POOLS.values() for pod in pods}
LB_POD = "nginx-lb-6b7f9c5d48-k2x7q"
N_REQUESTS = 40
LIVE_TIMEOUT_S = 40.0

# --- where a query's series come from ------------------------------------------------------------------

# metric name -> exporter, by prefix (exact names end with '$')
SOURCES: Sequence[Tuple[str, str]] = (
    (r"nv_", "triton"), (r"nginx_", "nginx"), (r"nginxplus_", "nginx"), (r"up$", "target"),
    (r"kube_", "kube-state-metrics"), (r"DCGM_", "dcgm-exporter"), (r"gpu_ops_mig_layout_matched$", "node-exporter"),
)
LIVE = {"triton", "nginx", "target"}
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


class Query(NamedTuple):
    board: str
    panel: str
    legend: str
    expr: str


def dashboard_queries(configmaps: Sequence[Mapping[str, Any]]) -> List[Query]:
    out: List[Query] = []
    for configmap in configmaps:
        board = json.loads(next(iter(configmap["data"].values())))
        for panel in board["panels"]:
            out.extend(Query(board["uid"], panel["title"], t["legendFormat"], t["expr"]) for t in panel["targets"])
    return out


def recorded(rules: Sequence[Mapping[str, Any]]) -> Dict[str, str]:
    """record name -> expression, over the rendered PrometheusRules."""
    return {r["record"]: r["expr"] for rule in rules for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}


def sources(expr: str, records: Mapping[str, str], seen: Optional[Set[str]] = None) -> Set[str]:
    """The exporters whose series ``expr`` reads, recording rules followed to their expressions. Words that name no
    exporter's metric (functions, label names, keywords) count as nothing; string literals are skipped."""
    seen = set() if seen is None else seen
    out: Set[str] = set()
    for word in _NAME.findall(re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
        if word in records and word not in seen:
            seen.add(word)
            out |= sources(records[word], records, seen)
            continue
        out |= {source for prefix, source in SOURCES if re.match(prefix, word)}
    return out


# --- rendering -----------------------------------------------------------------------------------------


def render_serving(out: Path) -> Dict[str, Any]:
    env = ansible_env(out.parent)
    argv = [str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", *VAULT_ARGS,
            "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
            "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}"]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]

    def one(pattern: str) -> Dict[str, Any]:
        found = sorted(out.glob(pattern))
        assert len(found) == 1, (pattern, found)
        return dict(yaml.safe_load(found[0].read_text()))

    deployments = {p: one(f"triton/*-deployment-{p}.yaml") for p in POOLS}
    return {
        "configmaps": [yaml.safe_load(p.read_text()) for p in sorted((out / "monitoring_rules").glob("*-configmap-*.yaml"))],
        "monitoring_rule": one("monitoring_rules/*-prometheusrule-*.yaml"),
        "queue_rule": one("custom_metrics/*-prometheusrule-*.yaml"),
        "triton_pod_monitor": one("triton/*-podmonitor-*.yaml"),
        "pod_meta": {pool: d["spec"]["template"]["metadata"] for pool, d in deployments.items()},
    }


def lb_pools(serving: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """The LB's pools for the two Triton pools: the headless Service, weighted by the profile's compute slices."""
    out = []
    for pool, meta in serving["pod_meta"].items():
        profile = meta["annotations"]["gpu-ops.io/mig-profile"]
        out.append({"service": f"{pool}-headless", "weight": int(profile.split("g.")[0]), "max_replicas": len(POOLS[pool])})
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    work = tmp_path_factory.mktemp("dashboards-render")
    serving = render_serving(work / "serving")
    lb_dir = work / "lb"
    # the resolve form (nginx >= 1.27.3), scraped every second so a rate() window fills quickly
    conf = render_role_config(lb_dir, "-e", "nginx_lb_oss_version=1.28.0", "-e", "nginx_lb_monitor_interval=1s", pools=lb_pools(serving))
    render = lb_dir / "render" / "nginx_lb"
    lb_deploy = yaml.safe_load(next(render.glob("*-deployment-nginx-lb.yaml")).read_text())
    serving.update({
        "nginx_conf": conf,
        "lb_pod_monitor": yaml.safe_load(next(render.glob("*-podmonitor-nginx-lb.yaml")).read_text()),
        "exporter": next(c for c in lb_deploy["spec"]["template"]["spec"]["containers"] if c["name"] == "exporter"),
        "lb_pod_labels": lb_deploy["spec"]["template"]["metadata"]["labels"],
    })
    queries = dashboard_queries(serving["configmaps"])
    records = recorded([serving["monitoring_rule"], serving["queue_rule"]])
    serving["live"], serving["fed"] = [], []
    for query in queries:
        found = sources(query.expr, records)
        assert found, f"{query}: its series come from no known exporter"
        assert found <= LIVE or not found & LIVE, f"{query}: mixes {sorted(found)}; split it into queries of one kind"
        serving["live" if found <= LIVE else "fed"].append(query)
    return serving


def test_every_dashboard_is_sorted_and_covers_the_issue(rendered: Dict[str, Any]) -> None:
    boards = {json.loads(next(iter(c["data"].values())))["uid"] for c in rendered["configmaps"]}
    assert boards == {"gpu-ops-queue-time", "gpu-ops-replicas", "gpu-ops-requests", "gpu-ops-mig-utilisation", "gpu-ops-layout"}
    live = {q.panel for q in rendered["live"]}
    fed = {q.panel for q in rendered["fed"]}
    # the issue's views: queue time per pod and pool against the target, replicas against capacity per pool,
    # requests per pod (and pool) through the LB and the LB itself, MIG utilisation per GPU instance, layout per node
    assert {"Queue time per pod (the HPA's metric)", "Successful inferences per second per pod", "Successful inferences per second per pool",
            "Load balancer requests per second per LB pod", "Load balancer active client connections per LB pod"} <= live, live
    assert {"Replicas per pool: HPA current, desired and maxReplicas (the MIG capacity)", "Graphics engine active per GPU instance",
            "Layout matched per node (1 matched, 0 not)"} <= fed, fed
    target = [q for q in rendered["fed"] if q.panel.startswith("Queue time per pool")]
    assert [q.legend for q in target] == ["{{ pool }} target"], target


# --- the live bed: Triton in two pools, nginx, its exporter, Prometheus ----------------------------------


@contextlib.contextmanager
def nginx_exporter(args: Sequence[str], log: Path) -> Iterator[str]:
    if not NGINX_EXPORTER.is_file():
        pytest.fail(f"{NGINX_EXPORTER} is missing: `apt-get install prometheus-nginx-exporter` (make test installs it)")
    [address] = [a.split("=", 1)[1] for a in args if a.startswith("--web.listen-address=")]
    # ready once it reads nginx's stub_status
    with http_process([str(NGINX_EXPORTER), *args], log, f"http://{address}/metrics", name="nginx-exporter",
                      ready=lambda body: "nginx_up 1" in body):
        yield address


def localized_nginx(rendered: Mapping[str, Any], prefix: Path, tritons: Mapping[str, TritonProcess], ports: Sequence[int]) -> str:
    """The rendered nginx.conf on loopback: listen addresses, and each pool's ``server <name> resolve weight=w ...;``
    line as one line per pod address with the same weight and parameters (``resolve`` dropped: 1.22 lacks it)."""
    conf: str = rendered["nginx_conf"]
    lb_http, lb_grpc, lb_status = ports
    swaps = {"worker_processes auto;": "worker_processes 1;", "listen 8000;": f"listen 127.0.0.1:{lb_http};",
             "listen 8001;\n        http2 on;": f"listen 127.0.0.1:{lb_grpc} http2;", "listen 8080;": f"listen 127.0.0.1:{lb_status};"}
    some = next(iter(tritons.values()))
    for pool, pods in POOLS.items():
        for port, local in (("8000", some.http_port), ("8001", some.grpc_port)):
            pattern = re.compile(r"server " + re.escape(f"{pool}-headless{SVC_SUFFIX}:{port}") + r" resolve (weight=\d+ [^;]*);")
            lines = pattern.findall(conf)
            assert len(lines) == 1, (pool, port, lines)
            old = f"server {pool}-headless{SVC_SUFFIX}:{port} resolve {lines[0]};"
            swaps[old] = "\n        ".join(f"server {address}:{local} {lines[0]};" for address in pods.values())
    return localize(conf, prefix, swaps)


def exporter_args(container: Mapping[str, Any], status_port: int, metrics_port: int) -> List[str]:
    """The sidecar's rendered arguments, with this machine's stub_status and listen addresses."""
    args = [str(a) for a in container["args"]]
    scrape = [a for a in args if a.startswith("--nginx.scrape-uri=")]
    assert scrape == ["--nginx.scrape-uri=http://127.0.0.1:8080/stub_status"], args
    listen = [a for a in args if a.startswith("--web.listen-address=")]
    assert len(listen) == 1, args
    swap = {scrape[0]: f"--nginx.scrape-uri=http://127.0.0.1:{status_port}/stub_status", listen[0]: f"--web.listen-address=127.0.0.1:{metrics_port}"}
    return [swap.get(a, a) for a in args]


def infer_through(port: int, n: int) -> None:
    body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}).encode()
    errors = infer_http(port, n, MODEL, body)
    assert not errors, errors[:5]


def live_problems(prom: PrometheusProcess, queries: Sequence[Query]) -> Dict[Query, str]:
    """What is wrong with each live query's answer now: no series; a per-pool query without both pools; a per-pod
    query without every pod (Triton's, or the LB's for the exporter's)."""
    problems = {}
    for query in queries:
        result = prom.series(query.expr)
        if not result:
            problems[query] = "no series"
            continue
        pools = {labels.get("pool") for labels, _value in result}
        pods = {labels.get("pod") for labels, _value in result}
        want_pods = {LB_POD} if "nginx" in query.expr else TRITON_PODS
        if "{{ pool }}" in query.legend and pools != set(POOLS):
            problems[query] = f"pools {sorted(map(str, pools))}"
        elif "{{ pod }}" in query.legend and pods != want_pods:
            problems[query] = f"pods {sorted(map(str, pods))}"
    return problems


def test_triton_and_nginx_panels_return_series_on_the_serving_bed(rendered: Dict[str, Any], tmp_path: Path) -> None:
    assert version().startswith("1.22."), "Debian 12's nginx"
    ensure_triton_venv()
    repo = write_model_repository(tmp_path / "models", name=MODEL)
    addresses = {pod: address for pods in POOLS.values() for pod, address in pods.items()}
    t_http, t_grpc, t_metrics = common_free_ports(list(addresses.values()), 3)
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(max_workers=len(addresses)) as pool:  # the servers start side by side
            started = {pod: pool.submit(stack.enter_context, triton_server(repo, host=address, http_port=t_http, grpc_port=t_grpc,
                                                                           metrics_port=t_metrics))
                       for pod, address in addresses.items()}
            tritons: Dict[str, TritonProcess] = {pod: future.result() for pod, future in started.items()}
        lb_ports = common_free_ports(["127.0.0.1"], 3)
        prefix = tmp_path / "nginx"
        prefix.mkdir()
        conf = localized_nginx(rendered, prefix, tritons, lb_ports)
        stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{lb_ports[2]}/healthz"))
        exporter = stack.enter_context(nginx_exporter(exporter_args(rendered["exporter"], lb_ports[2], free_port()), tmp_path / "exporter.log"))
        meta = {pod: rendered["pod_meta"][pool] for pool, pods in POOLS.items() for pod in pods}
        triton_job = pod_monitor_job(rendered["triton_pod_monitor"], {pod: f"{t.host}:{t.metrics_port}" for pod, t in tritons.items()},
                                     pod_labels={pod: m["labels"] for pod, m in meta.items()},
                                     pod_annotations={pod: m.get("annotations", {}) for pod, m in meta.items()})
        lb_job = pod_monitor_job(rendered["lb_pod_monitor"], {LB_POD: exporter}, container="exporter",
                                 pod_labels={LB_POD: rendered["lb_pod_labels"]})
        groups = prometheus_rule_groups(rendered["monitoring_rule"]) + prometheus_rule_groups(rendered["queue_rule"])
        prom: PrometheusProcess = stack.enter_context(prometheus_server(tmp_path / "prometheus", [triton_job, lb_job], rule_groups=groups))
        # every target scraped once before the requests, so the counters' rise falls inside the rate() windows
        deadline = time.monotonic() + LIVE_TIMEOUT_S
        while len(prom.series("up == 1")) < len(tritons) + 1 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(prom.series("up == 1")) == len(tritons) + 1, prom.targets_up()
        infer_through(lb_ports[0], N_REQUESTS)
        served = {pod: prom.series(f'nv_inference_request_success{{pod="{pod}",model="{MODEL}"}}') for pod in tritons}
        deadline = time.monotonic() + LIVE_TIMEOUT_S
        problems = live_problems(prom, rendered["live"])
        while problems and time.monotonic() < deadline:
            time.sleep(1.0)
            problems = live_problems(prom, rendered["live"])
        assert not problems, (problems, prom.targets_up(), served)
        # the relabelings reached the targets: pool and profile per pod, as the Deployments' pod templates say
        up = {labels["pod"]: (labels.get("pool"), labels.get("mig_profile")) for labels, _v in prom.series(f'up{{namespace="{NAMESPACE}"}}')}
        assert up == {pod: (pool, rendered["pod_meta"][pool]["annotations"]["gpu-ops.io/mig-profile"]) for pool, pods in POOLS.items()
                      for pod in pods} | {LB_POD: (None, None)}, up
        # the requests went through nginx to every pod, and the exporter saw them
        by_legend = {(q.panel, q.legend): q for q in rendered["live"]}
        per_pool = prom.series(by_legend[("Successful inferences per second per pool", "{{ pool }}")].expr)
        assert all(value > 0 for _labels, value in per_pool), per_pool
        lb_rate = prom.series(by_legend[("Load balancer requests per second per LB pod", "{{ pod }}")].expr)
        assert [labels["pod"] for labels, value in lb_rate if value > 0] == [LB_POD], lb_rate
        lb_up = prom.series(by_legend[("Load balancer exporter reads nginx (1 up, 0 down)", "{{ pod }}")].expr)
        assert [(labels["pod"], value) for labels, value in lb_up] == [(LB_POD, 1.0)], lb_up
        assert all(r["health"] in ("ok", "unknown") for r in prom.rule_health()), prom.rule_health()


# --- kube-state-metrics, dcgm-exporter, node-exporter: promtool ------------------------------------------

P1, P2 = POOLS["triton-1g-5gb"]
P3 = next(iter(POOLS["triton-3g-20gb"]))
# what Prometheus adds to every series of a target (kube-prometheus-stack's ServiceMonitors, honorLabels: the
# exporter's own namespace/pod/container labels win where it sets them)
KSM = 'job="kube-state-metrics",instance="10.244.1.7:8080"'
DCGM_A = 'job="nvidia-device-plugin/dcgm-exporter",instance="10.244.3.4:9400"'
DCGM_B = 'job="nvidia-device-plugin/dcgm-exporter",instance="10.244.4.4:9400"'


def _hpa(name: str, target: int, current: int, desired: int, maximum: int, deployment: str) -> List[Tuple[str, str]]:
    """kube-state-metrics v2 internal/store/horizontalpodautoscaler.go: kube_horizontalpodautoscaler_info (scale target
    kind/name/api version), _spec_target_metric (metric_name, metric_target_type: value|average|utilization),
    _status_current_replicas, _status_desired_replicas, _spec_max_replicas; every one with namespace and
    horizontalpodautoscaler."""
    base = f'{KSM},namespace="{NAMESPACE}",horizontalpodautoscaler="{name}"'
    return [
        (f'kube_horizontalpodautoscaler_info{{{base},scaletargetref_api_version="apps/v1",scaletargetref_kind="Deployment",'
         f'scaletargetref_name="{deployment}"}}', "1x10"),
        (f'kube_horizontalpodautoscaler_spec_target_metric{{{base},metric_name="avg_time_queue_us",metric_target_type="average"}}', f"{target}x10"),
        (f"kube_horizontalpodautoscaler_status_current_replicas{{{base}}}", f"{current}x10"),
        (f"kube_horizontalpodautoscaler_status_desired_replicas{{{base}}}", f"{desired}x10"),
        (f"kube_horizontalpodautoscaler_spec_max_replicas{{{base}}}", f"{maximum}x10"),
    ]


def _gi(base: str, host: str, gpu: int, gi: int, profile: str, value: float, pod: str = "",
        namespace: str = NAMESPACE) -> Tuple[str, str]:
    """dcgm-exporter's DCGM_FI_PROF_GR_ENGINE_ACTIVE of one MIG GPU instance (pkg/dcgmexporter/render_metrics.go: gpu,
    UUID, device, modelName, GPU_I_PROFILE, GPU_I_ID, Hostname; with pod attribution, pkg/dcgmexporter/kubernetes: pod,
    namespace, container). Without a pod on it the target's own pod and namespace labels stay (the exporter pod's)."""
    owner = (f'pod="{pod}",namespace="{namespace}",container="triton"' if pod
             else 'pod="dcgm-exporter-5kq8w",namespace="nvidia-device-plugin",container="exporter"')
    return (f'DCGM_FI_PROF_GR_ENGINE_ACTIVE{{{base},gpu="{gpu}",UUID="GPU-5f1c0a9e-{gpu:04d}",device="nvidia{gpu}",'
            f'modelName="NVIDIA A100-SXM4-40GB",GPU_I_PROFILE="{profile}",GPU_I_ID="{gi}",Hostname="{host}",{owner}}}', f"{value}x10")


def _requests(pod: str, node: str, resource: str, phase: str) -> List[Tuple[str, str]]:
    """kube-state-metrics internal/store/pod.go: kube_pod_container_resource_requests (namespace, pod, uid, container,
    node, resource, unit; an extended resource nvidia.com/mig-1g.5gb as resource="nvidia_com_mig_1g_5gb", unit
    "integer"; node "" while unscheduled) and kube_pod_status_phase (one series per phase, 1 for the pod's)."""
    base = f'{KSM},namespace="{NAMESPACE}",pod="{pod}"'
    return [(f'kube_pod_container_resource_requests{{{base},uid="uid-{pod}",container="triton",node="{node}",resource="{resource}",'
             f'unit="integer"}}', "1x10"),
            (f'kube_pod_container_resource_requests{{{base},uid="uid-{pod}",container="triton",node="{node}",resource="cpu",unit="core"}}', "2x10")] + [
        (f'kube_pod_status_phase{{{base},uid="uid-{pod}",phase="{p}"}}', f"{int(p == phase)}x10") for p in ("Pending", "Running", "Succeeded")]


def _allocatable(node: str, resource: str, value: int, unit: str = "integer") -> Tuple[str, str]:
    """kube-state-metrics internal/store/node.go: kube_node_status_allocatable (node, resource, unit)."""
    return f'kube_node_status_allocatable{{{KSM},node="{node}",resource="{resource}",unit="{unit}"}}', f"{value}x10"


def _layout(node: str, config: str, value: int, address: str) -> Tuple[str, str]:
    """node-exporter's textfile collector: role mig_layout's gauge as written (config), with the chart's ServiceMonitor
    relabeling the pod's node name into ``node`` and the target's labels."""
    return (f'gpu_ops_mig_layout_matched{{config="{config}",node="{node}",job="node-exporter",instance="{address}:9100",'
            f'namespace="monitoring",pod="kube-prometheus-stack-prometheus-node-exporter-{node[-2:]}x7k",container="node-exporter",'
            f'endpoint="http-metrics",service="kube-prometheus-stack-prometheus-node-exporter"}}', f"{value}x10")


# Two Triton pools with their HPAs and an HPA of another Deployment (not a pool); dgx-a100-01 all-1g.5gb (56 slices,
# matched), dgx-a100-02 all-balanced (per GPU 2 x 1g.5gb, 2g.10gb, 3g.20gb: 16, 8, 8; not matched); pods P1 and P2
# on 1g.5gb slices of dgx-a100-01, P3 on a 3g.20gb slice of dgx-a100-02, one more 1g.5gb pod Pending unscheduled.
INPUT_SERIES: List[Tuple[str, str]] = [
    *_hpa("triton-1g-5gb", 20000, 2, 3, 72, "triton-1g-5gb"),
    *_hpa("triton-3g-20gb", 50000, 1, 1, 8, "triton-3g-20gb"),
    *_hpa("batch-jobs", 100, 5, 5, 10, "batch-jobs"),
    _allocatable("dgx-a100-01", "nvidia_com_mig_1g_5gb", 56), _allocatable("dgx-a100-01", "cpu", 128, "core"),
    _allocatable("dgx-a100-02", "nvidia_com_mig_1g_5gb", 16), _allocatable("dgx-a100-02", "nvidia_com_mig_2g_10gb", 8),
    _allocatable("dgx-a100-02", "nvidia_com_mig_3g_20gb", 8), _allocatable("dgx-a100-02", "cpu", 128, "core"),
    *_requests(P1, "dgx-a100-01", "nvidia_com_mig_1g_5gb", "Running"),
    *_requests(P2, "dgx-a100-01", "nvidia_com_mig_1g_5gb", "Running"),
    *_requests(P3, "dgx-a100-02", "nvidia_com_mig_3g_20gb", "Running"),
    *_requests("triton-1g-5gb-6d5f8b7c9-pend1", "", "nvidia_com_mig_1g_5gb", "Pending"),
    _gi(DCGM_A, "dgx-a100-01", 0, 7, "1g.5gb", 0.42, P1), _gi(DCGM_A, "dgx-a100-01", 0, 8, "1g.5gb", 0.3, P2),
    _gi(DCGM_A, "dgx-a100-01", 0, 9, "1g.5gb", 0),
    _gi(DCGM_B, "dgx-a100-02", 3, 2, "3g.20gb", 0.81, P3),
    # a GPU without MIG (no GPU_I_* labels): not a GPU instance
    ('DCGM_FI_PROF_GR_ENGINE_ACTIVE{job="nvidia-device-plugin/dcgm-exporter",instance="10.244.5.4:9400",gpu="0",UUID="GPU-77aa",'
     'device="nvidia0",modelName="NVIDIA H200",Hostname="dgx-h200-01",pod="dcgm-exporter-9zz2b",namespace="nvidia-device-plugin",'
     'container="exporter"}', "0.5x10"),
    _layout("dgx-a100-01", "all-1g.5gb", 1, "10.0.0.11"), _layout("dgx-a100-02", "all-balanced", 0, "10.0.0.12"),
]

_T = f'namespace="{NAMESPACE}"'
# (dashboard, panel, legend) -> the exact samples at EVAL_TIME: (labels as promtool writes them, value)
EXPECTED: Dict[Tuple[str, str, str], List[Tuple[str, float]]] = {
    ("gpu-ops-queue-time", "Queue time per pool (its pods' average, what the HPA compares) against its HPA target", "{{ pool }} target"): [
        (f'gpu_ops:pool_queue_target_us{{{_T},deployment="triton-1g-5gb",pool="triton-1g-5gb"}}', 20000),
        (f'gpu_ops:pool_queue_target_us{{{_T},deployment="triton-3g-20gb",pool="triton-3g-20gb"}}', 50000)],
    **{("gpu-ops-replicas", "Replicas per pool: HPA current, desired and maxReplicas (the MIG capacity)", f"{{{{ pool }}}} {what}"): [
        (f'{{{_T},pool="triton-1g-5gb"}}', small), (f'{{{_T},pool="triton-3g-20gb"}}', big)]
       for what, small, big in (("current", 2, 1), ("desired", 3, 1), ("max (MIG capacity)", 72, 8))},
    **{("gpu-ops-replicas", "MIG slices per profile (advertised, requested, free)", f"{{{{ profile }}}} {what}"): [
        (f'gpu_ops:mig_slices_{what}{{profile="{p}",resource="nvidia_com_mig_{p}"}}', v) for p, v in values]
       for what, values in (("advertised", (("1g_5gb", 72), ("2g_10gb", 8), ("3g_20gb", 8))),
                            ("requested", (("1g_5gb", 2), ("3g_20gb", 1))),
                            ("free", (("1g_5gb", 70), ("2g_10gb", 8), ("3g_20gb", 7))))},
    ("gpu-ops-mig-utilisation", "Graphics engine active per GPU instance",
     "{{ Hostname }} GPU {{ gpu }} GI {{ GPU_I_ID }} ({{ GPU_I_PROFILE }})"): [
        ('{Hostname="dgx-a100-01",gpu="0",GPU_I_ID="7",GPU_I_PROFILE="1g.5gb"}', 0.42),
        ('{Hostname="dgx-a100-01",gpu="0",GPU_I_ID="8",GPU_I_PROFILE="1g.5gb"}', 0.3),
        ('{Hostname="dgx-a100-01",gpu="0",GPU_I_ID="9",GPU_I_PROFILE="1g.5gb"}', 0),
        ('{Hostname="dgx-a100-02",gpu="3",GPU_I_ID="2",GPU_I_PROFILE="3g.20gb"}', 0.81)],
    ("gpu-ops-mig-utilisation", "Graphics engine active of the GPU instance each Triton pod holds", "{{ pod }} ({{ GPU_I_PROFILE }})"): [
        (f'{{{_T},pod="{P1}",GPU_I_PROFILE="1g.5gb"}}', 0.42), (f'{{{_T},pod="{P2}",GPU_I_PROFILE="1g.5gb"}}', 0.3),
        (f'{{{_T},pod="{P3}",GPU_I_PROFILE="3g.20gb"}}', 0.81)],
    ("gpu-ops-layout", "Layout matched per node (1 matched, 0 not)", "{{ node }} {{ config }}"): [
        ('{node="dgx-a100-01",config="all-1g.5gb"}', 1), ('{node="dgx-a100-02",config="all-balanced"}', 0)],
    ("gpu-ops-layout", "MIG slices advertised per node and profile", "{{ node }} {{ resource }}"): [
        ('{node="dgx-a100-01",resource="nvidia_com_mig_1g_5gb"}', 56), ('{node="dgx-a100-02",resource="nvidia_com_mig_1g_5gb"}', 16),
        ('{node="dgx-a100-02",resource="nvidia_com_mig_2g_10gb"}', 8), ('{node="dgx-a100-02",resource="nvidia_com_mig_3g_20gb"}', 8)],
}
EVAL_TIME = "5m"


def promtool_file(rendered: Mapping[str, Any], expected: Mapping[Tuple[str, str, str], List[Tuple[str, float]]]) -> Dict[str, Any]:
    """The ``promtool test rules`` file: the rendered monitoring rules, INPUT_SERIES, and per fed query its samples."""
    cases = []
    for query in rendered["fed"]:
        key = (query.board, query.panel, query.legend)
        assert key in expected, f"no expected samples for {key}: add them to EXPECTED (a new panel needs its check)"
        cases.append({"expr": query.expr, "eval_time": EVAL_TIME,
                      "exp_samples": [{"labels": labels, "value": value} for labels, value in expected[key]]})
    unused = set(expected) - {(q.board, q.panel, q.legend) for q in rendered["fed"]}
    assert not unused, f"EXPECTED names queries no dashboard has: {sorted(unused)}"
    return {"rule_files": ["rules.yml"], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in INPUT_SERIES],
                       "promql_expr_test": cases}]}


Expected = Mapping[Tuple[str, str, str], List[Tuple[str, float]]]


def run_promtool(workdir: Path, rendered: Mapping[str, Any], expected: Expected) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).is_file():
        pytest.fail(f"{PROMTOOL} is missing: `apt-get install prometheus` (make test installs it)")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "rules.yml").write_text(yaml.safe_dump({"groups": prometheus_rule_groups(rendered["monitoring_rule"])}, sort_keys=False))
    (workdir / "dashboards.test.yml").write_text(yaml.safe_dump(promtool_file(rendered, expected), sort_keys=False, width=200))
    return subprocess.run([PROMTOOL, "test", "rules", "dashboards.test.yml"], cwd=workdir, capture_output=True, text=True, timeout=120, check=False)


def test_kube_state_dcgm_and_layout_panels_with_promtool(rendered: Dict[str, Any], tmp_path: Path) -> None:
    assert len(rendered["fed"]) == sum(1 for _key in EXPECTED), [(q.panel, q.legend) for q in rendered["fed"]]
    proc = run_promtool(tmp_path / "ok", rendered, EXPECTED)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "SUCCESS" in proc.stdout, proc.stdout
    # the check can fail: one sample off, or a query that returns nothing, and promtool says so
    off = copy.deepcopy(EXPECTED)
    key = ("gpu-ops-replicas", "MIG slices per profile (advertised, requested, free)", "{{ profile }} free")
    off[key] = [(labels, value + 1) for labels, value in off[key]]
    proc = run_promtool(tmp_path / "off", rendered, off)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "gpu_ops:mig_slices_free" in proc.stdout + proc.stderr, proc.stdout[-3000:]
    empty = copy.deepcopy(rendered)
    empty["fed"] = [q._replace(expr=q.expr.replace("kube_node_status_allocatable", "kube_node_status_capacity_typo")) for q in rendered["fed"]]
    proc = run_promtool(tmp_path / "empty", empty, EXPECTED)
    assert proc.returncode != 0, proc.stdout[-3000:]


def test_check_refuses_an_unchecked_or_mixed_query(rendered: Dict[str, Any]) -> None:
    extra = Query("gpu-ops-layout", "A new panel", "{{ node }}", "kube_node_info")
    with pytest.raises(AssertionError, match="no expected samples"):
        promtool_file({**rendered, "fed": [*rendered["fed"], extra]}, EXPECTED)
    records = recorded([rendered["monitoring_rule"], rendered["queue_rule"]])
    assert sources("gpu_ops:pool_queue_time_us:avg", records) == {"triton", "kube-state-metrics"}
    assert sources('sum by (pod) (rate(nv_inference_request_success{pod="kube_x"}[1m]))', records) == {"triton"}
    assert sources("gpu_ops:mig_slices_free", records) == {"kube-state-metrics"}
    # a query reading no known exporter has no source: the fixture refuses it
    assert not sources("sum(rate(foo_total[1m]))", records)


def test_pod_monitor_job_applies_the_relabelings(rendered: Dict[str, Any]) -> None:
    pod = next(iter(POOLS["triton-3g-20gb"]))
    meta = rendered["pod_meta"]["triton-3g-20gb"]
    job = pod_monitor_job(rendered["triton_pod_monitor"], {pod: "127.0.0.1:1"}, pod_labels={pod: meta["labels"]},
                          pod_annotations={pod: meta["annotations"]})
    labels = job["static_configs"][0]["labels"]
    assert labels["__meta_kubernetes_pod_label_gpu_ops_io_serving_pool"] == "triton-3g-20gb"
    assert labels["__meta_kubernetes_pod_annotation_gpu_ops_io_mig_profile"] == "3g.20gb"
    assert job["relabel_configs"] == [
        {"source_labels": ["__meta_kubernetes_pod_label_gpu_ops_io_serving_pool"], "target_label": "pool", "action": "replace"},
        {"source_labels": ["__meta_kubernetes_pod_annotation_gpu_ops_io_mig_profile"], "target_label": "mig_profile", "action": "replace"}]
