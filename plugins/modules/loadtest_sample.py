#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: loadtest_sample
short_description: Sample the autoscaling loop while a load test runs - every pool's HPA, queue time and requests per pod
version_added: 0.1.0
description:
  - Reads, every O(interval) seconds and changing nothing, what the load test of C(playbooks/loadtest.yml) reports
    over time, through the API server.
  - B(The serving pools followed) - one Triton Deployment and one HPA per MIG profile. O(pools) when given (the fact
    C(gpu_ops_pools)); else, with O(deployment) empty, the Deployments of O(namespace) labelled
    C(app.kubernetes.io/name=triton) and C(app.kubernetes.io/instance=)O(instance) (every pool's Deployment carries
    them), each a pool named as its Deployment, its MIG profile from the pod template's C(gpu-ops.io/mig-profile)
    annotation and its load-balancer weight from the Deployment's C(gpu-ops.io/lb-weight) annotation (role triton
    writes the pool's weight there; without it, the profile's compute slices, role nginx_lb's default); else the single
    Deployment O(deployment) of earlier releases. O(pool_names) keeps some of them. Read once per call.
  - B(HPA) - of every pool, from one list of the namespace's C(autoscaling/v2) HorizontalPodAutoscalers - the one whose
    C(spec.scaleTargetRef) is the pool's Deployment, whatever its name (KEDA's included), or the one a pool names -
    C(status.currentReplicas), C(status.desiredReplicas) and the current value of its metric
    (C(status.currentMetrics)); its C(spec) gives the pool's target and min/max replicas (RV(pools)), summed over the
    pools in RV(hpa_settings).
  - B(Triton pods) - one list with the labels every pool's pods share; each pod's pool from its
    C(gpu-ops.io/serving-pool) label.
  - B(Queue time per pod) - O(metric_name) for each pod from the custom metrics API (C(custom.metrics.k8s.io), as
    prometheus-adapter serves it); with O(queue_source=prometheus) (KEDA, which serves no custom metric) the series
    O(metric_series) per pod from Prometheus.
  - B(Requests per pod) - with O(lb_edition=plus), the NGINX Plus API's per-peer counters of the upstreams
    O(lb_upstreams) (C(peers[].requests), summed over the load balancer's pods, each read through the API server's pod
    proxy on O(lb_status_port)); a peer address is named by the Triton pod that has it. With O(lb_edition=oss) (NGINX
    open source counts nothing per upstream server), Triton's own counter C(nv_inference_request_success) per pod from
    Prometheus - every request reaches Triton through the load balancer, so what a pod served is what the load
    balancer sent it. Failed requests - C(nv_inference_request_failure) (oss) or the peers' C(5xx) responses (plus).
  - B(The load generator) - the Job O(job_name) (its conditions C(Complete)/C(Failed)) and its pod's phase.
  - A source that cannot be read in one sample leaves that sample's value empty and is reported in RV(source_errors);
    the load test goes on.
  - With O(finish), the log of the Job's pod is read too, and the run is assembled (RV(run)) from O(samples), the
    samples of this call, the steps the pod's log reports (its C(LOADTEST) marker lines and the CSV perf_analyzer wrote
    with C(-f)) and O(settings).
requirements:
  - kubernetes (the Python client kubernetes.core uses)
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
  - kubernetes.core.k8s_auth_options
