# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/autoscale/hpa.py against the HPA controller's documented and implemented behaviour.

Every expectation is worked out by hand from upstream (kubernetes/kubernetes pkg/controller/podautoscaler
replica_calculator.go calcPlainMetricReplicas, horizontal.go normalizeDesiredReplicasWithBehaviors and the functions it
calls, pkg/apis/autoscaling/v2/defaults.go) and the docs page "Horizontal Pod Autoscaling"
(kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/): the comment on each case says which rule it
checks, and what a model missing that rule would answer instead.
"""
from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import jinja2
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.autoscale.hpa import SYNC_PERIOD_S, HorizontalPodAutoscaler
else:
    from autoscale.hpa import SYNC_PERIOD_S, HorizontalPodAutoscaler

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "autoscaling"
TARGET = 50_000.0  # the role's default autoscaling_target_queue_time_us
MAX = 10


def render_role_hpa(max_replicas: int = MAX, **overrides: Any) -> Dict[str, Any]:
    """roles/autoscaling/templates/hpa.yaml.j2 with the role's defaults (defaults/main.yml, their own templates
    resolved the way Ansible does: gpu_ops_* unset, so each ``default()`` applies) and one serving pool (gpu_ops_pools as
    the serving_pools filter gives it: its max_replicas, by default the profile's MIG capacity, set to ``max_replicas``)."""
    env = jinja2.Environment(undefined=jinja2.Undefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    env.filters["regex_replace"] = lambda value, pattern, repl: re.sub(pattern, repl, str(value))
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    values: Dict[str, Any] = {**defaults, **overrides}
    for _round in range(5):  # role defaults referring to other variables
        values = {k: (env.from_string(v).render(values) if isinstance(v, str) and "{{" in v else v) for k, v in values.items()}
    values["gpu_ops_pools"] = [{"name": "triton-1g-5gb", "headless": "triton-1g-5gb-headless", "profile": "1g.5gb",
                                "resource": "nvidia.com/mig-1g.5gb", "slices": 1, "weight": 1, "capacity": max_replicas,
                                "max_replicas": max_replicas, "min_replicas": None, "replicas": None, "target_queue_time_us": None,
                                "resources": None}]
    text = env.from_string((ROLE / "templates" / "hpa.yaml.j2").read_text()).render(values)
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert len(docs) == 1, docs
    return dict(docs[0])


def with_behavior(behavior: Optional[Mapping[str, Any]], **spec: Any) -> Dict[str, Any]:
    hpa = copy.deepcopy(render_role_hpa())
    if behavior is None:
        hpa["spec"].pop("behavior")
    else:
        hpa["spec"]["behavior"] = behavior
    hpa["spec"].update(spec)
    return hpa


def pods(*values: Optional[float]) -> Dict[str, Optional[float]]:
    return {f"triton-7c9d8b6f5-p{index}": value for index, value in enumerate(values)}


def at(ratio: float, count: int) -> Dict[str, Optional[float]]:
    return pods(*([ratio * TARGET] * count))


# --- the rendered HPA --------------------------------------------------------------------------------------


def test_rendered_role_hpa_is_read_as_the_controller_reads_it() -> None:
    controller = HorizontalPodAutoscaler(render_role_hpa(7))
    assert (controller.min_replicas, controller.max_replicas) == (1, 7)
    assert controller.metric_name == "avg_time_queue_us"
    assert controller.target == TARGET
    assert controller.target_milli == 50_000_000
    assert controller.behavior is not None
    up, down = controller.behavior
    assert (up.stabilization_window_seconds, up.select_policy) == (0, "Max")
    assert [(p.type, p.value, p.period_seconds) for p in up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert (down.stabilization_window_seconds, down.select_policy) == (300, "Max")
    assert [(p.type, p.value, p.period_seconds) for p in down.policies] == [("Pods", 1, 60)]
    assert SYNC_PERIOD_S == 15.0
    assert controller.sync_period_s == 15.0


# --- the ratio and the tolerance (calcPlainMetricReplicas, Tolerances.isWithin) -----------------------------


def test_one_pod_at_twice_the_target_becomes_two() -> None:
    # docs, Algorithm details: current 200m against a desired 100m doubles the replicas
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 1, at(2.0, 1))
    assert (decision.desired, decision.recommendation, decision.ratio) == (2, 2, 2.0)
    assert decision.current_value == 2 * TARGET


@pytest.mark.parametrize(("ratio", "expected"), [(1.08, 2), (1.1, 2), (1.12, 3), (0.95, 2)])
def test_the_tolerance_keeps_the_count_within_ten_percent(ratio: float, expected: int) -> None:
    # isWithin: 0.9 <= ratio <= 1.1 keeps the current count; 1.12 x 2 pods -> ceil(2.24) = 3 (a model without the
    # tolerance would give ceil(2.16) = 3 at 1.08 too)
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 2, at(ratio, 2))
    assert decision.desired == expected, decision


def test_the_average_is_the_integer_average_of_milli_values() -> None:
    # GetMetricUsageRatio: sum of MilliValue() // pods; a value of 0.0004 rounds up to 1m per pod
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 3, pods(0.0004, 0.0004, 0.0))
    assert decision.current_value == pytest.approx(0.0)  # (1 + 1 + 0) // 3 = 0 milli
    assert decision.recommendation == 0


