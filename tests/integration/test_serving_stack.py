# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The serving stack's metric path with real components on loopback.

Two real Triton servers (tests/servers/triton.py: the tritonserver of the nvidia-pytriton wheel, CPU, python
backend, one instance per model so concurrent requests queue), each standing for one pod and serving two
models, are scraped by a real Prometheus 2.42 (Debian) with the scrape settings our rendered PodMonitor implies,
which evaluates our rendered PrometheusRule. The HPA's view is the rendered prometheus-adapter metricsQuery,
expanded exactly as the adapter expands it for the pods of a namespace, and the HPA controller's replica formula
(hpa_desired_replicas below) with the rendered HPA's target, minReplicas and maxReplicas.

Proven here: at idle the metric is 0 (never NaN) and the formula keeps minReplicas; under overload from a
bounded tritonclient load generator it exceeds the target per pod within the reaction target and the formula
asks for more replicas, capped at the MIG capacity; it matches the queue time the clients observe (weighted over
both models of a pod); when the load stops it falls back under the target within the return target and to 0.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Sequence

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.ansible_run import ansible_env
    from tests.kube_fake.metrics import adapter_query
    from tests.servers.prometheus import PrometheusProcess, is_number, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from tests.servers.triton import Load, TritonProcess, mean_wait_us, queue_waits, service_time, triton_server, write_model_repository
    from tests.vault_vars import VAULT_ARGS
else:
    from ansible_run import ansible_env
    from kube_fake.metrics import adapter_query
    from servers.prometheus import PrometheusProcess, is_number, pod_monitor_job, prometheus_rule_groups, prometheus_server
    from servers.triton import Load, TritonProcess, mean_wait_us, queue_waits, service_time, triton_server, write_model_repository
    from vault_vars import VAULT_ARGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAMESPACE = "triton"
PODS = ("triton-3g-20gb-7c9d8b6f5-x2k4p", "triton-3g-20gb-7c9d8b6f5-m8q3z")  # pods of the one pool, on PROFILE
# 3g.20gb exists only on dgx-a100-02 (8 GPUs x 1): a MIG capacity of 8, small enough to see the cap
PROFILE, CAPACITY = "3g.20gb", 8
TARGET_US = 10_000
SLEEPER_MS, OTHER_MS, CLIENTS = 25.0, 20.0, 8
REACTION_WORST_S, RETURN_S = 5.0, 12.0  # the targets

pytestmark = pytest.mark.slow


# --- the HPA controller's replica calculation ----------------------------------------------------------


def hpa_desired_replicas(current: int, pod_values: Sequence[float], target: float, min_replicas: int, max_replicas: int,
                         tolerance: float = 0.1) -> int:
    """Desired replicas for a Pods metric with an AverageValue target, as the HPA controller computes them.

    Mirrors kube-controller-manager's replica calculator (pkg/controller/podautoscaler/replica_calculator.go,
    calcPlainMetricReplicas) with every pod ready and reporting: usage ratio = average of the pods' values /
    target; within the tolerance (--horizontal-pod-autoscaler-tolerance, 0.1) the count stays; otherwise
    ceil(ratio x pods); then clamped to [minReplicas, maxReplicas]. Behavior policies and stabilisation windows
    only limit how fast the count moves towards this value and are not modelled.
    """
    if not pod_values:
        return max(min(current, max_replicas), min_replicas)
    ratio = (sum(pod_values) / len(pod_values)) / target
    desired = current if abs(1.0 - ratio) <= tolerance else math.ceil(ratio * len(pod_values))
    return max(min_replicas, min(desired, max_replicas))


def test_hpa_formula_mirrors_the_controller() -> None:
    assert hpa_desired_replicas(2, [0.0, 0.0], 100, 1, 8) == 1  # idle: minReplicas
    assert hpa_desired_replicas(2, [105.0, 108.0], 100, 1, 8) == 2  # within 10 %: no change
    assert hpa_desired_replicas(2, [150.0, 150.0], 100, 1, 8) == 3  # ceil(2 x 1.5)
    assert hpa_desired_replicas(2, [1000.0, 1000.0], 100, 1, 8) == 8  # capped at maxReplicas
    assert hpa_desired_replicas(4, [40.0, 40.0, 40.0, 40.0], 100, 1, 8) == 2  # ceil(4 x 0.4)


