#!/usr/bin/python
# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: serving_verify
short_description: Verify the serving stack end to end - custom metric, HPA, the load balancer's address, an inference through it
version_added: 0.1.0
description:
  - Checks, reading only, that the autoscaled Triton deployment works end to end.
  - B(Custom metric) - the custom metrics API (C(custom.metrics.k8s.io), served by prometheus-adapter through an
    APIService) lists O(metric_name) for every ready pod of each Triton Deployment (O(triton_deployments), one per
    serving pool, or O(triton_deployment)); every Deployment must have a ready pod. The API version is the one of the
    available APIService with the highest C(versionPriority); an APIService that is not available is reported with
    its condition.
  - B(HPA) - each C(autoscaling/v2) HorizontalPodAutoscaler of O(hpa_names) (or the one O(hpa_name)) scales on the
    Pods metric O(metric_name), reports a current average value of it in C(status.currentMetrics) and has condition
    C(ScalingActive=True). With O(keda_scaled_objects) (or O(keda_scaled_object)) the HPA is the one KEDA made for each
    ScaledObject (C(status.hpaName)) and the metric is KEDA's External metric (C(status.externalMetricNames)).
  - B(Load balancer address) - with O(lb_service) and O(check_lb_address), the client Service is read - its type,
    cluster IP, external addresses (C(status.loadBalancer.ingress) and C(spec.externalIPs)) and ports with node ports are
    reported; a C(LoadBalancer) Service without an external address (kubectl's EXTERNAL-IP C(<pending>), no load-balancer
    provider such as MetalLB assigned one) fails, naming the Service.
  - B(Load balancer) - an inference through the load balancer's client Service O(lb_service) (through the API server's
    service proxy) or O(lb_url) succeeds - the model's metadata is read, a request of zeros is built from its declared
    inputs (every variable dimension as 1, C("") for BYTES) and C(POST /v2/models/<model>/infer) must answer 200 with
    outputs. The load balancer of role nginx_lb refuses C(POST /v2/repository/index) (403) - name the model with O(model).
  - A fresh deployment needs time (the adapter re-lists series, the HPA controller syncs every 15 s), so each check is
    repeated until it passes, at most O(retries) more times, O(delay) seconds apart. The failure message names each
    check that still fails and what it saw.
extends_documentation_fragment:
  - gpu_ops.mig_serving._attributes
  - gpu_ops.mig_serving._attributes.info_module
  - kubernetes.core.k8s_auth_options
requirements:
  - kubernetes (the Python client kubernetes.core uses)
