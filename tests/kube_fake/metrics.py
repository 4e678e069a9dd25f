# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The custom metrics side of kube_fake: prometheus-adapter's query expansion and answers, and the HPA controller.

``adapter_query`` is THE copy of the adapter's metricsQuery expansion the tests use (tests/integration/
test_serving_stack.py imports it). ``MetricsAdapter`` answers ``custom.metrics.k8s.io`` from a REAL Prometheus with
the rendered ``rules.custom`` of the prometheus-adapter values, as the adapter does; ``hpa_status`` is the HPA
controller's status for an ``autoscaling/v2`` HPA with Pods metrics.
"""
from __future__ import annotations

import datetime
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

Obj = Dict[str, Any]
HPA_TOLERANCE = 0.1  # --horizontal-pod-autoscaler-tolerance


class MetricError(Exception):
    """The adapter could not answer: ``code`` and ``reason`` as its Status says."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def adapter_query(custom_rule: Mapping[str, Any], namespace: str, pods: Sequence[str]) -> str:
    """The PromQL prometheus-adapter sends for a custom metric of ``pods`` in ``namespace`` (no metric selector).

    As prometheus-adapter's pkg/naming/metrics_query.go Build(): LabelMatchers joins the namespace matcher
    (LabelEq, %s=%q) and the resource matcher (LabelEq for one pod, LabelMatches with names joined by "|" for
    several) with ","; GroupBy is the resource label ("pod"); Series is the series the seriesQuery found.
    """
    name = rule_series(custom_rule)
    overrides = custom_rule["resources"]["overrides"]
    ns_label = next(label for label, res in overrides.items() if res["resource"] == "namespace")
    pod_label = next(label for label, res in overrides.items() if res["resource"] == "pod")
    if not pods:
        raise ValueError("no pods to query")
    matchers = [f"{ns_label}={json.dumps(namespace)}"]
    matchers.append(f"{pod_label}={json.dumps(pods[0])}" if len(pods) == 1 else f"{pod_label}=~{json.dumps('|'.join(pods))}")
    template: str = custom_rule["metricsQuery"]
    query = template.replace("<<.Series>>", name).replace("<<.LabelMatchers>>", ",".join(matchers)).replace("<<.GroupBy>>", pod_label)
    if "<<" in query:
        raise ValueError(f"metricsQuery uses template fields this expansion does not know: {template}")
    return query


def rule_series(custom_rule: Mapping[str, Any]) -> str:
    """The series a rule's seriesQuery selects by __name__ (our rules select exactly one)."""
    series = re.search(r'__name__="([^"]+)"', custom_rule["seriesQuery"])
    if series is None:
        raise ValueError(f"seriesQuery selects no __name__: {custom_rule['seriesQuery']}")
    name = series.group(1)
    if not re.search(custom_rule["name"]["matches"], name):
        raise ValueError(f"name.matches {custom_rule['name']['matches']!r} does not match the series {name}")
    return name


def rule_metric(custom_rule: Mapping[str, Any]) -> str:
    """The metric name the adapter publishes for the rule (name.matches replaced by name.as, Go regexp syntax $1 -> \\1)."""
    series = rule_series(custom_rule)
    as_ = str(custom_rule["name"].get("as") or "")
    if not as_:
        return series
    return re.sub(custom_rule["name"]["matches"], re.sub(r"\$\{?(\d+)\}?", r"\\\1", as_), series)


