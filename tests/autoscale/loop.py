# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The autoscaling loop closed on one machine: real components, one stand-in for Kubernetes.

    run = run_closed_loop(workdir, profile="short")   # the run dict of the load-test report (SCHEMA)

Real: Triton servers (the CPU tritonserver of the nvidia-pytriton wheel, a python model with a fixed service time and
one instance, so concurrent requests queue) as pods, each on its own loopback address and the Deployment's ports;
dnsmasq answering the headless Service's name with the pods published in it; nginx running the config the role
nginx_lb renders (its resolver pointed at dnsmasq); Prometheus scraping the pods with the settings of the rendered
PodMonitor and evaluating the rendered PrometheusRule; the rendered prometheus-adapter metricsQuery, expanded for the
Deployment's pods as the adapter does (tests/kube_fake/metrics.py adapter_query); the load generator of
tests/autoscale/loadgen.py (perf_analyzer's concurrency semantics) through nginx over HTTP and gRPC.

Stand-ins (tests/autoscale/hpa.py, tests/autoscale/pods.py): the HPA controller (the documented algorithm, every
sync period, on the rendered HorizontalPodAutoscaler), and the Deployment/kubelet/EndpointSlice controllers (start a
pod, the rendered probes, publish it in DNS when ready; on scale-down unpublish, preStop, stop).

Variants (VARIANTS): ``ours``, the rendered objects; ``article``, the seed article's set-up (10 s scrape, its delta query,
Kubernetes' probe defaults, the ClusterIP Service's name as the load balancer's upstream, with a kube-proxy stand-in:
KubeProxy). Every run also records when each new pod's Triton first answers /v2/health/ready (``triton_up``, polled
from outside every 50 ms) and the pods' real queue time from their own counters (``queue_ref_us`` per sample), so
runs of different set-ups compare (benchmarks/time_to_capacity.py).

The PodMonitor's target set follows the pods as the Prometheus Operator's kubernetes_sd "pod" role does (every pod
with a running container, ready or not): here through a file_sd file rewritten whenever the pods change (Prometheus
watches it with inotify). Requests per pod are read from nginx's access log (its ``upstream=`` field, the last address
when nginx retried on another pod).

Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import yaml

from ansible_collections.gpu_ops.mig_serving.plugins.plugin_utils._loadtest_report import OPTIONAL_PERF_COLUMNS, PERF_COLUMNS

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if TYPE_CHECKING:
    from tests.autoscale import hpa as hpa_mod
    from tests.autoscale import pods as pods_mod
    from tests.autoscale.loadgen import ConcurrencyLoad, csv_row
    from tests.kube_fake.metrics import adapter_query
    from tests.servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from tests.servers.nginx import localize, loopback_swaps, nginx_server, render_role_config
    from tests.servers.ports import common_free_ports
    from tests.servers.prometheus import PrometheusProcess, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from tests.servers.triton import write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from kube_fake.metrics import adapter_query
    from servers.dnsmasq import DnsmasqProcess, dnsmasq_server
    from servers.nginx import localize, loopback_swaps, nginx_server, render_role_config
    from servers.ports import common_free_ports
    from servers.prometheus import PrometheusProcess, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from servers.triton import write_model_repository
    from vault_vars import VAULT_ARGS

    from autoscale import hpa as hpa_mod
    from autoscale import pods as pods_mod
    from autoscale.loadgen import ConcurrencyLoad, csv_row

MODEL = "sleeper"
# One serving pool (gpu_ops_serving_pools): the Deployment, HPA and headless Service of role triton/autoscaling are named
# after it, and the load balancer's one upstream server resolves its headless Service.
POOL = "triton-1g-5gb"
POOL_PROFILE = "1g.5gb"
FQDN = f"{POOL}-headless.triton.svc.cluster.local"
NAMESPACE = "triton"
Log = Callable[[str], None]


