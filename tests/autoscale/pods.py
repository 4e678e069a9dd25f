# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Deployment stand-in: what the Deployment and ReplicaSet controllers, the kubelet and the EndpointSlice controller
(with the cluster DNS) do for the rendered Triton Deployment and its headless Service, with real Triton servers as
pods and a real dnsmasq as the Service's DNS:

    deployment = Deployment(rendered_deployment, repo, dns=dnsmasq, log_dir=tmp, secrets=[secret])
    deployment.scale(2)                       # returns at once; pods start in the background
    deployment.wait_until(lambda d: len(d.ready_addresses()) == 2, timeout=60)
    deployment.scale(1)                       # one pod leaves DNS, runs its preStop, gets SIGTERM
    deployment.close()                        # nothing of it runs afterwards

A pod is a tritonserver (tests/servers/triton.py) started with the rendered container's args as the kubelet passes them
(``$(VAR)`` substituted from its env and the rendered Secrets), on an address of its own, 127.0.0.N, every pod on the
same ports, like pod IPs. Only what differs on this machine is replaced: the model repository (the volume the kubelet
would mount at the path the args name), the ports (free ones, the same for every pod: ``ports``), and the backend
directory and listen address (as triton_server_args does).

What each piece models, from upstream:

- ReplicaSet controller (pkg/controller/replicaset/replica_set.go manageReplicas, getPodsToDelete,
  getPodsRankedByRelatedPodsOnSameNode; pkg/controller/controller_utils.go ActivePodsWithRanks.Less): on scale-up it
  creates the missing pods at once; on scale-down it deletes the first pods of this order: Pending before Running,
  not ready before ready, ready for a shorter time before longer, more restarts before fewer, created later before
  earlier; times compare in log2 buckets of their age (LogarithmicScaleDown), and two pods in the same bucket are
  ordered by a pseudo-random tie-break (the UID; here the name). All pods share one "node", so the co-location rank never decides. A pod that
  waits for an address (every one held, say by terminating pods) stays Pending, as a pod waiting for a free MIG slice.
- kubelet (pkg/kubelet/prober/worker.go run/doProbe, prober_manager.go UpdatePodStatus; core/v1 Probe defaults
  periodSeconds 10, timeoutSeconds 1, successThreshold 1, failureThreshold 3, initialDelaySeconds 0): each probe is a
  worker ticking every periodSeconds from the pod's start; its first run comes before the container runs and is
  skipped, so the first real probe comes one period later; readiness and liveness wait until the startup probe has
  succeeded; a probe is skipped while the container has run for less than initialDelaySeconds; an HTTP probe
  succeeds on a status in [200, 400) within timeoutSeconds; the state changes after successThreshold consecutive
  successes or failureThreshold consecutive failures. When the startup probe succeeds, the pod's status update
  triggers the readiness worker at once (UpdatePodStatus: manualTriggerCh). The liveness probe is not run.
  Termination (pkg/kubelet/kuberuntime/kuberuntime_container.go killContainer): the preStop hook runs (here: its
  ``sleep N``, bounded by the grace period), then SIGTERM, then SIGKILL once terminationGracePeriodSeconds minus the
  preStop's duration has passed (at least 2 s, minimumGracePeriodInSeconds).
  A container that exits by itself is restarted after the CrashLoopBackOff delay (10 s, doubling, at most 300 s).
- EndpointSlice controller + cluster DNS (pkg/controller/endpointslice; CoreDNS kubernetes plugin): a headless Service
  with publishNotReadyAddresses false resolves to its ready endpoints; a terminating pod's endpoint is not ready
  (conditions.terminating), so a pod leaves DNS as soon as it is deleted. Here the DNS answer changes at once and this
  waits until dnsmasq answers so (in a cluster, endpoint propagation and CoreDNS's cache add their delay; and the
  kubelet starts the preStop hook concurrently with the endpoint removal, not after it: the preStop sleep is there to
  cover that propagation). Here the removal is complete before the preStop starts.

Every wait is bounded; ``close()`` stops every pod (no preStop) and returns once none of them runs.
Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import math
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence

