# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Kubernetes HPA controller's algorithm for an autoscaling/v2 HPA with one Pods metric and an AverageValue target.

It follows kube-controller-manager's HPA controller as upstream implements it, function by function
(kubernetes/kubernetes pkg/controller/podautoscaler, read for this module):

- replica_calculator.go ``GetMetricReplicas`` -> ``calcPlainMetricReplicas`` (with ``groupPods`` and
  ``metrics.GetMetricUsageRatio``): the usage ratio and the tolerance, missing and unready pods;
- horizontal.go ``reconcileAutoscaler``: min/max handling, ``recordInitialRecommendation``, then
  ``normalizeDesiredReplicasWithBehaviors`` (``stabilizeRecommendationWithBehaviors``,
  ``convertDesiredReplicasWithBehaviorRate``, ``calculateScaleUpLimitWithScalingRules``,
  ``calculateScaleDownLimitWithBehaviors``, ``getReplicasChangePerPeriod``) when the HPA has a ``behavior``, else the
  older ``normalizeDesiredReplicas`` (``stabilizeRecommendation``, ``convertDesiredReplicasWithRules``,
  ``calculateScaleUpLimit``); ``storeScaleEvent`` / ``markScaleEventsOutdated`` after a rescale;
- pkg/apis/autoscaling/v2/defaults.go ``SetDefaults_HorizontalPodAutoscaler`` / ``GenerateHPAScaleUpRules`` /
  ``GenerateHPAScaleDownRules``: how the API server fills a partly given ``behavior`` (an HPA without ``behavior``
  keeps none, and then the controller takes the older path above);
- the docs page "Horizontal Pod Autoscaling" (kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/):
  "Algorithm details", "Configurable scaling behavior", "Default Behavior".

It is pure: time is passed in (``now``, seconds on any monotonic clock), nothing runs in the background. The
controller reconciles each HPA once per sync period (``--horizontal-pod-autoscaler-sync-period``, SYNC_PERIOD_S:
processNextWorkItem re-queues the HPA rate-limited by the resync period after each reconcile); that loop is the
caller's: call ``reconcile`` every SYNC_PERIOD_S seconds.

What it leaves out: other metric types and several metrics (the maximum of their proposals), the CPU-specific
readiness rules of groupPods (``--horizontal-pod-autoscaler-cpu-initialization-period``), status conditions and
events as API objects (the reason string carries the condition reasons), scale-to-zero.

Test equipment only: nothing here ships in a role.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Mapping, Optional, Tuple

# --horizontal-pod-autoscaler-sync-period (kube-controller-manager; pkg/controller/podautoscaler/config/v1alpha1
# defaults.go): the caller's loop reconciles every this many seconds
SYNC_PERIOD_S = 15.0
# --horizontal-pod-autoscaler-tolerance (same defaults.go): the usage ratio must leave [0.9, 1.1] for a change
DEFAULT_TOLERANCE = 0.1
# --horizontal-pod-autoscaler-downscale-stabilization: the scale-down window when the HPA does not set one
DOWNSCALE_STABILIZATION_S = 300.0

# horizontal.go: scaleUpLimitFactor, scaleUpLimitMinimum (the older path, for an HPA without behavior)
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0

POLICY_TYPES = ("Pods", "Percent")
SELECT_POLICIES = ("Max", "Min", "Disabled")
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)


# --- quantities --------------------------------------------------------------------------------------------

_SUFFIX = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
           "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def parse_quantity(value: Any, what: str) -> float:
    """A resource.Quantity (``"50000"``, ``"250m"``, ``"1.5k"``, or a number) as a float; ValueError naming ``what``."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a quantity, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"{what}: {value!r} is not a Kubernetes quantity")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def milli_value(value: float) -> int:
    """Quantity.MilliValue(): the value in thousandths, rounded up (ScaledValue rounds towards +infinity). The custom
    metrics client hands the controller every pod's value this way (metrics/rest_metrics_client.go GetRawMetric:
    ``m.Value.MilliValue()``), and computeStatusForPodsMetric the target (``AverageValue.MilliValue()``)."""
    return math.ceil(round(value * 1000.0, 6))  # round(): 0.1 * 1000 is 100.00000000000001 in binary floats


# --- the HPA object ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    type: str  # Pods | Percent
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """autoscaling/v2 HPAScalingRules with the API server's defaults filled in."""

    stabilization_window_seconds: float
    select_policy: str
    policies: Tuple[Policy, ...]
    tolerance: Optional[float] = None  # behavior.scale{Up,Down}.tolerance (KEP-4951, HPAConfigurableTolerance)

    def longest_period(self) -> int:
        """horizontal.go getLongestPolicyPeriod."""
        return max((p.period_seconds for p in self.policies), default=0)