# --- profiles ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    """Load through nginx: ``http``/``grpc`` outstanding requests, in steps of ``step_s`` (one perf row per protocol
    and step), at least ``min_s``, then until ``until`` holds (checked after each step), at most ``max_s``."""

    name: str
    http: int
    grpc: int
    min_s: float
    max_s: float
    until: str = ""  # "": none; "ready:N": N replicas, N pods in DNS, each served; "settled:N": N replicas, N pods
    hold_s: float = 0.0  # once ``until`` holds: this much more load


@dataclass(frozen=True)
class Profile:
    name: str
    delay_ms: float  # the model's service time per request
    max_replicas: int  # the one pool's max_replicas (gpu_ops_serving_pools): the MIG capacity of the demo "fleet"
    sync_s: float  # the HPA controller's --horizontal-pod-autoscaler-sync-period
    sample_s: float
    step_s: float
    idle_s: float
    phases: Tuple[Phase, ...]
    render_extra: Tuple[str, ...] = ()  # role variables set on top of the defaults (each listed in the settings)
    limit_s: float = 600.0  # the whole run, bounded


PROFILES: Dict[str, Profile] = {
    # make test: 1 -> 2 -> 1 with a short HPA sync period and scale-down window
    "short": Profile(
        name="short", delay_ms=40.0, max_replicas=2, sync_s=2.0, sample_s=1.0, step_s=6.0, idle_s=3.0,
        phases=(Phase("up", http=2, grpc=2, min_s=12.0, max_s=60.0, until="ready:2", hold_s=4.0),
                Phase("down", http=1, grpc=0, min_s=6.0, max_s=60.0, until="settled:1")),
        render_extra=("autoscaling_scale_down_stabilization_seconds=6",), limit_s=170.0,
    ),
    # benchmarks/time_to_capacity.py: one load step that needs exactly one more pod (3 outstanding requests of 40 ms on
    # one pod queue about 80 ms, ratio 1.6 to the 50 ms target: 2 pods; on 2 pods about 20 ms), held until the new pod
    # serves and a while after, then a low load until the HPA is back at one pod
    "step": Profile(
        name="step", delay_ms=40.0, max_replicas=3, sync_s=2.0, sample_s=0.5, step_s=4.0, idle_s=3.0,
        phases=(Phase("up", http=2, grpc=1, min_s=24.0, max_s=90.0, until="ready:2", hold_s=8.0),
                Phase("down", http=1, grpc=0, min_s=4.0, max_s=120.0, until="settled:1")),
        render_extra=("autoscaling_scale_down_stabilization_seconds=6",), limit_s=300.0,
    ),
    # make autoscale-demo: 1 -> 2 -> 3 -> 2 -> 1, the Kubernetes default sync period (15 s)
    "demo": Profile(
        name="demo", delay_ms=40.0, max_replicas=3, sync_s=15.0, sample_s=1.0, step_s=15.0, idle_s=10.0,
        phases=(Phase("up", http=2, grpc=1, min_s=30.0, max_s=120.0, until="ready:2", hold_s=30.0),
                Phase("higher", http=3, grpc=3, min_s=30.0, max_s=120.0, until="ready:3", hold_s=30.0),
                Phase("down", http=1, grpc=0, min_s=30.0, max_s=300.0, until="settled:1")),
        render_extra=("autoscaling_scale_down_stabilization_seconds=60",), limit_s=900.0,
    ),
}


# --- set-ups: ours, and the seed article's (issue 16 item 3) ---------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """What the metric path and the pods use, on top of the rendered objects. ``ours``: the rendered objects as they
    are. ``article``: the seed article's set-up as DESIGN.md "What the seed article got wrong" and
    benchmarks/queue_metric.py describe it: a 10 s scrape, its adapter query ``avg(delta(queue[30s]) / (1 +
    delta(requests[30s]))) by (pod)`` on the raw counters (no recording rule), Kubernetes' probe defaults (a
    readiness probe with periodSeconds 10, no startup probe), and its load balancer's upstream: the ClusterIP
    Service's name instead of the headless one (``lb="clusterip"``: see KubeProxy)."""

    name: str
    scrape_interval: Optional[str] = None  # None: the rendered PodMonitor's
    query: str = "adapter"  # "adapter": the rendered metricsQuery; "article": the seed's delta query
    default_probes: bool = False
    lb: str = "headless"  # "headless": nginx resolves the headless Service (pod addresses); "clusterip": the ClusterIP name


VARIANTS: Dict[str, Variant] = {
    "ours": Variant("ours"),
    "article": Variant("article", scrape_interval="10s", query="article", default_probes=True, lb="clusterip"),
}
CLUSTER_IP_FQDN = "triton.triton.svc.cluster.local"  # the ClusterIP Service's name (role triton's Service "triton")
CLUSTER_IP = "127.0.0.20"  # its virtual IP, where the kube-proxy stand-in listens
ARTICLE_WINDOW = "30s"


def article_query(namespace: str, pods: Sequence[str]) -> str:
    """The seed article's adapter query for ``pods`` (as benchmarks/queue_metric.py seed_query writes it)."""
    sel = f'namespace="{namespace}",pod=~"{"|".join(pods)}"'
    return (f"avg(delta(nv_inference_queue_duration_us{{{sel}}}[{ARTICLE_WINDOW}])"
            f" / (1 + delta(nv_inference_request_success{{{sel}}}[{ARTICLE_WINDOW}]))) by (pod)")


def with_default_probes(deployment: Mapping[str, Any]) -> Dict[str, Any]:
    """The Deployment with its container's startup probe removed and its readiness probe at Kubernetes' defaults
    (core/v1 Probe: periodSeconds 10, failureThreshold 3, successThreshold 1, timeoutSeconds 1, no initial delay),
    probing the same endpoint."""
    out: Dict[str, Any] = json.loads(json.dumps(deployment))
    for container in out["spec"]["template"]["spec"]["containers"]:
        container.pop("startupProbe", None)
        ready = container.get("readinessProbe")
        if ready is not None:
            handler = {k: v for k, v in ready.items() if k in ("httpGet", "tcpSocket", "exec", "grpc")}
            container["readinessProbe"] = {**handler, "periodSeconds": 10, "failureThreshold": 3, "successThreshold": 1, "timeoutSeconds": 1}
    return out


# --- what the roles render -------------------------------------------------------------------------------------


def _load_one(out: Path, pattern: str) -> Dict[str, Any]:
    matches = sorted(out.glob(pattern))
    if len(matches) != 1:
        raise RuntimeError(f"expected one {pattern} under {out}, found {matches}")
    doc = yaml.safe_load(matches[0].read_text())
    if not isinstance(doc, dict):
        raise RuntimeError(f"{matches[0]} holds no object")
    return doc


