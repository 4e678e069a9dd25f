# Copyright (c) gpu_ops.mig_serving contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""tests/kube_fake refuses what a real API server refuses: Pod Security admission by namespace label, schema validation
with fieldValidation, immutable fields; it serves custom resources exactly while their CRD exists, and runs nfd-master's
NodeFeature-to-label part when asked. Every expected message is the upstream one (see tests/kube_fake/README.md)."""
from __future__ import annotations

import copy
import json
import re
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if TYPE_CHECKING:
    from tests.kube_fake import FakeKube
    from tests.kube_fake import admission as psa
    from tests.kube_fake.crds import FEATURE_LABELS_ANNOTATION, NODE_NAME_LABEL, load_crds, vendored_crds
else:
    from kube_fake import FakeKube
    from kube_fake import admission as psa
    from kube_fake.crds import FEATURE_LABELS_ANNOTATION, NODE_NAME_LABEL, load_crds, vendored_crds

ROOT = Path(__file__).resolve().parents[2]
Obj = Dict[str, Any]
Answer = Tuple[int, Obj, List[str]]

BASELINE = {"pod-security.kubernetes.io/enforce": "baseline"}
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}
POD_NAME = "p"


def call(kube: FakeKube, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Answer:
    """One request with urllib: (status, parsed body, Warning header texts unquoted)."""
    data = None
    if body is not None:
        data = yaml.safe_dump(body).encode() if content_type == "application/apply-patch+yaml" else json.dumps(body).encode()
    request = urllib.request.Request(kube.url + path, data=data, method=method, headers={"Authorization": f"Bearer {kube.token}",
                                                                                         "Content-Type": content_type})
    context = ssl.create_default_context(cafile=str(kube.ca_path))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            status, raw, headers = answer.status, answer.read(), answer.headers.get_all("Warning") or []
    except urllib.error.HTTPError as error:
        status, raw, headers = error.code, error.read(), error.headers.get_all("Warning") or []
    warnings = []
    for header in headers:
        match = re.fullmatch(r'299 - "(.*)"', header)
        assert match, header
        warnings.append(match.group(1).replace('\\"', '"').replace("\\\\", "\\"))
    return status, json.loads(raw), warnings


def namespace(kube: FakeKube, name: str, labels: Dict[str, str]) -> None:
    status, body, _w = call(kube, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
    assert status == 201, body


def restricted_spec() -> Obj:
    """A pod spec every level admits."""
    return {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "registry.invalid/app:1",
                            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}


def pod(spec: Obj, name: str = POD_NAME, annotations: Optional[Dict[str, str]] = None) -> Obj:
    meta: Obj = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


_COUNTER = [0]


@pytest.fixture
def ns(kube: FakeKube) -> Callable[[Dict[str, str]], str]:
    """A fresh namespace with the given labels, per call."""

    def make(labels: Dict[str, str]) -> str:
        _COUNTER[0] += 1
        name = f"ns{_COUNTER[0]}"
        namespace(kube, name, labels)
        return name

    return make


# ---------------------------------------------------------------------------------------------------------------
# Pod Security admission: every check, at its level, with the upstream words


def _with(path: str, value: Any) -> Callable[[Obj], None]:
    def change(spec: Obj) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(keys[-1])] = value
        else:
            node[keys[-1]] = value
    return change


def _without(path: str) -> Callable[[Obj], None]:
    def change(spec: Obj) -> None:
        node: Any = spec
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[keys[-1]]
    return change


def _two_containers_with_host_ports(spec: Obj) -> None:
    second = copy.deepcopy(spec["containers"][0])
    second["name"] = "sidecar"
    spec["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 9090}]
    second["ports"] = [{"containerPort": 81, "hostPort": 8080}]
    spec["containers"].append(second)


CHECKS: List[Tuple[str, str, List[Callable[[Obj], None]], str, Optional[Dict[str, str]]]] = [
    # (id, level, changes to a compliant spec, expected ForbiddenDetail, pod annotations)
    ("hostProcess", "baseline", [_with("hostNetwork", True), _with("securityContext.windowsOptions", {"hostProcess": True})],
     "host namespaces (hostNetwork), hostProcess (pod must not set securityContext.windowsOptions.hostProcess=true)", None),
    ("hostNamespaces", "baseline", [_with("hostPID", True), _with("hostIPC", True)], "host namespaces (hostIPC, hostPID)", None),
    ("privileged", "baseline", [_with("containers.0.securityContext.privileged", True)],
     'privileged (container "app" must not set securityContext.privileged=true)', None),
    ("capabilities_baseline", "baseline", [_with("containers.0.securityContext.capabilities", {"add": ["CHOWN", "SYS_TIME", "NET_ADMIN"]})],
     'non-default capabilities (container "app" must not include "NET_ADMIN", "SYS_TIME" in securityContext.capabilities.add)', None),
    ("hostPathVolumes", "baseline", [_with("volumes", [{"name": "host", "hostPath": {"path": "/var/run"}}])], 'hostPath volumes (volume "host")', None),
    ("hostPorts", "baseline", [_two_containers_with_host_ports], 'hostPort (containers "app", "sidecar" use hostPorts 8080, 9090)', None),
    ("appArmorProfile", "baseline", [_with("containers.0.securityContext.appArmorProfile", {"type": "Unconfined"})],
     'forbidden AppArmor profiles (container "app" and annotation must not set AppArmor profile type to "Unconfined", '
     '"container.apparmor.security.beta.kubernetes.io/app="unconfined"")',  # joinQuote does not escape the %q inside
     {"container.apparmor.security.beta.kubernetes.io/app": "unconfined"}),
    ("seLinuxOptions", "baseline", [_with("securityContext.seLinuxOptions", {"type": "spc_t", "user": "root"})],
     'seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: type "spc_t"; user may not be set)', None),
    ("procMount", "baseline", [_with("hostUsers", False), _with("containers.0.securityContext.procMount", "Unmasked")],
     'procMount (container "app" must not set securityContext.procMount to "Unmasked")', None),
    ("seccompProfile_baseline", "baseline", [_with("securityContext.seccompProfile", {"type": "Unconfined"})],
     'seccompProfile (pod must not set securityContext.seccompProfile.type to "Unconfined")', None),
    ("sysctls", "baseline",
     [_with("securityContext.sysctls", [{"name": "kernel.msgmax", "value": "1"}, {"name": "net.ipv4.tcp_keepalive_time", "value": "60"}])],
     "forbidden sysctls (kernel.msgmax)", None),
    ("restrictedVolumes", "restricted", [_with("volumes", [{"name": "models", "nfs": {"server": "nfs", "path": "/m"}},
                                                           {"name": "host", "hostPath": {"path": "/x"}}, {"name": "tmp", "emptyDir": {}}])],
     'restricted volume types (volumes ["host" "models"] have restricted types)', None),
    ("allowPrivilegeEscalation", "restricted", [_without("containers.0.securityContext.allowPrivilegeEscalation")],
     'allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false)', None),
    ("runAsNonRoot-unset", "restricted", [_without("securityContext.runAsNonRoot")],
     'runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true)', None),
    ("runAsNonRoot-container-false", "restricted", [_with("containers.0.securityContext.runAsNonRoot", False)],
     'runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)', None),
    ("runAsUser", "restricted", [_with("containers.0.securityContext.runAsUser", 0)], 'runAsUser=0 (container "app" must not set runAsUser=0)', None),
    ("seccompProfile_restricted", "restricted", [_without("securityContext.seccompProfile")],
     'seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")', None),
    ("capabilities_restricted", "restricted", [_with("containers.0.securityContext.capabilities", {"add": ["NET_BIND_SERVICE", "CHOWN"]})],
     'unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]; container "app" must not include '
     '"CHOWN" in securityContext.capabilities.add)', None),
    ("init-containers-first", "restricted", [_with("initContainers", [{"name": "init", "image": "registry.invalid/init:1"}])],
     'allowPrivilegeEscalation != false (container "init" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities '
     '(container "init" must set securityContext.capabilities.drop=["ALL"])', None),
]


@pytest.mark.parametrize(("check", "level", "changes", "detail", "annotations"), CHECKS, ids=[c[0] for c in CHECKS])
def test_each_check_refuses_with_the_upstream_message(kube: FakeKube, ns: Callable[[Dict[str, str]], str], check: str, level: str,
                                                      changes: List[Callable[[Obj], None]], detail: str, annotations: Optional[Dict[str, str]]) -> None:
    spec = restricted_spec()
    for change in changes:
        change(spec)
    name = ns({"pod-security.kubernetes.io/enforce": level})
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{name}/pods", pod(spec, annotations=annotations))
    assert status == 403, body
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": f'pods "{POD_NAME}" is forbidden: violates PodSecurity "{level}:latest": {detail}', "reason": "Forbidden",
                    "details": {"name": POD_NAME, "kind": "pods"}, "code": 403}
    assert kube.get_object("v1", "Pod", POD_NAME, name) is None
    # the same pod in a namespace without labels (privileged) is admitted, and the compliant one everywhere
    assert call(kube, "POST", f"/api/v1/namespaces/{ns({})}/pods", pod(spec, annotations=annotations))[0] == 201
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/pods", pod(restricted_spec(), name="compliant"))[0] == 201


def test_restricted_refusal_lists_every_failed_check_in_upstream_order(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    """The shape of the issue's example: a container adding capabilities, nothing else set (the LB pod of issue 14)."""
    name = ns(RESTRICTED)
    spec = {"containers": [{"name": "nginx", "image": "registry.invalid/nginx-plus:r33",
                            "securityContext": {"capabilities": {"add": ["CHOWN", "SETGID", "SETUID"]}}}]}
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kube.kubeconfig_path)))  # type: ignore[no-untyped-call]
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_pod(name, pod(spec, name="nginx-lb"))  # type: ignore[arg-type]  # the client sends a dict as it is
    assert refused.value.status == 403
    assert json.loads(refused.value.body or "{}")["message"] == (
        'pods "nginx-lb" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "nginx" must set '
        'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "nginx" must set securityContext.capabilities.drop=["ALL"]; '
        'container "nginx" must not include "CHOWN", "SETGID", "SETUID" in securityContext.capabilities.add), runAsNonRoot != true (pod or container '
        '"nginx" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "nginx" must set securityContext.seccompProfile.type to '
        '"RuntimeDefault" or "Localhost")')
    # baseline allows the default capabilities: the same pod is admitted there
    assert call(kube, "POST", f"/api/v1/namespaces/{ns(BASELINE)}/pods", pod(spec, name="nginx-lb"))[0] == 201


