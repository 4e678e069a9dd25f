# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PRIVATE module_utils: the end-to-end check of the serving stack, read-only.

Not a public API; may change without notice.

Four checks, each reporting exactly what it saw:

1. the custom metrics API (``custom.metrics.k8s.io``, served by prometheus-adapter through an APIService) lists
   the metric for every ready Triton pod selected by each Deployment's labels (one Deployment per serving pool);
2. each HorizontalPodAutoscaler (``autoscaling/v2``, one per pool) reports the metric (``status.currentMetrics``) and
   its condition ``ScalingActive`` is ``True`` (``AbleToScale`` and ``ScalingLimited`` are reported); with KEDA the HPA
   is the one KEDA made for the ScaledObject and its metric is KEDA's External metric;
3. the load balancer's client Service can be reached from outside as its type promises: a LoadBalancer Service has an
   external address (what kubectl shows as EXTERNAL-IP; ``<pending>`` fails, naming the Service), a NodePort Service
   its node ports (reported);
4. an inference through the load balancer succeeds (KServe v2 HTTP protocol, as Triton serves it), through
   the API server's service proxy or a direct URL.

The transport is abstracted (``Transport``): the module gives one built on the ``kubernetes`` client (``KubeTransport``,
over ``_kube_client``); the unit tests give a fake one.
"""
from __future__ import annotations

import json
import math
import re
import time
from decimal import Decimal
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple
from urllib.parse import quote, urlencode

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._kube_client import KubeRequestError, api_request

CUSTOM_METRICS_GROUP = "custom.metrics.k8s.io"
KNOWN_METRICS_VERSIONS = ("v1beta2", "v1beta1")

# Kubernetes resource.Quantity suffixes (k8s.io/apimachinery/pkg/api/resource/suffix.go)
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_QUANTITY = re.compile(r"^(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[KMGTPE]i|[numkMGTPE]?|[eE][+-]?[0-9]+)$")

# KServe v2 datatypes -> the zero value of one element in the JSON tensor data
_ZERO = {
    "BOOL": False,
    "UINT8": 0, "UINT16": 0, "UINT32": 0, "UINT64": 0,
    "INT8": 0, "INT16": 0, "INT32": 0, "INT64": 0,
    "FP16": 0.0, "FP32": 0.0, "FP64": 0.0, "BF16": 0.0,
    "BYTES": "",
}


class VerifyError(Exception):
    """A request that could not be made or answered (connection, TLS, timeout)."""


# --- pure helpers ----------------------------------------------------------------------------------------


def parse_quantity(text: Any) -> float:
    """A Kubernetes quantity ("1500m", "2", "1.5k", "64Mi", "1e3") as a float; ValueError when it is not one."""
    raw = str(text).strip()
    match = _QUANTITY.match(raw)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {raw!r}")
    number, suffix = match.group("number"), match.group("suffix")
    value = Decimal(number)
    if suffix in _BINARY_SUFFIXES:
        return float(value * (2 ** _BINARY_SUFFIXES[suffix]))
    if suffix in _DECIMAL_SUFFIXES:
        return float(value.scaleb(_DECIMAL_SUFFIXES[suffix]))
    return float(value.scaleb(int(suffix[1:])))  # a decimal exponent, e.g. 1e3


def _dims(shape: Any) -> List[int]:
    if not isinstance(shape, (list, tuple)):
        raise ValueError(f"shape must be a list, got {shape!r}")
    dims = []
    for dim in shape:
        size = int(dim)
        if size < -1:
            raise ValueError(f"bad dimension {dim!r} in shape {list(shape)!r}")
        dims.append(1 if size == -1 else size)  # a variable dimension: one element
    return dims


def zero_request(metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """A KServe v2 inference request of zeros for a model's metadata (``GET /v2/models/<m>``).

    Every declared input gets its datatype and its shape with each variable dimension (-1) as 1; the data is
    flat, one zero per element ("" for BYTES, false for BOOL). ValueError for an unknown datatype or no inputs."""
    inputs = metadata.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ValueError(f"model {metadata.get('name', '?')!r} declares no inputs")
    out = []
    for spec in inputs:
        datatype = str(spec.get("datatype", "")).upper()
        if datatype not in _ZERO:
            raise ValueError(f"input {spec.get('name')!r} has an unknown datatype {spec.get('datatype')!r}")
        shape = _dims(spec.get("shape", []))
        count = math.prod(shape)
        out.append({"name": spec["name"], "datatype": datatype, "shape": shape, "data": [_ZERO[datatype]] * count})
    return {"inputs": out}


def pod_ready(pod: Mapping[str, Any]) -> bool:
    """Condition Ready=True and not terminating."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return str(cond.get("status")) == "True"
    return False