# --- what the roles render ------------------------------------------------------------------------------


def render_serving(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = ansible_env(out.parent)
    argv = [
        str(BIN / "ansible-playbook"), "playbooks/serving.yml", "-i", "inventories/dgx", *VAULT_ARGS,
        "-e", "gpu_ops_k8s_mode=render", "-e", f"gpu_ops_render_dir={out}",
        "-e", "ansible_connection=local", "-e", f"ansible_python_interpreter={sys.executable}", *extra,
    ]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


def load_one(out: Path, pattern: str) -> Dict[str, Any]:
    matches = sorted(out.glob(pattern))
    assert len(matches) == 1, (pattern, matches)
    doc = yaml.safe_load(matches[0].read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    out = tmp_path_factory.mktemp("serving-render") / "out"
    # one serving pool, on PROFILE: its HPA's maxReplicas is the profile's capacity
    proc = render_serving(out, "-e", json.dumps({"gpu_ops_serving_pools": [PROFILE]}), "-e", f"autoscaling_target_queue_time_us={TARGET_US}")
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    values = load_one(out, "custom_metrics/prometheus-adapter.values.yaml")
    return {
        "pod_monitor": load_one(out, "triton/*-podmonitor-*.yaml"),
        "rule": load_one(out, "custom_metrics/*-prometheusrule-*.yaml"),
        "adapter_rule": values["rules"]["custom"][0],
        "hpa": load_one(out, "autoscaling/*-horizontalpodautoscaler-*.yaml"),
    }


# --- the stack -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(rendered: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    work = tmp_path_factory.mktemp("serving-stack")
    repo = write_model_repository(work / "models", delay_ms=SLEEPER_MS, name="sleeper")
    write_model_repository(repo, delay_ms=OTHER_MS, name="other")
    with contextlib.ExitStack() as stack:
        tritons: Dict[str, TritonProcess] = {pod: stack.enter_context(triton_server(repo)) for pod in PODS}
        job = pod_monitor_job(rendered["pod_monitor"], {pod: f"{t.host}:{t.metrics_port}" for pod, t in tritons.items()})
        prom: PrometheusProcess = stack.enter_context(prometheus_server(work / "prometheus", [job], rule_groups=prometheus_rule_groups(rendered["rule"])))
        yield {"tritons": tritons, "prom": prom}


def _poll(prom: PrometheusProcess, query: str) -> Dict[str, float]:
    return prom.query(query)


def test_metric_path_idle_overload_return(rendered: Dict[str, Any], stack: Dict[str, Any]) -> None:
    prom: PrometheusProcess = stack["prom"]
    tritons: Dict[str, TritonProcess] = stack["tritons"]
    hpa = rendered["hpa"]["spec"]
    assert hpa["maxReplicas"] == CAPACITY
    target = float(hpa["metrics"][0]["pods"]["target"]["averageValue"])
    assert target == TARGET_US
    query = adapter_query(rendered["adapter_rule"], NAMESPACE, PODS)
    record = rendered["rule"]["spec"]["groups"][0]["rules"][0]
    window = re.search(r"\[(\w+)\]", record["expr"])
    assert window is not None
    for triton in tritons.values():  # requests on both models, so both models' series exist
        for model in ("sleeper", "other"):
            service_time(triton.http_url, model, samples=3)

    # idle: the series exist (the service-time probes made the counters move) and settle to exactly 0
    deadline = time.monotonic() + 30
    values: Dict[str, float] = {}
    while time.monotonic() < deadline:
        values = _poll(prom, query)
        if set(values) == set(PODS) and all(v == 0.0 for v in values.values()):
            break
        time.sleep(0.5)
    assert set(values) == set(PODS), f"adapter query {query} returned {values}; targets {prom.targets_up()}"
    assert all(is_number(v) and v == 0.0 for v in values.values()), values
    for _sample in range(4):  # and stays 0, never NaN
        values = _poll(prom, query)
        assert values == {pod: 0.0 for pod in PODS}, values
        time.sleep(0.5)
    assert hpa_desired_replicas(len(PODS), list(values.values()), target, hpa["minReplicas"], hpa["maxReplicas"]) == hpa["minReplicas"]

    # overload: CLIENTS closed-loop clients on the slow model and one on the other model, per pod
    loads = {pod: (Load(t.http_url, "sleeper", concurrency=CLIENTS, max_s=60), Load(t.http_url, "other", concurrency=1, max_s=60))
             for pod, t in tritons.items()}
    crossed: Dict[str, float] = {}
    start = time.time()
    for heavy, light in loads.values():
        heavy.start()
        light.start()
    samples: List[Dict[str, float]] = []
    try:
        while time.time() - start < 15:
            values = _poll(prom, query)
            now = time.time()
            for pod, value in values.items():
                if value > target and pod not in crossed:
                    crossed[pod] = now - start
            if len(crossed) == len(PODS) and now - start > 10:
                samples.append(values)
            time.sleep(0.2)
        overload_values = _poll(prom, query)
        steady_at = time.time()
    finally:
        for heavy, light in loads.values():
            heavy.stop()
            light.stop()
    stopped = time.time()
    assert set(crossed) == set(PODS), f"the metric never crossed {target} us: {values}"
    assert max(crossed.values()) <= REACTION_WORST_S, f"reaction per pod {crossed} s, target <= {REACTION_WORST_S} s"
    desired = hpa_desired_replicas(len(PODS), list(overload_values.values()), target, hpa["minReplicas"], hpa["maxReplicas"])
    uncapped = hpa_desired_replicas(len(PODS), list(overload_values.values()), target, hpa["minReplicas"], 10**6)
    assert uncapped > CAPACITY, (overload_values, uncapped)
    assert desired == CAPACITY, (overload_values, desired)

    # the metric against the queue time the clients observed (reconstructed from their timestamps, see
    # tests/servers/triton.py queue_waits), request-weighted over both models of each pod:
    # the rule's expression at steady_at covers the requests completed between its window's first and last sample
    selector = f'nv_inference_request_success{{namespace="{NAMESPACE}",model="sleeper"}}'
    bounds = prom.window_samples(selector, window.group(1), steady_at)
    expr_values = prom.query(record["expr"], at=steady_at)
    for pod in PODS:
        first, last = bounds[pod][0][0], bounds[pod][-1][0]
        heavy, light = loads[pod]
        # each model has its own instance and queue: reconstruct each model's waits, then weigh every request alike
        waits = {m: queue_waits(load.snapshot()) for m, load in (("sleeper", heavy), ("other", light))}
        observed = mean_wait_us([w for ws in waits.values() for w in ws], first, last + 0.05)
        assert observed is not None
        assert abs(expr_values[pod] - observed) / observed < 0.05, (pod, expr_values[pod], observed)
        # the average of the per-model ratios, what a rule averaging per model would report, differs from it
        per_model = [mean_wait_us(ws, first, last + 0.05) or 0.0 for ws in waits.values()]
        assert abs(sum(per_model) / 2 - observed) / observed > 0.05, (per_model, observed)

    # return: back under the target within RETURN_S, then exactly 0
    returned: Dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (len(returned) == len(PODS) and all(v == 0.0 for v in values.values())):
        values = _poll(prom, query)
        for pod, value in values.items():
            if value < target and pod not in returned:
                returned[pod] = time.time() - stopped
        time.sleep(0.2)
    assert set(returned) == set(PODS), values
    assert max(returned.values()) <= RETURN_S, f"return per pod {returned} s, target <= {RETURN_S} s"
    assert values == {pod: 0.0 for pod in PODS}, values
    assert hpa_desired_replicas(CAPACITY, list(values.values()), target, hpa["minReplicas"], hpa["maxReplicas"]) == hpa["minReplicas"]
    health = prom.rule_health()
    assert [r["health"] for r in health] == ["ok"], health
    print(f"reaction {crossed} s, return {returned} s, overload {overload_values} us, steady samples {len(samples)}")