def test_overlapping_baseline_checks_give_way_to_restricted_ones(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    spec = restricted_spec()
    spec["volumes"] = [{"name": "host", "hostPath": {"path": "/dev"}}]
    spec["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{ns(RESTRICTED)}/pods", pod(spec))
    assert status == 403
    detail = body["message"].split('"restricted:latest": ', 1)[1]
    assert detail == ('unrestricted capabilities (container "app" must not include "SYS_ADMIN" in securityContext.capabilities.add), '
                      'restricted volume types (volumes ["host"] have restricted types)')
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{ns(BASELINE)}/pods", pod(spec))
    assert body["message"].split('"baseline:latest": ', 1)[1] == (
        'non-default capabilities (container "app" must not include "SYS_ADMIN" in securityContext.capabilities.add), hostPath volumes (volume "host")')


def test_pod_level_settings_cover_containers_and_container_level_wins() -> None:
    meta: Obj = {}
    latest = psa.LevelVersion("restricted", None)
    spec = restricted_spec()
    spec["containers"][0]["securityContext"]["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
    del spec["securityContext"]["seccompProfile"]
    assert psa.evaluate(latest, meta, spec) == []  # a container-level profile needs no pod-level one
    spec["securityContext"]["runAsNonRoot"] = False
    spec["containers"][0]["securityContext"]["runAsNonRoot"] = True
    assert psa.evaluate(latest, meta, spec) == [("runAsNonRoot != true", "pod must not set securityContext.runAsNonRoot=false")]
    # ephemeral containers are visited too (they can only be added through their subresource, not on create)
    spec = restricted_spec()
    spec["ephemeralContainers"] = [{"name": "debug", "image": "busybox", "securityContext": {"privileged": True}}]
    failed = psa.evaluate(latest, meta, spec)
    assert failed[0] == ("privileged", 'container "debug" must not set securityContext.privileged=true')
    assert [reason for reason, _d in failed] == ["privileged", "allowPrivilegeEscalation != false", "unrestricted capabilities"]


def test_policy_versions_pin_the_checks(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    spec = restricted_spec()
    spec["containers"][0]["securityContext"]["runAsUser"] = 0  # runAsUser=0 is a check since policy v1.23
    pinned = ns({**RESTRICTED, "pod-security.kubernetes.io/enforce-version": "v1.22"})
    assert call(kube, "POST", f"/api/v1/namespaces/{pinned}/pods", pod(spec))[0] == 201
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{ns({**RESTRICTED, 'pod-security.kubernetes.io/enforce-version': 'v1.23'})}/pods", pod(spec))
    assert status == 403
    assert 'violates PodSecurity "restricted:v1.23": runAsUser=0' in body["message"]
    # sysctls allowed since v1.29 are refused under v1.28
    spec = restricted_spec()
    spec["securityContext"]["sysctls"] = [{"name": "net.ipv4.tcp_keepalive_time", "value": "60"}]
    assert call(kube, "POST", f"/api/v1/namespaces/{ns(BASELINE)}/pods", pod(spec))[0] == 201
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{ns({**BASELINE, 'pod-security.kubernetes.io/enforce-version': 'v1.28'})}/pods", pod(spec))
    assert body["message"].endswith('violates PodSecurity "baseline:v1.28": forbidden sysctls (net.ipv4.tcp_keepalive_time)')


def test_invalid_namespace_labels_are_refused(kube: FakeKube) -> None:
    status, body, _w = call(kube, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "bad-labels", "labels": {
        "pod-security.kubernetes.io/enforce": "strict", "pod-security.kubernetes.io/warn-version": "1.30"}}})
    assert status == 422
    assert body["message"] == ('Namespace "bad-labels" is invalid: [metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "strict": must be '
                               'one of privileged, baseline, restricted, metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "1.30": '
                               'must be "latest" or "v1.x"]')
    assert [c["field"] for c in body["details"]["causes"]] == ["metadata.labels[pod-security.kubernetes.io/enforce]",
                                                               "metadata.labels[pod-security.kubernetes.io/warn-version]"]


def test_warn_level_admits_with_a_warning_header(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    spec = restricted_spec()
    spec["containers"][0]["securityContext"]["privileged"] = True
    name = ns({"pod-security.kubernetes.io/warn": "baseline"})
    status, _body, warnings = call(kube, "POST", f"/api/v1/namespaces/{name}/pods", pod(spec))
    assert status == 201
    assert warnings == ['would violate PodSecurity "baseline:latest": privileged (container "app" must not set securityContext.privileged=true)']
    assert [r.warnings for r in kube.requests if r.path == f"/api/v1/namespaces/{name}/pods"] == [tuple(warnings)]


def deployment(name: str, spec: Obj, replicas: Optional[int] = None) -> Obj:
    body: Obj = {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    if replicas is not None:
        body["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": body}


def test_deployment_is_admitted_and_its_pods_fail_as_the_replicaset_controller_reports(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({**RESTRICTED, "pod-security.kubernetes.io/warn": "restricted"})
    bad = restricted_spec()
    bad["containers"][0]["securityContext"]["runAsUser"] = 0
    path = f"/apis/apps/v1/namespaces/{name}/deployments/web?fieldManager=test"
    status, _body, warnings = call(kube, "PATCH", path, deployment("web", bad), "application/apply-patch+yaml")
    assert status == 201
    assert warnings == ['would violate PodSecurity "restricted:latest": runAsUser=0 (container "app" must not set runAsUser=0)']
    [refusal] = kube.pod_security_refusals()
    assert (refusal["kind"], refusal["namespace"], refusal["name"]) == ("Deployment", name, "web")
    pattern = (r'pods "web-[a-z0-9]{6,10}-[a-z0-9]{5}" is forbidden: violates PodSecurity "restricted:latest": runAsUser=0 '
               r'\(container "app" must not set runAsUser=0\)')
    assert re.fullmatch(pattern, refusal["message"]), refusal["message"]
    live = kube.get_object("apps/v1", "Deployment", "web", name)
    assert live is not None
    [condition] = live["status"]["conditions"]
    assert (condition["type"], condition["status"], condition["reason"], condition["message"]) == ("ReplicaFailure", "True", "FailedCreate",
                                                                                                   refusal["message"])
    # re-applying the same template changes nothing (no new attempt, same message, same resourceVersion)
    assert call(kube, "PATCH", path, deployment("web", bad), "application/apply-patch+yaml")[1]["metadata"]["resourceVersion"] == \
        live["metadata"]["resourceVersion"]
    # fixed: the next pod create succeeds, the condition goes
    assert call(kube, "PATCH", path, deployment("web", restricted_spec()), "application/apply-patch+yaml")[2] == []
    assert kube.pod_security_refusals() == []
    fixed = kube.get_object("apps/v1", "Deployment", "web", name)
    assert fixed is not None
    assert "conditions" not in fixed["status"]
    # nothing is created for zero replicas, so nothing fails
    assert call(kube, "PATCH", path.replace("/web?", "/idle?"), deployment("idle", bad, replicas=0), "application/apply-patch+yaml")[0] == 201
    assert kube.pod_security_refusals() == []


def test_daemonset_pod_creates_are_reported_as_failedcreate_events() -> None:
    spec = {"containers": [{"name": "plugin", "image": "registry.invalid/plugin:1", "securityContext": {"privileged": True}}],
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}], "nodeSelector": {"gpu": "true"}}
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "plugin"},
          "spec": {"selector": {"matchLabels": {"app": "plugin"}}, "template": {"metadata": {"labels": {"app": "plugin"}}, "spec": spec}}}
    with FakeKube() as kube:
        namespace(kube, "gpu", BASELINE)
        assert call(kube, "POST", "/apis/apps/v1/namespaces/gpu/daemonsets", ds)[0] == 201
        assert kube.pod_security_refusals() == []  # no node it runs on: no pod create, nothing refused
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cpu-1"}})
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-tainted", "labels": {"gpu": "true"}},
                       "spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}})
        assert kube.pod_security_refusals() == []  # neither node takes it: wrong labels, an untolerated taint
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"gpu": "true"}},
                       "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}})
        [refusal] = kube.pod_security_refusals()
        [event] = kube.events("gpu", ("DaemonSet", "plugin"))
        assert (event["type"], event["reason"], event["source"], event["count"]) == ("Warning", "FailedCreate", {"component": "daemonset-controller"}, 1)
        assert re.fullmatch(r'Error creating: pods "plugin-[a-z0-9]{5}" is forbidden: violates PodSecurity "baseline:latest": privileged \(container '
                            r'"plugin" must not set securityContext.privileged=true\)', event["message"]), event["message"]
        assert event["message"] == f"Error creating: {refusal['message']}"
        # the namespace relaxed: the controller's next attempt succeeds
        assert call(kube, "PATCH", "/api/v1/namespaces/gpu", {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
                    "application/merge-patch+json")[0] == 200
        assert kube.pod_security_refusals() == []


def test_tightening_a_namespace_warns_about_existing_pods_and_keeps_them(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    loose = restricted_spec()
    del loose["securityContext"]
    for pod_name in ("b", "a", "c"):
        assert call(kube, "POST", f"/api/v1/namespaces/{name}/pods", pod(loose, name=pod_name))[0] == 201
    status, _body, warnings = call(kube, "PATCH", f"/api/v1/namespaces/{name}", {"metadata": {"labels": RESTRICTED}}, "application/merge-patch+json")
    assert status == 200
    assert warnings == [f'existing pods in namespace "{name}" violate the new PodSecurity enforce level "restricted:latest"',
                        "a (and 2 other pods): runAsNonRoot != true, seccompProfile"]
    assert len(kube.objects("v1", "Pod", name)) == 3  # nothing is re-evaluated or evicted
    # an update that changes no image is not evaluated; one that does is refused
    assert call(kube, "PATCH", f"/api/v1/namespaces/{name}/pods/a", {"metadata": {"labels": {"x": "y"}}}, "application/merge-patch+json")[0] == 200
    status, body, _w = call(kube, "PATCH", f"/api/v1/namespaces/{name}/pods/a",
                            {"spec": {"containers": [{**loose["containers"][0], "image": "registry.invalid/app:2"}]}}, "application/merge-patch+json")
    assert status == 403
    assert body["message"].startswith('pods "a" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true')


# ---------------------------------------------------------------------------------------------------------------
# Schema validation and fieldValidation


CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}, "dta": {"typo": "x"}}