if TYPE_CHECKING:
    from tests.servers.dnsmasq import DnsmasqProcess, query_a
    from tests.servers.ports import common_free_ports
    from tests.servers.processes import stop_process_group
    from tests.servers.triton import TritonProcess, _site_tritonserver, _spawn, container_env, ensure_triton_venv, kube_expand
else:  # tests/ on sys.path, as the integration tests and benchmarks put it
    from servers.dnsmasq import DnsmasqProcess, query_a
    from servers.ports import common_free_ports
    from servers.processes import stop_process_group
    from servers.triton import TritonProcess, _site_tritonserver, _spawn, container_env, ensure_triton_venv, kube_expand

MAX_PODS = 8
ADDRESS_BASE = 30  # pods get 127.0.0.31, 127.0.0.32, ...
MINIMUM_GRACE_S = 2.0  # kuberuntime minimumGracePeriodInSeconds
BACKOFF_S, BACKOFF_MAX_S = 10.0, 300.0  # kubelet CrashLoopBackOff: initial and maximum
POLL_S = 0.02
CLOSE_WAIT_S = 30.0
DNS_WAIT_S = 10.0
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3


@dataclass(frozen=True)
class Probe:
    """A core/v1 Probe with httpGet, its defaults filled in."""

    path: str
    port: int  # the rendered containerPort
    period_s: float = 10.0
    initial_delay_s: float = 0.0
    timeout_s: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, raw: Optional[Mapping[str, Any]], ports: Mapping[str, int], what: str) -> Optional[Probe]:
        if raw is None:
            return None
        get = raw.get("httpGet")
        if not isinstance(get, Mapping):
            raise ValueError(f"{what}: only httpGet probes are modelled, got {sorted(raw)}")
        port = get.get("port")
        if isinstance(port, str) and not port.isdigit():
            if port not in ports:
                raise ValueError(f"{what}.httpGet.port: no container port is named {port!r}")
            port = ports[port]
        if port is None:
            raise ValueError(f"{what}.httpGet.port: missing")
        return cls(path=str(get.get("path", "/")), port=int(port), period_s=float(raw.get("periodSeconds", 10)),
                   initial_delay_s=float(raw.get("initialDelaySeconds", 0)), timeout_s=float(raw.get("timeoutSeconds", 1)),
                   success_threshold=int(raw.get("successThreshold", 1)), failure_threshold=int(raw.get("failureThreshold", 3)))


@dataclass(frozen=True)
class PodView:
    """A pod as ``kubectl get pods -o wide`` and its EndpointSlice would show it."""

    name: str
    address: Optional[str]
    phase: str  # Pending | Running | Terminating
    ready: bool
    in_dns: bool
    created: float
    ready_since: Optional[float]
    restarts: int
    terminating: bool


@dataclass
class _Pod:
    name: str
    created: float
    address: Optional[str] = None
    phase: str = "Pending"
    ready: bool = False
    ready_since: Optional[float] = None
    in_dns: bool = False
    started: bool = False  # the startup probe succeeded (or there is none)
    restarts: int = 0
    terminating: bool = False
    deleted_at: Optional[float] = None
    deleted: threading.Event = field(default_factory=threading.Event)
    server: Optional[TritonProcess] = None
    thread: Optional[threading.Thread] = None

    def view(self) -> PodView:
        return PodView(self.name, self.address, "Terminating" if self.terminating else self.phase, self.ready, self.in_dns,
                       self.created, self.ready_since, self.restarts, self.terminating)