def format_quantity(value: float) -> str:
    """resource.NewMilliQuantity(int64(value*1000), DecimalSI).String(), as the adapter and the HPA controller write values."""
    millis = int(value * 1000)
    if millis == 0:
        return "0"
    if millis % 1000:
        return f"{millis}m"
    number, suffixes = millis // 1000, ["", "k", "M", "G", "T", "P", "E"]
    index = 0
    while number % 1000 == 0 and index < len(suffixes) - 1:
        number //= 1000
        index += 1
    return f"{number}{suffixes[index]}"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class MetricsAdapter:
    """prometheus-adapter in front of a real Prometheus: ``rules`` are the chart values' ``rules.custom``.

    ``down`` makes it unreachable (the aggregator then answers 503 and the APIService is not Available)."""

    def __init__(self, prometheus_url: str, rules: Sequence[Mapping[str, Any]], service: Tuple[str, str] = ("monitoring", "prometheus-adapter")) -> None:
        self.prometheus_url = prometheus_url.rstrip("/")
        self.rules = [dict(r) for r in rules]
        self.service = service
        self.down = False

    def _prometheus(self, path: str, params: Mapping[str, str]) -> Any:
        url = f"{self.prometheus_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read().decode())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricError(500, "InternalError", f"unable to fetch metrics from Prometheus: {exc}") from None
        if body.get("status") != "success":
            raise MetricError(500, "InternalError", f"unable to fetch metrics: {body.get('error')}")
        return body["data"]

    def published(self) -> Dict[str, Mapping[str, Any]]:
        """Metric name -> rule, for the rules whose seriesQuery finds series (what the adapter's relist publishes)."""
        out: Dict[str, Mapping[str, Any]] = {}
        for rule in self.rules:
            if self._prometheus("/api/v1/series", {"match[]": rule["seriesQuery"]}):
                out[rule_metric(rule)] = rule
        return out

    def resource_list(self, version: str) -> Obj:
        """The APIResourceList the adapter serves at /apis/custom.metrics.k8s.io/<version>."""
        resources = []
        for metric in sorted(self.published()):
            resources.append({"name": f"pods/{metric}", "singularName": "", "namespaced": True, "kind": "MetricValueList", "verbs": ["get"]})
            resources.append({"name": f"namespaces/{metric}", "singularName": "", "namespaced": False, "kind": "MetricValueList", "verbs": ["get"]})
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"custom.metrics.k8s.io/{version}", "resources": resources}

    def values(self, namespace: str, pods: Sequence[str], metric: str) -> Dict[str, float]:
        """{pod: value} for those of ``pods`` Prometheus has a value for; MetricError 404 for an unknown metric."""
        rule = self.published().get(metric)
        if rule is None:
            raise MetricError(404, "NotFound", f"the server could not find the metric {metric} for pods")
        if not pods:
            return {}
        data = self._prometheus("/api/v1/query", {"query": adapter_query(rule, namespace, pods)})
        pod_label = next(label for label, res in rule["resources"]["overrides"].items() if res["resource"] == "pod")
        return {item["metric"][pod_label]: float(item["value"][1]) for item in data.get("result", []) if item["metric"].get(pod_label) in pods}

    def metric_value_list(self, version: str, namespace: str, pods: Sequence[str], metric: str, single: Optional[str] = None) -> Obj:
        """The MetricValueList the adapter answers for pods/*/<metric> (or pods/<single>/<metric>), in v1beta1 or v1beta2 form."""
        values = self.values(namespace, pods, metric)
        if not values:
            suffix = f" {single}" if single else ""
            raise MetricError(404, "NotFound", f"the server could not find the metric {metric} for pods{suffix}")
        items = []
        for pod in sorted(values):
            item: Obj = {"describedObject": {"kind": "Pod", "namespace": namespace, "name": pod, "apiVersion": "/v1"}}
            if version == "v1beta1":
                item.update({"metricName": metric, "timestamp": _now(), "value": format_quantity(values[pod]), "selector": None})
            else:
                item.update({"metric": {"name": metric, "selector": None}, "timestamp": _now(), "value": format_quantity(values[pod])})
            items.append(item)
        return {"kind": "MetricValueList", "apiVersion": f"custom.metrics.k8s.io/{version}", "metadata": {}, "items": items}


def _condition(kind: str, status: bool, reason: str, message: str, previous: Mapping[str, Obj]) -> Obj:
    old = previous.get(kind) or {}
    flag = "True" if status else "False"
    stamp = old.get("lastTransitionTime") if old.get("status") == flag else None
    return {"type": kind, "status": flag, "lastTransitionTime": stamp or _now(), "reason": reason, "message": message}