@pytest.mark.parametrize(("directive", "status", "warnings"), [
    ("Strict", 400, []), ("Warn", 201, ['unknown field "dta"']), ("Ignore", 201, []), ("", 201, ['unknown field "dta"'])])
def test_unknown_fields_follow_field_validation(kube: FakeKube, ns: Callable[[Dict[str, str]], str], directive: str, status: int,
                                                warnings: List[str]) -> None:
    name = ns({})
    query = f"?fieldValidation={directive}" if directive else ""
    answer = call(kube, "POST", f"/api/v1/namespaces/{name}/configmaps{query}", CONFIGMAP)
    assert (answer[0], answer[2]) == (status, warnings)
    if status == 400:
        assert answer[1]["message"] == 'strict decoding error: unknown field "dta"'
        assert answer[1]["reason"] == "BadRequest"
        assert kube.get_object("v1", "ConfigMap", "cm", name) is None
    else:
        stored = kube.get_object("v1", "ConfigMap", "cm", name)
        assert stored is not None
        assert "dta" not in stored  # dropped by the decoder
        assert stored["data"] == {"k": "v"}


def test_nested_unknown_fields_and_patches_are_checked_too(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    spec = restricted_spec()
    spec["containers"][0]["imagePullPolicyy"] = "Always"
    status, body, _w = call(kube, "POST", f"/apis/apps/v1/namespaces/{name}/deployments?fieldValidation=Strict", deployment("d", spec))
    assert (status, body["message"]) == (400, 'strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy"')
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/configmaps", {**CONFIGMAP, "dta": None})[0] == 201
    status, body, _w = call(kube, "PATCH", f"/api/v1/namespaces/{name}/configmaps/cm?fieldValidation=Strict", {"spec": {"x": 1}},
                            "application/merge-patch+json")
    assert (status, body["message"]) == (400, 'strict decoding error: unknown field "spec"')


def test_apply_is_always_strict_about_the_schema(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    """structured-merge-diff converts an applied configuration to the typed schema; in 1.31 its error is a 500."""
    name = ns({})
    status, body, _w = call(kube, "PATCH", f"/api/v1/namespaces/{name}/configmaps/cm?fieldManager=t&fieldValidation=Ignore", CONFIGMAP,
                            "application/apply-patch+yaml")
    assert status == 500
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "details": {}, "code": 500,
                    "message": f"failed to create typed patch object ({name}/cm; /v1, Kind=ConfigMap): .dta: field not declared in schema"}
    bad = deployment("d", restricted_spec(), replicas=1)
    bad["spec"]["replicas"] = "two"
    bad["spec"]["template"]["spec"]["containers"][0]["portz"] = []
    status, body, _w = call(kube, "PATCH", f"/apis/apps/v1/namespaces/{name}/deployments/d?fieldManager=t", bad, "application/apply-patch+yaml")
    assert status == 500
    assert body["message"] == (f"failed to create typed patch object ({name}/d; apps/v1, Kind=Deployment): errors:\n"
                               '  .spec.replicas: expected numeric (int or float), got string\n'
                               '  .spec.template.spec.containers[name="app"].portz: field not declared in schema')


def test_wrong_types_and_missing_fields(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    bad = deployment("d", restricted_spec())
    bad["spec"]["replicas"] = "two"
    status, body, _w = call(kube, "POST", f"/apis/apps/v1/namespaces/{name}/deployments", bad)
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == ('Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field '
                               "DeploymentSpec.spec.replicas of type int32")
    spec = restricted_spec()
    del spec["containers"][0]["name"]
    del spec["containers"][0]["image"]
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{name}/pods", pod(spec))
    assert status == 422
    assert body["message"] == 'Pod "p" is invalid: [spec.containers[0].name: Required value, spec.containers[0].image: Required value]'
    causes = [(c["reason"], c["field"]) for c in body["details"]["causes"]]
    assert causes == [("FieldValueRequired", "spec.containers[0].name"), ("FieldValueRequired", "spec.containers[0].image")]


def test_selector_must_match_template_and_labels_must_be_valid(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    bad = deployment("d", restricted_spec())
    bad["spec"]["template"]["metadata"]["labels"] = {"app": "other", "tier": "web"}
    status, body, _w = call(kube, "POST", f"/apis/apps/v1/namespaces/{name}/deployments", bad)
    assert status == 422
    assert body["message"] == ('Deployment.apps "d" is invalid: spec.template.metadata.labels: Invalid value: '
                               'map[string]string{"app":"other", "tier":"web"}: `selector` does not match template `labels`')
    configmap = {**CONFIGMAP, "dta": None, "metadata": {"name": "x", "labels": {"a": "b c"}}}
    status, body, _w = call(kube, "POST", f"/api/v1/namespaces/{name}/configmaps", configmap)
    assert status == 422
    assert body["message"].startswith('ConfigMap "x" is invalid: metadata.labels: Invalid value: "b c": a valid label must be an empty string')


def test_custom_resources_are_validated_against_their_crd(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    load_crds(kube, ["PodMonitor", "NodeFeatureRule"])
    name = ns({})
    monitor: Obj = {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": "m"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "podMetricsEndpoints": [{"port": 8002}], "extra": True},
    }
    status, body, warnings = call(kube, "POST", f"/apis/monitoring.coreos.com/v1/namespaces/{name}/podmonitors", monitor)
    assert status == 422
    assert body["message"] == ('PodMonitor.monitoring.coreos.com "m" is invalid: spec.podMetricsEndpoints[0].port: Invalid value: "integer": '
                               'spec.podMetricsEndpoints[0].port in body must be of type string: "integer"')
    assert warnings == ['unknown field "spec.extra"']
    monitor["spec"]["podMetricsEndpoints"] = [{"port": "metrics"}]
    status, body, warnings = call(kube, "POST", f"/apis/monitoring.coreos.com/v1/namespaces/{name}/podmonitors", monitor)
    assert (status, warnings) == (201, ['unknown field "spec.extra"'])
    assert "extra" not in body["spec"]  # pruned
    rule: Obj = {
        "apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeatureRule", "metadata": {"name": "r"},
        "spec": {"rules": [{"name": "gpu", "labels": {"gpu": "true"},
                            "matchFeatures": [{"feature": "pci.device", "matchExpressions": {"vendor": {"op": "Equals", "value": ["10de"]}}}]}]},
    }
    status, body, _w = call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeaturerules", rule)
    assert status == 422
    assert body["details"]["causes"][0]["reason"] == "FieldValueNotSupported"
    assert body["details"]["causes"][0]["message"] == ('Unsupported value: "Equals": supported values: "In", "NotIn", "InRegexp", "Exists", '
                                                       '"DoesNotExist", "Gt", "Lt", "GtLt", "IsTrue", "IsFalse"')
    del rule["spec"]["rules"][0]["name"]
    rule["spec"]["rules"][0]["matchFeatures"][0]["matchExpressions"]["vendor"]["op"] = "In"
    status, body, _w = call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeaturerules", rule)
    assert (status, body["message"]) == (422, 'NodeFeatureRule.nfd.k8s-sigs.io "r" is invalid: spec.rules[0].name: Required value')


# ---------------------------------------------------------------------------------------------------------------
# Immutable fields


def _update(kube: FakeKube, path: str, patch: Obj) -> Answer:
    return call(kube, "PATCH", path, patch, "application/merge-patch+json")


def test_workload_selectors_are_immutable(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    assert call(kube, "POST", f"/apis/apps/v1/namespaces/{name}/deployments", deployment("d", restricted_spec()))[0] == 201
    status, body, _w = _update(kube, f"/apis/apps/v1/namespaces/{name}/deployments/d",
                               {"spec": {"selector": {"matchLabels": {"app": "d", "v": "2"}}, "template": {"metadata": {"labels": {"v": "2"}}}}})
    assert status == 422
    assert body["message"] == ('Deployment.apps "d" is invalid: spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{'
                               '"app":"d", "v":"2"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable')
    # the template may change
    assert _update(kube, f"/apis/apps/v1/namespaces/{name}/deployments/d", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}})[0] == 200


def test_service_cluster_ip_may_not_change_once_set(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}}
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/services", service)[0] == 201
    status, body, _w = _update(kube, f"/api/v1/namespaces/{name}/services/s", {"spec": {"clusterIP": "10.96.0.11"}})
    assert (status, body["message"]) == (422, 'Service "s" is invalid: spec.clusterIPs[0]: Invalid value: []string{"10.96.0.11"}: may not change once set')
    headless = {**service, "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/services", headless)[0] == 201
    assert _update(kube, f"/api/v1/namespaces/{name}/services/h", {"spec": {"ports": [{"port": 81}]}})[0] == 200


@pytest.mark.parametrize("kind", ["ConfigMap", "Secret"])
def test_immutable_configmaps_and_secrets(kube: FakeKube, ns: Callable[[Dict[str, str]], str], kind: str) -> None:
    name = ns({})
    plural = f"{kind.lower()}s"
    obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "x"}, "data": {"k": "dg=="}, "immutable": True}
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/{plural}", obj)[0] == 201
    status, body, _w = _update(kube, f"/api/v1/namespaces/{name}/{plural}/x", {"data": {"k": "dw=="}, "immutable": False})
    assert status == 422
    assert body["message"] == (f'{kind} "x" is invalid: [immutable: Forbidden: field is immutable when `immutable` is set, '
                               "data: Forbidden: field is immutable when `immutable` is set]")
    assert _update(kube, f"/api/v1/namespaces/{name}/{plural}/x", {"metadata": {"labels": {"a": "b"}}})[0] == 200