class Deployment:
    """One Deployment and its ReplicaSet, with the kubelet of one node and the headless Service's DNS. See the module
    docstring. ``deployment``: the rendered apps/v1 Deployment (dict); ``model_repository``: the local directory the
    ``--model-repository`` argument is pointed at; ``dns``: the dnsmasq standing for the cluster DNS (its hosts file is
    this object's from now on: ``extra_records`` are kept in it); ``fqdn``: the headless Service's name (default
    ``<name>-headless.<namespace>.svc.cluster.local``); ``secrets``: the rendered Secrets the container's env refers to;
    ``ports``: the (http, grpc, metrics) ports every pod listens on (default: free on every address)."""

    def __init__(self, deployment: Mapping[str, Any], model_repository: Path, *, dns: DnsmasqProcess, log_dir: Path,
                 fqdn: Optional[str] = None, secrets: Sequence[Mapping[str, Any]] = (), max_pods: int = MAX_PODS,
                 addresses: Optional[Sequence[str]] = None, ports: Optional[Sequence[int]] = None,
                 extra_records: Optional[Mapping[str, Sequence[str]]] = None, clock: Callable[[], float] = time.monotonic) -> None:
        if deployment.get("kind") != "Deployment":
            raise ValueError(f"deployment: expected a Deployment, got {deployment.get('kind')!r}")
        meta = deployment.get("metadata") or {}
        self.name = str(meta.get("name", "triton"))
        self.namespace = str(meta.get("namespace", "default"))
        template = deployment["spec"]["template"]
        pod_spec = template["spec"]
        containers = pod_spec.get("containers") or []
        if len(containers) != 1:
            raise ValueError(f"deployment.spec.template.spec.containers: one container is modelled, got {len(containers)}")
        container = containers[0]
        self.container: Mapping[str, Any] = container
        container_ports = {str(p["name"]): int(p["containerPort"]) for p in container.get("ports") or [] if "name" in p}
        self.startup_probe = Probe.parse(container.get("startupProbe"), container_ports, "startupProbe")
        self.readiness_probe = Probe.parse(container.get("readinessProbe"), container_ports, "readinessProbe")
        self.prestop_s = _prestop_sleep(container)
        self.grace_s = float(pod_spec.get("terminationGracePeriodSeconds", 30))  # core/v1 PodSpec default
        env = container_env(container, secrets, self.namespace)
        self.rendered_args = [kube_expand(str(a), env) for a in container.get("args") or []]
        rendered_ports = [_arg_value(self.rendered_args, f) for f in ("--http-port", "--grpc-port", "--metrics-port")]
        self.addresses = list(addresses) if addresses is not None else [f"127.0.0.{ADDRESS_BASE + 1 + i}" for i in range(max_pods)]
        chosen = list(ports) if ports is not None else common_free_ports(self.addresses, 3)
        self.http_port, self.grpc_port, self.metrics_port = (int(p) for p in chosen)
        self._port_map = {int(r): int(c) for r, c in zip(rendered_ports, chosen, strict=True) if r is not None}
        self.args = _localize_args(self.rendered_args, model_repository, chosen)
        self.model_repository = model_repository
        self.dns = dns
        self.fqdn = fqdn or f"{self.name}-headless.{self.namespace}.svc.cluster.local"
        self.extra_records = dict(extra_records or {})
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.template_hash = _safe_hash(repr(template))
        self.events: List[Dict[str, Any]] = []
        self.replicas = 0
        self._pods: List[_Pod] = []
        self._servers: List[TritonProcess] = []  # every container ever started: close() stops each, whatever its kubelet did
        self._lock = threading.RLock()
        self._dns_lock = threading.Lock()
        self._published: Optional[List[str]] = None
        self._closing = threading.Event()
        self._random = random.Random()
        self._venv = ensure_triton_venv()
        self._sync_dns()  # the Service exists before its pods: no address yet

    # --- what the caller sees -------------------------------------------------------------------------

    def pods(self) -> List[PodView]:
        with self._lock:
            return [p.view() for p in self._pods]

    def ready_addresses(self) -> List[str]:
        """The addresses the headless Service resolves to: ready pods that are not terminating."""
        with self._lock:
            return sorted(p.address for p in self._pods if p.address and p.ready and not p.terminating and p.phase == "Running")

    def pod_by_address(self, address: str) -> Optional[PodView]:
        with self._lock:
            return next((p.view() for p in self._pods if p.address == address), None)

    def wait_until(self, condition: Callable[[Deployment], bool], timeout: float) -> bool:
        """Poll ``condition(self)`` until it holds (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_S)
        return True

    def event_times(self, event: str, pod: Optional[str] = None) -> List[float]:
        with self._lock:
            return [e["t"] for e in self.events if e["event"] == event and (pod is None or e["pod"] == pod)]

    # --- the ReplicaSet controller --------------------------------------------------------------------

    def scale(self, replicas: int) -> None:
        """Set spec.replicas; creates or deletes pods at once (their start and stop go on in the background)."""
        if replicas < 0:
            raise ValueError(f"replicas: must be >= 0, got {replicas}")
        if self._closing.is_set():
            raise RuntimeError("the Deployment is closed")
        with self._lock:
            self.replicas = replicas
            self._record("scaled", "", detail=str(replicas))
            self._manage_replicas()

    def _manage_replicas(self) -> None:
        """manageReplicas: active pods (not terminating) against spec.replicas."""
        with self._lock:
            active = [p for p in self._pods if not p.terminating]
            diff = len(active) - self.replicas
            if diff < 0:
                for _index in range(-diff):
                    self._create_pod()
            elif diff > 0:
                for pod in self.deletion_order(active)[:diff]:
                    self._delete_pod(pod)

    def deletion_order(self, pods: Sequence[Any]) -> List[Any]:
        """getPodsToDelete's sort, preferred for deletion first: ActivePodsWithRanks.Less with LogarithmicScaleDown
        (on by default). The pod name stands for the UID of its pseudo-random tie-break."""
        now = self.clock()

        def rank(stamp: float) -> int:
            # logarithmicRankDiff: int(log2(nanoseconds since stamp)), -1 when not in the past
            return int(math.log2((now - stamp) * 1e9)) if now - stamp > 0 else -1

        def after_or_zero(t1: Optional[float], t2: Optional[float]) -> bool:
            if t1 is None or t2 is None:
                return t1 is None
            return t1 > t2

        def less(a: Any, b: Any) -> bool:
            phase = {"Pending": 0, "Unknown": 1, "Running": 2}
            if phase.get(a.phase, 2) != phase.get(b.phase, 2):  # 2. Pending < Unknown < Running
                return phase.get(a.phase, 2) < phase.get(b.phase, 2)
            if a.ready != b.ready:  # 3. not ready < ready
                return not a.ready
            # 4. deletion cost and 5. co-location rank: equal here (no annotation, one node)
            if a.ready and b.ready and a.ready_since != b.ready_since:  # 6. ready for a shorter time first
                if a.ready_since is None or b.ready_since is None:
                    return after_or_zero(a.ready_since, b.ready_since)
                diff = rank(a.ready_since) - rank(b.ready_since)
                return a.name < b.name if diff == 0 else diff < 0
            if a.restarts != b.restarts:  # 7. more restarts first
                return bool(a.restarts > b.restarts)
            if a.created != b.created:  # 8. created later first
                diff = rank(a.created) - rank(b.created)
                return a.name < b.name if diff == 0 else diff < 0
            return False

        return sorted(pods, key=functools.cmp_to_key(lambda first, second: -1 if less(first, second) else (1 if less(second, first) else 0)))

    def _create_pod(self) -> None:
        suffix = "".join(self._random.choice(_NAME_CHARS) for _index in range(5))
        pod = _Pod(name=f"{self.name}-{self.template_hash}-{suffix}", created=self.clock())
        self._pods.append(pod)
        self._record("pod_created", pod.name)
        pod.thread = threading.Thread(target=self._kubelet, args=(pod,), name=f"kubelet-{pod.name}", daemon=True)
        pod.thread.start()

    def _delete_pod(self, pod: _Pod) -> None:
        pod.terminating = True
        pod.deleted_at = self.clock()
        self._record("pod_terminating", pod.name, address=pod.address)
        pod.deleted.set()

    # --- the kubelet ----------------------------------------------------------------------------------

    def _kubelet(self, pod: _Pod) -> None:
        try:
            if self._schedule(pod):
                self._run(pod)
        except Exception as exc:  # a pod that cannot run is recorded (and not replaced), never raised in the caller's thread
            self._record("pod_error", pod.name, detail=repr(exc))
        finally:
            self._terminate(pod)

    def _schedule(self, pod: _Pod) -> bool:
        """Pending until an address is free (all held: as a pod waiting for a MIG slice); False when deleted first."""
        while not pod.deleted.is_set() and not self._closing.is_set():
            with self._lock:
                held = {p.address for p in self._pods if p.address}
                free = [a for a in self.addresses if a not in held]
                if free:
                    pod.address = free[0]
                    pod.phase = "Running"
                    self._record("pod_scheduled", pod.name, address=pod.address)
                    scheduled = True
                else:
                    scheduled = False
            if scheduled:
                # the EndpointSlice controller reconciles the Service on every update of a selected pod
                # (pkg/controller/endpointslice, onPodUpdate), not only on readiness changes: a pod with an address that
                # is not ready yet is written as not ready, which a headless Service's DNS does not answer
                self._sync_dns()
                return True
            pod.deleted.wait(0.1)
        return False

    def _start_container(self, pod: _Pod) -> float:
        assert pod.address is not None
        site = _site_tritonserver(self._venv)
        argv = [str(site / "bin" / "tritonserver"), *self.args, f"--backend-directory={site / 'backends'}",
                f"--http-address={pod.address}", f"--grpc-address={pod.address}", f"--metrics-address={pod.address}"]
        log = self.log_dir / f"{pod.name}.{pod.restarts}.log"
        pod.server = _spawn(argv, self._venv, pod.address, [self.http_port, self.grpc_port, self.metrics_port], log)
        with self._lock:
            self._servers.append(pod.server)
        started = self.clock()
        self._record("pod_started", pod.name, address=pod.address, detail=f"pid {pod.server.pid}")
        return started

    def _run(self, pod: _Pod) -> None:
        """Start the container, run the startup and readiness probes until the pod is deleted."""
        backoff = BACKOFF_S
        while not pod.deleted.is_set() and not self._closing.is_set():
            worker_start = self._start_container(pod)
            pod.started = self.startup_probe is None
            exited = self._probe_loop(pod, worker_start)
            if not exited:
                return
            # the container exited by itself: not ready, then restarted after the back-off (restartPolicy Always)
            assert pod.server is not None
            self._record("container_exited", pod.name, detail=f"rc {pod.server.proc.returncode if pod.server.proc else '?'}")
            self._set_ready(pod, False)
            pod.server.stop()
            if pod.deleted.wait(backoff) or self._closing.is_set():
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            pod.restarts += 1

    def _probe_loop(self, pod: _Pod, worker_start: float) -> bool:
        """The probe workers of one container; True when the container exited by itself, False when deleted."""
        startup, readiness = self.startup_probe, self.readiness_probe
        if readiness is None and startup is None:
            self._set_ready(pod, True)
        # run() does a doProbe at once (before the container runs: skipped), then one every period
        next_startup = worker_start + startup.period_s if startup else math.inf
        next_readiness = worker_start + readiness.period_s if readiness else math.inf
        runs = {"startup": [None, 0], "readiness": [None, 0]}  # last result, consecutive count
        while not pod.deleted.is_set() and not self._closing.is_set():
            assert pod.server is not None
            if pod.server.proc is not None and pod.server.proc.poll() is not None:
                return True
            now = self.clock()
            if startup is not None and not pod.started and now >= next_startup:
                next_startup += startup.period_s * max(1, math.floor((now - next_startup) / startup.period_s) + 1)
                if now - worker_start >= startup.initial_delay_s:
                    result = self._probe(pod, startup)
                    if self._threshold(runs["startup"], result, startup):
                        if result:
                            pod.started = True
                            self._record("startup_probe_succeeded", pod.name)
                            if readiness is None:
                                self._set_ready(pod, True)
                            else:
                                next_readiness = now  # UpdatePodStatus triggers the readiness worker at once
                        else:
                            self._record("startup_probe_failed", pod.name)
                            pod.server.stop()  # the kubelet kills the container; it is restarted
                            return True
            if readiness is not None and now >= next_readiness:
                ticks = math.floor((now - worker_start) / readiness.period_s) + 1
                next_readiness = worker_start + ticks * readiness.period_s  # the ticker's phase is kept
                if pod.started and now - worker_start >= readiness.initial_delay_s:
                    result = self._probe(pod, readiness)
                    if self._threshold(runs["readiness"], result, readiness) and result != pod.ready:
                        self._set_ready(pod, result)
            wait = min(next_startup if not pod.started else math.inf, next_readiness) - self.clock()
            pod.deleted.wait(min(max(wait, 0.0), 0.5))
        return False

    @staticmethod
    def _threshold(run: List[Any], result: bool, probe: Probe) -> bool:
        """worker.go doProbe: whether ``result`` has now come successThreshold/failureThreshold times in a row."""
        if run[0] is result:
            run[1] += 1
        else:
            run[0], run[1] = result, 1
        return int(run[1]) >= (probe.success_threshold if result else probe.failure_threshold)

    def _probe(self, pod: _Pod, probe: Probe) -> bool:
        """An HTTP probe (pkg/probe/http): GET within timeoutSeconds, success on a status in [200, 400)."""
        port = self._port_map.get(probe.port, probe.port)
        conn = http.client.HTTPConnection(str(pod.address), port, timeout=probe.timeout_s)
        try:
            conn.request("GET", probe.path, headers={"User-Agent": "kube-probe/1.33"})
            status = conn.getresponse().status
            return 200 <= status < 400
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _set_ready(self, pod: _Pod, ready: bool) -> None:
        with self._lock:
            if pod.ready == ready:
                return
            pod.ready = ready
            pod.ready_since = self.clock() if ready else None
            self._record("pod_ready" if ready else "pod_not_ready", pod.name, address=pod.address)
        self._sync_dns()

    def _terminate(self, pod: _Pod) -> None:
        """Deleted: out of DNS first, then preStop, SIGTERM, SIGKILL after the grace period; then gone."""
        deleted_at = pod.deleted_at if pod.deleted_at is not None else self.clock()
        try:
            try:
                self._sync_dns()
            except Exception as exc:  # the pod is stopped all the same (as the kubelet stops it whatever the endpoints)
                self._record("pod_error", pod.name, detail=f"removing from DNS: {exc!r}")
            server = pod.server
            if server is not None and not server.stopped:
                if self._closing.is_set():
                    server.stop()
                else:
                    self._graceful_stop(pod, server, deleted_at)
                self._record("pod_stopped", pod.name, address=pod.address,
                             detail=f"rc {server.proc.returncode if server.proc is not None else '?'}")
        finally:
            with self._lock:
                if pod in self._pods:
                    self._pods.remove(pod)
                self._record("pod_removed", pod.name, address=pod.address)

    def _graceful_stop(self, pod: _Pod, server: TritonProcess, deleted_at: float) -> None:
        if self.prestop_s:
            self._record("prestop_started", pod.name, detail=f"sleep {self.prestop_s:g}")
            self._closing.wait(min(self.prestop_s, self.grace_s))
            self._record("prestop_finished", pod.name)
        remaining = max(self.grace_s - (self.clock() - deleted_at), MINIMUM_GRACE_S)
        self._record("sigterm", pod.name, address=pod.address, detail=f"grace {remaining:.1f}s")
        stop_process_group(server.pid, sig=signal.SIGTERM, timeout=remaining, name="tritonserver", proc=server.proc)
        server.stopped = True
        if server.proc is not None and server.proc.returncode == -signal.SIGKILL:
            self._record("sigkill", pod.name)

    # --- EndpointSlice controller + cluster DNS -------------------------------------------------------

    def _sync_dns(self) -> None:
        """The Service's ready endpoints into DNS; returns once dnsmasq answers with them (bounded by set_records)."""
        with self._dns_lock:
            with self._lock:
                want = {p.name: p.address for p in self._pods
                        if p.address and p.ready and not p.terminating and p.phase == "Running"}
            addresses = sorted(str(a) for a in want.values())
            if addresses != self._published:
                with contextlib.suppress(ProcessLookupError):  # dnsmasq already stopped (at close)
                    self.dns.set_records({**self.extra_records, self.fqdn: addresses}, wait=False)
                    self._wait_answer(addresses)
                self._published = addresses
            with self._lock:
                for pod in self._pods:
                    now_in = pod.name in want
                    if now_in != pod.in_dns:
                        pod.in_dns = now_in
                        self._record("pod_in_dns" if now_in else "pod_removed_from_dns", pod.name, address=pod.address)

    def _wait_answer(self, addresses: List[str]) -> None:
        """Until dnsmasq answers the Service's name with ``addresses`` (bounded). With none, NXDOMAIN, as CoreDNS
        answers for a headless Service without ready endpoints."""
        deadline = time.monotonic() + DNS_WAIT_S
        while True:
            answer: Optional[List[str]]
            try:  # no address: NXDOMAIN (dnsmasq_server answers the cluster domain itself, as CoreDNS does)
                answer = query_a(self.fqdn, self.dns.host, self.dns.port, timeout=0.5)
            except OSError:  # a lost datagram
                answer = None
            if answer == addresses:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dnsmasq does not answer {self.fqdn} -> {addresses} after {DNS_WAIT_S:.0f} s (last: {answer})")
            time.sleep(POLL_S)

    # --- records and shutdown -------------------------------------------------------------------------

    def _record(self, event: str, pod: str, *, address: Optional[str] = None, detail: str = "") -> None:
        with self._lock:
            self.events.append({"t": self.clock(), "event": event, "pod": pod, "address": address, "detail": detail})

    def close(self) -> None:
        """Stop every pod at once (no preStop, SIGTERM then SIGKILL after 10 s) and wait until none runs (bounded)."""
        self._closing.set()
        with self._lock:
            pods = list(self._pods)
            for pod in pods:
                pod.deleted.set()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for pod in pods:
            if pod.thread is not None:
                pod.thread.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._lock:
            servers = list(self._servers)
        for server in servers:  # a kubelet thread that raised or did not finish in time: its container is stopped here
            if not server.stopped:
                server.stop()
        alive = [p.name for p in pods if p.thread is not None and p.thread.is_alive()]
        if alive:
            raise RuntimeError(f"pods still stopping after {CLOSE_WAIT_S:.0f} s: {alive}")

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _prestop_sleep(container: Mapping[str, Any]) -> float:
    """The seconds of the preStop hook: ``exec: [sleep, N]`` (or the ``sleep`` action, core/v1 SleepAction)."""
    pre = ((container.get("lifecycle") or {}).get("preStop")) or {}
    if not pre:
        return 0.0
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = [str(c) for c in ((pre.get("exec") or {}).get("command") or [])]
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return float(command[1])
    raise ValueError(f"lifecycle.preStop: only a sleep is modelled, got {pre}")


def _arg_value(args: Sequence[str], flag: str) -> Optional[int]:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    return int(values[-1]) if values else None


def _localize_args(args: Sequence[str], repo: Path, ports: Sequence[int]) -> List[str]:
    """The rendered args with the model repository and the three ports replaced (each must be there)."""
    wanted = {"--model-repository": str(repo), "--http-port": str(ports[0]), "--grpc-port": str(ports[1]),
              "--metrics-port": str(ports[2])}
    out, seen = [], set()
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag in wanted:
            out.append(f"{flag}={wanted[flag]}")
            seen.add(flag)
        else:
            out.append(arg)
    missing = sorted(set(wanted) - seen)
    if missing:
        raise ValueError(f"the rendered container args set no {', '.join(missing)}: {list(args)}")
    return out


def _safe_hash(text: str) -> str:
    """A pod-template-hash lookalike (the ReplicaSet's name suffix): stable for one template, no vowels."""
    digest = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    chars = []
    for _index in range(10):
        digest, rest = divmod(digest, len(_NAME_CHARS))
        chars.append(_NAME_CHARS[rest])
    return "".join(chars)