options:
  namespace:
    description: Namespace of Triton and its HPA.
    type: str
    default: triton
  pools:
    description:
      - The serving pools to follow, as the fact C(gpu_ops_pools) holds them - each a mapping with C(name) (the pool's
        Deployment), and optionally C(profile), C(weight) (the load balancer's weight of each of its pods; default the
        profile's compute slices) and C(hpa) (the HPA's name; default the HPA whose C(scaleTargetRef) is the pool's
        Deployment). Other keys are ignored.
      - Empty - the pools are found by their labels (O(instance)), or, with O(deployment), that one Deployment.
    type: list
    elements: dict
    default: []
  pool_names:
    description: Follow only these pools (names of O(pools) or of the pools found); one that is not there fails.
    type: list
    elements: str
    default: []
  instance:
    description:
      - The C(app.kubernetes.io/instance) label of every pool's Deployment and pods (the shared variable
        C(gpu_ops_triton_name)); with C(app.kubernetes.io/name=triton) it selects them.
    type: str
    default: triton
  deployment:
    description:
      - The single Triton Deployment of earlier releases, followed as the only pool (its C(spec.selector.matchLabels)
        select the pods); used only when O(pools) is empty. Empty - the pools are found by their labels.
    type: str
    default: ""
  hpa_name:
    description: With O(deployment), its HPA; empty reads none (the replica columns stay empty).
    type: str
    default: ""
  metric_name:
    description: The custom metric the HPA scales on (custom metrics API).
    type: str
    default: avg_time_queue_us
  queue_source:
    description: Where the queue time per pod is read - the custom metrics API, or Prometheus (O(metric_series)).
    type: str
    choices: [custom_metrics, prometheus]
    default: custom_metrics
  metric_series:
    description: The recorded series of the queue time per pod (O(queue_source=prometheus)).
    type: str
    default: "namespace_pod:nv_inference_queue_duration_us:per_request"
  model:
    description: The model under load; the per-pod request counters are read for it only (empty - every model).
    type: str
    default: ""
  prometheus_service:
    description:
      - Prometheus' Service, reached through the API server's service proxy - C(namespace), C(name), C(port) and
        C(scheme) (C(http) or C(https)). Needed with O(lb_edition=oss) and O(queue_source=prometheus).
    type: dict
    default: {}
  lb_edition:
    description: The load balancer's NGINX edition - where the requests per pod are read.
    type: str
    choices: [oss, plus]
    default: oss
  lb_namespace:
    description: Namespace of the load balancer (O(lb_edition=plus)); empty is O(namespace).
    type: str
    default: ""
  lb_deployment:
    description: The load balancer's Deployment; its C(spec.selector.matchLabels) select its pods (O(lb_edition=plus)).
    type: str
    default: nginx-lb
  lb_status_port:
    description: The port of the NGINX Plus API on the load balancer's pods.
    type: int
    default: 8080
  lb_plus_api_version:
    description: The NGINX Plus API version in the path (C(/api/<version>/...)).
    type: int
    default: 9
  lb_upstreams:
    description: The upstreams whose peers are counted (the HTTP and gRPC upstreams of role nginx_lb).
    type: list
    elements: str
    default: [triton_http, triton_grpc]
  lb_http_port_name:
    description: The name of the HTTP port of the load balancer's client Service O(lb_deployment) (O(probe_statistics)).
    type: str
    default: http
  probe_statistics:
    description:
      - Instead of sampling, check once that the load balancer passes the model's statistics - C(GET
        /v2/models/<model>/stats) of O(model) through the client Service O(lb_deployment) in O(lb_namespace), by the API
        server's service proxy - and fail when it does not - the load balancer refuses it (403; the shared variable
        C(gpu_ops_lb_model_statistics) is off) or Triton has no such model ready (404 or 400).
      - perf_analyzer reads the statistics between its measurements and stops when they are refused.
    type: bool
    default: false
  job_name:
    description: The load generator's Job; empty samples without it.
    type: str
    default: ""
  job_namespace:
    description: Namespace of O(job_name); empty is O(namespace).
    type: str
    default: ""
  job_container:
    description: The container of the Job's pod whose log O(finish) reads.
    type: str
    default: perf-analyzer
  started:
    description: When the run started (seconds since the epoch, UTC); each sample's C(t) is counted from it.
    type: float
    required: true
  stop_when:
    description:
      - V(duration) samples for O(duration) seconds; V(job_running) until the Job's pod runs (or the Job finished);
        V(job_finished) until the Job finished. O(duration) bounds each.
      - V(job_running) and V(job_finished) not reached within O(duration) fail, naming the Job, its pod and why it waits.
    type: str
    choices: [duration, job_running, job_finished]
    default: duration
  duration:
    description: Seconds to sample at most.
    type: float
    default: 60
  interval:
    description: Seconds between two samples.
    type: float
    default: 5
  finish:
    description: Also read the Job's pod's log and assemble the run (RV(run)).
    type: bool
    default: false
  samples:
    description: The samples of earlier calls, for O(finish).
    type: list
    elements: dict
    default: []
  title:
    description: The run's title (O(finish)).
    type: str
    default: Load test
  started_iso:
    description: O(started) as ISO 8601 (O(finish)).
    type: str
    default: ""
  settings:
    description: The run's settings table (O(finish)); the HPA's target and min/max replicas are added unless given.
    type: dict
    default: {}
  timeout:
    description: Seconds each request may take.
    type: int
    default: 15