def test_the_tolerance_keyword_is_the_controller_flag() -> None:
    decision = HorizontalPodAutoscaler(render_role_hpa(), tolerance=0.05).reconcile(0.0, 2, at(1.08, 2))
    assert decision.desired == 3  # ceil(2.16)


def test_a_per_direction_tolerance_from_behavior_overrides_the_flag() -> None:
    hpa = render_role_hpa()
    hpa["spec"]["behavior"]["scaleUp"]["tolerance"] = "0.02"  # KEP-4951 (HPAConfigurableTolerance)
    decision = HorizontalPodAutoscaler(hpa).reconcile(0.0, 2, at(1.05, 2))
    assert decision.desired == 3


# --- missing and unready pods --------------------------------------------------------------------------------


def test_missing_pods_count_as_zero_on_scale_up_which_can_cancel_it() -> None:
    # one pod at 112 %, two without metrics: ratio 1.12 > 1, the missing ones count as 0 -> 0.373, the direction
    # reverses, so the count stays 3 (ignoring them would give ceil(1.12 x 1) = 2)
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 3, pods(1.12 * TARGET, None, None))
    assert decision.desired == 3
    assert decision.recommendation == 3


def test_missing_pods_count_as_zero_on_scale_up() -> None:
    # 3x on one pod, one missing: (3 + 0) / 2 = 1.5 -> ceil(1.5 x 2) = 3
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 2, pods(3 * TARGET, None))
    assert decision.desired == 3
    # 2.1x on one pod, one missing: (2.1 + 0) / 2 = 1.05 is within the tolerance: 2 stay (ignoring the missing pod
    # would give ceil(2.1 x 1) = 3)
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 2, pods(2.1 * TARGET, None))
    assert decision.desired == 2
    assert decision.ratio == pytest.approx(2.1)


def test_missing_pods_count_as_the_target_on_scale_down() -> None:
    # two pods at 20 %, two missing: (0.2 + 0.2 + 1 + 1) / 4 = 0.6 -> ceil(0.6 x 4) = 3, not ceil(0.2 x 2) = 1
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 4, pods(0.2 * TARGET, 0.2 * TARGET, None, None))
    assert decision.recommendation == 3
    assert decision.desired == 4  # and the 300 s scale-down window holds it (below)


def test_pending_pods_count_as_zero_on_scale_up() -> None:
    # groupPods: a Pending pod is unready; on a scale-up it counts as 0: (2.1 + 0) / 2 = 1.05, within the tolerance
    # (leaving it out would give ceil(2.1 x 1) = 3)
    metrics = pods(2.1 * TARGET, None)
    decision = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 2, metrics, pending=[next(reversed(list(metrics)))])
    assert decision.desired == 2
    assert HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 1, pods(2 * TARGET)).desired == 2


def test_no_metrics_at_all_means_no_scaling() -> None:
    controller = HorizontalPodAutoscaler(render_role_hpa())
    decision = controller.reconcile(0.0, 2, pods(None, None))
    assert (decision.desired, decision.ratio, decision.rescale) == (2, None, False)
    assert "FailedGetPodsMetric" in decision.reason
    assert controller.recommendations == [(2, 0.0)]  # only recordInitialRecommendation's


# --- stabilization windows (stabilizeRecommendationWithBehaviors) --------------------------------------------


