# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: what playbooks/loadtest.yml samples while perf_analyzer runs, and the run it assembles.

Not a public API; may change without notice.

The serving pools followed (one Triton Deployment and one HPA per MIG profile): the ``pools`` given (the fact
``gpu_ops_pools``), else the Deployments found by the labels every pool's Deployment carries
(``app.kubernetes.io/name=triton``, ``app.kubernetes.io/instance=<instance>``), else - the single-Deployment form of
earlier releases - the one ``deployment``; ``pool_names`` keeps some of them. Read once per call (:meth:`Sampler.pool_list`).

One sample, read-only, through the API server:

* every pool's HPA (``autoscaling/v2``, one list of the namespace's HPAs; a pool's HPA is the one whose
  ``spec.scaleTargetRef`` is the pool's Deployment, whatever its name, KEDA's included): ``status.currentReplicas``,
  ``status.desiredReplicas`` and the current value of its metric (``status.currentMetrics``); its ``spec`` gives min/max
  replicas and the target;
* the Triton pods of every pool (one list with the shared labels; each pod's pool from its ``gpu-ops.io/serving-pool``
  label): the ready ones, and their pod IPs;
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

A sample keeps the fields of the single-Deployment releases, now over all pools followed: ``hpa_current`` and
``hpa_desired`` are the sums over the pools whose HPA was read, ``metric_us`` the pools' HPA values averaged with their
current replicas as weights (the mean queue time per pod over all pools), ``ready_pods`` the ready pods of all pools;
``pools`` holds each pool's own (``{pool: {hpa_current, hpa_desired, metric_us, ready_pods, pods}}``, ``pods`` its ready
pods). The run's ``pools`` describes each pool (name, profile, weight, hpa, min/max replicas, target).
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

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._mig_config import MigConfigError, parse_profile
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


# The labels role triton gives every serving pool's Deployment and pods, and the pool's own label and annotation.
POOL_LABEL = "gpu-ops.io/serving-pool"
PROFILE_ANNOTATION = "gpu-ops.io/mig-profile"
WEIGHT_ANNOTATION = "gpu-ops.io/lb-weight"  # on each pool's Deployment (role triton): the weight validate.yml gave the pool