def render_objects(workdir: Path, profile: Profile, extra_vars: Sequence[str] = ()) -> Dict[str, Any]:
    """playbooks/serving.yml and playbooks/load_balancer.yml in render mode on inventories/dgx, the roles' defaults
    plus the profile's ``render_extra`` (serving.yml), the one pool POOL with the profile's ``max_replicas`` and
    ``extra_vars`` (both, ``name=value`` each); both playbooks run at the same time."""
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}:{os.environ.get('PATH', '')}", ANSIBLE_NOCOLOR="1", HOME=str(workdir), ANSIBLE_LOCALHOST_WARNING="0")
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    out = workdir / "render"
    pools = json.dumps({"gpu_ops_serving_pools": [{"profile": POOL_PROFILE, "max_replicas": profile.max_replicas}]})
    extra = [a for kv in (pools, *profile.render_extra, *extra_vars) for a in ("-e", kv)]
    lb_extra = [a for kv in (pools, *extra_vars) for a in ("-e", kv)]
    argv = [str(bindir / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", *VAULT_ARGS,
            "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}", "-e", "ansible_connection=local",
            "-e", f"ansible_python_interpreter={sys.executable}", *extra]
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "render-serving.log").open("w") as log:
        serving = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            nginx_conf = render_role_config(workdir / "nginx-render", "-e", "nginx_lb_oss_version=1.22.1", *lb_extra, pools=None)
            rc = serving.wait(timeout=600)
        finally:
            if serving.poll() is None:
                serving.kill()
                serving.wait(timeout=10)
    if rc != 0:
        raise RuntimeError(f"rendering playbooks/serving.yml failed:\n{(workdir / 'render-serving.log').read_text()[-4000:]}")
    values = _load_one(out, "custom_metrics/prometheus-adapter.values.yaml")
    return {
        "deployment": _load_one(out, f"triton/*-deployment-{POOL}.yaml"),
        "pod_monitor": _load_one(out, "triton/*-podmonitor-*.yaml"),
        "rule": _load_one(out, "custom_metrics/*-prometheusrule-*.yaml"),
        "adapter_rule": values["rules"]["custom"][0],
        "hpa": _load_one(out, "autoscaling/*-horizontalpodautoscaler-*.yaml"),
        "secrets": [_load_one(out, "triton_secrets/*-secret-*.yaml")],
        "nginx_conf": nginx_conf,
        "render_extra": [pools, *profile.render_extra, *extra_vars],
    }


# --- observers -------------------------------------------------------------------------------------------------


class AccessLog:
    """Follows nginx's access log (every 0.1 s, in a thread): requests per upstream address, and when each address
    was first seen (time.monotonic(), at most 0.1 s late)."""

    _UPSTREAM = re.compile(r" upstream=(\S+(?:, \S+)*) upstream_status=")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.counts: Dict[str, int] = {}
        self.first_seen: Dict[str, float] = {}
        self.non_2xx = 0
        self._offset = 0
        self._partial = b""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        now = time.monotonic()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        with self._lock:
            for raw in lines:
                line = raw.decode(errors="replace")
                match = self._UPSTREAM.search(line)
                if not match or match.group(1) == "-":
                    continue
                host = match.group(1).split(", ")[-1].rsplit(":", 1)[0]  # the pod that answered, after any retry
                self.counts[host] = self.counts.get(host, 0) + 1
                self.first_seen.setdefault(host, now)

    def snapshot(self) -> Tuple[Dict[str, int], Dict[str, float]]:
        with self._lock:
            return dict(self.counts), dict(self.first_seen)

    def __enter__(self) -> AccessLog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.poll()


class Targets:
    """The PodMonitor's scrape targets as a file_sd file: one target per pod with a running container, with the
    labels the Prometheus Operator sets (namespace, pod, container, endpoint, job)."""

    def __init__(self, path: Path, job: Mapping[str, Any], metrics_port: int) -> None:
        self.path, self.metrics_port = path, metrics_port
        static = job["static_configs"][0]["labels"] if job.get("static_configs") else {}
        self.labels = {k: v for k, v in static.items() if k != "pod"}
        self.current: Tuple[Tuple[str, str], ...] = ()
        self.write([])

    def write(self, pods: Sequence[Tuple[str, str]]) -> bool:
        """pods: (name, address); rewrites the file (atomically) only when the set changed; whether it did."""
        wanted = tuple(sorted(pods))
        if wanted == self.current and self.path.exists():
            return False
        groups = [{"targets": [f"{address}:{self.metrics_port}"], "labels": {**self.labels, "pod": name}} for name, address in wanted]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.path)
        self.current = wanted
        return True


def file_sd_job(job: Mapping[str, Any], path: Path) -> Dict[str, Any]:
    """The PodMonitor's scrape job (tests/servers/prometheus.py pod_monitor_job) with its targets from ``path``."""
    out = {k: v for k, v in job.items() if k != "static_configs"}
    out["file_sd_configs"] = [{"files": [str(path)], "refresh_interval": "5s"}]
    return out