def test_scale_down_is_held_by_the_300_s_window_then_one_pod_per_60_s() -> None:
    controller = HorizontalPodAutoscaler(render_role_hpa())
    replicas = 4
    assert controller.reconcile(0.0, replicas, at(1.0, 4)).desired == 4
    seen: List[tuple[float, int]] = []
    now = 0.0
    while now < 420.0:
        now += SYNC_PERIOD_S
        decision = controller.reconcile(now, replicas, at(0.0, replicas))
        assert decision.recommendation == 0
        if decision.desired != replicas:
            seen.append((now, decision.desired))
            replicas = decision.desired
    # the recommendation of 4 at t=0 is inside the window while t - 300 < 0; at t=300 the window holds only zeros,
    # and the Pods policy (1 per 60 s) allows one pod; the next at t=360 (the event at 300 is then out of its period)
    assert seen == [(300.0, 3), (360.0, 2), (420.0, 1)]


def test_a_scale_up_window_delays_the_scale_up() -> None:
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 60}}
    controller = HorizontalPodAutoscaler(with_behavior(behavior))
    decisions = {now: controller.reconcile(now, 1, at(2.0, 1)) for now in (0.0, 15.0, 30.0, 45.0, 60.0)}
    # the lowest recommendation of the last 60 s applies: the initial 1 (recorded at t=0) until t=60
    assert [d.desired for d in decisions.values()] == [1, 1, 1, 1, 2]
    assert "ScaleUpStabilized" in decisions[0.0].reason


# --- rate policies (calculateScaleUpLimitWithScalingRules, getReplicasChangePerPeriod) ---------------------


def test_pods_policy_of_four_per_15_s_limits_one_to_ten() -> None:
    controller = HorizontalPodAutoscaler(render_role_hpa())
    first = controller.reconcile(0.0, 1, at(10.0, 1))
    # Max of Pods (1 + 4 = 5) and Percent (ceil(1 x 2) = 2)
    assert (first.recommendation, first.desired) == (10, 5)
    assert first.reason.endswith("ScaleUpLimit (Pods 4/15s policy, selectPolicy Max)")
    # inside the period the +4 still counts: period start 1, limit 5 = current
    assert controller.reconcile(10.0, 5, at(2.0, 5)).desired == 5
    # at t=15 the event is out of the period (After(now - 15) is false): Max(5 + 4, ceil(5 x 2)) = 10
    assert controller.reconcile(15.0, 5, at(2.0, 5)).desired == 10


def test_percent_policy_of_100_doubles_per_period() -> None:
    behavior = {"scaleUp": {"policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    controller = HorizontalPodAutoscaler(with_behavior(behavior))
    replicas, path = 1, [1]
    for step in range(5):
        replicas = controller.reconcile(15.0 * step, replicas, at(20.0, replicas)).desired
        path.append(replicas)
    assert path == [1, 2, 4, 8, 10, 10]  # capped at maxReplicas 10 (TooManyReplicas)


def test_select_policy_min_takes_the_smaller_change() -> None:
    behavior = {"scaleUp": {"selectPolicy": "Min", "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    assert HorizontalPodAutoscaler(with_behavior(behavior)).reconcile(0.0, 1, at(10.0, 1)).desired == 2  # min(5, 2)
    hpa = with_behavior(behavior, maxReplicas=100)
    assert HorizontalPodAutoscaler(hpa).reconcile(0.0, 10, at(10.0, 10)).desired == 14  # min(14, 20)


def test_docs_scale_down_example_percent_and_pods_policies() -> None:
    # docs, Scaling policies: Pods 4 and Percent 10 per 60 s; from 80 replicas the Percent policy allows the larger
    # change, int(80 x 0.9) = 72 (selectPolicy Max); with Min, the Pods policy's 76
    policies = [{"type": "Pods", "value": 4, "periodSeconds": 60}, {"type": "Percent", "value": 10, "periodSeconds": 60}]
    for select, expected in (("Max", 72), ("Min", 76)):
        behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": select, "policies": policies}}
        controller = HorizontalPodAutoscaler(with_behavior(behavior, maxReplicas=100))
        assert controller.reconcile(0.0, 80, at(0.1, 80)).desired == expected, select
    # and the next step waits for the period: at 60 s, int(72 x 0.9) = 64
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "policies": policies}}
    controller = HorizontalPodAutoscaler(with_behavior(behavior, maxReplicas=100))
    assert controller.reconcile(0.0, 80, at(0.1, 80)).desired == 72
    assert controller.reconcile(30.0, 72, at(0.1, 72)).desired == 72
    assert controller.reconcile(60.0, 72, at(0.1, 72)).desired == 64


def test_disabled_scale_down_never_removes_a_pod() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "selectPolicy": "Disabled"}}
    controller = HorizontalPodAutoscaler(with_behavior(behavior))
    for step in range(30):
        decision = controller.reconcile(15.0 * step, 5, at(0.0, 5))
        assert decision.desired == 5
    assert decision.recommendation == 0
    assert "ScaleDownLimit (selectPolicy Disabled)" in decision.reason