# pkg/apis/autoscaling/v2/defaults.go defaultHPAScaleUpRules / defaultHPAScaleDownRules; the scale-down window is
# nil there and filled by the controller from its flag (horizontal.go maybeInitScaleDownStabilizationWindow)
DEFAULT_SCALE_UP = ScalingRules(0, "Max", (Policy("Pods", 4, 15), Policy("Percent", 100, 15)))
DEFAULT_SCALE_DOWN_POLICIES = (Policy("Percent", 100, 15),)


def _rules(raw: Any, what: str, default: ScalingRules) -> ScalingRules:
    """copyHPAScalingRules: each field given replaces the default's; the API's validation (validateScalingRules in
    pkg/apis/autoscaling/validation) refuses the rest, here as a ValueError naming the field."""
    if raw is None:
        return default
    if not isinstance(raw, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(raw).__name__}")
    window: float = default.stabilization_window_seconds
    if raw.get("stabilizationWindowSeconds") is not None:
        window = _int(raw["stabilizationWindowSeconds"], f"{what}.stabilizationWindowSeconds", 0, 3600)
    select = raw.get("selectPolicy", default.select_policy) or default.select_policy
    if select not in SELECT_POLICIES:
        raise ValueError(f"{what}.selectPolicy: {select!r} is not one of {', '.join(SELECT_POLICIES)}")
    policies = default.policies
    if raw.get("policies") is not None:
        items = raw["policies"]
        if not isinstance(items, list) or not items:
            raise ValueError(f"{what}.policies: must specify at least one policy")
        parsed = []
        for index, item in enumerate(items):
            where = f"{what}.policies[{index}]"
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}: expected a mapping")
            if item.get("type") not in POLICY_TYPES:
                raise ValueError(f"{where}.type: {item.get('type')!r} is not one of {', '.join(POLICY_TYPES)}")
            parsed.append(Policy(str(item["type"]), _int(item.get("value"), f"{where}.value", 1, _INT32_MAX),
                                 _int(item.get("periodSeconds"), f"{where}.periodSeconds", 1, 1800)))
        policies = tuple(parsed)
    tolerance = default.tolerance
    if raw.get("tolerance") is not None:
        tolerance = parse_quantity(raw["tolerance"], f"{what}.tolerance")
        if tolerance < 0:
            raise ValueError(f"{what}.tolerance: must be >= 0, got {tolerance}")
    return ScalingRules(window, str(select), policies, tolerance)


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{what}: expected an integer in [{low}, {high}], got {value!r}")
    return value


@dataclass(frozen=True)
class Decision:
    """One reconcile's outcome. ``desired``: what the controller sets spec.replicas of the target to (status
    .desiredReplicas; the current count when it does not rescale); ``recommendation``: the metric's proposal before
    stabilization and rate limits (the unstabilized recommendation the controller records); ``ratio``: the usage
    ratio of the pods that reported (None without metrics); ``reason``: why, with upstream's condition reasons."""

    desired: int
    recommendation: int
    ratio: Optional[float]
    reason: str
    stabilized: Optional[int] = None  # after the stabilization window, before the rate limits
    current_value: Optional[float] = None  # status.currentMetrics[0].pods.current.averageValue (milli-exact)
    rescale: bool = False


@dataclass
class _ScaleEvent:
    change: int  # positive, the replicas added (scale-up list) or removed (scale-down list)
    timestamp: float
    outdated: bool = False