class KubeProxy:
    """kube-proxy for the ClusterIP Service the seed article's load balancer names, as an nginx on the Service's virtual
    IP (CLUSTER_IP) and the pods' ports. kube-proxy (iptables mode, the default: pkg/proxy/iptables/proxier.go
    writeServiceToEndpointRules) sends each NEW connection to one of the Service's ready, not terminating endpoints
    chosen at random (the ``statistic --mode random`` rules), never retries, and keeps established connections where
    they are (conntrack). Here: one ``random`` upstream per port without keepalive, ``*_next_upstream off``, the
    endpoint set rewritten and reloaded (SIGHUP; old workers finish their connections) as soon as it changes. nginx
    here is a layer-7 proxy where kube-proxy is layer 4; the load balancer's rendered config (the ``variable`` form of
    nginx 1.22) opens one upstream connection per request, so each request is one connection to the VIP either way.
    Not modelled: kube-proxy's own sync delay after an EndpointSlice change (minSyncPeriod 1 s by default), which would
    delay the new pod's first request here; so this favours the article's set-up."""

    def __init__(self, prefix: Path, ports: Mapping[str, int], status_port: int) -> None:
        self.prefix, self.ports, self.status_port = prefix, dict(ports), status_port
        self.generation = 0
        self.endpoints: Tuple[str, ...] = ()
        self.server: Any = None
        prefix.mkdir(parents=True, exist_ok=True)

    @property
    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.status_port}/generation"

    def config(self) -> str:
        def upstream(name: str, port: int) -> str:
            servers = [f"        server {a}:{port} max_fails=0;" for a in self.endpoints] or [
                "        server 127.0.0.1:9 max_fails=0;  # no endpoint: refused, as kube-proxy's REJECT rule"]
            return "\n".join([f"    upstream {name} {{", "        random;", *servers, "    }"])
        p = self.prefix
        return "\n".join([
            "worker_processes 1;", f"pid {p}/nginx.pid;", f"error_log {p}/error.log notice;", "events { worker_connections 4096; }",
            "http {",
            *(f"    {kind}_temp_path {p}/{kind}_temp;" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
            "    log_format kp '$remote_addr \"$request\" $status upstream=$upstream_addr upstream_status=$upstream_status';",
            f"    access_log {p}/access.log kp;",
            upstream("cluster_ip_http", self.ports["http"]), upstream("cluster_ip_grpc", self.ports["grpc"]),
            f"    server {{ listen {CLUSTER_IP}:{self.ports['http']}; client_max_body_size 0;",
            "        location / { proxy_pass http://cluster_ip_http; proxy_http_version 1.1; proxy_next_upstream off;",
            "                     proxy_read_timeout 300s; proxy_buffering off; proxy_request_buffering off; } }",
            f"    server {{ listen {CLUSTER_IP}:{self.ports['grpc']} http2; client_max_body_size 0;",
            "        location / { grpc_pass grpc://cluster_ip_grpc; grpc_next_upstream off; grpc_read_timeout 300s; } }",
            f"    server {{ listen 127.0.0.1:{self.status_port}; location = /generation {{ return 200 \"{self.generation}\"; }} }}",
            "}", ""])

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeProxy]:
        with nginx_server(self.config(), self.prefix, ready_url=self.ready_url) as server:
            self.server = server
            yield self

    def set_endpoints(self, addresses: Sequence[str]) -> bool:
        """The Service's ready endpoints; reloads (and waits until the new configuration answers) when they changed."""
        wanted = tuple(sorted(addresses))
        if wanted == self.endpoints:
            return False
        self.endpoints = wanted
        self.generation += 1
        (self.prefix / "nginx.conf").write_text(self.config())
        os.kill(self.server.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while _http_text(self.ready_url) != str(self.generation):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kube-proxy stand-in did not reload to generation {self.generation}: {self.server.log_tail()}")
            time.sleep(0.01)
        return True


def _http_text(url: str, timeout: float = 0.5) -> Optional[str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


class Watcher:
    """A thread every 0.05 s: records ``triton_up`` (pod name) when a running pod's Triton first answers
    /v2/health/ready with 200 (Triton's own start-up, from outside the kubelet), and hands the ready endpoints to
    ``on_endpoints`` (the kube-proxy stand-in) as they change."""

    def __init__(self, deployment: Any, http_port: int, state: _State, on_endpoints: Optional[Callable[[Sequence[str]], Any]] = None) -> None:
        self.deployment, self.http_port, self.state, self.on_endpoints = deployment, http_port, state, on_endpoints
        self.up: Dict[str, float] = {}
        self.error: Optional[BaseException] = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.05):
                if self.on_endpoints is not None:
                    self.on_endpoints(self.deployment.ready_addresses())
                for pod in self.deployment.pods():
                    if pod.name in self.up or pod.phase != "Running" or not pod.address:
                        continue
                    if _http_text(f"http://{pod.address}:{self.http_port}/v2/health/ready", timeout=0.3) is not None:
                        now = time.monotonic()
                        self.up[pod.name] = now
                        self.state.event("triton_up", pod.name, mono=now)
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


_COUNTER = re.compile(r'^(nv_inference_queue_duration_us|nv_inference_request_success)\{([^}]*)\} (\S+)$', re.MULTILINE)


class QueueReference:
    """The queue time the pods really had, for every variant the same: each pod's own Triton counters
    (nv_inference_queue_duration_us, nv_inference_request_success of the model) read from its /metrics at every
    sample, averaged per request over all pods since the previous sample. Independent of Prometheus and of the HPA's
    query, so the seconds over target compare across set-ups."""

    def __init__(self, metrics_port: int) -> None:
        self.metrics_port = metrics_port
        self.last: Dict[str, Tuple[float, float]] = {}

    def read(self, addresses: Sequence[str]) -> Optional[float]:
        queue = done = 0.0
        for address in addresses:
            text = _http_text(f"http://{address}:{self.metrics_port}/metrics", timeout=0.5)
            if text is None:
                continue
            values = {"nv_inference_queue_duration_us": 0.0, "nv_inference_request_success": 0.0}
            for name, labels, value in _COUNTER.findall(text):
                if f'model="{MODEL}"' in labels:
                    values[name] += float(value)
            now = (values["nv_inference_queue_duration_us"], values["nv_inference_request_success"])
            before = self.last.get(address)
            self.last[address] = now
            if before is not None and now[1] >= before[1]:  # a restarted pod's counters start again: skipped once
                queue += now[0] - before[0]
                done += now[1] - before[1]
        return queue / done if done > 0 else None


# --- the run ---------------------------------------------------------------------------------------------------


@dataclass
class _State:
    t0: float
    events: List[Dict[str, Any]] = field(default_factory=list)
    steps: List[Dict[str, Any]] = field(default_factory=list)
    failed: int = 0
    errors: List[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def t(self, mono: Optional[float] = None) -> float:
        return round((time.monotonic() if mono is None else mono) - self.t0, 3)

    def event(self, name: str, detail: str = "", mono: Optional[float] = None) -> None:
        with self.lock:
            self.events.append({"t": self.t(mono), "event": name, "detail": detail})


def _pod_fields(pod: Any) -> Tuple[str, str, str, bool, bool]:
    return (str(pod.name), str(pod.address or ""), str(pod.phase), bool(pod.ready), bool(pod.in_dns))


class _Driver:
    """Runs the profile's phases in a thread: per step, one ConcurrencyLoad per protocol at the same time."""

    def __init__(self, state: _State, profile: Profile, urls: Mapping[str, str], stats_urls: Callable[[], List[str]],
                 condition: Callable[[str], bool], log: Log) -> None:
        self.state, self.profile, self.urls, self.stats_urls, self.condition, self.log = state, profile, urls, stats_urls, condition, log
        self.current: List[ConcurrencyLoad] = []
        self.abort = threading.Event()
        self.done = threading.Event()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _step(self, phase: Phase) -> None:
        loads = {proto: ConcurrencyLoad(self.urls[proto], proto, MODEL, n, stats_urls=self.stats_urls)
                 for proto, n in (("http", phase.http), ("grpc", phase.grpc)) if n > 0}
        self.current = list(loads.values())
        rows: Dict[str, Dict[str, Any]] = {}
        start = self.state.t()

        def one(proto: str) -> None:
            rows[proto] = loads[proto].run_step(self.profile.step_s)

        threads = [threading.Thread(target=one, args=(p,), daemon=True) for p in loads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=self.profile.step_s + 60)
        end = self.state.t()
        for proto, load in loads.items():
            row = rows.get(proto)
            if row is None:
                raise RuntimeError(f"the {proto} load of phase {phase.name} did not finish")
            with self.state.lock:
                self.state.failed += int(row["failed"])
                self.state.errors.extend(row["errors"])
                self.state.steps.append({"protocol": proto, "concurrency": load.concurrency, "start": start, "end": end,
                                         "phase": phase.name, "perf": csv_row(row, _perf_columns()), "failed": int(row["failed"])})

    def _run(self) -> None:
        try:
            for phase in self.profile.phases:
                self.state.event("load_step", f"{phase.name}: http {phase.http}, grpc {phase.grpc} outstanding")
                self.log(f"load: phase {phase.name} (http {phase.http}, grpc {phase.grpc} outstanding)")
                start = time.monotonic()
                held_since: Optional[float] = None
                while not self.abort.is_set():
                    self._step(phase)
                    elapsed = time.monotonic() - start
                    if phase.until and held_since is None and self.condition(phase.until):
                        held_since = time.monotonic()
                    met = not phase.until or (held_since is not None and time.monotonic() - held_since >= phase.hold_s)
                    if (elapsed >= phase.min_s and met) or elapsed >= phase.max_s:
                        if not met:
                            self.state.event("phase_timed_out", f"{phase.name}: {phase.until} not reached in {phase.max_s:.0f} s")
                        break
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.state.event("load_stop", "")
            self.done.set()

    def stop(self) -> None:
        self.abort.set()
        for load in self.current:
            load.stop()
        if self.thread.ident is not None:  # started
            self.thread.join(timeout=self.profile.step_s + 70)


def _perf_columns() -> Sequence[str]:
    return (*PERF_COLUMNS, *OPTIONAL_PERF_COLUMNS)


def _print(line: str) -> None:
    print(line, flush=True)


def run_closed_loop(workdir: Path, *, profile: str = "short", variant: str = "ours", rendered: Optional[Mapping[str, Any]] = None,
                    log: Log = _print) -> Dict[str, Any]:
    """Run the loop with ``profile`` (a PROFILES key) and ``variant`` (a VARIANTS key) in ``workdir``; returns the run
    dict (SCHEMA.md). ``rendered``: render_objects' result, to reuse one rendering. Everything it starts is stopped when
    it returns or raises."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    prof = PROFILES[profile]
    var = VARIANTS[variant]
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    if rendered is None:
        log("rendering the roles (serving.yml, load_balancer.yml)")
        rendered = render_objects(workdir, prof)
    hpa_obj = rendered["hpa"]
    spec = hpa_obj["spec"]
    target = float(spec["metrics"][0]["pods"]["target"]["averageValue"])
    metric_name = str(spec["metrics"][0]["pods"]["metric"]["name"])
    repo = write_model_repository(workdir / "models", delay_ms=prof.delay_ms, name=MODEL)
    lb_http, lb_grpc, lb_status, proxy_status = common_free_ports(["127.0.0.1"], 4)
    state = _State(t0=time.monotonic())
    samples: List[Dict[str, Any]] = []
    deadline = time.monotonic() + prof.limit_s

    with contextlib.ExitStack() as stack:
        dns = stack.enter_context(dnsmasq_server(workdir / "dns", {}))
        pods_object = with_default_probes(rendered["deployment"]) if var.default_probes else rendered["deployment"]
        cluster_ip = var.lb == "clusterip"
        deployment = stack.enter_context(_deployment({**rendered, "deployment": pods_object}, repo, dns, workdir / "pods",
                                                     extra_records={CLUSTER_IP_FQDN: [CLUSTER_IP]} if cluster_ip else None))
        ports = _pod_ports(deployment)
        proxy: Optional[KubeProxy] = None
        if cluster_ip:
            proxy = stack.enter_context(KubeProxy(workdir / "kube-proxy", ports, proxy_status).running())
        lb_name = CLUSTER_IP_FQDN if cluster_ip else FQDN
        targets_file = workdir / "targets.json"
        job = pod_monitor_job(rendered["pod_monitor"], {"placeholder": "127.0.0.1:1"})
        if var.scrape_interval is not None:
            job = {**job, "scrape_interval": var.scrape_interval, "scrape_timeout": var.scrape_interval}
        adapter_rule = rendered["adapter_rule"]

        def query_for(pods: Sequence[str]) -> str:
            return adapter_query(adapter_rule, NAMESPACE, pods) if var.query == "adapter" else article_query(NAMESPACE, pods)
        targets = Targets(targets_file, job, ports["metrics"])
        prom: PrometheusProcess = stack.enter_context(prometheus_server(
            workdir / "prometheus", [file_sd_job(job, targets_file)], rule_groups=prometheus_rule_groups(rendered["rule"])))
        prefix = workdir / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        # one worker: one resolver cache, so the DNS hand-over is nginx's
        conf = localize(rendered["nginx_conf"], prefix, loopback_swaps(http=lb_http, grpc=lb_grpc, status=lb_status, resolver=dns.resolver,
                                                                       service=FQDN, upstream_http=ports["http"], upstream_grpc=ports["grpc"],
                                                                       upstream_name=lb_name))
        nginx = stack.enter_context(nginx_server(conf, prefix, ready_url=f"http://127.0.0.1:{lb_status}/healthz"))
        # requests per pod: nginx's upstream address, or behind the ClusterIP the kube-proxy stand-in's
        access = stack.enter_context(AccessLog(proxy.server.access_log if proxy is not None else nginx.access_log))
        watcher = stack.enter_context(Watcher(deployment, ports["http"], state, proxy.set_endpoints if proxy is not None else None))
        reference = QueueReference(ports["metrics"])
        controller = hpa_mod.HorizontalPodAutoscaler(hpa_obj)
        min_replicas = int(spec.get("minReplicas", 1))
        max_replicas = int(spec["maxReplicas"])

        def pods_now() -> List[Tuple[str, str, str, bool, bool]]:
            return [_pod_fields(p) for p in deployment.pods()]

        def sync_targets() -> None:
            running = [(name, addr) for name, addr, phase, _ready, _dns in pods_now() if addr and phase in ("Running", "Terminating")]
            targets.write(running)

        # the first pod: scale to minReplicas, wait until it serves through nginx
        replicas = min_replicas
        deployment.scale(replicas)
        log(f"starting {replicas} Triton pod(s); waiting until ready and in DNS")
        while len([p for p in pods_now() if p[4]]) < replicas:
            sync_targets()
            if time.monotonic() > deadline:
                raise RuntimeError(f"the first pods were not ready and in DNS within the run's limit: {pods_now()}")
            time.sleep(0.2)
        sync_targets()
        initial = {p[1] for p in pods_now()}

        state.t0 = time.monotonic()
        state.event("pods_ready_initial", f"{replicas} pod(s): {sorted(initial)}")
        urls = {"http": f"127.0.0.1:{lb_http}", "grpc": f"127.0.0.1:{lb_grpc}"}
        pod_events_seen = 0
        decision_last: Any = None
        last_sync = -1e9
        metric_over_seen = False
        new_pods: List[str] = []  # addresses of pods added by scale-up, in order
        addr_of: Dict[str, str] = {}  # every pod seen (a stopped pod keeps its name in the samples)
        by_addr: Dict[str, str] = {}
        removed_pods: List[str] = []
        first_request_logged: set[str] = set()
        desired = replicas

        def condition(until: str) -> bool:
            kind, _sep, count = until.partition(":")
            want = int(count)
            current = pods_now()
            in_dns = [p for p in current if p[4]]
            counts, _first = access.snapshot()
            if kind == "ready":
                return replicas == want and len(in_dns) == want and all(counts.get(p[1], 0) > 0 for p in in_dns)
            if kind == "settled":
                return replicas == want and len(current) == want
            raise ValueError(f"unknown phase condition {until!r}")

        driver = _Driver(state, prof, urls, lambda: [f"{p[1]}:{ports['http']}" for p in pods_now() if p[2] == "Running"], condition, log)
        stack.callback(driver.stop)
        idle_end = time.monotonic() + prof.idle_s
        load_started = False
        log(f"idle {prof.idle_s:.0f} s, then load through nginx (target {target:.0f} us, max {max_replicas} replicas)")
        after_load_s = max(15.0, 3 * prof.sync_s)
        load_done_at: Optional[float] = None

        while True:
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"the {prof.name} run exceeded its limit of {prof.limit_s:.0f} s")
            if not load_started and now >= idle_end:
                state.event("load_start", f"phases: {', '.join(p.name for p in prof.phases)}")
                driver.thread.start()
                load_started = True
            sync_targets()
            current = pods_now()
            names = [p[0] for p in current if p[2] != "Terminating"]
            addr_of.update({p[0]: p[1] for p in current})
            by_addr.update({p[1]: p[0] for p in current})
            pending = [p[0] for p in current if p[2] == "Pending"]
            values: Dict[str, float] = {}
            with contextlib.suppress(Exception):  # an unanswered query is "no metrics", as the adapter says it
                values = prom.query(query_for(names)) if names else {}
            metrics: Dict[str, Optional[float]] = {n: values.get(n) for n in names}
            have = [v for v in metrics.values() if v is not None]
            metric_us = sum(have) / len(have) if have else None
            if watcher.error is not None:
                raise RuntimeError(f"the pod watcher failed: {watcher.error!r}") from watcher.error
            queue_ref_us = reference.read([p[1] for p in current if p[1] and p[2] in ("Running", "Terminating")])
            if load_started and metric_us is not None and metric_us > target and not metric_over_seen:
                metric_over_seen = True
                state.event("metric_over_target", f"{metric_us:.0f} us > {target:.0f} us")

            if now - last_sync >= prof.sync_s:
                last_sync = now
                decision_last = controller.reconcile(now, replicas, metrics, pending=pending)
                desired = int(decision_last.desired)
                if desired != replicas:
                    kind = "scale_up_decided" if desired > replicas else "scale_down_decided"
                    state.event(kind, f"{replicas} -> {desired}: {decision_last.reason} (ratio {decision_last.ratio})")
                    log(f"t={state.t():.0f}s HPA: {replicas} -> {desired} ({decision_last.reason})")
                    replicas = desired
                    deployment.scale(replicas)

            # the Deployment's own events (pod started/ready/in DNS/removed/stopped)
            for ev in deployment.events[pod_events_seen:]:
                pod_events_seen += 1
                pod = str(ev.get("pod", ""))
                state.event(str(ev["event"]), pod, mono=float(ev["t"]))
                address = addr_of.get(pod, "")
                if ev["event"] == "pod_started" and address and address not in initial and address not in new_pods:
                    new_pods.append(address)
                if ev["event"] == "pod_stopped":
                    removed_pods.append(pod)
            counts, first_seen = access.snapshot()
            for address in new_pods:
                if address in first_seen and address not in first_request_logged:
                    first_request_logged.add(address)
                    state.event("first_request_new_pod", by_addr.get(address, address), mono=first_seen[address])
                    log(f"t={state.t():.0f}s first request through nginx on the new pod {by_addr.get(address, address)}")

            samples.append({
                "t": state.t(),
                "hpa_current": replicas,
                "hpa_desired": desired,
                "metric_us": metric_us,
                "queue_us": {n: v for n, v in metrics.items() if v is not None},
                "requests": {by_addr.get(a, a): c for a, c in counts.items()},
                "ready_pods": len([p for p in current if p[4]]),
                # the one serving pool's own reading (the load-test report's per-pool schema): here the totals are its
                "pools": {POOL: {"hpa_current": replicas, "hpa_desired": desired, "metric_us": metric_us,
                                 "ready_pods": len([p for p in current if p[4]]), "pods": sorted(p[0] for p in current if p[4])}},
                "hpa_status_us": None if decision_last is None else decision_last.current_value,
                "queue_ref_us": queue_ref_us,
            })
            if load_started and driver.done.is_set():
                if driver.error is not None:
                    raise RuntimeError(f"the load driver failed: {driver.error!r}") from driver.error
                if load_done_at is None:
                    load_done_at = now
                    log(f"t={state.t():.0f}s load stopped; {state.failed} failed requests")
                settled = replicas == min_replicas and len(current) == min_replicas
                if settled or now - load_done_at > after_load_s:
                    break
            time.sleep(max(0.0, prof.sample_s - (time.monotonic() - now)))
        driver.stop()

    state.events.sort(key=lambda e: e["t"])
    stages = time_to_capacity(state.events)
    run = {
        "title": f"Load test: triton/{MODEL} through nginx-lb (HTTP, gRPC), one machine, profile {prof.name}, {var.name} settings",
        "source": "demo",
        "started": started,
        "settings": {
            "target_queue_us": target, "min_replicas": min_replicas, "max_replicas": max_replicas, "model": MODEL, "metric": metric_name,
            "profile": prof.name, "variant": var.name, "hpa_query": var.query,
            "model_service_ms": prof.delay_ms, "hpa_sync_period_s": prof.sync_s, "sample_period_s": prof.sample_s,
            "step_s": prof.step_s, "scrape_interval": str(job["scrape_interval"]),
            "rule_interval": str(rendered["rule"]["spec"]["groups"][0].get("interval", "")),
            "render_extra": " ".join(rendered.get("render_extra", [])),
            "scale_down_stabilization_s": int(spec.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds", 300)),
            "lb_upstream": lb_name, "resolver_valid": _resolver_valid(rendered["nginx_conf"]),
            "probes": _probe_summary(pods_object),
        },
        "pools": [{"name": POOL, "profile": POOL_PROFILE, "weight": 1, "hpa": POOL, "min_replicas": min_replicas, "max_replicas": max_replicas,
                   "target_queue_us": target}],
        "samples": samples,
        "steps": [{k: s[k] for k in ("protocol", "concurrency", "start", "end", "perf")} for s in state.steps],
        "events": state.events,
        "stages": stages,
        "failed_requests": state.failed,
        "failed_errors": sorted(set(state.errors))[:10],
        "step_phases": [s["phase"] for s in state.steps],
    }
    return run


STAGES = (
    ("load start -> metric over target", "load_start", "metric_over_target"),
    ("metric over target -> scale-up decided", "metric_over_target", "scale_up_decided"),
    ("scale-up decided -> new pod ready", "scale_up_decided", "pod_ready"),
    ("new pod ready -> in DNS", "pod_ready", "pod_in_dns"),
    ("in DNS -> first request through the LB", "pod_in_dns", "first_request_new_pod"),
)


def time_to_capacity(events: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """The first scale-up split into consecutive stages (seconds; None where a stage's end never came). The pod
    events counted are those of the first pod started after the first scale-up decision."""
    def first(name: str, after: float, detail: Optional[str] = None) -> Optional[float]:
        for ev in events:
            if ev["event"] == name and ev["t"] >= after and (detail is None or ev["detail"] == detail):
                return float(ev["t"])
        return None

    t_load = first("load_start", -1e9)
    t_over = first("metric_over_target", t_load) if t_load is not None else None
    t_up = first("scale_up_decided", t_load) if t_load is not None else None
    new_pod = next((str(ev["detail"]) for ev in events if t_up is not None and ev["event"] == "pod_started" and ev["t"] >= t_up), None)
    t_ready = first("pod_ready", t_up, new_pod) if t_up is not None and new_pod else None
    t_dns = first("pod_in_dns", t_ready, new_pod) if t_ready is not None else None
    t_req = first("first_request_new_pod", t_dns, new_pod) if t_dns is not None else None
    times = [t_load, t_over, t_up, t_ready, t_dns, t_req]
    out = []
    for index, (label, _a, _b) in enumerate(STAGES):
        a, b = times[index], times[index + 1]
        out.append({"stage": label, "seconds": None if a is None or b is None else round(max(0.0, b - a), 3)})
    return out


# --- H's stand-in, as this loop uses it ------------------------------------------------------------------------


def _resolver_valid(conf: str) -> str:
    match = re.search(r"^\s*resolver [^;]*valid=(\S+)", conf, re.MULTILINE)
    return match.group(1) if match else "(the answer's TTL)"


def _probe_summary(deployment: Mapping[str, Any]) -> str:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    parts = []
    for kind in ("startupProbe", "readinessProbe"):
        probe = container.get(kind)
        parts.append(f"{kind}: none" if probe is None else
                     f"{kind}: period {probe.get('periodSeconds', 10)} s, failureThreshold {probe.get('failureThreshold', 3)}")
    return "; ".join(parts)


@contextlib.contextmanager
def _deployment(rendered: Mapping[str, Any], repo: Path, dns: DnsmasqProcess, log_dir: Path,
                extra_records: Optional[Mapping[str, Sequence[str]]] = None) -> Iterator[Any]:
    log_dir.mkdir(parents=True, exist_ok=True)
    deployment = pods_mod.Deployment(rendered["deployment"], repo, dns=dns, fqdn=FQDN, log_dir=log_dir,
                                     secrets=rendered["secrets"], extra_records=extra_records)
    try:
        yield deployment
    finally:
        deployment.close()


def _pod_ports(deployment: Any) -> Dict[str, int]:
    return {"http": int(deployment.http_port), "grpc": int(deployment.grpc_port), "metrics": int(deployment.metrics_port)}