def test_max_replicas_clamps() -> None:
    behavior = {"scaleUp": {"policies": [{"type": "Percent", "value": 1000, "periodSeconds": 15}]}}
    decision = HorizontalPodAutoscaler(with_behavior(behavior)).reconcile(0.0, 2, at(100.0, 2))
    assert (decision.recommendation, decision.desired) == (200, MAX)
    assert decision.reason.endswith("TooManyReplicas")
    # a target above maxReplicas is brought down to it first (reconcileAutoscaler), whatever the metric
    over = HorizontalPodAutoscaler(render_role_hpa()).reconcile(0.0, 12, at(5.0, 12))
    assert over.desired == MAX
    assert "above Spec.MaxReplicas" in over.reason


def test_min_replicas_clamps() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}}
    controller = HorizontalPodAutoscaler(with_behavior(behavior, minReplicas=2))
    assert controller.reconcile(0.0, 6, at(0.0, 6)).desired == 2
    assert HorizontalPodAutoscaler(with_behavior(None, minReplicas=2)).reconcile(0.0, 1, at(0.0, 1)).desired == 2


# --- the HPA without behavior (normalizeDesiredReplicas) -----------------------------------------------------


def test_without_behavior_the_older_path_applies() -> None:
    controller = HorizontalPodAutoscaler(with_behavior(None))
    assert controller.behavior is None
    # at most max(2 x current, 4) per reconcile, with no periods: 1 -> 4 -> 8 -> 10
    assert [controller.reconcile(t, c, at(10.0, c)).desired for t, c in ((0.0, 1), (15.0, 4), (30.0, 8))] == [4, 8, 10]
    # scale-down: the highest recommendation of the last 300 s (--horizontal-pod-autoscaler-downscale-stabilization)
    down = HorizontalPodAutoscaler(with_behavior(None), downscale_stabilization_s=60.0)
    assert down.reconcile(0.0, 4, at(1.0, 4)).desired == 4
    assert down.reconcile(30.0, 4, at(0.0, 4)).desired == 4
    assert down.reconcile(61.0, 4, at(0.0, 4)).desired == 1  # no rate policy: straight to minReplicas


def test_default_behavior_when_partly_given() -> None:
    # defaults.go: a behavior with only scaleDown gets the default scaleUp (Pods 4 / Percent 100 per 15 s, Max)
    controller = HorizontalPodAutoscaler(with_behavior({"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}),
                                         downscale_stabilization_s=120.0)
    assert controller.behavior is not None
    up, down = controller.behavior
    assert [(p.type, p.value, p.period_seconds) for p in up.policies] == [("Pods", 4, 15), ("Percent", 100, 15)]
    assert down.stabilization_window_seconds == 120.0  # maybeInitScaleDownStabilizationWindow: the flag
    assert controller.reconcile(0.0, 1, at(10.0, 1)).desired == 5


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "value", "message"), [
    (("behavior", "scaleUp", "selectPolicy"), "Sometimes", "hpa.spec.behavior.scaleUp.selectPolicy"),
    (("behavior", "scaleDown", "policies"), [], "hpa.spec.behavior.scaleDown.policies"),
    (("behavior", "scaleUp", "stabilizationWindowSeconds"), 4000, "hpa.spec.behavior.scaleUp.stabilizationWindowSeconds"),
    (("minReplicas",), 20, "hpa.spec.minReplicas"),
])
def test_bad_objects_are_refused_naming_the_field(path: tuple[str, ...], value: Any, message: str) -> None:
    hpa = render_role_hpa()
    node = hpa["spec"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        HorizontalPodAutoscaler(hpa)