notes:
  - The cluster is reached with kubernetes.core's authentication options, as M(gpu_ops.mig_serving.serving_verify) -
    C(module_defaults) for the action group C(group/gpu_ops.mig_serving.k8s) sets them once.
  - Needs read access (get and list) to horizontalpodautoscalers, deployments, pods, pods/log, jobs, C(custom.metrics.k8s.io)
    C(pods/*), and C(services/proxy) get on Prometheus' Service (oss) or C(pods/proxy) get on the load balancer's
    pods (plus).
  - The samples' C(t) and the steps' C(start)/C(end) come from two clocks (this host's and the Job pod's node's);
    they agree as far as the hosts' time synchronisation does.
seealso:
  - module: gpu_ops.mig_serving.serving_verify
"""

EXAMPLES = r"""
- name: Sample until the load generator's Job finished, at most 20 minutes, every 5 seconds
  gpu_ops.mig_serving.loadtest_sample:
    namespace: triton
    instance: triton
    job_name: triton-loadtest
    prometheus_service: {namespace: monitoring, name: kube-prometheus-stack-prometheus, port: 9090}
    started: "{{ __started }}"
    stop_when: job_finished
    duration: 1200
    interval: 5
  register: __sampled

- name: Two of the serving pools only, as playbooks/validate.yml planned them, and the run assembled
  gpu_ops.mig_serving.loadtest_sample:
    pools: "{{ gpu_ops_pools }}"
    pool_names: [triton-1g-5gb, triton-3g-20gb]
    instance: triton
    prometheus_service: {namespace: monitoring, name: kube-prometheus-stack-prometheus, port: 9090}
    job_name: triton-loadtest
    started: "{{ __started }}"
    stop_when: job_finished
    finish: true
    samples: "{{ __earlier_samples }}"
    settings: {model: demo}

- name: With NGINX Plus, the requests per pod from its API, and the run assembled
  gpu_ops.mig_serving.loadtest_sample:
    lb_edition: plus
    lb_deployment: nginx-lb
    job_name: triton-loadtest
    started: "{{ __started }}"
    stop_when: job_finished
    finish: true
    samples: "{{ __earlier_samples }}"
    title: Load test
    settings: {model: demo}
"""

RETURN = r"""
samples:
  description:
    - One per O(interval) - C(t) (seconds since O(started)), C(pools) (per pool - C(hpa_current), C(hpa_desired),
      C(metric_us) (its HPA's current value), C(ready_pods), C(pods) (its ready pods)), and over all pools followed
      C(hpa_current) and C(hpa_desired) (summed over the pools whose HPA was read), C(metric_us) (the pools' values
      averaged with their current replicas as weights), C(queue_us) (per pod), C(requests) (per pod, cumulative),
      C(ready_pods), C(failed) (cumulative failed requests; null when unknown).
  returned: always
  type: list
  elements: dict
  sample: [{"t": 12.0, "hpa_current": 2, "hpa_desired": 3, "metric_us": 5400.0,
            "queue_us": {"triton-1g-5gb-7c9d8b6f5-x2k4p": 5400.0, "triton-3g-20gb-5d8f7c6b9-q7w2e": 5400.0},
            "requests": {"triton-1g-5gb-7c9d8b6f5-x2k4p": 1532, "triton-3g-20gb-5d8f7c6b9-q7w2e": 4610}, "ready_pods": 2, "failed": 0,
            "pools": {"triton-1g-5gb": {"hpa_current": 1, "hpa_desired": 2, "metric_us": 5400.0, "ready_pods": 1,
                                        "pods": ["triton-1g-5gb-7c9d8b6f5-x2k4p"]},
                      "triton-3g-20gb": {"hpa_current": 1, "hpa_desired": 1, "metric_us": 5400.0, "ready_pods": 1,
                                         "pods": ["triton-3g-20gb-5d8f7c6b9-q7w2e"]}}}]
pools:
  description:
    - The pools followed - C(name), C(profile), C(weight), C(hpa) (the HPA read), C(min_replicas), C(max_replicas),
      C(target_queue_us) (from its HPA's spec; null where unknown).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "triton-3g-20gb", "profile": "3g.20gb", "weight": 3, "hpa": "triton-3g-20gb", "min_replicas": 1,
            "max_replicas": 2, "target_queue_us": 2000.0}]
job:
  description: The Job - C(phase) (pending, running, succeeded, failed, missing, none), C(finished), C(pod), C(pod_phase), C(waiting), C(message).
  returned: always
  type: dict
  sample: {"phase": "running", "finished": false, "pod": "triton-loadtest-7xk2p", "pod_phase": "Running"}
reached:
  description: Whether O(stop_when) was reached.
  returned: always
  type: bool
hpa_settings:
  description:
    - From the HPAs' specs over all the pools - C(min_replicas) and C(max_replicas) (summed), C(target_queue_us) (the pools'
      target; when they differ, the lowest), C(metric).
  returned: always
  type: dict
  sample: {"min_replicas": 1, "max_replicas": 7, "target_queue_us": 2000.0, "metric": "avg_time_queue_us"}
source_errors:
  description: Per source (hpa, pods, queue, requests, job) the last error seen; those samples lack its values.
  returned: always
  type: dict
run:
  description: The assembled run (the load-test report's schema - title, source, started, settings, pools, samples, steps, events, failed_requests).
  returned: with O(finish)
  type: dict
"""

import copy
import os
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC  # type: ignore[import-untyped]

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._kube_client import module_api_client
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._loadtest_sample import Sampler, build_run, sample_until
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import KubeTransport, VerifyError


def check_params(p: Dict[str, Any]) -> str:
    """The first problem with the options, or ''."""
    for index, pool in enumerate(p.get("pools") or []):
        if not isinstance(pool.get("name"), str) or not pool["name"]:
            return f"pools[{index}].name must name the pool's Deployment, got {pool.get('name')!r}"
        if pool.get("weight") is not None and (not str(pool["weight"]).isdigit() or int(pool["weight"]) < 1):
            return f"pools[{index}].weight must be an integer >= 1, got {pool['weight']!r}"
    if p["interval"] <= 0 or p["duration"] < 0 or p["timeout"] < 1:
        return f"interval must be > 0, duration >= 0 and timeout >= 1, got {p['interval']}, {p['duration']}, {p['timeout']}"
    if p["stop_when"] != "duration" and not p["job_name"]:
        return f"stop_when={p['stop_when']} needs job_name"
    if p.get("probe_statistics") and not p["model"]:
        return "probe_statistics needs model (the model whose statistics perf_analyzer reads)"
    if p["finish"] and not p["job_name"]:
        return "finish needs job_name (the log of its pod holds the steps)"
    needs_prometheus = not p.get("probe_statistics") and (p["lb_edition"] == "oss" or p["queue_source"] == "prometheus")
    svc = p["prometheus_service"] or {}
    if needs_prometheus and not all(str(svc.get(k) or "") for k in ("namespace", "name", "port")):
        return ("prometheus_service needs namespace, name and port (lb_edition oss reads the requests per pod, queue_source "
                f"prometheus the queue time, from Prometheus), got {svc}")
    if svc.get("scheme", "http") not in ("http", "https"):
        return f"prometheus_service.scheme must be http or https, got {svc.get('scheme')!r}"
    return ""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **copy.deepcopy(AUTH_ARG_SPEC),
            "namespace": {"type": "str", "default": "triton"},
            "pools": {"type": "list", "elements": "dict", "default": []},
            "pool_names": {"type": "list", "elements": "str", "default": []},
            "instance": {"type": "str", "default": "triton"},
            "deployment": {"type": "str", "default": ""},
            "hpa_name": {"type": "str", "default": ""},
            "metric_name": {"type": "str", "default": "avg_time_queue_us"},
            "queue_source": {"type": "str", "default": "custom_metrics", "choices": ["custom_metrics", "prometheus"]},
            "metric_series": {"type": "str", "default": "namespace_pod:nv_inference_queue_duration_us:per_request"},
            "model": {"type": "str", "default": ""},
            "prometheus_service": {"type": "dict", "default": {}},
            "lb_edition": {"type": "str", "default": "oss", "choices": ["oss", "plus"]},
            "lb_namespace": {"type": "str", "default": ""},
            "lb_deployment": {"type": "str", "default": "nginx-lb"},
            "lb_status_port": {"type": "int", "default": 8080},
            "lb_plus_api_version": {"type": "int", "default": 9},
            "lb_upstreams": {"type": "list", "elements": "str", "default": ["triton_http", "triton_grpc"]},
            "lb_http_port_name": {"type": "str", "default": "http"},
            "probe_statistics": {"type": "bool", "default": False},
            "job_name": {"type": "str", "default": ""},
            "job_namespace": {"type": "str", "default": ""},
            "job_container": {"type": "str", "default": "perf-analyzer"},
            "started": {"type": "float", "required": True},
            "stop_when": {"type": "str", "default": "duration", "choices": ["duration", "job_running", "job_finished"]},
            "duration": {"type": "float", "default": 60},
            "interval": {"type": "float", "default": 5},
            "finish": {"type": "bool", "default": False},
            "samples": {"type": "list", "elements": "dict", "default": []},
            "title": {"type": "str", "default": "Load test"},
            "started_iso": {"type": "str", "default": ""},
            "settings": {"type": "dict", "default": {}},
            "timeout": {"type": "int", "default": 15},
        },
        supports_check_mode=True,
    )
    p = dict(module.params)
    problem = check_params(p)
    if problem:
        module.fail_json(msg=problem)
    api = module_api_client(module, os.environ)  # a kubeconfig given as a mapping: its credentials are not logged
    sampler = Sampler(KubeTransport(api, float(p["timeout"]), open_url), p)
    if p["probe_statistics"]:
        problem = sampler.probe_statistics()
        if problem:
            module.fail_json(msg=problem)
        module.exit_json(changed=False, samples=[], job={}, reached=True, hpa_settings={}, pools=[], source_errors={})
    try:
        outcome = sample_until(sampler, started=p["started"], until=p["stop_when"], duration=p["duration"], interval=p["interval"])
    except VerifyError as exc:
        module.fail_json(msg=f"Sampling the load test: {exc}")
    result: Dict[str, Any] = {"changed": False, "samples": outcome["samples"], "job": outcome["job"], "reached": outcome["reached"],
                              "hpa_settings": outcome["hpa_settings"], "pools": outcome["pools"], "source_errors": outcome["errors"]}
    for source, message in sorted(outcome["errors"].items()):
        module.warn(f"load test sampling, {source}: {message}")
    job = outcome["job"]
    if not outcome["reached"]:
        what = "start" if p["stop_when"] == "job_running" else "finish"
        waiting = f" ({job['waiting']})" if job.get("waiting") else ""
        module.fail_json(msg=(f"The load generator's Job {p['job_namespace'] or p['namespace']}/{p['job_name']} did not {what} within "
                              f"{p['duration']:g} s: pod {job.get('pod') or '(none yet)'} is {job.get('pod_phase', 'Pending')}{waiting}"),
                         **result)
    if p["finish"]:
        log_text = ""
        if job.get("pod"):
            try:
                log_text = sampler.job_log(str(job["pod"]))
            except VerifyError as exc:
                module.warn(f"load test: {exc}; the report has no perf_analyzer steps")
        hpa = {**outcome["hpa_settings"]}
        result["run"] = build_run(title=p["title"], started_iso=p["started_iso"], started=p["started"],
                                  samples=[*p["samples"], *outcome["samples"]], log_text=log_text, settings=p["settings"], hpa=hpa,
                                  pools=outcome["pools"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