def shared_selector(instance: str) -> Dict[str, str]:
    """The labels every serving pool's Deployment and pods carry (role triton's selector)."""
    return {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": instance}


def profile_weight(profile: Any) -> Optional[int]:
    """The compute slices of a MIG profile (1g.5gb: 1, 3g.20gb: 3, 1c.3g.20gb: 1): the load balancer's weight of a
    pool's pods unless the pool gives its own (role nginx_lb, gpu_ops_pools' weight); None for no or no such profile."""
    if not profile:
        return None
    try:
        return int(parse_profile(str(profile)).compute)
    except MigConfigError:
        return None


def pool_of_pod(pod: str, pools: Sequence[str]) -> Optional[str]:
    """The pool whose Deployment made a pod named ``pod``: a ReplicaSet's pods are ``<deployment>-<pod-template-hash>-<5
    characters>`` (the Deployment controller names the ReplicaSet ``<deployment>-<hash>``, the ReplicaSet controller
    its pods ``<replicaset>-<random>`` with generateName), so no other pool's name pattern matches; None when none does."""
    for name in pools:
        if re.fullmatch(re.escape(name) + r"-[a-z0-9]+-[a-z0-9]+", pod):
            return name
    return None


class Sampler:
    """Reads one sample at a time through ``transport`` (the module's KubeTransport, a fake one in unit tests).

    ``params``: the module's options (namespace, pools, pool_names, instance, deployment, hpa_name, metric_name,
    queue_source, metric_series, model, lb_edition, lb_namespace, lb_deployment, lb_status_port, lb_plus_api_version,
    lb_upstreams, prometheus_service, job_name, job_namespace)."""

    def __init__(self, transport: Transport, params: Mapping[str, Any], clock: Callable[[], float] = time.time) -> None:
        self.t = transport
        self.p = params
        self.ns = str(params["namespace"])
        self.clock = clock
        self.verifier = Verifier(transport, {"namespace": self.ns, "metric_name": params["metric_name"]})
        self.metrics_version: Optional[str] = None
        self.errors: Dict[str, str] = {}  # source -> the last error seen (reported as warnings)
        self.pools: Optional[List[Dict[str, Any]]] = None  # the pools followed (pool_list)
        self.all_pools: List[str] = []  # every pool found, followed or not (to tell their pods apart)
        self.selector: Dict[str, Any] = {}  # the labels of every followed pool's pods
        self.hpa_specs: Dict[str, Dict[str, Any]] = {}  # pool -> hpa_settings of its HPA's spec
        self.hpa_names: Dict[str, str] = {}  # pool -> the HPA read for it

    def _get(self, path: str, query: Optional[Mapping[str, str]] = None) -> Tuple[int, Any]:
        resp = self.t.request("GET", path, query)
        return resp.status, resp.json()

    def _error(self, source: str, message: str) -> None:
        self.errors[source] = message

    # -- the pools

    def pool_list(self) -> List[Dict[str, Any]]:
        """The pools followed, each {name, hpa, profile, weight} (read once). VerifyError when there is none, or
        ``pool_names`` names one that is not there."""
        if self.pools is not None:
            return self.pools
        instance = str(self.p.get("instance") or "triton")
        given = [dict(entry) for entry in self.p.get("pools") or []]
        if given:
            found = [{"name": str(e["name"]), "hpa": str(e.get("hpa") or ""), "profile": e.get("profile") or None,
                      "weight": int(e["weight"]) if e.get("weight") else profile_weight(e.get("profile"))} for e in given]
            self.selector = shared_selector(instance)
            where = "the pools given (gpu_ops_pools)"
        elif self.p.get("deployment"):  # the single Deployment of earlier releases: its own selector, its HPA by name
            name = str(self.p["deployment"])
            status, dep = self._get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{quote(name, safe='')}")
            if status != 200 or not isinstance(dep, dict):
                raise VerifyError(f"reading the Triton Deployment {self.ns}/{name}: answered {status}")
            self.selector = dict(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
            found = [{"name": name, "hpa": str(self.p.get("hpa_name") or ""), "profile": None, "weight": None, "explicit_hpa": True}]
            where = f"Deployment {name}"
        else:
            self.selector = shared_selector(instance)
            found = self.discover(instance)
            where = f"the Triton Deployments of {self.ns} labelled {selector_string(self.selector)}"
        self.all_pools = [str(p["name"]) for p in found]
        wanted = [str(n) for n in self.p.get("pool_names") or []]
        unknown = [n for n in wanted if n not in self.all_pools]
        if unknown:
            raise VerifyError(f"pool_names (loadtest_pools) names {', '.join(unknown)}, not among {where}: "
                              f"{', '.join(self.all_pools) or 'none'}")
        self.pools = [p for p in found if not wanted or p["name"] in wanted]
        if not self.pools:
            raise VerifyError(f"no serving pool to follow: {where} found none (is the serving stack deployed? playbooks/serving.yml)")
        return self.pools

    def discover(self, instance: str) -> List[Dict[str, Any]]:
        """The pools' Deployments: those with the shared labels (a list with labelSelector, as the API server filters
        it), each a pool named as its Deployment; its profile from the pod template's annotation, its weight from the
        Deployment's (Deployments of releases before it: the profile's compute slices)."""
        path = f"/apis/apps/v1/namespaces/{self.ns}/deployments"
        status, body = self._get(path, {"labelSelector": selector_string(shared_selector(instance))})
        if status != 200 or not isinstance(body, dict):
            raise VerifyError(f"listing the Triton Deployments of {self.ns} ({selector_string(shared_selector(instance))}): answered {status}")
        found = []
        for dep in sorted(body.get("items") or [], key=lambda d: str(d["metadata"]["name"])):
            template = ((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}
            profile = (template.get("annotations") or {}).get(PROFILE_ANNOTATION)
            weight = str((dep["metadata"].get("annotations") or {}).get(WEIGHT_ANNOTATION) or "")
            found.append({"name": str(dep["metadata"]["name"]), "hpa": "", "profile": profile,
                          "weight": int(weight) if weight.isdigit() and int(weight) >= 1 else profile_weight(profile)})
        return found

    def pool_names(self) -> List[str]:
        return [p["name"] for p in self.pool_list()]

    def followed(self, pod: str, labelled: Optional[Mapping[str, str]] = None) -> bool:
        """Whether a pod (or a peer address) is kept: not one of a pool that is not followed."""
        names = self.pool_names()
        pool = (labelled or {}).get(pod) or pool_of_pod(pod, self.all_pools)
        return pool is None or pool in names

    # -- the HPAs

    def hpas(self) -> Dict[str, Tuple[Optional[int], Optional[int], Optional[float]]]:
        """{pool: (current replicas, desired replicas, metric value)} from one list of the namespace's HPAs. A pool's HPA
        is the one a pool names, else the one whose scaleTargetRef is the pool's Deployment: KEDA's too, whose HPA it
        names getHPAName (advanced.horizontalPodAutoscalerConfig.name, else keda-hpa-<ScaledObject>) with the
        ScaledObject's own scaleTargetRef name (kedacore/keda controllers/keda/hpa.go, newHPAForScaledObject)."""
        pools = self.pool_list()
        out: Dict[str, Tuple[Optional[int], Optional[int], Optional[float]]] = {p["name"]: (None, None, None) for p in pools}
        if all(p.get("explicit_hpa") and not p["hpa"] for p in pools):
            return out  # the single Deployment without an HPA name: none read
        status, body = self._get(f"/apis/autoscaling/v2/namespaces/{self.ns}/horizontalpodautoscalers")
        if status != 200 or not isinstance(body, dict):
            self._error("hpa", f"listing the HPAs of {self.ns}: answered {status}")
            return out
        by_name = {str(h["metadata"]["name"]): h for h in body.get("items") or [] if isinstance(h, dict)}
        by_target: Dict[str, Dict[str, Any]] = {}
        for hpa in by_name.values():
            ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name"):
                by_target.setdefault(str(ref["name"]), hpa)
        missing: List[str] = []
        for pool in pools:
            found = by_name.get(pool["hpa"]) if pool["hpa"] else by_target.get(pool["name"])
            if found is None:
                missing.append(f"HPA {self.ns}/{pool['hpa']}" if pool["hpa"] else f"no HPA scales Deployment {self.ns}/{pool['name']}")
                continue
            self.hpa_names[pool["name"]] = str(found["metadata"]["name"])
            out[pool["name"]] = self._hpa_values(found)
            self.hpa_specs[pool["name"]] = hpa_settings(found.get("spec") or {})
        if missing:
            self._error("hpa", "; ".join(m if m.startswith("no ") else f"{m} not found" for m in missing))
        return out

    def _hpa_values(self, hpa: Mapping[str, Any]) -> Tuple[Optional[int], Optional[int], Optional[float]]:
        st = hpa.get("status") or {}
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
                        self._error("hpa", f"HPA {self.ns}/{hpa['metadata']['name']}: {exc}")
                    break
        current_replicas = st.get("currentReplicas")
        desired = st.get("desiredReplicas")
        return (int(current_replicas) if current_replicas is not None else None,
                int(desired) if desired is not None else None, value)

    @property
    def hpa_spec(self) -> Dict[str, Any]:
        """The HPAs' settings over all pools (the run's settings): min and max replicas summed, the target and the
        metric the pools share (differing targets: the lowest; each pool's own is in the run's pools)."""
        specs = [self.hpa_specs[name] for name in self.pool_names() if name in self.hpa_specs] if self.pools is not None else []
        if not specs:
            return {}
        targets = [s["target_queue_us"] for s in specs if s.get("target_queue_us") is not None]
        maxima: List[int] = [int(s["max_replicas"]) for s in specs if s.get("max_replicas") is not None]
        out: Dict[str, Any] = {"min_replicas": sum(int(s.get("min_replicas") or 0) for s in specs),
                               "max_replicas": sum(maxima) if len(maxima) == len(specs) else None,
                               "target_queue_us": min(targets) if targets else None}
        metric = next((s["metric"] for s in specs if s.get("metric")), None)
        if metric:
            out["metric"] = metric
        return out

    def pool_descriptions(self) -> List[Dict[str, Any]]:
        """The run's pools: name, profile, weight, hpa, min_replicas, max_replicas, target_queue_us (None where unknown)."""
        out = []
        for pool in self.pool_list() if self.pools is not None else []:
            spec = self.hpa_specs.get(pool["name"]) or {}
            out.append({"name": pool["name"], "profile": pool.get("profile"), "weight": pool.get("weight"),
                        "hpa": self.hpa_names.get(pool["name"]) or pool["hpa"] or None,
                        "min_replicas": spec.get("min_replicas"), "max_replicas": spec.get("max_replicas"),
                        "target_queue_us": spec.get("target_queue_us")})
        return out

    # -- the Triton pods

    def triton_pods(self) -> Optional[Dict[str, Dict[str, Any]]]:
        """{pod: {ip, pool, ready}} of every pool (one list with the shared labels; the pool from the pod's pool label,
        else its name; None for neither); None when they cannot be read."""
        status, pods = self._get(f"/api/v1/namespaces/{self.ns}/pods", {"labelSelector": selector_string(self.selector)})
        if status != 200 or not isinstance(pods, dict):
            self._error("pods", f"listing the Triton pods of {self.ns} ({selector_string(self.selector)}): answered {status}")
            return None
        names = self.pool_names()
        out: Dict[str, Dict[str, Any]] = {}
        for pod in pods.get("items") or []:
            meta = pod.get("metadata") or {}
            name = str(meta.get("name"))
            # the single Deployment of earlier releases selects its pods by its own labels: they are all its
            pool = (meta.get("labels") or {}).get(POOL_LABEL) or pool_of_pod(name, self.all_pools) or (names[0] if len(self.all_pools) == 1 else None)
            out[name] = {"ip": str((pod.get("status") or {}).get("podIP") or ""), "pool": pool, "ready": pod_ready(pod)}
        return out

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
        status, body = self._get(path, {"labelSelector": selector_string(self.selector)})
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

    def requests(self, ips: Mapping[str, str]) -> Tuple[Dict[str, int], Optional[Dict[str, int]]]:
        """({Triton pod: requests so far}, {Triton pod: failed requests so far} or None when unknown); a peer whose
        address no Triton pod has keeps its address."""
        if self.p.get("lb_edition") == "plus":
            return self.plus_requests(ips)
        model = str(self.p.get("model") or "")
        matcher = f'namespace="{self.ns}"' + (f',model="{model}"' if model else "")
        served = self.prometheus_by_pod(f"sum by (pod) (nv_inference_request_success{{{matcher}}})", "requests")
        failed = self.prometheus_by_pod(f"sum by (pod) (nv_inference_request_failure{{{matcher}}})", "requests")
        return {pod: round(v) for pod, v in sorted(served.items())}, ({pod: round(v) for pod, v in failed.items()} if failed or served else None)

    def plus_requests(self, ips: Mapping[str, str]) -> Tuple[Dict[str, int], Optional[Dict[str, int]]]:
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
        failed: Dict[str, int] = {}
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
                    failed[key] = failed.get(key, 0) + errors
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
        hpas = self.hpas()
        pods = self.triton_pods()
        labelled = {name: pod["pool"] for name, pod in (pods or {}).items() if pod["pool"]}
        ips = {name: pod["ip"] for name, pod in (pods or {}).items() if pod["ready"]}  # every pool's: the LB's peers
        queue = {pod: v for pod, v in self.queue_us().items() if self.followed(pod, labelled)} if pods is not None else {}
        counts, failed_by = self.requests(ips)
        counts = {pod: n for pod, n in counts.items() if self.followed(pod, labelled)}
        failed = sum(n for pod, n in failed_by.items() if self.followed(pod, labelled)) if failed_by is not None else None
        pods = {name: pod for name, pod in (pods or {}).items() if self.followed(name, labelled)} if pods is not None else None
        ips = {name: ip for name, ip in ips.items() if pods is not None and name in pods}
        pools: Dict[str, Dict[str, Any]] = {}
        for name, (current, desired, metric) in hpas.items():
            ready = sorted(pod for pod, info in (pods or {}).items() if info["ready"] and info["pool"] == name)
            pools[name] = {"hpa_current": current, "hpa_desired": desired, "metric_us": metric,
                           "ready_pods": len(ready) if pods is not None else None, "pods": ready}
        read = [v for v in hpas.values() if v[0] is not None]
        weighted = [(c or 0, m) for c, _d, m in hpas.values() if m is not None]
        weight = sum(c for c, _m in weighted)
        metric_us = (sum(c * m for c, m in weighted) / weight if weight else sum(m for _c, m in weighted) / len(weighted)) if weighted else None
        return {"t": round(now - started, 3),
                "hpa_current": sum(int(c or 0) for c, _d, _m in read) if read else None,
                "hpa_desired": sum(int(d or 0) for _c, d, _m in read) if read else None,
                "metric_us": round(metric_us, 3) if metric_us is not None else None,
                "queue_us": dict(sorted(queue.items())), "requests": counts, "ready_pods": len(ips) if pods is not None else None,
                "failed": failed, "pools": pools}


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
    return {"samples": samples, "job": job, "reached": reached, "hpa_settings": sampler.hpa_spec, "pools": sampler.pool_descriptions(),
            "errors": dict(sampler.errors)}


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


def _crossings(events: List[Dict[str, Any]], t: Any, prev: Mapping[str, Any], cur: Mapping[str, Any], target: Optional[float],
               who: str, pool: Optional[str]) -> None:
    """The HPA events between two readings of one HPA (or of all pools' totals): the metric crossing the target, the
    desired and the current replicas moving."""
    tag = {"pool": pool} if pool else {}
    m0, m1 = prev.get("metric_us"), cur.get("metric_us")
    if target is not None and m0 is not None and m1 is not None:
        if m0 <= target < m1:
            events.append({"t": t, "event": "metric_over_target", "detail": f"{who}{m1:g} us > target {target:g} us", **tag})
        elif m1 <= target < m0:
            events.append({"t": t, "event": "metric_under_target", "detail": f"{who}{m1:g} us <= target {target:g} us", **tag})
    d0, d1 = prev.get("hpa_desired"), cur.get("hpa_desired")
    if d0 is not None and d1 is not None and d1 != d0:
        events.append({"t": t, "event": "scale_up_decided" if d1 > d0 else "scale_down_decided", "detail": f"{who}desired {d0} -> {d1}", **tag})
    c0, c1 = prev.get("hpa_current"), cur.get("hpa_current")
    if c0 is not None and c1 is not None and c1 != c0:
        events.append({"t": t, "event": "replicas_changed", "detail": f"{who}current {c0} -> {c1}", **tag})


def derive_events(samples: Sequence[Mapping[str, Any]], target: Optional[float],
                  pool_targets: Optional[Mapping[str, Optional[float]]] = None) -> List[Dict[str, Any]]:
    """Events read off consecutive samples: metric_over_target / metric_under_target (the HPA's value crossing the
    target), scale_up_decided / scale_down_decided (desiredReplicas moving), replicas_changed (currentReplicas),
    pod_ready (more ready pods) and first_request (a pod that had served nothing serves its first request).

    With samples of more than one pool, the HPA events are each pool's (the event's ``pool``; its own target from
    ``pool_targets``, else ``target``) rather than the totals'."""
    events: List[Dict[str, Any]] = []
    prev: Optional[Mapping[str, Any]] = None
    pools = {name for s in samples for name in (s.get("pools") or {})}
    for s in samples:
        t = s.get("t")
        if prev is not None:
            if len(pools) > 1:
                for name in sorted(pools):
                    before, after = (prev.get("pools") or {}).get(name), (s.get("pools") or {}).get(name)
                    if before is not None and after is not None:
                        _crossings(events, t, before, after, (pool_targets or {}).get(name, target) or target, f"{name}: ", name)
            else:
                _crossings(events, t, prev, s, target, "", None)
            r0, r1 = prev.get("ready_pods"), s.get("ready_pods")
            if r0 is not None and r1 is not None and r1 > r0:
                events.append({"t": t, "event": "pod_ready", "detail": f"ready pods {r0} -> {r1}"})
            before_requests = prev.get("requests") or {}
            for pod, count in sorted((s.get("requests") or {}).items()):
                if count > 0 and before_requests.get(pod, 0) == 0:
                    events.append({"t": t, "event": "first_request", "detail": f"{pod} served its first request"})
        prev = s
    return events


def build_run(*, title: str, started_iso: str, started: float, samples: Sequence[Mapping[str, Any]], log_text: str,
              settings: Mapping[str, Any], hpa: Mapping[str, Any], pools: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """The run (the report's schema) from the samples, the Job's log and the settings; the HPAs' own specs (over all
    pools: Sampler.hpa_spec) fill target_queue_us, min_replicas and max_replicas where the settings leave them out;
    ``pools`` (Sampler.pool_descriptions) becomes the run's pools."""
    ordered = sorted(samples, key=lambda s: float(s.get("t") or 0.0))
    merged: Dict[str, Any] = {**{k: v for k, v in hpa.items() if k in ("target_queue_us", "min_replicas", "max_replicas")}, **settings}
    steps = parse_job_log(log_text, started)
    last_t = float(ordered[-1].get("t") or 0.0) if ordered else 0.0
    for step in steps:  # a step the pod never finished (killed, deadline): it ran until the last sample at most
        if step["end"] is None:
            step["end"] = max(step["start"], last_t)
    failed_counts: List[int] = [int(s["failed"]) for s in ordered if isinstance(s.get("failed"), int)]
    failed = max(0, failed_counts[-1] - failed_counts[0]) if len(failed_counts) >= 2 else 0
    events = derive_events(ordered, merged.get("target_queue_us"), {str(p["name"]): p.get("target_queue_us") for p in pools})
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
        "pools": [dict(p) for p in pools],
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