def test_volume_claims_volumes_and_jobs(kube: FakeKube, ns: Callable[[Dict[str, str]], str]) -> None:
    name = ns({})
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "10Gi"}}}}
    assert call(kube, "POST", f"/api/v1/namespaces/{name}/persistentvolumeclaims", claim)[0] == 201
    status, body, _w = _update(kube, f"/api/v1/namespaces/{name}/persistentvolumeclaims/models", {"spec": {"accessModes": ["ReadWriteOnce"]}})
    assert status == 422
    assert body["message"].startswith('PersistentVolumeClaim "models" is invalid: spec: Forbidden: spec is immutable after creation except '
                                      "resources.requests for bound claims\n")
    volume = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"{name}-pv"},
              "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadOnlyMany"], "nfs": {"server": "a", "path": "/m"}}}
    status, stored, _w = call(kube, "POST", "/api/v1/persistentvolumes", volume)
    assert (status, stored["status"]) == (201, {"phase": "Available"})
    status, body, _w = _update(kube, f"/api/v1/persistentvolumes/{name}-pv", {"spec": {"nfs": {"server": "b"}}})
    assert status == 422
    assert body["message"].startswith(f'PersistentVolume "{name}-pv" is invalid: spec.persistentvolumesource: Forbidden: '
                                      "spec.persistentvolumesource is immutable after creation\n")
    assert _update(kube, f"/api/v1/persistentvolumes/{name}-pv", {"spec": {"capacity": {"storage": "20Gi"}}})[0] == 200
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
           "spec": {"template": {"spec": {**restricted_spec(), "restartPolicy": "Never"}}}}
    assert call(kube, "POST", f"/apis/batch/v1/namespaces/{name}/jobs", job)[0] == 201
    status, body, _w = _update(kube, f"/apis/batch/v1/namespaces/{name}/jobs/j", {"spec": {"template": {"spec": {"restartPolicy": "OnFailure"}}}})
    assert status == 422
    assert re.fullmatch(r'Job.batch "j" is invalid: spec.template: Invalid value: .*: field is immutable', body["message"], re.S)