class HorizontalPodAutoscaler:
    """The controller's state for one HPA: its recommendation history and its scale events (horizontal.go
    HorizontalController.recommendations, scaleUpEvents, scaleDownEvents)."""

    def __init__(self, hpa: Mapping[str, Any], *, tolerance: float = DEFAULT_TOLERANCE,
                 downscale_stabilization_s: float = DOWNSCALE_STABILIZATION_S, sync_period_s: float = SYNC_PERIOD_S) -> None:
        if hpa.get("apiVersion") != "autoscaling/v2" or hpa.get("kind") != "HorizontalPodAutoscaler":
            raise ValueError(f"hpa: expected an autoscaling/v2 HorizontalPodAutoscaler, got {hpa.get('apiVersion')}/{hpa.get('kind')}")
        spec = hpa.get("spec")
        if not isinstance(spec, Mapping):
            raise ValueError("hpa.spec: missing")
        self.name = str((hpa.get("metadata") or {}).get("name", ""))
        self.sync_period_s = float(sync_period_s)
        # SetDefaults_HorizontalPodAutoscaler: minReplicas defaults to 1
        self.min_replicas = _int(spec.get("minReplicas", 1), "hpa.spec.minReplicas", 1, _INT32_MAX)
        self.max_replicas = _int(spec.get("maxReplicas"), "hpa.spec.maxReplicas", 1, _INT32_MAX)
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"hpa.spec.minReplicas {self.min_replicas} is above hpa.spec.maxReplicas {self.max_replicas}")
        metrics = spec.get("metrics")
        if not isinstance(metrics, list) or len(metrics) != 1:
            raise ValueError("hpa.spec.metrics: this model takes exactly one metric")
        metric = metrics[0]
        if metric.get("type") != "Pods" or not isinstance(metric.get("pods"), Mapping):
            raise ValueError(f"hpa.spec.metrics[0].type: this model takes a Pods metric, got {metric.get('type')!r}")
        target = metric["pods"].get("target") or {}
        if target.get("type") != "AverageValue" or target.get("averageValue") is None:
            raise ValueError("hpa.spec.metrics[0].pods.target: this model takes type AverageValue with an averageValue")
        self.metric_name = str((metric["pods"].get("metric") or {}).get("name", ""))
        self.target = parse_quantity(target["averageValue"], "hpa.spec.metrics[0].pods.target.averageValue")
        self.target_milli = milli_value(self.target)
        if self.target_milli <= 0:
            raise ValueError("hpa.spec.metrics[0].pods.target.averageValue: must be positive")
        if tolerance < 0:
            raise ValueError(f"tolerance: must be >= 0, got {tolerance}")
        self.tolerance = float(tolerance)
        behavior = spec.get("behavior")
        self.behavior: Optional[Tuple[ScalingRules, ScalingRules]] = None
        if behavior is not None:
            if not isinstance(behavior, Mapping):
                raise ValueError("hpa.spec.behavior: expected a mapping")
            down_default = ScalingRules(float(downscale_stabilization_s), "Max", DEFAULT_SCALE_DOWN_POLICIES)
            self.behavior = (_rules(behavior.get("scaleUp"), "hpa.spec.behavior.scaleUp", DEFAULT_SCALE_UP),
                             _rules(behavior.get("scaleDown"), "hpa.spec.behavior.scaleDown", down_default))
        self.downscale_stabilization_s = float(downscale_stabilization_s)
        self.recommendations: Optional[List[Tuple[int, float]]] = None  # (recommendation, timestamp)
        self.scale_up_events: List[_ScaleEvent] = []
        self.scale_down_events: List[_ScaleEvent] = []
        self.history: List[Dict[str, Any]] = []  # one entry per reconcile

    # --- tolerances ----------------------------------------------------------------------------------

    def _within(self, ratio: float) -> bool:
        """replica_calculator.go Tolerances.isWithin: (1 - scaleDown) <= ratio <= (1 + scaleUp); each direction's
        tolerance is the behavior's when set (HPAConfigurableTolerance), else the controller's flag."""
        up = down = self.tolerance
        if self.behavior is not None:
            up = self.behavior[0].tolerance if self.behavior[0].tolerance is not None else up
            down = self.behavior[1].tolerance if self.behavior[1].tolerance is not None else down
        return (1.0 - down) <= ratio <= (1.0 + up)

    # --- replica_calculator.go -----------------------------------------------------------------------

    def _usage(self, values: Mapping[str, int]) -> Tuple[float, int]:
        """metrics.GetMetricUsageRatio: the integer average of the pods' milli-values (Go int64 division), over the
        target's milli-value."""
        usage = sum(values.values()) // len(values)
        return usage / self.target_milli, usage

    def metric_replicas(self, current_replicas: int, metrics: Mapping[str, Optional[float]],
                        pending: Collection[str] = ()) -> Tuple[Optional[int], Optional[float], Optional[int], str]:
        """calcPlainMetricReplicas: (replicas, usage ratio, usage in milli, note); replicas None when the controller
        has no metric to act on (it then errors out and does not scale)."""
        # groupPods: Pending pods are unready; a pod without a metric is missing; for a non-CPU metric every other
        # pod counts as ready, whatever its Ready condition
        unready = {pod for pod in metrics if pod in pending}
        missing = {pod for pod, value in metrics.items() if value is None and pod not in unready}
        values: Dict[str, int] = {pod: milli_value(float(v)) for pod, v in metrics.items() if v is not None and pod not in unready}
        if not values:
            return None, None, None, "did not receive metrics for targeted pods (pods might be unready)"
        ready_count = len(values)
        ratio, usage = self._usage(values)
        scale_up_with_unready = bool(unready) and ratio > 1.0
        if not scale_up_with_unready and not missing:
            if self._within(ratio):
                return current_replicas, ratio, usage, "within tolerance"
            return math.ceil(ratio * ready_count), ratio, usage, "ratio x ready pods"
        if missing:
            if ratio < 1.0:  # scale-down: a pod without a metric counts as exactly at the target
                values.update({pod: self.target_milli for pod in missing})
            elif ratio > 1.0:  # scale-up: it counts as 0
                values.update({pod: 0 for pod in missing})
        if scale_up_with_unready:  # scale-up: an unready pod counts as 0
            values.update({pod: 0 for pod in unready})
        new_ratio, _new_usage = self._usage(values)
        if self._within(new_ratio) or (ratio < 1.0 < new_ratio) or (ratio > 1.0 > new_ratio):
            # too small a change, or the filled-in pods reverse the direction
            return current_replicas, ratio, usage, "within tolerance after counting missing/unready pods"
        new_replicas = math.ceil(new_ratio * len(values))
        if (new_ratio < 1.0 and new_replicas > current_replicas) or (new_ratio > 1.0 and new_replicas < current_replicas):
            return current_replicas, ratio, usage, "the pod count would reverse the direction"
        return new_replicas, ratio, usage, "ratio x pods, missing/unready pods counted"

    # --- horizontal.go -------------------------------------------------------------------------------

    def reconcile(self, now: float, current_replicas: int, metrics: Mapping[str, Optional[float]], *,
                  pending: Collection[str] = ()) -> Decision:
        """One reconcileAutoscaler. ``current_replicas``: the target's spec.replicas (what the controller last set,
        not the ready pods); ``metrics``: each pod the target's selector matches that is neither terminating nor
        Failed (groupPods ignores those) -> its value from the custom metrics API, None when the API has none for
        it; ``pending``: those of them still Pending (not yet running)."""
        if self.recommendations is None:  # recordInitialRecommendation
            self.recommendations = [(current_replicas, now)]
        min_replicas = self.min_replicas
        ratio: Optional[float] = None
        current_value: Optional[float] = None
        stabilized: Optional[int] = None
        if current_replicas == 0 and min_replicas != 0:
            decision = Decision(current_replicas, 0, None, "ScalingDisabled: the replica count of the target is zero")
            self._log(now, current_replicas, decision)
            return decision
        if current_replicas > self.max_replicas:
            desired = recommendation = self.max_replicas
            reason = "Current number of replicas above Spec.MaxReplicas"
        elif current_replicas < min_replicas:
            desired = recommendation = min_replicas
            reason = "Current number of replicas below Spec.MinReplicas"
        else:
            proposal, ratio, usage, note = self.metric_replicas(current_replicas, metrics, pending)
            if usage is not None:
                current_value = usage / 1000.0
            if proposal is None:
                # computeReplicasForMetrics failed for every metric: FailedComputeMetricsReplicas, no scale, nothing recorded
                decision = Decision(current_replicas, current_replicas, None, f"FailedGetPodsMetric: {note}")
                self._log(now, current_replicas, decision)
                return decision
            recommendation = max(proposal, 0)  # desiredReplicas starts at 0 and takes the larger proposal
            if self.behavior is None:
                stabilized, desired, reasons = self._normalize(now, current_replicas, recommendation, min_replicas)
            else:
                stabilized, desired, reasons = self._normalize_with_behaviors(now, current_replicas, recommendation, min_replicas)
            reason = "; ".join([note, *reasons])
        rescale = desired != current_replicas
        if rescale:
            self._store_scale_event(now, current_replicas, desired)
        else:
            desired = current_replicas
        decision = Decision(desired, recommendation, ratio, reason, stabilized, current_value, rescale)
        self._log(now, current_replicas, decision)
        return decision

    def _log(self, now: float, current: int, decision: Decision) -> None:
        self.history.append({"t": now, "current": current, "desired": decision.desired, "recommendation": decision.recommendation,
                             "ratio": decision.ratio, "reason": decision.reason})

    # the older path, for an HPA without behavior

    def _normalize(self, now: float, current: int, prenormalized: int, min_replicas: int) -> Tuple[int, int, List[str]]:
        """normalizeDesiredReplicas: stabilizeRecommendation (scale-down window only), then
        convertDesiredReplicasWithRules (at most max(2 x current, 4) per reconcile, then [min, max])."""
        assert self.recommendations is not None
        cutoff = now - self.downscale_stabilization_s
        highest = prenormalized
        old_index: Optional[int] = None
        for index, (value, stamp) in enumerate(self.recommendations):
            if stamp < cutoff:
                old_index = index
            elif value > highest:
                highest = value
        self._record(old_index, prenormalized, now)
        reasons = ["ScaleDownStabilized"] if highest != prenormalized else []
        scale_up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
        if self.max_replicas > scale_up_limit:
            maximum, limit_reason = scale_up_limit, "ScaleUpLimit"
        else:
            maximum, limit_reason = self.max_replicas, "TooManyReplicas"
        if highest < min_replicas:
            return highest, min_replicas, [*reasons, "TooFewReplicas"]
        if highest > maximum:
            return highest, maximum, [*reasons, limit_reason]
        return highest, highest, [*reasons, "DesiredWithinRange"]

    def _record(self, old_index: Optional[int], recommendation: int, now: float) -> None:
        """Record the unstabilized recommendation, in place of the last sample found outside the window(s)."""
        assert self.recommendations is not None
        if old_index is not None:
            self.recommendations[old_index] = (recommendation, now)
        else:
            self.recommendations.append((recommendation, now))

    # the path for an HPA with behavior

    def _normalize_with_behaviors(self, now: float, current: int, prenormalized: int, min_replicas: int) -> Tuple[int, int, List[str]]:
        """normalizeDesiredReplicasWithBehaviors: stabilizeRecommendationWithBehaviors, then
        convertDesiredReplicasWithBehaviorRate."""
        assert self.behavior is not None
        assert self.recommendations is not None
        up_rules, down_rules = self.behavior
        up_cutoff = now - up_rules.stabilization_window_seconds
        down_cutoff = now - down_rules.stabilization_window_seconds
        up_recommendation = down_recommendation = prenormalized
        old_index: Optional[int] = None
        for index, (value, stamp) in enumerate(self.recommendations):
            if stamp > up_cutoff:
                up_recommendation = min(value, up_recommendation)
            if stamp > down_cutoff:
                down_recommendation = max(value, down_recommendation)
            if stamp < up_cutoff and stamp < down_cutoff:
                old_index = index
        stabilized = max(current, up_recommendation)
        stabilized = min(stabilized, down_recommendation)
        self._record(old_index, prenormalized, now)
        reasons: List[str] = []
        if stabilized != prenormalized:
            reasons.append("ScaleUpStabilized" if prenormalized >= current else "ScaleDownStabilized")
        desired, limit_reason = self._rate(now, current, stabilized, min_replicas)
        reasons.append(limit_reason)
        return stabilized, desired, reasons

    def _rate(self, now: float, current: int, desired: int, min_replicas: int) -> Tuple[int, str]:
        """convertDesiredReplicasWithBehaviorRate."""
        assert self.behavior is not None
        up_rules, down_rules = self.behavior
        if desired > current:
            limit = self.scale_up_limit(now, current, up_rules)
            limit = max(limit, current)  # no further scale-up until the events leave their periods
            if self.max_replicas > limit:
                maximum, reason = limit, f"ScaleUpLimit ({self._policy_note(now, current, up_rules, up=True)})"
            else:
                maximum, reason = self.max_replicas, "TooManyReplicas"
            if desired > maximum:
                return maximum, reason
        elif desired < current:
            limit = self.scale_down_limit(now, current, down_rules)
            limit = min(limit, current)
            if min_replicas < limit:
                minimum, reason = limit, f"ScaleDownLimit ({self._policy_note(now, current, down_rules, up=False)})"
            else:
                minimum, reason = min_replicas, "TooFewReplicas"
            if desired < minimum:
                return minimum, reason
        return desired, "DesiredWithinRange"

    def _change_in_period(self, now: float, period_seconds: int, events: List[_ScaleEvent]) -> int:
        """getReplicasChangePerPeriod: the changes recorded after now - period."""
        cutoff = now - period_seconds
        return sum(event.change for event in events if event.timestamp > cutoff)

    def _proposals(self, now: float, current: int, rules: ScalingRules, *, up: bool) -> List[Tuple[Policy, int]]:
        out = []
        for policy in rules.policies:
            added = self._change_in_period(now, policy.period_seconds, self.scale_up_events)
            deleted = self._change_in_period(now, policy.period_seconds, self.scale_down_events)
            period_start = current - added + deleted
            if up and policy.type == "Pods":
                proposed = period_start + policy.value
            elif up:  # Percent, rounded up, or a small count could never grow
                proposed = math.ceil(period_start * (1 + policy.value / 100))
            elif policy.type == "Pods":
                proposed = period_start - policy.value
            else:  # Percent; Go's int32() conversion truncates
                proposed = int(period_start * (1 - policy.value / 100))
            out.append((policy, proposed))
        return out

    def scale_up_limit(self, now: float, current: int, rules: ScalingRules) -> int:
        """calculateScaleUpLimitWithScalingRules: the most replicas the policies allow now; Max takes the largest
        proposal, Min the smallest, Disabled allows none."""
        if rules.select_policy == "Disabled":
            return current
        proposals = [p for _policy, p in self._proposals(now, current, rules, up=True)]
        if rules.select_policy == "Min":
            return min(proposals, default=_INT32_MAX)
        return max(proposals, default=_INT32_MIN)

    def scale_down_limit(self, now: float, current: int, rules: ScalingRules) -> int:
        """calculateScaleDownLimitWithBehaviors: the fewest replicas the policies allow now; Max (the largest change)
        takes the smallest proposal, Min the largest, Disabled allows none."""
        if rules.select_policy == "Disabled":
            return current
        proposals = [p for _policy, p in self._proposals(now, current, rules, up=False)]
        if rules.select_policy == "Min":
            return max(proposals, default=_INT32_MIN)
        return min(proposals, default=_INT32_MAX)

    def _policy_note(self, now: float, current: int, rules: ScalingRules, *, up: bool) -> str:
        if rules.select_policy == "Disabled":
            return "selectPolicy Disabled"
        proposals = self._proposals(now, current, rules, up=up)
        limit = self.scale_up_limit(now, current, rules) if up else self.scale_down_limit(now, current, rules)
        names = [f"{p.type} {p.value}/{p.period_seconds}s" for p, proposed in proposals if proposed == limit]
        return f"{' and '.join(names)} policy, selectPolicy {rules.select_policy}"

    def _store_scale_event(self, now: float, previous: int, new: int) -> None:
        """storeScaleEvent: only with behavior; an event older than the direction's longest policy period is marked
        outdated (markScaleEventsOutdated) and the last outdated one is reused."""
        if self.behavior is None:
            return
        up = new > previous
        rules = self.behavior[0] if up else self.behavior[1]
        events = self.scale_up_events if up else self.scale_down_events
        cutoff = now - rules.longest_period()
        for event in events:
            if event.timestamp < cutoff:
                event.outdated = True
        reuse: Optional[int] = None
        for index, event in enumerate(events):
            if event.outdated:
                reuse = index
        fresh = _ScaleEvent(abs(new - previous), now)
        if reuse is not None:
            events[reuse] = fresh
        else:
            events.append(fresh)