def hpa_status(hpa: Obj, pods: Sequence[str], values: Callable[[str], Dict[str, float]]) -> Obj:
    """The status the HPA controller writes for an autoscaling/v2 HPA whose metrics are Pods metrics with AverageValue targets.

    ``pods``: the ready pods of the scale target; ``values(metric)`` gives {pod: value} or raises MetricError. As
    pkg/controller/podautoscaler: per metric, ratio = average / target; within the tolerance (0.1) the count stays,
    else ceil(ratio x pods with a value); the largest proposal wins; then clamped to [minReplicas, maxReplicas] with
    the ScalingLimited condition. A metric that cannot be read leaves an empty status entry ({"type": ""}) and sets
    ScalingActive False (FailedGetPodsMetric)."""
    spec = hpa.get("spec") or {}
    previous = {c["type"]: c for c in (hpa.get("status") or {}).get("conditions") or []}
    current = len(pods)
    minimum, maximum = int(spec.get("minReplicas", 1)), int(spec["maxReplicas"])
    statuses: List[Obj] = []
    proposals: List[int] = []
    failure: Optional[Tuple[str, str]] = None
    for metric_spec in spec.get("metrics") or []:
        if metric_spec.get("type") != "Pods":
            statuses.append({"type": ""})
            failure = failure or ("InvalidMetricSourceType",
                                  f"the HPA was unable to compute the replica count: unsupported metric type {metric_spec.get('type')}")
            continue
        name = metric_spec["pods"]["metric"]["name"]
        target = metric_spec["pods"]["target"]
        try:
            got = values(name)
            if not got:
                raise MetricError(404, "NotFound", f"the server could not find the metric {name} for pods")
        except MetricError as exc:
            statuses.append({"type": ""})
            failure = failure or ("FailedGetPodsMetric", f"the HPA was unable to compute the replica count: unable to get metric {name}: "
                                                         f"unable to fetch metrics from custom metrics API: {exc.message}")
            continue
        average = sum(got.values()) / len(got)
        ratio = average / _quantity(str(target["averageValue"]))
        proposals.append(current if abs(1.0 - ratio) <= HPA_TOLERANCE else math.ceil(ratio * len(got)))
        statuses.append({"type": "Pods", "pods": {"metric": {"name": name}, "current": {"averageValue": format_quantity(average)}}})
    too_many, too_few = "the desired replica count is more than the maximum replica count", "the desired replica count is less than the minimum replica count"
    conditions = [_condition("AbleToScale", True, "SucceededGetScale", "the HPA controller was able to get the target's current scale", previous)]
    status: Obj = {"currentReplicas": current}
    if failure is not None and not proposals:
        conditions.append(_condition("ScalingActive", False, failure[0], failure[1], previous))
        status["desiredReplicas"] = current
    else:
        desired = max(proposals) if proposals else current
        conditions.append(_condition("ScalingActive", True, "ValidMetricFound",
                                     "the HPA was able to successfully calculate a replica count from pods metric "
                                     + str(next((s["pods"]["metric"]["name"] for s in statuses if s.get("type") == "Pods"), "")), previous))
        if desired > maximum:
            conditions.append(_condition("ScalingLimited", True, "TooManyReplicas", too_many, previous))
        elif desired < minimum:
            conditions.append(_condition("ScalingLimited", True, "TooFewReplicas", too_few, previous))
        else:
            conditions.append(_condition("ScalingLimited", False, "DesiredWithinRange", "the desired count is within the acceptable range", previous))
        status["desiredReplicas"] = max(minimum, min(desired, maximum))
    status["currentMetrics"] = statuses
    status["conditions"] = conditions
    return status


def _quantity(text: str) -> float:
    match = re.match(r"^([0-9.]+)([munkMGTPE]?)$", text)
    if not match:
        raise ValueError(f"quantity {text!r} not supported here")
    scale = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}[match.group(2)]
    return float(match.group(1)) * scale