# ---------------------------------------------------------------------------------------------------------------
# CRDs: custom resources served exactly while their CRD exists


def test_custom_resources_are_served_exactly_while_their_crd_exists() -> None:
    with FakeKube() as kube:
        assert call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1")[0] == 404
        stored = load_crds(kube, ["nodefeatures.nfd.k8s-sigs.io", "nodefeaturerules"])
        assert [c["metadata"]["name"] for c in stored] == ["nodefeatures.nfd.k8s-sigs.io", "nodefeaturerules.nfd.k8s-sigs.io"]
        established = {c["type"]: c["status"] for c in stored[0]["status"]["conditions"]}
        assert established == {"NamesAccepted": "True", "Established": "True"}
        groups = {g["name"]: g for g in call(kube, "GET", "/apis")[1]["groups"]}
        assert groups["nfd.k8s-sigs.io"]["preferredVersion"] == {"groupVersion": "nfd.k8s-sigs.io/v1alpha1", "version": "v1alpha1"}
        resources = {r["name"]: r for r in call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1")[1]["resources"]}
        assert (resources["nodefeatures"]["namespaced"], resources["nodefeaturerules"]["namespaced"]) == (True, False)
        assert resources["nodefeaturerules"]["shortNames"] == ["nfr"]
        feature = {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature", "metadata": {"name": "n1"}, "spec": {"labels": {"a": "b"}}}
        assert call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/default/nodefeatures", feature)[0] == 201
        assert call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeatures")[1]["items"][0]["metadata"]["generation"] == 1
        assert call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/nodefeatures", feature)[0] == 405  # namespaced: no cluster-wide create
        assert call(kube, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/nodefeatures.nfd.k8s-sigs.io")[0] == 200
        assert call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/default/nodefeatures/n1")[0] == 404
        assert [r["name"] for r in call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1")[1]["resources"]] == ["nodefeaturerules"]
        load_crds(kube, ["NodeFeature"])
        assert call(kube, "GET", "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/default/nodefeatures")[1]["items"] == []  # its objects went with it
        with pytest.raises(KeyError, match="no vendored CRD 'Prometheus'"):
            load_crds(kube, ["Prometheus"])


def test_every_vendored_crd_loads() -> None:
    names = sorted(vendored_crds())
    assert names == ["nodefeaturerules.nfd.k8s-sigs.io", "nodefeatures.nfd.k8s-sigs.io", "podmonitors.monitoring.coreos.com",
                     "prometheusrules.monitoring.coreos.com", "scaledobjects.keda.sh", "servicemonitors.monitoring.coreos.com"]
    with FakeKube() as kube:
        assert [c["metadata"]["name"] for c in kube.seed(list(vendored_crds().values()))] == list(vendored_crds())
        assert sorted(o["metadata"]["name"] for o in kube.objects("apiextensions.k8s.io/v1", "CustomResourceDefinition")) == names


# ---------------------------------------------------------------------------------------------------------------
# nfd-master: NodeFeature objects to node labels


def node_feature(name: str, node: str, labels: Dict[str, str], namespace: str = "node-feature-discovery") -> Obj:
    return {"apiVersion": "nfd.k8s-sigs.io/v1alpha1", "kind": "NodeFeature", "metadata": {"name": name, "namespace": namespace,
                                                                                          "labels": {NODE_NAME_LABEL: node}},
            "spec": {"labels": labels}}


def test_nfd_master_turns_node_features_into_labels() -> None:
    with FakeKube(nfd_master=True) as kube:
        namespace(kube, "node-feature-discovery", {})
        load_crds(kube, ["NodeFeature"])
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1", "labels": {"kubernetes.io/hostname": "gpu-1"}}})
        requested = {"pci-10de.present": "true", "nvidia.com/gpu.present": "true", "vendor.example/x": "1", "kubernetes.io/arch": "arm64",
                     "node-role.kubernetes.io/gpu": "", "sub.feature.node.kubernetes.io/a": "b", "feature.node.kubernetes.io/bad": "not valid"}
        path = "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/node-feature-discovery/nodefeatures"
        assert call(kube, "POST", path, node_feature("gpu-1", "gpu-1", requested))[0] == 201
        node = kube.get_object("v1", "Node", "gpu-1")
        assert node is not None
        assert node["metadata"]["labels"] == {"kubernetes.io/hostname": "gpu-1", "feature.node.kubernetes.io/pci-10de.present": "true",
                                              "nvidia.com/gpu.present": "true", "vendor.example/x": "1", "sub.feature.node.kubernetes.io/a": "b"}
        assert node["metadata"]["annotations"] == {FEATURE_LABELS_ANNOTATION: "nvidia.com/gpu.present,pci-10de.present,sub.feature.node.kubernetes.io/a,"
                                                                              "vendor.example/x"}
        assert any(e["manager"] == "nfd-master" and e["operation"] == "Update" for e in node["metadata"]["managedFields"])
        # a second object for the node, from another namespace, merged after nfd-master's own
        assert call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/default/nodefeatures",
                    node_feature("a-vendor", "gpu-1", {"vendor.example/x": "2"}, namespace="default"))[0] == 201
        node = kube.get_object("v1", "Node", "gpu-1")
        assert node is not None
        assert node["metadata"]["labels"]["vendor.example/x"] == "2"
        # a node registered later gets its labels at once; deleting the objects removes what nfd-master set, nothing else
        assert call(kube, "POST", path, node_feature("gpu-2", "gpu-2", {"nvidia.com/mig.capable": "true"}))[0] == 201
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-2"}})
        gpu2 = kube.get_object("v1", "Node", "gpu-2")
        assert gpu2 is not None
        assert gpu2["metadata"]["labels"] == {"nvidia.com/mig.capable": "true"}
        for ns_name, obj_name in (("node-feature-discovery", "gpu-1"), ("default", "a-vendor")):
            assert call(kube, "DELETE", f"/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/{ns_name}/nodefeatures/{obj_name}")[0] == 200
        node = kube.get_object("v1", "Node", "gpu-1")
        assert node is not None
        assert node["metadata"]["labels"] == {"kubernetes.io/hostname": "gpu-1"}
        assert "annotations" not in node["metadata"]


def test_without_nfd_master_node_features_change_nothing() -> None:
    with FakeKube() as kube:
        load_crds(kube, ["NodeFeature"])
        kube.add_node({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-1"}})
        assert call(kube, "POST", "/apis/nfd.k8s-sigs.io/v1alpha1/namespaces/default/nodefeatures",
                    node_feature("gpu-1", "gpu-1", {"pci-10de.present": "true"}, namespace="default"))[0] == 201
        node = kube.get_object("v1", "Node", "gpu-1")
        assert node is not None
        assert "labels" not in node["metadata"]


def test_standalone_server_loads_crds_and_runs_nfd_master(tmp_path: Path) -> None:
    kubeconfig, pid_file = tmp_path / "kubeconfig", tmp_path / "pid"
    argv = [sys.executable, "-m", "tests.kube_fake", "serve", "--kubeconfig-out", str(kubeconfig), "--requests-out", str(tmp_path / "r.jsonl"),
            "--state-out", str(tmp_path / "state.json"), "--crds", "NodeFeature,ServiceMonitor", "--nfd-master", "--pid-file", str(pid_file),
            "--max-seconds", "120"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no kubeconfig within 30 s"
            time.sleep(0.1)
        api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        core = client.CoreV1Api(api)
        core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name="gpu-1")))
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object("nfd.k8s-sigs.io", "v1alpha1", "default", "nodefeatures",
                                               node_feature("gpu-1", "gpu-1", {"pci-10de.present": "true"}, namespace="default"))
        node: Any = core.read_node("gpu-1")
        assert node.metadata.labels == {"feature.node.kubernetes.io/pci-10de.present": "true"}
        monitors: Any = custom.list_namespaced_custom_object("monitoring.coreos.com", "v1", "default", "servicemonitors")
        assert monitors["items"] == []
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert not pid_file.exists()