options:
  namespace:
    description: Namespace of Triton, of its HPA or ScaledObject, and (unless O(lb_namespace)) of the load balancer.
    type: str
    default: triton
  triton_deployment:
    description: The Triton Deployment; its C(spec.selector.matchLabels) select the pods, unless O(triton_selector) is given.
      Used when O(triton_deployments) is empty.
    type: str
    default: triton
  triton_deployments:
    description:
      - The Triton Deployments, one per serving pool (playbooks/verify.yml gives the names of C(gpu_ops_pools)); each one's
        C(spec.selector.matchLabels) select its pods. Empty - the one O(triton_deployment).
    type: list
    elements: str
    default: []
  triton_selector:
    description: Labels of the Triton pods (instead of reading the Deployments' selectors; then O(triton_deployments) is not read).
    type: dict
    default: {}
  metric_name:
    description: The custom metric (the name prometheus-adapter publishes and the HPA consumes).
    type: str
    default: avg_time_queue_us
  check_custom_metrics:
    description: Check the custom metrics API. V(false) with the KEDA backend, which serves no custom metric.
    type: bool
    default: true
  hpa_name:
    description: The HPA to check, when O(hpa_names) is empty. Empty, and no KEDA ScaledObject, skips the HPA check.
    type: str
    default: ""
  hpa_names:
    description: The HPAs to check, one per serving pool (role autoscaling names each as its pool).
    type: list
    elements: str
    default: []
  keda_scaled_object:
    description: A KEDA ScaledObject; its HPA is checked instead of O(hpa_name). Mutually exclusive with O(hpa_name) and O(hpa_names).
    type: str
    default: ""
  keda_scaled_objects:
    description: KEDA ScaledObjects, one per serving pool; the HPA of each is checked. Mutually exclusive with O(hpa_name) and O(hpa_names).
    type: list
    elements: str
    default: []
  lb_service:
    description:
      - The load balancer's client Service; the inference goes through the API server's service proxy to it.
      - Empty, and no O(lb_url), skips the inference.
    type: str
    default: ""
  lb_namespace:
    description: Namespace of O(lb_service); empty is O(namespace).
    type: str
    default: ""
  lb_port:
    description: Name (or number) of the HTTP port of O(lb_service).
    type: str
    default: http
  lb_scheme:
    description:
      - How the API server's service proxy speaks to O(lb_port) - V(https) for a TLS port (C(https:<service>:<port>)).
    type: str
    choices: [http, https]
    default: http
  check_lb_address:
    description:
      - With O(lb_service), read the Service and fail when it is of type LoadBalancer and has no external address.
    type: bool
    default: true
  lb_url:
    description: A direct address of the load balancer (C(http://host:port) or C(https://host:port)), used instead of the service proxy.
    type: str
    default: ""
  lb_ca_path:
    description: CA certificate(s) that an O(lb_url) of C(https://) is verified against (default - the system's trust store).
    type: path
  model:
    description:
      - The model to infer on. Empty takes the first C(READY) model of C(POST /v2/repository/index), which the load balancer
        of role nginx_lb refuses (its allow-list) - set it then.
    type: str
    default: ""
  retries:
    description: How many more rounds a failing check gets.
    type: int
    default: 30
  delay:
    description: Seconds between two rounds.
    type: int
    default: 10
  timeout:
    description: Seconds each request may take.
    type: int
    default: 30
notes:
  - The cluster is reached with kubernetes.core's authentication options (O(kubeconfig), O(context), O(host),
    O(api_key), client certificates, proxy, impersonation), resolved as kubernetes.core's modules resolve them, the
    C(K8S_AUTH_*) environment variables included - so C(module_defaults) for the action group
    C(group/gpu_ops.mig_serving.k8s), which extends C(kubernetes.core.k8s), sets them once for both.
  - A kubeconfig (a file, or O(kubeconfig) given as a mapping) is checked before the kubernetes client reads it; a file
    that is not YAML, not a kubeconfig, lacks the context, or whose cluster server is not an http(s) URL fails naming
    the file and the line. O(impersonate_groups) needs O(impersonate_user) (the API server refuses groups alone).
  - Needs read access to pods, deployments, horizontalpodautoscalers, apiservices (or discovery of
    C(custom.metrics.k8s.io)), C(custom.metrics.k8s.io) C(pods/*), services (get, for the address) and, for the service
    proxy, C(services/proxy) get and create.
seealso:
  - module: gpu_ops.mig_serving.mig_verify
"""

EXAMPLES = r"""
- name: Verify the serving stack end to end
  gpu_ops.mig_serving.serving_verify:
    kubeconfig: /etc/gpu-ops/kubeconfig
    namespace: triton
    triton_deployments: [triton-1g-5gb, triton-3g-20gb]
    metric_name: avg_time_queue_us
    hpa_names: [triton-1g-5gb, triton-3g-20gb]
    lb_service: nginx-lb
    lb_port: http
  register: __serving

- name: With KEDA, through the load balancer's external address, on one model
  gpu_ops.mig_serving.serving_verify:
    check_custom_metrics: false
    triton_deployments: [triton-1g-5gb]
    keda_scaled_objects: [triton-1g-5gb]
    lb_url: http://inference.example.internal:8000
    model: resnet50
    retries: 5
    delay: 5

- name: Set the cluster access once, for kubernetes.core's modules and this one
  module_defaults:
    group/gpu_ops.mig_serving.k8s:
      kubeconfig: /etc/gpu-ops/kubeconfig
      context: prod
  block:
    - name: Read the Triton Deployment
      kubernetes.core.k8s_info:
        kind: Deployment
        namespace: triton
        name: triton

    - name: Verify, as a user with read access only
      gpu_ops.mig_serving.serving_verify:
        hpa_name: triton
        lb_service: nginx-lb
        impersonate_user: system:serviceaccount:triton:verifier
"""

RETURN = r"""
triton_pods:
  description:
    - The pods of the Triton Deployments, ready and not ready, all pools together, the labels every Deployment selects by
      (C(selector)), and per Deployment (C(deployments)) its C(ready), C(not_ready) and C(selector).
  returned: when the custom metric is checked
  type: dict
  sample: {"ready": ["triton-1g-5gb-7c9d8b6f5-m8q3z"], "not_ready": [], "selector": "app.kubernetes.io/instance=triton",
           "deployments": {"triton-1g-5gb": {"ready": ["triton-1g-5gb-7c9d8b6f5-m8q3z"], "not_ready": [],
                                             "selector": "app.kubernetes.io/instance=triton,gpu-ops.io/serving-pool=triton-1g-5gb"}}}
custom_metrics:
  description:
    - The custom metrics API's answer - C(api_version), C(apiservice) (name, version, service, Available condition),
      C(metric), C(pods) (per pod C(value) as a number, C(quantity) as served, C(timestamp)) and C(missing) (ready pods without a value).
  returned: when the custom metric is checked
  type: dict
  sample:
    api_version: custom.metrics.k8s.io/v1beta1
    metric: avg_time_queue_us
    pods: {"triton-7c9d8b6f5-x2k4p": {"value": 1.5, "quantity": "1500m", "timestamp": "2026-11-28T20:00:00Z"}}
    missing: []
hpa:
  description:
    - The (first) HPA - C(name), C(metric_type), C(metric), C(current_value), C(current_quantity), C(min_replicas), C(max_replicas),
      C(current_replicas), C(desired_replicas), C(conditions) (by type - status, reason, message), C(able_to_scale),
      C(scaling_active), C(scaling_limited); C(all) - the same for every HPA checked, by HPA or ScaledObject name.
  returned: when the HPA is checked
  type: dict
  sample: {"name": "triton", "metric": "avg_time_queue_us", "current_value": 1.5, "current_replicas": 2, "desired_replicas": 1,
           "min_replicas": 1, "max_replicas": 72, "scaling_active": true, "able_to_scale": true, "scaling_limited": false}
lb_address:
  description:
    - The load balancer's client Service - C(service) (namespace/name), C(type), C(cluster_ip), C(external) (addresses from
      C(status.loadBalancer.ingress) and C(spec.externalIPs)), C(ports) (C(name), C(port), C(node_port)).
  returned: when the Service is checked
  type: dict
  sample: {"service": "triton/nginx-lb", "type": "LoadBalancer", "cluster_ip": "10.96.12.7", "external": ["10.0.20.10"],
           "ports": [{"name": "http", "port": 8000, "node_port": 31080}, {"name": "grpc", "port": 8001, "node_port": 31081}]}
lb:
  description: The inference through the load balancer - C(via), C(model), C(status), C(latency_ms), C(outputs) (names).
  returned: when the load balancer is checked
  type: dict
  sample: {"via": "service proxy triton/nginx-lb:http", "model": "sleeper", "status": 200, "latency_ms": 12.5, "outputs": ["OUTPUT0"]}
pools:
  description:
    - Per Triton Deployment (serving pool) - C(ready) and C(not_ready) pods, C(metric_missing) (ready pods the custom metric
      misses, when checked) and C(hpa) (its autoscaler, the one named as the Deployment - C(name), C(current_quantity),
      C(current_replicas), C(desired_replicas), C(min_replicas), C(max_replicas), C(scaling_active), C(scaling_limited)).
  returned: always
  type: dict
  sample: {"triton-1g-5gb": {"ready": ["triton-1g-5gb-7c9d8b6f5-m8q3z"], "not_ready": [], "metric_missing": [],
                             "hpa": {"name": "triton-1g-5gb", "current_quantity": "1500m", "current_replicas": 1, "desired_replicas": 1,
                                     "min_replicas": 1, "max_replicas": 72, "scaling_active": true, "scaling_limited": false}}}
checks:
  description: The checks that ran.
  returned: always
  type: list
  elements: str
  sample: ["custom_metrics", "hpa", "lb_address", "lb"]
failures:
  description: Per failed check, what was wrong.
  returned: always
  type: dict
  sample: {"custom_metrics": "custom metrics API lists avg_time_queue_us for 1 of 2 Triton pods: missing triton-7c9d8b6f5-m8q3z"}
attempts:
  description: Rounds made.
  returned: always
  type: int
  sample: 1
"""

import copy
import os
from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url
from ansible_collections.kubernetes.core.plugins.module_utils.args_common import AUTH_ARG_SPEC  # type: ignore[import-untyped]

from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._kube_client import module_api_client
from ansible_collections.gpu_ops.mig_serving.plugins.module_utils._serving_verify import KubeTransport, Verifier, failure_message


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **copy.deepcopy(AUTH_ARG_SPEC),  # kubernetes.core's authentication options, as its doc fragment documents them
            "namespace": {"type": "str", "default": "triton"},
            "triton_deployment": {"type": "str", "default": "triton"},
            "triton_deployments": {"type": "list", "elements": "str", "default": []},
            "triton_selector": {"type": "dict", "default": {}},
            "metric_name": {"type": "str", "default": "avg_time_queue_us"},
            "check_custom_metrics": {"type": "bool", "default": True},
            "hpa_name": {"type": "str", "default": ""},
            "hpa_names": {"type": "list", "elements": "str", "default": []},
            "keda_scaled_object": {"type": "str", "default": ""},
            "keda_scaled_objects": {"type": "list", "elements": "str", "default": []},
            "lb_service": {"type": "str", "default": ""},
            "lb_namespace": {"type": "str", "default": ""},
            "lb_port": {"type": "str", "default": "http"},
            "lb_scheme": {"type": "str", "default": "http", "choices": ["http", "https"]},
            "check_lb_address": {"type": "bool", "default": True},
            "lb_url": {"type": "str", "default": ""},
            "lb_ca_path": {"type": "path"},
            "model": {"type": "str", "default": ""},
            "retries": {"type": "int", "default": 30},
            "delay": {"type": "int", "default": 10},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    p = dict(module.params)
    if p["retries"] < 0 or p["delay"] < 0 or p["timeout"] < 1:
        module.fail_json(msg=f"retries and delay must be >= 0 and timeout >= 1, got {p['retries']}, {p['delay']}, {p['timeout']}")
    if (p["hpa_name"] or p["hpa_names"]) and (p["keda_scaled_object"] or p["keda_scaled_objects"]):
        module.fail_json(msg="hpa_name/hpa_names and keda_scaled_object/keda_scaled_objects are mutually exclusive "
                             "(with KEDA the ScaledObject names its HPA)")
    p["check_hpa"] = bool(p["hpa_name"] or p["hpa_names"] or p["keda_scaled_object"] or p["keda_scaled_objects"])
    p["check_lb"] = bool(p["lb_service"] or p["lb_url"])
    p["check_lb_address"] = bool(p["lb_service"]) and p["check_lb_address"]
    if p["lb_url"] and not p["lb_url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"lb_url must be an http:// or https:// address, got {p['lb_url']!r}")
    if not (p["check_custom_metrics"] or p["check_hpa"] or p["check_lb"] or p["check_lb_address"]):
        module.fail_json(msg="Nothing to verify: set check_custom_metrics, hpa_names or keda_scaled_objects, lb_service or lb_url")

    api = module_api_client(module, os.environ)  # a kubeconfig given as a mapping: its credentials are not logged
    transport = KubeTransport(api, float(p["timeout"]), open_url, p["lb_ca_path"])
    outcome = Verifier(transport, p).run()
    reports = outcome["reports"]
    result: Dict[str, Any] = {
        "changed": False,
        "checks": outcome["checks"],
        "failures": outcome["errors"],
        "attempts": outcome["attempts"],
    }
    for key in ("triton_pods", "custom_metrics", "hpa", "lb_address", "lb", "pools"):
        if key in reports:
            result[key] = reports[key]
    if outcome["errors"]:
        module.fail_json(msg=failure_message(outcome["errors"], outcome["attempts"]), **result)
    module.exit_json(msg=f"serving stack verified: {', '.join(outcome['checks'])}", **result)


if __name__ == "__main__":
    main()