def selector_string(labels: Mapping[str, Any]) -> str:
    """matchLabels as a label selector query value (k=v,k2=v2), keys sorted."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _conditions(obj: Mapping[str, Any]) -> Dict[str, Dict[str, str]]:
    return {
        str(c.get("type")): {"status": str(c.get("status", "")), "reason": str(c.get("reason", "")), "message": str(c.get("message", ""))}
        for c in (obj.get("status") or {}).get("conditions") or []
    }


def _status_message(status: int, body: Any) -> str:
    if isinstance(body, dict) and body.get("kind") == "Status":
        return f"{status} {body.get('reason', '')}: {body.get('message', '')}".strip()
    text = body if isinstance(body, str) else json.dumps(body)
    return f"{status}: {text[:300]}"


# --- transport -----------------------------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, body: bytes, content_type: str = "") -> None:
        self.status = status
        self.body = body
        self.content_type = content_type

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return self.body.decode("utf-8", errors="replace")


class Transport:
    """Makes one HTTP request; ``path`` is absolute ("/apis/..."), ``base`` overrides the API server URL."""

    def request(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                base: Optional[str] = None) -> Response:
        raise NotImplementedError


# --- the checks ----------------------------------------------------------------------------------------------


class Verifier:
    """Runs the three checks with ``transport``; ``params`` are the module's options."""

    def __init__(self, transport: Transport, params: Mapping[str, Any]) -> None:
        self.t = transport
        self.p = params
        self.ns = str(params["namespace"])
        # checks whose error waiting cannot cure (an object that applying creates at once is missing): not retried
        self.permanent: Set[str] = set()

    def _get(self, path: str, query: Optional[Mapping[str, str]] = None) -> Tuple[int, Any]:
        resp = self.t.request("GET", path, query)
        return resp.status, resp.json()

    # -- the Triton pods

    def deployments(self) -> List[str]:
        """The Triton Deployments (one per serving pool): ``triton_deployments``, else the one ``triton_deployment``."""
        names = [str(n) for n in self.p.get("triton_deployments") or []]
        return names or [str(self.p.get("triton_deployment") or "triton")]

    def _deployment_selector(self, name: str) -> Tuple[Dict[str, Any], Optional[str]]:
        status, dep = self._get(f"/apis/apps/v1/namespaces/{self.ns}/deployments/{name}")
        if status == 404:
            self.permanent.add("custom_metrics")
            return {}, f"Deployment {self.ns}/{name} not found (is the serving stack deployed? playbooks/serving.yml)"
        if status != 200:
            return {}, f"reading Deployment {self.ns}/{name}: {_status_message(status, dep)}"
        selector = dict(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
        if not selector:
            return {}, f"Deployment {self.ns}/{name} has no spec.selector.matchLabels"
        return selector, None

    def triton_pods(self) -> Tuple[List[str], List[str], Optional[str]]:
        """(ready pod names, not-ready pod names, error) of the Deployments' pods, all pools together; per Deployment in
        ``self.pools`` ({name: {ready, not_ready, selector}}). ``self.selector``: the labels every Deployment selects by
        (with one Deployment, its selector)."""
        given = dict(self.p.get("triton_selector") or {})
        self.pools: Dict[str, Dict[str, Any]] = {}
        self.selectors: Dict[str, Dict[str, Any]] = {}
        problems: List[str] = []
        for name in self.deployments() if not given else [str(self.p.get("triton_deployment") or "triton")]:
            selector, error = (given, None) if given else self._deployment_selector(name)
            if error:
                problems.append(error)
                continue
            self.selectors[name] = selector
        common: Dict[str, Any] = {}
        for index, selector in enumerate(self.selectors.values()):
            common = dict(selector) if index == 0 else {k: v for k, v in common.items() if selector.get(k) == v}
        self.selector = common
        ready: List[str] = []
        unready: List[str] = []
        for name, selector in self.selectors.items():
            status, pods = self._get(f"/api/v1/namespaces/{self.ns}/pods", {"labelSelector": selector_string(selector)})
            if status != 200:
                problems.append(f"listing the Triton pods of {name} ({selector_string(selector)}): {_status_message(status, pods)}")
                continue
            items = pods.get("items") or []
            pool = {"ready": sorted(p["metadata"]["name"] for p in items if pod_ready(p)),
                    "not_ready": sorted(p["metadata"]["name"] for p in items if not pod_ready(p)),
                    "selector": selector_string(selector)}
            self.pools[name] = pool
            ready += pool["ready"]
            unready += pool["not_ready"]
        return sorted(ready), sorted(unready), "; ".join(problems) or None

    # -- 1. custom metrics API

    def metrics_api_version(self) -> Tuple[Optional[str], Dict[str, Any], Optional[str]]:
        """(version, the APIService as reported, error) for custom.metrics.k8s.io."""
        status, body = self._get("/apis/apiregistration.k8s.io/v1/apiservices")
        if status in (401, 403):  # no right to read APIServices: ask discovery instead
            status, group = self._get(f"/apis/{CUSTOM_METRICS_GROUP}")
            if status != 200:
                return None, {}, f"custom metrics API {CUSTOM_METRICS_GROUP} not served: {_status_message(status, group)}"
            version = str((group.get("preferredVersion") or {}).get("version") or "")
            return version or KNOWN_METRICS_VERSIONS[0], {}, None
        if status != 200:
            return None, {}, f"listing APIServices: {_status_message(status, body)}"
        services = [s for s in body.get("items") or [] if (s.get("spec") or {}).get("group") == CUSTOM_METRICS_GROUP]
        if not services:
            return None, {}, (f"no APIService registers {CUSTOM_METRICS_GROUP} (is prometheus-adapter installed? its chart creates "
                              f"v1beta1.{CUSTOM_METRICS_GROUP})")
        services.sort(key=lambda s: (-int((s.get("spec") or {}).get("versionPriority") or 0), str(s["metadata"]["name"])))
        for svc in services:
            cond = _conditions(svc).get("Available", {})
            if cond.get("status") == "True" and svc["spec"].get("version") in KNOWN_METRICS_VERSIONS:
                return str(svc["spec"]["version"]), self._apiservice_report(svc), None
        svc = services[0]
        cond = _conditions(svc).get("Available", {})
        detail = f"{cond.get('reason', '')}: {cond.get('message', '')}" if cond else "no Available condition yet"
        return None, self._apiservice_report(svc), f"APIService {svc['metadata']['name']} not available: {detail}"

    @staticmethod
    def _apiservice_report(svc: Mapping[str, Any]) -> Dict[str, Any]:
        spec = svc.get("spec") or {}
        service = spec.get("service") or {}
        return {"name": svc["metadata"]["name"], "version": spec.get("version"),
                "service": f"{service.get('namespace', '')}/{service.get('name', '')}" if service else "",
                "available": _conditions(svc).get("Available", {})}

    def check_custom_metrics(self, pods: Sequence[str]) -> Tuple[Dict[str, Any], Optional[str]]:
        metric = self.p["metric_name"]
        report: Dict[str, Any] = {"metric": metric, "pods": {}, "missing": [], "api_version": None, "apiservice": {}}
        version, apiservice, error = self.metrics_api_version()
        report["apiservice"] = apiservice
        if error:
            return report, error
        report["api_version"] = f"{CUSTOM_METRICS_GROUP}/{version}"
        path = f"/apis/{CUSTOM_METRICS_GROUP}/{version}/namespaces/{self.ns}/pods/*/{quote(metric, safe='')}"
        values: Dict[str, Any] = {}
        # one list per pool (each Deployment's selector), as the pool's HPA asks for its own pods
        for selector in (getattr(self, "selectors", {}) or {"": self.selector}).values():
            status, body = self._get(path, {"labelSelector": selector_string(selector)})
            if status == 404:
                report["missing"] = list(pods)
                return report, (f"custom metrics API does not list {metric} for any Triton pod in {self.ns}: "
                                f"{_status_message(status, body)}")
            if status != 200:
                return report, f"custom metrics API ({report['api_version']}) answered {_status_message(status, body)}"
            for item in body.get("items") or []:
                obj = item.get("describedObject") or {}
                name = (item.get("metric") or {}).get("name") or item.get("metricName")
                if obj.get("kind") != "Pod" or name != metric:
                    continue
                try:
                    value = parse_quantity(item.get("value"))
                except ValueError as exc:
                    return report, f"custom metrics API: pod {obj.get('name')}: {exc}"
                values[str(obj.get("name"))] = {"value": value, "quantity": item.get("value"), "timestamp": item.get("timestamp")}
        report["pods"] = values
        report["missing"] = [p for p in pods if p not in values]
        if report["missing"]:
            return report, (f"custom metrics API lists {metric} for {len(pods) - len(report['missing'])} of {len(pods)} Triton pods: "
                            f"missing {', '.join(report['missing'])}")
        return report, None

    # -- 2. the HPA

    def autoscalers(self) -> Tuple[str, List[str]]:
        """("hpa" or "keda", the names): one per serving pool (``hpa_names``/``keda_scaled_objects``), or the one
        ``hpa_name``/``keda_scaled_object``."""
        scaled = [str(n) for n in self.p.get("keda_scaled_objects") or []] or [str(n) for n in [self.p.get("keda_scaled_object")] if n]
        if scaled:
            return "keda", scaled
        return "hpa", [str(n) for n in self.p.get("hpa_names") or []] or [str(n) for n in [self.p.get("hpa_name")] if n]

    def check_hpa(self) -> Tuple[Dict[str, Any], Optional[str]]:
        """Every autoscaler: the report of the first (as with one), and ``all`` by name; the errors of all, joined."""
        kind, names = self.autoscalers()
        reports: Dict[str, Any] = {}
        errors: List[str] = []
        for name in names:
            reports[name], error = self.check_one_hpa(name if kind == "hpa" else "", name if kind == "keda" else "")
            if error:
                errors.append(error)
        report: Dict[str, Any] = dict(reports[names[0]]) if names else {}
        report["all"] = reports
        return report, "; ".join(errors) or None

    def hpa_target(self, hpa: str = "", scaled: str = "") -> Tuple[str, str, List[str], Optional[str]]:
        """(HPA name, metric type, accepted metric names, error) of the HPA ``hpa`` or of KEDA's for ScaledObject ``scaled``."""
        if not scaled:
            return hpa, "Pods", [str(self.p["metric_name"])], None
        status, so = self._get(f"/apis/keda.sh/v1alpha1/namespaces/{self.ns}/scaledobjects/{scaled}")
        if status != 200:
            return "", "External", [], f"reading KEDA ScaledObject {self.ns}/{scaled}: {_status_message(status, so)}"
        advanced = ((so.get("spec") or {}).get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
        # KEDA writes the HPA's name to status.hpaName; it is advanced.horizontalPodAutoscalerConfig.name or keda-hpa-<name>
        name = (so.get("status") or {}).get("hpaName") or advanced.get("name") or f"keda-hpa-{scaled}"
        names = list((so.get("status") or {}).get("externalMetricNames") or [])
        return str(name), "External", names, None

    def check_one_hpa(self, hpa_name: str, scaled: str) -> Tuple[Dict[str, Any], Optional[str]]:
        name, kind, names, error = self.hpa_target(hpa_name, scaled)
        report: Dict[str, Any] = {"name": name, "metric_type": kind, "metric": None, "current_value": None}
        if error:
            return report, error
        status, hpa = self._get(f"/apis/autoscaling/v2/namespaces/{self.ns}/horizontalpodautoscalers/{name}")
        if status == 404 and kind == "Pods":  # applied by role autoscaling at once; KEDA's operator creates its HPA later
            self.permanent.add("hpa")
        if status != 200:
            return report, f"reading HPA {self.ns}/{name}: {_status_message(status, hpa)}"
        spec, st = hpa.get("spec") or {}, hpa.get("status") or {}
        conds = _conditions(hpa)
        report.update({
            "min_replicas": spec.get("minReplicas", 1), "max_replicas": spec.get("maxReplicas"),
            "current_replicas": st.get("currentReplicas"), "desired_replicas": st.get("desiredReplicas"),
            "conditions": conds,
            "able_to_scale": conds.get("AbleToScale", {}).get("status") == "True",
            "scaling_active": conds.get("ScalingActive", {}).get("status") == "True",
            "scaling_limited": conds.get("ScalingLimited", {}).get("status") == "True",
        })

        def metric_of(entry: Mapping[str, Any]) -> Tuple[str, str]:
            kind_key = str(entry.get("type", "")).lower()
            return str(entry.get("type", "")), str(((entry.get(kind_key) or {}).get("metric") or {}).get("name", ""))

        declared = [metric_of(m) for m in spec.get("metrics") or []]
        wanted = [(t, n) for t, n in declared if t == kind and (n in names or (kind == "External" and not names))]
        if not wanted:
            listed = ", ".join(f"{t} {n}" for t, n in declared) or "none"
            want = f"{kind} {' or '.join(names) or '(any External metric)'}"
            return report, f"HPA {self.ns}/{name} does not scale on {want}: its metrics are {listed}"
        report["metric"] = wanted[0][1]
        for entry in st.get("currentMetrics") or []:
            t, n = metric_of(entry)
            if (t, n) in wanted:
                current = (entry.get(t.lower()) or {}).get("current") or {}
                quantity = current.get("averageValue", current.get("value"))
                if quantity is not None:
                    report["current_value"] = parse_quantity(quantity)
                    report["current_quantity"] = quantity
                    report["metric"] = n
        active = conds.get("ScalingActive")
        if active is None:
            return report, f"HPA {self.ns}/{name} has no ScalingActive condition yet (the controller has not synced it)"
        if active["status"] != "True":
            return report, f"HPA {self.ns}/{name} ScalingActive is {active['status']} ({active['reason']}): {active['message']}"
        if report["current_value"] is None:
            return report, f"HPA {self.ns}/{name} reports no current value of {kind} metric {report['metric']} (status.currentMetrics)"
        return report, None

    # -- 3. the load balancer's Service: reachable as its type promises

    def check_lb_address(self) -> Tuple[Dict[str, Any], Optional[str]]:
        """The client Service's type, cluster IP, external addresses and ports (with node ports). A LoadBalancer Service
        whose external address is what kubectl prints as ``<pending>`` fails: kubectl's getServiceExternalIP
        (kubernetes pkg/printers/internalversion/printers.go) shows status.loadBalancer.ingress (ip, else hostname)
        and spec.externalIPs, and ``<pending>`` when both are empty."""
        ns, name = str(self.p.get("lb_namespace") or self.ns), str(self.p["lb_service"])
        report: Dict[str, Any] = {"service": f"{ns}/{name}", "type": None, "cluster_ip": None, "external": [], "ports": []}
        status, svc = self._get(f"/api/v1/namespaces/{ns}/services/{name}")
        if status == 404:
            self.permanent.add("lb_address")  # applied with the load balancer at once: waiting does not bring it
            return report, f"Service {ns}/{name} not found (is the load balancer deployed? playbooks/load_balancer.yml)"
        if status != 200 or not isinstance(svc, dict):
            return report, f"reading Service {ns}/{name}: {_status_message(status, svc)}"
        spec = svc.get("spec") or {}
        kind = str(spec.get("type") or "ClusterIP")
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        external = [str(i.get("ip") or i.get("hostname")) for i in ingress if isinstance(i, dict) and (i.get("ip") or i.get("hostname"))]
        report.update({
            "type": kind,
            "cluster_ip": spec.get("clusterIP"),
            "external": external + [str(ip) for ip in spec.get("externalIPs") or [] if str(ip) not in external],
            "ports": [{"name": p.get("name"), "port": p.get("port"), "node_port": p.get("nodePort")} for p in spec.get("ports") or []
                      if isinstance(p, dict)],
        })
        if kind == "LoadBalancer" and not report["external"]:
            return report, (
                f"Service {ns}/{name} is of type LoadBalancer, but no load-balancer provider has assigned it an external address "
                "(status.loadBalancer.ingress is empty: kubectl shows EXTERNAL-IP <pending>). On bare metal install a provider "
                "such as MetalLB or kube-vip with an address pool, or expose the load balancer otherwise "
                "(nginx_lb_service_type: NodePort, or host ports on dedicated nodes: nginx_lb_host_ports)"
            )
        return report, None

    # -- 4. an inference through the load balancer

    def _lb(self, method: str, path: str, body: Any = None) -> Response:
        lb_url = str(self.p.get("lb_url") or "").rstrip("/")
        if lb_url:
            return self.t.request(method, path, body=body, base=lb_url)
        return self.t.request(method, f"/api/v1/namespaces/{self.p['lb_namespace'] or self.ns}/services/{self._proxy_service()}/proxy{path}", body=body)

    def _proxy_service(self) -> str:
        """The service proxy's ``[scheme:]name[:port]`` (``https:`` makes the API server speak TLS to the port)."""
        scheme = str(self.p.get("lb_scheme") or "http")
        return f"{'https:' if scheme == 'https' else ''}{self.p['lb_service']}:{self.p['lb_port']}"

    def check_lb(self) -> Tuple[Dict[str, Any], Optional[str]]:
        via = str(self.p.get("lb_url") or "") or f"service proxy {self.p['lb_namespace'] or self.ns}/{self._proxy_service()}"
        report: Dict[str, Any] = {"via": via, "model": None, "status": None, "latency_ms": None, "outputs": []}
        model = str(self.p.get("model") or "")
        if not model:
            resp = self._lb("POST", "/v2/repository/index", {"ready": True})
            index = resp.json()
            if resp.status == 404 and isinstance(index, dict) and index.get("kind") == "Status":  # the Service itself is missing
                self.permanent.add("lb")
            if resp.status == 403 and isinstance(index, dict) and "error" in index:  # the LB's allow-list (or Triton's restricted API)
                self.permanent.add("lb")
                return report, (f"load balancer ({via}): POST /v2/repository/index answered {_status_message(resp.status, index)}; "
                                "the model repository is not served to clients, so name the model to infer on "
                                "(option model; gpu_ops_verify_serving_model in playbooks/verify.yml)")
            if resp.status != 200:
                return report, f"load balancer ({via}): POST /v2/repository/index answered {_status_message(resp.status, index)}"
            ready = [m for m in index or [] if isinstance(m, dict) and str(m.get("state", "")).upper() == "READY"]
            if not ready:
                return report, f"load balancer ({via}): no READY model in the repository index {json.dumps(index)[:300]}"
            model = str(ready[0]["name"])
        report["model"] = model
        resp = self._lb("GET", f"/v2/models/{quote(model, safe='')}")
        metadata = resp.json()
        if resp.status != 200 or not isinstance(metadata, dict):
            return report, f"load balancer ({via}): GET /v2/models/{model} answered {_status_message(resp.status, metadata)}"
        try:
            request = zero_request(metadata)
        except (ValueError, KeyError, TypeError) as exc:
            return report, f"load balancer ({via}): cannot build a request for model {model}: {exc}"
        started = time.monotonic()
        resp = self._lb("POST", f"/v2/models/{quote(model, safe='')}/infer", request)
        report["latency_ms"] = round((time.monotonic() - started) * 1000.0, 2)
        report["status"] = resp.status
        answer = resp.json()
        if resp.status != 200:
            return report, f"load balancer ({via}): inference on model {model} answered {_status_message(resp.status, answer)}"
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not outputs:
            return report, f"load balancer ({via}): inference on model {model} returned no outputs: {json.dumps(answer)[:300]}"
        report["outputs"] = [o.get("name") for o in outputs if isinstance(o, dict)]
        return report, None

    # -- all of it, with bounded waiting

    def run(self, sleep: Callable[[float], None] = time.sleep) -> Dict[str, Any]:
        """Each check until it passes, at most ``retries`` + 1 rounds ``delay`` seconds apart; a passed check is not repeated."""
        # the Service's address only when asked (check_lb_address): callers before it knew three checks
        checks = [c for c in ("custom_metrics", "hpa", "lb_address", "lb") if self.p.get(f"check_{c}", c != "lb_address")]
        reports: Dict[str, Any] = {}
        errors: Dict[str, str] = {}
        pending = list(checks)
        rounds = int(self.p.get("retries", 0)) + 1
        attempt = 0
        for attempt in range(1, rounds + 1):
            errors = {k: v for k, v in errors.items() if k not in pending}
            pods_error = None
            if "custom_metrics" in pending:
                ready, unready, pods_error = self.triton_pods()
                reports["triton_pods"] = {"ready": ready, "not_ready": unready, "selector": selector_string(getattr(self, "selector", {})),
                                          "deployments": dict(getattr(self, "pools", {}))}
                if pods_error is None and not ready:
                    pods_error = f"no ready Triton pod in {self.ns} ({selector_string(self.selector)}); not ready: {', '.join(unready) or 'none'}"
                idle = [n for n, pool in getattr(self, "pools", {}).items() if not pool["ready"]]
                if pods_error is None and idle:
                    pods_error = "no ready Triton pod in Deployment " + "; ".join(
                        f"{self.ns}/{n} (not ready: {', '.join(self.pools[n]['not_ready']) or 'none'})" for n in idle)
                if pods_error is not None:
                    errors["custom_metrics"] = pods_error
                else:
                    reports["custom_metrics"], err = self.check_custom_metrics(ready)
                    if err:
                        errors["custom_metrics"] = err
            for name, check in (("hpa", self.check_hpa), ("lb_address", self.check_lb_address), ("lb", self.check_lb)):
                if name in pending:
                    try:
                        reports[name], err = check()
                    except VerifyError as exc:
                        reports.setdefault(name, {})
                        err = str(exc)
                    if err:
                        errors[name] = err
            pending = [c for c in checks if c in errors and c not in self.permanent]
            if not pending or attempt == rounds:
                break
            sleep(float(self.p.get("delay", 0)))
        reports["pools"] = self.pool_reports(reports)
        return {"checks": checks, "reports": reports, "errors": errors, "attempts": attempt}

    def pool_reports(self, reports: Mapping[str, Any]) -> Dict[str, Any]:
        """Per Deployment (serving pool): its ready and not-ready pods, those the custom metric misses, and its autoscaler
        (the one named as the Deployment, as role autoscaling names them)."""
        metric_pods = (reports.get("custom_metrics") or {}).get("pods") or {}
        hpas = (reports.get("hpa") or {}).get("all") or {}
        out: Dict[str, Any] = {}
        for name in self.deployments():
            pods = (getattr(self, "pools", {}) or {}).get(name) or {}
            entry: Dict[str, Any] = {"ready": pods.get("ready", []), "not_ready": pods.get("not_ready", [])}
            if "custom_metrics" in reports:
                entry["metric_missing"] = [p for p in entry["ready"] if p not in metric_pods]
            hpa = hpas.get(name) or {}
            keys = ("name", "current_quantity", "current_replicas", "desired_replicas", "min_replicas", "max_replicas", "scaling_active",
                    "scaling_limited")
            if hpa:
                entry["hpa"] = {k: hpa.get(k) for k in keys}
            out[name] = entry
        return out


LABELS = {"custom_metrics": "custom metrics", "hpa": "HPA", "lb_address": "load balancer address", "lb": "load balancer"}


def failure_message(errors: Mapping[str, str], attempts: int) -> str:
    lines = [f"{LABELS[k]}: {v}" for k, v in errors.items()]
    return f"serving stack verification failed after {attempts} attempt(s):\n" + "\n".join(lines)


def build_url(base: str, path: str, query: Optional[Mapping[str, str]]) -> str:
    return base.rstrip("/") + path + (("?" + urlencode(dict(query))) if query else "")


# --- the transports the module uses ----------------------------------------------------------------------------


class KubeTransport(Transport):
    """Requests to the API server through a ``kubernetes`` client ``ApiClient`` (see ``_kube_client``: the client builds
    the URL and adds its credentials, a bearer token refreshed by its exec or OIDC plugin included); a ``base`` URL (the
    load balancer's own address) is asked directly, with ``open_url`` and without the API server's credentials."""

    def __init__(self, api_client: Any, timeout: float, direct: Callable[..., Any], ca_path: Optional[str] = None) -> None:
        self.client = api_client
        self.timeout = timeout
        self.direct = direct
        self.ca_path = ca_path

    def request(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None,
                base: Optional[str] = None) -> Response:
        if base:
            return self._direct(method, build_url(base, path, query), body)
        try:
            status, data, content_type = api_request(self.client, method, path, query, body, self.timeout)
        except KubeRequestError as exc:
            raise VerifyError(str(exc)) from None
        return Response(status, data, content_type)

    def _direct(self, method: str, url: str, body: Any) -> Response:
        payload = json.dumps(body).encode() if body is not None else None
        try:
            extra = {"ca_path": self.ca_path} if self.ca_path else {}
            resp = self.direct(url, method=method, data=payload, headers={"Content-Type": "application/json", "Accept": "application/json"},
                               timeout=self.timeout, follow_redirects="none", **extra)
            return Response(int(resp.getcode()), resp.read())
        except Exception as exc:
            status = getattr(exc, "code", None)
            if isinstance(status, int):  # an HTTP error status: its body is the answer
                reader = getattr(exc, "read", None)
                return Response(status, reader() if callable(reader) else b"")
            raise VerifyError(f"{method} {url}: no answer: {getattr(exc, 'reason', exc)}") from None
